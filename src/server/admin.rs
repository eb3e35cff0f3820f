//! The admin listener, off the public ports: `/metrics` (Prometheus text), `/livez` (the process answers) and
//! `/readyz` (PostgreSQL reachable and every migration applied, and not shutting down).

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::storage::{self, Db};

/// The admin listener: `/metrics` (Prometheus text), `/livez` and `/readyz`.
pub async fn serve(listener: TcpListener, metrics: Metrics, db: Db, stopping: CancellationToken) {
    use axum::http::StatusCode;
    let address = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let router = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move { ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics.render()) }
            }),
        )
        .route("/livez", axum::routing::get(|| async { "live\n" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let db = db.clone();
                let stopping = stopping.clone();
                async move {
                    // Draining: load balancers should stop sending new calls here (the listener itself keeps
                    // answering until the process exits).
                    if stopping.is_cancelled() {
                        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: shutting down\n".to_owned());
                    }
                    match tokio::time::timeout(std::time::Duration::from_secs(2), storage::migrations_applied(db.raw()))
                        .await
                    {
                        Ok(Ok(true)) if !db.is_down() => (StatusCode::OK, "ready\n".to_owned()),
                        Ok(Ok(_)) if db.is_down() => {
                            (StatusCode::SERVICE_UNAVAILABLE, "not ready: PostgreSQL unreachable\n".to_owned())
                        }
                        Ok(Ok(_)) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: migrations pending\n".to_owned()),
                        Ok(Err(_)) | Err(_) => {
                            (StatusCode::SERVICE_UNAVAILABLE, "not ready: PostgreSQL unreachable\n".to_owned())
                        }
                    }
                }
            }),
        );
    tracing::info!(%address, "serving admin endpoints: /metrics, /livez, /readyz");
    if let Err(e) = axum::serve(listener, router).await {
        tracing::error!(error = %e, "admin listener stopped");
    }
}
