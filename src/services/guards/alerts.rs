//! `GuardsService.ListMarketAlerts`: the active alerts for the symbols an account holds, most severe first,
//! judged when served (stored gap/spread alerts from the market snapshot, stale quotes against the clock).

use chrono::{DateTime, Utc};
use tonic::Request;

use crate::cache::Rpc;
use crate::domain::Rules;
use crate::domain::market::{self, AlertSeverity, MarketAlertKind};
use crate::pb;
use crate::services::decode::{self, caller, target_user};
use crate::services::encode::{self, opt_ts, ts};
use crate::services::paging::{self, Cursor};
use crate::services::{AppState, RpcResult, cached};
use crate::storage::{Book, MarketSnapshot};

/// Default and maximum of ListMarketAlerts' `page_size`: above what one account can have today (three kinds per
/// held symbol), so a caller that does not page still gets every alert.
const ALERT_PAGE: (u32, u32) = (1000, 1000);

/// Lists one page of alerts.
pub async fn list(
    state: &AppState,
    request: Request<pb::ListMarketAlertsRequest>,
) -> RpcResult<pb::ListMarketAlertsResponse> {
    let caller = caller(&request)?;
    let req = request.get_ref();
    let user_id = target_user(&caller, "user_id", &req.user_id)?;
    let symbol = decode::optional_symbol("symbol", &req.symbol)?;
    let size = decode::page_size("page_size", req.page_size, ALERT_PAGE.0, ALERT_PAGE.1)? as usize;
    let filters = paging::fingerprint(&[&user_id.to_string(), symbol.as_ref().map_or("*", |s| s.as_str())]);
    let after = paging::decode("page_token", &req.page_token, filters)?;
    let (view, freshness) = state.book(Rpc::ListMarketAlerts, user_id).await?;
    let book = &view.book;
    let market = state.market.current();
    let alerts = alerts(book, &market, symbol.as_ref().map(|s| s.as_str()), &state.rules, Utc::now());
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
pub fn alerts(
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
