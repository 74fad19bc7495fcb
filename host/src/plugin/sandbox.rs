//! The sandbox a plugin runs in: a WASI context that grants nothing, memory and output limits,
//! and the `probe` import that is refused unless the plugin declared the capability.

use super::bindings::nixtest::plugin::probe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Limits applied to every plugin call and instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time one call may run (enforced with epoch interruption).
    pub cpu_per_call: Duration,
    /// Linear memory one instance may grow to.
    pub memory_bytes: usize,
    /// Bytes of strings one call may return.
    pub output_bytes: usize,
    /// Items (findings, actions) one call may return.
    pub output_items: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cpu_per_call: Duration::from_millis(100),
            memory_bytes: 64 << 20,
            output_bytes: 1 << 20,
            output_items: 1000,
        }
    }
}

/// Runs a read-only command in the guest for plugins that may probe.
pub trait GuestProbe: Send + Sync {
    fn run(&self, command: &str) -> Result<probe::ProbeOutput, String>;
}

/// Store data of one plugin instance.
pub struct SandboxState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limits: StoreLimits,
    probe: Option<Arc<dyn GuestProbe>>,
    may_probe: bool,
    plugin: String,
    /// Time spent waiting on the guest in probes, not yet given back to the call's deadline.
    probe_wait: Duration,
    probes_this_call: u32,
}

/// Probes one call may make; a plugin asking for more is told no.
pub const MAX_PROBES_PER_CALL: u32 = 16;

impl SandboxState {
    pub fn new(limits: &Limits, plugin: &str, may_probe: bool) -> Self {
        let mut wasi = WasiCtx::builder();
        // No preopened dirs, no env, no args, no stdio, no sockets, no name lookups, and a
        // clock frozen at the epoch: a plugin learns only what its arguments tell it.
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock);
        SandboxState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .trap_on_grow_failure(true)
                .instances(64)
                .memories(8)
                .tables(64)
                .build(),
            probe: None,
            may_probe,
            plugin: plugin.to_string(),
            probe_wait: Duration::ZERO,
            probes_this_call: 0,
        }
    }

    pub(super) fn begin_call(&mut self) {
        self.probes_this_call = 0;
        self.probe_wait = Duration::ZERO;
    }

    /// The probe wait since the last time, in whole epoch ticks (rounded up), and forgets it:
    /// waiting on the guest is not the plugin's CPU time.
    pub(super) fn take_probe_ticks(&mut self, tick: Duration) -> u64 {
        let wait = std::mem::take(&mut self.probe_wait);
        wait.as_nanos().div_ceil(tick.as_nanos().max(1)) as u64
    }

    pub fn set_probe(&mut self, probe: Option<Arc<dyn GuestProbe>>) {
        self.probe = probe;
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
        if !self.may_probe {
            return Err(format!(
                "plugin {} did not declare the `probe` capability",
                self.plugin
            ));
        }
        if let Err(why) = check_read_only(&command) {
            tracing::warn!(plugin = %self.plugin, %command, "probe refused: {why}");
            return Err(why);
        }
        if self.probes_this_call >= MAX_PROBES_PER_CALL {
            return Err(format!(
                "at most {MAX_PROBES_PER_CALL} probes per call; ask for less"
            ));
        }
        self.probes_this_call += 1;
        match &self.probe {
            Some(p) => {
                let start = Instant::now();
                let out = p.run(&command);
                self.probe_wait += start.elapsed();
                out
            }
            None => Err("no guest is attached (replay): probes are unavailable".to_string()),
        }
    }
}

/// Programs a probe may start: they only read.
const READ_ONLY_PROGRAMS: &[&str] = &[
    "lsblk",
    "blkid",
    "df",
    "free",
    "findmnt",
    "cat",
    "ls",
    "stat",
    "uname",
    "ip",
    "getent",
    "nslookup",
    "host",
    "dmesg",
    "journalctl",
    "nix-store",
    "nix",
    "swapon",
    "mount",
    "du",
    "head",
    "tail",
    "wc",
    "grep",
    "id",
    "test",
];

/// A probe is one program from the read-only list with plain arguments: no shell syntax that
/// could chain, redirect or substitute, and no options that write.
pub fn check_read_only(command: &str) -> Result<(), String> {
    if command.len() > 4096 {
        return Err("probe command is longer than 4096 bytes".into());
    }
    if let Some(c) = command.chars().find(|c| {
        matches!(
            c,
            ';' | '|' | '&' | '>' | '<' | '`' | '$' | '\n' | '(' | ')'
        )
    }) {
        return Err(format!("probe command may not contain {c:?}"));
    }
    let mut words = command.split_whitespace();
    let program = words.next().ok_or("empty probe command")?;
    if !READ_ONLY_PROGRAMS.contains(&program) {
        return Err(format!("{program} is not a read-only probe program"));
    }
    // `nix` and `nix-store` only in query forms; `swapon`/`mount` only to list.
    let args: Vec<&str> = words.collect();
    let ok = match program {
        "nix" => matches!(
            args.first(),
            Some(&"show-config" | &"config" | &"path-info")
        ),
        "nix-store" => matches!(args.first(), Some(&"-q" | &"--query" | &"--verify")),
        "swapon" => args
            .iter()
            .all(|a| matches!(*a, "--show" | "-s" | "--noheadings")),
        "mount" => args.is_empty(),
        "ip" => !args
            .iter()
            .any(|a| matches!(*a, "add" | "del" | "set" | "flush" | "change" | "replace")),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("`{command}` is not a read-only use of {program}"))
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
    use super::check_read_only;

    #[test]
    fn read_only_probes() {
        for ok in [
            "lsblk -b -J",
            "df -B1 /mnt",
            "cat /proc/meminfo",
            "nix show-config",
            "mount",
        ] {
            assert!(check_read_only(ok).is_ok(), "{ok}");
        }
        for bad in [
            "rm -rf /",
            "lsblk; rm -rf /",
            "cat /etc/passwd > /tmp/x",
            "df $(reboot)",
            "nix build .#x",
            "mount /dev/vdb /mnt",
            "ip link set eth0 down",
            "",
        ] {
            assert!(check_read_only(bad).is_err(), "{bad}");
        }
    }
}
