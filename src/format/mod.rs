//! The bounded formatter: CPython's `msg % args`, `msg.format(...)` and
//! `string.Template(msg).substitute(args)`, pure and synchronous.
//!
//! Every template is parsed into specs first; the limits (field count, widths,
//! precisions, output size) are checked from the specs and the args before any output is
//! allocated, and the output is written into one [`Buf`] whose growth is capped at
//! `max_output_bytes`, so an over-long result is an ordinary error, never an allocation.
//!
//! Precedence (docs/record.md "Fine points"): a record carries at most one reject. The limits win
//! over CPython's own errors, so a renderer that meets a CPython error keeps checking the
//! rest of the template for limit violations and reports the error only if none fires.

pub mod brace;
pub mod cache;
pub mod dollar;
pub mod number;
pub mod percent;
mod stack;
mod take;

use std::cell::RefCell;
use std::sync::Arc;

use indexmap::IndexMap;

use self::cache::TemplateCache;

use crate::config::Limits;
use crate::finding::{Finding, Rule};
use crate::value::Value;

/// How `msg` is rendered with `args`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Style {
    /// `msg % args`
    Percent,
    /// `msg.format(*args)` / `msg.format(**args)`
    Brace,
    /// `string.Template(msg).substitute(args)`
    Dollar,
}

impl Style {
    /// `"%"`, `"{"` or `"$"`; anything else is not a style.
    pub fn from_field(s: &str) -> Option<Style> {
        match s {
            "%" => Some(Style::Percent),
            "{" => Some(Style::Brace),
            "$" => Some(Style::Dollar),
            _ => None,
        }
    }
}

