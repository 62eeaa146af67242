//! The sysfs backend against fixture trees that look like real sysfs, written into temp dirs:
//! units, derived power, counter wrap, PCI link and AER, resets, power cap, a hung driver (a
//! FIFO in place of a sensor file), vanishing and returning devices, garbage and errors.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use health_hal::health::evaluate;
use health_hal::sysfs::{discover_hwmon, discover_pci, SysfsConfig, SysfsDevice};
use health_hal::{
    Capability, Condition, ConditionCode, Device, DeviceKind, HalError, Limits, Quantity,
    ResetKind, Sample, Severity,
};
use tempfile::TempDir;

const PCI: &str = "0000:03:00.0";

/// A fixture sysfs tree in a temp dir.
struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn empty() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// hwmon (two chips), thermal zones, a loihi2 power supply, a RAPL zone and a PCI card.
    fn full() -> Fixture {
        let f = Fixture::empty();
        f.write("class/hwmon/hwmon0/name", "coretemp\n");
        f.write("class/hwmon/hwmon0/temp1_input", "40000\n");
        f.loihi_chip("class/hwmon/hwmon1");
        f.write("class/thermal/thermal_zone0/type", "x86_pkg_temp\n");
        f.write("class/thermal/thermal_zone0/temp", "40000\n");
        let z = "class/thermal/thermal_zone1";
        f.write(&format!("{z}/type"), "loihi2-board\n");
        f.write(&format!("{z}/temp"), "51000\n");
        f.write(&format!("{z}/trip_point_0_temp"), "85000\n");
        f.write(&format!("{z}/trip_point_0_type"), "passive\n");
        f.write(&format!("{z}/trip_point_1_temp"), "95000\n");
        f.write(&format!("{z}/trip_point_1_type"), "critical\n");
        f.write(&format!("{z}/trip_point_2_temp"), "70000\n");
        f.write(&format!("{z}/trip_point_2_type"), "active\n");
        let ps = "class/power_supply/loihi2";
        f.write(&format!("{ps}/energy_now"), "1000000\n");
        f.write(&format!("{ps}/temp"), "415\n");
        f.write(&format!("{ps}/online"), "1\n");
        f.write(&format!("{ps}/status"), "Unknown\n");
        f.write("class/powercap/intel-rapl/enabled", "1\n");
        let r = "class/powercap/intel-rapl:0";
        f.write(&format!("{r}/name"), "package-0\n");
        f.write(&format!("{r}/energy_uj"), "900000\n");
        f.write(&format!("{r}/max_energy_range_uj"), "1000000\n");
        f.write(&format!("{r}/constraint_0_power_limit_uw"), "65000000\n");
        f.write("class/powercap/intel-rapl:1/name", "dram\n");
        f.write("class/powercap/intel-rapl:1/energy_uj", "5\n");
        pci_card(&f.path(&format!("bus/pci/devices/{PCI}")));
        f.write("bus/pci/rescan", "0\n");
        f
    }

    fn loihi_chip(&self, dir: &str) {
        for (file, content) in [
            ("name", "loihi2\n"),
            ("temp1_input", "45500\n"),
            ("temp1_label", "chip\n"),
            ("temp1_max", "80000\n"),
            ("temp1_crit", "95000\n"),
            ("temp2_input", "38250\n"),
            ("power1_average", "12500000\n"),
            ("power1_label", "board\n"),
            ("power1_cap", "300000000\n"),
            ("power1_cap_max", "400000000\n"),
            ("power1_cap_min", "10000000\n"),
            ("energy1_input", "5000000\n"),
            ("in0_input", "850\n"),
            ("in0_label", "vcore\n"),
            ("fan1_input", "1200\n"),
            ("curr1_input", "1500\n"),
            ("uevent", "OF_NAME=loihi2\n"),
        ] {
            self.write(&format!("{dir}/{file}"), content);
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, content: &str) {
        write_abs(&self.path(rel), content);
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).expect("read fixture")
    }

    fn cfg(&self) -> SysfsConfig {
        SysfsConfig {
            root: self.root(),
            ..SysfsConfig::default()
        }
    }
}

/// A PCI function directory at an absolute path (the hard-reset tests rebuild it).
fn pci_card(dir: &Path) {
    for (file, content) in [
        ("vendor", "0x1e2f\n"),
        ("device", "0x0001\n"),
        ("class", "0x120000\n"),
        ("current_link_speed", "16.0 GT/s PCIe\n"),
        ("current_link_width", "16\n"),
        ("max_link_speed", "16.0 GT/s PCIe\n"),
        ("max_link_width", "16\n"),
        (
            "aer_dev_correctable",
            "RxErr 0\nBadTLP 0\nBadDLLP 0\nTimeout 0\nTOTAL_ERR_COR 0\n",
        ),
        (
            "aer_dev_nonfatal",
            "Undefined 0\nCmpltTO 0\nTOTAL_ERR_NONFATAL 0\n",
        ),
        ("aer_dev_fatal", "Undefined 0\nDLP 0\nTOTAL_ERR_FATAL 0\n"),
        ("reset", "0\n"),
        ("remove", "0\n"),
    ] {
        write_abs(&dir.join(file), content);
    }
}

