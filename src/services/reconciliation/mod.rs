//! `trading.v1.ReconciliationService`: the reconciliation status, the event log, its watch stream, and broker
//! sync ingest. Each RPC is listed here; what it does is in the module named beside it.
//!
//! `GetReconciliationStatus` is served from stored bytes ([`GetReconciliationStatusBytes`]): the server answers
//! its path before the generated trait is reached (see `services::encoded`).

use std::sync::Arc;

use futures::future::BoxFuture;
use tonic::{Request, Response, Status};

use super::encoded::{Encoded, EncodedMethod, WithEncoded};
use super::stream::Delivery;
use super::{AppState, RpcResult};
use crate::pb;
use crate::pb::reconciliation_service_server::{ReconciliationService, ReconciliationServiceServer};

mod events;
mod status;
mod sync;
mod watch;

pub use sync::MAX_POSITIONS_PER_SYNC;

/// The ReconciliationService implementation.
#[derive(Debug, Clone)]
pub struct ReconciliationApi {
    state: AppState,
}

impl ReconciliationApi {
    /// A handler over shared state.
    pub fn new(state: AppState) -> Self {
        ReconciliationApi { state }
    }
}

/// `trading.v1.ReconciliationService` as served: the generated server, with `GetReconciliationStatus` answered
/// as bytes by [`GetReconciliationStatusBytes`].
pub type ReconciliationServer =
    WithEncoded<ReconciliationServiceServer<ReconciliationApi>, GetReconciliationStatusBytes>;

/// `GetReconciliationStatus` as served on the wire: the cached response's bytes with the state judged now
/// ([`status::serve`]).
pub struct GetReconciliationStatusBytes;

impl EncodedMethod for GetReconciliationStatusBytes {
    const PATH: &'static str = "/trading.v1.ReconciliationService/GetReconciliationStatus";
    type Request = pb::GetReconciliationStatusRequest;

    fn serve(
        state: Arc<AppState>,
        request: Request<Self::Request>,
    ) -> BoxFuture<'static, Result<Response<Encoded>, Status>> {
        Box::pin(async move { status::serve(&state, request).await })
    }
}

#[tonic::async_trait]
impl ReconciliationService for ReconciliationApi {
    type WatchReconciliationEventsStream = Delivery<pb::WatchReconciliationEventsResponse>;

    /// Served as bytes by [`GetReconciliationStatusBytes`]; this decoded form of the same answer is reached
    /// only by a caller of the generated server alone.
    async fn get_reconciliation_status(
        &self,
        request: Request<pb::GetReconciliationStatusRequest>,
    ) -> RpcResult<pb::GetReconciliationStatusResponse> {
        let response = status::serve(&self.state, request).await?;
        let (metadata, encoded, extensions) = response.into_parts();
        Ok(Response::from_parts(metadata, encoded.decode()?, extensions))
    }

    async fn list_reconciliation_events(
        &self,
        request: Request<pb::ListReconciliationEventsRequest>,
    ) -> RpcResult<pb::ListReconciliationEventsResponse> {
        events::list(&self.state, request).await
    }

    async fn watch_reconciliation_events(
        &self,
        request: Request<pb::WatchReconciliationEventsRequest>,
    ) -> RpcResult<Self::WatchReconciliationEventsStream> {
        Ok(Response::new(watch::watch_events(&self.state, request).await?))
    }

    async fn submit_broker_sync(
        &self,
        request: Request<pb::SubmitBrokerSyncRequest>,
    ) -> RpcResult<pb::SubmitBrokerSyncResponse> {
        sync::submit_broker_sync(&self.state, request).await
    }
}
