//! Mutual TLS end to end, with the real binaries and a throwaway CA made by
//! `tests/tls/make-certs.sh` (openssl) in each test's own directory:
//! - the agent's `tcp_listen` refuses clients without a certificate from `client_ca` in the
//!   handshake, lets a reader read, refuses a reader's mutating calls with PERMISSION_DENIED
//!   and an audit entry, and lets an operator (by certificate subject) act, audited;
//! - the agent's uplink to an `https://` collector delivers reports with the agent's
//!   certificate, while agents with no certificate, a rogue CA's, or one not in
//!   `agent_subjects` are refused, keep running, and never appear in the fleet.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use health_e2e::{ctl, free_port, make_certs, pem, sim_config, wait_until, Agent, Collector};
use health_proto::v1::GetNodeRequest;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// agent-ctl over TLS to `endpoint` (`--endpoint` or `--collector`), trusting `ca`, presenting
/// the client certificate `who` (`who.pem`/`who.key`) if given.
fn ctl_tls(
    flag: &str,
    url: &str,
    ca: &str,
    who: Option<&str>,
    pki: &Path,
    args: &[&str],
) -> Output {
    let (cert, key) = who.map_or((None, None), |w| {
        (
            Some(pem(pki, &format!("{w}.pem"))),
            Some(pem(pki, &format!("{w}.key"))),
        )
    });
    let mut all: Vec<&str> = vec![flag, url, "--ca-cert", ca];
    if let (Some(c), Some(k)) = (&cert, &key) {
        all.extend(["--client-cert", c, "--client-key", k]);
    }
    all.extend(args);
    ctl(&all)
}

fn has_entry(entries: &[serde_json::Value], phase: &str, caller: &str, action: &str) -> bool {
    entries.iter().any(|e| {
        e["phase"] == phase
            && e["caller"].as_str().is_some_and(|c| c.contains(caller))
            && e["action"].as_str().is_some_and(|a| a.contains(action))
    })
}

/// A reply the agent served carries a gRPC status; a refused handshake has none, and
/// agent-ctl says which side refused (`expect`).
fn assert_refused_in_handshake(out: &Output, who: &str, expect: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{who}: {err}");
    assert!(err.contains(expect), "{who}: {err}");
    assert!(
        !text(&out.stdout).contains("photonic-0"),
        "{who} was served"
    );
    for served in ["PermissionDenied", "permission denied", "role"] {
        assert!(
            !err.contains(served),
            "{who}: a served reply, not a handshake failure: {err}"
        );
    }
}

