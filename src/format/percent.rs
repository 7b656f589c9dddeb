//! printf-style formatting: CPython 3.11's `msg % args` (`PyUnicode_Format` in
//! Objects/unicodeobject.c), byte for byte, within the limits.
//!
//! A template is parsed once into a [`Template`] (cacheable: it depends only on the text).
//! Rendering then makes three passes over it, each cheaper than the allocation it guards:
//!
//! 1. the width and precision limits, literal or from `*` args, in template order;
//! 2. a counting pass that measures the exact output (stopping at `--max-output-bytes`) and
//!    notes the first CPython error, but carries on so that a later limit still wins;
//! 3. only then, the render into a buffer of exactly the measured size.
//!
//! The common shape skips all that: when every spec is a bare `%s`/`%d` and the args are a
//! tuple of as many str, small int, bool, None or float values, no limit but the output
//! size can fire and no CPython error can happen, so `render_bare` sums the exact size,
//! checks it, and writes once. Anything else goes the three-pass way.
//!
//! The argument bookkeeping (`arglen`, `argidx`, the mapping) mirrors CPython's
//! `unicode_formatter_t`, including its quirks: a scalar is consumed once, a mapping value
//! replaces the args (`'%(a)s %s' % {'a': 1}` has not enough arguments), and a dict as args
//! is never "not all converted".

use std::borrow::Cow;
use std::ops::Range;

use indexmap::IndexMap;

use super::number::{self, FloatFmt, FloatKind};
use super::stack::{self, StackStr};
use super::take::Take;
use super::{Args, Buf, Counter, Out, Reject};
use crate::config::Limits;
use crate::value::{self, Int, Value};

const F_LJUST: u8 = 1;
const F_SIGN: u8 = 2;
const F_BLANK: u8 = 4;
const F_ALT: u8 = 8;
const F_ZERO: u8 = 16;

/// A parsed `%` template: literal spans and specs, in order. Depends only on the text (and
/// the `max_fields` it was parsed with), so it can be cached and shared between threads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// Literal spans and specs in template order; cut after `max_fields + 1` specs.
    pub items: Vec<Item>,
    /// Every spec in the text (`%%` excluded), counted even past the stored ones.
    pub field_count: usize,
    /// Whether `items` stops short of the end of the text (too many fields to store).
    pub truncated: bool,
    /// Bytes of literal text in `items`.
    literal_bytes: usize,
    /// Every spec is a bare `%s`, `%d`, `%i` or `%u` (no key, flag, width or precision):
    /// no width or precision limit can fire, so [`render_bare`] may be tried.
    bare: bool,
}

impl Template {
    /// An estimate of the heap this template holds, for a cache bounded in bytes.
    pub fn heap_bytes(&self) -> usize {
        self.items.capacity() * std::mem::size_of::<Item>()
    }
}

/// One piece of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// Text copied as is: a byte range of `msg` (for `%%`, the second `%`).
    Literal(Range<usize>),
    Spec(Spec),
}

/// A width or precision as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Num {
    Absent,
    /// Digits, saturated at `u64::MAX`.
    Lit(u64),
    /// `*`: taken from the next argument.
    Star,
}

/// How a spec ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conv {
    /// A conversion character, supported or not; `char_index` is its index in code points,
    /// which CPython's "unsupported format character ... at index N" reports.
    Char { ch: char, char_index: usize },
    /// The text ended inside the spec: `ValueError: incomplete format`.
    Incomplete,
    /// The text ended inside `%(`...: `ValueError: incomplete format key`.
    IncompleteKey,
}

/// One `%` specifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// Byte offset of the `%` in `msg`.
    pub offset: usize,
    /// `%(key)s`: the key's byte range in `msg`.
    pub key: Option<Range<usize>>,
    /// `F_*` bits.
    flags: u8,
    pub width: Num,
    pub precision: Num,
    /// The literal width does not fit in a `Py_ssize_t` (CPython: "width too big").
    width_too_big: bool,
    /// The literal precision does not fit in a C int (CPython: "precision too big").
    precision_too_big: bool,
    pub conv: Conv,
}

impl Spec {
    fn wants_mapping(&self) -> bool {
        self.key.is_some() || self.conv == Conv::IncompleteKey
    }

    /// The conversion of a spec with nothing but one (`%s`, `%d`, `%i`, `%u`).
    fn bare_conv(&self) -> Option<char> {
        match self.conv {
            Conv::Char {
                ch: ch @ ('s' | 'd' | 'i' | 'u'),
                ..
            } if self.key.is_none()
                && self.flags == 0
                && self.width == Num::Absent
                && self.precision == Num::Absent =>
            {
                Some(ch)
            }
            _ => None,
        }
    }
}

