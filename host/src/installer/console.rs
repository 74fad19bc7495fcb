//! Getting into an installer that nobody prepared: its serial console, through libvirt.
//!
//! The NixOS installer logs in user `nixos` on its consoles by itself (ttyS0 too when the
//! kernel's console is there), with passwordless sudo, and runs sshd, which accepts a key in
//! `/root/.ssh/authorized_keys` (nixos/modules/profiles/installation-device.nix). So nixtest
//! waits for that shell, installs its own public key for root through sudo, makes sure sshd
//! runs, and goes on over SSH. It never sets a password. Everything the console shows is kept
//! in a transcript, which is what an error shows when the console never gets that far.

use regex::Regex;
use std::io::Write;
use std::sync::LazyLock;
use std::time::{Duration, Instant};
use thiserror::Error;

/// A console: bytes in, bytes out, never blocking.
pub trait ConsoleIo {
    /// What arrived since the last call (empty: nothing yet).
    fn read_now(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;
    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()>;
}

#[derive(Debug, Error)]
pub enum ConsoleError {
    #[error(
        "the installer's serial console showed no shell within {waited:?} (the deadline \
         `deadlines.boot`, NIXTEST_BOOT_TIMEOUT); is the ISO an installer that logs in on \
         ttyS0? Last lines seen on the console:\n{seen}"
    )]
    NoShell { waited: Duration, seen: String },
    #[error(
        "installing nixtest's key through the console failed (sudo or sshd, status {status}); \
         the console showed:\n{seen}"
    )]
    KeyRefused { status: String, seen: String },
    #[error("the console closed (the VM stopped?); last lines seen:\n{seen}")]
    Closed { seen: String },
    #[error("the serial console: {0}")]
    Io(#[from] std::io::Error),
}

/// What happened on the console, for the report.
#[derive(Debug, Clone, Default)]
pub struct LoginTimes {
    /// From the start of the dialog to the first shell prompt.
    pub shell: Duration,
    /// To the key installed and sshd checked.
    pub key: Duration,
}

static ANSI: LazyLock<Regex> = LazyLock::new(|| {
    // CSI and OSC sequences, and lone escapes: what a prompt is dressed in.
    Regex::new(
        r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][A-Za-z0-9]|\x1b[=>]",
    )
    .unwrap()
});

/// The console's text so far, as a person would read it: escapes removed, CR folded.
struct Screen {
    text: String,
    /// Bytes of the text already looked at for the end marker.
    scanned: usize,
}

impl Screen {
    fn push(&mut self, bytes: &[u8]) {
        let raw = String::from_utf8_lossy(bytes);
        let clean = ANSI.replace_all(&raw, "");
        self.text.push_str(&clean.replace('\r', ""));
        // Bounded: only the tail matters for prompts and markers.
        const KEEP: usize = 64 << 10;
        if self.text.len() > 2 * KEEP {
            let mut cut = self.text.len() - KEEP;
            while !self.text.is_char_boundary(cut) {
                cut += 1;
            }
            self.text.drain(..cut);
            self.scanned = self.scanned.saturating_sub(cut);
        }
    }

    /// The last line, unfinished: where a prompt stands.
    fn last_line(&self) -> &str {
        self.text.rsplit('\n').next().unwrap_or("")
    }

    fn at_prompt(&self) -> bool {
        let l = self.last_line().trim_end();
        l.ends_with('$') || l.ends_with('#')
    }

    fn at_login(&self) -> bool {
        self.last_line().trim_end().ends_with("login:")
    }

    fn tail(&self, lines: usize) -> String {
        let v: Vec<&str> = self.text.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }

