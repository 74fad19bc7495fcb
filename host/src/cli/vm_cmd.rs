//! `nixtest setup` and `nixtest vm ...`

use super::{CliResult, Failure};
use nixtest::paths::Paths;
use nixtest::settings::Settings;
use nixtest::ssh::{self, SshSession, SshTarget};
use nixtest::vm::{GuestImage, VmError, VmManager, VmSettings};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn vm_failure(e: VmError) -> Failure {
    if e.is_usage() {
        Failure::usage(e)
    } else {
        Failure::infra(e)
    }
}

/// What every VM command needs: settings, libvirt, nixtest's key, the image for it.
pub struct VmContext {
    pub manager: VmManager,
    pub key: Arc<russh::keys::PrivateKey>,
    pub public_key: String,
    pub image: GuestImage,
    /// How long a freshly started guest may take to answer SSH.
    pub boot: Duration,
    /// How long an open connection may go unanswered.
    pub unresponsive: Duration,
}

impl VmContext {
    pub fn open() -> Result<Self, Failure> {
        Self::open_with(&Settings::load().map_err(Failure::usage)?)
    }

    pub fn open_with(file: &Settings) -> Result<Self, Failure> {
        let paths = Paths::from_env().map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
        let settings = VmSettings::resolve(&paths.cache, file).map_err(vm_failure)?;
        let (key, public_key) = ssh::load_or_create_key(&paths.data.join("ssh"))
            .map_err(|e| Failure::infra(VmError::from(e)))?;
        let image = GuestImage::locate(&settings.dir, &public_key);
        let deadlines = nixtest::deadlines::Deadlines::resolve(file).map_err(Failure::usage)?;
        let manager = VmManager::connect(settings).map_err(vm_failure)?;
        Ok(VmContext {
            boot: deadlines.boot,
            unresponsive: deadlines.unresponsive,
            manager,
            key: Arc::new(key),
            public_key,
            image,
        })
    }

    pub fn target(&self, addr: std::net::SocketAddr) -> SshTarget {
        SshTarget {
            addr,
            user: "root".into(),
            key: self.key.clone(),
            unresponsive: self.unresponsive,
        }
    }
}

pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::infra(anyhow::anyhow!("cannot start the async runtime: {e}")))
}

fn step(n: usize, total: usize, what: &str) {
    println!("[{n}/{total}] {what}");
}

/// `nixtest setup [--iso FILE] [--standin-iso]`.
pub fn setup_all(rebuild: bool, iso: Option<&std::path::Path>, standin: bool) -> CliResult {
    if standin {
        let cx = VmContext::open()?;
        let s = nixtest::installer::standin::StandinIso::locate(&cx.manager.settings.dir);
        let cached = s.exists();
        let t = Instant::now();
        let path = s
            .ensure(|step| eprintln!("      {step}"))
            .map_err(vm_failure)?;
        eprintln!(
            "stand-in installer ISO {} in {:.1} s",
            if cached { "cached" } else { "built" },
            t.elapsed().as_secs_f64()
        );
        println!("{}", path.display());
        if iso.is_none() {
            return Ok(ExitCode::SUCCESS);
        }
    }
    let code = setup(rebuild)?;
    if let Some(iso) = iso {
        let cx = VmContext::open()?;
        let t = Instant::now();
        let p = prepare_iso(iso, &cx)?;
        println!(
            "installer ISO {} (sha256 {}): entry {:?} of {}, volume {:?}; kernel and initrd \
             cached in {:.1} s",
            p.iso.display(),
            &p.sha256[..16],
            p.entry_label,
            p.boot_file,
            p.volume_id,
            t.elapsed().as_secs_f64()
        );
        println!("      command line: {}", p.cmdline);
    }
    Ok(code)
}

/// Reads an installer ISO for a run: a file that is not there is the user's to fix (exit 2),
/// one that is no installer ISO is a wrong ISO (exit 3, saying what was seen).
pub fn prepare_iso(
    iso: &std::path::Path,
    cx: &VmContext,
) -> Result<nixtest::installer::PreparedIso, Failure> {
    use nixtest::installer::IsoError;
    nixtest::installer::PreparedIso::prepare(iso, &cx.manager.settings.dir).map_err(|e| match e {
        IsoError::Missing(..) | IsoError::Xorriso(_) => Failure::usage(e),
        _ => Failure::infra(e),
    })
}

