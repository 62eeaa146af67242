//! [`BmpBoard`]: one SpiNNaker board in a frame, as a [`Device`], reached through the frame's
//! BMP. Reads are one BMP_INFO ADC request; resets and enable/disable are power and reset
//! commands, each verified by reading the rails afterwards, because the BMP acknowledges a
//! power-on even when the board does not come up.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::client::{BmpClient, ClientOptions};
use super::config::BmpConfig;
use super::wire::{AdcInfo, VersionInfo};
use crate::device::{Device, FaultInjector, HalError};
use crate::model::{
    CalibrationRecord, Capability, Condition, ConditionCode, DeviceIdentity, DeviceKind, Quantity,
    Reading, ResetKind, Sample, Severity,
};

pub const VENDOR: &str = "University of Manchester";
/// The model shown until the BMP has told its name.
const MODEL_UNKNOWN: &str = "SpiNNaker board (BMP not yet contacted)";

/// A 1.2 V rail above this is up. An off rail reads a few millivolts and a powered one
/// 1.2 V within a few percent, so half the nominal voltage separates them with margin on
/// both sides. The 1.2 V rails are the ones switched with the board: the 3.3 V rail and the
/// 12 V supply also feed the BMP and stay up while the board is off.
const RAIL_UP_VOLTS: f64 = 0.6;

/// The firmware samples the ADC every 80 ms: wait this long after a power or reset command
/// before the verifying read, so that it sees the new state and not the old.
const ADC_REFRESH: Duration = Duration::from_millis(100);

/// CMD_RESET code: pulse the chips' reset line.
const RESET_PULSE: u32 = 2;

/// ADC channel names, for decoding the firmware's flag bits 0..7.
const CHANNELS: [&str; 8] = [
    "adc0", "1.2 V C", "1.2 V B", "1.2 V A", "1.8 V", "2.5 V", "3.3 V", "12 V",
];

/// The longest a reset or enable can take when every step uses its full timeouts: the agent's
/// action deadline should be at least this, since a power cycle cancelled between off and on
/// leaves the board off.
pub fn worst_case_action(o: &ClientOptions, power_cycle_off: Duration) -> Duration {
    let request = o.timeout.saturating_mul(o.attempts.max(1));
    [power_cycle_off, o.power_on_timeout, ADC_REFRESH, request]
        .into_iter()
        .fold(request, Duration::saturating_add)
}

pub struct BmpBoard {
    id: String,
    board: u8,
    client: BmpClient,
    power_cycle_off: Duration,
    /// CMD_VER of the BMP, fetched on first successful contact and kept: the firmware does
    /// not change while the agent runs, and identity() must not wait on the network.
    version: Mutex<Option<VersionInfo>>,
    faults: Option<Arc<dyn FaultInjector>>,
}

impl BmpBoard {
    /// The board for device `id`. Validates the config (an error names the key); nothing is
    /// sent until the first call.
    pub fn new(id: impl Into<String>, config: &BmpConfig) -> Result<BmpBoard, HalError> {
        let invalid = |(k, m): (String, String)| HalError::InvalidArgument(format!("{k}: {m}"));
        config.validate().map_err(invalid)?;
        let address = config.socket_addr().map_err(invalid)?;
        Ok(BmpBoard::with_client(
            id,
            config.board_number(),
            BmpClient::new(address, config.client_options()),
            config.power_cycle_off(),
        ))
    }

    /// The board from an already built client (the caller is responsible for `board` being
    /// 0..=23).
    pub fn with_client(
        id: impl Into<String>,
        board: u8,
        client: BmpClient,
        power_cycle_off: Duration,
    ) -> BmpBoard {
        BmpBoard {
            id: id.into(),
            board,
            client,
            power_cycle_off,
            version: Mutex::new(None),
            faults: None,
        }
    }

    /// Attaches a fault handle (the simulator's), making FaultInjection a capability.
    pub fn with_fault_injector(mut self, faults: Arc<dyn FaultInjector>) -> BmpBoard {
        self.faults = Some(faults);
        self
    }

