//! `trading.v1.GuardsService`: drawdown and market guards, and quote ingest.
//!
//! The guards are judged when the response is served: the drawdown block from the user's cached book (its
//! countdown against the server's clock now), the market alerts from the replica-local market snapshot for the
//! symbols the book holds (stale quotes judged now). So nothing time- or price-dependent is ever frozen by the
//! cache.

use chrono::{DateTime, Utc};
use tonic::Request;

use super::decode::{self, caller, target_user};
use super::encode::{self, dec, opt_ts, ts};
use super::paging::{self, Cursor};
use super::{AppState, RpcResult, cached};
use crate::cache::Rpc;
use crate::config::Rules;
use crate::domain::drawdown::{self, DrawdownLevel};
use crate::domain::market::{self, AlertSeverity, MarketAlertKind};
use crate::pb;
use crate::pb::guards_service_server::GuardsService;
use crate::storage::{AccountRow, Book, MarketSnapshot};

/// Default and maximum of ListMarketAlerts' `page_size`: above what one account can have today (three kinds per
/// held symbol), so a caller that does not page still gets every alert.
const ALERT_PAGE: (u32, u32) = (1000, 1000);

/// The GuardsService implementation.
#[derive(Debug, Clone)]
pub struct GuardsApi {
    state: AppState,
}

impl GuardsApi {
    /// A handler over shared state.
    pub fn new(state: AppState) -> Self {
        GuardsApi { state }
    }
}

#[tonic::async_trait]
impl GuardsService for GuardsApi {
    type WatchGuardStatusStream = super::watch::Delivery<pb::WatchGuardStatusResponse>;

    async fn watch_guard_status(
        &self,
        request: Request<pb::WatchGuardStatusRequest>,
    ) -> RpcResult<Self::WatchGuardStatusStream> {
        Ok(tonic::Response::new(super::watch::watch_guards(&self.state, request).await?))
    }

    async fn get_guard_status(
        &self,
        request: Request<pb::GetGuardStatusRequest>,
    ) -> RpcResult<pb::GetGuardStatusResponse> {
        let caller = caller(&request)?;
        let user_id = target_user(&caller, "user_id", &request.get_ref().user_id)?;
        let (view, freshness) = self.state.book(Rpc::GetGuardStatus, user_id).await?;
        let response = guard_status(&view.book, &self.state.market.current(), &self.state.rules, Utc::now());
        Ok(cached(response, freshness))
    }

    async fn get_drawdown_status(
        &self,
        request: Request<pb::GetDrawdownStatusRequest>,
    ) -> RpcResult<pb::GetDrawdownStatusResponse> {
        let caller = caller(&request)?;
        let user_id = target_user(&caller, "user_id", &request.get_ref().user_id)?;
        let (view, freshness) = self.state.book(Rpc::GetDrawdownStatus, user_id).await?;
        let book = &view.book;
        let (_, drawdown) = drawdown_block(book.account.as_ref(), &self.state.rules, Utc::now());
        let response = pb::GetDrawdownStatusResponse { drawdown: Some(drawdown), as_of: Some(ts(book.read_at)) };
        Ok(cached(response, freshness))
    }

