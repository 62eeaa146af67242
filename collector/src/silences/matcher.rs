//! Silence matchers with Alertmanager's semantics, so `silenced_by` on an alert says what
//! Alertmanager itself would: `=` and `!=` compare the label's value (a missing label has the
//! empty value), `=~` and `!~` match a regular expression anchored at both ends.

use std::collections::BTreeMap;

use health_proto::v1::SilenceMatcher;
use regex::Regex;

/// The labels the collector's alerts carry in Alertmanager; a matcher may name only these.
pub const ALERT_LABELS: [&str; 8] = [
    "alertname",
    "node",
    "subject",
    "device",
    "severity",
    "code",
    "priority",
    "escalated",
];
/// Longest matcher value accepted (a regex is compiled from it).
const MAX_VALUE: usize = 1024;

/// A checked matcher: its regex compiled once.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub spec: SilenceMatcher,
    regex: Option<Regex>,
}

impl Matcher {
    /// Checks one matcher of a request; the error names it by its position (`matchers[1]`).
    pub fn new(spec: SilenceMatcher, index: usize) -> Result<Matcher, String> {
        let at = format!("matchers[{index}]");
        if !ALERT_LABELS.contains(&spec.name.as_str()) {
            return Err(format!(
                "{at}.name: expected one of the alerts' labels ({}), found {:?}",
                ALERT_LABELS.join(", "),
                spec.name
            ));
        }
        if spec.value.is_empty() {
            return Err(format!("{at}.value: expected a value, found none"));
        }
        if spec.value.len() > MAX_VALUE {
            return Err(format!(
                "{at}.value: expected at most {MAX_VALUE} bytes, found {}",
                spec.value.len()
            ));
        }
        let regex = if spec.is_regex {
            let anchored = format!("^(?:{})$", spec.value);
            Some(Regex::new(&anchored).map_err(|e| {
                format!(
                    "{at}.value: expected a regular expression, found {:?}: {e}",
                    spec.value
                )
            })?)
        } else {
            None
        };
        Ok(Matcher { spec, regex })
    }

    /// Whether the label set satisfies this matcher.
    pub fn matches(&self, labels: &BTreeMap<&str, String>) -> bool {
        let value = labels
            .get(self.spec.name.as_str())
            .map_or("", String::as_str);
        let hit = match &self.regex {
            Some(regex) => regex.is_match(value),
            None => value == self.spec.value,
        };
        hit == self.spec.is_equal
    }
}

/// The matcher's operator as written: `=`, `!=`, `=~` or `!~`.
pub fn operator(m: &SilenceMatcher) -> &'static str {
    match (m.is_equal, m.is_regex) {
        (true, false) => "=",
        (false, false) => "!=",
        (true, true) => "=~",
        (false, true) => "!~",
    }
}

/// Whether every matcher matches (a silence's matchers are ANDed).
pub fn all_match(matchers: &[Matcher], labels: &BTreeMap<&str, String>) -> bool {
    !matchers.is_empty() && matchers.iter().all(|m| m.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(name: &str, value: &str, is_regex: bool, is_equal: bool) -> Matcher {
        Matcher::new(
            SilenceMatcher {
                name: name.into(),
                value: value.into(),
                is_regex,
                is_equal,
            },
            0,
        )
        .unwrap()
    }

    fn labels(pairs: &[(&'static str, &str)]) -> BTreeMap<&'static str, String> {
        pairs.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
    }

    #[test]
    fn equality_and_negation() {
        let l = labels(&[("alertname", "DeviceOverheating"), ("node", "n1")]);
        assert!(matcher("node", "n1", false, true).matches(&l));
        assert!(!matcher("node", "n2", false, true).matches(&l));
        assert!(matcher("node", "n2", false, false).matches(&l));
        assert!(!matcher("node", "n1", false, false).matches(&l));
        // A missing label has the empty value: `device!=x` matches an alert without a device.
        assert!(matcher("device", "x", false, false).matches(&l));
        assert!(!matcher("device", "x", false, true).matches(&l));
    }

    #[test]
    fn regexes_are_anchored_at_both_ends() {
        let l = labels(&[("node", "node-12")]);
        assert!(matcher("node", "node-1.*", true, true).matches(&l));
        assert!(!matcher("node", "node-1", true, true).matches(&l));
        assert!(!matcher("node", "ode-12", true, true).matches(&l));
        assert!(matcher("node", "a|node-12", true, true).matches(&l));
        assert!(!matcher("node", "node-.*", true, false).matches(&l));
    }

    #[test]
    fn all_matchers_must_match_and_none_match_nothing() {
        let l = labels(&[("alertname", "A"), ("node", "n1")]);
        let both = [
            matcher("alertname", "A", false, true),
            matcher("node", "n1", false, true),
        ];
        assert!(all_match(&both, &l));
        let one_off = [
            matcher("alertname", "A", false, true),
            matcher("node", "n2", false, true),
        ];
        assert!(!all_match(&one_off, &l));
        assert!(!all_match(&[], &l));
    }

    #[test]
    fn bad_matchers_are_named() {
        let e = Matcher::new(
            SilenceMatcher {
                name: "nod".into(),
                value: "x".into(),
                is_regex: false,
                is_equal: true,
            },
            2,
        )
        .unwrap_err();
        assert!(e.starts_with("matchers[2].name: expected one of"), "{e}");
        let e = Matcher::new(
            SilenceMatcher {
                name: "node".into(),
                value: "(".into(),
                is_regex: true,
                is_equal: true,
            },
            0,
        )
        .unwrap_err();
        assert!(
            e.starts_with("matchers[0].value: expected a regular expression"),
            "{e}"
        );
        let e = Matcher::new(
            SilenceMatcher {
                name: "node".into(),
                value: String::new(),
                is_regex: false,
                is_equal: true,
            },
            0,
        )
        .unwrap_err();
        assert!(e.contains("expected a value"), "{e}");
    }
}
