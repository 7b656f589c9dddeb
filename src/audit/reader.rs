//! The capture reader: lines of bytes into batches of record bodies, streaming.
//!
//! A line is the bytes up to a line feed or the end of the input; a carriage return at its
//! end is not part of the record (CRLF files); a line that is empty once that CR is gone
//! is skipped and counted. Invalid UTF-8 and NUL bytes are the record's business, not the
//! reader's: every other line is a record body, byte for byte.
//!
//! Memory is bounded by the limits, never by the input: the reader holds at most one line
//! of up to `--max-body-bytes` (plus its CR) and one read chunk. A line longer than that
//! cannot be a record that is parsed (it is `body-too-large`), so it is never held: the
//! reader keeps its first bytes (what the record's fallback line shows), counts its length
//! and its lossily decoded length as the bytes go by, and skips to the next line feed.

use std::io::{self, Read};

use memchr::memchr;

/// Bytes asked of the input per read.
const READ_CHUNK: usize = 64 << 10;

/// A run of records from one input, handed to a worker whole.
#[derive(Debug, Default)]
pub struct Batch {
    /// The record bodies (and the heads of unheld ones), back to back.
    pub data: Vec<u8>,
    /// One per record, in input order.
    pub entries: Vec<Entry>,
    /// Empty lines skipped while filling this batch.
    pub empty_lines: u64,
    /// Input bytes read while filling this batch (line ends included).
    pub bytes: u64,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.empty_lines == 0 && self.bytes == 0
    }

    /// The body of a held record, or the head of an unheld one.
    pub fn bytes_of(&self, entry: &Entry) -> &[u8] {
        match entry.kind {
            EntryKind::Body { start, end } | EntryKind::Unheld { start, end, .. } => {
                &self.data[start..end]
            }
        }
    }
}

/// One record of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its line number in its input, from 1.
    pub line: u64,
    pub kind: EntryKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// The whole body is `data[start..end]`.
    Body { start: usize, end: usize },
    /// A line over the body limit: `data[start..end]` is its head; `len` and `decoded_len`
    /// are the whole body's length, raw and decoded lossily.
    Unheld {
        start: usize,
        end: usize,
        len: usize,
        decoded_len: usize,
    },
}

/// Splits one input into record bodies.
#[derive(Debug)]
pub struct Reader<R> {
    input: R,
    /// Read-ahead; `buf[start..filled]` is unconsumed.
    buf: Vec<u8>,
    start: usize,
    filled: usize,
    /// Bytes after `start` already known to hold no line feed.
    scanned: usize,
    eof: bool,
    /// The number of the line that starts at `start`.
    line: u64,
    /// `--max-body-bytes`: a longer body is never held.
    max_body: usize,
    /// How many first bytes of an unheld body to keep.
    head_len: usize,
}

impl<R: Read> Reader<R> {
    /// A reader of `input` for bodies up to `max_body` bytes, keeping the first `head_len`
    /// bytes of longer ones.
    pub fn new(input: R, max_body: usize, head_len: usize) -> Reader<R> {
        Reader {
            input,
            buf: Vec::new(),
            start: 0,
            filled: 0,
            scanned: 0,
            eof: false,
            line: 1,
            max_body,
            head_len,
        }
    }

    /// The number of the line being read.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// True once the input is exhausted and every line has been handed out.
    pub fn is_done(&self) -> bool {
        self.eof && self.start == self.filled
    }

    /// Adds lines to `batch` until it holds `max_bytes` of bodies or `max_records`
    /// records, or the input ends.
    pub fn fill(
        &mut self,
        batch: &mut Batch,
        max_bytes: usize,
        max_records: usize,
    ) -> io::Result<()> {
        loop {
            if batch.data.len() >= max_bytes || batch.entries.len() >= max_records {
                return Ok(());
            }
            let from = self.start + self.scanned;
            if let Some(i) = memchr(b'\n', &self.buf[from..self.filled]) {
                let end = from + i;
                self.emit(batch, self.start, end);
                self.start = end + 1;
                self.scanned = 0;
                continue;
            }
            self.scanned = self.filled - self.start;
            if self.scanned > self.max_body.saturating_add(1) {
                // Over the limit even without a CR: never a parsed record.
                self.skip_line(batch)?;
                continue;
            }
            if self.eof {
                if self.start < self.filled {
                    self.emit(batch, self.start, self.filled);
                    self.start = self.filled;
                    self.scanned = 0;
                }
                return Ok(());
            }
            self.read_more(batch)?;
        }
    }

