//! The plugin host: loads WebAssembly components, checks their contract, runs them sandboxed.
//!
//! A [`PluginHost`] owns the wasmtime engine (epoch interruption on, a ticker thread driving
//! it) and the compiled-code cache. [`PluginHost::load`] turns component bytes into a
//! [`Plugin`]: checked, described and pre-linked, its metadata bounded and its prefilter
//! compiled within limits. [`Plugin::instantiate`] makes a [`PluginInstance`] for one run; a
//! call that traps, loops, exits, runs out of memory or CPU, or returns too much disables that
//! instance with a [`PluginFault`] that keeps the cause, and nothing else is affected.
//!
//! Every call is treated as hostile: it runs off the async runtime's threads (WASI's blocking
//! shims would panic there), inside `catch_unwind`, under a CPU-time deadline per call and per
//! run, with one memory budget for all its memories and tables, and nothing in its WASI can
//! block (sleeps and polls return at once, stdio goes to a bounded buffer). This module knows
//! nothing of VMs, streams or the monitor.

mod cache;
mod compat_v0_1_0;
mod contract;
mod convert;
pub mod prefilter;
pub mod probe_policy;
mod sandbox;
mod stdio;

pub mod bindings {
    //! Host bindings of the `full-plugin` world, one module per contract version the host
    //! accepts (as Zed's extension host keeps them). Detector-only and healer-only components
    //! use the same interface bindings; the world a component implements, and its version,
    //! are read from its exports.
    pub mod current {
        //! The contract in `wit/current`.
        wasmtime::component::bindgen!({
            path: "../wit/current",
            world: "full-plugin",
        });
    }
    pub mod v0_1_0 {
        //! Contract 0.1.0 (see `compat_v0_1_0`).
        wasmtime::component::bindgen!({
            path: "../wit/v0.1.0",
            world: "full-plugin",
        });
    }
}

pub use cache::{CacheError, CompiledCache};
pub use contract::{CONTRACT_PACKAGE, ContractError, host_contract};
pub use convert::{MAX_EVIDENCE_LINES, MetadataCaps, check_category, check_name};
pub use probe_policy::ProbeCommand;
pub use sandbox::{GuestProbe, Limits, ProbeRecord, SandboxState};

use crate::actions::HealingAction;
use crate::facts::GuestFacts;
use crate::findings::Finding;
use bindings::current::exports::nixtest::plugin::{detector, healer};
use bindings::current::nixtest::plugin::types as wit;
use bindings::v0_1_0::exports::nixtest::plugin::{
    detector as detector_v0_1, healer as healer_v0_1,
};
use compat_v0_1_0 as compat;

/// Where a component's roles are, by the contract it was built against.
enum Indices {
    Current(Option<detector::GuestIndices>, Option<healer::GuestIndices>),
    V0_1(
        Option<detector_v0_1::GuestIndices>,
        Option<healer_v0_1::GuestIndices>,
    ),
}

/// A running instance's roles, by contract.
enum Roles {
    Current(Option<detector::Guest>, Option<healer::Guest>),
    V0_1(Option<detector_v0_1::Guest>, Option<healer_v0_1::Guest>),
}

impl Roles {
    fn detects(&self) -> bool {
        match self {
            Roles::Current(d, _) => d.is_some(),
            Roles::V0_1(d, _) => d.is_some(),
        }
    }

    fn heals(&self) -> bool {
        match self {
            Roles::Current(_, h) => h.is_some(),
            Roles::V0_1(_, h) => h.is_some(),
        }
    }
}
use nixtest_events::Event;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use thiserror::Error;
use wasmtime::component::{Component, InstancePre, Linker, Resource};
use wasmtime::{Config, Engine, Store, StoreContextMut};
use wasmtime_wasi::p2::DynPollable;

