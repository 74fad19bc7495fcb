//! `nixtest serve`, and the server `nixtest test --serve` runs beside a run.

use super::{CliResult, Failure};
use anyhow::anyhow;
use nixtest::dashboard::{self, Dashboard};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// How long a stopping server waits for responses still being sent (a raw log to a slow
/// client) before it closes them.
const DRAIN: Duration = Duration::from_secs(5);

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Where to listen; any address that is not loopback needs --token.
    #[arg(long, value_name = "ADDR", default_value = dashboard::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// The report folder to show (also NIXTEST_REPORT_DIR; default nixtest-reports).
    #[arg(long, value_name = "DIR")]
    pub report_dir: Option<PathBuf>,
    /// Refuse every request without this token; `--token` alone generates one and prints it.
    #[arg(long, value_name = "TOKEN", num_args = 0..=1, default_missing_value = "")]
    pub token: Option<String>,
}

/// The token to use: none, the one given, or a new one for `--token` without a value.
pub fn token(arg: Option<&str>) -> Result<Option<String>, Failure> {
    match arg {
        None => Ok(None),
        Some("") => dashboard::generate_token()
            .map(Some)
            .map_err(Failure::infra),
        Some(t) => Ok(Some(t.to_string())),
    }
}

/// A listen refused by policy is the user's to fix (exit 2); a socket that cannot be had is
/// the machine's (exit 3).
fn bind_failure(e: dashboard::DashboardError) -> Failure {
    match e {
        dashboard::DashboardError::TokenRequired(_) | dashboard::DashboardError::BadToken => {
            Failure::usage(e)
        }
        e => Failure::infra(e),
    }
}

fn announce(addr: SocketAddr, token: Option<&str>) {
    eprintln!(
        "dashboard: http://{addr}/{}",
        token.map(|t| format!("?token={t}")).unwrap_or_default()
    );
}

/// A dashboard server on its own thread and runtime, so that a run never waits for it.
pub struct Server {
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(
        listen: SocketAddr,
        token: Option<String>,
        dashboard: impl FnOnce(Option<String>) -> Arc<Dashboard>,
    ) -> Result<Server, Failure> {
        let rt = super::vm_cmd::runtime()?;
        let listener = rt
            .block_on(dashboard::bind(listen, token.as_deref()))
            .map_err(bind_failure)?;
        let addr = listener.local_addr().unwrap_or(listen);
        announce(addr, token.as_deref());
        let d = dashboard(token);
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("nixtest-dashboard".into())
            .spawn(move || {
                rt.block_on(async move {
                    let mut signal = stopped.clone();
                    let server = dashboard::serve(listener, d, async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    });
                    let drained = async move {
                        let _ = signal.wait_for(|s| *s).await;
                        tokio::time::sleep(DRAIN).await;
                    };
                    tokio::select! {
                        r = server => if let Err(e) = r {
                            eprintln!("nixtest: the dashboard stopped: {e}");
                        },
                        _ = drained => {}
                    }
                })
            })
            .map_err(|e| Failure::infra(anyhow!("cannot start the dashboard's thread: {e}")))?;
        Ok(Server {
            stop,
            thread: Some(thread),
        })
    }

    /// Ends open pages' streams, lets responses finish (bounded), and stops.
    pub fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn run(args: ServeArgs) -> CliResult {
    let settings = nixtest::settings::Settings::load().map_err(Failure::usage)?;
    let report_dir = super::test_cmd::report_dir(args.report_dir.as_ref(), &settings);
    let data = nixtest::paths::Paths::from_env().ok().map(|p| p.data);
    let token = token(args.token.as_deref())?;
    let rt = super::vm_cmd::runtime()?;
    let listener = rt
        .block_on(dashboard::bind(args.listen, token.as_deref()))
        .map_err(bind_failure)?;
    announce(
        listener.local_addr().unwrap_or(args.listen),
        token.as_deref(),
    );
    eprintln!("showing the runs in {}; Ctrl-C stops", report_dir.display());
    let d = Dashboard::new(&report_dir, data, token);
    rt.block_on(async move {
        let server = dashboard::serve(listener, d, async {
            let _ = tokio::signal::ctrl_c().await;
        });
        tokio::select! {
            r = server => r,
            _ = async {
                let _ = tokio::signal::ctrl_c().await;
                tokio::time::sleep(DRAIN).await;
            } => Ok(()),
        }
    })
    .map_err(|e| Failure::infra(anyhow!("the dashboard stopped: {e}")))?;
    eprintln!("dashboard stopped");
    Ok(ExitCode::SUCCESS)
}
