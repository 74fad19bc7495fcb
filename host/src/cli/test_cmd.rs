//! `nixtest test`

use super::vm_cmd::{VmContext, runtime, vm_failure};
use super::{CliResult, Failure};
use anyhow::anyhow;
use nixtest::display::{Console, Display, Quiet};
use nixtest::history::History;
use nixtest::orchestrator::{self, Fault, RunContext, TestOptions};
use nixtest::profile::Profile;
use nixtest::registry::Registry;
use nixtest::report::{self, Report, Status};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

pub struct TestArgs {
    pub profiles: Option<String>,
    pub inject: Option<String>,
    pub no_heal: bool,
    pub max_heal_attempts: Option<u32>,
    pub report_dir: PathBuf,
    pub json: bool,
    pub plugins: Vec<PathBuf>,
    pub verbose: bool,
}

fn env_bool(name: &str) -> Result<Option<bool>, Failure> {
    match std::env::var(name) {
        Ok(v) => match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(Some(true)),
            "0" | "false" | "no" | "off" => Ok(Some(false)),
            _ => Err(Failure::usage(anyhow!("{name}={v:?}: use true or false"))),
        },
        Err(_) => Ok(None),
    }
}

pub fn run(args: TestArgs) -> CliResult {
    let names: Vec<String> = args
        .profiles
        .as_deref()
        .unwrap_or("vm")
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let profiles: Vec<Profile> = names
        .iter()
        .map(|n| Profile::load(n))
        .collect::<Result<_, _>>()
        .map_err(Failure::usage)?;
    let inject = args
        .inject
        .as_deref()
        .map(str::parse::<Fault>)
        .transpose()
        .map_err(|e| Failure::usage(anyhow!(e)))?;
    let heal = !args.no_heal && env_bool("HEALING_ENABLED")?.unwrap_or(true);
    let max_heal_attempts = match args.max_heal_attempts {
        Some(n) => n,
        None => match std::env::var("MAX_HEALING_ATTEMPTS") {
            Ok(v) => v.parse().map_err(|_| {
                Failure::usage(anyhow!("MAX_HEALING_ATTEMPTS={v:?} is not a number"))
            })?,
            Err(_) => 3,
        },
    };
    let opts = TestOptions {
        inject,
        heal,
        max_heal_attempts,
        min_confidence: 0.3,
    };

    // `nixtest test` on a fresh machine sets itself up first.
    let cx = VmContext::open()?;
    if !cx.image.exists() || !cx.manager.has_pristine() {
        super::vm_cmd::setup(false)?;
    }
    let cx = VmContext::open()?;
    cx.image.verify().map_err(vm_failure)?;

    let (paths, host) = super::plugin_host()?;
    let plugins =
        nixtest::plugins::load_set(&host, Some(&Registry::new(&paths.data)), &args.plugins)
            .map_err(Failure::usage)?;
    let mut history = History::load(&paths.data);

    let started = SystemTime::now();
    let clock = Instant::now();
    let run_id = format!(
        "{}-{:04x}",
        humantime::format_rfc3339_seconds(started)
            .to_string()
            .replace(['-', ':'], "")
            .replace('T', "-")
            .trim_end_matches('Z'),
        std::process::id() & 0xffff
    );
    let run_dir = report::run_dir(&args.report_dir, &run_id);
    let mut console = Console::new(args.verbose);
    let mut quiet = Quiet;
    let display: &mut dyn Display = if args.json { &mut quiet } else { &mut console };
    let rt = runtime()?;
    let mut reports = Vec::new();
    for profile in &profiles {
        let mut rcx = RunContext {
            vm: &cx.manager,
            image: &cx.image,
            key: cx.key.clone(),
            plugins: &plugins,
            history: &mut history,
            display: &mut *display,
        };
        let r = rt.block_on(orchestrator::run_profile(
            &mut rcx, profile, &opts, &run_dir,
        ));
        reports.push(r);
    }
    let report = Report::new(
        run_id,
        humantime::format_rfc3339_seconds(started).to_string(),
        clock.elapsed().as_millis() as u64,
        reports,
    );
    report.write(&run_dir).map_err(|e| {
        Failure::infra(anyhow!(
            "cannot write the report to {}: {e}",
            run_dir.display()
        ))
    })?;
    drop(console);
    if args.json {
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
                "{icon} {} {:?} in {:.1} s{}",
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
    let code = if report.summary.errors > 0 {
        3
    } else if report.summary.failed > 0 {
        1
    } else {
        0
    };
    Ok(ExitCode::from(code))
}
