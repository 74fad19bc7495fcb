//! The stream runner: puts the guest-side runner in the VM, runs a phase detached from the SSH
//! session, and streams what it prints as it is printed. The guest keeps the whole output in
//! `/var/log/nixtest/run.log`; when SSH drops, the runner reconnects and follows again from
//! the last byte it received, so nothing is lost or doubled. Knows nothing of markers.

use crate::deadlines::{self, Deadlines};
use crate::ssh::{ExecOutput, Incoming, SshError, SshSession, SshTarget, shell_quote};
use std::time::{Duration, Instant};

/// A moment on the guest's uptime clock and the host's clock at the same moment.
#[derive(Debug, Clone, Copy)]
pub struct GuestClock {
    pub host: Instant,
    pub uptime: f64,
    /// How far off the pairing can be: half the round trip.
    pub error: Duration,
}

impl GuestClock {
    /// The host instant of guest uptime `t` (seconds).
    pub fn to_host(&self, t: f64) -> Option<Instant> {
        if !t.is_finite() {
            return None;
        }
        // Any value the guest sends is possible: out of range is no time, never a panic.
        let d = t - self.uptime;
        let span = Duration::try_from_secs_f64(d.abs()).ok()?;
        if d >= 0.0 {
            self.host.checked_add(span)
        } else {
            self.host.checked_sub(span)
        }
    }
}

pub const RUNNER_PATH: &str = "/usr/local/bin/nixtest-runner";
pub const GUEST_LOG: &str = "/var/log/nixtest/run.log";
/// The guest uptime at which each line of the run log was printed, one per line.
pub const GUEST_TIMES: &str = "/var/log/nixtest/run.times";
const RUNNER: &str = include_str!("../../guest/runner/nixtest-runner");

/// The phase's exit status as `nixtest-runner follow` says it on standard error once the
/// phase has ended (`nixtest-status: N`).
fn follow_status(stderr: &[u8]) -> Option<i32> {
    String::from_utf8_lossy(stderr)
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("nixtest-status: "))
        .and_then(|s| s.trim().parse().ok())
}

pub struct StreamRunner {
    target: SshTarget,
    session: Option<SshSession>,
    /// Bytes of the guest's run log received so far.
    offset: u64,
    pub reconnects: u32,
    /// Names each phase start and each exactly-once command, so the guest runs it once even
    /// when the host asks again after a lost connection.
    next_id: u64,
    deadlines: Deadlines,
    /// The machine rebooted: the next connection waits for the installed system to boot.
    rebooting: bool,
    /// A read-only command run the moment a phase is stopped, while its output still drains
    /// (the healing loop gathers the guest's facts so), and what it printed.
    at_stop: Option<String>,
    at_stop_output: Option<ExecOutput>,
    /// The VM's console log, read beside each phase for the kernel's messages.
    console: Option<std::path::PathBuf>,
}

/// A wait for SSH that reached its deadline, said as what was awaited and what sets it.
fn waited_for(e: SshError, what: &str, setting: &'static str) -> SshError {
    match e {
        SshError::NotReady { waited, .. } => SshError::Deadline {
            what: what.to_string(),
            waited,
            setting,
        },
        e => e,
    }
}

