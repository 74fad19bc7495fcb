//! `nixtest test` for one profile: a pristine VM, the configuration copy (with the injected
//! fault), the phases healed as they fail, a reboot into the installed system and its checks.
//! It only produces [`RunEvent`](crate::run_event::RunEvent)s; the display, the report, the
//! events file and the healing history are consumers of them.

use crate::config_copy::{ConfigCopy, GUEST_CONFIG};
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
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;

const BOOT_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy)]
pub struct TestOptions {
    pub inject: Option<Fault>,
    pub policy: Policy,
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

/// The VM manager as the verifier's way to reboot this run's VM.
struct VmReboot<'a> {
    manager: &'a VmManager,
    name: &'a str,
}

impl Reboot for VmReboot<'_> {
    fn reboot_into(&mut self, root_device: &str) -> Result<(), VmError> {
        self.manager.reboot_into(self.name, root_device)
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
            .map_err(RunError::Config)?;
    let mut overrides = RunOverrides {
        memory_mib: profile.vm.memory_mib,
        disk_bytes: profile.vm.disk.as_deref().and_then(crate::vm::parse_size),
    };
    fault::inject(opts.inject, &mut overrides, &mut config).map_err(RunError::Inject)?;

    emitter.emit(What::VmStarting);
    let vm = cx.vm.create_run_vm(cx.image, &profile.name, &overrides)?;
    cx.vm.start(&vm.name)?;
    let target = SshTarget {
        addr: vm.ssh_addr(),
        user: "root".into(),
        key: cx.key.clone(),
    };
    let mut runner = StreamRunner::connect(target.clone(), BOOT_DEADLINE)
        .await
        .map_err(|source| RunError::Boot {
            source,
            console: vm.console_log(),
        })?;
    emitter.emit(What::VmReady);
    emitter.emit(What::Metric {
        name: "boot_to_ssh_ms".into(),
        value: started.elapsed().as_millis() as f64,
    });
    runner
        .upload(
            "/etc/nix/nix.conf",
            fault::nix_conf(opts.inject).as_bytes(),
            0o644,
        )
        .await?;
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
    let guest_log = runner.guest_log().await?;
    logs.guest_log(&guest_log).map_err(RunError::Logs)?;
    // Measurement only: a guest that cannot say when it printed its lines loses nothing else.
    if let (Ok(times), Ok(clock)) = (runner.line_times().await, runner.guest_clock().await) {
        let json = serde_json::json!({
            "clock": {
                "at_ms": clock.host.saturating_duration_since(emitter.start()).as_secs_f64() * 1e3,
                "uptime": clock.uptime,
                "error_ms": clock.error.as_secs_f64() * 1e3,
            },
            "times": times,
        });
        if let Err(e) = logs.guest_times(json.to_string().as_bytes()) {
            tracing::warn!("the guest's line times are not kept: {e}");
        }
    }

    let verified = if ending == Ending::Passed {
        let mut machine = VmReboot {
            manager: cx.vm,
            name: &vm.name,
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
