//! The dashboard in a real headless Chromium (chromedriver, WebDriver): a live page follows a
//! real `nixtest test --inject disk` run without a reload; a past run's page matches its
//! report.json without JavaScript; URLs cannot leave the report folder; a listen beyond
//! loopback needs a token. The live page's screenshot is kept in
//! `target/test-artefacts/dashboard-live.png`. The VM test needs root and libvirtd.

use fantoccini::Locator;
use nixtest::findings::{Category, Finding, Severity};
use nixtest::report::Report;
use nixtest::run_event::{RunEvent, What};
use nixtest_events::{Event, EventKind};
use nixtest_tests::{
    Browser, Killed, free_port, http_get, nixtest_bin, served_disk_run, vm_lock, wait_listening,
    workspace_root,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const RUN: &str = "20261124-030624-479f";

/// A past run: the sample report (a healed disk fault, a refused action), with a finding
/// whose evidence line is in the events file, and a line a browser would run if unescaped.
fn past_run(reports: &Path) -> (PathBuf, Report) {
    let mut report: Report =
        serde_json::from_str(include_str!("../host/tests/fixtures/sample-report.json")).unwrap();
    report.profiles[0].findings.push(Finding {
        detector: "disk-fix".into(),
        category: Category::DiskDevice,
        severity: Severity::Error,
        permanent: true,
        summary: "disk /dev/sdz not found <b>(sgdisk)</b>".into(),
        lines: vec![3],
        details: Vec::new(),
    });
    let dir = reports.join(RUN);
    report.write(&dir).unwrap();
    let lines = [
        "::PHASE::disk_partitioning",
        "<img src=x onerror=\"document.title='pwned'\">",
        "Error: /dev/sdz: No such file or directory",
    ];
    let mut events = vec![RunEvent {
        at_ms: 0,
        profile: "vm".into(),
        what: What::ProfileStarted {
            injected_fault: None,
            epoch_ms: Some(1_764_000_000_000),
        },
    }];
    for (i, l) in lines.iter().enumerate() {
        events.push(RunEvent {
            at_ms: 100 + i as u64,
            profile: "vm".into(),
            what: What::Line {
                line: Event {
                    kind: EventKind::Raw,
                    phase: "disk_partitioning".into(),
                    message: l.to_string(),
                    line: i as u32 + 1,
                    fields: Vec::new(),
                },
            },
        });
    }
    std::fs::create_dir_all(dir.join("events")).unwrap();
    let jsonl: String = events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap() + "\n")
        .collect();
    std::fs::write(dir.join("events/vm.jsonl"), jsonl).unwrap();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::write(dir.join("logs/vm.log"), lines.join("\n")).unwrap();
    (dir, report)
}

