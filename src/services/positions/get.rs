//! `PositionsService.GetPosition`: one position by id, open (from the cached book, valued now) or closed (read
//! once and cached).

use chrono::{DateTime, Utc};
use tonic::Request;

use super::fields::{position, valuation};
use crate::cache::Rpc;
use crate::domain::pnl::Valuation;
use crate::pb;
use crate::services::decode::{self, caller, target_user};
use crate::services::encode::{opt_ts, ts};
use crate::services::{ApiError, AppState, RpcResult, cached};
use crate::storage::{self, PositionRow};

/// Cache kind of a closed position (open ones are served from the book).
const CLOSED_POSITION: &str = "position";

/// A position read by id that is not open (so not in the book), and when it was read.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ClosedPosition {
    read_at: DateTime<Utc>,
    row: PositionRow,
}

crate::postcard_cache_value!(ClosedPosition, schema = 1);

/// Answers one position.
pub async fn get(state: &AppState, request: Request<pb::GetPositionRequest>) -> RpcResult<pb::GetPositionResponse> {
    let caller = caller(&request)?;
    let req = request.into_inner();
    let position_id = decode::parse_uuid("position_id", &req.position_id)?;
    let user_id = target_user(&caller, "user_id", &req.user_id)?;

    let (view, freshness) = state.book(Rpc::GetPosition, user_id).await?;
    let market = state.market.current();
    let book = &view.book;
    if let Some(row) = book.positions.iter().find(|p| p.position_id == position_id) {
        let currency = book.account.as_ref().and_then(|a| a.currency.as_deref()).unwrap_or_default();
        let v = valuation(row, &market, currency);
        let response = pb::GetPositionResponse {
            position: Some(position(row, v, &book.divergences, &market)),
            as_of: Some(ts(book.read_at)),
            prices_as_of: opt_ts(market.read_at),
        };
        return Ok(cached(response, freshness));
    }
    // Not open: a closed position of this user, or nobody's (indistinguishable on purpose).
    let db = state.db.clone();
    let load = move || async move {
        let read_at = Utc::now();
        let row = db.run("positions.get", storage::positions::get(db.pool()?, user_id, position_id)).await?;
        let row = row.ok_or_else(|| ApiError::NotFound { resource: "position", id: position_id.to_string() })?;
        Ok::<_, ApiError>(ClosedPosition { read_at, row })
    };
    let (closed, freshness) =
        state.cache.get(Rpc::GetPosition, user_id, CLOSED_POSITION, &position_id.to_string(), load).await?;
    let unavailable = Valuation::Unavailable { reason: "the position is closed".into() };
    let response = pb::GetPositionResponse {
        position: Some(position(&closed.row, unavailable, &[], &market)),
        as_of: Some(ts(closed.read_at)),
        prices_as_of: opt_ts(market.read_at),
    };
    Ok(cached(response, freshness))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cached_layout_of_a_closed_position_is_pinned_to_its_schema() {
        let book = storage::book::sample();
        let closed = ClosedPosition { read_at: book.read_at, row: book.positions[0].clone() };
        crate::cache::assert_layout(&closed, 1, 0x1cd6_d28a_0913_7077);
    }
}
