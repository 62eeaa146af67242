//! The BMP backend end to end on loopback: `BmpBoard` and `BmpClient` against `BmpSimulator`
//! (and against a raw UDP peer for what a simulator would never send). Every wait is bounded;
//! timeouts are shortened so that failure paths take tenths of a second.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use health_hal::bmp::sim_frame::{SIM_BMP_NAME, SIM_BMP_VERSION};
use health_hal::bmp::wire::{self, command, info, AdcInfo, ReturnCode, ScpReply, ScpRequest};
use health_hal::bmp::{BmpBoard, BmpClient, BmpConfig, BmpSimOptions, BmpSimulator, ClientOptions};
use health_hal::{
    Capability, ConditionCode, Device, FaultKind, HalError, Quantity, ResetKind, Sample,
};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

const LOOPBACK: &str = "127.0.0.1:0";

/// A running simulator whose task is aborted when the test ends, however it ends.
struct Sim {
    sim: BmpSimulator,
    task: JoinHandle<()>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::ops::Deref for Sim {
    type Target = BmpSimulator;
    fn deref(&self) -> &BmpSimulator {
        &self.sim
    }
}

async fn sim(options: BmpSimOptions) -> Sim {
    let (sim, task) = BmpSimulator::start(LOOPBACK.parse().unwrap(), options)
        .await
        .unwrap();
    Sim { sim, task }
}

fn fast() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_millis(200),
        attempts: 5,
        power_on_timeout: Duration::from_secs(3),
    }
}

fn quick_fpgas() -> BmpSimOptions {
    BmpSimOptions {
        fpga_load_delay: Duration::from_millis(200),
        ..BmpSimOptions::default()
    }
}

fn board(addr: SocketAddr, n: u8, options: ClientOptions) -> BmpBoard {
    BmpBoard::with_client(
        "spin-0",
        n,
        BmpClient::new(addr, options),
        Duration::from_millis(300),
    )
}

fn get(s: &Sample, sensor: &str, q: Quantity) -> f64 {
    s.get(sensor, q)
        .unwrap_or_else(|| panic!("no {sensor} {q:?} in {:?}", s.readings))
}

fn near(v: f64, want: f64, tol: f64) -> bool {
    (v - want).abs() <= tol
}

#[tokio::test]
async fn reads_plausible_sensors_and_identity_from_cmd_ver() {
    let s = sim(BmpSimOptions {
        boards: 3,
        ..BmpSimOptions::default()
    })
    .await;
    let b = board(s.local_addr(), 2, fast());
    assert!(b.identity().model.contains("not yet contacted"));
    let r = b.read().await.unwrap();
    assert!(r.powered);
    assert!(r.conditions.is_empty(), "{:?}", r.conditions);
    let top = get(&r, "board_top", Quantity::TemperatureCelsius);
    let bottom = get(&r, "board_bottom", Quantity::TemperatureCelsius);
    assert!(
        near(top, 55.0, 3.0) && near(bottom, 51.0, 3.0),
        "{top} {bottom}"
    );
    assert!(near(
        get(&r, "external_0", Quantity::TemperatureCelsius),
        27.0,
        1.0
    ));
    assert_eq!(r.get("external_1", Quantity::TemperatureCelsius), None);
    for (rail, v) in [
        ("rail_1v2_a", 1.2),
        ("rail_1v2_b", 1.2),
        ("rail_1v2_c", 1.2),
        ("rail_1v8", 1.8),
        ("rail_2v5", 2.5),
        ("rail_3v3", 3.3),
        ("supply_12v", 12.0),
    ] {
        let got = get(&r, rail, Quantity::VoltageVolts);
        assert!(near(got, v, v * 0.03), "{rail} {got}");
    }
    assert!(get(&r, "fan_0", Quantity::FanRpm) > 2000.0);
    assert_eq!(r.get("fan_1", Quantity::FanRpm), None);
    assert!(
        r.max_of(Quantity::PowerWatts).is_none(),
        "the BMP measures no power"
    );

    let id = b.identity();
    assert_eq!(id.model, SIM_BMP_NAME);
    assert_eq!(id.firmware, SIM_BMP_VERSION);
    assert_eq!(id.vendor, "University of Manchester");
    assert_eq!(id.backend, "bmp");
    assert_eq!(id.location, format!("{} board 2", s.local_addr()));
    // CMD_VER is asked once and kept.
    b.read().await.unwrap();
    assert_eq!(s.requests(command::VER), 1);
    assert_eq!(s.requests(command::BMP_INFO), 2);
}

