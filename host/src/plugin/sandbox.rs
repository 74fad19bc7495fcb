//! The sandbox a plugin runs in: a WASI context that grants nothing and never blocks, one
//! memory budget for all of an instance's memories and tables, a CPU-time deadline per call
//! and per run, captured stdio, and the `probe` import that is refused unless the plugin
//! declared the capability and the command is a read-only shape.

use super::bindings::current::nixtest::plugin::probe;
use super::probe_policy::{self, ProbeCommand};
use super::stdio::Capture;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Limits applied to every plugin call and instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// CPU time one call may use (the thread's own CPU clock, checked at each epoch tick):
    /// time spent waiting on the guest or descheduled does not count.
    pub cpu_per_call: Duration,
    /// A warm-up allowance: until an instance has used this much CPU in all, a call may use
    /// what is left of it instead of `cpu_per_call`. Plugins build their tables (compiled
    /// regexes) lazily in their first call; this pays for that once, and only once.
    pub cpu_warmup: Duration,
    /// CPU time one instance may use over the whole run, all calls together.
    pub cpu_per_run: Duration,
    /// All linear memories and tables of one instance together.
    pub memory_bytes: usize,
    /// Bytes of strings one call may return.
    pub output_bytes: usize,
    /// Items (findings, actions) one call may return.
    pub output_items: usize,
    /// Distinct findings one detector may report in a run.
    pub findings_per_run: usize,
    /// What is kept of a plugin's stdout and stderr.
    pub stdio_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cpu_per_call: Duration::from_millis(100),
            cpu_warmup: Duration::from_millis(500),
            cpu_per_run: Duration::from_secs(20),
            memory_bytes: 64 << 20,
            output_bytes: 1 << 20,
            output_items: 1000,
            findings_per_run: 500,
            stdio_bytes: 16 << 10,
        }
    }
}

/// Wall time a call may take besides the guest's answers to its probes, whatever its CPU:
/// a backstop should a host call ever block. Generous, so a loaded machine never trips it.
const WALL_BACKSTOP_FACTOR: u32 = 50;
const WALL_BACKSTOP_MIN: Duration = Duration::from_secs(5);

/// Bytes one table element is counted as (a pointer and its metadata).
const TABLE_ELEMENT_BYTES: usize = 16;

/// Runs a read-only command in the guest for plugins that may probe.
pub trait GuestProbe: Send + Sync {
    fn run(&self, command: &ProbeCommand) -> Result<probe::ProbeOutput, String>;
}

/// Why the epoch callback stopped a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Over the call's CPU limit (the limit that applied).
    CallCpu(Duration),
    RunCpu,
    Wall,
}

/// One probe a plugin asked for, allowed or not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeRecord {
    pub plugin: String,
    pub command: String,
    pub allowed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<i32>,
    pub duration_ms: u64,
}

/// The instance's memory budget: every memory and table growth is checked against what the
/// instance already holds, before it happens.
pub struct Budget {
    limit: usize,
    used: usize,
}

/// The error a growth past the budget traps with.
#[derive(Debug, thiserror::Error)]
#[error("memory budget of {limit} bytes exceeded: held {used}, asked for {asked} more")]
pub struct BudgetExceeded {
    pub limit: usize,
    pub used: usize,
    pub asked: usize,
}

impl Budget {
    fn grow(&mut self, extra: usize) -> wasmtime::Result<bool> {
        match self.used.checked_add(extra) {
            Some(total) if total <= self.limit => {
                self.used = total;
                Ok(true)
            }
            _ => Err(BudgetExceeded {
                limit: self.limit,
                used: self.used,
                asked: extra,
            }
            .into()),
        }
    }

    pub fn used(&self) -> usize {
        self.used
    }
}

impl ResourceLimiter for Budget {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(desired.saturating_sub(current))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(
            desired
                .saturating_sub(current)
                .saturating_mul(TABLE_ELEMENT_BYTES),
        )
    }

    fn instances(&self) -> usize {
        64
    }
    fn tables(&self) -> usize {
        32
    }
    fn memories(&self) -> usize {
        8
    }
}

