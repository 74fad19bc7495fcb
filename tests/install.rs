//! `nixtest test` end to end: real installs in real VMs, each fault healed live (and failing
//! without healing), verification after the reboot, an SSH connection cut mid-phase, and an
//! unsafe healing action refused. Needs root and libvirtd, like tests/vm.rs.

use nixtest_tests::{e2e_env, nixtest_bin, plugin_wasm, vm_lock, workspace_root};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// `nixtest test ARGS` of the `vm` profile unless ARGS name profiles (with none named it
/// would run every profile).
fn nixtest_test(args: &[&str], report_dir: &Path) -> (Output, Value, PathBuf) {
    let mut cmd = Command::new(nixtest_bin());
    e2e_env(&mut cmd).arg("test");
    if !args.contains(&"--profiles") {
        cmd.arg("vm");
    }
    cmd.args(args)
        .arg("--report-dir")
        .arg(report_dir)
        .stdin(Stdio::null());
    let out = cmd.output().unwrap();
    let (report, run) = read_run(report_dir, &out);
    (out, report, run)
}

/// The one run in `report_dir`: its report.json and its folder.
fn read_run(report_dir: &Path, out: &Output) -> (Value, PathBuf) {
    let run = std::fs::read_dir(report_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .unwrap_or_else(|| panic!("no run folder:\n{}", text(out)));
    let json = std::fs::read(run.join("report.json")).unwrap();
    (serde_json::from_slice(&json).unwrap(), run)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn heals(fault: &str, category: &str) {
    let _lock = vm_lock();
    let dir = tempfile::tempdir().unwrap();
    let (out, report, _) = nixtest_test(&["--inject", fault], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let p = &report["profiles"][0];
    assert_eq!(p["status"], "passed");
    assert_eq!(p["injected_fault"], fault);
    let healed: Vec<&Value> = p["healing"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["outcome"] == "healed")
        .collect();
    assert_eq!(healed.len(), 1, "{p:#}");
    let h = healed[0];
    assert_eq!(h["finding"]["category"], category);
    assert!(!h["action"].as_str().unwrap().is_empty());
    assert!(!h["plugin"].as_str().unwrap().is_empty());
    assert!(h["confidence"].as_f64().unwrap() >= 0.3);
    // Timed from the failing line in the guest (its clock paired with the host's).
    let found = h["guest_line_to_finding_ms"].as_u64().expect("timed");
    let applied = h["guest_line_to_applied_ms"].as_u64().expect("timed");
    assert!(found <= applied, "{h:#}");
    assert!(h["started_ms"].as_u64().unwrap() > 0);
    assert!(p["errors"][category].as_u64().unwrap() >= 1);
    // The failed attempt's signature was recorded, and the report says how often it was seen.
    let failure = &p["failures"][0];
    assert_eq!(failure["category"], category, "{p:#}");
    assert_eq!(failure["signature"].as_str().unwrap().len(), 12);
    assert!(failure["times"].as_u64().unwrap() >= 1);
    assert!(
        p["verification"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "passed")
    );
    assert!(report["summary"]["healing_success_rate"].as_f64().unwrap() > 0.0);

    let dir = tempfile::tempdir().unwrap();
    let (out, report, _) = nixtest_test(&["--inject", fault, "--no-heal"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let p = &report["profiles"][0];
    assert_eq!(p["status"], "failed");
    assert!(p["errors"][category].as_u64().unwrap() >= 1, "{p:#}");
    assert_eq!(p["healing"][0]["outcome"], "skipped");
    assert_eq!(p["healing"][0]["finding"]["category"], category);
}

#[test]
fn disk_fault_heals_and_fails_without_healing() {
    heals("disk", "disk-device");
}

#[test]
fn memory_fault_heals_and_fails_without_healing() {
    heals("memory", "oom");
}

#[test]
fn space_fault_heals_and_fails_without_healing() {
    heals("space", "disk-full");
}

#[test]
fn network_fault_heals_and_fails_without_healing() {
    heals("network", "network");
}

#[test]
fn no_fault_passes_and_verifies_after_the_reboot() {
    let _lock = vm_lock();
    let dir = tempfile::tempdir().unwrap();
    let (out, report, run) = nixtest_test(&[], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let p = &report["profiles"][0];
    assert_eq!(p["status"], "passed");
    assert!(p["healing"].as_array().unwrap().is_empty());
    let checks = p["verification"].as_array().unwrap();
    assert!(
        checks.len() >= 4 && checks.iter().all(|c| c["status"] == "passed"),
        "{checks:?}"
    );
    let phases: Vec<&str> = p["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["disk_partitioning", "generate_config", "install"]);
    for f in ["junit.xml", "report.html", "logs/vm.log", "events/vm.jsonl"] {
        assert!(
            run.join(f).metadata().map(|m| m.len() > 0).unwrap_or(false),
            "{f}"
        );
    }
}

#[test]
fn two_profiles_in_parallel_share_the_pristine_base_and_both_heal() {
    let _lock = vm_lock();
    let dir = tempfile::tempdir().unwrap();
    let (out, report, _) = nixtest_test(
        &[
            "--profiles",
            "vm,server",
            "--parallel",
            "2",
            "--inject",
            "disk",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let profiles = report["profiles"].as_array().unwrap();
    let names: Vec<&str> = profiles
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["vm", "server"], "in the order asked for");
    for p in profiles {
        assert_eq!(p["status"], "passed", "{p:#}");
        assert!(
            p["healing"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["outcome"] == "healed" && h["finding"]["category"] == "disk-device"),
            "{p:#}"
        );
    }
    // They ran at the same time: the run took less than the two profiles one after the other.
    let sum: u64 = profiles
        .iter()
        .map(|p| p["duration_ms"].as_u64().unwrap())
        .sum();
    let total = report["duration_ms"].as_u64().unwrap();
    assert!(total < sum * 9 / 10, "run {total} ms vs profiles {sum} ms");
    // Both lines streams were shown, each under its profile's name.
    let shown = text(&out);
    assert!(
        shown.contains("[vm] 📍 PHASE") && shown.contains("[server] 📍 PHASE"),
        "{shown}"
    );
}

#[test]
fn ssh_cut_mid_phase_loses_and_doubles_nothing() {
    let _lock = vm_lock();
    let profile = tempfile::tempdir().unwrap();
    for f in ["configuration.nix", "disko-config.nix"] {
        std::fs::copy(
            workspace_root().join("profiles/vm").join(f),
            profile.path().join(f),
        )
        .unwrap();
    }
    let toml = std::fs::read_to_string(workspace_root().join("profiles/vm/profile.toml")).unwrap();
    let cut = r#"
[[phases]]
name = "chatter"
run = "for i in $(seq 1 40); do echo before-$i; done; pkill -f 'sshd: roo[t]@notty'; sleep 3; for i in $(seq 1 40); do echo after-$i; sleep 0.05; done"
"#;
    // The chatter phase goes first; the rest of the profile as it is.
    let toml = toml.replacen("[[phases]]", &format!("{}\n[[phases]]", cut.trim()), 1);
    std::fs::write(profile.path().join("profile.toml"), toml).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (out, report, run) = nixtest_test(
        &["--profiles", profile.path().to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(report["profiles"][0]["status"], "passed");
    let host = std::fs::read(run.join("logs/vm.log")).unwrap();
    let guest = std::fs::read(run.join("logs/vm.guest.log")).unwrap();
    assert!(String::from_utf8_lossy(&host).contains("after-40"));
    assert_eq!(
        host, guest,
        "the report's log equals the guest's own, byte for byte"
    );
}

#[test]
fn unsafe_config_change_is_refused_and_recorded() {
    let _lock = vm_lock();
    let wasm = plugin_wasm("escaping-healer");
    let dir = tempfile::tempdir().unwrap();
    let (out, report, run) = nixtest_test(
        &["--inject", "disk", "--plugin", wasm.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let healing = report["profiles"][0]["healing"].as_array().unwrap();
    let refused = healing
        .iter()
        .find(|h| h["plugin"] == "escaping-healer")
        .expect("the escaping action is recorded");
    assert_eq!(refused["outcome"], "refused");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("leaves the configuration copy")
    );
    assert!(
        healing
            .iter()
            .any(|h| h["plugin"] == "disk-fix" && h["outcome"] == "healed")
    );
    assert!(!run.join("escaped.nix").exists() && !dir.path().join("escaped.nix").exists());
}

/// A profile of two phases, each quiet for longer than the hang check waits: one busy (a
/// loop that computes), one blocked (reading a pipe nobody writes).
fn quiet_profile(dir: &Path) -> PathBuf {
    let p = dir.join("quiet");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(
        p.join("profile.toml"),
        r#"name = "quiet"
description = "a quiet busy phase, then a blocked one"

[vm]
memory_mib = 512
root = "/dev/vdb2"

[[phases]]
name = "busy_quiet"
run = "echo computing; end=$((SECONDS + 25)); while [ $SECONDS -lt $end ]; do :; done; echo computed"

[[phases]]
name = "blocked"
run = "rm -f /tmp/nobody-writes; mkfifo /tmp/nobody-writes; echo waiting for a pipe; cat /tmp/nobody-writes; echo never"
"#,
    )
    .unwrap();
    p
}

#[test]
fn a_blocked_phase_is_a_hang_and_a_busy_quiet_one_is_not() {
    let _lock = vm_lock();
    let dir = tempfile::tempdir().unwrap();
    let profile = quiet_profile(dir.path());
    let reports = dir.path().join("reports");
    let started = std::time::Instant::now();
    let mut cmd = Command::new(nixtest_bin());
    e2e_env(&mut cmd)
        .env("NIXTEST_HANG_AFTER", "8s")
        .arg("test")
        .arg(&profile)
        .arg("--report-dir")
        .arg(&reports)
        .stdin(Stdio::null());
    let out = cmd.output().unwrap();
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let (report, run) = read_run(&reports, &out);
    let p = &report["profiles"][0];
    let phases = p["phases"].as_array().unwrap();
    // Quiet for 25 s while the hang check looks after 8 s: busy, so it passed.
    assert_eq!(phases[0]["name"], "busy_quiet");
    assert_eq!(phases[0]["status"], "passed", "{p:#}");
    assert_eq!(phases[1]["name"], "blocked");
    assert_eq!(phases[1]["status"], "failed", "{p:#}");
    let hangs: Vec<&Value> = p["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["category"] == "hang")
        .collect();
    assert_eq!(hangs.len(), 1, "one hang, in the blocked phase: {p:#}");
    let details = hangs[0]["details"].as_array().unwrap();
    let snapshot = details
        .iter()
        .find(|d| d[0] == "snapshot")
        .and_then(|d| d[1].as_str())
        .unwrap_or_else(|| panic!("a snapshot: {:#}", hangs[0]));
    // The blocked process with its state and wait channel, the last lines, memory, disks.
    let cat = snapshot
        .lines()
        .find(|l| l.contains("cat /tmp/nobody-writes"))
        .unwrap_or_else(|| panic!("{snapshot}"));
    assert!(cat.contains(" S ") && cat.contains("pipe"), "{cat}");
    for part in [
        "waiting for a pipe",
        "== kernel log",
        "MemTotal",
        "== disks",
    ] {
        assert!(snapshot.contains(part), "{part}: {snapshot}");
    }
    // The run moved on: no action heals a hang, so it gave up instead of waiting.
    assert!(
        took < std::time::Duration::from_secs(300),
        "took {took:?}: {}",
        text(&out)
    );
    let log = std::fs::read_to_string(run.join("logs/quiet.log")).unwrap();
    assert!(log.contains("::HANG::blocked"), "{log}");
    assert!(!log.contains("::HANG::busy_quiet"), "{log}");
    assert!(log.contains("nixtest stopped blocked"), "{log}");
    assert!(!log.contains("\nnever"), "{log}");
}

#[test]
fn the_oom_killer_is_found_when_it_acts_not_when_the_phase_ends() {
    let _lock = vm_lock();
    let dir = tempfile::tempdir().unwrap();
    // A build step the OOM killer ends while the phase goes on for another 90 s: only the
    // kernel says what happened, and it says so in the middle of the phase.
    let p = dir.path().join("oom");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(
        p.join("profile.toml"),
        r#"name = "oom"
description = "a build step the OOM killer ends, in a phase that goes on"

[vm]
memory_mib = 192
root = "/dev/vdb2"

[[phases]]
name = "build"
run = "echo building; head -c 400M /dev/zero | tail > /dev/null 2>&1; echo carrying on quietly; sleep 90; echo phase done"
"#,
    )
    .unwrap();
    let reports = dir.path().join("reports");
    let mut cmd = Command::new(nixtest_bin());
    e2e_env(&mut cmd)
        .arg("test")
        .arg(&p)
        .args(["--max-heal-attempts", "0", "--report-dir"])
        .arg(&reports)
        .stdin(Stdio::null());
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let (report, run) = read_run(&reports, &out);
    let prof = &report["profiles"][0];
    let oom = prof["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["category"] == "oom")
        .unwrap_or_else(|| panic!("an oom finding: {prof:#}"));
    let log = std::fs::read_to_string(run.join("logs/oom.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let cited: Vec<&str> = oom["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| lines[l.as_u64().unwrap() as usize - 1])
        .collect();
    assert!(
        cited.iter().any(|l| l.starts_with("::KERNEL::")),
        "the kernel's line is the evidence: {cited:?}"
    );
    // Found mid-phase, the phase was stopped there: it never slept its 90 s out.
    let phase = &prof["phases"][0];
    assert_eq!(phase["status"], "failed");
    assert!(
        phase["duration_ms"].as_u64().unwrap() < 60_000,
        "{phase:#}\n{log}"
    );
    assert!(log.contains("nixtest stopped build"), "{log}");
    assert!(!log.contains("phase done"), "{log}");
    // In the events, the finding comes before the phase's end.
    let events = std::fs::read_to_string(run.join("events/oom.jsonl")).unwrap();
    let found = events
        .lines()
        .position(|l| l.contains("\"event\":\"finding\"") && l.contains("\"oom\""))
        .expect("a finding event");
    let ended = events
        .lines()
        .position(|l| l.contains("\"event\":\"phase_finished\""))
        .expect("the phase's end");
    assert!(found < ended, "{events}");
}
