//! The simulated frame behind a BMP: each board's power state and temperature, and what the
//! firmware does with each SCP command. Pure state, no sockets; [`super::sim`] serves it.
//!
//! Physics reuse the SpiNN-5 numbers of [`crate::sim::profile`]: a powered board dissipates
//! its busy power and relaxes toward `ambient + R * P` with time constant `tau`; an unpowered
//! one cools toward ambient. The 1.2, 1.8 and 2.5 V rails are switched with the board; the
//! 3.3 V rail and the 12 V supply feed the BMP itself and stay up (which is why the firmware
//! keeps monitoring them when a board is off, and why "powered" is judged on the 1.2 V rails).
//! The warning and shutdown words use the firmware's bit layout (bits 8..11: board sensors)
//! with thresholds at 70 and 85 degC; unlike the firmware, the simulator never powers a board
//! down on its own after a shutdown flag.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::wire::{
    command, info, AdcInfo, ReturnCode, ScpRequest, VersionInfo, NO_FAN, NO_SENSOR, UNUSED_CHANNEL,
};
use crate::device::FaultInjector;
use crate::model::{DeviceKind, FaultKind};
use crate::sim::profile::{profile, Profile};

/// What the simulated firmware calls itself in CMD_VER (as a real SpiNN-5 BMP does).
pub const SIM_BMP_NAME: &str = "BC&MP/Spin5-BMP";
pub const SIM_BMP_VERSION: &str = "2.1.2";
/// The build date the simulated firmware reports, unix seconds.
const SIM_BUILD_DATE: u32 = 1_546_300_800;
/// Board sensor thresholds of the firmware's monitor, degC.
const WARNING_C: f64 = 70.0;
const SHUTDOWN_C: f64 = 85.0;
/// The bottom sensor sits further from the hottest chips.
const BOTTOM_OFFSET_C: f64 = 4.0;
/// CAN_SIZE in the firmware: the CAN status table has one byte per CAN id.
const CAN_SIZE: usize = 32;

/// Faults of a simulated BMP, shared with whoever injects them. Kept as bits in one atomic so
/// that injecting never waits on the frame (which the server may be using).
#[derive(Debug, Default)]
pub struct SimFaults {
    bits: AtomicU8,
}

const FAULT_BITS: [(FaultKind, u8); 5] = [
    (FaultKind::Overheat, 1),
    (FaultKind::Hang, 2),
    (FaultKind::Drift, 4),
    (FaultKind::FailingReset, 8),
    (FaultKind::Vanish, 16),
];

impl SimFaults {
    pub fn has(&self, fault: FaultKind) -> bool {
        let bits = self.bits.load(Ordering::Relaxed);
        FAULT_BITS.iter().any(|(f, b)| *f == fault && bits & b != 0)
    }
}

impl FaultInjector for SimFaults {
    fn inject(&self, fault: FaultKind) {
        if fault == FaultKind::Clear {
            self.bits.store(0, Ordering::Relaxed);
        } else if let Some((_, b)) = FAULT_BITS.iter().find(|(f, _)| *f == fault) {
            self.bits.fetch_or(*b, Ordering::Relaxed);
        }
    }

    fn active(&self) -> Vec<FaultKind> {
        let bits = self.bits.load(Ordering::Relaxed);
        FAULT_BITS
            .iter()
            .filter(|(_, b)| bits & b != 0)
            .map(|(f, _)| *f)
            .collect()
    }
}

#[derive(Debug, Clone)]
struct Board {
    powered: bool,
    temperature_c: f64,
    held_in_reset: bool,
}

/// A board as the simulator sees it, for tests to compare with what a client reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimBoardState {
    pub powered: bool,
    pub temperature_c: f64,
    pub held_in_reset: bool,
}

/// The firmware's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub rc: ReturnCode,
    /// Empty unless `rc` is RC_OK: error replies carry no payload.
    pub payload: Vec<u8>,
    /// The reply goes out only after this long (power-on waits for the FPGAs).
    pub delay: Duration,
}

impl Response {
    fn ok(payload: Vec<u8>) -> Response {
        Response {
            rc: ReturnCode::Ok,
            payload,
            delay: Duration::ZERO,
        }
    }

    fn error(rc: ReturnCode) -> Response {
        Response {
            rc,
            payload: Vec::new(),
            delay: Duration::ZERO,
        }
    }
}

pub struct Frame {
    boards: Vec<Board>,
    profile: Profile,
    fpga_load_delay: Duration,
    faults: std::sync::Arc<SimFaults>,
    last: Instant,
    rng: SmallRng,
    seed: u64,
}

