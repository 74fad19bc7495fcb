//! Flags and dispatch.

mod failures_cmd;
mod plugin_cmd;
mod replay_cmd;
mod report_cmd;
mod scaffold;
mod serve_cmd;
mod templates_cmd;
mod test_cmd;
mod vm_cmd;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// A failure with the exit code it maps to.
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: 2,
            error: error.into(),
        }
    }
    pub fn infra(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: 3,
            error: error.into(),
        }
    }
}

pub type CliResult = Result<ExitCode, Failure>;

/// The user's paths and a plugin host whose compiled code is cached under them.
pub fn plugin_host() -> Result<(nixtest::paths::Paths, nixtest::plugin::PluginHost), Failure> {
    let paths =
        nixtest::paths::Paths::from_env().map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
    let host = nixtest::plugin::PluginHost::new(nixtest::plugin::HostOptions {
        cache_dir: Some(paths.compiled_plugins()),
        ..Default::default()
    })
    .map_err(|e| match e {
        // A cache others can write is the user's to fix: bad configuration, not infrastructure.
        nixtest::plugin::PluginError::Cache(_) => Failure::usage(e),
        e => Failure::infra(e),
    })?;
    Ok((paths, host))
}

/// How a command prints its result.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// For programs.
    Json,
}

#[derive(Parser)]
#[command(
    name = "nixtest",
    version,
    about = "Tests NixOS installations in pristine VMs and heals them while they run"
)]
struct Cli {
    /// More log output (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the detectors and healers over a recorded log (no VM). Exit 1 if it shows a failure.
    Replay {
        /// The log file, or - for standard input.
        log: PathBuf,
        /// Print the findings and actions as JSON.
        #[arg(long)]
        json: bool,
        /// Also load this plugin component (repeatable).
        #[arg(long = "plugin", value_name = "FILE.wasm")]
        plugins: Vec<PathBuf>,
        /// The profile's configuration folder, for healers that rewrite it.
        #[arg(long, value_name = "DIR")]
        config: Option<PathBuf>,
        /// Guest facts as JSON (disks, mounts, memory...), for healers.
        #[arg(long, value_name = "FILE.json")]
        facts: Option<PathBuf>,
        /// Record each failed phase's signature in the failure database (`nixtest failures`).
        #[arg(long)]
        learn: bool,
    },
    /// Failure signatures seen across runs (recorded by `nixtest test` and `replay --learn`).
    #[command(subcommand)]
    Failures(FailuresCommand),
    /// The template of every line of a log (variable parts masked) with its id, then every
    /// template with its count: how the failure miner groups lines.
    Templates {
        /// The log file, or - for standard input.
        log: PathBuf,
        /// One JSON object per line: line, text, template_id, template.
        #[arg(long)]
        json: bool,
    },
    /// Install each profile in a pristine VM, heal what fails, verify after a reboot, report.
    Test(test_cmd::TestArgs),
    /// A dashboard in the browser: the runs of the report folder, each run's profiles,
    /// phases, findings, healing and log tail, and the failure signatures.
    Serve(serve_cmd::ServeArgs),
    /// Build the test guest image, define the base VM, boot it once, take the pristine snapshot.
    Setup {
        /// Build the image and the base VM again even if they are current.
        #[arg(long)]
        rebuild: bool,
        /// Also prepare this installer ISO for `nixtest test --iso` (read its boot entry, take
        /// its kernel and initrd into the cache, keyed by its SHA-256; the ISO is never
        /// written).
        #[arg(long, value_name = "FILE")]
        iso: Option<std::path::PathBuf>,
        /// Build nixtest's stand-in installer ISO (Debian packages, NixOS's shape; cached by
        /// its inputs) and print its path.
        #[arg(long)]
        standin_iso: bool,
    },
    /// The base VM: status, address, a shell, revert, remove.
    #[command(subcommand)]
    Vm(VmCommand),
    /// Install, list, inspect, remove and scaffold plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Read back the reports `nixtest test` wrote.
    #[command(subcommand)]
    Report(ReportCommand),
}

