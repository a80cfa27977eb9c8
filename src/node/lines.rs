//! Splitting the input stream into batches of whole lines.
//!
//! The reader never waits for more input than has arrived: each `read`
//! returns what the pipe holds, the complete lines in it go out as one batch
//! at once, and only the unfinished last line is kept for the next read. So a
//! client that sends one line and waits gets it processed immediately, and a
//! client that pipelines gets large batches for free.
//!
//! A line longer than `max_line_bytes` is never held whole: once the pending
//! partial line exceeds the limit it is dropped and the rest of it is skipped
//! up to its newline. Complete lines over the limit that arrive within one
//! read are dropped by [`Lines`] when the batch is split.

use std::io::{self, ErrorKind, Read};

/// Bytes asked of each `read`.
pub const READ_CHUNK_BYTES: usize = 256 * 1024;

/// Reads `input` to its end, calling `sink` with each batch of complete
/// lines (each ending in `\n`, except possibly the very last line of the
/// input). `sink` returns `false` to stop early. `skipped` is told the size of
/// each over-long line dropped while still incomplete.
pub fn read_batches(
    mut input: impl Read,
    max_line_bytes: usize,
    mut sink: impl FnMut(Vec<u8>) -> bool,
    mut skipped: impl FnMut(usize),
) -> io::Result<()> {
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    // The unfinished last line, carried over to the next read.
    let mut pending: Vec<u8> = Vec::new();
    // Bytes of an over-long line dropped so far, while skipping it.
    let mut skipping: Option<usize> = None;
    loop {
        let n = match input.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            if let Some(dropped) = skipping {
                skipped(dropped);
            } else if !pending.is_empty() {
                sink(pending);
            }
            return Ok(());
        }
        let mut data = &chunk[..n];
        if let Some(dropped) = skipping {
            match crate::swar::find(data, b'\n') {
                Some(p) => {
                    skipped(dropped + p);
                    skipping = None;
                    data = &data[p + 1..];
                }
                None => {
                    skipping = Some(dropped + n);
                    continue;
                }
            }
        }
        match data.iter().rposition(|&b| b == b'\n') {
            Some(p) => {
                // Hand over the pending bytes plus every complete line; the
                // batch's one allocation is sized by what arrived.
                let mut batch = std::mem::take(&mut pending);
                batch.extend_from_slice(&data[..=p]);
                pending.extend_from_slice(&data[p + 1..]);
                if !sink(batch) {
                    return Ok(());
                }
            }
            None => pending.extend_from_slice(data),
        }
        if pending.len() > max_line_bytes {
            skipping = Some(pending.len());
            pending = Vec::new();
        }
    }
}

/// The lines of a batch, without their `\n` (and without a `\r` before it).
pub struct Lines<'a> {
    rest: &'a [u8],
}

impl<'a> Lines<'a> {
    /// Iterates over the lines of `batch`.
    pub fn new(batch: &'a [u8]) -> Lines<'a> {
        Lines { rest: batch }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let (line, rest) = match crate::swar::find(self.rest, b'\n') {
            Some(p) => (&self.rest[..p], &self.rest[p + 1..]),
            None => (self.rest, &[][..]),
        };
        self.rest = rest;
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that returns the given pieces one `read` at a time.
    struct Pieces(Vec<Vec<u8>>);

    impl Read for Pieces {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Ok(0);
            }
            let piece = self.0.remove(0);
            assert!(piece.len() <= out.len());
            out[..piece.len()].copy_from_slice(&piece);
            Ok(piece.len())
        }
    }

    fn batches(pieces: &[&str], max: usize) -> (Vec<String>, Vec<usize>) {
        let input = Pieces(pieces.iter().map(|p| p.as_bytes().to_vec()).collect());
        let (mut got, mut skips) = (Vec::new(), Vec::new());
        read_batches(
            input,
            max,
            |b| {
                got.push(String::from_utf8(b).unwrap());
                true
            },
            |n| skips.push(n),
        )
        .unwrap();
        (got, skips)
    }

    #[test]
    fn each_read_sends_its_complete_lines_at_once() {
        let (got, _) = batches(&["a\nb", "c\nd\n", "e"], 100);
        assert_eq!(got, ["a\n", "bc\nd\n", "e"]);
    }

    #[test]
    fn an_over_long_partial_line_is_skipped_to_its_newline() {
        let (got, skips) = batches(&["ok\n0123456789", "0123456789", "abc\nnext\n"], 8);
        assert_eq!(got, ["ok\n", "next\n"]);
        assert_eq!(skips, [23]);
    }

    #[test]
    fn an_over_long_line_at_end_of_input_is_reported() {
        let (got, skips) = batches(&["0123456789"], 4);
        assert!(got.is_empty());
        assert_eq!(skips, [10]);
    }

    #[test]
    fn lines_strip_newlines_and_carriage_returns() {
        let lines: Vec<&[u8]> = Lines::new(b"a\r\n\nb").collect();
        assert_eq!(lines, [&b"a"[..], b"", b"b"]);
    }
}
