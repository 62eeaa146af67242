//! [`SysfsSources`]: the sysfs sources that make up one device, read together and merged into
//! one [`Sample`]; and [`SysfsDevice`], the [`Device`] built on them for any kind of card (a
//! PCIe analog crossbar card, a board with an hwmon chip). Other backends (Loihi 2 hosts)
//! embed [`SysfsSources`] for their hwmon and power-supply part and add their own readings.
//!
//! One failed source does not fail the device: it becomes a DEVICE_ERROR condition beside
//! the readings of the others. Only when every source fails does the read fail, with the
//! worst error (a vanished device before a blocked driver before an access error), so the
//! agent sees DEVICE_MISSING when the card is gone.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use async_trait::async_trait;

use crate::device::{Device, HalError};
use crate::model::{CalibrationRecord, Capability, DeviceIdentity, DeviceKind, ResetKind, Sample};

use super::config::SysfsConfig;
use super::hwmon::{ChipSelect, Hwmon};
use super::pci::PciFunction;
use super::power_supply::PowerSupply;
use super::powercap::Rapl;
use super::read::SysfsReader;
use super::source::{error_condition, message_of, with_message, worst_of, SourceReport};
use super::thermal::ThermalZone;

/// The configured sources of one device, sharing one [`SysfsReader`].
pub struct SysfsSources {
    reader: SysfsReader,
    pub hwmon: Option<Hwmon>,
    pub thermal: Option<ThermalZone>,
    pub power_supply: Option<PowerSupply>,
    pub powercap: Option<Rapl>,
    pub pci: Option<PciFunction>,
    rescan_wait: std::time::Duration,
}

/// Awaits `f` if there is one.
async fn maybe<F: Future>(f: Option<F>) -> Option<F::Output> {
    match f {
        Some(f) => Some(f.await),
        None => None,
    }
}

impl SysfsSources {
    /// Validates `cfg` (an invalid one is [`HalError::InvalidArgument`] naming the key).
    pub fn new(cfg: &SysfsConfig) -> Result<SysfsSources, HalError> {
        cfg.validate()
            .map_err(|(k, m)| HalError::InvalidArgument(format!("{k}: {m}")))?;
        let reader = SysfsReader::new(&cfg.root, cfg.deadline());
        let pci_addr = cfg.pci_address();
        Ok(SysfsSources {
            hwmon: cfg.hwmon.as_deref().map(|h| {
                Hwmon::new(
                    reader.clone(),
                    ChipSelect::parse(h),
                    cfg.hwmon_labels.clone(),
                    cfg.power_cap_sensor,
                    pci_addr.as_deref(),
                )
            }),
            thermal: cfg
                .thermal_zone
                .as_deref()
                .map(|t| ThermalZone::new(reader.clone(), t)),
            power_supply: cfg
                .power_supply
                .as_deref()
                .map(|p| PowerSupply::new(reader.clone(), p)),
            powercap: cfg
                .powercap
                .as_deref()
                .map(|z| Rapl::new(reader.clone(), z)),
            pci: pci_addr.map(|a| PciFunction::new(reader.clone(), a)),
            reader,
            rescan_wait: cfg.rescan_wait(),
        })
    }

    /// The reader all sources share (its counters show blocked calls).
    pub fn reader(&self) -> &SysfsReader {
        &self.reader
    }

    /// Each configured source's own result, named for messages, all read at once.
    pub async fn read_sources(
        &self,
        subject: &str,
    ) -> Vec<(String, Result<SourceReport, HalError>)> {
        let (h, t, ps, rp, pci) = tokio::join!(
            maybe(self.hwmon.as_ref().map(|s| s.read(subject))),
            maybe(self.thermal.as_ref().map(|s| s.read(subject))),
            maybe(self.power_supply.as_ref().map(|s| s.read(subject))),
            maybe(self.powercap.as_ref().map(|s| s.read(subject))),
            maybe(self.pci.as_ref().map(|s| s.read(subject))),
        );
        let mut out = Vec::new();
        if let (Some(s), Some(r)) = (&self.hwmon, h) {
            out.push((s.describe(), r));
        }
        if let (Some(s), Some(r)) = (&self.thermal, t) {
            out.push((format!("thermal zone {:?}", s.zone_type()), r));
        }
        if let (Some(s), Some(r)) = (&self.power_supply, ps) {
            out.push((format!("power supply {:?}", s.name()), r));
        }
        if let (Some(s), Some(r)) = (&self.powercap, rp) {
            out.push((format!("powercap zone {:?}", s.zone()), r));
        }
        if let (Some(s), Some(r)) = (&self.pci, pci) {
            out.push((format!("PCI {}", s.address()), r));
        }
        out
    }

