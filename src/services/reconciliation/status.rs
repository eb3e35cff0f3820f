//! `ReconciliationService.GetReconciliationStatus`, answered from stored bytes: the cached value is the encoded
//! response itself, split so a request takes the recent events it asked for and the state judged now (STALE
//! depends on the time), without decoding, cloning or re-encoding a message.

use chrono::{DateTime, Utc};
use prost::Message;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response};
use uuid::Uuid;

use crate::cache::Rpc;
use crate::domain::status::{SyncFacts, reconciliation_state};
use crate::pb;
use crate::services::decode::{self, caller, target_user};
use crate::services::encode::{self, opt_ts, ts};
use crate::services::encoded::Encoded;
use crate::services::{ApiError, AppState, cached};
use crate::storage::{self, Db};

/// Cache kind of a status.
const STATUS: &str = "status";
/// Default and maximum of `recent_events_limit`.
const RECENT_EVENTS: (u32, u32) = (5, 100);
/// The numbers of recent events actually loaded (and cached): a request gets the smallest that covers it.
const RECENT_EVENTS_LOADED: [u32; 3] = [5, 20, 100];

/// A status as cached: the response's bytes without its recent events and state, each event's bytes (as
/// field 8 of the response), and what the state is judged from.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatusView {
    base: Vec<u8>,
    events: Vec<Vec<u8>>,
    total_syncs: i64,
    last_sync_failed: bool,
    last_success_at: Option<DateTime<Utc>>,
    open_positions: i32,
    open_divergences: i32,
}

crate::postcard_cache_value!(StatusView, schema = 1);

impl StatusView {
    /// The response with its first `limit` events and its state at `now`.
    fn respond(&self, limit: usize, now: DateTime<Utc>, stale_after: chrono::Duration) -> Encoded {
        let facts = SyncFacts {
            total_syncs: self.total_syncs,
            last_sync_failed: self.last_sync_failed,
            last_success_at: self.last_success_at,
            open_positions: self.open_positions,
            open_divergences: self.open_divergences,
        };
        let state = encode::reconciliation_state(reconciliation_state(&facts, now, stale_after)) as i32;
        let events = &self.events[..limit.min(self.events.len())];
        let mut bytes = Vec::with_capacity(self.base.len() + events.iter().map(Vec::len).sum::<usize>() + 2);
        bytes.extend_from_slice(&self.base);
        for event in events {
            bytes.extend_from_slice(event);
        }
        // Fields may come in any order; a message is the concatenation of its fields.
        prost::encoding::int32::encode(1, &state, &mut bytes);
        Encoded(bytes)
    }
}

/// Reads the status from PostgreSQL in one statement: the summary row and the latest events (O(1) in history).
async fn load(db: Db, user_id: Uuid, limit: u32) -> Result<StatusView, ApiError> {
    let read = db.run("summaries.load", storage::summaries::load(db.pool()?, user_id, i64::from(limit))).await?;
    let summary = read.summary.unwrap_or_default();
    let last_sync_duration = match (summary.last_sync_started_at, summary.last_sync_finished_at) {
        (Some(start), Some(end)) => Some(encode::duration(end.signed_duration_since(start))),
        _ => None,
    };
    let base = pb::GetReconciliationStatusResponse {
        state: pb::ReconciliationState::Unspecified.into(),
        last_sync_time: opt_ts(summary.last_sync_finished_at),
        last_sync_duration,
        total_syncs: summary.total_syncs,
        open_positions_count: summary.open_positions,
        matched_positions_count: summary.matched_positions,
        divergences_count: summary.open_divergences,
        recent_events: Vec::new(),
        as_of: Some(ts(read.read_at)),
        user_id: user_id.to_string(),
        last_successful_sync_time: opt_ts(summary.last_success_at),
        last_sync_error: summary.last_sync_error.unwrap_or_default(),
        failed_syncs: summary.failed_syncs,
    };
    let events = read
        .events
        .into_iter()
        .map(|e| {
            let mut bytes = Vec::new();
            prost::encoding::message::encode(8, &encode::event(e, user_id), &mut bytes);
            bytes
        })
        .collect();
    Ok(StatusView {
        base: base.encode_to_vec(),
        events,
        total_syncs: summary.total_syncs,
        last_sync_failed: summary.last_sync_failed,
        last_success_at: summary.last_success_at,
        open_positions: summary.open_positions,
        open_divergences: summary.open_divergences,
    })
}

/// Serves a status request as bytes (see the module docs).
pub async fn serve(
    state: &AppState,
    request: Request<pb::GetReconciliationStatusRequest>,
) -> Result<Response<Encoded>, tonic::Status> {
    let caller = caller(&request)?;
    let req = request.into_inner();
    let user_id = target_user(&caller, "user_id", &req.user_id)?;
    let limit = decode::page_size("recent_events_limit", req.recent_events_limit, RECENT_EVENTS.0, RECENT_EVENTS.1)?;
    // A few loaded sizes serve every limit, so callers cannot multiply cache entries by varying it.
    let loaded = RECENT_EVENTS_LOADED.into_iter().find(|n| *n >= limit).unwrap_or(RECENT_EVENTS.1);
    let db = state.db.clone();
    let (view, freshness) = state
        .cache
        .get(Rpc::GetReconciliationStatus, user_id, STATUS, &format!("n={loaded}"), move || load(db, user_id, loaded))
        .await?;
    Ok(cached(view.respond(limit as usize, Utc::now(), state.rules.stale_sync_after), freshness))
}

#[cfg(test)]
mod layout_tests {
    use super::*;

    #[test]
    fn the_cached_layout_of_a_status_is_pinned_to_its_schema() {
        let view = StatusView {
            base: vec![1, 2, 3],
            events: vec![vec![4, 5], vec![6]],
            total_syncs: 42,
            last_sync_failed: true,
            last_success_at: DateTime::from_timestamp(1_765_000_000, 5_000_000),
            open_positions: 3,
            open_divergences: 1,
        };
        crate::cache::assert_layout(&view, 1, 0x3572_7084_ae31_2ddc);
    }
}
