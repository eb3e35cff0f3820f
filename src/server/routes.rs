//! What the server serves: the three services (two of them with a byte-served method), health, and server
//! reflection v1 and v1alpha over the contract's descriptor set.

use tonic::service::Routes;
use tonic_health::server::{HealthReporter, HealthService};

use crate::pb;
use crate::services::AppState;
use crate::services::guards::GuardsApi;
use crate::services::positions::{PositionsApi, PositionsServer};
use crate::services::reconciliation::{ReconciliationApi, ReconciliationServer};

/// Every service, each decoding requests of at most `max_request_bytes`.
pub fn routes(state: &AppState, reporter: &HealthReporter, max_request_bytes: usize) -> anyhow::Result<Routes> {
    let limit = max_request_bytes;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok(Routes::new(tonic_health::pb::health_server::HealthServer::new(HealthService::from_health_reporter(
        reporter.clone(),
    )))
    .add_service(reflection_v1)
    .add_service(reflection_v1alpha)
    .add_service(ReconciliationServer::new(
        pb::reconciliation_service_server::ReconciliationServiceServer::new(ReconciliationApi::new(state.clone()))
            .max_decoding_message_size(limit),
        state.clone(),
        limit,
    ))
    .add_service(PositionsServer::new(
        pb::positions_service_server::PositionsServiceServer::new(PositionsApi::new(state.clone()))
            .max_decoding_message_size(limit),
        state.clone(),
        limit,
    ))
    .add_service(
        pb::guards_service_server::GuardsServiceServer::new(GuardsApi::new(state.clone()))
            .max_decoding_message_size(limit),
    ))
}
