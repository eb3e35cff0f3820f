//! The per-user reconciliation summary (counters and latest sync state) and the latest events: a status read,
//! in O(1) of the history and one round trip.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use super::{EventRow, StorageError};

/// One user's summary row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SummaryRow {
    /// Syncs recorded, successful and failed.
    pub total_syncs: i64,
    /// Failed syncs recorded.
    pub failed_syncs: i64,
    /// Whether the most recent sync failed.
    pub last_sync_failed: bool,
    /// Start of the most recent sync.
    pub last_sync_started_at: Option<DateTime<Utc>>,
    /// Finish of the most recent sync.
    pub last_sync_finished_at: Option<DateTime<Utc>>,
    /// Error of the most recent sync, if it failed.
    pub last_sync_error: Option<String>,
    /// Finish of the most recent successful sync.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Open positions as of the last successful sync.
    pub open_positions: i32,
    /// Open positions matched with the platform.
    pub matched_positions: i32,
    /// Unresolved divergences.
    pub open_divergences: i32,
}

/// What a status read needs, read in one statement (one round trip, one snapshot).
#[derive(Debug, Clone, PartialEq)]
pub struct StatusRead {
    /// When it was read (PostgreSQL's clock).
    pub read_at: DateTime<Utc>,
    /// The summary; `None` when the user never synced.
    pub summary: Option<SummaryRow>,
    /// The `limit` most recent events, newest first.
    pub events: Vec<EventRow>,
}

/// The summary row as the statement returns it.
#[derive(Debug, Deserialize)]
struct SummaryJson {
    total_syncs: i64,
    failed_syncs: i64,
    last_sync_status: Option<String>,
    last_sync_started_at: Option<DateTime<Utc>>,
    last_sync_finished_at: Option<DateTime<Utc>>,
    last_sync_error: Option<String>,
    last_success_at: Option<DateTime<Utc>>,
    open_positions_count: i32,
    matched_positions_count: i32,
    open_divergences_count: i32,
}

/// The summary and the `limit` latest events of `user_id` (O(1) in history: counters are kept at write time and
/// the events come from one bounded index walk).
pub async fn load(pool: &PgPool, user_id: Uuid, limit: i64) -> Result<StatusRead, StorageError> {
    let row = sqlx::query!(
        r#"SELECT now() AS "read_at!",
             (SELECT row_to_json(s) FROM (
                  SELECT total_syncs, failed_syncs, last_sync_status, last_sync_started_at, last_sync_finished_at,
                         last_sync_error, last_success_at, open_positions_count, matched_positions_count,
                         open_divergences_count
                  FROM reconciliation_summaries WHERE user_id = $1) s) AS "summary: Json<SummaryJson>",
             (SELECT COALESCE(json_agg(e ORDER BY e.occurred_at DESC, e.event_id DESC), '[]') FROM (
                  SELECT event_id, event_type, occurred_at, sync_id, position_id, symbol, message, details
                  FROM events WHERE user_id = $1
                  ORDER BY occurred_at DESC, event_id DESC
                  LIMIT $2) e) AS "events!: Json<Vec<EventRow>>""#,
        user_id,
        limit
    )
    .fetch_one(pool)
    .await?;
    Ok(StatusRead {
        read_at: row.read_at,
        summary: row.summary.map(|Json(r)| SummaryRow {
            total_syncs: r.total_syncs,
            failed_syncs: r.failed_syncs,
            last_sync_failed: r.last_sync_status.as_deref() == Some("failed"),
            last_sync_started_at: r.last_sync_started_at,
            last_sync_finished_at: r.last_sync_finished_at,
            last_sync_error: r.last_sync_error,
            last_success_at: r.last_success_at,
            open_positions: r.open_positions_count,
            matched_positions: r.matched_positions_count,
            open_divergences: r.open_divergences_count,
        }),
        events: row.events.0,
    })
}
