//! `nixtest test`

use super::vm_cmd::{VmContext, runtime, vm_failure};
use super::{CliResult, Failure, Format};
use anyhow::anyhow;
use nixtest::dashboard::{Dashboard, LiveRun};
use nixtest::display::{Console, SharedDisplay};
use nixtest::fault::Fault;
use nixtest::healing::Policy;
use nixtest::history::History;
use nixtest::orchestrator::{Resources, TestOptions};
use nixtest::profile::Profile;
use nixtest::registry::Registry;
use nixtest::report::{self, ProfileReport, Report, Status};
use nixtest::run_event::Consumer;
use nixtest::session::{self, Inputs};
use nixtest::settings::{Settings, SettingsError};
use nixtest::signatures::FailureDb;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

#[derive(clap::Args)]
pub struct TestArgs {
    /// Profiles to run: built-in names (vm, workstation, server) or profile folders. None
    /// named: every profile (nixtest.toml's list, else the built-in ones).
    #[arg(value_name = "PROFILE")]
    pub names: Vec<String>,
    /// Profiles to run, as one list (beside the names above).
    #[arg(long, value_name = "A,B", env = "NIXTEST_PROFILES")]
    pub profiles: Option<String>,
    /// Run only this machine's share of the profiles: hash:M/N (by name, stable when the list
    /// changes) or slice:M/N (every N-th from the M-th); `nixtest report merge` joins the
    /// shares' reports.
    #[arg(long, value_name = "hash:M/N|slice:M/N")]
    pub partition: Option<String>,
    /// Print the profiles this machine would run (one per line) and stop: no VM is started.
    #[arg(long)]
    pub list: bool,
    /// Profiles to run at the same time, each in its own VM (also PARALLEL_TESTS; default 1).
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
    /// Make a fault real for the run: disk, memory, space or network.
    #[arg(long, value_name = "FAULT")]
    pub inject: Option<String>,
    /// Report failures without healing them (also HEALING_ENABLED=false).
    #[arg(long)]
    pub no_heal: bool,
    /// Healing actions to try per profile (also MAX_HEALING_ATTEMPTS; default 3).
    #[arg(long, value_name = "N")]
    pub max_heal_attempts: Option<u32>,
    /// Where reports go (REPORT_DIR/RUN_ID/; also NIXTEST_REPORT_DIR; default
    /// nixtest-reports).
    #[arg(long, value_name = "DIR")]
    pub report_dir: Option<PathBuf>,
    /// Output: text (live display) or json (the report at the end).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Boot this installer ISO (read-only, as a CD-ROM) instead of nixtest's test guest, and
    /// get in through its serial console (also NIXTEST_ISO, or `[vm] iso` in nixtest.toml).
    #[arg(long, value_name = "FILE")]
    pub iso: Option<PathBuf>,
    /// Install this flake's nixosConfigurations.HOST: disko with its disk config, then
    /// nixos-install --flake. Checked with Nix on this machine before any VM starts.
    #[arg(long, value_name = "PATH#HOST")]
    pub flake: Vec<String>,
    /// Also load this plugin component (repeatable).
    #[arg(long = "plugin", value_name = "FILE.wasm")]
    pub plugins: Vec<PathBuf>,
    /// Show the run live in a browser at ADDR (default 127.0.0.1:8080) while it goes; the
    /// server stops with the run. Any address that is not loopback needs --token.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, require_equals = true,
          default_missing_value = nixtest::dashboard::DEFAULT_LISTEN)]
    pub serve: Option<std::net::SocketAddr>,
    /// With --serve: refuse every request without this token (`--token` alone generates one).
    #[arg(long, value_name = "TOKEN", num_args = 0..=1, default_missing_value = "", requires = "serve")]
    pub token: Option<String>,
}

/// What the run does, from flags, then the environment, then nixtest.toml, then defaults.
struct Plan {
    profiles: Vec<Profile>,
    /// Set when this machine runs a share of the profiles.
    share: Option<nixtest::partition::Share>,
    parallel: usize,
    report_dir: PathBuf,
    opts: TestOptions,
    /// The installer ISO the VMs boot, if not the test guest.
    iso: Option<PathBuf>,
}