    /// Hands out the held line `buf[start..end]` (its line feed not included).
    fn emit(&mut self, batch: &mut Batch, start: usize, end: usize) {
        let body = strip_cr(&self.buf[start..end]);
        if body.is_empty() {
            batch.empty_lines += 1;
        } else {
            let at = batch.data.len();
            batch.data.extend_from_slice(body);
            batch.entries.push(Entry {
                line: self.line,
                kind: EntryKind::Body {
                    start: at,
                    end: batch.data.len(),
                },
            });
        }
        self.line += 1;
    }

    /// Reads one chunk after `filled`, first moving the unconsumed bytes to the front, and
    /// growing the buffer (checked first) only when a line being held needs it.
    fn read_more(&mut self, batch: &mut Batch) -> io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.filled, 0);
            self.filled -= self.start;
            self.start = 0;
        }
        let want = self.filled + READ_CHUNK;
        if self.buf.len() < want {
            self.buf
                .try_reserve_exact(want - self.buf.len())
                .map_err(|e| {
                    io::Error::other(format!("cannot hold a line of {want} bytes: {e}"))
                })?;
            self.buf.resize(want, 0);
        }
        let n = loop {
            match self.input.read(&mut self.buf[self.filled..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            self.eof = true;
        }
        self.filled += n;
        batch.bytes += n as u64;
        Ok(())
    }

    /// The line at `start` is over the limit: keep its head, count the rest as it goes by,
    /// and stop after its line feed (or at the end of the input).
    fn skip_line(&mut self, batch: &mut Batch) -> io::Result<()> {
        let head_start = batch.data.len();
        let mut count = Count::default();
        loop {
            let pending = &self.buf[self.start..self.filled];
            let found = memchr(b'\n', pending);
            if found.is_some() || self.eof {
                let end = found.unwrap_or(pending.len());
                let seg = strip_cr(&pending[..end]);
                count.take(seg, true, &mut batch.data, head_start + self.head_len);
                self.start += found.map_or(end, |i| i + 1);
                break;
            }
            // A CR at the end may be the CR of a CRLF: hold it until the next byte is seen.
            let mut end = pending.len();
            if pending.last() == Some(&b'\r') {
                end -= 1;
            }
            let used = count.take(
                &pending[..end],
                false,
                &mut batch.data,
                head_start + self.head_len,
            );
            self.start += used;
            self.read_more(batch)?;
        }
        self.scanned = 0;
        batch.entries.push(Entry {
            line: self.line,
            kind: EntryKind::Unheld {
                start: head_start,
                end: batch.data.len(),
                len: count.len,
                decoded_len: count.decoded,
            },
        });
        self.line += 1;
        Ok(())
    }
}

/// The line without the CR of a CRLF.
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The running lengths of an unheld body.
#[derive(Debug, Default)]
struct Count {
    /// Raw bytes so far.
    len: usize,
    /// Bytes once decoded lossily: each maximal invalid sequence is a 3-byte U+FFFD.
    decoded: usize,
}

