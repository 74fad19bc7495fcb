//! `nixtest test` for one profile: a pristine VM, the configuration copy (with the injected
//! fault), the phases healed as they fail, a reboot into the installed system and its checks.
//! It only produces [`RunEvent`](crate::run_event::RunEvent)s; the display, the report, the
//! events file and the healing history are consumers of them.

use crate::config_copy::{ConfigCopy, GUEST_CONFIG};
use crate::deadlines::Deadlines;
use crate::fault::{self, Fault};
use crate::guest::GuestError;
use crate::healing::{self, Ending, Healers, Policy, Ranked};
use crate::history::History;
use crate::monitor::{Monitor, MonitorError, PluginFaultDetail};
use crate::plugins::PluginSet;
use crate::profile::Profile;
use crate::run_event::{Consumer, Emitter, Status, What};
use crate::ssh::{SshError, SshTarget};
use crate::stream::StreamRunner;
use crate::verify::{self, Reboot, VerifyError};
use crate::vm::manager::RunOverrides;
use crate::vm::{GuestImage, VmError, VmManager};
use crate::watch::{LogSink, Watch};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use thiserror::Error;

#[derive(Debug, Clone, Copy)]
pub struct TestOptions {
    pub inject: Option<Fault>,
    pub policy: Policy,
    pub deadlines: Deadlines,
}

/// What runs a profile: VMs, the guest image and key, the plugins, the healing history.
#[derive(Clone)]
pub struct Resources<'a> {
    pub vm: &'a VmManager,
    pub image: &'a GuestImage,
    pub key: Arc<russh::keys::PrivateKey>,
    pub plugins: &'a PluginSet,
    /// How well actions worked before (shared by the profiles of a run), to rank proposals.
    pub history: &'a Mutex<History>,
    /// The user's installer ISO, when the VM boots it instead of the test guest.
    pub installer: Option<&'a Installer>,
}

/// An installer ISO as the VM's source, and the key nixtest installs through its console.
pub struct Installer {
    pub iso: crate::installer::PreparedIso,
    /// nixtest's public key (an authorized_keys line).
    pub public_key: String,
}

/// What a profile run needs from the outside.
pub struct RunContext<'a> {
    pub res: Resources<'a>,
    /// Every event of the run goes here.
    pub events: &'a mut dyn Consumer,
    /// The raw stream and the guest's log go here.
    pub logs: &'a mut dyn LogSink,
}

/// Why a profile's run could not go on (the infrastructure, not the install).
#[derive(Debug, Error)]
pub enum RunError {
    #[error("writing the configuration copy: {0}")]
    Config(std::io::Error),
    #[error("injecting the fault: {0}")]
    Inject(std::io::Error),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error("{source}; console log: {}", console.display())]
    Boot { source: SshError, console: PathBuf },
    #[error("{source}\n(the whole console transcript: {})", transcript.display())]
    Console {
        source: crate::installer::console::ConsoleError,
        transcript: PathBuf,
    },
    #[error(
        "the installer took nixtest's key through its console, but SSH with it fails: \
         {source}; console transcript: {}",
        transcript.display()
    )]
    KeyRefused {
        source: SshError,
        transcript: PathBuf,
    },
    #[error(transparent)]
    Guest(#[from] GuestError),
    #[error(transparent)]
    Monitor(#[from] MonitorError),
    #[error("cannot start the guest probe: {0}")]
    Probe(std::io::Error),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("keeping the guest's log: {0}")]
    Logs(std::io::Error),
}

impl From<SshError> for RunError {
    fn from(e: SshError) -> Self {
        RunError::Guest(GuestError::Ssh(e))
    }
}

