//! The monitoring overhead of a real install: the `vm` profile installed in a pristine VM with
//! the monitor and every built-in plugin, and the same install with no plugins (the runner and
//! the line parser alone), in A B B A order so drift on the machine and the order of runs hit
//! both alike. Prints each run's phase times and the median ratio. Needs root and libvirtd, like `nixtest setup`.
//! `cargo bench -p nixtest --bench install [-- --runs N]` (default 4 of each).
//!
//! `-- --faults [--runs N] [--only FAULT,...]` instead installs N (at least 3) times per injected fault with
//! healing on, and prints per fault the p50 and p99 of the times from the failing line being
//! printed in the guest to the first finding (a temporary one when the detector waits for
//! more evidence), and from the line that decided the finding to the finding and to the action
//! applied.

mod common;

use nixtest::fault::Fault;
use nixtest::healing::Policy;
use nixtest::history::History;
use nixtest::orchestrator::{Resources, TestOptions};
use nixtest::plugin::{HostOptions, PluginHost};
use nixtest::profile::Profile;
use nixtest::report::{ProfileReport, Status};
use nixtest::session::{self, Inputs};
use nixtest::vm::{GuestImage, VmManager};
use std::sync::Mutex;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds in the install's phases (boot, reboot and verification excluded: they do not
/// see the monitor).
/// The nearest-rank quantile `q` of `v` (not empty).
fn quantile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn phase_secs(r: &ProfileReport) -> f64 {
    r.phases.iter().map(|p| p.duration_ms as f64).sum::<f64>() / 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(4);
    let (settings, key, public) = common::bench_vm();
    let image = GuestImage::locate(&settings.dir, &public);
    if !image.exists() {
        image.build(&public, |_| {}).unwrap();
    }
    let manager = VmManager::connect(settings).unwrap();
    manager.define_base(&image).unwrap();
    if !manager.has_pristine() {
        manager.snapshot_pristine().unwrap();
    }
    let host = PluginHost::new(HostOptions::default()).unwrap();
    let builtins =
        nixtest::plugins::PluginSet::from_plugins(nixtest::plugins::builtins(&host).unwrap());
    let none = nixtest::plugins::PluginSet::from_plugins(Vec::new());
    let profile = Profile::load("vm").unwrap();
    let opts = TestOptions {
        inject: None,
        policy: Policy {
            heal: true,
            max_attempts: 3,
            min_confidence: 0.3,
            stop_early: true,
        },
        deadlines: nixtest::deadlines::Deadlines::default(),
    };
    let data = tempfile::tempdir().unwrap();
    let history = Mutex::new(History::load(data.path()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // One install of the profile in a pristine VM, with these plugins.
    let install = |plugins: &nixtest::plugins::PluginSet, opts: &TestOptions| -> ProfileReport {
        let run_dir = tempfile::tempdir().unwrap();
        let inputs = Inputs {
            res: Resources {
                installer: None,
                vm: &manager,
                image: &image,
                key: key.clone(),
                plugins,
                history: &history,
            },
            failures: None,
            run_id: "bench",
        };
        rt.block_on(session::run_and_report(
            inputs,
            Vec::new(),
            &profile,
            opts,
            run_dir.path(),
        ))
    };
    if args.iter().any(|a| a == "--faults") {
        // `--runs N` installs per fault (3 at least for a p99 worth the name).
        let per_fault = runs.max(3);
        println!(
            "{per_fault} runs per fault; times from the line printed in the guest (its clock paired with the host's), p50 / p99 (nearest rank)"
        );
        println!(
            "| fault | runs healed | total p50 | first line → first finding | decisive line → finding | decisive line → applied | stopped early | clock pairing ± (max) |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        // `--only memory,disk` measures those faults alone.
        let only: Option<Vec<Fault>> = args
            .iter()
            .position(|a| a == "--only")
            .and_then(|i| args.get(i + 1))
            .map(|v| {
                v.split(',')
                    .map(|f| f.trim().parse().expect("a fault name"))
                    .collect()
            });
        let faults = [Fault::Disk, Fault::Memory, Fault::Network, Fault::Space]
            .into_iter()
            .filter(|f| only.as_ref().is_none_or(|o| o.contains(f)));
        for fault in faults {
            let mut totals = Vec::new();
            let (mut first, mut decided, mut applied) = (Vec::new(), Vec::new(), Vec::new());
            let (mut early, mut healed_runs, mut clock) = (0, 0, 0f64);
            for _ in 0..per_fault {
                let r = install(
                    &builtins,
                    &TestOptions {
                        inject: Some(fault),
                        ..opts
                    },
                );
                assert_eq!(r.status, Status::Passed, "{:?}: {:?}", fault, r.error);
                totals.push(r.duration_ms as f64 / 1000.0);
                let Some(h) = r
                    .healing
                    .iter()
                    .find(|h| h.outcome == nixtest::report::Outcome::Healed)
                else {
                    continue;
                };
                healed_runs += 1;
                first.extend(h.guest_line_to_first_finding_ms.map(|v| v as f64));
                decided.extend(h.guest_decisive_to_finding_ms.map(|v| v as f64));
                applied.extend(h.guest_decisive_to_applied_ms.map(|v| v as f64));
                early += usize::from(h.stopped_early);
                clock = clock.max(h.guest_clock_error_ms.unwrap_or(0.0));
            }
            let pct = |v: &[f64]| {
                if v.is_empty() {
                    "–".to_string()
                } else {
                    format!("{:.0} / {:.0} ms", quantile(v, 0.5), quantile(v, 0.99))
                }
            };
            println!(
                "| {} | {healed_runs}/{per_fault} | {:.1} s | {} | {} | {} | {early}/{healed_runs} | {clock:.0} ms |",
                fault.name(),
                quantile(&totals, 0.5),
                pct(&first),
                pct(&decided),
                pct(&applied),
            );
        }
        return;
    }
    let mut with = Vec::new();
    let mut without = Vec::new();
    let mut monitor_ms = Vec::new();
    println!("accelerator: {}", manager.accel.accel.domain_type());
    for i in 0..runs * 2 {
        let monitored = matches!(i % 4, 0 | 3);
        let plugins = if monitored { &builtins } else { &none };
        let r = install(plugins, &opts);
        assert_eq!(r.status, Status::Passed, "{:?}", r.error);
        let secs = phase_secs(&r);
        let phases: Vec<String> = r
            .phases
            .iter()
            .map(|p| format!("{} {:.1} s", p.name, p.duration_ms as f64 / 1000.0))
            .collect();
        println!(
            "{:<26} phases {secs:5.1} s ({})",
            if monitored {
                "monitor + 5 plugins:"
            } else {
                "runner alone:"
            },
            phases.join(", ")
        );
        if monitored {
            with.push(secs);
            monitor_ms.push(r.metrics.get("monitor_ms").copied().unwrap_or(f64::NAN));
        } else {
            without.push(secs);
        }
    }
    let (a, b) = (median(with.clone()), median(without.clone()));
    let spread = |v: &[f64]| {
        v.iter().cloned().fold(f64::MIN, f64::max) - v.iter().cloned().fold(f64::MAX, f64::min)
    };
    println!(
        "install phases, median of {runs}: monitor + plugins {a:.2} s, runner alone {b:.2} s, \
         ratio {:.3} (spread {:.2} s and {:.2} s)",
        a / b,
        spread(&with),
        spread(&without)
    );
    println!(
        "host time in parser + monitor + plugins: {:.0} ms median per install",
        median(monitor_ms)
    );
}