/// Where reports go: the flag, then NIXTEST_REPORT_DIR, then nixtest.toml, then
/// `nixtest-reports`.
pub fn report_dir(flag: Option<&PathBuf>, settings: &Settings) -> PathBuf {
    if let Some(d) = flag {
        return d.clone();
    }
    settings
        .get(
            "NIXTEST_REPORT_DIR",
            "test.report_dir",
            settings
                .file
                .test
                .report_dir
                .as_ref()
                .map(|d| d.display().to_string()),
        )
        .map_or_else(
            || PathBuf::from("nixtest-reports"),
            |s| PathBuf::from(s.value),
        )
}

fn plan(args: &TestArgs, settings: &Settings) -> Result<Plan, SettingsError> {
    let file = &settings.file;
    let mut names: Vec<String> = args.names.clone();
    if let Some(list) = &args.profiles {
        names.extend(list.split(',').map(str::to_string));
    }
    let mut names: Vec<String> = names
        .into_iter()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    // A flake is a profile too (`PATH#HOST`), named by --flake or as an argument.
    names.extend(args.flake.iter().cloned());
    if names.is_empty() {
        // Every profile, as the seed's `test-orchestrator.sh test` does.
        names = file.test.profiles.clone().unwrap_or_else(|| {
            nixtest::profile::builtin_names()
                .into_iter()
                .map(str::to_string)
                .collect()
        });
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    let share = match &args.partition {
        Some(spec) => {
            let p: nixtest::partition::Partition =
                spec.parse()
                    .map_err(
                        |e: nixtest::partition::PartitionError| SettingsError::Value {
                            origin: "--partition".into(),
                            value: spec.clone(),
                            expected: e.to_string(),
                        },
                    )?;
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let all = names.clone();
            names = p
                .select(&refs)
                .into_iter()
                .map(|i| names[i].clone())
                .collect();
            Some(nixtest::partition::Share {
                partition: p.to_string(),
                of: all,
            })
        }
        None => None,
    };
    let profiles = names
        .iter()
        .map(|n| Profile::load(n))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SettingsError::Value {
            origin: "--profiles".into(),
            value: names.join(","),
            expected: format!("cannot be loaded: {e:#}"),
        })?;
    let iso = args.iso.clone().or_else(|| {
        settings
            .get(
                "NIXTEST_ISO",
                "vm.iso",
                file.vm.iso.as_ref().map(|p| p.display().to_string()),
            )
            .map(|s| PathBuf::from(s.value))
    });
    let parallel = match args.parallel {
        Some(n) => n,
        None => match settings.get(
            "PARALLEL_TESTS",
            "test.parallel",
            file.test.parallel.map(|n| n.to_string()),
        ) {
            Some(s) => s.parse("is not a number of VMs")?,
            None => 1,
        },
    };
    if parallel == 0 {
        return Err(SettingsError::Value {
            origin: "--parallel".into(),
            value: "0".into(),
            expected: "must be at least 1".into(),
        });
    }
    let report_dir = report_dir(args.report_dir.as_ref(), settings);
    let inject = args
        .inject
        .as_deref()
        .map(str::parse::<Fault>)
        .transpose()
        .map_err(|e| SettingsError::Value {
            origin: "--inject".into(),
            value: args.inject.clone().unwrap_or_default(),
            expected: e.to_string(),
        })?;
    if inject == Some(Fault::Store) && iso.is_none() {
        return Err(SettingsError::Value {
            origin: "--inject".into(),
            value: "store".into(),
            expected: "needs --iso: only an installer's live store is in memory (the test \
                       guest's is on its disk)"
                .into(),
        });
    }
    let heal = !args.no_heal
        && settings
            .get_bool("HEALING_ENABLED", "healing.enabled", file.healing.enabled)?
            .unwrap_or(true);
    let max_heal_attempts = match args.max_heal_attempts {
        Some(n) => n,
        None => match settings.get(
            "MAX_HEALING_ATTEMPTS",
            "healing.max_attempts",
            file.healing.max_attempts.map(|n| n.to_string()),
        ) {
            Some(s) => s.parse("is not a number")?,
            None => 3,
        },
    };
    let min_confidence = match settings.get(
        "NIXTEST_MIN_CONFIDENCE",
        "healing.min_confidence",
        file.healing.min_confidence.map(|c| c.to_string()),
    ) {
        Some(s) => {
            let c: f32 = s.parse("is not a number between 0 and 1")?;
            if !(0.0..=1.0).contains(&c) {
                return Err(s.invalid("is not a number between 0 and 1"));
            }
            c
        }
        None => 0.3,
    };
    let stop_early = settings
        .get_bool(
            "NIXTEST_STOP_EARLY",
            "healing.stop_early",
            file.healing.stop_early,
        )?
        .unwrap_or(true);
    let deadlines = nixtest::deadlines::Deadlines::resolve(settings)?;
    Ok(Plan {
        parallel: parallel.min(profiles.len().max(1)),
        iso,
        profiles,
        share,
        report_dir,
        opts: TestOptions {
            inject,
            policy: Policy {
                heal,
                max_attempts: max_heal_attempts,
                min_confidence,
                stop_early,
            },
            deadlines,
        },
    })
}

