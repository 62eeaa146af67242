//! SCP over UDP as a SpiNNaker BMP speaks it: pure encoding of requests, parsing of replies,
//! and the payloads of CMD_VER and BMP_INFO ADC (spec: shared/specs/spinnaker-bmp.md).
//!
//! No I/O here, so every byte layout is unit- and property-tested on its own. Parsing never
//! panics: whatever arrives from the network is checked for length before it is indexed, and
//! a bad datagram becomes a [`WireError`] that says what was wrong with it.

use std::fmt;

/// The UDP port a BMP listens on.
pub const BMP_PORT: u16 = 17893;
/// Padding, SDP header, cmd_rc, seq and the three args: every request is at least this long.
pub const REQUEST_HEADER_LEN: usize = 26;
/// Padding, SDP header, rc and seq: an error reply, or a reply without payload, is exactly this.
pub const REPLY_HEADER_LEN: usize = 14;
/// Most data bytes one SCP request may carry.
pub const MAX_DATA_LEN: usize = 256;
/// The BMP drops longer datagrams, so a client never sends one (and ignores longer replies).
pub const MAX_DATAGRAM_LEN: usize = 280;
/// Boards in a frame are numbered 0..=23.
pub const MAX_BOARD: u8 = 23;

/// SDP flags of a request: a reply is expected.
const FLAGS_REPLY_EXPECTED: u8 = 0x87;
/// SDP flags of a reply: the BMP clears the reply-expected bit.
const FLAGS_REPLY: u8 = 0x07;
const TAG: u8 = 0xFF;
/// Source port/cpu of a host: "the Ethernet".
const SRC_HOST: u8 = 0xFF;

/// SCP command codes a BMP understands (the ones this client and the simulator use).
pub mod command {
    pub const VER: u16 = 0;
    pub const LINK_READ: u16 = 17;
    pub const LINK_WRITE: u16 = 18;
    pub const LED: u16 = 25;
    pub const BMP_INFO: u16 = 48;
    pub const RESET: u16 = 55;
    pub const POWER: u16 = 57;
}

/// `arg1` of CMD_BMP_INFO: which table to read.
pub mod info {
    pub const SERIAL: u32 = 0;
    pub const CAN_STATUS: u32 = 2;
    pub const ADC: u32 = 3;
    pub const IP_ADDR: u32 = 4;
}

/// The command's name, for error messages.
pub fn command_name(cmd: u16) -> String {
    match cmd {
        command::VER => "CMD_VER".to_string(),
        command::LINK_READ => "CMD_LINK_READ".to_string(),
        command::LINK_WRITE => "CMD_LINK_WRITE".to_string(),
        command::LED => "CMD_LED".to_string(),
        command::BMP_INFO => "CMD_BMP_INFO".to_string(),
        command::RESET => "CMD_RESET".to_string(),
        command::POWER => "CMD_BMP_POWER".to_string(),
        other => format!("command {other}"),
    }
}

/// What went wrong with a datagram or payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{what} too short: need at least {need} bytes, got {got}")]
    TooShort {
        what: &'static str,
        need: usize,
        got: usize,
    },
    #[error("{what} too long: at most {max} bytes, got {got}")]
    TooLong {
        what: &'static str,
        max: usize,
        got: usize,
    },
    #[error("{what} has a bad length: expected exactly {expected} bytes, got {got}")]
    BadLength {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("unknown return code 0x{0:04x}")]
    UnknownReturnCode(u16),
    #[error("{what} is not NUL-terminated")]
    Unterminated { what: &'static str },
    #[error("board {0} is outside 0..=31 (the cpu field has 5 bits)")]
    BadBoard(u8),
}

/// SCP return codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReturnCode {
    Ok,
    Len,
    Sum,
    Cmd,
    Arg,
    Port,
    Timeout,
    Route,
    Cpu,
    Dead,
    Buf,
    P2pNoReply,
    P2pReject,
    P2pBusy,
    P2pTimeout,
    PktTx,
}