/// A record's args as Python sees them. Empty `[]`/`{}` and `null` never get here: a
/// record without args is verbatim.
#[derive(Clone, Copy, Debug)]
pub enum Args<'a> {
    /// A JSON array: a tuple (`msg % tuple(args)`, `msg.format(*args)`, and for `$` a list).
    Tuple(&'a [Value]),
    /// A JSON object: a dict (`msg % args`, `msg.format(**args)`, `substitute(args)`).
    Mapping(&'a IndexMap<String, Value>),
    /// Any other JSON value: `msg % 5`, `msg.format(5)`, `substitute(5)`.
    Scalar(&'a Value),
}

/// Why a template was not rendered. At most one per record; variants are in precedence
/// order (`Rule` in src/finding.rs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reject {
    /// `{0.attr}`: attribute access, the classic format-string attack.
    AttributeAccess { offset: usize },
    /// More specifiers / replacement fields than `--max-fields`.
    TooManyFields { count: usize, limit: usize },
    /// A width (literal, `*` arg or nested field) over `--max-width`. Values that do not fit
    /// in a u64 saturate at `u64::MAX`. `offset` is the byte offset of the spec in `msg`.
    WidthTooLarge {
        offset: usize,
        width: u64,
        limit: u64,
    },
    /// A precision over `--max-precision`.
    PrecisionTooLarge {
        offset: usize,
        precision: u64,
        limit: u64,
    },
    /// The rendered message would be longer than `--max-output-bytes`. `at_least` is a lower
    /// bound of the size it would have had.
    OutputTooLarge { at_least: usize, limit: usize },
    /// CPython would raise: `exception` is the type (`TypeError`), `message` its text.
    /// `offset` is the byte offset in `msg` when it names a place.
    FormatError {
        exception: &'static str,
        message: String,
        offset: Option<usize>,
    },
}

impl Reject {
    pub fn format_error(exception: &'static str, message: impl Into<String>) -> Reject {
        Reject::FormatError {
            exception,
            message: message.into(),
            offset: None,
        }
    }

    /// This error, placed at byte `offset` of `msg` unless it already names a place. Only a
    /// `FormatError` takes one: every other reject has its place (or none) by nature.
    pub fn at(self, offset: usize) -> Reject {
        match self {
            Reject::FormatError {
                exception,
                message,
                offset: None,
            } => Reject::FormatError {
                exception,
                message,
                offset: Some(offset),
            },
            e => e,
        }
    }

    pub fn rule(&self) -> Rule {
        match self {
            Reject::AttributeAccess { .. } => Rule::AttributeAccess,
            Reject::TooManyFields { .. } => Rule::TooManyFields,
            Reject::WidthTooLarge { .. } => Rule::WidthTooLarge,
            Reject::PrecisionTooLarge { .. } => Rule::PrecisionTooLarge,
            Reject::OutputTooLarge { .. } => Rule::OutputTooLarge,
            Reject::FormatError { .. } => Rule::FormatError,
        }
    }

    /// Where in `msg` the problem is, if it is in `msg`.
    pub fn offset(&self) -> Option<usize> {
        match self {
            Reject::AttributeAccess { offset } => Some(*offset),
            Reject::WidthTooLarge { offset, .. } | Reject::PrecisionTooLarge { offset, .. } => {
                Some(*offset)
            }
            Reject::FormatError { offset, .. } => *offset,
            Reject::TooManyFields { .. } | Reject::OutputTooLarge { .. } => None,
        }
    }

    pub fn detail(&self) -> String {
        match self {
            Reject::AttributeAccess { .. } => {
                "attribute access in a replacement field is refused".to_string()
            }
            Reject::TooManyFields { count, limit } => {
                format!("{count} fields > limit {limit}")
            }
            Reject::WidthTooLarge { width, limit, .. } => over_limit("width", *width, *limit),
            Reject::PrecisionTooLarge {
                precision, limit, ..
            } => over_limit("precision", *precision, *limit),
            Reject::OutputTooLarge { at_least, limit } => {
                format!("output of at least {at_least} bytes > limit {limit}")
            }
            Reject::FormatError {
                exception, message, ..
            } => format!("{exception}: {message}"),
        }
    }

    pub fn to_finding(&self) -> Finding {
        Finding::new(self.rule(), self.offset(), self.detail())
    }
}

/// `--max-fields`, the same rule for every style: inclusive (256 fields pass, 257 do not),
/// counting every field the template holds (docs/rules.md).
pub(crate) fn check_field_count(count: usize, limits: &Limits) -> Result<(), Reject> {
    if count > limits.max_fields {
        return Err(Reject::TooManyFields {
            count,
            limit: limits.max_fields,
        });
    }
    Ok(())
}

/// `"width 2400000000 > limit 4096 (would allocate ~2.2 GiB)"`, built without `format!`:
/// every refused record pays for its detail, so it is written digit by digit into one
/// string.
fn over_limit(what: &str, n: u64, limit: u64) -> String {
    let mut s = String::with_capacity(64);
    let mut digits = [0u8; 22];
    s.push_str(what);
    s.push(' ');
    s.push_str(stack::u64_digits(n, 10, false, &mut digits));
    s.push_str(" > limit ");
    s.push_str(stack::u64_digits(limit, 10, false, &mut digits));
    push_would_allocate(&mut s, n);
    s
}

/// Appends `" (would allocate ~2.2 GiB)"` for sizes worth a word. The figure is what
/// `format!("{:.1}", bytes as f64 / 1024^k)` prints (the quotient is exact, a power of two;
/// ties go to even), computed in integers.
fn push_would_allocate(s: &mut String, bytes: u64) {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return;
    }
    // The f64 the figure is made from, exactly (a u64 may round on the way to f64).
    let b = (bytes as f64) as u128;
    let mut unit = 0;
    while unit + 1 < UNITS.len() && b >> (10 * (unit + 1)) > 0 {
        unit += 1;
    }
    let shift = 10 * unit;
    let scaled = b * 10;
    let mut tenths = scaled >> shift;
    let rest = scaled & ((1u128 << shift) - 1);
    let half = 1u128 << (shift - 1);
    if rest > half || (rest == half && tenths % 2 == 1) {
        tenths += 1;
    }
    let mut digits = [0u8; 22];
    s.push_str(" (would allocate ~");
    s.push_str(stack::u64_digits(
        u64::try_from(tenths / 10).unwrap_or(u64::MAX),
        10,
        false,
        &mut digits,
    ));
    s.push('.');
    s.push(char::from(b'0' + (tenths % 10) as u8));
    s.push(' ');
    s.push_str(UNITS[unit]);
    s.push(')');
}

/// Where rendered text goes: a counter (to measure) or a bounded buffer (to render).
/// Pushing past the bound is an ordinary error, never an allocation.
pub trait Out {
    fn push_str(&mut self, s: &str) -> Result<(), Reject>;

    fn push_char(&mut self, c: char) -> Result<(), Reject> {
        let mut b = [0u8; 4];
        self.push_str(c.encode_utf8(&mut b))
    }