/// Parses `msg` as a `%` template. Never fails: a syntax error becomes a spec that raises
/// CPython's error when rendering reaches it, so the limits of later specs are still seen.
/// Stores at most `max_fields + 1` specs (enough to know the limit is exceeded) but counts
/// them all, so parsing memory stays bounded.
pub fn parse(msg: &str, max_fields: usize) -> Template {
    let bytes = msg.as_bytes();
    let store_limit = max_fields.saturating_add(1);
    // One allocation of about the right size: a literal and a spec per `%`, capped by what
    // is stored. Growing by doubling would allocate (and count) about three times as much.
    let percents = memchr::memchr_iter(b'%', bytes).count();
    let mut items = Vec::with_capacity(percents.min(store_limit).saturating_mul(2) + 1);
    let mut field_count = 0usize;
    let mut truncated = false;
    let mut pos = 0usize;
    let mut cidx = 0usize;
    while pos < bytes.len() {
        let Some(rel) = memchr::memchr(b'%', &bytes[pos..]) else {
            if !truncated {
                items.push(Item::Literal(pos..bytes.len()));
            }
            break;
        };
        let p = pos + rel;
        if p > pos {
            if !truncated {
                items.push(Item::Literal(pos..p));
            }
            cidx += char_count(&msg[pos..p]);
        }
        if bytes.get(p + 1) == Some(&b'%') {
            if !truncated {
                items.push(Item::Literal(p + 1..p + 2));
            }
            pos = p + 2;
            cidx += 2;
            continue;
        }
        field_count += 1;
        let mut sc = SpecScanner {
            msg,
            pos: p + 1,
            cidx: cidx + 1,
        };
        let spec = sc.scan(p);
        pos = sc.pos;
        cidx = sc.cidx;
        if field_count > store_limit {
            truncated = true;
        }
        if !truncated {
            items.push(Item::Spec(spec));
        }
    }
    let literal_bytes = items
        .iter()
        .map(|i| match i {
            Item::Literal(r) => r.len(),
            Item::Spec(_) => 0,
        })
        .sum();
    let bare = !truncated
        && items.iter().all(|i| match i {
            Item::Literal(_) => true,
            Item::Spec(s) => s.bare_conv().is_some(),
        });
    Template {
        items,
        field_count,
        truncated,
        literal_bytes,
        bare,
    }
}

fn char_count(s: &str) -> usize {
    s.bytes().filter(|&b| (b as i8) >= -0x40).count()
}

/// Reads one spec after its `%`, as `unicode_format_arg_parse` does.
struct SpecScanner<'a> {
    msg: &'a str,
    pos: usize,
    cidx: usize,
}

impl SpecScanner<'_> {
    fn next(&mut self) -> Option<(char, usize)> {
        let c = self.msg[self.pos..].chars().next()?;
        let at = self.cidx;
        self.pos += c.len_utf8();
        self.cidx += 1;
        Some((c, at))
    }

    fn scan(&mut self, offset: usize) -> Spec {
        let mut spec = Spec {
            offset,
            key: None,
            flags: 0,
            width: Num::Absent,
            precision: Num::Absent,
            width_too_big: false,
            precision_too_big: false,
            conv: Conv::Incomplete,
        };
        let mut ch = self.next();
        if let Some(('(', _)) = ch {
            let start = self.pos;
            let mut depth = 1usize;
            while depth > 0 {
                match self.next() {
                    Some((')', _)) => depth -= 1,
                    Some(('(', _)) => depth += 1,
                    Some(_) => {}
                    None => break,
                }
            }
            if depth > 0 {
                spec.conv = Conv::IncompleteKey;
                return spec;
            }
            spec.key = Some(start..self.pos - 1);
            ch = self.next();
        }
        while let Some((c, _)) = ch {
            let bit = match c {
                '-' => F_LJUST,
                '+' => F_SIGN,
                ' ' => F_BLANK,
                '#' => F_ALT,
                '0' => F_ZERO,
                _ => break,
            };
            spec.flags |= bit;
            ch = self.next();
        }
        // CPython's limits: a width is a `Py_ssize_t`, a precision a C int.
        (spec.width, spec.width_too_big, ch) = self.num(ch, i64::MAX as u64);
        if let Some(('.', _)) = ch {
            let first = self.next();
            (spec.precision, spec.precision_too_big, ch) = self.num(first, i32::MAX as u64);
            if spec.precision == Num::Absent {
                // `%.f`: a point without digits is precision 0.
                spec.precision = Num::Lit(0);
            }
        }
        if let Some(('h' | 'l' | 'L', _)) = ch {
            ch = self.next();
        }
        if let Some((c, at)) = ch {
            spec.conv = Conv::Char {
                ch: c,
                char_index: at,
            };
        }
        spec
    }

    /// A width or precision starting at `ch`: `*`, digits (and whether they exceed `max`)
    /// or nothing; then the character after it.
    fn num(&mut self, ch: Option<(char, usize)>, max: u64) -> (Num, bool, Option<(char, usize)>) {
        match ch {
            Some(('*', _)) => (Num::Star, false, self.next()),
            Some((c, _)) if c.is_ascii_digit() => {
                let (v, big, after) = self.digits(c, max);
                (Num::Lit(v), big, after)
            }
            _ => (Num::Absent, false, ch),
        }
    }

    /// A run of digits starting with `first`: its value (saturated), whether it exceeds
    /// `max`, and the character after it.
    fn digits(&mut self, first: char, max: u64) -> (u64, bool, Option<(char, usize)>) {
        let mut v = u64::from(first as u8 - b'0');
        loop {
            match self.next() {
                Some((c, at)) if !c.is_ascii_digit() => return (v, v > max, Some((c, at))),
                None => return (v, v > max, None),
                Some((c, _)) => {
                    v = v
                        .saturating_mul(10)
                        .saturating_add(u64::from(c as u8 - b'0'));
                }
            }
        }
    }
}

/// `msg % args`, within `limits`.
pub fn render(msg: &str, args: Args<'_>, limits: &Limits) -> Result<String, Reject> {
    render_parsed(&parse(msg, limits.max_fields), msg, args, limits)
}

/// Renders a parsed template (see the module doc for the order of the checks).
pub fn render_parsed(
    t: &Template,
    msg: &str,
    args: Args<'_>,
    limits: &Limits,
) -> Result<String, Reject> {
    super::check_field_count(t.field_count, limits)?;
    if t.truncated {
        // Parsed under a smaller `max_fields` than these limits allow: parse again.
        let full = parse(msg, limits.max_fields);
        if !full.truncated {
            return render_parsed(&full, msg, args, limits);
        }
    }
    if let (true, Args::Tuple(values)) = (t.bare, args) {
        if let Some(s) = render_bare(t, msg, values, limits.max_output_bytes) {
            return Ok(s);
        }
    }
    check_width_precision(t, msg, args, limits)?;
    let mut counter = Counter::new(limits.max_output_bytes);
    if let Some(err) = run(t, msg, args, &mut counter, limits, true)? {
        return Err(err);
    }
    let mut buf = Buf::new(limits.max_output_bytes, counter.len());
    run(t, msg, args, &mut buf, limits, false)?;
    Ok(buf.into_string())
}

