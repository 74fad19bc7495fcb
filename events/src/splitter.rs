//! Cuts a byte stream into the lines a terminal would show.

/// Lines longer than this are cut (bytes), with a note on the event.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

/// One complete line, as the terminal would have shown it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    /// The bytes of the line, without its terminator, after carriage-return redraws.
    pub bytes: &'a [u8],
    /// How many bytes were dropped because the line was over the cap.
    pub truncated: usize,
}

/// Splits bytes into lines across arbitrary chunk boundaries.
///
/// `\n` ends a line; `\r\n` too. A bare `\r` means the tool redrew the line (progress bars), so
/// only what follows the last bare `\r` is kept. A line over `max_line` bytes keeps its first
/// `max_line` bytes and counts the rest in [`Line::truncated`].
#[derive(Debug)]
pub struct LineSplitter {
    /// The visible part of the unfinished line: never holds a `\r`.
    buf: Vec<u8>,
    max_line: usize,
    /// Bytes of the unfinished line dropped over the cap.
    dropped: usize,
    /// The last chunk ended in `\r`: either half of `\r\n`, or a redraw.
    pending_cr: bool,
}

impl Default for LineSplitter {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_LINE)
    }
}

impl LineSplitter {
    pub fn new(max_line: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_line: max_line.max(1),
            dropped: 0,
            pending_cr: false,
        }
    }

    /// Feeds a chunk and calls `emit` for every line it completes.
    pub fn push(&mut self, mut chunk: &[u8], mut emit: impl FnMut(Line<'_>)) {
        while let Some(nl) = memchr::memchr(b'\n', chunk) {
            let (head, rest) = chunk.split_at(nl);
            chunk = &rest[1..];
            if self.buf.is_empty() && self.dropped == 0 && !self.pending_cr {
                // Fast path: the whole line is inside this chunk, no copy needed.
                let (bytes, truncated) = redraw_and_cap(head, self.max_line);
                emit(Line { bytes, truncated });
            } else {
                self.append(head);
                // A `\r` right before the `\n` was a CRLF, not a redraw.
                self.pending_cr = false;
                let buf = std::mem::take(&mut self.buf);
                let dropped = std::mem::take(&mut self.dropped);
                let (bytes, truncated) = redraw_and_cap(&buf, self.max_line);
                emit(Line {
                    bytes,
                    truncated: truncated + dropped,
                });
                self.buf = buf;
                self.buf.clear();
            }
        }
        self.append(chunk);
    }

    /// Whether a line begun in an earlier chunk is still open.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty() || self.dropped > 0 || self.pending_cr
    }

    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// The stream ended: the last line, if it had no terminator.
    pub fn finish(&mut self) -> Option<Line<'_>> {
        self.pending_cr = false;
        if self.buf.is_empty() && self.dropped == 0 {
            return None;
        }
        let dropped = std::mem::take(&mut self.dropped);
        let (bytes, truncated) = redraw_and_cap(&self.buf, self.max_line);
        Some(Line {
            bytes,
            truncated: truncated + dropped,
        })
    }

    fn append(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if std::mem::take(&mut self.pending_cr) {
            // More text after a `\r`: the tool redrew the line.
            self.buf.clear();
            self.dropped = 0;
        }
        let (bytes, trailing_cr) = match bytes.strip_suffix(b"\r") {
            Some(b) => (b, true),
            None => (bytes, false),
        };
        let visible = match memchr::memrchr(b'\r', bytes) {
            Some(cr) => {
                self.buf.clear();
                self.dropped = 0;
                &bytes[cr + 1..]
            }
            None => bytes,
        };
        // Only the first `max_line` bytes are ever shown; the rest is counted.
        let room = self.max_line.saturating_sub(self.buf.len());
        let take = room.min(visible.len());
        self.buf.extend_from_slice(&visible[..take]);
        self.dropped += visible.len() - take;
        self.pending_cr = trailing_cr;
    }
}

fn redraw_and_cap(line: &[u8], max: usize) -> (&[u8], usize) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let shown = match memchr::memrchr(b'\r', line) {
        Some(cr) => &line[cr + 1..],
        None => line,
    };
    if shown.len() > max {
        (&shown[..max], shown.len() - max)
    } else {
        (shown, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], max: usize) -> Vec<(String, usize)> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, |l| {
                out.push((String::from_utf8_lossy(l.bytes).into_owned(), l.truncated))
            });
        }
        if let Some(l) = s.finish() {
            out.push((String::from_utf8_lossy(l.bytes).into_owned(), l.truncated));
        }
        out
    }

    #[test]
    fn splits_across_chunks() {
        let got = split(&[b"ab", b"c\nde", b"f\n", b"g"], 100);
        assert_eq!(
            got,
            vec![("abc".into(), 0), ("def".into(), 0), ("g".into(), 0)]
        );
    }

    #[test]
    fn crlf_is_a_line_end_even_split() {
        let got = split(&[b"one\r", b"\ntwo\r\n"], 100);
        assert_eq!(got, vec![("one".into(), 0), ("two".into(), 0)]);
    }

    #[test]
    fn carriage_return_redraw_keeps_last_state() {
        let got = split(
            &[b"copying 10%\rcopying 50%\r", b"copying 100%\ndone\n"],
            100,
        );
        assert_eq!(got, vec![("copying 100%".into(), 0), ("done".into(), 0)]);
    }

    #[test]
    fn long_line_is_cut_and_counted() {
        let long = vec![b'x'; 250];
        let got = split(&[&long[..100], &long[100..], b"\nnext\n"], 64);
        assert_eq!(got[0].0.len(), 64);
        assert_eq!(got[0].1, 186);
        assert_eq!(got[1], ("next".into(), 0));
    }

    #[test]
    fn long_line_in_one_chunk() {
        let mut data = vec![b'y'; 100];
        data.push(b'\n');
        let got = split(&[&data], 10);
        assert_eq!(got, vec![("y".repeat(10), 90)]);
    }

    #[test]
    fn redraw_of_an_overlong_line_split_across_chunks() {
        let long = "z".repeat(40);
        let whole = split(&[format!("{long}\rabc\n").as_bytes()], 16);
        let chunked = split(&[format!("{long}\r").as_bytes(), b"abc\n"], 16);
        assert_eq!(whole, vec![("abc".into(), 0)]);
        assert_eq!(chunked, whole);
    }

    #[test]
    fn empty_lines_are_lines() {
        let got = split(&[b"\n\na\n"], 10);
        assert_eq!(got.len(), 3);
    }
}
