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
    buf: Vec<u8>,
    max_line: usize,
    dropped: usize,
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
        }
    }

    /// Feeds a chunk and calls `emit` for every line it completes.
    pub fn push(&mut self, mut chunk: &[u8], mut emit: impl FnMut(Line<'_>)) {
        while let Some(nl) = memchr::memchr(b'\n', chunk) {
            let (head, rest) = chunk.split_at(nl);
            chunk = &rest[1..];
            if self.buf.is_empty() && self.dropped == 0 {
                // Fast path: the whole line is inside this chunk, no copy needed.
                let (bytes, truncated) = self.finish_line(head);
                emit(Line { bytes, truncated });
            } else {
                self.append(head);
                let buf = std::mem::take(&mut self.buf);
                let dropped = std::mem::take(&mut self.dropped);
                let (bytes, truncated) = self.finish_line(&buf);
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

    /// The stream ended: the last line, if it had no terminator.
    pub fn finish(&mut self) -> Option<Line<'_>> {
        if self.buf.is_empty() && self.dropped == 0 {
            return None;
        }
        let dropped = std::mem::take(&mut self.dropped);
        let max = self.max_line;
        let (bytes, truncated) = redraw_and_cap(&self.buf, max);
        Some(Line {
            bytes,
            truncated: truncated + dropped,
        })
    }

    fn finish_line<'a>(&self, line: &'a [u8]) -> (&'a [u8], usize) {
        redraw_and_cap(line, self.max_line)
    }

    fn append(&mut self, bytes: &[u8]) {
        // Keep a partial line bounded: a redraw can only shorten what is shown, but bytes past
        // the cap after the last `\r` are never shown, so they are only counted.
        if let Some(cr) = memchr::memrchr(b'\r', bytes) {
            if cr + 1 < bytes.len() {
                self.buf.clear();
                self.dropped = 0;
                self.append_capped(&bytes[cr + 1..]);
            } else {
                // A trailing `\r` may be the first half of `\r\n`: keep it for now.
                self.append_capped(bytes);
            }
        } else {
            self.append_capped(bytes);
        }
    }

    fn append_capped(&mut self, bytes: &[u8]) {
        // Leave room for one trailing `\r` beyond the cap so `\r\n` is still recognised.
        let room = (self.max_line + 1).saturating_sub(self.buf.len());
        let take = room.min(bytes.len());
        self.buf.extend_from_slice(&bytes[..take]);
        self.dropped += bytes.len() - take;
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
    fn empty_lines_are_lines() {
        let got = split(&[b"\n\na\n"], 10);
        assert_eq!(got.len(), 3);
    }
}