#[tokio::test]
async fn board_from_config_reads_the_simulator() {
    let s = sim(BmpSimOptions::default()).await;
    let cfg: BmpConfig =
        serde_json::from_str(&format!(r#"{{"address": "{}"}}"#, s.local_addr())).unwrap();
    let b = BmpBoard::new("spin-0", &cfg).unwrap();
    assert!(b.read().await.unwrap().powered);
    assert_eq!(
        b.capabilities(),
        [
            Capability::ResetSoft,
            Capability::ResetHard,
            Capability::PowerCycle,
            Capability::EnableDisable
        ]
    );
    assert!(b.fault_injector().is_none());
    assert!(matches!(b.calibrate().await, Err(HalError::Unsupported(_))));
    assert!(matches!(
        b.set_power_limit(30.0).await,
        Err(HalError::Unsupported(_))
    ));
}

#[tokio::test]
async fn soft_reset_pulses_the_chips_and_the_board_stays_up() {
    let s = sim(BmpSimOptions::default()).await;
    let b = board(s.local_addr(), 0, fast());
    b.reset(ResetKind::Soft).await.unwrap();
    assert_eq!(s.requests(command::RESET), 1);
    assert_eq!(s.requests(command::POWER), 0);
    assert!(b.read().await.unwrap().powered);
}

#[tokio::test]
async fn power_cycle_turns_the_rails_off_then_brings_them_back() {
    let s = sim(quick_fpgas()).await;
    let b = Arc::new(board(s.local_addr(), 0, fast()));
    // A second client on the same BMP looks while the first one's power cycle is under way.
    let observer = board(s.local_addr(), 0, fast());
    let cycling = tokio::spawn({
        let b = b.clone();
        async move { b.reset(ResetKind::PowerCycle).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let off = observer.read().await.unwrap();
    assert!(!off.powered);
    for rail in ["rail_1v2_a", "rail_1v2_b", "rail_1v2_c", "rail_1v8"] {
        assert!(get(&off, rail, Quantity::VoltageVolts) < 0.05, "{rail}");
    }
    assert!(
        get(&off, "rail_3v3", Quantity::VoltageVolts) > 3.0,
        "the BMP's own supply stays up"
    );
    cycling.await.unwrap().unwrap();
    let on = b.read().await.unwrap();
    assert!(on.powered);
    assert!(get(&on, "rail_1v2_a", Quantity::VoltageVolts) > 1.1);

    // A hard reset is a power cycle too; disable and enable switch the power.
    b.reset(ResetKind::Hard).await.unwrap();
    assert_eq!(s.requests(command::POWER), 4);
    b.set_enabled(false).await.unwrap();
    assert!(!b.read().await.unwrap().powered);
    assert!(!s.board(0).unwrap().powered);
    b.set_enabled(true).await.unwrap();
    assert!(b.read().await.unwrap().powered);
}

#[tokio::test]
async fn slow_power_on_waits_for_the_fpgas_without_retries() {
    // Default FPGA load (1.5 s) is longer than attempts x timeout (5 x 200 ms): only the long
    // power-on timeout lets it through.
    let s = sim(BmpSimOptions::default()).await;
    let c = BmpClient::new(s.local_addr(), fast());
    c.power_off(1).await.unwrap();
    let t = Instant::now();
    c.power_on(1).await.unwrap();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(s.requests(command::POWER), 2, "one off, one on: no resend");
    assert_eq!(c.stats().retries, 0);
    assert!(s.board(0).unwrap().powered);

    // A power-on timeout shorter than the FPGA load fails once, without a resend.
    let impatient = BmpClient::new(
        s.local_addr(),
        ClientOptions {
            power_on_timeout: Duration::from_millis(500),
            ..fast()
        },
    );
    let err = impatient.power_on(1).await.unwrap_err();
    assert!(
        matches!(&err, HalError::Timeout(m) if m.contains("1 attempt of 500 ms")),
        "{err}"
    );
    assert_eq!(s.requests(command::POWER), 3);
}

#[tokio::test]
async fn reads_succeed_through_30_percent_packet_loss() {
    let s = sim(BmpSimOptions {
        packet_loss: 0.3,
        seed: 42,
        ..BmpSimOptions::default()
    })
    .await;
    let b = board(
        s.local_addr(),
        0,
        ClientOptions {
            timeout: Duration::from_millis(50),
            attempts: 10,
            ..fast()
        },
    );
    for _ in 0..20 {
        let r = b.read().await.unwrap();
        assert!(r.powered);
    }
    let st = b.client().stats();
    assert!(st.retries > 0, "{st:?}");
    assert_eq!(st.datagrams_sent, st.requests + st.retries);
    assert!(s.requests(command::BMP_INFO) > 20);
}

#[tokio::test]
async fn late_duplicate_replies_are_ignored() {
    let s = sim(BmpSimOptions {
        late_duplicate_probability: 1.0,
        late_duplicate_delay: Duration::from_millis(20),
        ..BmpSimOptions::default()
    })
    .await;
    let c = BmpClient::new(s.local_addr(), fast());
    let v = c.version(0).await.unwrap();
    assert_eq!(v.name, SIM_BMP_NAME);
    // The duplicate of the CMD_VER reply is now waiting in the socket; the ADC request must
    // get its own reply, not that one.
    tokio::time::sleep(Duration::from_millis(60)).await;
    let a = c.adc(0).await.unwrap();
    assert!(a.board_top().is_some());
    tokio::time::sleep(Duration::from_millis(60)).await;
    c.adc(0).await.unwrap();
    let st = c.stats();
    assert!(st.ignored >= 2, "{st:?}");
    assert_eq!(st.retries, 0);
}

#[tokio::test]
async fn a_silent_bmp_times_out_after_attempts_times_timeout() {
    let s = sim(BmpSimOptions::default()).await;
    let opts = ClientOptions {
        timeout: Duration::from_millis(100),
        attempts: 3,
        ..fast()
    };
    let b = board(s.local_addr(), 0, opts).with_fault_injector(s.faults());
    assert!(b.capabilities().contains(&Capability::FaultInjection));
    b.read().await.unwrap();
    let f = b.fault_injector().unwrap();
    for fault in [FaultKind::Hang, FaultKind::Vanish] {
        f.inject(fault);
        let before = s.requests(command::BMP_INFO);
        let t = Instant::now();
        let err = b.read().await.unwrap_err();
        let took = t.elapsed();
        assert!(
            matches!(&err, HalError::Timeout(m)
                if m.contains(&s.local_addr().to_string()) && m.contains("3 attempts")),
            "{err}"
        );
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_millis(1000),
            "{took:?}"
        );
        assert_eq!(s.requests(command::BMP_INFO) - before, 3);
        // Actions get no further.
        assert!(matches!(
            b.reset(ResetKind::PowerCycle).await,
            Err(HalError::Timeout(_))
        ));
        f.inject(FaultKind::Clear);
        assert!(
            b.read().await.unwrap().powered,
            "answers again after {fault:?}"
        );
    }
}

#[tokio::test]
async fn error_codes_other_than_the_transient_ones_are_final() {
    let s = sim(BmpSimOptions::default()).await;
    let c = BmpClient::new(s.local_addr(), fast());
    let err = c.reset(0, 1, 3).await.unwrap_err();
    assert!(
        matches!(&err, HalError::Protocol(m) if m.contains("RC_ARG") && m.contains("CMD_RESET")),
        "{err}"
    );
    assert_eq!(s.requests(command::RESET), 1, "not resent");
    // A board the frame does not have, an unknown command.
    let err = c.adc(5).await.unwrap_err();
    assert!(
        matches!(&err, HalError::Protocol(m) if m.contains("RC_CPU")),
        "{err}"
    );
    let err = c.request(0, 99, [0; 3], &[]).await.unwrap_err();
    assert!(
        matches!(&err, HalError::Protocol(m) if m.contains("RC_CMD")),
        "{err}"
    );
    assert_eq!(c.stats().retries, 0);
    // A request that would exceed 280 bytes is never sent.
    let before = s.datagrams_received();
    let err = c
        .request(0, command::LED, [0; 3], &[0; 256])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, HalError::InvalidArgument(m) if m.contains("280")),
        "{err}"
    );
    let err = c
        .request(0, command::LED, [0; 3], &[0; 300])
        .await
        .unwrap_err();
    assert!(matches!(err, HalError::InvalidArgument(_)));
    assert_eq!(s.datagrams_received(), before);
}

/// A fake BMP: answers the client's first request with `junk`, then (optionally) a good ADC
/// reply.
async fn fake_bmp(junk: fn(u16) -> Vec<Vec<u8>>, then_good: bool) -> (SocketAddr, JoinHandle<()>) {
    let peer = UdpSocket::bind(LOOPBACK).await.unwrap();
    let addr = peer.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        loop {
            let Ok((n, from)) = peer.recv_from(&mut buf).await else {
                return;
            };
            let req = ScpRequest::parse(&buf[..n]).unwrap();
            for d in junk(req.seq) {
                peer.send_to(&d, from).await.unwrap();
            }
            if then_good {
                let good = ScpReply {
                    rc: ReturnCode::Ok,
                    seq: req.seq,
                    payload: AdcInfo::default().encode(),
                };
                peer.send_to(&good.encode(Some(&buf[..n])), from)
                    .await
                    .unwrap();
            }
        }
    });
    (addr, task)
}

