//! The HTTP server: header-read and idle timeouts, the connection cap, HTTP/2 (h2c), graceful shutdown.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use trading_gateway::HttpArgs;
use trading_gateway::upstream::ConnectOptions;

use crate::client::{self, AUTH, STREAM_PATH};
use crate::{fake, gateway};

#[tokio::test]
async fn a_request_head_not_received_within_the_header_read_timeout_is_disconnected() {
    let fake = fake::start().await;
    let timeout = Duration::from_millis(500);
    let args = HttpArgs { header_read_timeout: timeout, idle_timeout: Duration::from_secs(60), ..HttpArgs::default() };
    let gw = gateway(fake.addr, args, ConnectOptions::default()).await;
    let started = Instant::now();
    let mut partial = TcpStream::connect(gw.addr).await.unwrap();
    partial.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n").await.unwrap();
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    assert!(client::closed_within(&mut partial, Duration::from_secs(5)).await, "a partial head is disconnected");
    assert!(started.elapsed() >= timeout, "not before the timeout");
    assert!(client::closed_within(&mut silent, Duration::from_secs(5)).await, "so is a client that sends nothing");

    // A head that arrives in time is answered, even in pieces.
    let mut slow = TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(timeout / 2).await;
    slow.write_all(b"Host: gateway\r\n\r\n").await.unwrap();
    assert_eq!(client::read_reply(&mut slow).await.status, 200);
    // Waiting between requests is not reading a head: the idle timeout applies there, not this one.
    tokio::time::sleep(timeout * 2).await;
    slow.write_all(&client::request("/healthz", &[])).await.unwrap();
    assert_eq!(client::read_reply(&mut slow).await.status, 200);
}

#[tokio::test]
async fn connections_without_a_request_in_flight_are_closed_after_the_idle_timeout() {
    let fake = fake::start().await;
    let idle = Duration::from_millis(600);
    let args = HttpArgs { idle_timeout: idle, ..HttpArgs::default() };
    let gw = gateway(fake.addr, args, ConnectOptions::default()).await;

    let mut keep_alive = TcpStream::connect(gw.addr).await.unwrap();
    keep_alive.write_all(&client::request("/healthz", &[])).await.unwrap();
    assert_eq!(client::read_reply(&mut keep_alive).await.status, 200);
    let answered = Instant::now();
    assert!(client::closed_within(&mut keep_alive, Duration::from_secs(5)).await, "an idle HTTP/1.1 connection");
    assert!(answered.elapsed() >= idle, "not before the timeout");

    // A response still being sent is a request in flight: a stream outlives the idle timeout.
    let (status, mut stream) = client::open_stream(gw.addr, STREAM_PATH, &[AUTH]).await;
    assert_eq!(status, 200);
    assert!(client::open_after(&mut stream, idle * 2).await, "a stream is not idle");

    // HTTP/2 (h2c, prior knowledge) is served, and closed when idle.
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (mut h2, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    let connection = tokio::spawn(connection);
    let request = http::Request::get(format!("http://{}/healthz", gw.addr)).body(Empty::<Bytes>::new()).unwrap();
    let response = h2.send_request(request).await.unwrap();
    assert_eq!((response.status(), response.version()), (http::StatusCode::OK, http::Version::HTTP_2));
    drop(response);
    let closed = tokio::time::timeout(Duration::from_secs(5), connection).await;
    assert!(closed.is_ok(), "an idle HTTP/2 connection is closed");
}

#[tokio::test]
async fn at_the_connection_cap_further_clients_wait_until_a_connection_closes() {
    let fake = fake::start().await;
    let args = HttpArgs { max_connections: 2, ..HttpArgs::default() };
    let gw = gateway(fake.addr, args, ConnectOptions::default()).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut connection = TcpStream::connect(gw.addr).await.unwrap();
        connection.write_all(&client::request("/healthz", &[])).await.unwrap();
        assert_eq!(client::read_reply(&mut connection).await.status, 200);
        open.push(connection);
    }
    // The kernel completes the handshake (the listen backlog), but the gateway does not accept it yet.
    let mut waiting = TcpStream::connect(gw.addr).await.unwrap();
    waiting.write_all(&client::request("/healthz", &[])).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(500), client::read_reply(&mut waiting)).await;
    assert!(early.is_err(), "a third connection is not served while two are open");
    drop(open.pop());
    let reply = tokio::time::timeout(Duration::from_secs(5), client::read_reply(&mut waiting)).await;
    assert_eq!(reply.expect("served once a connection closed").status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_streams_first_and_closes_every_connection_even_a_stalled_one() {
    let fake = fake::start().await;
    // The stalled client is closed within the send timeout (or the drain, the longer of it and the maximum
    // request timeout, 3 s here); before, it held the shutdown for ever.
    let args =
        HttpArgs { send_timeout: Duration::from_secs(3), max_timeout: Duration::from_secs(1), ..HttpArgs::default() };
    let gw = gateway(fake.addr, args, ConnectOptions::default()).await;
    let (status, mut reading) = client::open_stream(gw.addr, STREAM_PATH, &[AUTH]).await;
    assert_eq!(status, 200);
    let reading = tokio::spawn(async move { client::tail_at_close(&mut reading, Duration::from_secs(20)).await });
    let mut stalled = client::stalled(gw.addr, STREAM_PATH, &[AUTH, "Accept: text/event-stream"]).await;
    let mut idle = TcpStream::connect(gw.addr).await.unwrap();
    idle.write_all(&client::request("/healthz", &[])).await.unwrap();
    assert_eq!(client::read_reply(&mut idle).await.status, 200);
    assert!(fake.stalled(1..2).await, "the stalled client's stream stops: {:?}", fake.streamed());

    assert!(gw.shut_down(Duration::from_secs(10)).await, "serve returns, stalled client or not");
    let tail = reading.await.unwrap().expect("the reading client's stream ends");
    let tail = String::from_utf8_lossy(&tail);
    assert!(tail.contains("SHUTTING_DOWN") && tail.ends_with("0\r\n\r\n"), "a last error line, then the end: {tail}");
    assert!(client::closed_within(&mut stalled, Duration::from_secs(5)).await);
    assert!(client::closed_within(&mut idle, Duration::from_secs(5)).await);
}
