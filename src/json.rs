//! A bounded JSON decoder producing Python values exactly as CPython 3.11's `json.loads`
//! would (docs/record.md), which serde_json cannot: integers keep any size, `-0` is the int 0,
//! `NaN` / `Infinity` / `-Infinity` are floats, and a duplicate key keeps its first position
//! and its last value.
//!
//! Bounds, because the body comes from whoever can publish to the queue:
//! - depth: a container nested deeper than `max_depth` is [`JsonError::TooDeep`], checked on
//!   entering it. The parser keeps its own stack (no recursion), so no input can overflow the
//!   thread's stack, whatever `max_depth` is;
//! - time: one pass over the input; integers of many digits are parsed by divide and conquer
//!   (num-bigint's own decimal parse is quadratic);
//! - memory: proportional to the input. Elements of open containers wait on one shared
//!   scratch stack and each container is allocated once, at its exact size, when it closes.
//!
//! Where this knowingly differs from `json.loads` (by choice, not by accident):
//! - integers of more than 4,300 digits parse (CPython 3.11 raises `ValueError` while
//!   decoding); records want them exact and refuses them only when rendered in decimal;
//! - a leading UTF-8 BOM is skipped (as `json.loads` does for bytes, not for `str`);
//! - a lone surrogate (`"\ud800"`) cannot live in a Rust `String`: it becomes U+FFFD and
//!   [`Parsed::lone_surrogate`] is set, for the `invalid-utf8` finding.
//!
//! Error offsets are byte offsets into the text given (BOM included), not Python's
//! character offsets.

use indexmap::IndexMap;
use num_bigint::{BigInt, BigUint, Sign};

use crate::value::{Int, Value};

/// A decoded document.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    pub value: Value,
    /// Some string (anywhere in the document, keys included) held an unpaired `\uD800`–
    /// `\uDFFF` escape, now U+FFFD: the record gets an `invalid-utf8` finding.
    pub lone_surrogate: bool,
    /// [`parse_object`]'s borrowed member, when it was a string.
    pub borrowed: Option<StrValue>,
}

/// Why a text is not a document. `TooDeep` is a limit (the record is rejected); `Invalid`
/// means "not JSON" (the record is plain text).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// A container opened at byte `offset` would be at depth `limit + 1`. Reported as soon as
    /// that container is entered, so it wins over any syntax error further on.
    #[error("JSON nested deeper than {limit} (at byte {offset})")]
    TooDeep { offset: usize, limit: usize },
    /// Not JSON as `json.loads` reads it; `offset` is where reading stopped.
    #[error("invalid JSON at byte {offset}")]
    Invalid { offset: usize },
}

/// The deepest nesting [`parse`] admits whatever it is asked: a [`Value`] is a recursive
/// type, so dropping or printing one recurses once per level, and a million-deep value would
/// overflow the stack after the parser itself had survived it. CPython's own `json.loads`
/// gives up (`RecursionError`) a little below 1,000 levels.
pub const HARD_MAX_DEPTH: usize = 1000;

/// Parses `text` as `json.loads` would, refusing containers nested deeper than `max_depth`
/// (the top-level container is depth 1; `max_depth = 0` admits scalars only).
/// `max_depth` is clamped to [`HARD_MAX_DEPTH`]; the error carries the limit applied.
pub fn parse(text: &str, max_depth: usize) -> Result<Parsed, JsonError> {
    let mut p = Parser::new(text, max_depth, None);
    let value = p.document()?;
    Ok(Parsed {
        value,
        lone_surrogate: p.lone_surrogate,
        borrowed: None,
    })
}

/// Parses `text` exactly as [`parse`] does (same errors, same depth rule) but builds only
/// what a record uses: the members of a top-level object that `members` names, each in its
/// slot (no keys, no map). Any other document (an array, a scalar) and every other member
/// is checked, not built, so a body that turns out to be plain text costs no allocation
/// for its values.
pub fn parse_object(
    text: &str,
    max_depth: usize,
    members: &Members<'_>,
) -> Result<Object, JsonError> {
    let mut p = Parser::new(text, max_depth, Some(members.names));
    p.huge_int = Some(members.huge_int);
    p.borrow = members.borrow;
    p.skip_ws();
    let is_object = p.peek() == Some(b'{');
    if is_object {
        p.members = (0..members.names.len()).map(|_| None).collect();
    } else {
        p.skip = Some(0);
    }
    p.document()?;
    Ok(Object {
        is_object,
        members: std::mem::take(&mut p.members),
        lone_surrogate: p.lone_surrogate,
        borrowed: p.borrowed.take(),
    })
}

