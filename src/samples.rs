//! Request messages built the way a trading backend sends them: one set of builders for the integration tests,
//! the demo and the load generators, instead of a copy in each.
//!
//! Each builder fills what a real caller fills and leaves the rest at its default; adjust a message with
//! struct-update syntax (`pb::BrokerPosition { take_profit: "2400".into(), ..broker(...) }`) or the small
//! extension traits below ([`BrokerExt`], [`Protect`]). Times are "now" unless the `_at` variant takes one.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use crate::pb;

/// A time as the optional protobuf `Timestamp` every message field is.
pub fn ts(t: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(pb::timestamp(t))
}

/// A broker position opened an hour ago, ticket `T<id>`, with no TP/SL and no broker-reported P&L.
pub fn broker(id: &str, symbol: &str, side: pb::Side, volume: &str, open: &str, current: &str) -> pb::BrokerPosition {
    pb::BrokerPosition {
        position_identifier: id.into(),
        ticket: format!("T{id}"),
        symbol: symbol.into(),
        side: side.into(),
        volume: volume.into(),
        open_price: open.into(),
        current_price: current.into(),
        open_time: ts(Utc::now() - Duration::hours(1)),
        ..Default::default()
    }
}

/// A platform position, knowing the broker's identifier when `id` is not empty.
pub fn platform(
    trade: &str,
    symbol: &str,
    side: pb::Side,
    volume: &str,
    entry: &str,
    id: &str,
) -> pb::PlatformPosition {
    pb::PlatformPosition {
        platform_trade_id: trade.into(),
        symbol: symbol.into(),
        side: side.into(),
        volume: volume.into(),
        entry_price: entry.into(),
        position_identifier: id.into(),
        ..Default::default()
    }
}

/// What a broker position may carry besides its core fields.
pub trait BrokerExt {
    /// Opened at `at`.
    fn opened(self, at: DateTime<Utc>) -> Self;
    /// With the broker's own swap, commission and profit.
    fn reported(self, swap: &str, commission: &str, profit: &str) -> Self;
}

impl BrokerExt for pb::BrokerPosition {
    fn opened(self, at: DateTime<Utc>) -> Self {
        pb::BrokerPosition { open_time: ts(at), ..self }
    }

    fn reported(self, swap: &str, commission: &str, profit: &str) -> Self {
        pb::BrokerPosition { swap: swap.into(), commission: commission.into(), profit: profit.into(), ..self }
    }
}

/// Take-profit and stop-loss levels, on either side's position (empty: none).
pub trait Protect {
    /// With these levels.
    fn protected(self, take_profit: &str, stop_loss: &str) -> Self;
}

impl Protect for pb::BrokerPosition {
    fn protected(self, take_profit: &str, stop_loss: &str) -> Self {
        pb::BrokerPosition { take_profit: take_profit.into(), stop_loss: stop_loss.into(), ..self }
    }
}

impl Protect for pb::PlatformPosition {
    fn protected(self, take_profit: &str, stop_loss: &str) -> Self {
        pb::PlatformPosition { take_profit: take_profit.into(), stop_loss: stop_loss.into(), ..self }
    }
}

/// An account as the broker reports it at `at`.
pub fn account(currency: &str, balance: &str, equity: &str, margin: &str, at: DateTime<Utc>) -> pb::AccountSnapshot {
    pb::AccountSnapshot {
        balance: balance.into(),
        equity: equity.into(),
        margin: margin.into(),
        currency: currency.into(),
        broker_time: ts(at),
    }
}

/// A successful sync of `user` that ran for `took` and finished at `finished`, with a fresh request id.
pub fn snapshot_sync(
    user: Uuid,
    finished: DateTime<Utc>,
    took: Duration,
    account: pb::AccountSnapshot,
    brokers: Vec<pb::BrokerPosition>,
    platforms: Vec<pb::PlatformPosition>,
) -> pb::SubmitBrokerSyncRequest {
    let snapshot =
        pb::SyncSnapshot { account: Some(account), broker_positions: brokers, platform_positions: platforms };
    sync_request(user, finished, took, pb::submit_broker_sync_request::Result::Snapshot(snapshot))
}

/// A sync of `user` with this result, finished at `finished` after `took`, with a fresh request id.
fn sync_request(
    user: Uuid,
    finished: DateTime<Utc>,
    took: Duration,
    result: pb::submit_broker_sync_request::Result,
) -> pb::SubmitBrokerSyncRequest {
    pb::SubmitBrokerSyncRequest {
        request_id: Uuid::new_v4().to_string(),
        user_id: user.to_string(),
        started_time: ts(finished - took),
        finished_time: ts(finished),
        result: Some(result),
    }
}

