//! `trading.v1.GuardsService`: the drawdown and market guards, their watch stream, and quote ingest. Each RPC is
//! listed here; what it does is in the module named beside it.
//!
//! The guards are judged when the response is served: the drawdown block from the user's cached book (its
//! countdown against the server's clock now), the market alerts from the replica-local market snapshot for the
//! symbols the book holds (stale quotes judged now). So nothing time- or price-dependent is ever frozen by the
//! cache.

use chrono::Utc;
use tonic::{Request, Response};

use super::decode::{caller, target_user};
use super::encode::ts;
use super::stream::Delivery;
use super::{AppState, RpcResult, cached};
use crate::cache::Rpc;
use crate::pb;
use crate::pb::guards_service_server::GuardsService;

mod alerts;
mod quotes;
mod status;
mod watch;

pub use quotes::MAX_QUOTES_PER_BATCH;

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
    type WatchGuardStatusStream = Delivery<pb::WatchGuardStatusResponse>;

    /// Both guards of the user's cached book, judged now ([`status::guard_status`]).
    async fn get_guard_status(
        &self,
        request: Request<pb::GetGuardStatusRequest>,
    ) -> RpcResult<pb::GetGuardStatusResponse> {
        let caller = caller(&request)?;
        let user_id = target_user(&caller, "user_id", &request.get_ref().user_id)?;
        let (view, freshness) = self.state.book(Rpc::GetGuardStatus, user_id).await?;
        let response = status::guard_status(&view.book, &self.state.market.current(), &self.state.rules, Utc::now());
        Ok(cached(response, freshness))
    }

    /// The drawdown block alone ([`status::drawdown_block`]).
    async fn get_drawdown_status(
        &self,
        request: Request<pb::GetDrawdownStatusRequest>,
    ) -> RpcResult<pb::GetDrawdownStatusResponse> {
        let caller = caller(&request)?;
        let user_id = target_user(&caller, "user_id", &request.get_ref().user_id)?;
        let (view, freshness) = self.state.book(Rpc::GetDrawdownStatus, user_id).await?;
        let book = &view.book;
        let (_, drawdown) = status::drawdown_block(book.account.as_ref(), &self.state.rules, Utc::now());
        let response = pb::GetDrawdownStatusResponse { drawdown: Some(drawdown), as_of: Some(ts(book.read_at)) };
        Ok(cached(response, freshness))
    }

    async fn list_market_alerts(
        &self,
        request: Request<pb::ListMarketAlertsRequest>,
    ) -> RpcResult<pb::ListMarketAlertsResponse> {
        alerts::list(&self.state, request).await
    }

    async fn watch_guard_status(
        &self,
        request: Request<pb::WatchGuardStatusRequest>,
    ) -> RpcResult<Self::WatchGuardStatusStream> {
        Ok(Response::new(watch::watch_guards(&self.state, request).await?))
    }

    async fn submit_quotes(&self, request: Request<pb::SubmitQuotesRequest>) -> RpcResult<pb::SubmitQuotesResponse> {
        quotes::submit_quotes(&self.state, request).await
    }
}
