//! The subject list of a real certificate (made by openssl, checked in under `tests/certs/`):
//! the form both daemons' access rules are written in, IP SANs included.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use health_daemon::certificate_subjects;

const NODE_5: &str = include_str!("certs/node-5-ip-san.pem");

fn der(pem: &str) -> Vec<u8> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("a PEM certificate");
    block.contents
}

#[test]
fn every_name_of_the_certificate_in_the_one_rendering() {
    let subjects = certificate_subjects(&der(NODE_5)).expect("a certificate");
    assert_eq!(
        subjects,
        [
            "node-5",
            "node-5.example",
            "IP:10.0.0.5",
            "IP:fd00::5",
            "ops@example.com",
            "spiffe://fleet/node-5",
        ]
    );
}