    /// Every source's readings in one sample; see [`merge`].
    pub async fn read(&self, subject: &str) -> Result<Sample, HalError> {
        merge(subject, self.read_sources(subject).await)
    }

    /// ResetSoft and ResetHard with a PCI function; SetPowerLimit with a power cap sensor
    /// whose `powerK_cap` was writable when the chip was last found.
    pub fn capabilities(&self) -> Vec<Capability> {
        let mut caps = Vec::new();
        if self.pci.is_some() {
            caps.push(Capability::ResetSoft);
            caps.push(Capability::ResetHard);
        }
        if self.hwmon.as_ref().is_some_and(Hwmon::power_cap_writable) {
            caps.push(Capability::SetPowerLimit);
        }
        caps
    }

    pub async fn reset(&self, kind: ResetKind) -> Result<(), HalError> {
        let Some(pci) = &self.pci else {
            return Err(HalError::Unsupported(format!(
                "{} reset: only a device with a PCI function can be reset through sysfs",
                kind.as_str()
            )));
        };
        match kind {
            ResetKind::Soft => pci.soft_reset().await,
            ResetKind::Hard => {
                let result = pci.hard_reset(self.rescan_wait).await;
                // A re-probed function gets new hwmon and thermal numbers.
                self.forget();
                result
            }
            ResetKind::PowerCycle => Err(HalError::Unsupported(
                "power-cycle: sysfs has no slot power control here".to_string(),
            )),
        }
    }

    pub async fn set_power_limit(&self, watts: f64) -> Result<(), HalError> {
        match &self.hwmon {
            Some(h) => h.set_power_cap(watts).await,
            None => Err(HalError::Unsupported(
                "set power limit: no hwmon chip configured".to_string(),
            )),
        }
    }

    /// Forget where chips and zones were, so they are found again.
    pub fn forget(&self) {
        if let Some(h) = &self.hwmon {
            h.forget();
        }
        if let Some(t) = &self.thermal {
            t.forget();
        }
        if let Some(r) = &self.powercap {
            r.forget();
        }
    }

    /// Where the device is: the PCI address, else the hwmon chip's directory (once found),
    /// else the first other source's path.
    pub fn location(&self) -> String {
        if let Some(p) = &self.pci {
            return p.address().to_string();
        }
        if let Some(h) = &self.hwmon {
            return h
                .location()
                .map_or_else(|| h.describe(), |p| p.display().to_string());
        }
        let path: Option<PathBuf> = self
            .power_supply
            .as_ref()
            .map(PowerSupply::location)
            .or_else(|| self.thermal.as_ref().and_then(ThermalZone::location))
            .or_else(|| self.powercap.as_ref().and_then(Rapl::location));
        path.unwrap_or_else(|| self.reader.root().to_path_buf())
            .display()
            .to_string()
    }
}

