//! The history on PostgreSQL (`history_url = "postgres://..."`): one database that several
//! collectors share, so a node's history and incidents stay whole across shards and
//! failovers, and any collector answers `agent-ctl history|incidents` for the whole fleet.
//!
//! Connection: the URL names host, port, user and database; the password comes only from
//! `history_password_file` (a URL with a password is refused, so it is never in a config
//! file's URL, a process list or a log). TLS is libpq's `sslmode=verify-full` with
//! `sslrootcert=FILE` (rustls checks the chain and the host name); `sslmode=disable` is
//! accepted for a loopback or Unix-socket database, and nothing in between (a TLS that does
//! not verify the server protects nothing a password is worth).
//!
//! Schema: versioned migrations in `history_schema`, applied at start in one transaction
//! under an advisory lock (two collectors starting together do not race), and a database of
//! a newer version is refused. The tables are the SQLite ones with BIGINT integers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::db::{numbered_dollars, Cell, Db, DbError, Param};

/// The newest schema this build knows.
const SCHEMA_VERSION: i64 = 1;

/// Migrations by version: each brings the database from the previous version to its own.
const MIGRATIONS: [(i64, &str); 1] = [(
    1,
    "
CREATE TABLE conditions (
    id BIGSERIAL PRIMARY KEY,
    node TEXT NOT NULL,
    subject TEXT NOT NULL,
    device TEXT NOT NULL,
    code TEXT NOT NULL,
    severity BIGINT NOT NULL,
    message TEXT NOT NULL,
    since_ms BIGINT NOT NULL,
    ended_ms BIGINT,
    UNIQUE (node, subject, code, since_ms)
);
CREATE INDEX conditions_open ON conditions (node, ended_ms);
CREATE INDEX conditions_since ON conditions (since_ms);
CREATE INDEX conditions_device ON conditions (device, since_ms);
CREATE INDEX conditions_subject ON conditions (subject, since_ms);
CREATE INDEX conditions_ended ON conditions (ended_ms) WHERE ended_ms IS NOT NULL;
CREATE TABLE alert_events (
    id BIGSERIAL PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    node TEXT NOT NULL,
    subject TEXT NOT NULL,
    device TEXT NOT NULL,
    alertname TEXT NOT NULL,
    code TEXT NOT NULL,
    severity BIGINT NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    priority TEXT NOT NULL DEFAULT '',
    since_ms BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX alert_events_at ON alert_events (at_ms);
CREATE INDEX alert_events_node ON alert_events (node, at_ms);
CREATE INDEX alert_events_device ON alert_events (device, at_ms);
CREATE INDEX alert_events_subject ON alert_events (subject, at_ms);
CREATE INDEX alert_events_spell ON alert_events (fingerprint, since_ms, id);
CREATE TABLE actions (
    node TEXT NOT NULL,
    action_id TEXT NOT NULL,
    device TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    message TEXT NOT NULL,
    caller TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    audit_hash TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (node, action_id)
);
CREATE INDEX actions_started ON actions (started_ms);
CREATE INDEX actions_node ON actions (node, started_ms);
CREATE INDEX actions_device ON actions (device, started_ms);
CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
    kind BIGINT NOT NULL,
    spell BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    ended_ms BIGINT,
    node TEXT NOT NULL,
    subject TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL,
    ref TEXT NOT NULL,
    caller TEXT NOT NULL,
    priority TEXT NOT NULL,
    audit_hash TEXT NOT NULL,
    dedup TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX events_spell ON events (kind, node, ref) WHERE spell = 1;
CREATE UNIQUE INDEX events_once ON events (dedup) WHERE dedup <> '';
CREATE INDEX events_at ON events (at_ms);
CREATE INDEX events_node ON events (node, at_ms);
CREATE INDEX events_subject ON events (subject, at_ms);
CREATE TABLE holders (
    node TEXT PRIMARY KEY,
    collector TEXT NOT NULL,
    seen_ms BIGINT NOT NULL
);
",
)];

/// An arbitrary constant: the advisory lock collectors take while migrating.
const MIGRATION_LOCK: i64 = 0x6865_616c_7468; // "health"

/// Readers kept connected between queries.
const IDLE_READERS: usize = 4;
/// Queries (connections) at once at most: a burst of page views or `agent-ctl` calls on
/// several collectors must not take the server's `max_connections` from the writers.
const MAX_READERS: usize = 8;
/// How long a query waits for one of `MAX_READERS`.
const READER_WAIT: Duration = Duration::from_secs(10);

/// Where the history database is and how to reach it, checked when the config is read.
#[derive(Clone)]
pub struct PgTarget {
    config: postgres::Config,
    tls: Option<MakeRustlsConnect>,
    /// The URL as configured (it never holds a password), for messages.
    url: String,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget").field("url", &self.url).finish()
    }
}

