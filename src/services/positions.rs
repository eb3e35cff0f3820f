//! `trading.v1.PositionsService`: open positions with unrealized P&L, and single positions.
//!
//! Both are served from the user's cached book and valued against the replica-local market snapshot when the
//! response is built, so new prices never invalidate anything: the book changes only with the user's syncs.
//! Filters and paging are applied at serve time too, so no request input but the user chooses a cache key.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use prost::Message;
use rust_decimal::Decimal;
use tonic::Request;
use uuid::Uuid;

use super::decode::{self, caller, target_user};
use super::encode::{self, dec, opt_ts, text, ts};
use super::encoded::Encoded;
use super::paging::{self, Cursor};
use super::{AppState, BOOK, RpcResult, cached, load_book};
use crate::cache::Rpc;
use crate::domain::Side;
use crate::domain::pnl::{self, InstrumentSpec, PnlSource, PositionFigures, Valuation};
use crate::error::ApiError;
use crate::pb;
use crate::pb::positions_service_server::PositionsService;
use crate::storage::{self, Book, DivergenceRow, MarketSnapshot, PositionRow};

/// Default and maximum of `page_size`.
const POSITION_PAGE: (u32, u32) = (50, 500);
/// Cache kind of a closed position (open ones are served from the book).
const CLOSED_POSITION: &str = "position";

/// A position read by id that is not open (so not in the book), and when it was read.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ClosedPosition {
    read_at: DateTime<Utc>,
    row: PositionRow,
}

crate::postcard_cache_value!(ClosedPosition);

/// The PositionsService implementation.
#[derive(Debug, Clone)]
pub struct PositionsApi {
    state: AppState,
}

impl PositionsApi {
    /// A handler over shared state.
    pub fn new(state: AppState) -> Self {
        PositionsApi { state }
    }
}

#[tonic::async_trait]
impl PositionsService for PositionsApi {
    /// In process (the server answers this method with bytes: `services::encoded`); the same answer, decoded.
    async fn list_open_positions(
        &self,
        request: Request<pb::ListOpenPositionsRequest>,
    ) -> RpcResult<pb::ListOpenPositionsResponse> {
        let response = serve_list(&self.state, request).await?;
        let (metadata, encoded, extensions) = response.into_parts();
        Ok(tonic::Response::from_parts(metadata, encoded.decode()?, extensions))
    }

    async fn get_position(&self, request: Request<pb::GetPositionRequest>) -> RpcResult<pb::GetPositionResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let position_id = decode::parse_uuid("position_id", &req.position_id)?;
        let user_id = target_user(&caller, "user_id", &req.user_id)?;

        let (view, freshness) = self.state.book(Rpc::GetPosition, user_id).await?;
        let market = self.state.market.current();
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
        let db = self.state.db.clone();
        let load = move || async move {
            let read_at = Utc::now();
            let row = db.run("positions.get", storage::positions::get(db.pool()?, user_id, position_id)).await?;
            let row = row.ok_or_else(|| ApiError::NotFound { resource: "position", id: position_id.to_string() })?;
            Ok(ClosedPosition { read_at, row })
        };
        let (closed, freshness) =
            self.state.cache.get(Rpc::GetPosition, user_id, CLOSED_POSITION, &position_id.to_string(), load).await?;
        let unavailable = Valuation::Unavailable { reason: "the position is closed".into() };
        let response = pb::GetPositionResponse {
            position: Some(position(&closed.row, unavailable, &[], &market)),
            as_of: Some(ts(closed.read_at)),
            prices_as_of: opt_ts(market.read_at),
        };
        Ok(cached(response, freshness))
    }
}

/// A user's book as cached, with each open position's price-independent fields already encoded (all but
/// `current_price`, `current_price_time` and the P&L fields), so serving a list encodes only what prices change.
#[derive(Debug)]
pub struct BookView {
    /// The book.
    pub book: Book,
    /// By position (same order as `book.positions`): the encoded price-independent fields.
    encoded: Vec<Vec<u8>>,
}

impl BookView {
    fn new(book: Book) -> Self {
        let encoded = book.positions.iter().map(|row| fixed_fields(row, &book.divergences).encode_to_vec()).collect();
        BookView { book, encoded }
    }
}

impl crate::cache::CacheValue for BookView {
    fn encode(&self) -> Vec<u8> {
        crate::cache::CacheValue::encode(&self.book)
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        <Book as crate::cache::CacheValue>::decode(bytes).map(BookView::new)
    }
}

impl AppState {
    /// The user's book, from cache or PostgreSQL (one statement).
    pub(super) async fn book(
        &self,
        rpc: Rpc,
        user_id: Uuid,
    ) -> Result<(Arc<BookView>, crate::cache::Freshness), ApiError> {
        let db = self.db.clone();
        let load = move || async move { load_book(db, user_id).await.map(BookView::new) };
        self.cache.get(rpc, user_id, BOOK, "", load).await
    }
}