fn garbage(seq: u16) -> Vec<Vec<u8>> {
    let mut matching_but_unknown_rc = vec![0u8; 14];
    matching_but_unknown_rc[10] = 0x42;
    matching_but_unknown_rc[12..14].copy_from_slice(&seq.to_le_bytes());
    let mut wrong_seq = ScpReply {
        rc: ReturnCode::Ok,
        seq: seq.wrapping_add(7),
        payload: vec![1, 2, 3],
    }
    .encode(None);
    wrong_seq.truncate(17);
    let mut error_with_payload = ScpReply {
        rc: ReturnCode::Arg,
        seq,
        payload: vec![9; 4],
    }
    .encode(None);
    error_with_payload.truncate(18);
    vec![
        vec![],
        vec![0xFF],
        vec![0; 13],
        vec![0xAB; 300],
        wrong_seq,
        matching_but_unknown_rc,
        error_with_payload,
        (0..64u8).map(|i| i.wrapping_mul(37)).collect(),
    ]
}

#[tokio::test]
async fn short_and_garbage_datagrams_are_ignored_or_rejected_without_panic() {
    let (addr, task) = fake_bmp(garbage, true).await;
    let c = BmpClient::new(addr, fast());
    let a = c.adc(0).await.unwrap();
    assert_eq!(a, AdcInfo::default());
    assert!(c.stats().ignored >= 8, "{:?}", c.stats());
    task.abort();

    // Only garbage: the malformed datagrams that carried our seq are reported.
    let (addr, task) = fake_bmp(garbage, false).await;
    let c = BmpClient::new(
        addr,
        ClientOptions {
            timeout: Duration::from_millis(100),
            attempts: 2,
            ..fast()
        },
    );
    let err = c.adc(0).await.unwrap_err();
    assert!(
        matches!(&err, HalError::Protocol(m) if m.contains("malformed")),
        "{err}"
    );
    task.abort();

    // A good reply whose payload is too short for the ADC block is a protocol error.
    let (addr, task) = fake_bmp(
        |seq| {
            vec![ScpReply {
                rc: ReturnCode::Ok,
                seq,
                payload: vec![0; 10],
            }
            .encode(None)]
        },
        false,
    )
    .await;
    let err = BmpClient::new(addr, fast()).adc(0).await.unwrap_err();
    assert!(
        matches!(&err, HalError::Protocol(m) if m.contains("too short")),
        "{err}"
    );
    task.abort();
}