pub fn setup(rebuild: bool) -> CliResult {
    let total = 5;
    step(1, total, "libvirt");
    let cx = VmContext::open()?;
    let m = &cx.manager;
    println!(
        "      {} at {}; VMs run with {} ({})",
        if m.accel.accel == nixtest::vm::Accel::Kvm {
            "KVM"
        } else {
            "TCG"
        },
        m.settings.uri,
        m.accel.accel.domain_type(),
        m.accel.reason
    );
    let swept = m.sweep_stale();
    if !swept.is_empty() {
        println!(
            "      removed {} VM(s) left by interrupted runs",
            swept.len()
        );
    }

    step(2, total, "guest image");
    if rebuild || !cx.image.exists() || cx.image.verify().is_err() {
        let t = Instant::now();
        cx.image
            .build(&cx.public_key, |s| println!("      {s}"))
            .map_err(vm_failure)?;
        println!(
            "      built {} in {:.1} s",
            cx.image.dir.display(),
            t.elapsed().as_secs_f64()
        );
    } else {
        println!("      cached: {}", cx.image.dir.display());
    }
    cx.image.verify().map_err(vm_failure)?;

    step(3, total, "base VM");
    let changed = m.define_base(&cx.image).map_err(vm_failure)?;
    if !changed && m.has_pristine() && !rebuild {
        println!("      already defined on this image, with its pristine snapshot");
        step(4, total, "boot check: skipped (nothing changed)");
        step(5, total, "pristine snapshot: kept");
        println!("ready");
        return Ok(ExitCode::SUCCESS);
    }
    println!("      defined {}", m.base_name());

    step(4, total, "boot once and check SSH");
    let t = Instant::now();
    m.revert_or_keep().map_err(vm_failure)?;
    m.start_base().map_err(vm_failure)?;
    let addr = m.base_ssh_addr().map_err(vm_failure)?;
    let rt = runtime()?;
    let checked = rt.block_on(async {
        let mut s = SshSession::wait_ready(&cx.target(addr), cx.boot).await?;
        let ready = t.elapsed();
        let out = s.exec("uname -r && lsblk -dn -o NAME,SIZE").await?;
        // Power off from inside: the guest has no ACPI daemon to ask.
        let _ = s.exec("nixtest-poweroff").await;
        s.close().await;
        Ok::<_, nixtest::ssh::SshError>((ready, out))
    });
    let (ready, out) = match checked {
        Ok(v) => v,
        Err(e) => {
            let _ = m.destroy_base();
            return Err(Failure::infra(anyhow::anyhow!(
                "{e}; console log: {}",
                m.base_dir().join("console.log").display()
            )));
        }
    };
    println!(
        "      SSH ready after {:.1} s; {}",
        ready.as_secs_f64(),
        out.stdout_text()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    );
    m.wait_shutoff(&m.base_name(), Duration::from_secs(30))
        .map_err(vm_failure)?;

    step(5, total, "pristine snapshot");
    m.snapshot_pristine().map_err(vm_failure)?;
    println!("ready");
    Ok(ExitCode::SUCCESS)
}

pub fn status() -> CliResult {
    let cx = VmContext::open()?;
    let s = cx.manager.status();
    println!("libvirt:      {}", cx.manager.settings.uri);
    println!(
        "accelerator:  {} ({})",
        cx.manager.accel.accel.domain_type(),
        cx.manager.accel.reason
    );
    println!(
        "image:        {} ({})",
        cx.image.dir.display(),
        if cx.image.exists() {
            "built"
        } else {
            "not built: run `nixtest setup`"
        }
    );
    if !s.defined {
        println!("base VM:      not defined: run `nixtest setup`");
    } else {
        println!(
            "base VM:      {} ({})",
            cx.manager.base_name(),
            if s.active { "running" } else { "shut off" }
        );
        println!(
            "snapshots:    {}",
            if s.snapshots.is_empty() {
                "none".into()
            } else {
                s.snapshots.join(", ")
            }
        );
        if let Some(p) = s.ssh_port {
            println!("ssh:          127.0.0.1:{p}");
        }
    }
    println!(
        "run VMs:      {}",
        if s.runs.is_empty() {
            "none".into()
        } else {
            s.runs.join(", ")
        }
    );
    Ok(ExitCode::SUCCESS)
}

pub fn ip() -> CliResult {
    let cx = VmContext::open()?;
    let addr = cx.manager.base_ssh_addr().map_err(vm_failure)?;
    println!("{addr}");
    Ok(ExitCode::SUCCESS)
}

pub fn ssh(command: Vec<String>) -> CliResult {
    let cx = VmContext::open()?;
    let m = &cx.manager;
    m.start_base().map_err(vm_failure)?;
    let addr = m.base_ssh_addr().map_err(vm_failure)?;
    let rt = runtime()?;
    if command.is_empty() {
        // An interactive shell is the system ssh client's job (terminal modes, resizing).
        rt.block_on(SshSession::wait_ready(&cx.target(addr), cx.boot))
            .map_err(|e| Failure::infra(VmError::from(e)))?;
        let paths = Paths::from_env().map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
        let status = std::process::Command::new("ssh")
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg("-i")
            .arg(paths.data.join("ssh").join("id_ed25519"))
            .args(["-p", &addr.port().to_string(), "root@127.0.0.1"])
            .status()
            .map_err(|e| {
                Failure::infra(anyhow::anyhow!(
                    "cannot run ssh (install openssh-client): {e}"
                ))
            })?;
        return Ok(ExitCode::from(
            status.code().unwrap_or(1).clamp(0, 255) as u8
        ));
    }
    let cmd = command
        .iter()
        .map(|w| ssh::shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ");
    let status = rt
        .block_on(async {
            let mut s = SshSession::wait_ready(&cx.target(addr), cx.boot).await?;
            let status = s
                .exec_streaming(
                    &cmd,
                    None,
                    |d| {
                        use std::io::Write;
                        let _ = std::io::stdout().write_all(d);
                    },
                    |d| {
                        use std::io::Write;
                        let _ = std::io::stderr().write_all(d);
                    },
                )
                .await?;
            s.close().await;
            Ok::<_, nixtest::ssh::SshError>(status)
        })
        .map_err(|e| Failure::infra(VmError::from(e)))?;
    Ok(ExitCode::from(status.clamp(0, 255) as u8))
}

pub fn clean() -> CliResult {
    let cx = VmContext::open()?;
    let took = cx.manager.revert_pristine().map_err(vm_failure)?;
    println!(
        "reverted {} to pristine in {} ms",
        cx.manager.base_name(),
        took.as_millis()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn destroy() -> CliResult {
    let cx = VmContext::open()?;
    let removed = cx.manager.destroy_everything().map_err(vm_failure)?;
    if removed.is_empty() {
        println!("nothing to remove");
    } else {
        println!("removed {}", removed.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
