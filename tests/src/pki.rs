//! A throwaway PKI for the TLS tests: `tests/tls/make-certs.sh` run into a fresh directory
//! (openssl, from the Debian package the test script installs).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh throwaway PKI (see the script for the files it writes).
pub fn make_certs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tls/make-certs.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(dir.path())
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "{} failed (needs openssl, Debian package 'openssl'): {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// The path of one file the script made, which must exist.
pub fn pem(dir: &Path, name: &str) -> String {
    let p: PathBuf = dir.join(name);
    assert!(p.exists(), "{} was not made", p.display());
    p.to_str().expect("utf-8 path").to_string()
}
