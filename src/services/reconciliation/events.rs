//! `ReconciliationService.ListReconciliationEvents`: a user's event log, newest first, keyset-paged, filtered by
//! time range and type (one indexed statement per page).

use chrono::{DateTime, Utc};
use tonic::{Request, Response};

use crate::domain::events::EventType;
use crate::pb;
use crate::services::decode::{self, caller, target_user};
use crate::services::encode::{self, ts};
use crate::services::paging::{self, Cursor};
use crate::services::{ApiError, AppState, RpcResult};
use crate::storage::{self, EventQuery};

/// Default and maximum of `page_size` for events.
const EVENT_PAGE: (u32, u32) = (50, 500);

/// Lists one page of events.
pub async fn list(
    state: &AppState,
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
    let db = &state.db;
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

/// The event-type filter: `None` for all types; sorted and deduplicated otherwise.
pub fn event_types(values: &[i32]) -> Result<Option<Vec<EventType>>, ApiError> {
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
            EventType::filterable()
                .find(|d| encode::event_type(*d) == t)
                .ok_or_else(|| ApiError::invalid(&field, "EVENT_TYPE_UNSPECIFIED is not a filter"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    types.sort();
    types.dedup();
    Ok(Some(types))
}
