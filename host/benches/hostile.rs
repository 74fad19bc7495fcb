//! What a hostile plugin costs the host: for each class of attack, the host process's peak
//! memory and CPU with the hostile plugin beside the built-in disk-fix, against the same run
//! with disk-fix alone (the reference, "clean"), and how long it took to stop the plugin.
//! Each class runs in a process of its own (this binary again), so peaks do not mix. Also
//! `nixtest plugin add` of a component with the largest metadata the caps allow.
//!
//! `cargo bench -p nixtest --bench hostile`

#[path = "../tests/common/mod.rs"]
mod common;

use common::handmade::{self, Body, Meta};
use nixtest::monitor::Monitor;
use nixtest::plugin::{HostOptions, Origin, Plugin, PluginHost};
use nixtest_events::parse_log;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const DISK_LINE: &str = "sfdisk: cannot open /dev/sdz: No such file or directory";

/// Runs `cmd` to its end; returns its stdout, whether it succeeded, and its own CPU time and
/// peak resident memory (from wait4, so each child is measured alone).
// The child is reaped by wait4 below (std's wait would not give its rusage).
#[allow(clippy::zombie_processes)]
fn measured(cmd: &mut Command) -> (String, bool, Duration, u64) {
    use std::io::Read;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut status = 0;
    // SAFETY: wait4 on our own child, with a zeroed rusage it fills.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut u) };
    assert!(pid > 0, "wait4");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (
        out,
        ok,
        tv(u.ru_utime) + tv(u.ru_stime),
        u.ru_maxrss as u64 * 1024,
    )
}

fn hand(name: &str, decls: &str, feed: &str, patterns: &[&str]) -> Vec<u8> {
    let meta = Meta {
        patterns: patterns.iter().map(|p| p.to_string()).collect(),
        ..Meta::named(name)
    };
    handmade::detector(
        &meta,
        &Body {
            decls: decls.into(),
            feed: feed.into(),
        },
    )
}

/// A fixture component from the folder the parent built them in (no cargo in the children:
/// its memory and CPU would count as theirs).
fn fixture(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("NIXTEST_BENCH_FIXTURES").expect("set by the parent");
    std::fs::read(Path::new(&dir).join(format!("{}.wasm", name.replace('-', "_")))).unwrap()
}

