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
use tonic::transport::channel::Change;
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

/// What the standalone gateway calls: unary calls and server streams over separate pools of HTTP/2 connections.
///
/// Separate, because a stream whose HTTP client stops reading stops reading its upstream stream too: its unread
/// messages then hold part of its connection's flow-control window until `--http-send-timeout` ends it.
/// A few such streams on a connection unary calls also used would leave those calls no window at all (they
/// would time out, 504). Apart, a stalled stream can only slow other streams, and the stream connections get a
/// small window per stream and a large one per connection, so that takes many stalled streams at once.
#[derive(Clone)]
pub struct Upstreams {
    /// Where unary calls and `/healthz`'s health checks go.
    pub unary: Upstream,
    /// Where server-streaming calls go.
    pub streams: Upstream,
}

impl From<Upstream> for Upstreams {
    /// One upstream for both kinds of call (the in-process service, which has no connection to share).
    fn from(upstream: Upstream) -> Upstreams {
        Upstreams { unary: upstream.clone(), streams: upstream }
    }
}

/// How the standalone gateway connects to its upstream (`--upstream-connections` etc.).
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// How long a TCP connection may take before calls fail with UNAVAILABLE.
    pub connect_timeout: Duration,
    /// HTTP/2 connections unary calls are spread over.
    pub connections: usize,
    /// HTTP/2 connections server streams are spread over.
    pub stream_connections: usize,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions { connect_timeout: Duration::from_secs(1), connections: 4, stream_connections: 4 }
    }
}

/// Flow-control window per stream on the stream connections: what one stalled stream can leave unread there.
pub const STREAM_WINDOW: u32 = 256 * 1024;
/// Flow-control window per stream connection: shared by its streams, so 128 of them must stall at once to hold
/// it all (against 2.5 with hyper's defaults, 2 MiB per stream and 5 MiB per connection, which unary
/// connections keep: their responses are read at once).
pub const STREAM_CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;

/// Lazily connecting pools of channels to `url`: calls made while the service is unreachable fail with
/// UNAVAILABLE within the connect timeout instead of hanging. Every connection of a pool is opened on its first
/// call, and each call goes to one of them (tower's power-of-two-choices balancer); a connection that breaks is
/// reconnected on its next call. Must be called within a Tokio runtime.
pub fn connect(url: &str, options: &ConnectOptions) -> Result<Upstreams, tonic::transport::Error> {
    let endpoint = Endpoint::from_str(url)?
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    let streams = endpoint
        .clone()
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(STREAM_CONNECTION_WINDOW);
    Ok(Upstreams { unary: pool(endpoint, options.connections), streams: pool(streams, options.stream_connections) })
}

/// `n` connections to `endpoint` behind one service (at least one).
fn pool(endpoint: Endpoint, n: usize) -> Upstream {
    let channel = if n <= 1 {
        endpoint.connect_lazy()
    } else {
        // Not `Channel::balance_list`: it keys connections by URI, so copies of one endpoint would be one.
        let (channel, changes) = Channel::balance_channel(n);
        for key in 0..n {
            changes.try_send(Change::Insert(key, endpoint.clone())).expect("the channel holds n changes");
        }
        channel
    };
    // A transport error (connection refused, reset, timeout) is "unavailable", whatever its text.
    BoxCloneSyncService::new(channel.map_err(|e| Status::unavailable(format!("upstream transport: {e}"))))
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
/// the status the call was refused with before its first message. The service must accept the call (send its
/// response headers) within `start_timeout`; the stream itself then has no deadline.
pub async fn server_streaming(
    upstream: &Upstream,
    path: PathAndQuery,
    metadata: MetadataMap,
    start_timeout: Duration,
    message: Bytes,
) -> Result<(MetadataMap, tonic::Streaming<Bytes>), GatewayError> {
    let start = async {
        let mut client = tonic::client::Grpc::new(upstream.clone());
        client.ready().await.map_err(|e| Status::unavailable(format!("upstream transport: {e}")))?;
        let request = tonic::Request::from_parts(metadata, Default::default(), message);
        client.server_streaming(request, path, BytesCodec).await
    };
    let started = tokio::time::timeout(start_timeout, start).await.unwrap_or_else(|_| {
        Err(Status::deadline_exceeded("the service did not start the stream within the request's deadline"))
    });
    match started {
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
