//! `trading.v1.ReconciliationService`: status, event log, and broker sync ingest.

use chrono::{DateTime, Utc};
use tonic::{Request, Response};

use super::decode::{self, caller, target_user};
use super::encode::{self, ts};
use super::paging::{self, Cursor};
use super::{AppState, RpcResult};
use crate::domain::events::EventType;
use crate::error::ApiError;
use crate::pb;
use crate::pb::reconciliation_service_server::ReconciliationService;
use crate::storage::{self, EventQuery};

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

#[tonic::async_trait]
impl ReconciliationService for ReconciliationApi {
    type WatchReconciliationEventsStream = super::watch::Delivery<pb::WatchReconciliationEventsResponse>;

    async fn watch_reconciliation_events(
        &self,
        request: Request<pb::WatchReconciliationEventsRequest>,
    ) -> RpcResult<Self::WatchReconciliationEventsStream> {
        Ok(Response::new(super::watch::watch_events(&self.state, request).await?))
    }

    /// In process (the server answers this method with stored bytes: `services::encoded`); the same answer,
    /// decoded.
    async fn get_reconciliation_status(
        &self,
        request: Request<pb::GetReconciliationStatusRequest>,
    ) -> RpcResult<pb::GetReconciliationStatusResponse> {
        let response = super::status::serve(&self.state, request).await?;
        let (metadata, encoded, extensions) = response.into_parts();
        Ok(Response::from_parts(metadata, encoded.decode()?, extensions))
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
        let db = &self.state.db;
        let pool = db.pool().map_err(ApiError::from)?;
        let mut rows = db.run("events.list", storage::events::list(pool, &query)).await.map_err(ApiError::from)?;
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
pub(super) fn event_types(values: &[i32]) -> Result<Option<Vec<EventType>>, ApiError> {
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
