//! `agent-ctl services` and `agent-ctl restart-service`: the agent's `[[service]]` rules as
//! last checked, one row each (the JSON is in [`crate::json`]), and the restart request. The
//! agent decides which unit a name restarts; the command line names only the rule.

use health_proto::v1 as pb;

use crate::render::table;

/// The conditions about one service: `service:<name>`.
fn codes(s: &pb::ServiceStatus, conditions: &[pb::Condition]) -> String {
    crate::render::codes_about(&format!("service:{}", s.name), conditions)
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

/// One row per rule, then each condition's message (what was seen) under the table.
pub fn services_table(h: &pb::HostHealth) -> String {
    let rows: Vec<Vec<String>> = h
        .services
        .iter()
        .map(|s| {
            let unit = if s.unit.is_empty() {
                "-".to_string()
            } else {
                format!("{} {}/{}", s.unit, s.active_state, s.sub_state)
            };
            let health = match (s.health_url.is_empty(), s.http_status) {
                (true, _) => "-".to_string(),
                (false, 0) => "no answer".to_string(),
                (false, code) => format!("{code} in {:.0} ms", s.health_latency_seconds * 1e3),
            };
            let port = match (s.port, s.listening) {
                (0, _) => "-".to_string(),
                (p, true) => format!("{p} listening"),
                (p, false) => format!("{p} closed"),
            };
            vec![
                s.name.clone(),
                unit,
                s.restarts.to_string(),
                health,
                port,
                codes(s, &h.conditions),
            ]
        })
        .collect();
    let mut out = table(
        &["NAME", "UNIT", "RESTARTS", "HEALTH", "PORT", "CONDITIONS"],
        &rows,
    );
    for c in h
        .conditions
        .iter()
        .filter(|c| c.subject.starts_with("service:"))
    {
        out.push_str(&format!(
            "{} {}: {}\n",
            c.subject,
            c.code().as_str_name(),
            or_dash(&c.message)
        ));
    }
    out
}

/// The request for `agent-ctl restart-service NAME`.
pub fn restart_request(name: &str) -> pb::RestartServiceRequest {
    pb::RestartServiceRequest {
        service: name.to_string(),
        ..Default::default()
    }
}
