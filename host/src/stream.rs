//! The stream runner: puts the guest-side runner in the VM, runs a phase detached from the SSH
//! session, and streams what it prints as it is printed. The guest keeps the whole output in
//! `/var/log/nixtest/run.log`; when SSH drops, the runner reconnects and follows again from
//! the last byte it received, so nothing is lost or doubled. Knows nothing of markers.

use crate::ssh::{ExecOutput, SshError, SshSession, SshTarget, shell_quote};
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
/// How long a lost connection may take to come back before the run gives up.
const RECONNECT_DEADLINE: Duration = Duration::from_secs(90);

pub struct StreamRunner {
    target: SshTarget,
    session: Option<SshSession>,
    /// Bytes of the guest's run log received so far.
    offset: u64,
    pub reconnects: u32,
    /// Names each phase start and each exactly-once command, so the guest runs it once even
    /// when the host asks again after a lost connection.
    next_id: u64,
}

impl StreamRunner {
    /// Waits for the guest's SSH and puts the runner in place.
    pub async fn connect(target: SshTarget, deadline: Duration) -> Result<Self, SshError> {
        let mut session = SshSession::wait_ready(&target, deadline).await?;
        session
            .upload(RUNNER_PATH, RUNNER.as_bytes(), 0o755)
            .await?;
        Ok(StreamRunner {
            target,
            session: Some(session),
            offset: 0,
            reconnects: 0,
            next_id: 1,
        })
    }

    async fn session(&mut self) -> Result<&mut SshSession, SshError> {
        if self.session.is_none() {
            self.reconnects += 1;
            tracing::info!("reconnecting to {}", self.target.addr);
            let s = SshSession::wait_ready(&self.target, RECONNECT_DEADLINE).await?;
            self.session = Some(s);
        }
        Ok(self.session.as_mut().expect("just set"))
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
        self.exec(&format!("{RUNNER_PATH} once {id} {}", shell_quote(command)))
            .await
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

    /// Runs one phase and feeds every chunk of its output to `on_chunk` as it arrives.
    /// Returns the phase's exit status.
    pub async fn run_phase(
        &mut self,
        phase: &str,
        command: &str,
        mut on_chunk: impl FnMut(&[u8]),
    ) -> Result<i32, SshError> {
        // Started at most once, whatever happens to the connection (see `exec_once`).
        let start = format!(
            "{RUNNER_PATH} start {} {} {}",
            self.take_id(),
            shell_quote(phase),
            shell_quote(command)
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
        loop {
            let follow = format!("{RUNNER_PATH} follow {}", self.offset);
            let offset = &mut self.offset;
            let session = match self.session.as_mut() {
                Some(s) => s,
                None => {
                    self.reconnects += 1;
                    let s = SshSession::wait_ready(&self.target, RECONNECT_DEADLINE).await?;
                    self.session.insert(s)
                }
            };
            let result = session
                .exec_streaming(
                    &follow,
                    None,
                    |d| {
                        *offset += d.len() as u64;
                        on_chunk(d);
                    },
                    |_| {},
                )
                .await;
            match result {
                Ok(_) => break,
                Err(SshError::Lost { reason, .. }) => {
                    tracing::warn!(
                        "SSH dropped during {phase} ({reason}); resuming at byte {}",
                        self.offset
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
            reason: format!("phase {phase} ended without an exit status"),
        })
    }

    /// The guest's own copy of the run log.
    pub async fn guest_log(&mut self) -> Result<Vec<u8>, SshError> {
        Ok(self.exec(&format!("cat {GUEST_LOG}")).await?.stdout)
    }

    /// When each line of the run log was printed, in guest uptime seconds (line N of the log is
    /// entry N-1). Lines still on their way may have no time yet.
    pub async fn line_times(&mut self) -> Result<Vec<f64>, SshError> {
        let out = self.exec(&format!("cat {GUEST_TIMES} 2>/dev/null")).await?;
        Ok(out
            .stdout_text()
            .lines()
            .map(|l| l.trim().parse().unwrap_or(f64::NAN))
            .collect())
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
