//! SSH to a guest over russh: connect with nixtest's own key, run a command and get its
//! output and exit status, stream a command's output, upload a file. Knows nothing of VMs or
//! markers.

use russh::client;
use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};
use russh::{Channel, ChannelMsg};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::io::AsyncWriteExt;

#[derive(Debug, Error)]
pub enum SshError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error(
        "{addr} refused nixtest's key for {user}: the VM was set up with another key (another \
         NIXTEST_DATA_DIR or user); run `nixtest setup` to set it up for this one"
    )]
    Auth { addr: SocketAddr, user: String },
    #[error("the SSH connection to {addr} was lost: {reason}")]
    Lost { addr: SocketAddr, reason: String },
    #[error("no SSH answer from {addr} within {waited:?}; the guest's console log may say why")]
    NotReady { addr: SocketAddr, waited: Duration },
    #[error("nixtest's SSH key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    /// A wait that reached its deadline: what was awaited, how long, and which setting
    /// changes it.
    #[error("{what} did not happen within {waited:?}; {setting} sets this deadline")]
    Deadline {
        what: String,
        waited: Duration,
        setting: &'static str,
    },
}

/// Where and as whom.
#[derive(Clone)]
pub struct SshTarget {
    pub addr: SocketAddr,
    pub user: String,
    pub key: Arc<PrivateKey>,
    /// How long an open connection may go unanswered before it counts as lost
    /// (`Deadlines::unresponsive`).
    pub unresponsive: Duration,
}

/// How often an open connection is asked whether the other side is still there.
const KEEPALIVE: Duration = Duration::from_secs(5);

/// What a command left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub status: u32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

struct Client;

impl client::Handler for Client {
    type Error = russh::Error;

    // Guests are made fresh from nixtest's own image on loopback; their host keys change with
    // every image and there is nothing to pin them to.
    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// nixtest's key pair: `DIR/id_ed25519` (made on first use) and its public line.
pub fn load_or_create_key(dir: &Path) -> Result<(PrivateKey, String), SshError> {
    let path = dir.join("id_ed25519");
    let err = |reason: String| SshError::Key {
        path: path.clone(),
        reason,
    };
    let key = if path.exists() {
        russh::keys::load_secret_key(&path, None).map_err(|e| err(e.to_string()))?
    } else {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let mut seed = [0u8; 32];
        getrandom(&mut seed).map_err(|e| err(e.to_string()))?;
        let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
        let text = key
            .to_openssh(LineEnding::LF)
            .map_err(|e| err(e.to_string()))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| err(e.to_string()))?;
        std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(|e| err(e.to_string()))?;
        tmp.persist(&path).map_err(|e| err(e.to_string()))?;
        key
    };
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| err(e.to_string()))?;
    Ok((key, format!("{public} nixtest\n")))
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// What a side command may print that is kept (each stream).
const SIDE_OUTPUT_CAP: usize = 1 << 20;
/// What a streamed command's standard error may hold that is kept (it is for short notes).
const STREAMED_STDERR_CAP: usize = 64 << 10;

