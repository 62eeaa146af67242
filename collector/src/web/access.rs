//! Who may read the status page: the same rule as the gRPC API, in one place.
//!
//! - With `[tls]`, readers are the holders of a client certificate from `tls.client_ca` (any
//!   such certificate may query, as over gRPC). Certificates can only be asked for over TLS,
//!   so the page is then served on `web.listen` (HTTPS); the plain `metrics_listen` answers
//!   the page's paths with 403 and says where to go. `/metrics` itself is unchanged.
//! - Without `[tls]`, the page answers loopback peers, and anyone only with
//!   `web.allow_remote = true`.
//!
//! Refusals are logged under the `audit` target with the peer, like the gRPC gate's.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use health_metrics::http::PeerCertificate;

/// The rule one listener applies to the page's paths.
#[derive(Debug, Clone)]
pub enum Access {
    /// Peers on loopback only (plain HTTP, the default without TLS).
    Loopback,
    /// Any peer (plain HTTP with `web.allow_remote`).
    Anyone,
    /// Holders of a verified client certificate (HTTPS on `web.listen`).
    Certificate,
    /// Not on this listener: the message says where the page is.
    Elsewhere(String),
}

/// The host a request was addressed to names this machine's loopback: `localhost`, a
/// loopback IP, with or without a port. Checked in loopback mode so that a web page elsewhere
/// cannot read the page through a browser on this host by pointing its own name at
/// 127.0.0.1 (DNS rebinding): such requests carry that other name.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok_and(is_loopback)
}

/// Loopback, including an IPv4 loopback address mapped into IPv6.
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

impl Access {
    /// `Ok` to serve, or why not.
    pub fn admit(
        &self,
        peer: Option<SocketAddr>,
        certificate: Option<&PeerCertificate>,
        host: Option<&str>,
    ) -> Result<(), String> {
        match self {
            Access::Anyone => Ok(()),
            Access::Loopback => match peer {
                Some(addr) if is_loopback(addr.ip()) && host.is_some_and(loopback_host) => Ok(()),
                Some(addr) if is_loopback(addr.ip()) => Err(format!(
                    "the status page answers requests addressed to localhost or a loopback address, not {:?}",
                    host.unwrap_or_default()
                )),
                Some(addr) => Err(format!(
                    "the status page answers loopback peers only, not {}; set [web] allow_remote = true, or serve it over TLS with [tls] and web.listen",
                    addr.ip()
                )),
                None => Err("the status page answers loopback peers only, and this peer's address is unknown".to_string()),
            },
            Access::Certificate => match certificate {
                Some(_) => Ok(()),
                None => Err("the status page needs a client certificate from tls.client_ca".to_string()),
            },
            Access::Elsewhere(message) => Err(message.clone()),
        }
    }
}

/// The middleware in front of the page's routes.
pub async fn gate(State(access): State<Access>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    let certificate = request.extensions().get::<PeerCertificate>();
    // HTTP/1.1 names it in Host; h2 in the request's authority.
    let host = request
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    match access.admit(peer, certificate, host) {
        Ok(()) => next.run(request).await,
        Err(reason) => {
            tracing::warn!(target: "audit", peer = ?peer, path = %request.uri().path(), %reason, "status page refused");
            (StatusCode::FORBIDDEN, format!("{reason}\n")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Option<SocketAddr> {
        Some(text.parse().expect("address"))
    }

    #[test]
    fn loopback_means_loopback_in_every_spelling() {
        for ok in [
            "127.0.0.1:1",
            "127.9.8.7:1",
            "[::1]:1",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(
                Access::Loopback
                    .admit(addr(ok), None, Some("127.0.0.1:9465"))
                    .is_ok(),
                "{ok}"
            );
        }
        for refused in [
            "10.0.0.5:1",
            "[::ffff:10.0.0.5]:1",
            "[2001:db8::1]:1",
            "0.0.0.0:1",
        ] {
            let e = Access::Loopback
                .admit(addr(refused), None, Some("127.0.0.1:9465"))
                .expect_err(refused);
            assert!(e.contains("allow_remote"), "{e}");
        }
        assert!(Access::Loopback
            .admit(None, None, Some("127.0.0.1:9465"))
            .is_err());
        assert!(Access::Anyone.admit(addr("10.0.0.5:1"), None, None).is_ok());
    }

    #[test]
    fn in_loopback_mode_the_request_must_be_addressed_to_loopback() {
        let local = addr("127.0.0.1:5");
        for host in [
            "localhost",
            "LOCALHOST:9465",
            "127.0.0.1",
            "127.0.0.1:9465",
            "[::1]:9465",
            "[::1]",
        ] {
            assert!(
                Access::Loopback.admit(local, None, Some(host)).is_ok(),
                "{host}"
            );
        }
        for host in [
            "evil.example:9465",
            "evil.example",
            "10.0.0.5:9465",
            "[2001:db8::1]:1",
            "",
        ] {
            let e = Access::Loopback
                .admit(local, None, Some(host))
                .expect_err(host);
            assert!(e.contains("addressed to localhost"), "{e}");
        }
        assert!(
            Access::Loopback.admit(local, None, None).is_err(),
            "no Host at all"
        );
    }

    #[test]
    fn over_tls_a_certificate_is_needed_whatever_the_address() {
        let e = Access::Certificate
            .admit(addr("127.0.0.1:1"), None, None)
            .expect_err("no certificate");
        assert!(e.contains("client certificate"), "{e}");
        let cert = PeerCertificate {
            subjects: vec!["CN=reader".into()],
        };
        assert!(Access::Certificate
            .admit(addr("10.0.0.5:1"), Some(&cert), None)
            .is_ok());
        let elsewhere = Access::Elsewhere("open https://x".into());
        assert_eq!(
            elsewhere.admit(addr("127.0.0.1:1"), Some(&cert), None),
            Err("open https://x".to_string())
        );
    }
}
