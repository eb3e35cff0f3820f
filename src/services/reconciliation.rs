//! `trading.v1.ReconciliationService`: status, event log, and broker sync ingest.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tonic::{Request, Response};
use uuid::Uuid;

use super::decode::{self, caller, target_user};
use super::encode::{self, opt_ts, ts};
use super::paging::{self, Cursor};
use super::{AppState, RpcResult, cached};
use crate::cache::Rpc;
use crate::domain::events::EventType;
use crate::domain::status::{SyncFacts, reconciliation_state};
use crate::error::ApiError;
use crate::pb;
use crate::pb::reconciliation_service_server::ReconciliationService;
use crate::storage::{self, EventQuery};

/// Default and maximum of `recent_events_limit`.
const RECENT_EVENTS: (u32, u32) = (5, 100);
/// The numbers of recent events actually loaded (and cached): a request gets the smallest that covers it.
const RECENT_EVENTS_LOADED: [u32; 3] = [5, 20, 100];
/// Cache kind of a status.
const STATUS: &str = "status";
/// Default and maximum of `page_size` for events.
const EVENT_PAGE: (u32, u32) = (50, 500);

/// The ReconciliationService implementation.
#[derive(Debug, Clone)]
pub struct ReconciliationApi {
    state: AppState,
}

impl ReconciliationApi {
    /// A handler over shared state.
    pub fn new(state: AppState) -> Self {
        ReconciliationApi { state }
    }
}

/// Reads the status from PostgreSQL in one statement: the summary row and the latest events (O(1) in history).
/// Its `state` is judged again whenever it is served (STALE depends on the time).
async fn load_status(pool: PgPool, user_id: Uuid, limit: u32) -> Result<pb::GetReconciliationStatusResponse, ApiError> {
    let read = storage::summaries::load(&pool, user_id, i64::from(limit)).await?;
    let summary = read.summary.unwrap_or_default();
    let last_sync_duration = match (summary.last_sync_started_at, summary.last_sync_finished_at) {
        (Some(start), Some(end)) => Some(encode::duration(end.signed_duration_since(start))),
        _ => None,
    };
    Ok(pb::GetReconciliationStatusResponse {
        state: pb::ReconciliationState::Unspecified.into(),
        last_sync_time: opt_ts(summary.last_sync_finished_at),
        last_sync_duration,
        total_syncs: summary.total_syncs,
        open_positions_count: summary.open_positions,
        matched_positions_count: summary.matched_positions,
        divergences_count: summary.open_divergences,
        recent_events: read.events.into_iter().map(|e| encode::event(e, user_id)).collect(),
        as_of: Some(ts(read.read_at)),
        user_id: user_id.to_string(),
        last_successful_sync_time: opt_ts(summary.last_success_at),
        last_sync_error: summary.last_sync_error.unwrap_or_default(),
        failed_syncs: summary.failed_syncs,
    })
}

/// The reconciliation state of a status at `now`, from the facts it carries.
fn state_at(
    status: &pb::GetReconciliationStatusResponse,
    now: DateTime<Utc>,
    stale_after: chrono::Duration,
) -> pb::ReconciliationState {
    let last_success_at = status
        .last_successful_sync_time
        .as_ref()
        .and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)));
    let facts = SyncFacts {
        total_syncs: status.total_syncs,
        // A failed sync always has a (required, non-empty) error message.
        last_sync_failed: !status.last_sync_error.is_empty(),
        last_success_at,
        open_positions: status.open_positions_count,
        open_divergences: status.divergences_count,
    };
    encode::reconciliation_state(reconciliation_state(&facts, now, stale_after))
}

#[tonic::async_trait]
impl ReconciliationService for ReconciliationApi {
    async fn get_reconciliation_status(
        &self,
        request: Request<pb::GetReconciliationStatusRequest>,
    ) -> RpcResult<pb::GetReconciliationStatusResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let user_id = target_user(&caller, "user_id", &req.user_id)?;
        let limit =
            decode::page_size("recent_events_limit", req.recent_events_limit, RECENT_EVENTS.0, RECENT_EVENTS.1)?;

