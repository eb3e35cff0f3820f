//! Responses that are already bytes: the plumbing. Where a cached value holds the encoded response, or most of
//! it, a service declares an [`EncodedMethod`] next to its other RPCs (`reconciliation::GetReconciliationStatusBytes`,
//! `positions::ListOpenPositionsBytes`) and is served as a [`WithEncoded`]: that path is answered with bytes
//! through a codec that writes them as they are, before the generated server (whose handlers must return
//! messages) sees it; every other method of the service goes to the generated server.

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

/// A method answered with bytes: its path, its request type, and how to serve it.
pub trait EncodedMethod: Send + Sync + 'static {
    /// The gRPC path, `/package.Service/Method`.
    const PATH: &'static str;
    /// The request message.
    type Request: prost::Message + Default + Send + 'static;
    /// Answers one request; `state` is shared, not cloned, per call (cloning `AppState` clones its
    /// cancellation token, which takes a lock).
    fn serve(
        state: Arc<AppState>,
        request: Request<Self::Request>,
    ) -> BoxFuture<'static, Result<Response<Encoded>, Status>>;
}

/// One [`EncodedMethod`] as a unary service.
struct Method<M>(Arc<AppState>, PhantomData<M>);

impl<M: EncodedMethod> UnaryService<M::Request> for Method<M> {
    type Response = Encoded;
    type Future = BoxFuture<'static, Result<Response<Encoded>, Status>>;

    fn call(&mut self, request: Request<M::Request>) -> Self::Future {
        M::serve(self.0.clone(), request)
    }
}

/// A generated service `S` with its method `M` answered with bytes; every other method goes to `S`.
pub struct WithEncoded<S, M> {
    generated: S,
    state: Arc<AppState>,
    max_decoding: usize,
    method: PhantomData<M>,
}

impl<S: Clone, M> Clone for WithEncoded<S, M> {
    fn clone(&self) -> Self {
        WithEncoded {
            generated: self.generated.clone(),
            state: self.state.clone(),
            max_decoding: self.max_decoding,
            method: PhantomData,
        }
    }
}

impl<S, M> WithEncoded<S, M> {
    /// `generated` with `M` answered from `state`, decoding requests of at most `max_decoding` bytes.
    pub fn new(generated: S, state: AppState, max_decoding: usize) -> Self {
        WithEncoded { generated, state: Arc::new(state), max_decoding, method: PhantomData }
    }
}

impl<S: NamedService, M> NamedService for WithEncoded<S, M> {
    const NAME: &'static str = S::NAME;
}

impl<S, M, B> Service<http::Request<B>> for WithEncoded<S, M>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>,
    S::Future: Send + 'static,
    M: EncodedMethod,
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.generated.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != M::PATH {
            return Box::pin(self.generated.call(request));
        }
        let (state, max) = (Arc::clone(&self.state), self.max_decoding);
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(EncodedCodec::<M::Request>::default())
                .apply_max_message_size_config(Some(max), None);
            Ok(grpc.unary(Method::<M>(state, PhantomData), request).await)
        })
    }
}
