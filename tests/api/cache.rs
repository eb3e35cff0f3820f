//! The Redis cache: hits, invalidation, single flight, L1, faults of Redis and PostgreSQL.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use trading_monitor::cache::Rpc;
use trading_monitor::pb;
use trading_monitor::pb::Side::Buy;
use trading_monitor::pb::reconciliation_service_client::ReconciliationServiceClient;
use trading_monitor::server::Application;
use uuid::Uuid;

use crate::helpers::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn pg(app: &TestApp, rpc: Rpc) -> u64 {
    app.cache.metrics().snapshot(rpc).pg_queries
}

async fn status(app: &TestApp, user: Uuid) -> (String, pb::GetReconciliationStatusResponse) {
    let request = pb::GetReconciliationStatusRequest { user_id: String::new(), recent_events_limit: 10 };
    let response = app.recon().get_reconciliation_status(authed(request, &token(user, &[]))).await.unwrap();
    (x_cache(&response), response.into_inner())
}

async fn positions(
    app: &TestApp,
    user: Uuid,
    symbol: &str,
) -> Result<(String, pb::ListOpenPositionsResponse), tonic::Status> {
    let request = pb::ListOpenPositionsRequest { symbol: symbol.into(), ..Default::default() };
    let response = app.positions().list_open_positions(authed(request, &token(user, &[]))).await?;
    Ok((x_cache(&response), response.into_inner()))
}

/// Calls one cached RPC for `user` (GetPosition reads `position_id`) and returns its `x-cache` value.
async fn read(app: &TestApp, rpc: Rpc, user: Uuid, position_id: &str) -> Result<String, tonic::Status> {
    let me = token(user, &[]);
    let (mut recon, mut positions, mut guards) = (app.recon(), app.positions(), app.guards());
    Ok(match rpc {
        Rpc::GetReconciliationStatus => {
            let request = pb::GetReconciliationStatusRequest::default();
            x_cache(&recon.get_reconciliation_status(authed(request, &me)).await?)
        }
        Rpc::ListOpenPositions => {
            x_cache(&positions.list_open_positions(authed(pb::ListOpenPositionsRequest::default(), &me)).await?)
        }
        Rpc::GetPosition => {
            let request = pb::GetPositionRequest { position_id: position_id.into(), user_id: String::new() };
            x_cache(&positions.get_position(authed(request, &me)).await?)
        }
        Rpc::GetGuardStatus => {
            x_cache(&guards.get_guard_status(authed(pb::GetGuardStatusRequest::default(), &me)).await?)
        }
        Rpc::GetDrawdownStatus => {
            x_cache(&guards.get_drawdown_status(authed(pb::GetDrawdownStatusRequest::default(), &me)).await?)
        }
        Rpc::ListMarketAlerts => {
            x_cache(&guards.list_market_alerts(authed(pb::ListMarketAlertsRequest::default(), &me)).await?)
        }
    })
}

/// Reads the status until it is a miss (Redis answered and was populated), waiting out L1 between tries.
async fn until_miss(app: &TestApp, user: Uuid, within: Duration) -> pb::GetReconciliationStatusResponse {
    let deadline = Instant::now() + within;
    loop {
        let (cache, body) = status(app, user).await;
        if cache == "miss" {
            return body;
        }
        assert!(Instant::now() < deadline, "no miss within {within:?}: Redis is not used (last x-cache {cache})");
        tokio::time::sleep(ms(150)).await;
    }
}

/// Makes a server unable to hear invalidations (its first heartbeat would come back only after a minute), so
/// its L1 behaves as while the invalidation channel is down: entries live only the short L1 TTL.
fn deaf(args: &mut trading_monitor::config::ServeArgs) {
    args.cache.cache_heartbeat = Duration::from_secs(60);
}

fn gold() -> pb::BrokerPosition {
    broker("1", "XAUUSD", Buy, "0.5", "2350.00", "2360.50")
}