        // A few loaded sizes serve every limit, so callers cannot multiply cache entries by varying it.
        let loaded = RECENT_EVENTS_LOADED.into_iter().find(|n| *n >= limit).unwrap_or(RECENT_EVENTS.1);
        let pool = self.state.pool.clone();
        let (status, freshness) = self
            .state
            .cache
            .get(Rpc::GetReconciliationStatus, user_id, STATUS, &format!("n={loaded}"), move || {
                load_status(pool, user_id, loaded)
            })
            .await?;
        let mut response = pb::GetReconciliationStatusResponse::clone(status.as_ref());
        response.recent_events.truncate(limit as usize);
        response.state = state_at(&response, Utc::now(), self.state.rules.stale_sync_after).into();
        Ok(cached(response, freshness))
    }

    async fn list_reconciliation_events(
        &self,
        request: Request<pb::ListReconciliationEventsRequest>,
    ) -> RpcResult<pb::ListReconciliationEventsResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let user_id = target_user(&caller, "user_id", &req.user_id)?;
        let size = decode::page_size("page_size", req.page_size, EVENT_PAGE.0, EVENT_PAGE.1)?;
        let start = decode::optional_timestamp("start_time", req.start_time.as_ref())?;
        let end = decode::optional_timestamp("end_time", req.end_time.as_ref())?;
        if let (Some(s), Some(e)) = (start, end)
            && s >= e
        {
            return Err(ApiError::invalid("end_time", "must be after start_time").into());
        }
        let types = event_types(&req.event_types)?;

        let type_names = types.as_ref().map(|t| t.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(","));
        let micros = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp_micros().to_string()).unwrap_or_default();
        let filters = paging::fingerprint(&[
            &user_id.to_string(),
            &micros(start),
            &micros(end),
            type_names.as_deref().unwrap_or("*"),
        ]);
        let end_bound = (end.unwrap_or_else(decode::latest_time), i64::MIN);
        let before = match paging::decode("page_token", &req.page_token, filters)? {
            None => (end.unwrap_or_else(decode::latest_time), if end.is_some() { i64::MIN } else { i64::MAX }),
            Some(Cursor { time, key }) => {
                let id = key
                    .parse::<i64>()
                    .map_err(|_| ApiError::invalid("page_token", "is not a page token returned by this service"))?;
                (time, id).min(end_bound)
            }
        };

        let as_of = Utc::now();
        let query = EventQuery {
            user_id,
            since: start.unwrap_or_else(decode::earliest_time),
            before,
            types,
            limit: i64::from(size) + 1,
        };
        let mut rows = storage::events::list(&self.state.pool, &query).await.map_err(ApiError::from)?;
        let next_page_token = if rows.len() > size as usize {
            rows.truncate(size as usize);
            rows.last()
                .map(|last| paging::encode(filters, &Cursor { time: last.occurred_at, key: last.event_id.to_string() }))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListReconciliationEventsResponse {
            events: rows.into_iter().map(|e| encode::event(e, user_id)).collect(),
            next_page_token,
            as_of: Some(ts(as_of)),
        }))
    }

    async fn submit_broker_sync(
        &self,
        request: Request<pb::SubmitBrokerSyncRequest>,
    ) -> RpcResult<pb::SubmitBrokerSyncResponse> {
        super::ingest::submit_broker_sync(&self.state, request).await
    }
}

/// The event-type filter: `None` for all types; sorted and deduplicated otherwise.
fn event_types(values: &[i32]) -> Result<Option<Vec<EventType>>, ApiError> {
    if values.is_empty() {
        return Ok(None);
    }
    let mut types = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let field = format!("event_types[{i}]");
            let t = pb::EventType::try_from(*v)
                .map_err(|_| ApiError::invalid(&field, format!("{v} is not an EventType")))?;
            EventType::ALL
                .iter()
                .copied()
                .find(|d| encode::event_type(*d) == t)
                .ok_or_else(|| ApiError::invalid(&field, "EVENT_TYPE_UNSPECIFIED is not a filter"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    types.sort();
    types.dedup();
    Ok(Some(types))
}
