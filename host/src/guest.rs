//! The seam between a run and the machine it installs: run a phase (streaming its output),
//! run a command, upload a file, read the clock. The SSH stream runner is the real one; a
//! [`fake::ScriptedGuest`] plays a script so that the healing loop is tested without a VM.

use crate::ssh::{ExecOutput, SshError};
use crate::stream::{GuestClock, StreamRunner};
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
    fn run_phase(
        &mut self,
        phase: &str,
        command: &str,
        on_chunk: &mut dyn FnMut(&[u8]),
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

    /// The guest uptime at which each line of the run's output was printed.
    fn line_times(&mut self) -> impl Future<Output = Result<Vec<f64>, GuestError>>;

    /// The guest's own copy of the run's output.
    fn guest_log(&mut self) -> impl Future<Output = Result<Vec<u8>, GuestError>>;

    /// The machine was rebooted: connections and the output log start anew.
    fn rebooted(&mut self);
}

impl Guest for StreamRunner {
    async fn run_phase(
        &mut self,
        phase: &str,
        command: &str,
        on_chunk: &mut dyn FnMut(&[u8]),
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

    async fn line_times(&mut self) -> Result<Vec<f64>, GuestError> {
        Ok(StreamRunner::line_times(self).await?)
    }

    async fn guest_log(&mut self) -> Result<Vec<u8>, GuestError> {
        Ok(StreamRunner::guest_log(self).await?)
    }

    fn rebooted(&mut self) {
        self.reset_after_reboot();
    }
}

pub mod fake {
    //! A guest that plays a script: each phase attempt prints what the script says and exits
    //! with its code; commands answer from a table; every call is recorded.

    use super::{Guest, GuestError};
    use crate::ssh::ExecOutput;
    use crate::stream::GuestClock;
    use std::collections::{BTreeMap, VecDeque};

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
        log: Vec<u8>,
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
            on_chunk: &mut dyn FnMut(&[u8]),
        ) -> Result<i32, GuestError> {
            self.calls.push(format!("phase {phase}"));
            let attempt = self
                .phases
                .get_mut(phase)
                .and_then(VecDeque::pop_front)
                .unwrap_or_else(|| Attempt::new(phase, &[], 0));
            // In two pieces, the way a stream arrives.
            let bytes = attempt.output.as_bytes();
            let (a, b) = bytes.split_at(bytes.len() / 2);
            on_chunk(a);
            on_chunk(b);
            self.log.extend_from_slice(bytes);
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

        async fn line_times(&mut self) -> Result<Vec<f64>, GuestError> {
            Err(GuestError::Unscripted("line times".into()))
        }

        async fn guest_log(&mut self) -> Result<Vec<u8>, GuestError> {
            Ok(self.log.clone())
        }

        fn rebooted(&mut self) {
            self.calls.push("reboot".into());
            self.log.clear();
        }
    }
}
