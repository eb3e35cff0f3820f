//! A span per RPC with the method, the caller's user id (filled in by the auth layer) and the gRPC status code,
//! one log event when the call completes, and the call counted in the metrics (by method and code, with the
//! time to its response headers).
//!
//! When traces are exported ([`telemetry::exporting`]) the span is also an OpenTelemetry server span: it
//! continues the caller's W3C trace (`traceparent`), is named `package.Service/Method`, and carries the RPC
//! semantic conventions (`rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`) and `trace_id` for
//! the logs. Those fields are only filled in then, so without an exporter a call pays for none of them.

use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use tower::{Layer, Service};
use tracing::Instrument;

use super::methods;
use crate::metrics::Metrics;
use crate::telemetry;

/// Builds [`TraceService`]s.
#[derive(Debug, Clone)]
pub struct TraceLayer {
    metrics: Metrics,
}

impl TraceLayer {
    /// Counts every call in `metrics` too.
    pub fn new(metrics: Metrics) -> TraceLayer {
        TraceLayer { metrics }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = TraceService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TraceService { inner, metrics: self.metrics.clone() }
    }
}

/// Wraps each call in an `rpc` span, and counts it.
#[derive(Debug, Clone)]
pub struct TraceService<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, B, R> Service<http::Request<B>> for TraceService<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        // Health checks and reflection are logged like any call but not traced: a probe every few seconds
        // would bury the traces worth reading. Their spans have a target the exporter ignores.
        macro_rules! rpc_span {
            ($target:expr) => {
                tracing::info_span!(
                    target: $target,
                    "rpc",
                    path = %request.uri().path(),
                    user.id = tracing::field::Empty,
                    grpc.code = tracing::field::Empty,
                    trace_id = tracing::field::Empty,
                    otel.name = tracing::field::Empty,
                    otel.kind = tracing::field::Empty,
                    otel.status_code = tracing::field::Empty,
                    rpc.system = tracing::field::Empty,
                    rpc.service = tracing::field::Empty,
                    rpc.method = tracing::field::Empty,
                    rpc.grpc.status_code = tracing::field::Empty,
                )
            };
        }
        let path = request.uri().path();
        let untraced = methods::is_health(path) || methods::is_reflection(path);
        let span = if untraced { rpc_span!(telemetry::UNTRACED) } else { rpc_span!(module_path!()) };
        let method = methods::name(path);
        let exporting = telemetry::exporting() && !untraced;
        if exporting {
            let (service, method_name) = method.split_once('/').unwrap_or((methods::OTHER, methods::OTHER));
            span.record("otel.name", method);
            span.record("otel.kind", "server");
            span.record("rpc.system", "grpc");
            span.record("rpc.service", service);
            span.record("rpc.method", method_name);
            telemetry::continue_trace(&span, request.headers());
        }
        let started = Instant::now();
        let metrics = self.metrics.clone();
        // Call inside the span so inner layers (auth) can record fields on it.
        let future = span.in_scope(|| inner.call(request));
        Box::pin(
            async move {
                let result = future.await;
                let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
                match &result {
                    Ok(response) => {
                        // Errors are "trailers-only" responses with grpc-status in the headers; success puts
                        // grpc-status 0 in the trailers, which this layer does not wait for.
                        let code = response
                            .headers()
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<i32>().ok())
                            .unwrap_or(0);
                        let code = tonic::Code::from_i32(code);
                        metrics.rpc(method, code, started.elapsed());
                        let span = tracing::Span::current();
                        span.record("grpc.code", tracing::field::debug(code));
                        if exporting {
                            span.record("rpc.grpc.status_code", code as i64);
                            if server_fault(code) {
                                span.record("otel.status_code", "ERROR");
                            }
                        }
                        match code {
                            tonic::Code::Ok => tracing::debug!(elapsed_ms, "rpc completed"),
                            code if server_fault(code) => tracing::warn!(elapsed_ms, "rpc failed"),
                            _ => tracing::info!(elapsed_ms, "rpc rejected"),
                        }
                    }
                    Err(_) => tracing::warn!(elapsed_ms, "rpc transport error"),
                }
                result
            }
            .instrument(span),
        )
    }
}

/// The codes a gRPC server span counts as errors (OpenTelemetry's RPC conventions): the service's fault, not the
/// caller's.
fn server_fault(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(code, Unknown | DeadlineExceeded | Unimplemented | Internal | Unavailable | DataLoss)
}
