//! The tonic server: [`Application`] builds the replica (pool, cache, market snapshot, hub, listeners) and runs
//! it: the services behind the tower layers (trace, catch-panic, limits, auth, rate), health, reflection, the
//! background tasks under one stop signal, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::Verifier;
use crate::cache::Cache;
use crate::config::ServeArgs;
use crate::feed::Hub;
use crate::market_view::MarketView;
use crate::services::AppState;
use crate::storage;
use crate::telemetry::error_chain;

mod admin;
pub mod admit;
mod auth;
mod background;
pub mod health;
pub mod limits;
pub(crate) mod methods;
mod panic;
pub mod rate;
mod refusals;
mod routes;
mod signal;
mod trace;

pub use auth::AuthLayer;
pub use limits::LimitsLayer;
pub use panic::CatchPanicLayer;
pub use signal::shutdown_signal;

use background::Background;

/// How long start-up waits for the cache's Redis connections.
const REDIS_START_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A bound, ready-to-run server.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    admin_listener: Option<TcpListener>,
    http_listener: Option<TcpListener>,
    demo_users: Vec<trading_gateway::page::DemoUser>,
    state: AppState,
    /// Per-caller rate limits: charged by every call, and by watch catch-ups per page.
    rate_limits: rate::RateLimits,
    verifier: Arc<Verifier>,
    args: ServeArgs,
}

impl Application {
    /// Validates the configuration, connects the pool, applies migrations (unless skipped) and binds the
    /// listeners (port 0 picks a free one, for tests).
    pub async fn build(args: ServeArgs) -> anyhow::Result<Application> {
        let rules = args.rules.to_rules()?;
        let verifier = Arc::new(Verifier::new(&args.auth.to_settings()?)?);
        let hub_settings = args.watch.hub_settings()?;
        let streams = args.watch.stream_settings()?;
        args.watch.clock_interval()?;
        let pool = storage::pool(&args.database.to_settings())?;
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
            tracing::warn!(error = %error_chain(&e), "cannot read the market snapshot yet");
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
        let hub = Hub::new(pool.clone(), market.clone(), hub_settings, cache.clone());
        let server_args = &args.server;
        let rate_limits = rate::RateLimits::new(
            rate::Rate { per_second: server_args.rate_limit_per_user, burst: server_args.rate_limit_user_burst },
            rate::Rate { per_second: server_args.rate_limit_per_service, burst: server_args.rate_limit_service_burst },
        );
        let catch_up = crate::services::CatchUp::new(Arc::new(rate_limits.clone()), streams.catch_up_concurrency);
        Ok(Application {
            listener,
            local_addr,
            admin_listener,
            http_listener,
            demo_users: Vec::new(),
            state: AppState {
                metrics: crate::metrics::Metrics::new(cache.clone(), pool.clone(), vec![Box::new(hub.lag())]),
                db: storage::Db::new(pool),
                rules: Arc::new(rules),
                cache,
                market,
                hub,
                streams,
                catch_up,
                stopping: CancellationToken::new(),
            },
            rate_limits,
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

    /// Serves until `shutdown` completes, then reports NOT_SERVING, stops accepting, ends the watch streams and
    /// the background tasks (one stop signal), and lets in-flight calls finish for at most the configured grace
    /// period.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Application {
            listener,
            local_addr,
            admin_listener,
            http_listener,
            demo_users,
            state,
            rate_limits,
            verifier,
            args,
        } = self;
        let server_args = &args.server;
        let stop = state.stopping.clone();
        let mut background = Background::new(stop.clone());

        let reporter = HealthReporter::new();
        health::set_all(&reporter, ServingStatus::NotServing).await;
        if let Some(listener) = admin_listener {
            let admin = admin::serve(listener, state.metrics.clone(), state.db.clone(), stop.clone());
            background.spawn("admin listener", admin);
        }
        background.spawn(
            "health probe",
            health::watch_database(reporter.clone(), state.db.clone(), server_args.health_interval, stop.clone()),
        );
        background.spawn(
            "market refresher",
            state.market.clone().keep_fresh(server_args.market_refresh_interval, stop.clone()),
        );
        background.spawn("feed hub", state.hub.clone().run(stop.clone()));
        background.spawn(
            "clock",
            crate::feed::clock::run(
                state.db.raw().clone(),
                state.cache.clone(),
                state.metrics.clone(),
                state.rules.clone(),
                args.watch.clock_interval()?,
                stop.clone(),
            ),
        );

        background.spawn("rate-limit sweeper", rate_limits.clone().forget_idle_until(stop.clone()));
        // The layers every call goes through, outermost first, over gRPC and from the in-process REST gateway.
        let layers = tower::ServiceBuilder::new()
            .layer(trace::TraceLayer::new(state.metrics.clone()))
            .layer(CatchPanicLayer)
            .layer(LimitsLayer::new(server_args.max_concurrent_requests, server_args.request_timeout))
            .layer(AuthLayer::new(verifier, !args.auth.reflection_requires_auth))
            .layer(admit::AdmitLayer(rate_limits));
        let routes = routes::routes(&state, &reporter, server_args.max_request_bytes)?;

        if let Some(listener) = http_listener {
            let upstream = trading_gateway::upstream::in_process(layers.service(routes.clone().prepare()));
            let gateway = trading_gateway::Gateway::new(upstream, args.http.clone())?.with_demo_users(demo_users);
            let stopped = stop.clone().cancelled_owned();
            background.spawn("REST gateway", async move {
                if let Err(e) = gateway.serve(listener, stopped).await {
                    tracing::error!(error = format!("{e:#}"), "REST gateway stopped");
                }
            });
        }

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
        let router = builder.layer(layers).add_routes(routes);

        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let signalled = stop.clone();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutdown requested: NOT_SERVING, draining in-flight calls");
            // Watch streams, the REST gateway and the background tasks all stop on this.
            signalled.cancel();
            health::set_all(&reporter, ServingStatus::NotServing).await;
        };
        tracing::info!(address = %local_addr, "serving gRPC");
        let serve = router.serve_with_incoming_shutdown(incoming, signal);
        tokio::pin!(serve);
        let grace = server_args.shutdown_grace;
        let result = tokio::select! {
            result = &mut serve => result.map_err(anyhow::Error::from),
            () = async {
                stop.cancelled().await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(grace_ms = grace.as_millis() as u64, "in-flight calls did not finish in time; stopping anyway");
                Ok(())
            }
        };
        background.shutdown().await;
        state.db.raw().close().await;
        tracing::info!("server stopped");
        result
    }
}

/// `age` ± up to 10 % (drawn once per replica), so replicas started together do not close their connections
/// together (gRPC A9 asks for jitter).
fn jitter(age: std::time::Duration) -> std::time::Duration {
    let age = age.min(std::time::Duration::from_secs(365 * 86_400));
    let spread = uuid::Uuid::new_v4().as_u128() % 2001; // 0..=2000 per mille of 10 %
    age.mul_f64(0.9 + spread as f64 / 10_000.0)
}
