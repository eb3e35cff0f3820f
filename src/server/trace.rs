//! A span per RPC with the method, the caller's user id (filled in by the auth layer) and the gRPC status code,
//! one log event when the call completes, and the call counted in the metrics (by method and code, with the
//! time to its response headers).

use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::metrics::Metrics;

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
        let span = tracing::info_span!(
            "rpc",
            rpc.method = %request.uri().path(),
            user_id = tracing::field::Empty,
            grpc.code = tracing::field::Empty,
        );
        let started = Instant::now();
        let path = request.uri().path().to_owned();
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
                        metrics.rpc(&path, code, started.elapsed());
                        tracing::Span::current().record("grpc.code", tracing::field::debug(code));
                        match code {
                            tonic::Code::Ok => tracing::debug!(elapsed_ms, "rpc completed"),
                            tonic::Code::Internal | tonic::Code::Unavailable | tonic::Code::Unknown => {
                                tracing::warn!(elapsed_ms, "rpc failed")
                            }
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
