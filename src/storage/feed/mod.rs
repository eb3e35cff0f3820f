//! The event log read forward as a feed, for watchers (see `migrations/20261201000004_event_feed.sql`).
//!
//! Events are read in `(tx, event_id)` order, `tx` being the writing transaction's id. A transaction's events
//! become readable when it commits, whatever older transactions are still running: each read takes the
//! database's snapshot, returns the committed events its position has not read, and moves the position to the
//! snapshot's `xmax` while remembering the transactions that were still running below it (they are *owed*,
//! see [`FeedPosition`]) and are read when they commit. So a transaction left open anywhere in the cluster (a
//! forgotten session, a prepared transaction, a lock queue) holds back only its own events, not everyone's,
//! and walking page after page never skips an event and never reads one twice, even when writers commit out of
//! order. Only when more than [`MAX_OWED`] writing transactions run at once does a read stop at the oldest of
//! the excess ones (and the page says so: [`FeedPage::capped`]), as every read did before positions owed
//! anything.
//!
//! The snapshot is the statement's own (`pg_current_snapshot()` in a read-committed statement is the snapshot
//! it reads rows with), so which transactions are running and which rows are visible agree exactly.
//! Positions are only comparable within one cluster and database ([`database_id`]).
//!
//! Pages are not filtered by type in SQL: the caller filters, so one page costs at most `limit` index entries
//! whatever the filter, and the position advances over what the filter skipped.

use sqlx::PgPool;
use uuid::Uuid;

use super::StorageError;
use super::events::EventRow;
use crate::domain::events::EventType;

mod position;

pub use position::{FeedPosition, MAX_OWED};

/// One event of the feed, with its owner and place.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedEvent {
    /// Whose account it is about.
    pub user_id: Uuid,
    /// The writing transaction's id (`xid8`, as an integer).
    pub tx: i64,
    /// The event.
    pub event: EventRow,
}

impl FeedEvent {
    /// Whether `position` has not read this event yet.
    pub fn owed_by(&self, position: &FeedPosition) -> bool {
        position.owes(self.tx, self.event.event_id)
    }
}

/// One page of the feed.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedPage {
    /// The events the requested position had not read, in feed order.
    pub events: Vec<FeedEvent>,
    /// Where the next page starts.
    pub next: FeedPosition,
    /// Whether the page was short: the reader has seen every event that is readable so far.
    pub caught_up: bool,
    /// Whether the read stopped below the snapshot's `xmax` because too many writing transactions were running
    /// (more than [`MAX_OWED`]): committed events above the oldest of them wait until they end.
    pub capped: bool,
}

/// What the snapshot of a read said: how far it read, and the transactions below that it still owes.
struct Horizon {
    cap: i64,
    xmax: i64,
    running: Vec<i64>,
}

/// The identity a feed position belongs to: the PostgreSQL cluster (its system identifier), the database in
/// it (its oid) and the timeline the primary writes on. Transaction ids mean something only there: a position
/// from another cluster, a restore into a new one, or a copy of the database (a new oid) is not comparable and
/// must be refused; nor is one from before a failover to a standby (same system identifier, a new timeline),
/// whose last transactions the standby may never have received (asynchronous replication) and whose ids it
/// then hands out again. The timeline is read from the name of the WAL segment being written (its first 8 hex
/// digits), which changes the moment a standby is promoted. Timeline 1 (a cluster that never failed over) adds
/// nothing, so tokens issued before the timeline was part of the identity stay valid.
pub async fn database_id(pool: &PgPool) -> Result<String, StorageError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT (s.system_identifier::text || '/' || d.oid::text
                   || CASE WHEN t.timeline = 1 THEN '' ELSE '/' || t.timeline::text END) AS "id!"
           FROM pg_control_system() s, pg_database d,
                LATERAL (SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint
                         AS timeline) t
           WHERE d.datname = current_database()"#
    )
    .fetch_one(pool)
    .await?)
}

