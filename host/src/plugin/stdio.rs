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

#[derive(Debug, Default)]
struct Buffer {
    kept: Vec<u8>,
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
        let room = self.cap.saturating_sub(b.kept.len());
        let keep = room.min(bytes.len());
        b.kept.extend_from_slice(&bytes[..keep]);
        b.dropped += (bytes.len() - keep) as u64;
    }

    /// What the plugin printed (lossy UTF-8), with a note when some was dropped.
    pub fn text(&self) -> String {
        let b = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut s = String::from_utf8_lossy(&b.kept).into_owned();
        if b.dropped > 0 {
            s.push_str(&format!("\n[{} more bytes dropped]", b.dropped));
        }
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
    fn keeps_the_first_bytes_and_counts_the_rest() {
        let c = Capture::new(8);
        c.take_bytes(b"hello ");
        c.take_bytes(b"world, again");
        assert_eq!(c.text(), "hello wo\n[10 more bytes dropped]");
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
