//! A real Alertmanager (Debian's `prometheus-alertmanager`) on a loopback port for the tests
//! that push alerts and silences to it, and plain HTTP reads of its v2 API.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{free_port, wait_until, Proc};

/// `prometheus-alertmanager` on PATH (or where Debian installs it).
pub fn alertmanager_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("prometheus-alertmanager"))
            .find(|candidate| candidate.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/bin/prometheus-alertmanager")).filter(|p| p.is_file()))
        .expect("prometheus-alertmanager not found: install Debian package prometheus-alertmanager")
}

/// A real Alertmanager on a loopback port, clustering off, state in a private directory.
pub struct Alertmanager {
    proc: Proc,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    pub fn start() -> Alertmanager {
        Alertmanager::start_on(&format!("127.0.0.1:{}", free_port()))
    }

    /// On `addr`: a test that starts the collector before its Alertmanager knows where.
    pub fn start_on(addr: &str) -> Alertmanager {
        let binary = alertmanager_binary();
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n",
        )
        .expect("write the alertmanager config");
        let addr = addr.to_string();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start prometheus-alertmanager");
        let proc = Proc {
            child,
            name: "prometheus-alertmanager",
        };
        wait_until("Alertmanager to be ready", Duration::from_secs(20), || {
            http_get(&addr, "/-/ready").is_some_and(|(status, _)| status == 200)
        });
        Alertmanager {
            proc,
            addr,
            _dir: dir,
        }
    }

    /// The silences Alertmanager holds now, expired ones included (GET /api/v2/silences).
    pub fn silences(&self) -> Vec<Value> {
        let Some((200, body)) = http_get(&self.addr, "/api/v2/silences") else {
            return Vec::new();
        };
        match serde_json::from_str(&body) {
            Ok(Value::Array(silences)) => silences,
            _ => Vec::new(),
        }
    }

    /// Stops it (SIGTERM, then SIGKILL after a bound), for tests of an Alertmanager outage.
    pub fn stop(mut self) {
        self.proc.signal(nix::sys::signal::Signal::SIGTERM);
        let _ = self.proc.wait_exit(Duration::from_secs(10));
    }

    /// The alerts Alertmanager holds now (GET /api/v2/alerts).
    pub fn alerts(&self) -> Vec<Value> {
        let Some((200, body)) = http_get(&self.addr, "/api/v2/alerts") else {
            return Vec::new();
        };
        match serde_json::from_str(&body) {
            Ok(Value::Array(alerts)) => alerts,
            _ => Vec::new(),
        }
    }
}

/// A plain HTTP/1.0 GET on loopback: (status, body), or None if the server is not answering.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n\r\n"
    )
    .ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    let (head, body) = reply.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}
