//! A stand-in for the trading-monitor service: an h2c gRPC server that answers the few calls the tests make,
//! with a stream that never runs dry, and counts its connections, open streams and the bytes it streamed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt as _;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// A server stream the tests can make fill any buffer: `WatchReconciliationEvents` sends heartbeats with a
/// resume token this long, as fast as flow control lets it.
pub const STREAMED: &str = "/trading.v1.ReconciliationService/WatchReconciliationEvents";
/// A server stream the fake never starts (no response headers).
pub const NEVER_STARTS: &str = "/trading.v1.GuardsService/WatchGuardStatus";
const TOKEN_BYTES: usize = 8 * 1024;

/// What the fake saw.
#[derive(Default)]
pub struct Counters {
    /// TCP connections accepted.
    pub connections: AtomicUsize,
    /// `STREAMED` calls whose response body has not been dropped (hyper drops it when the client resets the
    /// stream or the connection goes).
    pub open_streams: AtomicUsize,
    /// Bytes of `STREAMED` messages handed to hyper, per stream, in the order they were called.
    pub streams: Mutex<Vec<Arc<AtomicU64>>>,
    /// Unary calls answered.
    pub unary_calls: AtomicUsize,
}

/// The running fake.
pub struct Fake {
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
}

impl Fake {
    pub fn connections(&self) -> usize {
        self.counters.connections.load(Ordering::SeqCst)
    }

    pub fn open_streams(&self) -> usize {
        self.counters.open_streams.load(Ordering::SeqCst)
    }

    /// Bytes streamed so far, per stream, in the order the streams were called.
    pub fn streamed(&self) -> Vec<u64> {
        self.counters.streams.lock().unwrap().iter().map(|s| s.load(Ordering::SeqCst)).collect()
    }

    /// Waits until the streams `which` (indexes into [`Fake::streamed`]) have sent nothing for 500 ms: their
    /// clients' buffers, the gateway's and the flow-control windows between are full. False after 10 s.
    pub async fn stalled(&self, which: std::ops::Range<usize>) -> bool {
        let mut last = Vec::new();
        let mut still = 0;
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let now = self.streamed().get(which.clone()).map(<[u64]>::to_vec).unwrap_or_default();
            still = if now.len() == which.len() && now == last { still + 1 } else { 0 };
            if still == 5 {
                return true;
            }
            last = now;
        }
        false
    }
}

/// Starts the fake on 127.0.0.1:0; it runs until the test's runtime ends.
pub async fn start() -> Fake {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counters = Arc::new(Counters::default());
    let shared = counters.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            shared.connections.fetch_add(1, Ordering::SeqCst);
            let counters = shared.clone();
            let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
                let counters = counters.clone();
                async move { Ok::<_, Infallible>(answer(request.uri().path(), counters).await) }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Fake { addr, counters }
}

type Body = BoxBody<Bytes, Infallible>;

async fn answer(path: &str, counters: Arc<Counters>) -> http::Response<Body> {
    match path {
        STREAMED => {
            counters.open_streams.fetch_add(1, Ordering::SeqCst);
            let sent = Arc::new(AtomicU64::new(0));
            counters.streams.lock().unwrap().push(sent.clone());
            let open = OpenStream(counters.clone());
            let messages = futures::stream::unfold((0u64, open, sent), |(n, open, sent)| async move {
                let message = heartbeat(n);
                sent.fetch_add(message.len() as u64, Ordering::SeqCst);
                Some((Ok::<_, Infallible>(Frame::data(message)), (n + 1, open, sent)))
            });
            grpc(BodyExt::boxed(StreamBody::new(messages)))
        }
        NEVER_STARTS => std::future::pending().await,
        "/grpc.health.v1.Health/Check" => unary(&counters, Bytes::from_static(&[0x08, 0x01])), // SERVING
        // Any other unary call: its response message, empty (every field at its default).
        _ => unary(&counters, Bytes::new()),
    }
}

/// Counts a `STREAMED` response body until hyper drops it.
struct OpenStream(Arc<Counters>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::SeqCst);
    }
}

fn unary(counters: &Counters, message: Bytes) -> http::Response<Body> {
    counters.unary_calls.fetch_add(1, Ordering::SeqCst);
    let frames = [Frame::data(framed(&message)), Frame::trailers(grpc_ok())];
    grpc(BodyExt::boxed(StreamBody::new(futures::stream::iter(frames).map(Ok))))
}

fn grpc(body: Body) -> http::Response<Body> {
    http::Response::builder().header("content-type", "application/grpc").body(body).unwrap()
}

fn grpc_ok() -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    trailers
}

/// A gRPC length-prefixed message.
fn framed(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(message.len() + 5);
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

/// `WatchReconciliationEventsResponse { heartbeat: { caught_up: true }, resume_token: "<n>-xxx…" }`, framed.
fn heartbeat(n: u64) -> Bytes {
    let mut token = format!("{n}-");
    token.extend(std::iter::repeat_n('x', TOKEN_BYTES));
    let mut message = vec![0x12, 0x02, 0x08, 0x01];
    prost::encoding::string::encode(3, &token, &mut message);
    framed(&message)
}
