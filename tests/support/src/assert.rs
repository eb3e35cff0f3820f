//! Reading what a call answered: its error's details, its `x-cache` header.

use std::time::Duration;

use tonic::transport::Channel;
use trading_monitor::pb;
use trading_monitor::pb::guards_service_client::GuardsServiceClient;
use uuid::Uuid;

use crate::auth::{authed, token};

/// The `google.rpc.ErrorInfo` of an error: (domain, reason, metadata). Every error the service returns has one.
pub fn error_info(status: &tonic::Status) -> (String, String, std::collections::HashMap<String, String>) {
    use tonic_types::StatusExt;
    let info = status.get_details_error_info().unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    (info.domain, info.reason, info.metadata)
}

/// The status code and ErrorInfo reason of an error.
pub fn code_and_reason(status: &tonic::Status) -> (tonic::Code, String) {
    let (domain, reason, _) = error_info(status);
    assert_eq!(domain, "trading-monitor");
    (status.code(), reason)
}

/// The `google.rpc.BadRequest` field names of an INVALID_ARGUMENT status.
pub fn bad_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// The `x-cache` header of a read: `hit`, `miss`, `stale` or `bypass`.
pub fn x_cache<T>(response: &tonic::Response<T>) -> String {
    response.metadata().get("x-cache").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

/// Waits until the server reads through Redis: a read before its Redis client connects (or before it hears
/// invalidations) is a bypass, whose value then lives on in L1 and would upset a test's counts.
pub async fn until_redis_answers(channel: &Channel) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut guards = GuardsServiceClient::new(channel.clone());
    loop {
        let request = pb::GetDrawdownStatusRequest::default();
        let response = guards.get_drawdown_status(authed(request, &token(Uuid::new_v4(), &[]))).await.unwrap();
        if x_cache(&response) == "miss" {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the server never used Redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A timestamp as comparable (seconds, nanos); absent is the smallest.
pub fn at(t: &Option<prost_types::Timestamp>) -> (i64, i32) {
    t.as_ref().map_or((i64::MIN, 0), |t| (t.seconds, t.nanos))
}