impl PgTarget {
    /// Parses `url` (libpq's URL form) and reads the password file. Errors name the key.
    pub fn new(url: &str, password_file: Option<&Path>) -> Result<PgTarget, String> {
        let (rest, sslmode, rootcert) = split_tls_params(url)?;
        let mut config = postgres::Config::from_str(&rest)
            .map_err(|e| format!("history_url: not a PostgreSQL URL ({e})"))?;
        if config.get_password().is_some() {
            return Err("history_url: holds a password; put it in the file \
                        history_password_file names instead"
                .to_string());
        }
        if let Some(path) = password_file {
            config.password(read_password(path)?);
        }
        config.connect_timeout(Duration::from_secs(5));
        // A database behind a dead network must show as away within a minute, not after
        // TCP's quarter of an hour of retransmissions.
        config.tcp_user_timeout(Duration::from_secs(30));
        config.keepalives_idle(Duration::from_secs(30));
        config.keepalives_interval(Duration::from_secs(10));
        config.keepalives_retries(3);
        let tls = match (sslmode.as_deref(), rootcert) {
            (Some("verify-full"), Some(ca)) => {
                let client = health_daemon::tls::rustls_client(health_daemon::tls::PemFile::new(
                    "history_url sslrootcert",
                    &ca,
                ))
                .map_err(|e| e.to_string())?;
                config.ssl_mode(postgres::config::SslMode::Require);
                Some(MakeRustlsConnect::new(client))
            }
            (Some("verify-full"), None) => {
                return Err(
                    "history_url: sslmode=verify-full needs sslrootcert=FILE, the CA \
                            that signed the server's certificate"
                        .to_string(),
                )
            }
            (Some("disable"), _) => {
                if !local_only(&config) {
                    return Err("history_url: sslmode=disable is only for a database on \
                                loopback or a Unix socket; use sslmode=verify-full"
                        .to_string());
                }
                config.ssl_mode(postgres::config::SslMode::Disable);
                None
            }
            (None, _) => {
                return Err(
                    "history_url: say sslmode=verify-full (with sslrootcert=FILE), or \
                            sslmode=disable for a loopback database"
                        .to_string(),
                )
            }
            (Some(other), _) => {
                return Err(format!(
                    "history_url: sslmode={other} is not supported: expected verify-full or \
                     disable (a TLS that does not verify the server protects nothing)"
                ))
            }
        };
        Ok(PgTarget {
            config,
            tls,
            url: url.to_string(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn connect(&self) -> Result<PgDb, DbError> {
        let client = match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(NoTls),
        }
        .map_err(|e| {
            let mut error = failed(e);
            error.message = format!("cannot connect: {}", error.message);
            // A server the CA does not vouch for is a configuration to fix, not an outage to
            // wait out.
            if error.message.contains("certificate") {
                error.unavailable = false;
            }
            error
        })?;
        Ok(PgDb {
            client,
            statements: HashMap::new(),
        })
    }

    /// Connects and brings the schema up to date: the writer's connection.
    pub(super) fn open_for_writing(&self) -> Result<PgDb, DbError> {
        let mut db = self.connect()?;
        migrate(&mut db.client)?;
        Ok(db)
    }
}

/// The URL without `sslmode` and `sslrootcert`, which are read here (the client library
/// knows neither `verify-full` nor root files), and their values.
fn split_tls_params(url: &str) -> Result<(String, Option<String>, Option<PathBuf>), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), None, None));
    };
    let (mut sslmode, mut rootcert, mut kept) = (None, None, Vec::new());
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", value)) => sslmode = Some(value.to_string()),
            Some(("sslrootcert", value)) => rootcert = Some(PathBuf::from(value)),
            Some((_, _)) => kept.push(pair),
            None => return Err(format!("history_url: `{pair}` is not key=value")),
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, sslmode, rootcert))
}

