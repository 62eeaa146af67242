//! [`BmpConfig`]: which BMP, which board in its frame, and how patiently to talk to it. The
//! agent embeds it as the `[device.bmp]` table of its TOML config, so field names are the
//! config keys and every validation error names its key.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::board::worst_case_action;
use super::client::ClientOptions;
use super::wire::{BMP_PORT, MAX_BOARD};
use crate::deadline::MinDeadlines;

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BmpConfig {
    /// The BMP, `ip:port` or `ip` (port 17893). IPv6 as `[addr]:port` or a bare address.
    pub address: String,
    /// The board in the frame, 0..=23 (the BMP's "cpu" field).
    #[serde(default)]
    pub board: u32,
    /// Wait for one reply, in milliseconds.
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    /// Sends of one request before giving up (power-on is always sent once).
    #[serde(default = "defaults::attempts")]
    pub attempts: u32,
    /// Wait for the power-on reply, which comes after the FPGAs have loaded.
    #[serde(default = "defaults::power_on_timeout_ms")]
    pub power_on_timeout_ms: u64,
    /// How long a hard reset or power cycle leaves the board off.
    #[serde(default = "defaults::power_cycle_off_ms")]
    pub power_cycle_off_ms: u64,
}

mod defaults {
    pub fn timeout_ms() -> u64 {
        500
    }
    pub fn attempts() -> u32 {
        5
    }
    pub fn power_on_timeout_ms() -> u64 {
        10_000
    }
    pub fn power_cycle_off_ms() -> u64 {
        1000
    }
}

impl BmpConfig {
    /// Board `board` behind the BMP at `address`, every other setting at its default.
    pub fn new(address: impl Into<String>, board: u32) -> BmpConfig {
        BmpConfig {
            address: address.into(),
            board,
            timeout_ms: defaults::timeout_ms(),
            attempts: defaults::attempts(),
            power_on_timeout_ms: defaults::power_on_timeout_ms(),
            power_cycle_off_ms: defaults::power_cycle_off_ms(),
        }
    }

    /// Checks ranges and the address. The error is `(key, "expected ..., found ...")`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |key: &str, msg: String| Err((key.to_string(), msg));
        self.socket_addr()?;
        if self.board > MAX_BOARD as u32 {
            return err(
                "board",
                format!("expected 0 to {MAX_BOARD}, found {}", self.board),
            );
        }
        if !(10..=60_000).contains(&self.timeout_ms) {
            return err(
                "timeout_ms",
                format!("expected 10 to 60000 ms, found {}", self.timeout_ms),
            );
        }
        if !(1..=20).contains(&self.attempts) {
            return err(
                "attempts",
                format!("expected 1 to 20, found {}", self.attempts),
            );
        }
        if !(100..=120_000).contains(&self.power_on_timeout_ms) {
            return err(
                "power_on_timeout_ms",
                format!(
                    "expected 100 to 120000 ms, found {}",
                    self.power_on_timeout_ms
                ),
            );
        }
        if self.power_cycle_off_ms > 60_000 {
            return err(
                "power_cycle_off_ms",
                format!("expected 0 to 60000 ms, found {}", self.power_cycle_off_ms),
            );
        }
        Ok(())
    }

    /// The BMP's address with the default port filled in.
    pub fn socket_addr(&self) -> Result<SocketAddr, (String, String)> {
        parse_address(&self.address).map_err(|m| ("address".to_string(), m))
    }

    /// The board number (call [`BmpConfig::validate`] first; out of range becomes 0xFF).
    pub fn board_number(&self) -> u8 {
        u8::try_from(self.board).unwrap_or(u8::MAX)
    }

    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            timeout: Duration::from_millis(self.timeout_ms),
            attempts: self.attempts,
            power_on_timeout: Duration::from_millis(self.power_on_timeout_ms),
        }
    }

    pub fn power_cycle_off(&self) -> Duration {
        Duration::from_millis(self.power_cycle_off_ms)
    }

    /// A read is one request, resent up to `attempts` times; an action is the longest power
    /// cycle ([`worst_case_action`]). A config that does not validate makes no board, so its
    /// action floor is one request's.
    pub fn min_deadlines(&self) -> MinDeadlines {
        let request = Duration::from_millis(self.timeout_ms).saturating_mul(self.attempts);
        let action = match self.validate() {
            Ok(()) => worst_case_action(&self.client_options(), self.power_cycle_off()),
            Err(_) => request,
        };
        MinDeadlines::with_slack(request, action)
    }
}

