//! The command sets of the three simulated instruments (spec: shared/specs/scpi-instruments.md):
//! header parsing (long and short forms, case-insensitive, numeric suffixes, `;`-separated
//! commands), the IEEE 488.2 common commands, and each instrument's own commands applied to the
//! shared [`BenchModel`].
//!
//! Every connection is a [`Session`] with its own error queue. Real LXI instruments differ
//! here; per-session queues (as Keysight instruments keep one per I/O interface) mean that the
//! agent and a lab script talking to the same simulator at once cannot read each other's
//! errors, which keeps concurrent clients independent.

use std::collections::VecDeque;

use super::sim_model::{BenchModel, MAX_CURRENT_LIMIT_A, MIN_CURRENT_LIMIT_A};

/// The error queue holds this many entries; the last slot then becomes -350 (IEEE 488.2).
/// Below the client's 32-read drain bound, so a drain always reaches code 0.
const QUEUE_CAPACITY: usize = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instrument {
    TecController,
    PowerMeter,
    Laser,
}

/// Fixed facts an instrument reports about itself.
#[derive(Debug, Clone)]
pub struct InstrumentInfo {
    pub idn: String,
    pub self_test: i64,
}

/// An SCPI error: code and standard message.
type ScpiError = (i64, &'static str);

const UNDEFINED_HEADER: ScpiError = (-113, "Undefined header");
const SUFFIX_OUT_OF_RANGE: ScpiError = (-114, "Header suffix out of range");
const DATA_TYPE: ScpiError = (-104, "Data type error");
const PARAMETER_NOT_ALLOWED: ScpiError = (-108, "Parameter not allowed");
const MISSING_PARAMETER: ScpiError = (-109, "Missing parameter");
const INVALID_SUFFIX: ScpiError = (-131, "Invalid suffix");
const OUT_OF_RANGE: ScpiError = (-222, "Data out of range");
const ILLEGAL_VALUE: ScpiError = (-224, "Illegal parameter value");

/// One parsed command of a line.
struct Command<'a> {
    /// `*IDN` and friends, upper-cased, without `?`.
    common: Option<String>,
    /// Header nodes, upper-cased, with their numeric suffix split off (`SOUR0` -> `SOUR`, 0).
    nodes: Vec<(String, Option<u32>)>,
    query: bool,
    args: Vec<&'a str>,
}

impl<'a> Command<'a> {
    fn parse(part: &'a str) -> Result<Command<'a>, ScpiError> {
        let part = part.trim();
        let (header, rest) = match part.find(char::is_whitespace) {
            Some(i) => (&part[..i], part[i..].trim()),
            None => (part, ""),
        };
        let header = header.strip_prefix(':').unwrap_or(header);
        let (header, query) = match header.strip_suffix('?') {
            Some(h) => (h, true),
            None => (header, false),
        };
        let args = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split(',').map(str::trim).collect()
        };
        if let Some(name) = header.strip_prefix('*') {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(UNDEFINED_HEADER);
            }
            return Ok(Command {
                common: Some(name.to_ascii_uppercase()),
                nodes: Vec::new(),
                query,
                args,
            });
        }
        let mut nodes = Vec::new();
        for node in header.split(':') {
            let letters = node.trim_end_matches(|c: char| c.is_ascii_digit());
            let digits = &node[letters.len()..];
            if letters.is_empty() || !letters.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(UNDEFINED_HEADER);
            }
            let suffix = if digits.is_empty() {
                None
            } else {
                Some(digits.parse::<u32>().map_err(|_| SUFFIX_OUT_OF_RANGE)?)
            };
            nodes.push((letters.to_ascii_uppercase(), suffix));
        }
        Ok(Command {
            common: None,
            nodes,
            query,
            args,
        })
    }

    /// Whether the header is `pattern`, written in SCPI notation: `SYSTem` matches `SYST` and
    /// `SYSTEM`; a trailing `#` allows the numeric suffix 0 (`SOURce#` matches `SOUR0`); a node
    /// in brackets is optional (`[NEXT]`).
    fn is(&self, pattern: &[&str]) -> Result<bool, ScpiError> {
        matches(&self.nodes, pattern)
    }

    fn no_args(&self) -> Result<(), ScpiError> {
        if self.args.is_empty() {
            Ok(())
        } else {
            Err(PARAMETER_NOT_ALLOWED)
        }
    }

    fn one_arg(&self) -> Result<&'a str, ScpiError> {
        match self.args.as_slice() {
            [] | [""] => Err(MISSING_PARAMETER),
            [a] => Ok(a),
            _ => Err(PARAMETER_NOT_ALLOWED),
        }
    }

    /// A numeric argument with an optional unit suffix; `units` maps suffixes (upper case) to
    /// the factor into the command's base unit, and a bare number is in the base unit.
    fn number(&self, units: &[(&str, f64)]) -> Result<f64, ScpiError> {
        let arg = self.one_arg()?;
        let split = arg
            .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
            .unwrap_or(arg.len());
        // `1E-3` is a number, `1550NM` and `1MW` carry units: split at the first letter that
        // cannot be an exponent, then check that what is left is a number.
        let (num, unit) = arg.split_at(split);
        let value = super::wire::parse_number(num).map_err(|_| DATA_TYPE)?;
        let unit = unit.trim().to_ascii_uppercase();
        if unit.is_empty() {
            return Ok(value);
        }
        units
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, f)| value * f)
            .ok_or(INVALID_SUFFIX)
    }

    fn boolean(&self) -> Result<bool, ScpiError> {
        super::wire::parse_bool(self.one_arg()?).map_err(|_| ILLEGAL_VALUE)
    }
}

