//! Test harness: a real server on 127.0.0.1:0 against a fresh PostgreSQL database per test (cloned from a
//! migrated template), reached through the generated clients like any caller.

// Each test module uses a different subset of these helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Child, Command as Process, Stdio};
use std::str::FromStr;
use std::time::Duration;

use chrono::Utc;
use secrecy::SecretString;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgPool};
use tokio::net::TcpStream;
use tokio::sync::{OnceCell, oneshot};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use trading_monitor::auth::{TokenSpec, mint_hs256};
use trading_monitor::config::{Cli, Command, ServeArgs};
use trading_monitor::pb;
use trading_monitor::pb::guards_service_client::GuardsServiceClient;
use trading_monitor::pb::positions_service_client::PositionsServiceClient;
use trading_monitor::pb::reconciliation_service_client::ReconciliationServiceClient;
use trading_monitor::server::Application;
use trading_monitor::storage;
use uuid::Uuid;

/// HS256 secret of every test server.
pub const SECRET: &str = "integration-test-secret-0123456789abcdef";
/// Scope names.
pub const READ_ANY: &str = "trading:read:any";
pub const SYNC_WRITE: &str = "trading:sync:write";

/// The PostgreSQL server tests use (`TM_TEST_DATABASE_URL`, default the local trust-auth server).
fn admin_options() -> PgConnectOptions {
    let url = std::env::var("TM_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".into());
    PgConnectOptions::from_str(&url).expect("TM_TEST_DATABASE_URL is a PostgreSQL URL")
}

pub fn url_for(database: &str) -> String {
    let o = admin_options();
    format!("postgres://{}@{}:{}/{database}?sslmode=disable", o.get_username(), o.get_host(), o.get_port())
}

/// A migrated template database, created once per test process; its name changes with the migrations.
async fn template() -> &'static str {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
            for m in storage::MIGRATOR.iter() {
                for b in m.checksum.iter() {
                    hash = (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
                }
            }
            let name = format!("tm_test_template_{hash:016x}");
            let mut admin = admin_options().connect().await.expect("PostgreSQL is reachable");
            let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(&name)
                .fetch_one(&mut admin)
                .await
                .unwrap();
            if !exists {
                let building = format!("{name}_building_{}", std::process::id());
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{building}\"")))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                let pool = PgPool::connect(&url_for(&building)).await.unwrap();
                storage::migrate(&pool).await.expect("migrations apply");
                pool.close().await;
                // Another test process may have won the race; either way a complete template exists afterwards.
                let renamed =
                    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER DATABASE \"{building}\" RENAME TO \"{name}\"")))
                        .execute(&mut admin)
                        .await;
                if renamed.is_err() {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE \"{building}\"")))
                        .execute(&mut admin)
                        .await;
                }
            }
            name
        })
        .await
}

/// Creates a fresh, migrated database for one test.
pub async fn fresh_database() -> String {
    let template = template().await;
    let name = format!("tm_test_{}", Uuid::new_v4().simple());
    let mut admin = admin_options().connect().await.unwrap();
    for attempt in 0.. {
        let created = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\"")))
            .execute(&mut admin)
            .await;
        match created {
            Ok(_) => break,
            // Cloning fails while another session briefly touches the template; retry.
            Err(e) if attempt < 50 => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot create test database: {e}"),
        }
    }
    name
}

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
    pub addr: SocketAddr,
    /// The in-process REST gateway's address, when `--http-listen` was given.
    pub http: Option<SocketAddr>,
    /// The admin listener's address, when `--admin-listen` was given.
    pub admin: Option<SocketAddr>,
    /// The server's cache: its counters tell how many PostgreSQL loads were issued.
    pub cache: trading_monitor::cache::Cache,
    pub channel: Channel,
    pub pool: PgPool,
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
    pub fn recon(&self) -> ReconciliationServiceClient<Channel> {
        ReconciliationServiceClient::new(self.channel.clone())
    }

    pub fn positions(&self) -> PositionsServiceClient<Channel> {
        PositionsServiceClient::new(self.channel.clone())
    }

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

    pub async fn status(&self, user: Uuid) -> pb::GetReconciliationStatusResponse {
        let request = pb::GetReconciliationStatusRequest { user_id: String::new(), recent_events_limit: 100 };
        self.recon().get_reconciliation_status(authed(request, &token(user, &[]))).await.unwrap().into_inner()
    }

    pub async fn open_positions(&self, user: Uuid) -> pb::ListOpenPositionsResponse {
        let request = pb::ListOpenPositionsRequest::default();
        self.positions().list_open_positions(authed(request, &token(user, &[]))).await.unwrap().into_inner()
    }

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

