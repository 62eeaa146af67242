//! [`ScpiBenchSimulator`]: a photonic bench served as three SCPI instruments (TEC controller,
//! optical power meter, tunable laser) on three TCP listeners, over one shared physical model
//! ([`super::sim_model`]). The bench backend, pyvisa and lab scripts talk to it exactly as to
//! real instruments, so the default path runs the real wire code.
//!
//! Faults are injected through [`ScpiBenchSimulator::faults`], a handle that works while the
//! instruments hang: `overheat` (the TEC saturates and the chip runs away from its setpoint),
//! `hang` (connections are accepted and read but nothing is answered or done), `drift` (phase
//! drift x500), `failing-reset` (`*RST` leaves the TEC output off and the TEC then ignores the
//! re-applied setpoint and output), `vanish` (every connection closed, listeners closed so new
//! connections are refused; `clear` reopens them on the same ports), `clear`.
//!
//! Many clients may connect at once; each connection has its own error queue. A line longer
//! than [`MAX_LINE`] drops the connection.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::line::{read_line, MAX_LINE};
use super::sim_instruments::{Instrument, InstrumentInfo, Session};
use super::sim_model::{ActiveFaults, BenchModel, ModelParams, TEC_MAX_VOLTAGE_V};
use super::wire::strip_line;
use crate::device::FaultInjector;
use crate::model::FaultKind;

/// How the simulated bench starts.
#[derive(Debug, Clone, PartialEq)]
pub struct ScpiSimOptions {
    /// TEC setpoint at start (the chip starts settled there), degC.
    pub setpoint_c: f64,
    /// Phase drift at 25 degC, rad/s (the drift fault multiplies it by 500).
    pub drift_per_s: f64,
    pub laser_power_w: f64,
    pub wavelength_nm: f64,
    /// What the TEC controller answers to `*TST?` (0 = passed).
    pub tec_self_test: i64,
    /// Seeds the measurement noise and the serial numbers.
    pub seed: u64,
    /// Ports for the TEC controller, power meter and laser; 0 picks a free port.
    pub ports: [u16; 3],
}

impl Default for ScpiSimOptions {
    fn default() -> Self {
        let nominal = ModelParams::nominal(0x5c91);
        ScpiSimOptions {
            setpoint_c: nominal.setpoint_c,
            drift_per_s: nominal.drift_per_s,
            laser_power_w: nominal.laser_power_w,
            wavelength_nm: nominal.wavelength_nm,
            tec_self_test: 0,
            seed: nominal.seed,
            ports: [0; 3],
        }
    }
}

/// The model's state, for tests and demos to compare with what a client reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimSnapshot {
    pub temperature_c: f64,
    pub setpoint_c: f64,
    pub tec_output_on: bool,
    pub phase_rad: f64,
    pub laser_on: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Serving,
    Vanished,
    Stopped,
}

/// The mode, and how many times the instruments have vanished: a connection opened before a
/// vanish is closed even if `clear` follows so fast that it never saw the vanished mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Status {
    mode: Mode,
    vanishings: u64,
}

struct Clocked {
    model: BenchModel,
    last: Instant,
}

struct Shared {
    clocked: Mutex<Clocked>,
    status: watch::Sender<Status>,
}

impl Shared {
    /// The model, integrated up to now.
    fn model(&self) -> MutexGuard<'_, Clocked> {
        // A poisoned lock means a panic elsewhere mid-update of plain numbers: keep serving.
        let mut g = self.clocked.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let dt = now.saturating_duration_since(g.last).as_secs_f64();
        g.last = now;
        g.model.advance(dt);
        g
    }

    fn set_mode(&self, mode: Mode) {
        self.status.send_if_modified(|s| {
            if s.mode == Mode::Stopped || s.mode == mode {
                return false;
            }
            if mode == Mode::Vanished {
                s.vanishings += 1;
            }
            s.mode = mode;
            true
        });
    }
}