/// The CPU time the calling thread has used.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given and nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

struct CallClock {
    cpu_start: Duration,
    wall_start: Instant,
    probe_wait: Duration,
}

/// Store data of one plugin instance.
pub struct SandboxState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) budget: Budget,
    pub(super) stdio: Capture,
    limits: Limits,
    probe: Option<Arc<dyn GuestProbe>>,
    may_probe: bool,
    plugin: String,
    call: Option<CallClock>,
    /// CPU used by the finished calls of this instance.
    run_cpu: Duration,
    pub(super) stop: Option<Stop>,
    probes_this_call: u32,
    probes: Vec<ProbeRecord>,
}

/// Probes one call may make; a plugin asking for more is told no.
pub const MAX_PROBES_PER_CALL: u32 = 16;

impl SandboxState {
    pub fn new(limits: &Limits, plugin: &str, may_probe: bool) -> Self {
        let stdio = Capture::new(limits.stdio_bytes);
        let mut wasi = WasiCtx::builder();
        // No preopened dirs, no env, no args, no sockets, no name lookups, stdin closed,
        // stdout and stderr into a bounded buffer, and a clock frozen at the epoch: a plugin
        // learns only what its arguments tell it, and nothing it calls waits.
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(stdio.clone())
            .stderr(stdio.clone())
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock);
        SandboxState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            budget: Budget {
                limit: limits.memory_bytes,
                used: 0,
            },
            stdio,
            limits: *limits,
            probe: None,
            may_probe,
            plugin: plugin.to_string(),
            call: None,
            run_cpu: Duration::ZERO,
            stop: None,
            probes_this_call: 0,
            probes: Vec::new(),
        }
    }

    /// Starts a call's clocks; must run on the thread that makes the call.
    pub(super) fn begin_call(&mut self) {
        self.probes_this_call = 0;
        self.stop = None;
        self.call = Some(CallClock {
            cpu_start: thread_cpu(),
            wall_start: Instant::now(),
            probe_wait: Duration::ZERO,
        });
    }

    /// Ends a call's clocks, on the thread that made it; returns the CPU it used.
    pub(super) fn end_call(&mut self) -> Duration {
        let used = self
            .call
            .take()
            .map_or(Duration::ZERO, |c| thread_cpu().saturating_sub(c.cpu_start));
        self.run_cpu += used;
        used
    }

    /// At an epoch tick: whether the call must stop, and why.
    pub(super) fn over_deadline(&mut self) -> Option<Stop> {
        let c = self.call.as_ref()?;
        let used = thread_cpu().saturating_sub(c.cpu_start);
        let backstop = (self.limits.cpu_per_call * WALL_BACKSTOP_FACTOR).max(WALL_BACKSTOP_MIN);
        let limit = self.call_limit();
        let stop = if used >= limit {
            Some(Stop::CallCpu(limit))
        } else if self.run_cpu + used >= self.limits.cpu_per_run {
            Some(Stop::RunCpu)
        } else if c.wall_start.elapsed().saturating_sub(c.probe_wait) >= backstop {
            Some(Stop::Wall)
        } else {
            None
        };
        self.stop = stop;
        stop
    }

    /// The CPU the current call may use: the per-call limit, or what is left of the warm-up
    /// allowance when that is more.
    pub fn call_limit(&self) -> Duration {
        self.limits
            .cpu_per_call
            .max(self.limits.cpu_warmup.saturating_sub(self.run_cpu))
    }

    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    pub fn run_cpu(&self) -> Duration {
        self.run_cpu
    }

    pub fn set_probe(&mut self, probe: Option<Arc<dyn GuestProbe>>) {
        self.probe = probe;
    }

    /// The probes since the last time, allowed or refused.
    pub(super) fn take_probes(&mut self) -> Vec<ProbeRecord> {
        std::mem::take(&mut self.probes)
    }

    fn record_probe(
        &mut self,
        command: &str,
        refused: Option<String>,
        status: Option<i32>,
        took: Duration,
    ) {
        let mut command = command.to_string();
        if command.len() > 256 {
            let mut cut = 256;
            while !command.is_char_boundary(cut) {
                cut -= 1;
            }
            command.truncate(cut);
            command.push('…');
        }
        self.probes.push(ProbeRecord {
            plugin: self.plugin.clone(),
            command,
            allowed: refused.is_none(),
            refused,
            status,
            duration_ms: took.as_millis() as u64,
        });
    }
}

