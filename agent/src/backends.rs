//! Builds the HAL device for each configured device. This is the one place that knows which
//! backends exist; hardware backends join here as they are built.

use health_hal::sim::SimDevice;
use health_hal::Device;

use crate::config::{Backend, DeviceConfig};

pub fn build(cfg: &DeviceConfig) -> Box<dyn Device> {
    match &cfg.backend {
        Backend::Sim(options) => Box::new(SimDevice::new(&cfg.id, cfg.kind, options.clone())),
    }
}
