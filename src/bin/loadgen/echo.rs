//! The baseline: a bare tonic server implementing the same three services with trivial handlers that return
//! responses captured from the real server (byte-identical payloads), under the same transport settings, with
//! no auth, no database and no cache. The read benchmark is reported as a ratio to it.

use std::net::SocketAddr;
use std::time::Duration;

use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};
use trading_monitor::pb;
use trading_monitor::pb::guards_service_server::{GuardsService, GuardsServiceServer};
use trading_monitor::pb::positions_service_server::{PositionsService, PositionsServiceServer};
use trading_monitor::pb::reconciliation_service_server::{ReconciliationService, ReconciliationServiceServer};

use crate::seed::Users;

/// Canned responses, one per read RPC of the mix.
#[derive(Clone)]
struct Canned {
    status: pb::GetReconciliationStatusResponse,
    positions: pb::ListOpenPositionsResponse,
    guard: pb::GetGuardStatusResponse,
}

type Rpc<T> = Result<Response<T>, Status>;
/// The watch streams are not part of the read mix; their type only has to exist.
type NoStream<T> = futures::stream::Empty<Result<T, Status>>;

fn not_in_mix<T>() -> Rpc<T> {
    Err(Status::unimplemented("not part of the benchmark mix"))
}

#[tonic::async_trait]
impl ReconciliationService for Canned {
    type WatchReconciliationEventsStream = NoStream<pb::WatchReconciliationEventsResponse>;

    async fn watch_reconciliation_events(
        &self,
        _: Request<pb::WatchReconciliationEventsRequest>,
    ) -> Rpc<Self::WatchReconciliationEventsStream> {
        not_in_mix()
    }
    async fn get_reconciliation_status(
        &self,
        _: Request<pb::GetReconciliationStatusRequest>,
    ) -> Rpc<pb::GetReconciliationStatusResponse> {
        Ok(Response::new(self.status.clone()))
    }
    async fn list_reconciliation_events(
        &self,
        _: Request<pb::ListReconciliationEventsRequest>,
    ) -> Rpc<pb::ListReconciliationEventsResponse> {
        not_in_mix()
    }
    async fn submit_broker_sync(&self, _: Request<pb::SubmitBrokerSyncRequest>) -> Rpc<pb::SubmitBrokerSyncResponse> {
        not_in_mix()
    }
}

#[tonic::async_trait]
impl PositionsService for Canned {
    async fn list_open_positions(
        &self,
        _: Request<pb::ListOpenPositionsRequest>,
    ) -> Rpc<pb::ListOpenPositionsResponse> {
        Ok(Response::new(self.positions.clone()))
    }
    async fn get_position(&self, _: Request<pb::GetPositionRequest>) -> Rpc<pb::GetPositionResponse> {
        not_in_mix()
    }
}

#[tonic::async_trait]
impl GuardsService for Canned {
    type WatchGuardStatusStream = NoStream<pb::WatchGuardStatusResponse>;

    async fn watch_guard_status(&self, _: Request<pb::WatchGuardStatusRequest>) -> Rpc<Self::WatchGuardStatusStream> {
        not_in_mix()
    }
    async fn get_guard_status(&self, _: Request<pb::GetGuardStatusRequest>) -> Rpc<pb::GetGuardStatusResponse> {
        Ok(Response::new(self.guard.clone()))
    }
    async fn get_drawdown_status(
        &self,
        _: Request<pb::GetDrawdownStatusRequest>,
    ) -> Rpc<pb::GetDrawdownStatusResponse> {
        not_in_mix()
    }
    async fn list_market_alerts(&self, _: Request<pb::ListMarketAlertsRequest>) -> Rpc<pb::ListMarketAlertsResponse> {
        not_in_mix()
    }
    async fn submit_quotes(&self, _: Request<pb::SubmitQuotesRequest>) -> Rpc<pb::SubmitQuotesResponse> {
        not_in_mix()
    }
}

/// A request carrying user 0's token.
fn as_user0<T>(users: &Users, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", users.auth[0].clone());
    request
}

/// Captures user 0's three responses from the real server.
async fn capture(channel: Channel, users: &Users) -> anyhow::Result<Canned> {
    use pb::guards_service_client::GuardsServiceClient;
    use pb::positions_service_client::PositionsServiceClient;
    use pb::reconciliation_service_client::ReconciliationServiceClient;
    Ok(Canned {
        status: ReconciliationServiceClient::new(channel.clone())
            .get_reconciliation_status(as_user0(users, pb::GetReconciliationStatusRequest::default()))
            .await?
            .into_inner(),
        positions: PositionsServiceClient::new(channel.clone())
            .list_open_positions(as_user0(users, pb::ListOpenPositionsRequest::default()))
            .await?
            .into_inner(),
        guard: GuardsServiceClient::new(channel)
            .get_guard_status(as_user0(users, pb::GetGuardStatusRequest::default()))
            .await?
            .into_inner(),
    })
}

/// Serves the canned responses on `listen` until the process is stopped, with the real server's transport
/// settings (request timeout, per-connection concurrency limit with load shedding, TCP_NODELAY).
pub async fn serve(listen: SocketAddr, target: Channel, users: &Users) -> anyhow::Result<()> {
    let canned = capture(target, users).await?;
    println!("echo server on {listen} (payloads captured from the target)");
    Server::builder()
        .timeout(Duration::from_secs(15))
        .concurrency_limit_per_connection(512)
        .load_shed(true)
        .tcp_nodelay(true)
        .add_service(ReconciliationServiceServer::new(canned.clone()))
        .add_service(PositionsServiceServer::new(canned.clone()))
        .add_service(GuardsServiceServer::new(canned))
        .serve(listen)
        .await?;
    Ok(())
}
