//! The one way this backend touches sysfs: [`SysfsReader`], one bounded read or write of one
//! file on a blocking thread, under a deadline, with every OS error mapped to a [`HalError`]
//! that names the file.
//!
//! Why the deadline needs more than a timer here (the agent's supervisor has its own): a
//! sysfs read runs the driver's `show` callback in the calling thread, and a broken driver can
//! block there forever (a wedged firmware mailbox, a hung I2C bus). Such a thread cannot be
//! cancelled. The supervisor would drop the future, but the thread stays blocked, and the next
//! poll would block another one, until the blocking pool is exhausted. So this reader keeps a
//! register of calls in flight: a file whose earlier call has been blocked for longer than the
//! deadline is *stuck*, and further calls on it fail at once with [`HalError::Timeout`]
//! instead of spawning another thread. One broken file costs at most one thread. The register
//! entry is removed by the blocking call itself when it returns, so this holds even when the
//! caller's future was dropped half-way (cancel safety).
//!
//! No retries: a failed read is reported as it is, and the next poll tries again.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::device::HalError;

/// The most a read takes from one file. sysfs attributes are at most a page (4 KiB); anything
/// larger means the path points at something that is not an attribute.
pub const MAX_READ_BYTES: usize = 64 * 1024;

/// How much of a garbage file's content an error message quotes.
const QUOTE_CHARS: usize = 64;

/// Reads and writes files under one root (`/sys`, or a fixture tree in tests), each call
/// bounded by `deadline`. Cheap to clone: clones share the register of calls in flight, so
/// every source of one device (and the test counters) sees the same stuck files.
#[derive(Debug, Clone)]
pub struct SysfsReader {
    root: PathBuf,
    deadline: Duration,
    calls: Arc<Calls>,
}

/// Blocking calls in flight, per absolute path, and a count of all calls ever started.
#[derive(Debug, Default)]
struct Calls {
    in_flight: Mutex<HashMap<PathBuf, Vec<(u64, Instant)>>>,
    next_id: AtomicU64,
    started: AtomicU64,
}

impl Calls {
    fn lock(&self) -> MutexGuard<'_, HashMap<PathBuf, Vec<(u64, Instant)>>> {
        // The map stays consistent even if a holder panicked: every update is one insert or
        // one removal.
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Removes one call from the register when the blocking closure that owns it ends (or is
/// dropped without running, when the runtime shuts down).
struct InFlight {
    calls: Arc<Calls>,
    path: PathBuf,
    id: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut map = self.calls.lock();
        if let Some(list) = map.get_mut(&self.path) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                map.remove(&self.path);
            }
        }
    }
}

