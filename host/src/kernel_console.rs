//! The guest kernel's messages as its serial console prints them, read on the host from the
//! VM's console log (libvirt writes it as the bytes come).
//!
//! The guest runner also streams the kernel log, but through guest processes (a reader of
//! `/dev/kmsg`, the log file, `tail`, `sshd`): when memory runs out those are paged out, and
//! the OOM killer's own words reach the host a few hundred milliseconds after the kernel
//! printed them. The console path needs nothing of the guest's userspace. The kernel prints
//! to its console the messages up to the console log level (errors at least, on NixOS's
//! `loglevel=4` and with `quiet`), the OOM killer's "Out of memory: Killed process" among them.

use regex::bytes::Regex;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often the log is looked at: well under the 100 ms a finding may take.
const POLL: Duration = Duration::from_millis(10);
/// A console line longer than this is not a kernel message (those are at most 1 KiB).
const MAX_LINE: usize = 4096;
/// Console lines waiting for the host to take them, and what is read of the log per look:
/// a guest that floods its console costs the host this much, no more. A line dropped for
/// want of room is no loss: the runner's copy of it comes in the stream.
const QUEUED: usize = 1024;
const READ_PER_LOOK: u64 = 1 << 20;

/// `[   12.345678] text`: a kernel message with its time (printk's format).
static KERNEL_LINE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\[ *([0-9]+)\.([0-9]{6})\] (.*)$").expect("valid"));

/// The time a kernel line (as dmesg shows it: `[   12.345678] text`) gives, in seconds of
/// uptime; `None` for any other line (a tool's `[ 42] step` is not the kernel's clock).
pub fn kernel_seconds(line: &str) -> Option<f64> {
    let caps = KERNEL_LINE.captures(line.as_bytes())?;
    format!(
        "{}.{}",
        std::str::from_utf8(&caps[1]).ok()?,
        std::str::from_utf8(&caps[2]).ok()?
    )
    .parse()
    .ok()
}

/// `line` (one console line, without its end) as the runner writes a kernel line
/// (`::KERNEL::[%12.6f] text`), or `None` when it is no kernel message.
pub fn as_runner_line(line: &[u8]) -> Option<Vec<u8>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let caps = KERNEL_LINE.captures(line)?;
    let time = format!(
        "{}.{}",
        std::str::from_utf8(&caps[1]).ok()?,
        std::str::from_utf8(&caps[2]).ok()?
    );
    let mut out = format!("::KERNEL::[{time:>12}] ").into_bytes();
    // `/dev/kmsg` (the runner's copy) escapes these bytes so; the console prints them as
    // they are. Escaped alike, the two copies of a line are the same bytes.
    for &b in &caps[3] {
        if !(b' '..0x7f).contains(&b) || b == b'\\' {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        } else {
            out.push(b);
        }
    }
    Some(out)
}

/// Kernel lines printed to the console from now on, as runner lines, until dropped.
pub struct KernelConsole {
    pub lines: mpsc::Receiver<Vec<u8>>,
    task: tokio::task::JoinHandle<()>,
}

impl KernelConsole {
    /// Follows `log` from its current end. A log that cannot be read gives no lines (the
    /// runner's copy of the kernel log still comes, later).
    pub fn follow(log: &Path) -> Self {
        let (tx, lines) = mpsc::channel(QUEUED);
        let path = log.to_path_buf();
        let start = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let task = tokio::spawn(tail(path, start, tx));
        KernelConsole { lines, task }
    }
}

