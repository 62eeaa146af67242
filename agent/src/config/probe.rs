//! `[probe]` and `[probe.known_answer]`: the solver probe's watched files and budgets, and the
//! known-answer device probe's schedule and thresholds.

use std::path::{Path, PathBuf};

use health_daemon::FieldError;
use solver_probe::report::SolverSetting;

use super::check::{bits, duration, ms, range, secs};
use super::raw::{RawKnownAnswer, RawProbe};
use super::{KnownAnswerConfig, ProbeConfig};

pub(super) fn probe(p: RawProbe) -> Result<ProbeConfig, FieldError> {
    for (i, w) in p.watch.iter().enumerate() {
        if let Err(e) = glob::Pattern::new(w) {
            return Err(FieldError::new(
                format!("probe.watch[{i}]"),
                format!("expected a glob pattern, found {w:?} ({e})"),
            ));
        }
        if !Path::new(w).is_absolute() {
            return Err(FieldError::new(
                format!("probe.watch[{i}]"),
                format!("expected an absolute pattern, found {w:?}"),
            ));
        }
    }
    let dirs = p
        .dirs
        .unwrap_or_else(|| p.watch.iter().map(|w| fixed_prefix(w)).collect());
    Ok(ProbeConfig {
        watch: p.watch,
        dirs,
        interval: duration(
            "probe.interval",
            p.interval.as_deref(),
            secs(600),
            secs(1),
            secs(7 * 86400),
        )?,
        time_budget: duration(
            "probe.time_budget",
            p.time_budget.as_deref(),
            secs(60),
            ms(100),
            secs(3600),
        )?,
        max_bytes: range("probe.max_bytes", p.max_bytes, 2 << 30, 1 << 10, 64 << 30)? as usize,
        kappa_threshold: range(
            "probe.kappa_threshold",
            p.kappa_threshold,
            1e12,
            1.0 + f64::EPSILON,
            1e300,
        )?,
        bits: bits("probe.bits", p.bits, 64)?,
        read_noise: range("probe.read_noise", p.read_noise, 0.0, 0.0, 1.0)?,
        rtol: range("probe.rtol", p.rtol, 1e-8, 1e-16, 0.5)?,
        max_iter: range("probe.max_iter", p.max_iter, 10_000, 1, 10_000_000)? as usize,
        restart: range("probe.restart", p.restart, 30, 1, 10_000)? as usize,
        solver: SolverSetting::from_names(p.method.as_deref(), p.preconditioner.as_deref())
            .map_err(|e| {
                let (key, what) = e.split_once(": ").unwrap_or(("method", e.as_str()));
                FieldError::new(format!("probe.{key}"), what.to_string())
            })?,
        known_answer: known_answer(p.known_answer.unwrap_or_default())?,
    })
}

/// The deepest directory of a watch pattern without a wildcard: where on-demand probes of that
/// pattern's files may look, when `probe.dirs` is not set.
fn fixed_prefix(pattern: &str) -> PathBuf {
    let mut d = PathBuf::new();
    for part in Path::new(pattern).components() {
        if part.as_os_str().to_string_lossy().contains(['*', '?', '[']) {
            break;
        }
        d.push(part);
    }
    if d.as_os_str() == pattern {
        d.pop();
    }
    d
}

fn known_answer(k: RawKnownAnswer) -> Result<KnownAnswerConfig, FieldError> {
    let d = KnownAnswerConfig::default();
    let key = |k: &str| format!("probe.known_answer.{k}");
    Ok(KnownAnswerConfig {
        enabled: k.enabled.unwrap_or(d.enabled),
        interval: duration(
            &key("interval"),
            k.interval.as_deref(),
            d.interval,
            ms(200),
            secs(7 * 86400),
        )?,
        deadline: duration(
            &key("deadline"),
            k.deadline.as_deref(),
            d.deadline,
            ms(10),
            secs(60),
        )?,
        steps: range(&key("steps"), k.steps, d.steps as u64, 1, 100)? as usize,
        target_error: match k.target_error {
            None => d.target_error,
            Some(x) if (1e-13..=0.5).contains(&x) => x,
            // In exponent form: a tiny target printed positionally is unreadable.
            Some(x) => {
                return Err(FieldError::new(
                    key("target_error"),
                    format!("expected a relative error between 1e-13 and 0.5, found {x:e}"),
                ))
            }
        },
        drift_ratio: range(
            &key("drift_ratio"),
            k.drift_ratio,
            d.drift_ratio,
            1.05,
            1000.0,
        )?,
        bits: bits(&key("bits"), k.bits, 52)?,
    })
}
