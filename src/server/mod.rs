//! The tonic server: services, layers (trace, auth, limits), health, reflection, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::{HealthReporter, HealthService};

use crate::auth::{AuthLayer, Verifier};
use crate::cache::Cache;
use crate::config::ServeArgs;
use crate::market_view::MarketView;
use crate::pb;
use crate::services::encoded::{PositionsServer, ReconciliationServer};
use crate::services::guards::GuardsApi;
use crate::services::positions::PositionsApi;
use crate::services::reconciliation::ReconciliationApi;
use crate::services::{AppState, WatchSettings};
use crate::storage;
use crate::watch::{Hub, HubSettings};

pub mod admit;
pub mod health;
pub mod limits;
pub(crate) mod methods;
mod panic;
pub mod rate;
mod refusals;
mod trace;

pub use limits::LimitsLayer;
pub use panic::CatchPanicLayer;

/// A bound, ready-to-run server.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    admin_listener: Option<TcpListener>,
    http_listener: Option<TcpListener>,
    demo_users: Vec<trading_gateway::page::DemoUser>,
    state: AppState,
    /// Sends `true` when shutdown begins (the state's `stopping` receives it).
    stop: watch::Sender<bool>,
    verifier: Arc<Verifier>,
    args: ServeArgs,
}

impl Application {
    /// Validates the configuration, connects the pool, applies migrations (unless skipped) and binds the
    /// listener (port 0 picks a free one, for tests).
    pub async fn build(args: ServeArgs) -> anyhow::Result<Application> {
        let rules = args.rules.to_rules()?;
        let verifier = Arc::new(Verifier::from_args(&args.auth)?);
        let pool = storage::pool(&args.database)?;
        if !args.server.skip_migrations {
            storage::migrate(&pool).await?;
        }
        let cache = Cache::new(args.cache.to_settings())?;
        if !cache.wait_for_redis(REDIS_START_WAIT).await {
            tracing::warn!("redis not reachable yet: serving reads from PostgreSQL until it is");
        }
        let market = MarketView::new(pool.clone());
        if let Err(e) = market.refresh().await {
            // Start anyway (health says NOT_SERVING while PostgreSQL is away); the refresher keeps trying.
            tracing::warn!(error = %crate::error::error_chain(&e), "cannot read the market snapshot yet");
        }
        let listener = TcpListener::bind(args.server.listen).await?;
        let local_addr = listener.local_addr()?;
        let admin_listener = match args.server.admin_listen {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let http_listener = match args.server.http_listen {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let w = &args.watch;
        for (name, value) in [
            ("--watch-heartbeat", w.watch_heartbeat),
            ("--watch-safety-interval", w.watch_safety_interval),
            ("--clock-interval", w.clock_interval),
            ("--watch-send-timeout", w.watch_send_timeout),
        ] {
            anyhow::ensure!(!value.is_zero(), "{name} must be longer than zero");
        }
        let hub = Hub::new(
            pool.clone(),
            market.clone(),
            HubSettings {
                safety_interval: w.watch_safety_interval,
                // Batches a stream may fall behind before it re-reads from the table instead: each holds at most
                // one feed page (500 events), so this bounds what slow streams pin.
                capacity: 256,
                max_per_user: w.watch_max_per_user,
                max_streams: w.watch_max_streams,
            },
        );
        let watch_settings =
            WatchSettings { heartbeat: w.watch_heartbeat, send_timeout: w.watch_send_timeout, buffer: w.watch_buffer };
        let (stop, stopping) = watch::channel(false);
        Ok(Application {
            listener,
            local_addr,
            admin_listener,
            http_listener,
            demo_users: Vec::new(),
            state: AppState {
                metrics: crate::metrics::Metrics::new(cache.clone(), pool.clone()),
                db: storage::Db::new(pool),
                rules: Arc::new(rules),
                cache,
                market,
                hub,
                watch: watch_settings,
                stopping,
            },
            stop,
            verifier,
            args,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The database pool (used by `demo` to load data before serving).
    pub fn pool(&self) -> &PgPool {
        self.state.db.raw()
    }

    /// The replica-local market snapshot.
    pub fn market(&self) -> MarketView {
        self.state.market.clone()
    }

    /// The cache (its counters are what the metrics endpoint serves; tests and loadgen read them too).
    pub fn cache(&self) -> Cache {
        self.state.cache.clone()
    }

    /// The address of the admin listener (`/metrics`, `/livez`, `/readyz`), if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The address of the REST gateway, if enabled.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Demo users (label and token) the status page offers (`demo` sets them).
    pub fn set_demo_users(&mut self, users: Vec<trading_gateway::page::DemoUser>) {
        self.demo_users = users;
    }

    /// Serves until `shutdown` completes, then reports NOT_SERVING, stops accepting, and lets in-flight calls
    /// finish for at most the configured grace period.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Application {
            listener,
            local_addr,
            admin_listener,
            http_listener,
            demo_users,
            state,
            stop: stop_tx,
            verifier,
            args,
        } = self;
        let server_args = &args.server;
        let admin_task = admin_listener.map(|l| tokio::spawn(serve_admin(l, state.clone())));

        let reporter = HealthReporter::new();
        health::set_all(&reporter, ServingStatus::NotServing).await;
        let stop_rx = state.stopping.clone();
        let watcher = tokio::spawn(health::watch_database(
            reporter.clone(),
            state.db.clone(),
            server_args.health_interval,
            stop_rx.clone(),
        ));
        let market_refresher =
            tokio::spawn(state.market.clone().keep_fresh(server_args.market_refresh_interval, stop_rx.clone()));
        let hub = tokio::spawn(state.hub.clone().run(stop_rx.clone()));
        let clock = tokio::spawn(crate::watch::clock::run(
            state.db.raw().clone(),
            state.cache.clone(),
            state.metrics.clone(),
            state.rules.clone(),
            args.watch.clock_interval,
            stop_rx.clone(),
        ));

        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;

        let limit = server_args.max_request_bytes;
        let rate_limits = rate::RateLimits::new(
            rate::Rate { per_second: server_args.rate_limit_per_user, burst: server_args.rate_limit_user_burst },
            rate::Rate { per_second: server_args.rate_limit_per_service, burst: server_args.rate_limit_service_burst },
        );
        let forget = rate_limits.clone();
        let mut forget_stop = stop_rx.clone();
        let rate_forgetter = tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_secs(60)) => forget.forget_idle(),
                    _ = forget_stop.changed() => return,
                }
            }
        });
        // The layers every call goes through, outermost first, over gRPC and from the in-process REST gateway.
        let layers = tower::ServiceBuilder::new()
            .layer(trace::TraceLayer::new(state.metrics.clone()))
            .layer(CatchPanicLayer)
            .layer(LimitsLayer::new(server_args.max_concurrent_requests, server_args.request_timeout))
            .layer(AuthLayer::new(verifier, !args.auth.reflection_requires_auth))
            .layer(admit::AdmitLayer(rate_limits));
        let routes = tonic::service::Routes::new(tonic_health::pb::health_server::HealthServer::new(
            HealthService::from_health_reporter(reporter.clone()),
        ))
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ReconciliationServer::new(
            pb::reconciliation_service_server::ReconciliationServiceServer::new(ReconciliationApi::new(state.clone()))
                .max_decoding_message_size(limit),
            state.clone(),
            limit,
        ))
        .add_service(PositionsServer::new(
            pb::positions_service_server::PositionsServiceServer::new(PositionsApi::new(state.clone()))
                .max_decoding_message_size(limit),
            state.clone(),
            limit,
        ))
        .add_service(
            pb::guards_service_server::GuardsServiceServer::new(GuardsApi::new(state.clone()))
                .max_decoding_message_size(limit),
        );
        let w = &args.watch;
        let nonzero = |d: std::time::Duration| (!d.is_zero()).then_some(d);
        let mut builder = Server::builder()
            .max_concurrent_streams(server_args.max_streams_per_connection.max(1))
            .http2_max_header_list_size(server_args.max_metadata_bytes)
            .http2_keepalive_interval(nonzero(w.http2_keepalive_interval))
            .http2_keepalive_timeout(Some(w.http2_keepalive_timeout));
        if let Some(age) = nonzero(w.max_connection_age) {
            builder = builder.max_connection_age(jitter(age)).max_connection_age_grace(w.max_connection_age_grace);
        }
        let router = builder.layer(layers.clone()).add_routes(routes.clone());
        let (http_stop_tx, mut http_stop_rx) = watch::channel(false);
        let http_task = match http_listener {
            Some(listener) => {
                let upstream = trading_gateway::upstream::in_process(layers.service(routes.prepare()));
                let gateway = trading_gateway::Gateway::new(upstream, args.http.clone())?.with_demo_users(demo_users);
                Some(tokio::spawn(async move {
                    let stopped = async move {
                        let _ = http_stop_rx.wait_for(|stop| *stop).await;
                    };
                    if let Err(e) = gateway.serve(listener, stopped).await {
                        tracing::error!(error = format!("{e:#}"), "REST gateway stopped");
                    }
                }))
            }
            None => None,
        };

        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let (draining_tx, mut draining_rx) = watch::channel(false);
        let shutdown_reporter = reporter.clone();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutdown requested: NOT_SERVING, draining in-flight calls");
            let _ = stop_tx.send(true);
            let _ = http_stop_tx.send(true);
            health::set_all(&shutdown_reporter, ServingStatus::NotServing).await;
            let _ = draining_tx.send(true);
        };
        tracing::info!(address = %local_addr, "serving gRPC");
        let serve = router.serve_with_incoming_shutdown(incoming, signal);
        tokio::pin!(serve);
        let grace = server_args.shutdown_grace;
        let result = tokio::select! {
            result = &mut serve => result.map_err(anyhow::Error::from),
            () = async {
                let _ = draining_rx.wait_for(|draining| *draining).await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(grace_ms = grace.as_millis() as u64, "in-flight calls did not finish in time; stopping anyway");
                Ok(())
            }
        };
        watcher.abort();
        market_refresher.abort();
        hub.abort();
        clock.abort();
        rate_forgetter.abort();
        if let Some(task) = http_task {
            task.abort();
        }
        if let Some(task) = admin_task {
            task.abort();
        }
        state.db.raw().close().await;
        tracing::info!("server stopped");
        result
    }
}

/// How long start-up waits for the cache's Redis connections.
const REDIS_START_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// `age` ± up to 10 % (drawn once per replica), so replicas started together do not close their connections
/// together (gRPC A9 asks for jitter).
fn jitter(age: std::time::Duration) -> std::time::Duration {
    let age = age.min(std::time::Duration::from_secs(365 * 86_400));
    let spread = uuid::Uuid::new_v4().as_u128() % 2001; // 0..=2000 per mille of 10 %
    age.mul_f64(0.9 + spread as f64 / 10_000.0)
}

/// The admin listener: `/metrics` (Prometheus text), `/livez` and `/readyz`.
async fn serve_admin(listener: TcpListener, state: AppState) {
    use axum::http::StatusCode;
    let address = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let metrics = state.metrics.clone();
    let router = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics.render()) }
            }),
        )
        .route("/livez", axum::routing::get(|| async { "live\n" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let db = state.db.clone();
                async move {
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

/// Resolves on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