/// A TCP proxy to PostgreSQL that can be cut: live connections are aborted and new ones refused.
struct PgProxy {
    port: u16,
    cut: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    accept: JoinHandle<()>,
}

impl PgProxy {
    async fn start(host: String, port: u16) -> PgProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::<AbortHandle>::new()));
        let (flag, live) = (cut.clone(), connections.clone());
        let proxy_port = listener.local_addr().unwrap().port();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let host = host.clone();
                let mut live = live.lock().unwrap();
                if flag.load(Ordering::SeqCst) {
                    continue; // dropping `inbound` closes it
                }
                live.push(
                    tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect((host.as_str(), port)).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    })
                    .abort_handle(),
                );
            }
        });
        PgProxy { port: proxy_port, cut, connections, accept }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.connections.lock().unwrap().drain(..).for_each(|c| c.abort());
        self.accept.abort(); // drops the listener: new connections are refused
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

#[tokio::test]
async fn a_second_read_is_a_hit_with_the_data_time_of_the_first() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    app.submit(sync(user, "10000", vec![gold()], vec![])).await.unwrap();

    let (first, miss) = status(&app, user).await;
    assert_eq!((first.as_str(), pg(&app, Rpc::GetReconciliationStatus)), ("miss", 1));
    let (second, hit) = status(&app, user).await;

    assert_eq!((second.as_str(), pg(&app, Rpc::GetReconciliationStatus)), ("hit", 1));
    assert_eq!(hit.as_of, miss.as_of, "as_of is when the data was read, not when the hit was served");
    assert_eq!(hit, miss);
}

#[tokio::test]
async fn an_acknowledged_sync_invalidates_the_status_and_the_positions_of_its_user() {
    let app = spawn_app().await;
    let (user, other) = (Uuid::new_v4(), Uuid::new_v4());
    app.submit(sync(user, "10000", vec![gold()], vec![])).await.unwrap();
    app.submit(sync(other, "10000", vec![], vec![])).await.unwrap();
    assert_eq!(status(&app, user).await.0, "miss");
    assert_eq!(status(&app, other).await.0, "miss");
    assert_eq!(positions(&app, user, "").await.unwrap().0, "miss");
    let (hit, warm) = status(&app, user).await;
    assert_eq!((hit.as_str(), warm.total_syncs), ("hit", 1));
    let (hit, list) = positions(&app, user, "").await.unwrap();
    assert_eq!((hit.as_str(), list.positions.len()), ("hit", 1));

    let second = broker("2", "EURUSD", Buy, "1", "1.1", "1.1");
    app.submit(sync(user, "10000", vec![gold(), second], vec![])).await.unwrap();

    let (cache, after) = status(&app, user).await;
    assert_eq!((cache.as_str(), after.total_syncs, after.open_positions_count), ("miss", 2, 2));
    let (cache, list) = positions(&app, user, "").await.unwrap();
    assert_eq!((cache.as_str(), list.positions.len()), ("miss", 2));
    assert_eq!(status(&app, other).await.0, "hit", "another user's entries are untouched");
}

