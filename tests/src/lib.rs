//! Harness for the end-to-end tests: starts the real binaries on loopback and a private Unix
//! socket, waits (bounded) for them to be ready, and kills exactly the processes it started,
//! by pid, when a test ends however it ends.
//!
//! The binaries are found next to the test executable (`target/<profile>/`), where
//! `cargo test --workspace` builds them; `HEALTH_BIN_DIR` overrides that.
//!
//! This library is test code: a harness step that cannot happen fails the test, so it may
//! unwrap and expect (the workspace denies both elsewhere).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use health_proto::v1::agent_client::AgentClient;
use health_proto::v1::collector_client::CollectorClient;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tonic::transport::Channel;

mod alertmanager;
mod browser;
mod fleet;
mod pki;
pub mod postgres;
mod query;
mod scrape;
mod wait;

pub use alertmanager::{alertmanager_binary, http_get, Alertmanager};
pub use browser::{
    chromedriver_binary, chromium_binary, screenshot_dir, Browser, Screenshot,
    MIN_DISTINCT_COLOURS, MIN_NON_BACKGROUND_PER_MILLE, MIN_SCREENSHOT_SIDE,
};
pub use fleet::{reporting_config, Fleet, QUICK_RECONNECT};
pub use pki::{make_certs, pem};
pub use query::{device, has_code};
pub use scrape::{
    http_get as http_get_metrics, promtool_check_metrics, samples, scrape_metrics, scrape_nodes,
    scrape_target, Sample,
};
pub use wait::{eventually, wait_for, wait_until};

pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("HEALTH_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().expect("test executable path");
            // target/<profile>/deps/<test> -> target/<profile>
            exe.parent()
                .and_then(Path::parent)
                .expect("target dir")
                .to_path_buf()
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: run the tests with `cargo test --workspace` so the binaries are built",
        path.display()
    );
    path
}

/// A child process killed (SIGKILL, by pid) and reaped when dropped.
pub struct Proc {
    pub child: Child,
    pub name: &'static str,
}

impl Proc {
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).expect("signal our child");
    }

    /// Waits (bounded) for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// Starts a binary with extra environment variables (the clock tests preload libfaketime this
/// way); with `log`, its stderr (the log) goes to that file instead of the test's.
fn spawn_with_env(
    name: &'static str,
    args: &[&str],
    log: Option<&Path>,
    env: &[(String, String)],
) -> Proc {
    let stderr = match log {
        Some(path) => Stdio::from(std::fs::File::create(path).expect("create the log file")),
        None => Stdio::inherit(),
    };
    let child = Command::new(bin(name))
        .args(args)
        // A log kept for the test to read includes the audit records of actions.
        .env(
            "RUST_LOG",
            if log.is_some() {
                "warn,audit=info"
            } else {
                "warn"
            },
        )
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    Proc { child, name }
}