/// `nixtest serve` on a free loopback port, stopped when dropped.
fn serve(reports: &Path, extra: &[&str]) -> (Killed, u16) {
    let port = free_port();
    let child = Command::new(nixtest_bin())
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--report-dir")
        .arg(reports)
        .args(extra)
        .env("NIXTEST_DATA_DIR", reports.join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Killed(child);
    assert!(
        wait_listening(port, Duration::from_secs(30)),
        "nixtest serve did not listen"
    );
    (child, port)
}

#[tokio::test]
async fn a_past_runs_page_matches_its_report_json_without_javascript() {
    let reports = tempfile::tempdir().unwrap();
    let (_, report) = past_run(reports.path());
    let (_server, port) = serve(reports.path(), &[]);
    let b = Browser::start(false).await;
    let base = format!("http://127.0.0.1:{port}");

    b.client.goto(&format!("{base}/")).await.unwrap();
    let row = b.text("tr.run").await.expect("the run is listed");
    assert!(row.contains(RUN) && row.contains("passed"), "{row}");
    assert!(row.contains("1 attempts, 1 healed"), "{row}");

    b.client.goto(&format!("{base}/runs/{RUN}")).await.unwrap();
    assert_eq!(b.text("#run-status").await.unwrap(), "passed");
    let json: Value = serde_json::to_value(&report).unwrap();
    for (i, p) in json["profiles"].as_array().unwrap().iter().enumerate() {
        let sec = format!("section#p{i}");
        assert_eq!(
            b.text(&format!("{sec} #p{i}-status")).await.unwrap(),
            p["status"].as_str().unwrap()
        );
        for ph in p["phases"].as_array().unwrap() {
            let name = ph["name"].as_str().unwrap();
            let row = b
                .text(&format!("{sec} tr.phase[data-phase=\"{name}\"]"))
                .await
                .unwrap_or_else(|| panic!("phase {name} shown"));
            let cells: Vec<&str> = row.split_whitespace().collect();
            assert_eq!(cells[1], ph["status"].as_str().unwrap(), "{row}");
            assert_eq!(
                cells.last().unwrap().parse::<u64>().unwrap(),
                ph["attempts"].as_u64().unwrap(),
                "{row}"
            );
        }
        let healing = p["healing"].as_array().unwrap();
        assert_eq!(b.count(&format!("{sec} tr.heal")).await, healing.len());
        for (k, h) in healing.iter().enumerate() {
            let row = b
                .text(&format!("{sec} tr.heal:nth-of-type({})", k + 2))
                .await
                .unwrap();
            assert!(row.contains(h["action"].as_str().unwrap()), "{row}");
            assert!(row.contains(h["outcome"].as_str().unwrap()), "{row}");
        }
        let checks = p["verification"].as_array().unwrap();
        assert_eq!(b.count(&format!("{sec} tr.check")).await, checks.len());
        assert_eq!(
            b.count(&format!("{sec} li.finding")).await,
            p["findings"].as_array().unwrap().len()
        );
        let diff = b.text(&format!("{sec} pre.diff")).await.unwrap();
        assert!(
            diff.contains(
                p["healing"][1]["config_diff"]
                    .as_str()
                    .unwrap()
                    .lines()
                    .nth(5)
                    .unwrap()
                    .trim()
            ),
            "{diff}"
        );
    }
    // What the guest printed is text: no element was made of it, and the finding's line is
    // marked.
    assert_eq!(b.count("#p0-log img").await, 0);
    let shown = b.text("#p0-log [data-n=\"2\"]").await.unwrap();
    assert!(shown.contains("<img src=x"), "{shown}");
    assert!(
        b.text("li.finding")
            .await
            .unwrap()
            .contains("<b>(sgdisk)</b>")
    );
    assert_eq!(b.count("#p0-log .mark[data-n=\"3\"]").await, 1);
    assert_ne!(b.client.title().await.unwrap(), "pwned");
    // The raw log is a link away.
    let (status, _, body) = http_get(port, &format!("/runs/{RUN}/logs/vm.log"), &[]);
    assert_eq!(status, 200);
    assert!(body.contains("No such file or directory"));
    b.client.goto(&format!("{base}/failures")).await.unwrap();
    assert!(b.text("h1").await.unwrap().contains("Failure signatures"));
    b.client.close().await.unwrap();
}

#[test]
fn urls_that_leave_the_report_folder_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let reports = root.path().join("reports");
    past_run(&reports);
    std::fs::write(root.path().join("secret.log"), "TOP SECRET").unwrap();
    std::fs::write(root.path().join("report.json"), "TOP SECRET").unwrap();
    std::os::unix::fs::symlink(root.path(), reports.join("escape")).unwrap();
    std::os::unix::fs::symlink(
        root.path().join("secret.log"),
        reports.join(RUN).join("logs/linked.log"),
    )
    .unwrap();
    let (_server, port) = serve(&reports, &[]);
    for path in [
        "/runs/..%2F/files/report.json".to_string(),
        "/runs/%2E%2E/files/report.json".into(),
        "/runs/escape/files/report.json".into(),
        "/runs/escape/logs/secret.log".into(),
        format!("/runs/{RUN}/logs/..%2F..%2F..%2Fsecret.log"),
        format!("/runs/{RUN}/logs/%2E%2E%2F%2E%2E%2F..%2Fsecret.log"),
        format!("/runs/{RUN}/logs/linked.log"),
        format!("/runs/{RUN}/files/..%2F..%2Freport.json"),
        format!("/runs/{RUN}/files/config%2Fvm%2Fdisko-config.nix"),
        format!("/runs/{RUN}/../../secret.log"),
        "/runs/..".into(),
        "/../secret.log".into(),
        "/assets/..%2F..%2Fsecret.log".into(),
    ] {
        let (status, _, body) = http_get(port, &path, &[]);
        assert!(status == 404 || status == 400, "{path}: {status}\n{body}");
        assert!(!body.contains("TOP SECRET"), "{path}");
    }
    // report.html keeps its inline style and still may run no script.
    let (status, head, _) = http_get(port, &format!("/runs/{RUN}/files/report.html"), &[]);
    assert_eq!(status, 200, "{head}");
    let csp = head
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("content-security-policy:")
        })
        .unwrap_or_default();
    assert!(
        csp.contains("style-src 'unsafe-inline'") && !csp.contains("script-src"),
        "{csp}"
    );
    let (status, head, _) = http_get(port, &format!("/runs/{RUN}/files/report.json"), &[]);
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
}

