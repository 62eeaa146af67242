//! PCI functions (`/sys/bus/pci/devices/DDDD:BB:DD.F/`): identity, link state, AER error
//! counters, and the two resets sysfs offers (`reset`, and `remove` + bus `rescan`).
//!
//! A PCI function can leave sysfs at any moment (hot unplug, surprise link down, driver
//! removal); its directory missing is [`HalError::Vanished`], and reads work again as soon as
//! it is back, since nothing about the function is cached except the last AER counts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::device::HalError;
use crate::model::{Condition, ConditionCode, Severity};

use super::lock;
use super::read::{parse_hex_u32, quote, SysfsReader};
use super::source::{finish, message_of, SourceReport};

/// How often a hard reset looks for the function to go and to come back.
const POLL: Duration = Duration::from_millis(50);

/// The AER counter files, what they count, and how bad a new error of that class is:
/// correctable errors were fixed by the hardware (a marginal link), uncorrectable ones lost
/// data.
const AER_FILES: [(&str, &str, Severity); 3] = [
    ("aer_dev_correctable", "correctable", Severity::Warning),
    ("aer_dev_nonfatal", "non-fatal", Severity::Critical),
    ("aer_dev_fatal", "fatal", Severity::Critical),
];

const LINK_FILES: [&str; 4] = [
    "current_link_speed",
    "current_link_width",
    "max_link_speed",
    "max_link_width",
];

/// Checks a PCI address `DDDD:BB:DD.F` (hex domain, bus, device ≤ 1f, function ≤ 7) and
/// returns it in the lower case sysfs uses.
pub fn parse_address(s: &str) -> Result<String, String> {
    let expected =
        || format!("expected a PCI address DDDD:BB:DD.F (e.g. 0000:03:00.0), found {s:?}");
    let parts: Vec<&str> = s.split([':', '.']).collect();
    let [domain, bus, dev, func] = parts.as_slice() else {
        return Err(expected());
    };
    let hex = |p: &str, len: usize| p.len() == len && p.chars().all(|c| c.is_ascii_hexdigit());
    let shape =
        s.len() == 12 && s.as_bytes().get(4) == Some(&b':') && s.as_bytes().get(7) == Some(&b':');
    if !shape || !hex(domain, 4) || !hex(bus, 2) || !hex(dev, 2) || !hex(func, 1) {
        return Err(expected());
    }
    let d = u8::from_str_radix(dev, 16).map_err(|_| expected())?;
    let f = u8::from_str_radix(func, 16).map_err(|_| expected())?;
    if d > 0x1f || f > 7 {
        return Err(format!(
            "expected a PCI address with device 00..1f and function 0..7, found {s:?}"
        ));
    }
    Ok(s.to_ascii_lowercase())
}

/// The counts in one AER file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AerCounters {
    /// `(name, count)` per line, in file order, without the `TOTAL_` line.
    pub counts: Vec<(String, u64)>,
    /// The `TOTAL_ERR_*` line, or the sum of the counts when there is none.
    pub total: u64,
}

/// Parses a `NAME count` per line AER file (`RxErr 0`, ..., `TOTAL_ERR_COR 2`).
pub fn parse_aer(content: &str) -> Result<AerCounters, String> {
    let mut out = AerCounters::default();
    let mut total = None;
    for (n, line) in content.lines().enumerate() {
        let mut words = line.split_whitespace();
        let (Some(name), count, None) = (words.next(), words.next(), words.next()) else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(format!(
                "line {}: expected \"NAME count\", found {}",
                n + 1,
                quote(line)
            ));
        };
        let Some(count) = count.and_then(|c| c.parse::<u64>().ok()) else {
            return Err(format!(
                "line {}: expected \"NAME count\", found {}",
                n + 1,
                quote(line)
            ));
        };
        if name.starts_with("TOTAL_") {
            total = Some(count);
        } else {
            out.counts.push((name.to_string(), count));
        }
    }
    out.total = total.unwrap_or_else(|| {
        out.counts
            .iter()
            .fold(0u64, |acc, (_, c)| acc.saturating_add(*c))
    });
    Ok(out)
}

/// Vendor, device and class ids, as the kernel shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciIds {
    pub vendor: u32,
    pub device: u32,
    pub class: Option<u32>,
}

