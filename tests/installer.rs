//! Real installers end to end: nixtest's stand-in installer ISO (built from Debian's packages
//! in NixOS's shape) booted from its own boot entry, entered through its serial console, and
//! the test flake installed with disko and nixos-install --flake, healed and verified after a
//! reboot from the target disk. Needs root and libvirtd, like tests/vm.rs.

use nixtest_tests::{e2e_env, nixtest_bin, vm_lock, workspace_root};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The stand-in ISO, built once (cached by its inputs across runs).
fn standin_iso() -> &'static PathBuf {
    static ISO: OnceLock<PathBuf> = OnceLock::new();
    ISO.get_or_init(|| {
        let out = e2e_env(&mut Command::new(nixtest_bin()))
            .args(["setup", "--standin-iso"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(path.is_file(), "{}", text(&out));
        path
    })
}

fn flake(host: &str) -> String {
    format!(
        "{}#{host}",
        workspace_root().join("tests/fixtures/flake").display()
    )
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// `nixtest test --iso ISO ARGS`, and the run's report and folder when it wrote one.
fn run(
    iso: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Output, Option<(Value, PathBuf)>, tempfile::TempDir) {
    let reports = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(nixtest_bin());
    e2e_env(&mut cmd)
        .arg("test")
        .arg("--iso")
        .arg(iso)
        .args(args)
        .arg("--report-dir")
        .arg(reports.path())
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let run = std::fs::read_dir(reports.path())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir());
    let report = run.map(|r| {
        let json = std::fs::read(r.join("report.json")).unwrap();
        (serde_json::from_slice(&json).unwrap(), r)
    });
    (out, report, reports)
}

fn healed_by<'a>(p: &'a Value, action: &str) -> &'a Value {
    p["healing"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["outcome"] == "healed" && h["action"] == action)
        .unwrap_or_else(|| panic!("no {action} healed: {p:#}"))
}

fn check_passed(p: &Value, name: &str) {
    assert!(
        p["verification"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["check"] == name && c["status"] == "passed"),
        "{name}: {p:#}"
    );
}

#[test]
fn the_standin_iso_is_entered_through_its_console_and_a_flake_install_heals_the_disk_fault() {
    let _lock = vm_lock();
    let iso = standin_iso();
    let before = sha256(iso);
    let (out, report, _keep) = run(
        iso,
        &["--flake", &flake("testhost"), "--inject", "disk"],
        &[],
    );
    let (report, dir) = report.expect("a report");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let p = &report["profiles"][0];
    assert_eq!(p["name"], "testhost");
    assert_eq!(p["status"], "passed");
    let h = healed_by(p, "retarget-disko-device");
    assert_eq!(h["finding"]["category"], "disk-device");
    // The diff names the file in the user's flake.
    let diff = h["config_diff"].as_str().unwrap();
    assert!(
        diff.contains("tests/fixtures/flake/hosts/testhost/disko.nix"),
        "{diff}"
    );
    assert!(diff.contains("+    device = \"/dev/vda\";"), "{diff}");
    // The fixture's own copy is untouched: changes go to the run's copy.
    let fixture = std::fs::read_to_string(
        workspace_root().join("tests/fixtures/flake/hosts/testhost/disko.nix"),
    )
    .unwrap();
    assert!(fixture.contains("/dev/disk/by-id/virtio-nixtest-target"));
    // In through the console: the transcript is kept, and nixtest timed the way in.
    let transcript =
        std::fs::read_to_string(dir.join("logs/testhost.console.log")).unwrap_or_default();
    assert!(transcript.contains("automatic login"), "{transcript}");
    assert!(
        p["metrics"]["console_shell_ms"].as_f64().unwrap() > 0.0,
        "{p:#}"
    );
    // The installed system booted from the target disk, under its own name.
    check_passed(p, "root-is-installed-disk");
    check_passed(p, "hostname");
    let log = std::fs::read_to_string(dir.join("logs/testhost.log")).unwrap();
    assert!(
        log.contains("nixos-install") || log.contains("installation finished!"),
        "{log}"
    );
    assert!(log.contains("disko version"), "{log}");
    assert_eq!(sha256(iso), before, "the ISO was written");
}

#[test]
fn a_live_store_that_fills_up_is_healed_by_building_in_the_target_and_by_id_disks_exist() {
    let _lock = vm_lock();
    let iso = standin_iso();
    let (out, report, _keep) = run(
        iso,
        &["--flake", &flake("testhost"), "--inject", "store"],
        &[],
    );
    let (report, dir) = report.expect("a report");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let p = &report["profiles"][0];
    let h = healed_by(p, "build-in-target-store");
    assert_eq!(h["finding"]["category"], "disk-full");
    assert_eq!(h["plugin"], "disk-space");
    let log = std::fs::read_to_string(dir.join("logs/testhost.log")).unwrap();
    // The config names its disk by id, as on hardware; the VM's disk has that id.
    assert!(
        log.contains("sgdisk --zap-all /dev/disk/by-id/virtio-nixtest-target"),
        "{log}"
    );
    assert!(log.contains("in the live store /nix/store"), "{log}");
    assert!(log.contains("installation finished!"), "{log}");
    check_passed(p, "root-is-installed-disk");
}