impl Frame {
    /// `boards` boards (1..=24), all powered and warm, as a frame that was running already.
    pub fn new(
        boards: u8,
        fpga_load_delay: Duration,
        seed: u64,
        faults: std::sync::Arc<SimFaults>,
    ) -> Frame {
        let profile = profile(DeviceKind::Spinnaker);
        let warm = profile
            .thermal
            .steady(profile.reference_c, profile.busy_power_w);
        Frame {
            boards: vec![
                Board {
                    powered: true,
                    temperature_c: warm,
                    held_in_reset: false,
                };
                boards as usize
            ],
            profile,
            fpga_load_delay,
            faults,
            last: Instant::now(),
            rng: SmallRng::seed_from_u64(seed),
            seed,
        }
    }

    /// Hung or vanished firmware answers nothing, and does nothing.
    pub fn answers(&self) -> bool {
        !(self.faults.has(FaultKind::Hang) || self.faults.has(FaultKind::Vanish))
    }

    /// Integrates every board's temperature up to `now`.
    pub fn advance(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        if dt <= 0.0 {
            return;
        }
        let mut model = self.profile.thermal;
        if self.faults.has(FaultKind::Overheat) {
            // Cooling has failed: a powered board heads for ~100 degC with a 10 s time
            // constant, past the 70 degC warning in ~4 s and the 85 degC shutdown in ~11 s
            // (and within what the sensor word can represent, unlike the in-process
            // simulator's x4).
            model.resistance_k_per_w *= 2.5;
            model.tau_s = (model.tau_s / 6.0).max(1.0);
        }
        for b in &mut self.boards {
            let power = if b.powered {
                self.profile.busy_power_w * (1.0 + 0.03 * (self.rng.random::<f64>() - 0.5))
            } else {
                0.0
            };
            b.temperature_c = model.step(b.temperature_c, self.profile.reference_c, power, dt);
        }
    }

    pub fn board_state(&mut self, board: u8, now: Instant) -> Option<SimBoardState> {
        self.advance(now);
        self.boards.get(board as usize).map(|b| SimBoardState {
            powered: b.powered,
            temperature_c: b.temperature_c,
            held_in_reset: b.held_in_reset,
        })
    }

    fn noise(&mut self, scale: f64) -> f64 {
        scale * (self.rng.random::<f64>() - 0.5)
    }

    /// Board indices selected by a mask; bits for boards the frame does not have are ignored,
    /// as CAN messages to absent boards go nowhere.
    fn selected(&self, mask: u32) -> Vec<usize> {
        (0..self.boards.len())
            .filter(|i| mask & (1u32 << i) != 0)
            .collect()
    }

    /// What the firmware does with `req` at `now`.
    pub fn execute(&mut self, req: &ScpRequest, now: Instant) -> Response {
        self.advance(now);
        if req.port != 0 {
            return Response::error(ReturnCode::Port);
        }
        let board = req.board as usize;
        if board >= self.boards.len() {
            return Response::error(ReturnCode::Cpu);
        }
        let [arg1, arg2, _] = req.args;
        match req.command {
            command::VER => Response::ok(
                VersionInfo {
                    board: req.board,
                    can_id: req.board,
                    frame_id: 0,
                    code_block: 1,
                    buffer_size: 256,
                    version: 0xFFFF,
                    build_date: SIM_BUILD_DATE,
                    name: SIM_BMP_NAME.to_string(),
                    version_string: SIM_BMP_VERSION.to_string(),
                }
                .encode(),
            ),
            command::BMP_INFO => match arg1 {
                info::SERIAL => Response::ok(self.serial(board)),
                info::CAN_STATUS => {
                    let mut p = vec![0u8; CAN_SIZE];
                    for s in p.iter_mut().take(self.boards.len()) {
                        *s = 1;
                    }
                    Response::ok(p)
                }
                info::ADC => Response::ok(self.adc(board).encode()),
                _ => Response::error(ReturnCode::Arg),
            },
            command::POWER => {
                if arg1 & 0xFF > 1 {
                    return Response::error(ReturnCode::Arg);
                }
                let on = arg1 & 1 == 1;
                let boards = self.selected(arg2);
                // failing-reset: the command is accepted but the board never comes up.
                let comes_up = !self.faults.has(FaultKind::FailingReset);
                for &i in &boards {
                    self.boards[i].powered = on && comes_up;
                    self.boards[i].held_in_reset = false;
                }
                let mut r = Response::ok(Vec::new());
                if on && !boards.is_empty() {
                    // Every board switched on loads its FPGAs before the firmware answers.
                    r.delay = self.fpga_load_delay;
                }
                r
            }
            command::RESET => {
                if arg1 & 0xFB > 2 {
                    return Response::error(ReturnCode::Arg);
                }
                let code = arg1 & 3;
                let fails = self.faults.has(FaultKind::FailingReset);
                for i in self.selected(arg2) {
                    let b = &mut self.boards[i];
                    b.held_in_reset = code == 1;
                    if code == 2 && fails {
                        // The pulse is accepted, but the board drops out and stays dark.
                        b.powered = false;
                    }
                }
                Response::ok(Vec::new())
            }
            command::LED => Response::ok(Vec::new()),
            _ => Response::error(ReturnCode::Cmd),
        }
    }

