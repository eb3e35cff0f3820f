//! Replicas on one Redis: a write acknowledged by one is seen by the other's cached reads within the stated
//! bounds (docs/cache.md), also across Redis faults; quotes revalue cached reads without invalidating them;
//! uncached reads are consistent snapshots; hot keys are refreshed ahead.

use std::time::{Duration, Instant};

use trading_monitor::cache::Rpc;
use trading_monitor::config::ServeArgs;
use trading_monitor::pb;
use trading_monitor::pb::Side::Buy;
use uuid::Uuid;

use trading_testkit::*;

/// While both replicas hear the invalidation channel.
const HEARING_BOUND: Duration = Duration::from_millis(100);
/// While a replica has just lost the channel (the connection was killed): the short L1 TTL.
const RECONNECTING_BOUND: Duration = Duration::from_millis(500);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn status(app: &TestApp, user: Uuid) -> (String, pb::GetReconciliationStatusResponse) {
    let request = pb::GetReconciliationStatusRequest::default();
    let response = app.recon().get_reconciliation_status(authed(request, &token(user, &[]))).await.unwrap();
    (x_cache(&response), response.into_inner())
}

async fn positions(app: &TestApp, user: Uuid) -> (String, pb::ListOpenPositionsResponse) {
    let request = pb::ListOpenPositionsRequest::default();
    let response = app.positions().list_open_positions(authed(request, &token(user, &[]))).await.unwrap();
    (x_cache(&response), response.into_inner())
}

/// Writes a sync on `writer` and measures how long `reader`'s cached status takes to show it.
async fn seen_after(reader: &TestApp, writer: &TestApp, user: Uuid, within: Duration) -> Duration {
    let before = status(reader, user).await.1.total_syncs;
    writer.submit(sync(user, "10000", vec![], vec![])).await.unwrap();
    let acknowledged = Instant::now();
    loop {
        let (_, now) = status(reader, user).await;
        if now.total_syncs > before {
            return acknowledged.elapsed();
        }
        assert!(acknowledged.elapsed() < within * 3, "still not seen after {:?}", acknowledged.elapsed());
        tokio::time::sleep(ms(5)).await;
    }
}

/// Reads `user`'s status on `reader` until it is cached in L1 (a hit).
async fn warm(reader: &TestApp, user: Uuid) {
    for _ in 0..3 {
        if status(reader, user).await.0 == "hit" {
            return;
        }
    }
    panic!("no hit");
}

fn own_redis(redis: &RedisServer) -> impl FnOnce(&mut ServeArgs) + '_ {
    move |args: &mut ServeArgs| args.cache.redis_url = redis.url()
}

#[tokio::test]
async fn a_write_acknowledged_by_one_replica_is_seen_by_the_others_cached_reads_within_the_bound() {
    let (a, b) = spawn_replicas_with(|_| {}).await;
    until_hearing(&a).await;
    let user = Uuid::new_v4();
    b.submit(sync(user, "10000", vec![], vec![])).await.unwrap();

    let mut seen = Vec::new();
    for _ in 0..10 {
        warm(&a, user).await;
        seen.push(seen_after(&a, &b, user, HEARING_BOUND).await);
    }

    let worst = seen.iter().max().unwrap();
    assert!(*worst <= HEARING_BOUND, "{seen:?}");
    assert!(a.cache.listener_counts().0 >= 10, "the invalidations were heard: {:?}", a.cache.listener_counts());
    // A hit on A in between was served by A's L1 (it keeps entries while hearing), not Redis.
    warm(&a, user).await;
    let s = a.cache.metrics().snapshot(Rpc::GetReconciliationStatus);
    assert!(s.l1_hits > 0, "{s:?}");
}

