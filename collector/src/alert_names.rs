//! The on-call alert name of each condition code: the names the runbooks and the pager use
//! (`DeviceOverheating`, `HighMemoryUsage`, ...), pushed to Alertmanager as `alertname` and
//! carried on every `Alert` as `alertname`. The Prometheus rules file uses the same names, so
//! an alert reads the same whether the collector or Prometheus raised it.
//!
//! Several codes share a name where the runbook has one procedure for them (both thermal
//! levels are `DeviceOverheating`, told apart by `severity`); codes no runbook names get the
//! code in CamelCase, so every alert still has a stable name.

use health_proto::v1::ConditionCode;

/// The alert name for a condition code (the proto enum value, possibly newer than this build).
pub fn alertname(code: i32) -> String {
    let Ok(known) = ConditionCode::try_from(code) else {
        return format!("ConditionCode{code}");
    };
    let name = match known {
        ConditionCode::ThermalWarning | ConditionCode::ThermalCritical => "DeviceOverheating",
        ConditionCode::DeviceUnresponsive => "DeviceUnresponsive",
        ConditionCode::DeviceMissing => "DeviceMissing",
        ConditionCode::CalibrationDrift | ConditionCode::CalibrationStale => "CalibrationDrift",
        ConditionCode::ResetFailed => "ResetFailed",
        ConditionCode::NodeStale => "NodeStale",
        ConditionCode::HostMemoryHigh => "HighMemoryUsage",
        // The solver runbook's convergence procedure starts from the problem's conditioning.
        ConditionCode::NotConverging
        | ConditionCode::IllConditioned
        | ConditionCode::PrecisionInsufficient => "ConvergenceFailure",
        // A simulation (ngspice) stuck past its budget is the runbook's SPICE timeout.
        // Zombies are part of the same runbook procedure.
        ConditionCode::ProcessStuck | ConditionCode::ProcessZombie => "SPICESimulationTimeout",
        // The solver not serving: its unit down, its health URL failing, nothing on its port
        // (the runbook's Application Down checks all three), or an expected process absent.
        ConditionCode::ProcessMissing
        | ConditionCode::ServiceDown
        | ConditionCode::ServiceUnhealthy
        | ConditionCode::PortNotListening => "AnalogPDESolverDown",
        // Device faults with their own names: HighErrorRate is the solver's HTTP 5xx share
        // (a Prometheus rule over the agent's health_service_http_requests_total), and a
        // crossbar's read errors are not that.
        ConditionCode::DeviceError => "DeviceErrors",
        ConditionCode::LinkDegraded => "LinkDegraded",
        // The rules file's name for repeated PERMISSION_DENIED on an agent.
        ConditionCode::AccessDenied => "AccessDenied",
        // Shown, never paged (INFO); named for the silences and history that cite it.
        ConditionCode::Maintenance => "InMaintenance",
        other => return camel_case(other.as_str_name()),
    };
    name.to_string()
}

/// `TEC_SETPOINT_DEVIATION` -> `TecSetpointDeviation`.
fn camel_case(code: &str) -> String {
    code.split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runbook_names_for_the_codes_on_call_pages_on() {
        let name = |code: ConditionCode| alertname(code as i32);
        assert_eq!(name(ConditionCode::ThermalCritical), "DeviceOverheating");
        assert_eq!(name(ConditionCode::ThermalWarning), "DeviceOverheating");
        assert_eq!(name(ConditionCode::ProcessMissing), "AnalogPDESolverDown");
        assert_eq!(name(ConditionCode::ProcessZombie), "SPICESimulationTimeout");
        assert_eq!(
            name(ConditionCode::DeviceUnresponsive),
            "DeviceUnresponsive"
        );
        assert_eq!(name(ConditionCode::DeviceMissing), "DeviceMissing");
        assert_eq!(name(ConditionCode::CalibrationDrift), "CalibrationDrift");
        assert_eq!(name(ConditionCode::ResetFailed), "ResetFailed");
        assert_eq!(name(ConditionCode::NodeStale), "NodeStale");
        assert_eq!(name(ConditionCode::HostMemoryHigh), "HighMemoryUsage");
        assert_eq!(name(ConditionCode::NotConverging), "ConvergenceFailure");
        assert_eq!(name(ConditionCode::ProcessStuck), "SPICESimulationTimeout");
        assert_eq!(name(ConditionCode::DeviceError), "DeviceErrors");
        assert_eq!(name(ConditionCode::LinkDegraded), "LinkDegraded");
        assert_eq!(name(ConditionCode::ServiceDown), "AnalogPDESolverDown");
        assert_eq!(name(ConditionCode::ServiceUnhealthy), "AnalogPDESolverDown");
        assert_eq!(name(ConditionCode::PortNotListening), "AnalogPDESolverDown");
        assert_eq!(name(ConditionCode::AccessDenied), "AccessDenied");
        assert_eq!(name(ConditionCode::Maintenance), "InMaintenance");
    }

    #[test]
    fn other_codes_get_their_code_in_camel_case() {
        assert_eq!(
            alertname(ConditionCode::TecSetpointDeviation as i32),
            "TecSetpointDeviation"
        );
        assert_eq!(alertname(ConditionCode::DiskFull as i32), "DiskFull");
        assert_eq!(alertname(999), "ConditionCode999");
    }
}