/// Whether every host (and `hostaddr`) of the config is loopback or a Unix socket.
fn local_only(config: &postgres::Config) -> bool {
    !config.get_hosts().is_empty()
        && config
            .get_hostaddrs()
            .iter()
            .all(std::net::IpAddr::is_loopback)
        && config.get_hosts().iter().all(|host| match host {
            postgres::config::Host::Tcp(name) => {
                name == "localhost"
                    || name
                        .trim_matches(|c| c == '[' || c == ']')
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            postgres::config::Host::Unix(_) => true,
        })
}

/// The password: the file's first line. A file others can read is refused, as ssh does.
fn read_password(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let named = |what: String| format!("history_password_file: {}: {what}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| named(format!("cannot read: {e}")))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(named(format!(
            "readable by others (mode {:o}); expected 0600 or 0400",
            meta.permissions().mode() & 0o777
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| named(format!("cannot read: {e}")))?;
    let password = text.lines().next().unwrap_or("").to_string();
    if password.is_empty() {
        return Err(named(
            "is empty; expected the password on its first line".to_string(),
        ));
    }
    Ok(password)
}

/// The schema version recorded in the database; 0 for an empty one.
fn version(client: &mut Client) -> Result<i64, DbError> {
    let exists = client
        .query_one("SELECT to_regclass('history_schema') IS NOT NULL", &[])
        .map_err(failed)?
        .try_get::<_, bool>(0)
        .map_err(failed)?;
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_one("SELECT max(version) FROM history_schema", &[])
        .map_err(failed)?
        .try_get::<_, Option<i64>>(0)
        .map_err(failed)?
        .unwrap_or(0))
}

/// Brings the database to `SCHEMA_VERSION`. A current database is only read (so a role that
/// may read and write rows but not create tables can run a collector); an upgrade runs in one
/// transaction under an advisory lock, re-reading the version once it holds the lock.
fn migrate(client: &mut Client) -> Result<(), DbError> {
    let newer = |version: i64| {
        DbError::refused(format!(
            "written by a newer collector (schema {version}, this build knows {SCHEMA_VERSION})"
        ))
    };
    match version(client)? {
        current if current == SCHEMA_VERSION => return Ok(()),
        newer_one if newer_one > SCHEMA_VERSION => return Err(newer(newer_one)),
        _ => {}
    }
    let mut tx = client.transaction().map_err(failed)?;
    // Another collector upgrading holds the lock for seconds at most.
    tx.batch_execute("SET LOCAL lock_timeout = '30s'")
        .map_err(failed)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(failed)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS history_schema (version BIGINT NOT NULL)")
        .map_err(failed)?;
    let version: i64 = tx
        .query_opt("SELECT max(version) FROM history_schema", &[])
        .map_err(failed)?
        .and_then(|row| row.get::<_, Option<i64>>(0))
        .unwrap_or(0);
    if version > SCHEMA_VERSION {
        return Err(newer(version));
    }
    for (step, sql) in MIGRATIONS.iter().filter(|(step, _)| *step > version) {
        tx.batch_execute(sql).map_err(|e| {
            DbError::refused(format!("migration to schema {step}: {}", describe(&e)))
        })?;
        tx.execute("INSERT INTO history_schema (version) VALUES ($1)", &[step])
            .map_err(failed)?;
    }
    tx.commit().map_err(failed)
}

/// The error's own words: the server's message (with its SQLSTATE) or the client's.
fn describe(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            // The client's own words say little ("error performing TLS handshake"); the
            // cause is in the chain (an unknown issuer, a refused connection).
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    }
}

