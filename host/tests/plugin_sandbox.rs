//! Real components against the sandbox: a plugin that loops, hoards memory, panics, floods its
//! output or tries to reach the host is stopped and recorded, and a well-behaved plugin beside
//! it still returns its results.

mod common;

use nixtest::facts::GuestFacts;
use nixtest::plugin::bindings::current::nixtest::plugin::probe::ProbeOutput;
use nixtest::plugin::{
    ContractError, GuestProbe, HealRequest, HostOptions, Origin, Plugin, PluginError, PluginFault,
    PluginHost, ProbeCommand, component_sha256, read_component,
};
use nixtest_events::parse_log;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn host() -> PluginHost {
    PluginHost::new(HostOptions::default()).unwrap()
}

fn load(host: &PluginHost, name: &str) -> Plugin {
    host.load(&common::fixture(name), name, Origin::Builtin)
        .unwrap()
}

/// The well-behaved neighbour: the built-in disk-fix finds its disk in the same log.
fn neighbour_still_works(host: &PluginHost) {
    let disk_fix = load(host, "disk-fix");
    let mut inst = disk_fix.instantiate().unwrap();
    let events = parse_log(b"sfdisk: cannot open /dev/sdz: No such file or directory\n");
    let found = inst.feed(&events).unwrap();
    assert_eq!(found.len(), 1, "disk-fix still reports");
    assert_eq!(found[0].category, "disk-device");
}

/// What a call cost: its wall time, and the CPU time of the thread that made it (the plugin
/// runs on the caller's thread), which is what the sandbox's limits count.
struct Spent {
    wall: Duration,
    cpu: Duration,
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given and nothing else.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) },
        0
    );
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn feed_hostile(
    host: &PluginHost,
    line: &str,
) -> (Result<Vec<nixtest::findings::Finding>, PluginFault>, Spent) {
    let hostile = load(host, "hostile");
    let mut inst = hostile.instantiate().unwrap();
    let events = parse_log(format!("{line}\n").as_bytes());
    let (started, started_cpu) = (Instant::now(), thread_cpu());
    let result = inst.feed(&events);
    let took = Spent {
        wall: started.elapsed(),
        cpu: thread_cpu().saturating_sub(started_cpu),
    };
    if result.is_err() {
        // The faulty instance stays disabled for the run.
        assert!(matches!(inst.feed(&events), Err(PluginFault::Disabled(_))));
        assert!(inst.disabled().is_some());
    }
    (result, took)
}

#[test]
fn infinite_loop_is_stopped_within_a_second() {
    let host = host();
    let (result, took) = feed_hostile(&host, "loop");
    // The first call of an instance may use what is left of its warm-up allowance.
    let limit = match result.unwrap_err() {
        PluginFault::Timeout(ms) => ms,
        other => panic!("{other:?}"),
    };
    assert!((100..=500).contains(&limit), "{limit} ms");
    // It ran until its limit, on this thread (so the CPU time below is the plugin's).
    assert!(took.cpu >= Duration::from_millis(limit), "{:?}", took.cpu);
    // The limit is CPU time: on a loaded machine (tests run side by side on two cores) the
    // call's wall time also holds other threads' turns, bounded by the wall backstop (5 s).
    assert!(
        took.cpu < Duration::from_secs(1),
        "stopped after {:?} of CPU",
        took.cpu
    );
    assert!(
        took.wall < Duration::from_secs(5),
        "stopped after {:?}",
        took.wall
    );
    neighbour_still_works(&host);
}

