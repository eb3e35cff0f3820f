//! `trading.v1.PositionsService`: open positions with unrealized P&L, and single positions. Each RPC is listed
//! here; what it does is in the module named beside it.
//!
//! Both are served from the user's cached book (`book`, which the guards read too) and valued against the replica-local market
//! snapshot when the response is built, so new prices never invalidate anything: the book changes only with
//! the user's syncs. `ListOpenPositions` is served as bytes ([`ListOpenPositionsBytes`]): the server answers
//! its path before the generated trait is reached (see `services::encoded`).

use std::sync::Arc;

use futures::future::BoxFuture;
use tonic::{Request, Response, Status};

use super::encoded::{Encoded, EncodedMethod, WithEncoded};
use super::{AppState, RpcResult};
use crate::pb;
use crate::pb::positions_service_server::{PositionsService, PositionsServiceServer};

mod book;
mod fields;
mod get;
mod list;

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

/// `trading.v1.PositionsService` as served: the generated server, with `ListOpenPositions` answered as bytes
/// by [`ListOpenPositionsBytes`].
pub type PositionsServer = WithEncoded<PositionsServiceServer<PositionsApi>, ListOpenPositionsBytes>;

/// `ListOpenPositions` as served on the wire: each position's cached price-independent bytes followed by the
/// fields valued now ([`list::serve`]).
pub struct ListOpenPositionsBytes;

impl EncodedMethod for ListOpenPositionsBytes {
    const PATH: &'static str = "/trading.v1.PositionsService/ListOpenPositions";
    type Request = pb::ListOpenPositionsRequest;

    fn serve(
        state: Arc<AppState>,
        request: Request<Self::Request>,
    ) -> BoxFuture<'static, Result<Response<Encoded>, Status>> {
        Box::pin(async move { list::serve(&state, request).await })
    }
}

#[tonic::async_trait]
impl PositionsService for PositionsApi {
    /// Served as bytes by [`ListOpenPositionsBytes`]; this decoded form of the same answer is reached only by a
    /// caller of the generated server alone.
    async fn list_open_positions(
        &self,
        request: Request<pb::ListOpenPositionsRequest>,
    ) -> RpcResult<pb::ListOpenPositionsResponse> {
        let response = list::serve(&self.state, request).await?;
        let (metadata, encoded, extensions) = response.into_parts();
        Ok(Response::from_parts(metadata, encoded.decode()?, extensions))
    }

    async fn get_position(&self, request: Request<pb::GetPositionRequest>) -> RpcResult<pb::GetPositionResponse> {
        get::get(&self.state, request).await
    }
}
