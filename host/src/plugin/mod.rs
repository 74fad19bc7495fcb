//! The plugin host: loads WebAssembly components, checks their contract, runs them sandboxed.
//!
//! A [`PluginHost`] owns the wasmtime engine (epoch interruption on, a ticker thread driving
//! it) and the compiled-code cache. [`PluginHost::load`] turns component bytes into a
//! [`Plugin`]: checked, described and pre-linked. [`Plugin::instantiate`] makes a
//! [`PluginInstance`] for one run; a call that traps, loops, runs out of memory or returns too
//! much disables that instance with a [`PluginFault`], and nothing else is affected. This
//! module knows nothing of VMs, streams or the monitor.

mod cache;
mod contract;
mod convert;
mod sandbox;

pub mod bindings {
    //! Host bindings of the `full-plugin` world. Detector-only and healer-only components use
    //! the same interface bindings; the world a component implements is read from its exports.
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "full-plugin",
    });
}

pub use cache::CompiledCache;
pub use contract::{CONTRACT_PACKAGE, ContractError, host_contract};
pub use sandbox::{GuestProbe, Limits, SandboxState, check_read_only};

use crate::actions::HealingAction;
use crate::facts::GuestFacts;
use crate::findings::Finding;
use bindings::exports::nixtest::plugin::{detector, healer};
use nixtest_events::Event;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use thiserror::Error;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Config, Engine, Store};

/// How often the epoch advances; a call's deadline is a whole number of ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

#[derive(Debug, Error)]
pub enum PluginError {
    #[error("{what}: not a WebAssembly file (it does not start with \\0asm)")]
    NotWasm { what: String },
    #[error(
        "{what}: this is a core WebAssembly module, not a component; build it with \
         `cargo build --target wasm32-wasip2` (or run `wasm-tools component new`)"
    )]
    CoreModule { what: String },
    #[error("{what}: not a valid component: {reason}")]
    Invalid { what: String, reason: String },
    #[error(transparent)]
    Contract(Box<ContractError>),
    #[error("{what}: the component cannot be linked in the sandbox: {reason}")]
    Link { what: String, reason: String },
    #[error("{what}: {fault}")]
    Describe { what: String, fault: PluginFault },
    #[error("{what}: bad metadata: {reason}")]
    Metadata { what: String, reason: String },
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
}

impl From<ContractError> for PluginError {
    fn from(e: ContractError) -> Self {
        PluginError::Contract(Box::new(e))
    }
}

/// Why a plugin call was stopped. The instance that caused it is disabled for the run.
#[derive(Debug, Clone, Error, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "kebab-case")]
pub enum PluginFault {
    #[error("ran longer than its limit of {0} ms per call and was stopped")]
    Timeout(u64),
    #[error("tried to use more than its memory limit of {0} MiB and was stopped")]
    OutOfMemory(u64),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("returned {got} {unit}, over the limit of {limit}")]
    OversizedOutput {
        got: usize,
        limit: usize,
        unit: &'static str,
    },
    #[error("is disabled for this run after an earlier fault: {0}")]
    Disabled(String),
}

/// Capabilities a plugin may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    Probe,
}

/// The roles a component implements, read from its exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    Detector,
    Healer,
    Full,
}

impl World {
    pub fn detects(self) -> bool {
        matches!(self, World::Detector | World::Full)
    }
    pub fn heals(self) -> bool {
        matches!(self, World::Healer | World::Full)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            World::Detector => "detector",
            World::Healer => "healer",
            World::Full => "detector+healer",
        }
    }
}

/// A plugin's metadata, checked.
#[derive(Debug, Clone, Serialize)]
pub struct PluginMeta {
    pub name: String,
    pub version: semver::Version,
    pub description: String,
    pub categories: Vec<String>,
    pub capabilities: Vec<Capability>,
    pub literals: Vec<String>,
    pub patterns: Vec<String>,
    pub context_lines: u32,
}

/// Where a plugin came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "path")]
pub enum Origin {
    Builtin,
    Installed(PathBuf),
    File(PathBuf),
}

