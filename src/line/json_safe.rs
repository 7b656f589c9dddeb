//! The one rule every JSON line logfence writes follows (`--output json`, `check --json`,
//! `dlq list --json`, `--log-format json`): one line for every line reader, no raw control
//! character. Besides JSON's own escapes (C0 controls, `"`, `\`), DEL, every C1 control
//! (U+0085 included), U+2028, U+2029 and the bidi controls (U+061C, U+200E, U+200F,
//! U+202A–U+202E, U+2066–U+2069) are written as `\uhhhh`, hex in lower case. JSON allows
//! them raw, but Python's `str.splitlines()`, editors and log viewers break a line at
//! U+0085, U+2028 and U+2029, and a raw U+009B or U+202E repaints or reorders a terminal.
//! Other non-ASCII text stays UTF-8.
//!
//! Two ways in, one rule: [`needs_json_escape`] and [`push_u_escape`] for the line writer
//! that builds its JSON by hand, and [`JsonSafe`] for JSON text that a serializer wrote
//! (serde_json, tracing's JSON layer).

use std::io::{self, Write};

/// Whether a JSON line writes `c` as a `\u` escape although JSON allows it raw: DEL, the C1
/// controls, U+061C, U+200E, U+200F, U+2028–U+202E and U+2066–U+2069. (The C0 controls,
/// `"` and `\` are JSON's own escapes and are not in this set.)
pub fn needs_json_escape(c: char) -> bool {
    matches!(
        u32::from(c),
        0x7f..=0x9f | 0x061c | 0x200e | 0x200f | 0x2028..=0x202e | 0x2066..=0x2069
    )
}

/// Appends `\uhhhh` for `c` (a BMP character), hex in lower case.
pub fn push_u_escape(c: char, out: &mut String) {
    let mut buf = [0u8; 6];
    out.push_str(u_escape(c, &mut buf));
}

/// `\uhhhh` for `c` (a BMP character), hex in lower case, written into `buf`.
fn u_escape(c: char, buf: &mut [u8; 6]) -> &str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let cp = u32::from(c);
    buf[0] = b'\\';
    buf[1] = b'u';
    for (i, shift) in [12, 8, 4, 0].into_iter().enumerate() {
        buf[2 + i] = HEX[((cp >> shift) & 0xf) as usize];
    }
    // All ASCII.
    std::str::from_utf8(buf).unwrap_or_default()
}

/// The UTF-8 length of a character whose first byte is `b`, if that character can be one
/// [`needs_json_escape`] picks (DEL; 0xC2: U+0080–U+00BF; 0xD8: U+0600–U+063F; 0xE2:
/// U+2000–U+2FFF); `None` for every other byte. A unit test holds this to the rule.
fn candidate_len(b: u8) -> Option<usize> {
    match b {
        0x7f => Some(1),
        0xc2 | 0xd8 => Some(2),
        0xe2 => Some(3),
        _ => None,
    }
}

/// An [`io::Write`] adapter for JSON text: it rewrites every character
/// [`needs_json_escape`] picks into its `\uhhhh` escape and passes everything else through.
/// That is valid anywhere in JSON text: such a character can only occur inside a string,
/// and there it is never part of an escape (those are ASCII).
///
/// Each `write` reaches the inner writer as one `write_all` (so a line written at once, as
/// tracing writes an event, stays one write to stderr); a character cut between two writes
/// is held back until it is whole.
#[derive(Debug)]
pub struct JsonSafe<W: Write> {
    inner: W,
    /// The first bytes of a candidate character cut off at the end of the last write.
    held: [u8; 3],
    held_len: usize,
}

impl<W: Write> JsonSafe<W> {
    pub fn new(inner: W) -> JsonSafe<W> {
        JsonSafe {
            inner,
            held: [0; 3],
            held_len: 0,
        }
    }

    /// Writes the held bytes as they are (only a caller that flushes mid-character has any).
    fn release_held(&mut self) -> io::Result<()> {
        if self.held_len > 0 {
            let n = std::mem::take(&mut self.held_len);
            self.inner.write_all(&self.held[..n])?;
        }
        Ok(())
    }
}

/// Appends one whole candidate character `ch` (its UTF-8 bytes) to `out`: escaped when the
/// rule says so, else as it is.
fn push_candidate(ch: &[u8], out: &mut Vec<u8>) {
    match std::str::from_utf8(ch).ok().and_then(|s| s.chars().next()) {
        Some(c) if needs_json_escape(c) => {
            let mut buf = [0u8; 6];
            out.extend_from_slice(u_escape(c, &mut buf).as_bytes());
        }
        _ => out.extend_from_slice(ch),
    }
}

impl<W: Write> Write for JsonSafe<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        let mut out: Vec<u8> = Vec::new();
        if self.held_len > 0 {
            let need = candidate_len(self.held[0]).unwrap_or(1);
            let take = (need - self.held_len).min(buf.len());
            self.held[self.held_len..self.held_len + take].copy_from_slice(&buf[..take]);
            self.held_len += take;
            buf = &buf[take..];
            if self.held_len < need {
                return Ok(());
            }
            let n = std::mem::take(&mut self.held_len);
            push_candidate(&self.held[..n], &mut out);
        }
        let mut done = 0;
        let mut i = 0;
        while i < buf.len() {
            let Some(len) = candidate_len(buf[i]) else {
                i += 1;
                continue;
            };
            if i + len > buf.len() {
                // Cut off: hold it back for the next write.
                out.extend_from_slice(&buf[done..i]);
                let rest = &buf[i..];
                self.held[..rest.len()].copy_from_slice(rest);
                self.held_len = rest.len();
                done = buf.len();
                break;
            }
            out.extend_from_slice(&buf[done..i]);
            push_candidate(&buf[i..i + len], &mut out);
            i += len;
            done = i;
        }
        if out.is_empty() {
            // Nothing held or escaped (the common case): no copy.
            return self.inner.write_all(&buf[done..]);
        }
        out.extend_from_slice(&buf[done..]);
        self.inner.write_all(&out)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.release_held()?;
        self.inner.flush()
    }
}

