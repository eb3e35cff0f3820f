//! The tower layer that authenticates every gRPC call before routing, except health (always public) and
//! reflection (public unless configured otherwise). The verified [`Caller`] travels in the request extensions.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::Status;
use tower::{Layer, Service};

use super::Verifier;

/// Paths that never need a token.
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";
/// Reflection paths (v1 and v1alpha).
const REFLECTION_PREFIX: &str = "/grpc.reflection.";

/// Builds [`AuthService`]s.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    verifier: Arc<Verifier>,
    reflection_is_public: bool,
}

impl AuthLayer {
    /// A layer verifying with `verifier`.
    pub fn new(verifier: Arc<Verifier>, reflection_is_public: bool) -> Self {
        AuthLayer { verifier, reflection_is_public }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, layer: self.clone() }
    }
}

/// Authenticates, then calls the inner service; answers UNAUTHENTICATED itself on failure.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S, B> Service<http::Request<B>> for AuthService<S>
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

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The ready inner service is the one that must be called; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);

        let path = request.uri().path();
        let public =
            path.starts_with(HEALTH_PREFIX) || (self.layer.reflection_is_public && path.starts_with(REFLECTION_PREFIX));
        if !public {
            let header = request.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            match self.layer.verifier.verify_header(header) {
                Ok(caller) => {
                    tracing::Span::current().record("user.id", tracing::field::display(caller.user_id));
                    request.extensions_mut().insert(caller);
                }
                Err(err) => {
                    tracing::debug!(reason = %err, "unauthenticated request");
                    let response = Status::from(err).into_http();
                    return Box::pin(async move { Ok(response) });
                }
            }
        }
        Box::pin(inner.call(request))
    }
}