impl Drop for KernelConsole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tail(path: PathBuf, mut offset: u64, tx: mpsc::Sender<Vec<u8>>) {
    let mut partial: Vec<u8> = Vec::new();
    // Inside a line over the cap: dropped up to its end, so no piece of it passes for a line.
    let mut overlong = false;
    let mut buf = vec![0u8; 64 * 1024];
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !tx.is_closed() {
        tick.tick().await;
        let Ok(mut file) = std::fs::File::open(&path) else {
            continue;
        };
        // A log made anew (the VM started again) is read from its start.
        if file.metadata().is_ok_and(|m| m.len() < offset) {
            offset = 0;
            partial.clear();
            overlong = false;
        }
        if file.seek(SeekFrom::Start(offset)).is_err() {
            continue;
        }
        let mut file = file.take(READ_PER_LOOK);
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            offset += n as u64;
            let mut rest = &buf[..n];
            while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
                let (head, tail) = (&rest[..nl], &rest[nl + 1..]);
                rest = tail;
                if std::mem::take(&mut overlong) || partial.len() + head.len() > MAX_LINE {
                    partial.clear();
                    continue;
                }
                partial.extend_from_slice(head);
                if let Some(line) = as_runner_line(&partial) {
                    match tx.try_send(line) {
                        Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                    }
                }
                partial.clear();
            }
            if overlong || partial.len() + rest.len() > MAX_LINE {
                overlong = true;
                partial.clear();
            } else {
                partial.extend_from_slice(rest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_read_as_the_runner_writes_kernel_lines() {
        let got = |l: &str| as_runner_line(l.as_bytes()).map(|v| String::from_utf8(v).unwrap());
        assert_eq!(
            got("[  123.456789] Out of memory: Killed process 42 (nix-build)\r").as_deref(),
            Some("::KERNEL::[  123.456789] Out of memory: Killed process 42 (nix-build)")
        );
        // Escaped as /dev/kmsg escapes them.
        assert_eq!(
            got("[    1.000000] a\tb\\c \u{e9}").as_deref(),
            Some(r"::KERNEL::[    1.000000] a\x09b\x5cc \xc3\xa9")
        );
        // The runner's `%12.6f` of the same time, past 99999 s too.
        assert_eq!(
            got("[123456.000001] x").as_deref(),
            Some("::KERNEL::[123456.000001] x")
        );
        assert_eq!(
            got("[    0.000000] Linux version").as_deref(),
            Some("::KERNEL::[    0.000000] Linux version")
        );
        for no in [
            "nixtest-guest: ready",
            "[  OK  ] Started x",
            "[ 12.34] short",
            "x [  1.000000] y",
        ] {
            assert_eq!(got(no), None, "{no}");
        }
    }

    #[test]
    fn only_the_kernels_own_stamp_is_read_as_its_time() {
        assert_eq!(
            kernel_seconds("[  123.456789] Out of memory"),
            Some(123.456789)
        );
        for no in ["[ 42] step", "[1/3] error", "no stamp", "[  1.5] short"] {
            assert_eq!(kernel_seconds(no), None, "{no}");
        }
    }

    #[tokio::test]
    async fn follows_the_log_from_where_it_ended_and_across_half_written_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        std::fs::write(&log, "[    1.000000] before the phase\n").unwrap();
        let mut console = KernelConsole::follow(&log);
        let append = |s: &str| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            f.write_all(s.as_bytes()).unwrap();
        };
        append("login: \r\n[    2.500000] Out of memory: Kil");
        tokio::time::sleep(POLL * 3).await;
        append("led process 7 (cc1)\r\n[  OK  ] Started\n");
        let line = tokio::time::timeout(Duration::from_secs(5), console.lines.recv())
            .await
            .expect("a line within 5 s")
            .unwrap();
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "::KERNEL::[    2.500000] Out of memory: Killed process 7 (cc1)"
        );
        append("[    3.000000] next\n");
        let line = tokio::time::timeout(Duration::from_secs(5), console.lines.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "::KERNEL::[    3.000000] next"
        );
        assert!(console.lines.try_recv().is_err(), "nothing else");
    }

    #[tokio::test]
    async fn a_flooded_console_costs_a_bounded_queue_and_no_piece_of_a_long_line_passes() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        std::fs::write(&log, "").unwrap();
        let mut console = KernelConsole::follow(&log);
        // A line over the cap that holds what looks like a kernel line past the cap.
        let mut text = "x".repeat(MAX_LINE + 10);
        text.push_str("[    1.000000] fake\n");
        for i in 0..QUEUED * 3 {
            text.push_str(&format!("[    2.{i:06}] flood\n"));
        }
        std::fs::write(&log, &text).unwrap();
        let mut got = Vec::new();
        while let Ok(Some(l)) =
            tokio::time::timeout(Duration::from_millis(300), console.lines.recv()).await
        {
            got.push(String::from_utf8(l).unwrap());
            // The host is slow: the queue fills meanwhile.
            if got.len() == 1 {
                tokio::time::sleep(POLL * 10).await;
            }
        }
        assert!(
            got.iter().all(|l| l.ends_with("] flood")),
            "{:?}",
            &got[..3]
        );
        assert!(
            got.len() >= QUEUED && got.len() < QUEUED * 3,
            "{}",
            got.len()
        );
        assert_eq!(got[0], "::KERNEL::[    2.000000] flood");
    }
}