fn node_matches(pattern: &str, (name, suffix): &(String, Option<u32>)) -> Result<bool, ScpiError> {
    let (pattern, numbered) = match pattern.strip_suffix('#') {
        Some(p) => (p, true),
        None => (pattern, false),
    };
    let short: String = pattern
        .chars()
        .take_while(|c| !c.is_ascii_lowercase())
        .collect();
    let long = pattern.to_ascii_uppercase();
    if *name != short && *name != long {
        return Ok(false);
    }
    match suffix {
        None => Ok(true),
        Some(0) if numbered => Ok(true),
        Some(_) if numbered => Err(SUFFIX_OUT_OF_RANGE),
        Some(_) => Ok(false),
    }
}

fn matches(nodes: &[(String, Option<u32>)], pattern: &[&str]) -> Result<bool, ScpiError> {
    match (nodes.split_first(), pattern.split_first()) {
        (None, None) => Ok(true),
        (_, Some((p, rest_p))) if p.starts_with('[') => {
            let inner = p.trim_start_matches('[').trim_end_matches(']');
            if let Some((n, rest_n)) = nodes.split_first() {
                if node_matches(inner, n)? && matches(rest_n, rest_p)? {
                    return Ok(true);
                }
            }
            matches(nodes, rest_p)
        }
        (Some((n, rest_n)), Some((p, rest_p))) => {
            Ok(node_matches(p, n)? && matches(rest_n, rest_p)?)
        }
        _ => Ok(false),
    }
}

/// `+1.55000000000E-006`, as Keysight lightwave instruments format numbers: the client must
/// cope with the sign, the padded exponent and the many digits.
fn keysight(x: f64) -> String {
    let s = format!("{:.11E}", x.abs());
    let (mantissa, exp) = s.split_once('E').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    format!(
        "{}{mantissa}E{}{:03}",
        if x < 0.0 { '-' } else { '+' },
        if exp < 0 { '-' } else { '+' },
        exp.abs()
    )
}

fn flag(b: bool) -> String {
    let s = if b { "1" } else { "0" };
    s.to_string()
}

/// One connection to one instrument.
pub struct Session {
    instrument: Instrument,
    errors: VecDeque<ScpiError>,
}

type Reply = Result<Option<String>, ScpiError>;

impl Session {
    pub fn new(instrument: Instrument) -> Session {
        Session {
            instrument,
            errors: VecDeque::new(),
        }
    }

