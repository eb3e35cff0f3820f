//! `GuardsService.SubmitQuotes`: decode a batch of quotes and candle closes (every invalid field at once),
//! record them, raise and clear gap/spread alerts, refresh this replica's market snapshot and invalidate the
//! holders whose alerts changed. Needs the `trading:sync:write` scope.

use chrono::Utc;
use tonic::{Request, Response};

use crate::auth::Scope;
use crate::domain::bounds::PRICE;
use crate::pb;
use crate::services::decode::{self, caller, require_scope};
use crate::services::encode;
use crate::services::error::Precondition;
use crate::services::violations::Violations;
use crate::services::{ApiError, AppState, RpcResult};
use crate::storage::quotes::{self, NewCandleClose, NewQuote, QuotesOutcome};

/// Most quotes, and most candle closes, in one batch (stated in the proto).
pub const MAX_QUOTES_PER_BATCH: usize = 10_000;

/// `GuardsService.SubmitQuotes`.
pub async fn submit_quotes(
    state: &AppState,
    request: Request<pb::SubmitQuotesRequest>,
) -> RpcResult<pb::SubmitQuotesResponse> {
    let caller = caller(&request)?;
    require_scope(&caller, Scope::SyncWrite)?;
    let req = request.get_ref();
    let now = Utc::now();
    let mut v = Violations::default();
    if req.quotes.is_empty() && req.candle_closes.is_empty() {
        v.add("quotes", "the batch is empty: send quotes, candle_closes or both");
    }
    v.at_most("quotes", req.quotes.len(), MAX_QUOTES_PER_BATCH);
    v.at_most("candle_closes", req.candle_closes.len(), MAX_QUOTES_PER_BATCH);
    // Do not decode an oversized batch entry by entry.
    v.finish()?;
    let quotes: Vec<Option<NewQuote>> = req
        .quotes
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let f = |name: &str| format!("quotes[{i}].{name}");
            let symbol = v.take(decode::symbol(&f("symbol"), &q.symbol));
            let bid = v.decimal(&f("bid"), &q.bid, &PRICE);
            let ask = v.decimal(&f("ask"), &q.ask, &PRICE);
            if let (Some(b), Some(a)) = (bid, ask)
                && a < b
            {
                v.add(f("ask"), format!("ask {a} is below bid {b}"));
                return None;
            }
            let quote_time = v.reported_time(&f("quote_time"), q.quote_time.as_ref(), now);
            Some(NewQuote { symbol: symbol?.as_str().to_owned(), bid: bid?, ask: ask?, quote_time: quote_time? })
        })
        .collect();
    let candles: Vec<Option<NewCandleClose>> = req
        .candle_closes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let f = |name: &str| format!("candle_closes[{i}].{name}");
            let symbol = v.take(decode::symbol(&f("symbol"), &c.symbol));
            let previous_close = v.decimal(&f("previous_close"), &c.previous_close, &PRICE);
            let open = v.decimal(&f("open"), &c.open, &PRICE);
            let open_time = v.reported_time(&f("open_time"), c.open_time.as_ref(), now);
            Some(NewCandleClose {
                symbol: symbol?.as_str().to_owned(),
                previous_close: previous_close?,
                open: open?,
                open_time: open_time?,
            })
        })
        .collect();
    v.finish()?;
    let quotes: Vec<NewQuote> = quotes.into_iter().flatten().collect();
    let candles: Vec<NewCandleClose> = candles.into_iter().flatten().collect();

    let db = &state.db;
    let pool = db.pool().map_err(ApiError::from)?;
    let outcome = db
        .run("quotes.record", quotes::record(pool, &quotes, &candles, &state.rules.market))
        .await
        .map_err(ApiError::from)?;
    let (raised, cleared) = match outcome {
        QuotesOutcome::Recorded { raised, cleared, holders } => {
            // Before acknowledging: this replica's reads value positions with the new prices and alerts at once
            // (other replicas within their market refresh interval), and the holders of a symbol whose alert
            // changed lose their cached status (new events in their logs). Nothing else is invalidated.
            if let Err(e) = state.market.refresh().await {
                tracing::warn!(error = %crate::telemetry::error_chain(&e), "quotes committed but the market snapshot could not be re-read");
            }
            state.cache.invalidate(&holders).await;
            for alert in &raised {
                state.metrics.alert(alert.kind.as_str(), alert.severity.as_str());
            }
            (raised, cleared)
        }
        QuotesOutcome::UnknownSymbol(symbol) => {
            let field = quotes
                .iter()
                .position(|q| q.symbol == symbol)
                .map(|i| format!("quotes[{i}].symbol"))
                .or_else(|| {
                    candles.iter().position(|c| c.symbol == symbol).map(|i| format!("candle_closes[{i}].symbol"))
                })
                .unwrap_or_else(|| "quotes".into());
            return Err(ApiError::FailedPrecondition(Precondition::UnknownSymbol { symbol, field }).into());
        }
    };
    let rules = &state.rules.market;
    Ok(Response::new(pb::SubmitQuotesResponse {
        accepted_quotes: i32::try_from(quotes.len()).unwrap_or(i32::MAX),
        accepted_candle_closes: i32::try_from(candles.len()).unwrap_or(i32::MAX),
        raised_alerts: raised.into_iter().map(|a| encode::market_alert(a, rules)).collect(),
        cleared_alerts_count: i32::try_from(cleared).unwrap_or(i32::MAX),
    }))
}