pub struct ScpiBenchSimulator {
    shared: Arc<Shared>,
    addrs: [SocketAddr; 3],
    tasks: Vec<JoinHandle<()>>,
}

const INSTRUMENTS: [Instrument; 3] = [
    Instrument::TecController,
    Instrument::PowerMeter,
    Instrument::Laser,
];

impl ScpiBenchSimulator {
    /// Binds the three instruments on `bind_ip` and starts serving them.
    pub async fn start(
        bind_ip: IpAddr,
        options: ScpiSimOptions,
    ) -> std::io::Result<ScpiBenchSimulator> {
        let model = BenchModel::new(ModelParams {
            setpoint_c: options.setpoint_c,
            drift_per_s: options.drift_per_s,
            laser_power_w: options.laser_power_w,
            wavelength_nm: options.wavelength_nm,
            seed: options.seed,
        });
        let (status, _) = watch::channel(Status {
            mode: Mode::Serving,
            vanishings: 0,
        });
        let shared = Arc::new(Shared {
            clocked: Mutex::new(Clocked {
                model,
                last: Instant::now(),
            }),
            status,
        });
        let n = options.seed % 1_000_000;
        let infos = [
            InstrumentInfo {
                idn: format!(
                    "health-agent simulator,TECSource 5310 (simulated),SIM-TEC-{n:06},1.0.0"
                ),
                self_test: options.tec_self_test,
            },
            InstrumentInfo {
                idn: format!("health-agent simulator,PM100 (simulated),SIM-PM-{n:06},1.0.0"),
                self_test: 0,
            },
            InstrumentInfo {
                idn: format!(
                    "health-agent simulator,8164 tunable laser (simulated),SIM-TLS-{n:06},1.0.0"
                ),
                self_test: 0,
            },
        ];
        let mut listeners = Vec::with_capacity(3);
        for port in options.ports {
            listeners.push(TcpListener::bind(SocketAddr::new(bind_ip, port)).await?);
        }
        let mut addrs = [SocketAddr::new(bind_ip, 0); 3];
        let mut tasks = Vec::with_capacity(3);
        for (i, ((listener, instrument), info)) in listeners
            .into_iter()
            .zip(INSTRUMENTS)
            .zip(infos)
            .enumerate()
        {
            addrs[i] = listener.local_addr()?;
            tasks.push(tokio::spawn(serve_instrument(
                shared.clone(),
                instrument,
                Arc::new(info),
                addrs[i],
                listener,
            )));
        }
        Ok(ScpiBenchSimulator {
            shared,
            addrs,
            tasks,
        })
    }

    pub fn tec_addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    pub fn power_meter_addr(&self) -> SocketAddr {
        self.addrs[1]
    }

    pub fn laser_addr(&self) -> SocketAddr {
        self.addrs[2]
    }

    /// The simulated TEC module's rated voltage: what a bench on this simulator configures as
    /// `tec_max_voltage_v` to have a power limit.
    pub fn tec_max_voltage_v(&self) -> f64 {
        TEC_MAX_VOLTAGE_V
    }

    /// The fault handle; it keeps working while the instruments hang or have vanished.
    pub fn faults(&self) -> Arc<dyn FaultInjector> {
        Arc::new(SimFaultHandle(self.shared.clone()))
    }

    pub fn snapshot(&self) -> SimSnapshot {
        let g = self.shared.model();
        SimSnapshot {
            temperature_c: g.model.temperature_c,
            setpoint_c: g.model.setpoint_c,
            tec_output_on: g.model.output_on,
            phase_rad: g.model.phase_rad,
            laser_on: g.model.laser_on,
        }
    }

    /// Closes the listeners and every connection. Also done on drop.
    pub fn stop(&self) {
        self.shared.set_mode(Mode::Stopped);
    }
}