impl ReturnCode {
    const ALL: [ReturnCode; 16] = [
        ReturnCode::Ok,
        ReturnCode::Len,
        ReturnCode::Sum,
        ReturnCode::Cmd,
        ReturnCode::Arg,
        ReturnCode::Port,
        ReturnCode::Timeout,
        ReturnCode::Route,
        ReturnCode::Cpu,
        ReturnCode::Dead,
        ReturnCode::Buf,
        ReturnCode::P2pNoReply,
        ReturnCode::P2pReject,
        ReturnCode::P2pBusy,
        ReturnCode::P2pTimeout,
        ReturnCode::PktTx,
    ];

    /// The codes are contiguous from RC_OK = 0x80.
    pub fn code(self) -> u16 {
        0x80 + ReturnCode::ALL.iter().position(|c| *c == self).unwrap_or(0) as u16
    }

    pub fn from_code(code: u16) -> Option<ReturnCode> {
        code.checked_sub(0x80)
            .and_then(|i| ReturnCode::ALL.get(i as usize).copied())
    }

    pub fn name(self) -> &'static str {
        match self {
            ReturnCode::Ok => "RC_OK",
            ReturnCode::Len => "RC_LEN",
            ReturnCode::Sum => "RC_SUM",
            ReturnCode::Cmd => "RC_CMD",
            ReturnCode::Arg => "RC_ARG",
            ReturnCode::Port => "RC_PORT",
            ReturnCode::Timeout => "RC_TIMEOUT",
            ReturnCode::Route => "RC_ROUTE",
            ReturnCode::Cpu => "RC_CPU",
            ReturnCode::Dead => "RC_DEAD",
            ReturnCode::Buf => "RC_BUF",
            ReturnCode::P2pNoReply => "RC_P2P_NOREPLY",
            ReturnCode::P2pReject => "RC_P2P_REJECT",
            ReturnCode::P2pBusy => "RC_P2P_BUSY",
            ReturnCode::P2pTimeout => "RC_P2P_TIMEOUT",
            ReturnCode::PktTx => "RC_PKT_TX",
        }
    }

    pub fn meaning(self) -> &'static str {
        match self {
            ReturnCode::Ok => "ok",
            ReturnCode::Len => "bad packet length",
            ReturnCode::Sum => "bad checksum",
            ReturnCode::Cmd => "unknown command",
            ReturnCode::Arg => "bad argument",
            ReturnCode::Port => "bad port",
            ReturnCode::Timeout => "timed out inside the BMP",
            ReturnCode::Route => "no route",
            ReturnCode::Cpu => "bad cpu (board) number",
            ReturnCode::Dead => "destination dead",
            ReturnCode::Buf => "no buffer",
            ReturnCode::P2pNoReply => "no reply to open",
            ReturnCode::P2pReject => "open rejected",
            ReturnCode::P2pBusy => "destination busy",
            ReturnCode::P2pTimeout => "destination timed out",
            ReturnCode::PktTx => "packet transmission failed",
        }
    }

    /// Worth resending the identical request: the failure was in transit or a busy
    /// destination, not in what was asked (per the spec and the host libraries).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ReturnCode::Sum
                | ReturnCode::Timeout
                | ReturnCode::Len
                | ReturnCode::P2pBusy
                | ReturnCode::P2pTimeout
        )
    }
}

impl fmt::Display for ReturnCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (0x{:02x}, {})",
            self.name(),
            self.code(),
            self.meaning()
        )
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]]))
}

