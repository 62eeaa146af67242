//! gRPC server latency and outcome, per method, as a tower layer around a tonic server.
//!
//! The layer sees every request before tonic routes it and the response when its headers are
//! ready, so it measures handling time without touching any service's code. For unary calls
//! that is the whole call; for streaming calls it is the time to open the stream. The status
//! is the one in the response headers (`grpc-status`, present when a call fails before any
//! message, which is how tonic returns every unary error); a response without it is counted
//! as OK.
//!
//! Method names come from request paths, which any client can make up, so at most
//! [`MAX_METHODS`] distinct methods are tracked; requests to others are counted under
//! `grpc_service="other"`, `grpc_method="other"`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tonic::codegen::http;
use tower::{Layer, Service};

use crate::histogram::{Histogram, LATENCY_BUCKETS};
use crate::text::Exposition;

/// Methods tracked before the rest are lumped together (a client can invent paths).
pub const MAX_METHODS: usize = 128;

/// gRPC status codes by number, named as gRPC's own metrics name them.
const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

struct MethodStats {
    latency: Histogram,
    by_code: BTreeMap<&'static str, u64>,
}

/// Per-method counts and latencies of one daemon's gRPC servers.
#[derive(Default)]
pub struct RpcStats {
    methods: Mutex<BTreeMap<(String, String), MethodStats>>,
}

impl RpcStats {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The layer to add to a `tonic::transport::Server` builder.
    pub fn layer(self: &Arc<Self>) -> RpcMetricsLayer {
        RpcMetricsLayer {
            stats: Arc::clone(self),
        }
    }

    pub fn observe(&self, path: &str, code: &'static str, took: Duration) {
        let (service, method) = split_path(path);
        let mut methods = self.methods.lock().unwrap_or_else(PoisonError::into_inner);
        let mut key = (service.to_string(), method.to_string());
        if !methods.contains_key(&key) && methods.len() >= MAX_METHODS {
            key = ("other".to_string(), "other".to_string());
        }
        let stats = methods.entry(key).or_insert_with(|| MethodStats {
            latency: Histogram::new(&LATENCY_BUCKETS),
            by_code: BTreeMap::new(),
        });
        stats.latency.observe(took);
        *stats.by_code.entry(code).or_insert(0) += 1;
    }

    /// Adds `health_grpc_server_handled_total` and `health_grpc_server_handling_seconds`.
    pub fn render(&self, out: &mut Exposition, extra: &[(&str, &str)]) {
        // Copy out under the lock, render after it: recorders wait for a copy, not for text.
        let copied: Vec<_> = {
            let methods = self.methods.lock().unwrap_or_else(PoisonError::into_inner);
            methods
                .iter()
                .map(|((s, m), st)| (s.clone(), m.clone(), st.latency.read(), st.by_code.clone()))
                .collect()
        };
        out.counter(
            "health_grpc_server_handled_total",
            "gRPC calls completed by the server, by method and status code (as of the response headers).",
        );
        out.histogram(
            "health_grpc_server_handling_seconds",
            "Time from request to response headers, per gRPC method (for streams: to open them).",
        );
        for (service, method, (buckets, sum, count), by_code) in &copied {
            let mut labels: Vec<(&str, &str)> = extra.to_vec();
            labels.push(("grpc_service", service));
            labels.push(("grpc_method", method));
            out.histogram("health_grpc_server_handling_seconds", "")
                .histogram(&labels, buckets, *sum, *count);
            for (code, n) in by_code {
                let mut with_code = labels.clone();
                with_code.push(("grpc_code", code));
                out.counter("health_grpc_server_handled_total", "")
                    .sample(&with_code, *n as f64);
            }
        }
    }
}

/// `/health.v1.Agent/GetNode` → (`health.v1.Agent`, `GetNode`).
fn split_path(path: &str) -> (&str, &str) {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    match trimmed.split_once('/') {
        Some((s, m)) if !s.is_empty() && !m.is_empty() && !m.contains('/') => (s, m),
        _ => ("other", "other"),
    }
}

fn code_of<B>(response: &http::Response<B>) -> &'static str {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .and_then(|n| CODES.get(n).copied())
        .unwrap_or(if response.headers().contains_key("grpc-status") {
            "Unknown"
        } else {
            "OK"
        })
}

/// See the module comment.
#[derive(Clone)]
pub struct RpcMetricsLayer {
    stats: Arc<RpcStats>,
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics {
            inner,
            stats: Arc::clone(&self.stats),
        }
    }
}

#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    stats: Arc<RpcStats>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RpcMetrics<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let path = request.uri().path().to_string();
        let started = Instant::now();
        let response = self.inner.call(request);
        let stats = Arc::clone(&self.stats);
        Box::pin(async move {
            let result = response.await;
            let code = match &result {
                Ok(response) => code_of(response),
                // The transport failed the call before there was a response.
                Err(_) => "Unavailable",
            };
            stats.observe(&path, code, started.elapsed());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method_and_junk_is_other() {
        assert_eq!(
            split_path("/health.v1.Agent/GetNode"),
            ("health.v1.Agent", "GetNode")
        );
        assert_eq!(split_path("/"), ("other", "other"));
        assert_eq!(split_path("/a/b/c"), ("other", "other"));
    }

    #[test]
    fn codes_come_from_the_response_headers() {
        let ok = http::Response::new(());
        assert_eq!(code_of(&ok), "OK");
        let mut not_found = http::Response::new(());
        not_found
            .headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(code_of(&not_found), "NotFound");
        let mut odd = http::Response::new(());
        odd.headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("99"));
        assert_eq!(code_of(&odd), "Unknown");
    }

    #[test]
    fn invented_methods_beyond_the_cap_are_lumped_together() {
        let stats = RpcStats::default();
        for i in 0..MAX_METHODS + 10 {
            stats.observe(&format!("/svc/M{i}"), "OK", Duration::from_millis(1));
        }
        let mut out = Exposition::new();
        stats.render(&mut out, &[]);
        let text = out.render();
        assert!(
            text.contains("grpc_service=\"other\",grpc_method=\"other\",grpc_code=\"OK\"} 10\n"),
            "{text}"
        );
        assert_eq!(
            text.matches("health_grpc_server_handling_seconds_count{")
                .count(),
            MAX_METHODS + 1
        );
    }
}
