//! `PositionsService.ListOpenPositions`, answered as bytes: each position is its cached price-independent
//! fields followed by the ones valued now; filters and paging are applied at serve time, so no request input
//! but the user chooses a cache key.

use chrono::{DateTime, Utc};
use prost::Message;
use tonic::Request;
use uuid::Uuid;

use super::book::BookView;
use super::fields::{priced_fields, valuation};
use crate::cache::Rpc;
use crate::domain::pnl::{self, Valuation};
use crate::pb;
use crate::services::decode::{self, caller, target_user};
use crate::services::encode::{dec, opt_ts, ts};
use crate::services::encoded::Encoded;
use crate::services::paging::{self, Cursor};
use crate::services::{ApiError, AppState, cached};
use crate::storage::MarketSnapshot;

/// Default and maximum of `page_size`.
const POSITION_PAGE: (u32, u32) = (50, 500);

/// `PositionsService.ListOpenPositions`, answered as bytes: each position is its cached price-independent
/// fields followed by the ones valued now.
pub async fn serve(
    state: &AppState,
    request: Request<pb::ListOpenPositionsRequest>,
) -> Result<tonic::Response<Encoded>, tonic::Status> {
    let caller = caller(&request)?;
    let req = request.into_inner();
    let user_id = target_user(&caller, "user_id", &req.user_id)?;
    let symbol = decode::optional_symbol("symbol", &req.symbol)?;
    let size = decode::page_size("page_size", req.page_size, POSITION_PAGE.0, POSITION_PAGE.1)? as usize;
    let filters = paging::fingerprint(&[&user_id.to_string(), symbol.as_ref().map_or("*", |s| s.as_str())]);
    let after = paging::decode("page_token", &req.page_token, filters)?
        .map(|Cursor { time, key }| {
            Uuid::try_parse(&key)
                .map(|id| (time, id))
                .map_err(|_| ApiError::invalid("page_token", "is not a page token returned by this service"))
        })
        .transpose()?;

    let (view, freshness) = state.book(Rpc::ListOpenPositions, user_id).await?;
    let market = state.market.current();
    let matching: Vec<usize> = (0..view.book.positions.len())
        .filter(|i| symbol.as_ref().is_none_or(|s| view.book.positions[*i].symbol == s.as_str()))
        .collect();
    Ok(cached(list(&view, &market, &matching, size, filters, after), freshness))
}

/// One page of `matching` (indices of all open positions passing the filters, in order), with totals over all
/// of them, encoded.
fn list(
    view: &BookView,
    market: &MarketSnapshot,
    matching: &[usize],
    size: usize,
    filters: u64,
    after: Option<(DateTime<Utc>, Uuid)>,
) -> Encoded {
    let book = &view.book;
    let currency = book.account.as_ref().and_then(|a| a.currency.clone()).unwrap_or_default();
    let equity = book.account.as_ref().and_then(|a| a.equity);
    let valued: Vec<(usize, Valuation)> =
        matching.iter().map(|i| (*i, valuation(&book.positions[*i], market, &currency))).collect();

    let unavailable = valued.iter().filter(|(_, v)| matches!(v, Valuation::Unavailable { .. })).count();
    let known = valued.iter().filter_map(|(_, v)| match v {
        Valuation::Known { pnl, .. } => Some(*pnl),
        Valuation::Unavailable { .. } => None,
    });
    let (total, total_reason) = match (unavailable, pnl::checked_sum(known)) {
        (0, Some(sum)) => (Some(sum), String::new()),
        (0, None) => (None, "the total P&L overflows the decimal range".to_owned()),
        (n, _) => (None, format!("P&L unavailable for {n} of {} positions", valued.len())),
    };
    let total_percent = total.zip(equity).and_then(|(t, e)| pnl::percent_of(t, e));

    let total_count = valued.len();
    let mut page: Vec<_> = valued
        .into_iter()
        .filter(|(i, _)| {
            let row = &book.positions[*i];
            after.is_none_or(|cursor| (row.open_time, row.position_id) > cursor)
        })
        .take(size + 1)
        .collect();
    let next_page_token = if page.len() > size {
        page.truncate(size);
        page.last()
            .map(|(i, _)| {
                let row = &book.positions[*i];
                paging::encode(filters, &Cursor { time: row.open_time, key: row.position_id.to_string() })
            })
            .unwrap_or_default()
    } else {
        String::new()
    };

    let rest = pb::ListOpenPositionsResponse {
        positions: Vec::new(),
        total_unrealized_pnl: dec(total),
        total_unrealized_pnl_percent: dec(total_percent),
        account_currency: currency,
        next_page_token,
        as_of: Some(ts(book.read_at)),
        total_count: i32::try_from(total_count).unwrap_or(i32::MAX),
        total_unavailable_reason: total_reason,
        account_equity: dec(equity),
        prices_as_of: opt_ts(market.read_at),
    };
    let mut bytes = rest.encode_to_vec();
    for (i, v) in page {
        let priced = priced_fields(&book.positions[i], v, market).encode_to_vec();
        let fixed = &view.encoded[i];
        // Field 1 (positions), length-delimited: the fixed fields, then the priced ones (a message is the
        // concatenation of its fields, in any order).
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut bytes);
        prost::encoding::encode_varint((fixed.len() + priced.len()) as u64, &mut bytes);
        bytes.extend_from_slice(fixed);
        bytes.extend_from_slice(&priced);
    }
    Encoded(bytes)
}