fn i16_at(b: &[u8], at: usize) -> Option<i16> {
    b.get(at..at + 2).map(|s| i16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// One SCP request to a BMP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScpRequest {
    /// Destination "cpu": the board in the frame.
    pub board: u8,
    /// Destination port; 0 is SCP, the only one a BMP serves.
    pub port: u8,
    pub command: u16,
    pub seq: u16,
    /// Always all three, zero-padded: the BMP expects them.
    pub args: [u32; 3],
    pub data: Vec<u8>,
}

impl ScpRequest {
    pub fn new(board: u8, command: u16, seq: u16, args: [u32; 3]) -> ScpRequest {
        ScpRequest {
            board,
            port: 0,
            command,
            seq,
            args,
            data: Vec::new(),
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        if self.board > 31 {
            return Err(WireError::BadBoard(self.board));
        }
        if self.data.len() > MAX_DATA_LEN {
            return Err(WireError::TooLong {
                what: "request data",
                max: MAX_DATA_LEN,
                got: self.data.len(),
            });
        }
        let mut b = Vec::with_capacity(REQUEST_HEADER_LEN + self.data.len());
        b.extend_from_slice(&[
            0,
            0,
            FLAGS_REPLY_EXPECTED,
            TAG,
            ((self.port & 7) << 5) | self.board,
            SRC_HOST,
            0,
            0,
            0,
            0,
        ]);
        b.extend_from_slice(&self.command.to_le_bytes());
        b.extend_from_slice(&self.seq.to_le_bytes());
        for a in self.args {
            b.extend_from_slice(&a.to_le_bytes());
        }
        b.extend_from_slice(&self.data);
        Ok(b)
    }

    /// Parses a request as a BMP receives it (used by the simulator).
    pub fn parse(b: &[u8]) -> Result<ScpRequest, WireError> {
        if b.len() > MAX_DATAGRAM_LEN {
            return Err(WireError::TooLong {
                what: "request",
                max: MAX_DATAGRAM_LEN,
                got: b.len(),
            });
        }
        let short = || WireError::TooShort {
            what: "request",
            need: REQUEST_HEADER_LEN,
            got: b.len(),
        };
        if b.len() < REQUEST_HEADER_LEN {
            return Err(short());
        }
        let dest = *b.get(4).ok_or_else(short)?;
        Ok(ScpRequest {
            board: dest & 0x1F,
            port: dest >> 5,
            command: u16_at(b, 10).ok_or_else(short)?,
            seq: u16_at(b, 12).ok_or_else(short)?,
            args: [
                u32_at(b, 14).ok_or_else(short)?,
                u32_at(b, 18).ok_or_else(short)?,
                u32_at(b, 22).ok_or_else(short)?,
            ],
            data: b.get(REQUEST_HEADER_LEN..).unwrap_or_default().to_vec(),
        })
    }

    /// Whether the sender asked for a reply (SDP flags bit 7).
    pub fn reply_expected(raw: &[u8]) -> bool {
        raw.get(2).is_some_and(|f| f & 0x80 != 0)
    }
}

/// The seq of a datagram that is long enough to carry one: the client matches replies by it
/// before it looks at anything else.
pub fn reply_seq(b: &[u8]) -> Option<u16> {
    if b.len() < REPLY_HEADER_LEN {
        return None;
    }
    u16_at(b, 12)
}

/// One SCP reply from a BMP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScpReply {
    pub rc: ReturnCode,
    pub seq: u16,
    pub payload: Vec<u8>,
}

impl ScpReply {
    pub fn parse(b: &[u8]) -> Result<ScpReply, WireError> {
        if b.len() < REPLY_HEADER_LEN {
            return Err(WireError::TooShort {
                what: "reply",
                need: REPLY_HEADER_LEN,
                got: b.len(),
            });
        }
        if b.len() > MAX_DATAGRAM_LEN {
            return Err(WireError::TooLong {
                what: "reply",
                max: MAX_DATAGRAM_LEN,
                got: b.len(),
            });
        }
        let raw_rc = u16_at(b, 10).unwrap_or_default();
        let seq = u16_at(b, 12).unwrap_or_default();
        let rc = ReturnCode::from_code(raw_rc).ok_or(WireError::UnknownReturnCode(raw_rc))?;
        if rc != ReturnCode::Ok && b.len() != REPLY_HEADER_LEN {
            return Err(WireError::BadLength {
                what: "error reply",
                expected: REPLY_HEADER_LEN,
                got: b.len(),
            });
        }
        Ok(ScpReply {
            rc,
            seq,
            payload: b.get(REPLY_HEADER_LEN..).unwrap_or_default().to_vec(),
        })
    }

    /// Encodes a reply to a request whose first 10 bytes were `request_header` (source and
    /// destination are swapped, as the BMP does). With no header (a datagram too short to
    /// have one), the addresses are those of a BMP answering a host.
    pub fn encode(&self, request_header: Option<&[u8]>) -> Vec<u8> {
        let h = request_header.and_then(|h| h.get(..10));
        let (dest, src, dest_yx, src_yx) = match h {
            Some(h) => (h[5], h[4], [h[8], h[9]], [h[6], h[7]]),
            None => (SRC_HOST, 0, [0, 0], [0, 0]),
        };
        let mut b = Vec::with_capacity(REPLY_HEADER_LEN + self.payload.len());
        b.extend_from_slice(&[0, 0, FLAGS_REPLY, TAG, dest, src]);
        b.extend_from_slice(&dest_yx);
        b.extend_from_slice(&src_yx);
        b.extend_from_slice(&self.rc.code().to_le_bytes());
        b.extend_from_slice(&self.seq.to_le_bytes());
        b.extend_from_slice(&self.payload);
        b
    }
}

/// The CMD_VER reply payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub board: u8,
    pub can_id: u8,
    pub frame_id: u8,
    pub code_block: u8,
    pub buffer_size: u16,
    /// 0xFFFF: the version is in [`VersionInfo::version_string`]; else major*100+minor.
    pub version: u16,
    /// Unix seconds.
    pub build_date: u32,
    /// Hardware/firmware name, e.g. `BC&MP/Spin5-BMP`.
    pub name: String,
    /// Semantic version, e.g. `2.1.2` (may be empty on legacy firmware).
    pub version_string: String,
}

