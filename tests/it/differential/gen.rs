//! The case generator: random templates and args for each style, from a fixed seed.
//!
//! Every case is `(style, msg, args as JSON text)`, so the same cases can drive
//! `format::render` today and whole records (`{"msg":…, "args":…, "style":…}`) later.
//! Templates are built piece by piece, so the generator knows what it put in them: the
//! number of fields, every width and precision (literal, `*` argument or nested field) and
//! whether a field uses attribute access. From that it decides, per docs/record.md "Fine points",
//! which template-level limit wins (`attribute-access`, `too-many-fields`, then the first
//! over-limit width/precision in the template). Everything else — the output, CPython's
//! errors, and `output-too-large` (which needs the rendered length) — is CPython's call.
//!
//! Mix per style: ~70% well-formed cases (mostly within the limits), ~20% malformed ones
//! (truncated specs, bad conversions, unmatched braces, wrong arg counts and types,
//! missing keys), ~10% limit cases (over-limit widths/precisions, too many fields, huge
//! output, attribute access, and the exact boundaries that must still render).
//! Malformed cases keep widths small, so no limit can be in doubt when CPython raises.

use logfence::finding::Rule;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::pyjson::{float_text, quote};

/// One generated case.
#[derive(Clone, Debug)]
pub struct Case {
    /// `"%"`, `"{"` or `"$"` (the record's `style` field).
    pub style: &'static str,
    pub msg: String,
    /// The args as JSON text: what a record's `args` field would hold.
    pub args: String,
    /// The reject the template decides on its own; `None`: CPython decides (plus
    /// `output-too-large` when CPython's message is over 64 KiB).
    pub limit: Option<Rule>,
    /// Which generator made it (`clean`, `malformed`, `limit-width`, …), for the report.
    pub kind: &'static str,
}

/// The default limits the generator aims at (docs/rules.md).
pub const MAX_FIELDS: usize = 256;
pub const MAX_OUTPUT: usize = 64 << 10;

/// `n` cases of one style from `seed`. The stream of one style does not depend on the
/// others, so filtering by style reproduces the same cases.
pub fn cases(style: &'static str, n: usize, seed: u64) -> Vec<Case> {
    let salt = match style {
        "%" => 1,
        "{" => 2,
        _ => 3,
    };
    let mut g = G {
        literal_overs: false,
        no_nested: false,
        rng: ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt),
    };
    (0..n).map(|_| g.case(style)).collect()
}

/// A generated arg value, serialised to JSON text at the end.
#[derive(Clone, Debug)]
enum J {
    Null,
    Bool(bool),
    /// Decimal text, any size.
    Int(String),
    Float(f64),
    Str(String),
    List(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    fn int(i: i64) -> J {
        J::Int(i.to_string())
    }

    fn text(&self, out: &mut String) {
        match self {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Int(t) => out.push_str(t),
            J::Float(f) => out.push_str(&float_text(*f)),
            J::Str(s) => quote(s, out),
            J::List(xs) => {
                out.push('[');
                for (i, x) in xs.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    x.text(out);
                }
                out.push(']');
            }
            J::Obj(kv) => {
                out.push('{');
                for (i, (k, x)) in kv.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    quote(k, out);
                    out.push_str(": ");
                    x.text(out);
                }
                out.push('}');
            }
        }
    }

    fn to_text(&self) -> String {
        let mut s = String::new();
        self.text(&mut s);
        s
    }

    fn is_container(&self) -> bool {
        matches!(self, J::List(_) | J::Obj(_))
    }
}

/// What a template under construction holds.
#[derive(Default)]
struct Build {
    msg: String,
    /// Positional args, in the order the template consumes them.
    pos: Vec<J>,
    /// Named args (first occurrence wins the slot; the generator never repeats a key).
    named: Vec<(String, J)>,
    fields: usize,
    /// Over-limit widths/precisions, in template order.
    overs: Vec<Rule>,
    attr: bool,
}

impl Build {
    fn name_slot(&mut self, key: &str, v: impl FnOnce() -> J) {
        if !self.named.iter().any(|(k, _)| k == key) {
            self.named.push((key.to_string(), v()));
        }
    }

    fn limit(&self) -> Option<Rule> {
        if self.attr {
            Some(Rule::AttributeAccess)
        } else if self.fields > MAX_FIELDS {
            Some(Rule::TooManyFields)
        } else {
            self.overs.first().copied()
        }
    }
}

/// What a case is for: decides how specs are built.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Clean,
    Malformed,
    /// Clean, except that the spec at `at` gets an over-limit width/precision.
    Over {
        at: usize,
        width: bool,
        prec: bool,
    },
}

const WORDS: &[&str] = &[
    "user",
    "login",
    "failed",
    "for",
    "id",
    "took",
    "ms",
    "GET",
    "/api/v1/items",
    "ok",
    "error",
    "retry",
    "queue",
    "chat",
    "message",
    "sent",
    "to",
    "room",
    "=",
    ":",
    "-",
    "(",
    ")",
    "[",
    "]",
    "'",
    "\"",
    "\\",
    ",",
    ".",
    "42",
    "0x1f",
    "é",
    "ü",
    "ß",
    "ñ",
    "Ω",
    "中文",
    "日本語",
    "Ж",
    "ا",
    "אב",
    "€",
    "©",
    "…",
    "e\u{301}",
    "\u{200b}",
    "😀",
    "🎉",
    "👩\u{200d}💻",
    "🇫🇷",
    "❤\u{fe0f}",
    "𝄞",
    "\n",
    "\t",
    "\r",
    "\0",
    "\x07",
    "\x1b[31m",
    "\x7f",
    "\u{85}",
    "\u{2028}",
    "\u{202e}",
    "\u{2066}",
    "\u{feff}",
    " ",
    " ",
    " ",
    "  ",
];

const STR_BITS: &[&str] = &[
    "it's",
    "\"quoted\"",
    "'",
    "\"",
    "'\"",
    "\\",
    "\\n",
    "\\'",
    "%s",
    "%d",
    "{}",
    "{0}",
    "$a",
    "${x}",
    "%%",
    "{{",
    "a\nb",
    "tab\there",
    "\0",
    "\x1b[2J",
    "\u{7f}",
    "\u{85}",
    "\u{a0}",
    "\u{ad}",
    "\u{2028}",
    "\u{202e}",
    "\u{fffd}",
    "\u{10ffff}",
    "\u{e000}",
    "😀",
    "e\u{301}",
    "中文",
    "Ωμέγα",
    "ß",
    "İ",
    "ﬁ",
    "abc",
    "hello world",
    "x",
    "",
];

const PCT_NOISE: &[&str] = &[
    "{", "}", "{}", "{0}", "$", "$a", "${x}", "%%", "100%%", "%%d", "%%%%",
];
const BRACE_NOISE: &[&str] = &[
    "%", "%s", "%d", "$", "$a", "{{", "}}", "{{}}", "{{0}}", "100%", "%%",
];
const DOLLAR_NOISE: &[&str] = &[
    "%", "%s", "{", "}", "{}", "{0}", "$$", "$$a", "US$$5", "%%", "$${x}",
];