    /// `n` copies of `c` (padding), checked against the bound before it is written.
    fn push_repeat(&mut self, c: char, n: usize) -> Result<(), Reject> {
        for _ in 0..n {
            self.push_char(c)?;
        }
        Ok(())
    }

    /// Bytes written so far.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The output buffer: grows only up to `limit` bytes; beyond that, `OutputTooLarge`.
#[derive(Debug)]
pub struct Buf {
    s: String,
    limit: usize,
}

impl Buf {
    /// A buffer that will never hold more than `limit` bytes. `capacity_hint` is clamped to
    /// the limit.
    pub fn new(limit: usize, capacity_hint: usize) -> Buf {
        Buf {
            s: String::with_capacity(capacity_hint.min(limit)),
            limit,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.s
    }

    pub fn into_string(self) -> String {
        self.s
    }

    fn too_large(&self, extra: usize) -> Reject {
        Reject::OutputTooLarge {
            at_least: self.s.len().saturating_add(extra),
            limit: self.limit,
        }
    }
}

impl Out for Buf {
    #[inline]
    fn push_str(&mut self, s: &str) -> Result<(), Reject> {
        if self.s.len() + s.len() > self.limit {
            return Err(self.too_large(s.len()));
        }
        self.s.push_str(s);
        Ok(())
    }

    fn push_repeat(&mut self, c: char, n: usize) -> Result<(), Reject> {
        let bytes = c.len_utf8().saturating_mul(n);
        if self.s.len().saturating_add(bytes) > self.limit {
            return Err(self.too_large(bytes));
        }
        self.s.extend(std::iter::repeat_n(c, n));
        Ok(())
    }

    fn len(&self) -> usize {
        self.s.len()
    }
}

/// Counts what would be written, up to `limit` (then `OutputTooLarge`), writing nothing.
#[derive(Debug)]
pub struct Counter {
    n: usize,
    limit: usize,
}

impl Counter {
    pub fn new(limit: usize) -> Counter {
        Counter { n: 0, limit }
    }
}

impl Out for Counter {
    #[inline]
    fn push_str(&mut self, s: &str) -> Result<(), Reject> {
        self.push_bytes(s.len())
    }

    fn push_repeat(&mut self, c: char, n: usize) -> Result<(), Reject> {
        self.push_bytes(c.len_utf8().saturating_mul(n))
    }

    fn len(&self) -> usize {
        self.n
    }
}

impl Counter {
    fn push_bytes(&mut self, bytes: usize) -> Result<(), Reject> {
        let n = self.n.saturating_add(bytes);
        if n > self.limit {
            return Err(Reject::OutputTooLarge {
                at_least: n,
                limit: self.limit,
            });
        }
        self.n = n;
        Ok(())
    }
}

thread_local! {
    /// Parsed `%` templates of this thread, keyed by template text.
    static PERCENT_CACHE: RefCell<TemplateCache<Box<str>, percent::Template>> =
        RefCell::new(TemplateCache::new(cache::DEFAULT_MAX_ENTRIES, cache::DEFAULT_MAX_BYTES));
    /// Parsed `{}` templates of this thread, keyed by template text.
    static BRACE_CACHE: RefCell<TemplateCache<Box<str>, brace::Template>> =
        RefCell::new(TemplateCache::new(cache::DEFAULT_MAX_ENTRIES, cache::DEFAULT_MAX_BYTES));
}

/// Empties this thread's template caches, so the next record parses (and caches) its
/// template as the first record of a new thread would (see `Pipeline::with_isolation`).
/// Costs nothing when they are empty.
pub fn reset_thread_caches() {
    fn reset<T>(cache: &'static std::thread::LocalKey<RefCell<TemplateCache<Box<str>, T>>>) {
        let _ = cache.try_with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                if !c.is_empty() {
                    *c = TemplateCache::new(cache::DEFAULT_MAX_ENTRIES, cache::DEFAULT_MAX_BYTES);
                }
            }
        });
    }
    reset(&PERCENT_CACHE);
    reset(&BRACE_CACHE);
}