/// The position "now": after every committed event, owing the transactions still running.
pub async fn now(pool: &PgPool) -> Result<FeedPosition, StorageError> {
    let free = FeedPosition::start().free();
    let row = sqlx::query!(
        r#"WITH snap AS MATERIALIZED (SELECT pg_current_snapshot() AS s),
                running AS MATERIALIZED (SELECT x FROM snap, pg_snapshot_xip(snap.s) AS x),
                horizon AS (
                    SELECT LEAST(pg_snapshot_xmax(snap.s),
                                 COALESCE((SELECT r.x FROM running r ORDER BY r.x OFFSET $1::int LIMIT 1),
                                          pg_snapshot_xmax(snap.s))) AS cap
                    FROM snap)
           SELECT (horizon.cap::text)::bigint AS "cap!",
                  ARRAY(SELECT (r.x::text)::bigint FROM running r WHERE r.x < horizon.cap ORDER BY r.x)
                      AS "running!"
           FROM horizon"#,
        free
    )
    .fetch_one(pool)
    .await?;
    Ok(FeedPosition::at(row.cap, row.running))
}

/// The snapshot's `xmax` now: no transaction at or above it has started, so no position this database made
/// has a horizon above it.
pub async fn xmax(pool: &PgPool) -> Result<i64, StorageError> {
    Ok(sqlx::query_scalar!(r#"SELECT (pg_snapshot_xmax(pg_current_snapshot())::text)::bigint AS "xmax!""#)
        .fetch_one(pool)
        .await?)
}

/// A session, or a prepared transaction, holding a transaction the feed waits for.
#[derive(Debug, Clone, PartialEq)]
pub struct Blocker {
    /// The transaction.
    pub tx: i64,
    /// The backend running it (none for a prepared transaction, or a session that has just ended).
    pub pid: Option<i32>,
    /// Its database.
    pub database: Option<String>,
    /// Its user.
    pub user: Option<String>,
    /// Its `application_name`.
    pub application: Option<String>,
    /// `active`, `idle in transaction`, ...: shown only with `pg_read_all_stats` for other roles' sessions.
    pub state: Option<String>,
    /// When its transaction began (same visibility as `state`).
    pub transaction_start: Option<chrono::DateTime<chrono::Utc>>,
    /// The global id of a prepared (two-phase) transaction.
    pub prepared_gid: Option<String>,
}

/// Who holds these transactions (at most five), from `pg_stat_activity` and `pg_prepared_xacts`.
pub async fn blockers(pool: &PgPool, txs: &[i64]) -> Result<Vec<Blocker>, StorageError> {
    let rows = sqlx::query!(
        r#"SELECT u.t AS "tx!", a.pid AS "pid?", COALESCE(a.datname, p.database)::text AS "database?",
                  COALESCE(a.usename, p.owner)::text AS "user?", a.application_name AS "application?",
                  a.state AS "state?", a.xact_start AS "transaction_start?", p.gid AS "prepared_gid?"
           FROM unnest($1::bigint[]) AS u(t)
           LEFT JOIN pg_stat_activity a ON a.backend_xid = ((u.t::text)::xid8)::xid
           LEFT JOIN pg_prepared_xacts p ON p.transaction = ((u.t::text)::xid8)::xid
           ORDER BY u.t
           LIMIT 5"#,
        txs
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Blocker {
            tx: r.tx,
            pid: r.pid,
            database: r.database,
            user: r.user,
            application: r.application,
            state: r.state,
            transaction_start: r.transaction_start,
            prepared_gid: r.prepared_gid,
        })
        .collect())
}

