//! The dashboard under load. The same `nixtest test vm --inject disk --serve` run,
//! first with no page open (the reference), then with 100 live pages (event streams read as
//! they come) and one headless Chromium that records when each line appears. Prints each run's
//! duration and the nixtest process's peak memory, the ratios against the reference, the bytes
//! each page received, and the line latency (guest and host to page, p50 and p99).
//! Needs root and libvirtd, like the VM tests: `cargo bench -p nixtest-tests --bench dashboard`.

use nixtest_tests::{Browser, LineLatency, free_port, http_get, served_disk_run, wait_listening};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PAGES: usize = 100;

struct Outcome {
    duration: Duration,
    peak_rss_kib: u64,
    bytes_per_page: u64,
    latency: Option<LineLatency>,
}

/// The run's id, once its live row is on the runs page.
fn live_run_id(port: u16) -> String {
    loop {
        let (_, _, body) = http_get(port, "/", &[]);
        if let Some(i) = body.find("<tr class=\"run live\"><td><a href=\"/runs/") {
            let rest = &body[i + 40..];
            return rest[..rest.find('"').unwrap()].to_string();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A page's event stream, read until the server ends it; returns the bytes received.
fn read_stream(port: u16, run: &str) -> u64 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET /runs/{run}/live HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut buf = [0u8; 16 << 10];
    let mut total = 0u64;
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        total += n as u64;
        // The end message: the stream is over (the connection itself may stay open).
        if buf[..n].windows(9).any(|w| w == br#""t":"end""#) {
            break;
        }
    }
    total
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn run(pages: usize, rt: &tokio::runtime::Runtime) -> Outcome {
    let reports = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = served_disk_run(port, reports.path());
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        std::thread::spawn(move || {
            while let Some(kib) = peak_rss_kib(pid) {
                peak.fetch_max(kib, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    assert!(wait_listening(port, Duration::from_secs(600)));
    let run = live_run_id(port);
    let readers: Vec<_> = (0..pages)
        .map(|_| {
            let run = run.clone();
            std::thread::spawn(move || read_stream(port, &run))
        })
        .collect();
    let latency = (pages > 0).then(|| {
        rt.block_on(async {
            let b = Browser::start(true).await;
            b.client
                .goto(&format!("http://127.0.0.1:{port}/runs/{run}#measure"))
                .await
                .unwrap();
            b.wait_for(
                "#run-status.passed, #run-status.failed, #run-status.error",
                Duration::from_secs(1800),
            )
            .await
            .expect("the run ends");
            let seen = b.eval("return window.nixtestSeen;").await;
            b.client.close().await.unwrap();
            seen
        })
    });
    let status = child.wait().unwrap();
    let duration = start.elapsed();
    assert!(status.success(), "the run passed");
    sampler.join().unwrap();
    let bytes: Vec<u64> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    let run_dir: PathBuf = reports.path().join(&run);
    Outcome {
        duration,
        peak_rss_kib: peak.load(Ordering::Relaxed),
        bytes_per_page: if bytes.is_empty() {
            0
        } else {
            bytes.iter().sum::<u64>() / bytes.len() as u64
        },
        latency: latency.map(|seen| LineLatency::of(&seen, &run_dir)),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _lock = nixtest_tests::vm_lock();
    let reference = run(0, &rt);
    let loaded = run(PAGES, &rt);
    println!("dashboard bench: nixtest test vm --inject disk --serve");
    println!("reference: the same run with no page open");
    println!(
        "{:>6} {:>10} {:>7} {:>14} {:>7} {:>12}",
        "pages", "duration", "ratio", "peak RSS", "ratio", "bytes/page"
    );
    for (pages, o) in [(0, &reference), (PAGES + 1, &loaded)] {
        println!(
            "{:>6} {:>8.1} s {:>7.3} {:>11.1} MB {:>7.3} {:>12}",
            pages,
            o.duration.as_secs_f64(),
            o.duration.as_secs_f64() / reference.duration.as_secs_f64(),
            o.peak_rss_kib as f64 / 1024.0,
            o.peak_rss_kib as f64 / reference.peak_rss_kib as f64,
            o.bytes_per_page
        );
    }
    if let Some(l) = &loaded.latency {
        println!("line latency with {} pages open: {l}", PAGES + 1);
    }
}
