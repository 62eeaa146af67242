//! The [`Device`] trait: the one interface through which the agent reads and acts on hardware.
//!
//! Every backend (simulated, sysfs, SpiNNaker BMP, SCPI bench, vendor plugin) implements it.
//! Calls are async so that network backends need no threads; backends that must block (sysfs
//! reads on a broken driver) do so on a blocking thread. The agent runs each call under a
//! deadline and drops the future when it expires, so a backend must be cancel-safe: dropping a
//! call half-way must leave the device object usable for the next call.

use std::sync::Arc;

use async_trait::async_trait;

use crate::model::{CalibrationRecord, Capability, DeviceIdentity, FaultKind, ResetKind, Sample};

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum HalError {
    /// The device is gone: hot-unplugged, unbound, or not answering at the transport level.
    #[error("device vanished: {0}")]
    Vanished(String),
    /// The device does not have this capability.
    #[error("not supported by this device: {0}")]
    Unsupported(String),
    /// The device answered, but the action did not succeed.
    #[error("action failed: {0}")]
    Failed(String),
    /// The device answered with something that does not follow its protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An argument is outside what the device accepts.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The device (or its controller) did not answer within the backend's own protocol
    /// timeouts and retries: it is there but not responding.
    #[error("no answer: {0}")]
    Timeout(String),
    /// An operating-system error talking to the device (EPERM, EAGAIN, EIO ...).
    #[error("i/o error: {0}")]
    Io(String),
}

/// Runtime fault injection, held apart from the device so that it still works while the device
/// itself hangs. Only simulated devices hand one out.
pub trait FaultInjector: Send + Sync {
    fn inject(&self, fault: FaultKind);
    /// Faults active now, for display.
    fn active(&self) -> Vec<FaultKind>;
}

/// A square weight matrix, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrayWeights {
    pub n: usize,
    pub values: Vec<f64>,
}

#[async_trait]
pub trait Device: Send + Sync {
    /// Identity as known now (a backend may fill firmware in after its first read).
    fn identity(&self) -> DeviceIdentity;

    fn capabilities(&self) -> Vec<Capability>;

    /// One read of every sensor the device has.
    async fn read(&self) -> Result<Sample, HalError>;

    /// Reset the device. Returns when the device is back (or the reset has failed).
    async fn reset(&self, kind: ResetKind) -> Result<(), HalError>;

    /// Calibrate; returns the record of the new calibration.
    async fn calibrate(&self) -> Result<CalibrationRecord, HalError>;

    async fn set_power_limit(&self, watts: f64) -> Result<(), HalError>;

    /// Enable or disable the device (disabling idles it and stops its workload power).
    async fn set_enabled(&self, enabled: bool) -> Result<(), HalError>;

    /// Applies `input` to the device's array and returns the output vector (`MATVEC`
    /// capability: analog crossbars). Used by the known-answer probe.
    async fn matvec(&self, input: &[f64]) -> Result<Vec<f64>, HalError> {
        let _ = input;
        Err(HalError::Unsupported("matvec".to_string()))
    }

    /// The weights the device's array was programmed with, as the host wrote them: the exact
    /// operator its `matvec` approximates, which the known-answer probe checks the products
    /// against. `None` when the backend does not know them (the probe then does not run).
    fn programmed_weights(&self) -> Option<ArrayWeights> {
        None
    }

    /// A handle to inject faults, for simulated devices only.
    fn fault_injector(&self) -> Option<Arc<dyn FaultInjector>> {
        None
    }
}
