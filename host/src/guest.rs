//! The seam between a run and the machine it installs: run a phase (streaming its output),
//! run a command, upload a file, read the clock. The SSH stream runner is the real one; a
//! [`fake::ScriptedGuest`] plays a script so that the healing loop is tested without a VM.

use crate::ssh::{ExecOutput, SshError};
use crate::stream::{GuestClock, PhaseOutput, StopRequest, StreamRunner};
use std::future::Future;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum GuestError {
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// A scripted guest was asked for something its script does not have.
    #[error("the scripted guest has no answer for {0}")]
    Unscripted(String),
}

/// A machine a run installs. Methods are async: a real guest answers over the network.
pub trait Guest {
    /// Runs one phase, feeding its output to `on_chunk` as it arrives; returns its exit code.
    /// When `on_chunk` answers with a reason, the phase is stopped (its output still comes to
    /// its end, with the runner's note that nixtest stopped it).
    fn run_phase(
        &mut self,
        phase: &str,
        command: &str,
        on_chunk: &mut dyn FnMut(PhaseOutput<'_>) -> StopRequest,
    ) -> impl Future<Output = Result<i32, GuestError>>;

    /// Runs a command that may run again after a lost connection (reads, idempotent steps).
    fn exec(&mut self, command: &str) -> impl Future<Output = Result<ExecOutput, GuestError>>;

    /// Runs a command at most once, whatever happens to the connection (healers' commands).
    fn exec_once(&mut self, command: &str) -> impl Future<Output = Result<ExecOutput, GuestError>>;

    fn upload(
        &mut self,
        path: &str,
        bytes: &[u8],
        mode: u32,
    ) -> impl Future<Output = Result<(), GuestError>>;

    /// The guest's clock paired with ours, when it can be read.
    fn clock(&mut self) -> impl Future<Output = Option<GuestClock>>;

    /// The guest uptime at which the given lines of the run's output were printed.
    fn line_times_of(
        &mut self,
        lines: &[u32],
    ) -> impl Future<Output = Result<Vec<Option<f64>>, GuestError>>;

    /// The machine was rebooted: connections and the output log start anew.
    fn rebooted(&mut self);

    /// A read-only command to run the moment a phase is stopped early, beside its draining
    /// output (the healing loop gathers facts so, instead of after the phase has ended).
    fn set_at_stop(&mut self, command: Option<String>);

    /// What that command printed, when the last phase was stopped and it succeeded.
    fn take_at_stop_output(&mut self) -> Option<ExecOutput>;
}

impl Guest for StreamRunner {
    async fn run_phase(
        &mut self,
        phase: &str,
        command: &str,
        on_chunk: &mut dyn FnMut(PhaseOutput<'_>) -> StopRequest,
    ) -> Result<i32, GuestError> {
        Ok(StreamRunner::run_phase(self, phase, command, on_chunk).await?)
    }

    async fn exec(&mut self, command: &str) -> Result<ExecOutput, GuestError> {
        Ok(StreamRunner::exec(self, command).await?)
    }

    async fn exec_once(&mut self, command: &str) -> Result<ExecOutput, GuestError> {
        Ok(StreamRunner::exec_once(self, command).await?)
    }

    async fn upload(&mut self, path: &str, bytes: &[u8], mode: u32) -> Result<(), GuestError> {
        Ok(StreamRunner::upload(self, path, bytes, mode).await?)
    }

    async fn clock(&mut self) -> Option<GuestClock> {
        self.guest_clock().await.ok()
    }

    async fn line_times_of(&mut self, lines: &[u32]) -> Result<Vec<Option<f64>>, GuestError> {
        Ok(StreamRunner::line_times_of(self, lines).await?)
    }

    fn rebooted(&mut self) {
        self.reset_after_reboot();
    }

    fn set_at_stop(&mut self, command: Option<String>) {
        StreamRunner::set_at_stop(self, command);
    }

    fn take_at_stop_output(&mut self) -> Option<ExecOutput> {
        StreamRunner::take_at_stop_output(self)
    }
}

pub mod fake {
    //! A guest that plays a script: each phase attempt prints what the script says and exits
    //! with its code; commands answer from a table; every call is recorded.

    use super::{Guest, GuestError};
    use crate::ssh::ExecOutput;
    use crate::stream::{GuestClock, PhaseOutput, StopRequest};
    use std::collections::{BTreeMap, VecDeque};

    /// Starts a line of an attempt's output that comes from the VM's console, not the stream.
    pub const CONSOLE: &str = "<console>";

    /// One attempt of a phase: its output and exit code.
    #[derive(Debug, Clone)]
    pub struct Attempt {
        pub output: String,
        pub exit_code: i32,
    }

