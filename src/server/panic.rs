//! The last-resort layer: a handler that panics answers its caller with an opaque `INTERNAL` (the cause is
//! logged, never sent) instead of a reset stream, and the connection keeps serving.
//!
//! Hand-written rather than `tower_http::catch_panic`: that one answers with an HTTP 500 and a plain-text body,
//! which a gRPC client reads as a transport error; this one answers the gRPC way (HTTP 200, `grpc-status: 13`).
//! Cleanup needs nothing special: unwinding drops whatever the handler held (pooled connections go back to the
//! pool; a single-flight entry is removed by its guard, see `cache`).

use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll};

use futures::FutureExt;
use futures::future::BoxFuture;
use tower::{Layer, Service};

use crate::services::ApiError;

/// Builds [`CatchPanicService`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct CatchPanicLayer;

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanicService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CatchPanicService { inner }
    }
}

/// Turns a panic of the inner service into `INTERNAL`.
#[derive(Debug, Clone)]
pub struct CatchPanicService<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for CatchPanicService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
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
        let path = request.uri().path().to_owned();
        // The synchronous part of the call can panic too.
        let future = match std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(request))) {
            Ok(future) => future,
            Err(payload) => return Box::pin(async move { Ok(internal(&path, payload.as_ref())) }),
        };
        Box::pin(async move {
            match AssertUnwindSafe(future).catch_unwind().await {
                Ok(result) => result,
                Err(payload) => Ok(internal(&path, payload.as_ref())),
            }
        })
    }
}

fn internal(path: &str, payload: &(dyn std::any::Any + Send)) -> http::Response<tonic::body::Body> {
    let cause = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    tracing::error!(rpc.method = path, cause, "handler panicked: answered INTERNAL");
    tonic::Status::from(ApiError::Panicked).into_http()
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    async fn call<S>(service: S) -> http::Response<tonic::body::Body>
    where
        S: Service<http::Request<()>, Response = http::Response<tonic::body::Body>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let mut service = CatchPanicLayer.layer(service);
        service.call(http::Request::builder().uri("/trading.v1.X/Y").body(()).unwrap()).await.unwrap()
    }

    fn grpc_status(response: &http::Response<tonic::body::Body>) -> Option<&str> {
        response.headers().get("grpc-status").and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn a_panic_in_the_handler_future_is_an_opaque_internal() {
        let service = tower::service_fn(|_: http::Request<()>| async {
            if true {
                panic!("secret detail");
            }
            Ok::<_, Infallible>(http::Response::new(tonic::body::Body::empty()))
        });
        let response = call(service).await;
        assert_eq!(response.status(), http::StatusCode::OK);
        assert_eq!(grpc_status(&response), Some("13"));
        let message = response.headers().get("grpc-message").and_then(|v| v.to_str().ok());
        assert_eq!(message, Some("internal%20error"));
    }

    #[tokio::test]
    async fn a_panic_while_calling_is_an_internal_too() {
        #[derive(Clone)]
        struct PanicsOnCall;
        impl Service<http::Request<()>> for PanicsOnCall {
            type Response = http::Response<tonic::body::Body>;
            type Error = Infallible;
            type Future = std::future::Ready<Result<Self::Response, Infallible>>;
            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                Poll::Ready(Ok(()))
            }
            fn call(&mut self, _: http::Request<()>) -> Self::Future {
                panic!("in call")
            }
        }
        assert_eq!(grpc_status(&call(PanicsOnCall).await), Some("13"));
    }

    #[tokio::test]
    async fn answers_without_a_panic_pass_through() {
        let service = tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, Infallible>(http::Response::new(tonic::body::Body::empty()))
        });
        assert_eq!(grpc_status(&call(service).await), None);
    }
}