#[tokio::test]
async fn a_quote_batch_revalues_a_cached_account_at_once_without_invalidating_it_or_querying_postgres() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    app.submit(sync(user, "10000", vec![gold()], vec![])).await.unwrap();
    let (cache, list) = positions(&app, user, "").await.unwrap();
    assert_eq!((cache.as_str(), list.positions[0].pnl_source()), ("miss", pb::PnlSource::Unavailable));
    let loads = app.cache.metrics().total().pg_queries;

    // A conversion pair the account does not hold: a GBP account's gold is valued through GBPUSD.
    app.quote(pb::SubmitQuotesRequest { quotes: vec![quote("GBPUSD", "1.25", "1.25")], ..Default::default() })
        .await
        .unwrap();

    let (cache, list) = positions(&app, user, "").await.unwrap();
    let p = &list.positions[0];
    assert_eq!(cache, "hit", "prices are valued when served: the cached book is still good");
    // 10.50 x 0.5 lots x 100 oz = 525 USD = 420 GBP at 1.25.
    assert_eq!((p.unrealized_pnl.as_str(), p.pnl_source()), ("420.00", pb::PnlSource::Computed));
    assert!(at(&list.prices_as_of) > at(&list.as_of), "the prices are newer than the cached book");

    // A holder of the quoted symbol sees the new price, and the guard its quote time.
    let moved = vec![quote("XAUUSD", "2370.00", "2370.50")];
    app.quote(pb::SubmitQuotesRequest { quotes: moved, ..Default::default() }).await.unwrap();
    let (cache, list) = positions(&app, user, "").await.unwrap();
    let p = &list.positions[0];
    assert_eq!((cache.as_str(), p.current_price.as_str(), p.unrealized_pnl.as_str()), ("hit", "2370.00", "800.00"));
    let guard = app.guards().get_guard_status(authed(pb::GetGuardStatusRequest::default(), &token(user, &[]))).await;
    let guard = guard.unwrap();
    assert_eq!(x_cache(&guard), "hit");
    assert!(guard.into_inner().market_alerts.is_empty(), "the quote is fresh: no stale-quote alert");
    assert_eq!(app.cache.metrics().total().pg_queries, loads, "no PostgreSQL load for any of it");
}

#[tokio::test]
async fn two_hundred_concurrent_reads_of_a_cold_key_query_postgres_once() {
    let app = spawn_app_with(|args| args.cache.cache_l1_ttl = ms(50)).await;
    let user = Uuid::new_v4();
    app.submit(sync(user, "10000", vec![gold()], vec![])).await.unwrap();
    let before = pg(&app, Rpc::GetGuardStatus);

    let me = token(user, &[]);
    let calls = (0..200).map(|_| {
        let (mut client, me) = (app.guards(), me.clone());
        tokio::spawn(async move {
            let response = client.get_guard_status(authed(pb::GetGuardStatusRequest::default(), &me)).await.unwrap();
            x_cache(&response)
        })
    });
    let results: Vec<String> = futures::future::join_all(calls).await.into_iter().map(Result::unwrap).collect();

    assert_eq!(pg(&app, Rpc::GetGuardStatus) - before, 1);
    assert_eq!(results.iter().filter(|c| *c == "miss").count(), 1);
    assert_eq!(results.iter().filter(|c| *c == "hit").count(), 199);
}

#[tokio::test]
async fn while_not_hearing_invalidations_an_l1_entry_lives_the_short_l1_ttl_and_then_comes_from_redis() {
    let app = spawn_app_with(|args| {
        (args.cache.cache_ttl, args.cache.cache_l1_ttl) = (Duration::from_secs(60), ms(200));
        deaf(args);
    })
    .await;
    until_redis_answers(&app.channel).await;
    let user = Uuid::new_v4();
    let metrics = || app.cache.metrics().snapshot(Rpc::GetReconciliationStatus);

    assert_eq!(status(&app, user).await.0, "miss");
    assert_eq!(status(&app, user).await.0, "hit");
    let l1 = metrics();
    assert_eq!((l1.hits, l1.l1_hits), (1, 1));
    tokio::time::sleep(ms(300)).await;
    assert_eq!(status(&app, user).await.0, "hit");

    let redis = metrics();
    assert_eq!((redis.hits, redis.l1_hits, redis.pg_queries), (2, 1, 1), "the second hit came from Redis");
}

#[tokio::test]
async fn after_the_ttl_a_read_goes_to_postgres_again() {
    let app = spawn_app_with(|args| {
        args.cache.cache_ttl = ms(300);
        args.cache.cache_ttl_jitter_pct = 0;
        args.cache.cache_l1_ttl = ms(300);
        args.cache.cache_refresh_ahead_pct = 0;
    })
    .await;
    let user = Uuid::new_v4();

    assert_eq!(status(&app, user).await.0, "miss");
    assert_eq!(status(&app, user).await.0, "hit");
    tokio::time::sleep(ms(600)).await;

    assert_eq!(status(&app, user).await.0, "miss");
    assert_eq!(pg(&app, Rpc::GetReconciliationStatus), 2);
}

