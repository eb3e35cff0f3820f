//! gRPC health: one status per service plus the overall one (""), SERVING only while PostgreSQL answers, and
//! all NOT_SERVING once shutdown starts.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
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
/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Probes in a row that must time out before PostgreSQL counts as unreachable: one slow answer from a saturated
/// server is not an outage (a refused or broken connection counts at once).
const TIMEOUTS_TO_DOWN: u32 = 3;

/// Probes PostgreSQL every `interval` (every 100 ms while it is unreachable, and at once when a call found it
/// unreachable), reports the result to health and to the fail-fast gate (`storage::gate`), until `stop` is
/// cancelled; then reports NOT_SERVING for good.
pub async fn watch_database(reporter: HealthReporter, db: storage::Db, interval: Duration, stop: CancellationToken) {
    let mut last: Option<ServingStatus> = None;
    let mut timeouts = 0;
    loop {
        // An idle pooled connection, else one of its own (`storage::probe`): a refused connection fails at once
        // (the pool's acquire keeps retrying for its whole timeout), and a busy pool or a server at its
        // connection limit is not mistaken for PostgreSQL being down.
        let status = match tokio::time::timeout(PROBE_TIMEOUT, storage::probe(db.raw())).await {
            Ok(Ok(())) => {
                timeouts = 0;
                ServingStatus::Serving
            }
            Ok(Err(e)) => {
                if last != Some(ServingStatus::NotServing) {
                    tracing::warn!(error = %crate::telemetry::error_chain(&e), "database unreachable: NOT_SERVING");
                }
                ServingStatus::NotServing
            }
            Err(_) => {
                timeouts += 1;
                if timeouts >= TIMEOUTS_TO_DOWN || last != Some(ServingStatus::Serving) {
                    if last == Some(ServingStatus::Serving) {
                        tracing::warn!(timeouts, "database not answering: NOT_SERVING");
                    }
                    ServingStatus::NotServing
                } else {
                    ServingStatus::Serving
                }
            }
        };
        if stop.is_cancelled() {
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
            () = stop.cancelled() => break,
        }
    }
    set_all(&reporter, ServingStatus::NotServing).await;
}
