//! The event log as a feed (`storage::feed`), the base of watch streams: read forward from a position, it never
//! skips an event that commits late and never returns one twice, and commits wake `LISTEN trading_events`.

use std::time::Duration;

use sqlx::postgres::PgListener;
use trading_monitor::storage::feed::{self, FeedPosition};
use uuid::Uuid;

use trading_testkit::*;

/// Every event from `from` on, page by page (`limit` per page), and the final position.
async fn walk(
    app: &TestApp,
    user: Option<Uuid>,
    from: FeedPosition,
    limit: i64,
) -> (Vec<feed::FeedEvent>, FeedPosition) {
    let mut all = Vec::new();
    let mut at = from;
    loop {
        let page = feed::page(&app.pool, user, at, limit).await.unwrap();
        assert!(page.next >= at, "the position never moves back");
        at = page.next;
        all.extend(page.events);
        if page.caught_up {
            return (all, at);
        }
    }
}

/// Walks from `from` until the events read satisfy `done` (transactions of other tests on the same PostgreSQL
/// cluster hold the horizon back for a moment, as any transaction in the cluster would).
async fn walk_until(
    app: &TestApp,
    user: Option<Uuid>,
    from: FeedPosition,
    done: impl Fn(&[feed::FeedEvent]) -> bool,
) -> (Vec<feed::FeedEvent>, FeedPosition) {
    let (mut all, mut at) = (Vec::new(), from);
    for _ in 0..100 {
        let (more, next) = walk(app, user, at, 100).await;
        all.extend(more);
        at = next;
        if done(&all) {
            return (all, at);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the feed never showed the expected events: {all:?}");
}

#[tokio::test]
async fn a_late_commit_is_not_skipped_and_nothing_is_read_twice() {
    let app = spawn_app().await;
    let (early, late) = (Uuid::new_v4(), Uuid::new_v4());
    let start = feed::now(&app.pool).await.unwrap();

    // A writer that started first and commits last.
    let mut slow = app.pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (user_id, event_type, occurred_at, message) VALUES ($1, 'sync_completed', now(), 'slow')",
    )
    .bind(early)
    .execute(&mut *slow)
    .await
    .unwrap();
    // A later one commits first (through the API: a whole sync).
    app.submit(sync(late, "1000", vec![], vec![])).await.unwrap();

    // Nothing of the later writer is read while the earlier is still running, and the position stops before both.
    let (seen, at) = walk(&app, None, start, 100).await;
    assert!(seen.is_empty(), "read past a running writer: {seen:?}");
    slow.commit().await.unwrap();

    // Both now, the earlier transaction first, each event once.
    let (seen, end) =
        walk_until(&app, None, at, |e| e.iter().any(|e| e.user_id == early) && e.iter().any(|e| e.user_id == late))
            .await;
    let users: Vec<Uuid> = seen.iter().map(|e| e.user_id).collect();
    assert_eq!(users.first(), Some(&early), "{users:?}");
    assert!(users[1..].iter().all(|u| *u == late) && users.len() >= 2, "{users:?}");
    let mut positions: Vec<FeedPosition> = seen.iter().map(|e| e.position).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "strictly increasing: {positions:?}");

    // Walking one event per page gives exactly the same events.
    let (one_by_one, _) = walk(&app, None, at, 1).await;
    assert_eq!(one_by_one[..seen.len()], seen[..]);
    positions.dedup();
    assert_eq!(positions.len(), seen.len());

    // Nothing more after the end; a user's feed holds only that user's events.
    assert!(walk(&app, None, end, 100).await.0.iter().all(|e| e.user_id != early && e.user_id != late));
    let (mine, _) = walk(&app, Some(late), start, 100).await;
    assert_eq!(mine.len(), seen.len() - 1);
    assert!(mine.iter().all(|e| e.user_id == late));
}

#[tokio::test]
async fn a_rolled_back_writer_leaves_nothing_and_the_position_moves_past_it() {
    let app = spawn_app().await;
    let start = feed::now(&app.pool).await.unwrap();
    let mut aborted = app.pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (user_id, event_type, occurred_at, message) VALUES ($1, 'sync_completed', now(), 'x')",
    )
    .bind(Uuid::new_v4())
    .execute(&mut *aborted)
    .await
    .unwrap();
    let held = feed::page(&app.pool, None, start, 10).await.unwrap();
    aborted.rollback().await.unwrap();
    let user = Uuid::new_v4();
    app.submit(sync(user, "1000", vec![], vec![])).await.unwrap();
    let (seen, _) = walk_until(&app, None, held.next, |e| !e.is_empty()).await;
    assert!(seen.iter().all(|e| e.user_id == user), "{seen:?}");
}

#[tokio::test]
async fn commits_wake_listeners_and_each_database_has_its_own_identity() {
    let app = spawn_app().await;
    let other = spawn_app().await;
    assert_ne!(feed::database_id(&app.pool).await.unwrap(), feed::database_id(&other.pool).await.unwrap());
    assert_eq!(feed::database_id(&app.pool).await.unwrap(), feed::database_id(&app.pool).await.unwrap());

    let mut listener = PgListener::connect_with(&app.pool).await.unwrap();
    listener.listen("trading_events").await.unwrap();
    app.submit(sync(Uuid::new_v4(), "1000", vec![], vec![])).await.unwrap();
    let woke = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await;
    assert!(matches!(woke, Ok(Ok(_))), "no notification: {woke:?}");
}
