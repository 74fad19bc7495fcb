//! `nixtest plugin` end to end, on the real binary with a temporary data dir.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn nixtest(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_nixtest"))
            .args(args)
            .env("NIXTEST_DATA_DIR", self.dir.path().join("data"))
            .env("NIXTEST_CACHE_DIR", self.dir.path().join("cache"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn installed(&self) -> Vec<String> {
        match std::fs::read_dir(self.path("data/plugins")) {
            Ok(rd) => {
                let mut v: Vec<String> = rd
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect();
                v.sort();
                v
            }
            Err(_) => Vec::new(),
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write_fixture(env: &Env, name: &str) -> PathBuf {
    let p = env.path(&format!("{name}.wasm"));
    std::fs::write(&p, common::fixture(name)).unwrap();
    p
}

#[test]
fn add_list_info_remove_round_trip() {
    let env = Env::new();
    let wasm = write_fixture(&env, "hostile");
    let out = env.nixtest(&["plugin", "add", wasm.to_str().unwrap(), "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("installed hostile 0.1.0"),
        "{}",
        text(&out)
    );
    assert_eq!(env.installed(), vec!["hostile"]);

    let list = text(&env.nixtest(&["plugin", "list"]));
    assert!(
        list.contains("disk-fix") && list.contains("built-in"),
        "{list}"
    );
    assert!(
        list.contains("hostile") && list.contains("installed"),
        "{list}"
    );

    let info = env.nixtest(&["plugin", "info", "hostile"]);
    assert!(
        text(&info).contains("world:        detector+healer"),
        "{}",
        text(&info)
    );

    let again = env.nixtest(&["plugin", "add", wasm.to_str().unwrap(), "--yes"]);
    assert!(again.status.success());
    assert!(text(&again).contains("already installed"));

    let rm = env.nixtest(&["plugin", "remove", "hostile"]);
    assert!(rm.status.success(), "{}", text(&rm));
    assert!(env.installed().is_empty());
    let rm2 = env.nixtest(&["plugin", "remove", "hostile"]);
    assert_eq!(rm2.status.code(), Some(2));
    assert!(text(&rm2).contains("no installed plugin is named hostile"));
}

#[test]
fn bad_inputs_get_one_line_and_exit_2_and_install_nothing() {
    let env = Env::new();
    std::fs::write(env.path("garbage.wasm"), b"hello, not wasm").unwrap();
    std::fs::write(env.path("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let future = write_fixture(&env, "future-contract");
    let builtin = write_fixture(&env, "disk-fix");
    let cases: [(PathBuf, &str); 5] = [
        (env.path("missing.wasm"), "no such file"),
        (env.path("garbage.wasm"), "not a WebAssembly file"),
        (
            env.path("core.wasm"),
            "core WebAssembly module, not a component",
        ),
        (future, "nixtest:plugin@1.0.0"),
        (builtin, "name of a built-in plugin"),
    ];
    for (path, expect) in cases {
        let out = env.nixtest(&["plugin", "add", path.to_str().unwrap(), "--yes"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{path:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    assert!(env.installed().is_empty());
}

#[test]
fn no_terminal_and_no_yes_refuses() {
    let env = Env::new();
    let wasm = write_fixture(&env, "hostile");
    let out = env.nixtest(&["plugin", "add", wasm.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("pass --yes"), "{}", text(&out));
    assert!(env.installed().is_empty());
}

#[test]
fn heal_pack_with_a_broken_component_installs_nothing() {
    let env = Env::new();
    let pack = env.path("pack");
    std::fs::create_dir(&pack).unwrap();
    std::fs::write(pack.join("good.wasm"), common::fixture("hostile")).unwrap();
    std::fs::write(pack.join("broken.wasm"), b"\0asm\x0d\0\x01\0garbage").unwrap();
    std::fs::write(
        pack.join("pack.toml"),
        "[pack]\nname = \"test-pack\"\ndescription = \"a pack\"\n",
    )
    .unwrap();
    let out = env.nixtest(&["plugin", "add", pack.to_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("broken.wasm"), "{}", text(&out));
    assert!(env.installed().is_empty());

    // Without the broken one the pack installs whole.
    std::fs::remove_file(pack.join("broken.wasm")).unwrap();
    let out = env.nixtest(&["plugin", "add", pack.to_str().unwrap(), "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.installed(), vec!["hostile"]);
    assert!(text(&env.nixtest(&["plugin", "list"])).contains("test-pack"));
}

#[test]
fn scaffolded_plugin_builds_passes_its_test_and_upgrades_by_semver() {
    let env = Env::new();
    let dir = env.path("my-check");
    let out = env.nixtest(&["plugin", "new", "my-check", "--path", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    // Shared with other runs so the SDK and its dependencies build once.
    let target = common::workspace_root().join("target").join("scaffold");
    common::cargo(&dir, &target, &["test", "--quiet"]);
    let build = ["build", "--release", "--target", "wasm32-wasip2", "--quiet"];
    common::cargo(&dir, &target, &build);
    let wasm = target.join("wasm32-wasip2/release/my_check.wasm");
    let v1 = env.path("my-check-0.1.0.wasm");
    std::fs::copy(&wasm, &v1).unwrap();
    let out = env.nixtest(&["plugin", "add", v1.to_str().unwrap(), "--yes"]);
    assert!(
        text(&out).contains("installed my-check 0.1.0"),
        "{}",
        text(&out)
    );

    let manifest = dir.join("Cargo.toml");
    let toml = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        toml.replace("version = \"0.1.0\"", "version = \"0.2.0\""),
    )
    .unwrap();
    common::cargo(&dir, &target, &build);
    let v2 = env.path("my-check-0.2.0.wasm");
    std::fs::copy(&wasm, &v2).unwrap();
    let out = env.nixtest(&["plugin", "add", v2.to_str().unwrap(), "--yes"]);
    assert!(
        text(&out).contains("upgraded my-check 0.1.0 -> 0.2.0"),
        "{}",
        text(&out)
    );

    let out = env.nixtest(&["plugin", "add", v1.to_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("older"), "{}", text(&out));
    let info = text(&env.nixtest(&["plugin", "info", "my-check"]));
    assert!(info.contains("version:      0.2.0"), "{info}");
}

// Hostile input through the command line: what a plugin says about itself, names that would
// be paths, stray files in the store, links in a pack, a closed pipe.

fn handmade_file(env: &Env, file: &str, meta: &common::handmade::Meta) -> PathBuf {
    let p = env.path(file);
    std::fs::write(
        &p,
        common::handmade::detector(meta, &common::handmade::Body::default()),
    )
    .unwrap();
    p
}

#[test]
fn escape_sequences_in_a_description_cannot_fake_the_consent_screen() {
    let env = Env::new();
    let meta = common::handmade::Meta {
        description: "harmless\u{1b}[1A\u{1b}[2K\r  capabilities: none\u{202e}".into(),
        ..common::handmade::Meta::named("sneaky")
    };
    let p = handmade_file(&env, "sneaky.wasm", &meta);
    let out = env.nixtest(&["plugin", "add", p.to_str().unwrap(), "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(!shown.contains('\u{1b}') && !shown.contains('\r') && !shown.contains('\u{202e}'));
    assert!(
        shown.contains("harmless\\x1b[1A\\x1b[2K\\x0d  capabilities: none\\u{202e}"),
        "{shown}"
    );
    for args in [&["plugin", "list"][..], &["plugin", "info", "sneaky"]] {
        let out = env.nixtest(args);
        assert!(out.status.success(), "{}", text(&out));
        assert!(!out.stdout.contains(&0x1b), "{}", text(&out));
    }
}

#[test]
fn names_never_become_paths_outside_the_store() {
    let env = Env::new();
    let victim = env.path("data/victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("manifest.toml"), "name = \"victim\"").unwrap();
    for name in ["../victim", "..", "/etc", "a/b", ""] {
        let out = env.nixtest(&["plugin", "remove", name]);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", text(&out));
        assert!(
            victim.join("manifest.toml").exists(),
            "{name} deleted outside the store"
        );
    }
}

#[test]
fn stray_files_in_the_store_are_passed_over() {
    let env = Env::new();
    let p = write_fixture(&env, "disk-fix");
    let _ = p;
    std::fs::create_dir_all(env.path("data/plugins")).unwrap();
    std::fs::write(env.path("data/plugins/README"), "notes").unwrap();
    std::fs::write(env.path("data/plugins/x.wasm"), "junk").unwrap();
    let out = env.nixtest(&["plugin", "list"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("panicked"));
}

#[test]
fn a_closed_pipe_ends_listing_quietly() {
    let env = Env::new();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nixtest"))
        .args(["plugin", "list"])
        .env("NIXTEST_DATA_DIR", env.path("data"))
        .env("NIXTEST_CACHE_DIR", env.path("cache"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before anything is read.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_link_in_a_heal_pack_is_refused() {
    let env = Env::new();
    let pack = env.path("pack");
    std::fs::create_dir_all(&pack).unwrap();
    std::fs::write(pack.join("pack.toml"), "[pack]\nname = \"p\"\n").unwrap();
    let real = write_fixture(&env, "hostile");
    std::os::unix::fs::symlink(&real, pack.join("hostile.wasm")).unwrap();
    let out = env.nixtest(&["plugin", "add", pack.to_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("is a link"), "{}", text(&out));
    assert!(env.installed().is_empty());
}

#[test]
fn an_installed_plugin_that_no_longer_loads_is_disabled_and_the_others_run() {
    let env = Env::new();
    // Put a component in the store by hand whose prefilter this host refuses (as if it was
    // installed by an older nixtest with looser limits).
    let meta = common::handmade::Meta {
        patterns: vec![r"(?:\w{1,100}){1,100}x".into()],
        ..common::handmade::Meta::named("costly")
    };
    let bytes = common::handmade::detector(&meta, &common::handmade::Body::default());
    let dir = env.path("data/plugins/costly");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("plugin.wasm"), &bytes).unwrap();
    use sha2::Digest;
    std::fs::write(
        dir.join("manifest.toml"),
        format!(
            "name = \"costly\"\nversion = \"0.1.0\"\nworld = \"detector\"\nsha256 = \"{}\"\n\
             description = \"\"\ncategories = []\ncapabilities = []\nsource = \"x\"\n",
            hex::encode(sha2::Sha256::digest(&bytes))
        ),
    )
    .unwrap();
    let log = env.path("install.log");
    std::fs::write(
        &log,
        "sfdisk: cannot open /dev/sdz: No such file or directory\n",
    )
    .unwrap();
    let out = env.nixtest(&["replay", log.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["findings"][0]["detector"], "disk-fix");
    assert_eq!(v["faults"][0]["plugin"], "costly");
    assert!(
        v["faults"][0]["message"]
            .as_str()
            .unwrap()
            .contains("prefilter"),
        "{}",
        v["faults"][0]
    );
}
