//! The SCPI photonic bench against its simulator over loopback TCP, and the client against raw
//! TCP peers that misbehave on purpose. Every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use health_hal::health::evaluate;
use health_hal::scpi::{
    PhotonicBench, ScpiBenchConfig, ScpiBenchSimulator, ScpiClient, ScpiSimOptions,
};
use health_hal::DeviceKind;
use health_hal::{
    Capability, ConditionCode, Device, FaultKind, HalError, Limits, Quantity, ResetKind, Sample,
    Severity,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

async fn simulator(options: ScpiSimOptions) -> ScpiBenchSimulator {
    ScpiBenchSimulator::start(LOCALHOST, options)
        .await
        .expect("start the simulator")
}

/// A config for all three simulated instruments, with short settle times for tests.
fn config(sim: &ScpiBenchSimulator, timeout_ms: u64) -> ScpiBenchConfig {
    let mut c = ScpiBenchConfig::new(sim.tec_addr().to_string());
    c.power_meter = Some(sim.power_meter_addr().to_string());
    c.laser = Some(sim.laser_addr().to_string());
    c.timeout_ms = timeout_ms;
    c.settle_window_ms = 300;
    c.settle_timeout_ms = 5000;
    c.wavelength_nm = Some(1550.0);
    c
}

fn bench(sim: &ScpiBenchSimulator) -> PhotonicBench {
    PhotonicBench::new("photonic-0", config(sim, 1000))
        .expect("valid config")
        .with_fault_injector(sim.faults())
}

fn client(addr: SocketAddr) -> ScpiClient {
    ScpiClient::new(addr.to_string(), Duration::from_secs(2))
}

fn get(s: &Sample, sensor: &str, q: Quantity) -> f64 {
    s.get(sensor, q)
        .unwrap_or_else(|| panic!("no {q:?} from {sensor}: {:?}", s.readings))
}

/// What the health evaluation makes of a bench sample, at the time it was read. The bench can
/// calibrate, so a missing calibration counts.
fn conditions_of(s: &Sample) -> Vec<health_hal::Condition> {
    evaluate(
        "photonic-0",
        s,
        &Limits::for_kind(DeviceKind::Photonic),
        &[Capability::ResetSoft, Capability::Calibrate],
        s.readings[0].observed_at,
    )
}

/// Awaits `f`, failing the test instead of hanging if a wait that the code under test should
/// bound never ends. Far above any timeout configured here: not a measurement.
async fn unless_hung<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("a bounded wait never ended")
}