/// `ip:port`, `[v6]:port`, or a bare IP (port 17893). BMPs have static addresses, so host
/// names are not resolved: a name would add a DNS dependency to every poll.
pub fn parse_address(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let addr = if let Ok(a) = s.parse::<SocketAddr>() {
        a
    } else if let Ok(ip) = s.parse::<IpAddr>() {
        SocketAddr::new(ip, BMP_PORT)
    } else if let Some(ip) = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<IpAddr>().ok())
    {
        SocketAddr::new(ip, BMP_PORT)
    } else {
        return Err(format!(
            "expected an IP address with an optional :port (e.g. 192.168.240.0:{BMP_PORT}), found {s:?}"
        ));
    };
    if addr.port() == 0 {
        return Err(format!("expected a port from 1 to 65535, found 0 in {s:?}"));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<BmpConfig, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_fill_in_and_validate() {
        let c = parse(r#"{"address": "192.168.240.0"}"#).unwrap();
        assert_eq!(c, BmpConfig::new("192.168.240.0", 0));
        assert_eq!(
            (
                c.board,
                c.timeout_ms,
                c.attempts,
                c.power_on_timeout_ms,
                c.power_cycle_off_ms
            ),
            (0, 500, 5, 10_000, 1000)
        );
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(
            c.socket_addr().unwrap(),
            "192.168.240.0:17893".parse().unwrap()
        );
        let o = c.client_options();
        assert_eq!(o, ClientOptions::default());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = parse(r#"{"address": "10.0.0.1", "boards": 3}"#).unwrap_err();
        assert!(e.contains("boards"), "{e}");
    }

    #[test]
    fn addresses_take_ports_and_ipv6() {
        for (s, want) in [
            ("10.0.0.1:1234", "10.0.0.1:1234"),
            (" 10.0.0.1 ", "10.0.0.1:17893"),
            ("::1", "[::1]:17893"),
            ("[::1]", "[::1]:17893"),
            ("[::1]:99", "[::1]:99"),
        ] {
            assert_eq!(parse_address(s), Ok(want.parse().unwrap()), "{s}");
        }
        for bad in ["bmp.example", "10.0.0.1:0", "10.0.0.1:70000", ""] {
            let e = parse_address(bad).unwrap_err();
            assert!(e.starts_with("expected"), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        let check = |f: &dyn Fn(&mut BmpConfig), key: &str, found: &str| {
            let mut c = BmpConfig::new("10.0.0.1", 0);
            f(&mut c);
            let (k, m) = c.validate().unwrap_err();
            assert_eq!(k, key);
            assert!(m.starts_with("expected") && m.contains(found), "{m}");
        };
        check(&|c| c.address = "nowhere".into(), "address", "nowhere");
        check(&|c| c.board = 24, "board", "24");
        check(&|c| c.timeout_ms = 0, "timeout_ms", "0");
        check(&|c| c.attempts = 0, "attempts", "0");
        check(&|c| c.attempts = 100, "attempts", "100");
        check(&|c| c.power_on_timeout_ms = 5, "power_on_timeout_ms", "5");
        check(
            &|c| c.power_cycle_off_ms = 600_000,
            "power_cycle_off_ms",
            "600000",
        );
    }

    #[test]
    fn min_deadlines_cover_the_retries_and_a_whole_power_cycle() {
        let ms = Duration::from_millis;
        // 5 x 500 ms per request; a power cycle is a request, 1 s off, 10 s for the power-on
        // reply, the ADC refresh and the verifying request.
        let c = BmpConfig::new("10.0.0.1", 0);
        let want = (ms(2500 + 500), ms(2500 + 1000 + 10_000 + 100 + 2500 + 500));
        let got = c.min_deadlines();
        assert_eq!((got.read, got.action), want);
        let board = super::super::BmpBoard::new("b", &c).unwrap();
        assert_eq!(got.action, board.worst_case_action() + MinDeadlines::SLACK);
        // A config that makes no board: one request's worth for both.
        let mut c = BmpConfig::new("nowhere", 0);
        c.attempts = 2;
        let got = c.min_deadlines();
        assert_eq!((got.read, got.action), (ms(1000 + 500), ms(1000 + 500)));
    }
}