/// A loaded, checked and pre-linked plugin. Cheap to instantiate.
pub struct Plugin {
    pub meta: PluginMeta,
    pub world: World,
    pub contract: semver::Version,
    pub sha256: String,
    pub origin: Origin,
    pre: InstancePre<SandboxState>,
    detector: Option<detector::GuestIndices>,
    healer: Option<healer::GuestIndices>,
    host: HostShared,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("meta", &self.meta)
            .field("world", &self.world)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct HostShared {
    engine: Engine,
    limits: Limits,
}

/// Stops the epoch ticker when the last host handle goes.
struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Owns the engine, the linker and the compiled-code cache.
pub struct PluginHost {
    shared: HostShared,
    linker: Linker<SandboxState>,
    cache: Option<CompiledCache>,
    _ticker: Ticker,
}

/// Options for the engine.
#[derive(Debug, Clone, Default)]
pub struct HostOptions {
    pub limits: Limits,
    /// Where compiled code is kept; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// Use wasmtime's pooling allocator (faster instantiation, reserved address space).
    pub pooling: bool,
}

impl PluginHost {
    pub fn new(options: HostOptions) -> Result<Self, PluginError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        if options.pooling {
            let mut pool = wasmtime::PoolingAllocationConfig::default();
            pool.total_component_instances(256)
                .total_core_instances(2048)
                .total_memories(512)
                .total_tables(2048)
                .max_memory_size(options.limits.memory_bytes);
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config).map_err(|e| PluginError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| PluginError::Engine(e.to_string()))?;
        bindings::nixtest::plugin::probe::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |s| s,
        )
        .map_err(|e| PluginError::Engine(e.to_string()))?;

        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("nixtest-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| PluginError::Engine(format!("cannot start the epoch thread: {e}")))?;

        Ok(PluginHost {
            shared: HostShared {
                engine: engine.clone(),
                limits: options.limits,
            },
            cache: options
                .cache_dir
                .map(|dir| CompiledCache::new(dir, &engine)),
            linker,
            _ticker: Ticker { stop },
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    pub fn limits(&self) -> Limits {
        self.shared.limits
    }

    /// Compiles (or loads from the cache) and checks a component. `what` names it in errors.
    pub fn load(&self, bytes: &[u8], what: &str, origin: Origin) -> Result<Plugin, PluginError> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        check_header(bytes, what)?;
        let component = match &self.cache {
            Some(cache) => cache.load_or_compile(&self.shared.engine, bytes, &sha256),
            None => Component::new(&self.shared.engine, bytes).map_err(|e| e.to_string()),
        }
        .map_err(|reason| PluginError::Invalid {
            what: what.to_string(),
            reason,
        })?;
        self.finish_load(component, sha256, what, origin)
    }

    /// Compiles a component without the cache: the cold path the benchmark measures.
    pub fn compile(&self, bytes: &[u8]) -> Result<Component, String> {
        Component::new(&self.shared.engine, bytes).map_err(|e| e.to_string())
    }

    fn finish_load(
        &self,
        component: Component,
        sha256: String,
        what: &str,
        origin: Origin,
    ) -> Result<Plugin, PluginError> {
        let (world, contract) = contract::inspect(&self.shared.engine, &component, what)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| PluginError::Link {
                what: what.to_string(),
                reason: e.to_string(),
            })?;
        let detector = if world.detects() {
            Some(
                detector::GuestIndices::new(&pre).map_err(|e| PluginError::Link {
                    what: what.to_string(),
                    reason: e.to_string(),
                })?,
            )
        } else {
            None
        };
        let healer = if world.heals() {
            Some(
                healer::GuestIndices::new(&pre).map_err(|e| PluginError::Link {
                    what: what.to_string(),
                    reason: e.to_string(),
                })?,
            )
        } else {
            None
        };
        let mut plugin = Plugin {
            meta: PluginMeta {
                name: String::new(),
                version: semver::Version::new(0, 0, 0),
                description: String::new(),
                categories: Vec::new(),
                capabilities: Vec::new(),
                literals: Vec::new(),
                patterns: Vec::new(),
                context_lines: 0,
            },
            world,
            contract,
            sha256,
            origin,
            pre,
            detector,
            healer,
            host: self.shared.clone(),
        };
        let mut probe_instance =
            plugin
                .instantiate_with(false)
                .map_err(|fault| PluginError::Describe {
                    what: what.to_string(),
                    fault,
                })?;
        let raw = probe_instance
            .describe()
            .map_err(|fault| PluginError::Describe {
                what: what.to_string(),
                fault,
            })?;
        plugin.meta = convert::metadata(raw).map_err(|reason| PluginError::Metadata {
            what: what.to_string(),
            reason,
        })?;
        Ok(plugin)
    }
}

fn check_header(bytes: &[u8], what: &str) -> Result<(), PluginError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(PluginError::NotWasm {
            what: what.to_string(),
        });
    }
    // Core modules are version 1 with layer 0; components carry layer 1.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(PluginError::CoreModule {
            what: what.to_string(),
        });
    }
    Ok(())
}

