//! A position's fields: the ones prices change (valued against the market snapshot when served) and the ones
//! they do not (encoded once per cached book).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::domain::Side;
use crate::domain::pnl::{self, InstrumentSpec, PnlSource, PositionFigures, Valuation};
use crate::pb;
use crate::services::encode::{self, dec, opt_ts, text, ts};
use crate::storage::{DivergenceRow, MarketSnapshot, PositionRow};

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
pub fn valuation(row: &PositionRow, market: &MarketSnapshot, currency: &str) -> Valuation {
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
pub fn position(
    row: &PositionRow,
    v: Valuation,
    divergences: &[DivergenceRow],
    market: &MarketSnapshot,
) -> pb::Position {
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
pub fn priced_fields(row: &PositionRow, v: Valuation, market: &MarketSnapshot) -> pb::Position {
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
pub fn fixed_fields(row: &PositionRow, divergences: &[DivergenceRow]) -> pb::Position {
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
