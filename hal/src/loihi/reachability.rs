//! Whether a Loihi 2 board's host answers: one TCP connect to `nx_driver_server`'s port.
//!
//! The protocol behind that port is Intel's and not public; Lava's own check (`loihi.py`) only
//! asks whether the host answers. A completed TCP handshake says the host is up and something
//! listens on the port; the connection is closed at once, without a byte sent. Name resolution
//! and the connect share one deadline, because a dead DNS server hangs as surely as a dead host.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::TcpStream;

use crate::model::{Condition, ConditionCode, Severity};

/// The outcome of one reachability check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reachability {
    pub up: bool,
    /// Time to a completed connect (only when up).
    pub latency: Option<Duration>,
    /// Why it is down, naming the address.
    pub error: Option<String>,
}

impl Reachability {
    fn down(error: String) -> Self {
        Reachability {
            up: false,
            latency: None,
            error: Some(error),
        }
    }

    /// DEVICE_UNRESPONSIVE (critical) about `subject` when the board host is down: without it
    /// the board can be neither used nor reset in band.
    pub fn condition(&self, subject: &str, now: SystemTime) -> Option<Condition> {
        if self.up {
            return None;
        }
        let why = self.error.as_deref().unwrap_or("no reason given");
        Some(Condition::new(
            ConditionCode::DeviceUnresponsive,
            Severity::Critical,
            subject,
            format!("Loihi 2 board host unreachable: {why}"),
            now,
        ))
    }
}

/// Connects to `addr` ("host:port") within `deadline`, resolution included.
pub async fn board_reachable(addr: &str, deadline: Duration) -> Reachability {
    let start = Instant::now();
    match tokio::time::timeout(deadline, connect_any(addr)).await {
        Ok(Ok(())) => Reachability {
            up: true,
            latency: Some(start.elapsed()),
            error: None,
        },
        Ok(Err(e)) => Reachability::down(e),
        Err(_) => Reachability::down(format!(
            "no answer from {addr} within {} ms",
            deadline.as_millis()
        )),
    }
}

/// Tries each resolved address in turn; the first completed connect wins.
async fn connect_any(addr: &str) -> Result<(), String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| format!("cannot resolve {addr:?} (expected host:port): {e}"))?
        .collect();
    let mut last = format!("{addr} resolved to no address");
    for a in addrs {
        match TcpStream::connect(a).await {
            // Dropping the stream closes it: nothing is sent to nx_driver_server.
            Ok(_stream) => return Ok(()),
            Err(e) => last = describe(addr, a, &e),
        }
    }
    Err(last)
}

fn describe(addr: &str, resolved: SocketAddr, e: &io::Error) -> String {
    let at = if addr == resolved.to_string() {
        addr.to_string()
    } else {
        format!("{addr} ({resolved})")
    };
    match e.kind() {
        io::ErrorKind::ConnectionRefused => format!(
            "connection refused by {at}: the host is up but nothing listens on the port (is nx_driver_server running?)"
        ),
        _ => format!("cannot connect to {at}: {e}"),
    }
}
