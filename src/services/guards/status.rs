//! The guard status of a book at a time: the drawdown block and the market alerts, combined into the system
//! status and "close everything" (what GetGuardStatus answers and WatchGuardStatus sends).

use chrono::{DateTime, Utc};

use super::alerts::alerts;
use crate::domain::Rules;
use crate::domain::drawdown::{self, DrawdownLevel};
use crate::domain::market;
use crate::pb;
use crate::services::encode::{self, dec, opt_ts, ts};
use crate::storage::{AccountRow, Book, MarketSnapshot};

/// Both guards of a book, judged at `now` against `market` (what GetGuardStatus answers).
pub fn guard_status(
    book: &Book,
    market: &MarketSnapshot,
    rules: &Rules,
    now: DateTime<Utc>,
) -> pb::GetGuardStatusResponse {
    let (level, drawdown) = drawdown_block(book.account.as_ref(), rules, now);
    let alerts = alerts(book, market, None, rules, now);
    let status = market::system_status(level, alerts.iter().map(|(severity, _)| *severity));
    let any_close = drawdown.should_close_all || alerts.iter().any(|(_, a)| a.should_close_positions);
    pb::GetGuardStatusResponse {
        system_status: encode::system_status(status).into(),
        drawdown: Some(drawdown),
        market_alerts: alerts.into_iter().map(|(_, a)| a).collect(),
        any_positions_should_close: any_close,
        evaluated_time: Some(ts(now)),
        as_of: Some(ts(book.read_at)),
        prices_as_of: opt_ts(market.read_at),
    }
}

/// The drawdown block for an account at `now` (UNKNOWN when it has no equity yet), with its level as a domain
/// value for the combined verdict.
pub fn drawdown_block(
    account: Option<&AccountRow>,
    rules: &Rules,
    now: DateTime<Utc>,
) -> (DrawdownLevel, pb::DrawdownStatus) {
    let t = account.map_or_else(|| rules.drawdown.clone(), |a| a.thresholds(&rules.drawdown));
    let mut status = pb::DrawdownStatus {
        level: pb::DrawdownLevel::Unknown.into(),
        warning_threshold_percent: t.warning_pct.to_string(),
        critical_threshold_percent: t.max_pct.to_string(),
        min_equity: t.min_equity.to_string(),
        ..Default::default()
    };
    let Some(account) = account else { return (DrawdownLevel::Unknown, status) };
    let (Some(equity), Some(peak)) = (account.equity, account.peak_equity) else {
        return (DrawdownLevel::Unknown, status);
    };
    let level = account.drawdown_level;
    status.level = encode::drawdown_level(level).into();
    status.equity = equity.to_string();
    status.peak_equity = peak.to_string();
    status.drawdown_percent = dec(drawdown::drawdown_pct(peak, equity));
    status.should_close_all = level == DrawdownLevel::Critical;
    if let (DrawdownLevel::Critical, Some(since)) = (level, account.drawdown_level_since) {
        status.time_to_liquidation = Some(encode::duration(drawdown::time_to_liquidation(since, now, &t)));
        status.liquidation_time = Some(ts(drawdown::liquidation_time(since, &t)));
    }
    status.level_since_time = opt_ts(account.drawdown_level_since);
    status.equity_time = opt_ts(account.equity_time);
    status.account_currency = account.currency.clone().unwrap_or_default();
    (level, status)
}