impl<W: Write> Drop for JsonSafe<W> {
    fn drop(&mut self) {
        let _ = self.release_held();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// Every character the rule escapes, in order.
    fn escaped_set() -> Vec<char> {
        (0..=0x10ffff_u32)
            .filter_map(char::from_u32)
            .filter(|&c| needs_json_escape(c))
            .collect()
    }

    fn through_adapter(pieces: &[&[u8]]) -> String {
        let mut out = Vec::new();
        {
            let mut w = JsonSafe::new(&mut out);
            for p in pieces {
                w.write_all(p).unwrap();
            }
            w.flush().unwrap();
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_rule_is_del_c1_line_separators_and_bidi_controls_exactly() {
        let mut want: Vec<u32> = (0x7f..=0x9f).collect();
        want.extend([0x061c, 0x200e, 0x200f]);
        want.extend(0x2028..=0x202e);
        want.extend(0x2066..=0x2069);
        let got: Vec<u32> = escaped_set().into_iter().map(u32::from).collect();
        assert_eq!(got, want);
        // Neighbours stay raw.
        for c in [
            '\u{7e}', '\u{a0}', '\u{61b}', '\u{61d}', '\u{200d}', '\u{2010}',
        ] {
            assert!(!needs_json_escape(c), "{c:?}");
        }
        for c in ['\u{2027}', '\u{202f}', '\u{2065}', '\u{206a}', 'é', '🚀'] {
            assert!(!needs_json_escape(c), "{c:?}");
        }
    }

    #[test]
    fn every_escaped_character_starts_with_a_candidate_byte() {
        for c in escaped_set() {
            let mut b = [0u8; 4];
            let s = c.encode_utf8(&mut b);
            assert_eq!(candidate_len(s.as_bytes()[0]), Some(s.len()), "{c:?}");
        }
    }

    #[test]
    fn escapes_are_lower_case_u_escapes() {
        let mut s = String::new();
        for c in [
            '\u{7f}', '\u{85}', '\u{9b}', '\u{61c}', '\u{200f}', '\u{202e}', '\u{2069}',
        ] {
            push_u_escape(c, &mut s);
        }
        assert_eq!(s, "\\u007f\\u0085\\u009b\\u061c\\u200f\\u202e\\u2069");
    }

    #[test]
    fn adapter_rewrites_serde_json_output_into_one_line_that_decodes_to_the_same_text() {
        let all: String = escaped_set().into_iter().collect();
        let text = format!("a{all}é🚀\u{a0}\u{2027}\n\"\\z");
        let mut map = serde_json::Map::new();
        map.insert("k".to_string(), serde_json::json!(text));
        map.insert(all.clone(), serde_json::json!([text, 1]));
        let value = serde_json::Value::Object(map);
        let mut out = Vec::new();
        serde_json::to_writer(JsonSafe::new(&mut out), &value).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert!(!line.chars().any(needs_json_escape), "{line}");
        assert!(!line.chars().any(|c| c.is_control()), "{line}");
        assert!(line.contains("\\u0085\\u0086"), "{line}");
        assert!(line.contains("\\u061c\\u200e\\u200f\\u2028"), "{line}");
        assert!(
            line.contains("é🚀\u{a0}\u{2027}"),
            "other non-ASCII stays UTF-8: {line}"
        );
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn adapter_holds_a_character_cut_between_writes() {
        let text = "x\u{85}y\u{2028}z\u{61c}\u{7f}é\u{2029}";
        let bytes = text.as_bytes();
        let want = "x\\u0085y\\u2028z\\u061c\\u007fé\\u2029";
        for cut in 0..=bytes.len() {
            for cut2 in cut..=bytes.len() {
                let got = through_adapter(&[&bytes[..cut], &bytes[cut..cut2], &bytes[cut2..]]);
                assert_eq!(got, want, "cut at {cut} and {cut2}");
            }
        }
        // One byte at a time.
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(through_adapter(&singles), want);
    }

    #[test]
    fn adapter_passes_plain_text_through_in_one_write() {
        #[derive(Default)]
        struct Writes(Vec<Vec<u8>>);
        impl Write for Writes {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.push(buf.to_vec());
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = Writes::default();
        {
            let mut safe = JsonSafe::new(&mut w);
            safe.write_all("{\"a\":\"plain é\"}\n".as_bytes()).unwrap();
            safe.write_all("{\"a\":\"x\u{2028}y\"}\n".as_bytes())
                .unwrap();
        }
        assert_eq!(
            w.0,
            vec![
                "{\"a\":\"plain é\"}\n".as_bytes().to_vec(),
                b"{\"a\":\"x\\u2028y\"}\n".to_vec()
            ]
        );
    }

    #[test]
    fn adapter_writes_a_cut_character_as_it_is_on_flush() {
        let mut out = Vec::new();
        {
            let mut w = JsonSafe::new(&mut out);
            w.write_all(&[b'a', 0xe2, 0x80]).unwrap();
            w.flush().unwrap();
        }
        assert_eq!(out, vec![b'a', 0xe2, 0x80]);
    }
}
