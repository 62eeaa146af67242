//! Pure parsing of what SCPI instruments send back: numbers, `*IDN?` identities, error-queue
//! entries and booleans. No I/O here, so every rule is tested without a socket.
//!
//! Instruments differ in small ways (`+0,"No error"` or `0,"No error"`, quoted or unquoted
//! messages, spaces after commas, `\r\n` line ends, `+1.55E-006`), so each parser accepts the
//! variants the spec lists and rejects everything else with a [`WireError`] that says what was
//! expected and what came. Nothing here panics on any input: replies come from the network.

use std::fmt;

/// Longest slice of an offending reply quoted back in an error, so a garbage line of kilobytes
/// does not become a log line of kilobytes.
const QUOTE_MAX: usize = 60;

/// A reply that does not have the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected}, found {found}")]
pub struct WireError {
    pub expected: &'static str,
    /// The offending text, quoted and shortened.
    pub found: String,
}

impl WireError {
    fn new(expected: &'static str, found: &str) -> WireError {
        WireError {
            expected,
            found: quote(found),
        }
    }
}

/// `found` quoted for an error message, cut at a character boundary once the quoted form
/// reaches `QUOTE_MAX` bytes. The bound is on what is shown, not on the
/// input: escaping makes a control character up to ten characters long, and a line of
/// kilobytes of them must not become a log line of kilobytes either (found by fuzzing).
pub fn quote(found: &str) -> String {
    let mut shown = 0;
    let mut end = found.len();
    for (i, c) in found.char_indices() {
        shown += c.escape_debug().map(char::len_utf8).sum::<usize>();
        if shown > QUOTE_MAX {
            end = i;
            break;
        }
    }
    if end == found.len() {
        return format!("{found:?}");
    }
    format!("{:?}... ({} bytes)", &found[..end], found.len())
}

/// One line as received, without its terminator: many clients and instruments end lines with
/// `\r\n`, and a stray `\r` must not end up inside a value.
pub fn strip_line(line: &str) -> &str {
    line.trim_end_matches(['\n', '\r'])
}

/// A decimal number in SCPI's NR1/NR2/NR3 forms: `25`, `+0`, `-3.5`, `1.234E-3`,
/// `+1.55000E-006`. Surrounding whitespace is allowed. Not accepted: `inf`, `nan` and other
/// words that Rust's float parser would take, hex, and values that overflow to infinity; an
/// instrument's "overflow" marker `9.9E37` is a finite number and is returned as such.
pub fn parse_number(s: &str) -> Result<f64, WireError> {
    const EXPECTED: &str = "a decimal number such as 25.0 or 1.234E-3";
    let t = strip_line(s).trim();
    let digits = t.bytes().filter(u8::is_ascii_digit).count();
    let only_numeric = t
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
    if digits == 0 || !only_numeric {
        return Err(WireError::new(EXPECTED, s));
    }
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(WireError::new(EXPECTED, s)),
    }
}

/// An integer reply (`*TST?`, `*OPC?`, error codes): optional sign, digits.
pub fn parse_integer(s: &str) -> Result<i64, WireError> {
    const EXPECTED: &str = "an integer such as 0 or -113";
    let t = strip_line(s).trim();
    let body = t.strip_prefix(['+', '-']).unwrap_or(t);
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WireError::new(EXPECTED, s));
    }
    t.parse::<i64>().map_err(|_| WireError::new(EXPECTED, s))
}

/// A boolean state (`TEC:OUT?`, `SOUR0:POW:STAT?`): `1`/`0`, and `ON`/`OFF` as Thorlabs
/// controllers answer.
pub fn parse_bool(s: &str) -> Result<bool, WireError> {
    let t = strip_line(s).trim();
    if t == "1" || t == "+1" || t.eq_ignore_ascii_case("ON") {
        Ok(true)
    } else if t == "0" || t == "+0" || t.eq_ignore_ascii_case("OFF") {
        Ok(false)
    } else {
        Err(WireError::new("1, 0, ON or OFF", s))
    }
}

/// The four fields of an `*IDN?` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub maker: String,
    pub model: String,
    pub serial: String,
    pub firmware: String,
}

/// `maker,model,serial,firmware`, spaces around fields tolerated. Fewer than four fields is an
/// error; a fifth comma is kept inside the firmware field, since some instruments put a
/// comma-separated list of module revisions there.
pub fn parse_idn(s: &str) -> Result<Identity, WireError> {
    let t = strip_line(s);
    let mut fields = t.splitn(4, ',').map(str::trim);
    match (fields.next(), fields.next(), fields.next(), fields.next()) {
        (Some(maker), Some(model), Some(serial), Some(firmware)) if !maker.is_empty() => {
            Ok(Identity {
                maker: maker.to_string(),
                model: model.to_string(),
                serial: serial.to_string(),
                firmware: firmware.to_string(),
            })
        }
        _ => Err(WireError::new(
            "four comma-separated fields maker,model,serial,firmware",
            s,
        )),
    }
}