#[tokio::test]
async fn after_a_replicas_subscription_is_killed_it_still_sees_writes_within_the_reconnecting_bound() {
    let redis = RedisServer::start(None).await;
    let (a, b) = spawn_replicas_with(own_redis(&redis)).await;
    until_hearing(&a).await;
    let user = Uuid::new_v4();
    b.submit(sync(user, "10000", vec![], vec![])).await.unwrap();
    warm(&a, user).await;

    // Both replicas' subscriptions die (CLIENT KILL TYPE pubsub); B's write must still reach A's reads.
    let killed = redis_cli(redis.port, &["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_ne!(killed, "0", "subscriptions were killed");
    let took = seen_after(&a, &b, user, RECONNECTING_BOUND).await;

    assert!(took <= RECONNECTING_BOUND, "{took:?}");
    until_hearing(&a).await;
    warm(&a, user).await;
    assert!(seen_after(&a, &b, user, HEARING_BOUND).await <= HEARING_BOUND, "hearing again");
}

#[tokio::test]
async fn after_a_redis_restart_and_a_flushall_writes_are_seen_and_generations_never_repeat() {
    let mut redis = RedisServer::start(None).await;
    let port = redis.port;
    let (a, b) = spawn_replicas_with(own_redis(&redis)).await;
    until_hearing(&a).await;
    let user = Uuid::new_v4();
    b.submit(sync(user, "10000", vec![], vec![])).await.unwrap();
    let gen_key = format!("{}:gen:{{u:{user}}}", b.key_prefix);
    let before_restart: i64 = redis_cli(port, &["GET", &gen_key]).parse().unwrap();
    warm(&a, user).await;

    // Restarted without persistence: everything, generations included, is gone.
    redis.kill();
    let _restarted = RedisServer::start(Some(port)).await;
    until_hearing(&a).await;
    until_hearing(&b).await;
    let took = seen_after(&a, &b, user, HEARING_BOUND).await;
    assert!(took <= HEARING_BOUND, "after the restart: {took:?}");
    let after_restart: i64 = redis_cli(port, &["GET", &gen_key]).parse().unwrap();
    assert!(after_restart > before_restart, "{after_restart} must not repeat {before_restart}");

    warm(&a, user).await;
    assert_eq!(redis_cli(port, &["FLUSHALL"]), "OK");
    let took = seen_after(&a, &b, user, HEARING_BOUND).await;
    assert!(took <= HEARING_BOUND, "after FLUSHALL: {took:?}");
    let after_flush: i64 = redis_cli(port, &["GET", &gen_key]).parse().unwrap();
    assert!(after_flush > after_restart, "{after_flush} must not repeat {after_restart}");
}

#[tokio::test]
async fn while_redis_is_unreachable_writes_are_seen_by_the_other_replica_within_the_ttl() {
    let mut redis = RedisServer::start(None).await;
    let ttl = Duration::from_secs(1);
    let (a, b) = spawn_replicas_with(|args| {
        args.cache.redis_url = redis.url();
        args.cache.cache_ttl = ttl;
        args.cache.cache_ttl_jitter_pct = 0;
    })
    .await;
    until_hearing(&a).await;
    let user = Uuid::new_v4();
    b.submit(sync(user, "10000", vec![], vec![])).await.unwrap();
    warm(&a, user).await;

    redis.kill();
    let took = seen_after(&a, &b, user, ttl).await;

    assert!(took <= ttl, "{took:?}");
}

#[tokio::test]
async fn a_quote_on_one_replica_revalues_the_others_cached_positions_within_the_refresh_interval_without_postgres() {
    let (a, b) = spawn_replicas_with(|_| {}).await;
    let user = Uuid::new_v4();
    let gold = broker("1", "XAUUSD", Buy, "0.5", "2350.00", "2360.50");
    b.submit(sync_in(user, "USD", "10000", vec![gold], vec![])).await.unwrap();
    positions(&a, user).await;
    let loads = a.cache.metrics().total().pg_queries;

    b.quote(pb::SubmitQuotesRequest { quotes: vec![quote("XAUUSD", "2370.00", "2370.50")], ..Default::default() })
        .await
        .unwrap();
    let acknowledged = Instant::now();
    let took = loop {
        let (cache, list) = positions(&a, user).await;
        assert_eq!(cache, "hit");
        if list.positions[0].current_price == "2370.00" {
            // (2370.00 - 2350.00) x 0.5 lots x 100 oz.
            assert_eq!(list.positions[0].unrealized_pnl, "1000.00");
            break acknowledged.elapsed();
        }
        assert!(acknowledged.elapsed() < ms(1000), "the new price never reached the other replica");
        tokio::time::sleep(ms(5)).await;
    };

    // The stated bound is the refresh interval (100 ms) plus one read of the snapshot; 100 ms of margin here for
    // a loaded test machine.
    assert!(took <= ms(200), "{took:?}");
    assert_eq!(a.cache.metrics().total().pg_queries, loads, "no PostgreSQL load on the reading replica");
}

#[tokio::test]
async fn a_quote_that_raises_an_alert_invalidates_its_holders_status_and_no_one_elses() {
    let app = spawn_app().await;
    let (holder, other) = (Uuid::new_v4(), Uuid::new_v4());
    app.submit(sync(holder, "10000", vec![broker("1", "BTCUSD", Buy, "1", "60000", "60000")], vec![])).await.unwrap();
    app.submit(sync(other, "10000", vec![broker("1", "XAUUSD", Buy, "1", "2000", "2000")], vec![])).await.unwrap();
    for user in [holder, other] {
        warm(&app, user).await;
    }

    let batch =
        pb::SubmitQuotesRequest { candle_closes: vec![candle("BTCUSD", "60000", "67200")], ..Default::default() };
    assert_eq!(app.quote(batch).await.unwrap().raised_alerts.len(), 1);

    let (cache, holder_status) = status(&app, holder).await;
    assert_eq!(cache, "miss", "the holder's log has a new event");
    assert_eq!(holder_status.recent_events[0].event_type(), pb::EventType::MarketAlertRaised);
    assert_eq!(status(&app, other).await.0, "hit", "the other user's cache is untouched");
    let mut guards = app.guards();
    let guard = guards.get_guard_status(authed(pb::GetGuardStatusRequest::default(), &token(holder, &[])));
    let guard = guard.await.unwrap().into_inner();
    assert!(guard.any_positions_should_close, "the alert is judged from the market snapshot at once");
}

#[tokio::test]
async fn an_uncached_read_sees_a_sync_all_or_nothing() {
    // Two books alternate; each is self-consistent: equity 1000 goes with positions {A, B}, 2000 with {C}.
    let app = spawn_app_with(|args| args.cache.cache_disabled = true).await;
    let user = Uuid::new_v4();
    let book = move |which: bool| {
        if which {
            sync(
                user,
                "1000",
                vec![broker("A", "XAUUSD", Buy, "1", "2000", "2000"), broker("B", "EURUSD", Buy, "1", "1.1", "1.1")],
                vec![],
            )
        } else {
            sync(user, "2000", vec![broker("C", "BTCUSD", Buy, "1", "60000", "60000")], vec![])
        }
    };
    app.submit(book(true)).await.unwrap();
    let writer = {
        let (mut client, token) = (app.recon(), writer());
        tokio::spawn(async move {
            for i in 0..150 {
                client.submit_broker_sync(authed(book(i % 2 == 1), &token)).await.unwrap();
            }
        })
    };

    let mut reads = 0;
    while !writer.is_finished() {
        let (_, list) = positions(&app, user).await;
        let held: Vec<&str> = list.positions.iter().map(|p| p.position_identifier.as_str()).collect();
        let consistent =
            matches!((list.account_equity.as_str(), held.as_slice()), ("1000", ["A", "B"]) | ("2000", ["C"]));
        assert!(consistent, "equity {} with positions {held:?}", list.account_equity);
        reads += 1;
    }
    writer.await.unwrap();
    assert!(reads > 20, "only {reads} reads overlapped the writes");
}

#[tokio::test]
async fn a_hot_key_near_the_end_of_its_freshness_is_refreshed_in_the_background() {
    let app = spawn_app_with(|args| {
        args.cache.cache_ttl = ms(1000);
        args.cache.cache_ttl_jitter_pct = 0;
        args.cache.cache_refresh_ahead_pct = 50;
    })
    .await;
    until_hearing(&app).await; // Redis is connected
    let user = Uuid::new_v4();
    assert_eq!(status(&app, user).await.0, "miss");

    tokio::time::sleep(ms(600)).await; // in the last half of its freshness
    assert_eq!(status(&app, user).await.0, "hit", "served while the refresh runs");
    tokio::time::sleep(ms(600)).await; // past the first value's freshness
    let (cache, _) = status(&app, user).await;

    assert_eq!(cache, "hit", "the refreshed value: no caller waited on PostgreSQL");
    let s = app.cache.metrics().snapshot(Rpc::GetReconciliationStatus);
    // The last read was near the end of the refreshed value's freshness too, so another refresh may be under way.
    assert!(s.misses == 1 && s.refreshes >= 1 && s.pg_queries >= 2, "{s:?}");
}