fn write_abs(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, content).expect("write fixture");
}

fn device(cfg: SysfsConfig) -> SysfsDevice {
    SysfsDevice::new("card-0", DeviceKind::AnalogCrossbar, cfg).expect("valid config")
}

fn value(s: &Sample, sensor: &str, q: Quantity) -> f64 {
    s.get(sensor, q)
        .unwrap_or_else(|| panic!("no {q:?} reading from {sensor} in {:#?}", s.readings))
}

fn conditions(s: &Sample, code: ConditionCode) -> Vec<&Condition> {
    s.conditions.iter().filter(|c| c.code == code).collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9 * b.abs().max(1.0)
}

#[tokio::test]
async fn hwmon_readings_are_in_base_units() {
    let f = Fixture::full();
    let dev = device(SysfsConfig {
        hwmon: Some("loihi2".into()),
        power_cap_sensor: Some(1),
        ..f.cfg()
    });
    let s = dev.read().await.expect("read");
    assert!(close(value(&s, "chip", Quantity::TemperatureCelsius), 45.5));
    assert!(close(
        value(&s, "temp2", Quantity::TemperatureCelsius),
        38.25
    ));
    assert!(close(value(&s, "board", Quantity::PowerWatts), 12.5));
    assert!(close(value(&s, "energy1", Quantity::EnergyJoules), 5.0));
    assert!(close(value(&s, "vcore", Quantity::VoltageVolts), 0.85));
    assert!(close(value(&s, "fan1", Quantity::FanRpm), 1200.0));
    assert!(close(value(&s, "curr1", Quantity::CurrentAmperes), 1.5));
    assert_eq!(s.readings.len(), 7, "{:#?}", s.readings);
    assert_eq!(s.power_limit_watts, Some(300.0));
    assert!(s.conditions.is_empty(), "{:#?}", s.conditions);
    assert!(s.powered);
    let id = dev.identity();
    assert_eq!(id.backend, "sysfs");
    assert_eq!(id.model, "loihi2");
    assert_eq!(id.kind, DeviceKind::AnalogCrossbar);
    assert!(
        id.location.ends_with("class/hwmon/hwmon1"),
        "{}",
        id.location
    );
    assert_eq!(dev.capabilities(), vec![Capability::SetPowerLimit]);
}

/// A crossbar card read through sysfs cannot be calibrated through it and reports no
/// calibration: its kind's maximum calibration age does not make it "never calibrated".
#[tokio::test]
async fn a_sysfs_crossbar_is_not_stale_for_a_calibration_it_cannot_have() {
    let f = Fixture::full();
    let dev = device(SysfsConfig {
        hwmon: Some("loihi2".into()),
        pci: Some(PCI.into()),
        power_cap_sensor: Some(1),
        ..f.cfg()
    });
    let s = dev.read().await.expect("read");
    assert_eq!(s.calibration, None);
    let limits = Limits::for_kind(DeviceKind::AnalogCrossbar);
    assert!(limits.calibration_max_age.is_some());
    let caps = dev.capabilities();
    assert!(!caps.contains(&Capability::Calibrate), "{caps:?}");
    let now = std::time::SystemTime::now();
    let c = evaluate("card-0", &s, &limits, &caps, now);
    assert!(
        c.iter().all(|c| c.code != ConditionCode::CalibrationStale),
        "{c:?}"
    );
}

#[tokio::test]
async fn hwmon_label_filter_and_a_missing_label_is_reported() {
    let f = Fixture::full();
    let dev = device(SysfsConfig {
        hwmon: Some("loihi2".into()),
        hwmon_labels: Some(vec!["chip".into(), "board".into(), "hbm".into()]),
        ..f.cfg()
    });
    let s = dev.read().await.expect("read");
    let mut sensors: Vec<&str> = s.readings.iter().map(|r| r.sensor.as_str()).collect();
    sensors.sort();
    assert_eq!(sensors, ["board", "chip"]);
    let errs = conditions(&s, ConditionCode::DeviceError);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].message.contains("\"hbm\""), "{}", errs[0].message);
}

#[tokio::test]
async fn hwmon_driver_limits_raise_thermal_conditions() {
    let f = Fixture::full();
    let dev = device(SysfsConfig {
        hwmon: Some("loihi2".into()),
        ..f.cfg()
    });
    f.write("class/hwmon/hwmon1/temp1_input", "85000\n");
    let s = dev.read().await.expect("read");
    let w = conditions(&s, ConditionCode::ThermalWarning);
    assert_eq!(w.len(), 1, "{:#?}", s.conditions);
    assert!(w[0].message.contains("85.0") && w[0].message.contains("temp1_max"));
    f.write("class/hwmon/hwmon1/temp1_input", "96000\n");
    let s = dev.read().await.expect("read");
    let c = conditions(&s, ConditionCode::ThermalCritical);
    assert_eq!(c.len(), 1, "{:#?}", s.conditions);
    assert_eq!(c[0].severity, Severity::Critical);
    assert!(c[0].message.contains("95.0"), "{}", c[0].message);
}