/// The fast path for the common shape: bare specs, a tuple of as many str, small int,
/// bool, None or float args, each one its conversion accepts. Nothing can fail then but the
/// output size, which is summed exactly first: the one allocation is made only when it
/// fits. `None` for anything else (or an output over the limit), which the general path
/// then renders or refuses as it always does.
fn render_bare(t: &Template, msg: &str, values: &[Value], limit: usize) -> Option<String> {
    if values.len() != t.field_count {
        return None;
    }
    let mut size = t.literal_bytes;
    let mut vals = values.iter();
    for item in &t.items {
        if let Item::Spec(spec) = item {
            let n = bare_len(conv_char(spec)?, vals.next()?)?;
            size = size.checked_add(n)?;
        }
    }
    if size > limit {
        return None;
    }
    let mut out = String::with_capacity(size);
    let mut vals = values.iter();
    for item in &t.items {
        match item {
            Item::Literal(r) => out.push_str(msg.get(r.clone())?),
            Item::Spec(spec) => write_bare(conv_char(spec)?, vals.next()?, &mut out)?,
        }
    }
    Some(out)
}

/// The conversion character of a spec (all there is to a bare one).
#[inline]
fn conv_char(spec: &Spec) -> Option<char> {
    match spec.conv {
        Conv::Char { ch, .. } => Some(ch),
        _ => None,
    }
}

/// The length of `value` under a bare conversion, when the fast path takes it.
fn bare_len(conv: char, value: &Value) -> Option<usize> {
    match (value, conv) {
        (Value::Int(Int::Small(v)), _) => Some(stack::i64_str_len(*v)),
        (Value::Bool(_), 'd' | 'i' | 'u') => Some(1),
        (_, 'd' | 'i' | 'u') => None,
        (Value::Str(s), _) => Some(s.len()),
        (Value::Bool(b), _) => Some(if *b { 4 } else { 5 }),
        (Value::None, _) => Some(4),
        (Value::Float(x), _) => Some(float_repr(*x)?.len()),
        _ => None,
    }
}

/// Writes what [`bare_len`] measured.
fn write_bare(conv: char, value: &Value, out: &mut String) -> Option<()> {
    let mut digits = [0u8; 22];
    match (value, conv) {
        (Value::Int(Int::Small(v)), _) => {
            if *v < 0 {
                out.push('-');
            }
            out.push_str(stack::u64_digits(v.unsigned_abs(), 10, false, &mut digits));
        }
        (Value::Bool(b), 'd' | 'i' | 'u') => out.push(if *b { '1' } else { '0' }),
        (_, 'd' | 'i' | 'u') => return None,
        (Value::Str(s), _) => out.push_str(s),
        (Value::Bool(b), _) => out.push_str(if *b { "True" } else { "False" }),
        (Value::None, _) => out.push_str("None"),
        (Value::Float(x), _) => out.push_str(float_repr(*x)?.as_str()),
        _ => return None,
    }
    Some(())
}

/// `repr(x)` on the stack (it is at most 24 bytes).
fn float_repr(x: f64) -> Option<StackStr<32>> {
    let mut s = StackStr::new();
    number::write_float(x, &FloatFmt::REPR, &mut s).ok()?;
    Some(s)
}

/// An argument as CPython's formatter holds it: a value, or the record's named args
/// themselves (`'%s' % {'a': 1}` prints the dict).
#[derive(Clone, Copy, Debug)]
enum Arg<'a> {
    V(&'a Value),
    Map(&'a IndexMap<String, Value>),
}

impl<'a> Arg<'a> {
    fn type_name(self) -> &'static str {
        match self {
            Arg::V(v) => v.type_name(),
            Arg::Map(_) => "dict",
        }
    }

    fn as_value(self) -> Option<&'a Value> {
        match self {
            Arg::V(v) => Some(v),
            Arg::Map(_) => None,
        }
    }

    /// `PyLong_Check`: ints and bools (borrowed: an int may be a megabyte).
    fn as_int(self) -> Option<Cow<'a, Int>> {
        match self.as_value()? {
            Value::Int(n) => Some(Cow::Borrowed(n)),
            Value::Bool(b) => Some(Cow::Owned(Int::Small(i64::from(*b)))),
            _ => None,
        }
    }
}

/// `unicode_formatter_t`'s argument bookkeeping.
struct ArgState<'a> {
    tuple: &'a [Value],
    /// The current non-tuple argument (`arglen == -1`).
    single: Option<Arg<'a>>,
    arglen: isize,
    argidx: isize,
    /// What `%(key)` looks keys up in: set when the args pass `PyMapping_Check` and are
    /// neither a tuple nor a str.
    dict: Option<Arg<'a>>,
}

impl<'a> ArgState<'a> {
    fn new(args: Args<'a>) -> ArgState<'a> {
        let (tuple, single, arglen, argidx) = match args {
            Args::Tuple(items) => (items, None, items.len() as isize, 0),
            Args::Mapping(m) => (&[][..], Some(Arg::Map(m)), -1, -2),
            Args::Scalar(v) => (&[][..], Some(Arg::V(v)), -1, -2),
        };
        let dict = match args {
            Args::Mapping(m) => Some(Arg::Map(m)),
            Args::Scalar(v @ (Value::Dict(_) | Value::List(_))) => Some(Arg::V(v)),
            _ => None,
        };
        ArgState {
            tuple,
            single,
            arglen,
            argidx,
            dict,
        }
    }

    fn next(&mut self) -> Result<Arg<'a>, Reject> {
        if self.argidx < self.arglen {
            let i = self.argidx;
            self.argidx += 1;
            if self.arglen < 0 {
                if let Some(a) = self.single {
                    return Ok(a);
                }
            } else if let Some(v) = self.tuple.get(i as usize) {
                return Ok(Arg::V(v));
            }
        }
        Err(Reject::format_error(
            "TypeError",
            "not enough arguments for format string",
        ))
    }