    /// The last lines, each made safe for a terminal: what an error shows of the console.
    fn seen(&self, lines: usize) -> String {
        self.tail(lines)
            .lines()
            .map(|l| crate::term::clip(l, 200))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Drives the console until nixtest's key is in root's authorized_keys and sshd runs.
/// Every byte the console sends is written to `transcript`.
pub fn install_key(
    io: &mut dyn ConsoleIo,
    transcript: &mut dyn Write,
    public_key: &str,
    deadline: Duration,
) -> Result<LoginTimes, ConsoleError> {
    let key = public_key.trim();
    // The key goes into a shell line: only the characters a public key line has.
    assert!(
        key.chars()
            .all(|c| c.is_ascii_alphanumeric() || " +/=@._-".contains(c)),
        "nixtest's own public key"
    );
    let start = Instant::now();
    let mut screen = Screen {
        text: String::new(),
        scanned: 0,
    };
    let mut buf = vec![0u8; 16 << 10];
    let mut last_output = Instant::now();
    let mut last_nudge = Instant::now();
    let mut typed_login = false;
    let mut times = LoginTimes::default();
    let nonce = format!(
        "{:08x}",
        std::process::id() ^ (start.elapsed().as_nanos() as u32)
    );
    // The marker is printed by the shell ($((…)) expanded), so the echo of the typed line
    // never matches it.
    let done = Regex::new(&format!(r"NIXTEST-KEY-42-{nonce}:(\d+)")).unwrap();
    let mut sent_at: Option<Instant> = None;
    // A guest may print without end while we wait: the transcript keeps the first 16 MiB.
    const TRANSCRIPT_CAP: usize = 16 << 20;
    let mut kept = 0usize;
    loop {
        let n = match io.read_now(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                transcript.flush()?;
                return Err(ConsoleError::Closed {
                    seen: screen.seen(15),
                });
            }
            Err(e) => return Err(e.into()),
        };
        if n > 0 {
            let room = TRANSCRIPT_CAP.saturating_sub(kept).min(n);
            transcript.write_all(&buf[..room])?;
            if kept < TRANSCRIPT_CAP && kept + n >= TRANSCRIPT_CAP {
                transcript.write_all(b"\n[nixtest: transcript cut at 16 MiB]\n")?;
            }
            kept += n;
            screen.push(&buf[..n]);
            last_output = Instant::now();
        }
        if let Some(sent) = sent_at {
            if let Some(c) = done.captures(&screen.text[screen.scanned.min(screen.text.len())..]) {
                let status = c[1].to_string();
                if status != "0" {
                    return Err(ConsoleError::KeyRefused {
                        status,
                        seen: screen.seen(20),
                    });
                }
                times.key = start.elapsed();
                transcript.flush()?;
                return Ok(times);
            }
            // A prompt that took the line but printed no marker (it was not a shell after
            // all, or the line was lost while the system was still starting): again.
            if sent.elapsed() > Duration::from_secs(30) {
                sent_at = None;
            }
        } else if n == 0 && last_output.elapsed() > Duration::from_millis(400) {
            if screen.at_prompt() {
                if times.shell.is_zero() {
                    times.shell = start.elapsed();
                }
                screen.scanned = screen.text.len();
                let line = format!(
                    "sudo sh -c 'umask 077; mkdir -p /root/.ssh && printf \"%s\\n\" \"{key}\" >> /root/.ssh/authorized_keys && \
                     {{ systemctl start sshd.service 2>/dev/null || pgrep -x sshd >/dev/null || \"$(command -v sshd || echo /usr/sbin/sshd)\"; }}'; \
                     echo NIXTEST-KEY-$((6*7))-{nonce}:$?\n"
                );
                io.write_all(line.as_bytes())?;
                sent_at = Some(Instant::now());
            } else if screen.at_login() && !typed_login {
                // A getty without autologin: the installer's `nixos` has an empty password.
                io.write_all(b"nixos\n")?;
                typed_login = true;
            } else if last_nudge.elapsed() > Duration::from_secs(5)
                && last_output.elapsed() > Duration::from_secs(3)
            {
                // A quiet console may be a prompt printed before we attached: ask again.
                io.write_all(b"\n")?;
                last_nudge = Instant::now();
            }
        }
        if start.elapsed() > deadline {
            transcript.flush()?;
            return Err(ConsoleError::NoShell {
                waited: deadline,
                seen: screen.seen(15),
            });
        }
        if n == 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A domain's serial console as a libvirt stream (works on remote URIs too). A blocking
/// stream read on a thread of its own: a non-blocking one would need libvirt's event loop
/// running to receive anything.
pub struct VirtConsole {
    stream: virt::stream::Stream,
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    pending: Vec<u8>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// The stream's pointer, for the reader thread; the stream outlives the thread (it is
/// aborted, then the thread joined, before the stream is freed).
struct StreamPtr(virt::sys::virStreamPtr);
unsafe impl Send for StreamPtr {}

impl VirtConsole {
    /// Opens the domain's first console, taking it over from any other reader.
    pub fn open(conn: &virt::connect::Connect, dom: &virt::domain::Domain) -> Result<Self, String> {
        let stream = virt::stream::Stream::new(conn, 0).map_err(|e| e.message().to_string())?;
        dom.open_console(None, &stream, virt::sys::VIR_DOMAIN_CONSOLE_FORCE)
            .map_err(|e| e.message().to_string())?;
        let (tx, rx) = std::sync::mpsc::channel();
        let ptr = StreamPtr(stream.as_ptr());
        let reader = std::thread::Builder::new()
            .name("console".into())
            .spawn(move || {
                let ptr = ptr;
                let mut buf = vec![0u8; 16 << 10];
                loop {
                    // 0: the end; negative: aborted or broken.
                    let n = unsafe {
                        virt::sys::virStreamRecv(
                            ptr.0,
                            buf.as_mut_ptr() as *mut libc::c_char,
                            buf.len(),
                        )
                    };
                    if n <= 0 || tx.send(buf[..n as usize].to_vec()).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(VirtConsole {
            stream,
            rx,
            pending: Vec::new(),
            reader: Some(reader),
        })
    }
}

impl ConsoleIo for VirtConsole {
    fn read_now(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pending.is_empty() {
            match self.rx.try_recv() {
                Ok(chunk) => self.pending = chunk,
                Err(std::sync::mpsc::TryRecvError::Empty) => return Ok(0),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the console stream ended (the VM stopped?)",
                    ));
                }
            }
        }
        let n = self.pending.len().min(buf.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }

    fn write_all(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let n = unsafe {
                virt::sys::virStreamSend(
                    self.stream.as_ptr(),
                    data.as_ptr() as *const libc::c_char,
                    data.len(),
                )
            };
            if n <= 0 {
                return Err(std::io::Error::other(
                    "the console does not take input (the VM stopped?)",
                ));
            }
            data = &data[n as usize..];
        }
        Ok(())
    }
}

impl Drop for VirtConsole {
    fn drop(&mut self) {
        let _ = unsafe { virt::sys::virStreamAbort(self.stream.as_ptr()) };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A console that plays a script: what it shows, and how it answers a typed line.
    struct Scripted {
        out: VecDeque<Vec<u8>>,
        typed: Vec<String>,
        answer: fn(&str) -> Option<String>,
    }

    impl ConsoleIo for Scripted {
        fn read_now(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self.out.pop_front() {
                Some(chunk) => {
                    buf[..chunk.len()].copy_from_slice(&chunk);
                    Ok(chunk.len())
                }
                None => Ok(0),
            }
        }
        fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
            let line = String::from_utf8_lossy(data).into_owned();
            // A tty echoes what is typed.
            self.out.push_back(data.to_vec());
            if let Some(a) = (self.answer)(&line) {
                self.out.push_back(a.into_bytes());
            }
            self.typed.push(line);
            Ok(())
        }
    }

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0 nixtest@host";

    fn shell_answer(line: &str) -> Option<String> {
        let nonce = line.split("$((6*7))-").nth(1)?.split(':').next()?;
        Some(format!(
            "NIXTEST-KEY-42-{nonce}:0\n\x1b[1;32m[nixos@nixos:~]$\x1b[0m "
        ))
    }

    #[test]
    fn an_autologin_shell_gets_the_key_and_sshd() {
        let mut c = Scripted {
            out: VecDeque::from(vec![
                b"[    0.000000] Linux version 6.6\r\n".to_vec(),
                b"<<< Welcome to NixOS 24.05 (x86_64) - ttyS0 >>>\r\n".to_vec(),
                b"\x1b[1;32m[nixos@nixos:~]$\x1b[0m ".to_vec(),
            ]),
            typed: vec![],
            answer: shell_answer,
        };
        let mut transcript = Vec::new();
        let t = install_key(&mut c, &mut transcript, KEY, Duration::from_secs(20)).unwrap();
        assert!(t.shell <= t.key);
        assert_eq!(c.typed.len(), 1, "{:?}", c.typed);
        let line = &c.typed[0];
        assert!(line.starts_with("sudo sh -c '"), "{line}");
        assert!(line.contains(KEY) && line.contains("/root/.ssh/authorized_keys"));
        assert!(line.contains("systemctl start sshd.service"));
        assert!(!line.contains("passwd"), "nixtest never sets a password");
        let transcript = String::from_utf8(transcript).unwrap();
        assert!(transcript.contains("Welcome to NixOS"));
    }

    #[test]
    fn a_login_prompt_gets_the_passwordless_user_once() {
        let mut c = Scripted {
            out: VecDeque::from(vec![b"\r\nnixos login: ".to_vec()]),
            typed: vec![],
            answer: |line| {
                if line == "nixos\n" {
                    Some("\r\n[nixos@nixos:~]$ ".into())
                } else {
                    shell_answer(line)
                }
            },
        };
        install_key(&mut c, &mut Vec::new(), KEY, Duration::from_secs(20)).unwrap();
        assert_eq!(c.typed[0], "nixos\n");
        assert_eq!(c.typed.len(), 2);
    }

    #[test]
    fn no_shell_ends_with_what_was_seen() {
        let mut c = Scripted {
            out: VecDeque::from(vec![
                b"Kernel panic - not syncing: VFS: Unable to mount root fs\r\n".to_vec(),
            ]),
            typed: vec![],
            answer: |_| None,
        };
        let e = install_key(&mut c, &mut Vec::new(), KEY, Duration::from_millis(1500)).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, ConsoleError::NoShell { .. }));
        assert!(text.contains("Unable to mount root fs"), "{text}");
        assert!(text.contains("NIXTEST_BOOT_TIMEOUT"), "{text}");
    }

    #[test]
    fn a_failing_sudo_is_reported() {
        let mut c = Scripted {
            out: VecDeque::from(vec![b"$ ".to_vec()]),
            typed: vec![],
            answer: |line| {
                let nonce = line.split("$((6*7))-").nth(1)?.split(':').next()?;
                Some(format!(
                    "sudo: a password is required\nNIXTEST-KEY-42-{nonce}:1\n$ "
                ))
            },
        };
        let e = install_key(&mut c, &mut Vec::new(), KEY, Duration::from_secs(10)).unwrap_err();
        assert!(matches!(e, ConsoleError::KeyRefused { .. }), "{e}");
        assert!(e.to_string().contains("a password is required"));
    }
}