impl Plugin {
    pub fn name(&self) -> &str {
        &self.meta.name
    }

    pub fn may_probe(&self) -> bool {
        self.meta.capabilities.contains(&Capability::Probe)
    }

    /// A fresh instance for one run.
    pub fn instantiate(&self) -> Result<PluginInstance, PluginFault> {
        self.instantiate_with(self.may_probe())
    }

    fn instantiate_with(&self, may_probe: bool) -> Result<PluginInstance, PluginFault> {
        let limits = self.host.limits;
        let label = if self.meta.name.is_empty() {
            "plugin"
        } else {
            self.meta.name.as_str()
        };
        let mut store = Store::new(
            &self.host.engine,
            SandboxState::new(&limits, label, may_probe),
        );
        store.limiter(|s| &mut s.limits);
        // At the deadline the call stops, unless it spent time waiting on the guest in probes:
        // that time is given back, so the limit stays one on the plugin's own work.
        store.epoch_deadline_callback(|mut cx| {
            let ticks = cx.data_mut().take_probe_ticks(EPOCH_TICK);
            Ok(if ticks > 0 {
                wasmtime::UpdateDeadline::Continue(ticks)
            } else {
                wasmtime::UpdateDeadline::Interrupt
            })
        });
        store.set_epoch_deadline(deadline_ticks(limits.cpu_per_call));
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify(e, &limits))?;
        let detector = match &self.detector {
            Some(ix) => Some(
                ix.load(&mut store, &instance)
                    .map_err(|e| classify(e, &limits))?,
            ),
            None => None,
        };
        let healer = match &self.healer {
            Some(ix) => Some(
                ix.load(&mut store, &instance)
                    .map_err(|e| classify(e, &limits))?,
            ),
            None => None,
        };
        Ok(PluginInstance {
            name: self.meta.name.clone(),
            store,
            detector,
            healer,
            limits,
            disabled: None,
        })
    }
}

fn deadline_ticks(limit: Duration) -> u64 {
    (limit.as_millis() as u64)
        .div_ceil(EPOCH_TICK.as_millis() as u64)
        .max(1)
}

/// Turns a wasmtime error into the fault a user can act on.
fn classify(err: wasmtime::Error, limits: &Limits) -> PluginFault {
    if let Some(trap) = err.downcast_ref::<wasmtime::Trap>() {
        match trap {
            wasmtime::Trap::Interrupt => {
                return PluginFault::Timeout(limits.cpu_per_call.as_millis() as u64);
            }
            wasmtime::Trap::AllocationTooLarge => {
                return PluginFault::OutOfMemory((limits.memory_bytes >> 20) as u64);
            }
            _ => {}
        }
    }
    let text = format!("{err:#}");
    if text.contains("forcing trap when growing memory") || text.contains("memory.grow") {
        return PluginFault::OutOfMemory((limits.memory_bytes >> 20) as u64);
    }
    PluginFault::Trap(first_line(&text))
}

fn first_line(text: &str) -> String {
    let mut line = text.lines().next().unwrap_or("").to_string();
    line.truncate(300);
    line
}

/// One plugin's instance for one run. Keeps the plugin's state between calls.
pub struct PluginInstance {
    name: String,
    store: Store<SandboxState>,
    detector: Option<detector::Guest>,
    healer: Option<healer::Guest>,
    limits: Limits,
    disabled: Option<PluginFault>,
}

impl PluginInstance {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_detector(&self) -> bool {
        self.detector.is_some()
    }

    pub fn is_healer(&self) -> bool {
        self.healer.is_some()
    }

    pub fn disabled(&self) -> Option<&PluginFault> {
        self.disabled.as_ref()
    }

    pub fn set_probe(&mut self, probe: Option<Arc<dyn GuestProbe>>) {
        self.store.data_mut().set_probe(probe);
    }