    fn lookup(&mut self, key: &str) -> Result<(), Reject> {
        let found = match self.dict {
            None => {
                return Err(Reject::format_error(
                    "TypeError",
                    "format requires a mapping",
                ))
            }
            Some(Arg::Map(m)) => m.get(key),
            Some(Arg::V(Value::Dict(m))) => m.get(key),
            Some(Arg::V(v)) => {
                return Err(Reject::format_error(
                    "TypeError",
                    format!(
                        "{} indices must be integers or slices, not str",
                        v.type_name()
                    ),
                ))
            }
        };
        match found {
            Some(v) => {
                self.single = Some(Arg::V(v));
                self.arglen = -1;
                self.argidx = -2;
                Ok(())
            }
            None => {
                let mut b = Buf::new(usize::MAX, key.len() + 2);
                value::write_repr(&Value::Str(key.to_string()), &mut b)?;
                Err(Reject::format_error("KeyError", b.into_string()))
            }
        }
    }

    fn all_converted(&self) -> Result<(), Reject> {
        if self.argidx < self.arglen && self.dict.is_none() {
            return Err(Reject::format_error(
                "TypeError",
                "not all arguments converted during string formatting",
            ));
        }
        Ok(())
    }
}

/// The magnitude of an int as a u64, saturated.
fn saturated_abs(n: &Int) -> u64 {
    match n {
        Int::Small(v) => v.unsigned_abs(),
        Int::Big(_) => u64::MAX,
    }
}

/// Pass 1: the first width or precision over its limit, in template order, literal or
/// from a `*` argument, whatever CPython errors come before it.
fn check_width_precision(
    t: &Template,
    msg: &str,
    args: Args<'_>,
    limits: &Limits,
) -> Result<(), Reject> {
    let mut st = ArgState::new(args);
    // Every `*` and every conversion takes its own arg, whatever its type: a `*` that
    // finds no int is CPython's error, but it does not shift which arg the next one reads.
    for item in &t.items {
        let Item::Spec(spec) = item else { continue };
        if let Some(k) = &spec.key {
            let _ = st.lookup(&msg[k.clone()]);
        }
        let width = match spec.width {
            Num::Absent => None,
            Num::Lit(w) => Some(w),
            Num::Star => star_arg(&mut st).map(|n| saturated_abs(&n)),
        };
        if let Some(width) = width.filter(|&w| w > limits.max_width) {
            return Err(Reject::WidthTooLarge {
                offset: spec.offset,
                width,
                limit: limits.max_width,
            });
        }
        let precision = match spec.precision {
            Num::Absent => None,
            Num::Lit(p) => Some(p),
            Num::Star => star_arg(&mut st).map(|n| {
                if n.is_negative() {
                    0
                } else {
                    saturated_abs(&n)
                }
            }),
        };
        if let Some(precision) = precision.filter(|&p| p > limits.max_precision) {
            return Err(Reject::PrecisionTooLarge {
                offset: spec.offset,
                precision,
                limit: limits.max_precision,
            });
        }
        if let Conv::Char { .. } = spec.conv {
            let _ = st.next();
        }
    }
    Ok(())
}

/// How many positional args a spec takes: one per `*`, one for its conversion.
fn args_taken(spec: &Spec) -> isize {
    let stars = [spec.width, spec.precision]
        .iter()
        .filter(|n| **n == Num::Star)
        .count();
    let conv = usize::from(matches!(spec.conv, Conv::Char { .. }));
    (stars + conv) as isize
}

/// The int a `*` takes, if it is one.
fn star_arg<'a>(st: &mut ArgState<'a>) -> Option<Cow<'a, Int>> {
    st.next().ok().and_then(Arg::as_int)
}

/// Passes 2 and 3. Counting (`counting`): a CPython error is noted (the first one is
/// returned as `Ok(Some(_))`) and the rest still counted, so output-too-large wins over it.
/// Rendering: the first error is returned as `Err`.
fn run(
    t: &Template,
    msg: &str,
    args: Args<'_>,
    out: &mut dyn Out,
    limits: &Limits,
    counting: bool,
) -> Result<Option<Reject>, Reject> {
    let mut st = ArgState::new(args);
    let mut first: Option<Reject> = None;
    let limit = limits.max_output_bytes;
    for item in &t.items {
        let before = st.argidx;
        let r = match item {
            Item::Literal(r) => out.push_str(&msg[r.clone()]),
            Item::Spec(spec) => format_spec(spec, msg, &mut st, out, limit),
        };
        if let Err(e) = r {
            if !counting || matches!(e, Reject::OutputTooLarge { .. }) {
                return Err(e);
            }
            // CPython stops here; the count goes on, so that a later limit still wins. A
            // spec that failed half-way has taken only some of its args: skip the rest, so
            // every later spec reads the arg it would have read (as the width check does).
            if let Item::Spec(spec) = item {
                st.argidx = before.saturating_add(args_taken(spec)).max(st.argidx);
            }
            first.get_or_insert(e);
        }
    }
    if let Err(e) = st.all_converted() {
        if !counting {
            return Err(e);
        }
        first.get_or_insert(e);
    }
    Ok(first)
}

/// The width, precision and left-justification of a spec once its `*` args are read.
struct Resolved {
    flags: u8,
    width: usize,
    precision: Option<usize>,
}

