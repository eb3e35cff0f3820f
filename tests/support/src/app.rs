//! A real server on 127.0.0.1:0, in process, against a fresh database and a Redis key prefix of its own.

use std::net::SocketAddr;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use trading_monitor::config::{Cli, Command, ServeArgs};
use trading_monitor::pb;
use trading_monitor::pb::guards_service_client::GuardsServiceClient;
use trading_monitor::pb::positions_service_client::PositionsServiceClient;
use trading_monitor::pb::reconciliation_service_client::ReconciliationServiceClient;
use trading_monitor::server::Application;
use uuid::Uuid;

use crate::auth::{SECRET, authed, token, writer};
use crate::database::{drop_database, fresh_database, url_for};
use trading_monitor::samples::{broker, platform, quote, sync};

/// Server arguments for a test: port 0, the given database, the test secret, fast health checks, and a Redis key
/// prefix of its own (tests share the local Redis and run in parallel).
pub fn serve_args(database: &str) -> ServeArgs {
    let prefix = format!("trading:v1:test-{}", Uuid::new_v4().simple());
    let cli = <Cli as clap::Parser>::try_parse_from([
        "trading-monitor",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &url_for(database),
        "--jwt-secret",
        SECRET,
        "--health-interval",
        "200ms",
        "--shutdown-grace",
        "2s",
        "--cache-key-prefix",
        &prefix,
        // A Redis call past its bound falls back to PostgreSQL, by design; the production default (100 ms) is
        // hit now and then on a test machine running many servers at once, which would make counting tests
        // flaky. Tests about slow or dead Redis set their own.
        "--redis-timeout",
        "500ms",
    ])
    .expect("valid test arguments");
    match cli.command {
        Command::Serve(args) => args,
        _ => unreachable!(),
    }
}

/// A running server and a direct pool on its database.
pub struct TestApp {
    /// Its gRPC address.
    pub addr: SocketAddr,
    /// The in-process REST gateway's address, when `--http-listen` was given.
    pub http: Option<SocketAddr>,
    /// The admin listener's address, when `--admin-listen` was given.
    pub admin: Option<SocketAddr>,
    /// The server's cache: its counters tell how many PostgreSQL loads were issued.
    pub cache: trading_monitor::cache::Cache,
    /// A channel to it.
    pub channel: Channel,
    /// A pool on its database, for what no RPC shows.
    pub pool: PgPool,
    /// Its database's name (dropped with it).
    pub database: String,
    /// The Redis key prefix (each test has its own).
    pub key_prefix: String,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Starts a server with default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a server after `configure` adjusted its arguments.
pub async fn spawn_app_with(configure: impl FnOnce(&mut ServeArgs)) -> TestApp {
    let database = fresh_database().await;
    let mut args = serve_args(&database);
    configure(&mut args);
    spawn_with_args(args, database).await
}

/// Two replicas of one deployment: the same database, the same Redis and key prefix, each on its own port.
pub async fn spawn_replicas_with(configure: impl FnOnce(&mut ServeArgs)) -> (TestApp, TestApp) {
    let database = fresh_database().await;
    let mut args = serve_args(&database);
    // The staleness bounds these tests check under faults (a dead node, a failover) follow from the production
    // Redis bound: a call to a dead node gives up after it and the invalidation goes the fallback way.
    args.cache.redis_timeout = Duration::from_millis(100);
    configure(&mut args);
    let mut second = args.clone();
    second.server.skip_migrations = true;
    let a = spawn_with_args(args, database.clone()).await;
    let b = spawn_with_args(second, database).await;
    (a, b)
}

/// Waits until `app` hears other replicas' invalidations (its own heartbeat came back).
pub async fn until_hearing(app: &TestApp) {
    for _ in 0..100 {
        if app.cache.hearing_invalidations() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the replica never heard its own heartbeat");
}

/// Starts a server with exactly these arguments (the database must exist).
pub async fn spawn_with_args(args: ServeArgs, database: String) -> TestApp {
    let pool = PgPool::connect_lazy(&args.database.database_url).unwrap();
    let key_prefix = args.cache.cache_key_prefix.clone();
    let app = Application::build(args).await.expect("server builds");
    let addr = app.local_addr();
    let http = app.http_addr();
    let admin = app.admin_addr();
    let cache = app.cache();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
    TestApp { addr, http, admin, cache, channel, pool, database, key_prefix, shutdown: Some(tx), server: Some(server) }
}

impl TestApp {
    /// A ReconciliationService client.
    pub fn recon(&self) -> ReconciliationServiceClient<Channel> {
        ReconciliationServiceClient::new(self.channel.clone())
    }

    /// A PositionsService client.
    pub fn positions(&self) -> PositionsServiceClient<Channel> {
        PositionsServiceClient::new(self.channel.clone())
    }

    /// A GuardsService client.
    pub fn guards(&self) -> GuardsServiceClient<Channel> {
        GuardsServiceClient::new(self.channel.clone())
    }

    /// Stops the server as SIGTERM would and waits for it.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.server.take() {
            Some(handle) => handle.await?,
            None => Ok(()),
        }
    }