/// The largest component file accepted: compiling is host work too.
pub const MAX_COMPONENT_BYTES: usize = 32 << 20;
/// Stack of the thread a call runs on when it must leave the async runtime's thread.
pub(crate) const CALL_THREAD_STACK: usize = 8 << 20;

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
    #[error("{what}: {reason}")]
    Prefilter { what: String, reason: String },
    #[error("{what}: the component is {size} bytes, over the limit of {limit}")]
    TooLarge {
        what: String,
        size: usize,
        limit: usize,
    },
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
    #[error(transparent)]
    Cache(#[from] CacheError),
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
    #[error("used more than its limit of {0} ms of CPU time in one call and was stopped")]
    Timeout(u64),
    #[error("used more than its limit of {0} ms of CPU time in this run and was stopped")]
    RunBudget(u64),
    #[error("ran for {0} ms without returning (CPU aside) and was stopped")]
    WallTimeout(u64),
    #[error(
        "tried to use more than its memory limit of {0} MiB (all memories and tables) and was stopped"
    )]
    OutOfMemory(u64),
    #[error("overflowed its stack")]
    StackOverflow,
    #[error("panicked: {0}")]
    Panic(String),
    #[error("exited with status {0}")]
    Exit(i32),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("returned {got} {unit}, over the limit of {limit}")]
    OversizedOutput {
        got: usize,
        limit: usize,
        unit: &'static str,
    },
    #[error("returned something the host refuses: {0}")]
    BadOutput(String),
    #[error("made the host fail while serving it: {0}")]
    HostPanic(String),
    #[error("cannot be loaded: {0}")]
    Unloadable(String),
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

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Builtin => f.write_str("built in"),
            Origin::Installed(p) => write!(f, "installed at {}", p.display()),
            Origin::File(p) => write!(f, "loaded from {}", p.display()),
        }
    }
}

