//! The names a client certificate answers to, as both daemons' access rules match them: the
//! agent's `operator_subjects` / `reader_subjects` and the collector's `agent_subjects`.
//!
//! rustls hands over only the DER of a certificate it has already verified against the
//! configured CA; this module reads the names out of it. One rendering for both daemons, so a
//! subject copied from one config into the other matches the same certificates:
//!
//! - each subject CN as written: `node-1`;
//! - DNS, email and URI SANs as written, without a prefix: `node-1.example`,
//!   `ops@example.com`, `spiffe://fleet/node-1`;
//! - IP SANs as `IP:` and the address in Rust's standard form: `IP:10.0.0.5`, `IP:fd00::5`
//!   (the prefix keeps an address from matching a CN that happens to spell it).
//!
//! Other SAN kinds (directory names, registered IDs, ...) are not names anyone configures, so
//! they are left out.

use std::net::IpAddr;

use x509_parser::extensions::GeneralName;

/// The bytes given as a client certificate do not parse as X.509. The handshake verified the
/// chain, so this means a certificate x509-parser cannot read, not a forged one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("client certificate: not a valid X.509 certificate: {0}")]
pub struct NotACertificate(String);

/// The subject CNs of a DER certificate, then its DNS, email, URI and IP SANs in the order the
/// certificate lists them.
pub fn certificate_subjects(der: &[u8]) -> Result<Vec<String>, NotACertificate> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| NotACertificate(e.to_string()))?;
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    // A SAN extension that does not parse leaves the CNs: they are still the certificate's.
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        names.extend(san.value.general_names.iter().filter_map(san_name));
    }
    Ok(names)
}

fn san_name(name: &GeneralName<'_>) -> Option<String> {
    match name {
        GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
            Some((*s).to_string())
        }
        GeneralName::IPAddress(octets) => ip_address(octets).map(|ip| format!("IP:{ip}")),
        _ => None,
    }
}

/// An IP SAN's octets: 4 for IPv4, 16 for IPv6; any other length is malformed and skipped.
fn ip_address(octets: &[u8]) -> Option<IpAddr> {
    match octets.len() {
        4 => <[u8; 4]>::try_from(octets).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(octets).ok().map(IpAddr::from),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_certificate() {
        let e = certificate_subjects(b"not a cert").expect_err("garbage");
        assert!(
            e.to_string()
                .starts_with("client certificate: not a valid X.509 certificate: "),
            "{e}"
        );
    }

    #[test]
    fn ip_octets_of_either_family_and_nothing_else() {
        assert_eq!(
            ip_address(&[10, 0, 0, 5]).map(|ip| ip.to_string()),
            Some("10.0.0.5".into())
        );
        let mut v6 = [0_u8; 16];
        v6[0] = 0xfd;
        v6[15] = 5;
        assert_eq!(
            ip_address(&v6).map(|ip| ip.to_string()),
            Some("fd00::5".into())
        );
        assert_eq!(ip_address(&[10, 0, 0]), None);
    }
}
