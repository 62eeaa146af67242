//! Restarting a `[[service]]` rule's systemd unit: what on-call does with `systemctl restart
//! analog-pde-solver`, and the first rung of the solver's remediation ladder. Called only from
//! [`crate::action::Actions`], so it is checked, gated and recorded like every other action.
//!
//! The agent restarts only units it is configured to check, by rule name (a request cannot
//! name a unit), and only rules that have a unit. The unit is passed after `--`, and the
//! config refuses names starting with `-`. On the host, a polkit rule lets the agent's user
//! restart that one unit and nothing else (`systemd/polkit/50-health-agent-restart.rules`).
//! `systemctl` is the one on `PATH`, run under a deadline in its own process group.

use std::time::Duration;

use health_hal::plugin::{VendorCommand, Verdict};

use crate::action::ActionError;
use crate::config::ServiceRule;
use crate::host::services::ServiceWatch;
use crate::model::Outcome;

/// How long `systemctl restart` may take: it waits for the stop and the start jobs, which
/// systemd bounds by the unit's own TimeoutStopSec/TimeoutStartSec (90 s each by default).
pub const RESTART_DEADLINE: Duration = Duration::from_secs(200);
/// stderr kept for the outcome's message.
const STDERR_CAP: usize = 16 << 10;

/// The unit the named rule restarts, if the request may restart it.
pub fn verify(
    services: Option<&ServiceWatch>,
    service: &str,
    target: &str,
) -> Result<String, ActionError> {
    let watch = services.ok_or_else(|| {
        ActionError::NotPossible(
            "no [[service]] rules are configured: the agent restarts only services it checks"
                .to_string(),
        )
    })?;
    let rule: &ServiceRule = watch.rule(service).ok_or_else(|| {
        let known: Vec<&str> = watch.rules.iter().map(|r| r.name.as_str()).collect();
        ActionError::NotFound(format!(
            "service: no [[service]] rule named {service:?} (configured: {})",
            known.join(", ")
        ))
    })?;
    if target != rule.subject() {
        return Err(ActionError::InvalidArgument(format!(
            "target: expected {:?} for service {service:?}, found {target:?}",
            rule.subject()
        )));
    }
    rule.unit.clone().ok_or_else(|| {
        ActionError::InvalidArgument(format!(
            "service: rule {service:?} has no unit, so there is nothing to restart (it checks {})",
            [
                rule.health_url
                    .as_deref()
                    .map(|u| format!("health_url {u}")),
                rule.port.map(|p| format!("port {p}")),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" and ")
        ))
    })
}

/// `systemctl restart -- <unit>`; a non-zero exit is a failed outcome with systemctl's stderr.
pub async fn restart(unit: &str) -> (Outcome, String) {
    restart_with(unit, RESTART_DEADLINE).await
}

async fn restart_with(unit: &str, deadline: Duration) -> (Outcome, String) {
    let mut cmd = VendorCommand::new("systemctl", Vec::new(), deadline, STDERR_CAP);
    cmd.max_stdout_bytes = STDERR_CAP;
    let args = vec!["restart".to_string(), "--".to_string(), unit.to_string()];
    match cmd.run(&args, None).await {
        Ok(out) if out.verdict == Verdict::Ok => (
            Outcome::Succeeded,
            format!("systemctl restart {unit}: done"),
        ),
        Ok(out) => (
            Outcome::Failed,
            format!(
                "systemctl restart {unit} exited with status 1: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ),
        Err(e) => (Outcome::Failed, format!("systemctl restart {unit}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    fn rules() -> Vec<ServiceRule> {
        let cfg = crate::config::parse(
            "agent.toml",
            "[[service]]\nname = \"solver\"\nunit = \"analog-pde-solver.service\"\n\
             [[service]]\nname = \"web\"\nhealth_url = \"http://127.0.0.1:9/health\"\n",
        )
        .expect("parses");
        cfg.services
    }

    #[tokio::test]
    async fn only_a_configured_rule_with_a_unit_and_its_own_target_is_restarted() {
        let cancel = CancellationToken::new();
        let watch = crate::host::services::spawn(rules(), cancel.clone()).expect("rules");

        let e = verify(None, "solver", "service:solver").unwrap_err();
        assert!(matches!(e, ActionError::NotPossible(_)), "{e:?}");

        let e = verify(Some(&watch), "sshd", "service:sshd").unwrap_err();
        assert!(
            matches!(&e, ActionError::NotFound(m) if m.contains("\"sshd\"") && m.contains("solver, web")),
            "{e:?}"
        );

        // The request's target must be the rule's own subject: a gate or maintenance check
        // on another subject cannot be borrowed.
        let e = verify(Some(&watch), "solver", "service:web").unwrap_err();
        assert!(matches!(e, ActionError::InvalidArgument(_)), "{e:?}");

        let e = verify(Some(&watch), "web", "service:web").unwrap_err();
        assert!(
            matches!(&e, ActionError::InvalidArgument(m) if m.contains("has no unit") && m.contains("health_url")),
            "{e:?}"
        );

        assert_eq!(
            verify(Some(&watch), "solver", "service:solver").expect("allowed"),
            "analog-pde-solver.service"
        );
        cancel.cancel();
    }
}