    fn push_error(&mut self, e: ScpiError) {
        if self.errors.len() + 1 < QUEUE_CAPACITY {
            self.errors.push_back(e);
        } else if self.errors.len() + 1 == QUEUE_CAPACITY {
            self.errors.push_back((-350, "Queue overflow"));
        }
    }

    /// Executes every `;`-separated command of `line`; the replies of its queries, joined by
    /// `;`, or `None` when nothing was asked (or every query failed). Each command starts at the
    /// root of the header tree: the simulator does not keep SCPI's "current path" between
    /// commands of one line, so `SOUR0:WAV 1550NM;POW 1MW` must be written out in full.
    pub fn execute(
        &mut self,
        line: &str,
        model: &mut BenchModel,
        info: &InstrumentInfo,
    ) -> Option<String> {
        let mut replies = Vec::new();
        for part in line.split(';') {
            if part.trim().is_empty() {
                continue;
            }
            let result = Command::parse(part).and_then(|c| self.dispatch(&c, model, info));
            match result {
                Ok(Some(r)) => replies.push(r),
                Ok(None) => {}
                Err(e) => self.push_error(e),
            }
        }
        if replies.is_empty() {
            None
        } else {
            Some(replies.join(";"))
        }
    }

    fn dispatch(&mut self, c: &Command, m: &mut BenchModel, info: &InstrumentInfo) -> Reply {
        if let Some(name) = &c.common {
            return self.common(name, c, m, info);
        }
        if c.is(&["SYSTem", "ERRor", "[NEXT]"])? && c.query {
            c.no_args()?;
            let (code, msg) = self.errors.pop_front().unwrap_or((0, "No error"));
            return Ok(Some(format!("{code},\"{msg}\"")));
        }
        if c.is(&["SYSTem", "VERSion"])? && c.query {
            return Ok(Some("1999.0".to_string()));
        }
        match self.instrument {
            Instrument::TecController => tec(c, m),
            Instrument::PowerMeter => meter(c, m),
            Instrument::Laser => laser(c, m),
        }
    }

    fn common(
        &mut self,
        name: &str,
        c: &Command,
        m: &mut BenchModel,
        info: &InstrumentInfo,
    ) -> Reply {
        c.no_args()?;
        match (name, c.query) {
            ("IDN", true) => Ok(Some(info.idn.clone())),
            ("TST", true) => Ok(Some(info.self_test.to_string())),
            ("OPC", true) => Ok(Some("1".to_string())),
            ("ESR", true) | ("STB", true) => Ok(Some("0".to_string())),
            ("OPC", false) | ("WAI", false) => Ok(None),
            ("CLS", false) => {
                self.errors.clear();
                Ok(None)
            }
            ("RST", false) => {
                match self.instrument {
                    Instrument::TecController => m.reset_tec(),
                    Instrument::PowerMeter => m.reset_meter(),
                    Instrument::Laser => m.reset_laser(),
                }
                Ok(None)
            }
            _ => Err(UNDEFINED_HEADER),
        }
    }
}

const CELSIUS: &[(&str, f64)] = &[("C", 1.0), ("CEL", 1.0)];
const AMPERES: &[(&str, f64)] = &[("A", 1.0), ("MA", 1e-3)];