/// One entry of an instrument's error queue, from `SYST:ERR?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorEntry {
    /// 0 means the queue is empty; negative codes are SCPI-standard, positive ones the vendor's.
    pub code: i64,
    pub message: String,
}

impl ErrorEntry {
    pub fn is_empty_queue(&self) -> bool {
        self.code == 0
    }
}

impl fmt::Display for ErrorEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},\"{}\"", self.code, self.message)
    }
}

/// `<code>,"<message>"`. Only the integer before the first comma is required (the spec: "parse
/// the integer before the first comma"); the message may be quoted, unquoted or missing, and
/// may itself contain commas.
pub fn parse_error_entry(s: &str) -> Result<ErrorEntry, WireError> {
    let t = strip_line(s).trim();
    let (code, message) = match t.split_once(',') {
        Some((code, message)) => (code, message.trim()),
        None => (t, ""),
    };
    let code = parse_integer(code)
        .map_err(|_| WireError::new("an error-queue entry such as -113,\"Undefined header\"", s))?;
    let message = message
        .strip_prefix('"')
        .and_then(|m| m.strip_suffix('"'))
        .unwrap_or(message);
    Ok(ErrorEntry {
        code,
        message: message.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_the_forms_instruments_send() {
        assert_eq!(parse_number("1.234E-3"), Ok(1.234e-3));
        assert_eq!(parse_number("+0"), Ok(0.0));
        assert_eq!(parse_number(" 25.000\r\n"), Ok(25.0));
        assert_eq!(parse_number("+1.550000E-006"), Ok(1.55e-6));
        assert_eq!(parse_number("-3"), Ok(-3.0));
        assert_eq!(parse_number("9.9E37"), Ok(9.9e37));
        for bad in [
            "", "abc", "inf", "NaN", "1e999", "0x10", "25 C", "+", ".", "e5",
        ] {
            let e = parse_number(bad).unwrap_err();
            assert!(e.to_string().contains("decimal number"), "{bad}: {e}");
        }
    }

    #[test]
    fn identities_tolerate_spaces_and_reject_short_replies() {
        let id = parse_idn("Arroyo Instruments, 5310 TECSource ,S123, v2.1\r\n").unwrap();
        assert_eq!(id.maker, "Arroyo Instruments");
        assert_eq!(id.model, "5310 TECSource");
        assert_eq!(id.serial, "S123");
        assert_eq!(id.firmware, "v2.1");
        let id = parse_idn("K,M,S,FW 1.0,module 2").unwrap();
        assert_eq!(id.firmware, "FW 1.0,module 2");
        let e = parse_idn("Thorlabs,PM100D,P000").unwrap_err();
        assert!(
            e.to_string().contains("four comma-separated fields") && e.found.contains("PM100D"),
            "{e}"
        );
        assert!(parse_idn("").is_err());
        assert!(parse_idn(",,,").is_err());
    }

    #[test]
    fn error_entries_in_every_dialect() {
        let cases = [
            ("0,\"No error\"", 0, "No error"),
            ("+0,\"No error\"\r", 0, "No error"),
            ("-113,\"Undefined header\"", -113, "Undefined header"),
            ("-222,Data out of range", -222, "Data out of range"),
            ("-350, \"Queue overflow\" ", -350, "Queue overflow"),
            ("201,\"a, b\"", 201, "a, b"),
            ("0", 0, ""),
        ];
        for (line, code, message) in cases {
            let e = parse_error_entry(line).unwrap();
            assert_eq!((e.code, e.message.as_str()), (code, message), "{line}");
        }
        assert!(parse_error_entry("0,\"No error\"")
            .unwrap()
            .is_empty_queue());
        for bad in ["", "No error", "x,\"y\"", "1.5,\"z\""] {
            let e = parse_error_entry(bad).unwrap_err();
            assert!(e.to_string().contains("error-queue entry"), "{bad}: {e}");
        }
    }

    #[test]
    fn booleans_and_integers() {
        assert_eq!(parse_bool("1\r"), Ok(true));
        assert_eq!(parse_bool("off"), Ok(false));
        assert!(parse_bool("2").is_err());
        assert_eq!(parse_integer("+0"), Ok(0));
        assert_eq!(parse_integer("-113"), Ok(-113));
        assert!(parse_integer("1.0").is_err());
        assert!(parse_integer("99999999999999999999").is_err());
    }

    #[test]
    fn long_garbage_is_quoted_short() {
        let junk = "é".repeat(500);
        let e = parse_number(&junk).unwrap_err();
        assert!(e.found.len() < 120 && e.found.contains("1000 bytes"), "{e}");
    }
}
