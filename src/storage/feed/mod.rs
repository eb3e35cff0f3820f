//! The event log read forward as a feed, for watchers (see `migrations/20261201000004_event_feed.sql`).
//!
//! A position in the feed is `(tx, event_id)`: everything up to and including it has been read. A page holds
//! the next events of transactions below the snapshot's `xmin` (the oldest transaction still running), in
//! `(tx, event_id)` order. Events of a transaction still running are not read until it ends, and no later
//! writer can get a transaction id below `xmin`, so walking page after page never skips an event and never
//! reads one twice, even when writers commit out of order. When a page comes back short, the reader has seen
//! everything below `xmin`: its position moves to just below `xmin` (a watermark), which is how a filtered or
//! idle watcher's position keeps advancing.
//!
//! The horizon is the whole PostgreSQL cluster's: a transaction running in any database of it holds `xmin`
//! back, so delivery waits for the oldest running transaction (this service bounds its own with
//! `TM_DB_STATEMENT_TIMEOUT`; a session idle in a transaction elsewhere delays watchers until it ends, which
//! `idle_in_transaction_session_timeout` bounds). Positions are only comparable within one cluster and database
//! ([`database_id`]).
//!
//! Pages are not filtered by type in SQL: the caller filters, so one page costs at most `limit` index entries
//! whatever the filter, and the position advances over what the filter skipped.

use sqlx::PgPool;
use uuid::Uuid;

use super::events::EventRow;
use super::{StorageError, parse_stored};

/// Everything up to and including this point of the feed has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FeedPosition {
    /// The writing transaction's id (`xid8`, as an integer).
    pub tx: i64,
    /// The last event read of that transaction (`i64::MAX`: all of them).
    pub event_id: i64,
}

impl FeedPosition {
    /// Before every event.
    pub const START: FeedPosition = FeedPosition { tx: 0, event_id: 0 };
}

/// One event of the feed, with its owner and position.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedEvent {
    /// Whose account it is about.
    pub user_id: Uuid,
    /// Where it is in the feed.
    pub position: FeedPosition,
    /// The event.
    pub event: EventRow,
}

/// One page of the feed.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedPage {
    /// The events after the requested position, oldest first.
    pub events: Vec<FeedEvent>,
    /// Where the next page starts: the last event's position, or the watermark when the page was short.
    pub next: FeedPosition,
    /// Whether the page was short: the reader has seen every event that is final so far.
    pub caught_up: bool,
}

/// The identity a feed position belongs to: the PostgreSQL cluster (its system identifier) and the database
/// in it (its oid). Transaction ids mean something only there: a position from another cluster, a restore
/// into a new one, or a copy of the database (a new oid) is not comparable and must be refused.
pub async fn database_id(pool: &PgPool) -> Result<String, StorageError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT (s.system_identifier::text || '/' || d.oid::text) AS "id!"
           FROM pg_control_system() s, pg_database d WHERE d.datname = current_database()"#
    )
    .fetch_one(pool)
    .await?)
}