    pub fn board(&self) -> u8 {
        self.board
    }

    pub fn client(&self) -> &BmpClient {
        &self.client
    }

    /// See [`worst_case_action`].
    pub fn worst_case_action(&self) -> Duration {
        worst_case_action(&self.client.options(), self.power_cycle_off)
    }

    fn mask(&self) -> u32 {
        1u32.checked_shl(self.board as u32).unwrap_or(0)
    }

    fn version(&self) -> MutexGuard<'_, Option<VersionInfo>> {
        // Plain data replaced in one step: a panic elsewhere cannot leave it torn.
        self.version.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fetches CMD_VER once. A failure is not the read's failure: the health data came in,
    /// and the identity is tried again on the next read.
    async fn learn_version(&self) {
        if self.version().is_some() {
            return;
        }
        if let Ok(v) = self.client.version(self.board).await {
            *self.version() = Some(v);
        }
    }

    fn label(&self) -> String {
        format!("{} board {}", self.client.address(), self.board)
    }

    async fn verify_up(&self, action: &str) -> Result<(), HalError> {
        tokio::time::sleep(ADC_REFRESH).await;
        let adc = self.client.adc(self.board).await?;
        if powered(&adc) {
            return Ok(());
        }
        Err(HalError::Failed(format!(
            "{action} on {}: the BMP acknowledged it but the board did not come up (1.2 V rails A/B/C at {} V)",
            self.label(),
            [adc.rail_1v2_a(), adc.rail_1v2_b(), adc.rail_1v2_c()]
                .iter()
                .map(|v| v.map_or("-".to_string(), |v| format!("{v:.2}")))
                .collect::<Vec<_>>()
                .join("/")
        )))
    }

    async fn power_on(&self, action: &str) -> Result<(), HalError> {
        self.client.power_on(self.mask()).await?;
        self.verify_up(action).await
    }

    fn sample(&self, adc: &AdcInfo) -> Sample {
        let now = SystemTime::now();
        let mut readings = Vec::with_capacity(14);
        let mut push = |sensor: &str, q, v: Option<f64>| {
            if let Some(v) = v {
                readings.push(Reading::new(sensor, q, v, now));
            }
        };
        use Quantity::{FanRpm, TemperatureCelsius as Temp, VoltageVolts as Volts};
        push("board_top", Temp, adc.board_top());
        push("board_bottom", Temp, adc.board_bottom());
        push("external_0", Temp, adc.external(0));
        push("external_1", Temp, adc.external(1));
        push("rail_1v2_a", Volts, adc.rail_1v2_a());
        push("rail_1v2_b", Volts, adc.rail_1v2_b());
        push("rail_1v2_c", Volts, adc.rail_1v2_c());
        push("rail_1v8", Volts, adc.rail_1v8());
        push("rail_2v5", Volts, adc.rail_2v5());
        push("rail_3v3", Volts, adc.rail_3v3());
        push("supply_12v", Volts, adc.supply_12v());
        push("fan_0", FanRpm, adc.fan_rpm(0));
        push("fan_1", FanRpm, adc.fan_rpm(1));
        // No power reading: the BMP's ADC measures voltages only.
        Sample {
            readings,
            calibration: None,
            power_limit_watts: None,
            powered: powered(adc),
            conditions: flag_conditions(&self.id, adc, now),
        }
    }
}

/// The board is powered when every 1.2 V rail the firmware samples is up.
pub fn powered(adc: &AdcInfo) -> bool {
    let rails: Vec<f64> = [adc.rail_1v2_a(), adc.rail_1v2_b(), adc.rail_1v2_c()]
        .into_iter()
        .flatten()
        .collect();
    !rails.is_empty() && rails.iter().all(|v| *v > RAIL_UP_VOLTS)
}

