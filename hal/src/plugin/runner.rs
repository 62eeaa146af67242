//! Runs one vendor command under a deadline, with bounded output, and leaves no process behind.
//!
//! A site's vendor tool is the least trustworthy thing the agent touches: it may hang in a
//! driver call, fork helpers, print megabytes, or be killed by the agent's own supervisor when
//! a call misses the agent's deadline. So every run:
//!
//! - starts the tool as the leader of a new process group (`process_group(0)`), so everything
//!   it forks can be killed at once with `killpg`;
//! - clears the environment except `PATH` (plus `LANG=C`, `LC_ALL=C`), so output is in the
//!   C locale and parseable, and no agent secret leaks into a site script; runs in `/` so the
//!   tool pins no mount point;
//! - reads stdout and stderr concurrently (a tool blocked writing one pipe while we wait on the
//!   other would deadlock), each into a capped buffer: stdout beyond its cap ends the run at
//!   once with a [`HalError::Protocol`] (a plugin that floods stdout is broken, and we never
//!   hold more than the cap); stderr beyond its cap is drained and dropped, because stderr is
//!   only diagnostics and a chatty but correct tool should still work;
//! - on its own deadline, SIGKILLs the whole group, reaps the leader and returns
//!   [`HalError::Timeout`] naming the command and the deadline;
//! - if the future is dropped half-way (the supervisor dropped a call that missed *its*
//!   deadline), a guard kills the group in `Drop`; tokio's orphan reaper then reaps the leader;
//! - once the leader has exited, kills whatever it left in its group, so background helpers
//!   that still hold our pipes cannot stall the run, and nothing outlives the call. (A helper
//!   that leaves the group with `setsid` has opted out of this; if it keeps stdout open, the
//!   run ends at its deadline.)
//!
//! This deadline is the backend's own protocol timeout (see [`HalError::Timeout`]); the agent's
//! supervisor still bounds the call from outside, and the drop guard makes that safe.
//!
//! Exit codes follow node-problem-detector's plugin protocol: 0 = OK, 1 = the device has a
//! problem (the output may say which), anything else or death by a signal = the tool itself
//! failed, reported as [`HalError::Failed`] with the code and the first line of stderr.
//!
//! Killing by process-group id is safe while the leader is unreaped (its pid, which is the
//! group id, cannot be reused), so the guard only signals while it is armed, and it is disarmed
//! right after the leader is reaped and its group has been swept once.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};

use crate::device::HalError;

/// `PATH` for the tool when the agent itself has none (systemd always sets one).
const FALLBACK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long to wait for a SIGKILLed leader to be reaped. A process stuck in an uninterruptible
/// driver call (state D) ignores SIGKILL until the call returns; we do not wait for that, tokio's
/// orphan reaper collects it later.
const REAP_GRACE: Duration = Duration::from_secs(2);

/// A vendor command: program, fixed arguments, deadline and output caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorCommand {
    /// Absolute path of the tool (no `PATH` lookup, so the config names exactly what runs).
    pub program: PathBuf,
    /// Arguments before the per-call ones.
    pub args: Vec<String>,
    /// The whole run (start, output, exit) must end within this.
    pub deadline: Duration,
    /// More stdout than this is a protocol error.
    pub max_stdout_bytes: usize,
    /// stderr kept for diagnostics; the rest is drained and dropped.
    pub max_stderr_bytes: usize,
}

/// How a run ended, under the node-problem-detector exit-code protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Exit status 0.
    Ok,
    /// Exit status 1: the device has a problem (the output may carry conditions).
    Problem,
}

/// What a run that ended with exit status 0 or 1 produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    pub verdict: Verdict,
    pub stdout: Vec<u8>,
    /// At most `max_stderr_bytes`.
    pub stderr: Vec<u8>,
    /// stderr went beyond its cap and was cut.
    pub stderr_truncated: bool,
    pub elapsed: Duration,
}

impl CommandOutput {
    /// First non-empty line of stderr, for messages.
    pub fn stderr_line(&self) -> Option<String> {
        first_line(&self.stderr)
    }
    /// First non-empty line of stdout, for tools that answer in plain text.
    pub fn stdout_line(&self) -> Option<String> {
        first_line(&self.stdout)
    }
}

/// First non-empty line, lossily decoded and cut to a readable length.
pub(crate) fn first_line(bytes: &[u8]) -> Option<String> {
    const MAX_CHARS: usize = 200;
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(line.chars().take(MAX_CHARS).collect())
}

