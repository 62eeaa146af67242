//! A real, throwaway PostgreSQL server for the tests that store the collector's data in
//! PostgreSQL (issue 16): Debian's `postgresql` binaries (`initdb`, `postgres`, `psql`, which
//! `tests/run.sh` installs), a cluster made by `initdb` in a temporary directory, a postmaster
//! on a free loopback port with its Unix socket in a private directory, and password (SCRAM)
//! authentication for the superuser `health`, so a client must really log in.
//!
//! `initdb` and `postgres` refuse to run as root, and the tests run as root in CI: there they
//! run as the `postgres` system user the Debian package creates (`nobody` without it), through
//! `setpriv`, which execs in place so the child we hold is the postmaster itself and can be
//! signalled and reaped by pid. Run as anyone else, they run as the current user.
//!
//! Every step is bounded and every failure names the command and what it expected; the
//! postmaster is stopped (fast shutdown, by pid) when the [`PgServer`] is dropped.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{chown, geteuid, Gid, Pid, Uid, User};

/// How long a start or restart may take to accept a query: initdb's cluster starts in well
/// under a second on a quiet machine, but CI machines build in parallel.
const READY_LIMIT: Duration = Duration::from_secs(30);
/// How long a fast shutdown may take before the postmaster is killed.
const STOP_LIMIT: Duration = Duration::from_secs(20);
/// The superuser `initdb` creates; the collector logs in as it.
const SUPERUSER: &str = "health";
/// Attempts at a free port: another process may take the one we picked before we bind it.
const PORT_ATTEMPTS: usize = 3;

/// A running throwaway PostgreSQL server. Owns its temporary directory (cluster, socket
/// directory, password file, log) and its postmaster, which is stopped on drop.
pub struct PgServer {
    bindir: PathBuf,
    runas: Option<RunAs>,
    dir: tempfile::TempDir,
    port: u16,
    password: String,
    password_file: PathBuf,
    tls: bool,
    postmaster: Option<Child>,
}

/// The unprivileged account the server runs as when the tests run as root.
#[derive(Clone, Copy)]
struct RunAs {
    uid: Uid,
    gid: Gid,
}

/// A server certificate for [`PgServer::start_tls`] from a throwaway CA.
pub struct PgCerts {
    /// The CA that signed `cert`: a client's `sslrootcert`.
    pub ca: PathBuf,
    /// The server certificate, valid for `localhost` and `127.0.0.1`.
    pub cert: PathBuf,
    /// Its private key (mode 0600).
    pub key: PathBuf,
    /// A second CA that signed nothing the server presents: verification against it fails.
    pub wrong_ca: PathBuf,
}

/// Makes a throwaway CA and a server certificate for `localhost` and `127.0.0.1` in `dir`
/// with `tests/tls/make-certs.sh` (the collector's certificate there has those names).
pub fn tls_certs(dir: &Path) -> Result<PgCerts> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tls/make-certs.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run bash {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed ({}; needs openssl, Debian package 'openssl'): {}",
            script.display(),
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let file = |name: &str| -> Result<PathBuf> {
        let path = dir.join(name);
        if !path.is_file() {
            bail!("{} did not write {}", script.display(), path.display());
        }
        Ok(path)
    };
    Ok(PgCerts {
        ca: file("ca.pem")?,
        cert: file("collector.pem")?,
        key: file("collector.key")?,
        wrong_ca: file("rogue-ca.pem")?,
    })
}

/// The directory of the newest installed PostgreSQL's programs: the highest
/// `/usr/lib/postgresql/<major>/bin` holding `initdb` (Debian's layout), else what
/// `pg_config --bindir` says.
pub fn pg_bindir() -> Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir(root)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let major = e.file_name().to_str()?.parse::<u32>().ok()?;
                    let bin = e.path().join("bin");
                    bin.join("initdb").is_file().then_some((major, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Ok(bin);
    }
    let out = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .output();
    if let Ok(out) = out {
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && bin.join("initdb").is_file() {
            return Ok(bin);
        }
    }
    bail!(
        "no PostgreSQL server found: expected /usr/lib/postgresql/<major>/bin/initdb or \
         `pg_config --bindir` naming a directory with initdb; install the Debian package \
         'postgresql' (tests/run.sh does)"
    )
}

impl PgServer {
    /// Makes a cluster in a fresh temporary directory and starts it on a free loopback port;
    /// returns once it answers a query as the superuser (bounded, 30 s).
    pub fn start() -> Result<PgServer> {
        Self::start_inner(None)
    }

    /// Like [`PgServer::start`], with `ssl=on` and the given server certificate and key
    /// (copied into the cluster; the key mode 0600, owned by the server's account). Clients
    /// may still connect without TLS: whether they must is the client's `sslmode`.
    pub fn start_tls(cert_pem: &Path, key_pem: &Path) -> Result<PgServer> {
        Self::start_inner(Some((cert_pem, key_pem)))
    }

