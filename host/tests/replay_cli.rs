//! `nixtest replay` on the real binary: the JSON contract, exit codes, and the built-in
//! healers (as components) proposing exact changes from a configuration folder and facts.

mod common;

fn replay(args: &[&str], stdin: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (data, cache) = (dir.path().join("data"), dir.path().join("cache"));
    let out = common::nixtest(
        &[&["replay"], args].concat(),
        &[("NIXTEST_DATA_DIR", &data), ("NIXTEST_CACHE_DIR", &cache)],
        stdin,
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const DISKO: &str = r#"{
  disko.devices.disk.main = {
    type = "disk";
    device = "/dev/sdz";
    content.type = "gpt";
  };
  disko.devices.disk.spare.device = "/dev/vdc";
}
"#;

#[test]
fn disk_fix_component_rewrites_exactly_the_missing_device() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(config.join("disko-config.nix"), DISKO).unwrap();
    let facts = dir.path().join("facts.json");
    std::fs::write(
        &facts,
        r#"{"disks": [
            {"name": "vda", "path": "/dev/vda", "size_bytes": 2147483648, "partitions": 1, "mountpoints": ["/"], "boot_medium": true, "removable": false},
            {"name": "vdb", "path": "/dev/vdb", "size_bytes": 8589934592, "partitions": 0, "mountpoints": [], "boot_medium": false, "removable": false},
            {"name": "vdc", "path": "/dev/vdc", "size_bytes": 4294967296, "partitions": 0, "mountpoints": [], "boot_medium": false, "removable": false}],
           "mounts": [], "memory_total_bytes": 1073741824, "memory_available_bytes": 0,
           "swap_total_bytes": 0, "swap_free_bytes": 0, "cpus": 1, "resolvers": [],
           "reachability": [], "substituters": []}"#,
    )
    .unwrap();
    let log = "::PHASE::disk_partitioning\nsfdisk: cannot open /dev/sdz: No such file or directory\n::ERROR::disko failed\n";
    let (code, out, err) = replay(
        &[
            "-",
            "--json",
            "--config",
            config.to_str().unwrap(),
            "--facts",
            facts.to_str().unwrap(),
        ],
        log,
    );
    assert_eq!(code, Some(1), "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let f = &json["findings"][0];
    assert_eq!(f["detector"], "disk-fix");
    assert_eq!(f["category"], "disk-device");
    assert_eq!(f["severity"], "error");
    assert_eq!(f["permanent"], true);
    assert_eq!(f["lines"], serde_json::json!([2]));
    let a = &json["actions"][0];
    assert_eq!(a["healer"], "disk-fix");
    assert_eq!(a["finding"], 0);
    assert_eq!(a["name"], "retarget-disko-device");
    assert_eq!(a["config_changes"][0]["path"], "disko-config.nix");
    // Only the device that does not exist changes; the spare disk stays as it was.
    assert_eq!(
        a["config_changes"][0]["content"],
        DISKO.replace("\"/dev/sdz\"", "\"/dev/vdb\"")
    );
}

#[test]
fn clean_log_exits_0_and_missing_log_exits_2() {
    let (code, out, _) = replay(
        &["-"],
        "building '/nix/store/x-hello.drv'...\n::SUCCESS::done\n",
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("0 failures"), "{out}");
    let (code, _, err) = replay(&["/no/such/log"], "");
    assert_eq!(code, Some(2));
    assert!(err.contains("cannot open the log /no/such/log"), "{err}");
}