impl VendorCommand {
    /// A command with both caps set to `max_output_bytes`.
    pub fn new(
        program: impl Into<PathBuf>,
        args: Vec<String>,
        deadline: Duration,
        max_output_bytes: usize,
    ) -> Self {
        VendorCommand {
            program: program.into(),
            args,
            deadline,
            max_stdout_bytes: max_output_bytes,
            max_stderr_bytes: max_output_bytes,
        }
    }

    /// The command line as shown in messages (not shell-quoted: for people, not shells).
    pub fn display(&self, extra_args: &[String]) -> String {
        const MAX_CHARS: usize = 240;
        let mut s = self.program.display().to_string();
        for a in self.args.iter().chain(extra_args) {
            s.push(' ');
            s.push_str(a);
        }
        if s.chars().count() > MAX_CHARS {
            s = s.chars().take(MAX_CHARS).collect::<String>() + "...";
        }
        s
    }

    /// Runs `program args... extra_args...`, feeding `stdin` if given, and returns its output
    /// if it exits with 0 or 1. See the module documentation for what is guaranteed.
    pub async fn run(
        &self,
        extra_args: &[String],
        stdin: Option<Vec<u8>>,
    ) -> Result<CommandOutput, HalError> {
        let started = Instant::now();
        let shown = self.display(extra_args);
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .args(extra_args)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| OsString::from(FALLBACK_PATH)),
            )
            .env("LANG", "C")
            .env("LC_ALL", "C")
            .current_dir("/")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            // The group guard kills the whole group; killing only the leader would orphan
            // its helpers.
            .kill_on_drop(false);

        let mut child = cmd
            .spawn()
            .map_err(|e| spawn_error(&shown, &self.program, e))?;
        let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
            // Only possible if the child was already reaped, which nothing here does.
            return Err(HalError::Io(format!("{shown}: started but has no pid")));
        };
        let group = GroupGuard::new(Pid::from_raw(pid));

        let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let (feed_pipe, Some(out_pipe), Some(err_pipe)) = pipes else {
            return Err(HalError::Io(format!("{shown}: pipes were not set up")));
        };

        let exchange = exchange(
            &mut child,
            &group,
            feed_pipe,
            stdin,
            out_pipe,
            err_pipe,
            self.max_stdout_bytes,
            self.max_stderr_bytes,
        );
        let outcome = tokio::time::timeout(self.deadline, exchange).await;

        let (status, stdout, stderr) = match outcome {
            Ok(Ok(done)) => done,
            Ok(Err(ended_early)) => {
                stop(&mut child, &group).await;
                return Err(match ended_early {
                    Early::StdoutOverflow => HalError::Protocol(format!(
                        "{shown}: printed more than {} bytes on stdout; stopped it",
                        self.max_stdout_bytes
                    )),
                    Early::Io(what, e) => HalError::Io(format!("{shown}: {what}: {e}")),
                });
            }
            Err(_elapsed) => {
                stop(&mut child, &group).await;
                return Err(HalError::Timeout(format!(
                    "{shown} did not finish within {} ms; killed its process group",
                    self.deadline.as_millis()
                )));
            }
        };

        let verdict = match status.code() {
            Some(0) => Verdict::Ok,
            Some(1) => Verdict::Problem,
            code => {
                let why = match (code, status.signal()) {
                    (Some(c), _) => format!("exited with status {c}"),
                    (None, Some(sig)) => format!("was killed by signal {sig}"),
                    (None, None) => format!("ended with {status}"),
                };
                let detail = first_line(&stderr.bytes)
                    .map(|l| format!(": {l}"))
                    .unwrap_or_else(|| " (no stderr)".to_string());
                return Err(HalError::Failed(format!(
                    "{shown} {why}, which means the tool itself failed (unknown device state){detail}"
                )));
            }
        };
        Ok(CommandOutput {
            verdict,
            stdout: stdout.bytes,
            stderr: stderr.bytes,
            stderr_truncated: stderr.overflowed,
            elapsed: started.elapsed(),
        })
    }
}

fn spawn_error(shown: &str, program: &std::path::Path, e: io::Error) -> HalError {
    match e.kind() {
        io::ErrorKind::NotFound => HalError::Io(format!(
            "cannot run {shown}: {} does not exist",
            program.display()
        )),
        io::ErrorKind::PermissionDenied => HalError::Io(format!(
            "cannot run {shown}: permission denied (is {} executable by the agent's user?)",
            program.display()
        )),
        _ => HalError::Io(format!("cannot run {shown}: {e}")),
    }
}

/// Kills the process group while the leader is unreaped: on request, and in `Drop` so that a
/// dropped run leaves nothing behind.
struct GroupGuard {
    pgid: Pid,
    armed: AtomicBool,
}

impl GroupGuard {
    fn new(pgid: Pid) -> Self {
        GroupGuard {
            pgid,
            armed: AtomicBool::new(true),
        }
    }