/// A server error in class 08 (connection), 40 (a deadlock or serialization failure: worth
/// another try), 53 (insufficient resources: too many connections, a full disk) or 57
/// (operator intervention: shutdown, starting up, a statement timeout), or any client-side
/// error (I/O, closed), is the database being away for now; anything else (a refused
/// password, an unknown database, a value the database will not store) is a refusal.
fn failed(error: postgres::Error) -> DbError {
    let unavailable = error.is_closed()
        || error.as_db_error().is_none_or(|db| {
            let code = db.code().code();
            ["08", "40", "53", "57"]
                .iter()
                .any(|class| code.starts_with(class))
        });
    DbError {
        message: describe(&error),
        unavailable,
    }
}

/// A PostgreSQL connection behind [`Db`]; statements are prepared once per connection.
pub(crate) struct PgDb {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl PgDb {
    fn statement(&mut self, sql: &str) -> Result<Statement, DbError> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self
            .client
            .prepare(&numbered_dollars(sql))
            .map_err(failed)?;
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

fn boxed<'a>(params: &[Param<'a>]) -> Vec<Box<dyn ToSql + Sync + 'a>> {
    params
        .iter()
        .map(|param| -> Box<dyn ToSql + Sync + 'a> {
            match param {
                Param::Int(value) => Box::new(*value),
                // PostgreSQL stores no NUL in text; an agent's message may carry one.
                Param::Text(text) if text.contains('\0') => {
                    Box::new(text.replace('\0', "\u{fffd}"))
                }
                Param::Text(text) => Box::new(*text),
                Param::Null => Box::new(None::<i64>),
            }
        })
        .collect()
}

impl Db for PgDb {
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, DbError> {
        let statement = self.statement(sql)?;
        let values = boxed(params);
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
        self.client.execute(&statement, &refs).map_err(failed)
    }

    fn rows(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Vec<Cell>>, DbError> {
        let statement = self.statement(sql)?;
        let values = boxed(params);
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
        let rows = self.client.query(&statement, &refs).map_err(failed)?;
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| {
                        let cell = match *row.columns()[i].type_() {
                            Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Cell::Int),
                            Type::INT4 => row
                                .try_get::<_, Option<i32>>(i)?
                                .map(|v| Cell::Int(i64::from(v))),
                            _ => row.try_get::<_, Option<String>>(i)?.map(Cell::Text),
                        };
                        Ok(cell.unwrap_or(Cell::Null))
                    })
                    .collect::<Result<Vec<Cell>, postgres::Error>>()
                    .map_err(failed)
            })
            .collect()
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        self.client.batch_execute(sql).map_err(failed)
    }

    fn row_id(&self) -> &'static str {
        "ctid"
    }
}

/// Reader connections for queries, kept between them (up to `IDLE_READERS`).
pub(crate) struct PgReaders {
    target: PgTarget,
    idle: Mutex<Vec<PgDb>>,
    /// Queries running now, and the condition a waiting one sleeps on.
    busy: Mutex<usize>,
    freed: std::sync::Condvar,
}

impl PgReaders {
    pub(crate) fn new(target: PgTarget) -> Arc<PgReaders> {
        Arc::new(PgReaders {
            target,
            idle: Mutex::new(Vec::new()),
            busy: Mutex::new(0),
            freed: std::sync::Condvar::new(),
        })
    }

    pub(crate) fn target(&self) -> &PgTarget {
        &self.target
    }

    /// Runs `work` on an idle connection or a new one, at most `MAX_READERS` at once; a
    /// connection that failed is dropped, and a query that found its kept connection closed
    /// (the server restarted since) is run once more on a new one.
    pub(crate) fn with<T>(
        &self,
        work: &mut dyn FnMut(&mut dyn Db) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        {
            let busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
            let (mut busy, waited) = self
                .freed
                .wait_timeout_while(busy, READER_WAIT, |busy| *busy >= MAX_READERS)
                .unwrap_or_else(PoisonError::into_inner);
            if waited.timed_out() && *busy >= MAX_READERS {
                return Err(DbError {
                    message: format!("{MAX_READERS} history queries already running"),
                    unavailable: true,
                });
            }
            *busy += 1;
        }
        let result = self.run(work);
        *self.busy.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
        self.freed.notify_one();
        result
    }