#[derive(Subcommand)]
enum ReportCommand {
    /// One run: profiles, phases and their durations, errors, healing attempts, checks.
    Show {
        /// A run id, `latest`, or the path of a run folder.
        run: String,
        /// The report folder (also NIXTEST_REPORT_DIR; default nixtest-reports).
        #[arg(long, value_name = "DIR")]
        report_dir: Option<PathBuf>,
        /// Output: text or json (report.json as it is).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// The runs in the report folder, oldest first.
    List {
        #[arg(long, value_name = "DIR")]
        report_dir: Option<PathBuf>,
    },
    /// Join the reports of a run's shares (`nixtest test --partition`) into one report
    /// (json, JUnit, HTML) with every profile once, and their logs and events beside it.
    Merge {
        /// Run folders, or folders holding run folders (CI artefacts).
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// The new run folder.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum FailuresCommand {
    /// Every signature, the most frequent first: id, times, runs, last seen, category.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One signature: its templates, examples and the runs it appeared in.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum VmCommand {
    /// The base VM, its snapshots, and run VMs.
    Status,
    /// The base VM's SSH address on the host.
    Ip,
    /// A shell in the base VM (started if needed), or one command after `--`.
    Ssh {
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Revert the base VM to its pristine snapshot.
    Clean,
    /// Remove every VM and disk nixtest defined (the image stays cached).
    Destroy,
}

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Check a component (or a heal pack folder with a pack.toml), show what it asks for, and
    /// install it.
    Add {
        path: PathBuf,
        /// Install without asking (required when there is no terminal to ask on).
        #[arg(long)]
        yes: bool,
    },
    /// Built-in and installed plugins.
    List,
    /// Everything about one plugin.
    Info { name: String },
    /// Remove an installed plugin.
    Remove { name: String },
    /// Scaffold a new plugin crate.
    New {
        name: String,
        /// Folder to create it in (default: ./NAME).
        #[arg(long)]
        path: Option<PathBuf>,
        /// The nixtest-plugin-sdk source to depend on (default: the one nixtest was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
        /// A detector for this failure signature (`nixtest failures list`): its rules match
        /// the signature's templates, its test sample is the recorded examples.
        #[arg(long, value_name = "ID")]
        from_failure: Option<String>,
    },
    /// Write the built-in plugins' .wasm files into DIR (to inspect them or show `plugin add`).
    Export { dir: PathBuf },
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NIXTEST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();
    // Commands that only print, like other Unix tools, end quietly when their reader goes
    // (`nixtest plugin list | head -1`) instead of failing on a closed pipe. Commands that talk
    // to VMs keep SIGPIPE ignored: a broken socket is an error they handle.
    if matches!(
        cli.command,
        Command::Plugin(_)
            | Command::Report(_)
            | Command::Replay { .. }
            | Command::Templates { .. }
            | Command::Failures(_)
    ) {
        // SAFETY: restoring a signal's default action before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let result = match cli.command {
        Command::Plugin(cmd) => plugin_cmd::run(cmd),
        Command::Setup {
            rebuild,
            iso,
            standin_iso,
        } => vm_cmd::setup_all(rebuild, iso.as_deref(), standin_iso),
        Command::Test(args) => test_cmd::run(args, cli.verbose > 0),
        Command::Serve(args) => serve_cmd::run(args),
        Command::Vm(cmd) => match cmd {
            VmCommand::Status => vm_cmd::status(),
            VmCommand::Ip => vm_cmd::ip(),
            VmCommand::Ssh { command } => vm_cmd::ssh(command),
            VmCommand::Clean => vm_cmd::clean(),
            VmCommand::Destroy => vm_cmd::destroy(),
        },
        Command::Report(ReportCommand::Show {
            run,
            report_dir,
            format,
        }) => report_cmd::show(&run, report_dir, format == Format::Json),
        Command::Report(ReportCommand::List { report_dir }) => report_cmd::list(report_dir),
        Command::Report(ReportCommand::Merge { dirs, out }) => report_cmd::merge(&dirs, &out),
        Command::Templates { log, json } => templates_cmd::run(&log, json),
        Command::Failures(FailuresCommand::List { json }) => failures_cmd::list(json),
        Command::Failures(FailuresCommand::Show { id, json }) => failures_cmd::show(&id, json),
        Command::Replay {
            log,
            json,
            plugins,
            config,
            facts,
            learn,
        } => replay_cmd::run(
            &log,
            json,
            learn,
            cli.verbose > 0,
            &plugins,
            config.as_deref(),
            facts.as_deref(),
        ),
    };
    match result {
        Ok(code) => code,
        Err(f) => {
            eprintln!("nixtest: {}", nixtest::term::text(&one_line(&f.error)));
            ExitCode::from(f.code)
        }
    }
}

/// The error and its causes on one line, `outer: cause: cause`, each cause once: a message
/// that already quotes its cause (`cannot read X: {source}`) is not followed by it again.
fn one_line(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read /p: {source}")]
    struct Quoting {
        source: std::io::Error,
    }

    #[test]
    fn a_cause_the_message_quotes_is_not_repeated() {
        let io = || std::io::Error::other("too big");
        let quoting = anyhow::Error::new(Quoting { source: io() });
        assert_eq!(one_line(&quoting), "cannot read /p: too big");
        let wrapped = anyhow::Error::new(io()).context("loading plugins");
        assert_eq!(one_line(&wrapped), "loading plugins: too big");
        let both = quoting.context("replay");
        assert_eq!(one_line(&both), "replay: cannot read /p: too big");
    }
}
