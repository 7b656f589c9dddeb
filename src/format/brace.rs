//! `{}` style: CPython 3.11's `msg.format(*args)` / `msg.format(**args)` / `msg.format(v)`
//! (Objects/stringlib/unicode_format.h and Python/formatter_unicode.c), bounded.
//!
//! A template is parsed once ([`parse`], cacheable) into literal spans and fields with byte
//! offsets, nested specs included. Rendering ([`render_parsed`]) then settles, in reject
//! order, attribute access (refused, never evaluated), the field count, every width and
//! precision (literal or from a nested field), the output size (measured by a check pass
//! that writes nothing), and only then CPython's own errors, before one buffer of the
//! measured size is filled.

mod fmt;
mod parse;
mod render;
mod spec;

use self::parse::{Parser, Piece};
use self::render::Walk;
use super::{Args, Buf, Counter, Out, Reject};
use crate::config::Limits;

pub(crate) use self::fmt::int_str_len;

/// A parsed `{}` template. Holds byte ranges into the `msg` it was parsed from, so it must
/// be rendered with that same `msg`.
#[derive(Clone, Debug)]
pub struct Template {
    pieces: Vec<Piece>,
    /// Every replacement field at every depth, nested ones included; `{{` is not one.
    field_count: usize,
    /// The `{` of the first field using attribute access.
    attribute_at: Option<usize>,
    /// Fields past `max_fields + 1` were counted but not stored.
    truncated: bool,
}

impl Template {
    /// Heap bytes held, for a cache bounded in bytes.
    pub fn heap_bytes(&self) -> usize {
        parse::heap_bytes(&self.pieces)
    }

    /// Replacement fields in the template, nested ones included.
    pub fn field_count(&self) -> usize {
        self.field_count
    }
}

/// Parses `msg`, storing at most `max_fields + 1` fields (the rest are only counted), so
/// parsing a hostile template costs memory bounded by the limit, not by its length.
pub fn parse(msg: &str, max_fields: usize) -> Template {
    let mut p = Parser::new(msg, max_fields);
    let pieces = p.pieces(0, msg.len(), 0);
    Template {
        pieces,
        field_count: p.count,
        attribute_at: p.attribute_at,
        truncated: p.truncated,
    }
}

/// Renders a template parsed from `msg`.
pub fn render_parsed(
    t: &Template,
    msg: &str,
    args: Args<'_>,
    limits: &Limits,
) -> Result<String, Reject> {
    if let Some(offset) = t.attribute_at {
        return Err(Reject::AttributeAccess { offset });
    }
    super::check_field_count(t.field_count, limits)?;
    if t.truncated {
        // Parsed for a smaller limit than this one: every field is needed now.
        return render_parsed(&parse(msg, limits.max_fields), msg, args, limits);
    }
    let mut counter = Counter::new(usize::MAX);
    let mut check = Walk::new(msg, args, limits, true);
    check.walk(&t.pieces, 2, &mut counter)?;
    let size = counter.len();
    if check.overflow || size > limits.max_output_bytes {
        let at_least = size.max(limits.max_output_bytes.saturating_add(1));
        return Err(Reject::OutputTooLarge {
            at_least,
            limit: limits.max_output_bytes,
        });
    }
    if let Some(e) = check.first_error {
        return Err(e);
    }
    let mut buf = Buf::new(limits.max_output_bytes, size);
    Walk::new(msg, args, limits, false).walk(&t.pieces, 2, &mut buf)?;
    Ok(buf.into_string())
}

pub fn render(msg: &str, args: Args<'_>, limits: &Limits) -> Result<String, Reject> {
    render_parsed(&parse(msg, limits.max_fields), msg, args, limits)
}

#[cfg(test)]
mod tests;