    /// Submits a sync with a writer token.
    pub async fn submit(
        &self,
        sync: pb::SubmitBrokerSyncRequest,
    ) -> Result<pb::SubmitBrokerSyncResponse, tonic::Status> {
        self.recon().submit_broker_sync(authed(sync, &writer())).await.map(|r| r.into_inner())
    }

    /// Submits quotes with a writer token.
    pub async fn quote(&self, batch: pb::SubmitQuotesRequest) -> Result<pb::SubmitQuotesResponse, tonic::Status> {
        self.guards().submit_quotes(authed(batch, &writer())).await.map(|r| r.into_inner())
    }

    /// `user`'s reconciliation status with up to 100 recent events.
    pub async fn status(&self, user: Uuid) -> pb::GetReconciliationStatusResponse {
        let request = pb::GetReconciliationStatusRequest { user_id: String::new(), recent_events_limit: 100 };
        self.recon().get_reconciliation_status(authed(request, &token(user, &[]))).await.unwrap().into_inner()
    }

    /// `user`'s open positions (the first page).
    pub async fn open_positions(&self, user: Uuid) -> pb::ListOpenPositionsResponse {
        let request = pb::ListOpenPositionsRequest::default();
        self.positions().list_open_positions(authed(request, &token(user, &[]))).await.unwrap().into_inner()
    }

    /// `user`'s guard status.
    pub async fn guard_status(&self, user: Uuid) -> pb::GetGuardStatusResponse {
        let request = pb::GetGuardStatusRequest::default();
        self.guards().get_guard_status(authed(request, &token(user, &[]))).await.unwrap().into_inner()
    }

    /// Every event of `user`, walking all pages.
    pub async fn all_events(&self, user: Uuid) -> Vec<pb::ReconciliationEvent> {
        let mut events = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::ListReconciliationEventsRequest { page_size: 500, page_token, ..Default::default() };
            let page =
                self.recon().list_reconciliation_events(authed(request, &token(user, &[]))).await.unwrap().into_inner();
            events.extend(page.events);
            if page.next_page_token.is_empty() {
                return events;
            }
            page_token = page.next_page_token;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
        let database = self.database.clone();
        // Drop the database from a separate thread with its own runtime: Drop cannot await.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(drop_database(&database));
        })
        .join();
    }
}

/// A user ("alice") with two open EURUSD positions in a GBP account, one matched, and the quotes that value
/// them: what the REST and browser tests read.
pub async fn seed(app: &TestApp) -> Uuid {
    let alice = Uuid::new_v4();
    app.quote(pb::SubmitQuotesRequest {
        quotes: vec![quote("EURUSD", "1.1000", "1.1002"), quote("GBPUSD", "1.2500", "1.2502")],
        candle_closes: vec![],
    })
    .await
    .unwrap();
    let brokers = vec![
        broker("101", "EURUSD", pb::Side::Buy, "1", "1.0900", "1.1000"),
        broker("102", "EURUSD", pb::Side::Sell, "0.5", "1.1100", "1.1000"),
    ];
    let platforms = vec![platform("P-1", "EURUSD", pb::Side::Buy, "1", "1.0900", "101")];
    app.submit(sync(alice, "10000", brokers, platforms)).await.unwrap();
    alice
}
