//! The gRPC side: one type for "something that answers gRPC" (a tonic `Channel` to a remote service, or the
//! service's own routes when the gateway runs inside it), unary calls with already-encoded messages, and the
//! health check behind `/healthz`.

use std::str::FromStr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceExt};

use crate::errors::GatewayError;

/// Anything that serves gRPC over HTTP/2 semantics. Its error is a `Status` (a concrete error type: with
/// `BoxError` here, rustc cannot prove the handlers' futures `Send`).
pub type Upstream = BoxCloneSyncService<http::Request<tonic::body::Body>, http::Response<tonic::body::Body>, Status>;

/// A lazily connecting channel to `url`: calls made while the service is unreachable fail with UNAVAILABLE
/// within `connect_timeout` instead of hanging.
pub fn connect(url: &str, connect_timeout: Duration) -> Result<Upstream, tonic::transport::Error> {
    let channel: Channel = Endpoint::from_str(url)?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
        .connect_lazy();
    // A transport error (connection refused, reset, timeout) is "unavailable", whatever its text.
    Ok(BoxCloneSyncService::new(channel.map_err(|e| Status::unavailable(format!("upstream transport: {e}")))))
}

/// Wraps an in-process service (the service's own layered routes) as an [`Upstream`].
pub fn in_process<S, B>(service: S) -> Upstream
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    BoxCloneSyncService::new(
        service.map_response(|r| r.map(tonic::body::Body::new)).map_err(|e| Status::from_error(e.into())),
    )
}

/// A successful unary answer: response metadata (headers) and the encoded message.
pub struct Answer {
    /// The response metadata, written out as headers.
    pub metadata: MetadataMap,
    /// The encoded response message.
    pub message: Bytes,
}

/// Calls `path` (`/package.Service/Method`) with an encoded request.
pub async fn unary(
    upstream: &Upstream,
    path: PathAndQuery,
    metadata: MetadataMap,
    timeout: Duration,
    message: Bytes,
) -> Result<Answer, GatewayError> {
    let mut client = tonic::client::Grpc::new(upstream.clone());
    client.ready().await.map_err(|e| GatewayError::Unavailable(e.to_string()))?;
    let mut request = tonic::Request::from_parts(metadata, Default::default(), message);
    request.set_timeout(timeout);
    // The deadline holds even if the upstream never answers (the service enforces it too).
    let call = client.unary(request, path, BytesCodec);
    let result = tokio::time::timeout(timeout, call).await.unwrap_or_else(|_| {
        Err(Status::deadline_exceeded("the request's deadline passed before the service answered"))
    });
    match result {
        Ok(response) => {
            let (metadata, message, _) = response.into_parts();
            Ok(Answer { metadata, message })
        }
        Err(status) => Err(classify(status)),
    }
}

/// Calls a server-streaming `path` with an encoded request: the response metadata and the message stream, or
/// the status the call was refused with before its first message.
pub async fn server_streaming(
    upstream: &Upstream,
    path: PathAndQuery,
    metadata: MetadataMap,
    message: Bytes,
) -> Result<(MetadataMap, tonic::Streaming<Bytes>), GatewayError> {
    let mut client = tonic::client::Grpc::new(upstream.clone());
    client.ready().await.map_err(|e| GatewayError::Unavailable(e.to_string()))?;
    let request = tonic::Request::from_parts(metadata, Default::default(), message);
    match client.server_streaming(request, path, BytesCodec).await {
        Ok(response) => {
            let (metadata, messages, _) = response.into_parts();
            Ok((metadata, messages))
        }
        Err(status) => Err(classify(status)),
    }
}

/// A status the upstream sent is passed on; one the client library made up from a transport failure (no
/// `grpc-status` from the server) is the gateway's own "unavailable", so its internal text never reaches a caller.
pub(crate) fn classify(status: Status) -> GatewayError {
    if status.code() == Code::Unavailable && status.message().starts_with("upstream transport:")
        || status.code() == Code::Unknown
            && status.metadata().get("grpc-status").is_none()
            && status.details().is_empty()
            && status.message().contains("transport")
    {
        return GatewayError::Unavailable(status.message().to_owned());
    }
    GatewayError::Upstream(status)
}

/// `grpc.health.v1.Health/Check` for the whole server (`service: ""`).
pub async fn healthy(upstream: &Upstream, timeout: Duration) -> Result<bool, GatewayError> {
    let request = HealthCheckRequest { service: String::new() };
    let path = PathAndQuery::from_static("/grpc.health.v1.Health/Check");
    let call = unary(upstream, path, MetadataMap::new(), timeout, request.encode_to_vec().into());
    let answer = tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| GatewayError::Unavailable("health check timed out".into()))??;
    let response = HealthCheckResponse::decode(answer.message)
        .map_err(|e| GatewayError::Internal(format!("undecodable health response: {e}")))?;
    Ok(response.status == ServingStatus::Serving as i32)
}

/// Passes encoded messages through unchanged: the gateway encodes and decodes with `prost-reflect` itself.
#[derive(Clone, Copy, Default)]
struct BytesCodec;

impl Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = BytesCodec;
    type Decoder = BytesCodec;

    fn encoder(&mut self) -> Self::Encoder {
        BytesCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesCodec
    }
}

impl Encoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
