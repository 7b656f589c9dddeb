//! Rule ids, severities and findings (docs/rules.md). Rule ids are a stable contract.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Whether a finding blocks a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// The record is not formatted; its fallback line is written instead.
    Reject,
    /// Explains; never blocks.
    Warn,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Reject => "reject",
            Severity::Warn => "warn",
        }
    }
}

/// Every rule id of docs/rules.md. The reject rules are declared in precedence order: when
/// several apply to one record, the first one wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    BodyTooLarge,
    JsonTooDeep,
    AttributeAccess,
    TooManyFields,
    WidthTooLarge,
    PrecisionTooLarge,
    OutputTooLarge,
    FormatError,
    AllocBudget,
    Timeout,
    Crash,
    DeliveryLimit,
    ControlChars,
    BidiControl,
    LookupSyntax,
    InvalidUtf8,
    FormatLikeText,
}

impl Rule {
    /// Every rule, in declaration order.
    pub const ALL: [Rule; 17] = [
        Rule::BodyTooLarge,
        Rule::JsonTooDeep,
        Rule::AttributeAccess,
        Rule::TooManyFields,
        Rule::WidthTooLarge,
        Rule::PrecisionTooLarge,
        Rule::OutputTooLarge,
        Rule::FormatError,
        Rule::AllocBudget,
        Rule::Timeout,
        Rule::Crash,
        Rule::DeliveryLimit,
        Rule::ControlChars,
        Rule::BidiControl,
        Rule::LookupSyntax,
        Rule::InvalidUtf8,
        Rule::FormatLikeText,
    ];

    /// The stable kebab-case id.
    pub fn id(self) -> &'static str {
        match self {
            Rule::BodyTooLarge => "body-too-large",
            Rule::JsonTooDeep => "json-too-deep",
            Rule::AttributeAccess => "attribute-access",
            Rule::TooManyFields => "too-many-fields",
            Rule::WidthTooLarge => "width-too-large",
            Rule::PrecisionTooLarge => "precision-too-large",
            Rule::OutputTooLarge => "output-too-large",
            Rule::FormatError => "format-error",
            Rule::AllocBudget => "alloc-budget",
            Rule::Timeout => "timeout",
            Rule::Crash => "crash",
            Rule::DeliveryLimit => "delivery-limit",
            Rule::ControlChars => "control-chars",
            Rule::BidiControl => "bidi-control",
            Rule::LookupSyntax => "lookup-syntax",
            Rule::InvalidUtf8 => "invalid-utf8",
            Rule::FormatLikeText => "format-like-text",
        }
    }

    pub fn from_id(id: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.id() == id)
    }

    pub fn severity(self) -> Severity {
        match self {
            Rule::ControlChars
            | Rule::BidiControl
            | Rule::LookupSyntax
            | Rule::InvalidUtf8
            | Rule::FormatLikeText => Severity::Warn,
            _ => Severity::Reject,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// One thing found about a record. Serialized as docs/rules.md shows it:
/// `{"rule", "severity", "offset", "detail"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub rule: Rule,
    /// Always `rule.severity()`; carried so the JSON report is self-describing.
    pub severity: Severity,
    /// Byte offset into `msg` where the finding starts; `None` when it is elsewhere.
    pub offset: Option<usize>,
    /// Human explanation: for `format-error`, CPython's `Type: message`.
    pub detail: String,
}

impl Finding {
    pub fn new(rule: Rule, offset: Option<usize>, detail: impl Into<String>) -> Self {
        Finding {
            rule,
            severity: rule.severity(),
            offset,
            detail: detail.into(),
        }
    }
}

/// Sorts findings as docs/rules.md lists them: by offset (nulls last), then rule id.
pub fn sort_findings(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        let key = |f: &Finding| (f.offset.is_none(), f.offset.unwrap_or(0));
        key(a)
            .cmp(&key(b))
            .then_with(|| a.rule.id().cmp(b.rule.id()))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ids_round_trip_through_serde_and_from_id() {
        for rule in Rule::ALL {
            let json = serde_json::to_string(&rule).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", rule.id()));
            assert_eq!(Rule::from_id(rule.id()), Some(rule));
        }
    }

    #[test]
    fn findings_sort_by_offset_nulls_last_then_rule() {
        let mut v = vec![
            Finding::new(Rule::ControlChars, None, ""),
            Finding::new(Rule::LookupSyntax, Some(5), ""),
            Finding::new(Rule::BidiControl, Some(5), ""),
            Finding::new(Rule::FormatLikeText, Some(1), ""),
        ];
        sort_findings(&mut v);
        let rules: Vec<_> = v.iter().map(|f| f.rule).collect();
        assert_eq!(
            rules,
            [
                Rule::FormatLikeText,
                Rule::BidiControl,
                Rule::LookupSyntax,
                Rule::ControlChars
            ]
        );
    }
}
