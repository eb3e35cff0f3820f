//! The event log as a feed (`storage::feed`), the base of watch streams: read forward from a position, it reads a
//! transaction's events when it commits (not when every older transaction has ended), never skips one that
//! commits late, and never returns one twice.

use std::collections::HashSet;
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
        let page = feed::page(&app.pool, user, &at, limit).await.unwrap();
        assert!(page.next.covers(&at), "the position never moves back");
        assert!(page.events.iter().all(|e| e.owed_by(&at)), "nothing read twice");
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
        let (more, next) = walk(app, user, at.clone(), 100).await;
        all.extend(more);
        at = next;
        if done(&all) {
            return (all, at);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the feed never showed the expected events: {all:?}");
}

/// The events of these users, by id.
fn of(events: &[feed::FeedEvent], users: &[Uuid]) -> Vec<i64> {
    events.iter().filter(|e| users.contains(&e.user_id)).map(|e| e.event.event_id).collect()
}

#[tokio::test]
async fn a_late_commit_is_read_when_it_lands_and_nothing_is_skipped_or_read_twice() {
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

    // The later writer's events are read while the earlier still runs; the earlier one's are not.
    let (before, at) = walk_until(&app, None, start.clone(), |e| !of(e, &[late]).is_empty()).await;
    assert!(of(&before, &[early]).is_empty(), "read a running writer's event: {before:?}");
    slow.commit().await.unwrap();

    // Once it commits: its event, once, and nothing of the later writer again.
    let (after, end) = walk_until(&app, None, at, |e| !of(e, &[early]).is_empty()).await;
    assert!(of(&after, &[late]).is_empty(), "read again: {after:?}");
    let mut seen = of(&before, &[early, late]);
    seen.extend(of(&after, &[early, late]));
    let unique: HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "read twice: {seen:?}");
    let stored: HashSet<i64> = sqlx::query_scalar("SELECT event_id FROM events WHERE user_id = $1 OR user_id = $2")
        .bind(early)
        .bind(late)
        .fetch_all(&app.pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(unique, stored, "every stored event, once");

    // Walking from the start one event per page, now that both committed, reads the same events, in
    // transaction order (the earlier writer's first).
    let (one_by_one, _) = walk(&app, None, start.clone(), 1).await;
    let ordered = of(&one_by_one, &[early, late]);
    assert_eq!(ordered.iter().copied().collect::<HashSet<_>>(), stored);
    assert_eq!(one_by_one.iter().find(|e| e.user_id == early || e.user_id == late).map(|e| e.user_id), Some(early));

    // Nothing more after the end; a user's feed holds only that user's events.
    assert!(of(&walk(&app, None, end, 100).await.0, &[early, late]).is_empty());
    let (mine, _) = walk(&app, Some(late), start, 100).await;
    assert_eq!(mine.len(), of(&before, &[late]).len());
    assert!(mine.iter().all(|e| e.user_id == late));
}

#[tokio::test]
async fn a_rolled_back_writer_leaves_nothing_and_the_position_moves_past_it() {
    let app = spawn_app().await;
    let start = feed::now(&app.pool).await.unwrap();
    let ghost = Uuid::new_v4();
    let mut aborted = app.pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (user_id, event_type, occurred_at, message) VALUES ($1, 'sync_completed', now(), 'x')",
    )
    .bind(ghost)
    .execute(&mut *aborted)
    .await
    .unwrap();
    let xid: i64 =
        sqlx::query_scalar("SELECT (pg_current_xact_id()::text)::bigint").fetch_one(&mut *aborted).await.unwrap();
    let held = feed::page(&app.pool, None, &start, 10).await.unwrap();
    assert!(held.next.owes(xid, 1), "the running writer is owed");
    aborted.rollback().await.unwrap();
    let user = Uuid::new_v4();
    app.submit(sync(user, "1000", vec![], vec![])).await.unwrap();
    let (seen, end) = walk_until(&app, None, held.next, |e| e.iter().any(|e| e.user_id == user)).await;
    assert!(seen.iter().all(|e| e.user_id != ghost), "{seen:?}");
    assert!(!end.owed.iter().any(|(tx, _)| *tx == xid), "the rolled-back writer is owed no more");
}

/// Issue 18: the `events_notify` trigger's NOTIFY took a cluster-wide lock through each commit's WAL flush,
/// serialising every event-writing commit; watchers are woken over Redis instead, and no trigger remains.
#[tokio::test]
async fn each_database_has_its_own_identity_and_no_trigger_notifies_at_commit() {
    let app = spawn_app().await;
    let other = spawn_app().await;
    assert_ne!(feed::database_id(&app.pool).await.unwrap(), feed::database_id(&other.pool).await.unwrap());
    assert_eq!(feed::database_id(&app.pool).await.unwrap(), feed::database_id(&app.pool).await.unwrap());

    let triggers: Vec<String> = sqlx::query_scalar(
        "SELECT tgname::text FROM pg_trigger WHERE tgrelid = 'events'::regclass AND NOT tgisinternal",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(triggers.is_empty(), "triggers on events: {triggers:?}");
    let mut listener = PgListener::connect_with(&app.pool).await.unwrap();
    listener.listen("trading_events").await.unwrap();
    app.submit(sync(Uuid::new_v4(), "1000", vec![], vec![])).await.unwrap();
    let woke = tokio::time::timeout(Duration::from_millis(500), listener.recv()).await;
    assert!(woke.is_err(), "a commit still notifies: {woke:?}");
}