/// A link speed file: `8.0 GT/s PCIe` (or `8 GT/s` on older kernels) → `(8.0, "8.0")`;
/// `Unknown` (link down or training) → `None`.
pub fn parse_link_speed(s: &str) -> Option<(f64, String)> {
    let token = s.split_whitespace().next()?;
    let v: f64 = token.parse().ok()?;
    v.is_finite().then(|| (v, token.to_string()))
}

/// A link width file: `16` (or `x16`).
pub fn parse_link_width(s: &str) -> Option<u32> {
    let t = s.trim();
    t.strip_prefix('x').unwrap_or(t).parse().ok()
}

/// The link condition: narrower or slower than the function is capable of. A link with no
/// speed or no lanes is down (critical); a slower or narrower one is degraded (warning).
pub fn link_condition(
    subject: &str,
    address: &str,
    current: (Option<(f64, String)>, Option<u32>),
    max: (Option<(f64, String)>, Option<u32>),
    now: SystemTime,
) -> Option<Condition> {
    let (Some((max_speed, max_speed_s)), Some(max_width)) = max else {
        // Without the capability, nothing to compare with.
        return None;
    };
    let (cur_speed, cur_width) = current;
    let down = cur_speed.is_none() || cur_width.is_none_or(|w| w == 0);
    let slower = cur_speed.as_ref().is_some_and(|(v, _)| *v < max_speed);
    let narrower = cur_width.is_some_and(|w| w < max_width);
    if !(down || slower || narrower) {
        return None;
    }
    let width = cur_width.map_or_else(|| "x?".to_string(), |w| format!("x{w}"));
    let speed = cur_speed.map_or_else(|| "unknown speed".to_string(), |(_, s)| format!("{s} GT/s"));
    Some(Condition::new(
        ConditionCode::LinkDegraded,
        if down {
            Severity::Critical
        } else {
            Severity::Warning
        },
        subject,
        format!(
            "{address}: {width} at {speed}, capable of x{max_width} at {max_speed_s} GT/s{}",
            if down { " (link down)" } else { "" }
        ),
        now,
    ))
}

/// Conditions from one AER file compared with its previous read: new errors, or a counter
/// that went down (the function was reset or replaced, which clears the kernel's counts).
pub fn aer_conditions(
    subject: &str,
    address: &str,
    class: &str,
    severity: Severity,
    prev: &AerCounters,
    now_counts: &AerCounters,
    now: SystemTime,
) -> Option<Condition> {
    if now_counts.total > prev.total {
        let before: HashMap<&str, u64> =
            prev.counts.iter().map(|(n, c)| (n.as_str(), *c)).collect();
        let rises: Vec<String> = now_counts
            .counts
            .iter()
            .filter_map(|(n, c)| {
                let b = before.get(n.as_str()).copied().unwrap_or(0);
                (*c > b).then(|| format!("{n} +{}", c - b))
            })
            .collect();
        let detail = if rises.is_empty() {
            String::new()
        } else {
            format!("{}; ", rises.join(", "))
        };
        return Some(Condition::new(
            ConditionCode::DeviceError,
            severity,
            subject,
            format!(
                "{address}: {} new {class} AER errors since the last read ({detail}total {})",
                now_counts.total - prev.total,
                now_counts.total
            ),
            now,
        ));
    }
    if now_counts.total < prev.total {
        return Some(Condition::new(
            ConditionCode::DeviceError,
            Severity::Info,
            subject,
            format!(
                "{address}: {class} AER count went down from {} to {}: the function was reset or replaced",
                prev.total, now_counts.total
            ),
            now,
        ));
    }
    None
}

pub struct PciFunction {
    reader: SysfsReader,
    address: String,
    aer: Mutex<HashMap<&'static str, AerCounters>>,
    ids: Mutex<Option<PciIds>>,
}