/// The position "now": after every event that is final, before any transaction still running.
pub async fn now(pool: &PgPool) -> Result<FeedPosition, StorageError> {
    let xmin = sqlx::query_scalar!(r#"SELECT (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint AS "xmin!""#)
        .fetch_one(pool)
        .await?;
    Ok(watermark(xmin))
}

/// The next page of everybody's events (`user` `None`) or of one user's, after `after`.
pub async fn page(
    pool: &PgPool,
    user: Option<Uuid>,
    after: FeedPosition,
    limit: i64,
) -> Result<FeedPage, StorageError> {
    macro_rules! read {
        ($query:expr) => {{
            let rows = $query.fetch_all(pool).await?;
            let xmin = rows.first().map_or(0, |r| r.xmin);
            let mut events = Vec::with_capacity(rows.len());
            for r in rows {
                let (
                    Some(tx),
                    Some(event_id),
                    Some(user_id),
                    Some(event_type),
                    Some(occurred_at),
                    Some(message),
                    Some(details),
                ) = (r.tx, r.event_id, r.user_id, r.event_type, r.occurred_at, r.message, r.details)
                else {
                    continue; // the one row of an empty page
                };
                events.push(FeedEvent {
                    user_id,
                    position: FeedPosition { tx, event_id },
                    event: EventRow {
                        event_id,
                        event_type: parse_stored(&event_type)?,
                        occurred_at,
                        sync_id: r.sync_id,
                        position_id: r.position_id,
                        symbol: r.symbol,
                        message,
                        details,
                    },
                });
            }
            finish(events, xmin, after, limit)
        }};
    }
    match user {
        None => read!(sqlx::query!(
            r#"WITH w AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin)
               SELECT (w.xmin::text)::bigint AS "xmin!", (e.tx::text)::bigint AS "tx?", e.event_id AS "event_id?",
                      e.user_id AS "user_id?", e.event_type AS "event_type?", e.occurred_at AS "occurred_at?",
                      e.sync_id AS "sync_id?", e.position_id AS "position_id?", e.symbol AS "symbol?",
                      e.message AS "message?", e.details AS "details?"
               FROM w LEFT JOIN LATERAL (
                   SELECT * FROM events
                   WHERE (tx, event_id) > ((($1::bigint)::text)::xid8, $2) AND tx < w.xmin
                   ORDER BY tx, event_id
                   LIMIT $3) e ON true
               ORDER BY e.tx, e.event_id"#,
            after.tx,
            after.event_id,
            limit
        )),
        Some(user_id) => read!(sqlx::query!(
            r#"WITH w AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin)
               SELECT (w.xmin::text)::bigint AS "xmin!", (e.tx::text)::bigint AS "tx?", e.event_id AS "event_id?",
                      e.user_id AS "user_id?", e.event_type AS "event_type?", e.occurred_at AS "occurred_at?",
                      e.sync_id AS "sync_id?", e.position_id AS "position_id?", e.symbol AS "symbol?",
                      e.message AS "message?", e.details AS "details?"
               FROM w LEFT JOIN LATERAL (
                   SELECT * FROM events
                   WHERE user_id = $4 AND (tx, event_id) > ((($1::bigint)::text)::xid8, $2) AND tx < w.xmin
                   ORDER BY tx, event_id
                   LIMIT $3) e ON true
               ORDER BY e.tx, e.event_id"#,
            after.tx,
            after.event_id,
            limit,
            user_id
        )),
    }
}

/// The page's `next` position: its last event, or the watermark when it was short (and the watermark is
/// ahead: a position already past it, from a token minted later, is kept).
fn finish(events: Vec<FeedEvent>, xmin: i64, after: FeedPosition, limit: i64) -> Result<FeedPage, StorageError> {
    let caught_up = (events.len() as i64) < limit;
    let last = events.last().map_or(after, |e| e.position);
    let next = if caught_up { last.max(watermark(xmin)) } else { last };
    Ok(FeedPage { events, next, caught_up })
}

/// Just below `xmin`: every event of an earlier transaction.
fn watermark(xmin: i64) -> FeedPosition {
    FeedPosition { tx: xmin - 1, event_id: i64::MAX }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn event(tx: i64, id: i64) -> FeedEvent {
        FeedEvent {
            user_id: Uuid::nil(),
            position: FeedPosition { tx, event_id: id },
            event: EventRow {
                event_id: id,
                event_type: crate::domain::events::EventType::SyncCompleted,
                occurred_at: Utc::now(),
                sync_id: None,
                position_id: None,
                symbol: None,
                message: String::new(),
                details: serde_json::json!({}),
            },
        }
    }

    #[test]
    fn a_full_page_continues_from_its_last_event_and_a_short_one_from_the_watermark() {
        let after = FeedPosition { tx: 5, event_id: 9 };
        let full = finish(vec![event(7, 10), event(8, 11)], 20, after, 2).unwrap();
        assert_eq!((full.next, full.caught_up), (FeedPosition { tx: 8, event_id: 11 }, false));
        let short = finish(vec![event(7, 10)], 20, after, 2).unwrap();
        assert_eq!((short.next, short.caught_up), (FeedPosition { tx: 19, event_id: i64::MAX }, true));
        let empty = finish(vec![], 20, after, 2).unwrap();
        assert_eq!(empty.next, FeedPosition { tx: 19, event_id: i64::MAX });
        // A position already past the watermark stays.
        let ahead = FeedPosition { tx: 30, event_id: 1 };
        assert_eq!(finish(vec![], 20, ahead, 2).unwrap().next, ahead);
    }
}