/// One spec, in `unicode_format_arg_parse` / `_format` / `_output` order of errors.
fn format_spec(
    spec: &Spec,
    msg: &str,
    st: &mut ArgState<'_>,
    out: &mut dyn Out,
    limit: usize,
) -> Result<(), Reject> {
    if spec.wants_mapping() {
        if st.dict.is_none() {
            return Err(Reject::format_error(
                "TypeError",
                "format requires a mapping",
            ));
        }
        if spec.conv == Conv::IncompleteKey {
            return Err(Reject::format_error("ValueError", "incomplete format key"));
        }
        if let Some(k) = &spec.key {
            st.lookup(&msg[k.clone()])?;
        }
    }
    let mut r = Resolved {
        flags: spec.flags,
        width: 0,
        precision: None,
    };
    match spec.width {
        Num::Absent => {}
        Num::Lit(w) => {
            if spec.width_too_big {
                return Err(Reject::format_error("ValueError", "width too big"));
            }
            r.width = usize::try_from(w).unwrap_or(usize::MAX);
        }
        Num::Star => {
            let n = st.next()?.as_int().ok_or_else(star_wants_int)?;
            let w = n.to_i64().ok_or_else(|| {
                Reject::format_error(
                    "OverflowError",
                    "Python int too large to convert to C ssize_t",
                )
            })?;
            if w < 0 {
                r.flags |= F_LJUST;
            }
            r.width = usize::try_from(w.unsigned_abs()).unwrap_or(usize::MAX);
        }
    }
    match spec.precision {
        Num::Absent => {}
        Num::Lit(p) => {
            if spec.precision_too_big {
                return Err(Reject::format_error("ValueError", "precision too big"));
            }
            r.precision = Some(usize::try_from(p).unwrap_or(usize::MAX));
        }
        Num::Star => {
            let n = st.next()?.as_int().ok_or_else(star_wants_int)?;
            let p = n
                .to_i64()
                .and_then(|v| i32::try_from(v).ok())
                .ok_or_else(|| {
                    Reject::format_error(
                        "OverflowError",
                        "Python int too large to convert to C int",
                    )
                })?;
            r.precision = Some(usize::try_from(p.max(0)).unwrap_or(0));
        }
    }
    let Conv::Char { ch, char_index } = spec.conv else {
        return Err(Reject::format_error("ValueError", "incomplete format"));
    };
    let arg = st.next()?;
    match ch {
        's' | 'r' | 'a' => format_text(arg, ch, &r, out, limit),
        'd' | 'i' | 'u' | 'o' | 'x' | 'X' => format_int(arg, ch, &r, out, limit),
        'e' | 'E' | 'f' | 'F' | 'g' | 'G' => format_float(arg, ch, &r, out),
        'c' => format_char(arg, &r, out),
        _ => {
            let shown = if (' '..='~').contains(&ch) { ch } else { '?' };
            Err(Reject::FormatError {
                exception: "ValueError",
                message: format!(
                    "unsupported format character '{shown}' (0x{:x}) at index {char_index}",
                    u32::from(ch)
                ),
                offset: Some(spec.offset),
            })
        }
    }
}

fn star_wants_int() -> Reject {
    Reject::format_error("TypeError", "* wants int")
}

/// Writes `[pad][sign][prefix][zeros][body][pad]` as `unicode_format_arg_output` lays out a
/// number (`fill` is `0` with the `0` flag, the sign and prefix then go before the padding).
fn emit_number(
    out: &mut dyn Out,
    r: &Resolved,
    negative: bool,
    prefix: &str,
    zeros: usize,
    body: &dyn Fn(&mut dyn Out) -> Result<(), Reject>,
    body_len: usize,
) -> Result<(), Reject> {
    let sign = if negative {
        Some('-')
    } else if r.flags & F_SIGN != 0 {
        Some('+')
    } else if r.flags & F_BLANK != 0 {
        Some(' ')
    } else {
        None
    };
    let len = usize::from(sign.is_some())
        .saturating_add(prefix.len())
        .saturating_add(zeros)
        .saturating_add(body_len);
    let pad = r.width.saturating_sub(len);
    let ljust = r.flags & F_LJUST != 0;
    let zero_fill = r.flags & F_ZERO != 0;
    if !ljust && !zero_fill {
        out.push_repeat(' ', pad)?;
    }
    if let Some(s) = sign {
        out.push_char(s)?;
    }
    out.push_str(prefix)?;
    if !ljust && zero_fill {
        out.push_repeat('0', pad)?;
    }
    out.push_repeat('0', zeros)?;
    body(out)?;
    if ljust {
        out.push_repeat(' ', pad)?;
    }
    Ok(())
}

/// `%d %i %u %o %x %X` (`mainformatlong` + `_PyUnicode_FormatLong`).
fn format_int(
    arg: Arg<'_>,
    ch: char,
    r: &Resolved,
    out: &mut dyn Out,
    limit: usize,
) -> Result<(), Reject> {
    let hexoct = matches!(ch, 'o' | 'x' | 'X');
    let wrong_type = || {
        let what = if hexoct {
            "an integer"
        } else {
            "a real number"
        };
        Reject::format_error(
            "TypeError",
            format!("%{ch} format: {what} is required, not {}", arg.type_name()),
        )
    };
    let n: Cow<'_, Int> = match arg.as_value() {
        Some(Value::Float(x)) if !hexoct => Cow::Owned(Int::from_f64_trunc(*x)?),
        _ => arg.as_int().ok_or_else(wrong_type)?,
    };
    if let Some(p) = r.precision {
        if p > (i32::MAX - 3) as usize {
            return Err(Reject::format_error("OverflowError", "precision too large"));
        }
    }
    let radix = match ch {
        'o' => 8,
        'x' | 'X' => 16,
        _ => 10,
    };
    let prefix = match (r.flags & F_ALT != 0, ch) {
        (true, 'o') => "0o",
        (true, 'x') => "0x",
        (true, 'X') => "0X",
        _ => "",
    };
    // Refuse by size before converting: a 999,000-digit int is output-too-large, not
    // CPython's 4,300-digit ValueError (the limits win).
    let at_least = number::int_digits_lower_bound(&n, radix)
        .max(r.precision.unwrap_or(0))
        .saturating_add(prefix.len() + usize::from(n.is_negative()))
        .max(r.width)
        .saturating_add(out.len());
    if at_least > limit {
        return Err(Reject::OutputTooLarge { at_least, limit });
    }
    let mut small = [0u8; 22];
    let big;
    let digits = match &*n {
        Int::Small(v) => stack::u64_digits(v.unsigned_abs(), radix, ch == 'X', &mut small),
        Int::Big(_) => {
            big = number::int_magnitude_digits(&n, radix, ch == 'X')?;
            big.as_str()
        }
    };
    let zeros = r.precision.unwrap_or(0).saturating_sub(digits.len());
    emit_number(
        out,
        r,
        n.is_negative(),
        prefix,
        zeros,
        &|o| o.push_str(digits),
        digits.len(),
    )
}