fn tec(c: &Command, m: &mut BenchModel) -> Reply {
    let q = c.query;
    let num = |x: f64| Ok(Some(format!("{x:.4}")));
    if c.is(&["TEC", "LIMit", "ITE"])? {
        // SCPI's MINimum / MAXimum: what the controller accepts, asked or set by name.
        let (lo, hi) = (MIN_CURRENT_LIMIT_A, MAX_CURRENT_LIMIT_A);
        let named = match c.args.as_slice() {
            [a] if a.eq_ignore_ascii_case("MIN") || a.eq_ignore_ascii_case("MINIMUM") => Some(lo),
            [a] if a.eq_ignore_ascii_case("MAX") || a.eq_ignore_ascii_case("MAXIMUM") => Some(hi),
            _ => None,
        };
        if q {
            return match (named, c.args.is_empty()) {
                (Some(x), _) => num(x),
                (None, true) => num(m.current_limit_a),
                (None, false) => Err(ILLEGAL_VALUE),
            };
        }
        let a = match named {
            Some(x) => x,
            None => c.number(AMPERES)?,
        };
        if !(lo..=hi).contains(&a) {
            return Err(OUT_OF_RANGE);
        }
        m.current_limit_a = a;
        return Ok(None);
    }
    if q {
        c.no_args()?;
    }
    if c.is(&["TEC", "T"])? || c.is(&["TEMPerature", "ACTual"])? && q {
        if q {
            return num(m.measured_temperature());
        }
        let t = c.number(CELSIUS)?;
        if !(m.t_low_c..=m.t_high_c).contains(&t) {
            return Err(OUT_OF_RANGE);
        }
        m.set_setpoint(t);
        return Ok(None);
    }
    if c.is(&["TEC", "SET", "T"])? && q || c.is(&["TEMPerature", "SET"])? {
        if q {
            return Ok(Some(format!("{}", m.setpoint_c)));
        }
        let t = c.number(CELSIUS)?;
        if !(m.t_low_c..=m.t_high_c).contains(&t) {
            return Err(OUT_OF_RANGE);
        }
        m.set_setpoint(t);
        return Ok(None);
    }
    if c.is(&["TEC", "OUTput"])? || c.is(&["TEC"])? {
        if q {
            return Ok(Some(flag(m.output_on)));
        }
        m.set_output(c.boolean()?);
        return Ok(None);
    }
    if q && c.is(&["TEC", "ITE"])? {
        return num(m.measured_current());
    }
    if q && c.is(&["TEC", "V"])? {
        return num(m.measured_voltage());
    }
    if q && c.is(&["TEC", "MODE"])? {
        return Ok(Some("T".to_string()));
    }
    if q && c.is(&["TEC", "PID"])? {
        return Ok(Some("2.000,0.000,0.000".to_string()));
    }
    if q && c.is(&["TEC", "TOLerance"])? {
        return Ok(Some("0.100,2.000".to_string()));
    }
    if c.is(&["TEC", "LIMit", "THI"])? {
        if q {
            return num(m.t_high_c);
        }
        let t = c.number(CELSIUS)?;
        if !(t > m.t_low_c && t <= 150.0) {
            return Err(OUT_OF_RANGE);
        }
        m.t_high_c = t;
        return Ok(None);
    }
    if c.is(&["TEC", "LIMit", "TLO"])? {
        if q {
            return num(m.t_low_c);
        }
        let t = c.number(CELSIUS)?;
        if !(t >= -50.0 && t < m.t_high_c) {
            return Err(OUT_OF_RANGE);
        }
        m.t_low_c = t;
        return Ok(None);
    }
    Err(UNDEFINED_HEADER)
}

const NANOMETRES: &[(&str, f64)] = &[("NM", 1.0)];

fn meter(c: &Command, m: &mut BenchModel) -> Reply {
    let q = c.query;
    if q {
        c.no_args()?;
    }
    if q && (c.is(&["MEASure", "POWer"])? || c.is(&["READ"])?) {
        return Ok(Some(format!("{:.6E}", m.measured_optical_power())));
    }
    if c.is(&["SENSe", "CORRection", "WAVelength"])? {
        if q {
            return Ok(Some(format!("{:.6E}", m.meter_wavelength_nm)));
        }
        let nm = c.number(NANOMETRES)?;
        if !(400.0..=1800.0).contains(&nm) {
            return Err(OUT_OF_RANGE);
        }
        m.meter_wavelength_nm = nm;
        return Ok(None);
    }
    if c.is(&["SENSe", "AVERage", "COUNt"])? {
        if q {
            return Ok(Some(m.meter_average_count.to_string()));
        }
        let n = c.number(&[])?;
        if !(n.fract() == 0.0 && (1.0..=10_000.0).contains(&n)) {
            return Err(OUT_OF_RANGE);
        }
        m.meter_average_count = n as u32;
        return Ok(None);
    }
    if q && c.is(&["SYSTem", "SENSor", "IDN"])? {
        return Ok(Some(
            "S144C,SIM-S144C-0001,04-Mar-2024,2,18,289".to_string(),
        ));
    }
    Err(UNDEFINED_HEADER)
}