#[tokio::test]
async fn an_l1_entry_filled_from_redis_is_not_served_past_the_ttl() {
    let app = spawn_app_with(|args| {
        args.cache.cache_ttl = ms(400);
        args.cache.cache_ttl_jitter_pct = 0;
        args.cache.cache_l1_ttl = ms(250);
        args.cache.cache_refresh_ahead_pct = 0;
        deaf(args);
    })
    .await;
    until_redis_answers(&app.channel).await;
    let user = Uuid::new_v4();
    assert_eq!(status(&app, user).await.0, "miss"); // fresh until t+400 ms
    tokio::time::sleep(ms(300)).await; // L1 expired, Redis still fresh
    assert_eq!(status(&app, user).await.0, "hit"); // from Redis, re-entering L1 for 250 ms
    tokio::time::sleep(ms(200)).await; // t+500 ms: 100 ms past the TTL

    assert_eq!(status(&app, user).await.0, "miss", "a response older than cache_ttl is not a hit");
}

#[tokio::test]
async fn an_l1_ttl_longer_than_the_ttl_does_not_extend_freshness() {
    // Defaults: cache_l1_ttl 500 ms.
    let app = spawn_app_with(|args| {
        (args.cache.cache_ttl, args.cache.cache_ttl_jitter_pct, args.cache.cache_refresh_ahead_pct) = (ms(200), 0, 0);
    })
    .await;
    let user = Uuid::new_v4();
    assert_eq!(status(&app, user).await.0, "miss");
    tokio::time::sleep(ms(350)).await;

    assert_eq!(status(&app, user).await.0, "miss", "a response older than cache_ttl is not a hit");
}

#[tokio::test]
async fn with_the_cache_disabled_every_read_bypasses_it_and_queries_postgres() {
    let app = spawn_app_with(|args| args.cache.cache_disabled = true).await;
    let user = Uuid::new_v4();
    for n in 1..=3 {
        assert_eq!(status(&app, user).await.0, "bypass");
        assert_eq!(positions(&app, user, "").await.unwrap().0, "bypass");
        assert_eq!((pg(&app, Rpc::GetReconciliationStatus), pg(&app, Rpc::ListOpenPositions)), (n, n));
    }
    let total = app.cache.metrics().total();
    assert_eq!((total.bypass, total.hits, total.misses, total.redis_errors), (6, 0, 0, 0));
}

async fn health(channel: &Channel, service: &str) -> ServingStatus {
    let response = HealthClient::new(channel.clone()).check(HealthCheckRequest { service: service.into() }).await;
    response.unwrap().into_inner().status()
}

