//! Hostile plugins, one class at a time, as real components: built from source with our own
//! SDK (host/tests/fixtures/hostile) or by hand where Rust cannot express the attack
//! (tests/common/handmade.rs: several memories, an unbounded table, a start function that
//! never returns, metadata of any shape). Each test shows the host holds and a well-behaved
//! plugin beside the hostile one still returns its results; the live-run cases drive plugins
//! the way `nixtest test` does, inside the async runtime, through the monitor.

mod common;

use common::handmade::{self, Body, Meta};
use nixtest::facts::GuestFacts;
use nixtest::findings::{Finding, Severity};
use nixtest::monitor::Monitor;
use nixtest::plugin::bindings::current::nixtest::plugin::probe::ProbeOutput;
use nixtest::plugin::{
    GuestProbe, HealRequest, HostOptions, Limits, Origin, Plugin, PluginError, PluginFault,
    PluginHost, ProbeCommand,
};
use nixtest_events::parse_log;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DISK_LINE: &str = "sfdisk: cannot open /dev/sdz: No such file or directory";

fn host_with(limits: Limits) -> PluginHost {
    PluginHost::new(HostOptions {
        limits,
        ..Default::default()
    })
    .unwrap()
}

fn host() -> PluginHost {
    host_with(Limits::default())
}

fn load(host: &PluginHost, name: &str) -> Plugin {
    host.load(&common::fixture(name), name, Origin::Builtin)
        .unwrap()
}

/// Drives `plugins` over `lines` the way a live run does: inside a tokio runtime, each line
/// observed and flushed as a chunk. Returns the monitor and how long it took.
fn live_run(plugins: &[Plugin], lines: &[&str]) -> (Monitor, Duration) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let started = Instant::now();
        let mut monitor = Monitor::new(plugins).unwrap();
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        for e in parse_log(text.as_bytes()) {
            monitor.observe(e);
            monitor.flush();
        }
        monitor.finish();
        (monitor, started.elapsed())
    })
}

fn summaries(m: &Monitor, detector: &str) -> Vec<String> {
    m.findings()
        .iter()
        .filter(|f| f.detector == detector)
        .map(|f| f.summary.clone())
        .collect()
}

fn disk_fix_found(m: &Monitor) -> bool {
    m.findings()
        .iter()
        .any(|f| f.detector == "disk-fix" && f.category == "disk-device")
}

#[test]
fn printing_sleeping_and_reading_stdin_inside_a_live_run_neither_panic_nor_block() {
    let host = host();
    let plugins = vec![load(&host, "hostile"), load(&host, "disk-fix")];
    let (m, took) = live_run(&plugins, &["print", "sleep", "stdin", "clock", DISK_LINE]);
    let faults: Vec<&str> = m.faults().iter().map(|f| f.message.as_str()).collect();
    assert!(faults.is_empty(), "{faults:?}");
    let said = summaries(&m, "hostile");
    assert!(said.contains(&"printed".to_string()), "{said:?}");
    assert!(
        said.contains(&"slept".to_string()),
        "an hour's sleep returns at once: {said:?}"
    );
    assert!(said.contains(&"stdin 0".to_string()), "{said:?}");
    // The clocks are frozen: no wall time, and a sleep does not move the monotonic clock.
    assert!(said.contains(&"clock 0 0".to_string()), "{said:?}");
    assert!(disk_fix_found(&m));
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // Two megabytes printed; a bounded buffer kept, never the terminal.
    let outputs = m.outputs();
    let (_, out) = outputs
        .iter()
        .find(|(n, _)| n == "hostile")
        .expect("its output");
    assert!(
        out.starts_with("hostile stdout line 0"),
        "{}",
        &out[..80.min(out.len())]
    );
    assert!(out.len() < 20 << 10, "{} bytes kept", out.len());
    assert!(out.contains("bytes dropped]"));
}

