//! The agent's lease broker (`health_agent::wire::lease`, what the remediation engine asks
//! before a destructive step) against the real collector binary on loopback: granted,
//! refused with the collector's reason, released; Unreachable when nothing listens, and
//! failover to the next collector; over mutual TLS, leases for the agent's certificate and
//! none for a reader's.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::sync::Arc;

use health_agent::remediation::{LeaseAnswer, LeaseBroker, LeaseRequest};
use health_e2e::{free_port, make_certs, pem, Collector};

/// The broker an agent with this config would use (the uplink's TLS included).
fn broker_for(toml: &str) -> Arc<dyn LeaseBroker> {
    let cfg = health_agent::config::parse("agent.toml", toml).expect("a valid agent config");
    let tls = health_agent::wire::tls::uplink(&cfg.tls, &cfg.collectors).expect("usable TLS");
    health_agent::wire::lease::broker(&cfg, tls).expect("a broker: collectors are configured")
}

fn request(device: &str, request_id: &str) -> LeaseRequest {
    LeaseRequest {
        node: "n1".to_string(),
        device: device.to_string(),
        policy: "thermal".to_string(),
        action: "power-cycle".to_string(),
        request_id: request_id.to_string(),
    }
}

fn lease_id(answer: &LeaseAnswer) -> String {
    match answer {
        LeaseAnswer::Granted { lease_id, .. } => lease_id.clone(),
        other => panic!("expected a lease, got {other:?}"),
    }
}

/// A loopback address that was bound a moment ago and is closed now: nothing listens there.
fn closed_address() -> String {
    format!("127.0.0.1:{}", free_port())
}

#[tokio::test]
async fn the_broker_gets_refuses_and_releases_leases_of_a_real_collector() {
    // No device held (no agent reports here): the window budget is one grant, and a second
    // device asking would open the breaker, so this asks for one device's rungs only.
    let collector = Collector::start("[leases]\nmax_concurrent = 1\nttl = \"1m\"\n");
    let broker = broker_for(&format!("collectors = [\"{}\"]\n", collector.url()));

    let first = broker.acquire(request("loihi-0", "ladder-1/0")).await;
    let LeaseAnswer::Granted { ttl, .. } = &first else {
        panic!("expected a lease, got {first:?}");
    };
    assert_eq!(ttl.as_secs(), 60, "the collector's ttl");
    // The same request again (a retry) is the same lease.
    let again = broker.acquire(request("loihi-0", "ladder-1/0")).await;
    assert_eq!(lease_id(&again), lease_id(&first));

    // The next rung of the same device, before the first is released: the collector's reason.
    let busy = broker.acquire(request("loihi-0", "ladder-1/1")).await;
    let LeaseAnswer::Refused(reason) = &busy else {
        panic!("expected a refusal, got {busy:?}");
    };
    assert!(
        reason.starts_with(&format!(
            "device n1/loihi-0 already holds lease {}",
            lease_id(&first)
        )),
        "{reason}"
    );

    broker.release(&lease_id(&first), "n1", "SUCCEEDED").await;
    // Released: the next rung would now fit max_concurrent, but the window's one grant is
    // used up.
    let window = broker.acquire(request("loihi-0", "ladder-1/1")).await;
    let LeaseAnswer::Refused(reason) = &window else {
        panic!("expected a refusal, got {window:?}");
    };
    assert!(reason.starts_with("window budget reached"), "{reason}");
}

#[tokio::test]
async fn with_nothing_listening_the_answer_is_unreachable_and_the_next_collector_answers() {
    let dead = format!("http://{}", closed_address());
    let alone = broker_for(&format!("collectors = [\"{dead}\"]\n"));
    let answer = alone.acquire(request("loihi-0", "r")).await;
    let LeaseAnswer::Unreachable(reason) = &answer else {
        panic!("expected Unreachable, got {answer:?}");
    };
    assert!(
        reason.starts_with(&format!("collector {dead}: connect: ")),
        "{reason}"
    );

    // The first collector is down, the second answers: the lease comes from it, and so does
    // the release.
    let collector = Collector::start("");
    let both = broker_for(&format!(
        "collectors = [\"{dead}\", \"{}\"]\n",
        collector.url()
    ));
    let granted = both.acquire(request("loihi-0", "r")).await;
    let id = lease_id(&granted);
    both.release(&id, "n1", "SUCCEEDED").await;
    // The second collector freed it: the same device's next rung is not busy (the default
    // budget of one grant per window refuses it, which says the lease was released).
    let next = both.acquire(request("loihi-0", "r2")).await;
    let LeaseAnswer::Refused(reason) = &next else {
        panic!("expected a refusal, got {next:?}");
    };
    assert!(reason.starts_with("window budget reached"), "{reason}");

    // Once the collector is gone too, the broker says so, naming it.
    drop(collector);
    let gone = both.acquire(request("loihi-1", "r")).await;
    let LeaseAnswer::Unreachable(reason) = &gone else {
        panic!("expected Unreachable, got {gone:?}");
    };
    assert!(reason.contains(&format!("collector {dead}: ")), "{reason}");
}

#[tokio::test]
async fn over_tls_only_agent_subjects_get_leases() {
    let pki = make_certs();
    let d = pki.path();
    let ca = pem(d, "ca.pem");
    let collector = Collector::start(&format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{ca}\"\n\
         [auth]\nagent_subjects = [\"node-1\"]\n",
        pem(d, "collector.pem"),
        pem(d, "collector.key"),
    ));
    let as_who = |who: &str| {
        broker_for(&format!(
            "collectors = [\"https://{}\"]\n[tls]\ncollector_ca = \"{ca}\"\n\
             cert = \"{}\"\nkey = \"{}\"\n",
            collector.addr,
            pem(d, &format!("{who}.pem")),
            pem(d, &format!("{who}.key"))
        ))
    };

    let agent = as_who("node-1");
    let granted = agent.acquire(request("loihi-0", "r")).await;
    lease_id(&granted);

    // A reader's certificate is from the same CA, but it may not take leases: the collector's
    // answer is final and a refusal (no lease, even for a policy that may act without a
    // collector).
    let reader = as_who("bob-reader");
    let denied = reader.acquire(request("loihi-1", "r")).await;
    let LeaseAnswer::Refused(reason) = &denied else {
        panic!("expected a denial, got {denied:?}");
    };
    assert!(reason.contains("PermissionDenied"), "{reason}");
    assert!(
        reason.contains(
            "AcquireLease needs a client certificate whose subject is in auth.agent_subjects"
        ),
        "{reason}"
    );
}
