//! [`PluginDevice`]: a device whose every read and action is a run of a site's vendor tool.
//!
//! The identity comes from the tool itself: the first successful read that carries an
//! `identity` fills vendor, model, serial and firmware in, and they are kept from then on (a
//! device does not change its serial between polls, and a later read that omits it should not
//! blank it). Until then they are empty. Backend is `plugin`; location is the tool's path.
//!
//! Cancel-safe: every call owns its child process, and dropping the call kills the child's
//! process group (see [`runner`](super::runner)); the identity cache is updated without
//! holding a lock across an await.

use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;

use crate::device::{Device, HalError};
use crate::model::{CalibrationRecord, Capability, DeviceIdentity, DeviceKind, ResetKind, Sample};
use crate::plugin::config::PluginConfig;
use crate::plugin::schema::ReportedIdentity;
use crate::plugin::tool::VendorTool;

pub struct PluginDevice {
    id: String,
    kind: DeviceKind,
    tool: VendorTool,
    reported: Mutex<Option<ReportedIdentity>>,
}

impl PluginDevice {
    /// A plugin device; the config must pass [`PluginConfig::validate`] (else
    /// [`HalError::InvalidArgument`] with `key: expected ..., found ...`).
    pub fn new(
        id: impl Into<String>,
        kind: DeviceKind,
        cfg: PluginConfig,
    ) -> Result<Self, HalError> {
        cfg.validate()
            .map_err(|(k, m)| HalError::InvalidArgument(format!("{k}: {m}")))?;
        Ok(PluginDevice {
            id: id.into(),
            kind,
            tool: VendorTool::new(cfg)?,
            reported: Mutex::new(None),
        })
    }

    pub fn tool(&self) -> &VendorTool {
        &self.tool
    }
}

#[async_trait]
impl Device for PluginDevice {
    fn identity(&self) -> DeviceIdentity {
        // A poisoned lock holds a plain Option that is valid either way.
        let reported = self
            .reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_default();
        DeviceIdentity {
            id: self.id.clone(),
            kind: self.kind,
            vendor: reported.vendor,
            model: reported.model,
            serial: reported.serial,
            firmware: reported.firmware,
            backend: "plugin".to_string(),
            location: self.tool.config().command.display().to_string(),
        }
    }

    fn capabilities(&self) -> Vec<Capability> {
        self.tool.capabilities()
    }

    async fn read(&self) -> Result<Sample, HalError> {
        let reading = self.tool.read(&self.id).await?;
        if let Some(identity) = reading.identity {
            let mut cached = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
            if cached.is_none() {
                *cached = Some(identity);
            }
        }
        Ok(reading.sample)
    }

    async fn reset(&self, kind: ResetKind) -> Result<(), HalError> {
        self.tool.reset(kind).await
    }

    async fn calibrate(&self) -> Result<CalibrationRecord, HalError> {
        self.tool.calibrate(&self.id).await
    }

    async fn set_power_limit(&self, watts: f64) -> Result<(), HalError> {
        self.tool.set_power_limit(watts).await
    }

    async fn set_enabled(&self, enabled: bool) -> Result<(), HalError> {
        self.tool.set_enabled(enabled).await
    }

    async fn matvec(&self, input: &[f64]) -> Result<Vec<f64>, HalError> {
        self.tool.matvec(input).await
    }
}
