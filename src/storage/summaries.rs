//! The per-user reconciliation summary: counters and latest sync state, read in O(1).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::StorageError;

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

/// The summary of `user_id`, or `None` when the user never synced.
#[tracing::instrument(skip_all, fields(user_id = %user_id))]
pub async fn get(pool: &PgPool, user_id: Uuid) -> Result<Option<SummaryRow>, StorageError> {
    let row = sqlx::query!(
        r#"SELECT total_syncs, failed_syncs, last_sync_status, last_sync_started_at, last_sync_finished_at,
                  last_sync_error, last_success_at, open_positions_count, matched_positions_count,
                  open_divergences_count
           FROM reconciliation_summaries WHERE user_id = $1"#,
        user_id
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| SummaryRow {
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
    }))
}