/// Reads until `done` holds, for at most `limit`.
async fn read_until(
    bench: &PhotonicBench,
    limit: Duration,
    done: impl Fn(&Sample) -> bool,
) -> Sample {
    let start = Instant::now();
    loop {
        let s = bench.read().await.expect("read");
        if done(&s) {
            return s;
        }
        assert!(
            start.elapsed() < limit,
            "condition not reached in {limit:?}: {:?}",
            s.readings
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_comes_from_the_tec_idn() {
    let sim = simulator(ScpiSimOptions::default()).await;
    let b = bench(&sim);
    assert!(b.identity().model.contains("not contacted"));
    b.read().await.expect("read");
    let id = b.identity();
    assert_eq!(id.id, "photonic-0");
    assert_eq!(id.kind, DeviceKind::Photonic);
    assert_eq!(id.vendor, "health-agent simulator");
    assert!(id.model.contains("TECSource"), "{}", id.model);
    assert!(id.serial.starts_with("SIM-TEC-"), "{}", id.serial);
    assert_eq!(id.firmware, "1.0.0");
    assert_eq!(id.backend, "scpi");
    assert_eq!(id.location, sim.tec_addr().to_string());
    assert_eq!(
        b.capabilities(),
        [
            Capability::ResetSoft,
            Capability::Calibrate,
            Capability::EnableDisable,
            Capability::FaultInjection
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_are_plausible_at_the_setpoint() {
    let sim = simulator(ScpiSimOptions::default()).await;
    let b = bench(&sim);
    let s = b.read().await.expect("read");
    let t = get(&s, "tec", Quantity::TemperatureCelsius);
    assert!((t - 25.0).abs() < 0.05, "{t}");
    assert_eq!(get(&s, "tec", Quantity::SetpointCelsius), 25.0);
    let i = get(&s, "tec", Quantity::CurrentAmperes);
    let v = get(&s, "tec", Quantity::VoltageVolts);
    assert!(i > 0.05 && i < 3.0, "TEC current {i} A");
    assert!(v > 0.0 && v < 5.0, "TEC voltage {v} V");
    let p = get(&s, "tec", Quantity::PowerWatts);
    assert!((p - i * v).abs() < 1e-9 && p < 5.0, "{p}");
    let optical = get(&s, "output", Quantity::OpticalPowerWatts);
    assert!((optical - 0.5e-3).abs() < 0.01e-3, "{optical}");
    assert_eq!(get(&s, "laser", Quantity::OpticalPowerWatts), 1e-3);
    // No reference yet: no phase estimate, and never calibrated.
    assert_eq!(s.get("mesh", Quantity::PhaseErrorRadians), None);
    assert_eq!(s.calibration, None);
    assert!(s.powered && s.conditions.is_empty(), "{:?}", s.conditions);
    let codes: Vec<_> = conditions_of(&s).into_iter().map(|c| c.code).collect();
    assert_eq!(codes, [ConditionCode::CalibrationStale]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_command_is_reported_by_the_error_queue_without_waiting() {
    let sim = simulator(ScpiSimOptions::default()).await;
    let c = client(sim.tec_addr());
    // The instrument never replies to an unknown command: a client that waited for a reply
    // would end in HalError::Timeout, so an exchange that comes back at all did not wait.
    let ex = c.exchange("FOO:BAR 1").await.expect("exchange");
    assert_eq!(ex.reply, None);
    assert!(ex.queue_drained);
    assert_eq!(ex.errors.len(), 1, "{:?}", ex.errors);
    assert_eq!(ex.errors[0].code, -113);
    assert_eq!(ex.errors[0].message, "Undefined header");
    let Err(HalError::Protocol(m)) = c.write("FOO:BAR 1").await else {
        panic!("an unknown command must be a protocol error");
    };
    assert!(m.contains("FOO:BAR 1") && m.contains("-113"), "{m}");
    // The connection is still in step.
    assert!(c.query("*IDN?").await.expect("idn").contains("TECSource"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_setpoint_is_a_protocol_error() {
    let sim = simulator(ScpiSimOptions::default()).await;
    let c = client(sim.tec_addr());
    let Err(HalError::Protocol(m)) = c.write("TEC:T 500").await else {
        panic!("TEC:T 500 must fail");
    };
    assert!(
        m.contains("TEC:T 500") && m.contains("-222") && m.contains("Data out of range"),
        "{m}"
    );
    assert_eq!(c.query_number("TEC:SET:T?").await.expect("setpoint"), 25.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calibration_settles_and_records_the_setpoint_temperature() {
    let sim = simulator(ScpiSimOptions::default()).await;
    let b = bench(&sim);
    client(sim.tec_addr())
        .write("TEC:T 30")
        .await
        .expect("new setpoint");
    let start = Instant::now();
    let record = b.calibrate().await.expect("calibrate");
    // The chip needs about a second to get from 25 to 30, then the window must pass.
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    assert!(
        (record.temperature_celsius - 30.0).abs() <= 0.1,
        "{record:?}"
    );
    let s = b.read().await.expect("read");
    assert_eq!(s.calibration, Some(record));
    let phase = get(&s, "mesh", Quantity::PhaseErrorRadians);
    assert!(phase < 0.02, "phase error right after calibration: {phase}");
    assert!(get(&s, "calibration", Quantity::CalibrationAgeSeconds) < 5.0);
    let conditions = conditions_of(&s);
    assert!(conditions.is_empty(), "{conditions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calibration_gives_up_when_the_tec_cannot_hold_its_setpoint() {
    let sim = simulator(ScpiSimOptions::default()).await;
    let mut c = config(&sim, 1000);
    c.settle_timeout_ms = 800;
    let b = PhotonicBench::new("photonic-0", c).expect("config");
    sim.faults().inject(FaultKind::Overheat);
    let Err(HalError::Failed(m)) = unless_hung(b.calibrate()).await else {
        panic!("calibration must fail while overheating");
    };
    // It was settle_timeout_ms that ended the wait.
    assert!(
        m.contains("did not settle within 800 ms")
            && m.contains("last")
            && m.contains("setpoint 25.000"),
        "{m}"
    );
    assert!(b.read().await.expect("read").calibration.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overheat_runs_away_from_the_setpoint() {
    let sim = simulator(ScpiSimOptions::default()).await;
    let b = bench(&sim);
    b.read().await.expect("read");
    b.fault_injector()
        .expect("faults")
        .inject(FaultKind::Overheat);
    assert_eq!(sim.faults().active(), [FaultKind::Overheat]);
    let s = read_until(&b, Duration::from_secs(10), |s| {
        get(s, "tec", Quantity::TemperatureCelsius) > 27.0
    })
    .await;
    let conditions = conditions_of(&s);
    assert!(
        conditions
            .iter()
            .any(|c| c.code == ConditionCode::TecSetpointDeviation
                && c.severity == Severity::Critical),
        "{conditions:?}"
    );
    sim.faults().inject(FaultKind::Clear);
    read_until(&b, Duration::from_secs(10), |s| {
        (get(s, "tec", Quantity::TemperatureCelsius) - 25.0).abs() < 0.1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_fault_raises_the_phase_error_and_calibration_brings_it_back() {
    let sim = simulator(ScpiSimOptions {
        drift_per_s: 2e-4,
        ..Default::default()
    })
    .await;
    let b = bench(&sim);
    b.calibrate().await.expect("first calibration");
    let s = b.read().await.expect("read");
    assert!(get(&s, "mesh", Quantity::PhaseErrorRadians) < 0.03);

    sim.faults().inject(FaultKind::Drift);
    let s = read_until(&b, Duration::from_secs(10), |s| {
        get(s, "mesh", Quantity::PhaseErrorRadians) > 0.1
    })
    .await;
    let conditions = conditions_of(&s);
    assert!(
        conditions
            .iter()
            .any(|c| c.code == ConditionCode::CalibrationDrift),
        "{conditions:?}"
    );
    // The estimate follows the simulated mesh's real drift.
    assert!(sim.snapshot().phase_rad > 0.1);

    sim.faults().inject(FaultKind::Clear);
    b.calibrate().await.expect("recalibration");
    let s = b.read().await.expect("read");
    let phase = get(&s, "mesh", Quantity::PhaseErrorRadians);
    assert!(phase < 0.03, "phase error after recalibration: {phase}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_reset_reapplies_setpoint_current_limit_output_and_optics() {
    let sim = simulator(ScpiSimOptions::default()).await;
    let b = bench(&sim);
    let tec = client(sim.tec_addr());
    let laser = client(sim.laser_addr());
    let meter = client(sim.power_meter_addr());
    tec.write("TEC:T 27.5").await.expect("setpoint");
    tec.write("TEC:LIM:ITE 1.25").await.expect("current limit");
    laser.write("SOUR0:WAV 1310NM").await.expect("wavelength");
    laser.write("SOUR0:POW 2MW").await.expect("power");
    meter
        .write("SENS:CORR:WAV 1310")
        .await
        .expect("meter wavelength");
    b.reset(ResetKind::Soft).await.expect("soft reset");
    assert_eq!(tec.query_number("TEC:SET:T?").await.expect("set"), 27.5);
    assert!(tec.query_bool("TEC:OUT?").await.expect("out"));
    // *RST put the controller's default (3 A) back; the lab's limit is re-applied.
    assert_eq!(tec.query_number("TEC:LIM:ITE?").await.expect("limit"), 1.25);
    assert_eq!(
        laser.query("SOUR0:WAV?").await.expect("wav"),
        "+1.31000000000E-006"
    );
    assert_eq!(laser.query_number("SOUR0:POW?").await.expect("pow"), 2e-3);
    assert!(laser.query_bool("SOUR0:POW:STAT?").await.expect("stat"));
    assert_eq!(
        meter.query_number("SENS:CORR:WAV?").await.expect("wav"),
        1310.0
    );
    assert!(sim.snapshot().tec_output_on);
    // Hard resets do not reach an SCPI bench.
    assert!(matches!(
        b.reset(ResetKind::Hard).await,
        Err(HalError::Unsupported(_))
    ));
}

/// A bench whose TEC module's rated voltage is known, so that it has a power limit.
fn bench_with_power_limit(sim: &ScpiBenchSimulator) -> PhotonicBench {
    let mut c = config(sim, 1000);
    c.tec_max_voltage_v = Some(sim.tec_max_voltage_v());
    PhotonicBench::new("photonic-0", c)
        .expect("valid config")
        .with_fault_injector(sim.faults())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_limit_is_the_tec_current_limit_read_back_and_reported() {
    let sim = simulator(ScpiSimOptions::default()).await;
    let b = bench_with_power_limit(&sim);
    assert!(b.capabilities().contains(&Capability::SetPowerLimit));
    let v_max = sim.tec_max_voltage_v();
    let tec = client(sim.tec_addr());
    // The controller's default 3 A is the limit in force from the start.
    let s = b.read().await.expect("read");
    let default = s.power_limit_watts.expect("a limit in force");
    assert!((default - 3.0 * v_max).abs() < 1e-9, "{default}");
    // An upper bound: the TEC draws less than it, so no POWER_OVER_LIMIT.
    assert!(get(&s, "tec", Quantity::PowerWatts) < default);
    assert!(conditions_of(&s)
        .iter()
        .all(|c| c.code != ConditionCode::PowerOverLimit));

    // 70 % of the limit in force, as a remediation ladder takes it: 70 % of the current.
    b.set_power_limit(0.7 * default).await.expect("set");
    let amps = tec.query_number("TEC:LIM:ITE?").await.expect("read back");
    assert!((amps - 2.1).abs() < 1e-4, "{amps} A");
    let s = b.read().await.expect("read");
    let lowered = s.power_limit_watts.expect("a limit in force");
    assert!((lowered - 0.7 * default).abs() < 1e-3, "{lowered}");

    // And back, exactly.
    b.set_power_limit(default).await.expect("restore");
    let s = b.read().await.expect("read");
    assert_eq!(s.power_limit_watts, Some(default));
    assert_eq!(tec.query_number("TEC:LIM:ITE?").await.expect("limit"), 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_limit_outside_what_the_controller_accepts_names_value_and_range() {
    let sim = simulator(ScpiSimOptions::default()).await;
    let b = bench_with_power_limit(&sim);
    // 0.3 W at 7.5 V is 0.04 A; the simulated controller takes 0.1 to 5 A.
    let Err(HalError::InvalidArgument(m)) = b.set_power_limit(0.3).await else {
        panic!("a limit below the controller's range must be refused");
    };
    for part in [
        "power limit 0.3 W",
        "0.0400 A",
        "tec_max_voltage_v = 7.5 V",
        &sim.tec_addr().to_string(),
        "0.1 to 5 A",
        "0.750 to 37.500 W",
    ] {
        assert!(m.contains(part), "{part:?} not in {m}");
    }
    let Err(HalError::InvalidArgument(m)) = b.set_power_limit(100.0).await else {
        panic!("a limit above the controller's range must be refused");
    };
    assert!(m.contains("13.3333 A") && m.contains("0.1 to 5 A"), "{m}");
    for bad in [0.0, -1.0, f64::NAN] {
        assert!(
            matches!(
                b.set_power_limit(bad).await,
                Err(HalError::InvalidArgument(_))
            ),
            "{bad}"
        );
    }
    // Nothing was sent: the limit in force is the controller's default still.
    let tec = client(sim.tec_addr());
    assert_eq!(tec.query_number("TEC:LIM:ITE?").await.expect("limit"), 3.0);
    assert_eq!(
        tec.query("SYST:ERR?").await.expect("errors"),
        "0,\"No error\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_module_rating_there_is_no_power_limit() {
    let sim = simulator(ScpiSimOptions::default()).await;
    let b = bench(&sim);
    assert!(!b.capabilities().contains(&Capability::SetPowerLimit));
    assert_eq!(b.read().await.expect("read").power_limit_watts, None);
    let Err(HalError::Unsupported(m)) = b.set_power_limit(10.0).await else {
        panic!("no power limit without tec_max_voltage_v");
    };
    assert!(m.contains("tec_max_voltage_v"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_reset_is_caught_by_the_read_back() {
    let sim = simulator(ScpiSimOptions::default()).await;
    let b = bench(&sim);
    client(sim.tec_addr())
        .write("TEC:T 27.5")
        .await
        .expect("setpoint");
    sim.faults().inject(FaultKind::FailingReset);
    let Err(HalError::Failed(m)) = b.reset(ResetKind::Soft).await else {
        panic!("the read-back must catch the failed reset");
    };
    assert!(m.contains("TEC output off, expected on"), "{m}");
    assert!(m.contains("expected 27.5 degC"), "{m}");
    assert!(!sim.snapshot().tec_output_on);
    // The bench says so on the next read, too.
    let s = b.read().await.expect("read");
    assert!(
        s.conditions.iter().any(
            |c| c.code == ConditionCode::ThermalWarning && c.message.contains("TEC output off")
        ),
        "{:?}",
        s.conditions
    );
    assert!(s.powered);
    sim.faults().inject(FaultKind::Clear);
    b.reset(ResetKind::Soft).await.expect("reset after clear");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_times_out_within_the_configured_timeout() {
    let sim = simulator(ScpiSimOptions::default()).await;
    let b = PhotonicBench::new("photonic-0", config(&sim, 300)).expect("config");
    b.read().await.expect("read before the hang");
    sim.faults().inject(FaultKind::Hang);
    let start = Instant::now();
    let Err(HalError::Timeout(m)) = unless_hung(b.read()).await else {
        panic!("a hung instrument must time out");
    };
    // Not before the configured timeout; the message says which timeout ended it.
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(290), "{took:?}");
    assert!(
        m.contains(&sim.tec_addr().to_string()) && m.contains("300 ms"),
        "{m}"
    );
    // A bench that never got an answer times out on first contact too.
    let fresh = PhotonicBench::new("photonic-1", config(&sim, 300)).expect("config");
    assert!(matches!(fresh.read().await, Err(HalError::Timeout(_))));
    sim.faults().inject(FaultKind::Clear);
    b.read().await.expect("read after the hang cleared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanish_is_reported_as_vanished_and_comes_back_on_clear() {
    let sim = simulator(ScpiSimOptions::default()).await;
    let b = bench(&sim);
    b.read().await.expect("read");
    sim.faults().inject(FaultKind::Vanish);
    // Refused at once: a client that waited for the instrument would end in a Timeout.
    let r = b.read().await;
    assert!(matches!(r, Err(HalError::Vanished(_))), "{r:?}");
    let Err(HalError::Vanished(m)) = client(sim.tec_addr()).query("*IDN?").await else {
        panic!("a vanished instrument refuses connections");
    };
    assert!(m.contains("refused"), "{m}");
    sim.faults().inject(FaultKind::Clear);
    let start = Instant::now();
    while b.read().await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "bench did not come back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tec_output_off_is_a_thermal_warning_not_power_off() {
    let sim = simulator(ScpiSimOptions::default()).await;
    let b = bench(&sim);
    client(sim.tec_addr())
        .write("TEC:OUT 0")
        .await
        .expect("off");
    let s = b.read().await.expect("read");
    assert!(s.powered);
    let c = s
        .conditions
        .iter()
        .find(|c| c.code == ConditionCode::ThermalWarning)
        .expect("TEC-off condition");
    assert_eq!(c.severity, Severity::Warning);
    assert!(
        c.message.contains("TEC output off") && c.message.contains("setpoint 25.00"),
        "{}",
        c.message
    );
    // Calibration turns the TEC back on.
    b.calibrate().await.expect("calibrate");
    assert!(sim.snapshot().tec_output_on);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_self_test_is_a_device_error() {
    let sim = simulator(ScpiSimOptions {
        tec_self_test: 3,
        ..Default::default()
    })
    .await;
    let s = bench(&sim).read().await.expect("read");
    let c = s
        .conditions
        .iter()
        .find(|c| c.code == ConditionCode::DeviceError)
        .expect("self-test condition");
    assert_eq!(c.severity, Severity::Critical);
    assert!(c.message.contains("*TST? returned 3"), "{}", c.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_and_enable_switch_the_laser() {
    let sim = simulator(ScpiSimOptions::default()).await;
    let b = bench(&sim);
    b.calibrate().await.expect("calibrate");
    b.set_enabled(false).await.expect("disable");
    assert!(!sim.snapshot().laser_on);
    let s = b.read().await.expect("read");
    assert_eq!(get(&s, "laser", Quantity::OpticalPowerWatts), 0.0);
    // No light is not drift: no phase estimate while the laser is off.
    assert_eq!(s.get("mesh", Quantity::PhaseErrorRadians), None);
    assert!(
        matches!(b.calibrate().await, Err(HalError::Failed(m)) if m.contains("laser output is off"))
    );
    b.set_enabled(true).await.expect("enable");
    assert!(sim.snapshot().laser_on);
    let s = b.read().await.expect("read");
    assert!(get(&s, "mesh", Quantity::PhaseErrorRadians) < 0.03);

    let tec_only = PhotonicBench::new(
        "photonic-1",
        ScpiBenchConfig::new(sim.tec_addr().to_string()),
    )
    .expect("config");
    assert!(matches!(
        tec_only.set_enabled(false).await,
        Err(HalError::Unsupported(_))
    ));
    assert!(!tec_only.capabilities().contains(&Capability::EnableDisable));
    assert!(tec_only.fault_injector().is_none());
    assert!(matches!(
        tec_only.set_power_limit(1.0).await,
        Err(HalError::Unsupported(_))
    ));
    // A TEC-only bench still reads and calibrates, without optics.
    let s = tec_only.read().await.expect("read");
    assert_eq!(s.get("output", Quantity::OpticalPowerWatts), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_clients_at_once_keep_their_own_error_queues() {
    let sim = simulator(ScpiSimOptions::default()).await;
    let addr = sim.tec_addr();
    let mut tasks = Vec::new();
    for n in 0..8 {
        tasks.push(tokio::spawn(async move {
            let c = client(addr);
            for _ in 0..20 {
                if n % 2 == 0 {
                    let ex = c.exchange("NOT:A:COMMAND").await.expect("exchange");
                    assert_eq!(ex.errors.len(), 1, "{:?}", ex.errors);
                } else {
                    let t = c.query_number("TEC:T?").await.expect("temperature");
                    assert!((t - 25.0).abs() < 0.1);
                }
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .expect("clients finish")
            .expect("no panic");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_drops_a_connection_on_an_overlong_line() {
    let sim = simulator(ScpiSimOptions::default()).await;
    let mut s = TcpStream::connect(sim.tec_addr()).await.expect("connect");
    s.write_all(&vec![b'A'; 5000]).await.expect("write");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "the simulator must close the connection");
    // Others are unaffected; `\r\n` and lower case are fine.
    let mut s = TcpStream::connect(sim.tec_addr()).await.expect("connect");
    s.write_all(b"*idn?\r\n").await.expect("write");
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(2),
        BufReader::new(&mut s).read_line(&mut line),
    )
    .await
    .expect("reply in time")
    .expect("read");
    assert!(
        line.starts_with("health-agent simulator,") && line.ends_with('\n'),
        "{line:?}"
    );
}

/// What a scripted peer does with one received line.
enum Act {
    Send(Duration, Vec<u8>),
    SendThenClose(Vec<u8>),
    Close,
}

/// A raw TCP peer answering every line with `script(line)`; one task per connection.
async fn peer(script: impl Fn(&str) -> Act + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let script = Arc::new(script);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let script = script.clone();
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match script(line.trim_end()) {
                        Act::Send(delay, bytes) => {
                            tokio::time::sleep(delay).await;
                            if w.write_all(&bytes).await.is_err() {
                                return;
                            }
                        }
                        Act::SendThenClose(bytes) => {
                            let _ = w.write_all(&bytes).await;
                            return;
                        }
                        Act::Close => return,
                    }
                }
            });
        }
    });
    addr
}

fn send(s: &[u8]) -> Act {
    Act::Send(Duration::ZERO, s.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_overlong_lines_do_not_panic_the_client() {
    let addr = peer(|line| match line {
        "SYST:ERR?" => send(b"0,\"No error\"\n"),
        "BIN?" => send(b"\xff\xfe\x00garbage\n"),
        "LONG?" => send(&vec![b'9'; 10_000]),
        "LONGLINE?" => {
            let mut v = vec![b'1'; 5000];
            v.push(b'\n');
            send(&v)
        }
        "NUM?" => send(b"twenty-five\n"),
        "IDN?" => send(b"only,three,fields\r\n"),
        "CLOSE?" => Act::Close,
        "BADERR" => send(b"\n"),
        _ => send(b"ok\n"),
    })
    .await;
    let c = ScpiClient::new(addr.to_string(), Duration::from_millis(500));
    let e = c.query("BIN?").await.unwrap_err();
    assert!(
        matches!(&e, HalError::Protocol(m) if m.contains("not text")),
        "{e:?}"
    );
    let e = c.query("LONG?").await.unwrap_err();
    assert!(
        matches!(&e, HalError::Protocol(m) if m.contains("longer than 4096")),
        "{e:?}"
    );
    let e = c.query("LONGLINE?").await.unwrap_err();
    assert!(
        matches!(&e, HalError::Protocol(m) if m.contains("longer than 4096")),
        "{e:?}"
    );
    let e = c.query_number("NUM?").await.unwrap_err();
    assert!(
        matches!(&e, HalError::Protocol(m) if m.contains("decimal number") && m.contains("twenty-five")),
        "{e:?}"
    );
    let e = c.query_idn().await.unwrap_err();
    assert!(matches!(&e, HalError::Protocol(_)), "{e:?}");
    let e = c.query("CLOSE?").await.unwrap_err();
    assert!(
        matches!(&e, HalError::Vanished(m) if m.contains("closed")),
        "{e:?}"
    );
    // A peer whose error queue answers nonsense is a protocol error, not a hang or a panic.
    let odd = peer(|line| match line {
        "SYST:ERR?" => send(b"banana\n"),
        _ => send(b"1\n"),
    })
    .await;
    let e = ScpiClient::new(odd.to_string(), Duration::from_millis(500))
        .write("X")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, HalError::Protocol(m) if m.contains("SYST:ERR?") && m.contains("banana")),
        "{e:?}"
    );
    // A queue that never empties stops after a bounded number of reads.
    let babbler = peer(|line| match line {
        "SYST:ERR?" => send(b"-350,\"Queue overflow\"\n"),
        _ => send(b"1\n"),
    })
    .await;
    let ex = ScpiClient::new(babbler.to_string(), Duration::from_millis(500))
        .exchange("X")
        .await
        .expect("exchange");
    assert_eq!(ex.errors.len(), 32);
    assert!(!ex.queue_drained);
    // After all that the client still works.
    assert_eq!(c.query("FINE?").await.expect("fine"), "ok");
    // Commands that would break the framing are refused before they are sent.
    assert!(matches!(
        c.write("A\nB").await,
        Err(HalError::InvalidArgument(_))
    ));
    assert!(matches!(
        c.query("NOT A QUERY").await,
        Err(HalError::InvalidArgument(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_mid_way_never_reads_a_stale_reply() {
    // Queries are answered slowly, echoing the command; the error queue answers at once.
    let addr = peer(|line| match line {
        "SYST:ERR?" => send(b"0,\"No error\"\n"),
        q => Act::Send(Duration::from_millis(300), format!("R:{q}\n").into_bytes()),
    })
    .await;
    let c = ScpiClient::new(addr.to_string(), Duration::from_secs(2));
    // The agent's deadline drops the call before its reply arrives...
    assert!(
        tokio::time::timeout(Duration::from_millis(50), c.query("A?"))
            .await
            .is_err()
    );
    // ...and the next call gets its own reply, not the late one.
    assert_eq!(c.query("B?").await.expect("reply"), "R:B?");
    assert_eq!(c.query("C?").await.expect("reply"), "R:C?");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_closed_by_the_instrument_is_reopened() {
    // This peer closes every connection after answering one command and its error check.
    let addr = peer(|line| match line {
        "SYST:ERR?" => Act::SendThenClose(b"0,\"No error\"\n".to_vec()),
        _ => send(b"7\n"),
    })
    .await;
    let c = ScpiClient::new(addr.to_string(), Duration::from_secs(1));
    for _ in 0..3 {
        assert_eq!(c.query_integer("N?").await.expect("answer"), 7);
    }
    // The simulator's vanish/clear closes connections under the client; it reconnects.
    let sim = simulator(ScpiSimOptions::default()).await;
    let tec = client(sim.tec_addr());
    tec.query("*IDN?").await.expect("idn");
    sim.faults().inject(FaultKind::Vanish);
    sim.faults().inject(FaultKind::Clear);
    let start = Instant::now();
    loop {
        match tec.query("*IDN?").await {
            Ok(_) => break,
            Err(e) => assert!(start.elapsed() < Duration::from_secs(5), "{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_listening_is_vanished_and_connect_is_bounded() {
    // Bind then drop a listener: its port now refuses connections.
    let addr = TcpListener::bind((LOCALHOST, 0))
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let r = ScpiClient::new(addr.to_string(), Duration::from_millis(500))
        .query("*IDN?")
        .await;
    assert!(
        matches!(&r, Err(HalError::Vanished(m)) if m.contains("refused")),
        "{r:?}"
    );
}

/// A TEC controller that cannot say which current limits it accepts (it does not answer
/// `TEC:LIM:ITE? MIN`), refuses some itself, and takes others without acting on them: the
/// bench asks for the range once, reports the controller's own refusal with the value, and
/// catches the limit that did not change on the read-back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_that_refuses_or_ignores_a_limit_is_caught() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let errors: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let range_asked = Arc::new(AtomicUsize::new(0));
    let (queue, asked) = (errors.clone(), range_asked.clone());
    let addr = peer(move |line| {
        let mut queue = queue.lock().unwrap();
        match line {
            "*IDN?" => send(b"Acme,TEC-9,0001,2.0\n"),
            "*TST?" => send(b"0\n"),
            "SYST:ERR?" => match queue.pop() {
                Some(e) => send(format!("{e}\n").as_bytes()),
                None => send(b"0,\"No error\"\n"),
            },
            // Always 3 A, whatever was set.
            "TEC:LIM:ITE?" => send(b"3.0\n"),
            "TEC:LIM:ITE 0.0400" => {
                queue.push("-222,\"Data out of range\"");
                Act::Send(Duration::ZERO, Vec::new())
            }
            // Not answered (the error it queues goes with the connection the client drops).
            l if l.starts_with("TEC:LIM:ITE? M") => {
                asked.fetch_add(1, Ordering::SeqCst);
                Act::Send(Duration::ZERO, Vec::new())
            }
            _ => Act::Send(Duration::ZERO, Vec::new()),
        }
    })
    .await;
    let mut c = ScpiBenchConfig::new(addr.to_string());
    c.timeout_ms = 200;
    c.tec_max_voltage_v = Some(7.5);
    let b = PhotonicBench::new("photonic-0", c).expect("valid config");
    let Err(HalError::InvalidArgument(m)) = b.set_power_limit(0.3).await else {
        panic!("the controller's refusal is a refused value");
    };
    assert!(
        m.contains("power limit 0.3 W")
            && m.contains("0.0400 A")
            && m.contains("refused by the TEC controller")
            && m.contains("-222"),
        "{m}"
    );
    let Err(HalError::Failed(m)) = b.set_power_limit(15.0).await else {
        panic!("a limit that did not change must fail the read-back");
    };
    assert!(
        m.contains("2.0000 A") && m.contains("reads back 3 A"),
        "{m}"
    );
    // Asked once (MIN, unanswered), not again on the second call.
    assert_eq!(range_asked.load(Ordering::SeqCst), 1);
}