pub struct Collector {
    pub proc: Proc,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Collector {
    /// Starts a collector on a free loopback port; `extra_toml` is added to its config.
    pub fn start(extra_toml: &str) -> Collector {
        Self::start_on(&format!("127.0.0.1:{}", free_port()), extra_toml)
    }

    /// Starts a collector on a given loopback address (to restart one where agents expect it).
    pub fn start_on(addr: &str, extra_toml: &str) -> Collector {
        Self::start_on_with_env(addr, extra_toml, &[])
    }

    /// Starts a collector on a free loopback port whose log (stderr), with the lease
    /// service's grants and refusals, goes to `log`.
    pub fn start_logged(extra_toml: &str, log: &Path) -> Collector {
        let addr = format!("127.0.0.1:{}", free_port());
        let env = [("RUST_LOG".to_string(), "warn,leases=info".to_string())];
        Self::start_inner(&addr, extra_toml, Some(log), &env)
    }

    /// Starts a collector on a free loopback port with extra environment variables.
    pub fn start_with_env(extra_toml: &str, env: &[(String, String)]) -> Collector {
        Self::start_on_with_env(&format!("127.0.0.1:{}", free_port()), extra_toml, env)
    }

    fn start_on_with_env(addr: &str, extra_toml: &str, env: &[(String, String)]) -> Collector {
        Self::start_inner(addr, extra_toml, None, env)
    }

    fn start_inner(
        addr: &str,
        extra_toml: &str,
        log: Option<&Path>,
        env: &[(String, String)],
    ) -> Collector {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = addr.to_string();
        let cfg = dir.path().join("collector.toml");
        std::fs::write(&cfg, format!("listen = \"{addr}\"\n{extra_toml}"))
            .expect("write collector config");
        let mut proc = spawn_with_env(
            "health-collector",
            &["--config", cfg.to_str().expect("utf-8 path")],
            log,
            env,
        );
        // A collector that exits at start (a bad config, or its port taken meanwhile by another
        // test) fails here with its status rather than after the whole wait.
        wait_until("the collector to listen", Duration::from_secs(10), || {
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!("health-collector exited ({status}) before listening on {addr}");
            }
            std::net::TcpStream::connect(&addr).is_ok()
        });
        Collector {
            proc,
            addr,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn client(&self) -> CollectorClient<Channel> {
        CollectorClient::connect(self.url())
            .await
            .expect("connect to collector")
    }
}

pub struct Agent {
    pub proc: Proc,
    pub socket: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Agent {
    /// Starts `health-agent --simulate` on a private socket.
    pub fn simulate(extra_args: &[&str]) -> Agent {
        Self::launch(None, extra_args, None, &[])
    }

    /// Starts `health-agent` with the given config text.
    pub fn with_config(toml: &str, extra_args: &[&str]) -> Agent {
        Self::launch(Some(toml), extra_args, None, &[])
    }

    /// Like `with_config`, with the agent's log (stderr) written to `log`.
    pub fn with_config_logged(toml: &str, extra_args: &[&str], log: &Path) -> Agent {
        Self::launch(Some(toml), extra_args, Some(log), &[])
    }

    /// Like `with_config`, with extra environment variables.
    pub fn with_config_env(toml: &str, extra_args: &[&str], env: &[(String, String)]) -> Agent {
        Self::launch(Some(toml), extra_args, None, env)
    }

    /// Starts the agent in a fresh private directory (its socket, its audit log and, with
    /// `toml`, its config file live there) and waits until its socket accepts connections.
    fn launch(
        toml: Option<&str>,
        extra: &[&str],
        log: Option<&Path>,
        env: &[(String, String)],
    ) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let path_arg = |name: &str| {
            dir.path()
                .join(name)
                .to_str()
                .expect("utf-8 path")
                .to_string()
        };
        let (sock, audit, cfg) = (
            path_arg("agent.sock"),
            path_arg("audit.jsonl"),
            path_arg("agent.toml"),
        );
        let mut args: Vec<&str> = match toml {
            Some(toml) => {
                std::fs::write(&cfg, toml).expect("write agent config");
                vec!["--config", &cfg]
            }
            None => vec!["--simulate"],
        };
        args.extend(["--socket", &sock]);
        // Each agent keeps its audit log in its own directory, never the host's.
        if !extra.contains(&"--audit-log") {
            args.extend(["--audit-log", &audit]);
        }
        args.extend(extra);
        let proc = spawn_with_env("health-agent", &args, log, env);
        let socket = PathBuf::from(sock);
        wait_until("the agent socket", Duration::from_secs(10), || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        Agent { proc, socket, dir }
    }

    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub async fn client(&self) -> AgentClient<Channel> {
        let target = agent_ctl::endpoint::parse(&self.endpoint()).expect("endpoint");
        AgentClient::new(
            agent_ctl::endpoint::connect(&target, &Default::default())
                .await
                .expect("connect to agent"),
        )
    }

    /// Runs agent-ctl against this agent.
    pub fn ctl(&self, args: &[&str]) -> Output {
        let endpoint = self.endpoint();
        let mut all = vec!["--endpoint", &endpoint];
        all.extend(args);
        ctl(&all)
    }

    /// Runs agent-ctl against this agent, expecting it to succeed; returns what it printed on
    /// stdout. A failure panics with the arguments and everything agent-ctl printed.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "agent-ctl {args:?} failed ({}): {}",
            out.status,
            output_text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs agent-ctl against this agent every 50 ms until what it prints on stdout satisfies
    /// `ready`, for at most 10 s; returns the last stdout either way, for the test to assert on
    /// (so a timeout fails there, showing what agent-ctl printed).
    pub fn ctl_until(&self, args: &[&str], ready: impl Fn(&str) -> bool) -> String {
        let t0 = Instant::now();
        loop {
            let text = String::from_utf8_lossy(&self.ctl(args).stdout).into_owned();
            if ready(&text) || t0.elapsed() > Duration::from_secs(10) {
                return text;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts `agent-ctl reset-device <id> --power-cycle --yes` on a thread and returns once
    /// the device shows as RESETTING: the agent has handed the reset to the device, which
    /// holds it for a while (the Loihi simulator's power cycle takes 2.5 s). Accepted and
    /// audited is not enough: an agent stopping before the hand-over refuses the action.
    /// Join the handle for agent-ctl's output.
    pub fn begin_power_cycle(&self, id: &str) -> std::thread::JoinHandle<Output> {
        let (endpoint, target) = (self.endpoint(), id.to_string());
        let reset = std::thread::spawn(move || {
            ctl(&[
                "--endpoint",
                &endpoint,
                "reset-device",
                &target,
                "--power-cycle",
                "--yes",
            ])
        });
        let resetting = "\"activity\":\"RESETTING\"";
        let shown = self.ctl_until(&["--json", "device", id], |json| json.contains(resetting));
        assert!(
            shown.contains(resetting),
            "the power cycle of {id} never showed as running: {shown}"
        );
        reset
    }

    /// Pauses the agent's remediation engine: for a test that plays the operator on the
    /// embedded default (whose policies would otherwise act on the faults it injects, and
    /// make its own actions wait for theirs).
    pub fn hands_off(&self) {
        self.ctl_ok(&[
            "remediation",
            "pause",
            "--reason",
            "the end-to-end test plays the operator",
        ]);
    }

    /// The agent's audit log (in its private directory), one JSON object per complete line.
    ///
    /// The agent may be appending while a test reads: a write crossing a page boundary can be
    /// seen half done, so a last line without its newline is not yet an entry and is left for
    /// the next read. Every complete line must be JSON.
    pub fn audit_entries(&self) -> Vec<serde_json::Value> {
        let path = self.dir.path().join("audit.jsonl");
        let bytes = std::fs::read(path).unwrap_or_default();
        let end = bytes.iter().rposition(|&b| b == b'\n').unwrap_or(0);
        let complete = std::str::from_utf8(&bytes[..end]).expect("complete audit lines are UTF-8");
        complete
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("every complete audit line is JSON"))
            .collect()
    }
}

/// Everything a command printed, stdout then stderr, for assertion messages.
pub fn output_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Runs agent-ctl with arbitrary arguments.
pub fn ctl(args: &[&str]) -> Output {
    Command::new(bin("agent-ctl"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run agent-ctl")
}

/// Config for a simulated agent with one device of each kind and the given timings.
pub fn sim_config(poll: &str, deadline: &str, report: &str) -> String {
    let mut s = format!("report_interval = \"{report}\"\n");
    for (id, kind) in [
        ("loihi-0", "loihi2"),
        ("spinnaker-0", "spinnaker"),
        ("photonic-0", "photonic"),
        ("xbar-0", "analog_crossbar"),
    ] {
        s.push_str(&format!(
            "\n[[device]]\nid = \"{id}\"\nkind = \"{kind}\"\nbackend = \"sim\"\npoll_interval = \"{poll}\"\ndeadline = \"{deadline}\"\n"
        ));
    }
    s
}