#[tokio::test]
async fn with_redis_unreachable_every_cached_read_succeeds_fast_from_postgres() {
    let app = spawn_app_with(|args| {
        args.cache.redis_url = "redis://127.0.0.1:1".into();
        // The holder's symbol is never quoted: the clock would record it stale (an event, so the holder's cached
        // entries go), which is right but not what this test counts.
        args.watch.clock_interval = Duration::from_secs(3600);
    })
    .await;
    // The holder's sync could not be invalidated in Redis, so this replica no longer trusts (or tries) Redis for
    // them; the stranger's reads do try Redis, fail, and open the breaker.
    let (holder, stranger) = (Uuid::new_v4(), Uuid::new_v4());
    app.submit(sync(holder, "10000", vec![gold()], vec![])).await.unwrap();
    let request = pb::ListOpenPositionsRequest::default();
    let list = app.positions().list_open_positions(authed(request, &token(holder, &[]))).await.unwrap();
    let position_id = list.into_inner().positions[0].position_id.clone();
    let reads: Vec<(Uuid, Rpc)> = Rpc::ALL
        .into_iter()
        .map(|rpc| (holder, rpc))
        .chain(Rpc::ALL.into_iter().filter(|r| *r != Rpc::GetPosition).map(|rpc| (stranger, rpc)))
        .collect();

    // Three rounds 600 ms apart (past the short L1 TTL): with Redis down, L1 keeps values for the whole TTL, so
    // after each user's first load of each kind (status, book) every read is an L1 hit, and nothing slows down.
    let mut loaded = std::collections::HashSet::from([(holder, "book")]);
    for round in 0..3 {
        tokio::time::sleep(ms(600)).await;
        for (user, rpc) in &reads {
            for call in 0..2 {
                let started = Instant::now();
                let cache = read(&app, *rpc, *user, &position_id).await.unwrap();
                let took = started.elapsed();
                assert!(took < ms(500), "{rpc:?} round {round} call {call} took {took:?}");
                let kind = if *rpc == Rpc::GetReconciliationStatus { "status" } else { "book" };
                let first_load = loaded.insert((*user, kind));
                assert_eq!(cache, if first_load { "bypass" } else { "hit" }, "{rpc:?} round {round} call {call}");
            }
        }
    }

    let total = app.cache.metrics().total();
    // Loads: the holder's status, the stranger's status and book, plus the holder's book before the rounds.
    assert_eq!((total.misses, total.bypass, total.pg_queries), (0, 4, 4), "one load per user and kind: {total:?}");
    assert_eq!((total.hits, total.l1_hits), (3 * 11 * 2 - 3, 3 * 11 * 2 - 3), "{total:?}");
    assert!(!app.cache.redis_healthy(), "the breaker is open (the failed invalidation's retries opened it)");
    for service in ["trading.v1.ReconciliationService", "trading.v1.PositionsService", "trading.v1.GuardsService"] {
        assert_eq!(health(&app.channel, service).await, ServingStatus::Serving, "{service}");
    }
}

#[tokio::test]
async fn when_redis_dies_reads_keep_working_and_hits_resume_after_it_returns() {
    let mut redis = RedisServer::start(None).await;
    let app = spawn_app_with(|args| {
        args.cache.redis_url = redis.url();
        args.cache.cache_ttl = Duration::from_secs(60);
        args.cache.cache_l1_ttl = ms(100);
        args.cache.redis_breaker_cooldown = ms(200);
        args.cache.redis_timeout = ms(100); // the production default: a dead Redis costs a read at most this
        deaf(args);
    })
    .await;
    until_redis_answers(&app.channel).await;
    let user = Uuid::new_v4();
    let warm = until_miss(&app, user, Duration::from_secs(5)).await;
    assert_eq!(status(&app, user).await.0, "hit");

    redis.kill();
    let mut seen = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let (cache, body) = status(&app, user).await;
        assert!(started.elapsed() < ms(500), "{:?}", started.elapsed());
        assert_eq!(body.total_syncs, warm.total_syncs);
        seen.push(cache);
        tokio::time::sleep(ms(100)).await;
    }
    assert!(seen.iter().all(|c| c == "bypass" || c == "hit"), "{seen:?}");
    assert!(seen.iter().any(|c| c == "bypass"), "{seen:?}");

    let port = redis.port;
    let _redis = RedisServer::start(Some(port)).await;
    until_miss(&app, user, Duration::from_secs(10)).await;
    let before = app.cache.metrics().snapshot(Rpc::GetReconciliationStatus);
    tokio::time::sleep(ms(150)).await; // past L1: the next hit must come from Redis
    assert_eq!(status(&app, user).await.0, "hit");
    let after = app.cache.metrics().snapshot(Rpc::GetReconciliationStatus);
    assert_eq!((after.hits - before.hits, after.l1_hits - before.l1_hits), (1, 0));
    assert!(app.cache.redis_healthy());
}

