//! The tower layer that authenticates every gRPC call before routing, except health (always public) and
//! reflection (public unless configured otherwise). The verified [`Caller`] travels in the request extensions.

use std::sync::Arc;

use tonic::Status;

use super::admit::{Admission, AdmitLayer};
use super::methods;
use crate::auth::Verifier;
use crate::services::ApiError;

/// Authenticates each call, then lets it through; answers UNAUTHENTICATED itself on failure.
pub type AuthLayer = AdmitLayer<AuthCheck>;

/// The check [`AuthLayer`] runs.
#[derive(Debug, Clone)]
pub struct AuthCheck {
    verifier: Arc<Verifier>,
    reflection_is_public: bool,
}

impl AuthLayer {
    /// A layer verifying with `verifier`.
    pub fn new(verifier: Arc<Verifier>, reflection_is_public: bool) -> Self {
        AdmitLayer(AuthCheck { verifier, reflection_is_public })
    }
}

impl Admission for AuthCheck {
    fn admit<B>(&self, request: &mut http::Request<B>) -> Result<(), Status> {
        let path = request.uri().path();
        if methods::is_health(path) || (self.reflection_is_public && methods::is_reflection(path)) {
            return Ok(());
        }
        let header = request.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        match self.verifier.verify_header(header) {
            Ok(caller) => {
                tracing::Span::current().record("user.id", tracing::field::display(caller.user_id));
                request.extensions_mut().insert(caller);
                Ok(())
            }
            Err(err) => {
                tracing::debug!(reason = %err, "unauthenticated request");
                Err(Status::from(ApiError::Unauthenticated(err)))
            }
        }
    }
}