const VER_FIXED_LEN: usize = 12;

impl VersionInfo {
    pub fn parse(p: &[u8]) -> Result<VersionInfo, WireError> {
        let short = || WireError::TooShort {
            what: "CMD_VER payload",
            need: VER_FIXED_LEN,
            got: p.len(),
        };
        let fixed = p.get(..VER_FIXED_LEN).ok_or_else(short)?;
        let rest = p.get(VER_FIXED_LEN..).unwrap_or_default();
        let nul = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or(WireError::Unterminated {
                what: "CMD_VER name string",
            })?;
        let name = String::from_utf8_lossy(&rest[..nul]).into_owned();
        let rest = rest.get(nul + 1..).unwrap_or_default();
        // Legacy firmware carries only the name; the version is the number.
        let version_string = if rest.is_empty() {
            String::new()
        } else {
            let end = rest
                .iter()
                .position(|b| *b == 0)
                .ok_or(WireError::Unterminated {
                    what: "CMD_VER version string",
                })?;
            String::from_utf8_lossy(&rest[..end]).into_owned()
        };
        Ok(VersionInfo {
            board: fixed[0],
            can_id: fixed[1],
            frame_id: fixed[2],
            code_block: fixed[3],
            buffer_size: u16_at(fixed, 4).ok_or_else(short)?,
            version: u16_at(fixed, 6).ok_or_else(short)?,
            build_date: u32_at(fixed, 8).ok_or_else(short)?,
            name,
            version_string,
        })
    }

    /// Encodes the payload. Strings are cut at any NUL they contain, since NUL ends them.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![self.board, self.can_id, self.frame_id, self.code_block];
        b.extend_from_slice(&self.buffer_size.to_le_bytes());
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(&self.build_date.to_le_bytes());
        for s in [&self.name, &self.version_string] {
            b.extend(s.bytes().take_while(|c| *c != 0));
            b.push(0);
        }
        b
    }

    /// The firmware version as text: the string, or major.minor from a legacy number.
    pub fn firmware(&self) -> String {
        if self.version == 0xFFFF || !self.version_string.is_empty() {
            self.version_string.clone()
        } else {
            format!("{}.{:02}", self.version / 100, self.version % 100)
        }
    }
}

/// Length of the BMP_INFO ADC payload: `"<8H4h4h4hII"`.
pub const ADC_PAYLOAD_LEN: usize = 48;
/// A temperature sensor that is not fitted reads this.
pub const NO_SENSOR: i16 = i16::MIN;
/// A fan that is not fitted reads this (0xFFFF).
pub const NO_FAN: i16 = -1;
/// An ADC channel the firmware does not sample keeps this value (UINT16_MAX).
pub const UNUSED_CHANNEL: u16 = u16::MAX;