/// Runs one class in this process; prints `stopped_ms fault`.
fn run_class(class: &str, cache: &Path) {
    // The run budget shows only where each call stays under its own limit: a plugin that
    // spends a good part of a second per call against a 1 s budget for the run.
    let limits = match class {
        "run-budget" => nixtest::plugin::Limits {
            cpu_per_call: Duration::from_secs(1),
            cpu_per_run: Duration::from_secs(1),
            ..Default::default()
        },
        _ => Default::default(),
    };
    let host = PluginHost::new(HostOptions {
        cache_dir: Some(cache.to_path_buf()),
        limits,
        ..Default::default()
    })
    .unwrap();
    let disk_fix = host
        .load(&fixture("disk-fix"), "disk-fix", Origin::Builtin)
        .unwrap();
    let hostile = || {
        host.load(&fixture("hostile"), "hostile", Origin::Builtin)
            .unwrap()
    };
    let started = Instant::now();
    let at_load = |bytes: Vec<u8>| -> String {
        match host.load(&bytes, class, Origin::Builtin) {
            Ok(_) => "loaded".into(),
            Err(e) => e.to_string(),
        }
    };
    let live = |plugins: Vec<Plugin>, lines: &[&str]| -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut m = Monitor::new(&plugins).unwrap();
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            for e in parse_log(text.as_bytes()) {
                m.observe(e);
                m.flush();
            }
            m.finish();
            assert!(
                m.findings().iter().any(|f| f.detector == "disk-fix"),
                "disk-fix still reports"
            );
            m.faults()
                .first()
                .map_or("no fault".into(), |f| f.fault.to_string())
        })
    };
    let outcome = match class {
        "clean" => live(vec![disk_fix], &[DISK_LINE]),
        "loop" | "sleep-loop" | "alloc" | "flood" | "huge" | "print" | "exit" | "panic" => {
            live(vec![hostile(), disk_fix], &[class, DISK_LINE])
        }
        "run-budget" => live(
            vec![hostile(), disk_fix],
            &[&["spin"; 400][..], &[DISK_LINE]].concat(),
        ),
        "evidence" => live(
            vec![hostile(), disk_fix],
            &[&["evidence"; 40][..], &[DISK_LINE]].concat(),
        ),
        "distinct" => live(
            vec![hostile(), disk_fix],
            &[&["distinct"; 5][..], &[DISK_LINE]].concat(),
        ),
        "two-memories" => {
            let p = host
                .load(
                    &hand(
                        class,
                        "(memory $second 0)",
                        "(loop $l (br_if $l (i32.ne (memory.grow $second (i32.const 256)) (i32.const -1))))",
                        &[],
                    ),
                    class,
                    Origin::Builtin,
                )
                .unwrap();
            live(vec![p, disk_fix], &["x", DISK_LINE])
        }
        "table" => {
            let p = host
                .load(
                    &hand(
                        class,
                        "(table $t 1 funcref)",
                        "(loop $l (br_if $l (i32.ne (table.grow $t (ref.null func) (i32.const 100000)) (i32.const -1))))",
                        &[],
                    ),
                    class,
                    Origin::Builtin,
                )
                .unwrap();
            live(vec![p, disk_fix], &["x", DISK_LINE])
        }
        "start-loop" => at_load(hand(
            class,
            "(func $spin (loop $l (br $l))) (start $spin)",
            "",
            &[],
        )),
        "costly-prefilter" => at_load(hand(class, "", "", &[r"(?:\w{1,100}){1,100}x"])),
        other => panic!("unknown class {other}"),
    };
    let stopped = started.elapsed();
    println!("{} {}", stopped.as_millis(), outcome.replace('\n', " "));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cache = std::env::temp_dir().join("nixtest-bench-hostile-cache");
    if let Some(i) = args.iter().position(|a| a == "--class") {
        run_class(&args[i + 1], &cache);
        return;
    }
    // SAFETY: set before any thread is started; the children inherit it.
    unsafe { std::env::set_var("NIXTEST_BENCH_FIXTURES", common::fixtures()) };
    // Warm the compiled-code cache so every class measures the attack, not compilation.
    let _ = std::fs::remove_dir_all(&cache);
    for class in ["clean", "loop", "two-memories"] {
        measured(Command::new(&args[0]).args(["--class", class]));
    }
    let classes = [
        "clean",
        "loop",
        "sleep-loop",
        "print",
        "exit",
        "panic",
        "alloc",
        "two-memories",
        "table",
        "flood",
        "huge",
        "evidence",
        "distinct",
        "run-budget",
        "start-loop",
        "costly-prefilter",
    ];
    println!("| class | stopped after | how | host CPU | ratio | host peak RSS | ratio |");
    println!("|---|---|---|---|---|---|---|");
    let mut reference = (1u128, 1u64);
    for class in classes {
        let (text, ok, cpu, peak) = measured(Command::new(&args[0]).args(["--class", class]));
        assert!(ok, "{class} failed");
        let first = text.lines().next().unwrap_or("");
        let (stopped, how) = first.split_once(' ').unwrap_or((first, ""));
        let cpu = cpu.as_millis();
        if class == "clean" {
            reference = (cpu.max(1), peak.max(1));
        }
        println!(
            "| {class} | {stopped} ms | {} | {cpu} ms | {:.2} | {:.1} MiB | {:.2} |",
            how.chars().take(90).collect::<String>(),
            cpu as f64 / reference.0 as f64,
            peak as f64 / (1 << 20) as f64,
            peak as f64 / reference.1 as f64,
        );
    }

    // `nixtest plugin add` of the largest metadata the caps allow, as a user runs it.
    let dir = tempfile::tempdir().unwrap();
    let meta = Meta::largest();
    let file = dir.path().join("largest.wasm");
    std::fs::write(&file, handmade::detector(&meta, &Body::default())).unwrap();
    let add = |file: &Path| {
        let started = Instant::now();
        let (_, ok, cpu, peak) = measured(
            Command::new(env!("CARGO_BIN_EXE_nixtest"))
                .args(["plugin", "add", file.to_str().unwrap(), "--yes"])
                .env("NIXTEST_DATA_DIR", dir.path().join("data"))
                .env("NIXTEST_CACHE_DIR", dir.path().join("cache")),
        );
        (started.elapsed(), ok, cpu, peak)
    };
    let small = dir.path().join("small.wasm");
    std::fs::write(
        &small,
        handmade::detector(&Meta::named("small"), &Body::default()),
    )
    .unwrap();
    // The built-in plugins are compiled into the cache first, so both measure `add` itself.
    measured(
        Command::new(env!("CARGO_BIN_EXE_nixtest"))
            .args(["plugin", "list"])
            .env("NIXTEST_DATA_DIR", dir.path().join("data"))
            .env("NIXTEST_CACHE_DIR", dir.path().join("cache")),
    );
    println!("\n| plugin add | wall | CPU | peak RSS |\n|---|---|---|---|");
    for (what, f) in [
        ("smallest metadata (reference)", &small),
        ("largest metadata the caps allow", &file),
    ] {
        let (took, ok, cpu, peak) = add(f);
        assert!(ok, "{what}: plugin add failed");
        println!(
            "| {what} | {} ms | {} ms | {:.1} MiB |",
            took.as_millis(),
            cpu.as_millis(),
            peak as f64 / (1 << 20) as f64
        );
    }
}