/// A `redis-server` of this test's own on a free port, killed when dropped.
pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    pub async fn start(port: Option<u16>) -> RedisServer {
        let port =
            port.unwrap_or_else(|| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
        let args = ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
        let child = Process::new("redis-server")
            .args(args)
            .args(["--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        let server = RedisServer { child, port };
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server did not start on port {port}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Sends a signal (`-STOP` freezes it: connections stay open, nothing answers; `-CONT` resumes it).
    pub fn signal(&self, signal: &str) {
        let status = Process::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `redis-cli -p <port> <args>` and returns its output.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Process::new("redis-cli").args(["-p", &port.to_string()]).args(args).output().expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Drops a test database.
pub async fn drop_database(database: &str) {
    if let Ok(mut admin) = admin_options().connect().await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)")))
            .execute(&mut admin)
            .await;
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

/// A user token with `scopes`, valid for an hour.
pub fn token(user: Uuid, scopes: &[&str]) -> String {
    let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
    let spec =
        TokenSpec { user_id: user, scopes: &scopes, ttl: Duration::from_secs(3600), issuer: None, audience: None };
    mint_hs256(&SecretString::from(SECRET), &spec).unwrap()
}

/// A trading-backend token: may write syncs and quotes and read anyone.
pub fn writer() -> String {
    token(Uuid::new_v4(), &[SYNC_WRITE, READ_ANY])
}

/// A request carrying `authorization: Bearer <token>`.
pub fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    with_header(message, &format!("Bearer {token}"))
}

/// A request carrying this exact `authorization` value.
pub fn with_header<T>(message: T, value: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value: MetadataValue<_> = value.parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

pub fn ts(t: chrono::DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(pb::timestamp(t))
}

/// A timestamp as comparable (seconds, nanos); absent is the smallest.
pub fn at(t: &Option<prost_types::Timestamp>) -> (i64, i32) {
    t.as_ref().map_or((i64::MIN, 0), |t| (t.seconds, t.nanos))
}

/// A broker position with no TP/SL and no broker-reported P&L.
pub fn broker(id: &str, symbol: &str, side: pb::Side, volume: &str, open: &str, current: &str) -> pb::BrokerPosition {
    pb::BrokerPosition {
        position_identifier: id.into(),
        ticket: format!("T{id}"),
        symbol: symbol.into(),
        side: side.into(),
        volume: volume.into(),
        open_price: open.into(),
        current_price: current.into(),
        open_time: ts(Utc::now() - chrono::Duration::hours(1)),
        ..Default::default()
    }
}

/// A platform position (knowing the broker identifier when `id` is not empty).
pub fn platform(
    trade: &str,
    symbol: &str,
    side: pb::Side,
    volume: &str,
    entry: &str,
    id: &str,
) -> pb::PlatformPosition {
    pb::PlatformPosition {
        platform_trade_id: trade.into(),
        symbol: symbol.into(),
        side: side.into(),
        volume: volume.into(),
        entry_price: entry.into(),
        position_identifier: id.into(),
        ..Default::default()
    }
}

/// A successful sync for `user` with this equity (balance = equity, GBP), finished just now.
pub fn sync(
    user: Uuid,
    equity: &str,
    brokers: Vec<pb::BrokerPosition>,
    platforms: Vec<pb::PlatformPosition>,
) -> pb::SubmitBrokerSyncRequest {
    sync_in(user, "GBP", equity, brokers, platforms)
}

/// A successful sync in a given account currency.
pub fn sync_in(
    user: Uuid,
    currency: &str,
    equity: &str,
    brokers: Vec<pb::BrokerPosition>,
    platforms: Vec<pb::PlatformPosition>,
) -> pb::SubmitBrokerSyncRequest {
    let now = Utc::now();
    pb::SubmitBrokerSyncRequest {
        request_id: Uuid::new_v4().to_string(),
        user_id: user.to_string(),
        started_time: ts(now - chrono::Duration::milliseconds(400)),
        finished_time: ts(now),
        result: Some(pb::submit_broker_sync_request::Result::Snapshot(pb::SyncSnapshot {
            account: Some(pb::AccountSnapshot {
                balance: equity.into(),
                equity: equity.into(),
                margin: "0".into(),
                currency: currency.into(),
                broker_time: ts(now),
            }),
            broker_positions: brokers,
            platform_positions: platforms,
        })),
    }
}

/// A failed sync for `user`.
pub fn failed_sync(user: Uuid, message: &str) -> pb::SubmitBrokerSyncRequest {
    let now = Utc::now();
    pb::SubmitBrokerSyncRequest {
        request_id: Uuid::new_v4().to_string(),
        user_id: user.to_string(),
        started_time: ts(now - chrono::Duration::seconds(2)),
        finished_time: ts(now),
        result: Some(pb::submit_broker_sync_request::Result::Failure(pb::SyncFailure {
            error_message: message.into(),
        })),
    }
}

/// A batch of quotes only.
pub fn quotes(quotes: Vec<pb::Quote>) -> pb::SubmitQuotesRequest {
    pb::SubmitQuotesRequest { quotes, candle_closes: vec![] }
}

/// A quote stamped now.
pub fn quote(symbol: &str, bid: &str, ask: &str) -> pb::Quote {
    pb::Quote { symbol: symbol.into(), bid: bid.into(), ask: ask.into(), quote_time: ts(Utc::now()) }
}

/// A candle close stamped now.
pub fn candle(symbol: &str, previous_close: &str, open: &str) -> pb::CandleClose {
    pb::CandleClose {
        symbol: symbol.into(),
        previous_close: previous_close.into(),
        open: open.into(),
        open_time: ts(Utc::now()),
    }
}

/// The `google.rpc.BadRequest` field names of an INVALID_ARGUMENT status.
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

pub fn bad_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// Holds a symbol's ingest lock (as `storage::quotes::record` takes it) until the transaction is dropped, so a
/// quote batch for that symbol waits.
pub async fn hold_symbol(app: &TestApp, symbol: &str) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('trading-monitor:symbol:' || $1, 0))")
        .bind(symbol)
        .execute(&mut *blocker)
        .await
        .unwrap();
    blocker
}

/// A PostgreSQL cluster of this test's own (initdb + pg_ctl on a free loopback port, in a temporary directory),
/// for tests that stop and restart PostgreSQL; stopped and removed when dropped. The server programs run as the
/// `postgres` user when the tests run as root (PostgreSQL refuses to run as root).
pub struct PgCluster {
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
    pub port: u16,
}

impl PgCluster {
    /// A new, running cluster (trust authentication, fsync off: it holds only test data).
    pub fn start() -> PgCluster {
        let bindir = Process::new("pg_config").arg("--bindir").output().expect("pg_config is installed");
        let bin = std::path::PathBuf::from(String::from_utf8_lossy(&bindir.stdout).trim());
        let dir = std::env::temp_dir().join(format!("tm-pg-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cluster = PgCluster { dir, bin, port };
        cluster.chown();
        let data = cluster.dir.join("data");
        let status = cluster
            .as_postgres(&cluster.bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .status()
            .expect("initdb runs");
        assert!(status.success(), "initdb failed");
        cluster.resume();
        cluster
    }

    fn chown(&self) {
        if is_root() {
            let _ = Process::new("chown").args(["-R", "postgres"]).arg(&self.dir).status();
        }
    }

    fn as_postgres(&self, program: &std::path::Path) -> Process {
        if is_root() {
            let mut command = Process::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Process::new(program)
        }
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        let status = self
            .as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(args)
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl runs");
        assert!(status.success(), "pg_ctl {args:?} failed");
    }

    /// Starts it (again), waiting until it accepts connections.
    pub fn resume(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50",
            self.port,
            self.dir.display()
        );
        self.pg_ctl(&["-w", "-o", &options, "start"]);
    }

    /// Stops it at once, as a crash would (`-m immediate`).
    pub fn kill(&self) {
        self.pg_ctl(&["-m", "immediate", "stop"]);
    }

    /// The URL of `database` on it.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}?sslmode=disable", self.port)
    }

    /// A server (with the default test settings) on a new database `database` of this cluster.
    pub async fn serve(&self, database: &str) -> TestApp {
        storage::create_database_if_missing(&self.url(database)).await.unwrap();
        let mut args = serve_args(database);
        args.database.database_url = self.url(database);
        // The name given to TestApp is not a database of the shared cluster: dropping it there at the end is
        // harmless (this cluster goes as a whole).
        spawn_with_args(args, format!("{database}_{}", Uuid::new_v4().simple())).await
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self
            .as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Process::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A child process, killed when dropped (should a test fail half-way).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the gRPC server at `port` reports SERVING (10 s at most).
pub async fn until_serving(port: u16) -> Channel {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect_lazy();
    let mut health = HealthClient::new(channel.clone());
    for _ in 0..100 {
        if let Ok(r) = health.check(HealthCheckRequest { service: String::new() }).await
            && r.into_inner().status() == ServingStatus::Serving
        {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the server never became SERVING");
}

/// A free loopback port (free when asked: a test binds it at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Sends SIGTERM to `child` and waits (at most `limit`) for it to exit.
pub async fn terminate(child: &mut KillOnDrop, limit: Duration) -> std::process::ExitStatus {
    let signalled = std::time::Instant::now();
    let status = std::process::Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    loop {
        if let Some(exit) = child.0.try_wait().unwrap() {
            return exit;
        }
        assert!(signalled.elapsed() < limit, "still running {limit:?} after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
