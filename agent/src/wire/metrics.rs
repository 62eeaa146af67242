//! The agent's `/metrics`: its node (devices, readings, health, conditions, host), its own
//! delivery health (uplink, buffer, drops), actions by outcome, the remediation engine's steps
//! and ladders under way, and gRPC latencies, in the Prometheus text format.
//!
//! Rendered at scrape time from what the agent already keeps: the latest numbered snapshot on
//! the reporter's watch channel (the one the collector was sent), the action counters and the
//! gRPC layer's histograms. A scrape clones an `Arc` and copies a few counters under short
//! locks; it never calls a device or waits on the reporter. The node's series are rendered by
//! `health_metrics::node` from the converted snapshot, the same code the collector uses, so
//! the agent and the collector export the same families and labels.

use std::sync::Arc;

use health_metrics::rpc::RpcStats;
use health_metrics::Exposition;
use tokio::sync::watch;

use crate::model::NodeSnapshot;
use crate::wire::convert;

/// Everything a scrape reads.
pub struct AgentMetrics {
    pub reports: watch::Receiver<Arc<NodeSnapshot>>,
    pub actions: Arc<crate::action::Actions>,
    pub rpc: Arc<RpcStats>,
    /// The remediation engine: its step counters and which ladders are under way.
    pub remediation: Arc<crate::remediation::Remediation>,
}

/// The `[[service]]` checks: up, the health URL's status and latency, systemd's restart
/// count, and the service's own request counter by class (for HighErrorRate). A service not
/// checked yet has no series.
fn render_services(
    out: &mut Exposition,
    node: &str,
    services: &[crate::host::services::ServiceStatus],
) {
    let checked: Vec<_> = services.iter().filter(|s| s.checked_at.is_some()).collect();
    let mut up = out.gauge(
        "health_service_up",
        "1 if the service's last check passed: unit active, health URL 2xx, port listening (each if configured).",
    );
    for s in &checked {
        let unit_ok = s.unit.is_none()
            || s.unit_state
                .as_ref()
                .is_some_and(|u| matches!(u.active_state.as_str(), "active" | "reloading"));
        let health_ok = s.health.as_ref().is_none_or(|h| h.error.is_empty());
        let port_ok = s.port.is_none() || s.listening == Some(true);
        let v = if unit_ok && health_ok && port_ok {
            1.0
        } else {
            0.0
        };
        up.sample(&[("node", node), ("service", &s.name)], v);
    }
    let mut status = out.gauge(
        "health_service_http_status",
        "Status of the service's health URL at the last check (0: no answer).",
    );
    for s in &checked {
        if let Some(h) = &s.health {
            status.sample(&[("node", node), ("service", &s.name)], f64::from(h.status));
        }
    }
    let mut latency = out.gauge(
        "health_service_health_latency_seconds",
        "How long the service's health URL took to answer at the last check.",
    );
    for s in &checked {
        if let Some(h) = &s.health {
            latency.sample(
                &[("node", node), ("service", &s.name)],
                h.latency.as_secs_f64(),
            );
        }
    }
    let mut restarts = out.counter(
        "health_service_restarts_total",
        "Restarts systemd has made of the service's unit (NRestarts; resets when the unit is restarted by hand).",
    );
    for s in &checked {
        if let Some(u) = &s.unit_state {
            restarts.sample(
                &[("node", node), ("service", &s.name)],
                f64::from(u.restarts),
            );
        }
    }
    let mut requests = out.counter(
        "health_service_http_requests_total",
        "HTTP requests the service itself counted (its error_counter), by class: 5xx or other.",
    );
    for s in &checked {
        if let Some(r) = &s.requests {
            let labels = |class| {
                [
                    ("node", node),
                    ("service", s.name.as_str()),
                    ("class", class),
                ]
            };
            requests.sample(&labels("5xx"), r.server_errors);
            requests.sample(&labels("other"), r.other);
        }
    }
}

