//! A plugin's stdout and stderr: a bounded buffer per instance that never blocks and never
//! reaches the host's terminal. What it kept is shown with `-v` and in the report's plugin
//! faults (a panic message arrives here).

use bytes::Bytes;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// How much a write may offer at once; any amount is accepted, only `cap` bytes are kept.
const PERMIT: usize = 64 << 10;

/// The last bytes are kept apart from the first ones, so what a plugin printed just before
/// it failed (a panic's message) survives whatever it printed before.
const TAIL: usize = 4 << 10;

#[derive(Debug, Default)]
struct Buffer {
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    dropped: u64,
}

/// Both streams of one instance share one buffer: the order of what the plugin printed stays.
#[derive(Debug, Clone)]
pub struct Capture {
    buffer: Arc<Mutex<Buffer>>,
    cap: usize,
}

impl Capture {
    pub fn new(cap: usize) -> Self {
        Capture {
            buffer: Arc::default(),
            cap,
        }
    }

    fn take_bytes(&self, bytes: &[u8]) {
        let mut b = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        let tail_cap = TAIL.min(self.cap / 2);
        let head_cap = self.cap - tail_cap;
        let room = head_cap.saturating_sub(b.head.len());
        let (first, rest) = bytes.split_at(room.min(bytes.len()));
        b.head.extend_from_slice(first);
        // Past the head, the newest bytes replace the oldest in the tail.
        let rest = &rest[rest.len().saturating_sub(tail_cap)..];
        let skipped = (bytes.len() - first.len() - rest.len()) as u64;
        let overflow = (b.tail.len() + rest.len()).saturating_sub(tail_cap);
        b.tail.drain(..overflow);
        b.tail.extend(rest);
        b.dropped += skipped + overflow as u64;
    }

    /// What the plugin printed (lossy UTF-8): the first bytes, a note of how many were
    /// dropped, the last bytes.
    pub fn text(&self) -> String {
        let b = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut s = String::from_utf8_lossy(&b.head).into_owned();
        if b.dropped > 0 {
            s.push_str(&format!("\n[{} bytes dropped]\n", b.dropped));
        }
        let tail: Vec<u8> = b.tail.iter().copied().collect();
        s.push_str(&String::from_utf8_lossy(&tail));
        s
    }

    /// The last non-empty line printed, for a fault's cause.
    pub fn last_line(&self) -> Option<String> {
        let text = self.text();
        text.lines()
            .rev()
            .find(|l| {
                !l.trim().is_empty() && !l.starts_with("[") && !l.contains("more bytes dropped")
            })
            .map(str::to_string)
    }

    /// The text since a panic began (`panicked at ...` and the message after it), if any.
    pub fn panic_message(&self) -> Option<String> {
        let text = self.text();
        let at = text.rfind("panicked at")?;
        let msg: Vec<&str> = text[at..]
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("note:"))
            .take(4)
            .collect();
        Some(msg.join(" "))
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.take_bytes(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(PERMIT)
    }
}

#[async_trait::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.take_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_and_last_bytes_and_counts_the_rest() {
        let c = Capture::new(8);
        c.take_bytes(b"hello ");
        c.take_bytes(b"world, again");
        assert_eq!(c.text(), "hell\n[10 bytes dropped]\ngain");
        let c = Capture::new(8);
        c.take_bytes(b"abc");
        assert_eq!(c.text(), "abc");
    }

    #[test]
    fn a_panic_after_a_flood_is_still_found() {
        let c = Capture::new(16 << 10);
        for i in 0..10_000 {
            c.take_bytes(format!("noise {i}\n").as_bytes());
        }
        c.take_bytes(b"thread '<unnamed>' panicked at src/lib.rs:9:1:\nthe cause\n");
        assert_eq!(
            c.panic_message().unwrap(),
            "panicked at src/lib.rs:9:1: the cause"
        );
        assert!(c.text().len() <= (16 << 10) + 64);
    }

    #[test]
    fn finds_the_panic_message() {
        let c = Capture::new(1024);
        c.take_bytes(b"starting\n\nthread '<unnamed>' panicked at src/lib.rs:3:5:\nboom\nnote: run with RUST_BACKTRACE\n");
        assert_eq!(
            c.panic_message().unwrap(),
            "panicked at src/lib.rs:3:5: boom"
        );
    }
}
