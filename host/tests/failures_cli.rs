//! Failure signatures on the real binary: `replay --learn` records each failed phase's
//! signature; the same unknown failure with other paths, hashes and numbers is one signature
//! seen twice, a different one is another; concurrent writers lose nothing; a damaged
//! database is set aside and a new one started.

mod common;

use std::path::Path;
use std::process::Output;

fn nixtest(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let (data, cache) = (dir.join("data"), dir.join("cache"));
    common::nixtest(
        args,
        &[("NIXTEST_DATA_DIR", &data), ("NIXTEST_CACHE_DIR", &cache)],
        stdin,
    )
}

fn unknown(store: &str, code: u32, exit: u32) -> String {
    format!(
        "::PHASE::install\nbuilding '/nix/store/{store}-foo.drv'...\n\
         foo-tool: cannot frobnicate /nix/store/{store}-foo/share/x.conf (code {code})\n\
         ::ERROR::install failed with exit code {exit}\n"
    )
}

const OTHER: &str = "::PHASE::install\nwidget tool: widget overflow in /tmp/zz after 4 items\n::ERROR::install failed with exit code 1\n";

fn list(dir: &Path) -> Vec<serde_json::Value> {
    let out = nixtest(dir, &["failures", "list", "--json"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn learn(dir: &Path, log: &str) -> Output {
    nixtest(dir, &["replay", "-", "--learn"], log)
}

#[test]
fn the_same_unknown_failure_is_one_signature_and_another_is_two() {
    let dir = tempfile::tempdir().unwrap();
    let first = learn(
        dir.path(),
        &unknown("1b9p07z77phvv2hf6gm9f28syp39f1ag", 17, 3),
    );
    // The replay still says the log failed.
    assert_eq!(first.status.code(), Some(1));
    let said = String::from_utf8_lossy(&first.stderr);
    assert!(said.contains("seen 1 times in 1 runs"), "{said}");
    learn(
        dir.path(),
        &unknown("zzx6cs2a0iw3lr1wf8bb3dxkxl5f9mjh", 2, 127),
    );
    let sigs = list(dir.path());
    assert_eq!(sigs.len(), 1, "{sigs:#?}");
    assert_eq!(sigs[0]["times"], 2);
    assert_eq!(sigs[0]["runs"], 2);
    assert_eq!(sigs[0]["category"], "other");

    learn(dir.path(), OTHER);
    let sigs = list(dir.path());
    assert_eq!(sigs.len(), 2);
    // The most frequent first.
    assert_eq!(sigs[0]["times"], 2);

    let id = sigs[0]["id"].as_str().unwrap();
    let out = nixtest(dir.path(), &["failures", "show", id], "");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("seen 2 times in 2 runs"), "{text}");
    assert!(text.contains("cannot frobnicate"), "{text}");
    let missing = nixtest(dir.path(), &["failures", "show", "000000000000"], "");
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn concurrent_learners_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // One learner first, so that the plugins are compiled and cached before the race.
    learn(dir.path(), OTHER);
    std::thread::scope(|s| {
        for _ in 0..3 {
            let dir = dir.path();
            s.spawn(move || {
                for _ in 0..3 {
                    assert_eq!(learn(dir, OTHER).status.code(), Some(1));
                }
            });
        }
    });
    let sigs = list(dir.path());
    assert_eq!(sigs.len(), 1);
    assert_eq!(sigs[0]["times"], 10);
    assert_eq!(sigs[0]["runs"], 10);
}

#[test]
fn a_damaged_database_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("failures.db"), vec![0x42u8; 4096]).unwrap();
    let out = nixtest(dir.path(), &["failures", "list"], "");
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("was damaged; it is kept as"), "{said}");
    let kept: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("damaged"))
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(std::fs::read(kept[0].path()).unwrap(), vec![0x42u8; 4096]);
    learn(dir.path(), OTHER);
    assert_eq!(list(dir.path()).len(), 1);
}

fn frobnicate(store: &str, code: u32) -> String {
    format!(
        "::PHASE::install\nbuilding '/nix/store/{store}-foo.drv'...\n\
         foo-tool: error: cannot frobnicate /nix/store/{store}-foo/share/x.conf (code {code})\n\
         ::ERROR::install failed with exit code 3\n"
    )
}

#[test]
fn a_detector_from_a_signature_builds_passes_its_test_and_finds_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    learn(
        dir.path(),
        &frobnicate("1b9p07z77phvv2hf6gm9f28syp39f1ag", 17),
    );
    let id = list(dir.path())[0]["id"].as_str().unwrap().to_string();
    let krate = dir.path().join("frobnicate");
    let out = nixtest(
        dir.path(),
        &[
            "plugin",
            "new",
            "frobnicate",
            "--path",
            krate.to_str().unwrap(),
            "--from-failure",
            &id,
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Shared with the other scaffold test so that the SDK builds once.
    let target = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("scaffold");
    common::cargo(&krate, &target, &["test", "--quiet"]);
    common::cargo(
        &krate,
        &target,
        &["build", "--release", "--target", "wasm32-wasip2", "--quiet"],
    );
    let wasm = target.join("wasm32-wasip2/release/frobnicate.wasm");
    // The next occurrence, with other paths, hashes and numbers.
    let fresh = frobnicate("zzx6cs2a0iw3lr1wf8bb3dxkxl5f9mjh", 2);
    let out = nixtest(
        dir.path(),
        &["replay", "-", "--json", "--plugin", wasm.to_str().unwrap()],
        &fresh,
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let found = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["detector"] == "frobnicate")
        .unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(found["category"], "frobnicate");
    assert_eq!(found["lines"], serde_json::json!([3]));
    // And a different failure is not it.
    let out = nixtest(
        dir.path(),
        &["replay", "-", "--json", "--plugin", wasm.to_str().unwrap()],
        OTHER,
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["detector"] != "frobnicate")
    );
}
