//! The health service, as a load balancer or an orchestrator asks it.

use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::app::TestApp;

/// The overall status (`""`) and the three services'.
pub const SERVICES: [&str; 4] =
    ["", "trading.v1.ReconciliationService", "trading.v1.PositionsService", "trading.v1.GuardsService"];

/// What health answers for `service`.
pub async fn health(app: &TestApp, service: &str) -> ServingStatus {
    let mut client = HealthClient::new(app.channel.clone());
    let response = client.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
    response.status()
}

/// Polls until every service reports `expected` (the watcher checks every 200 ms in tests).
pub async fn wait_for(app: &TestApp, expected: ServingStatus) {
    for _ in 0..50 {
        let mut all = true;
        for service in SERVICES {
            all &= health(app, service).await == expected;
        }
        if all {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("health never became {expected:?}");
}