/// What [`parse_object`] built.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    /// The document is an object (else `members` is empty).
    pub is_object: bool,
    /// Per name in [`Members::names`], the member's value: the last one when the key
    /// repeats (a Python dict built left to right), `None` when absent.
    pub members: Vec<Option<Value>>,
    /// Some string that was built held an unpaired surrogate escape, now U+FFFD.
    pub lone_surrogate: bool,
    /// The member [`Members::borrow`] names, when its (last) value was a string.
    pub borrowed: Option<StrValue>,
}

/// What [`parse_object`] builds of a top-level object.
pub struct Members<'f> {
    /// The members built; the others are checked only.
    pub names: &'f [&'f str],
    /// Per kept member, the digit count above which an int literal in it is kept as an
    /// [`Int::huge_literal`] (counted, never converted); `None` for exact ints. A record's
    /// args can never render such a literal, and converting a million digits costs seconds
    /// and hundreds of MB.
    pub huge_int: &'f HugeInt,
    /// A kept member whose string value is not built but handed back in
    /// [`Parsed::borrowed`] (a record's `msg`: up to a MiB that would be copied for
    /// nothing). In its slot, such a string is an empty `Value::Str`.
    pub borrow: Option<&'f str>,
}

impl std::fmt::Debug for Members<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Members")
            .field("borrow", &self.borrow)
            .finish_non_exhaustive()
    }
}

/// The string value of the member [`Members::borrow`] names, the last one when it repeats.
#[derive(Clone, Debug, PartialEq)]
pub enum StrValue {
    /// Where the string's content lies in the text (it has no escapes: the common case).
    Span(std::ops::Range<usize>),
    /// The decoded string, when it has escapes.
    Decoded(String),
}

/// Per top-level member: the digit count above which its int literals are only counted.
pub type HugeInt = dyn Fn(&str) -> Option<usize>;

/// The scratch stacks of a parser, kept emptied on its thread for the next parse: a
/// record's values wait there until their container is built at its exact size, and
/// growing the stacks afresh for every record would cost about twice its values again.
#[derive(Default)]
struct Scratch {
    frames: Vec<Frame>,
    values: Vec<Value>,
    keys: Vec<String>,
}

/// Stacks larger than this (in elements) are freed rather than kept: the memory a thread
/// holds between records stays small (~100 KiB) whatever one record needed.
const SCRATCH_KEEP: usize = 2048;

/// Values the scratch stack has room for from the start: the args of any template the
/// default limits let through (`--max-fields` 256), twice over, so that a thread's first
/// records do not pay its growth.
const SCRATCH_START: usize = 512;

/// Open containers the scratch stack has room for from the start.
const SCRATCH_FRAMES: usize = 16;

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch {
        frames: Vec::with_capacity(SCRATCH_FRAMES),
        values: Vec::with_capacity(SCRATCH_START),
        keys: Vec::with_capacity(SCRATCH_START / 8),
    });
}

/// Sets up this thread's scratch stacks now (a process or worker thread at start-up), so
/// that their one-time cost is not charged to the first record parsed here.
pub fn warm_up() {
    let _ = SCRATCH.try_with(|_| ());
}

/// Puts this thread's scratch stacks back as a new thread has them, when a record grew or
/// dropped them: the next record then allocates exactly what it would as the first one
/// parsed here (see `Pipeline::with_isolation`). Costs nothing when they are as new.
pub fn reset_scratch() {
    let _ = SCRATCH.try_with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            if s.frames.capacity() != SCRATCH_FRAMES {
                s.frames = Vec::with_capacity(SCRATCH_FRAMES);
            }
            if s.values.capacity() != SCRATCH_START {
                s.values = Vec::with_capacity(SCRATCH_START);
            }
            if s.keys.capacity() != SCRATCH_START / 8 {
                s.keys = Vec::with_capacity(SCRATCH_START / 8);
            }
        }
    });
}