    fn describe(&mut self) -> Result<bindings::nixtest::plugin::types::Metadata, PluginFault> {
        self.guarded(|store, d, h| match (d, h) {
            (Some(d), _) => d.call_describe(store),
            (_, Some(h)) => h.call_describe(store),
            (None, None) => unreachable!("a plugin has at least one role"),
        })
    }

    /// Sends a batch of events; returns the findings, each labelled with this plugin's name.
    pub fn feed(&mut self, events: &[Event]) -> Result<Vec<Finding>, PluginFault> {
        if self.detector.is_none() || events.is_empty() {
            return Ok(Vec::new());
        }
        let batch: Vec<_> = events.iter().map(convert::event).collect();
        let raw = self.guarded(|store, d, _| d.unwrap().call_feed(store, &batch))?;
        self.check_findings(raw)
    }

    /// The stream ended.
    pub fn finish(&mut self) -> Result<Vec<Finding>, PluginFault> {
        if self.detector.is_none() {
            return Ok(Vec::new());
        }
        let raw = self.guarded(|store, d, _| d.unwrap().call_finish(store))?;
        self.check_findings(raw)
    }

    /// Asks for healing actions for `finding` (index `finding_index` in the run's list).
    pub fn heal(
        &mut self,
        finding: &Finding,
        finding_index: usize,
        cx: &HealRequest<'_>,
    ) -> Result<Vec<HealingAction>, PluginFault> {
        if self.healer.is_none() {
            return Ok(Vec::new());
        }
        let wit_finding = convert::finding_to_wit(finding);
        let wit_cx = convert::heal_context(cx);
        let raw = self.guarded(|store, _, h| h.unwrap().call_heal(store, &wit_finding, &wit_cx))?;
        let size: usize = raw.iter().map(convert::action_size).sum();
        self.check_output(raw.len(), size)?;
        Ok(raw
            .into_iter()
            .map(|a| convert::action(a, &self.name, finding_index))
            .collect())
    }

    fn check_findings(
        &mut self,
        raw: Vec<bindings::nixtest::plugin::types::Finding>,
    ) -> Result<Vec<Finding>, PluginFault> {
        let size: usize = raw.iter().map(convert::finding_size).sum();
        self.check_output(raw.len(), size)?;
        Ok(raw
            .into_iter()
            .map(|f| convert::finding(f, &self.name))
            .collect())
    }

    fn check_output(&mut self, items: usize, bytes: usize) -> Result<(), PluginFault> {
        let fault = if items > self.limits.output_items {
            Some(PluginFault::OversizedOutput {
                got: items,
                limit: self.limits.output_items,
                unit: "items",
            })
        } else if bytes > self.limits.output_bytes {
            Some(PluginFault::OversizedOutput {
                got: bytes,
                limit: self.limits.output_bytes,
                unit: "bytes",
            })
        } else {
            None
        };
        match fault {
            Some(f) => {
                self.disabled = Some(f.clone());
                Err(f)
            }
            None => Ok(()),
        }
    }

    /// Runs one call under the deadline; any failure disables the instance (after a trap its
    /// state cannot be trusted, and wasmtime will not enter it again).
    fn guarded<R>(
        &mut self,
        call: impl FnOnce(
            &mut Store<SandboxState>,
            Option<&detector::Guest>,
            Option<&healer::Guest>,
        ) -> wasmtime::Result<R>,
    ) -> Result<R, PluginFault> {
        if let Some(f) = &self.disabled {
            return Err(PluginFault::Disabled(f.to_string()));
        }
        self.store.data_mut().begin_call();
        self.store
            .set_epoch_deadline(deadline_ticks(self.limits.cpu_per_call));
        match call(
            &mut self.store,
            self.detector.as_ref(),
            self.healer.as_ref(),
        ) {
            Ok(r) => Ok(r),
            Err(e) => {
                let fault = classify(e, &self.limits);
                self.disabled = Some(fault.clone());
                Err(fault)
            }
        }
    }
}

/// What the host tells a healer besides the finding.
#[derive(Debug, Clone)]
pub struct HealRequest<'a> {
    pub facts: &'a GuestFacts,
    pub phase: &'a str,
    pub config: &'a [(String, String)],
    pub evidence: &'a [String],
    pub attempt: u32,
}
