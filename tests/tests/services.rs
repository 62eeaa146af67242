//! `[[service]]` checks and `restart-service` on the real agent binary: a real HTTP server
//! this test runs (200, then 500 while a marker file exists), a real listening socket the test
//! closes, and, since systemd is not PID 1 here, a stand-in `systemctl` first on the agent's
//! PATH that records its arguments and answers `show` from a state file the test writes. A
//! stand-in `restart` removes the marker, as a real restart of a broken solver would fix it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use health_e2e::{
    free_port, output_text, promtool_check_metrics, scrape_metrics, wait_for, wait_until, Agent,
};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(20);
const UNIT: &str = "analog-pde-solver.service";

/// The stand-in's directory: `bin/systemctl`, its `argv` record, the `state` it shows and the
/// `broken` marker the HTTP server and `restart` share.
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        let d = dir.path().display();
        // The agent runs systemctl with a cleared environment, so the paths are written in.
        let script = format!(
            "#!/bin/sh\n\
             printf '%s|' \"$@\" >> '{d}/argv'\n\
             printf '\\n' >> '{d}/argv'\n\
             case \"$1\" in\n\
               show) cat '{d}/state' ;;\n\
               restart) rm -f '{d}/broken' ;;\n\
               *) echo \"stand-in systemctl: unexpected $1\" >&2; exit 3 ;;\n\
             esac\n"
        );
        let path = dir.path().join("bin/systemctl");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let host = Host { dir };
        host.unit("active", "running", 0);
        host
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// What `systemctl show` prints next.
    fn unit(&self, active: &str, sub: &str, restarts: u32) {
        let text = format!(
            "LoadState=loaded\nActiveState={active}\nSubState={sub}\nNRestarts={restarts}\n"
        );
        // Written whole then renamed, so the stand-in never reads half a file.
        std::fs::write(self.path("state.new"), text).unwrap();
        std::fs::rename(self.path("state.new"), self.path("state")).unwrap();
    }

    /// Every systemctl call the agent made, one `arg|arg|...|` line each.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("argv"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn restarts(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.starts_with("restart|"))
            .collect()
    }

    fn break_solver(&self) {
        std::fs::write(self.path("broken"), "").unwrap();
    }

    fn env(&self) -> Vec<(String, String)> {
        let path = format!(
            "{}:{}",
            self.path("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        vec![("PATH".to_string(), path)]
    }
}

/// A health endpoint on loopback: 200 "ok", or 500 "db down" while `broken` exists; and
/// `/metrics` with the solver's own request counter (90 answered 200, 10 answered 500). Runs
/// for the rest of the test process; it only ever answers.
fn health_server(broken: PathBuf) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 << 10 {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let metrics = request.starts_with(b"GET /metrics ");
            let (status, body) = if metrics {
                (
                    "200 OK",
                    "# TYPE http_requests_total counter\n\
                     http_requests_total{code=\"200\"} 90\n\
                     http_requests_total{code=\"500\"} 10\n",
                )
            } else if broken.exists() {
                ("500 Internal Server Error", "db down\n")
            } else {
                ("200 OK", "ok\n")
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

fn json(agent: &Agent, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend(args);
    let out = agent.ctl(&all);
    assert!(out.status.success(), "{args:?}: {}", output_text(&out));
    serde_json::from_slice(&out.stdout).expect("agent-ctl --json prints JSON")
}

/// The host condition `code` about `service:solver`, if present: its message.
fn condition(agent: &Agent, code: &str) -> Option<String> {
    json(agent, &["status"])["host"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["code"] == code && c["subject"] == "service:solver")
        .map(|c| c["message"].as_str().unwrap_or_default().to_string())
}

fn service_row(agent: &Agent) -> Value {
    json(agent, &["services"])
        .as_array()
        .expect("array")
        .iter()
        .find(|s| s["name"] == "solver")
        .cloned()
        .expect("the solver row")
}

/// An agent with the `solver` rule: `top` goes before it (top-level keys), `extra` after.
fn start(host: &Host, top: &str, service: &str, extra: &str) -> Agent {
    let toml = format!(
        "report_interval = \"200ms\"\n{top}\n[[service]]\nname = \"solver\"\nunit = \"{UNIT}\"\n\
         interval = \"1s\"\ntimeout = \"1s\"\n{service}\n{extra}"
    );
    Agent::with_config_env(&toml, &[], &host.env())
}

#[test]
fn a_failing_health_url_a_closed_port_and_a_failed_unit_each_raise_their_condition() {
    let host = Host::new();
    let http = health_server(host.path("broken"));
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{http}/health");
    let metrics = format!("127.0.0.1:{}", free_port());
    let agent = start(
        &host,
        &format!("metrics_listen = \"{metrics}\"\n"),
        &format!(
            "health_url = \"{url}\"\nport = {port}\n\
             metrics_url = \"http://127.0.0.1:{http}/metrics\"\n\
             error_counter = \"http_requests_total\"\n"
        ),
        "",
    );

    let row = wait_for("the first check", LIMIT, || {
        let row = service_row(&agent);
        (row["http_status"] == 200 && row["active_state"] == "active").then_some(row)
    });
    assert_eq!(row["unit"], UNIT);
    assert_eq!(row["listening"], true, "{row}");
    assert_eq!(row["port"], port, "{row}");
    for code in ["SERVICE_DOWN", "SERVICE_UNHEALTHY", "PORT_NOT_LISTENING"] {
        assert_eq!(condition(&agent, code), None, "{code} on a healthy service");
    }
    // The agent's /metrics carries the check and the solver's own counter, for HighErrorRate.
    let scraped = wait_for("the service series", LIMIT, || {
        let text = scrape_metrics(&metrics);
        text.contains("class=\"5xx\"} 10").then_some(text)
    });
    promtool_check_metrics("the agent's /metrics with a [[service]]", &scraped);
    for series in [
        "service=\"solver\"} 1",
        "service=\"solver\",class=\"other\"} 90",
    ] {
        assert!(scraped.contains(series), "{series} in:\n{scraped}");
    }
    assert!(scraped.contains("health_service_http_status{"), "{scraped}");
    assert!(
        host.calls().iter().any(|c| c
            == &format!("show|--property=LoadState,ActiveState,SubState,NRestarts|--|{UNIT}|")),
        "{:?}",
        host.calls()
    );

    host.break_solver();
    let message = wait_for("SERVICE_UNHEALTHY", LIMIT, || {
        condition(&agent, "SERVICE_UNHEALTHY")
    });
    assert!(
        message.contains(&format!("GET {url}: status 500: db down")),
        "{message}"
    );
    let table = agent.ctl_ok(&["services"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("SERVICE_UNHEALTHY") && table.contains("500"),
        "{table}"
    );

    // A dry run checks everything and restarts nothing; an unknown name is refused by name.
    let dry = agent.ctl_ok(&["restart-service", "solver", "--dry-run"]);
    assert!(dry.contains("restart-service"), "{dry}");
    assert!(host.restarts().is_empty(), "{:?}", host.restarts());
    assert!(host.path("broken").exists(), "the dry run fixed nothing");
    let unknown = agent.ctl(&["restart-service", "nosuch"]);
    assert!(!unknown.status.success());
    assert!(
        output_text(&unknown).contains("no [[service]] rule named \"nosuch\""),
        "{}",
        output_text(&unknown)
    );
    let entries = agent.audit_entries();
    assert!(
        entries.iter().any(|e| e["phase"] == "dry-run"
            && e["action"] == "restart-service"
            && e["target"] == "service:solver"),
        "{entries:?}"
    );

    // The operator's restart runs exactly `systemctl restart -- <unit>`, and the URL answers.
    let done = agent.ctl_ok(&["restart-service", "solver"]);
    assert!(
        done.contains("SUCCEEDED") || done.contains("succeeded"),
        "{done}"
    );
    assert_eq!(host.restarts(), vec![format!("restart|--|{UNIT}|")]);
    wait_until("SERVICE_UNHEALTHY to clear", LIMIT, || {
        condition(&agent, "SERVICE_UNHEALTHY").is_none()
    });

    drop(socket);
    let message = wait_for("PORT_NOT_LISTENING", LIMIT, || {
        condition(&agent, "PORT_NOT_LISTENING")
    });
    assert!(message.contains(&format!("TCP port {port}")), "{message}");

    host.unit("failed", "failed", 3);
    let message = wait_for("SERVICE_DOWN", LIMIT, || condition(&agent, "SERVICE_DOWN"));
    assert!(
        message.contains(&format!(
            "unit {UNIT} is failed (SubState=failed, NRestarts=3)"
        )),
        "{message}"
    );
    assert!(message.contains("restarted it 3 time(s)"), "{message}");
    let status = json(&agent, &["status"]);
    assert_eq!(status["host"]["state"], "CRITICAL", "{}", status["host"]);
}

#[test]
fn a_policy_restarts_the_unit_and_verifies_the_health_url() {
    let host = Host::new();
    let http = health_server(host.path("broken"));
    let agent = start(
        &host,
        "",
        &format!("health_url = \"http://127.0.0.1:{http}/health\"\n"),
        r#"
[[policy]]
name = "solver-down"
match = { codes = ["SERVICE_DOWN", "SERVICE_UNHEALTHY"], severity = "critical" }
without_collector = "all"
steps = [
  { action = "restart-service", hold = "1s", timeout = "10s" },
]
"#,
    );
    wait_for("the first check", LIMIT, || {
        (service_row(&agent)["http_status"] == 200).then_some(())
    });
    host.break_solver();
    let ended = |agent: &Agent| -> Vec<String> {
        agent
            .audit_entries()
            .iter()
            .filter(|e| e["action"] == "ladder-end" && e["target"] == "service:solver")
            .map(|e| e["args"]["result"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let results = wait_for("the ladder to end", LIMIT, || {
        let r = ended(&agent);
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(results, vec!["recovered"], "{:?}", agent.audit_entries());
    assert_eq!(host.restarts(), vec![format!("restart|--|{UNIT}|")]);
    let steps: Vec<(String, String)> = agent
        .audit_entries()
        .iter()
        .filter(|e| e["caller"] == "policy:solver-down" && e["target"] == "service:solver")
        .filter(|e| e["phase"] == "begin" || e["phase"] == "end")
        .map(|e| {
            (
                e["phase"].as_str().unwrap_or_default().to_string(),
                e["action"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        vec![
            ("begin".to_string(), "restart-service".to_string()),
            ("end".to_string(), "restart-service".to_string()),
        ]
    );
    assert_eq!(condition(&agent, "SERVICE_UNHEALTHY"), None);
}
