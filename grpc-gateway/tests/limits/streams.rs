//! Streams: the send timeout, the cap, the start deadline, and the upstream pools that keep stalled streams
//! away from unary calls.

use std::sync::atomic::Ordering;
use std::time::Duration;

use trading_gateway::HttpArgs;
use trading_gateway::upstream::ConnectOptions;

use crate::client::{self, AUTH, STREAM_PATH, UNARY_PATH};
use crate::{eventually, fake, gateway};

const SSE: &str = "Accept: text/event-stream";

/// The case: clients that stop reading SSE replays. Their streams' unread messages fill flow-control
/// windows upstream; with one connection for everything (hyper's 5 MiB connection window, 2 MiB per stream)
/// three of them left unary calls no window at all, and every REST call timed out (504).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_streams_leave_unary_calls_and_other_streams_running() {
    let fake = fake::start().await;
    // One connection of each kind, so what keeps calls flowing is the pools' separation and windows, not
    // their number of connections. A long send timeout: nothing is ended during the test.
    let options = ConnectOptions { connections: 1, stream_connections: 1, ..ConnectOptions::default() };
    let args =
        HttpArgs { send_timeout: Duration::from_secs(120), max_timeout: Duration::from_secs(2), ..HttpArgs::default() };
    let gw = gateway(fake.addr, args, options).await;
    let (status, healthy) = client::open_stream(gw.addr, STREAM_PATH, &[AUTH]).await;
    assert_eq!(status, 200);
    let received = client::keep_reading(healthy);
    let mut stalled = Vec::new();
    for i in 0..4 {
        stalled.push(client::stalled(gw.addr, STREAM_PATH, &[AUTH, SSE]).await);
        assert!(eventually(Duration::from_secs(5), || fake.streamed().len() == i + 2).await);
    }
    assert!(fake.stalled(1..5).await, "the stalled clients' streams stop: {:?}", fake.streamed());

    for _ in 0..3 {
        let reply = client::get(gw.addr, UNARY_PATH, &[AUTH]).await;
        assert_eq!(reply.status, 200, "a unary call beside stalled streams: {reply:?}");
    }
    let before = received.load(Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(5), || received.load(Ordering::SeqCst) > before + 1024 * 1024).await,
        "a stream whose client reads keeps flowing beside stalled ones"
    );
    assert_eq!(fake.open_streams(), 5, "nothing was ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_is_cut_off_after_the_send_timeout_and_its_upstream_call_cancelled() {
    let fake = fake::start().await;
    let args = HttpArgs { send_timeout: Duration::from_secs(1), max_streams: 3, ..HttpArgs::default() };
    let gw = gateway(fake.addr, args, ConnectOptions::default()).await;
    let mut stalled = vec![
        client::stalled(gw.addr, STREAM_PATH, &[AUTH, SSE]).await,
        client::stalled(gw.addr, STREAM_PATH, &[AUTH, SSE]).await,
        client::stalled(gw.addr, STREAM_PATH, &[AUTH]).await, // NDJSON
    ];
    assert!(eventually(Duration::from_secs(5), || fake.open_streams() == 3).await);
    assert!(fake.stalled(0..3).await, "the clients' streams stop: {:?}", fake.streamed());
    // Reading now would unstall them: wait out the send timeout first (the connections are closed meanwhile).
    tokio::time::sleep(Duration::from_secs(2)).await;
    for client in &mut stalled {
        let tail = client::tail_at_close(client, Duration::from_secs(20)).await;
        let tail = tail.expect("the gateway closes a stalled client's connection");
        // Cut off: not the end of a chunked body, which would pass for a stream that ended normally.
        assert!(!tail.ends_with(b"0\r\n\r\n"), "{:?}", String::from_utf8_lossy(&tail));
    }
    assert!(
        eventually(Duration::from_secs(5), || fake.open_streams() == 0).await,
        "the upstream calls are cancelled, freeing their flow-control windows"
    );
    // Their places under --http-max-streams are free again.
    let mut open = Vec::new();
    for _ in 0..3 {
        let (status, stream) = client::open_stream(gw.addr, STREAM_PATH, &[AUTH]).await;
        assert_eq!(status, 200);
        open.push(stream);
    }
}