/// Runs one profile; never panics on a failing VM: infrastructure trouble ends the profile
/// with status `error`.
pub async fn run_profile(
    cx: &mut RunContext<'_>,
    profile: &Profile,
    opts: &TestOptions,
    run_dir: &Path,
) {
    let mut emitter = Emitter::new(&profile.name, Instant::now(), &mut *cx.events);
    let epoch_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64);
    emitter.emit(What::ProfileStarted {
        injected_fault: opts.inject,
        epoch_ms,
    });
    let (status, error) =
        match run_inner(&cx.res, &mut *cx.logs, profile, opts, run_dir, &mut emitter).await {
            Ok(true) => (Status::Passed, None),
            Ok(false) => (Status::Failed, None),
            Err(e) => (Status::Error, Some(e.to_string())),
        };
    emitter.emit(What::ProfileFinished { status, error });
}

/// The VM manager as the verifier's way to reboot this run's VM: the test guest into the
/// profile's root device, an installer's VM from its target disk.
struct VmReboot<'a> {
    manager: &'a VmManager,
    vm: &'a crate::vm::RunVm,
    installer: bool,
}

impl Reboot for VmReboot<'_> {
    fn reboot_into(&mut self, root_device: &str) -> Result<(), VmError> {
        if self.installer {
            self.manager.reboot_from_disk(self.vm)
        } else {
            self.manager.reboot_into(&self.vm.name, root_device)
        }
    }
}