    fn start_inner(tls: Option<(&Path, &Path)>) -> Result<PgServer> {
        let bindir = pg_bindir()?;
        let runas = run_as()?;
        let dir = tempfile::tempdir().context("create a temporary directory for PostgreSQL")?;
        give(dir.path(), runas, 0o700)?;
        let password = random_hex(16)?;
        let password_file = dir.path().join("password");
        write_private(&password_file, &password, None)?;
        let mut server = PgServer {
            bindir,
            runas,
            port: 0,
            password,
            password_file,
            tls: tls.is_some(),
            postmaster: None,
            dir,
        };
        server.initdb()?;
        fs::create_dir(server.socket_dir())
            .with_context(|| format!("create {}", server.socket_dir().display()))?;
        give(&server.socket_dir(), runas, 0o700)?;
        if let Some((cert, key)) = tls {
            server.install_tls(cert, key)?;
        }
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            server.port = crate::free_port();
            match server.launch() {
                Ok(()) => return Ok(server),
                // Only a postmaster that exited (most likely: the port was taken meanwhile)
                // is worth another port; a server that never answered is not.
                Err(e) if server.postmaster.is_none() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("PostgreSQL did not start")))
    }

    /// The loopback TCP port the server listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's name, `health`.
    pub fn user(&self) -> &str {
        SUPERUSER
    }

    /// The superuser's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A file holding only the superuser's password (no newline, mode 0600, owned by the
    /// test's user): for the collector's `password_file` setting.
    pub fn password_file(&self) -> &Path {
        &self.password_file
    }

    /// The directory holding the server's Unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// The postmaster's pid while it runs.
    pub fn pid(&self) -> Option<Pid> {
        self.postmaster
            .as_ref()
            .map(|c| Pid::from_raw(c.id() as i32))
    }

    /// The server's log so far (its stderr), for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Creates database `name` (letters, digits and `_` only) and returns its URL without
    /// the password: `postgres://health@127.0.0.1:PORT/name`.
    pub fn create_database(&self, name: &str) -> Result<String> {
        let plain = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !plain {
            bail!("database name {name:?}: expected letters, digits and '_' only");
        }
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(self.url(name))
    }

    /// The URL of database `db` on this server, without the password.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs `psql -At -c sql` on database `db` as the superuser over TCP and returns its
    /// stdout (one row a line, columns separated by `|`); an error carries psql's stderr.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        self.psql_with(&format!("dbname={db}"), sql)
    }

    /// Like [`PgServer::psql`], with extra libpq connection keywords that override the
    /// defaults (`host=127.0.0.1 port=PORT user=health dbname=postgres sslmode=disable`, or
    /// `sslmode=require` on a TLS server), e.g.
    /// `host=localhost sslmode=verify-full sslrootcert=/path/ca.pem`.
    pub fn psql_with(&self, conninfo: &str, sql: &str) -> Result<String> {
        let sslmode = if self.tls { "require" } else { "disable" };
        let conn = format!(
            "host=127.0.0.1 port={} user={SUPERUSER} dbname=postgres sslmode={sslmode} \
             connect_timeout=5 {conninfo}",
            self.port
        );
        let out = self.psql_output(&conn, sql)?;
        if !out.status.success() {
            bail!(
                "psql {conn:?} -c {sql:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs psql with the password in its environment (never on its command line, where
    /// `ps` would show it) and none of the user's files: no `.psqlrc` (`-X`), `.pgpass`,
    /// service file, or client certificate from `~/.postgresql` (HOME is our directory).
    fn psql_output(&self, conn: &str, sql: &str) -> Result<Output> {
        let psql = self.bindir.join("psql");
        Command::new(&psql)
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", conn, "-c", sql])
            .env("PGPASSWORD", &self.password)
            .env("PGPASSFILE", "/dev/null")
            .env("PGSERVICEFILE", "/dev/null")
            .env("HOME", self.dir.path())
            .env_remove("PGSSLMODE")
            .env_remove("PGHOSTADDR")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run {}", psql.display()))
    }

    /// Fast shutdown: SIGINT to the postmaster, which ends its sessions and exits; waits
    /// for it (bounded; past the bound it is killed and this fails). Does nothing if stopped.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.postmaster.take() else {
            return Ok(());
        };
        let pid = Pid::from_raw(child.id() as i32);
        if let Ok(None) = child.try_wait() {
            kill(pid, Signal::SIGINT)
                .with_context(|| format!("send SIGINT to the postmaster (pid {pid})"))?;
        }
        if wait_exit(&mut child, STOP_LIMIT).is_some() {
            return Ok(());
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!(
            "the postmaster (pid {pid}) did not exit within {STOP_LIMIT:?} of SIGINT and was \
             killed; its log: {}",
            self.log()
        )
    }

    /// Starts the server again on the same port and cluster (stopping it first if it runs)
    /// and waits until it answers a query.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.launch()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// A command for one of the server's programs, run as the server's account.
    fn server_command(&self, program: &str) -> Command {
        let path = self.bindir.join(program);
        let mut cmd = match self.runas {
            Some(RunAs { uid, gid }) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(path);
                c
            }
            None => Command::new(path),
        };
        // The test's own working directory may be closed to the server's account.
        cmd.current_dir(self.dir.path()).stdin(Stdio::null());
        cmd
    }

    /// `initdb` with the superuser `health`, SCRAM passwords for every connection, and the C
    /// locale (so the cluster does not depend on the machine's locales).
    fn initdb(&self) -> Result<()> {
        // initdb reads the password as the server's account; this copy goes once it has.
        let pwfile = self.dir.path().join("initdb-password");
        write_private(&pwfile, &self.password, self.runas)?;
        let out = self
            .server_command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-U", SUPERUSER, "--auth=scram-sha-256", "-E", "UTF8"])
            .args(["--locale=C", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .with_context(|| format!("run {}", self.bindir.join("initdb").display()))?;
        let _ = fs::remove_file(&pwfile);
        if !out.status.success() {
            bail!(
                "{} -D {} failed ({}): {}{}",
                self.bindir.join("initdb").display(),
                self.data_dir().display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Copies the certificate and key into the cluster where `ssl_cert_file` and
    /// `ssl_key_file` find them; the server refuses a key others may read.
    fn install_tls(&self, cert: &Path, key: &Path) -> Result<()> {
        for (from, name, mode) in [(cert, "server.crt", 0o644), (key, "server.key", 0o600)] {
            let to = self.data_dir().join(name);
            fs::copy(from, &to)
                .with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
            give(&to, self.runas, mode)?;
        }
        Ok(())
    }

    /// Starts the postmaster on `self.port` and waits until it answers a query. If the
    /// postmaster exits meanwhile, `self.postmaster` is left empty and the error has its log.
    fn launch(&mut self) -> Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("open {}", self.log_path().display()))?;
        let log_out = log
            .try_clone()
            .with_context(|| format!("duplicate {}", self.log_path().display()))?;
        let mut cmd = self.server_command("postgres");
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.socket_dir().display()
            ))
            // A throwaway cluster: durability only costs time here.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"]);
        if self.tls {
            cmd.args(["-c", "ssl=on", "-c", "ssl_cert_file=server.crt"])
                .args(["-c", "ssl_key_file=server.key"]);
        }
        let child = cmd
            .stdout(Stdio::from(log_out))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("start {}", self.bindir.join("postgres").display()))?;
        self.postmaster = Some(child);
        self.wait_ready()
    }

    /// Polls `select 1` until it answers, the postmaster exits, or [`READY_LIMIT`] passes.
    fn wait_ready(&mut self) -> Result<()> {
        let t0 = Instant::now();
        loop {
            if let Some(child) = self.postmaster.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.postmaster = None;
                    bail!(
                        "the postmaster on 127.0.0.1:{} exited ({status}) before it answered \
                         a query; its log: {}",
                        self.port,
                        self.log()
                    );
                }
            }
            let last_error = match self.psql("postgres", "select 1") {
                Ok(out) if out.trim() == "1" => return Ok(()),
                Ok(out) => format!("select 1 answered {out:?}"),
                Err(e) => format!("{e:#}"),
            };
            if t0.elapsed() > READY_LIMIT {
                // The postmaster stays ours: the caller gives up, and drop stops it.
                let log = self.log();
                bail!(
                    "PostgreSQL on 127.0.0.1:{} did not answer `select 1` within \
                     {READY_LIMIT:?} (last: {last_error}); its log: {log}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Nothing to report to in a drop: a postmaster that would not stop was killed.
        let _ = self.stop();
    }
}

/// The account the server runs as: none (the current user) unless we are root, where
/// PostgreSQL refuses to run; then `postgres`, or `nobody` without the Debian package's user.
fn run_as() -> Result<Option<RunAs>> {
    if !geteuid().is_root() {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let Ok(Some(user)) = User::from_name(name) {
            return Ok(Some(RunAs {
                uid: user.uid,
                gid: user.gid,
            }));
        }
    }
    bail!("running as root, PostgreSQL needs an unprivileged account: expected user 'postgres' or 'nobody'")
}

/// Sets `path`'s mode and, when the server runs as another account, hands it over.
fn give(path: &Path, runas: Option<RunAs>, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))?;
    if let Some(RunAs { uid, gid }) = runas {
        chown(path, Some(uid), Some(gid))
            .with_context(|| format!("chown {uid}:{gid} {}", path.display()))?;
    }
    Ok(())
}

/// Writes `text` to a new file readable only by its owner (`runas`, or the current user).
fn write_private(path: &Path, text: &str, runas: Option<RunAs>) -> Result<()> {
    fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    give(path, runas, 0o600)
}

/// `bytes` random bytes from the kernel, as hex: a password no other test shares.
fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("read /dev/urandom for a PostgreSQL password")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Waits (bounded) for `child` to exit and reaps it; `None` if it still runs.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let t0 = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if t0.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