const METRES: &[(&str, f64)] = &[("M", 1.0), ("UM", 1e-6), ("NM", 1e-9), ("PM", 1e-12)];
const WATTS: &[(&str, f64)] = &[("W", 1.0), ("MW", 1e-3), ("UW", 1e-6), ("NW", 1e-9)];

fn laser(c: &Command, m: &mut BenchModel) -> Reply {
    let q = c.query;
    if q {
        c.no_args()?;
    }
    if c.is(&["SOURce#", "WAVelength"])? {
        if q {
            return Ok(Some(keysight(m.laser_wavelength_m)));
        }
        let w = c.number(METRES)?;
        if !(1260e-9..=1640e-9).contains(&w) {
            return Err(OUT_OF_RANGE);
        }
        m.laser_wavelength_m = w;
        return Ok(None);
    }
    if c.is(&["SOURce#", "POWer", "STATe"])? {
        if q {
            return Ok(Some(flag(m.laser_on)));
        }
        m.laser_on = c.boolean()?;
        return Ok(None);
    }
    if c.is(&["SOURce#", "POWer", "[LEVel]"])? {
        if q {
            return Ok(Some(keysight(m.laser_power_w)));
        }
        let w = c.number(WATTS)?;
        if !(1e-6..=20e-3).contains(&w) {
            return Err(OUT_OF_RANGE);
        }
        m.laser_power_w = w;
        return Ok(None);
    }
    Err(UNDEFINED_HEADER)
}

#[cfg(test)]
mod tests {
    use super::super::sim_model::ModelParams;
    use super::*;

    fn model() -> BenchModel {
        BenchModel::new(ModelParams::nominal(1))
    }

    fn info() -> InstrumentInfo {
        InstrumentInfo {
            idn: "a,b,c,d".into(),
            self_test: 0,
        }
    }

    fn run(s: &mut Session, m: &mut BenchModel, line: &str) -> Option<String> {
        s.execute(line, m, &info())
    }

    #[test]
    fn long_and_short_forms_case_insensitive() {
        let mut m = model();
        let mut s = Session::new(Instrument::Laser);
        assert_eq!(
            run(&mut s, &mut m, "sour0:wav?").as_deref(),
            Some("+1.55000000000E-006")
        );
        run(&mut s, &mut m, ":SOURCE0:WAVELENGTH 1310nm");
        assert_eq!(
            run(&mut s, &mut m, "SOURce:WAVelength?").as_deref(),
            Some("+1.31000000000E-006")
        );
        run(&mut s, &mut m, "SOUR0:POW 2.5MW;SOUR0:POW:STAT 0");
        assert!((m.laser_power_w - 2.5e-3).abs() < 1e-12 && !m.laser_on);
        assert_eq!(
            run(&mut s, &mut m, "SYSTEM:ERROR?").as_deref(),
            Some("0,\"No error\"")
        );
        // SOUR1 is not a slot of this laser.
        run(&mut s, &mut m, "SOUR1:WAV?");
        assert_eq!(
            run(&mut s, &mut m, "SYST:ERR:NEXT?").as_deref(),
            Some("-114,\"Header suffix out of range\"")
        );
    }

    #[test]
    fn errors_queue_up_and_clear() {
        let mut m = model();
        let mut s = Session::new(Instrument::TecController);
        assert_eq!(run(&mut s, &mut m, "FOO:BAR?"), None);
        assert_eq!(run(&mut s, &mut m, "TEC:T 500"), None);
        assert_eq!(run(&mut s, &mut m, "TEC:OUT maybe"), None);
        assert_eq!(run(&mut s, &mut m, "TEC:T"), None);
        assert_eq!(run(&mut s, &mut m, "TEC:T abc"), None);
        let drained: Vec<_> = (0..6)
            .filter_map(|_| run(&mut s, &mut m, "SYST:ERR?"))
            .collect();
        assert_eq!(
            drained,
            [
                "-113,\"Undefined header\"",
                "-222,\"Data out of range\"",
                "-224,\"Illegal parameter value\"",
                "-109,\"Missing parameter\"",
                "-104,\"Data type error\"",
                "0,\"No error\""
            ]
        );
        for _ in 0..100 {
            run(&mut s, &mut m, "NOPE");
        }
        let last = (0..QUEUE_CAPACITY)
            .filter_map(|_| run(&mut s, &mut m, "SYST:ERR?"))
            .last();
        assert_eq!(last.as_deref(), Some("-350,\"Queue overflow\""));
        run(&mut s, &mut m, "NOPE;*CLS");
        assert_eq!(
            run(&mut s, &mut m, "SYST:ERR?").as_deref(),
            Some("0,\"No error\"")
        );
    }