    impl Attempt {
        /// A phase that prints `lines` and the runner's own end marker for `code`.
        pub fn new(phase: &str, lines: &[&str], code: i32) -> Self {
            let mut output = format!("::PHASE::{phase}\n");
            for l in lines {
                output.push_str(l);
                output.push('\n');
            }
            if code == 0 {
                output.push_str(&format!("::SUCCESS::{phase} done\n"));
            } else {
                output.push_str(&format!("::ERROR::{phase} failed with exit code {code}\n"));
            }
            Attempt {
                output,
                exit_code: code,
            }
        }
    }

    #[derive(Debug, Default)]
    pub struct ScriptedGuest {
        /// Per phase, the attempts still to play; a phase out of attempts passes quietly.
        pub phases: BTreeMap<String, VecDeque<Attempt>>,
        /// Output of commands (by exact text); others exit 0 with no output.
        pub commands: BTreeMap<String, ExecOutput>,
        /// What was done, in order: `phase NAME`, `exec CMD`, `once CMD`, `upload PATH`.
        pub calls: Vec<String>,
        pub uploads: BTreeMap<String, Vec<u8>>,
        pub at_stop: Option<String>,
        pub at_stop_output: Option<ExecOutput>,
    }

    impl ScriptedGuest {
        pub fn phase(mut self, name: &str, attempts: Vec<Attempt>) -> Self {
            self.phases.insert(name.to_string(), attempts.into());
            self
        }

        pub fn command(mut self, command: &str, status: u32, stdout: &str) -> Self {
            self.commands.insert(
                command.to_string(),
                ExecOutput {
                    status,
                    stdout: stdout.as_bytes().to_vec(),
                    stderr: Vec::new(),
                },
            );
            self
        }

        fn answer(&self, command: &str) -> ExecOutput {
            self.commands.get(command).cloned().unwrap_or(ExecOutput {
                status: 0,
                stdout: Vec::new(),
                stderr: Vec::new(),
            })
        }
    }

    impl Guest for ScriptedGuest {
        async fn run_phase(
            &mut self,
            phase: &str,
            _command: &str,
            on_chunk: &mut dyn FnMut(PhaseOutput<'_>) -> StopRequest,
        ) -> Result<i32, GuestError> {
            self.calls.push(format!("phase {phase}"));
            self.at_stop_output = None;
            let attempt = self
                .phases
                .get_mut(phase)
                .and_then(VecDeque::pop_front)
                .unwrap_or_else(|| Attempt::new(phase, &[], 0));
            // Line by line, as a stream arrives; a stop ends the phase the way the guest
            // runner does: what is printed stops, its note and end marker follow.
            let lines: Vec<&str> = attempt.output.split_inclusive('\n').collect();
            for (i, line) in lines.iter().enumerate() {
                // `<console>LINE`: a kernel line the host reads from the VM's console.
                let asked = match line.strip_prefix(CONSOLE) {
                    Some(k) => on_chunk(PhaseOutput::Console(k.trim_end().as_bytes())),
                    None => on_chunk(PhaseOutput::Guest(line.as_bytes())),
                };
                // A stop asked on the last line comes after the phase ended: nothing to stop.
                if let Some(reason) = asked.filter(|_| i + 1 < lines.len()) {
                    self.calls.push(format!("stop {phase}: {reason}"));
                    if let Some(c) = self.at_stop.clone() {
                        self.calls.push(format!("at-stop {c}"));
                        self.at_stop_output = Some(self.answer(&c));
                    }
                    let end = format!(
                        "::WARNING::nixtest stopped {phase}: {reason}\n::ERROR::{phase} failed with exit code 143\n"
                    );
                    on_chunk(PhaseOutput::Guest(end.as_bytes()));
                    return Ok(143);
                }
            }
            Ok(attempt.exit_code)
        }

        async fn exec(&mut self, command: &str) -> Result<ExecOutput, GuestError> {
            self.calls.push(format!("exec {command}"));
            Ok(self.answer(command))
        }

        async fn exec_once(&mut self, command: &str) -> Result<ExecOutput, GuestError> {
            self.calls.push(format!("once {command}"));
            Ok(self.answer(command))
        }

        async fn upload(&mut self, path: &str, bytes: &[u8], _mode: u32) -> Result<(), GuestError> {
            self.calls.push(format!("upload {path}"));
            self.uploads.insert(path.to_string(), bytes.to_vec());
            Ok(())
        }

        async fn clock(&mut self) -> Option<GuestClock> {
            None
        }

        async fn line_times_of(&mut self, _: &[u32]) -> Result<Vec<Option<f64>>, GuestError> {
            Err(GuestError::Unscripted("line times".into()))
        }

        fn rebooted(&mut self) {
            self.calls.push("reboot".into());
        }

        fn set_at_stop(&mut self, command: Option<String>) {
            self.at_stop = command;
        }

        fn take_at_stop_output(&mut self) -> Option<ExecOutput> {
            self.at_stop_output.take()
        }
    }
}
