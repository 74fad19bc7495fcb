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

#[test]
fn every_profile_runs_unless_named_and_shares_split_them() {
    let dir = tempfile::tempdir().unwrap();
    let list = |args: &[&str]| -> Vec<String> {
        let all = [&["test", "--list"], args].concat();
        let (code, out, err) = nixtest(dir.path(), &all, &[]);
        assert_eq!(code, Some(0), "{all:?}: {err}");
        out.lines().map(str::to_string).collect()
    };
    assert_eq!(list(&[]), ["vm", "workstation", "server"]);
    assert_eq!(list(&["server", "vm"]), ["server", "vm"]);
    assert_eq!(list(&["vm", "--profiles", "server,vm"]), ["vm", "server"]);
    assert_eq!(list(&["--partition", "slice:1/2"]), ["vm", "server"]);
    assert_eq!(list(&["--partition", "slice:2/2"]), ["workstation"]);
    for kind in ["hash", "slice"] {
        for total in 1..=4 {
            let mut all: Vec<String> = Vec::new();
            for shard in 1..=total {
                let spec = format!("{kind}:{shard}/{total}");
                let share = list(&["--partition", &spec]);
                assert_eq!(share, list(&["--partition", &spec]), "stable: {spec}");
                all.extend(share);
            }
            all.sort();
            assert_eq!(all, ["server", "vm", "workstation"], "{kind} of {total}");
        }
    }
    // nixtest.toml's list is "every profile" when it has one.
    std::fs::write(
        dir.path().join("nixtest.toml"),
        "[test]\nprofiles = [\"server\", \"vm\"]\n",
    )
    .unwrap();
    assert_eq!(list(&[]), ["server", "vm"]);
    let (code, _, err) = nixtest(dir.path(), &["test", "--partition", "count:1/2"], &[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("deprecated") && err.contains("slice:M/N"),
        "{err}"
    );
    let (code, _, err) = nixtest(dir.path(), &["test", "--partition", "hash:3/2"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("1 ≤ M ≤ N"), "{err}");
}

#[test]
fn an_empty_share_reports_itself_and_merge_joins_the_shares() {
    let dir = tempfile::tempdir().unwrap();
    let reports = dir.path().join("reports");
    // By name, vm and server hash to the third bucket of three, workstation to the second:
    // the first share holds nothing, and says so in a report the merge can count on.
    let (code, out, err) = nixtest(
        dir.path(),
        &[
            "test",
            "--partition",
            "hash:1/3",
            "--report-dir",
            reports.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("holds no profile"), "{out}");
    let run = std::fs::read_dir(&reports)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let empty = nixtest::report::Report::load(&run).unwrap();
    let share = empty.share.clone().expect("the share is recorded");
    assert_eq!(share.partition, "hash:1/3");
    assert_eq!(share.of, ["vm", "workstation", "server"]);

    // The other shares, as two runs would have written them.
    let sample: nixtest::report::Report =
        serde_json::from_str(include_str!("fixtures/sample-report.json")).unwrap();
    let mut shares = vec![run.clone()];
    for (i, names) in [vec!["workstation"], vec!["vm", "server"]]
        .into_iter()
        .enumerate()
    {
        let profiles = names
            .iter()
            .map(|n| {
                let mut p = sample.profiles[0].clone();
                p.name = n.to_string();
                p
            })
            .collect();
        let mut r = nixtest::report::Report::new(
            format!("share-{i}"),
            "2026-11-24T03:06:24Z".into(),
            1000,
            profiles,
        );
        r.share = Some(nixtest::partition::Share {
            partition: format!("hash:{}/3", i + 2),
            of: share.of.clone(),
        });
        let d = dir.path().join(format!("artefact-{i}")).join(&r.run_id);
        r.write(&d).unwrap();
        shares.push(d.parent().unwrap().to_path_buf());
    }
    let out_dir = dir.path().join("merged");
    let mut args = vec!["report".to_string(), "merge".into()];
    args.extend(shares.iter().map(|p| p.display().to_string()));
    args.extend(["--out".into(), out_dir.display().to_string()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = nixtest(dir.path(), &refs, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("merged 3 profiles: 3 passed"), "{out}");
    let merged = nixtest::report::Report::load(&out_dir).unwrap();
    let names: Vec<&str> = merged.profiles.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["vm", "workstation", "server"], "in the run's order");
    // The empty share adds no profile; without a share that holds some, the merge says
    // which are missing.
    let merge = |dirs: &[&str], out: &str| {
        let mut a = vec!["report", "merge"];
        a.extend(dirs);
        let out = dir.path().join(out);
        a.extend(["--out", out.to_str().unwrap()]);
        nixtest(dir.path(), &a, &[])
    };
    let (code, _, err) = merge(&[refs[3], refs[4]], "m2");
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = merge(&[refs[2], refs[3]], "m3");
    assert_eq!(code, Some(2));
    assert!(err.contains("vm") && err.contains("missing"), "{err}");
}