/// The run's report (with the share it was, if any), written to its folder.
fn write_report(
    plan: &Plan,
    run_dir: &std::path::Path,
    run_id: String,
    started: String,
    duration_ms: u64,
    profiles: Vec<ProfileReport>,
) -> Result<Report, Failure> {
    let mut report = Report::new(run_id, started, duration_ms, profiles);
    report.share = plan.share.clone();
    report.write(run_dir).map_err(|e| {
        Failure::infra(anyhow!(
            "cannot write the report to {}: {e}",
            run_dir.display()
        ))
    })?;
    Ok(report)
}

pub fn run(args: TestArgs, verbose: bool) -> CliResult {
    let json = args.format == Format::Json;
    let settings = Settings::load().map_err(Failure::usage)?;
    let mut plan = plan(&args, &settings).map_err(Failure::usage)?;
    // A dashboard that may not listen where asked is refused before any VM starts.
    let token = match args.serve {
        Some(listen) => {
            let token = super::serve_cmd::token(args.token.as_deref())?;
            nixtest::dashboard::check_listen(listen, token.as_deref()).map_err(Failure::usage)?;
            token
        }
        None => None,
    };

    if args.list {
        for p in &plan.profiles {
            println!("{}", p.name);
        }
        return Ok(ExitCode::SUCCESS);
    }
    // A flake is evaluated with real Nix before any VM starts: a host it does not have, or
    // inputs that cannot be fetched, are the user's to fix.
    for p in &mut plan.profiles {
        if let Some(f) = &p.flake {
            f.check().map_err(|e| match e {
                nixtest::installer::FlakeError::NixMissing(_) => Failure::infra(e),
                _ => Failure::usage(e),
            })?;
            // The installed system answers to the name its configuration gives it.
            if let Some(name) = f.host_name()
                && !p.checks.iter().any(|c| c.name == "hostname")
            {
                p.checks.push(nixtest::profile::Check {
                    name: "hostname".into(),
                    run: format!("test \"$(hostname)\" = {name}"),
                });
            }
        }
    }
    if plan.profiles.is_empty() {
        // A share that holds no profile: nothing to run, but a report that says which share
        // it was, so that `report merge` knows the run's list.
        let started = SystemTime::now();
        let run_id = report::run_id(started);
        let run_dir = report::run_dir(&plan.report_dir, &run_id);
        let started = humantime::format_rfc3339_seconds(started).to_string();
        write_report(&plan, &run_dir, run_id, started, 0, Vec::new())?;
        if let Some(s) = &plan.share {
            println!(
                "share {} of {} holds no profile: nothing to run (report: {})",
                s.partition,
                s.of.join(","),
                run_dir.display()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    // `nixtest test` on a fresh machine sets itself up first.
    let cx = VmContext::open_with(&settings)?;
    // An installer ISO's VMs need no test guest.
    if plan.iso.is_none() {
        if !cx.image.exists() || !cx.manager.has_pristine() {
            super::vm_cmd::setup(false)?;
        }
        cx.image.verify().map_err(vm_failure)?;
    }
    let cx = VmContext::open_with(&settings)?;
    let installer = match &plan.iso {
        Some(iso) => Some(nixtest::orchestrator::Installer {
            iso: super::vm_cmd::prepare_iso(iso, &cx)?,
            public_key: cx.public_key.clone(),
        }),
        None => None,
    };

    let (paths, host) = super::plugin_host()?;
    let plugins =
        nixtest::plugins::load_set(&host, Some(&Registry::new(&paths.data)), &args.plugins)
            .map_err(Failure::usage)?;
    let history = Mutex::new(History::load(&paths.data));
    // Failure signatures are worth having, never worth failing a run for.
    let failures = match FailureDb::open(&FailureDb::path_in(&paths.data)) {
        Ok((db, aside)) => {
            if let Some(aside) = aside {
                eprintln!(
                    "nixtest: the failure database was damaged; it is kept as {} and a new one \
                     started",
                    aside.display()
                );
            }
            Some(Arc::new(Mutex::new(db)))
        }
        Err(e) => {
            eprintln!("nixtest: failure signatures are not recorded in this run: {e}");
            None
        }
    };

    let started = SystemTime::now();
    let clock = Instant::now();
    let run_id = report::run_id(started);
    let run_dir = report::run_dir(&plan.report_dir, &run_id);
    let started_text = humantime::format_rfc3339_seconds(started).to_string();
    // The dashboard is one more consumer of the run's events.
    let (live, server) = match args.serve {
        Some(listen) => {
            let live = LiveRun::new(&run_id, &started_text);
            let (report_dir, data) = (plan.report_dir.clone(), paths.data.clone());
            let for_server = live.clone();
            let server = super::serve_cmd::Server::start(listen, token, move |token| {
                let d = Dashboard::new(&report_dir, Some(data), token);
                d.add_live(for_server);
                d
            })?;
            (Some(live), Some(server))
        }
        None => (None, None),
    };
    let display = (!json).then(|| SharedDisplay::new(Console::new(verbose)));
    // One thread (and runtime) per VM running at the same time; each takes the next profile.
    let runtimes = (0..plan.parallel)
        .map(|_| runtime())
        .collect::<Result<Vec<_>, _>>()?;
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<ProfileReport>>> = Mutex::new(vec![None; plan.profiles.len()]);
    std::thread::scope(|scope| {
        for rt in runtimes {
            let mut display = display.clone();
            let mut feed = live.as_ref().map(|l| l.feed());
            let (cx, plan, plugins, history, next, slots, run_dir, failures, run_id) = (
                &cx, &plan, &plugins, &history, &next, &slots, &run_dir, &failures, &run_id,
            );
            let installer = installer.as_ref();
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(profile) = plan.profiles.get(i) else {
                        break;
                    };
                    let inputs = Inputs {
                        res: Resources {
                            vm: &cx.manager,
                            image: &cx.image,
                            key: cx.key.clone(),
                            plugins,
                            history,
                            installer,
                        },
                        failures: failures.as_ref(),
                        run_id,
                    };
                    let mut watchers: Vec<&mut dyn Consumer> = Vec::new();
                    if let Some(d) = display.as_mut() {
                        watchers.push(d);
                    }
                    if let Some(f) = feed.as_mut() {
                        watchers.push(f);
                    }
                    let r = rt.block_on(session::run_and_report(
                        inputs, watchers, profile, &plan.opts, run_dir,
                    ));
                    slots.lock().unwrap_or_else(PoisonError::into_inner)[i] = Some(r);
                }
            });
        }
    });
    drop(display);
    let reports: Vec<ProfileReport> = slots
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .into_iter()
        .map(|r| r.expect("every profile was run"))
        .collect();
    let elapsed = clock.elapsed().as_millis() as u64;
    let report = write_report(&plan, &run_dir, run_id, started_text, elapsed, reports)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serialises")
        );
    } else {
        for p in &report.profiles {
            let icon = match p.status {
                Status::Passed => "✅",
                Status::Failed => "❌",
                Status::Error => "⛔",
            };
            println!(
                "{icon} {} {} in {:.1} s{}",
                p.name,
                p.status,
                p.duration_ms as f64 / 1000.0,
                p.error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
        println!(
            "report: {} (report.json, junit.xml, report.html)",
            run_dir.display()
        );
    }
    let (code, status) = if report.summary.errors > 0 {
        (3, Status::Error)
    } else if report.summary.failed > 0 {
        (1, Status::Failed)
    } else {
        (0, Status::Passed)
    };
    if let (Some(live), Some(server)) = (live, server) {
        live.finish(status);
        server.stop();
    }
    Ok(ExitCode::from(code))
}
