//! The append-only event log: reads newest first, with keyset paging on (occurred_at, event_id), and the alert
//! events appended to the log of every holder of a symbol.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::StorageError;
use crate::domain::events::EventType;

/// One event.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EventRow {
    /// Increasing id.
    pub event_id: i64,
    /// What happened ([`EventType::Unknown`] for a kind a newer version wrote).
    #[serde(deserialize_with = "crate::domain::events::deserialize_lenient")]
    pub event_type: EventType,
    /// When.
    pub occurred_at: DateTime<Utc>,
    /// The causing sync, if any.
    pub sync_id: Option<Uuid>,
    /// The position concerned, if any.
    pub position_id: Option<Uuid>,
    /// The symbol concerned, if any.
    pub symbol: Option<String>,
    /// One-line description.
    pub message: String,
    /// Structured details (a JSON object).
    pub details: serde_json::Value,
}

/// Which events to read. The window is `since <= occurred_at` and `(occurred_at, event_id) < before`, so a
/// cursor and an end time are one bound: the caller passes the smaller of the two.
#[derive(Debug, Clone, PartialEq)]
pub struct EventQuery {
    /// Whose events.
    pub user_id: Uuid,
    /// Inclusive lower bound on occurred_at.
    pub since: DateTime<Utc>,
    /// Exclusive upper bound on (occurred_at, event_id).
    pub before: (DateTime<Utc>, i64),
    /// Only these types; `None` for all.
    pub types: Option<Vec<EventType>>,
    /// Maximum rows.
    pub limit: i64,
}

/// One page of events, newest first.
pub type EventPage = Vec<EventRow>;

/// Events matching `q`, newest first. Both variants walk an index in order (no sort, no count).
pub async fn list(pool: &PgPool, q: &EventQuery) -> Result<EventPage, StorageError> {
    let (before_time, before_id) = q.before;
    macro_rules! to_row {
        ($r:expr) => {{
            let r = $r;
            Ok(EventRow {
                event_id: r.event_id,
                event_type: EventType::from_stored(&r.event_type),
                occurred_at: r.occurred_at,
                sync_id: r.sync_id,
                position_id: r.position_id,
                symbol: r.symbol,
                message: r.message,
                details: r.details,
            })
        }};
    }
    match &q.types {
        None => sqlx::query!(
            r#"SELECT event_id, event_type, occurred_at, sync_id, position_id, symbol, message, details
               FROM events
               WHERE user_id = $1 AND occurred_at >= $2 AND (occurred_at, event_id) < ($3, $4)
               ORDER BY occurred_at DESC, event_id DESC
               LIMIT $5"#,
            q.user_id,
            q.since,
            before_time,
            before_id,
            q.limit
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| to_row!(r))
        .collect(),
        Some(types) => {
            // One index walk per requested type on (user_id, event_type, occurred_at DESC, event_id DESC), each
            // stopping after `limit` rows, then a merge of at most types x limit rows: the cost never depends on
            // how long the user's history is, whatever the planner believes about how common a type is. (With
            // `event_type = ANY(...)` it walked the user's whole history in time order when statistics said the
            // type was common: 1,000,000 index entries for a type the user never had.)
            let types: Vec<String> = types.iter().map(|t| t.as_str().to_owned()).collect();
            sqlx::query!(
                r#"SELECT e.event_id AS "event_id!", e.event_type AS "event_type!", e.occurred_at AS "occurred_at!",
                          e.sync_id AS "sync_id?", e.position_id AS "position_id?", e.symbol AS "symbol?",
                          e.message AS "message!", e.details AS "details!"
                   FROM UNNEST($6::text[]) AS t(event_type)
                   CROSS JOIN LATERAL (
                       SELECT event_id, event_type, occurred_at, sync_id, position_id, symbol, message, details
                       FROM events
                       WHERE user_id = $1 AND event_type = t.event_type AND occurred_at >= $2
                         AND (occurred_at, event_id) < ($3, $4)
                       ORDER BY occurred_at DESC, event_id DESC
                       LIMIT $5
                   ) e
                   ORDER BY e.occurred_at DESC, e.event_id DESC
                   LIMIT $5"#,
                q.user_id,
                q.since,
                before_time,
                before_id,
                q.limit,
                &types
            )
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|r| to_row!(r))
            .collect()
        }
    }
}

/// Appends an event (at the server's time) to the log of every user holding an open position in `symbol`.
pub(super) async fn fan_out(
    tx: &mut Transaction<'_, Postgres>,
    symbol: &str,
    event_type: EventType,
    message: &str,
    details: serde_json::Value,
) -> Result<Vec<Uuid>, StorageError> {
    Ok(sqlx::query_scalar!(
        r#"INSERT INTO events (user_id, event_type, occurred_at, symbol, message, details)
           SELECT DISTINCT p.user_id, $2, now(), $1, $3, $4::jsonb
           FROM positions p WHERE p.symbol = $1 AND p.status = 'open'
           RETURNING user_id"#,
        symbol,
        event_type.as_str(),
        message,
        details
    )
    .fetch_all(&mut **tx)
    .await?)
}