    fn run<T>(
        &self,
        work: &mut dyn FnMut(&mut dyn Db) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let kept = idle.is_some();
        let mut db = match idle {
            Some(db) if !db.is_closed() => db,
            _ => self.target.connect()?,
        };
        let mut result = work(&mut db);
        if kept && result.as_ref().is_err_and(|e| e.unavailable) {
            db = self.target.connect()?;
            result = work(&mut db);
        }
        if result.is_ok() || result.as_ref().is_err_and(|e| !e.unavailable) {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < IDLE_READERS {
                idle.push(db);
            }
        }
        result
    }
}

impl Drop for PgReaders {
    /// A connection owns a small runtime, which must not be dropped on an async thread (the
    /// last reader may go with the service at shutdown): idle ones are dropped on a thread of
    /// their own.
    fn drop(&mut self) {
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(PoisonError::into_inner));
        if !idle.is_empty() {
            let _ = std::thread::Builder::new()
                .name("history-readers-close".to_string())
                .spawn(move || drop(idle));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_read_here_and_the_rest_passed_on() {
        let (rest, mode, root) = split_tls_params(
            "postgres://h@db:5432/history?sslmode=verify-full&application_name=c&sslrootcert=/ca.pem",
        )
        .expect("parses");
        assert_eq!(rest, "postgres://h@db:5432/history?application_name=c");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root, Some(PathBuf::from("/ca.pem")));
    }

    #[test]
    fn unsafe_or_incomplete_urls_are_refused_naming_the_key() {
        let error = |url: &str| PgTarget::new(url, None).expect_err("refused");
        assert!(error("postgres://h:secret@127.0.0.1/db?sslmode=disable")
            .contains("history_password_file"));
        assert!(error("postgres://h@db.example/db?sslmode=disable").contains("loopback"));
        assert!(error("postgres://h@db.example/db?sslmode=require").contains("verify-full"));
        assert!(error("postgres://h@db.example/db?sslmode=verify-full").contains("sslrootcert"));
        assert!(error("postgres://h@db.example/db").contains("sslmode"));
        assert!(
            error("postgres://h@localhost/db?sslmode=disable&hostaddr=10.0.0.5")
                .contains("loopback"),
            "a hostaddr elsewhere is not loopback"
        );
        assert!(PgTarget::new("postgres://h@127.0.0.1:5/db?sslmode=disable", None).is_ok());
    }

    #[test]
    fn tls_verifies_the_server_against_the_configured_ca_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = health_e2e::postgres::tls_certs(dir.path()).expect("certificates");
        let server =
            health_e2e::postgres::PgServer::start_tls(&certs.cert, &certs.key).expect("server");
        server.create_database("tls").expect("database");
        let url = |ca: &Path| {
            format!(
                "postgres://health@localhost:{}/tls?sslmode=verify-full&sslrootcert={}",
                server.port(),
                ca.display()
            )
        };
        let target = PgTarget::new(&url(&certs.ca), Some(server.password_file())).expect("target");
        let mut db = std::thread::scope(|s| s.spawn(|| target.open_for_writing()).join())
            .expect("thread")
            .unwrap_or_else(|e| panic!("verify-full with the right CA: {e}"));
        let rows = db
            .rows(
                "SELECT CASE WHEN ssl THEN 'on' ELSE 'off' END FROM pg_stat_ssl \
                 WHERE pid = pg_backend_pid()",
                &[],
            )
            .expect("pg_stat_ssl");
        assert_eq!(rows, vec![vec![Cell::Text("on".to_string())]]);

        let rogue =
            PgTarget::new(&url(&certs.wrong_ca), Some(server.password_file())).expect("target");
        let error = rogue
            .open_for_writing()
            .err()
            .expect("another CA's server is refused");
        assert!(
            !error.unavailable,
            "a configuration error, not an outage: {error}"
        );
        assert!(error.message.contains("certificate"), "{error}");
    }

    #[test]
    fn a_password_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = read_password(&path).expect_err("refused");
        assert!(error.contains("mode 644"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(read_password(&path).expect("read"), "s3cret");
    }
}