    /// A serial-number block: hardware version 5 and four words unique to the board. The
    /// spec does not give this layout; clients here do not parse it.
    fn serial(&self, board: usize) -> Vec<u8> {
        let mut p = 5u32.to_le_bytes().to_vec();
        for w in 0..4u64 {
            let word = (self.seed ^ ((board as u64) << 8) ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            p.extend_from_slice(&((word >> 32) as u32).to_le_bytes());
        }
        p
    }

    /// The ADC block the firmware would report for `board` now.
    pub fn adc(&mut self, board: usize) -> AdcInfo {
        let Some(b) = self.boards.get(board).cloned() else {
            return AdcInfo::default();
        };
        let on = b.powered;
        let mut a = AdcInfo {
            t_int: [NO_SENSOR; 4],
            t_ext: [NO_SENSOR; 4],
            fan: [NO_FAN; 4],
            ..AdcInfo::default()
        };
        // Channel 0 is not sampled on SpiNN-5.
        a.adc[0] = UNUSED_CHANNEL;
        for (ch, nominal, switched) in [
            (1, 1.2, true),
            (2, 1.2, true),
            (3, 1.2, true),
            (4, 1.8, true),
            (5, 2.5, true),
            (6, 3.3, false),
            (7, 12.0, false),
        ] {
            let v = if on || !switched {
                nominal * (1.0 + self.noise(0.02))
            } else {
                // An off rail reads a few millivolts of ADC noise.
                self.noise(0.01).abs()
            };
            a.adc[ch] = AdcInfo::raw_for_volts(ch, v);
        }
        let top = b.temperature_c + self.noise(0.2);
        let bottom = b.temperature_c - BOTTOM_OFFSET_C + self.noise(0.2);
        a.t_int[0] = AdcInfo::raw_for_celsius(top);
        a.t_int[1] = AdcInfo::raw_for_celsius(bottom);
        a.t_ext[0] = AdcInfo::raw_for_celsius(self.profile.reference_c + 2.0 + self.noise(0.2));
        // The fan controller speeds up with temperature; one fan fitted.
        a.fan[0] = if on {
            (2000.0 + 60.0 * (top - 25.0).max(0.0)).round() as i16
        } else {
            0
        };
        for (i, t) in [top, bottom].into_iter().enumerate() {
            a.warning |= u32::from(t > WARNING_C) << (8 + i);
            a.shutdown |= u32::from(t > SHUTDOWN_C) << (8 + i);
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn frame(n: u8) -> (Frame, Arc<SimFaults>) {
        let f = Arc::new(SimFaults::default());
        (Frame::new(n, Duration::from_millis(1500), 7, f.clone()), f)
    }

    fn req(board: u8, cmd: u16, args: [u32; 3]) -> ScpRequest {
        ScpRequest::new(board, cmd, 1, args)
    }

    #[tokio::test(start_paused = true)]
    async fn commands_answer_like_the_firmware() {
        let (mut f, _) = frame(3);
        let now = Instant::now();
        let v = f.execute(&req(2, command::VER, [0; 3]), now);
        let v = VersionInfo::parse(&v.payload).unwrap();
        assert_eq!((v.board, v.name.as_str()), (2, SIM_BMP_NAME));
        assert_eq!(
            f.execute(&req(3, command::VER, [0; 3]), now).rc,
            ReturnCode::Cpu
        );
        assert_eq!(f.execute(&req(0, 99, [0; 3]), now).rc, ReturnCode::Cmd);
        let mut p = req(0, command::VER, [0; 3]);
        p.port = 1;
        assert_eq!(f.execute(&p, now).rc, ReturnCode::Port);
        assert_eq!(
            f.execute(&req(0, command::BMP_INFO, [9, 0, 0]), now).rc,
            ReturnCode::Arg
        );
        let can = f.execute(&req(0, command::BMP_INFO, [info::CAN_STATUS, 0, 0]), now);
        assert_eq!(&can.payload[..4], &[1, 1, 1, 0]);
        assert_eq!(
            f.execute(&req(0, command::BMP_INFO, [info::SERIAL, 0, 0]), now)
                .payload
                .len(),
            20
        );
        for code in [3, 0x13, 0xFF] {
            assert_eq!(
                f.execute(&req(0, command::RESET, [code, 1, 0]), now).rc,
                ReturnCode::Arg,
                "{code:#x}"
            );
        }
        // The delay bits and the FPGA bit are allowed.
        assert_eq!(
            f.execute(&req(0, command::RESET, [(5 << 16) | 6, 1, 0]), now)
                .rc,
            ReturnCode::Ok
        );
        assert_eq!(
            f.execute(&req(0, command::POWER, [2, 1, 0]), now).rc,
            ReturnCode::Arg
        );
        assert_eq!(
            f.execute(&req(0, command::LED, [0xF, 1, 0]), now).rc,
            ReturnCode::Ok
        );
    }

    #[tokio::test(start_paused = true)]
    async fn power_switches_rails_and_power_on_waits_for_the_fpgas() {
        let (mut f, faults) = frame(2);
        let now = Instant::now();
        let off = f.execute(&req(0, command::POWER, [0, 0b10, 0]), now);
        assert_eq!((off.rc, off.delay), (ReturnCode::Ok, Duration::ZERO));
        let a = f.adc(1);
        assert!(a.rail_1v2_a().unwrap() < 0.05 && a.rail_1v8().unwrap() < 0.05);
        assert!(a.rail_3v3().unwrap() > 3.0 && a.supply_12v().unwrap() > 11.0);
        assert_eq!(a.fan_rpm(0), Some(0.0));
        assert!(f.adc(0).rail_1v2_a().unwrap() > 1.1, "board 0 untouched");
        let on = f.execute(&req(0, command::POWER, [1, 0b10, 0]), now);
        assert_eq!(on.delay, Duration::from_millis(1500));
        assert!(f.adc(1).rail_1v2_b().unwrap() > 1.1);

        faults.inject(FaultKind::FailingReset);
        f.execute(&req(0, command::POWER, [0, 0b10, 0]), now);
        let on = f.execute(&req(0, command::POWER, [1, 0b10, 0]), now);
        assert_eq!(on.rc, ReturnCode::Ok);
        assert!(f.adc(1).rail_1v2_c().unwrap() < 0.05, "stays dark");
        let pulse = f.execute(&req(0, command::RESET, [2, 1, 0]), now);
        assert_eq!(pulse.rc, ReturnCode::Ok);
        assert!(!f.board_state(0, now).unwrap().powered);
    }

    #[tokio::test(start_paused = true)]
    async fn temperature_follows_power_and_overheat_trips_the_flags() {
        let (mut f, faults) = frame(1);
        let t0 = f.board_state(0, Instant::now()).unwrap().temperature_c;
        assert!((t0 - 55.0).abs() < 0.5, "{t0}");
        assert_eq!(f.adc(0).warning, 0);
        // Off for one time constant: 63 % of the way to ambient.
        f.execute(&req(0, command::POWER, [0, 1, 0]), Instant::now());
        tokio::time::advance(Duration::from_secs(60)).await;
        let t = f.board_state(0, Instant::now()).unwrap().temperature_c;
        let want = 25.0 + 30.0 * (-1.0f64).exp();
        assert!((t - want).abs() < 0.5, "{t} vs {want}");
        f.execute(&req(0, command::POWER, [1, 1, 0]), Instant::now());
        tokio::time::advance(Duration::from_secs(600)).await;
        f.advance(Instant::now());
        assert_eq!(f.adc(0).warning, 0, "back at 55 degC");
        faults.inject(FaultKind::Overheat);
        tokio::time::advance(Duration::from_secs(20)).await;
        f.advance(Instant::now());
        let a = f.adc(0);
        assert!(a.board_top().unwrap() > 85.0, "{:?}", a.board_top());
        assert_eq!(a.warning & 0x300, 0x300);
        assert_eq!(a.shutdown & 0x100, 0x100);
        assert!(a.fan_rpm(0).unwrap() > 5000.0);
        assert_eq!(faults.active(), vec![FaultKind::Overheat]);
        faults.inject(FaultKind::Clear);
        assert!(faults.active().is_empty());
    }
}
