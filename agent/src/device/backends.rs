//! Builds the HAL device for each configured device. This is the one place that knows which
//! backends exist.
//!
//! A device with `simulator = true` gets a simulator that speaks its backend's real protocol,
//! started here on loopback, and a real backend client pointed at it: the `--simulate` default
//! exercises the same wire code as a lab bench. The simulator's fault handle is attached to the
//! device so `agent-ctl inject-fault` reaches it.

use std::any::Any;
use std::net::{IpAddr, Ipv4Addr};

use anyhow::Context;
use health_hal::bmp::{BmpBoard, BmpSimOptions, BmpSimulator};
use health_hal::loihi::Loihi2Host;
use health_hal::plugin::PluginDevice;
use health_hal::scpi::{PhotonicBench, ScpiBenchSimulator, ScpiSimOptions};
use health_hal::sim::SimDevice;
use health_hal::sysfs::SysfsDevice;
use health_hal::Device;

use crate::config::{Backend, DeviceConfig};

/// A device, and whatever must live as long as it (a loopback simulator).
pub struct Built {
    pub device: Box<dyn Device>,
    pub keep_alive: Option<Box<dyn Any + Send + Sync>>,
}

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

pub async fn build(cfg: &DeviceConfig, sysfs_root: &std::path::Path) -> anyhow::Result<Built> {
    let id = cfg.id.as_str();
    Ok(match &cfg.backend {
        Backend::Sim(options) => Built {
            device: Box::new(SimDevice::new(id, cfg.kind, options.clone())),
            keep_alive: None,
        },
        Backend::Bmp(bmp) if cfg.simulator => {
            // Enough boards that the configured one exists in the simulated frame.
            let options = BmpSimOptions {
                boards: bmp.board_number() + 1,
                ..BmpSimOptions::default()
            };
            let (sim, task) = BmpSimulator::start((LOOPBACK, 0).into(), options)
                .await
                .with_context(|| format!("{id}: starting the BMP simulator"))?;
            let mut bmp = bmp.clone();
            bmp.address = sim.local_addr().to_string();
            let device = BmpBoard::new(id, &bmp)
                .with_context(|| format!("{id}: BMP board"))?
                .with_fault_injector(sim.faults());
            Built {
                device: Box::new(device),
                keep_alive: Some(Box::new(BmpSimGuard(sim, task))),
            }
        }
        Backend::Bmp(bmp) => Built {
            device: Box::new(BmpBoard::new(id, bmp).with_context(|| format!("{id}: BMP board"))?),
            keep_alive: None,
        },
        Backend::Scpi(bench) if cfg.simulator => {
            let sim = ScpiBenchSimulator::start(LOOPBACK, ScpiSimOptions::default())
                .await
                .with_context(|| format!("{id}: starting the SCPI bench simulator"))?;
            let mut bench = bench.clone();
            bench.tec = sim.tec_addr().to_string();
            bench.power_meter = Some(sim.power_meter_addr().to_string());
            bench.laser = Some(sim.laser_addr().to_string());
            // The simulated TEC module's rating is known, so the bench has a power limit.
            bench
                .tec_max_voltage_v
                .get_or_insert(sim.tec_max_voltage_v());
            let device = PhotonicBench::new(id, bench)
                .with_context(|| format!("{id}: SCPI bench"))?
                .with_fault_injector(sim.faults());
            Built {
                device: Box::new(device),
                keep_alive: Some(Box::new(sim)),
            }
        }
        Backend::Sysfs(sysfs) => Built {
            device: Box::new(
                SysfsDevice::new(id, cfg.kind, sysfs.clone())
                    .with_context(|| format!("{id}: sysfs"))?,
            ),
            keep_alive: None,
        },
        Backend::Loihi2(loihi) => Built {
            device: Box::new(
                Loihi2Host::new(id, loihi.clone(), sysfs_root.to_path_buf())
                    .with_context(|| format!("{id}: Loihi 2 host"))?,
            ),
            keep_alive: None,
        },
        Backend::Plugin(plugin) => Built {
            device: Box::new(
                PluginDevice::new(id, cfg.kind, plugin.clone())
                    .with_context(|| format!("{id}: vendor plugin"))?,
            ),
            keep_alive: None,
        },
        Backend::Scpi(bench) => Built {
            device: Box::new(
                PhotonicBench::new(id, bench.clone())
                    .with_context(|| format!("{id}: SCPI bench"))?,
            ),
            keep_alive: None,
        },
    })
}

/// Stops the BMP simulator when the agent lets go of it (dropping its handle alone does not).
struct BmpSimGuard(BmpSimulator, tokio::task::JoinHandle<()>);

impl Drop for BmpSimGuard {
    fn drop(&mut self) {
        self.0.stop();
        self.1.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use health_hal::scpi::ScpiBenchConfig;
    use health_hal::{Capability, DeviceKind, Limits};

    use super::*;

    /// The embedded default's photonic bench: the simulated TEC module's rating is filled in,
    /// so the bench offers a power limit and reports the one in force.
    #[tokio::test]
    async fn a_simulated_bench_has_a_power_limit() {
        let cfg = DeviceConfig {
            id: "photonic-0".into(),
            kind: DeviceKind::Photonic,
            backend: Backend::Scpi(ScpiBenchConfig::new("127.0.0.1:5025")),
            poll_interval: Duration::from_secs(1),
            deadline: Duration::from_secs(2),
            action_deadline: Duration::from_secs(60),
            limits: Limits::for_kind(DeviceKind::Photonic),
            simulator: true,
        };
        let built = build(&cfg, std::path::Path::new("/sys")).await.unwrap();
        assert!(
            built.keep_alive.is_some(),
            "the simulator lives with the device"
        );
        assert!(built
            .device
            .capabilities()
            .contains(&Capability::SetPowerLimit));
        let s = built.device.read().await.unwrap();
        assert!(s.power_limit_watts.is_some_and(|w| w > 0.0), "{s:?}");
    }
}