#[tokio::test]
async fn thermal_zone_trip_points() {
    let f = Fixture::full();
    let dev = device(SysfsConfig {
        thermal_zone: Some("loihi2-board".into()),
        ..f.cfg()
    });
    let s = dev.read().await.expect("read");
    assert!(close(
        value(&s, "loihi2-board", Quantity::TemperatureCelsius),
        51.0
    ));
    assert!(s.conditions.is_empty(), "{:#?}", s.conditions);

    f.write("class/thermal/thermal_zone1/temp", "90000\n");
    let s = dev.read().await.expect("read");
    let w = conditions(&s, ConditionCode::ThermalWarning);
    assert_eq!(w.len(), 1, "{:#?}", s.conditions);
    assert_eq!(w[0].severity, Severity::Warning);
    assert!(
        w[0].message.contains("90.0") && w[0].message.contains("passive"),
        "{}",
        w[0].message
    );

    f.write("class/thermal/thermal_zone1/temp", "95000\n");
    let s = dev.read().await.expect("read");
    let c = conditions(&s, ConditionCode::ThermalCritical);
    assert_eq!(c.len(), 1, "{:#?}", s.conditions);
    assert!(
        c[0].message.contains("critical trip point 95.0"),
        "{}",
        c[0].message
    );
    assert!(conditions(&s, ConditionCode::ThermalWarning).is_empty());
}

#[tokio::test]
async fn power_supply_power_comes_from_energy_deltas() {
    let f = Fixture::full();
    let dev = device(SysfsConfig {
        power_supply: Some("loihi2".into()),
        ..f.cfg()
    });
    let t0 = Instant::now();
    let s = dev.read().await.expect("read");
    let t1 = Instant::now();
    // 1 000 000 µWh = 3600 J; the first read gives no power.
    assert!(close(value(&s, "loihi2", Quantity::EnergyJoules), 3600.0));
    assert!(close(
        value(&s, "loihi2", Quantity::TemperatureCelsius),
        41.5
    ));
    assert_eq!(s.get("loihi2", Quantity::PowerWatts), None);
    assert!(s.powered);

    tokio::time::sleep(Duration::from_millis(200)).await;
    // +100 µWh = 0.36 J.
    f.write("class/power_supply/loihi2/energy_now", "1000100\n");
    let t2 = Instant::now();
    let s = dev.read().await.expect("read");
    let t3 = Instant::now();
    let p = value(&s, "loihi2", Quantity::PowerWatts);
    let (lo, hi) = (
        0.36 / (t3 - t0).as_secs_f64(),
        0.36 / (t2 - t1).as_secs_f64(),
    );
    assert!(lo <= p && p <= hi, "power {p} outside [{lo}, {hi}]");
    assert!(close(value(&s, "loihi2", Quantity::EnergyJoules), 3600.36));

    // A drop (counter reset) gives no power that time, and the next delta counts from it.
    f.write("class/power_supply/loihi2/energy_now", "10\n");
    let s = dev.read().await.expect("read");
    assert_eq!(s.get("loihi2", Quantity::PowerWatts), None);

    // power_now, when present, wins; online 0 means not powered.
    f.write("class/power_supply/loihi2/power_now", "5000000\n");
    f.write("class/power_supply/loihi2/energy_now", "20\n");
    f.write("class/power_supply/loihi2/online", "0\n");
    let s = dev.read().await.expect("read");
    assert!(close(value(&s, "loihi2", Quantity::PowerWatts), 5.0));
    assert!(!s.powered);
}

#[tokio::test]
async fn rapl_counter_wrap_is_handled() {
    let f = Fixture::full();
    let dev = device(SysfsConfig {
        powercap: Some("package-0".into()),
        ..f.cfg()
    });
    let t0 = Instant::now();
    let s = dev.read().await.expect("read");
    let t1 = Instant::now();
    assert!(close(value(&s, "package-0", Quantity::EnergyJoules), 0.9));
    assert_eq!(s.get("package-0", Quantity::PowerWatts), None);
    assert_eq!(s.power_limit_watts, Some(65.0));

    tokio::time::sleep(Duration::from_millis(200)).await;
    // Wrapped at 1 000 000 µJ: 900 000 → 100 000 is 200 000 µJ = 0.2 J.
    f.write("class/powercap/intel-rapl:0/energy_uj", "100000\n");
    let t2 = Instant::now();
    let s = dev.read().await.expect("read");
    let t3 = Instant::now();
    assert!(close(value(&s, "package-0", Quantity::EnergyJoules), 1.1));
    let p = value(&s, "package-0", Quantity::PowerWatts);
    let (lo, hi) = (0.2 / (t3 - t0).as_secs_f64(), 0.2 / (t2 - t1).as_secs_f64());
    assert!(lo <= p && p <= hi, "power {p} outside [{lo}, {hi}]");

    // And on without a wrap.
    f.write("class/powercap/intel-rapl:0/energy_uj", "400000\n");
    let s = dev.read().await.expect("read");
    assert!(close(value(&s, "package-0", Quantity::EnergyJoules), 1.4));
}

