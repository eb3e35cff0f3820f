//! The Redis cache under faults: Redis unreachable, killed, hanging; PostgreSQL cut off behind a proxy (stale
//! serving).

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
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
use trading_testkit::cache::*;
use trading_testkit::*;
use uuid::Uuid;

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
    // Each connection of the pool reconnects on its own, and each reconnect after the first outdates values
    // read before it (a failover may have lost generation bumps): a value stored through the first connection
    // back can be a miss again once a later one reconnects. So: until a stored value is read back as a hit.
    until_miss(&app, user, Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = app.cache.metrics().snapshot(Rpc::GetReconciliationStatus);
        tokio::time::sleep(ms(150)).await; // past L1: the next hit must come from Redis
        let (cache, _) = status(&app, user).await;
        if cache == "hit" {
            let after = app.cache.metrics().snapshot(Rpc::GetReconciliationStatus);
            assert_eq!((after.hits - before.hits, after.l1_hits - before.l1_hits), (1, 0));
            break;
        }
        assert_eq!(cache, "miss", "a value read before the reconnect is never served as a hit");
        assert!(Instant::now() < deadline, "hits never resumed after Redis returned");
    }
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
async fn values_read_before_a_redis_reconnect_are_not_served_as_fresh_after_it() {
    let redis = RedisServer::start(None).await;
    let app = spawn_app_with(|args| args.cache.redis_url = redis.url()).await;
    until_hearing(&app).await;
    let user = Uuid::new_v4();
    // No position held, so no time-driven event (a stale quote) writes for this user meanwhile.
    app.submit(sync(user, "10000", vec![], vec![])).await.unwrap();
    assert_eq!(status(&app, user).await.0, "miss", "loaded and stored in Redis");

    // A write whose generation bump a failover lost (asynchronous replication): committed, its bump gone, as if
    // it never happened. The replica's connections drop and come back, as in a failover.
    sqlx::query(
        "INSERT INTO events (user_id, event_type, occurred_at, message) VALUES ($1, 'sync_failed', now(), 'lost bump')",
    )
    .bind(user)
    .execute(&app.pool)
    .await
    .unwrap();
    redis_cli(redis.port, &["CLIENT", "KILL", "TYPE", "normal"]);
    until_redis_answers(&app.channel).await;

    // The value in Redis is of the current generation and still within its TTL, but it was read before the
    // reconnect: a miss, read again from PostgreSQL.
    let (served, after) = status(&app, user).await;
    assert!(
        after.recent_events.iter().any(|e| e.message == "lost bump"),
        "served the value read before the reconnect ({served})"
    );
}