/// Renders like [`render`], reusing this thread's parsed form of `msg` when it has one.
/// Templates repeat and args change: parsing once per template is most of the saving.
pub fn render_cached(
    msg: &str,
    args: Args<'_>,
    style: Style,
    limits: &Limits,
) -> Result<String, Reject> {
    if msg.len() > cache::MAX_CACHED_TEMPLATE_BYTES {
        return render(msg, args, style, limits);
    }
    match style {
        Style::Percent => with_cached(
            &PERCENT_CACHE,
            msg,
            limits.max_fields,
            percent::parse,
            |t| (!t.truncated).then(|| t.heap_bytes()),
            |t| percent::render_parsed(t, msg, args, limits),
        ),
        // A brace template cut short for one field limit re-parses itself when rendered
        // under a larger one, so every parse is safe to cache.
        Style::Brace => with_cached(
            &BRACE_CACHE,
            msg,
            limits.max_fields,
            brace::parse,
            |t| Some(t.heap_bytes()),
            |t| brace::render_parsed(t, msg, args, limits),
        ),
        // `string.Template` parsing is one regex-like scan; nothing worth caching.
        Style::Dollar => dollar::render(msg, args, limits),
    }
}

/// Runs `render` on the cached parse of `msg`, parsing (and caching) it when absent. A hit
/// renders under the cache's shared borrow, so it costs neither a reference count nor a
/// copy. `cost` gives the heap bytes of a parse worth caching, or `None` for one that
/// depends on `max_fields` (cut short for having too many fields): those are rare and not
/// cached, so a cached parse is valid whatever the field limit.
fn with_cached<T, R>(
    cache: &'static std::thread::LocalKey<RefCell<TemplateCache<Box<str>, T>>>,
    msg: &str,
    max_fields: usize,
    parse: impl Fn(&str, usize) -> T,
    cost: impl Fn(&T) -> Option<usize>,
    render: impl FnOnce(&T) -> R,
) -> R {
    cache.with(|c| {
        if let Ok(c) = c.try_borrow() {
            if let Some(t) = c.get_ref(msg) {
                return render(t);
            }
        }
        let t = Arc::new(parse(msg, max_fields));
        if let (Some(heap), Ok(mut c)) = (cost(&t), c.try_borrow_mut()) {
            let bytes = msg.len() + heap + std::mem::size_of::<T>();
            c.insert(msg.into(), Arc::clone(&t), bytes);
        }
        render(&t)
    })
}

/// Renders `msg` with `args` in `style`, within `limits`.
pub fn render(msg: &str, args: Args<'_>, style: Style, limits: &Limits) -> Result<String, Reject> {
    match style {
        Style::Percent => percent::render(msg, args, limits),
        Style::Brace => brace::render(msg, args, limits),
        Style::Dollar => dollar::render(msg, args, limits),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The figure as it was first written, with float formatting: the oracle.
    fn would_allocate_by_float(bytes: u64) -> String {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        if bytes < 1024 {
            return String::new();
        }
        let mut v = bytes as f64;
        let mut unit = 0;
        while v >= 1024.0 && unit + 1 < UNITS.len() {
            v /= 1024.0;
            unit += 1;
        }
        format!(" (would allocate ~{v:.1} {})", UNITS[unit])
    }

    #[test]
    fn would_allocate_figure_matches_float_formatting() {
        let mut cases: Vec<u64> = vec![
            0,
            1023,
            1024,
            1280,
            1331,
            1332,
            1126,
            1127,
            2_400_000_000,
            u64::MAX,
            u64::MAX - 1,
            (1 << 53) + 1,
            1 << 40,
            (1 << 40) - 1,
            (1 << 50) - 1,
        ];
        // Ties and near-ties at every unit, and a spread of other sizes.
        for unit in 1..=4u32 {
            for m in 1u64..400 {
                let base = (m * (1u64 << (10 * unit))) / 20;
                cases.extend([base.saturating_sub(1), base, base + 1]);
            }
        }
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push(x >> (x % 64));
        }
        for bytes in cases {
            let mut s = String::new();
            push_would_allocate(&mut s, bytes);
            assert_eq!(s, would_allocate_by_float(bytes), "{bytes}");
        }
    }

    #[test]
    fn width_detail_names_the_size_it_would_allocate() {
        let r = Reject::WidthTooLarge {
            offset: 5,
            width: 2_400_000_000,
            limit: 4096,
        };
        assert_eq!(
            r.detail(),
            "width 2400000000 > limit 4096 (would allocate ~2.2 GiB)"
        );
        let r = Reject::PrecisionTooLarge {
            offset: 0,
            precision: 5000,
            limit: 4096,
        };
        assert_eq!(
            r.detail(),
            "precision 5000 > limit 4096 (would allocate ~4.9 KiB)"
        );
    }
}