/// An ISO with the stand-in's kernel whose system never offers a shell on its console.
fn silent_iso(dir: &Path) -> PathBuf {
    let std = standin_iso();
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("isolinux")).unwrap();
    std::fs::create_dir_all(tree.join("boot")).unwrap();
    let kernel_path = {
        let cfg = dir.join("isolinux.cfg");
        let ok = Command::new("xorriso")
            .args(["-osirrox", "on", "-indev"])
            .arg(std)
            .args(["-extract", "/isolinux/isolinux.cfg"])
            .arg(&cfg)
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok);
        let cfg = std::fs::read_to_string(cfg).unwrap();
        cfg.lines()
            .find_map(|l| l.strip_prefix("LINUX "))
            .unwrap()
            .trim()
            .to_string()
    };
    let ok = Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(std)
        .args(["-extract", &kernel_path])
        .arg(tree.join("boot/bzImage"))
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok);
    let ird = dir.join("initramfs");
    std::fs::create_dir_all(ird.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", ird.join("bin/busybox")).unwrap();
    std::fs::write(
        ird.join("init"),
        "#!/bin/busybox sh\n/bin/busybox mount -t devtmpfs dev /dev\n\
         echo 'this installer never logs anybody in' > /dev/console\n\
         while :; do /bin/busybox sleep 3600; done\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(ird.join("init"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && mkdir -p dev && find . | cpio --quiet -o -H newc | gzip -1 > {}",
            ird.display(),
            tree.join("boot/initrd").display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(
        tree.join("isolinux/isolinux.cfg"),
        "DEFAULT boot\nLABEL boot\nLINUX /boot/bzImage\nAPPEND root=LABEL=SILENT quiet\nINITRD /boot/initrd\n",
    )
    .unwrap();
    let iso = dir.join("silent.iso");
    let ok = Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-R", "-V", "SILENT", "-o"])
        .arg(&iso)
        .arg(&tree)
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok);
    iso
}

#[test]
fn a_console_that_never_shows_a_shell_ends_with_exit_3_and_the_transcript() {
    let _lock = vm_lock();
    let tmp = tempfile::tempdir().unwrap();
    let iso = silent_iso(tmp.path());
    let (out, report, _keep) = run(
        &iso,
        &["--flake", &flake("testhost")],
        &[("NIXTEST_BOOT_TIMEOUT", "25s")],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let (report, dir) = report.expect("a report");
    let error = report["profiles"][0]["error"].as_str().unwrap();
    assert!(error.contains("showed no shell within 25s"), "{error}");
    assert!(error.contains("never logs anybody in"), "{error}");
    let transcript = std::fs::read_to_string(dir.join("logs/testhost.console.log")).unwrap();
    assert!(transcript.contains("never logs anybody in"), "{transcript}");
}

#[test]
fn a_flake_without_the_host_or_with_inputs_out_of_reach_is_refused_before_any_vm() {
    // No VM is started, so no lock: nothing here touches libvirt.
    let tmp = tempfile::tempdir().unwrap();
    let not_an_iso = tmp.path().join("none.iso");
    let (out, report, _keep) = run(&not_an_iso, &["--flake", &flake("nope")], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = text(&out);
    assert!(err.contains("no nixosConfigurations.nope"), "{err}");
    assert!(err.contains("other, testhost"), "{err}");
    assert!(report.is_none(), "no run was started");

    let inputs = tmp.path().join("inputs");
    std::fs::create_dir_all(&inputs).unwrap();
    std::fs::write(
        inputs.join("flake.nix"),
        "{ inputs.nixpkgs.url = \"github:NixOS/nixpkgs/nixos-24.05\";\n  \
         outputs = { self, nixpkgs }: { nixosConfigurations.web = nixpkgs.lib.nixosSystem { modules = [ ]; }; }; }\n",
    )
    .unwrap();
    let spec = format!("{}#web", inputs.display());
    let (out, report, _keep) = run(&not_an_iso, &["--flake", &spec], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = text(&out);
    assert!(err.contains("inputs that cannot be fetched"), "{err}");
    assert!(report.is_none());
    // Nix wrote no lock file into the user's folder.
    assert!(!inputs.join("flake.lock").exists());
}