async fn run_inner(
    cx: &Resources<'_>,
    logs: &mut dyn LogSink,
    profile: &Profile,
    opts: &TestOptions,
    run_dir: &Path,
    emitter: &mut Emitter<'_>,
) -> Result<bool, RunError> {
    let started = Instant::now();
    let mut config =
        ConfigCopy::create(run_dir.join("config").join(&profile.name), &profile.config)
            .map_err(RunError::Config)?
            .with_origin(profile.flake.as_ref().map(|f| f.dir.clone()));
    let mut overrides = RunOverrides {
        memory_mib: profile.vm.memory_mib,
        disk_bytes: profile.vm.disk.as_deref().and_then(crate::vm::parse_size),
    };
    fault::inject(opts.inject, &mut overrides, &mut config).map_err(RunError::Inject)?;

    emitter.emit(What::VmStarting);
    let vm = match cx.installer {
        Some(i) => cx
            .vm
            .create_installer_vm(&i.iso, &profile.name, &overrides)?,
        None => cx.vm.create_run_vm(cx.image, &profile.name, &overrides)?,
    };
    cx.vm.start(&vm.name)?;
    let target = SshTarget {
        addr: vm.ssh_addr(),
        user: "root".into(),
        key: cx.key.clone(),
        unresponsive: opts.deadlines.unresponsive,
    };
    let transcript = run_dir
        .join("logs")
        .join(format!("{}.console.log", profile.name));
    if let Some(i) = cx.installer {
        // Nobody prepared the installer: in through its serial console first.
        let times = console_login(cx.vm, &vm.name, i, &transcript, opts.deadlines.boot)?;
        emitter.emit(What::Metric {
            name: "console_shell_ms".into(),
            value: times.shell.as_secs_f64() * 1e3,
        });
        emitter.emit(What::Metric {
            name: "console_key_ms".into(),
            value: times.key.as_secs_f64() * 1e3,
        });
    }
    let mut runner = StreamRunner::connect(target.clone(), opts.deadlines)
        .await
        .map_err(|source| match cx.installer {
            Some(_) => RunError::KeyRefused {
                source,
                transcript: transcript.clone(),
            },
            None => RunError::Boot {
                source,
                console: vm.console_log(),
            },
        })?;
    emitter.emit(What::VmReady);
    // The kernel prints its errors (the OOM killer's among them) on the serial console, which
    // reaches the host even while the guest's processes are paged out.
    runner.set_console(Some(vm.console_log()));
    emitter.emit(What::Metric {
        name: "boot_to_ssh_ms".into(),
        value: started.elapsed().as_millis() as f64,
    });
    match cx.installer {
        None => {
            runner
                .upload(
                    "/etc/nix/nix.conf",
                    fault::nix_conf(opts.inject).as_bytes(),
                    0o644,
                )
                .await?
        }
        // An installer's own nix.conf (NixOS: a link into its store) is kept; a fault's line
        // is added to a copy of it.
        Some(_) => {
            if opts.inject == Some(Fault::Network) {
                runner
                    .exec(&format!(
                        "f=/etc/nix/nix.conf; mkdir -p /etc/nix; if [ -L $f ]; then cp \
                         --remove-destination \"$(readlink -f $f)\" $f; fi; printf '\\n%s\\n' '{}' >> $f",
                        fault::nix_conf(opts.inject).trim_end()
                    ))
                    .await?;
            }
        }
    }
    for (p, c) in config.files() {
        runner
            .upload(&format!("{GUEST_CONFIG}/{p}"), c.as_bytes(), 0o644)
            .await?;
    }

    let mut monitor = Monitor::new(&cx.plugins.plugins)?;
    for f in &cx.plugins.detector_faults {
        monitor.seed_fault(f.clone());
    }
    let mut healers = Healers::new(&cx.plugins.plugins);
    for f in &cx.plugins.healer_faults {
        healers.seed_fault(f.clone());
    }
    for f in healers.faults() {
        emitter.emit(What::PluginFault {
            fault: PluginFaultDetail::from(f),
            detector: false,
        });
    }
    if cx
        .plugins
        .plugins
        .iter()
        .any(|p| p.world.heals() && p.may_probe())
    {
        let probe = crate::probe::SshProbe::start(target).map_err(RunError::Probe)?;
        healers.attach_probe(Arc::new(probe));
    }
    let mut healers = Ranked::new(healers, cx.history);
    let ending = {
        let mut watch = Watch::new(emitter.reborrow(), monitor, &mut *logs);
        let ending = healing::run_phases(
            &mut runner,
            &mut watch,
            &mut healers,
            &mut config,
            profile,
            opts.policy,
        )
        .await?;
        watch.finish();
        let (busy, lines) = (watch.busy(), watch.lines());
        drop(watch);
        emitter.emit(What::Metric {
            name: "monitor_ms".into(),
            value: busy.as_secs_f64() * 1e3,
        });
        emitter.emit(What::Metric {
            name: "log_lines".into(),
            value: f64::from(lines),
        });
        ending
    };
    for (plugin, text) in healers.healers.outputs() {
        emitter.emit(What::PluginOutput { plugin, text });
    }
    keep_guest_files(&mut runner, logs, emitter.start()).await?;

    let verified = if ending == Ending::Passed {
        if cx.installer.is_some() {
            // The installed system has never heard of nixtest: its key goes along, so that the
            // checks can log in (the installed system must run sshd).
            runner
                .exec(
                    "install -d -m 700 /mnt/root/.ssh && cat /root/.ssh/authorized_keys >> \
                     /mnt/root/.ssh/authorized_keys && chmod 600 /mnt/root/.ssh/authorized_keys",
                )
                .await?;
        }
        let mut machine = VmReboot {
            manager: cx.vm,
            vm: &vm,
            installer: cx.installer.is_some(),
        };
        verify::reboot_and_verify(&mut runner, &mut machine, profile, emitter).await?
    } else {
        false
    };
    emitter.emit(What::Metric {
        name: "ssh_reconnects".into(),
        value: f64::from(runner.reconnects),
    });
    runner.close().await;
    vm.remove();
    Ok(ending == Ending::Passed && verified)
}

/// Waits for the installer's shell on the serial console and installs nixtest's key through
/// it; everything the console shows goes to `transcript`, as it arrives.
fn console_login(
    vm: &VmManager,
    name: &str,
    installer: &Installer,
    transcript: &Path,
    deadline: std::time::Duration,
) -> Result<crate::installer::console::LoginTimes, RunError> {
    let fail = |source| RunError::Console {
        source,
        transcript: transcript.to_path_buf(),
    };
    if let Some(dir) = transcript.parent() {
        std::fs::create_dir_all(dir).map_err(RunError::Logs)?;
    }
    let mut out = std::fs::File::create(transcript).map_err(RunError::Logs)?;
    let mut console = vm.console(name)?;
    crate::installer::console::install_key(&mut console, &mut out, &installer.public_key, deadline)
        .map_err(fail)
}

