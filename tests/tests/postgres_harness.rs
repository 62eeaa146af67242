//! The throwaway PostgreSQL harness (`health_e2e::postgres`) against a real server, so the
//! collector's PostgreSQL tests can trust it: a cluster that takes passwords and databases,
//! keeps its data across a fast shutdown and a restart on the same port, serves TLS that a
//! client verifies against the right CA (and not a wrong one), and leaves no postmaster
//! behind when dropped.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::os::unix::fs::PermissionsExt;

use health_e2e::postgres::{tls_certs, PgServer};
use nix::errno::Errno;
use nix::sys::signal::kill;

#[test]
fn databases_tables_and_data_survive_a_restart_on_the_same_port() {
    let mut pg = PgServer::start().unwrap();
    let port = pg.port();
    assert_eq!(pg.user(), "health");

    // The password file holds only the password, readable by its owner alone.
    let file = pg.password_file();
    assert_eq!(std::fs::read_to_string(file).unwrap(), pg.password());
    let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} mode", file.display());

    let a = pg.create_database("health_a").unwrap();
    let b = pg.create_database("health_b").unwrap();
    assert_eq!(a, format!("postgres://health@127.0.0.1:{port}/health_a"));
    assert_eq!(b, format!("postgres://health@127.0.0.1:{port}/health_b"));
    assert!(!a.contains(pg.password()), "no password in the URL: {a}");

    pg.psql("health_a", "create table t (id int primary key, name text)")
        .unwrap();
    pg.psql("health_a", "insert into t values (1, 'one'), (2, 'two')")
        .unwrap();
    assert_eq!(
        pg.psql("health_a", "select id, name from t order by id")
            .unwrap(),
        "1|one\n2|two\n"
    );
    // The databases are separate: the table exists only in the first.
    let err = pg.psql("health_b", "select * from t").unwrap_err();
    assert!(format!("{err:#}").contains("does not exist"), "{err:#}");

    // A wrong password is refused: the server really authenticates.
    let err = pg
        .psql_with("dbname=health_a password=wrong", "select 1")
        .map(|_| ())
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("password authentication failed"),
        "{err:#}"
    );

    // Down: a query fails. Up again on the same port: the data is still there.
    let first = pg.pid().unwrap();
    pg.stop().unwrap();
    assert_eq!(pg.pid(), None);
    assert_eq!(
        kill(first, None),
        Err(Errno::ESRCH),
        "postmaster {first} gone"
    );
    assert!(pg.psql("health_a", "select 1").is_err());
    pg.restart().unwrap();
    assert_eq!(pg.port(), port);
    assert_eq!(
        pg.psql("health_a", "select name from t where id = 2")
            .unwrap(),
        "two\n"
    );

    // Dropped: the postmaster is stopped and reaped.
    let pid = pg.pid().unwrap();
    drop(pg);
    assert_eq!(kill(pid, None), Err(Errno::ESRCH), "postmaster {pid} gone");
}

#[test]
fn tls_verifies_against_the_right_ca_only() {
    let pki = tempfile::tempdir().unwrap();
    let certs = tls_certs(pki.path()).unwrap();
    let pg = PgServer::start_tls(&certs.cert, &certs.key).unwrap();

    let verified = format!(
        "host=localhost sslmode=verify-full sslrootcert={}",
        certs.ca.display()
    );
    assert_eq!(
        pg.psql_with(
            &verified,
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()"
        )
        .unwrap(),
        "t\n"
    );
    // The certificate names 127.0.0.1 too.
    let by_ip = format!(
        "host=127.0.0.1 sslmode=verify-full sslrootcert={}",
        certs.ca.display()
    );
    assert_eq!(pg.psql_with(&by_ip, "select 1").unwrap(), "1\n");

    let wrong = format!(
        "host=localhost sslmode=verify-full sslrootcert={}",
        certs.wrong_ca.display()
    );
    let err = pg.psql_with(&wrong, "select 1").unwrap_err();
    assert!(format!("{err:#}").contains("certificate"), "{err:#}");
}
