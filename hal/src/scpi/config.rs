//! [`ScpiBenchConfig`]: where a photonic bench's instruments are and how patiently to talk to
//! them. The agent embeds it as the `[device.scpi]` table of its TOML config, so field names
//! are the config keys and every validation error names its key.

use std::net::Ipv6Addr;
use std::time::Duration;

use crate::deadline::MinDeadlines;

/// The port SCPI-over-raw-socket instruments listen on by convention.
pub const DEFAULT_PORT: u16 = 5025;

/// Exchanges a calibration makes besides settling (contact, the TEC output, the reference
/// measurement), with margin; each may take the full `timeout_ms`.
const CALIBRATION_EXCHANGES: u32 = 20;

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScpiBenchConfig {
    /// TEC controller, `host:port` (port defaults to 5025). Required: it holds the chip's
    /// temperature and gives the bench its identity.
    pub tec: String,
    /// Optical power meter, `host[:port]`. Without it there is no optical power and no phase
    /// error estimate.
    #[serde(default)]
    pub power_meter: Option<String>,
    /// Tunable laser, `host[:port]`. Without it the bench cannot be disabled.
    #[serde(default)]
    pub laser: Option<String>,
    /// Bound on every connect, write and read, in milliseconds.
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    /// Calibration waits until |temperature - setpoint| is within this.
    #[serde(default = "defaults::settle_tolerance_celsius")]
    pub settle_tolerance_celsius: f64,
    /// ... held for this long.
    #[serde(default = "defaults::settle_window_ms")]
    pub settle_window_ms: u64,
    /// ... and gives up after this long.
    #[serde(default = "defaults::settle_timeout_ms")]
    pub settle_timeout_ms: u64,
    /// Wavelength the power meter's responsivity correction is set to (`SENS:CORR:WAV`), nm.
    #[serde(default)]
    pub wavelength_nm: Option<f64>,
    /// The TEC module's rated maximum voltage (V_max on its datasheet), V. With it the bench
    /// has a power limit, the TEC current limit times this (see [`super::power_limit`]);
    /// without it the bench offers none.
    #[serde(default)]
    pub tec_max_voltage_v: Option<f64>,
}

mod defaults {
    pub fn timeout_ms() -> u64 {
        1000
    }
    pub fn settle_tolerance_celsius() -> f64 {
        0.1
    }
    pub fn settle_window_ms() -> u64 {
        2000
    }
    pub fn settle_timeout_ms() -> u64 {
        60_000
    }
}

impl ScpiBenchConfig {
    /// A bench with only a TEC controller and every other setting at its default.
    pub fn new(tec: impl Into<String>) -> ScpiBenchConfig {
        ScpiBenchConfig {
            tec: tec.into(),
            power_meter: None,
            laser: None,
            timeout_ms: defaults::timeout_ms(),
            settle_tolerance_celsius: defaults::settle_tolerance_celsius(),
            settle_window_ms: defaults::settle_window_ms(),
            settle_timeout_ms: defaults::settle_timeout_ms(),
            wavelength_nm: None,
            tec_max_voltage_v: None,
        }
    }

    /// Checks ranges and addresses. The error is `(key, "expected ..., found ...")`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |key: &str, msg: String| Err((key.to_string(), msg));
        address("tec", &self.tec)?;
        if let Some(a) = &self.power_meter {
            address("power_meter", a)?;
        }
        if let Some(a) = &self.laser {
            address("laser", a)?;
        }
        if !(10..=60_000).contains(&self.timeout_ms) {
            return err(
                "timeout_ms",
                format!("expected 10 to 60000 ms, found {}", self.timeout_ms),
            );
        }
        let tol = self.settle_tolerance_celsius;
        if !(tol.is_finite() && tol > 0.0 && tol <= 10.0) {
            return err(
                "settle_tolerance_celsius",
                format!("expected more than 0 and at most 10 degC, found {tol}"),
            );
        }
        if !(1..=3_600_000).contains(&self.settle_timeout_ms) {
            return err(
                "settle_timeout_ms",
                format!("expected 1 to 3600000 ms, found {}", self.settle_timeout_ms),
            );
        }
        if self.settle_window_ms > self.settle_timeout_ms {
            return err(
                "settle_window_ms",
                format!(
                    "expected at most settle_timeout_ms ({} ms), found {}",
                    self.settle_timeout_ms, self.settle_window_ms
                ),
            );
        }
        if let Some(nm) = self.wavelength_nm {
            if !(nm.is_finite() && (200.0..=20_000.0).contains(&nm)) {
                return err(
                    "wavelength_nm",
                    format!("expected 200 to 20000 nm, found {nm}"),
                );
            }
            if self.power_meter.is_none() {
                return err(
                    "wavelength_nm",
                    "expected a power_meter to apply it to, found none".to_string(),
                );
            }
        }
        if let Some(v) = self.tec_max_voltage_v {
            if !(v.is_finite() && (0.1..=100.0).contains(&v)) {
                return err(
                    "tec_max_voltage_v",
                    format!("expected 0.1 to 100 V (the TEC module's V_max), found {v}"),
                );
            }
        }
        Ok(())
    }

    /// The TEC controller's address with the default port filled in.
    pub fn tec_address(&self) -> Result<String, (String, String)> {
        address("tec", &self.tec)
    }

    pub fn power_meter_address(&self) -> Result<Option<String>, (String, String)> {
        self.power_meter
            .as_deref()
            .map(|a| address("power_meter", a))
            .transpose()
    }

    pub fn laser_address(&self) -> Result<Option<String>, (String, String)> {
        self.laser
            .as_deref()
            .map(|a| address("laser", a))
            .transpose()
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn settle_window(&self) -> Duration {
        Duration::from_millis(self.settle_window_ms)
    }

    pub fn settle_timeout(&self) -> Duration {
        Duration::from_millis(self.settle_timeout_ms)
    }

    /// A read stops at its first timed-out exchange; a calibration settles, then measures.
    pub fn min_deadlines(&self) -> MinDeadlines {
        MinDeadlines::with_slack(
            self.timeout(),
            self.settle_timeout()
                .saturating_add(self.timeout().saturating_mul(CALIBRATION_EXCHANGES)),
        )
    }
}

