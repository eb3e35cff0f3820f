//! Responses that are already bytes. Where a cached value is the encoded response (see `status`), the
//! handler answers with those bytes through a codec that writes them as they are; the generated server, whose
//! handlers must return messages, still handles every other method of the service.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BufMut;
use futures::future::BoxFuture;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tower::Service;

use super::AppState;
use super::reconciliation::ReconciliationApi;
use crate::pb;
use crate::pb::reconciliation_service_server::ReconciliationServiceServer;

/// An encoded protobuf message.
#[derive(Debug, Clone)]
pub struct Encoded(pub Vec<u8>);

impl Encoded {
    /// The message these bytes encode.
    pub fn decode<M: prost::Message + Default>(&self) -> Result<M, Status> {
        M::decode(self.0.as_slice()).map_err(|_| Status::internal("internal error"))
    }
}

/// Decodes requests with prost, writes [`Encoded`] responses as they are.
struct EncodedCodec<U>(PhantomData<U>);

impl<U> Default for EncodedCodec<U> {
    fn default() -> Self {
        EncodedCodec(PhantomData)
    }
}

impl<U: prost::Message + Default + Send + 'static> Codec for EncodedCodec<U> {
    type Encode = Encoded;
    type Decode = U;
    type Encoder = EncodedEncoder;
    type Decoder = PlainDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        PlainDecoder(PhantomData)
    }
}

/// Writes the bytes.
struct EncodedEncoder;

impl Encoder for EncodedEncoder {
    type Item = Encoded;
    type Error = Status;

    fn encode(&mut self, item: Encoded, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item.0);
        Ok(())
    }
}

/// Decodes a request message (as tonic-prost does; a malformed one is INTERNAL, as there).
struct PlainDecoder<U>(PhantomData<U>);

impl<U: prost::Message + Default> Decoder for PlainDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| Status::internal(format!("failed to decode the request: {e}")))
    }
}

/// The status method as a unary service answering bytes.
struct StatusMethod(AppState);

impl UnaryService<pb::GetReconciliationStatusRequest> for StatusMethod {
    type Response = Encoded;
    type Future = BoxFuture<'static, Result<Response<Encoded>, Status>>;

    fn call(&mut self, request: Request<pb::GetReconciliationStatusRequest>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move { super::status::serve(&state, request).await })
    }
}

/// `trading.v1.ReconciliationService`: GetReconciliationStatus answered with stored bytes, every other method
/// by the generated server.
#[derive(Clone)]
pub struct ReconciliationServer {
    generated: ReconciliationServiceServer<ReconciliationApi>,
    state: Arc<AppState>,
    max_decoding: usize,
}

impl ReconciliationServer {
    /// The service over `state`, decoding requests of at most `max_decoding` bytes.
    pub fn new(state: AppState, max_decoding: usize) -> Self {
        let generated = ReconciliationServiceServer::new(ReconciliationApi::new(state.clone()))
            .max_decoding_message_size(max_decoding);
        ReconciliationServer { generated, state: Arc::new(state), max_decoding }
    }
}

impl NamedService for ReconciliationServer {
    const NAME: &'static str = <ReconciliationServiceServer<ReconciliationApi> as NamedService>::NAME;
}

const STATUS_PATH: &str = "/trading.v1.ReconciliationService/GetReconciliationStatus";

impl<B> Service<http::Request<B>> for ReconciliationServer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != STATUS_PATH {
            return self.generated.call(request);
        }
        let (state, max) = (AppState::clone(&self.state), self.max_decoding);
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(EncodedCodec::<pb::GetReconciliationStatusRequest>::default())
                .apply_max_message_size_config(Some(max), None);
            Ok(grpc.unary(StatusMethod(state), request).await)
        })
    }
}