/// `%e %E %f %F %g %G` (`formatfloat`).
fn format_float(arg: Arg<'_>, ch: char, r: &Resolved, out: &mut dyn Out) -> Result<(), Reject> {
    let x = match arg.as_value() {
        Some(Value::Float(x)) => *x,
        Some(Value::Int(n)) => n.to_f64().ok_or_else(Int::float_overflow)?,
        Some(Value::Bool(b)) => f64::from(u8::from(*b)),
        _ => {
            return Err(Reject::format_error(
                "TypeError",
                format!("must be real number, not {}", arg.type_name()),
            ))
        }
    };
    let kind = match ch.to_ascii_lowercase() {
        'e' => FloatKind::Exp,
        'f' => FloatKind::Fixed,
        _ => FloatKind::General,
    };
    let fmt = FloatFmt {
        kind,
        upper: ch.is_ascii_uppercase(),
        precision: r.precision.unwrap_or(6),
        always_sign: false,
        add_dot_0: false,
        alt: r.flags & F_ALT != 0,
        no_neg_0: false,
    };
    let negative = x.is_sign_negative() && !x.is_nan();
    let mag = x.abs();
    let mut len = Counter::new(usize::MAX);
    number::write_float(mag, &fmt, &mut len)?;
    emit_number(
        out,
        r,
        negative,
        "",
        0,
        &|o| number::write_float(mag, &fmt, o),
        len.len(),
    )
}

/// `%c` (`formatchar`). A surrogate (which a Rust string cannot hold) becomes U+FFFD.
fn format_char(arg: Arg<'_>, r: &Resolved, out: &mut dyn Out) -> Result<(), Reject> {
    let requires = || Reject::format_error("TypeError", "%c requires int or char");
    let c = match arg.as_value() {
        Some(Value::Str(s)) => {
            let mut it = s.chars();
            match (it.next(), it.next()) {
                (Some(c), None) => c,
                _ => return Err(requires()),
            }
        }
        Some(Value::Int(_) | Value::Bool(_)) => {
            let v = arg.as_int().and_then(|n| n.to_i64()).unwrap_or(-1);
            if !(0..=0x10FFFF).contains(&v) {
                return Err(Reject::format_error(
                    "OverflowError",
                    "%c arg not in range(0x110000)",
                ));
            }
            char::from_u32(v as u32).unwrap_or('\u{FFFD}')
        }
        _ => return Err(requires()),
    };
    pad_text(out, r, 1, &|o| o.push_char(c))
}

/// `[pad][text][pad]`: [`emit_number`]'s layout for the text conversions, which CPython
/// never signs or zero-fills (`'%05s' % 'ab'` is `'   ab'`): only `-` of the flags applies.
fn pad_text(
    out: &mut dyn Out,
    r: &Resolved,
    chars: usize,
    body: &dyn Fn(&mut dyn Out) -> Result<(), Reject>,
) -> Result<(), Reject> {
    let text = Resolved {
        flags: r.flags & F_LJUST,
        width: r.width,
        precision: None,
    };
    emit_number(out, &text, false, "", 0, body, chars)
}

/// `%s %r %a`: `str()`, `repr()`, `ascii()`, cut to `precision` characters, padded.
fn format_text(
    arg: Arg<'_>,
    ch: char,
    r: &Resolved,
    out: &mut dyn Out,
    limit: usize,
) -> Result<(), Reject> {
    let write = |o: &mut dyn Out| -> Result<(), Reject> {
        match (arg, ch) {
            (Arg::V(v), 's') => value::write_str(v, o),
            (Arg::V(v), 'r') => value::write_repr(v, o),
            (Arg::V(v), _) => value::write_ascii(v, o),
            (Arg::Map(m), 'a') => value::write_dict_ascii(m, o),
            (Arg::Map(m), _) => value::write_dict_repr(m, o),
        }
    };
    if r.width == 0 && r.precision.is_none() {
        return write(out);
    }
    if r.precision.is_some() {
        // A prefix is all that is kept, but CPython converts the whole value first.
        match arg {
            Arg::V(v) => value::check_printable(v)?,
            Arg::Map(m) => m.values().try_for_each(value::check_printable)?,
        }
    }
    let cap = r.precision.unwrap_or(usize::MAX);
    let budget = limit.saturating_sub(out.len());
    let mut m = Take::new(None, cap).with_budget(budget);
    match m.run(write) {
        Err(Reject::OutputTooLarge { at_least, .. }) => {
            return Err(Reject::OutputTooLarge {
                at_least: at_least.saturating_add(out.len()),
                limit,
            })
        }
        other => other?,
    }
    let chars = m.chars();
    pad_text(out, r, chars, &|o| Take::new(Some(o), chars).run(write))
}

#[cfg(test)]
mod tests {
    use super::*;
    use num_bigint::BigInt;