impl SysfsReader {
    pub fn new(root: impl Into<PathBuf>, deadline: Duration) -> SysfsReader {
        SysfsReader {
            root: root.into(),
            deadline,
            calls: Arc::new(Calls::default()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Absolute path of `rel` (an absolute `rel` is taken as it is).
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    /// Blocking calls started since this reader was made (all clones together). Tests use it
    /// to check that a stuck file does not get a second thread.
    pub fn blocking_calls_started(&self) -> u64 {
        self.calls.started.load(Ordering::Relaxed)
    }

    /// Blocking calls that have not returned yet, stuck or not.
    pub fn blocking_calls_in_flight(&self) -> usize {
        self.calls.lock().values().map(Vec::len).sum()
    }

    /// Files with a call blocked for longer than the deadline.
    pub fn stuck_files(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self
            .calls
            .lock()
            .iter()
            .filter(|(_, list)| list.iter().any(|(_, t)| t.elapsed() >= self.deadline))
            .map(|(p, _)| p.clone())
            .collect();
        out.sort();
        out
    }

    /// The whole content of `rel` (at most [`MAX_READ_BYTES`]), as text.
    pub async fn read_string(&self, rel: impl AsRef<Path>) -> Result<String, HalError> {
        let bytes = self.run(rel.as_ref(), "read", read_bounded).await?;
        let path = self.path(rel);
        if bytes.len() > MAX_READ_BYTES {
            return Err(HalError::Protocol(format!(
                "{}: larger than {} KiB, not a sysfs attribute",
                path.display(),
                MAX_READ_BYTES / 1024
            )));
        }
        String::from_utf8(bytes).map_err(|e| {
            HalError::Protocol(format!(
                "{}: not text: {}",
                path.display(),
                quote(&String::from_utf8_lossy(e.as_bytes()))
            ))
        })
    }

    /// The content of `rel` with surrounding whitespace (the kernel's trailing newline) removed.
    pub async fn read_trimmed(&self, rel: impl AsRef<Path>) -> Result<String, HalError> {
        Ok(self.read_string(rel).await?.trim().to_string())
    }

    /// A signed integer file (temperatures can be negative).
    pub async fn read_i64(&self, rel: impl AsRef<Path>) -> Result<i64, HalError> {
        let rel = rel.as_ref();
        let s = self.read_string(rel).await?;
        parse_i64(&self.path(rel), &s)
    }

    /// An unsigned integer file (energy counters use the full 64 bits).
    pub async fn read_u64(&self, rel: impl AsRef<Path>) -> Result<u64, HalError> {
        let rel = rel.as_ref();
        let s = self.read_string(rel).await?;
        parse_u64(&self.path(rel), &s)
    }

    /// Writes `value` to `rel` in one write, as `echo value > file` does (truncating, never
    /// creating: a missing attribute is a vanished device, not a file to make).
    pub async fn write_string(&self, rel: impl AsRef<Path>, value: &str) -> Result<(), HalError> {
        let value = value.as_bytes().to_vec();
        self.run(rel.as_ref(), "write", move |p| {
            let mut f = OpenOptions::new().write(true).truncate(true).open(p)?;
            f.write_all(&value)
        })
        .await
    }

    /// Names in directory `rel`, sorted.
    pub async fn list_dir(&self, rel: impl AsRef<Path>) -> Result<Vec<String>, HalError> {
        self.run(rel.as_ref(), "list", |p| {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(p)? {
                names.push(entry?.file_name().to_string_lossy().into_owned());
            }
            names.sort();
            Ok(names)
        })
        .await
    }

    /// Whether `rel` exists (a directory or a file). Errors other than "not found" are errors.
    pub async fn exists(&self, rel: impl AsRef<Path>) -> Result<bool, HalError> {
        self.run(rel.as_ref(), "stat", |p| match std::fs::metadata(p) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        })
        .await
    }

    /// Whether the attribute has any write permission bit. sysfs refuses writes to an
    /// attribute without one even for root (kernfs checks the mode, not the caller), so this
    /// is the test for "this driver accepts a value here".
    pub async fn is_writable(&self, rel: impl AsRef<Path>) -> Result<bool, HalError> {
        self.run(rel.as_ref(), "stat", |p| {
            Ok(std::fs::metadata(p)?.permissions().mode() & 0o222 != 0)
        })
        .await
    }

    /// Reads several files at once, so that N files on a broken driver cost one deadline, not
    /// N. Results come back in the order of `rels`.
    pub async fn read_many(&self, rels: Vec<PathBuf>) -> Vec<Result<String, HalError>> {
        let n = rels.len();
        let mut out: Vec<Option<Result<String, HalError>>> = (0..n).map(|_| None).collect();
        let mut set = tokio::task::JoinSet::new();
        for (i, rel) in rels.iter().cloned().enumerate() {
            let reader = self.clone();
            set.spawn(async move { (i, reader.read_string(&rel).await) });
        }
        while let Some(joined) = set.join_next().await {
            if let Ok((i, result)) = joined {
                if let Some(slot) = out.get_mut(i) {
                    *slot = Some(result);
                }
            }
        }
        out.into_iter()
            .zip(rels)
            .map(|(r, rel)| {
                r.unwrap_or_else(|| {
                    Err(HalError::Io(format!(
                        "{}: read task ended without a result",
                        self.path(rel).display()
                    )))
                })
            })
            .collect()
    }

    /// The first directory `<base>/<entry>` (entries starting with `prefix`, in natural order:
    /// `hwmon2` before `hwmon10`) whose attribute `attr` reads `want`. A missing `base` finds
    /// nothing; an entry whose attribute cannot be read is skipped (it is another device).
    pub async fn find_dir_by_attr(
        &self,
        base: &Path,
        prefix: &str,
        attr: &str,
        want: &str,
    ) -> Result<Option<PathBuf>, HalError> {
        let names = match self.list_dir(base).await {
            Ok(n) => n,
            Err(HalError::Vanished(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut dirs: Vec<String> = names
            .into_iter()
            .filter(|n| n.starts_with(prefix))
            .collect();
        dirs.sort_by_key(|n| natural_key(n));
        let attrs = dirs.iter().map(|d| base.join(d).join(attr)).collect();
        let values = self.read_many(attrs).await;
        Ok(dirs
            .into_iter()
            .zip(values)
            .find(|(_, v)| v.as_ref().is_ok_and(|v| v.trim() == want))
            .map(|(d, _)| base.join(d)))
    }

    /// Runs `op` on the file at `rel` on a blocking thread under the deadline, unless an
    /// earlier call on that file is stuck.
    async fn run<T, F>(&self, rel: &Path, what: &'static str, op: F) -> Result<T, HalError>
    where
        T: Send + 'static,
        F: FnOnce(&Path) -> io::Result<T> + Send + 'static,
    {
        let path = self.path(rel);
        let id = self.calls.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut map = self.calls.lock();
            let oldest = map
                .get(&path)
                .and_then(|list| list.iter().map(|(_, t)| *t).min());
            if let Some(since) = oldest.filter(|t| t.elapsed() >= self.deadline) {
                return Err(HalError::Timeout(format!(
                    "{}: an earlier {what} has been blocked in the driver for {:.1} s; \
                     not starting another until it returns",
                    path.display(),
                    since.elapsed().as_secs_f64()
                )));
            }
            map.entry(path.clone())
                .or_default()
                .push((id, Instant::now()));
        }
        self.calls.started.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight {
            calls: Arc::clone(&self.calls),
            path: path.clone(),
            id,
        };
        let p = path.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _guard = guard;
            op(&p)
        });
        match tokio::time::timeout(self.deadline, task).await {
            Err(_) => Err(HalError::Timeout(format!(
                "{}: {what} did not return within {} ms (driver blocked)",
                path.display(),
                self.deadline.as_millis()
            ))),
            Ok(Err(join)) => Err(HalError::Io(format!(
                "{}: {what} ended abnormally: {join}",
                path.display()
            ))),
            Ok(Ok(Err(e))) => Err(map_io_error(&path, what, &e)),
            Ok(Ok(Ok(v))) => Ok(v),
        }
    }
}

/// Sort key for sysfs entry names: the numbers in them compare as numbers.
pub fn natural_key(name: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut num: Option<u64> = None;
    for c in name.chars() {
        if let Some(d) = c.to_digit(10) {
            num = Some(
                num.unwrap_or(0)
                    .saturating_mul(10)
                    .saturating_add(u64::from(d)),
            );
        } else {
            if let Some(n) = num.take() {
                out.push((std::mem::take(&mut text), n));
            }
            text.push(c);
        }
    }
    out.push((text, num.unwrap_or(0)));
    out
}

fn read_bounded(p: &Path) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    // One byte over the limit tells "exactly at the limit" from "too large".
    File::open(p)?
        .take(MAX_READ_BYTES as u64 + 1)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

/// `NotFound` means the attribute (and usually its device) is gone: [`HalError::Vanished`].
/// Everything else (EACCES, EPERM, EAGAIN, EIO, ENODATA ...) is [`HalError::Io`]: the device
/// is there but this access failed.
pub fn map_io_error(path: &Path, what: &str, e: &io::Error) -> HalError {
    if e.kind() == io::ErrorKind::NotFound {
        HalError::Vanished(format!("{}: no such file", path.display()))
    } else {
        HalError::Io(format!("{}: {what}: {e}", path.display()))
    }
}

/// `content` shortened to `QUOTE_CHARS` characters, quoted, for error messages.
pub fn quote(content: &str) -> String {
    let trimmed = content.trim();
    let mut short: String = trimmed.chars().take(QUOTE_CHARS).collect();
    if trimmed.chars().count() > QUOTE_CHARS {
        short.push('…');
    }
    format!("{short:?}")
}

fn garbage(path: &Path, expected: &str, content: &str) -> HalError {
    HalError::Protocol(format!(
        "{}: expected {expected}, found {}",
        path.display(),
        quote(content)
    ))
}

/// A decimal integer file such as `45000\n`.
pub fn parse_i64(path: &Path, content: &str) -> Result<i64, HalError> {
    content
        .trim()
        .parse()
        .map_err(|_| garbage(path, "an integer", content))
}

/// A decimal unsigned integer file.
pub fn parse_u64(path: &Path, content: &str) -> Result<u64, HalError> {
    content
        .trim()
        .parse()
        .map_err(|_| garbage(path, "an unsigned integer", content))
}

/// A hexadecimal id such as PCI `vendor` (`0x8086\n`).
pub fn parse_hex_u32(path: &Path, content: &str) -> Result<u32, HalError> {
    let t = content.trim();
    let digits = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u32::from_str_radix(digits, 16).map_err(|_| garbage(path, "a hexadecimal id", content))
}

/// Reads a small attribute synchronously, for discovery at startup only. Acceptable there,
/// and only for attributes the kernel serves from memory (hwmon `name`, PCI `vendor` and
/// `device` from the cached config header), which never enter a driver's callback.
pub(crate) fn read_static_attr(path: &Path) -> Result<String, HalError> {
    let bytes = read_bounded(path).map_err(|e| map_io_error(path, "read", &e))?;
    Ok(String::from_utf8_lossy(&bytes).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_and_garbage_is_quoted_and_truncated() {
        let p = Path::new("/sys/x/temp1_input");
        assert_eq!(parse_i64(p, "45000\n"), Ok(45000));
        assert_eq!(parse_i64(p, " -5 "), Ok(-5));
        assert_eq!(parse_hex_u32(p, "0x8086\n"), Ok(0x8086));
        let long = "z".repeat(200);
        match parse_u64(p, &long) {
            Err(HalError::Protocol(m)) => {
                assert!(m.contains("temp1_input"), "{m}");
                assert!(m.len() < 160, "{m}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_map_by_kind() {
        let p = Path::new("/sys/f");
        let nf = io::Error::from(io::ErrorKind::NotFound);
        assert!(matches!(
            map_io_error(p, "read", &nf),
            HalError::Vanished(_)
        ));
        for errno in [nix::libc::EACCES, nix::libc::EAGAIN, nix::libc::EIO] {
            let e = io::Error::from_raw_os_error(errno);
            assert!(matches!(map_io_error(p, "read", &e), HalError::Io(m) if m.contains("/sys/f")));
        }
    }
}