/// What the set bits of a warning or shutdown word refer to (bmp_main.c `check_status`:
/// bits 0-7 ADC channels, 8-11 board sensors, 12-15 external sensors, 16-19 fans).
fn describe_flags(word: u32) -> String {
    let mut parts = Vec::new();
    for (bit, name) in CHANNELS.iter().enumerate() {
        if word & (1 << bit) != 0 {
            parts.push(format!("{name} rail"));
        }
    }
    for i in 0..4 {
        if word & (1 << (8 + i)) != 0 {
            parts.push(match i {
                0 => "board top temperature".to_string(),
                1 => "board bottom temperature".to_string(),
                _ => format!("board temperature {i}"),
            });
        }
        if word & (1 << (12 + i)) != 0 {
            parts.push(format!("external temperature {i}"));
        }
        if word & (1 << (16 + i)) != 0 {
            parts.push(format!("fan {i}"));
        }
    }
    if word & 0xFFF0_0000 != 0 {
        parts.push(format!("unknown bits 0x{:08x}", word & 0xFFF0_0000));
    }
    parts.join(", ")
}

/// Temperature flag bits: board sensors 8-11 and external sensors 12-15.
const THERMAL_BITS: u32 = 0x0000_FF00;

/// The firmware's own monitor flags as conditions: temperature bits are thermal conditions,
/// anything else (a rail or fan out of range) a device error; the shutdown word is critical.
pub fn flag_conditions(subject: &str, adc: &AdcInfo, now: SystemTime) -> Vec<Condition> {
    let mut out = Vec::new();
    for (word, name, thermal_code, severity) in [
        (
            adc.warning,
            "warning",
            ConditionCode::ThermalWarning,
            Severity::Warning,
        ),
        (
            adc.shutdown,
            "shutdown",
            ConditionCode::ThermalCritical,
            Severity::Critical,
        ),
    ] {
        for (bits, code) in [
            (word & THERMAL_BITS, thermal_code),
            (word & !THERMAL_BITS, ConditionCode::DeviceError),
        ] {
            if bits != 0 {
                let mut message = format!(
                    "BMP {name} flags 0x{word:08x}: {} over the firmware's {name} limit",
                    describe_flags(bits)
                );
                if code != ConditionCode::DeviceError {
                    if let Some(t) = adc.board_top() {
                        message.push_str(&format!(" (board top {t:.1} degC)"));
                    }
                }
                out.push(Condition::new(code, severity, subject, message, now));
            }
        }
    }
    out
}

#[async_trait]
impl Device for BmpBoard {
    fn identity(&self) -> DeviceIdentity {
        let v = self.version().clone();
        DeviceIdentity {
            id: self.id.clone(),
            kind: DeviceKind::Spinnaker,
            vendor: VENDOR.to_string(),
            model: v
                .as_ref()
                .map_or_else(|| MODEL_UNKNOWN.to_string(), |v| v.name.clone()),
            // The BMP's serial block has no documented layout; nothing is shown rather than
            // a guess.
            serial: String::new(),
            firmware: v.as_ref().map(|v| v.firmware()).unwrap_or_default(),
            backend: "bmp".to_string(),
            location: self.label(),
        }
    }

    fn capabilities(&self) -> Vec<Capability> {
        let mut caps = vec![
            Capability::ResetSoft,
            Capability::ResetHard,
            Capability::PowerCycle,
            Capability::EnableDisable,
        ];
        if self.faults.is_some() {
            caps.push(Capability::FaultInjection);
        }
        caps
    }

    async fn read(&self) -> Result<Sample, HalError> {
        let adc = self.client.adc(self.board).await?;
        self.learn_version().await;
        Ok(self.sample(&adc))
    }

    async fn reset(&self, kind: ResetKind) -> Result<(), HalError> {
        match kind {
            ResetKind::Soft => {
                self.client
                    .reset(self.board, self.mask(), RESET_PULSE)
                    .await?;
                self.verify_up("soft reset").await
            }
            // A SpiNN-5 board has no reset deeper than its chips' reset line short of
            // removing power, so a hard reset is a power cycle, as the host libraries do it.
            ResetKind::Hard | ResetKind::PowerCycle => {
                self.client.power_off(self.mask()).await?;
                tokio::time::sleep(self.power_cycle_off).await;
                self.power_on(kind.as_str()).await
            }
        }
    }

