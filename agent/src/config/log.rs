//! `[[log]]` rules: which log files (globs) or journald unit the log follower
//! (`host::logs`) reads, the pattern it looks for, and how many matching lines within which
//! window make a LOG_PATTERN condition. Parsed here with the rest of the configuration.
//!
//! The pattern is a `regex` crate expression: matching is linear in the line, so no pattern
//! an operator writes can make the follower spin on a hostile line.
//!
//! Errors are [`FieldError`]s naming `log[i].<key>`; the config loader adds the file.

use std::path::Path;
use std::time::Duration;

use health_daemon::FieldError;
use health_hal::Severity;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    name: String,
    paths: Option<Vec<String>>,
    journal_unit: Option<String>,
    pattern: String,
    count: Option<u64>,
    window: Option<String>,
    severity: Option<String>,
    max_line_bytes: Option<u64>,
}

/// Where a rule's lines come from.
#[derive(Debug, Clone, PartialEq)]
pub enum LogSource {
    /// Absolute glob patterns, expanded again on every pass so new files are picked up.
    Files(Vec<glob::Pattern>),
    /// A systemd unit, read through `journalctl -f -o json -u <unit>`.
    Journal(String),
}

/// A validated `[[log]]` rule.
#[derive(Debug, Clone)]
pub struct LogRule {
    /// The label in conditions and tables (`log:<name>`).
    pub name: String,
    pub source: LogSource,
    pub pattern: regex::Regex,
    /// This many matching lines within `window` raise the condition.
    pub count: u32,
    pub window: Duration,
    pub severity: Severity,
    /// A longer line is cut here; the rest of it up to its newline is skipped unbuffered.
    pub max_line_bytes: usize,
}

impl LogRule {
    pub fn subject(&self) -> String {
        format!("log:{}", self.name)
    }
}

/// Most matches a rule may ask for: the follower keeps one timestamp per match it counts.
const COUNT_MAX: u64 = 10_000;

fn duration(key: String, s: Option<&str>) -> Result<Duration, FieldError> {
    let Some(s) = s else {
        return Ok(Duration::from_secs(300));
    };
    let d = humantime::parse_duration(s).map_err(|e| {
        FieldError::new(
            &key,
            format!("expected a duration like \"5m\", found {s:?} ({e})"),
        )
    })?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(7 * 86400) {
        return Err(FieldError::new(
            &key,
            format!("expected a duration between 1s and 7days, found {s:?}"),
        ));
    }
    Ok(d)
}

fn source(i: usize, r: &RawLog) -> Result<LogSource, FieldError> {
    let key = |k: &str| format!("log[{i}].{k}");
    match (&r.paths, &r.journal_unit) {
        (Some(_), Some(_)) | (None, None) => Err(FieldError::new(
            key("paths"),
            "expected exactly one of paths (a list of file globs) or journal_unit",
        )),
        (Some(paths), None) => {
            if paths.is_empty() || paths.len() > 64 {
                return Err(FieldError::new(
                    key("paths"),
                    format!("expected 1-64 globs, found {}", paths.len()),
                ));
            }
            let mut globs = Vec::with_capacity(paths.len());
            for (j, p) in paths.iter().enumerate() {
                let k = format!("log[{i}].paths[{j}]");
                if !Path::new(p).is_absolute() {
                    return Err(FieldError::new(
                        &k,
                        format!("expected an absolute path or glob, found {p:?}"),
                    ));
                }
                // `**` walks through symlinked directories, and the follower re-expands the
                // glob every second: a symlink loop would stall every file rule.
                if p.contains("**") {
                    return Err(FieldError::new(
                        &k,
                        format!(
                            "expected a glob without ** (name each directory level), found {p:?}"
                        ),
                    ));
                }
                globs.push(glob::Pattern::new(p).map_err(|e| {
                    FieldError::new(&k, format!("expected a glob pattern, found {p:?} ({e})"))
                })?);
            }
            Ok(LogSource::Files(globs))
        }
        (None, Some(unit)) => {
            let ok = !unit.is_empty()
                && unit.len() <= 256
                && !unit.starts_with('-')
                && unit
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c));
            if ok {
                Ok(LogSource::Journal(unit.clone()))
            } else {
                Err(FieldError::new(
                    key("journal_unit"),
                    format!("expected a systemd unit name like \"analog-pde-solver.service\", found {unit:?}"),
                ))
            }
        }
    }
}

fn severity(key: String, s: Option<&str>) -> Result<Severity, FieldError> {
    match s {
        None | Some("warning") => Ok(Severity::Warning),
        Some("critical") => Ok(Severity::Critical),
        Some(other) => Err(FieldError::new(
            &key,
            format!("expected \"warning\" or \"critical\", found {other:?}"),
        )),
    }
}