impl AgentMetrics {
    pub fn render(&self) -> String {
        let snapshot = self.reports.borrow().clone();
        let pb = convert::snapshot(&snapshot);
        let node = snapshot.node.as_str();
        let n = [("node", node)];
        let mut out = Exposition::new();
        health_metrics::node::declare(&mut out);
        health_metrics::node::render(&mut out, &pb, pb.state, true);

        out.gauge(
            "health_agent_info",
            "The agent (always 1): version and boot id (changes on every start).",
        )
        .sample(
            &[
                ("node", node),
                ("version", env!("CARGO_PKG_VERSION")),
                ("boot_id", snapshot.boot_id.as_str()),
            ],
            1.0,
        );
        out.gauge(
            "health_agent_report_seq",
            "Sequence number of the latest report (per boot id).",
        )
        .sample(&n, snapshot.seq as f64);
        let a = &snapshot.agent;
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        out.gauge(
            "health_agent_uplink_configured",
            "1 if the agent streams to a collector.",
        )
        .sample(&n, flag(a.uplink_configured));
        out.gauge(
            "health_agent_uplink_connected",
            "1 while the report stream to the collector is open.",
        )
        .sample(&n, flag(a.uplink_connected));
        out.counter(
            "health_agent_reports_sent_total",
            "Reports sent to the collector, resends after a reconnect included.",
        )
        .sample(&n, a.reports_sent_total as f64);
        out.gauge(
            "health_agent_reports_acked_seq",
            "Highest report seq the collector has acknowledged.",
        )
        .sample(&n, a.last_acked_seq as f64);
        out.gauge(
            "health_agent_reports_buffered",
            "Reports waiting for the collector's acknowledgement (the uplink queue depth).",
        )
        .sample(&n, a.reports_buffered as f64);
        out.counter(
            "health_agent_reports_dropped_total",
            "Reports lost before delivery: uplink buffer or hand-off queue full.",
        )
        .sample(&n, a.reports_dropped_total as f64);
        out.counter(
            "health_agent_uplink_reconnects_total",
            "Times the uplink reopened its stream to the collector.",
        )
        .sample(&n, a.reconnects_total as f64);

        let mut actions = out.counter(
            "health_agent_actions_total",
            "Actions requested of the agent, by device, action and outcome (SUCCEEDED, FAILED, TIMED_OUT, REFUSED).",
        );
        for ((device, action, outcome), count) in self.actions.counts.copy() {
            actions.sample(
                &[
                    ("node", node),
                    ("device", &device),
                    ("action", &action),
                    ("outcome", outcome),
                ],
                count as f64,
            );
        }
        render_services(&mut out, node, &snapshot.host.services);
        self.render_remediation(&mut out, node);
        self.rpc.render(&mut out, &n);
        out.render()
    }

    /// The engine's steps by policy, action and outcome, and one series per ladder under way
    /// (absent, not 0, for a device with none: `count(health_remediation_active)` is the
    /// number of ladders running on the node).
    fn render_remediation(&self, out: &mut Exposition, node: &str) {
        let mut steps = out.counter(
            "health_remediation_steps_total",
            "Remediation ladder steps, by policy, action and outcome (SUCCEEDED, FAILED, TIMED_OUT, REFUSED, SKIPPED, SHADOW, INTERRUPTED).",
        );
        for ((policy, action, outcome), count) in self.remediation.steps.snapshot() {
            steps.sample(
                &[
                    ("node", node),
                    ("policy", &policy),
                    ("action", &action),
                    ("outcome", outcome),
                ],
                count as f64,
            );
        }
        let mut active = out.gauge(
            "health_remediation_active",
            "1 for each device (or watched process) whose remediation ladder is under way, with its policy.",
        );
        // The whole node's report cannot be refused (no target to look up); an error here
        // would only mean no series.
        if let Ok(report) = self.remediation.report(None) {
            for d in report.devices.iter().filter(|d| d.active) {
                active.sample(
                    &[
                        ("node", node),
                        ("device", &d.device_id),
                        ("policy", &d.policy),
                    ],
                    1.0,
                );
            }
        }
    }
}
