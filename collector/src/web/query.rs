//! The page's query strings: paging and filters, each checked with an error that names the
//! parameter and what was expected (a bad link answers 400, never a panic or a guess).

use std::collections::HashMap;
use std::time::Duration;

/// At most this many rows per page: a page of the fleet stays small whatever its size.
pub const MAX_PER_PAGE: usize = 500;
const DEFAULT_PER_PAGE: usize = 50;

pub struct Params(pub HashMap<String, String>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    /// From 1.
    pub page: usize,
    pub per_page: usize,
}

impl Paging {
    /// The rows of this page, and the JSON fields that describe the paging.
    pub fn slice<'a, T>(&self, rows: &'a [T]) -> (&'a [T], serde_json::Value) {
        let start = (self.page - 1)
            .saturating_mul(self.per_page)
            .min(rows.len());
        let end = start.saturating_add(self.per_page).min(rows.len());
        let pages = rows.len().div_ceil(self.per_page).max(1);
        (
            &rows[start..end],
            serde_json::json!({
                "total": rows.len(),
                "page": self.page,
                "per_page": self.per_page,
                "pages": pages,
            }),
        )
    }
}

impl Params {
    pub fn text(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// A lower-cased substring filter (`q`).
    pub fn needle(&self) -> Option<String> {
        self.text("q").map(str::to_lowercase)
    }

    fn number(&self, name: &str, min: usize, max: usize, default: usize) -> Result<usize, String> {
        let Some(text) = self.text(name) else {
            return Ok(default);
        };
        match text.parse::<usize>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(format!(
                "{name}: expected a whole number from {min} to {max}, found {text:?}"
            )),
        }
    }

    pub fn paging(&self) -> Result<Paging, String> {
        Ok(Paging {
            page: self.number("page", 1, 1_000_000, 1)?,
            per_page: self.number("per_page", 1, MAX_PER_PAGE, DEFAULT_PER_PAGE)?,
        })
    }

    /// One of `allowed` (case-insensitive), or `None` when absent or `all`.
    pub fn choice(&self, name: &str, allowed: &[&str]) -> Result<Option<String>, String> {
        let Some(text) = self.text(name) else {
            return Ok(None);
        };
        let upper = text.to_ascii_uppercase();
        if upper == "ALL" {
            return Ok(None);
        }
        if allowed.iter().any(|a| a.eq_ignore_ascii_case(&upper)) {
            Ok(Some(upper))
        } else {
            Err(format!(
                "{name}: expected one of all, {}, found {text:?}",
                allowed.join(", ").to_ascii_lowercase()
            ))
        }
    }

    /// A look-back such as `24h` or `7d`, at most 90 days.
    pub fn since(&self, name: &str, default: Duration) -> Result<Duration, String> {
        let Some(text) = self.text(name) else {
            return Ok(default);
        };
        match humantime::parse_duration(text) {
            Ok(d) if d <= Duration::from_secs(90 * 24 * 3600) => Ok(d),
            _ => Err(format!(
                "{name}: expected a duration such as 24h or 7d, at most 90d, found {text:?}"
            )),
        }
    }

    pub fn flag(&self, name: &str) -> Result<bool, String> {
        match self.text(name) {
            None | Some("0") | Some("false") => Ok(false),
            Some("1") | Some("true") => Ok(true),
            Some(other) => Err(format!("{name}: expected true or false, found {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn paging_is_bounded_and_errors_name_the_parameter() {
        assert_eq!(
            params(&[]).paging(),
            Ok(Paging {
                page: 1,
                per_page: 50
            })
        );
        let e = params(&[("per_page", "5000")])
            .paging()
            .expect_err("too many");
        assert_eq!(
            e,
            "per_page: expected a whole number from 1 to 500, found \"5000\""
        );
        let e = params(&[("page", "-1")]).paging().expect_err("negative");
        assert!(e.starts_with("page: "), "{e}");
        let rows: Vec<u32> = (0..120).collect();
        let (rows_of_3, meta) = Paging {
            page: 3,
            per_page: 50,
        }
        .slice(&rows);
        assert_eq!(rows_of_3, &rows[100..120]);
        assert_eq!(meta["pages"], 3);
        let (beyond, _) = Paging {
            page: 9,
            per_page: 50,
        }
        .slice(&rows);
        assert!(beyond.is_empty());
    }

    #[test]
    fn choices_durations_and_flags() {
        let p = params(&[("state", "critical"), ("since", "2h"), ("open", "true")]);
        assert_eq!(
            p.choice("state", &["OK", "CRITICAL"]),
            Ok(Some("CRITICAL".to_string()))
        );
        assert_eq!(
            p.since("since", Duration::ZERO),
            Ok(Duration::from_secs(7200))
        );
        assert_eq!(p.flag("open"), Ok(true));
        let bad = params(&[("state", "purple"), ("since", "forever"), ("open", "yes")]);
        assert!(bad
            .choice("state", &["OK"])
            .expect_err("purple")
            .starts_with("state: expected one of all, ok"));
        assert!(bad
            .since("since", Duration::ZERO)
            .expect_err("forever")
            .starts_with("since: "));
        assert!(bad.flag("open").expect_err("yes").starts_with("open: "));
        assert_eq!(
            params(&[("state", "all")]).choice("state", &["OK"]),
            Ok(None)
        );
    }
}