/// A loaded, checked and pre-linked plugin. Cheap to instantiate.
pub struct Plugin {
    pub meta: PluginMeta,
    pub world: World,
    pub contract: semver::Version,
    pub sha256: String,
    pub origin: Origin,
    pre: InstancePre<SandboxState>,
    indices: Indices,
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

/// A pollable that is ready at once: what a plugin's sleep or timer gets.
struct Ready;

#[async_trait::async_trait]
impl wasmtime_wasi::p2::Pollable for Ready {
    async fn ready(&mut self) {}
}

fn ready_pollable(
    mut store: StoreContextMut<'_, SandboxState>,
) -> wasmtime::Result<(Resource<DynPollable>,)> {
    use wasmtime_wasi::WasiView;
    let table = store.data_mut().ctx().table;
    let ready = table.push(Ready)?;
    Ok((wasmtime_wasi::p2::subscribe(table, ready)?,))
}

/// WASI for plugins: everything `wasmtime-wasi` links, with the monotonic clock's timers
/// replaced by ones that are ready at once. The clock is frozen, so a plugin's sleep returns
/// without waiting (a spurious wake-up, as WASI allows) and a poll on it never blocks the host.
fn link_wasi(linker: &mut Linker<SandboxState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    linker.allow_shadowing(true);
    let mut clock = linker.instance("wasi:clocks/monotonic-clock@0.2.12")?;
    clock.func_wrap("subscribe-duration", |store, (_,): (u64,)| {
        ready_pollable(store)
    })?;
    clock.func_wrap("subscribe-instant", |store, (_,): (u64,)| {
        ready_pollable(store)
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

impl PluginHost {
    pub fn new(options: HostOptions) -> Result<Self, PluginError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        if std::env::var_os("NIXTEST_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
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
        link_wasi(&mut linker).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        bindings::current::nixtest::plugin::probe::add_to_linker::<
            _,
            wasmtime::component::HasSelf<_>,
        >(&mut linker, |s| s)
        .map_err(|e| PluginError::Engine(e.to_string()))?;
        bindings::v0_1_0::nixtest::plugin::probe::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |s| s,
        )
        .map_err(|e| PluginError::Engine(e.to_string()))?;

        let cache = match options.cache_dir {
            Some(dir) => Some(CompiledCache::open(dir, &engine)?),
            None => None,
        };

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
            cache,
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
        self.load_hashed(bytes, component_sha256(bytes), what, origin)
    }

    /// As [`PluginHost::load`], with the component's [`component_sha256`] computed already
    /// (by whoever asked [`PluginHost::all_compiled`] first). Crate-private: the hash picks
    /// which compiled code runs, so it must come from these very bytes.
    pub(crate) fn load_hashed(
        &self,
        bytes: &[u8],
        sha256: String,
        what: &str,
        origin: Origin,
    ) -> Result<Plugin, PluginError> {
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

    /// Whether every component in `components` is compiled in the cache already, so loading
    /// them is reading, not compiling: then they are loaded side by side (each checked, read
    /// and asked who it is on a thread of its own), and a run's start waits for the slowest
    /// instead of all. Compiles are not: each already uses every core, and side by side
    /// their memory adds up (a malloc arena per thread: a first run's peak went from 84 to
    /// 103 MB).
    /// `sha256s`: each component's [`component_sha256`].
    pub fn all_compiled<'a>(&self, mut sha256s: impl Iterator<Item = &'a str>) -> bool {
        let Some(cache) = &self.cache else {
            return false;
        };
        sha256s.all(|sha256| cache.entry_path(sha256).is_file())
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
        let link = |e: wasmtime::Error| PluginError::Link {
            what: what.to_string(),
            reason: format!("{e:#}"),
        };
        let (world, contract) = contract::inspect(&self.shared.engine, &component, what)?;
        let pre = self.linker.instantiate_pre(&component).map_err(link)?;
        let indices = if contract::is_v0_1(&contract) {
            Indices::V0_1(
                match world.detects() {
                    true => Some(detector_v0_1::GuestIndices::new(&pre).map_err(link)?),
                    false => None,
                },
                match world.heals() {
                    true => Some(healer_v0_1::GuestIndices::new(&pre).map_err(link)?),
                    false => None,
                },
            )
        } else {
            Indices::Current(
                match world.detects() {
                    true => Some(detector::GuestIndices::new(&pre).map_err(link)?),
                    false => None,
                },
                match world.heals() {
                    true => Some(healer::GuestIndices::new(&pre).map_err(link)?),
                    false => None,
                },
            )
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
            indices,
            host: self.shared.clone(),
        };
        let describe = |fault| PluginError::Describe {
            what: what.to_string(),
            fault,
        };
        let mut probe_instance = plugin.instantiate_with(false).map_err(describe)?;
        let raw = probe_instance.describe().map_err(describe)?;
        plugin.meta = convert::metadata(raw, &MetadataCaps::default()).map_err(|reason| {
            PluginError::Metadata {
                what: what.to_string(),
                reason,
            }
        })?;
        // The prefilter is built now, within its limits, so a plugin whose patterns cannot
        // be afforded is refused before anyone is asked to consent to it.
        prefilter::check(&plugin.meta).map_err(|reason| PluginError::Prefilter {
            what: what.to_string(),
            reason,
        })?;
        Ok(plugin)
    }
}

/// A component's identity: the hex sha256 of its bytes (the cache's key, the registry's
/// check).
pub fn component_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A component file's bytes, read no further than a component may be long: a larger file
/// (a component replaced after it was installed, a wrong path) is refused with its size
/// instead of being read into memory whole.
pub fn read_component(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_COMPONENT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() > MAX_COMPONENT_BYTES {
        let size = std::fs::metadata(path).map_or(bytes.len() as u64, |m| m.len());
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the component is {size} bytes, over the limit of {MAX_COMPONENT_BYTES}"),
        ));
    }
    Ok(bytes)
}

fn check_header(bytes: &[u8], what: &str) -> Result<(), PluginError> {
    if bytes.len() > MAX_COMPONENT_BYTES {
        return Err(PluginError::TooLarge {
            what: what.to_string(),
            size: bytes.len(),
            limit: MAX_COMPONENT_BYTES,
        });
    }
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
        store.limiter(|s| &mut s.budget);
        // At each tick past the deadline the call's CPU time decides: time spent waiting on
        // the guest in probes, or descheduled, is not the plugin's.
        store.epoch_deadline_callback(|mut cx| {
            Ok(match cx.data_mut().over_deadline() {
                Some(_) => wasmtime::UpdateDeadline::Interrupt,
                None => wasmtime::UpdateDeadline::Continue(1),
            })
        });
        let pre = &self.pre;
        let indices = &self.indices;
        // Instantiation runs the component's start code: the same deadline and isolation.
        let made = run_call(&mut store, |store| {
            let instance = pre.instantiate(&mut *store)?;
            Ok(match indices {
                Indices::Current(d, h) => Roles::Current(
                    d.as_ref()
                        .map(|ix| ix.load(&mut *store, &instance))
                        .transpose()?,
                    h.as_ref()
                        .map(|ix| ix.load(&mut *store, &instance))
                        .transpose()?,
                ),
                Indices::V0_1(d, h) => Roles::V0_1(
                    d.as_ref()
                        .map(|ix| ix.load(&mut *store, &instance))
                        .transpose()?,
                    h.as_ref()
                        .map(|ix| ix.load(&mut *store, &instance))
                        .transpose()?,
                ),
            })
        });
        let roles = made.map_err(|e| classify(e, &limits, &store))?;
        Ok(PluginInstance {
            name: self.meta.name.clone(),
            store,
            roles,
            limits,
            disabled: None,
            findings_reported: 0,
            probes: Vec::new(),
        })
    }
}

