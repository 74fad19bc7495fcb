//! Settings and reports on the real binary, no VM: `nixtest.toml` and the environment are
//! checked before anything starts, and `nixtest report show|list` read back a run.

use std::path::Path;
use std::process::{Command, Stdio};

fn nixtest(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nixtest"));
    cmd.args(args)
        .current_dir(dir)
        .env("NIXTEST_DATA_DIR", dir.join("data"))
        .env("NIXTEST_CACHE_DIR", dir.join("cache"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        // Nothing here may reach libvirt: a bad setting stops the run before it.
        .env("NIXTEST_LIBVIRT_URI", "test:///nowhere")
        .env_remove("NIXTEST_CONFIG")
        .env_remove("PARALLEL_TESTS")
        .env_remove("NIXTEST_REPORT_DIR")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_broken_settings_file_is_named_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nixtest.toml"), "[vm]\nmemroy = 512\n").unwrap();
    let (code, _, err) = nixtest(dir.path(), &["test"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("nixtest.toml") && err.contains("memroy"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[test]
fn bad_values_name_where_they_came_from() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nixtest.toml"), "[test]\nparallel = 0\n").unwrap();
    let (code, _, err) = nixtest(dir.path(), &["test"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("must be at least 1"), "{err}");

    // The environment comes before the file.
    std::fs::write(
        dir.path().join("nixtest.toml"),
        "[healing]\nmax_attempts = 2\n",
    )
    .unwrap();
    let (code, _, err) = nixtest(dir.path(), &["test"], &[("MAX_HEALING_ATTEMPTS", "many")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("MAX_HEALING_ATTEMPTS: \"many\" is not a number"),
        "{err}"
    );

    // NIXTEST_CONFIG names the file; a VM setting in it is checked with its origin.
    let file = dir.path().join("elsewhere.toml");
    std::fs::write(&file, "[vm]\ndisk_size = \"big\"\n").unwrap();
    let (code, _, err) = nixtest(
        dir.path(),
        &["test"],
        &[("NIXTEST_CONFIG", file.to_str().unwrap())],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("vm.disk_size in") && err.contains("elsewhere.toml"),
        "{err}"
    );
    assert!(err.contains("is not a size like 4G"), "{err}");
}

/// A real run's report (disk fault healed), with a refused action added.
const REPORT: &str = include_str!("fixtures/sample-report.json");

#[test]
fn report_show_and_list_read_back_a_run() {
    let dir = tempfile::tempdir().unwrap();
    for run in ["20261124-100000-0001", "20261124-110000-0002"] {
        let d = dir.path().join("reports").join(run);
        std::fs::create_dir_all(&d).unwrap();
        let mut report: serde_json::Value = serde_json::from_str(REPORT).unwrap();
        report["run_id"] = run.into();
        std::fs::write(d.join("report.json"), report.to_string()).unwrap();
    }
    let env = [("NIXTEST_REPORT_DIR", "reports")];
    let (code, out, err) = nixtest(dir.path(), &["report", "show", "latest"], &env);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("run 20261124-110000-0002"), "{out}");
    assert!(out.contains("1 passed, 0 failed, 0 errors"), "{out}");
    assert!(out.contains("phase disk_partitioning"), "{out}");
    assert!(out.contains("(2 attempts)"), "{out}");
    assert!(
        out.contains("retarget-disko-device by disk-fix (confidence 0.90)"),
        "{out}"
    );

    let (code, out, _) = nixtest(
        dir.path(),
        &[
            "report",
            "show",
            "20261124-100000-0001",
            "--report-dir",
            "reports",
            "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["profiles"][0]["healing"][1]["outcome"], "healed");

    // A run folder's path works too.
    let (code, out, _) = nixtest(
        dir.path(),
        &["report", "show", "reports/20261124-100000-0001"],
        &[],
    );
    assert_eq!(code, Some(0));
    assert!(out.contains("run 20261124-100000-0001"), "{out}");

    let (code, out, _) = nixtest(dir.path(), &["report", "list"], &env);
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("20261124-100000-0001  1 passed"),
        "{out}"
    );

    let (code, _, err) = nixtest(dir.path(), &["report", "show", "nope"], &env);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("no run \"nope\"") && err.contains("20261124-110000-0002"),
        "{err}"
    );
}