    fn limits() -> Limits {
        Limits::default()
    }

    fn tuple(msg: &str, args: &[Value]) -> Result<String, Reject> {
        render(msg, Args::Tuple(args), &limits())
    }

    fn s(x: &str) -> Value {
        Value::Str(x.to_string())
    }

    fn int(v: i64) -> Value {
        Value::Int(Int::Small(v))
    }

    fn err(exception: &'static str, message: &str) -> Result<String, Reject> {
        Err(Reject::format_error(exception, message))
    }

    #[test]
    fn percent_renders_like_cpython() {
        let cases: &[(&str, Vec<Value>, &str)] = &[
            (
                "%s-%r-%a",
                vec![s("é"), s("it's"), s("é")],
                "é-\"it's\"-'\\xe9'",
            ),
            (
                "%5d|%-5d|%05d|%+d|% d",
                vec![int(42), int(42), int(-42), int(1), int(1)],
                "   42|42   |-0042|+1| 1",
            ),
            (
                "%#x %#X %#o %x",
                vec![int(255), int(255), int(8), int(-255)],
                "0xff 0XFF 0o10 -ff",
            ),
            (
                "%#5.3x|%.3s|%-4c|",
                vec![int(-255), s("abcdef"), s("z")],
                "-0x0ff|abc|z   |",
            ),
            ("%d %i", vec![Value::Bool(true), Value::Float(-2.9)], "1 -2"),
            (
                "%.2f %e %g %G",
                vec![
                    Value::Float(0.125),
                    Value::Float(1.5),
                    Value::Float(1e-5),
                    Value::Float(1e20),
                ],
                "0.12 1.500000e+00 1e-05 1E+20",
            ),
            (
                "%05f|%+.1f|%#.0f",
                vec![
                    Value::Float(f64::INFINITY),
                    Value::Float(-0.0),
                    Value::Float(3.0),
                ],
                "00inf|-0.0|3.",
            ),
            (
                "%s %s",
                vec![Value::List(vec![s("a"), int(1)]), Value::None],
                "['a', 1] None",
            ),
            (
                "%*d|%-*d|%.*s",
                vec![int(-4), int(7), int(3), int(7), int(2), s("xyz")],
                "7   |7  |xy",
            ),
            ("100%% %c%c", vec![int(0x1F600), s("é")], "100% 😀é"),
            (
                "%ld %hs %Lf",
                vec![int(1), s("x"), Value::Float(1.0)],
                "1 x 1.000000",
            ),
            ("%5s|", vec![s("日本")], "   日本|"),
        ];
        for (msg, args, want) in cases {
            assert_eq!(tuple(msg, args).as_deref(), Ok(*want), "{msg}");
        }
    }

    #[test]
    fn percent_mapping_and_scalar_args_follow_cpython_bookkeeping() {
        let mut m = IndexMap::new();
        m.insert("a".to_string(), int(1));
        m.insert("x(y)".to_string(), s("n"));
        let l = limits();
        assert_eq!(
            render("%(a)s %(x(y))s", Args::Mapping(&m), &l).as_deref(),
            Ok("1 n")
        );
        assert_eq!(
            render("%s %(a)s", Args::Mapping(&m), &l).as_deref(),
            Ok("{'a': 1, 'x(y)': 'n'} 1")
        );
        assert_eq!(
            render("hello", Args::Mapping(&m), &l).as_deref(),
            Ok("hello")
        );
        assert_eq!(
            render("%(a)s %s", Args::Mapping(&m), &l),
            err("TypeError", "not enough arguments for format string")
        );
        assert_eq!(
            render("%(b)s", Args::Mapping(&m), &l),
            err("KeyError", "'b'")
        );
        assert_eq!(
            render(
                "%(a)s",
                Args::Tuple(&[Value::Dict(Box::new(m.clone()))]),
                &l
            ),
            err("TypeError", "format requires a mapping")
        );
        assert_eq!(
            render("hello", Args::Scalar(&int(5)), &l),
            err(
                "TypeError",
                "not all arguments converted during string formatting"
            )
        );
        assert_eq!(render("%s", Args::Scalar(&int(5)), &l).as_deref(), Ok("5"));
    }

    #[test]
    fn percent_errors_match_cpython_exactly() {
        assert_eq!(
            tuple("%y", &[int(1)]),
            Err(Reject::FormatError {
                exception: "ValueError",
                message: "unsupported format character 'y' (0x79) at index 1".to_string(),
                offset: Some(0),
            })
        );
        let e = tuple("é%\u{100}", &[int(1)]);
        assert!(
            matches!(e, Err(Reject::FormatError { ref message, .. }) if message == "unsupported format character '?' (0x100) at index 2")
        );
        assert_eq!(tuple("%", &[]), err("ValueError", "incomplete format"));
        assert_eq!(
            tuple("%(a", &[]),
            err("TypeError", "format requires a mapping")
        );
        assert_eq!(
            tuple("%*d", &[s("x"), int(1)]),
            err("TypeError", "* wants int")
        );
        assert_eq!(
            tuple("%d", &[s("x")]),
            err("TypeError", "%d format: a real number is required, not str")
        );
        assert_eq!(
            tuple("%x", &[Value::Float(1.5)]),
            err("TypeError", "%x format: an integer is required, not float")
        );
        assert_eq!(
            tuple("%c", &[s("ab")]),
            err("TypeError", "%c requires int or char")
        );
        assert_eq!(
            tuple("%c", &[int(-1)]),
            err("OverflowError", "%c arg not in range(0x110000)")
        );
        assert_eq!(
            tuple("%f", &[Value::None]),
            err("TypeError", "must be real number, not NoneType")
        );
        assert_eq!(
            tuple("%d", &[Value::Float(f64::NAN)]),
            err("ValueError", "cannot convert float NaN to integer")
        );
        assert_eq!(
            tuple("%s %s", &[int(1)]),
            err("TypeError", "not enough arguments for format string")
        );
        assert_eq!(
            tuple("%5%", &[]),
            err("TypeError", "not enough arguments for format string")
        );
    }