#[tokio::test]
async fn pci_link_degraded() {
    let f = Fixture::full();
    let dev = device(SysfsConfig {
        pci: Some(PCI.into()),
        ..f.cfg()
    });
    let s = dev.read().await.expect("read");
    assert!(s.conditions.is_empty(), "{:#?}", s.conditions);
    let id = dev.identity();
    assert_eq!(
        (id.vendor.as_str(), id.model.as_str()),
        ("0x1e2f", "0x0001")
    );
    assert_eq!(id.location, PCI);
    assert_eq!(
        dev.capabilities(),
        vec![Capability::ResetSoft, Capability::ResetHard]
    );

    let d = format!("bus/pci/devices/{PCI}");
    f.write(&format!("{d}/current_link_speed"), "8.0 GT/s PCIe\n");
    f.write(&format!("{d}/current_link_width"), "8\n");
    let s = dev.read().await.expect("read");
    let l = conditions(&s, ConditionCode::LinkDegraded);
    assert_eq!(l.len(), 1, "{:#?}", s.conditions);
    assert_eq!(l[0].severity, Severity::Warning);
    assert!(
        l[0].message
            .contains("x8 at 8.0 GT/s, capable of x16 at 16.0 GT/s"),
        "{}",
        l[0].message
    );
}

#[tokio::test]
async fn pci_aer_rise_and_drop() {
    let f = Fixture::full();
    let dev = device(SysfsConfig {
        pci: Some(PCI.into()),
        ..f.cfg()
    });
    let d = format!("bus/pci/devices/{PCI}");
    let s = dev.read().await.expect("baseline");
    assert!(s.conditions.is_empty());

    f.write(
        &format!("{d}/aer_dev_correctable"),
        "RxErr 1\nBadTLP 2\nBadDLLP 0\nTimeout 0\nTOTAL_ERR_COR 3\n",
    );
    let s = dev.read().await.expect("read");
    let e = conditions(&s, ConditionCode::DeviceError);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!(e[0].severity, Severity::Warning);
    assert!(
        e[0].message.contains("3 new correctable")
            && e[0].message.contains("BadTLP +2")
            && e[0].message.contains("RxErr +1"),
        "{}",
        e[0].message
    );
    // No new errors since: the condition clears.
    let s = dev.read().await.expect("read");
    assert!(s.conditions.is_empty(), "{:#?}", s.conditions);

    f.write(
        &format!("{d}/aer_dev_fatal"),
        "Undefined 0\nDLP 1\nTOTAL_ERR_FATAL 1\n",
    );
    let s = dev.read().await.expect("read");
    let e = conditions(&s, ConditionCode::DeviceError);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!(e[0].severity, Severity::Critical);
    assert!(e[0].message.contains("fatal"), "{}", e[0].message);

    // The counters drop: the function was reset or replaced.
    f.write(
        &format!("{d}/aer_dev_correctable"),
        "RxErr 0\nBadTLP 0\nBadDLLP 0\nTimeout 0\nTOTAL_ERR_COR 0\n",
    );
    let s = dev.read().await.expect("read");
    let e = conditions(&s, ConditionCode::DeviceError);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!(e[0].severity, Severity::Info);
    assert!(
        e[0].message.contains("from 3 to 0") && e[0].message.contains("reset or replaced"),
        "{}",
        e[0].message
    );

    // Garbage in an AER file is a protocol error naming the file; the rest still reports.
    f.write(&format!("{d}/aer_dev_nonfatal"), "Undefined zero\n");
    let s = dev.read().await.expect("read");
    let e = conditions(&s, ConditionCode::DeviceError);
    assert!(
        e.iter()
            .any(|c| c.message.contains("aer_dev_nonfatal") && c.message.contains("zero")),
        "{e:#?}"
    );
}