    async fn calibrate(&self) -> Result<CalibrationRecord, HalError> {
        Err(HalError::Unsupported(
            "calibrate: a SpiNNaker board has nothing to calibrate".to_string(),
        ))
    }

    async fn set_power_limit(&self, watts: f64) -> Result<(), HalError> {
        Err(HalError::Unsupported(format!(
            "power limit {watts} W: the BMP cannot limit a board's power"
        )))
    }

    async fn set_enabled(&self, enabled: bool) -> Result<(), HalError> {
        if enabled {
            self.power_on("enable").await
        } else {
            self.client.power_off(self.mask()).await
        }
    }

    fn fault_injector(&self) -> Option<Arc<dyn FaultInjector>> {
        self.faults.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adc(rails: [f64; 3]) -> AdcInfo {
        let mut a = AdcInfo {
            t_int: [AdcInfo::raw_for_celsius(50.0); 4],
            ..AdcInfo::default()
        };
        for (i, v) in rails.into_iter().enumerate() {
            a.adc[3 - i] = AdcInfo::raw_for_volts(3 - i, v);
        }
        a
    }

    #[test]
    fn powered_means_every_1v2_rail_is_up() {
        assert!(powered(&adc([1.2, 1.19, 1.21])));
        assert!(!powered(&adc([1.2, 0.0, 1.2])));
        assert!(!powered(&adc([0.01, 0.0, 0.02])));
        let mut unsampled = adc([1.2; 3]);
        unsampled.adc[1..4].fill(u16::MAX);
        assert!(!powered(&unsampled));
    }

    #[test]
    fn flag_words_become_conditions_with_the_word_in_the_message() {
        let t = SystemTime::now();
        let mut a = adc([1.2; 3]);
        assert!(flag_conditions("spin-0", &a, t).is_empty());
        a.warning = 0x0000_0100;
        let c = flag_conditions("spin-0", &a, t);
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].code, c[0].severity),
            (ConditionCode::ThermalWarning, Severity::Warning)
        );
        assert!(
            c[0].message.contains("0x00000100") && c[0].message.contains("board top"),
            "{}",
            c[0].message
        );
        a.warning = 0;
        a.shutdown = 0x0001_0208;
        let c = flag_conditions("spin-0", &a, t);
        let codes: Vec<_> = c.iter().map(|c| (c.code, c.severity)).collect();
        assert_eq!(
            codes,
            [
                (ConditionCode::ThermalCritical, Severity::Critical),
                (ConditionCode::DeviceError, Severity::Critical)
            ]
        );
        assert!(
            c[1].message.contains("0x00010208")
                && c[1].message.contains("1.2 V A rail")
                && c[1].message.contains("fan 0"),
            "{}",
            c[1].message
        );
        assert_eq!(describe_flags(0x8000_0000), "unknown bits 0x80000000");
    }

    #[test]
    fn identity_before_contact_and_config_errors() {
        let b = BmpBoard::new("spin-0", &BmpConfig::new("10.1.2.3", 4)).unwrap();
        let id = b.identity();
        assert_eq!(id.location, "10.1.2.3:17893 board 4");
        assert_eq!((id.vendor.as_str(), id.backend.as_str()), (VENDOR, "bmp"));
        assert_eq!(id.kind, DeviceKind::Spinnaker);
        assert!(!b.capabilities().contains(&Capability::FaultInjection));
        assert_eq!(b.mask(), 1 << 4);
        let e = BmpBoard::new("spin-0", &BmpConfig::new("10.1.2.3", 40))
            .err()
            .unwrap();
        assert!(
            matches!(&e, HalError::InvalidArgument(m) if m.starts_with("board:")),
            "{e}"
        );
    }
}