fn address(key: &str, s: &str) -> Result<String, (String, String)> {
    normalize_address(s).map_err(|m| (key.to_string(), m))
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address, as `host:port` with the
/// default port 5025 filled in.
pub fn normalize_address(s: &str) -> Result<String, String> {
    let bad = || {
        format!("expected host:port (port defaults to {DEFAULT_PORT}), e.g. 192.0.2.10:5025, found {s:?}")
    };
    let host_ok = |h: &str| {
        !h.is_empty()
            && h.len() <= 253
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    };
    let port = |p: &str| match p.parse::<u16>() {
        Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(bad()),
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, tail) = rest.split_once(']').ok_or_else(bad)?;
        let ip: Ipv6Addr = ip.parse().map_err(|_| bad())?;
        let p = match tail {
            "" => DEFAULT_PORT,
            t => port(t.strip_prefix(':').ok_or_else(bad)?)?,
        };
        return Ok(format!("[{ip}]:{p}"));
    }
    if let Ok(ip) = s.parse::<Ipv6Addr>() {
        return Ok(format!("[{ip}]:{DEFAULT_PORT}"));
    }
    match s.split_once(':') {
        None if host_ok(s) => Ok(format!("{s}:{DEFAULT_PORT}")),
        Some((h, p)) if host_ok(h) => Ok(format!("{h}:{}", port(p)?)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_json(v: serde_json::Value) -> Result<ScpiBenchConfig, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_fill_everything_but_the_tec() {
        let c = from_json(serde_json::json!({"tec": "10.0.0.5"})).unwrap();
        assert_eq!(c, ScpiBenchConfig::new("10.0.0.5"));
        assert_eq!(c.timeout_ms, 1000);
        assert_eq!(c.settle_tolerance_celsius, 0.1);
        assert_eq!(c.settle_window_ms, 2000);
        assert_eq!(c.settle_timeout_ms, 60_000);
        assert_eq!(c.tec_address().unwrap(), "10.0.0.5:5025");
        assert_eq!(c.validate(), Ok(()));
        assert!(from_json(serde_json::json!({}))
            .unwrap_err()
            .contains("tec"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = from_json(serde_json::json!({"tec": "a", "tec_port": 1})).unwrap_err();
        assert!(e.contains("tec_port"), "{e}");
    }

    #[test]
    fn addresses_get_the_default_port() {
        for (input, want) in [
            ("bench-tec.lab", "bench-tec.lab:5025"),
            ("127.0.0.1:7000", "127.0.0.1:7000"),
            ("[::1]", "[::1]:5025"),
            ("[::1]:99", "[::1]:99"),
            ("fe80::1", "[fe80::1]:5025"),
        ] {
            assert_eq!(normalize_address(input).as_deref(), Ok(want), "{input}");
        }
        for bad in [
            "",
            ":5025",
            "host:",
            "host:0",
            "host:70000",
            "host:+1",
            "a b",
            "[::1",
            "h:1:2x",
        ] {
            let e = normalize_address(bad).unwrap_err();
            assert!(
                e.starts_with("expected host:port") && e.contains("found"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn validation_names_the_key_and_what_was_found() {
        let mut c = ScpiBenchConfig::new("tec:5025");
        c.power_meter = Some("pm:x".into());
        assert_eq!(c.validate().unwrap_err().0, "power_meter");
        c.power_meter = None;
        c.wavelength_nm = Some(1550.0);
        let (k, m) = c.validate().unwrap_err();
        assert_eq!(k, "wavelength_nm");
        assert!(m.contains("power_meter"), "{m}");
        c.power_meter = Some("pm".into());
        assert_eq!(c.validate(), Ok(()));
        c.settle_tolerance_celsius = -1.0;
        let (k, m) = c.validate().unwrap_err();
        assert_eq!(k, "settle_tolerance_celsius");
        assert!(m.contains("found -1"), "{m}");
        c.settle_tolerance_celsius = 0.1;
        c.settle_window_ms = 70_000;
        assert_eq!(c.validate().unwrap_err().0, "settle_window_ms");
        c.settle_window_ms = 2000;
        c.timeout_ms = 0;
        let (k, m) = c.validate().unwrap_err();
        assert_eq!((k.as_str(), m.contains("found 0")), ("timeout_ms", true));
        c.timeout_ms = 1000;
        for bad in [0.0, -7.5, f64::NAN, 1e6] {
            c.tec_max_voltage_v = Some(bad);
            let (k, m) = c.validate().unwrap_err();
            assert_eq!(k, "tec_max_voltage_v");
            assert!(m.contains(&format!("found {bad}")), "{m}");
        }
        c.tec_max_voltage_v = Some(7.5);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn min_deadlines_cover_one_exchange_and_a_whole_calibration() {
        let ms = std::time::Duration::from_millis;
        let mut c = ScpiBenchConfig::new("10.0.0.5");
        let got = c.min_deadlines();
        assert_eq!(
            (got.read, got.action),
            (ms(1000 + 500), ms(60_000 + 20 * 1000 + 500))
        );
        c.timeout_ms = 200;
        c.settle_timeout_ms = 5000;
        let got = c.min_deadlines();
        assert_eq!(
            (got.read, got.action),
            (ms(200 + 500), ms(5000 + 20 * 200 + 500))
        );
    }
}
