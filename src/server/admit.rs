//! One tower layer for the checks that either let a call through or answer it at once, before any handler
//! runs: authentication ([`crate::auth::AuthLayer`]) and the per-caller rate limit ([`super::rate`]). Each
//! check is an [`Admission`]; this module holds the `Service` plumbing they share.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::{Layer, Service};

/// A check made on each request before it reaches the inner service.
pub trait Admission: Clone + Send + Sync + 'static {
    /// `Ok` lets the call through (the check may add to the request, e.g. an extension); `Err` answers it at
    /// once with that status, and the inner service never sees it.
    fn admit<B>(&self, request: &mut http::Request<B>) -> Result<(), tonic::Status>;
}

/// Builds [`AdmitService`]s that run the admission `A`.
#[derive(Debug, Clone)]
pub struct AdmitLayer<A>(pub A);

impl<A: Admission, S> Layer<S> for AdmitLayer<A> {
    type Service = AdmitService<A, S>;
    fn layer(&self, inner: S) -> Self::Service {
        AdmitService { inner, admission: self.0.clone() }
    }
}

/// Runs its admission, then calls the inner service or answers for it.
#[derive(Debug, Clone)]
pub struct AdmitService<A, S> {
    inner: S,
    admission: A,
}

impl<A, S, B> Service<http::Request<B>> for AdmitService<A, S>
where
    A: Admission,
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
        match self.admission.admit(&mut request) {
            Ok(()) => {
                // The ready inner service is the one that must be called; leave a fresh clone in its place.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(inner.call(request))
            }
            Err(status) => {
                let response = status.into_http();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}