/// A successful sync for `user` with this equity (balance = equity, no margin, GBP), finished just now.
pub fn sync(
    user: Uuid,
    equity: &str,
    brokers: Vec<pb::BrokerPosition>,
    platforms: Vec<pb::PlatformPosition>,
) -> pb::SubmitBrokerSyncRequest {
    sync_in(user, "GBP", equity, brokers, platforms)
}

/// A successful sync in a given account currency, finished just now.
pub fn sync_in(
    user: Uuid,
    currency: &str,
    equity: &str,
    brokers: Vec<pb::BrokerPosition>,
    platforms: Vec<pb::PlatformPosition>,
) -> pb::SubmitBrokerSyncRequest {
    let now = Utc::now();
    let account = account(currency, equity, equity, "0", now);
    snapshot_sync(user, now, Duration::milliseconds(400), account, brokers, platforms)
}

/// A sync of `user` that the backend reports as failed, finished at `finished` after `took`.
pub fn failed_sync_at(
    user: Uuid,
    finished: DateTime<Utc>,
    took: Duration,
    message: &str,
) -> pb::SubmitBrokerSyncRequest {
    let failure = pb::SyncFailure { error_message: message.into() };
    sync_request(user, finished, took, pb::submit_broker_sync_request::Result::Failure(failure))
}

/// A failed sync for `user`, finished just now after 2 s.
pub fn failed_sync(user: Uuid, message: &str) -> pb::SubmitBrokerSyncRequest {
    failed_sync_at(user, Utc::now(), Duration::seconds(2), message)
}

/// A quote stamped `at`.
pub fn quote_at(symbol: &str, bid: &str, ask: &str, at: DateTime<Utc>) -> pb::Quote {
    pb::Quote { symbol: symbol.into(), bid: bid.into(), ask: ask.into(), quote_time: ts(at) }
}

/// A quote stamped now.
pub fn quote(symbol: &str, bid: &str, ask: &str) -> pb::Quote {
    quote_at(symbol, bid, ask, Utc::now())
}

/// A candle close whose candle opened at `at`.
pub fn candle_at(symbol: &str, previous_close: &str, open: &str, at: DateTime<Utc>) -> pb::CandleClose {
    pb::CandleClose {
        symbol: symbol.into(),
        previous_close: previous_close.into(),
        open: open.into(),
        open_time: ts(at),
    }
}

/// A candle close whose candle opened now.
pub fn candle(symbol: &str, previous_close: &str, open: &str) -> pb::CandleClose {
    candle_at(symbol, previous_close, open, Utc::now())
}

/// A batch of quotes only.
pub fn quotes(quotes: Vec<pb::Quote>) -> pb::SubmitQuotesRequest {
    pb::SubmitQuotesRequest { quotes, candle_closes: vec![] }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_built_here_names_its_user_and_spans_its_duration() {
        let user = Uuid::new_v4();
        let finished = Utc::now();
        let sync = snapshot_sync(
            user,
            finished,
            Duration::milliseconds(850),
            account("USD", "1", "1", "0", finished),
            vec![],
            vec![],
        );
        assert_eq!(sync.user_id, user.to_string());
        let (start, end) = (sync.started_time.unwrap(), sync.finished_time.unwrap());
        let took = (end.seconds - start.seconds) * 1_000 + i64::from(end.nanos - start.nanos) / 1_000_000;
        assert_eq!(took, 850);
        assert_ne!(
            sync.request_id,
            snapshot_sync(user, finished, Duration::zero(), account("USD", "1", "1", "0", finished), vec![], vec![])
                .request_id
        );
    }

    #[test]
    fn extensions_set_only_their_fields() {
        let at = Utc::now();
        let p = broker("7", "EURUSD", pb::Side::Buy, "1", "1.1", "1.2")
            .protected("1.3", "1.0")
            .reported("-1", "-2", "3")
            .opened(at);
        assert_eq!((p.take_profit.as_str(), p.stop_loss.as_str(), p.profit.as_str()), ("1.3", "1.0", "3"));
        assert_eq!((p.position_identifier.as_str(), p.ticket.as_str(), p.open_time), ("7", "T7", ts(at)));
    }
}