/// What [`SshSession::exec_streaming_with`] hands its caller: the command's output, or an
/// item from the source read beside it.
pub enum Incoming<'a> {
    Stdout(&'a [u8]),
    Beside(&'a [u8]),
}

/// How [`SshSession::exec_streaming_with`] ended.
#[derive(Debug)]
pub struct Streamed {
    pub status: u32,
    /// The side command's output, when it ran and succeeded.
    pub side: Option<ExecOutput>,
    /// The command's standard error (its first 64 KiB).
    pub stderr: Vec<u8>,
}

/// Appends what of `data` fits under `cap` bytes; true when some of it did not.
fn keep_capped(buf: &mut Vec<u8>, data: &[u8], cap: usize) -> bool {
    let room = cap.saturating_sub(buf.len());
    buf.extend_from_slice(&data[..room.min(data.len())]);
    data.len() > room
}

/// A command run beside another on the same session: its output, or why it has none.
async fn run_side(
    handle: &client::Handle<Client>,
    command: String,
) -> (String, Result<ExecOutput, String>) {
    let result = async {
        let mut ch = handle
            .channel_open_session()
            .await
            .map_err(|e| e.to_string())?;
        ch.exec(true, command.as_str())
            .await
            .map_err(|e| e.to_string())?;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut status = None;
        while let Some(msg) = ch.wait().await {
            let (buf, data) = match msg {
                ChannelMsg::Data { ref data } => (&mut stdout, data),
                ChannelMsg::ExtendedData { ref data, ext: 1 } => (&mut stderr, data),
                ChannelMsg::ExitStatus { exit_status } => {
                    status = Some(exit_status);
                    continue;
                }
                _ => continue,
            };
            keep_capped(buf, data, SIDE_OUTPUT_CAP);
        }
        let status = status.ok_or_else(|| "no exit status".to_string())?;
        Ok(ExecOutput {
            status,
            stdout,
            stderr,
        })
    }
    .await;
    (command, result)
}

/// The side command's output when it succeeded; a warning otherwise.
fn side_output((command, result): (String, Result<ExecOutput, String>)) -> Option<ExecOutput> {
    match result {
        Ok(out) if out.status == 0 => Some(out),
        Ok(out) => {
            tracing::warn!("{command:?} exited with {}", out.status);
            None
        }
        Err(e) => {
            tracing::warn!("{command:?} failed: {e}");
            None
        }
    }
}

/// An authenticated session.
pub struct SshSession {
    handle: client::Handle<Client>,
    addr: SocketAddr,
}

impl SshSession {
    pub async fn connect(target: &SshTarget, timeout: Duration) -> Result<Self, SshError> {
        let addr = target.addr;
        let config = Arc::new(client::Config {
            inactivity_timeout: None,
            keepalive_interval: Some(KEEPALIVE),
            // A closed connection is seen at once; these are for one that goes silent.
            keepalive_max: (target.unresponsive.as_secs() / KEEPALIVE.as_secs()).max(1) as usize,
            ..Default::default()
        });
        let connect = client::connect(config, addr, Client);
        let mut handle = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| SshError::Connect {
                addr,
                reason: format!("no answer within {timeout:?}"),
            })?
            .map_err(|e| SshError::Connect {
                addr,
                reason: e.to_string(),
            })?;
        let hash = handle
            .best_supported_rsa_hash()
            .await
            .map_err(|e| SshError::Connect {
                addr,
                reason: e.to_string(),
            })?
            .flatten();
        let auth = handle
            .authenticate_publickey(
                &target.user,
                PrivateKeyWithHashAlg::new(target.key.clone(), hash),
            )
            .await
            .map_err(|e| SshError::Connect {
                addr,
                reason: e.to_string(),
            })?;
        if !auth.success() {
            return Err(SshError::Auth {
                addr,
                user: target.user.clone(),
            });
        }
        Ok(SshSession { handle, addr })
    }

    /// Retries until the guest's sshd answers and accepts the key, up to `deadline`.
    pub async fn wait_ready(target: &SshTarget, deadline: Duration) -> Result<Self, SshError> {
        let start = Instant::now();
        loop {
            match Self::connect(target, Duration::from_secs(5)).await {
                Ok(s) => return Ok(s),
                Err(e @ SshError::Auth { .. }) => return Err(e),
                Err(e) => {
                    if start.elapsed() >= deadline {
                        tracing::debug!("last SSH error: {e}");
                        return Err(SshError::NotReady {
                            addr: target.addr,
                            waited: deadline,
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    fn lost(&self, e: impl std::fmt::Display) -> SshError {
        SshError::Lost {
            addr: self.addr,
            reason: e.to_string(),
        }
    }

    /// A session channel running `command`.
    async fn open_exec(&mut self, command: &str) -> Result<Channel<client::Msg>, SshError> {
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| self.lost(e))?;
        channel
            .exec(true, command)
            .await
            .map_err(|e| self.lost(e))?;
        Ok(channel)
    }

    /// Runs `command` (with `stdin` fed to it) and calls `on_stdout` / `on_stderr` with each
    /// chunk as it arrives. Returns the exit status; a command killed by a signal is 128+N.
    pub async fn exec_streaming(
        &mut self,
        command: &str,
        stdin: Option<&[u8]>,
        mut on_stdout: impl FnMut(&[u8]),
        mut on_stderr: impl FnMut(&[u8]),
    ) -> Result<u32, SshError> {
        let mut channel = self.open_exec(command).await?;
        if let Some(data) = stdin {
            let mut w = channel.make_writer();
            w.write_all(data).await.map_err(|e| self.lost(e))?;
            w.shutdown().await.map_err(|e| self.lost(e))?;
            drop(w);
            channel.eof().await.map_err(|e| self.lost(e))?;
        }
        let mut status = None;
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { ref data } => on_stdout(data),
                ChannelMsg::ExtendedData { ref data, ext: 1 } => on_stderr(data),
                ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                ChannelMsg::ExitSignal { .. } => status = status.or(Some(128 + 9)),
                _ => {}
            }
        }
        status.ok_or_else(|| self.lost("the command ended without an exit status"))
    }

    /// As [`SshSession::exec_streaming`] for stdout only, where `on_stdout` may answer a chunk
    /// with a command to run beside the first one, on another channel of the same connection
    /// (the first one's output waits meanwhile, nothing is lost). Items from `beside` (the
    /// guest's console) are handed over as they come, between the command's chunks.
    pub async fn exec_streaming_with(
        &mut self,
        command: &str,
        mut beside: Option<&mut tokio::sync::mpsc::Receiver<Vec<u8>>>,
        mut on_output: impl FnMut(Incoming<'_>) -> Option<String>,
    ) -> Result<Streamed, SshError> {
        let mut channel = self.open_exec(command).await?;
        let handle = &self.handle;
        // The side command (a stop) runs while this channel is still read: waiting for it
        // here would leave this channel's messages unread, and once they fill its buffer the
        // session stops delivering anything, the side command's answer included (a phase
        // printing an error per file as it is stopped did exactly that).
        let mut side: Option<std::pin::Pin<Box<dyn std::future::Future<Output = _> + '_>>> = None;
        let mut status = None;
        let mut side_out = None;
        let mut stderr = Vec::new();
        loop {
            tokio::select! {
                msg = channel.wait() => match msg {
                    None => break,
                    Some(ChannelMsg::Data { ref data }) => {
                        if let Some(cmd) = on_output(Incoming::Stdout(data))
                            && side.is_none()
                        {
                            side = Some(Box::pin(run_side(handle, cmd)));
                        }
                    }
                    Some(ChannelMsg::ExtendedData { ref data, ext: 1 }) => {
                        keep_capped(&mut stderr, data, STREAMED_STDERR_CAP);
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status),
                    Some(ChannelMsg::ExitSignal { .. }) => status = status.or(Some(128 + 9)),
                    Some(_) => {}
                },
                done = async { side.as_mut().expect("guarded").await }, if side.is_some() => {
                    side = None;
                    side_out = side_output(done);
                }
                item = async { beside.as_mut().expect("guarded").recv().await }, if beside.is_some() => {
                    match item {
                        Some(item) => {
                            if let Some(cmd) = on_output(Incoming::Beside(&item))
                                && side.is_none()
                            {
                                side = Some(Box::pin(run_side(handle, cmd)));
                            }
                        }
                        // The source ended: the command alone is read from here on.
                        None => beside = None,
                    }
                }
            }
        }
        if let Some(s) = side {
            side_out = side_output(s.await);
        }
        let status = status.ok_or_else(|| self.lost("the command ended without an exit status"))?;
        Ok(Streamed {
            status,
            side: side_out,
            stderr,
        })
    }

    /// Runs `command`, keeping at most `cap` bytes of each stream: once either is full the
    /// channel is closed and nothing more is read. Returns the output, and `None` as the
    /// status when it was cut.
    pub async fn exec_capped(
        &mut self,
        command: &str,
        cap: usize,
    ) -> Result<(Option<u32>, ExecOutput), SshError> {
        let mut channel = self.open_exec(command).await?;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut status = None;
        let mut cut = false;
        while let Some(msg) = channel.wait().await {
            let (buf, data) = match msg {
                ChannelMsg::Data { ref data } => (&mut stdout, data),
                ChannelMsg::ExtendedData { ref data, ext: 1 } => (&mut stderr, data),
                ChannelMsg::ExitStatus { exit_status } => {
                    status = Some(exit_status);
                    continue;
                }
                ChannelMsg::ExitSignal { .. } => {
                    status = status.or(Some(128 + 9));
                    continue;
                }
                _ => continue,
            };
            if keep_capped(buf, data, cap) {
                cut = true;
                // Stop reading: the guest's side sees the channel go and the command's
                // `timeout` ends it in any case.
                let _ = channel.close().await;
                break;
            }
        }
        if !cut && status.is_none() {
            return Err(self.lost("the command ended without an exit status"));
        }
        Ok((
            if cut { None } else { status },
            ExecOutput {
                status: status.unwrap_or(u32::MAX),
                stdout,
                stderr,
            },
        ))
    }

    pub async fn exec(&mut self, command: &str) -> Result<ExecOutput, SshError> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let status = self
            .exec_streaming(
                command,
                None,
                |d| stdout.extend_from_slice(d),
                |d| stderr.extend_from_slice(d),
            )
            .await?;
        Ok(ExecOutput {
            status,
            stdout,
            stderr,
        })
    }

    /// Writes `bytes` to `path` in the guest (whole or not at all) with `mode`.
    pub async fn upload(&mut self, path: &str, bytes: &[u8], mode: u32) -> Result<(), SshError> {
        let quoted = shell_quote(path);
        let cmd = format!(
            "mkdir -p \"$(dirname {quoted})\" && cat > {quoted}.nixtest-part && chmod {mode:o} {quoted}.nixtest-part && mv {quoted}.nixtest-part {quoted}"
        );
        let mut err = Vec::new();
        let status = self
            .exec_streaming(&cmd, Some(bytes), |_| {}, |d| err.extend_from_slice(d))
            .await?;
        if status != 0 {
            return Err(self.lost(format!(
                "writing {path} failed ({status}): {}",
                String::from_utf8_lossy(&err).trim()
            )));
        }
        Ok(())
    }

    pub async fn close(self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

/// Single-quotes a word for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_made_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let (k1, p1) = load_or_create_key(dir.path()).unwrap();
        let (k2, p2) = load_or_create_key(dir.path()).unwrap();
        assert_eq!(p1, p2);
        assert!(p1.starts_with("ssh-ed25519 "));
        assert_eq!(k1.public_key(), k2.public_key());
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