#[test]
fn a_plugin_sleeping_in_a_loop_is_stopped_by_its_cpu_deadline() {
    let host = host();
    let hostile = load(&host, "hostile");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (result, took) = rt.block_on(async {
        let mut inst = hostile.instantiate().unwrap();
        let started = Instant::now();
        let r = inst.feed(&parse_log(b"sleep-loop\n"));
        (r, started.elapsed())
    });
    // The first call may use what is left of the instance's warm-up allowance.
    match result.unwrap_err() {
        PluginFault::Timeout(ms) => assert!((100..=500).contains(&ms), "{ms} ms"),
        other => panic!("{other:?}"),
    }
    assert!(took < Duration::from_secs(5), "stopped after {took:?}");
}

#[test]
fn exit_and_stack_overflow_keep_their_cause() {
    let host = host();
    let hostile = load(&host, "hostile");
    let mut inst = hostile.instantiate().unwrap();
    // WASI 0.2's exit carries success or failure only: status 3 arrives as 1.
    assert_eq!(
        inst.feed(&parse_log(b"exit\n")).unwrap_err(),
        PluginFault::Exit(1)
    );
    // A panic after a flood of output still keeps its message (the buffer keeps the end).
    let mut inst = hostile.instantiate().unwrap();
    match inst.feed(&parse_log(b"print\npanic\n")).unwrap_err() {
        PluginFault::Panic(msg) => assert!(msg.contains("panics on purpose"), "{msg}"),
        other => panic!("{other:?}"),
    }
    // Rust's own stack lives in linear memory: running off it is an out-of-bounds access.
    let mut inst = hostile.instantiate().unwrap();
    match inst.feed(&parse_log(b"stack\n")).unwrap_err() {
        PluginFault::Trap(msg) => assert!(msg.contains("out of bounds"), "{msg}"),
        other => panic!("{other:?}"),
    }
    // Wasm's own call stack, run out by endless recursion.
    let body = Body {
        decls: "(func $deeper (call $deeper))".into(),
        feed: "(call $deeper)".into(),
    };
    let bytes = handmade::detector(&Meta::named("recurser"), &body);
    let plugin = host.load(&bytes, "recurser", Origin::Builtin).unwrap();
    let mut inst = plugin.instantiate().unwrap();
    assert_eq!(
        inst.feed(&parse_log(b"x\n")).unwrap_err(),
        PluginFault::StackOverflow
    );
    let (m, _) = live_run(
        &[load(&host, "hostile"), load(&host, "disk-fix")],
        &["exit", DISK_LINE],
    );
    assert_eq!(m.faults().len(), 1);
    assert!(
        m.faults()[0].message.contains("exited with status 1"),
        "{}",
        m.faults()[0].message
    );
    assert!(
        !m.complete(),
        "a disabled detector leaves detection incomplete"
    );
    assert!(disk_fix_found(&m));
}

#[test]
fn a_plugin_that_overspends_within_each_call_is_stopped_by_the_run_budget() {
    let host = host_with(Limits {
        cpu_per_call: Duration::from_secs(5),
        cpu_per_run: Duration::from_millis(400),
        ..Default::default()
    });
    let hostile = load(&host, "hostile");
    let mut inst = hostile.instantiate().unwrap();
    let mut calls = 0;
    let fault = loop {
        calls += 1;
        assert!(calls < 100, "never stopped");
        match inst.feed(&parse_log(b"spin\n")) {
            Ok(_) => continue,
            Err(f) => break f,
        }
    };
    assert_eq!(fault, PluginFault::RunBudget(400));
    assert!(
        inst.cpu_used() < Duration::from_millis(600),
        "{:?}",
        inst.cpu_used()
    );
}

#[test]
fn several_memories_share_one_budget() {
    let limit = 32 << 20;
    let host = host_with(Limits {
        memory_bytes: limit,
        cpu_per_call: Duration::from_secs(5),
        ..Default::default()
    });
    let body = Body {
        decls: "(memory $second 0)".into(),
        // Grow the second memory by 16 MiB at a time until it fails.
        feed: "(loop $l (br_if $l (i32.ne (memory.grow $second (i32.const 256)) (i32.const -1))))"
            .into(),
    };
    let bytes = handmade::detector(&Meta::named("two-memories"), &body);
    let plugin = host.load(&bytes, "two-memories", Origin::Builtin).unwrap();
    let mut inst = plugin.instantiate().unwrap();
    let fault = inst.feed(&parse_log(b"x\n")).unwrap_err();
    assert_eq!(fault, PluginFault::OutOfMemory(32));
    assert!(
        inst.memory_used() <= limit,
        "{} bytes held",
        inst.memory_used()
    );
    let (m, _) = live_run(&[plugin, load(&host, "disk-fix")], &["x", DISK_LINE]);
    assert!(disk_fix_found(&m));
}