/// What comes from a running phase: a chunk of the runner's stream, or a kernel line the host
/// read from the VM's console (`::KERNEL::[   SECONDS] text`, the runner's form of it).
#[derive(Debug, Clone, Copy)]
pub enum PhaseOutput<'a> {
    Guest(&'a [u8]),
    Console(&'a [u8]),
}

/// What the host asks of a running phase, chunk by chunk: go on, or stop it and say why.
pub type StopRequest = Option<String>;

impl StreamRunner {
    /// Waits for the guest's SSH (up to the boot deadline) and puts the runner in place.
    pub async fn connect(target: SshTarget, deadlines: Deadlines) -> Result<Self, SshError> {
        let mut session = SshSession::wait_ready(&target, deadlines.boot)
            .await
            .map_err(|e| waited_for(e, "the guest's SSH after the VM started", deadlines::BOOT))?;
        session
            .upload(RUNNER_PATH, RUNNER.as_bytes(), 0o755)
            .await?;
        Ok(StreamRunner {
            target,
            session: Some(session),
            offset: 0,
            reconnects: 0,
            next_id: 1,
            deadlines,
            rebooting: false,
            at_stop: None,
            at_stop_output: None,
            console: None,
        })
    }

    pub fn deadlines(&self) -> Deadlines {
        self.deadlines
    }

    /// Runs `command` (read-only, idempotent) right after asking the guest to stop a phase,
    /// beside the phase's draining output; [`StreamRunner::take_at_stop_output`] has what it
    /// printed.
    pub fn set_at_stop(&mut self, command: Option<String>) {
        self.at_stop = command;
    }

    /// Reads the kernel's messages from the VM's console log while a phase runs, besides the
    /// runner's copy of them (see [`crate::kernel_console`]).
    pub fn set_console(&mut self, log: Option<std::path::PathBuf>) {
        self.console = log;
    }

    /// What the at-stop command printed during the last phase, if that phase was stopped and
    /// the command succeeded.
    pub fn take_at_stop_output(&mut self) -> Option<ExecOutput> {
        self.at_stop_output.take()
    }

    async fn session(&mut self) -> Result<&mut SshSession, SshError> {
        if self.session.is_none() {
            self.reconnects += 1;
            tracing::info!("reconnecting to {}", self.target.addr);
            let s = self.reconnect().await?;
            self.session = Some(s);
        }
        Ok(self.session.as_mut().expect("just set"))
    }

    async fn reconnect(&mut self) -> Result<SshSession, SshError> {
        let (wait, what, setting) = if self.rebooting {
            (
                self.deadlines.reboot,
                "the installed system's SSH after the reboot",
                deadlines::REBOOT,
            )
        } else {
            (
                self.deadlines.reconnect,
                "the guest's SSH after the connection was lost",
                deadlines::RECONNECT,
            )
        };
        let s = SshSession::wait_ready(&self.target, wait)
            .await
            .map_err(|e| waited_for(e, what, setting))?;
        self.rebooting = false;
        Ok(s)
    }

    /// Runs a command; a lost connection is re-established once and the command run again
    /// (callers use this for idempotent commands only).
    pub async fn exec(&mut self, command: &str) -> Result<ExecOutput, SshError> {
        for attempt in 0..2 {
            match self.session().await?.exec(command).await {
                Ok(out) => return Ok(out),
                Err(SshError::Lost { .. }) if attempt == 0 => self.session = None,
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns")
    }

    /// Runs a command that must not run twice (a healer's commands): the guest-side runner
    /// keeps its status, so asking again after a lost connection returns the first run's
    /// result instead of running it again.
    pub async fn exec_once(&mut self, command: &str) -> Result<ExecOutput, SshError> {
        let id = self.take_id();
        let secs = self.deadlines.command.as_secs().max(1);
        let out = self
            .exec(&format!(
                "{RUNNER_PATH} once {id} {} {secs}",
                shell_quote(command)
            ))
            .await?;
        if out.status == 124 {
            tracing::warn!(
                "a healer's command ran past {secs} s and was stopped; {} sets this deadline",
                deadlines::COMMAND
            );
        }
        Ok(out)
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub async fn upload(&mut self, path: &str, bytes: &[u8], mode: u32) -> Result<(), SshError> {
        for attempt in 0..2 {
            match self.session().await?.upload(path, bytes, mode).await {
                Ok(()) => return Ok(()),
                Err(SshError::Lost { .. }) if attempt == 0 => self.session = None,
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns")
    }

    /// Runs one phase and feeds every chunk of its output to `on_chunk` as it arrives; when
    /// `on_chunk` answers with a reason, the guest is asked to stop the phase (once) and its
    /// output is still followed to the end. Returns the phase's exit status.
    pub async fn run_phase(
        &mut self,
        phase: &str,
        command: &str,
        mut on_chunk: impl FnMut(PhaseOutput<'_>) -> StopRequest,
    ) -> Result<i32, SshError> {
        let d = self.deadlines;
        // Kernel lines printed from here on; the console is read until the phase ends.
        let mut console = self
            .console
            .as_deref()
            .map(crate::kernel_console::KernelConsole::follow);
        // Started at most once, whatever happens to the connection (see `exec_once`).
        let start = format!(
            "{RUNNER_PATH} start {} {} {} {} {}",
            self.take_id(),
            shell_quote(phase),
            shell_quote(command),
            d.hang_after.as_secs(),
            d.phase.as_secs()
        );
        let out = self.exec(&start).await?;
        if out.status != 0 {
            return Err(SshError::Lost {
                addr: self.target.addr,
                reason: format!(
                    "the guest runner did not start: {}",
                    out.stderr_text().trim()
                ),
            });
        }
        // The guest's watchdog reports a phase past its deadline; the host waits a little
        // longer for that, then no longer.
        let host_deadline = (!d.phase.is_zero()).then(|| d.phase + deadlines::PHASE_GRACE);
        let started = tokio::time::Instant::now();
        self.at_stop_output = None;
        let at_stop = self.at_stop.clone();
        let stop_command = |reason: &str| {
            let stop = format!(
                "{RUNNER_PATH} stop {} {}",
                shell_quote(phase),
                // One line: the guest prints it into the log, where a newline could fake a marker.
                shell_quote(&crate::term::clip(
                    &reason.replace(|c: char| c.is_control(), " "),
                    300
                ))
            );
            match &at_stop {
                // The stop prints nothing: what comes out is the at-stop command's.
                Some(also) => format!("{stop} && {{ {also}\n}}"),
                None => stop,
            }
        };
        let mut stop: Option<String> = None;
        loop {
            if let Some(reason) = &stop {
                // Asked before the connection dropped: asking again is harmless.
                let out = self.exec(&stop_command(reason)).await?;
                if out.status == 0 && self.at_stop.is_some() {
                    self.at_stop_output = Some(out);
                }
            }
            let follow = format!(
                "{RUNNER_PATH} follow {} {}",
                self.offset,
                shell_quote(phase)
            );
            if self.session.is_none() {
                self.reconnects += 1;
                let s = self.reconnect().await?;
                self.session = Some(s);
            }
            let offset = &mut self.offset;
            let session = self.session.as_mut().expect("just connected");
            let stop = &mut stop;
            let beside = console.as_mut().map(|c| &mut c.lines);
            let following = session.exec_streaming_with(&follow, beside, |incoming| {
                let asked = match incoming {
                    Incoming::Stdout(chunk) => {
                        *offset += chunk.len() as u64;
                        on_chunk(PhaseOutput::Guest(chunk))
                    }
                    Incoming::Beside(line) => on_chunk(PhaseOutput::Console(line)),
                };
                match asked {
                    Some(reason) if stop.is_none() => {
                        let cmd = stop_command(&reason);
                        *stop = Some(reason);
                        Some(cmd)
                    }
                    _ => None,
                }
            });
            let result = match host_deadline {
                Some(limit) => tokio::time::timeout_at(started + limit, following)
                    .await
                    .unwrap_or_else(|_| {
                        Err(SshError::Deadline {
                            what: format!("the end of phase {phase} (its deadline and a grace)"),
                            waited: limit,
                            setting: deadlines::PHASE,
                        })
                    }),
                None => following.await,
            };
            match result {
                Ok(streamed) => {
                    if streamed.side.is_some() && self.at_stop.is_some() {
                        self.at_stop_output = streamed.side;
                    }
                    // The runner says the phase's status as the follow ends: no round trip.
                    if let Some(status) = follow_status(&streamed.stderr) {
                        return Ok(status);
                    }
                    break;
                }
                Err(SshError::Lost { reason, .. }) => {
                    tracing::warn!(
                        "SSH dropped during {phase} ({reason}); resuming at byte {} (a \
                         connection silent for {} s counts as lost: {})",
                        self.offset,
                        self.deadlines.unresponsive.as_secs(),
                        deadlines::UNRESPONSIVE
                    );
                    self.session = None;
                }
                Err(e) => return Err(e),
            }
        }
        for _ in 0..50 {
            let out = self
                .exec(&format!("{RUNNER_PATH} status {}", shell_quote(phase)))
                .await?;
            let text = out.stdout_text();
            if let Ok(status) = text.trim().parse::<i32>() {
                return Ok(status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(SshError::Lost {
            addr: self.target.addr,
            reason: format!("phase {phase} ended without an exit status within 5 s"),
        })
    }

    /// The guest's own copy of the run log, chunk by chunk as it arrives.
    pub async fn copy_guest_log(&mut self, out: impl FnMut(&[u8])) -> Result<(), SshError> {
        self.copy_file(GUEST_LOG, out).await
    }

    /// When each line of the run log was printed (guest uptime seconds, one per line, line N
    /// of the log being line N here), chunk by chunk.
    pub async fn copy_line_times(&mut self, out: impl FnMut(&[u8])) -> Result<(), SshError> {
        self.copy_file(GUEST_TIMES, out).await
    }

    async fn copy_file(&mut self, path: &str, mut out: impl FnMut(&[u8])) -> Result<(), SshError> {
        let cmd = format!("cat {path} 2>/dev/null || true");
        self.session()
            .await?
            .exec_streaming(&cmd, None, &mut out, |_| {})
            .await?;
        Ok(())
    }

    /// When the given lines of the run log were printed (guest uptime seconds); `None` for a
    /// line with no time yet. Reads only those lines' times.
    pub async fn line_times_of(&mut self, lines: &[u32]) -> Result<Vec<Option<f64>>, SshError> {
        if lines.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: Vec<String> = lines.iter().map(|l| format!("NR=={l}")).collect();
        let cmd = format!(
            "awk '{} {{ print NR, $1 }}' {GUEST_TIMES} 2>/dev/null",
            wanted.join("||")
        );
        let out = self.exec(&cmd).await?;
        let found: std::collections::HashMap<u32, f64> = out
            .stdout_text()
            .lines()
            .filter_map(|l| {
                let (n, t) = l.split_once(' ')?;
                Some((n.parse().ok()?, t.trim().parse().ok()?))
            })
            .collect();
        Ok(lines.iter().map(|l| found.get(l).copied()).collect())
    }

    /// Reads the guest's uptime and pairs it with the host's clock at the middle of the round
    /// trip; the pairing is off by at most half of it.
    pub async fn guest_clock(&mut self) -> Result<GuestClock, SshError> {
        let sent = Instant::now();
        let out = self.exec("cat /proc/uptime").await?;
        let back = Instant::now();
        let uptime = out
            .stdout_text()
            .split_whitespace()
            .next()
            .and_then(|t| t.parse::<f64>().ok())
            .ok_or_else(|| SshError::Lost {
                addr: self.target.addr,
                reason: format!("/proc/uptime read {:?}", out.stdout_text()),
            })?;
        let half = (back - sent) / 2;
        Ok(GuestClock {
            host: sent + half,
            uptime,
            error: half,
        })
    }

    pub async fn close(mut self) {
        if let Some(s) = self.session.take() {
            s.close().await;
        }
    }

    /// Drops the connection (the next call reconnects); after a reboot, the run log starts
    /// anew on the new root.
    pub fn reset_after_reboot(&mut self) {
        self.session = None;
        self.offset = 0;
        self.rebooting = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_follow_says_the_status_last_on_stderr_or_not_at_all() {
        assert_eq!(follow_status(b"nixtest-status: 143\n"), Some(143));
        assert_eq!(
            follow_status(b"tail: warning\nnixtest-status: 0\n"),
            Some(0)
        );
        assert_eq!(follow_status(b"tail: cannot open\n"), None);
        assert_eq!(follow_status(b"nixtest-status: running\n"), None);
        assert_eq!(follow_status(b""), None);
    }

    #[test]
    fn any_guest_clock_value_is_a_time_or_none_never_a_panic() {
        let clock = GuestClock {
            host: Instant::now(),
            uptime: 100.0,
            error: Duration::ZERO,
        };
        assert!(clock.to_host(101.5).is_some());
        assert!(clock.to_host(99.0).is_some());
        for t in [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e300,
            -1e300,
            f64::MAX,
        ] {
            assert!(clock.to_host(t).is_none(), "{t}");
        }
        let broken = GuestClock {
            uptime: f64::NAN,
            ..clock
        };
        assert!(broken.to_host(1.0).is_none());
    }
}
