//! Bounds on every call: how many run at once, and for how long.
//!
//! - **In flight:** at most `max_in_flight` calls at once over all connections (the in-process REST gateway's
//!   included). One more is answered at once with `RESOURCE_EXHAUSTED` (reason OVERLOADED) and a `RetryInfo`,
//!   instead of queueing behind the others: under overload a fast "try again shortly" beats a slow answer.
//!   Health checks are exempt, so an overloaded replica still says whether it is up.
//! - **Deadline:** the caller's `grpc-timeout`, capped by `max_timeout` (or `max_timeout` when the caller sets
//!   none). A call past it is dropped (a write's transaction rolls back) and answered `DEADLINE_EXCEEDED`
//!   (reason TIMEOUT).
//!
//! Hand-written rather than tonic's `Server::timeout` / `concurrency_limit_per_connection` / `load_shed`: those
//! answer `CANCELLED` for a timeout and carry no `ErrorInfo`/`RetryInfo`, and the limit is per connection, so
//! it bounds nothing when many clients connect.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tower::{Layer, Service};
use trading_gateway::headers::parse_grpc_timeout;

use super::methods;
use super::refusals::Refusals;
use crate::services::ApiError;

/// Builds [`LimitsService`]s sharing one budget of calls in flight.
#[derive(Debug, Clone)]
pub struct LimitsLayer {
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    max_timeout: Duration,
    refusals: Arc<Refusals>,
}

impl LimitsLayer {
    /// At most `max_in_flight` calls at once (at least 1), each for at most `max_timeout`.
    pub fn new(max_in_flight: usize, max_timeout: Duration) -> Self {
        let max_in_flight = max_in_flight.max(1);
        LimitsLayer {
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            max_timeout,
            refusals: Arc::default(),
        }
    }
}

impl<S> Layer<S> for LimitsLayer {
    type Service = LimitsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        LimitsService { inner, layer: self.clone() }
    }
}

/// Refuses a call beyond the in-flight budget, and ends one past its deadline.
#[derive(Debug, Clone)]
pub struct LimitsService<S> {
    inner: S,
    layer: LimitsLayer,
}

impl<S, B> Service<http::Request<B>> for LimitsService<S>
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
        let exempt = methods::is_health(request.uri().path());
        let permit = if exempt {
            None
        } else {
            match self.layer.in_flight.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    let limit = self.layer.max_in_flight;
                    if let Some(refused) = self.layer.refusals.note() {
                        tracing::warn!(limit, refused, "overloaded: refusing calls beyond the in-flight limit");
                    }
                    let response = tonic::Status::from(ApiError::Overloaded { limit }).into_http();
                    return Box::pin(async move { Ok(response) });
                }
            }
        };
        let timeout = deadline(request.headers().get("grpc-timeout"), self.layer.max_timeout);
        let future = inner.call(request);
        Box::pin(async move {
            let _permit = permit;
            match tokio::time::timeout(timeout, future).await {
                Ok(result) => result,
                Err(_) => Ok(tonic::Status::from(ApiError::DeadlineExceeded { timeout }).into_http()),
            }
        })
    }
}

/// The caller's `grpc-timeout` (e.g. `250m`), capped by `max`; `max` when absent or malformed.
fn deadline(header: Option<&http::HeaderValue>, max: Duration) -> Duration {
    header.and_then(|v| v.to_str().ok()).and_then(parse_grpc_timeout).map_or(max, |t| t.min(max))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tonic_types::StatusExt;

    use tonic::Code;

    use super::*;

    #[test]
    fn a_grpc_timeout_is_capped_and_its_absence_means_the_maximum() {
        let max = Duration::from_secs(15);
        assert_eq!(deadline(Some(&http::HeaderValue::from_static("1H")), max), max);
        assert_eq!(deadline(None, max), max);
    }

    fn status_of(response: &http::Response<tonic::body::Body>) -> tonic::Status {
        tonic::Status::from_header_map(response.headers()).expect("a grpc status in the headers")
    }

    #[tokio::test]
    async fn a_call_beyond_the_budget_is_refused_with_a_retry_hint_and_a_slow_one_times_out() {
        let slow = tower::service_fn(|_: http::Request<()>| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, Infallible>(http::Response::new(tonic::body::Body::empty()))
        });
        let mut service = LimitsLayer::new(1, Duration::from_millis(50)).layer(slow);
        let first = service.call(http::Request::new(()));
        let refused = service.call(http::Request::new(())).await.unwrap();
        let status = status_of(&refused);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.get_details_retry_info().and_then(|r| r.retry_delay),
            Some(crate::services::error::RETRY_OVERLOADED_AFTER)
        );
        assert_eq!(status.get_details_error_info().unwrap().reason, "OVERLOADED");

        let health = http::Request::builder().uri("/grpc.health.v1.Health/Check").body(()).unwrap();
        let health = service.call(health);
        let timed_out = status_of(&first.await.unwrap());
        assert_eq!(timed_out.code(), Code::DeadlineExceeded);
        assert_eq!(timed_out.get_details_error_info().unwrap().reason, "TIMEOUT");
        assert_eq!(status_of(&health.await.unwrap()).code(), Code::DeadlineExceeded, "exempt from the budget only");
        // The permit came back: the next call is admitted (and times out in turn).
        assert_eq!(status_of(&service.call(http::Request::new(())).await.unwrap()).code(), Code::DeadlineExceeded);
    }
}