/// The BMP_INFO ADC payload as raw words; the accessors scale them per the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AdcInfo {
    /// `adc[0]` unused; 1..3 = 1.2 V rails C, B, A; 4 = 1.8 V; 5 = 2.5 V; 6 = 3.3 V; 7 = 12 V.
    pub adc: [u16; 8],
    /// Board top, board bottom, then two unused sensors; degC * 256.
    pub t_int: [i16; 4],
    /// External sensors; degC * 256, [`NO_SENSOR`] when absent.
    pub t_ext: [i16; 4],
    /// Fan RPM, [`NO_FAN`] when absent.
    pub fan: [i16; 4],
    /// Firmware monitor flags: bits 0-7 ADC channels, 8-11 board temperatures, 12-15
    /// external temperatures, 16-19 fans (bmp_main.c `check_status`).
    pub warning: u32,
    pub shutdown: u32,
}

/// Full-scale volts of each ADC channel (raw 4096).
const ADC_FULL_SCALE: [f64; 8] = [2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 3.75, 15.0];

impl AdcInfo {
    /// Parses at least [`ADC_PAYLOAD_LEN`] bytes; later firmware may append more, which is
    /// ignored, as the host libraries do.
    pub fn parse(p: &[u8]) -> Result<AdcInfo, WireError> {
        let short = || WireError::TooShort {
            what: "BMP_INFO ADC payload",
            need: ADC_PAYLOAD_LEN,
            got: p.len(),
        };
        if p.len() < ADC_PAYLOAD_LEN {
            return Err(short());
        }
        let mut a = AdcInfo::default();
        for (i, v) in a.adc.iter_mut().enumerate() {
            *v = u16_at(p, 2 * i).ok_or_else(short)?;
        }
        for i in 0..4 {
            a.t_int[i] = i16_at(p, 16 + 2 * i).ok_or_else(short)?;
            a.t_ext[i] = i16_at(p, 24 + 2 * i).ok_or_else(short)?;
            a.fan[i] = i16_at(p, 32 + 2 * i).ok_or_else(short)?;
        }
        a.warning = u32_at(p, 40).ok_or_else(short)?;
        a.shutdown = u32_at(p, 44).ok_or_else(short)?;
        Ok(a)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(ADC_PAYLOAD_LEN);
        for v in self.adc {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for arr in [self.t_int, self.t_ext, self.fan] {
            for v in arr {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        b.extend_from_slice(&self.warning.to_le_bytes());
        b.extend_from_slice(&self.shutdown.to_le_bytes());
        b
    }

    /// Volts on ADC channel `ch`, `None` for a channel the firmware does not sample.
    pub fn volts(&self, ch: usize) -> Option<f64> {
        let raw = *self.adc.get(ch)?;
        (raw != UNUSED_CHANNEL).then(|| raw as f64 * ADC_FULL_SCALE[ch] / 4096.0)
    }

    /// The raw word for `volts` on channel `ch` (for the simulator), clamped to 12 bits.
    pub fn raw_for_volts(ch: usize, volts: f64) -> u16 {
        let fs = ADC_FULL_SCALE.get(ch).copied().unwrap_or(2.5);
        (volts / fs * 4096.0).round().clamp(0.0, 4095.0) as u16
    }

    pub fn rail_1v2_c(&self) -> Option<f64> {
        self.volts(1)
    }
    pub fn rail_1v2_b(&self) -> Option<f64> {
        self.volts(2)
    }
    pub fn rail_1v2_a(&self) -> Option<f64> {
        self.volts(3)
    }
    pub fn rail_1v8(&self) -> Option<f64> {
        self.volts(4)
    }
    pub fn rail_2v5(&self) -> Option<f64> {
        self.volts(5)
    }
    pub fn rail_3v3(&self) -> Option<f64> {
        self.volts(6)
    }
    pub fn supply_12v(&self) -> Option<f64> {
        self.volts(7)
    }

    /// degC from a sensor word, `None` if the sensor is absent.
    pub fn celsius(raw: i16) -> Option<f64> {
        (raw != NO_SENSOR).then(|| raw as f64 / 256.0)
    }

    /// The sensor word for `celsius` (for the simulator), never the "absent" value.
    pub fn raw_for_celsius(celsius: f64) -> i16 {
        (celsius * 256.0)
            .round()
            .clamp(i16::MIN as f64 + 1.0, i16::MAX as f64) as i16
    }

    pub fn board_top(&self) -> Option<f64> {
        Self::celsius(self.t_int[0])
    }
    pub fn board_bottom(&self) -> Option<f64> {
        Self::celsius(self.t_int[1])
    }
    pub fn external(&self, i: usize) -> Option<f64> {
        self.t_ext.get(i).and_then(|r| Self::celsius(*r))
    }
    pub fn fan_rpm(&self, i: usize) -> Option<f64> {
        self.fan
            .get(i)
            .and_then(|r| (*r != NO_FAN).then_some(*r as f64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect()
    }

    #[test]
    fn requests_match_the_spec_known_good_bytes() {
        let ver = ScpRequest::new(0, command::VER, 0x1234, [0; 3]);
        assert_eq!(
            ver.encode().unwrap(),
            hex("00 00 87 ff 00 ff 00 00 00 00 00 00 34 12 00 00 00 00 00 00 00 00 00 00 00 00")
        );
        let power = ScpRequest::new(0, command::POWER, 0x1234, [1, 0x0f, 0]);
        assert_eq!(
            power.encode().unwrap(),
            hex("00 00 87 ff 00 ff 00 00 00 00 39 00 34 12 01 00 00 00 0f 00 00 00 00 00 00 00")
        );
        let adc = ScpRequest::new(0, command::BMP_INFO, 0x1234, [info::ADC, 0, 0]);
        assert_eq!(
            adc.encode().unwrap(),
            hex("00 00 87 ff 00 ff 00 00 00 00 30 00 34 12 03 00 00 00 00 00 00 00 00 00 00 00")
        );
    }

    #[test]
    fn request_limits_are_enforced() {
        let mut r = ScpRequest::new(5, command::VER, 1, [0; 3]);
        assert_eq!(r.encode().unwrap()[4], 5);
        r.data = vec![0; MAX_DATA_LEN + 1];
        assert!(matches!(r.encode(), Err(WireError::TooLong { .. })));
        r.data.clear();
        r.board = 32;
        assert_eq!(r.encode(), Err(WireError::BadBoard(32)));
    }

    #[test]
    fn return_codes_round_trip_and_know_which_are_retryable() {
        for rc in ReturnCode::ALL {
            assert_eq!(ReturnCode::from_code(rc.code()), Some(rc));
        }
        assert_eq!(ReturnCode::Ok.code(), 0x80);
        assert_eq!(ReturnCode::Arg.code(), 0x84);
        assert_eq!(ReturnCode::PktTx.code(), 0x8F);
        assert_eq!(ReturnCode::from_code(0x90), None);
        assert_eq!(ReturnCode::from_code(0x7F), None);
        assert_eq!(ReturnCode::from_code(0), None);
        let retry: Vec<_> = ReturnCode::ALL
            .into_iter()
            .filter(|r| r.is_retryable())
            .map(|r| r.name())
            .collect();
        assert_eq!(
            retry,
            [
                "RC_LEN",
                "RC_SUM",
                "RC_TIMEOUT",
                "RC_P2P_BUSY",
                "RC_P2P_TIMEOUT"
            ]
        );
        assert!(ReturnCode::Arg.to_string().contains("RC_ARG"));
    }

    #[test]
    fn replies_parse_and_reject_what_is_wrong() {
        let ok = ScpReply {
            rc: ReturnCode::Ok,
            seq: 0x1234,
            payload: vec![1, 2, 3],
        };
        let bytes = ok.encode(None);
        assert_eq!(&bytes[10..14], &[0x80, 0, 0x34, 0x12]);
        assert_eq!(ScpReply::parse(&bytes), Ok(ok));
        assert_eq!(reply_seq(&bytes), Some(0x1234));

        assert!(matches!(
            ScpReply::parse(&bytes[..13]),
            Err(WireError::TooShort { got: 13, .. })
        ));
        assert_eq!(reply_seq(&bytes[..13]), None);

        let mut err = ScpReply {
            rc: ReturnCode::Arg,
            seq: 7,
            payload: vec![],
        }
        .encode(None);
        assert_eq!(err.len(), REPLY_HEADER_LEN);
        assert_eq!(ScpReply::parse(&err).unwrap().rc, ReturnCode::Arg);
        err.push(0);
        assert!(matches!(
            ScpReply::parse(&err),
            Err(WireError::BadLength { got: 15, .. })
        ));

        let mut unknown = bytes.clone();
        unknown[10] = 0x42;
        assert_eq!(
            ScpReply::parse(&unknown),
            Err(WireError::UnknownReturnCode(0x42))
        );
        assert!(matches!(
            ScpReply::parse(&[0; 300]),
            Err(WireError::TooLong { .. })
        ));
    }

    #[test]
    fn reply_swaps_source_and_destination() {
        let req = ScpRequest::new(3, command::VER, 9, [0; 3])
            .encode()
            .unwrap();
        let rep = ScpReply {
            rc: ReturnCode::Ok,
            seq: 9,
            payload: vec![],
        }
        .encode(Some(&req));
        assert_eq!(rep[2], 0x07);
        assert_eq!((rep[4], rep[5]), (0xFF, 3));
    }

    #[test]
    fn version_payload_parses_names_and_legacy_numbers() {
        let v = VersionInfo {
            board: 2,
            can_id: 2,
            frame_id: 1,
            code_block: 0,
            buffer_size: 256,
            version: 0xFFFF,
            build_date: 1_700_000_000,
            name: "BC&MP/Spin5-BMP".into(),
            version_string: "2.1.2".into(),
        };
        let p = v.encode();
        assert_eq!(&p[12..], b"BC&MP/Spin5-BMP\x002.1.2\x00");
        assert_eq!(VersionInfo::parse(&p), Ok(v.clone()));
        assert_eq!(v.firmware(), "2.1.2");

        let mut legacy = p[..12].to_vec();
        legacy[6..8].copy_from_slice(&131u16.to_le_bytes());
        legacy.extend_from_slice(b"BC&MP/Spin4-BMP\0");
        let l = VersionInfo::parse(&legacy).unwrap();
        assert_eq!(
            (l.name.as_str(), l.firmware()),
            ("BC&MP/Spin4-BMP", "1.31".into())
        );

        assert!(matches!(
            VersionInfo::parse(&p[..11]),
            Err(WireError::TooShort { .. })
        ));
        assert_eq!(
            VersionInfo::parse(&p[..14]),
            Err(WireError::Unterminated {
                what: "CMD_VER name string"
            })
        );
        assert_eq!(
            VersionInfo::parse(&p[..p.len() - 1]),
            Err(WireError::Unterminated {
                what: "CMD_VER version string"
            })
        );
    }

    #[test]
    fn adc_payload_is_scaled_per_the_spec() {
        let mut p = vec![0u8; ADC_PAYLOAD_LEN];
        let put16 = |p: &mut Vec<u8>, at: usize, v: u16| {
            p[at - 14..at - 12].copy_from_slice(&v.to_le_bytes())
        };
        // Offsets as in the spec's table (datagram offsets, payload starts at 14).
        put16(&mut p, 14, 0xFFFF);
        put16(&mut p, 16, 1966); // 1.2 V rail C: 1966 * 2.5 / 4096 = 1.19995
        put16(&mut p, 22, 2949); // 1.8 V
        put16(&mut p, 26, 3604); // 3.3 V: * 3.75 / 4096
        put16(&mut p, 28, 3277); // 12 V: * 15 / 4096
        put16(&mut p, 30, (45.5 * 256.0) as u16);
        put16(&mut p, 32, (-3i16 * 256) as u16);
        put16(&mut p, 38, 0x8000);
        put16(&mut p, 40, (30i16 * 256) as u16);
        put16(&mut p, 46, 2500);
        put16(&mut p, 48, 0xFFFF);
        p[40..44].copy_from_slice(&0x100u32.to_le_bytes());
        p[44..48].copy_from_slice(&0x200u32.to_le_bytes());
        let a = AdcInfo::parse(&p).unwrap();
        assert_eq!(a.volts(0), None);
        assert!((a.rail_1v2_c().unwrap() - 1.2).abs() < 1e-3);
        assert!((a.rail_1v8().unwrap() - 1.8).abs() < 1e-3);
        assert!((a.rail_3v3().unwrap() - 3.3).abs() < 1e-3);
        assert!((a.supply_12v().unwrap() - 12.0).abs() < 1e-2);
        assert_eq!(a.board_top(), Some(45.5));
        assert_eq!(a.board_bottom(), Some(-3.0));
        assert_eq!(a.external(0), None);
        assert_eq!(a.external(1), Some(30.0));
        assert_eq!(a.fan_rpm(0), Some(2500.0));
        assert_eq!(a.fan_rpm(1), None);
        assert_eq!((a.warning, a.shutdown), (0x100, 0x200));
        assert_eq!(a.encode(), p);
        // Longer payloads are accepted, shorter are not.
        let mut longer = p.clone();
        longer.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(AdcInfo::parse(&longer), Ok(a));
        assert!(matches!(
            AdcInfo::parse(&p[..47]),
            Err(WireError::TooShort {
                need: 48,
                got: 47,
                ..
            })
        ));
    }

    #[test]
    fn simulator_helpers_invert_the_scaling() {
        for (ch, v) in [(1, 1.2), (4, 1.8), (6, 3.3), (7, 12.0)] {
            let mut a = AdcInfo::default();
            a.adc[ch] = AdcInfo::raw_for_volts(ch, v);
            assert!((a.volts(ch).unwrap() - v).abs() < 0.005, "{ch} {v}");
        }
        assert_eq!(AdcInfo::raw_for_volts(1, 100.0), 4095);
        assert_eq!(AdcInfo::raw_for_volts(1, -1.0), 0);
        assert_eq!(
            AdcInfo::celsius(AdcInfo::raw_for_celsius(55.25)),
            Some(55.25)
        );
        assert_ne!(AdcInfo::raw_for_celsius(-1000.0), NO_SENSOR);
    }

    fn arb_adc() -> impl Strategy<Value = AdcInfo> {
        (
            any::<[u16; 8]>(),
            any::<[i16; 4]>(),
            any::<[i16; 4]>(),
            any::<[i16; 4]>(),
            any::<u32>(),
            any::<u32>(),
        )
            .prop_map(|(adc, t_int, t_ext, fan, warning, shutdown)| AdcInfo {
                adc,
                t_int,
                t_ext,
                fan,
                warning,
                shutdown,
            })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = ScpReply::parse(&b);
            let _ = ScpRequest::parse(&b);
            let _ = VersionInfo::parse(&b);
            let _ = AdcInfo::parse(&b);
            let _ = reply_seq(&b);
            if let Ok(r) = ScpReply::parse(&b) {
                prop_assert!(b.len() >= REPLY_HEADER_LEN && b.len() <= MAX_DATAGRAM_LEN);
                prop_assert_eq!(r.payload.len(), b.len() - REPLY_HEADER_LEN);
            }
        }

        #[test]
        fn adc_payload_round_trips(a in arb_adc()) {
            let p = a.encode();
            prop_assert_eq!(p.len(), ADC_PAYLOAD_LEN);
            prop_assert_eq!(AdcInfo::parse(&p), Ok(a));
            // And inside a reply datagram.
            let d = ScpReply { rc: ReturnCode::Ok, seq: 1, payload: p }.encode(None);
            let r = ScpReply::parse(&d).unwrap();
            prop_assert_eq!(AdcInfo::parse(&r.payload), Ok(a));
        }

        #[test]
        fn version_payload_round_trips(
            fixed in any::<(u8, u8, u8, u8, u16, u16, u32)>(),
            name in "[^\u{0}]{0,40}",
            version_string in "[^\u{0}]{1,20}",
        ) {
            let v = VersionInfo {
                board: fixed.0, can_id: fixed.1, frame_id: fixed.2, code_block: fixed.3,
                buffer_size: fixed.4, version: fixed.5, build_date: fixed.6,
                name, version_string,
            };
            prop_assert_eq!(VersionInfo::parse(&v.encode()), Ok(v));
        }

        #[test]
        fn requests_round_trip(
            board in 0u8..32, command in any::<u16>(), seq in any::<u16>(),
            args in any::<[u32; 3]>(), data in proptest::collection::vec(any::<u8>(), 0..=254),
        ) {
            let r = ScpRequest { board, port: 0, command, seq, args, data };
            let b = r.encode().unwrap();
            prop_assert_eq!(ScpRequest::parse(&b), Ok(r));
        }
    }
}
