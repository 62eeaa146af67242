//! Checks of single values against what a key accepts: durations, numbers in a range, names,
//! absolute paths. Each returns the key's default when the value is absent, or a
//! [`FieldError`] that names the key, the accepted range and what was found, so every section
//! reports a bad value in the same words.

use std::fmt::Display;
use std::path::Path;
use std::time::Duration;

use health_daemon::FieldError;

pub(super) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub(super) fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A humantime duration (`"500ms"`, `"2s"`) within `min..=max`.
pub(super) fn duration(
    key: &str,
    v: Option<&str>,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, FieldError> {
    let Some(s) = v else { return Ok(default) };
    let d = humantime::parse_duration(s).map_err(|e| {
        FieldError::new(
            key,
            format!("expected a duration like \"500ms\" or \"2s\", found {s:?} ({e})"),
        )
    })?;
    if d < min || d > max {
        return Err(FieldError::new(
            key,
            format!(
                "expected a duration between {} and {}, found {s:?}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        ));
    }
    Ok(d)
}

/// A fraction in (0, 1].
pub(super) fn ratio(key: &str, v: Option<f64>, default: f64) -> Result<f64, FieldError> {
    let Some(x) = v else { return Ok(default) };
    if !(x > 0.0 && x <= 1.0) {
        return Err(FieldError::new(
            key,
            format!("expected a ratio in (0, 1], found {x}"),
        ));
    }
    Ok(x)
}

/// A number a key accepts within a range, and how an error names its kind.
pub(super) trait Bounded: PartialOrd + Display + Copy {
    const WHAT: &'static str;
}

impl Bounded for f64 {
    const WHAT: &'static str = "a number";
}

impl Bounded for u64 {
    const WHAT: &'static str = "an integer";
}

/// A number within `min..=max`; written so that a NaN is outside every range.
pub(super) fn range<T: Bounded>(
    key: &str,
    v: Option<T>,
    default: T,
    min: T,
    max: T,
) -> Result<T, FieldError> {
    let Some(x) = v else { return Ok(default) };
    if !(x >= min && x <= max) {
        return Err(FieldError::new(
            key,
            format!("expected {} between {min} and {max}, found {x}", T::WHAT),
        ));
    }
    Ok(x)
}

/// An optional bit width (`bits`): absent stays absent, so the reader can fall back to what
/// the device reports.
pub(super) fn bits(key: &str, v: Option<u64>, max: u64) -> Result<Option<u32>, FieldError> {
    v.map(|b| range(key, Some(b), 8, 1, max).map(|b| b as u32))
        .transpose()
}

/// A device id or id prefix: 1..=max characters of `[A-Za-z0-9._-]`.
pub(super) fn name(key: &str, v: &str, max: usize) -> Result<(), FieldError> {
    let ok = !v.is_empty()
        && v.len() <= max
        && v.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            key,
            format!("expected 1-{max} characters of [A-Za-z0-9._-], found {v:?}"),
        ))
    }
}

/// A path the agent opens from wherever systemd starts it, so it must not be relative.
pub(super) fn absolute(key: &str, p: &Path) -> Result<(), FieldError> {
    if p.is_absolute() {
        Ok(())
    } else {
        Err(FieldError::new(
            key,
            format!(
                "expected an absolute path, found {:?}",
                p.display().to_string()
            ),
        ))
    }
}
