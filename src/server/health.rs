//! gRPC health: one status per service plus the overall one (""), SERVING only while PostgreSQL answers, and
//! all NOT_SERVING once shutdown starts.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::storage;

/// Service names reported, besides the overall "".
pub const SERVICES: [&str; 3] =
    ["trading.v1.ReconciliationService", "trading.v1.PositionsService", "trading.v1.GuardsService"];

/// Sets the overall status and every service's status at once.
pub async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in SERVICES {
        reporter.set_service_status(name, status).await;
    }
}

/// Pings PostgreSQL every `interval` and reports the result, until `stop` turns true; then reports
/// NOT_SERVING for good.
pub async fn watch_database(
    reporter: HealthReporter,
    pool: PgPool,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut last: Option<ServingStatus> = None;
    loop {
        let status = match tokio::time::timeout(interval.max(Duration::from_millis(500)), storage::ping(&pool)).await {
            Ok(Ok(())) => ServingStatus::Serving,
            Ok(Err(e)) => {
                if last != Some(ServingStatus::NotServing) {
                    tracing::warn!(error = %crate::error::error_chain(&e), "database unreachable: NOT_SERVING");
                }
                ServingStatus::NotServing
            }
            Err(_) => ServingStatus::NotServing,
        };
        if *stop.borrow() {
            break;
        }
        if last != Some(status) {
            if status == ServingStatus::Serving {
                tracing::info!("database reachable: SERVING");
            }
            set_all(&reporter, status).await;
            last = Some(status);
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => break,
        }
    }
    set_all(&reporter, ServingStatus::NotServing).await;
}