/// The next page of everybody's events (`user` `None`) or of one user's, after `after`.
pub async fn page(
    pool: &PgPool,
    user: Option<Uuid>,
    after: &FeedPosition,
    limit: i64,
) -> Result<FeedPage, StorageError> {
    let (owed_tx, owed_after): (Vec<i64>, Vec<i64>) = after.owed.iter().copied().unzip();
    macro_rules! read {
        ($query:expr) => {{
            let rows = $query.fetch_all(pool).await?;
            let horizon = rows.first().map(|r| Horizon { cap: r.cap, xmax: r.xmax, running: r.running.clone() });
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
                    tx,
                    event: EventRow {
                        event_id,
                        event_type: EventType::from_stored(&event_type),
                        occurred_at,
                        sync_id: r.sync_id,
                        position_id: r.position_id,
                        symbol: r.symbol,
                        message,
                        details,
                    },
                });
            }
            let horizon = horizon.ok_or_else(|| StorageError::Corrupt("a feed read returned no row".into()))?;
            finish(events, horizon, after, limit)
        }};
    }
    // The snapshot's running transactions that the next position owes: those at or above the horizon (newly
    // passed) and those already owed, below the cap. The cap is `xmax`, or, when more than `free` transactions
    // at or above the horizon are running, the first of them that does not fit.
    match user {
        None => read!(sqlx::query!(
            r#"WITH snap AS MATERIALIZED (SELECT pg_current_snapshot() AS s),
                    running AS MATERIALIZED (SELECT x FROM snap, pg_snapshot_xip(snap.s) AS x),
                    owed AS MATERIALIZED (
                        SELECT (o.tx::text)::xid8 AS tx, o.after
                        FROM unnest($2::bigint[], $3::bigint[]) AS o(tx, after)),
                    horizon AS MATERIALIZED (
                        SELECT pg_snapshot_xmax(snap.s) AS xmax,
                               CASE WHEN $5::int < 0 THEN (($1::bigint)::text)::xid8
                                    ELSE LEAST(pg_snapshot_xmax(snap.s),
                                               COALESCE((SELECT r.x FROM running r
                                                         WHERE r.x >= (($1::bigint)::text)::xid8
                                                         ORDER BY r.x OFFSET GREATEST($5::int, 0) LIMIT 1),
                                                        pg_snapshot_xmax(snap.s)))
                               END AS cap
                        FROM snap),
                    head AS MATERIALIZED (
                        SELECT h.xmax, h.cap,
                               ARRAY(SELECT (r.x::text)::bigint FROM running r
                                     WHERE r.x < h.cap
                                       AND (r.x >= (($1::bigint)::text)::xid8 OR r.x IN (SELECT tx FROM owed))
                                     ORDER BY r.x) AS running
                        FROM horizon h),
                    page AS (
                        SELECT u.* FROM (
                            (SELECT ev.* FROM owed o CROSS JOIN LATERAL (
                                 SELECT * FROM events e
                                 WHERE e.tx = o.tx AND e.event_id > o.after
                                 ORDER BY e.event_id LIMIT $4) ev)
                            UNION ALL
                            (SELECT e.* FROM events e, head
                             WHERE e.tx >= (($1::bigint)::text)::xid8 AND e.tx < head.cap
                             ORDER BY e.tx, e.event_id LIMIT $4)
                        ) u
                        ORDER BY u.tx, u.event_id LIMIT $4)
               SELECT (head.cap::text)::bigint AS "cap!", (head.xmax::text)::bigint AS "xmax!",
                      head.running AS "running!",
                      (p.tx::text)::bigint AS "tx?", p.event_id AS "event_id?", p.user_id AS "user_id?",
                      p.event_type AS "event_type?", p.occurred_at AS "occurred_at?", p.sync_id AS "sync_id?",
                      p.position_id AS "position_id?", p.symbol AS "symbol?", p.message AS "message?",
                      p.details AS "details?"
               FROM head LEFT JOIN page p ON true
               ORDER BY p.tx, p.event_id"#,
            after.horizon,
            &owed_tx,
            &owed_after,
            limit,
            after.free()
        )),
        Some(user_id) => read!(sqlx::query!(
            r#"WITH snap AS MATERIALIZED (SELECT pg_current_snapshot() AS s),
                    running AS MATERIALIZED (SELECT x FROM snap, pg_snapshot_xip(snap.s) AS x),
                    owed AS MATERIALIZED (
                        SELECT (o.tx::text)::xid8 AS tx, o.after
                        FROM unnest($2::bigint[], $3::bigint[]) AS o(tx, after)),
                    horizon AS MATERIALIZED (
                        SELECT pg_snapshot_xmax(snap.s) AS xmax,
                               CASE WHEN $5::int < 0 THEN (($1::bigint)::text)::xid8
                                    ELSE LEAST(pg_snapshot_xmax(snap.s),
                                               COALESCE((SELECT r.x FROM running r
                                                         WHERE r.x >= (($1::bigint)::text)::xid8
                                                         ORDER BY r.x OFFSET GREATEST($5::int, 0) LIMIT 1),
                                                        pg_snapshot_xmax(snap.s)))
                               END AS cap
                        FROM snap),
                    head AS MATERIALIZED (
                        SELECT h.xmax, h.cap,
                               ARRAY(SELECT (r.x::text)::bigint FROM running r
                                     WHERE r.x < h.cap
                                       AND (r.x >= (($1::bigint)::text)::xid8 OR r.x IN (SELECT tx FROM owed))
                                     ORDER BY r.x) AS running
                        FROM horizon h),
                    page AS (
                        SELECT u.* FROM (
                            (SELECT ev.* FROM owed o CROSS JOIN LATERAL (
                                 SELECT * FROM events e
                                 WHERE e.user_id = $6 AND e.tx = o.tx AND e.event_id > o.after
                                 ORDER BY e.event_id LIMIT $4) ev)
                            UNION ALL
                            (SELECT e.* FROM events e, head
                             WHERE e.user_id = $6 AND e.tx >= (($1::bigint)::text)::xid8 AND e.tx < head.cap
                             ORDER BY e.tx, e.event_id LIMIT $4)
                        ) u
                        ORDER BY u.tx, u.event_id LIMIT $4)
               SELECT (head.cap::text)::bigint AS "cap!", (head.xmax::text)::bigint AS "xmax!",
                      head.running AS "running!",
                      (p.tx::text)::bigint AS "tx?", p.event_id AS "event_id?", p.user_id AS "user_id?",
                      p.event_type AS "event_type?", p.occurred_at AS "occurred_at?", p.sync_id AS "sync_id?",
                      p.position_id AS "position_id?", p.symbol AS "symbol?", p.message AS "message?",
                      p.details AS "details?"
               FROM head LEFT JOIN page p ON true
               ORDER BY p.tx, p.event_id"#,
            after.horizon,
            &owed_tx,
            &owed_after,
            limit,
            after.free(),
            user_id
        )),
    }
}

/// The page's `next` position: where the snapshot left the reader when it read everything readable, or just
/// after the last event when the page was full.
fn finish(
    events: Vec<FeedEvent>,
    horizon: Horizon,
    after: &FeedPosition,
    limit: i64,
) -> Result<FeedPage, StorageError> {
    if horizon.cap < after.horizon {
        // The database went back (a restore or a failover to a standby that had not received everything):
        // positions of this database are not comparable any more.
        return Err(StorageError::Corrupt(format!(
            "the event feed went back: a read ended at transaction {} below the position's horizon {}",
            horizon.cap, after.horizon
        )));
    }
    let caught_up = (events.len() as i64) < limit;
    let end = FeedPosition::at(horizon.cap, horizon.running);
    let next = match events.last() {
        Some(last) if !caught_up => after.through(&end, last.tx, last.event.event_id),
        _ => after.join(&end),
    };
    Ok(FeedPage { events, next, caught_up, capped: horizon.cap < horizon.xmax })
}