#[tokio::test]
async fn the_simulator_answers_short_requests_with_rc_len_and_drops_long_ones() {
    let s = sim(BmpSimOptions::default()).await;
    let raw = UdpSocket::bind(LOOPBACK).await.unwrap();
    raw.connect(s.local_addr()).await.unwrap();
    let mut buf = [0u8; 512];
    let ask = |d: Vec<u8>| {
        let raw = &raw;
        async move {
            raw.send(&d).await.unwrap();
            match tokio::time::timeout(Duration::from_millis(200), raw.recv(&mut [0u8; 512])).await
            {
                Ok(Ok(n)) => Some(n),
                _ => None,
            }
        }
    };
    assert_eq!(ask(vec![1, 2, 3]).await, Some(wire::REPLY_HEADER_LEN));
    assert_eq!(ask(vec![0; 300]).await, None, "over 280 bytes: dropped");
    // 20 bytes carries a seq: the RC_LEN reply echoes it.
    let mut short = ScpRequest::new(0, command::VER, 0x4321, [0; 3])
        .encode()
        .unwrap();
    short.truncate(20);
    raw.send(&short).await.unwrap();
    let n = tokio::time::timeout(Duration::from_millis(500), raw.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let r = ScpReply::parse(&buf[..n]).unwrap();
    assert_eq!((r.rc, r.seq), (ReturnCode::Len, 0x4321));
    // The serial number and CAN status tables answer too.
    let c = BmpClient::new(s.local_addr(), fast());
    assert!(!c
        .request(0, command::BMP_INFO, [info::SERIAL, 0, 0], &[])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        c.request(0, command::BMP_INFO, [info::CAN_STATUS, 0, 0], &[])
            .await
            .unwrap()[0],
        1
    );
    assert!(
        board(s.local_addr(), 0, fast())
            .read()
            .await
            .unwrap()
            .powered
    );
}

#[tokio::test]
async fn failing_reset_leaves_the_board_dark_and_the_reset_fails() {
    let s = sim(quick_fpgas()).await;
    let b = board(s.local_addr(), 0, fast()).with_fault_injector(s.faults());
    let f = s.faults();
    f.inject(FaultKind::FailingReset);
    assert_eq!(f.active(), [FaultKind::FailingReset]);
    let err = b.reset(ResetKind::PowerCycle).await.unwrap_err();
    assert!(
        matches!(&err, HalError::Failed(m) if m.contains("did not come up") && m.contains("power-cycle")),
        "{err}"
    );
    let r = b.read().await.unwrap();
    assert!(!r.powered);
    assert!(get(&r, "rail_1v2_a", Quantity::VoltageVolts) < 0.05);
    assert!(matches!(
        b.set_enabled(true).await,
        Err(HalError::Failed(_))
    ));
    f.inject(FaultKind::Clear);
    assert!(
        !b.read().await.unwrap().powered,
        "still off until powered on"
    );
    b.reset(ResetKind::PowerCycle).await.unwrap();
    assert!(b.read().await.unwrap().powered);
    // A soft reset under the fault: the pulse is acknowledged, the board drops out.
    f.inject(FaultKind::FailingReset);
    assert!(matches!(
        b.reset(ResetKind::Soft).await,
        Err(HalError::Failed(_))
    ));
    assert!(!b.read().await.unwrap().powered);
}

#[tokio::test]
async fn a_cancelled_request_does_not_break_the_next_one() {
    let s = sim(BmpSimOptions {
        fpga_load_delay: Duration::from_millis(300),
        ..BmpSimOptions::default()
    })
    .await;
    let c = BmpClient::new(s.local_addr(), fast());
    // Give up on a power-on half-way; its reply arrives later, to the same socket.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), c.power_on(1))
            .await
            .is_err()
    );
    c.adc(0).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let v = c.version(0).await.unwrap();
    assert_eq!(v.name, SIM_BMP_NAME);
    assert!(c.stats().ignored >= 1, "{:?}", c.stats());
}