/// `PositionsService.ListOpenPositions`, answered as bytes: each position is its cached price-independent
/// fields followed by the ones valued now.
pub(super) async fn serve_list(
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

/// The latest price of a position: the newer of the broker's price at the last sync and the latest quote on
/// the side that would close it (bid for a buy, ask for a sell).
fn latest_price(row: &PositionRow, market: &MarketSnapshot) -> (Decimal, DateTime<Utc>) {
    match market.quotes.get(&row.symbol) {
        Some(q) if q.quote_time > row.current_price_time => {
            let price = match row.side {
                Side::Buy => q.bid,
                Side::Sell => q.ask,
            };
            (price, q.quote_time)
        }
        _ => (row.current_price, row.current_price_time),
    }
}

/// Values one open position in the account currency against the market snapshot.
fn valuation(row: &PositionRow, market: &MarketSnapshot, currency: &str) -> Valuation {
    if currency.is_empty() {
        return Valuation::Unavailable { reason: "the account currency is not known yet".into() };
    }
    let (current_price, _) = latest_price(row, market);
    let figures = PositionFigures {
        side: row.side,
        volume: row.volume,
        entry_price: row.open_price,
        current_price,
        broker_profit: row.profit,
        swap: row.swap,
        commission: row.commission,
    };
    let instrument = market
        .instruments
        .get(&row.symbol)
        .map(|i| InstrumentSpec { contract_size: i.contract_size, quote_currency: i.quote_currency.clone() });
    pnl::value_position(&figures, instrument.as_ref(), currency, &market.rates)
}

/// A position with its valuation and open divergences.
fn position(row: &PositionRow, v: Valuation, divergences: &[DivergenceRow], market: &MarketSnapshot) -> pb::Position {
    let priced = priced_fields(row, v, market);
    pb::Position {
        current_price: priced.current_price,
        current_price_time: priced.current_price_time,
        unrealized_pnl: priced.unrealized_pnl,
        pnl_source: priced.pnl_source,
        pnl_unavailable_reason: priced.pnl_unavailable_reason,
        unrealized_pnl_percent: priced.unrealized_pnl_percent,
        ..fixed_fields(row, divergences)
    }
}

/// The fields of a position that prices change (every other field default).
fn priced_fields(row: &PositionRow, v: Valuation, market: &MarketSnapshot) -> pb::Position {
    let (current_price, current_price_time) =
        if row.closed.is_some() { (row.current_price, row.current_price_time) } else { latest_price(row, market) };
    let (unrealized_pnl, pnl_source, reason, percent) = match v {
        Valuation::Known { pnl, source, percent } => {
            let source = match source {
                PnlSource::BrokerReported => pb::PnlSource::BrokerReported,
                PnlSource::Computed => pb::PnlSource::Computed,
            };
            (Some(pnl), source, String::new(), percent)
        }
        Valuation::Unavailable { reason } => (None, pb::PnlSource::Unavailable, reason, None),
    };
    pb::Position {
        current_price: current_price.to_string(),
        current_price_time: Some(ts(current_price_time)),
        unrealized_pnl: dec(unrealized_pnl),
        pnl_source: pnl_source.into(),
        pnl_unavailable_reason: reason,
        unrealized_pnl_percent: dec(percent),
        ..Default::default()
    }
}

/// The fields of a position that prices do not change (the priced ones default).
fn fixed_fields(row: &PositionRow, divergences: &[DivergenceRow]) -> pb::Position {
    let open_divergences =
        divergences.iter().filter(|d| d.position_id == Some(row.position_id)).map(encode::divergence).collect();
    let (status, closed_time, close_reason) = match row.closed {
        None => (pb::PositionStatus::Open, None, pb::CloseReason::Unspecified),
        Some((at, reason)) => (pb::PositionStatus::Closed, Some(ts(at)), encode::close_reason(reason)),
    };
    pb::Position {
        position_id: row.position_id.to_string(),
        user_id: row.user_id.to_string(),
        position_identifier: row.position_identifier.clone(),
        ticket: row.ticket.clone(),
        symbol: row.symbol.clone(),
        side: encode::side(row.side).into(),
        volume: row.volume.to_string(),
        entry_price: row.open_price.to_string(),
        entry_time: Some(ts(row.open_time)),
        take_profit: dec(row.take_profit),
        stop_loss: dec(row.stop_loss),
        matched: row.matched,
        platform_trade_id: text(row.platform_trade_id.as_ref()),
        open_divergences,
        status: status.into(),
        closed_time,
        close_reason: close_reason.into(),
        swap: dec(row.swap),
        commission: dec(row.commission),
        broker_profit: dec(row.profit),
        last_seen_time: opt_ts(Some(row.last_seen_at)),
        ..Default::default()
    }
}