    #[test]
    fn percent_huge_width_is_rejected_before_alloc() {
        assert_eq!(
            tuple("Over %2400000000d", &[s("x")]),
            Err(Reject::WidthTooLarge {
                offset: 5,
                width: 2_400_000_000,
                limit: 4096
            })
        );
        assert_eq!(
            tuple("%99999999999999999999999d", &[int(1)]),
            Err(Reject::WidthTooLarge {
                offset: 0,
                width: u64::MAX,
                limit: 4096
            })
        );
        assert_eq!(
            tuple("%*d", &[int(-5000), int(1)]),
            Err(Reject::WidthTooLarge {
                offset: 0,
                width: 5000,
                limit: 4096
            })
        );
        assert_eq!(
            tuple("%.5000s", &[s("x")]),
            Err(Reject::PrecisionTooLarge {
                offset: 0,
                precision: 5000,
                limit: 4096
            })
        );
        assert_eq!(tuple("%4096d", &[int(1)]).map(|o| o.len()), Ok(4096));
    }

    #[test]
    fn percent_cpython_error_does_not_hide_a_later_limit() {
        assert!(matches!(
            tuple("%y %*d", &[int(1), int(9000), int(1)]),
            Err(Reject::WidthTooLarge { offset: 3, .. })
        ));
        let big = s(&"x".repeat(70_000));
        assert!(matches!(
            tuple("%d %s", &[s("x"), big]),
            Err(Reject::OutputTooLarge { .. })
        ));
    }

    #[test]
    fn percent_field_limit_is_inclusive_and_parse_stays_bounded() {
        let args: Vec<Value> = (0..257).map(int).collect();
        assert!(tuple(&"%d".repeat(256), &args[..256]).is_ok());
        assert_eq!(
            tuple(&"%d".repeat(257), &args),
            Err(Reject::TooManyFields {
                count: 257,
                limit: 256
            })
        );
        let t = parse(&"%s%%".repeat(100_000), 256);
        assert_eq!(t.field_count, 100_000);
        assert!(t.items.len() <= 2 * 258);
        assert!(t.heap_bytes() < 64 << 10);
    }

    #[test]
    fn percent_repeated_big_arg_is_refused_without_building() {
        let mut m = IndexMap::new();
        m.insert("a".to_string(), s(&"y".repeat(2048)));
        let l = Limits {
            max_fields: 100_000,
            ..Limits::default()
        };
        let msg = "%(a)s".repeat(50_000);
        assert!(matches!(
            render(&msg, Args::Mapping(&m), &l),
            Err(Reject::OutputTooLarge { .. })
        ));
    }

    #[test]
    fn percent_huge_int_is_output_too_large_not_value_error() {
        let huge = Value::Int(Int::from_bigint(num_traits::pow(BigInt::from(10), 999_000)));
        for msg in ["%d", "%s", "%x", "%r"] {
            assert!(
                matches!(
                    tuple(msg, std::slice::from_ref(&huge)),
                    Err(Reject::OutputTooLarge { .. })
                ),
                "{msg}"
            );
        }
        let big = Value::Int(Int::from_bigint(num_traits::pow(BigInt::from(10), 5000)));
        assert_eq!(
            tuple("%d", std::slice::from_ref(&big)),
            Err(number::int_too_long())
        );
        assert_eq!(
            tuple("%.3s", &[Value::List(vec![big])]),
            Err(number::int_too_long())
        );
    }

    #[test]
    fn percent_bare_fast_path_renders_as_the_general_path() {
        // `%-s` lays out like `%s` but carries a flag, so it takes the general path.
        let values = [
            s("alice"),
            s(""),
            s("日本"),
            int(0),
            int(-7),
            int(i64::MIN),
            int(i64::MAX),
            Value::Bool(true),
            Value::Bool(false),
            Value::None,
            Value::Float(0.1),
            Value::Float(-0.0),
            Value::Float(1e20),
            Value::Float(1e-5),
            Value::Float(f64::NAN),
            Value::Float(-f64::INFINITY),
            Value::Float(-1.7976931348623157e308),
        ];
        for v in &values {
            for conv in ['s', 'd', 'i', 'u'] {
                let bare = tuple(&format!("<%{conv}>"), std::slice::from_ref(v));
                let general = tuple(&format!("<%-{conv}>"), std::slice::from_ref(v));
                assert_eq!(bare, general, "%{conv} of {v:?}");
            }
        }
        assert_eq!(
            tuple("user %s from %s after %d", &[s("a"), s("b"), int(3)]).as_deref(),
            Ok("user a from b after 3")
        );
    }

    #[test]
    fn percent_bare_fast_path_leaves_errors_and_limits_to_the_general_path() {
        assert_eq!(
            tuple("%s %s", &[s("a")]),
            err("TypeError", "not enough arguments for format string")
        );
        assert_eq!(
            tuple("%s", &[s("a"), s("b")]),
            err(
                "TypeError",
                "not all arguments converted during string formatting"
            )
        );
        let l = Limits {
            max_output_bytes: 8,
            ..Limits::default()
        };
        assert_eq!(
            render("%s%s", Args::Tuple(&[s("abcde"), s("fghij")]), &l),
            Err(Reject::OutputTooLarge {
                at_least: 10,
                limit: 8
            })
        );
        assert_eq!(
            render("%s%s", Args::Tuple(&[s("abcd"), s("efgh")]), &l).as_deref(),
            Ok("abcdefgh")
        );
    }

    #[test]
    fn template_can_be_cached_across_threads() {
        fn assert_shared<T: Clone + Send + Sync + 'static>() {}
        assert_shared::<Template>();
    }
}
