//! report.html opens in headless Chromium with no console errors; the screenshot is kept as a
//! test artefact in `target/test-artefacts/report.png`.

use nixtest::report::{
    CheckReport, FindingRef, HealingRecord, Outcome, PhaseReport, ProfileReport, Report, Status,
    config_diff,
};
use nixtest_tests::workspace_root;
use std::process::Command;

fn sample() -> Report {
    let phase = |name: &str, start: u64, dur: u64, attempts: u32| PhaseReport {
        name: name.into(),
        status: Status::Passed,
        started_ms: start,
        duration_ms: dur,
        attempts,
    };
    let profile = ProfileReport {
        name: "vm".into(),
        status: Status::Passed,
        injected_fault: Some("disk".into()),
        phases: vec![
            phase("disk_partitioning", 8000, 6300, 2),
            phase("generate_config", 14300, 1000, 1),
            phase("install", 15300, 14900, 1),
        ],
        errors: [("disk-device".to_string(), 1)].into(),
        healing: vec![HealingRecord {
            finding: FindingRef {
                category: "disk-device".into(),
                summary: "disk /dev/sdz not found (sgdisk)".into(),
                lines: vec![9],
            },
            action: "retarget-disko-device".into(),
            plugin: "disk-fix".into(),
            confidence: 0.9,
            outcome: Outcome::Healed,
            duration_ms: 6100,
            config_diff: Some(config_diff(
                "disko-config.nix",
                "device = \"/dev/sdz\";\n",
                "device = \"/dev/vdb\";\n",
            )),
            commands: vec![],
            reason: None,
            detected_ms: Some(1),
            applied_ms: Some(840),
        }],
        verification: vec![CheckReport {
            check: "hostname".into(),
            status: Status::Passed,
            output: String::new(),
        }],
        metrics: [("boot_to_ssh_ms".to_string(), 8000.0)].into(),
        detection_latency_ms: vec![1],
        error: None,
        duration_ms: 43300,
        plugin_faults: vec![],
    };
    Report::new(
        "20261124-013345-6285".into(),
        "2026-11-24T01:33:45Z".into(),
        43300,
        vec![profile],
    )
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn report_html_renders_without_console_errors() {
    let browser = chromium().expect("chromium is installed by scripts/setup.sh");
    let dir = tempfile::tempdir().unwrap();
    sample().write(dir.path()).unwrap();
    let artefacts = workspace_root().join("target/test-artefacts");
    std::fs::create_dir_all(&artefacts).unwrap();
    let shot = artefacts.join("report.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1100,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!(
            "file://{}",
            dir.path().join("report.html").display()
        ))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let console_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(
        console_errors.is_empty(),
        "console messages: {console_errors:?}"
    );
    let png = std::fs::read(&shot).expect("a screenshot was taken");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}