#[test]
fn memory_bomb_is_stopped_at_the_limit() {
    let host = PluginHost::new(HostOptions {
        limits: nixtest::plugin::Limits {
            memory_bytes: 16 << 20,
            // Growing 16 MiB takes a moment; the memory limit must be what stops it.
            cpu_per_call: Duration::from_secs(5),
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    let (result, _) = feed_hostile(&host, "alloc");
    assert_eq!(result.unwrap_err(), PluginFault::OutOfMemory(16));
    neighbour_still_works(&host);
}

#[test]
fn panic_is_recorded_with_its_message() {
    let host = host();
    let (result, _) = feed_hostile(&host, "panic");
    match result.unwrap_err() {
        // The cause is kept: the panic's own message, from the plugin's captured stderr.
        PluginFault::Panic(msg) => {
            assert!(msg.contains("hostile plugin panics on purpose"), "{msg}")
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    neighbour_still_works(&host);
}

#[test]
fn oversized_results_are_refused() {
    // Building 100k findings takes a while under a loaded test run; the cap is what is tested.
    let host = PluginHost::new(HostOptions {
        limits: nixtest::plugin::Limits {
            cpu_per_call: Duration::from_secs(5),
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    let (result, _) = feed_hostile(&host, "flood");
    assert!(matches!(
        result.unwrap_err(),
        PluginFault::OversizedOutput { unit: "items", .. }
    ));
    let (result, _) = feed_hostile(&host, "huge");
    assert!(matches!(
        result.unwrap_err(),
        PluginFault::OversizedOutput { unit: "bytes", .. }
    ));
    neighbour_still_works(&host);
}

#[test]
fn host_files_sockets_and_env_are_out_of_reach() {
    let host = host();
    let (result, _) = feed_hostile(&host, "escape");
    let said: Vec<String> = result.unwrap().into_iter().map(|f| f.summary).collect();
    assert!(said[0].starts_with("fs:denied"), "{said:?}");
    assert!(said[1].starts_with("net:denied"), "{said:?}");
    assert_eq!(said[2], "env:0");
    neighbour_still_works(&host);
}

#[test]
fn probe_without_the_capability_is_refused() {
    let host = host();
    let hostile = load(&host, "hostile");
    let mut inst = hostile.instantiate().unwrap();
    let finding = nixtest::findings::Finding {
        details: Vec::new(),
        detector: "x".into(),
        category: "other".into(),
        severity: nixtest::findings::Severity::Error,
        permanent: true,
        summary: "s".into(),
        lines: vec![],
    };
    let facts = GuestFacts::default();
    let actions = inst
        .heal(
            &finding,
            0,
            &HealRequest {
                facts: &facts,
                phase: "p",
                config: &[],
                evidence: &[],
                attempt: 0,
            },
        )
        .unwrap();
    assert!(
        actions[0]
            .description
            .starts_with("probe refused: plugin hostile did not declare"),
        "{}",
        actions[0].description
    );
}

/// Stands in for the guest: answers after a pause longer than a call's CPU limit.
struct SlowGuest;

impl GuestProbe for SlowGuest {
    fn run(&self, command: &ProbeCommand) -> Result<ProbeOutput, String> {
        std::thread::sleep(Duration::from_millis(150));
        Ok(ProbeOutput {
            status: 0,
            stdout: format!("guest says {}", command.argv.join(" ")),
            stderr: String::new(),
        })
    }
}

fn prober_heals(summary: &str, probe: Option<Arc<dyn GuestProbe>>) -> Vec<String> {
    let host = host();
    let prober = load(&host, "prober");
    assert!(prober.may_probe());
    let mut inst = prober.instantiate().unwrap();
    inst.set_probe(probe);
    let finding = nixtest::findings::Finding {
        details: Vec::new(),
        detector: "x".into(),
        category: "other".into(),
        severity: nixtest::findings::Severity::Error,
        permanent: true,
        summary: summary.into(),
        lines: vec![],
    };
    let facts = GuestFacts::default();
    let request = HealRequest {
        facts: &facts,
        phase: "p",
        config: &[],
        evidence: &[],
        attempt: 0,
    };
    let actions = inst.heal(&finding, 0, &request).unwrap();
    actions.into_iter().map(|a| a.description).collect()
}

#[test]
fn a_declared_probe_runs_read_only_commands_and_its_wait_is_not_cpu_time() {
    // Three probes of 150 ms each: far over the 100 ms CPU limit, none of it the plugin's.
    let said = prober_heals(
        "lsblk -b -d;rm -rf /;cat /etc/hostname > /tmp/x;df -h /mnt",
        Some(Arc::new(SlowGuest)),
    );
    assert_eq!(said[0], "ran: status 0 stdout \"guest says lsblk -b -d\"");
    assert!(
        said[1].starts_with("refused: rm is not a read-only probe program"),
        "{said:?}"
    );
    assert!(
        said[2].starts_with("refused: cat probe: \">\" is not an absolute path"),
        "{said:?}"
    );
    assert_eq!(said[3], "ran: status 0 stdout \"guest says df -h /mnt\"");

    // Without a guest (replay) the plugin hears why.
    let said = prober_heals("lsblk", None);
    assert!(said[0].contains("no guest is attached"), "{said:?}");
}

#[test]
fn probes_per_call_are_capped() {
    struct Quick;
    impl GuestProbe for Quick {
        fn run(&self, _: &ProbeCommand) -> Result<ProbeOutput, String> {
            Ok(ProbeOutput {
                status: 0,
                stdout: String::new(),
                stderr: String::new(),
            })
        }
    }
    let summary = vec!["uname -a"; 20].join(";");
    let said = prober_heals(&summary, Some(Arc::new(Quick)));
    assert_eq!(said.len(), 20);
    assert!(said[..16].iter().all(|s| s.starts_with("ran:")), "{said:?}");
    assert!(
        said[16..]
            .iter()
            .all(|s| s.contains("at most 16 probes per call")),
        "{said:?}"
    );
}

#[test]
fn incompatible_contract_is_refused_naming_both_versions() {
    let host = host();
    let err = host
        .load(
            &common::fixture("future-contract"),
            "future.wasm",
            Origin::Builtin,
        )
        .unwrap_err();
    let PluginError::Contract(contract) = &err else {
        panic!("expected an incompatible contract, got {err}");
    };
    match contract.as_ref() {
        ContractError::Incompatible { plugin, host, .. } => {
            assert_eq!(plugin.to_string(), "1.0.0");
            assert_eq!(host.to_string(), "0.2.0");
        }
        other => panic!("expected an incompatible contract, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("nixtest:plugin@1.0.0")
            && msg.contains("nixtest:plugin@0.2.0")
            && msg.contains("0.1.x"),
        "{msg}"
    );
    neighbour_still_works(&host);
}

#[test]
fn state_carries_across_batches_and_instances_are_fresh_per_run() {
    let host = host();
    let disk_fix = load(&host, "disk-fix");
    let line = b"sfdisk: cannot open /dev/sdz: No such file or directory\n";
    let mut run1 = disk_fix.instantiate().unwrap();
    assert_eq!(run1.feed(&parse_log(line)).unwrap().len(), 1);
    // Same problem again in the same run: de-duplicated by the plugin's own state.
    assert_eq!(run1.feed(&parse_log(line)).unwrap().len(), 0);
    let mut run2 = disk_fix.instantiate().unwrap();
    assert_eq!(run2.feed(&parse_log(line)).unwrap().len(), 1);
}

#[test]
fn compiled_cache_is_used_and_damage_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let host = PluginHost::new(HostOptions {
        cache_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    })
    .unwrap();
    let bytes = common::fixture("disk-fix");
    // Loads go side by side only when none needs compiling.
    let (sha, other_sha) = (
        component_sha256(&bytes),
        component_sha256(&common::fixture("prober")),
    );
    assert!(!host.all_compiled([sha.as_str()].into_iter()));
    let first = host.load(&bytes, "disk-fix", Origin::Builtin).unwrap();
    assert_eq!(first.sha256, sha);
    assert!(host.all_compiled([sha.as_str()].into_iter()));
    assert!(!host.all_compiled([sha.as_str(), other_sha.as_str()].into_iter()));
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert_eq!(entries.len(), 1, "one cache entry");
    let entry = entries[0].path();
    assert!(
        entry
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&first.sha256)
    );
    // Flip a byte in the middle of the compiled code: the entry must not be trusted.
    let mut data = std::fs::read(&entry).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&entry, &data).unwrap();
    let again = host.load(&bytes, "disk-fix", Origin::Builtin).unwrap();
    let mut inst = again.instantiate().unwrap();
    let found = inst
        .feed(&parse_log(
            b"sfdisk: cannot open /dev/sdz: No such file or directory\n",
        ))
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_ne!(
        std::fs::read(&entry).unwrap(),
        data,
        "damaged entry was replaced"
    );
    // A foreign file in the entry's place is replaced as well.
    std::fs::write(&entry, b"not a compiled component").unwrap();
    host.load(&bytes, "disk-fix", Origin::Builtin).unwrap();
    assert!(std::fs::read(&entry).unwrap().starts_with(b"NXTCWAS2"));
}

/// A component file is read no further than a component may be long: a larger one is refused
/// with its size, not read whole.
#[test]
fn an_oversized_component_file_is_refused_without_reading_it_whole() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.wasm");
    let size = nixtest::plugin::MAX_COMPONENT_BYTES as u64 * 4;
    std::fs::File::create(&big).unwrap().set_len(size).unwrap();
    let err = read_component(&big).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(
        err.to_string()
            .contains(&format!("{size} bytes, over the limit")),
        "{err}"
    );
    let bytes = common::fixture("disk-fix");
    let fits = dir.path().join("fits.wasm");
    std::fs::write(&fits, &bytes).unwrap();
    assert_eq!(read_component(&fits).unwrap(), bytes);
}