impl Count {
    /// Counts `seg` and copies what fits of it into `head` (up to `head_end` bytes).
    /// Unless `last`, an incomplete UTF-8 sequence at its end is left for the next
    /// segment; returns how many bytes were counted.
    fn take(&mut self, seg: &[u8], last: bool, head: &mut Vec<u8>, head_end: usize) -> usize {
        let mut rest = seg;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    self.decoded += s.len();
                    rest = &[];
                    break;
                }
                Err(e) => {
                    self.decoded += e.valid_up_to();
                    match e.error_len() {
                        Some(n) => {
                            self.decoded += '\u{FFFD}'.len_utf8();
                            rest = &rest[e.valid_up_to() + n..];
                        }
                        None if last => {
                            self.decoded += '\u{FFFD}'.len_utf8();
                            rest = &[];
                            break;
                        }
                        None => {
                            rest = &rest[e.valid_up_to()..];
                            break;
                        }
                    }
                }
            }
        }
        let used = seg.len() - rest.len();
        if head.len() < head_end {
            let n = used.min(head_end - head.len());
            head.extend_from_slice(&seg[..n]);
        }
        self.len += used;
        used
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// Every record of `input` read `chunk` bytes at a time, as (line, first `head_len`
    /// bytes, length, decoded length): a long line may be held whole or not, depending on
    /// where the reads cut it, and both must tell the pipeline the same.
    #[allow(clippy::type_complexity)]
    fn read_all(
        input: &[u8],
        max_body: usize,
        head_len: usize,
        chunk: usize,
    ) -> (Vec<(u64, Vec<u8>, usize, usize)>, u64, u64) {
        struct Trickle<'a>(&'a [u8], usize);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(buf.len()).min(self.1);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut r = Reader::new(Trickle(input, chunk), max_body, head_len);
        let mut out = Vec::new();
        let (mut empty, mut bytes) = (0, 0);
        while !r.is_done() {
            let mut b = Batch::default();
            r.fill(&mut b, 64, 3).unwrap_or_else(|e| panic!("{e}"));
            for e in &b.entries {
                let data = b.bytes_of(e);
                let (len, decoded) = match e.kind {
                    EntryKind::Unheld {
                        len, decoded_len, ..
                    } => (len, decoded_len),
                    EntryKind::Body { .. } => (data.len(), String::from_utf8_lossy(data).len()),
                };
                let head =
                    data[..data.len().min(if len > max_body { head_len } else { len })].to_vec();
                out.push((e.line, head, len, decoded));
            }
            empty += b.empty_lines;
            bytes += b.bytes;
        }
        (out, empty, bytes)
    }

    #[test]
    fn lines_crlf_empty_lines_and_a_missing_final_newline() {
        let input = b"a\r\n\r\n\nb\xff\n  \nlast";
        for chunk in [1, 2, 3, 7, 1 << 20] {
            let (recs, empty, bytes) = read_all(input, 100, 10, chunk);
            let got: Vec<(u64, &[u8])> =
                recs.iter().map(|(l, b, _, _)| (*l, b.as_slice())).collect();
            assert_eq!(
                got,
                vec![(1, &b"a"[..]), (4, b"b\xff"), (5, b"  "), (6, b"last")],
                "chunk {chunk}"
            );
            assert_eq!(empty, 2);
            assert_eq!(bytes, input.len() as u64);
        }
    }

    #[test]
    fn a_line_over_the_limit_is_counted_the_same_held_or_not() {
        // 10-byte limit; the long line has a split 3-byte character, an invalid byte, a
        // truncated sequence at its end and a CRLF.
        let long = b"0123456789\xe2\x82\xacxyz\xffq\xe2\x82";
        let mut input = long.to_vec();
        input.extend_from_slice(b"\r\nok\n");
        let decoded = String::from_utf8_lossy(long).len();
        for chunk in [1, 2, 5, 1 << 20] {
            let (recs, _, _) = read_all(&input, 10, 4, chunk);
            assert_eq!(
                recs,
                vec![
                    (1, b"0123".to_vec(), long.len(), decoded),
                    (2, b"ok".to_vec(), 2, 2)
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn a_line_longer_than_the_limit_and_a_read_is_never_held() {
        let mut input = vec![b'x'; 3 * READ_CHUNK];
        input.extend_from_slice(b"\r\nok");
        let mut r = Reader::new(&input[..], 100, 4);
        let mut b = Batch::default();
        r.fill(&mut b, 1 << 20, 100)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(r.is_done());
        assert!(
            r.buf.len() <= 100 + 1 + 2 * READ_CHUNK,
            "held {} bytes",
            r.buf.len()
        );
        assert_eq!(
            b.entries[0].kind,
            EntryKind::Unheld {
                start: 0,
                end: 4,
                len: 3 * READ_CHUNK,
                decoded_len: 3 * READ_CHUNK
            }
        );
        assert_eq!(b.bytes_of(&b.entries[1]), b"ok");
    }
}
