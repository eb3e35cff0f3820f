//! Watchers woken over the cache's Redis channel (issue 18), which every write already publishes on after its
//! commit: a write on one replica reaches a watcher on another well within the safety interval; the
//! subscription killed in the middle of writes loses nothing; Redis killed, the replicas poll the feed every
//! `--watch-poll-interval` instead.

use std::time::{Duration, Instant};

use tokio_stream::StreamExt;
use tonic::Streaming;
use trading_monitor::pb;
use trading_monitor::pb::watch_reconciliation_events_response::Kind;
use uuid::Uuid;

use trading_testkit::*;

type Events = Streaming<pb::WatchReconciliationEventsResponse>;

/// A watch of `user`'s events on `app`, once it has caught up (its first heartbeat).
async fn watch(app: &TestApp, user: Uuid) -> Events {
    let request = authed(pb::WatchReconciliationEventsRequest::default(), &token(user, &[]));
    let mut stream = app.recon().watch_reconciliation_events(request).await.unwrap().into_inner();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap().unwrap();
        if matches!(message.kind, Some(Kind::Heartbeat(_))) {
            return stream;
        }
    }
}

/// The messages of the next `n` events, failing after `limit`.
async fn events(stream: &mut Events, n: usize, limit: Duration) -> Vec<String> {
    let until = tokio::time::Instant::now() + limit;
    let mut messages = Vec::new();
    while messages.len() < n {
        match tokio::time::timeout_at(until, stream.next()).await {
            Ok(Some(Ok(pb::WatchReconciliationEventsResponse { kind: Some(Kind::Event(event)), .. }))) => {
                messages.push(event.message);
            }
            Ok(Some(Ok(_heartbeat))) => {}
            other => panic!("{} of {n} events within {limit:?}, then {other:?}: {messages:?}", messages.len()),
        }
    }
    messages
}

#[tokio::test]
async fn writes_wake_the_watchers_of_every_replica_over_redis_and_without_it_they_poll() {
    let mut redis = RedisServer::start(None).await;
    let (a, b) = spawn_replicas_with(|args| {
        args.cache.redis_url = redis.url();
        // Only a wake-up can deliver well within this.
        args.watch.watch_safety_interval = Duration::from_secs(30);
        args.watch.watch_heartbeat = Duration::from_secs(30);
    })
    .await;
    until_hearing(&a).await;
    until_hearing(&b).await;
    let user = Uuid::new_v4();
    let mut stream = watch(&b, user).await;

    let written = Instant::now();
    a.submit(failed_sync(user, "over the bus")).await.unwrap();
    assert_eq!(events(&mut stream, 1, Duration::from_secs(5)).await, ["sync failed: over the bus"]);
    let over_the_bus = written.elapsed();
    println!("a write on A reached B's watcher in {over_the_bus:?} (safety interval 30 s)");
    assert!(over_the_bus < Duration::from_secs(2), "{over_the_bus:?}");

    // Every subscription dropped in the middle of the writes: announcements are lost until the replicas
    // subscribe again, which makes them look again; nothing is lost.
    for i in 0..4 {
        if i == 2 {
            redis_cli(redis.port, &["CLIENT", "KILL", "TYPE", "pubsub"]);
        }
        a.submit(failed_sync(user, &format!("write {i}"))).await.unwrap();
    }
    let expected = ["sync failed: write 0", "sync failed: write 1", "sync failed: write 2", "sync failed: write 3"];
    assert_eq!(events(&mut stream, 4, Duration::from_secs(5)).await, expected);

    // Redis gone: nobody hears anybody; B re-reads every poll interval (100 ms).
    redis.kill();
    for _ in 0..50 {
        if !b.cache.hearing_invalidations() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!b.cache.hearing_invalidations());
    let written = Instant::now();
    a.submit(failed_sync(user, "without redis")).await.unwrap();
    assert_eq!(events(&mut stream, 1, Duration::from_secs(5)).await, ["sync failed: without redis"]);
    let polled = written.elapsed();
    println!("without Redis, a write on A reached B's watcher in {polled:?}");
    assert!(polled < Duration::from_secs(2), "{polled:?}");
}