#[tokio::test]
async fn pci_soft_reset_writes_1() {
    let f = Fixture::full();
    let dev = device(SysfsConfig {
        pci: Some(PCI.into()),
        ..f.cfg()
    });
    dev.reset(ResetKind::Soft).await.expect("soft reset");
    assert_eq!(f.read(&format!("bus/pci/devices/{PCI}/reset")).trim(), "1");

    fs::remove_file(f.path(&format!("bus/pci/devices/{PCI}/reset"))).expect("rm");
    match dev.reset(ResetKind::Soft).await {
        Err(HalError::Unsupported(m)) => assert!(m.contains("reset"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        dev.reset(ResetKind::PowerCycle).await,
        Err(HalError::Unsupported(_))
    ));
    let no_pci = device(SysfsConfig {
        hwmon: Some("loihi2".into()),
        ..f.cfg()
    });
    assert!(matches!(
        no_pci.reset(ResetKind::Soft).await,
        Err(HalError::Unsupported(_))
    ));
}

/// Plays the kernel for a hard reset: removes the function when `1` is written to its
/// `remove`, and (if `comes_back`) recreates it, atomically, when `1` is written to the bus
/// `rescan`. Returns what it saw.
async fn fake_kernel(root: PathBuf, comes_back: bool) -> (bool, bool) {
    let dev = root.join("bus/pci/devices").join(PCI);
    let rescan = root.join("bus/pci/rescan");
    let (mut removed, mut rescanned) = (false, false);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if !removed && fs::read_to_string(dev.join("remove")).is_ok_and(|s| s.trim() == "1") {
            fs::remove_dir_all(&dev).expect("remove function");
            removed = true;
        }
        if removed && fs::read_to_string(&rescan).is_ok_and(|s| s.trim() == "1") {
            rescanned = true;
            if comes_back {
                let staging = root.join("staging");
                pci_card(&staging);
                fs::rename(&staging, &dev).expect("rescan: function back");
            }
            fs::write(&rescan, "0\n").expect("rescan reset");
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (removed, rescanned)
}

#[tokio::test]
async fn pci_hard_reset_removes_rescans_and_waits_for_the_function() {
    let f = Fixture::full();
    let dev = device(SysfsConfig {
        pci: Some(PCI.into()),
        rescan_wait_ms: 3000,
        ..f.cfg()
    });
    let d = format!("bus/pci/devices/{PCI}");
    // Counts before the reset, so that the fresh function's zeros could look like a drop.
    f.write(
        &format!("{d}/aer_dev_correctable"),
        "RxErr 4\nTOTAL_ERR_COR 4\n",
    );
    dev.read().await.expect("baseline");
    let kernel = tokio::spawn(fake_kernel(f.root(), true));
    dev.reset(ResetKind::Hard).await.expect("hard reset");
    assert_eq!(kernel.await.expect("kernel"), (true, true));
    assert!(f.path(&d).is_dir());
    // The fresh function reads normally, and its zeroed counters are not mistaken for a
    // drop: the reset itself explains them.
    let s = dev.read().await.expect("read after reset");
    assert!(s.conditions.is_empty(), "{:#?}", s.conditions);
}

#[tokio::test]
async fn pci_hard_reset_fails_when_the_function_never_returns() {
    let f = Fixture::full();
    let dev = device(SysfsConfig {
        pci: Some(PCI.into()),
        rescan_wait_ms: 300,
        ..f.cfg()
    });
    let kernel = tokio::spawn(fake_kernel(f.root(), false));
    let start = Instant::now();
    match dev.reset(ResetKind::Hard).await {
        Err(HalError::Failed(m)) => {
            assert!(m.contains(PCI) && m.contains("rescan"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(kernel.await.expect("kernel"), (true, true));
    assert!(matches!(dev.read().await, Err(HalError::Vanished(_))));
}

#[tokio::test]
async fn pci_function_vanishes_and_returns() {
    let f = Fixture::full();
    let dev = device(SysfsConfig {
        pci: Some(PCI.into()),
        ..f.cfg()
    });
    dev.read().await.expect("read");
    let d = f.path(&format!("bus/pci/devices/{PCI}"));
    let parked = f.path("parked");
    fs::rename(&d, &parked).expect("unplug");
    match dev.read().await {
        Err(HalError::Vanished(m)) => assert!(m.contains(PCI), "{m}"),
        other => panic!("{other:?}"),
    }
    fs::rename(&parked, &d).expect("replug");
    dev.read().await.expect("read after hot-plug");
}

#[tokio::test]
async fn all_sources_failing_returns_the_worst_error_and_one_failing_is_a_condition() {
    let f = Fixture::full();
    // The card's own hwmon chip lives under its PCI directory, as in real sysfs.
    let d = format!("bus/pci/devices/{PCI}");
    f.write(&format!("{d}/hwmon/hwmon5/name"), "xbar\n");
    f.write(&format!("{d}/hwmon/hwmon5/temp1_input"), "33000\n");
    f.write("class/hwmon/hwmon9/name", "xbar\n");
    f.write("class/hwmon/hwmon9/temp1_input", "99000\n");
    let dev = device(SysfsConfig {
        pci: Some(PCI.into()),
        hwmon: Some("xbar".into()),
        power_supply: Some("loihi2".into()),
        ..f.cfg()
    });
    let s = dev.read().await.expect("read");
    // The chip under the PCI function wins over the same-named one elsewhere.
    assert!(close(
        value(&s, "temp1", Quantity::TemperatureCelsius),
        33.0
    ));

    // The card goes (taking its hwmon chip); the power supply still reports.
    fs::remove_dir_all(f.path(&d)).expect("unplug");
    let s = dev.read().await.expect("power supply still reports");
    assert!(s.get("loihi2", Quantity::EnergyJoules).is_some());
    let e = conditions(&s, ConditionCode::DeviceError);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(e.iter().all(|c| c.severity == Severity::Critical));
    assert!(e.iter().any(|c| c.message.contains(PCI)));

    // Everything gone: the read fails, as vanished.
    fs::remove_dir_all(f.path("class/power_supply/loihi2")).expect("rm");
    match dev.read().await {
        Err(HalError::Vanished(m)) => {
            assert!(m.contains(PCI) && m.contains("loihi2"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn power_cap_write_and_refusals() {
    let f = Fixture::full();
    let dev = device(SysfsConfig {
        hwmon: Some("loihi2".into()),
        power_cap_sensor: Some(1),
        ..f.cfg()
    });
    dev.read().await.expect("read");
    assert!(dev.capabilities().contains(&Capability::SetPowerLimit));
    dev.set_power_limit(250.0).await.expect("set");
    assert_eq!(f.read("class/hwmon/hwmon1/power1_cap"), "250000000");
    assert_eq!(
        dev.read().await.expect("read").power_limit_watts,
        Some(250.0)
    );

    assert!(matches!(
        dev.set_power_limit(500.0).await,
        Err(HalError::InvalidArgument(m)) if m.contains("power1_cap_max")
    ));
    assert!(matches!(
        dev.set_power_limit(-1.0).await,
        Err(HalError::InvalidArgument(_))
    ));

    // A read-only cap (the driver has no store method): refused clearly, not advertised.
    let cap = f.path("class/hwmon/hwmon1/power1_cap");
    fs::set_permissions(&cap, fs::Permissions::from_mode(0o444)).expect("chmod");
    match dev.set_power_limit(200.0).await {
        Err(HalError::Unsupported(m)) => assert!(m.contains("read-only"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(f.read("class/hwmon/hwmon1/power1_cap"), "250000000");
    let fresh = device(SysfsConfig {
        hwmon: Some("loihi2".into()),
        power_cap_sensor: Some(1),
        ..f.cfg()
    });
    fresh.read().await.expect("read");
    assert!(!fresh.capabilities().contains(&Capability::SetPowerLimit));

    // No cap sensor configured: no capability, and the call is unsupported.
    let plain = device(SysfsConfig {
        hwmon: Some("loihi2".into()),
        ..f.cfg()
    });
    plain.read().await.expect("read");
    assert!(plain.capabilities().is_empty());
    assert!(matches!(
        plain.set_power_limit(100.0).await,
        Err(HalError::Unsupported(_))
    ));
}

/// Unblocks a reader stuck opening a FIFO, so the test's runtime can shut down even when an
/// assertion fails first.
struct Unblock(PathBuf);

impl Unblock {
    fn now(&self) {
        // A non-blocking open for writing succeeds only while a reader is waiting in open.
        if let Ok(mut w) = fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(&self.0)
        {
            use std::io::Write;
            let _ = w.write_all(b"42000\n");
        }
    }
}

impl Drop for Unblock {
    fn drop(&mut self) {
        self.now();
    }
}

#[tokio::test]
async fn hung_driver_times_out_once_and_holds_one_thread() {
    let f = Fixture::full();
    let fifo = f.path("class/hwmon/hwmon1/temp1_input");
    fs::remove_file(&fifo).expect("rm");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let unblock = Unblock(fifo.clone());
    let deadline = Duration::from_millis(200);
    let dev = device(SysfsConfig {
        hwmon: Some("loihi2".into()),
        thermal_zone: Some("loihi2-board".into()),
        power_supply: Some("loihi2".into()),
        deadline_ms: deadline.as_millis() as u64,
        ..f.cfg()
    });
    let reader = dev.reader().clone();

    let start = Instant::now();
    let s = dev.read().await.expect("the other sensors still report");
    let took = start.elapsed();
    assert!(
        took >= deadline && took < deadline + Duration::from_secs(1),
        "{took:?}"
    );
    assert!(s.get("chip", Quantity::TemperatureCelsius).is_none());
    assert!(s.get("board", Quantity::PowerWatts).is_some());
    assert!(s
        .get("loihi2-board", Quantity::TemperatureCelsius)
        .is_some());
    assert!(s.get("loihi2", Quantity::EnergyJoules).is_some());
    let e = conditions(&s, ConditionCode::DeviceError);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].message.contains("temp1_input") && e[0].message.contains("no answer"),
        "{}",
        e[0].message
    );
    assert_eq!(reader.blocking_calls_in_flight(), 1);
    assert_eq!(reader.stuck_files(), vec![fifo.clone()]);

    // Again: fails fast, no second thread on the stuck file.
    let started = reader.blocking_calls_started();
    let start = Instant::now();
    let s = dev.read().await.expect("read");
    assert!(start.elapsed() < deadline, "{:?}", start.elapsed());
    assert!(reader.blocking_calls_started() > started);
    assert_eq!(reader.blocking_calls_in_flight(), 1);
    let e = conditions(&s, ConditionCode::DeviceError);
    assert!(e.len() == 1 && e[0].message.contains("blocked"), "{e:#?}");
    match reader.read_string("class/hwmon/hwmon1/temp1_input").await {
        Err(HalError::Timeout(m)) => assert!(m.contains("temp1_input"), "{m}"),
        other => panic!("{other:?}"),
    }

    // The driver comes back: the thread returns and the file reads again.
    unblock.now();
    let start = Instant::now();
    while reader.blocking_calls_in_flight() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "thread never returned"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fs::remove_file(&fifo).expect("rm fifo");
    fs::write(&fifo, "42000\n").expect("write");
    let s = dev.read().await.expect("read");
    assert!(close(value(&s, "chip", Quantity::TemperatureCelsius), 42.0));
    assert!(conditions(&s, ConditionCode::DeviceError).is_empty());
}

#[tokio::test]
async fn vanished_hwmon_chip_is_vanished_and_found_again() {
    let f = Fixture::full();
    let dev = device(SysfsConfig {
        hwmon: Some("loihi2".into()),
        ..f.cfg()
    });
    dev.read().await.expect("read");
    fs::remove_dir_all(f.path("class/hwmon/hwmon1")).expect("rm");
    for _ in 0..2 {
        match dev.read().await {
            Err(HalError::Vanished(m)) => assert!(m.contains("loihi2"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    // Re-probed under another number.
    f.loihi_chip("class/hwmon/hwmon7");
    let s = dev.read().await.expect("found again");
    assert!(close(value(&s, "chip", Quantity::TemperatureCelsius), 45.5));
    assert!(
        dev.identity().location.ends_with("class/hwmon/hwmon7"),
        "{}",
        dev.identity().location
    );
}

#[tokio::test]
async fn garbage_content_is_a_protocol_error_naming_the_file() {
    let f = Fixture::full();
    f.write("class/hwmon/hwmon1/temp2_input", "banana\n");
    let dev = device(SysfsConfig {
        hwmon: Some("loihi2".into()),
        ..f.cfg()
    });
    let s = dev.read().await.expect("the rest reports");
    assert!(s.get("chip", Quantity::TemperatureCelsius).is_some());
    let e = conditions(&s, ConditionCode::DeviceError);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].message.contains("temp2_input") && e[0].message.contains("banana"),
        "{}",
        e[0].message
    );
    let reader = dev.reader();
    match reader.read_i64("class/hwmon/hwmon1/temp2_input").await {
        Err(HalError::Protocol(m)) => {
            assert!(m.contains("temp2_input") && m.contains("banana"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    // Long garbage is quoted only in part.
    f.write("class/hwmon/hwmon1/temp2_input", &"x".repeat(5000));
    match reader.read_i64("class/hwmon/hwmon1/temp2_input").await {
        Err(HalError::Protocol(m)) => assert!(m.len() < 400, "{m}"),
        other => panic!("{other:?}"),
    }
    // Every file garbage: the source, and so the device, fails with Protocol.
    let z = "class/thermal/thermal_zone1/temp";
    f.write(z, "\u{1f525}\n");
    let zone = device(SysfsConfig {
        thermal_zone: Some("loihi2-board".into()),
        ..f.cfg()
    });
    match zone.read().await {
        Err(HalError::Protocol(m)) => assert!(m.contains("thermal_zone1/temp"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn access_errors_are_io() {
    let f = Fixture::full();
    let dev = device(SysfsConfig {
        hwmon: Some("loihi2".into()),
        ..f.cfg()
    });
    let reader = dev.reader();
    // A directory where a file should be (EISDIR): an I/O error naming the path, even as root.
    fs::create_dir_all(f.path("class/hwmon/hwmon1/temp3_input")).expect("mkdir");
    match reader.read_string("class/hwmon/hwmon1/temp3_input").await {
        Err(HalError::Io(m)) => assert!(m.contains("temp3_input"), "{m}"),
        other => panic!("{other:?}"),
    }
    let s = dev.read().await.expect("the rest reports");
    assert!(conditions(&s, ConditionCode::DeviceError)
        .iter()
        .any(|c| c.message.contains("temp3_input") && c.message.contains("i/o error")));

    // A file with mode 000: root (CAP_DAC_OVERRIDE) bypasses permissions, so only checked
    // otherwise. nix's `geteuid` needs its "user" feature, which this crate does not enable;
    // trying the open directly is the more exact test anyway.
    let locked = f.path("class/hwmon/hwmon1/temp2_input");
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).expect("chmod");
    if fs::File::open(&locked).is_ok() {
        eprintln!("privileged: mode 000 does not deny reads, EACCES not checked");
    } else {
        match reader.read_string("class/hwmon/hwmon1/temp2_input").await {
            Err(HalError::Io(m)) => assert!(m.contains("temp2_input"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    // A missing file is vanished, naming it.
    match reader.read_string("class/hwmon/hwmon1/temp9_input").await {
        Err(HalError::Vanished(m)) => assert!(m.contains("temp9_input"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn discovery_by_rule() {
    let f = Fixture::full();
    f.loihi_chip("class/hwmon/hwmon10");
    f.loihi_chip("class/hwmon/hwmon2");
    let found = discover_hwmon(&f.root(), "loihi2");
    assert_eq!(
        found,
        vec![
            f.path("class/hwmon/hwmon1"),
            f.path("class/hwmon/hwmon2"),
            f.path("class/hwmon/hwmon10")
        ]
    );
    assert!(discover_hwmon(&f.root(), "nope").is_empty());

    let other = f.path("bus/pci/devices/0000:81:00.0");
    pci_card(&other);
    pci_card(&f.path("bus/pci/devices/0000:04:00.0"));
    write_abs(&f.path("bus/pci/devices/0000:04:00.0/device"), "0x0002\n");
    write_abs(&f.path("bus/pci/devices/0000:00:1f.0/vendor"), "0x8086\n");
    write_abs(&f.path("bus/pci/devices/0000:00:1f.0/device"), "0x0001\n");
    assert_eq!(
        discover_pci(&f.root(), 0x1e2f, Some(0x0001)),
        vec![PCI.to_string(), "0000:81:00.0".to_string()]
    );
    assert_eq!(discover_pci(&f.root(), 0x1e2f, None).len(), 3);
    assert!(discover_pci(Path::new("/nonexistent"), 0x1e2f, None).is_empty());
}

#[tokio::test]
async fn a_discovered_hwmon_directory_works_as_the_config() {
    let f = Fixture::full();
    let dir = discover_hwmon(&f.root(), "loihi2").pop().expect("found");
    let dev = device(SysfsConfig {
        hwmon: Some(dir.display().to_string()),
        ..f.cfg()
    });
    let s = dev.read().await.expect("read");
    assert!(close(value(&s, "chip", Quantity::TemperatureCelsius), 45.5));
}

#[test]
fn config_defaults_and_validation() {
    let cfg: SysfsConfig =
        serde_json::from_value(serde_json::json!({ "hwmon": "loihi2" })).expect("parse");
    assert_eq!(cfg.root, PathBuf::from("/sys"));
    assert_eq!(cfg.deadline_ms, 500);
    assert_eq!(cfg.rescan_wait_ms, 10_000);
    assert_eq!(cfg.validate(), Ok(()));

    let unknown = serde_json::from_value::<SysfsConfig>(serde_json::json!({ "hwmom": "x" }));
    assert!(unknown.is_err());

    let bad = |cfg: SysfsConfig| cfg.validate().expect_err("invalid");
    let (k, m) = bad(SysfsConfig::default());
    assert_eq!(k, "hwmon");
    assert!(m.starts_with("expected") && m.contains("found none"), "{m}");

    for addr in [
        "0000:3:00.0",
        "0000:03:00",
        "0000:03:20.0",
        "0000:03:00.8",
        "zz",
    ] {
        let (k, m) = bad(SysfsConfig {
            pci: Some(addr.into()),
            ..SysfsConfig::default()
        });
        assert_eq!(k, "pci");
        assert!(m.contains("expected") && m.contains(addr), "{m}");
    }
    let upper = SysfsConfig {
        pci: Some("0000:0A:1F.7".into()),
        ..SysfsConfig::default()
    };
    assert_eq!(upper.validate(), Ok(()));
    assert_eq!(upper.pci_address().as_deref(), Some("0000:0a:1f.7"));

    let (k, _) = bad(SysfsConfig {
        root: "sys".into(),
        hwmon: Some("x".into()),
        ..SysfsConfig::default()
    });
    assert_eq!(k, "root");
    let (k, _) = bad(SysfsConfig {
        deadline_ms: 0,
        hwmon: Some("x".into()),
        ..SysfsConfig::default()
    });
    assert_eq!(k, "deadline_ms");
    let (k, _) = bad(SysfsConfig {
        power_supply: Some("../x".into()),
        ..SysfsConfig::default()
    });
    assert_eq!(k, "power_supply");
    let (k, _) = bad(SysfsConfig {
        pci: Some(PCI.into()),
        power_cap_sensor: Some(1),
        ..SysfsConfig::default()
    });
    assert_eq!(k, "power_cap_sensor");
    let (k, _) = bad(SysfsConfig {
        pci: Some(PCI.into()),
        hwmon_labels: Some(vec!["chip".into()]),
        ..SysfsConfig::default()
    });
    assert_eq!(k, "hwmon_labels");

    match SysfsDevice::new("x", DeviceKind::Loihi2, SysfsConfig::default()) {
        Err(HalError::InvalidArgument(m)) => assert!(m.starts_with("hwmon: expected"), "{m}"),
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("accepted an empty config"),
    }
}

#[tokio::test]
async fn missing_sources_are_vanished_with_a_clear_message() {
    let f = Fixture::full();
    for (cfg, needle) in [
        (
            SysfsConfig {
                hwmon: Some("nochip".into()),
                ..f.cfg()
            },
            "no hwmon chip named \"nochip\"",
        ),
        (
            SysfsConfig {
                thermal_zone: Some("nozone".into()),
                ..f.cfg()
            },
            "no thermal zone of type \"nozone\"",
        ),
        (
            SysfsConfig {
                powercap: Some("psys".into()),
                ..f.cfg()
            },
            "no powercap zone named \"psys\"",
        ),
        (
            SysfsConfig {
                power_supply: Some("BAT9".into()),
                ..f.cfg()
            },
            "power supply \"BAT9\" is gone",
        ),
    ] {
        match device(cfg).read().await {
            Err(HalError::Vanished(m)) => assert!(m.contains(needle), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