/// Merges source results into one sample. A failed source (or file) becomes a DEVICE_ERROR
/// condition; if every source failed, the worst error is returned, naming each source.
pub fn merge(
    subject: &str,
    results: Vec<(String, Result<SourceReport, HalError>)>,
) -> Result<Sample, HalError> {
    let now = SystemTime::now();
    let mut sample = Sample {
        readings: Vec::new(),
        calibration: None,
        power_limit_watts: None,
        powered: true,
        conditions: Vec::new(),
    };
    let mut failures: Vec<(String, HalError)> = Vec::new();
    let mut any_ok = false;
    let mut powered = None;
    for (source, result) in results {
        match result {
            Ok(r) => {
                any_ok = true;
                sample.readings.extend(r.readings);
                sample.conditions.extend(r.conditions);
                for e in &r.errors {
                    sample
                        .conditions
                        .push(error_condition(subject, &source, e, now));
                }
                // The first source with a limit wins: hwmon's cap comes before RAPL's.
                sample.power_limit_watts = sample.power_limit_watts.or(r.power_limit_watts);
                powered = powered.or(r.powered);
            }
            Err(e) => failures.push((source, e)),
        }
    }
    if !any_ok && !failures.is_empty() {
        let errors: Vec<HalError> = failures
            .iter()
            .map(|(s, e)| with_message(e, format!("{s}: {}", message_of(e))))
            .collect();
        if let Some(e) = worst_of(&errors) {
            return Err(e);
        }
    }
    for (source, e) in &failures {
        sample
            .conditions
            .push(error_condition(subject, source, e, now));
    }
    sample.powered = powered.unwrap_or(true);
    Ok(sample)
}

/// A device read entirely from sysfs.
pub struct SysfsDevice {
    id: String,
    sources: SysfsSources,
    identity: Mutex<DeviceIdentity>,
}

impl SysfsDevice {
    /// Validates `cfg` ([`HalError::InvalidArgument`] names the key). Touches no file: the
    /// sources are found on the first read.
    pub fn new(
        id: impl Into<String>,
        kind: DeviceKind,
        cfg: SysfsConfig,
    ) -> Result<SysfsDevice, HalError> {
        let id = id.into();
        let sources = SysfsSources::new(&cfg)?;
        let model = sources
            .hwmon
            .as_ref()
            .and_then(|h| h.chip_name().map(str::to_string))
            .unwrap_or_default();
        let identity = DeviceIdentity {
            id: id.clone(),
            kind,
            vendor: String::new(),
            model,
            serial: String::new(),
            firmware: String::new(),
            backend: "sysfs".to_string(),
            location: sources.location(),
        };
        Ok(SysfsDevice {
            id,
            sources,
            identity: Mutex::new(identity),
        })
    }

    pub fn sources(&self) -> &SysfsSources {
        &self.sources
    }

    /// The shared reader, for its counters.
    pub fn reader(&self) -> &SysfsReader {
        self.sources.reader()
    }

    fn identity_mut(&self) -> MutexGuard<'_, DeviceIdentity> {
        self.identity.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fill in what reads have learned: PCI ids, where the chip was found.
    fn refresh_identity(&self) {
        let ids = self.sources.pci.as_ref().and_then(PciFunction::ids);
        let location = self.sources.location();
        let mut ident = self.identity_mut();
        if let Some(ids) = ids {
            ident.vendor = format!("0x{:04x}", ids.vendor);
            ident.model = format!("0x{:04x}", ids.device);
        }
        ident.location = location;
    }
}

#[async_trait]
impl Device for SysfsDevice {
    fn identity(&self) -> DeviceIdentity {
        self.identity_mut().clone()
    }

    fn capabilities(&self) -> Vec<Capability> {
        self.sources.capabilities()
    }

    async fn read(&self) -> Result<Sample, HalError> {
        let result = self.sources.read(&self.id).await;
        self.refresh_identity();
        result
    }

    async fn reset(&self, kind: ResetKind) -> Result<(), HalError> {
        self.sources.reset(kind).await
    }

    async fn calibrate(&self) -> Result<CalibrationRecord, HalError> {
        Err(HalError::Unsupported(
            "calibrate: sysfs offers no calibration".to_string(),
        ))
    }

    async fn set_power_limit(&self, watts: f64) -> Result<(), HalError> {
        self.sources.set_power_limit(watts).await
    }

    async fn set_enabled(&self, _enabled: bool) -> Result<(), HalError> {
        Err(HalError::Unsupported(
            "enable/disable: not offered through sysfs".to_string(),
        ))
    }
}
