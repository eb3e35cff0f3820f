//! The Redis cache: hits, invalidation, single flight, L1, refresh and the metrics of it (its faults: `ops`).

use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::Channel;
use trading_monitor::cache::Rpc;
use trading_monitor::pb;
use trading_monitor::pb::Side::Buy;
use trading_monitor::pb::reconciliation_service_client::ReconciliationServiceClient;
use trading_monitor::server::Application;
use uuid::Uuid;

use trading_testkit::cache::*;
use trading_testkit::*;

fn gold() -> pb::BrokerPosition {
    broker("1", "XAUUSD", Buy, "0.5", "2350.00", "2360.50")
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
async fn a_value_stored_under_another_layout_version_is_a_miss_and_is_replaced() {
    let (a, b) = spawn_replicas_with(|_| {}).await;
    let user = Uuid::new_v4();
    a.submit(sync(user, "10000", vec![gold()], vec![])).await.unwrap();
    assert_eq!(status(&a, user).await.0, "miss", "loaded and stored in Redis by A");
    // As if a replica of another build (another layout of the cached struct) had stored it: the header's
    // layout version (bytes 1-2, big-endian; 1 today) becomes 7.
    let keys = redis_cli(6379, &["--scan", "--pattern", &format!("{}:{{u:{user}}}:status:*", a.key_prefix)]);
    let key = keys.lines().next().expect("the status is in Redis");
    let schema_byte = || redis_cli(6379, &["GETRANGE", key, "2", "2"]);
    assert_eq!(schema_byte(), "\u{1}");
    redis_cli(6379, &["SETRANGE", key, "2", "\u{7}"]);
    assert_eq!(schema_byte(), "\u{7}");
    assert_eq!(status(&b, user).await.0, "miss", "B must not decode bytes of another layout as its own");
    // B stored its own value in their place.
    assert_eq!(schema_byte(), "\u{1}");
    assert_eq!(status(&a, user).await.0, "hit");
}

/// Inserts an event of `user` straight into the database: a write whose writer did not (or could not) bump the
/// user's generation in Redis.
async fn write_without_bump(app: &TestApp, user: Uuid, message: &str) {
    sqlx::query("INSERT INTO events (user_id, event_type, occurred_at, message) VALUES ($1, 'sync_failed', now(), $2)")
        .bind(user)
        .bind(message)
        .execute(&app.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_announcement_without_a_generation_bump_makes_other_replicas_ignore_redis_for_its_users() {
    let (a, b) = spawn_replicas_with(|_| {}).await;
    until_hearing(&b).await;
    let user = Uuid::new_v4();
    // No position held, so no time-driven event (a stale quote) writes for this user meanwhile.
    a.submit(sync(user, "10000", vec![], vec![])).await.unwrap();
    assert_eq!(status(&a, user).await.0, "miss", "loaded and stored in Redis by A");
    assert_eq!(status(&b, user).await.0, "hit", "B reads it from Redis");

    // A's next write commits but its generation bump fails (say its breaker is open): only the announcement goes
    // out, as `Cache::invalidate` sends it then.
    write_without_bump(&a, user, "not bumped").await;
    redis_cli(6379, &["PUBLISH", &format!("{}:invalidations", a.key_prefix), &format!("nb,{user}")]);

    // B must not serve the Redis value from before the write, fresh as it looks (5 s TTL).
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let (served, now) = status(&b, user).await;
        if now.recent_events.iter().any(|e| e.message == "not bumped") {
            break;
        }
        assert!(Instant::now() < deadline, "B still serves the state from before the write ({served})");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