#[tokio::test]
async fn streams_over_the_cap_are_refused_at_once_with_429() {
    let fake = fake::start().await;
    let args = HttpArgs { max_streams: 2, ..HttpArgs::default() };
    let gw = gateway(fake.addr, args, ConnectOptions::default()).await;
    let (first, one) = client::open_stream(gw.addr, STREAM_PATH, &[AUTH]).await;
    let (second, _two) = client::open_stream(gw.addr, STREAM_PATH, &[AUTH, SSE]).await;
    assert_eq!((first, second), (200, 200));
    let refused = client::get(gw.addr, STREAM_PATH, &[AUTH, SSE]).await;
    assert_eq!(refused.status, 429, "{refused:?}");
    assert_eq!(client::reason(&refused.body), "TOO_MANY_STREAMS");
    assert!(refused.head.contains("retry-after: 1\r\n"), "{}", refused.head);
    let json: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
    assert_eq!(json["code"], 8, "RESOURCE_EXHAUSTED: {json}");
    // Unary calls are not streams.
    assert_eq!(client::get(gw.addr, UNARY_PATH, &[AUTH]).await.status, 200);
    assert_eq!(fake.open_streams(), 2, "the refused stream never reached the upstream");

    // A stream that ends gives its place back.
    drop(one);
    let mut reopened = None;
    for _ in 0..50 {
        let (status, stream) = client::open_stream(gw.addr, STREAM_PATH, &[AUTH]).await;
        if status == 200 {
            reopened = Some(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reopened.is_some(), "a place is free again once a stream ended");
}

#[tokio::test]
async fn a_stream_the_service_does_not_start_within_the_deadline_is_504() {
    let fake = fake::start().await;
    let args = HttpArgs { max_timeout: Duration::from_millis(300), ..HttpArgs::default() };
    let gw = gateway(fake.addr, args, ConnectOptions::default()).await;
    let reply = client::get(gw.addr, "/v1/users/me/guardStatus:watch", &[AUTH]).await;
    assert_eq!(reply.status, 504, "{reply:?}");
}

#[tokio::test]
async fn the_standalone_gateway_opens_every_connection_of_its_pools() {
    let fake = fake::start().await;
    let options = ConnectOptions { connections: 3, stream_connections: 2, ..ConnectOptions::default() };
    let gw = gateway(fake.addr, HttpArgs::default(), options).await;
    assert_eq!(client::get(gw.addr, UNARY_PATH, &[AUTH]).await.status, 200);
    assert!(eventually(Duration::from_secs(5), || fake.connections() == 3).await, "{}", fake.connections());
    for _ in 0..10 {
        assert_eq!(client::get(gw.addr, UNARY_PATH, &[AUTH]).await.status, 200);
    }
    let (status, _stream) = client::open_stream(gw.addr, STREAM_PATH, &[AUTH]).await;
    assert_eq!(status, 200);
    assert!(eventually(Duration::from_secs(5), || fake.connections() == 5).await, "{}", fake.connections());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.connections(), 5, "no more than the pools' connections");
    assert_eq!(fake.counters.unary_calls.load(Ordering::SeqCst), 11);
}

/// Over HTTP/2 a client can stall one stream (by not reading it: its flow-control window fills) and keep using
/// the connection: the stream's producer ends on its own send timeout, cancelling the upstream call, and the
/// connection keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http2_a_stalled_stream_ends_and_its_connection_keeps_serving() {
    let fake = fake::start().await;
    let args = HttpArgs { send_timeout: Duration::from_secs(1), ..HttpArgs::default() };
    let gw = gateway(fake.addr, args, ConnectOptions::default()).await;
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut h2, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let get = |path: &str| {
        http::Request::get(format!("http://{}{path}", gw.addr))
            .header("authorization", "Bearer test-token")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let unread = h2.send_request(get(STREAM_PATH)).await.unwrap();
    assert_eq!(unread.status(), 200);
    assert!(eventually(Duration::from_secs(5), || fake.open_streams() == 1).await);
    assert!(
        eventually(Duration::from_secs(10), || fake.open_streams() == 0).await,
        "the stream's producer gives up on its client and cancels the upstream call"
    );
    let answer = h2.send_request(get(UNARY_PATH)).await.unwrap();
    assert_eq!(answer.status(), 200, "the same connection still serves");
    drop(unread);
}