/// Why a call failed, before it is classified.
enum CallError {
    Wasm(wasmtime::Error),
    /// The host panicked while serving the call.
    Panic(String),
    /// No thread could be had to run the call on.
    Thread(String),
}

impl From<wasmtime::Error> for CallError {
    fn from(e: wasmtime::Error) -> Self {
        CallError::Wasm(e)
    }
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Runs one call on `store` with its clocks started, never on the async runtime's thread
/// (WASI's blocking shims start a runtime of their own, which panics inside another), and
/// never letting a panic out.
fn run_call<R: Send>(
    store: &mut Store<SandboxState>,
    call: impl FnOnce(&mut Store<SandboxState>) -> wasmtime::Result<R> + Send,
) -> Result<R, CallError> {
    let body = move |store: &mut Store<SandboxState>| {
        store.data_mut().begin_call();
        store.set_epoch_deadline(1);
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| call(&mut *store)));
        let used = store.data_mut().end_call();
        tracing::trace!(
            plugin = store.data().plugin(),
            cpu_us = used.as_micros() as u64,
            "plugin call"
        );
        match result {
            Ok(r) => r.map_err(CallError::Wasm),
            Err(p) => Err(CallError::Panic(panic_text(p))),
        }
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return body(store);
    }
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("nixtest-plugin".into())
            .stack_size(CALL_THREAD_STACK)
            .spawn_scoped(scope, || body(store))
            .map_err(|e| CallError::Thread(e.to_string()))?;
        handle
            .join()
            .unwrap_or_else(|p| Err(CallError::Panic(panic_text(p))))
    })
}

/// Turns a failed call into the fault a user can act on, keeping its cause.
fn classify(err: CallError, limits: &Limits, store: &Store<SandboxState>) -> PluginFault {
    let err = match err {
        CallError::Wasm(e) => e,
        CallError::Panic(msg) => return PluginFault::HostPanic(cap_text(&msg)),
        CallError::Thread(msg) => {
            return PluginFault::HostPanic(format!("no thread for the call: {msg}"));
        }
    };
    let state = store.data();
    if let Some(exit) = err.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return PluginFault::Exit(exit.0);
    }
    if err.chain().any(|c| c.is::<sandbox::BudgetExceeded>()) {
        return PluginFault::OutOfMemory((limits.memory_bytes >> 20) as u64);
    }
    if let Some(trap) = err.downcast_ref::<wasmtime::Trap>() {
        match trap {
            wasmtime::Trap::Interrupt => {
                return match state.stop {
                    Some(sandbox::Stop::RunCpu) => {
                        PluginFault::RunBudget(limits.cpu_per_run.as_millis() as u64)
                    }
                    Some(sandbox::Stop::Wall) => PluginFault::WallTimeout(
                        (limits.cpu_per_call * 50)
                            .max(Duration::from_secs(5))
                            .as_millis() as u64,
                    ),
                    Some(sandbox::Stop::CallCpu(limit)) => {
                        PluginFault::Timeout(limit.as_millis() as u64)
                    }
                    None => PluginFault::Timeout(limits.cpu_per_call.as_millis() as u64),
                };
            }
            wasmtime::Trap::StackOverflow => return PluginFault::StackOverflow,
            wasmtime::Trap::AllocationTooLarge => {
                return PluginFault::OutOfMemory((limits.memory_bytes >> 20) as u64);
            }
            wasmtime::Trap::UnreachableCodeReached => {
                if let Some(msg) = state.stdio.panic_message() {
                    return PluginFault::Panic(cap_text(&msg));
                }
            }
            _ => {}
        }
    }
    let mut text = chain_text(&err);
    if let Some(last) = state.stdio.last_line() {
        text.push_str(&format!(" (its last output: {last})"));
    }
    PluginFault::Trap(cap_text(&text))
}