impl Drop for ScpiBenchSimulator {
    fn drop(&mut self) {
        self.stop();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Resolves when the mode leaves `Serving`, the instruments vanish, or the simulator is gone.
/// `opened` is the vanish count when the connection was accepted.
async fn until_closed(rx: &mut watch::Receiver<Status>, opened: u64) {
    loop {
        let now = *rx.borrow_and_update();
        if now.mode != Mode::Serving || now.vanishings != opened {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn serve_instrument(
    shared: Arc<Shared>,
    instrument: Instrument,
    info: Arc<InstrumentInfo>,
    addr: SocketAddr,
    listener: TcpListener,
) {
    let mut rx = shared.status.subscribe();
    let mut listener = Some(listener);
    loop {
        let mode = rx.borrow_and_update().mode;
        match mode {
            Mode::Stopped => return,
            Mode::Vanished => {
                // Closing the listener is what makes new connections be refused.
                listener = None;
                if rx.changed().await.is_err() {
                    return;
                }
            }
            Mode::Serving => {
                let Some(l) = &listener else {
                    match TcpListener::bind(addr).await {
                        Ok(l) => listener = Some(l),
                        // The port may linger for a moment after vanishing: try again soon.
                        Err(_) => {
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                                r = rx.changed() => if r.is_err() { return },
                            }
                        }
                    }
                    continue;
                };
                tokio::select! {
                    r = l.accept() => match r {
                        Ok((stream, _)) => {
                            let rx = shared.status.subscribe();
                            let opened = rx.borrow().vanishings;
                            tokio::spawn(connection(
                                shared.clone(),
                                instrument,
                                info.clone(),
                                stream,
                                rx,
                                opened,
                            ));
                        }
                        // Out of file descriptors and the like: do not spin.
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    },
                    r = rx.changed() => if r.is_err() { return },
                }
            }
        }
    }
}

async fn connection(
    shared: Arc<Shared>,
    instrument: Instrument,
    info: Arc<InstrumentInfo>,
    stream: TcpStream,
    mut rx: watch::Receiver<Status>,
    opened: u64,
) {
    let _ = stream.set_nodelay(true);
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r);
    let mut session = Session::new(instrument);
    let serve = async {
        loop {
            // Closed, over-long or broken: drop the connection.
            let Ok(bytes) = read_line(&mut reader, MAX_LINE).await else {
                return;
            };
            let text = String::from_utf8_lossy(&bytes);
            let reply = {
                let mut g = shared.model();
                if g.model.faults().hang {
                    continue;
                }
                session.execute(strip_line(&text), &mut g.model, &info)
            };
            if let Some(mut reply) = reply {
                reply.push('\n');
                if w.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    };
    tokio::select! {
        _ = serve => {}
        _ = until_closed(&mut rx, opened) => {}
    }
}

/// The fault handle: flips faults in the shared model and opens or closes the listeners.
struct SimFaultHandle(Arc<Shared>);

impl FaultInjector for SimFaultHandle {
    fn inject(&self, fault: FaultKind) {
        let vanish = {
            // Integrate up to now first, so the fault starts now rather than at the last call.
            let mut g = self.0.model();
            let mut f = g.model.faults();
            match fault {
                FaultKind::Overheat => f.overheat = true,
                FaultKind::Hang => f.hang = true,
                FaultKind::Drift => f.drift = true,
                FaultKind::FailingReset => f.failing_reset = true,
                FaultKind::Vanish => f.vanish = true,
                FaultKind::Clear => f = ActiveFaults::default(),
            }
            g.model.set_faults(f);
            f.vanish
        };
        self.0.set_mode(if vanish {
            Mode::Vanished
        } else {
            Mode::Serving
        });
    }

    fn active(&self) -> Vec<FaultKind> {
        let f = self.0.model().model.faults();
        [
            (f.overheat, FaultKind::Overheat),
            (f.hang, FaultKind::Hang),
            (f.drift, FaultKind::Drift),
            (f.failing_reset, FaultKind::FailingReset),
            (f.vanish, FaultKind::Vanish),
        ]
        .into_iter()
        .filter_map(|(on, k)| on.then_some(k))
        .collect()
    }
}