#[test]
fn a_growing_table_is_inside_the_budget() {
    let host = host_with(Limits {
        memory_bytes: 32 << 20,
        cpu_per_call: Duration::from_secs(5),
        ..Default::default()
    });
    let body = Body {
        decls: "(table $t 1 funcref)".into(),
        feed: "(loop $l (br_if $l (i32.ne (table.grow $t (ref.null func) (i32.const 100000)) (i32.const -1))))".into(),
    };
    let bytes = handmade::detector(&Meta::named("table-grower"), &body);
    let plugin = host.load(&bytes, "table-grower", Origin::Builtin).unwrap();
    let mut inst = plugin.instantiate().unwrap();
    assert_eq!(
        inst.feed(&parse_log(b"x\n")).unwrap_err(),
        PluginFault::OutOfMemory(32)
    );
    assert!(inst.memory_used() <= 32 << 20);
}

#[test]
fn a_start_function_that_never_returns_is_stopped_at_load() {
    let host = host();
    let body = Body {
        decls: "(func $spin (loop $l (br $l))) (start $spin)".into(),
        feed: String::new(),
    };
    let bytes = handmade::detector(&Meta::named("spinner"), &body);
    let started = Instant::now();
    let err = host.load(&bytes, "spinner", Origin::Builtin).unwrap_err();
    assert!(
        matches!(
            err,
            PluginError::Describe {
                fault: PluginFault::Timeout(_),
                ..
            }
        ),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn metadata_over_its_caps_is_refused_before_anything_is_shown() {
    let host = host();
    let cases: Vec<(&str, Meta)> = vec![
        (
            "description",
            Meta {
                description: "x".repeat(5000),
                ..Meta::named("big-description")
            },
        ),
        ("name", Meta::named(&"n".repeat(200))),
        ("name", Meta::named("../../etc")),
        ("name", Meta::named("Evil\u{1b}[2K")),
        (
            "version",
            Meta {
                version: "1".repeat(100),
                ..Meta::named("v")
            },
        ),
        (
            "categories",
            Meta {
                categories: (0..100).map(|i| format!("c{i}")).collect(),
                ..Meta::named("cats")
            },
        ),
        (
            "category",
            Meta {
                categories: vec!["disk\u{1b}[31m".into()],
                ..Meta::named("badcat")
            },
        ),
        (
            "literal",
            Meta {
                literals: vec!["x".repeat(10_000)],
                ..Meta::named("lit")
            },
        ),
        (
            "literals",
            Meta {
                literals: (0..1000).map(|i| format!("l{i}")).collect(),
                ..Meta::named("lits")
            },
        ),
        (
            "patterns",
            Meta {
                patterns: (0..500).map(|i| format!("p{i}")).collect(),
                ..Meta::named("pats")
            },
        ),
        (
            "pattern",
            Meta {
                patterns: vec!["a".repeat(5000)],
                ..Meta::named("pat")
            },
        ),
        (
            "context-lines",
            Meta {
                context_lines: 100_000,
                ..Meta::named("ctx")
            },
        ),
    ];
    for (field, meta) in cases {
        let bytes = handmade::detector(&meta, &Body::default());
        let err = host.load(&bytes, "x", Origin::Builtin).unwrap_err();
        assert!(
            matches!(err, PluginError::Metadata { .. }),
            "{field}: {err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(field), "{field}: {msg}");
        assert!(!msg.contains('\u{1b}'), "{field}: escape in the message");
    }
}

#[test]
fn metadata_at_the_caps_loads() {
    let host = host();
    let meta = Meta::largest();
    let bytes = handmade::detector(&meta, &Body::default());
    let started = Instant::now();
    let plugin = host.load(&bytes, "largest", Origin::Builtin).unwrap();
    eprintln!(
        "plugin with the largest metadata the caps allow loads in {:?}",
        started.elapsed()
    );
    assert_eq!(plugin.meta.patterns.len(), 128);
}

#[test]
fn a_costly_prefilter_is_refused_at_load_quickly() {
    let host = host();
    for pattern in [
        r"(?:\w{1,100}){1,100}x",
        r"((((((((((a*)*)*)*)*)*)*)*)*)*)*\w{300}",
        r"(?:\w+\s+){100}\w+x",
    ] {
        let meta = Meta {
            patterns: vec![pattern.into()],
            ..Meta::named("costly")
        };
        let bytes = handmade::detector(&meta, &Body::default());
        let started = Instant::now();
        match host.load(&bytes, "costly", Origin::Builtin) {
            Err(PluginError::Prefilter { reason, .. }) => {
                assert!(
                    reason.contains("limits")
                        || reason.contains("budget")
                        || reason.contains("scan"),
                    "{reason}"
                )
            }
            Err(e) => panic!("{pattern}: {e}"),
            // A pattern that compiles small and scans fast is no attack: then it may load.
            Ok(_) => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{pattern}: {:?}",
            started.elapsed()
        );
    }
    let meta = Meta {
        patterns: vec![r"(?:\w{1,100}){1,100}x".into()],
        ..Meta::named("costly")
    };
    let bytes = handmade::detector(&meta, &Body::default());
    assert!(matches!(
        host.load(&bytes, "costly", Origin::Builtin),
        Err(PluginError::Prefilter { .. })
    ));
}

#[test]
fn evidence_floods_are_bounded_and_merged_linearly() {
    let host = host();
    let plugins = vec![load(&host, "hostile"), load(&host, "disk-fix")];
    let mut lines = vec!["evidence"; 40];
    lines.push(DISK_LINE);
    let (m, took) = live_run(&plugins, &lines);
    let f = m
        .findings()
        .iter()
        .find(|f| f.summary == "much evidence")
        .expect("the finding");
    assert!(
        f.lines.len() <= nixtest::plugin::MAX_EVIDENCE_LINES,
        "{}",
        f.lines.len()
    );
    assert!(disk_fix_found(&m));
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn too_many_distinct_findings_in_a_run_disable_the_plugin() {
    let host = host();
    let plugins = vec![load(&host, "hostile"), load(&host, "disk-fix")];
    let (m, _) = live_run(
        &plugins,
        &["distinct", "distinct", "distinct", "distinct", DISK_LINE],
    );
    let fault = &m.faults()[0];
    assert!(
        matches!(
            fault.fault,
            PluginFault::OversizedOutput {
                unit: "distinct findings in this run",
                ..
            }
        ),
        "{fault:?}"
    );
    let hostile = m
        .findings()
        .iter()
        .filter(|f| f.detector == "hostile")
        .count();
    assert!(
        hostile <= Limits::default().findings_per_run + 1,
        "{hostile}"
    );
    assert!(disk_fix_found(&m));
}

#[test]
fn a_finding_with_a_control_character_category_is_refused() {
    let host = host();
    let mut inst = load(&host, "hostile").instantiate().unwrap();
    let fault = inst.feed(&parse_log(b"category\n")).unwrap_err();
    assert!(matches!(fault, PluginFault::BadOutput(_)), "{fault:?}");
    assert!(!fault.to_string().contains('\u{1b}'));
}

fn heal(
    plugin: &Plugin,
    summary: &str,
) -> Result<Vec<nixtest::actions::HealingAction>, PluginFault> {
    let mut inst = plugin.instantiate().unwrap();
    let finding = Finding {
        details: Vec::new(),
        detector: "x".into(),
        category: "other".into(),
        severity: Severity::Error,
        permanent: true,
        summary: summary.into(),
        lines: vec![1],
    };
    let facts = GuestFacts::default();
    inst.heal(
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
}

#[test]
fn healers_returning_too_much_are_refused() {
    let host = host();
    let hostile = load(&host, "hostile");
    assert!(matches!(
        heal(&hostile, "many-actions").unwrap_err(),
        PluginFault::OversizedOutput {
            unit: "actions",
            ..
        }
    ));
    assert!(matches!(
        heal(&hostile, "bad-action").unwrap_err(),
        PluginFault::BadOutput(_)
    ));
}

#[test]
fn every_probe_is_recorded_allowed_or_refused() {
    struct Echo;
    impl GuestProbe for Echo {
        fn run(&self, c: &ProbeCommand) -> Result<ProbeOutput, String> {
            Ok(ProbeOutput {
                status: 0,
                stdout: c.argv.join(" "),
                stderr: String::new(),
            })
        }
    }
    let host = host();
    let prober = load(&host, "prober");
    let mut inst = prober.instantiate().unwrap();
    inst.set_probe(Some(Arc::new(Echo)));
    let finding = Finding {
        details: Vec::new(),
        detector: "x".into(),
        category: "other".into(),
        severity: Severity::Error,
        permanent: true,
        summary: "df -B1 /mnt;ip netns exec x reboot;dmesg --clear;journalctl --vacuum-size=1K"
            .into(),
        lines: vec![],
    };
    let facts = GuestFacts::default();
    let said: Vec<String> = inst
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
        .unwrap()
        .into_iter()
        .map(|a| a.description)
        .collect();
    assert!(said[0].starts_with("ran:"), "{said:?}");
    assert!(
        said[1..].iter().all(|s| s.starts_with("refused:")),
        "{said:?}"
    );
    let records = inst.take_probes();
    assert_eq!(records.len(), 4);
    assert!(records[0].allowed && records[0].status == Some(0));
    assert!(
        records[1..]
            .iter()
            .all(|r| !r.allowed && r.refused.is_some())
    );
    assert!(records.iter().all(|r| r.plugin == "prober"));
}

#[test]
fn a_cache_entry_of_another_component_is_never_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("compiled");
    let host = PluginHost::new(HostOptions {
        cache_dir: Some(cache.clone()),
        ..Default::default()
    })
    .unwrap();
    let hostile = load(&host, "hostile");
    let disk_fix = load(&host, "disk-fix");
    let entry = |sha: &str| {
        std::fs::read_dir(&cache)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(sha))
            .unwrap()
    };
    // The hostile plugin's compiled code put in disk-fix's place.
    std::fs::copy(entry(&hostile.sha256), entry(&disk_fix.sha256)).unwrap();
    let again = load(&host, "disk-fix");
    assert_eq!(again.meta.name, "disk-fix");
    let mut inst = again.instantiate().unwrap();
    assert_eq!(
        inst.feed(&parse_log(DISK_LINE.as_bytes())).unwrap().len(),
        1
    );

    // A cache folder others can write is refused, with what to do.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = PluginHost::new(HostOptions {
        cache_dir: Some(cache.clone()),
        ..Default::default()
    })
    .err()
    .expect("refused");
    assert!(err.to_string().contains("chmod go-w"), "{err}");
}

#[test]
fn a_component_over_a_smaller_memory_budget_is_refused_at_load_and_others_run() {
    // Even a plugin refused by this host's limits after it was installed: the run goes on
    // without it and says so (here a detector whose start is fine but whose instance is
    // refused by a smaller memory budget than the one it loaded under).
    let big = host();
    let body = Body {
        decls: "(memory $second 600)".into(),
        feed: String::new(),
    };
    let bytes = handmade::detector(&Meta::named("memory-hungry"), &body);
    assert!(big.load(&bytes, "memory-hungry", Origin::Builtin).is_ok());
    let small = host_with(Limits {
        memory_bytes: 16 << 20,
        ..Default::default()
    });
    let err = small
        .load(&bytes, "memory-hungry", Origin::Builtin)
        .unwrap_err();
    assert!(err.to_string().contains("memory limit"), "{err}");
    let (m, _) = live_run(&[load(&small, "disk-fix")], &[DISK_LINE]);
    assert!(disk_fix_found(&m));
}