#[tokio::test]
async fn a_cancelled_breaker_probe_does_not_disable_redis_for_good() {
    let redis = RedisServer::start(None).await;
    let app = spawn_app_with(|args| {
        args.cache.redis_url = redis.url();
        args.cache.cache_l1_ttl = ms(50);
        args.cache.redis_timeout = Duration::from_secs(1);
        args.cache.redis_breaker_failures = 1;
        args.cache.redis_breaker_cooldown = ms(200);
        deaf(args);
    })
    .await;
    until_redis_answers(&app.channel).await;
    // A read made before the client has connected to Redis is loaded without it (bypass), and its user's value
    // then stays in L1 and, refreshed ahead of expiry, in Redis: that user never reads a miss. So each attempt
    // takes a new user, until one read goes through Redis.
    let deadline = Instant::now() + Duration::from_secs(10);
    let user = loop {
        let user = Uuid::new_v4();
        let (cache, _) = status(&app, user).await;
        if cache == "miss" {
            break user;
        }
        assert!(Instant::now() < deadline, "Redis is never used (last x-cache {cache})");
        tokio::time::sleep(ms(150)).await;
    };
    // Each limit loads a different number of recent events (5, 20, 100): a key of its own. `until_miss` read 20;
    // 100 and 5 are cold.
    let status_with = |limit: i32| {
        let mut client = app.recon();
        let request = pb::GetReconciliationStatusRequest { user_id: String::new(), recent_events_limit: limit };
        async move { client.get_reconciliation_status(authed(request, &token(user, &[]))).await }
    };

    redis.signal("-STOP"); // Redis hangs: every call times out after 1 s
    status_with(100).await.unwrap();
    assert!(!app.cache.redis_healthy(), "a timeout opens the breaker");
    tokio::time::sleep(ms(300)).await; // past the cooldown: the next Redis call is the probe
    assert!(tokio::time::timeout(ms(300), status_with(5)).await.is_err(), "the caller gives up during the probe");
    tokio::time::sleep(ms(200)).await; // the server sees the cancellation while Redis still hangs
    redis.signal("-CONT");

    // Reads (served from L1 meanwhile) let the next probe through; it succeeds and the breaker closes.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !app.cache.redis_healthy() {
        assert!(Instant::now() < deadline, "the breaker never closed again");
        status_with(5).await.unwrap();
        tokio::time::sleep(ms(100)).await;
    }
}

#[tokio::test]
async fn a_quote_acknowledged_while_redis_hangs_is_seen_by_the_next_read() {
    let redis = RedisServer::start(None).await;
    let app = spawn_app_with(|args| {
        args.cache.redis_url = redis.url();
        args.cache.cache_ttl = Duration::from_secs(60);
        args.cache.redis_timeout = ms(200);
    })
    .await;
    let user = Uuid::new_v4();
    app.submit(sync(user, "10000", vec![gold()], vec![])).await.unwrap();
    let (cache, list) = positions(&app, user, "").await.unwrap();
    assert_eq!((cache.as_str(), list.total_unrealized_pnl.as_str()), ("miss", ""), "unavailable without GBPUSD");

    redis.signal("-STOP");
    app.quote(pb::SubmitQuotesRequest { quotes: vec![quote("GBPUSD", "1.25", "1.25")], ..Default::default() })
        .await
        .unwrap();
    let (_, list) = positions(&app, user, "").await.unwrap();
    redis.signal("-CONT");

    assert_eq!(list.total_unrealized_pnl, "420.00", "a price older than the acknowledged quote");
}

/// A server whose PostgreSQL connections go through a proxy that can be cut: TTL 300 ms, L1 100 ms, no jitter,
/// 500 ms to acquire a connection. A user with one position is synced and their status read once (a miss).
async fn spawn_behind_proxy() -> (TestApp, PgProxy, Uuid, pb::GetReconciliationStatusResponse) {
    let database = fresh_database().await;
    let mut args = serve_args(&database);
    let direct = PgConnectOptions::from_str(&args.database.database_url).unwrap();
    let proxy = PgProxy::start(direct.get_host().to_owned(), direct.get_port()).await;
    let user_name = direct.get_username();
    args.database.database_url = format!("postgres://{user_name}@127.0.0.1:{}/{database}?sslmode=disable", proxy.port);
    args.database.db_acquire_timeout = ms(500);
    (args.cache.cache_ttl, args.cache.cache_ttl_jitter_pct, args.cache.cache_l1_ttl) = (ms(300), 0, ms(100));
    // The server migrates through the proxy while it builds.
    let app = spawn_with_args(args, database).await;
    let user = Uuid::new_v4();
    app.submit(sync(user, "10000", vec![gold()], vec![])).await.unwrap();
    let (cache, warm) = status(&app, user).await;
    assert_eq!(cache, "miss");
    (app, proxy, user, warm)
}