#[tokio::test]
async fn overheat_raises_thermal_conditions_from_the_bmp_flags() {
    let s = sim(BmpSimOptions::default()).await;
    let b = board(s.local_addr(), 0, fast()).with_fault_injector(s.faults());
    b.fault_injector().unwrap().inject(FaultKind::Drift);
    assert!(
        b.read().await.unwrap().conditions.is_empty(),
        "drift: no effect"
    );
    b.fault_injector().unwrap().inject(FaultKind::Overheat);
    let t = Instant::now();
    loop {
        let r = b.read().await.unwrap();
        if let Some(c) = r
            .conditions
            .iter()
            .find(|c| c.code == ConditionCode::ThermalWarning)
        {
            assert!(get(&r, "board_top", Quantity::TemperatureCelsius) > 70.0);
            assert!(c.message.contains("0x00000"), "{}", c.message);
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "no warning in 15 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn stop_and_abort_end_the_simulator() {
    let impatient = ClientOptions {
        timeout: Duration::from_millis(100),
        attempts: 2,
        ..fast()
    };
    let (sim, task) = BmpSimulator::start(LOOPBACK.parse().unwrap(), BmpSimOptions::default())
        .await
        .unwrap();
    let c = BmpClient::new(sim.local_addr(), impatient);
    c.adc(0).await.unwrap();
    sim.stop();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .unwrap()
        .unwrap();
    // The port is closed now: loopback answers with ICMP port unreachable, which the
    // client reports as the BMP having vanished (rather than being silent).
    let err = c.adc(0).await.unwrap_err();
    assert!(matches!(err, HalError::Vanished(_)), "{err}");

    let (sim, task) = BmpSimulator::start(LOOPBACK.parse().unwrap(), BmpSimOptions::default())
        .await
        .unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let err = BmpClient::new(sim.local_addr(), impatient)
        .adc(0)
        .await
        .unwrap_err();
    assert!(matches!(err, HalError::Vanished(_)), "{err}");

    let too_many = BmpSimOptions {
        boards: 25,
        ..BmpSimOptions::default()
    };
    assert!(BmpSimulator::start(LOOPBACK.parse().unwrap(), too_many)
        .await
        .is_err());
}