impl Drop for Parser<'_> {
    fn drop(&mut self) {
        let mut scratch = Scratch {
            frames: std::mem::take(&mut self.frames),
            values: std::mem::take(&mut self.values),
            keys: std::mem::take(&mut self.keys),
        };
        scratch.frames.clear();
        scratch.values.clear();
        scratch.keys.clear();
        if scratch.values.capacity() > SCRATCH_KEEP {
            scratch.values = Vec::new();
        }
        if scratch.keys.capacity() > SCRATCH_KEEP {
            scratch.keys = Vec::new();
        }
        if scratch.frames.capacity() > SCRATCH_KEEP {
            scratch.frames = Vec::new();
        }
        let _ = SCRATCH.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                *s = scratch;
            }
        });
    }
}

/// Python's JSON whitespace: exactly these four.
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    List,
    Dict,
}

/// An open container: its elements are `values[values_start..]` (and, for a dict, its keys
/// `keys[keys_start..]`, one per value, in order).
#[derive(Clone, Copy, Debug)]
struct Frame {
    kind: Kind,
    values_start: usize,
    keys_start: usize,
}

struct Parser<'a> {
    /// Which members of a top-level object to build, into `members`; `None`: all of
    /// everything, into containers.
    names: Option<&'a [&'a str]>,
    /// [`Object::members`], while the top-level object is read.
    members: Vec<Option<Value>>,
    /// The slot of the member being read.
    member: Option<usize>,
    /// Per top-level member, where int literals stop being converted (see [`parse_object`]).
    huge_int: Option<&'a HugeInt>,
    /// That digit count for the member being read.
    huge_digits: Option<usize>,
    /// [`Members::borrow`].
    borrow: Option<&'a str>,
    /// The member being read is the borrowed one.
    borrowing: bool,
    /// Its string value, once read.
    borrowed: Option<StrValue>,
    /// While `Some(d)`, values are checked but not built (nothing is pushed on `values` or
    /// `keys`), until a value completes at depth `d`.
    skip: Option<usize>,
    text: &'a str,
    b: &'a [u8],
    pos: usize,
    max_depth: usize,
    lone_surrogate: bool,
    /// Open containers, outermost first; its length is the current depth.
    frames: Vec<Frame>,
    /// Finished elements of every open container (the shared scratch stack).
    values: Vec<Value>,
    /// Keys of every open dict, the last one possibly still waiting for its value.
    keys: Vec<String>,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, max_depth: usize, names: Option<&'a [&'a str]>) -> Self {
        let scratch = SCRATCH
            .with(|s| s.try_borrow_mut().map(|mut s| std::mem::take(&mut *s)))
            .unwrap_or_default();
        let start = if text.starts_with('\u{feff}') {
            '\u{feff}'.len_utf8()
        } else {
            0
        };
        Parser {
            names,
            members: Vec::new(),
            member: None,
            huge_int: None,
            huge_digits: None,
            borrow: None,
            borrowing: false,
            borrowed: None,
            skip: None,
            text,
            b: text.as_bytes(),
            pos: start,
            max_depth: max_depth.min(HARD_MAX_DEPTH),
            lone_surrogate: false,
            frames: scratch.frames,
            values: scratch.values,
            keys: scratch.keys,
        }
    }

    fn invalid(&self) -> JsonError {
        JsonError::Invalid { offset: self.pos }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_ws) {
            self.pos += 1;
        }
    }

    /// The whole document: a state machine over `frames` instead of recursion.
    fn document(&mut self) -> Result<Value, JsonError> {
        'value: loop {
            // A value is expected here.
            self.skip_ws();
            let mut value = match self.peek() {
                Some(open @ (b'[' | b'{')) => {
                    if self.frames.len() >= self.max_depth {
                        return Err(JsonError::TooDeep {
                            offset: self.pos,
                            limit: self.max_depth,
                        });
                    }
                    self.pos += 1;
                    let kind = if open == b'[' { Kind::List } else { Kind::Dict };
                    self.frames.push(Frame {
                        kind,
                        values_start: self.values.len(),
                        keys_start: self.keys.len(),
                    });
                    self.skip_ws();
                    match (kind, self.peek()) {
                        (Kind::List, Some(b']')) | (Kind::Dict, Some(b'}')) => {
                            self.pos += 1;
                            self.close()
                        }
                        (Kind::List, _) => continue 'value,
                        (Kind::Dict, _) => {
                            self.key()?;
                            continue 'value;
                        }
                    }
                }
                _ => self.scalar()?,
            };
            // A value is complete: hand it to its container, closing containers as they end.
            loop {
                let Some(frame) = self.frames.last().copied() else {
                    self.skip_ws();
                    if self.pos != self.b.len() {
                        return Err(self.invalid());
                    }
                    return Ok(if self.skip.is_some() {
                        Value::None
                    } else {
                        value
                    });
                };
                match self.skip {
                    None if self.names.is_some() && self.frames.len() == 1 => {
                        if let Some(slot) = self.member.and_then(|i| self.members.get_mut(i)) {
                            *slot = Some(value);
                        }
                    }
                    None => self.values.push(value),
                    Some(d) if d == self.frames.len() => self.skip = None,
                    Some(_) => {}
                }
                self.skip_ws();
                let close = match frame.kind {
                    Kind::List => b']',
                    Kind::Dict => b'}',
                };
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        if let Kind::Dict = frame.kind {
                            self.skip_ws();
                            self.key()?;
                        }
                        continue 'value;
                    }
                    Some(c) if c == close => {
                        self.pos += 1;
                        value = self.close();
                    }
                    _ => return Err(self.invalid()),
                }
            }
        }
    }

    /// Pops the innermost container and builds it at its exact size.
    fn close(&mut self) -> Value {
        let Some(frame) = self.frames.pop() else {
            // Unreachable by construction: only called with a frame just checked or pushed.
            return Value::None;
        };
        if self.skip.is_some() || (self.names.is_some() && self.frames.is_empty()) {
            // Opened while skipping (a skip ends before its container closes), or the
            // top-level object whose members went to their slots: nothing on the stacks.
            return Value::None;
        }
        match frame.kind {
            Kind::List => Value::List(self.values.drain(frame.values_start..).collect()),
            Kind::Dict => {
                let n = self.values.len() - frame.values_start;
                let mut map = IndexMap::with_capacity(n);
                let keys = self.keys.drain(frame.keys_start..);
                let values = self.values.drain(frame.values_start..);
                for (k, v) in keys.zip(values) {
                    // On a duplicate, IndexMap keeps the first position and takes the new
                    // value: exactly a Python dict built left to right.
                    map.insert(k, v);
                }
                Value::Dict(Box::new(map))
            }
        }
    }

    /// `"key" :` inside a dict; the key waits on `keys` for its value.
    fn key(&mut self) -> Result<(), JsonError> {
        if self.peek() != Some(b'"') {
            return Err(self.invalid());
        }
        let member = match self.names {
            Some(names) if self.frames.len() == 1 && self.skip.is_none() => names,
            _ => {
                let k = self.string()?;
                self.colon()?;
                if self.skip.is_none() {
                    self.keys.push(k);
                }
                return Ok(());
            }
        };
        // A member of the top-level object: its name is only compared, never kept.
        let flagged = self.lone_surrogate;
        let (start, end, escaped) = self.string_bounds()?;
        let text = self.text;
        let raw = &text[start..end];
        let decoded;
        let name = if escaped {
            decoded = self.unescape(raw, start, true)?;
            decoded.as_str()
        } else {
            raw
        };
        self.colon()?;
        match member.iter().position(|n| *n == name) {
            Some(i) => {
                self.member = Some(i);
                self.huge_digits = self.huge_int.and_then(|f| f(name));
                self.borrowing = self.borrow == Some(name);
            }
            None => {
                // A member not built is not looked at, its key included.
                self.lone_surrogate = flagged;
                self.skip = Some(1);
            }
        }
        Ok(())
    }

    /// The `:` after a key.
    fn colon(&mut self) -> Result<(), JsonError> {
        self.skip_ws();
        if self.peek() != Some(b':') {
            return Err(self.invalid());
        }
        self.pos += 1;
        Ok(())
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Value, JsonError> {
        if self.b[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.invalid())
        }
    }

    fn scalar(&mut self) -> Result<Value, JsonError> {
        match self.peek() {
            Some(b'"') if self.borrowing && self.frames.len() == 1 && self.skip.is_none() => {
                let (start, end, escaped) = self.string_bounds()?;
                let text = self.text;
                self.borrowed = Some(if escaped {
                    StrValue::Decoded(self.unescape(&text[start..end], start, true)?)
                } else {
                    StrValue::Span(start..end)
                });
                Ok(Value::Str(String::new()))
            }
            Some(b'"') => self.string().map(Value::Str),
            Some(b'n') => self.literal("null", Value::None),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'N') => self.literal("NaN", Value::Float(f64::NAN)),
            Some(b'I') => self.literal("Infinity", Value::Float(f64::INFINITY)),
            Some(b'-') if self.b[self.pos..].starts_with(b"-Infinity") => {
                self.literal("-Infinity", Value::Float(f64::NEG_INFINITY))
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.invalid()),
        }
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
    }

    fn digit_at(&self, i: usize) -> bool {
        self.b.get(i).is_some_and(|c| c.is_ascii_digit())
    }

    /// CPython's `-?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?`. A `.` or exponent without digits
    /// is left unread, so whatever follows makes the document invalid, as in CPython.
    fn number(&mut self) -> Result<Value, JsonError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.invalid()),
        }
        let mut is_float = false;
        if self.peek() == Some(b'.') && self.digit_at(self.pos + 1) {
            self.pos += 1;
            self.digits();
            is_float = true;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            let mut i = self.pos + 1;
            if matches!(self.b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if self.digit_at(i) {
                self.pos = i;
                self.digits();
                is_float = true;
            }
        }
        let s = &self.text[start..self.pos];
        if self.skip.is_some() {
            return Ok(Value::None);
        }
        if is_float {
            // Rust's parse is correctly rounded, like CPython's float(): 1e400 is inf.
            return s
                .parse::<f64>()
                .map(Value::Float)
                .map_err(|_| JsonError::Invalid { offset: start });
        }
        if let Ok(n) = s.parse::<i64>() {
            return Ok(Value::Int(Int::Small(n)));
        }
        let digits = s.trim_start_matches('-');
        if self.huge_digits.is_some_and(|max| digits.len() > max) {
            return Ok(Value::Int(Int::huge_literal(
                digits.len(),
                digits.len() < s.len(),
            )));
        }
        Ok(Value::Int(Int::Big(Box::new(parse_big(s)))))
    }

    /// A string starting at the opening quote. Raw control characters are refused
    /// (`strict=True`); escapes are decoded in a second pass over the same bytes.
    fn string(&mut self) -> Result<String, JsonError> {
        let (start, end, escaped) = self.string_bounds()?;
        let raw = &self.text[start..end];
        let build = self.skip.is_none();
        if !escaped {
            return Ok(if build { raw.to_owned() } else { String::new() });
        }
        self.unescape(raw, start, build)
    }

    /// Reads past a string starting at the opening quote: the bounds of its content and
    /// whether it holds escapes.
    fn string_bounds(&mut self) -> Result<(usize, usize, bool), JsonError> {
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        loop {
            match self.peek() {
                // A backslash may have been the last byte: report the end of the text.
                None => {
                    return Err(JsonError::Invalid {
                        offset: self.b.len(),
                    })
                }
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    // What follows is checked when decoding; only its quote must not end us.
                    self.pos += 2;
                }
                Some(c) if c < 0x20 => return Err(self.invalid()),
                Some(_) => self.pos += 1,
            }
        }
        let end = self.pos;
        self.pos += 1;
        Ok((start, end, escaped))
    }

    /// Decodes the escapes of `raw` (which starts at byte `base` of the text). The result is
    /// never longer than `raw`: every escape shrinks or keeps its size. Without `build`, the
    /// escapes are only checked and the result is empty.
    fn unescape(&mut self, raw: &str, base: usize, build: bool) -> Result<String, JsonError> {
        let rb = raw.as_bytes();
        let mut out = String::with_capacity(if build { raw.len() } else { 0 });
        let push = |out: &mut String, s: &str| {
            if build {
                out.push_str(s);
            }
        };
        let mut i = 0;
        while i < rb.len() {
            let Some(off) = memchr::memchr(b'\\', &rb[i..]) else {
                push(&mut out, &raw[i..]);
                break;
            };
            push(&mut out, &raw[i..i + off]);
            i += off;
            let bad = JsonError::Invalid { offset: base + i };
            let c = match rb.get(i + 1) {
                Some(b'"') => '"',
                Some(b'\\') => '\\',
                Some(b'/') => '/',
                Some(b'b') => '\u{8}',
                Some(b'f') => '\u{c}',
                Some(b'n') => '\n',
                Some(b'r') => '\r',
                Some(b't') => '\t',
                Some(b'u') => {
                    let hi = hex4(rb, i + 2).ok_or(bad)?;
                    i += 6;
                    if (0xd800..0xdc00).contains(&hi) && rb.get(i) == Some(&b'\\') {
                        // CPython pairs a high surrogate only with an immediately following
                        // `\u` low surrogate; anything else leaves it lone.
                        if rb.get(i + 1) == Some(&b'u') {
                            if let Some(lo @ 0xdc00..=0xdfff) = hex4(rb, i + 2) {
                                i += 6;
                                let cp = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
                                let c = char::from_u32(cp).unwrap_or('\u{fffd}');
                                push(&mut out, c.encode_utf8(&mut [0; 4]));
                                continue;
                            }
                        }
                    }
                    let c = char::from_u32(hi).unwrap_or_else(|| {
                        self.lone_surrogate |= build;
                        '\u{fffd}'
                    });
                    push(&mut out, c.encode_utf8(&mut [0; 4]));
                    continue;
                }
                _ => return Err(bad),
            };
            push(&mut out, c.encode_utf8(&mut [0; 4]));
            i += 2;
        }
        Ok(out)
    }
}

