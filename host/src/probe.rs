//! The guest end of the `probe` capability: a healer that declared it may run read-only
//! commands in the run's VM (the sandbox checks each one against the allow-list first, and
//! what runs is rebuilt from the checked words). Output is read up to a cap and no further. Plugin calls are synchronous
//! and happen inside the run's async task, so the commands go to a thread of their own with
//! its own SSH session and runtime, and the call waits on the answer with a deadline.

use crate::plugin::bindings::current::nixtest::plugin::probe::ProbeOutput;
use crate::plugin::{GuestProbe, ProbeCommand};
use crate::ssh::{SshSession, SshTarget};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

/// How long one probe may take, connection included.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// What a probe returns of each stream, at most.
const OUTPUT_CAP: usize = 64 << 10;

type Reply = Result<ProbeOutput, String>;

pub struct SshProbe {
    requests: Mutex<mpsc::Sender<(String, mpsc::Sender<Reply>)>>,
}

impl SshProbe {
    /// Starts the probe thread; it connects on the first probe and ends with the `SshProbe`.
    pub fn start(target: SshTarget) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<(String, mpsc::Sender<Reply>)>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("nixtest-probe".into())
            .spawn(move || {
                let mut session: Option<SshSession> = None;
                for (command, reply) in rx {
                    let answer = rt.block_on(async {
                        tokio::time::timeout(PROBE_TIMEOUT, run(&target, &mut session, &command))
                            .await
                            .unwrap_or_else(|_| {
                                session = None;
                                Err(format!("no answer within {PROBE_TIMEOUT:?}"))
                            })
                    });
                    let _ = reply.send(answer);
                }
                if let Some(s) = session {
                    rt.block_on(s.close());
                }
            })?;
        Ok(SshProbe {
            requests: Mutex::new(tx),
        })
    }
}

async fn run(target: &SshTarget, session: &mut Option<SshSession>, command: &str) -> Reply {
    if session.is_none() {
        *session = Some(
            SshSession::connect(target, PROBE_TIMEOUT)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let s = session.as_mut().expect("just connected");
    match s.exec_capped(command, OUTPUT_CAP).await {
        Ok((status, out)) => Ok(ProbeOutput {
            // A command cut at the cap has no status of its own.
            status: status.map_or(-1, |s| s as i32),
            stdout: text(&out.stdout, status.is_none()),
            stderr: text(&out.stderr, status.is_none()),
        }),
        Err(e) => {
            *session = None;
            Err(e.to_string())
        }
    }
}

fn text(bytes: &[u8], cut: bool) -> String {
    let mut s = String::from_utf8_lossy(bytes).into_owned();
    if cut && bytes.len() >= OUTPUT_CAP {
        s.push_str("\n[nixtest: output cut at 64 KiB]");
    }
    s
}

impl GuestProbe for SshProbe {
    fn run(&self, command: &ProbeCommand) -> Result<ProbeOutput, String> {
        let (tx, rx) = mpsc::channel();
        // The guest runs the checked words, quoted, under a time limit of its own.
        let shell = command.shell(PROBE_TIMEOUT.as_secs().saturating_sub(1).max(1));
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send((shell, tx))
            .map_err(|_| "the probe thread has ended".to_string())?;
        rx.recv_timeout(PROBE_TIMEOUT + Duration::from_secs(1))
            .map_err(|_| format!("no answer within {PROBE_TIMEOUT:?}"))?
    }
}