    #[test]
    fn compound_lines_answer_in_one_line() {
        let mut m = model();
        let mut s = Session::new(Instrument::TecController);
        let r = run(&mut s, &mut m, "TEC:T 30;TEC:SET:T?;TEC:OUT?;*OPC?").unwrap();
        assert_eq!(r, "30;1;1");
        run(&mut s, &mut m, "*RST");
        assert_eq!(
            run(&mut s, &mut m, "TEC:OUT?;:TEMP:SET?").as_deref(),
            Some("0;25")
        );
        run(&mut s, &mut m, ":TEC ON");
        assert!(m.output_on);
    }

    #[test]
    fn current_limit_with_its_range_and_reset() {
        let mut m = model();
        let mut s = Session::new(Instrument::TecController);
        assert_eq!(
            run(
                &mut s,
                &mut m,
                "TEC:LIM:ITE?;TEC:LIM:ITE? MIN;TEC:LIMIT:ITE? maximum"
            )
            .as_deref(),
            Some("3.0000;0.1000;5.0000")
        );
        run(&mut s, &mut m, "TEC:LIM:ITE 1500MA");
        assert_eq!(m.current_limit_a, 1.5);
        run(&mut s, &mut m, "TEC:LIM:ITE 0.05");
        run(&mut s, &mut m, "TEC:LIM:ITE? SOME");
        assert_eq!(
            run(&mut s, &mut m, "SYST:ERR?;SYST:ERR?").as_deref(),
            Some("-222,\"Data out of range\";-224,\"Illegal parameter value\"")
        );
        assert_eq!(m.current_limit_a, 1.5, "a refused value changes nothing");
        run(&mut s, &mut m, "TEC:LIM:ITE MIN");
        assert_eq!(m.current_limit_a, MIN_CURRENT_LIMIT_A);
        run(&mut s, &mut m, "*RST");
        assert_eq!(
            run(&mut s, &mut m, "TEC:LIM:ITE?").as_deref(),
            Some("3.0000")
        );
    }

    #[test]
    fn meter_commands() {
        let mut m = model();
        let mut s = Session::new(Instrument::PowerMeter);
        let p = run(&mut s, &mut m, "MEAS:POW?").unwrap();
        let w = super::super::wire::parse_number(&p).unwrap();
        assert!((w - 0.5e-3).abs() < 1e-6, "{p}");
        run(&mut s, &mut m, "SENSE:CORR:WAV 1310");
        assert_eq!(m.meter_wavelength_nm, 1310.0);
        run(&mut s, &mut m, "SENS:CORR:WAV 100");
        assert_eq!(
            run(&mut s, &mut m, "SYST:ERR?").as_deref(),
            Some("-222,\"Data out of range\"")
        );
        assert!(run(&mut s, &mut m, "SYST:SENS:IDN?")
            .unwrap()
            .starts_with("S144C"));
        // TEC commands mean nothing to a power meter.
        run(&mut s, &mut m, "TEC:T?");
        assert_eq!(
            run(&mut s, &mut m, "SYST:ERR?").as_deref(),
            Some("-113,\"Undefined header\"")
        );
    }

    #[test]
    fn keysight_numbers() {
        assert_eq!(keysight(1e-3), "+1.00000000000E-003");
        assert_eq!(keysight(-2.5e4), "-2.50000000000E+004");
        assert_eq!(keysight(0.0), "+0.00000000000E+000");
    }
}