/// Validates the `[[log]]` tables; errors name `log[i].<key>`.
pub fn validate(raw: Vec<RawLog>) -> Result<Vec<LogRule>, FieldError> {
    let mut rules: Vec<LogRule> = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("log[{i}].{k}");
        super::check::name(&key("name"), &r.name, 64)?;
        if rules.iter().any(|p| p.name == r.name) {
            return Err(FieldError::new(
                key("name"),
                format!("expected a unique name, found {:?} twice", r.name),
            ));
        }
        let source = source(i, &r)?;
        if r.pattern.is_empty() {
            return Err(FieldError::new(
                key("pattern"),
                "expected a regular expression, found \"\"",
            ));
        }
        let pattern = regex::RegexBuilder::new(&r.pattern)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| {
                // The regex crate's message spans lines (it draws a caret): keep one line.
                let why = e.to_string().lines().last().unwrap_or_default().to_string();
                FieldError::new(
                    key("pattern"),
                    format!(
                        "expected a regular expression, found {:?} ({})",
                        r.pattern,
                        why.trim()
                    ),
                )
            })?;
        let count = super::check::range(&key("count"), r.count, 1, 1, COUNT_MAX)? as u32;
        let window = duration(key("window"), r.window.as_deref())?;
        let severity = severity(key("severity"), r.severity.as_deref())?;
        let max_line_bytes = super::check::range(
            &key("max_line_bytes"),
            r.max_line_bytes,
            64 << 10,
            256,
            4 << 20,
        )? as usize;
        rules.push(LogRule {
            name: r.name,
            source,
            pattern,
            count,
            window,
            severity,
            max_line_bytes,
        });
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Tables {
        log: Vec<RawLog>,
    }

    fn rules(toml_text: &str) -> Result<Vec<LogRule>, FieldError> {
        let t: Tables = toml::from_str(toml_text).expect("valid [[log]] tables");
        validate(t.log)
    }

    #[test]
    fn defaults_and_both_sources() {
        let r = rules(
            "[[log]]\nname = \"spice\"\npaths = [\"/tmp/spice/*.err\"]\npattern = \"(?i)error\"\n\
             [[log]]\nname = \"solver\"\njournal_unit = \"analog-pde-solver.service\"\n\
             pattern = \"Traceback\"\ncount = 3\nwindow = \"1m\"\nseverity = \"critical\"\n",
        )
        .expect("valid");
        assert_eq!(r[0].count, 1);
        assert_eq!(r[0].window, Duration::from_secs(300));
        assert_eq!(r[0].severity, Severity::Warning);
        assert_eq!(r[0].max_line_bytes, 64 << 10);
        assert!(r[0].pattern.is_match("ERROR: timestep too small"));
        assert!(matches!(&r[0].source, LogSource::Files(g) if g[0].matches("/tmp/spice/a.err")));
        assert_eq!(
            r[1].source,
            LogSource::Journal("analog-pde-solver.service".into())
        );
        assert_eq!((r[1].count, r[1].severity), (3, Severity::Critical));
        assert_eq!(r[1].subject(), "log:solver");
    }

    #[test]
    fn bad_rules_name_the_key() {
        let cases = [
            (
                "name = \"a\"\npattern = \"x\"\n",
                "log[0].paths",
                "exactly one of",
            ),
            (
                "name = \"a\"\npaths = [\"/a\"]\njournal_unit = \"u\"\npattern = \"x\"\n",
                "log[0].paths",
                "exactly one of",
            ),
            (
                "name = \"a\"\npaths = [\"rel/*.err\"]\npattern = \"x\"\n",
                "log[0].paths[0]",
                "absolute",
            ),
            (
                "name = \"a\"\npaths = [\"/var/log/**/*.err\"]\npattern = \"x\"\n",
                "log[0].paths[0]",
                "without **",
            ),
            (
                "name = \"a\"\npaths = [\"/a\"]\npattern = \"(unclosed\"\n",
                "log[0].pattern",
                "regular expression",
            ),
            (
                "name = \"a\"\npaths = [\"/a\"]\npattern = \"x\"\ncount = 0\n",
                "log[0].count",
                "between 1 and 10000",
            ),
            (
                "name = \"a\"\npaths = [\"/a\"]\npattern = \"x\"\nseverity = \"page\"\n",
                "log[0].severity",
                "\"warning\" or \"critical\"",
            ),
            (
                "name = \"a\"\njournal_unit = \"-x\"\npattern = \"x\"\n",
                "log[0].journal_unit",
                "systemd unit",
            ),
        ];
        for (body, key, words) in cases {
            let e = rules(&format!("[[log]]\n{body}")).expect_err(body);
            assert_eq!(e.key, key, "{body}: {e:?}");
            assert!(e.message.contains(words), "{body}: {}", e.message);
            assert!(!e.message.contains('\n'), "one line: {}", e.message);
        }
        let e = rules(
            "[[log]]\nname = \"a\"\npaths = [\"/a\"]\npattern = \"x\"\n\
             [[log]]\nname = \"a\"\npaths = [\"/b\"]\npattern = \"y\"\n",
        )
        .expect_err("duplicate");
        assert_eq!(e.key, "log[1].name");
    }
}