/// The error and its causes on one line, without wasmtime's backtrace.
fn chain_text(err: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let first = cause.to_string();
        let first = first.lines().next().unwrap_or("").trim().to_string();
        let noise = first.starts_with("wasm backtrace")
            || first.starts_with("error while executing at wasm backtrace");
        if !first.is_empty() && !noise && !parts.contains(&first) {
            parts.push(first);
        }
    }
    parts.join(": ")
}

fn cap_text(text: &str) -> String {
    const MAX: usize = 1000;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut cut = MAX;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

/// One plugin's instance for one run. Keeps the plugin's state between calls.
pub struct PluginInstance {
    name: String,
    store: Store<SandboxState>,
    roles: Roles,
    limits: Limits,
    disabled: Option<PluginFault>,
    findings_reported: usize,
    probes: Vec<ProbeRecord>,
}

impl PluginInstance {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn disabled(&self) -> Option<&PluginFault> {
        self.disabled.as_ref()
    }

    pub fn set_probe(&mut self, probe: Option<Arc<dyn GuestProbe>>) {
        self.store.data_mut().set_probe(probe);
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// What the plugin printed to stdout and stderr so far (bounded).
    pub fn output(&self) -> String {
        self.store.data().stdio.text()
    }

    /// CPU time the instance has used in this run.
    pub fn cpu_used(&self) -> Duration {
        self.store.data().run_cpu()
    }

    /// Bytes of memory and tables the instance holds.
    pub fn memory_used(&self) -> usize {
        self.store.data().budget.used()
    }

    /// The probes the plugin asked for since the last time, allowed or refused.
    pub fn take_probes(&mut self) -> Vec<ProbeRecord> {
        std::mem::take(&mut self.probes)
    }

    fn describe(&mut self) -> Result<wit::Metadata, PluginFault> {
        let raw = self.guarded(|store, roles| match roles {
            Roles::Current(Some(d), _) => d.call_describe(store),
            Roles::Current(_, Some(h)) => h.call_describe(store),
            Roles::V0_1(Some(d), _) => d.call_describe(store).map(compat::metadata_from),
            Roles::V0_1(_, Some(h)) => h.call_describe(store).map(compat::metadata_from),
            _ => unreachable!("a plugin has at least one role"),
        })?;
        self.check_output(1, convert::metadata_size(&raw))?;
        Ok(raw)
    }

    /// Sends a batch of events; returns the findings, each labelled with this plugin's name.
    pub fn feed(&mut self, events: &[Event]) -> Result<Vec<Finding>, PluginFault> {
        if !self.roles.detects() || events.is_empty() {
            return Ok(Vec::new());
        }
        let batch: Vec<_> = events.iter().map(convert::event).collect();
        let raw = self.guarded(|store, roles| match roles {
            Roles::Current(Some(d), _) => d.call_feed(store, &batch),
            Roles::V0_1(Some(d), _) => {
                let old: Vec<_> = batch.into_iter().map(compat::event).collect();
                let found = d.call_feed(store, &old)?;
                Ok(found.into_iter().map(compat::finding_from).collect())
            }
            _ => unreachable!("checked: a detector"),
        })?;
        self.check_findings(raw)
    }

    /// The stream ended.
    pub fn finish(&mut self) -> Result<Vec<Finding>, PluginFault> {
        if !self.roles.detects() {
            return Ok(Vec::new());
        }
        let raw = self.guarded(|store, roles| match roles {
            Roles::Current(Some(d), _) => d.call_finish(store),
            Roles::V0_1(Some(d), _) => Ok(d
                .call_finish(store)?
                .into_iter()
                .map(compat::finding_from)
                .collect()),
            _ => unreachable!("checked: a detector"),
        })?;
        self.check_findings(raw)
    }

    /// Asks for healing actions for `finding` (index `finding_index` in the run's list).
    pub fn heal(
        &mut self,
        finding: &Finding,
        finding_index: usize,
        cx: &HealRequest<'_>,
    ) -> Result<Vec<HealingAction>, PluginFault> {
        if !self.roles.heals() {
            return Ok(Vec::new());
        }
        let wit_finding = convert::finding_to_wit(finding);
        let wit_cx = convert::heal_context(cx);
        let raw = self.guarded(|store, roles| match roles {
            Roles::Current(_, Some(h)) => h.call_heal(store, &wit_finding, &wit_cx),
            Roles::V0_1(_, Some(h)) => {
                let (f, cx) = (
                    compat::finding_to(wit_finding),
                    compat::heal_context(wit_cx),
                );
                Ok(h.call_heal(store, &f, &cx)?
                    .into_iter()
                    .map(compat::action_from)
                    .collect())
            }
            _ => unreachable!("checked: a healer"),
        })?;
        let size: usize = raw.iter().map(convert::action_size).sum();
        self.check_output(raw.len(), size)?;
        if raw.len() > convert::MAX_ACTIONS_PER_HEAL {
            return Err(self.fail(PluginFault::OversizedOutput {
                got: raw.len(),
                limit: convert::MAX_ACTIONS_PER_HEAL,
                unit: "actions",
            }));
        }
        let mut actions = Vec::with_capacity(raw.len());
        for a in raw {
            match convert::action(a, &self.name, finding_index) {
                Ok(a) => actions.push(a),
                Err(why) => return Err(self.fail(PluginFault::BadOutput(why))),
            }
        }
        Ok(actions)
    }

    fn check_findings(&mut self, raw: Vec<wit::Finding>) -> Result<Vec<Finding>, PluginFault> {
        let size: usize = raw.iter().map(convert::finding_size).sum();
        self.check_output(raw.len(), size)?;
        self.findings_reported += raw.len();
        if self.findings_reported > self.limits.findings_per_run.saturating_mul(20) {
            // Reporting the same findings again and again is host work too.
            let got = self.findings_reported;
            return Err(self.fail(PluginFault::OversizedOutput {
                got,
                limit: self.limits.findings_per_run * 20,
                unit: "findings in this run",
            }));
        }
        let mut out = Vec::with_capacity(raw.len());
        for f in raw {
            match convert::finding(f, &self.name) {
                Ok(f) => out.push(f),
                Err(why) => return Err(self.fail(PluginFault::BadOutput(why))),
            }
        }
        Ok(out)
    }

    /// Disables the instance for the rest of the run with `fault`.
    pub fn fail(&mut self, fault: PluginFault) -> PluginFault {
        self.disabled = Some(fault.clone());
        fault
    }

    fn check_output(&mut self, items: usize, bytes: usize) -> Result<(), PluginFault> {
        if items > self.limits.output_items {
            return Err(self.fail(PluginFault::OversizedOutput {
                got: items,
                limit: self.limits.output_items,
                unit: "items",
            }));
        }
        if bytes > self.limits.output_bytes {
            return Err(self.fail(PluginFault::OversizedOutput {
                got: bytes,
                limit: self.limits.output_bytes,
                unit: "bytes",
            }));
        }
        Ok(())
    }

    /// Runs one call under the deadline; any failure disables the instance (after a trap its
    /// state cannot be trusted, and wasmtime will not enter it again).
    fn guarded<R: Send>(
        &mut self,
        call: impl FnOnce(&mut Store<SandboxState>, &Roles) -> wasmtime::Result<R> + Send,
    ) -> Result<R, PluginFault> {
        if let Some(f) = &self.disabled {
            return Err(PluginFault::Disabled(f.to_string()));
        }
        let roles = &self.roles;
        let result = run_call(&mut self.store, |store| call(store, roles));
        self.probes.extend(self.store.data_mut().take_probes());
        match result {
            Ok(r) => Ok(r),
            Err(e) => {
                let fault = classify(e, &self.limits, &self.store);
                Err(self.fail(fault))
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
