//! `trading.v1.GuardsService`: drawdown and market guards, and quote ingest.

use chrono::{DateTime, Utc};
use tonic::Request;
use uuid::Uuid;

use super::decode::{self, caller, target_user};
use super::encode::{self, dec, opt_ts, ts};
use super::{AppState, RpcResult, cached};
use crate::cache::Rpc;
use crate::config::Rules;
use crate::domain::Symbol;
use crate::domain::drawdown::{self, DrawdownLevel};
use crate::domain::market::{self, AlertSeverity, MarketAlertKind};
use crate::error::ApiError;
use crate::pb;
use crate::pb::guards_service_server::GuardsService;
use crate::storage::{self, AccountRow};

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

    /// The drawdown block, with its level as a domain value for the combined verdict.
    async fn drawdown(
        &self,
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<(DrawdownLevel, pb::DrawdownStatus), ApiError> {
        let account = storage::accounts::get(&self.state.pool, user_id).await?;
        let level =
            account.as_ref().filter(|a| a.equity.is_some()).map_or(DrawdownLevel::Unknown, |a| a.drawdown_level);
        Ok((level, drawdown_status(account.as_ref(), &self.state.rules, now)))
    }

    /// Both guards from PostgreSQL, with the combined verdict.
    async fn load_guard_status(&self, user_id: Uuid) -> Result<pb::GetGuardStatusResponse, ApiError> {
        let now = Utc::now();
        let ((level, drawdown), alerts) =
            tokio::try_join!(self.drawdown(user_id, now), self.alerts(user_id, None, now))?;
        let status = market::system_status(level, alerts.iter().map(|(severity, _)| *severity));
        let any_close = drawdown.should_close_all || alerts.iter().any(|(_, a)| a.should_close_positions);
        Ok(pb::GetGuardStatusResponse {
            system_status: encode::system_status(status).into(),
            drawdown: Some(drawdown),
            market_alerts: alerts.into_iter().map(|(_, a)| a).collect(),
            any_positions_should_close: any_close,
            evaluated_time: Some(ts(now)),
            as_of: Some(ts(now)),
        })
    }

    /// Active alerts for held symbols (stored gap/spread alerts plus stale quotes), most severe first, each with
    /// its severity as a domain value.
    async fn alerts(
        &self,
        user_id: Uuid,
        only: Option<&Symbol>,
        now: DateTime<Utc>,
    ) -> Result<Vec<(AlertSeverity, pb::MarketAlert)>, ApiError> {
        let pool = &self.state.pool;
        let mut held = storage::market::held_symbols(pool, user_id).await?;
        if let Some(symbol) = only {
            held.retain(|s| s == symbol.as_str());
        }
        let (rows, snapshot) =
            tokio::try_join!(storage::market::active_alerts(pool, &held), storage::market::snapshot(pool))?;
        let rules = &self.state.rules.market;
        let mut alerts: Vec<(AlertSeverity, pb::MarketAlert)> =
            rows.into_iter().map(|a| (a.severity, encode::market_alert(a, rules))).collect();
        for symbol in &held {
            let last = snapshot.quotes.get(symbol).map(|q| q.quote_time);
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
                    symbol: symbol.clone(),
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
        Ok(alerts)
    }
}

#[tonic::async_trait]
impl GuardsService for GuardsApi {
    async fn get_guard_status(
        &self,
        request: Request<pb::GetGuardStatusRequest>,
    ) -> RpcResult<pb::GetGuardStatusResponse> {
        let caller = caller(&request)?;
        let user_id = target_user(&caller, "user_id", &request.get_ref().user_id)?;
        let (response, freshness) =
            self.state.cache.get_or_load(Rpc::GetGuardStatus, user_id, "", || self.load_guard_status(user_id)).await?;
        Ok(cached(response, freshness))
    }

    async fn get_drawdown_status(
        &self,
        request: Request<pb::GetDrawdownStatusRequest>,
    ) -> RpcResult<pb::GetDrawdownStatusResponse> {
        let caller = caller(&request)?;
        let user_id = target_user(&caller, "user_id", &request.get_ref().user_id)?;
        let load = || async move {
            let now = Utc::now();
            let (_, drawdown) = self.drawdown(user_id, now).await?;
            Ok(pb::GetDrawdownStatusResponse { drawdown: Some(drawdown), as_of: Some(ts(now)) })
        };
        let (response, freshness) = self.state.cache.get_or_load(Rpc::GetDrawdownStatus, user_id, "", load).await?;
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
        let load = || async {
            let now = Utc::now();
            let alerts = self.alerts(user_id, symbol.as_ref(), now).await?;
            Ok(pb::ListMarketAlertsResponse {
                any_positions_should_close: alerts.iter().any(|(_, a)| a.should_close_positions),
                alerts: alerts.into_iter().map(|(_, a)| a).collect(),
                as_of: Some(ts(now)),
            })
        };
        let shape = symbol.as_ref().map_or("", |s| s.as_str()).to_owned();
        let (response, freshness) = self.state.cache.get_or_load(Rpc::ListMarketAlerts, user_id, &shape, load).await?;
        Ok(cached(response, freshness))
    }

    async fn submit_quotes(&self, request: Request<pb::SubmitQuotesRequest>) -> RpcResult<pb::SubmitQuotesResponse> {
        super::ingest::submit_quotes(&self.state, request).await
    }
}

/// The drawdown block for an account (UNKNOWN when it has no equity yet).
fn drawdown_status(account: Option<&AccountRow>, rules: &Rules, now: DateTime<Utc>) -> pb::DrawdownStatus {
    let t = account.map_or_else(|| rules.drawdown.clone(), |a| a.thresholds(&rules.drawdown));
    let mut status = pb::DrawdownStatus {
        level: pb::DrawdownLevel::Unknown.into(),
        warning_threshold_percent: t.warning_pct.to_string(),
        critical_threshold_percent: t.max_pct.to_string(),
        min_equity: t.min_equity.to_string(),
        ..Default::default()
    };
    let Some(account) = account else { return status };
    let (Some(equity), Some(peak)) = (account.equity, account.peak_equity) else { return status };
    let level = account.drawdown_level;
    status.level = encode::drawdown_level(level).into();
    status.equity = equity.to_string();
    status.peak_equity = peak.to_string();
    status.drawdown_percent = dec(drawdown::drawdown_pct(peak, equity));
    status.should_close_all = level == DrawdownLevel::Critical;
    status.time_to_liquidation = match (level, account.drawdown_level_since) {
        (DrawdownLevel::Critical, Some(since)) => Some(encode::duration(drawdown::time_to_liquidation(since, now, &t))),
        _ => None,
    };
    status.level_since_time = opt_ts(account.drawdown_level_since);
    status.equity_time = opt_ts(account.equity_time);
    status.account_currency = account.currency.clone().unwrap_or_default();
    status
}