impl WasiView for SandboxState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl probe::Host for SandboxState {
    fn run(&mut self, command: String) -> Result<probe::ProbeOutput, String> {
        // Past the per-call count, probes are refused without a record each: the count is
        // what bounds the report.
        if self.probes_this_call >= MAX_PROBES_PER_CALL {
            return Err(format!(
                "at most {MAX_PROBES_PER_CALL} probes per call; ask for less"
            ));
        }
        self.probes_this_call += 1;
        let refused = if !self.may_probe {
            Some(format!(
                "plugin {} did not declare the `probe` capability",
                self.plugin
            ))
        } else {
            None
        };
        let parsed = match refused {
            Some(why) => Err(why),
            None => probe_policy::parse(&command),
        };
        let parsed = match parsed {
            Ok(p) => p,
            Err(why) => {
                tracing::warn!(plugin = %self.plugin, %command, "probe refused: {why}");
                self.record_probe(&command, Some(why.clone()), None, Duration::ZERO);
                return Err(why);
            }
        };
        let Some(p) = self.probe.clone() else {
            let why = "no guest is attached (replay): probes are unavailable".to_string();
            self.record_probe(&command, Some(why.clone()), None, Duration::ZERO);
            return Err(why);
        };
        let start = Instant::now();
        let out = p.run(&parsed);
        let took = start.elapsed();
        if let Some(c) = &mut self.call {
            c.probe_wait += took;
        }
        self.record_probe(&command, None, out.as_ref().ok().map(|o| o.status), took);
        out
    }
}

struct FrozenClock;

impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_warm_up_allowance_is_spent_once() {
        let limits = Limits::default();
        let mut st = SandboxState::new(&limits, "p", false);
        assert_eq!(st.call_limit(), limits.cpu_warmup);
        st.run_cpu = Duration::from_millis(350);
        assert_eq!(st.call_limit(), Duration::from_millis(150));
        st.run_cpu = Duration::from_millis(450);
        assert_eq!(st.call_limit(), limits.cpu_per_call);
        st.run_cpu = Duration::from_secs(3);
        assert_eq!(st.call_limit(), limits.cpu_per_call);
    }

    #[test]
    fn the_budget_covers_every_memory_and_table_together() {
        let mut b = Budget {
            limit: 1000,
            used: 0,
        };
        assert!(b.memory_growing(0, 600, None).unwrap());
        // A second memory draws on the same budget.
        assert!(b.memory_growing(0, 600, None).is_err());
        assert!(b.table_growing(0, 25, None).unwrap());
        assert_eq!(b.used(), 1000);
        assert!(b.table_growing(25, 26, None).is_err());
        assert!(b.table_growing(0, usize::MAX, None).is_err());
    }

    #[test]
    fn thread_cpu_advances_with_work_not_with_sleep() {
        let a = thread_cpu();
        std::thread::sleep(Duration::from_millis(50));
        let b = thread_cpu();
        assert!(
            b - a < Duration::from_millis(25),
            "sleep counted: {:?}",
            b - a
        );
        let mut x = 0u64;
        while thread_cpu() - b < Duration::from_millis(20) {
            x = std::hint::black_box(x + 1);
        }
        assert!(thread_cpu() > b);
    }
}