#[test]
fn agent_tcp_listener_requires_client_certificates_and_maps_subjects_to_roles() {
    let pki = make_certs();
    let d = pki.path();
    let port = free_port();
    let config = format!(
        "node = \"tls-agent\"\ntcp_listen = \"127.0.0.1:{port}\"\n{}\n\
         [tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n\
         [auth]\noperator_subjects = [\"alice-operator\"]\n",
        sim_config("100ms", "1s", "1s"),
        pem(d, "agent.pem"),
        pem(d, "agent.key"),
        pem(d, "ca.pem"),
    );
    let agent = Agent::with_config(&config, &[]);
    let url = format!("https://127.0.0.1:{port}");
    let ca = pem(d, "ca.pem");

    // No client certificate, or one from another CA (with an operator's name): the handshake
    // fails, nothing is served and nothing reaches the audit log.
    let out = ctl_tls("--endpoint", &url, &ca, None, d, &["devices"]);
    assert_refused_in_handshake(&out, "no client certificate", "--client-cert");
    let out = ctl_tls(
        "--endpoint",
        &url,
        &ca,
        Some("rogue"),
        d,
        &["calibrate", "photonic-0"],
    );
    assert_refused_in_handshake(&out, "rogue CA", "signed by the server's client_ca");
    // The client checks the agent too: trusting only the rogue CA, the agent's cert fails.
    let rogue_ca = pem(d, "rogue-ca.pem");
    let out = ctl_tls(
        "--endpoint",
        &url,
        &rogue_ca,
        Some("alice-operator"),
        d,
        &["devices"],
    );
    assert_refused_in_handshake(
        &out,
        "agent's certificate against the wrong CA",
        "does not verify against --ca-cert",
    );
    // Plain HTTP/2 to the TLS port is not served either.
    let out = ctl(&["--endpoint", &format!("http://127.0.0.1:{port}"), "devices"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("photonic-0"));
    assert!(
        !has_entry(&agent.audit_entries(), "denied", "", ""),
        "a refused handshake is not a call: {:?}",
        agent.audit_entries()
    );

    // bob-reader (signed by the CA, not an operator) reads...
    let out = ctl_tls("--endpoint", &url, &ca, Some("bob-reader"), d, &["devices"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("photonic-0"),
        "{}",
        text(&out.stdout)
    );
    // ...and is refused every mutating call, each one audited as denied.
    for args in [
        vec!["calibrate", "photonic-0"],
        vec!["reset-device", "loihi-0", "--soft"],
    ] {
        let out = ctl_tls("--endpoint", &url, &ca, Some("bob-reader"), d, &args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("operator role"), "{args:?}: {err}");
        assert!(err.contains("bob-reader"), "{args:?}: {err}");
    }
    let entries = agent.audit_entries();
    assert!(
        has_entry(&entries, "denied", "bob-reader", "calibrate"),
        "{entries:?}"
    );
    assert!(
        has_entry(&entries, "denied", "bob-reader", "reset"),
        "{entries:?}"
    );
    assert!(
        !entries.iter().any(|e| e["phase"] == "begin"),
        "a denied call must not start an action: {entries:?}"
    );

    // alice-operator (in operator_subjects) acts; the action is recorded from begin to end.
    let out = ctl_tls(
        "--endpoint",
        &url,
        &ca,
        Some("alice-operator"),
        d,
        &["calibrate", "photonic-0"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let entries = agent.audit_entries();
    assert!(
        has_entry(&entries, "begin", "alice-operator", "calibrate"),
        "{entries:?}"
    );
    assert!(
        has_entry(&entries, "end", "alice-operator", "calibrate"),
        "{entries:?}"
    );

    let audit = agent.dir.path().join("audit.jsonl");
    let log = audit.to_str().expect("utf-8 path");
    let out = ctl(&["audit", "--verify", "--file", log]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// An agent streaming to `collector` with the given `[tls]` lines, its log kept in `log`.
fn uplink_agent(node: &str, collector: &str, tls: &str, log: &Path) -> Agent {
    let config = format!(
        "node = \"{node}\"\ncollectors = [\"{collector}\"]\n{}\n\
         [uplink]\nbackoff_initial = \"100ms\"\nbackoff_max = \"1s\"\n[tls]\n{tls}",
        sim_config("200ms", "1s", "200ms"),
    );
    Agent::with_config_logged(&config, &[], log)
}

fn collector_nodes(url: &str, ca: &str, pki: &Path) -> String {
    let out = ctl_tls(
        "--collector",
        url,
        ca,
        Some("bob-reader"),
        pki,
        &["--json", "nodes"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn uplink_reports_over_mutual_tls_and_the_collector_refuses_other_agents() {
    let pki = make_certs();
    let d = pki.path();
    let ca = pem(d, "ca.pem");
    let collector = Collector::start(&format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n[auth]\nagent_subjects = [\"node-1\"]\n",
        pem(d, "collector.pem"),
        pem(d, "collector.key"),
        ca,
    ));
    let url = format!("https://{}", collector.addr);
    let logs = tempfile::tempdir().expect("tempdir");
    let collector_ca = format!("collector_ca = \"{ca}\"\n");

    // Refused agents first: none of them may ever show up in the fleet.
    let identity = |who: &str| {
        format!(
            "{collector_ca}cert = \"{}\"\nkey = \"{}\"\n",
            pem(d, &format!("{who}.pem")),
            pem(d, &format!("{who}.key"))
        )
    };
    let refused = [
        ("tls-nocert", collector_ca.clone(), None),
        ("tls-rogue", identity("rogue"), None),
        // Signed by the right CA, but not in agent_subjects: refused by the Report gate.
        (
            "tls-reader",
            identity("bob-reader"),
            Some("auth.agent_subjects"),
        ),
    ];
    let mut agents = Vec::new();
    for (node, tls, reason) in &refused {
        let log = logs.path().join(format!("{node}.log"));
        agents.push((*node, uplink_agent(node, &url, tls, &log), log, *reason));
    }
    let good_log = logs.path().join("tls-good.log");
    let good = uplink_agent("tls-good", &url, &identity("node-1"), &good_log);

    wait_until(
        "the node-1 agent in the fleet",
        Duration::from_secs(20),
        || collector_nodes(&url, &ca, d).contains("\"tls-good\""),
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for (node, agent, log, reason) in &mut agents {
        // Each has tried and been refused at least twice (its log says why)...
        wait_until(
            &format!("{node} to be refused twice"),
            Duration::from_secs(20),
            || {
                std::fs::read_to_string(&*log)
                    .unwrap_or_default()
                    .matches("collector stream lost")
                    .count()
                    >= 2
            },
        );
        let logged = std::fs::read_to_string(&*log).unwrap_or_default();
        if let Some(reason) = reason {
            assert!(logged.contains(*reason), "{node}: {logged}");
        }
        // ...is still running and serving, with nothing acknowledged...
        assert!(
            agent.proc.child.try_wait().expect("try_wait").is_none(),
            "{node} exited"
        );
        let snapshot = rt.block_on(async {
            agent
                .client()
                .await
                .get_node(GetNodeRequest {})
                .await
                .expect("GetNode")
                .into_inner()
        });
        let status = snapshot.agent.expect("agent status");
        assert!(
            status.uplink_configured && !status.uplink_connected,
            "{node}: {status:?}"
        );
        assert_eq!(status.last_acked_seq, 0, "{node}: {status:?}");
        assert!(status.reconnects_total >= 2, "{node}: {status:?}");
    }
    // ...and the collector, which has meanwhile taken the good agent's reports, never saw them.
    let nodes = collector_nodes(&url, &ca, d);
    assert!(nodes.contains("\"tls-good\""), "{nodes}");
    for (node, ..) in &agents {
        assert!(
            !nodes.contains(&format!("\"{node}\"")),
            "{node} got in: {nodes}"
        );
    }
    let good_log = std::fs::read_to_string(&good_log).unwrap_or_default();
    assert!(!good_log.contains("collector stream lost"), "{good_log}");

    // Queries need a certificate from the CA too.
    let out = ctl_tls("--collector", &url, &ca, None, d, &["nodes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("--client-cert"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains("tls-good"));
    drop(good);
}