    fn kill(&self) {
        if self.armed.load(Ordering::SeqCst) {
            // ESRCH (group already empty) is the expected case after a clean exit.
            let _ = killpg(self.pgid, Signal::SIGKILL);
        }
    }

    /// The leader has been reaped: its pid may be reused from now on, so never signal again.
    fn disarm(&self) {
        self.armed.store(false, Ordering::SeqCst);
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Kills the group, reaps the leader (bounded), and disarms the guard if reaped.
async fn stop(child: &mut Child, group: &GroupGuard) {
    group.kill();
    if let Ok(Ok(_)) = tokio::time::timeout(REAP_GRACE, child.wait()).await {
        group.disarm();
    }
}

/// Why a run ended before the leader exited and both pipes closed.
enum Early {
    StdoutOverflow,
    Io(&'static str, io::Error),
}

/// Bytes read from one pipe, up to a cap.
struct Captured {
    bytes: Vec<u8>,
    overflowed: bool,
}

/// What to do when a pipe goes beyond its cap.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AtCap {
    /// Return at once with `overflowed` set.
    Stop,
    /// Keep reading (so the writer does not block) but keep nothing more.
    Drain,
}

async fn read_capped<R: AsyncRead + Unpin>(
    mut pipe: R,
    cap: usize,
    at_cap: AtCap,
) -> io::Result<Captured> {
    let mut bytes = Vec::with_capacity(cap.min(8192));
    let mut overflowed = false;
    let mut chunk = [0u8; 8192];
    loop {
        let n = pipe.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Captured { bytes, overflowed });
        }
        let room = cap.saturating_sub(bytes.len());
        bytes.extend_from_slice(&chunk[..n.min(room)]);
        if n > room {
            overflowed = true;
            if at_cap == AtCap::Stop {
                return Ok(Captured { bytes, overflowed });
            }
        }
    }
}

async fn feed(pipe: Option<ChildStdin>, input: Option<Vec<u8>>) {
    if let (Some(mut pipe), Some(input)) = (pipe, input) {
        // A tool may exit without reading its input (EPIPE); its exit code says what happened,
        // so a failed write is not an error of its own.
        let _ = pipe.write_all(&input).await;
        let _ = pipe.shutdown().await;
        // Dropping the pipe closes it: the tool sees end of input.
    }
}

#[allow(clippy::too_many_arguments)]
async fn exchange(
    child: &mut Child,
    group: &GroupGuard,
    feed_pipe: Option<ChildStdin>,
    input: Option<Vec<u8>>,
    out_pipe: tokio::process::ChildStdout,
    err_pipe: tokio::process::ChildStderr,
    max_stdout: usize,
    max_stderr: usize,
) -> Result<(ExitStatus, Captured, Captured), Early> {
    let stdout = async {
        let c = read_capped(out_pipe, max_stdout, AtCap::Stop)
            .await
            .map_err(|e| Early::Io("reading stdout", e))?;
        if c.overflowed {
            Err(Early::StdoutOverflow)
        } else {
            Ok(c)
        }
    };
    let stderr = async {
        read_capped(err_pipe, max_stderr, AtCap::Drain)
            .await
            .map_err(|e| Early::Io("reading stderr", e))
    };
    let leader = async {
        feed(feed_pipe, input).await;
        let status = child
            .wait()
            .await
            .map_err(|e| Early::Io("waiting for exit", e))?;
        // The leader is reaped. Sweep what it left in its group (helpers that would hold our
        // pipes open), then never signal this group id again. While any member lives the id
        // cannot be reused, so this one sweep is safe.
        group.kill();
        group.disarm();
        Ok(status)
    };
    let (out, err, status) = tokio::try_join!(stdout, stderr, leader)?;
    Ok((status, out, err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_skips_blank_lines_and_caps_length() {
        assert_eq!(
            first_line(b"\n  \n error: x \nmore"),
            Some("error: x".into())
        );
        assert_eq!(first_line(b""), None);
        assert_eq!(first_line(&[b'a'; 1000]).map(|l| l.len()), Some(200));
        assert_eq!(first_line(&[0xff, b'\n']), Some("\u{fffd}".into()));
    }

    #[test]
    fn display_is_bounded() {
        let c = VendorCommand::new(
            "/bin/tool",
            vec!["x".repeat(500)],
            Duration::from_secs(1),
            10,
        );
        assert!(c.display(&["read".into()]).chars().count() <= 243);
        let c = VendorCommand::new("/bin/tool", vec!["-q".into()], Duration::from_secs(1), 10);
        assert_eq!(c.display(&["read".into()]), "/bin/tool -q read");
    }
}