#[tokio::test]
async fn with_postgres_gone_a_warm_key_is_served_stale_and_a_cold_one_is_unavailable() {
    let (app, proxy, user, warm) = spawn_behind_proxy().await;
    tokio::time::sleep(ms(500)).await; // past the TTL: no longer fresh

    proxy.cut();
    let before = app.cache.metrics().snapshot(Rpc::GetReconciliationStatus);
    let (cache, stale) = status(&app, user).await;

    assert_eq!(cache, "stale");
    assert_eq!(stale.as_of, warm.as_of, "as_of tells how old the data is");
    assert_eq!(stale, warm);
    let after = app.cache.metrics().snapshot(Rpc::GetReconciliationStatus);
    assert_eq!(after.stale - before.stale, 1);
    let cold = positions(&app, user, "XAUUSD").await.unwrap_err();
    assert_eq!(cold.code(), Code::Unavailable, "{cold:?}");
}

#[tokio::test]
async fn callers_sharing_a_stale_load_are_all_served_stale_and_counted_stale() {
    let (app, proxy, user, _) = spawn_behind_proxy().await;
    tokio::time::sleep(ms(500)).await;
    proxy.cut();
    let before = app.cache.metrics().snapshot(Rpc::GetReconciliationStatus);

    let calls = (0..10).map(|_| status(&app, user));
    let results: Vec<String> = futures::future::join_all(calls).await.into_iter().map(|(cache, _)| cache).collect();

    assert!(results.iter().all(|c| c == "stale"), "{results:?}");
    let after = app.cache.metrics().snapshot(Rpc::GetReconciliationStatus);
    assert_eq!((after.stale - before.stale, after.hits - before.hits), (10, 0), "{after:?}");
}

#[tokio::test]
async fn the_metrics_endpoint_counts_postgres_loads_per_rpc() {
    let database = fresh_database().await;
    let mut args = serve_args(&database);
    args.server.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    let url = args.database.database_url.clone();
    let app = Application::build(args).await.expect("server builds");
    let (addr, metrics) = (app.local_addr(), app.admin_addr().expect("admin listener enabled"));
    let cache = app.cache();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    // Until the replica hears its own invalidation channel it does not trust Redis (reads bypass the cache); on a
    // loaded machine that can take a moment after start.
    for _ in 0..100 {
        if cache.hearing_invalidations() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
    let request = pb::GetReconciliationStatusRequest::default();
    let me = token(Uuid::new_v4(), &[]);
    let response = ReconciliationServiceClient::new(channel).get_reconciliation_status(authed(request, &me)).await;
    assert_eq!(x_cache(&response.unwrap()), "miss");

    let mut stream = TcpStream::connect(metrics).await.unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();

    let _ = stop.send(());
    server.await.unwrap().unwrap();
    let mut admin = PgConnectOptions::from_str(&url).unwrap().database("postgres").connect().await.unwrap();
    let drop = format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)");
    sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&mut admin).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("trading_monitor_pg_queries_total{rpc=\"GetReconciliationStatus\"} 1\n"), "{body}");
    assert!(body.contains("trading_monitor_cache_misses_total{rpc=\"GetReconciliationStatus\"} 1\n"), "{body}");
    assert!(body.contains("trading_monitor_pg_queries_total{rpc=\"ListOpenPositions\"} 0\n"), "{body}");
}