/// The guest's own copy of the log, and when it printed each line, streamed to the run's
/// files (never held whole: an install may print gigabytes).
async fn keep_guest_files(
    runner: &mut StreamRunner,
    logs: &mut dyn LogSink,
    start: Instant,
) -> Result<(), RunError> {
    let mut out = logs.guest_log().map_err(RunError::Logs)?;
    let mut failed = None;
    runner
        .copy_guest_log(|chunk| {
            if failed.is_none()
                && let Err(e) = out.write_all(chunk)
            {
                failed = Some(e);
            }
        })
        .await?;
    match failed {
        Some(e) => return Err(RunError::Logs(e)),
        None => out.commit().map_err(RunError::Logs)?,
    }
    // Measurement only: a guest that cannot say when it printed its lines loses nothing else.
    if let Err(e) = keep_line_times(runner, logs, start).await {
        tracing::warn!("the guest's line times are not kept: {e}");
    }
    Ok(())
}

async fn keep_line_times(
    runner: &mut StreamRunner,
    logs: &mut dyn LogSink,
    start: Instant,
) -> Result<(), Box<dyn std::error::Error>> {
    let clock = runner.guest_clock().await?;
    let head = serde_json::json!({
        "at_ms": clock.host.saturating_duration_since(start).as_secs_f64() * 1e3,
        "uptime": clock.uptime,
        "error_ms": clock.error.as_secs_f64() * 1e3,
    });
    let mut out = logs.guest_times()?;
    write!(out, "{{\"clock\":{head},\"times\":[")?;
    let mut json = TimesJson::default();
    let mut failed = None;
    runner
        .copy_line_times(|chunk| {
            if failed.is_none()
                && let Err(e) = json.feed(chunk, &mut out)
            {
                failed = Some(e);
            }
        })
        .await?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    json.finish(&mut out)?;
    out.write_all(b"]}")?;
    out.commit()?;
    Ok(())
}

/// The guest's times file (one uptime per line) as the items of a JSON array, chunk by
/// chunk: a line that is no number is `null`, as its line has no time.
#[derive(Default)]
struct TimesJson {
    partial: Vec<u8>,
    count: u64,
}

impl TimesJson {
    fn feed(&mut self, chunk: &[u8], out: &mut dyn Write) -> std::io::Result<()> {
        for &b in chunk {
            if b == b'\n' {
                self.item(out)?;
            } else if self.partial.len() < 64 {
                self.partial.push(b);
            }
        }
        Ok(())
    }

    fn item(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        let t = std::str::from_utf8(&self.partial)
            .ok()
            .and_then(|t| t.trim().parse::<f64>().ok())
            .filter(|t| t.is_finite());
        if self.count > 0 {
            out.write_all(b",")?;
        }
        match t {
            Some(t) => write!(out, "{t}")?,
            None => out.write_all(b"null")?,
        }
        self.count += 1;
        self.partial.clear();
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        if !self.partial.is_empty() {
            self.item(out)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::TimesJson;

    #[test]
    fn guest_times_become_a_json_array_whatever_the_chunks() {
        let mut out = Vec::new();
        let mut j = TimesJson::default();
        for chunk in [&b"12.5"[..], b"0\n13", b".25\nnope\n", b"14"] {
            j.feed(chunk, &mut out).unwrap();
        }
        j.finish(&mut out).unwrap();
        let v: Vec<Option<f64>> = serde_json::from_slice(&[b"[", &out[..], b"]"].concat()).unwrap();
        assert_eq!(v, vec![Some(12.5), Some(13.25), None, Some(14.0)]);
    }
}
