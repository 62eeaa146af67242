//! The photonic bench's power limit: what it is, and setting it through the TEC controller.
//!
//! What a power limit means here. Of the bench's three instruments only the TEC controller
//! bounds an electrical power: its current limit (`TEC:LIM:ITE`) caps the current it drives
//! through the TEC module, and the module's voltage never exceeds its rated V_max (R * I plus
//! the Seebeck voltage of the largest temperature difference it is rated for). So the TEC
//! draws at most
//!
//! ```text
//! P_limit = I_limit * V_max        (W = A * V)
//! ```
//!
//! and that is the limit the bench reports and sets: a limit in watts becomes
//! `TEC:LIM:ITE <watts / V_max>`. It is an upper bound, not the power drawn at the limit (the
//! Seebeck share of the voltage depends on the temperature difference of the moment), so the
//! TEC power reading (V * I) never exceeds it, and a fraction of the limit in force is the
//! same fraction of the current limit, which restores exactly. I_limit^2 * R, the Joule heat
//! alone, would be exceeded by the reading whenever the TEC runs at its limit.
//!
//! The laser's `SOUR0:POW` is not part of it: it is the light the measurement runs on (about a
//! milliwatt), an operating point rather than a limit, and turning it down relieves nothing
//! thermal.
//!
//! What lowering it does. A current limit only bites when holding the setpoint takes more
//! current than it allows: the chip then drifts off its setpoint (TEC_SETPOINT_DEVIATION). It
//! relieves the TEC and its heat sink, which take less heat; with a failed sink fan that is
//! what keeps the mount, and the chip on it, from overheating (see the simulator's model).
//!
//! Before setting, the controller is asked for the range it accepts (SCPI's
//! `TEC:LIM:ITE? MIN` / `MAX`), so a value outside it is refused naming the value and the range
//! in both units. A controller that cannot say is still set, and its own refusal is reported.
//! After setting, the limit is read back: a controller may accept a command and not act on it.

use super::client::ScpiClient;
use crate::device::HalError;

/// The SCPI errors that mean "that value is not accepted": data out of range, illegal value.
const VALUE_REFUSED: [i64; 2] = [-222, -224];

/// A controller rounds a setting to its resolution (10 mA on common ones); a read-back within
/// this of the value sent is the value sent.
fn read_back_tolerance_a(amps: f64) -> f64 {
    (0.01 * amps).max(0.01)
}

/// The current limits the controller accepts, or `None` when it does not say. An answer
/// that is no range (`MIN` ignored and the limit in force returned for both, say) is `None`.
pub async fn accepted_range(tec: &ScpiClient) -> Result<Option<(f64, f64)>, HalError> {
    let Some(lo) = range_end(tec, "MIN").await? else {
        return Ok(None);
    };
    let Some(hi) = range_end(tec, "MAX").await? else {
        return Ok(None);
    };
    Ok((lo.is_finite() && hi.is_finite() && lo >= 0.0 && lo < hi).then_some((lo, hi)))
}

async fn range_end(tec: &ScpiClient, which: &str) -> Result<Option<f64>, HalError> {
    match tec.query_number(&format!("TEC:LIM:ITE? {which}")).await {
        Ok(x) => Ok(Some(x)),
        // Gone is gone; anything else (an unknown parameter, no answer) is "cannot say".
        Err(e @ HalError::Vanished(_)) => Err(e),
        Err(_) => Ok(None),
    }
}

/// The current limit in force, A.
pub async fn current_limit(tec: &ScpiClient) -> Result<f64, HalError> {
    tec.query_number("TEC:LIM:ITE?").await
}

/// Sets the TEC current limit that makes a power limit of `watts` with a module rated for
/// `v_max` volts, within `range` when the controller told it, and reads it back.
pub async fn apply(
    tec: &ScpiClient,
    watts: f64,
    v_max: f64,
    range: Option<(f64, f64)>,
) -> Result<(), HalError> {
    if !(watts.is_finite() && watts > 0.0) {
        return Err(HalError::InvalidArgument(format!(
            "power limit: expected a positive number of watts, found {watts}"
        )));
    }
    let amps = watts / v_max;
    let what = || {
        format!(
            "power limit {watts} W is a TEC current limit of {amps:.4} A (at \
             tec_max_voltage_v = {v_max} V)"
        )
    };
    let in_watts = |(lo, hi): (f64, f64)| {
        format!(
            "{lo} to {hi} A, that is {:.3} to {:.3} W",
            lo * v_max,
            hi * v_max
        )
    };
    if let Some((lo, hi)) = range {
        if !(lo..=hi).contains(&amps) {
            return Err(HalError::InvalidArgument(format!(
                "{}, outside what the TEC controller at {} accepts: {}",
                what(),
                tec.address(),
                in_watts((lo, hi))
            )));
        }
    }
    let command = format!("TEC:LIM:ITE {amps:.4}");
    let ex = tec.exchange(&command).await?;
    if let Some(e) = ex.errors.iter().find(|e| VALUE_REFUSED.contains(&e.code)) {
        return Err(HalError::InvalidArgument(format!(
            "{}, refused by the TEC controller at {}: {e}{}",
            what(),
            tec.address(),
            range.map_or_else(String::new, |r| format!(" (it accepts {})", in_watts(r)))
        )));
    }
    if !ex.errors.is_empty() {
        let list: Vec<String> = ex.errors.iter().map(ToString::to_string).collect();
        return Err(HalError::Protocol(format!(
            "{}: {command} raised {}",
            tec.address(),
            list.join("; ")
        )));
    }
    let now = current_limit(tec).await?;
    if (now - amps).abs() > read_back_tolerance_a(amps) {
        return Err(HalError::Failed(format!(
            "{}: the TEC controller at {} reads back {now} A",
            what(),
            tec.address()
        )));
    }
    Ok(())
}
