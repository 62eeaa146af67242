#!/usr/bin/env bash
# The README's test command: installs the Debian tools the tests run for real when they are
# missing, then runs every test of the workspace (`cargo test --workspace`, extra arguments
# passed on). A fresh machine needs only the Rust toolchain, gcc, Python 3.11 and git; the
# Python cross-check makes its own venv (tests/python/cross_check.sh).
#
# The tools: promtool (package prometheus) checks /metrics scrapes and the alert rules;
# prometheus-alertmanager receives the collector's alerts; systemd-analyze and systemd-sysusers
# (package systemd) verify the unit files; openssl makes the throwaway CA and certificates of
# the TLS tests (tests/tls/make-certs.sh); libfaketime (package faketime) jumps the daemons'
# wall clock in tests/tests/clock.rs; chromium and chromium-driver (chromedriver) render web
# pages in a real headless browser (tests/src/browser.rs); postgresql (initdb, postgres, psql
# in /usr/lib/postgresql/<major>/bin) is the throwaway database server tests/src/postgres.rs
# starts in a temporary directory as an unprivileged user (the cluster the package may create
# and start on install is never used). Each is installed only when missing, so reruns are fast.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v promtool >/dev/null || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v openssl >/dev/null || need+=(openssl)
[ -f /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || need+=(faketime)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
if [ "${#need[@]}" -gt 0 ]; then
  echo "== installing Debian packages the tests use: ${need[*]}" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "tests/run.sh: need root or sudo to install: ${need[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  # No stdin, and keep the existing config files: nothing may wait for an answer.
  install=(apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-confdef
    -o Dpkg::Options::=--force-confold "${need[@]}")
  $sudo env DEBIAN_FRONTEND=noninteractive "${install[@]}" </dev/null \
    || { $sudo apt-get update </dev/null \
      && $sudo env DEBIAN_FRONTEND=noninteractive "${install[@]}" </dev/null; }
fi

echo "== cargo test --workspace $*" >&2
cargo test --workspace "$@"