/// Four hex digits at `at` (either case, as CPython accepts).
fn hex4(b: &[u8], at: usize) -> Option<u32> {
    let d = b.get(at..at + 4)?;
    let mut n = 0u32;
    for &c in d {
        n = n * 16 + char::from(c).to_digit(16)?;
    }
    Some(n)
}

/// Decimal digits at or below this count are parsed directly (num-bigint's quadratic
/// schoolbook parse is fastest there); above it, divide and conquer.
const DIRECT_DIGITS: usize = 1024;

/// An integer literal (grammar already checked) outside `i64`.
fn parse_big(s: &str) -> BigInt {
    let (sign, digits) = match s.strip_prefix('-') {
        Some(d) => (Sign::Minus, d),
        None => (Sign::Plus, s),
    };
    let mut pows: Vec<BigUint> = Vec::new();
    BigInt::from_biguint(sign, parse_magnitude(digits.as_bytes(), &mut pows))
}

/// `digits` (ASCII decimal) as a number: the high part times 10^k plus the low part, where
/// the low part is `DIRECT_DIGITS << j` digits so that the powers (`pows[j]`, built once by
/// squaring) are shared by every split at the same level. Subquadratic because num-bigint
/// multiplies large numbers with Karatsuba / Toom-3.
fn parse_magnitude(digits: &[u8], pows: &mut Vec<BigUint>) -> BigUint {
    if digits.len() <= DIRECT_DIGITS {
        return BigUint::parse_bytes(digits, 10).unwrap_or_default();
    }
    let mut level = 0;
    while (DIRECT_DIGITS << (level + 1)) < digits.len() {
        level += 1;
    }
    let lo_len = DIRECT_DIGITS << level;
    let (hi, lo) = digits.split_at(digits.len() - lo_len);
    let hi = parse_magnitude(hi, pows);
    let lo = parse_magnitude(lo, pows);
    while pows.len() <= level {
        let next = match pows.last() {
            Some(p) => p * p,
            None => BigUint::from(10u32).pow(DIRECT_DIGITS as u32),
        };
        pows.push(next);
    }
    hi * &pows[level] + lo
}

#[cfg(test)]
pub(crate) mod tests;
