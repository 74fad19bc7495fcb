//! End-to-end tests on real libvirt and real QEMU (TCG here): the base VM and its pristine
//! snapshot, SSH, the four faults made real in the guest, cleanup after a signal, and the
//! messages for an unreachable libvirtd and a missing or broken image.
//!
//! Needs root, libvirtd and the packages of scripts/setup.sh. VMs are named `nixtest-e2e-*`.

use nixtest::facts::GuestFacts;
use nixtest::plugin::GuestProbe;
use nixtest::plugin::{HostOptions, PluginHost};
use nixtest::ssh::{self, SshSession, SshTarget};
use nixtest::vm::manager::RunOverrides;
use nixtest::vm::{GuestImage, VmError, VmManager};
use nixtest_tests::{E2E_HOME, e2e_env, e2e_settings, nixtest_bin, vm_lock};
use std::io::BufRead;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

fn nixtest(args: &[&str]) -> Output {
    let mut cmd = Command::new(nixtest_bin());
    e2e_env(&mut cmd).args(args).stdin(Stdio::null());
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `nixtest setup` for the e2e prefix (idempotent: a no-op when current).
fn ensure_setup() {
    let out = nixtest(&["setup"]);
    assert!(out.status.success(), "setup failed:\n{}", text(&out));
}

struct Guest {
    manager: VmManager,
    image: GuestImage,
    key: Arc<russh::keys::PrivateKey>,
}

fn guest() -> Guest {
    let (key, public) =
        ssh::load_or_create_key(std::path::Path::new(&format!("{E2E_HOME}/data/ssh"))).unwrap();
    let settings = e2e_settings();
    let image = GuestImage::locate(&settings.dir, &public);
    Guest {
        manager: VmManager::connect(settings).unwrap(),
        image,
        key: Arc::new(key),
    }
}

fn target(g: &Guest, addr: std::net::SocketAddr) -> SshTarget {
    SshTarget {
        addr,
        user: "root".into(),
        key: g.key.clone(),
        unresponsive: nixtest::deadlines::Deadlines::default().unresponsive,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `commands` in a fresh run VM with `overrides`, one after another; returns each
/// command's output.
fn in_run_vm(
    label: &str,
    overrides: RunOverrides,
    files: &[(&str, &str)],
    commands: &[&str],
) -> Vec<ssh::ExecOutput> {
    let g = guest();
    let vm = g
        .manager
        .create_run_vm(&g.image, label, &overrides)
        .unwrap();
    g.manager.start(&vm.name).unwrap();
    let target = target(&g, vm.ssh_addr());
    let outs = rt().block_on(async {
        let mut s = SshSession::wait_ready(&target, Duration::from_secs(120))
            .await
            .unwrap();
        for (path, content) in files {
            s.upload(path, content.as_bytes(), 0o644).await.unwrap();
        }
        let mut outs = Vec::new();
        for (i, c) in commands.iter().enumerate() {
            outs.push(run_detached(&target, &mut s, i, c).await);
        }
        s.close().await;
        outs
    });
    vm.remove();
    outs
}

/// Runs `command` detached from the SSH session and collects its output and exit status,
/// reconnecting when the session drops. A guest under memory pressure can stall past the
/// keepalive window under TCG (or the OOM killer can pick the session's sshd); a command tied
/// to its session would lose its exit status with it.
async fn run_detached(
    target: &SshTarget,
    s: &mut SshSession,
    i: usize,
    command: &str,
) -> ssh::ExecOutput {
    let base = format!("/tmp/nixtest-test-{i}");
    let start = format!(
        "setsid bash -c {} < /dev/null > /dev/null 2>&1 &",
        ssh::shell_quote(&format!(
            "bash -c {} > {base}.out 2> {base}.err; echo $? > {base}.rc.part && mv {base}.rc.part {base}.rc",
            ssh::shell_quote(command)
        ))
    );
    let started = s.exec(&start).await.unwrap();
    assert_eq!(started.status, 0, "{}", started.stderr_text());
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    let status = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "`{command}` did not end within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        match s.exec(&format!("cat {base}.rc 2>/dev/null")).await {
            Ok(out) => {
                if let Ok(rc) = out.stdout_text().trim().parse::<u32>() {
                    break rc;
                }
            }
            Err(e) => {
                eprintln!("SSH dropped while `{command}` runs ({e}); reconnecting");
                *s = SshSession::wait_ready(target, Duration::from_secs(180))
                    .await
                    .unwrap();
            }
        }
    };
    let stdout = s.exec(&format!("cat {base}.out")).await.unwrap().stdout;
    let stderr = s.exec(&format!("cat {base}.err")).await.unwrap().stdout;
    ssh::ExecOutput {
        status,
        stdout,
        stderr,
    }
}

fn categories_of(log: &str) -> Vec<String> {
    let host = PluginHost::new(HostOptions::default()).unwrap();
    let plugins = nixtest::plugins::builtins(&host).unwrap();
    let report =
        nixtest::replay::replay(log.as_bytes(), &plugins, &GuestFacts::default(), &[]).unwrap();
    report
        .findings
        .iter()
        .filter(|f| f.severity.is_failure())
        .map(|f| f.category.to_string())
        .collect()
}

fn all_output(o: &ssh::ExecOutput) -> String {
    format!("{}{}", o.stdout_text(), o.stderr_text())
}

const INSTALL: &str = "disko /tmp/disko-config.nix && nixos-generate-config --root /mnt && cp /tmp/configuration.nix /mnt/etc/nixos/configuration.nix && nixos-install --root /mnt";
const DISKO_VDB: &str =
    "{ disko.devices.disk.main = { type = \"disk\"; device = \"/dev/vdb\"; }; }\n";
const CONFIG: &str = "{ ... }: {\n  imports = [ ./hardware-configuration.nix ];\n  networking.hostName = \"nixtest\";\n}\n";

#[test]
fn setup_from_nothing_ssh_and_clean() {
    let _lock = vm_lock();
    let out = nixtest(&["vm", "destroy"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = nixtest(&["setup"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("SSH ready after"), "{}", text(&out));
    let status = text(&nixtest(&["vm", "status"]));
    assert!(status.contains("snapshots:    pristine"), "{status}");

    let out = nixtest(&[
        "vm",
        "ssh",
        "--",
        "sh",
        "-c",
        "echo changed > /root/after-snapshot; echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let out = nixtest(&["vm", "ssh", "--", "test", "-e", "/root/after-snapshot"]);
    assert_eq!(out.status.code(), Some(0), "the file exists before clean");

    let out = nixtest(&["vm", "clean"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = nixtest(&["vm", "ssh", "--", "test", "-e", "/root/after-snapshot"]);
    assert_eq!(out.status.code(), Some(1), "the file is gone after clean");
    assert!(nixtest(&["vm", "clean"]).status.success());
}

#[test]
fn russh_command_disk_and_network_faults_and_a_clean_install() {
    let _lock = vm_lock();
    ensure_setup();
    let bad_disko = "{ disko.devices.disk.main = { type = \"disk\"; device = \"/dev/sdz\"; }; }\n";
    let outs = in_run_vm(
        "faults",
        RunOverrides::default(),
        &[
            ("/tmp/bad-disko.nix", bad_disko),
            ("/tmp/disko-config.nix", DISKO_VDB),
            ("/tmp/configuration.nix", CONFIG),
            (
                "/etc/nix/nix.conf",
                "substituters = http://cache.nixtest.internal:8080\n",
            ),
        ],
        &[
            "echo out; echo err >&2; exit 5",
            "disko /tmp/bad-disko.nix",
            INSTALL,
            "rm /etc/nix/nix.conf && nixos-install --root /mnt",
        ],
    );
    // A command in the guest, started and read back over russh: its output and exit status.
    assert_eq!(outs[0].status, 5);
    assert_eq!(outs[0].stdout_text(), "out\n");
    assert_eq!(outs[0].stderr_text(), "err\n");
    // The disko config names a disk the VM does not have.
    let disk = all_output(&outs[1]);
    assert_ne!(outs[1].status, 0, "{disk}");
    assert!(disk.contains("/dev/sdz"), "{disk}");
    assert!(
        categories_of(&disk).contains(&"disk-device".to_string()),
        "{disk}"
    );
    // The cache's name does not resolve.
    let net = all_output(&outs[2]);
    assert_ne!(outs[2].status, 0, "{net}");
    assert!(net.contains("Could not resolve host"), "{net}");
    assert!(
        categories_of(&net).contains(&"network".to_string()),
        "{net}"
    );
    // Without the fault the install goes through.
    let ok = all_output(&outs[3]);
    assert_eq!(outs[3].status, 0, "{ok}");
    assert!(ok.contains("installation finished!"), "{ok}");
}

#[test]
fn memory_fault_the_oom_killer_acts() {
    let _lock = vm_lock();
    ensure_setup();
    let config = CONFIG.replace(
        "networking.hostName",
        "nixtest.buildMemoryMB = 400;\n  networking.hostName",
    );
    let outs = in_run_vm(
        "oom",
        RunOverrides {
            memory_mib: Some(192),
            disk_bytes: None,
        },
        &[
            ("/tmp/disko-config.nix", DISKO_VDB),
            ("/tmp/configuration.nix", &config),
        ],
        &[INSTALL, "dmesg"],
    );
    let log = all_output(&outs[0]);
    assert_ne!(outs[0].status, 0, "{log}");
    let kernel = outs[1].stdout_text();
    assert!(kernel.contains("Out of memory: Killed process"), "{kernel}");
    let cats = categories_of(&format!("{log}{kernel}"));
    assert!(cats.contains(&"oom".to_string()), "{cats:?}\n{log}");
}

#[test]
fn space_fault_the_closure_does_not_fit() {
    let _lock = vm_lock();
    ensure_setup();
    let outs = in_run_vm(
        "space",
        RunOverrides {
            memory_mib: None,
            disk_bytes: Some(160 << 20),
        },
        &[
            ("/tmp/disko-config.nix", DISKO_VDB),
            ("/tmp/configuration.nix", CONFIG),
        ],
        &[INSTALL],
    );
    let log = all_output(&outs[0]);
    assert_ne!(outs[0].status, 0, "{log}");
    assert!(log.contains("No space left on device"), "{log}");
    assert!(
        categories_of(&log).contains(&"disk-full".to_string()),
        "{log}"
    );
}

#[test]
fn runs_share_the_pristine_base_which_stays_shut_while_they_go() {
    let _lock = vm_lock();
    ensure_setup();
    let g = guest();
    let a = g
        .manager
        .create_run_vm(&g.image, "share-a", &RunOverrides::default())
        .unwrap();
    g.manager.start(&a.name).unwrap();
    // A second run while the first one's VM is up: the base is pristine, nothing to revert.
    let b = g
        .manager
        .create_run_vm(&g.image, "share-b", &RunOverrides::default())
        .unwrap();
    g.manager.start(&b.name).unwrap();
    // A healer's probe reaches the run's guest through its own SSH session and thread.
    let probe = nixtest::probe::SshProbe::start(target(&g, b.ssh_addr())).unwrap();
    let parse = |c: &str| nixtest::plugin::probe_policy::parse(c).unwrap();
    let started = std::time::Instant::now();
    let out = loop {
        match probe.run(&parse("cat /proc/sys/kernel/hostname")) {
            Ok(o) => break o,
            Err(e) if started.elapsed() < Duration::from_secs(120) => {
                eprintln!("probe not yet: {e}");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(out.status, 0, "{out:?}");
    assert!(!out.stdout.trim().is_empty(), "{out:?}");
    let out = probe.run(&parse("ls /nonexistent")).unwrap();
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("No such file"), "{out:?}");
    drop(probe);
    // Booting the base (`nixtest vm ssh`) would write under their overlays: refused.
    let e = g.manager.start_base().unwrap_err();
    assert!(matches!(e, VmError::BaseInUse { .. }), "{e}");
    assert!(
        e.to_string().contains(&a.name) && e.to_string().contains(&b.name),
        "{e}"
    );
    assert!(matches!(
        g.manager.revert_pristine(),
        Err(VmError::BaseInUse { .. })
    ));
    a.remove();
    b.remove();
    // Once they are gone the base may boot; the next run puts it back first.
    g.manager.start_base().unwrap();
    assert!(g.manager.base_touched());
    g.manager.ensure_pristine().unwrap();
    assert!(!g.manager.base_touched());
}

/// Not a test on its own: the child process of `a_killed_run_leaves_nothing_behind`.
#[test]
#[ignore = "run by a_killed_run_leaves_nothing_behind"]
fn hold_a_run_vm_until_killed() {
    if std::env::var_os("NIXTEST_E2E_HOLD").is_none() {
        return;
    }
    let g = guest();
    let vm = g
        .manager
        .create_run_vm(&g.image, "held", &RunOverrides::default())
        .unwrap();
    g.manager.start(&vm.name).unwrap();
    println!("HOLDING {} {}", vm.name, vm.dir.display());
    std::thread::sleep(Duration::from_secs(300));
}

#[test]
fn a_killed_run_leaves_nothing_behind() {
    let _lock = vm_lock();
    ensure_setup();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "hold_a_run_vm_until_killed",
            "--ignored",
            "--nocapture",
        ])
        .env("NIXTEST_E2E_HOLD", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let line = stdout
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("HOLDING "))
        .expect("the child reports its VM");
    let mut words = line.split_whitespace().skip(1);
    let (name, dir) = (
        words.next().unwrap().to_string(),
        words.next().unwrap().to_string(),
    );
    let g = guest();
    assert!(
        g.manager.status().runs.contains(&name),
        "the VM runs before the signal"
    );
    assert!(std::path::Path::new(&dir).exists());
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(
        !g.manager.status().runs.contains(&name),
        "domain {name} was left behind"
    );
    assert!(
        !std::path::Path::new(&dir).exists(),
        "{dir} was left behind"
    );
}

#[test]
fn unreachable_libvirtd_exits_3_and_says_how_to_start_it() {
    let mut cmd = Command::new(nixtest_bin());
    e2e_env(&mut cmd)
        .env(
            "NIXTEST_LIBVIRT_URI",
            "qemu:///system?socket=/nonexistent/libvirt-sock",
        )
        .args(["vm", "status"]);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect to libvirt") && err.contains("libvirtd -d"),
        "{err}"
    );
}

#[test]
fn missing_or_broken_image_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let image = GuestImage::locate(dir.path(), "ssh-ed25519 AAAA test");
    let err = image.verify().unwrap_err();
    assert!(matches!(err, VmError::ImageMissing { .. }), "{err}");
    assert!(err.to_string().contains("run `nixtest setup`"));
    std::fs::create_dir_all(&image.dir).unwrap();
    for f in [image.kernel(), image.initrd()] {
        std::fs::write(f, b"x").unwrap();
    }
    std::fs::write(image.root(), b"").unwrap();
    let err = image.verify().unwrap_err();
    assert!(matches!(err, VmError::ImageBroken { .. }), "{err}");
    std::fs::write(image.root(), b"QFI\xfbnot really a qcow2 image").unwrap();
    let err = image.verify().unwrap_err();
    assert!(err.to_string().contains("nixtest setup --rebuild"), "{err}");
}

#[test]
fn healer_commands_and_phase_starts_run_once_when_asked_again() {
    let _lock = vm_lock();
    ensure_setup();
    let g = guest();
    let vm = g
        .manager
        .create_run_vm(&g.image, "once", &RunOverrides::default())
        .unwrap();
    g.manager.start(&vm.name).unwrap();
    let target = target(&g, vm.ssh_addr());
    let runner_path = nixtest::stream::RUNNER_PATH;
    rt().block_on(async {
        let mut r = nixtest::stream::StreamRunner::connect(
            target,
            nixtest::deadlines::Deadlines::default(),
        )
        .await
        .unwrap();
        let cmd = "echo ran >> /tmp/once-count; echo out; echo err >&2; exit 4";
        let first = r.exec_once(cmd).await.unwrap();
        assert_eq!(first.status, 4);
        assert_eq!(first.stdout_text(), "out\n");
        assert_eq!(first.stderr_text(), "err\n");
        // The host asks again with the same id, as after a lost connection: the guest answers
        // with the first run's result and does not run it again.
        let again = r
            .exec(&format!(
                "{runner_path} once 1 {}",
                nixtest::ssh::shell_quote(cmd)
            ))
            .await
            .unwrap();
        assert_eq!(again.status, 4);
        assert_eq!(again.stdout_text(), "out\n");
        let count = r.exec("wc -l < /tmp/once-count").await.unwrap();
        assert_eq!(count.stdout_text().trim(), "1");
        // A command is bounded: past its time limit it ends with timeout's 124, and of a
        // flood of output 64 KiB are kept.
        let slow = r
            .exec(&format!("{runner_path} once 900 'sleep 60' 2"))
            .await
            .unwrap();
        assert_eq!(slow.status, 124);
        let loud = r
            .exec(&format!("{runner_path} once 901 yes"))
            .await
            .unwrap();
        assert_eq!(loud.stdout.len(), 65536);
        // A phase start asked for twice under one id starts once.
        for _ in 0..2 {
            let out = r
                .exec(&format!(
                    "{runner_path} start 77 twice {}",
                    nixtest::ssh::shell_quote("echo started >> /tmp/start-count")
                ))
                .await
                .unwrap();
            assert_eq!(out.status, 0, "{}", out.stderr_text());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let count = r.exec("wc -l < /tmp/start-count").await.unwrap();
        assert_eq!(count.stdout_text().trim(), "1");
        r.close().await;
    });
    vm.remove();
}