impl PciFunction {
    /// `address` as validated by [`parse_address`].
    pub fn new(reader: SysfsReader, address: impl Into<String>) -> PciFunction {
        PciFunction {
            reader,
            address: address.into(),
            aer: Mutex::new(HashMap::new()),
            ids: Mutex::new(None),
        }
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// The function's directory, relative to the root.
    pub fn dir(&self) -> PathBuf {
        Path::new("bus/pci/devices").join(&self.address)
    }

    /// Ids from the last successful read.
    pub fn ids(&self) -> Option<PciIds> {
        *lock(&self.ids)
    }

    /// Forget the AER counts (after a remove and rescan the kernel starts them from zero).
    pub fn forget(&self) {
        lock(&self.aer).clear();
    }

    fn gone(&self) -> HalError {
        HalError::Vanished(format!(
            "PCI function {} is not present under {}",
            self.address,
            self.reader.path("bus/pci/devices").display()
        ))
    }

    /// Identity, link and AER counters. The function produces conditions, not readings.
    pub async fn read(&self, subject: &str) -> Result<SourceReport, HalError> {
        let dir = self.dir();
        let names = self.reader.list_dir(&dir).await.map_err(|e| match e {
            HalError::Vanished(_) => self.gone(),
            other => other,
        })?;
        let has = |f: &str| names.iter().any(|n| n == f);
        let mut wanted: Vec<&'static str> = vec!["vendor", "device"];
        if has("class") {
            wanted.push("class");
        }
        if LINK_FILES.iter().all(|f| has(f)) {
            wanted.extend(LINK_FILES);
        }
        wanted.extend(AER_FILES.iter().map(|(f, _, _)| *f).filter(|f| has(f)));
        let paths: Vec<PathBuf> = wanted.iter().map(|f| dir.join(f)).collect();
        let results = self.reader.read_many(paths).await;
        let now = SystemTime::now();
        let mut report = SourceReport::default();
        let mut content: HashMap<&str, String> = HashMap::new();
        for (file, r) in wanted.iter().zip(results) {
            match r {
                Ok(c) => {
                    content.insert(file, c);
                }
                Err(e) => report.errors.push(e),
            }
        }
        // A file vanishing under us usually means the whole function went: say that. Checked
        // before anything below updates state, so a call dropped here changes nothing.
        if report
            .errors
            .iter()
            .any(|e| matches!(e, HalError::Vanished(_)))
            && !self.reader.exists(&dir).await.unwrap_or(true)
        {
            return Err(self.gone());
        }
        let path = |f: &str| self.reader.path(dir.join(f));

        // Identity.
        let id = |f: &str| -> Option<Result<u32, HalError>> {
            content.get(f).map(|c| parse_hex_u32(&path(f), c))
        };
        match (id("vendor"), id("device")) {
            (Some(Ok(vendor)), Some(Ok(device))) => {
                let class = match id("class") {
                    Some(Ok(c)) => Some(c),
                    Some(Err(e)) => {
                        report.errors.push(e);
                        None
                    }
                    None => None,
                };
                *lock(&self.ids) = Some(PciIds {
                    vendor,
                    device,
                    class,
                });
            }
            (v, d) => {
                for r in [v, d].into_iter().flatten() {
                    if let Err(e) = r {
                        report.errors.push(e);
                    }
                }
            }
        }

        self.link(subject, &dir, &content, now, &mut report);
        self.aer(subject, &dir, &content, now, &mut report);
        finish(report, wanted.len())
    }

    /// The link's current against its maximum speed and width: a degraded link is a
    /// condition, an unreadable file an error.
    fn link(
        &self,
        subject: &str,
        dir: &Path,
        content: &HashMap<&str, String>,
        now: SystemTime,
        report: &mut SourceReport,
    ) {
        let path = |f: &str| self.reader.path(dir.join(f));
        if LINK_FILES.iter().all(|f| content.contains_key(f)) {
            let get = |f: &str| content.get(f).map(String::as_str).unwrap_or("");
            let speed = |f: &str| -> Result<Option<(f64, String)>, HalError> {
                let s = get(f).trim();
                match parse_link_speed(s) {
                    Some(v) => Ok(Some(v)),
                    // The kernel writes "Unknown" (or "Unknown speed") for a link it cannot
                    // read, typically one that is down.
                    None if s.starts_with("Unknown") => Ok(None),
                    None => Err(HalError::Protocol(format!(
                        "{}: expected a link speed such as \"8.0 GT/s PCIe\", found {}",
                        path(f).display(),
                        quote(s)
                    ))),
                }
            };
            let width = |f: &str| -> Result<u32, HalError> {
                parse_link_width(get(f)).ok_or_else(|| {
                    HalError::Protocol(format!(
                        "{}: expected a link width, found {}",
                        path(f).display(),
                        quote(get(f))
                    ))
                })
            };
            match (
                speed("current_link_speed"),
                width("current_link_width"),
                speed("max_link_speed"),
                width("max_link_width"),
            ) {
                (Ok(cs), Ok(cw), Ok(ms), Ok(mw)) => {
                    if let Some(c) =
                        link_condition(subject, &self.address, (cs, Some(cw)), (ms, Some(mw)), now)
                    {
                        report.conditions.push(c);
                    }
                }
                (cs, cw, ms, mw) => {
                    report.errors.extend(
                        [cs.err(), cw.err(), ms.err(), mw.err()]
                            .into_iter()
                            .flatten(),
                    );
                }
            }
        }
    }

    /// AER counters: a rise since the last read is a condition.
    fn aer(
        &self,
        subject: &str,
        dir: &Path,
        content: &HashMap<&str, String>,
        now: SystemTime,
        report: &mut SourceReport,
    ) {
        let path = |f: &str| self.reader.path(dir.join(f));
        {
            let mut prev = lock(&self.aer);
            for (file, class, severity) in AER_FILES {
                let Some(c) = content.get(file) else {
                    continue;
                };
                let counts = match parse_aer(c) {
                    Ok(v) => v,
                    Err(m) => {
                        report
                            .errors
                            .push(HalError::Protocol(format!("{}: {m}", path(file).display())));
                        continue;
                    }
                };
                if let Some(p) = prev.get(file) {
                    if let Some(cond) =
                        aer_conditions(subject, &self.address, class, severity, p, &counts, now)
                    {
                        report.conditions.push(cond);
                    }
                }
                prev.insert(file, counts);
            }
        }
    }

    /// Function-level (or whatever the kernel chose, see `reset_method`) reset: `1` to
    /// `reset`.
    pub async fn soft_reset(&self) -> Result<(), HalError> {
        let dir = self.dir();
        if !self.reader.exists(&dir).await? {
            return Err(self.gone());
        }
        let file = dir.join("reset");
        if !self.reader.exists(&file).await? {
            return Err(HalError::Unsupported(format!(
                "{}: no reset attribute (the kernel knows no reset method for this function)",
                self.address
            )));
        }
        self.reader
            .write_string(&file, "1")
            .await
            .map_err(|e| as_failed(&self.address, "reset", e))
    }

    /// Remove the function and rescan the bus, waiting up to `wait` for each step to show in
    /// sysfs (the function gone, then back).
    pub async fn hard_reset(&self, wait: Duration) -> Result<(), HalError> {
        let dir = self.dir();
        if !self.reader.exists(&dir).await? {
            return Err(self.gone());
        }
        self.reader
            .write_string(dir.join("remove"), "1")
            .await
            .map_err(|e| as_failed(&self.address, "remove", e))?;
        if !self.wait_for(&dir, false, wait).await {
            return Err(HalError::Failed(format!(
                "{}: still present {:.1} s after writing 1 to remove",
                self.address,
                wait.as_secs_f64()
            )));
        }
        self.forget();
        self.reader
            .write_string("bus/pci/rescan", "1")
            .await
            .map_err(|e| as_failed(&self.address, "rescan", e))?;
        if !self.wait_for(&dir, true, wait).await {
            return Err(HalError::Failed(format!(
                "{}: removed, but not back {:.1} s after a bus rescan",
                self.address,
                wait.as_secs_f64()
            )));
        }
        Ok(())
    }

    /// Polls until the directory's presence is `present`, for at most `wait`. A check that
    /// fails (a timeout) counts as "not yet".
    async fn wait_for(&self, dir: &Path, present: bool, wait: Duration) -> bool {
        let start = Instant::now();
        loop {
            if self.reader.exists(dir).await.ok() == Some(present) {
                return true;
            }
            if start.elapsed() >= wait {
                return false;
            }
            tokio::time::sleep(POLL.min(wait)).await;
        }
    }
}

/// A write that the kernel refused is a failed action; a vanished function or a blocked
/// driver keep their own meaning.
fn as_failed(address: &str, step: &str, e: HalError) -> HalError {
    match e {
        HalError::Vanished(_) | HalError::Timeout(_) => e,
        other => HalError::Failed(format!("{address}: {step}: {}", message_of(&other))),
    }
}
