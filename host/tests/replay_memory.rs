//! `nixtest replay` keeps a window of the log, not the log: its peak memory over a log five
//! times longer stays where it was, for logs of several shapes (an install's mix, very long
//! lines, a phase change every few lines, a failure on most lines). The log is generated and
//! streamed into standard input, so nothing large is written to disk.

use std::io::Write;
use std::process::{Command, Stdio};

/// Streams `size` bytes of `shape` into `nixtest replay -` and returns its peak resident
/// memory in KiB (from wait4, so the child is measured alone).
// The child is reaped by wait4 below (std's wait would not give its rusage).
#[allow(clippy::zombie_processes)]
fn peak_kib(shape: fn(u64) -> String, size: u64, home: &std::path::Path) -> u64 {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nixtest"))
        .args(["replay", "-"])
        .env("NIXTEST_DATA_DIR", home.join("data"))
        .env("NIXTEST_CACHE_DIR", home.join("cache"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = std::io::BufWriter::with_capacity(1 << 20, child.stdin.take().unwrap());
    let (mut written, mut i) = (0u64, 0u64);
    while written < size {
        let chunk = shape(i);
        stdin.write_all(chunk.as_bytes()).unwrap();
        written += chunk.len() as u64;
        i += 1;
    }
    drop(stdin);
    let mut status = 0;
    // SAFETY: wait4 on our own child, with a zeroed rusage it fills.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut u) };
    assert!(pid > 0, "wait4");
    assert!(libc::WIFEXITED(status), "replay ended by a signal");
    u.ru_maxrss as u64
}

/// An install's mix: markers, progress, raw tool output, metrics.
fn install(i: u64) -> String {
    format!(
        "::PHASE::install\nbuilding '/nix/store/{i:032x}-foo-{i}.drv'...\n::PROGRESS::copying path {i} of 400\ncopying path '/nix/store/{i:032x}-bar' from 'https://cache.nixos.org'...\n::METRIC::build_ms::{i}\n"
    )
}

/// Lines far longer than any line a detector is shown.
fn long_lines(i: u64) -> String {
    format!("{}{i}\n", "x".repeat(300 << 10))
}

/// A new phase every few lines (each phase's start is remembered for the report).
fn many_phases(i: u64) -> String {
    format!("::PHASE::phase-{i}\nline one of {i}\nline two of {i}\n")
}

/// Lines the detectors' prefilters and rules match: findings on most lines, all different.
fn failures(i: u64) -> String {
    format!(
        "error: builder for '/nix/store/{i:032x}-pkg-{i}.drv' failed with exit code {}\nsfdisk: cannot open /dev/sd{i}: No such file or directory\nOut of memory: Killed process {i} (nix-daemon)\n::ERROR::phase failed at step {i}\n",
        i % 250
    )
}

#[test]
fn replay_memory_does_not_grow_with_the_log() {
    let home = tempfile::tempdir().unwrap();
    // Warm the compiled-plugin cache: the first run compiles the plugins, which costs memory
    // of its own.
    peak_kib(install, 1 << 10, home.path());
    // Each shape over a log and one five times longer. Failures are slow to replay (every
    // line is a finding for some detector), so their log is shorter; it still passes every
    // per-run cap on findings and evidence many times over.
    for (name, shape, small) in [
        ("install", install as fn(u64) -> String, 4u64 << 20),
        ("long lines", long_lines, 4 << 20),
        ("many phases", many_phases, 4 << 20),
        ("failures", failures, 1 << 20),
    ] {
        let t = std::time::Instant::now();
        let large = 5 * small;
        let small_kib = peak_kib(shape, small, home.path());
        let large_kib = peak_kib(shape, large, home.path());
        eprintln!(
            "{name}: peak {small_kib} KiB over {} MiB, {large_kib} KiB over {} MiB ({:.1} s)",
            small >> 20,
            large >> 20,
            t.elapsed().as_secs_f64()
        );
        let (small, large) = (small_kib, large_kib);
        // Growth with the log shows as MiBs (a phase start kept per phase change grew 17 MiB
        // over 16 MiB more of log); a bounded window leaves the peak where it was, give or
        // take the allocator.
        assert!(
            large <= small + 4 * 1024,
            "{name}: peak memory grew with the log: {small} KiB, then {large} KiB over five times the log"
        );
        assert!(large < 100 * 1024, "{name}: {large} KiB is over 100 MB");
    }
}