    async fn list_market_alerts(
        &self,
        request: Request<pb::ListMarketAlertsRequest>,
    ) -> RpcResult<pb::ListMarketAlertsResponse> {
        let caller = caller(&request)?;
        let req = request.get_ref();
        let user_id = target_user(&caller, "user_id", &req.user_id)?;
        let symbol = decode::optional_symbol("symbol", &req.symbol)?;
        let size = decode::page_size("page_size", req.page_size, ALERT_PAGE.0, ALERT_PAGE.1)? as usize;
        let filters = paging::fingerprint(&[&user_id.to_string(), symbol.as_ref().map_or("*", |s| s.as_str())]);
        let after = paging::decode("page_token", &req.page_token, filters)?;
        let (view, freshness) = self.state.book(Rpc::ListMarketAlerts, user_id).await?;
        let book = &view.book;
        let market = self.state.market.current();
        let alerts = alerts(book, &market, symbol.as_ref().map(|s| s.as_str()), &self.state.rules, Utc::now());
        let any_positions_should_close = alerts.iter().any(|(_, a)| a.should_close_positions);
        // Keyset paging over the sort key (the list is judged anew at every read, so offsets would shift).
        let mut page: Vec<(AlertSeverity, pb::MarketAlert)> = alerts
            .into_iter()
            .skip_while(|(severity, a)| after.as_ref().is_some_and(|c| alert_key(*severity, a) <= c.key))
            .take(size + 1)
            .collect();
        let next_page_token = if page.len() > size {
            page.truncate(size);
            page.last()
                .map(|(severity, a)| {
                    paging::encode(filters, &Cursor { time: DateTime::UNIX_EPOCH, key: alert_key(*severity, a) })
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        let response = pb::ListMarketAlertsResponse {
            any_positions_should_close,
            alerts: page.into_iter().map(|(_, a)| a).collect(),
            as_of: Some(ts(book.read_at)),
            prices_as_of: opt_ts(market.read_at),
            next_page_token,
        };
        Ok(cached(response, freshness))
    }

    async fn submit_quotes(&self, request: Request<pb::SubmitQuotesRequest>) -> RpcResult<pb::SubmitQuotesResponse> {
        super::ingest::submit_quotes(&self.state, request).await
    }
}

/// Both guards of a book, judged at `now` against `market` (what GetGuardStatus answers).
pub(super) fn guard_status(
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

/// The sort key of an alert in [`alerts`]' order, as text that sorts the same way: most severe first, then
/// symbol, then kind.
fn alert_key(severity: AlertSeverity, alert: &pb::MarketAlert) -> String {
    let rank = match severity {
        AlertSeverity::Critical => 0,
        AlertSeverity::Warning => 1,
    };
    // Symbols are at most 20 characters of A-Z 0-9 . _ (all above the space used as padding).
    format!("{rank}{:<20}{:03}", alert.symbol, alert.kind)
}

/// Active alerts for the held symbols (`only` one of them, if given): stored gap/spread alerts from the market
/// snapshot plus stale quotes judged at `now`; most severe first, each with its severity as a domain value.
fn alerts(
    book: &Book,
    market: &MarketSnapshot,
    only: Option<&str>,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Vec<(AlertSeverity, pb::MarketAlert)> {
    let mut held = book.held_symbols();
    if let Some(symbol) = only {
        held.retain(|s| *s == symbol);
    }
    let rules = &rules.market;
    let mut alerts: Vec<(AlertSeverity, pb::MarketAlert)> =
        market.alerts_for(&held).map(|a| (a.severity, encode::market_alert(a.clone(), rules))).collect();
    for symbol in &held {
        let last = market.quotes.get(*symbol).map(|q| q.quote_time);
        if !market::quote_is_stale(last, now, rules) {
            continue;
        }
        let severity = AlertSeverity::Warning;
        let message = match last {
            Some(at) => format!("no quote for {symbol} for {} s", now.signed_duration_since(at).num_seconds()),
            None => format!("no quote ever received for {symbol}"),
        };
        alerts.push((
            severity,
            pb::MarketAlert {
                alert_id: String::new(),
                symbol: (*symbol).to_owned(),
                kind: encode::alert_kind(MarketAlertKind::StaleQuote).into(),
                severity: encode::alert_severity(severity).into(),
                value_percent: String::new(),
                threshold_percent: String::new(),
                quote_age: last.map(|at| encode::duration(now.signed_duration_since(at))),
                should_close_positions: market::should_close(severity, rules),
                raised_time: last.map(|at| ts(market::stale_since(at, rules))),
                message,
                observed_time: last.map(ts),
            },
        ));
    }
    // Most severe first, then by symbol for a stable order.
    alerts.sort_by(|(sa, a), (sb, b)| sb.cmp(sa).then_with(|| a.symbol.cmp(&b.symbol)).then(a.kind.cmp(&b.kind)));
    alerts
}

/// The drawdown block for an account at `now` (UNKNOWN when it has no equity yet), with its level as a domain
/// value for the combined verdict.
fn drawdown_block(
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
