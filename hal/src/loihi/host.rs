//! [`Loihi2Host`]: the Loihi 2 board as its host exposes it, composed from the pieces around
//! it: hwmon temperatures and power-supply energy through the sysfs backend, board-host
//! reachability and SLURM state through [`host_checks`], and the site's vendor tool for
//! reset and calibration. Each piece fails on its own: a sysfs source that vanishes becomes a
//! condition beside the reachability result instead of hiding it.

use std::path::PathBuf;

use async_trait::async_trait;

use super::{host_checks, Loihi2Config};
use crate::device::{Device, HalError};
use crate::model::{
    CalibrationRecord, Capability, Condition, ConditionCode, DeviceIdentity, DeviceKind, ResetKind,
    Sample, Severity,
};
use crate::plugin::VendorTool;
use crate::sysfs::{SysfsConfig, SysfsSources};

pub struct Loihi2Host {
    identity: DeviceIdentity,
    cfg: Loihi2Config,
    sysfs: Option<SysfsSources>,
    tool: Option<VendorTool>,
}

impl Loihi2Host {
    /// `sysfs_root` is `/sys` in production and a fixture tree in tests.
    pub fn new(id: &str, cfg: Loihi2Config, sysfs_root: PathBuf) -> Result<Loihi2Host, HalError> {
        cfg.validate()
            .map_err(|(key, msg)| HalError::InvalidArgument(format!("{key}: {msg}")))?;
        let sysfs = if cfg.hwmon.is_some() || cfg.power_supply.is_some() {
            let sc = SysfsConfig {
                root: sysfs_root,
                hwmon: cfg.hwmon.clone(),
                power_supply: cfg.power_supply.clone(),
                ..SysfsConfig::default()
            };
            Some(SysfsSources::new(&sc)?)
        } else {
            None
        };
        let tool = cfg.vendor_tool()?;
        Ok(Loihi2Host {
            identity: DeviceIdentity {
                id: id.to_string(),
                kind: DeviceKind::Loihi2,
                vendor: "Intel".to_string(),
                model: "Loihi 2".to_string(),
                serial: String::new(),
                firmware: String::new(),
                backend: "loihi2".to_string(),
                location: cfg.board_host.clone(),
            },
            cfg,
            sysfs,
            tool,
        })
    }

    fn tool(&self, what: &str) -> Result<&VendorTool, HalError> {
        self.tool.as_ref().ok_or_else(|| {
            HalError::Unsupported(format!(
                "{what}: no vendor tool configured ([device.loihi2.vendor])"
            ))
        })
    }
}

#[async_trait]
impl Device for Loihi2Host {
    fn identity(&self) -> DeviceIdentity {
        self.identity.clone()
    }

    fn capabilities(&self) -> Vec<Capability> {
        self.tool
            .as_ref()
            .map(VendorTool::capabilities)
            .unwrap_or_default()
    }

    async fn read(&self) -> Result<Sample, HalError> {
        let id = self.identity.id.as_str();
        let sensors = async {
            match &self.sysfs {
                Some(s) => Some(s.read(id).await),
                None => None,
            }
        };
        let (sensors, checks) = tokio::join!(sensors, host_checks(&self.cfg, id));
        let mut sample = match sensors {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                let code = if matches!(e, HalError::Vanished(_)) {
                    ConditionCode::DeviceMissing
                } else {
                    ConditionCode::DeviceError
                };
                let mut s = empty_sample();
                s.conditions.push(Condition::new(
                    code,
                    Severity::Critical,
                    id,
                    format!("board sensors: {e}"),
                    std::time::SystemTime::now(),
                ));
                s
            }
            None => empty_sample(),
        };
        // The board counts as powered when its host answers; sysfs alone cannot tell.
        sample.powered = checks.reachability.up;
        sample.conditions.extend(checks.conditions);
        Ok(sample)
    }

    async fn reset(&self, kind: ResetKind) -> Result<(), HalError> {
        self.tool("reset")?.reset(kind).await
    }

    async fn calibrate(&self) -> Result<CalibrationRecord, HalError> {
        self.tool("calibrate")?.calibrate(&self.identity.id).await
    }

    async fn set_power_limit(&self, watts: f64) -> Result<(), HalError> {
        self.tool("set-power-limit")?.set_power_limit(watts).await
    }

    async fn set_enabled(&self, enabled: bool) -> Result<(), HalError> {
        self.tool("enable/disable")?.set_enabled(enabled).await
    }
}

fn empty_sample() -> Sample {
    Sample {
        readings: Vec::new(),
        calibration: None,
        power_limit_watts: None,
        powered: true,
        conditions: Vec::new(),
    }
}
