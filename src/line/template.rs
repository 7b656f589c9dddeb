// ---------------------------------------------------------------------------------------
// The line template
// ---------------------------------------------------------------------------------------

/// Why `--line-format` was refused at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineFormatError {
    /// The template does not parse, or fails to render even with string values.
    #[error("--line-format is not a valid format string: {0}")]
    Invalid(String),
    /// `{}` or `{0}`: the line template has only named fields.
    #[error("--line-format uses a positional field `{{{0}}}`: name a part (ts, level, logger, message) or a field")]
    Positional(String),
    /// `{a.b}`: refused like in messages.
    #[error("--line-format uses attribute access `{{{0}}}`, which is refused")]
    AttributeAccess(String),
}

/// The parsed, validated `--line-format`.
#[derive(Debug)]
pub struct LineTemplate {
    /// The template as given, for the record.
    source: String,
    /// Parsed once; rendered for every record.
    parsed: brace::Parsed,
    /// The record fields the template names (every name but the built-in parts): only
    /// these are converted and escaped for a record.
    field_names: Vec<String>,
    /// Bounds of one line: widths and precisions as in messages (checked at start-up, so a
    /// `{message:>2400000000}` is refused before the first record), output unbounded (the
    /// parts are already bounded by the body size).
    limits: Limits,
}

impl LineTemplate {
    pub fn new(fmt: &str) -> Result<LineTemplate, LineFormatError> {
        let limits = Limits { max_output_bytes: usize::MAX, ..Limits::default() };
        let parsed = brace::parse(fmt, &limits).map_err(|r| LineFormatError::Invalid(r.detail()))?;
        let mut field_names = Vec::new();
        for name in parsed.field_names() {
            let first = name.split(['.', '[']).next().unwrap_or("");
            if first.is_empty() || first.bytes().all(|c| c.is_ascii_digit()) {
                return Err(LineFormatError::Positional(name.to_string()));
            }
            if name.contains('.') && !name.contains('[') {
                return Err(LineFormatError::AttributeAccess(name.to_string()));
            }
            if !BUILTIN_NAMES.contains(&first) && !field_names.iter().any(|n| n == first) {
                field_names.push(first.to_string());
            }
        }
        let t = LineTemplate { source: fmt.to_string(), parsed, field_names, limits };
        // Every value is a string, so one trial render with strings finds every error that
        // a record could meet (`{level:d}`), except widths from a field's content.
        let mut mapping = IndexMap::new();
        for name in BUILTIN_NAMES.iter().copied().chain(t.field_names.iter().map(String::as_str)) {
            mapping.insert(name.to_string(), Value::Str("x".to_string()));
        }
        brace::render_parsed(&t.parsed, fmt, Args::Mapping(&mapping), &t.limits)
            .map_err(|r| match r {
                Reject::AttributeAccess { .. } => {
                    LineFormatError::AttributeAccess(fmt.to_string())
                }
                r => LineFormatError::Invalid(r.detail()),
            })?;
        Ok(t)
    }

    /// The template as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The text line of one record, without the newline.
    pub fn render(&self, parts: &LineParts<'_>) -> String {
        let mut mapping = IndexMap::with_capacity(BUILTIN_NAMES.len() + self.field_names.len());
        let level = upper(parts.level);
        for (name, part) in BUILTIN_NAMES.into_iter().zip([parts.ts, &level, parts.logger, parts.message])
        {
            mapping.insert(name.to_string(), Value::Str(escape(part).into_owned()));
        }
        for name in &self.field_names {
            let text = match parts.fields.and_then(|f| f.get(name)) {
                Some(v) => escape(&field_str(v)).into_owned(),
                None => String::new(),
            };
            mapping.insert(name.clone(), Value::Str(text));
        }
        match brace::render_parsed(&self.parsed, &self.source, Args::Mapping(&mapping), &self.limits)
        {
            Ok(line) => line,
            // Start-up validation makes this unreachable in practice; a record still gets
            // exactly one line, in the default layout.
            Err(_) => default_line(&mapping),
        }
    }
}

/// The default layout, built by hand from escaped parts.
fn default_line(mapping: &IndexMap<String, Value>) -> String {
    let get = |k: &str| match mapping.get(k) {
        Some(Value::Str(s)) => s.as_str(),
        _ => "",
    };
    let level = get("level");
    let pad = 5usize.saturating_sub(level.chars().count());
    let mut line = String::new();
    line.push_str(get("ts"));
    line.push(' ');
    line.push_str(level);
    line.extend(std::iter::repeat_n(' ', pad));
    line.push(' ');
    line.push_str(get("logger"));
    line.push_str(": ");
    line.push_str(get("message"));
    line
}