const KEYS: &[&str] = &[
    "a", "b", "name", "user id", "ü", "", "0", "x y", "a(b)", "k-1",
];
const IDENTS: &[&str] = &["a", "b", "name", "user_id", "_x", "A1", "who", "x0", "h"];
const INDEX_KEYS: &[&str] = &["a", "k", "name", "x y", "é"];

struct G {
    rng: ChaCha8Rng,
    /// Over-limit widths/precisions only as template literals (not `*` args or nested
    /// fields), so breaking the args cannot take the over-limit value away.
    literal_overs: bool,
    /// No nested fields: in malformed templates the args they read are shifted by the
    /// breakage, and a shifted float read as a whole spec (`-4.5e-23`) is a precision.
    no_nested: bool,
}

impl G {
    fn chance(&mut self, p: f64) -> bool {
        self.rng.gen_bool(p)
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.rng.gen_range(0..xs.len())]
    }

    fn pick_owned<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.rng.gen_range(0..xs.len())].clone()
    }

    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        self.rng.gen_range(lo..=hi)
    }

    fn case(&mut self, style: &'static str) -> Case {
        let r: f64 = self.rng.gen();
        if r < 0.70 {
            self.template(style, Mode::Clean, "clean")
        } else if r < 0.90 {
            self.template(style, Mode::Malformed, "malformed")
        } else {
            self.limit_case(style)
        }
    }

    // ---------------------------------------------------------------- values

    fn digits(&mut self, n: usize) -> String {
        let mut s = String::with_capacity(n + 1);
        if self.chance(0.3) {
            s.push('-');
        }
        s.push(char::from(b'1' + self.rng.gen_range(0..9u8)));
        for _ in 1..n {
            s.push(char::from(b'0' + self.rng.gen_range(0..10u8)));
        }
        s
    }

    fn int_val(&mut self) -> J {
        let r: f64 = self.rng.gen();
        if r < 0.40 {
            J::int(self.range(0, 100))
        } else if r < 0.55 {
            J::int(self.range(-100, -1))
        } else if r < 0.65 {
            J::int(self.rng.gen::<i32>() as i64)
        } else if r < 0.75 {
            J::Int(
                self.pick(&[
                    "0",
                    "-0",
                    "9223372036854775807",
                    "-9223372036854775808",
                    "9223372036854775808",
                    "18446744073709551615",
                    "18446744073709551616",
                    "-18446744073709551617",
                    "1000000",
                    "-1",
                    "255",
                    "65535",
                    "1114111",
                ])
                .to_string(),
            )
        } else if r < 0.85 {
            J::int(self.rng.gen::<i64>())
        } else if r < 0.96 {
            let n = self.rng.gen_range(20..60);
            J::Int(self.digits(n))
        } else if r < 0.995 {
            let n = self.rng.gen_range(60..400);
            J::Int(self.digits(n))
        } else {
            // Around CPython's 4,300-digit rule: 4,300 digits print, 4,301 raise.
            let n = self.rng.gen_range(4295..4310);
            J::Int(self.digits(n))
        }
    }

    #[allow(clippy::excessive_precision)] // 9.999999999999999e22: a repr edge, on purpose
    fn float_val(&mut self) -> f64 {
        const SPECIAL: &[f64] = &[
            0.1,
            1e20,
            1e-5,
            -0.0,
            0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            2.9802322387695312e-8, // 2**-25
            1e16,
            1e15,
            1e17,
            123456789.125,
            0.5,
            1.5,
            2.5,
            -2.5,
            5e-324,
            f64::MAX,
            f64::MIN_POSITIVE,
            1e22,
            1e23,
            1e-7,
            std::f64::consts::PI,
            100.0,
            1.0,
            -1.0,
            12345.678,
            0.3,
            2.675,
            1e300,
            9.999999999999999e22,
            0.00001234,
            -1e-300,
            123456789012345680.0,
            0.125,
            999999.5,
            9.5,
            0.05,
        ];
        let r: f64 = self.rng.gen();
        if r < 0.35 {
            self.pick(SPECIAL)
        } else if r < 0.55 {
            f64::from_bits(self.rng.gen())
        } else {
            let m = self.range(-1_000_000, 1_000_000) as f64;
            let k = self.rng.gen_range(0..7);
            m / 10f64.powi(k)
        }
    }

    fn str_val(&mut self) -> String {
        let r: f64 = self.rng.gen();
        let n = if r < 0.1 {
            0
        } else if r < 0.9 {
            self.rng.gen_range(1..5)
        } else {
            self.rng.gen_range(20..120)
        };
        let mut s = String::new();
        for _ in 0..n {
            if self.chance(0.5) {
                s.push_str(self.pick(STR_BITS));
            } else {
                s.push_str(self.pick(WORDS));
            }
        }
        s
    }

    fn any_val(&mut self, depth: usize) -> J {
        let r = self.rng.gen_range(0..100);
        match r {
            0..=29 => J::Str(self.str_val()),
            30..=54 => self.int_val(),
            55..=74 => J::Float(self.float_val()),
            75..=79 => J::Bool(self.chance(0.5)),
            80..=84 => J::Null,
            85..=92 if depth < 3 => {
                let n = self.rng.gen_range(0..4);
                J::List((0..n).map(|_| self.any_val(depth + 1)).collect())
            }
            93..=99 if depth < 3 => {
                let n = self.rng.gen_range(0..4);
                let mut kv: Vec<(String, J)> = Vec::new();
                for _ in 0..n {
                    let k = if self.chance(0.7) {
                        self.pick(KEYS).to_string()
                    } else {
                        self.str_val()
                    };
                    let v = self.any_val(depth + 1);
                    kv.push((k, v));
                }
                J::Obj(kv)
            }
            _ => J::Str(self.str_val()),
        }
    }

    fn scalar_val(&mut self) -> J {
        loop {
            let v = self.any_val(3);
            if !v.is_container() {
                return v;
            }
        }
    }

    /// A scalar that is no over-limit width wherever it lands.
    fn small_scalar(&mut self) -> J {
        match self.rng.gen_range(0..5) {
            0 => J::Str(self.str_val()),
            1 => J::int(self.range(-50, 50)),
            2 => J::Float(self.float_val()),
            3 => J::Bool(self.chance(0.5)),
            _ => J::Null,
        }
    }

    /// A code point `%c`/`{:c}` can print (no surrogates: JSON output cannot carry them).
    fn code_point(&mut self) -> i64 {
        let r: f64 = self.rng.gen();
        if r < 0.5 {
            self.range(32, 126)
        } else if r < 0.7 {
            self.range(0, 31)
        } else if r < 0.9 {
            self.range(0xA0, 0xD7FF)
        } else {
            self.range(0xE000, 0x10FFFF)
        }
    }

    // ---------------------------------------------------------------- text

    fn literal(&mut self, style: &str) -> String {
        let n = self.rng.gen_range(0..4);
        let mut s = String::new();
        for _ in 0..n {
            let r: f64 = self.rng.gen();
            if r < 0.8 {
                s.push_str(self.pick(WORDS));
            } else {
                s.push_str(match style {
                    "%" => self.pick(PCT_NOISE),
                    "{" => self.pick(BRACE_NOISE),
                    _ => self.pick(DOLLAR_NOISE),
                });
            }
        }
        s
    }

    fn small_width(&mut self) -> u64 {
        let r: f64 = self.rng.gen();
        if r < 0.7 {
            self.rng.gen_range(0..12)
        } else if r < 0.95 {
            self.rng.gen_range(12..60)
        } else {
            self.rng.gen_range(60..300)
        }
    }

    fn small_prec(&mut self) -> u64 {
        let r: f64 = self.rng.gen();
        if r < 0.8 {
            self.rng.gen_range(0..8)
        } else if r < 0.98 {
            self.rng.gen_range(8..40)
        } else {
            // long float expansions, up to the limit itself
            self.rng.gen_range(100..=4096)
        }
    }

    /// An over-limit width/precision, as template text.
    fn over_text(&mut self) -> String {
        let t = self.pick(&[
            "4097",
            "5000",
            "10000",
            "65536",
            "99999",
            "2400000000",
            "4294967296",
            "99999999999999999999",
            "18446744073709551616",
            "000004097",
        ]);
        t.to_string()
    }

    /// An over-limit `*` / nested-field value.
    fn over_int(&mut self, allow_negative: bool) -> J {
        let t = self.pick(&["4097", "5000", "65536", "2400000000", "9223372036854775807"]);
        if allow_negative && self.chance(0.3) {
            J::Int(format!("-{t}"))
        } else {
            J::Int(t.to_string())
        }
    }

    // ---------------------------------------------------------------- cases

    fn template(&mut self, style: &'static str, mode: Mode, kind: &'static str) -> Case {
        let mut b = Build::default();
        let args = match style {
            "%" => self.percent(&mut b, mode),
            "{" => self.brace(&mut b, mode),
            _ => self.dollar(&mut b, mode),
        };
        Case {
            style,
            msg: b.msg.clone(),
            args: args.to_text(),
            limit: b.limit(),
            kind,
        }
    }

    fn limit_case(&mut self, style: &'static str) -> Case {
        let r: f64 = self.rng.gen();
        if style == "$" {
            // `$` has no widths: fields and output are its limits.
            return if r < 0.45 {
                {
                    let n = self.rng.gen_range(257..320);
                    self.many_fields(style, n, "limit-fields")
                }
            } else if r < 0.55 {
                self.many_fields(style, MAX_FIELDS, "boundary-fields")
            } else if r < 0.85 {
                self.big_output(style)
            } else {
                self.boundary_output(style)
            };
        }
        if self.chance(0.15) {
            return self.over_broken(style);
        }
        let n_specs = self.rng.gen_range(1..5);
        let at = self.rng.gen_range(0..n_specs);
        if r < 0.35 {
            let prec = self.chance(0.2);
            self.template_n(
                style,
                Mode::Over {
                    at,
                    width: true,
                    prec,
                },
                "limit-width",
                n_specs,
            )
        } else if r < 0.60 {
            let width = self.chance(0.2);
            self.template_n(
                style,
                Mode::Over {
                    at,
                    width,
                    prec: true,
                },
                "limit-precision",
                n_specs,
            )
        } else if r < 0.72 {
            {
                let n = self.rng.gen_range(257..320);
                self.many_fields(style, n, "limit-fields")
            }
        } else if r < 0.76 {
            self.many_fields(style, MAX_FIELDS, "boundary-fields")
        } else if r < 0.86 {
            self.big_output(style)
        } else if r < 0.90 {
            self.boundary_output(style)
        } else if style == "{" && r < 0.95 {
            self.attribute(style)
        } else {
            self.boundary_wp(style)
        }
    }

    /// An over-limit literal width/precision in a template whose args CPython would
    /// refuse anyway: the limit wins (docs/record.md "Fine points").
    fn over_broken(&mut self, style: &'static str) -> Case {
        let n = self.rng.gen_range(1..5);
        let at = self.rng.gen_range(0..n);
        let (width, prec) = match self.rng.gen_range(0..3) {
            0 => (true, false),
            1 => (false, true),
            _ => (true, true),
        };
        self.literal_overs = true;
        let mut c = self.template_n(
            style,
            Mode::Over { at, width, prec },
            "limit-over-broken-args",
            n,
        );
        self.literal_overs = false;
        let args = super::pyjson::parse(&c.args).ok();
        c.args = match (self.rng.gen_range(0..3), args) {
            (0, Some(logfence::value::Value::List(xs))) if xs.len() > 1 => {
                // one arg too few
                let mut t = String::new();
                super::pyjson::to_text(
                    &logfence::value::Value::List(xs[..xs.len() - 1].to_vec()),
                    &mut t,
                );
                t
            }
            (1, _) => {
                "[null, null, null, null, null, null, null, null, null, null, null]".to_string()
            }
            _ => "\"one scalar\"".to_string(),
        };
        c
    }

    fn template_n(
        &mut self,
        style: &'static str,
        mode: Mode,
        kind: &'static str,
        n: usize,
    ) -> Case {
        let mut b = Build::default();
        let args = match style {
            "%" => self.percent_n(&mut b, mode, n, false),
            _ => self.brace_n(&mut b, mode, n, 0),
        };
        Case {
            style,
            msg: b.msg.clone(),
            args: args.to_text(),
            limit: b.limit(),
            kind,
        }
    }

    // ---------------------------------------------------------------- % style

    fn percent(&mut self, b: &mut Build, mode: Mode) -> J {
        let n = match self.rng.gen_range(0..10) {
            0 => 0,
            1..=4 => 1,
            5..=7 => 2,
            _ => self.rng.gen_range(3..7),
        };
        let mapping = self.chance(0.2);
        let mut args = self.percent_n(
            b,
            if mode == Mode::Malformed {
                Mode::Clean
            } else {
                mode
            },
            n,
            mapping,
        );
        if mode == Mode::Malformed {
            args = self.percent_break(b, args, mapping);
            if b.msg.contains('*') {
                // Once a template is broken, which arg a `*` reads is anyone's guess; a
                // big int there would make "width-too-large or CPython's error?" a
                // question the contract does not settle. Keep every top-level int small.
                args = tame_ints(args);
            }
        }
        args
    }

    /// `n` specs with literal text around them; returns the args.
    fn percent_n(&mut self, b: &mut Build, mode: Mode, n: usize, mapping: bool) -> J {
        b.msg.push_str(&self.literal("%"));
        for i in 0..n {
            self.percent_spec(b, mode, i, mapping);
            b.msg.push_str(&self.literal("%"));
        }
        if mapping {
            if b.named.is_empty() {
                b.named.push(("a".into(), self.any_val(1)));
            }
            return J::Obj(b.named.clone());
        }
        if b.pos.is_empty() {
            // No specs: CPython's "not all arguments converted", or a mapping it ignores.
            return match self.rng.gen_range(0..3) {
                0 => J::List(vec![self.any_val(1)]),
                1 => self.scalar_val(),
                _ => J::Obj(vec![("a".into(), self.any_val(1))]),
            };
        }
        if b.pos.len() == 1 && !b.pos[0].is_container() && self.chance(0.3) {
            return b.pos[0].clone();
        }
        J::List(b.pos.clone())
    }

    fn percent_spec(&mut self, b: &mut Build, mode: Mode, i: usize, mapping: bool) {
        const CONVS: &[char] = &[
            'd', 'i', 'o', 'u', 'x', 'X', 'e', 'E', 'f', 'F', 'g', 'G', 'c', 'r', 's', 'a', 's',
            's', 'd', 'r', 'f',
        ];
        let conv = self.pick(CONVS);
        let (over_w, over_p) = match mode {
            Mode::Over { at, width, prec } if at == i => (width, prec),
            _ => (false, false),
        };
        b.fields += 1;
        b.msg.push('%');
        let key = if mapping {
            let k = self.pick(KEYS);
            b.msg.push('(');
            b.msg.push_str(k);
            b.msg.push(')');
            Some(k)
        } else {
            None
        };
        for _ in 0..self.rng.gen_range(0..3) {
            b.msg.push(self.pick(&['#', '0', '-', '+', ' ']));
        }
        // width
        if over_w {
            if !mapping && !self.literal_overs && self.chance(0.4) {
                b.msg.push('*');
                let v = self.over_int(true);
                b.pos.push(v);
            } else {
                b.msg.push_str(&self.over_text());
            }
            b.overs.push(Rule::WidthTooLarge);
        } else {
            let r: f64 = self.rng.gen();
            if r < 0.55 {
            } else if r < 0.9 || mapping {
                let w = self.small_width();
                b.msg.push_str(&w.to_string());
            } else {
                b.msg.push('*');
                let w = match self.rng.gen_range(0..20) {
                    0 => J::Bool(true),
                    1 => J::Float(5.0),
                    2 => J::Str("5".into()),
                    _ => J::int(self.range(-30, 30)),
                };
                b.pos.push(w);
            }
        }
        // precision
        if over_p {
            b.msg.push('.');
            if !mapping && !self.literal_overs && self.chance(0.4) {
                b.msg.push('*');
                let v = self.over_int(false);
                b.pos.push(v);
            } else {
                b.msg.push_str(&self.over_text());
            }
            b.overs.push(Rule::PrecisionTooLarge);
        } else {
            let r: f64 = self.rng.gen();
            if r < 0.6 {
            } else if r < 0.7 {
                b.msg.push('.');
            } else if r < 0.93 || mapping {
                b.msg.push('.');
                let p = self.small_prec();
                b.msg.push_str(&p.to_string());
            } else {
                b.msg.push_str(".*");
                let p = self.range(-2, 20);
                b.pos.push(J::int(p));
            }
        }
        if self.chance(0.05) {
            b.msg.push(self.pick(&['h', 'l', 'L']));
        }
        b.msg.push(conv);
        let v = self.percent_value(conv);
        match key {
            Some(k) => b.name_slot(k, || v),
            None => b.pos.push(v),
        }
    }

    fn percent_value(&mut self, conv: char) -> J {
        let r: f64 = self.rng.gen();
        match conv {
            'd' | 'i' | 'u' => {
                if r < 0.75 {
                    self.int_val()
                } else if r < 0.95 {
                    J::Float(self.float_val())
                } else {
                    J::Bool(self.chance(0.5))
                }
            }
            'o' | 'x' | 'X' => {
                if r < 0.9 {
                    self.int_val()
                } else {
                    J::Bool(self.chance(0.5))
                }
            }
            'e' | 'E' | 'f' | 'F' | 'g' | 'G' => {
                if r < 0.65 {
                    J::Float(self.float_val())
                } else if r < 0.95 {
                    self.int_val()
                } else {
                    J::Bool(self.chance(0.5))
                }
            }
            'c' => {
                if r < 0.6 {
                    J::int(self.code_point())
                } else {
                    let c = self.pick(&["a", "é", "😀", "\n", "\u{202e}", "'", "中"]);
                    J::Str(c.to_string())
                }
            }
            _ => self.any_val(0),
        }
    }

    /// Breaks a clean `%` case in one of the ways CPython reports.
    fn percent_break(&mut self, b: &mut Build, args: J, mapping: bool) -> J {
        match self.rng.gen_range(0..10) {
            0 => {
                // truncated spec at the end
                let t = self.pick(&[
                    "%", "%5", "%-", "%.", "%.3", "%(a", "%(a)", "%(", "%#0", "%l", "%*",
                ]);
                b.msg.push_str(t);
                b.fields += 1;
                args
            }
            1 => {
                // bad conversion character
                let t = self.pick(&[
                    "%y", "%k", "%Ł", "%b", "%q", "%€", "%5%", "%-%", "%(a)%", "% ", "%\n", "%😀",
                    "%10%off",
                ]);
                let at = self.char_boundary(&b.msg);
                b.msg.insert_str(at, t);
                b.fields += 1;
                args
            }
            2 => {
                // one arg too few
                match args {
                    J::List(mut xs) if !xs.is_empty() => {
                        xs.pop();
                        if xs.is_empty() {
                            J::List(vec![J::Null, J::Null])
                        } else {
                            J::List(xs)
                        }
                    }
                    J::Obj(mut kv) if !kv.is_empty() => {
                        kv.remove(0);
                        if kv.is_empty() {
                            J::List(vec![J::int(1)])
                        } else {
                            J::Obj(kv)
                        }
                    }
                    other => J::List(vec![other.clone(), other]),
                }
            }
            3 => {
                // one arg too many
                match args {
                    J::List(mut xs) => {
                        xs.push(self.any_val(1));
                        J::List(xs)
                    }
                    J::Obj(kv) => J::List(kv.into_iter().map(|(_, v)| v).collect()),
                    other => J::List(vec![other, J::int(1)]),
                }
            }
            4 | 5 => {
                // wrong type for one spec
                b.msg.push_str(&self.literal("%"));
                let (t, v) = self
                    .pick_owned(&[
                        ("d", J::Str("12".into())),
                        ("x", J::Float(1.5)),
                        ("o", J::Null),
                        ("f", J::Str("1.0".into())),
                        ("e", J::List(vec![])),
                        ("c", J::Str("ab".into())),
                        ("c", J::Str("".into())),
                        ("c", J::int(0x110000)),
                        ("c", J::int(-1)),
                        ("c", J::Float(65.0)),
                        ("i", J::Obj(vec![])),
                        ("X", J::Str("ff".into())),
                        ("g", J::Null),
                        ("u", J::Str("x".into())),
                        ("*d", J::Str("5".into())),
                        (".*f", J::Float(2.0)),
                    ])
                    .clone();
                b.fields += 1;
                match args {
                    J::Obj(mut kv) if mapping && !t.contains('*') => {
                        b.msg.push_str("%(zz)");
                        b.msg.push_str(t);
                        kv.push(("zz".into(), v));
                        J::Obj(kv)
                    }
                    J::List(mut xs) => {
                        b.msg.push('%');
                        b.msg.push_str(t);
                        xs.push(v);
                        if t.contains('*') {
                            xs.push(J::int(1));
                        }
                        J::List(xs)
                    }
                    other => {
                        b.msg.push('%');
                        b.msg.push_str(t);
                        J::List(vec![other, v, J::int(1)])
                    }
                }
            }
            6 => {
                // missing key / mapping mixed with positional
                if mapping {
                    b.msg
                        .push_str(self.pick(&["%(missing)s", "%s", "%(a)s %s", "%*s"]));
                    b.fields += 1;
                    args
                } else {
                    b.msg.push_str(self.pick(&["%(a)s", "%(name)d"]));
                    b.fields += 1;
                    args
                }
            }
            7 => {
                // a tuple holding one object is not a mapping
                b.msg.push_str("%(a)s");
                b.fields += 1;
                J::List(vec![J::Obj(vec![("a".into(), J::int(1))])])
            }
            8 => {
                // a scalar arg against several specs / a list as the only arg
                b.msg.push_str(" %s %s");
                b.fields += 2;
                if self.chance(0.5) {
                    // small: it may land in a `*` width, where a big one is a limit
                    self.small_scalar()
                } else {
                    J::List(vec![J::List(vec![J::int(1), J::int(2)])])
                }
            }
            _ => {
                // unclosed key
                let t = self.pick(&["%(a", "%(a(b)s", "%((a)s", "%(a))s"]);
                b.msg.push_str(t);
                b.fields += 1;
                args
            }
        }
    }

    fn char_boundary(&mut self, s: &str) -> usize {
        let idx: Vec<usize> = s.char_indices().map(|(i, _)| i).chain([s.len()]).collect();
        self.pick(&idx)
    }

    // ---------------------------------------------------------------- { style

    fn brace(&mut self, b: &mut Build, mode: Mode) -> J {
        let n = match self.rng.gen_range(0..10) {
            0 => 0,
            1..=4 => 1,
            5..=7 => 2,
            _ => self.rng.gen_range(3..7),
        };
        let numbering = self.rng.gen_range(0..10);
        let inner = if mode == Mode::Malformed {
            Mode::Clean
        } else {
            mode
        };
        self.no_nested = mode == Mode::Malformed;
        let args = self.brace_n(b, inner, n, numbering);
        self.no_nested = false;
        if mode == Mode::Malformed {
            return self.brace_break(b, args, numbering);
        }
        args
    }

    /// `numbering`: 0..5 auto, 5..8 manual, 8..10 named.
    fn brace_n(&mut self, b: &mut Build, mode: Mode, n: usize, numbering: u32) -> J {
        let named = numbering >= 8;
        b.msg.push_str(&self.literal("{"));
        for i in 0..n {
            self.brace_field(b, mode, i, numbering);
            b.msg.push_str(&self.literal("{"));
        }
        if named {
            if b.named.is_empty() {
                b.named.push(("a".into(), self.any_val(1)));
            }
            return J::Obj(b.named.clone());
        }
        if b.pos.is_empty() {
            return match self.rng.gen_range(0..3) {
                0 => J::List(vec![self.any_val(1)]),
                1 => self.scalar_val(),
                _ => J::Obj(vec![("a".into(), self.any_val(1))]),
            };
        }
        if b.pos.len() == 1 && !b.pos[0].is_container() && self.chance(0.3) {
            return b.pos[0].clone();
        }
        J::List(b.pos.clone())
    }

    /// Names a new argument slot holding `v`: `""` (auto), an index, or a key.
    fn brace_slot(&mut self, b: &mut Build, numbering: u32, v: J) -> String {
        if numbering < 5 {
            b.pos.push(v);
            String::new()
        } else if numbering < 8 {
            b.pos.push(v);
            (b.pos.len() - 1).to_string()
        } else {
            let mut k = self.pick(IDENTS).to_string();
            while b.named.iter().any(|(x, _)| *x == k) {
                k.push('_');
            }
            b.named.push((k.clone(), v));
            k
        }
    }

    fn brace_field(&mut self, b: &mut Build, mode: Mode, i: usize, numbering: u32) {
        let (over_w, over_p) = match mode {
            Mode::Over { at, width, prec } if at == i => (width, prec),
            _ => (false, false),
        };
        b.fields += 1;
        // What the spec applies to: the value after index access and conversion.
        let mut value = self.any_val(1);
        let mut index = String::new();
        if self.chance(0.15) {
            // index access: build a container around the value
            let depth = if self.chance(0.2) { 2 } else { 1 };
            for _ in 0..depth {
                if self.chance(0.5) {
                    let k = self.rng.gen_range(0..3usize);
                    let mut xs: Vec<J> = (0..=k).map(|_| self.any_val(2)).collect();
                    xs[k] = value;
                    value = J::List(xs);
                    index = format!("[{k}]{index}");
                } else {
                    let k = self.pick(INDEX_KEYS);
                    value = J::Obj(vec![("z".into(), J::Null), (k.to_string(), value)]);
                    index = format!("[{k}]{index}");
                }
            }
        }
        let outer = value.clone();
        let formatted = self.unwrap_index(&outer, &index);
        let mut class = Class::of(&formatted);
        let conv = if self.chance(0.2) {
            class = Class::Str;
            Some(self.pick(&["r", "s", "a"]))
        } else {
            None
        };
        let name = self.brace_slot(b, numbering, outer);
        b.msg.push('{');
        b.msg.push_str(&name);
        b.msg.push_str(&index);
        if let Some(c) = conv {
            b.msg.push('!');
            b.msg.push_str(c);
        }
        let want_spec = over_w || over_p || (class != Class::Other && self.chance(0.55));
        if want_spec {
            b.msg.push(':');
            self.brace_spec(b, class, numbering, over_w, over_p);
        }
        b.msg.push('}');
    }

    fn unwrap_index(&self, v: &J, index: &str) -> J {
        let mut cur = v.clone();
        for part in index.split('[').skip(1) {
            let key = part.trim_end_matches(']');
            cur = match (&cur, key.parse::<usize>()) {
                (J::List(xs), Ok(k)) => xs.get(k).cloned().unwrap_or(J::Null),
                (J::Obj(kv), _) => kv
                    .iter()
                    .rev()
                    .find(|(x, _)| x == key)
                    .map(|(_, v)| v.clone())
                    .unwrap_or(J::Null),
                _ => J::Null,
            };
        }
        cur
    }

    /// A format spec for a value of `class`; widths/precisions literal or nested.
    fn brace_spec(
        &mut self,
        b: &mut Build,
        class: Class,
        numbering: u32,
        over_w: bool,
        over_p: bool,
    ) {
        // A spec with an over-limit literal has no nested field when the args will be
        // broken: a spec whose nested field fails has no precision to speak of.
        let no_nested_here = self.no_nested || ((over_w || over_p) && self.literal_overs);
        // A whole nested spec (`{:{}}`) now and then.
        if !over_w && !over_p && !self.no_nested && self.chance(0.06) {
            let spec = match class {
                Class::Str => self.pick(&[">10", "^7", ".3", "", "*<6", "s", "5.2"]),
                Class::Int => self.pick(&["+05d", ",", "x", "#o", "^+9", "_b", ""]),
                Class::Float => self.pick(&[".2f", "+.3e", "10.4g", "%", ",.1f", "z.1f", ""]),
                Class::Other => "",
            };
            self.nested(b, numbering, J::Str(spec.to_string()));
            return;
        }
        if over_w && !over_p && !self.literal_overs && self.chance(0.1) {
            // the over-limit width arrives through a whole nested spec
            let t = self.over_text();
            self.nested(b, numbering, J::Str(format!(">{t}")));
            b.overs.push(Rule::WidthTooLarge);
            return;
        }
        let numeric = matches!(class, Class::Int | Class::Float);
        if self.chance(0.35) {
            if self.chance(0.4) {
                let f = self.pick(&[' ', '*', '0', 'x', 'é', '😀', '-', '<', '=', '.']);
                b.msg.push(f);
            }
            let aligns: &[char] = if numeric {
                &['<', '>', '^', '=']
            } else {
                &['<', '>', '^']
            };
            b.msg.push(self.pick(aligns));
        }
        if numeric && self.chance(0.3) {
            b.msg.push(self.pick(&['+', '-', ' ']));
        }
        if class == Class::Float && self.chance(0.1) {
            b.msg.push('z');
        }
        if numeric && self.chance(0.15) {
            b.msg.push('#');
        }
        if numeric && self.chance(0.15) {
            b.msg.push('0');
        }
        // width
        if over_w {
            if !self.literal_overs && self.chance(0.35) {
                let v = self.over_int(false);
                self.nested(b, numbering, v);
            } else {
                b.msg.push_str(&self.over_text());
            }
            b.overs.push(Rule::WidthTooLarge);
        } else if self.chance(0.5) {
            if !no_nested_here && self.chance(0.15) {
                let w = self.small_width() as i64;
                self.nested(b, numbering, J::int(w));
            } else {
                b.msg.push_str(&self.small_width().to_string());
            }
        }
        let ty = match class {
            Class::Str => {
                if self.chance(0.3) {
                    Some('s')
                } else {
                    None
                }
            }
            Class::Int => {
                if self.chance(0.7) {
                    Some(self.pick(&[
                        'd', 'b', 'o', 'x', 'X', 'n', 'c', 'e', 'f', 'g', 'G', '%', 'E', 'F',
                    ]))
                } else {
                    None
                }
            }
            Class::Float => {
                if self.chance(0.75) {
                    Some(self.pick(&['e', 'E', 'f', 'F', 'g', 'G', 'n', '%']))
                } else {
                    None
                }
            }
            Class::Other => None,
        };
        // grouping
        if numeric && self.chance(0.2) {
            let g = match ty {
                Some('b' | 'o' | 'x' | 'X') => Some('_'),
                Some('n' | 'c') => None,
                _ => Some(self.pick(&[',', '_'])),
            };
            if let Some(g) = g {
                b.msg.push(g);
            }
        }
        // precision
        let prec_ok = match class {
            Class::Str => true,
            Class::Float => true,
            Class::Int => {
                matches!(ty, Some('e' | 'E' | 'f' | 'F' | 'g' | 'G' | '%') | None) && ty.is_some()
            }
            Class::Other => false,
        };
        if over_p {
            b.msg.push('.');
            if !self.literal_overs && self.chance(0.35) {
                let v = self.over_int(false);
                self.nested(b, numbering, v);
            } else {
                b.msg.push_str(&self.over_text());
            }
            b.overs.push(Rule::PrecisionTooLarge);
        } else if prec_ok && self.chance(0.35) {
            b.msg.push('.');
            if !no_nested_here && self.chance(0.15) {
                let p = self.small_prec() as i64;
                self.nested(b, numbering, J::int(p));
            } else {
                b.msg.push_str(&self.small_prec().to_string());
            }
        }
        if let Some(t) = ty {
            b.msg.push(t);
        }
    }

    /// A nested replacement field in a spec, holding `v`.
    fn nested(&mut self, b: &mut Build, numbering: u32, v: J) {
        b.fields += 1;
        let name = self.brace_slot(b, numbering, v);
        b.msg.push('{');
        b.msg.push_str(&name);
        b.msg.push('}');
    }

    fn brace_break(&mut self, b: &mut Build, args: J, numbering: u32) -> J {
        let auto = numbering < 5;
        match self.rng.gen_range(0..11) {
            0 => {
                let at = self.lone_brace_at(&b.msg);
                b.msg.insert(at, '{');
                args
            }
            1 => {
                let at = self.char_boundary(&b.msg);
                b.msg.insert(at, '}');
                args
            }
            2 => {
                b.msg.push_str(self.pick(&[
                    "{0!x}",
                    "{!}",
                    "{!rr}",
                    "{0!}",
                    "{!r:>{!}}",
                    "{0!R}",
                    "{!a!r}",
                ]));
                b.fields += 1;
                args
            }
            3 => {
                b.msg.push_str(self.pick(&[
                    "{", "{0", "{0:", "{0!", "{:", "{a", "{0[", "{0[1", "{:{}", "{:{",
                ]));
                b.fields += 1;
                args
            }
            4 | 5 => {
                // a spec the value's type refuses
                let (spec, v) = self
                    .pick_owned(&[
                        ("abc", J::Str("s".into())),
                        ("d", J::Str("s".into())),
                        (",s", J::Str("s".into())),
                        ("=5", J::Str("s".into())),
                        ("z", J::Str("s".into())),
                        ("z", J::int(1)),
                        (".5d", J::int(1)),
                        ("+s", J::Str("s".into())),
                        ("#s", J::Str("s".into())),
                        ("c", J::int(-1)),
                        ("c", J::int(0x110000)),
                        ("+c", J::int(65)),
                        ("x", J::Float(1.5)),
                        (",b", J::int(5)),
                        ("_n", J::int(5)),
                        (",n", J::Float(5.0)),
                        ("5.5.5", J::int(5)),
                        ("<<<", J::int(5)),
                        (">5", J::Null),
                        ("s", J::List(vec![])),
                        ("d", J::Float(1.0)),
                        ("e", J::Int("1".repeat(400))),
                        (",c", J::int(65)),
                        ("#c", J::int(65)),
                        ("=", J::Str("s".into())),
                        ("0=5", J::Str("s".into())),
                        ("05", J::Str("s".into())),
                        ("x<", J::int(5)),
                        ("\u{1}", J::int(5)),
                        (".", J::Float(1.0)),
                        ("1_000", J::int(5)),
                        (",_", J::int(5)),
                    ])
                    .clone();
                b.fields += 1;
                self.append_field(b, args, numbering, v, &format!(":{spec}"))
            }
            6 => {
                // index out of range / missing key
                b.fields += 1;
                if numbering >= 8 {
                    b.msg.push_str("{missing}");
                } else if auto {
                    b.msg.push_str("{}");
                } else {
                    b.msg.push_str("{9}");
                }
                match args {
                    J::List(mut xs) if !auto => {
                        xs.truncate(9);
                        J::List(xs)
                    }
                    other => other,
                }
            }
            7 => {
                // mixing automatic and manual numbering
                b.fields += 1;
                b.msg.push_str(if auto { "{0}" } else { "{}" });
                args
            }
            8 => {
                b.fields += 1;
                b.msg.push_str(self.pick(&[
                    "{0[}", "{0[]}", "{0[0}", "{0[a]b}", "{0]}", "{[}", "{0[0]x}", "{a[b][}",
                ]));
                args
            }
            9 => {
                // index access into the wrong type
                let (idx, v) = self
                    .pick_owned(&[
                        ("[0]", J::int(5)),
                        ("[x]", J::List(vec![J::int(1)])),
                        ("[5]", J::List(vec![J::int(1)])),
                        ("[0]", J::Obj(vec![("0".into(), J::int(1))])),
                        ("[-1]", J::List(vec![J::int(1)])),
                        ("[nope]", J::Obj(vec![("a".into(), J::int(1))])),
                        ("[0]", J::Null),
                        ("[1]", J::Str("ab".into())),
                    ])
                    .clone();
                b.fields += 1;
                self.append_field(b, args, numbering, v, idx)
            }
            _ => {
                // one positional arg too few
                match args {
                    J::List(mut xs) if xs.len() > 1 => {
                        xs.pop();
                        J::List(xs)
                    }
                    other => {
                        b.msg.push_str("{}{}");
                        b.fields += 2;
                        other
                    }
                }
            }
        }
    }

    /// Appends a field `{<slot><suffix>}` whose slot holds `v`, extending the args.
    fn append_field(&mut self, b: &mut Build, args: J, numbering: u32, v: J, suffix: &str) -> J {
        match args {
            J::List(mut xs) if numbering < 8 => {
                let name = if numbering < 5 {
                    String::new()
                } else {
                    xs.len().to_string()
                };
                if numbering < 5 && xs.len() != b.pos.len() {
                    // positional args were changed: fall back to an explicit index
                    b.msg.push_str(&format!("{{{}{suffix}}}", xs.len()));
                } else {
                    b.msg.push_str(&format!("{{{name}{suffix}}}"));
                }
                xs.push(v);
                J::List(xs)
            }
            J::Obj(mut kv) => {
                b.msg.push_str(&format!("{{zz{suffix}}}"));
                kv.push(("zz".into(), v));
                J::Obj(kv)
            }
            other => {
                // a scalar arg: it becomes `{0}`, the new one `{1}`
                b.msg.push_str(&format!("{{1{suffix}}}"));
                J::List(vec![other, v])
            }
        }
    }

    /// Where a lone `{` can go: anywhere, except where the text after it would read as a
    /// field name with a `.` (`{for.{x}` is CPython's "unexpected '{' in field name" but
    /// also attribute access, a question the contract does not settle). Else the end.
    fn lone_brace_at(&mut self, s: &str) -> usize {
        let at = self.char_boundary(s);
        let name_end = s[at..].find(['}', ':', '!']).map_or(s.len(), |i| at + i);
        if s[at..name_end].contains('.') {
            s.len()
        } else {
            at
        }
    }

    fn attribute(&mut self, style: &'static str) -> Case {
        let n = self.rng.gen_range(0..3);
        let mut c = self.template_n(style, Mode::Clean, "limit-attribute", n);
        let attr = self.pick(&[
            "{0.real}",
            "{0.__class__}",
            "{a.b}",
            "{0[0].x}",
            "{.imag}",
            "{0.__class__.__init__.__globals__}",
        ]);
        // At the start or the end: inserting mid-field would make a different template.
        if self.chance(0.5) {
            c.msg.insert_str(0, attr);
        } else {
            c.msg.push_str(attr);
        }
        c.limit = Some(Rule::AttributeAccess);
        if self.chance(0.2) {
            // attribute access outranks too many fields
            for _ in 0..300 {
                c.msg.push_str("{0}");
            }
        }
        c
    }

    // ---------------------------------------------------------------- $ style

    fn dollar(&mut self, b: &mut Build, mode: Mode) -> J {
        let n = match self.rng.gen_range(0..10) {
            0 => 0,
            1..=4 => 1,
            5..=7 => 2,
            _ => self.rng.gen_range(3..7),
        };
        b.msg.push_str(&self.literal("$"));
        for _ in 0..n {
            b.fields += 1;
            let k = self.pick(IDENTS);
            if self.chance(0.5) {
                b.msg.push_str(&format!("${{{k}}}"));
            } else {
                b.msg.push('$');
                b.msg.push_str(k);
                b.msg
                    .push(self.pick(&[' ', '.', ',', ':', '-', '/', '!', '\n', 'é']));
            }
            let v = self.any_val(0);
            b.name_slot(k, || v);
            b.msg.push_str(&self.literal("$"));
        }
        let mut args = if b.named.is_empty() || self.chance(0.05) {
            match self.rng.gen_range(0..3) {
                0 => J::List(vec![J::int(1)]),
                1 => self.scalar_val(),
                _ => J::Obj(vec![("a".into(), self.any_val(1))]),
            }
        } else {
            J::Obj(b.named.clone())
        };
        if mode == Mode::Malformed {
            match self.rng.gen_range(0..4) {
                0 | 1 => {
                    let t = self.pick(&[
                        "$", "$ ", "$1", "${1}", "${", "${a", "${a }", "$-", "${}", "$é", "${a-b}",
                        "$\n",
                    ]);
                    let at = self.char_boundary(&b.msg);
                    // never split an existing `$name`: insert where no `$` precedes directly
                    let at = if b.msg[..at].ends_with('$') {
                        b.msg.len()
                    } else {
                        at
                    };
                    b.msg.insert_str(at, t);
                    b.fields += 1;
                }
                2 => {
                    b.msg.push_str(" $missing");
                    b.fields += 1;
                }
                _ => {
                    b.msg.push_str(" $a");
                    b.fields += 1;
                    args = if self.chance(0.5) {
                        J::List(vec![J::Str("x".into())])
                    } else {
                        self.scalar_val()
                    };
                }
            }
        }
        args
    }

    // ---------------------------------------------------------------- limits

    fn many_fields(&mut self, style: &'static str, n: usize, kind: &'static str) -> Case {
        let mut msg = String::new();
        let mut fields = 0;
        let args;
        match style {
            "%" => {
                if self.chance(0.5) {
                    let mut xs = Vec::new();
                    while fields < n {
                        msg.push_str(self.pick(&["%s", "%d ", "%r,", "%%%s", "%5s"]));
                        xs.push(J::int(fields as i64));
                        fields += 1;
                    }
                    args = J::List(xs);
                } else {
                    while fields < n {
                        msg.push_str(self.pick(&["%(a)s", "%(b)d ", "%%(a)s%(a)s"]));
                        fields += 1;
                    }
                    args = J::Obj(vec![
                        ("a".into(), J::Str("x".into())),
                        ("b".into(), J::int(7)),
                    ]);
                }
            }
            "{" => {
                let mut xs = Vec::new();
                if self.chance(0.3) && n.is_multiple_of(2) {
                    // nested fields count: `{:{}}` is two
                    while fields < n {
                        msg.push_str("{:{}}");
                        xs.push(J::Str("v".into()));
                        xs.push(J::int(3));
                        fields += 2;
                    }
                } else {
                    while fields < n {
                        msg.push_str(self.pick(&["{}", "{} ", "{{}}{}", "{!r}"]));
                        xs.push(J::int(fields as i64));
                        fields += 1;
                    }
                }
                args = J::List(xs);
            }
            _ => {
                while fields < n {
                    msg.push_str(self.pick(&["$a", "${a}", "$$$b ", "${b}-"]));
                    fields += 1;
                }
                args = J::Obj(vec![
                    ("a".into(), J::Str("x".into())),
                    ("b".into(), J::int(7)),
                ]);
            }
        }
        let mut limit = if fields > MAX_FIELDS {
            Some(Rule::TooManyFields)
        } else {
            None
        };
        if limit.is_some() && style != "$" && self.chance(0.3) {
            // too-many-fields outranks an over-limit width
            msg.insert_str(0, if style == "%" { "%5000s" } else { "{:5000}" });
            limit = Some(Rule::TooManyFields);
            return self.with_extra_first_arg(style, msg, args, limit, kind);
        }
        Case {
            style,
            msg,
            args: args.to_text(),
            limit,
            kind,
        }
    }

    fn with_extra_first_arg(
        &mut self,
        style: &'static str,
        msg: String,
        args: J,
        limit: Option<Rule>,
        kind: &'static str,
    ) -> Case {
        let args = match args {
            J::List(mut xs) => {
                xs.insert(0, J::Str("w".into()));
                J::List(xs)
            }
            J::Obj(kv) => J::Obj(kv),
            other => other,
        };
        let msg = if style == "%" && matches!(args, J::Obj(_)) {
            msg.replacen("%5000s", "%(a)5000s", 1)
        } else {
            msg
        };
        Case {
            style,
            msg,
            args: args.to_text(),
            limit,
            kind,
        }
    }

    /// Renders to more than 64 KiB (CPython decides the length; no template limit applies).
    fn big_output(&mut self, style: &'static str) -> Case {
        let r = self.rng.gen_range(0..4);
        let (msg, args) = match (style, r) {
            ("%", 0) | ("{", 0) => {
                let n = self.rng.gen_range(17..30);
                let w = self.rng.gen_range(3900..=4096);
                let spec = if style == "%" {
                    format!("%{w}s|")
                } else {
                    format!("{{:{w}}}|")
                };
                (
                    spec.repeat(n),
                    J::List((0..n).map(|i| J::int(i as i64)).collect()),
                )
            }
            (_, 1) => {
                // multi-byte characters: bytes, not characters, are what counts
                let s = "中".repeat(self.rng.gen_range(21_900..23_000));
                (Self::one_field(style), J::List(vec![J::Str(s)]))
            }
            (_, 2) => {
                let s = "x".repeat(self.rng.gen_range(65_000..70_000));
                let prefix = "y".repeat(1000);
                (
                    format!("{prefix}{}", Self::one_field(style)),
                    J::List(vec![J::Str(s)]),
                )
            }
            _ => {
                // an int whose decimal form is over 64 KiB: output-too-large beats the
                // 4,300-digit ValueError
                let n = self.rng.gen_range(65_600..67_000);
                let d = self.digits(n);
                (Self::one_field(style), J::List(vec![J::Int(d)]))
            }
        };
        let mut args = if style == "$" {
            match args {
                J::List(xs) => J::Obj(vec![("a".into(), xs.into_iter().next().unwrap_or(J::Null))]),
                other => other,
            }
        } else {
            args
        };
        let msg = if style == "$" && r == 0 {
            args = J::Obj(vec![("a".into(), J::Str("w".repeat(4000)))]);
            "$a|".repeat(self.rng.gen_range(17..30))
        } else {
            msg
        };
        Case {
            style,
            msg,
            args: args.to_text(),
            limit: None,
            kind: "limit-output",
        }
    }

    fn one_field(style: &str) -> String {
        match style {
            "%" => "%s".into(),
            "{" => "{}".into(),
            _ => "$a".into(),
        }
    }

    /// Output of exactly 64 KiB (renders) or one byte more (refused).
    fn boundary_output(&mut self, style: &'static str) -> Case {
        let extra = self.rng.gen_range(0..2);
        let lit = "[é]";
        let fill = MAX_OUTPUT + extra - lit.len();
        let body = if self.chance(0.5) {
            "x".repeat(fill)
        } else {
            "ab€".repeat(fill / 5) + &"z".repeat(fill % 5)
        };
        let msg = format!("{lit}{}", Self::one_field(style));
        let args = if style == "$" {
            J::Obj(vec![("a".into(), J::Str(body))])
        } else {
            J::List(vec![J::Str(body)])
        };
        Case {
            style,
            msg,
            args: args.to_text(),
            limit: None,
            kind: "boundary-output",
        }
    }

    /// Width/precision exactly at the limit: must render.
    fn boundary_wp(&mut self, style: &'static str) -> Case {
        let pct = style == "%";
        let (msg, args) = match self.rng.gen_range(0..4) {
            0 => (
                if pct {
                    "%4096s|%-4096d"
                } else {
                    "{:4096}|{:<4096}"
                },
                J::List(vec![J::Str("a".into()), J::int(7)]),
            ),
            1 => (
                if pct { "%.4096f" } else { "{:.4096f}" },
                J::List(vec![J::Float(self.float_val())]),
            ),
            2 => (
                if pct { "%*.*s" } else { "{2:>{0}.{1}}" },
                J::List(vec![
                    J::int(if pct { -4096 } else { 4096 }),
                    J::int(4096),
                    J::Str("abc".into()),
                ]),
            ),
            _ => (
                if pct {
                    "%.4096s%.4096r"
                } else {
                    "{:.4096}{!r:.4096}"
                },
                J::List(vec![J::Str("q".repeat(5000)), J::Str("'".into())]),
            ),
        };
        Case {
            style,
            msg: msg.into(),
            args: args.to_text(),
            limit: None,
            kind: "boundary-wp",
        }
    }
}

/// `args` with every top-level int that could be an over-limit `*` width made small.
fn tame_ints(args: J) -> J {
    fn tame(v: J) -> J {
        match v {
            J::Int(t) if t.trim_start_matches('-').len() > 3 => J::Int((t.len() % 50).to_string()),
            other => other,
        }
    }
    match args {
        J::List(xs) => J::List(xs.into_iter().map(tame).collect()),
        other => tame(other),
    }
}

/// What kind of value a spec formats, for building specs CPython accepts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    Str,
    Int,
    Float,
    Other,
}

impl Class {
    fn of(v: &J) -> Class {
        match v {
            J::Str(_) => Class::Str,
            J::Int(_) | J::Bool(_) => Class::Int,
            J::Float(_) => Class::Float,
            _ => Class::Other,
        }
    }
}
