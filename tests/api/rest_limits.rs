//! The REST gateway's limits in front of the real service (`grpc-gateway/tests/limits` covers each of them in
//! detail against a stand-in upstream): a stream whose client stops reading an SSE replay is ended after
//! `--http-send-timeout`, giving back its place under `--http-max-streams`, while REST calls keep answering, in
//! process and standalone; and streams over `--http-max-streams` are refused with 429.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use futures::StreamExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use uuid::Uuid;

use trading_testkit::*;

const REPLAY: &str = "/v1/users/me/reconciliationEvents:watch?start=WATCH_START_OLDEST";

/// GET `path` over a connection of its own: the status and the body.
async fn get(base: SocketAddr, path: &str, token: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(format!("http://{base}{path}"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// An HTTP/2 (h2c) client with a 64 KiB window per stream: a stream it does not read stops after that much,
/// deterministically (an HTTP/1.1 client's kernel buffers can hold megabytes first).
async fn h2(base: SocketAddr) -> hyper::client::conn::http2::SendRequest<Body> {
    let tcp = tokio::net::TcpStream::connect(base).await.unwrap();
    let (client, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(65_535)
        .handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// A standalone gateway with `args`, one upstream connection of each kind, served until the test ends.
async fn standalone(upstream: SocketAddr, args: trading_gateway::HttpArgs) -> SocketAddr {
    let options =
        trading_gateway::upstream::ConnectOptions { connections: 1, stream_connections: 1, ..Default::default() };
    let upstreams = trading_gateway::upstream::connect(&format!("http://{upstream}"), &options).unwrap();
    let gateway = trading_gateway::Gateway::new(upstreams, args).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { gateway.serve(listener, std::future::pending()).await });
    addr
}

#[tokio::test]
async fn a_replay_whose_client_stops_reading_is_ended_while_rest_keeps_answering() {
    let send_timeout = Duration::from_secs(1);
    let app = spawn_app_with(|args| {
        args.server.http_listen = Some("127.0.0.1:0".parse().unwrap());
        args.http.send_timeout = send_timeout;
        args.http.max_streams = 1;
    })
    .await;
    let args = trading_gateway::HttpArgs { send_timeout, max_streams: 1, ..Default::default() };
    let standalone = standalone(app.addr, args).await;
    let user = Uuid::new_v4();
    let token = token(user, &[]);
    // About 1.7 MB of history to replay, far more than the client's window: failed syncs with long messages
    // (some 4 KB of JSON per event).
    let message = "x".repeat(2000);
    futures::stream::iter(0..400)
        .for_each_concurrent(8, |_| async { app.submit(failed_sync(user, &message)).await.map(drop).unwrap() })
        .await;

    for base in [app.http.unwrap(), standalone] {
        let mut client = h2(base).await;
        let request = http::Request::get(format!("http://{base}{REPLAY}"))
            .header("accept", "text/event-stream")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let unread = client.send_request(request).await.unwrap();
        assert_eq!(unread.status(), 200);
        let started = Instant::now();
        // Its place is taken while it lasts.
        let (status, body) = get(base, REPLAY, &token).await;
        assert_eq!(status, 429, "{body}");
        // REST keeps answering, during and after.
        let mut freed = false;
        while !freed && started.elapsed() < Duration::from_secs(20) {
            let (status, body) = get(base, "/v1/users/me/reconciliationStatus", &token).await;
            assert_eq!(status, 200, "{body}");
            // Once the send timeout has ended the stalled stream, a new one may start.
            let response = reqwest::Client::new()
                .get(format!("http://{base}/v1/users/me/guardStatus:watch"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            freed = response.status() == 200;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(freed, "{base}: the stalled stream is ended after the send timeout and gives its place back");
        assert!(started.elapsed() >= send_timeout, "not before the send timeout");
        drop(unread);
    }
}

#[tokio::test]
async fn streams_over_the_limit_are_refused_with_429_in_process() {
    let app = spawn_app_with(|args| {
        args.server.http_listen = Some("127.0.0.1:0".parse().unwrap());
        args.http.max_streams = 1;
    })
    .await;
    let base = app.http.unwrap();
    let token = token(Uuid::new_v4(), &[]);
    let open = reqwest::Client::new()
        .get(format!("http://{base}/v1/users/me/guardStatus:watch"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
    let (status, body) = get(base, "/v1/users/me/guardStatus:watch", &token).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("TOO_MANY_STREAMS"), "{body}");
    drop(open);
}