#[test]
fn listening_beyond_loopback_needs_a_token() {
    let reports = tempfile::tempdir().unwrap();
    let port = free_port();
    // Refused before anything listens (and before any VM for `test`).
    for args in [
        vec![
            "serve".to_string(),
            "--listen".into(),
            format!("0.0.0.0:{port}"),
        ],
        vec![
            "test".to_string(),
            format!("--serve=0.0.0.0:{port}"),
            "--report-dir".into(),
            reports.path().display().to_string(),
        ],
    ] {
        let out = Command::new(nixtest_bin())
            .args(&args)
            .env("NIXTEST_DATA_DIR", reports.path().join("data"))
            .env("NIXTEST_CACHE_DIR", reports.path().join("cache"))
            .env("NIXTEST_VM_PREFIX", "nixtest-never")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("--token"), "{err}");
    }
    assert_eq!(
        std::fs::read_dir(reports.path()).unwrap().count(),
        0,
        "no run started"
    );

    // With a token (here on loopback), every request without it is refused.
    past_run(reports.path());
    let token = "0123456789abcdef0123456789abcdef";
    let (_server, port) = serve(reports.path(), &["--token", token]);
    for path in ["/", &format!("/runs/{RUN}"), "/assets/dashboard.js"] {
        assert_eq!(http_get(port, path, &[]).0, 401, "{path}");
        assert_eq!(
            http_get(port, &format!("{path}?token=wrong-wrong-wrong"), &[]).0,
            401
        );
    }
    let (status, head, _) = http_get(port, &format!("/?token={token}"), &[]);
    assert_eq!(status, 200);
    assert!(head.contains(&format!("nixtest_token={token}")), "{head}");
    let cookie = format!("nixtest_token={token}");
    assert_eq!(http_get(port, "/", &[("Cookie", &cookie)]).0, 200);
    let bearer = format!("Bearer {token}");
    assert_eq!(http_get(port, "/", &[("Authorization", &bearer)]).0, 200);
}

#[test]
fn a_live_page_follows_a_real_run_without_a_reload() {
    let _lock = vm_lock();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(live_page());
}

async fn live_page() {
    let reports = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = served_disk_run(port, reports.path());
    let mut run = Killed(cmd.spawn().unwrap());
    let output = || {
        std::fs::read_to_string(reports.path().join("stdout.txt")).unwrap_or_default()
            + &std::fs::read_to_string(reports.path().join("stderr.txt")).unwrap_or_default()
    };
    assert!(
        wait_listening(port, Duration::from_secs(600)),
        "the dashboard did not come up"
    );
    let b = Browser::start(true).await;
    let base = format!("http://127.0.0.1:{port}");
    b.client.goto(&format!("{base}/")).await.unwrap();
    let live = b
        .client
        .find(Locator::Css("tr.run.live a"))
        .await
        .expect("the live run is listed first");
    let href = live.attr("href").await.unwrap().unwrap();
    // #measure: the page keeps when each line arrived.
    b.client
        .goto(&format!("{base}{href}#measure"))
        .await
        .unwrap();
    // A mark that a reload would erase.
    b.eval("window.nixtestMark = 42; return 1;").await;
    let before = b.text("#run-status").await.unwrap();
    assert_eq!(before, "running");
    let wait = Duration::from_secs(1200);
    b.wait_for("tr.phase[data-phase=\"disk_partitioning\"]", wait)
        .await
        .expect("the phase start appears");
    b.wait_for("li.finding[data-category=\"disk-device\"]", wait)
        .await
        .expect("the finding appears");
    b.wait_for("tr.heal[data-outcome=\"healed\"]", wait)
        .await
        .expect("the healing appears and resolves");
    b.wait_for("#run-status.passed", wait)
        .await
        .expect("the run ends passed");
    let mark = b.eval("return window.nixtestMark;").await;
    assert_eq!(mark, serde_json::json!(42), "the page was not reloaded");
    assert!(
        b.count(".log .mark").await >= 1,
        "the finding's line is marked"
    );
    let artefacts = workspace_root().join("target/test-artefacts");
    std::fs::create_dir_all(&artefacts).unwrap();
    let png = b.client.screenshot().await.unwrap();
    std::fs::write(artefacts.join("dashboard-live.png"), &png).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let seen = b.eval("return window.nixtestSeen;").await;
    b.client.close().await.unwrap();

    let status = tokio::task::spawn_blocking(move || run.0.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "the run passed:\n{}", output());
    let run_dir = std::fs::read_dir(reports.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("report.json").is_file())
        .unwrap_or_else(|| panic!("no report:\n{}", output()));
    // The server stopped with the run.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());

    // Latency, printed (measured, not asserted; `cargo bench -p nixtest-tests --bench
    // dashboard` measures it with 100 pages open).
    let lat = nixtest_tests::LineLatency::of(&seen, &run_dir);
    assert!(!lat.host_to_page.is_empty(), "lines arrived live");
    eprintln!("dashboard latency: {lat}");
}
