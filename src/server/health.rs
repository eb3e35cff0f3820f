//! gRPC health: one status per service plus the overall one (""), SERVING only while PostgreSQL answers, and
//! all NOT_SERVING once shutdown starts.

use std::time::Duration;

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

/// How often PostgreSQL is probed while it is unreachable, so the service notices its return quickly.
const DOWN_INTERVAL: Duration = Duration::from_millis(100);

/// Probes PostgreSQL every `interval` (every 100 ms while it is unreachable, and at once when a call found it
/// unreachable), reports the result to health and to the fail-fast gate (`storage::gate`), until `stop` turns
/// true; then reports NOT_SERVING for good.
pub async fn watch_database(
    reporter: HealthReporter,
    db: storage::Db,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut last: Option<ServingStatus> = None;
    loop {
        // While up, the pool (cheap, and it proves the pool works); while down, a connection of its own, which
        // fails at once instead of waiting out the pool's acquire timeout.
        let probe = async { if db.is_down() { storage::probe(db.raw()).await } else { storage::ping(db.raw()).await } };
        let status = match tokio::time::timeout(interval.max(Duration::from_millis(500)), probe).await {
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
        db.set_down(status != ServingStatus::Serving);
        if last != Some(status) {
            if status == ServingStatus::Serving {
                tracing::info!("database reachable: SERVING");
            }
            set_all(&reporter, status).await;
            last = Some(status);
        }
        let wait = if db.is_down() { DOWN_INTERVAL } else { interval };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            () = db.noticed() => {}
            _ = stop.changed() => break,
        }
    }
    set_all(&reporter, ServingStatus::NotServing).await;
}
