//! HTTP/1.1 by hand over TCP, so the tests control exactly what a client sends and when it reads: a stalled
//! reader, a partial request head, connections held open.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

/// The bearer token every API call carries (the fake upstream does not check it).
pub const AUTH: &str = "Authorization: Bearer test-token";
/// A stream route (the fake's endless stream).
pub const STREAM_PATH: &str = "/v1/users/me/reconciliationEvents:watch";
/// A unary route.
pub const UNARY_PATH: &str = "/v1/users/me/guardStatus";

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// The head, lower-cased, for header checks.
    pub head: String,
    pub body: String,
}

/// A request's bytes: GET `path` with `headers` (each a whole `Name: value` line).
pub fn request(path: &str, headers: &[&str]) -> Vec<u8> {
    let mut text = format!("GET {path} HTTP/1.1\r\nHost: gateway\r\n");
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text.into_bytes()
}

/// One request on a connection of its own, answered and read to the end.
pub async fn get(addr: SocketAddr, path: &str, headers: &[&str]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&request(path, headers)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), read_reply(&mut stream)).await.expect("an answer within 10 s")
}

/// Reads one response with a `Content-Length` body.
pub async fn read_reply(stream: &mut TcpStream) -> Reply {
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection closed before a response head: {:?}", String::from_utf8_lossy(&data));
        data.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no content-length in {head}"));
    while data.len() < head_end + length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection closed inside a body");
        data.extend_from_slice(&chunk[..n]);
    }
    Reply { status, head, body: String::from_utf8_lossy(&data[head_end..head_end + length]).into_owned() }
}

/// A client that asks for `path` and then never reads: a small receive buffer, so the server's writes block
/// soon.
pub async fn stalled(addr: SocketAddr, path: &str, headers: &[&str]) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream.write_all(&request(path, headers)).await.unwrap();
    stream
}

/// Whether the server closes `stream` within `within` (whatever it sent before is read and dropped).
pub async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    tail_at_close(stream, within).await.is_some()
}

/// Reads `stream` until the server closes it: the last KiB it sent, or none if it stays open for `within`.
pub async fn tail_at_close(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut tail = Vec::new();
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    tail.extend_from_slice(&chunk[..n]);
                    let excess = tail.len().saturating_sub(1024);
                    tail.drain(..excess);
                }
            }
        }
    })
    .await
    .ok()?;
    Some(tail)
}

/// Opens a stream (`GET path` with `headers`) and reads its response head: the status and the connection, whose
/// body the caller reads or not.
pub async fn open_stream(addr: SocketAddr, path: &str, headers: &[&str]) -> (u16, TcpStream) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&request(path, headers)).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await.expect("a head").unwrap();
        assert!(n > 0, "closed before the head: {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    (String::from_utf8_lossy(&head[9..12]).parse().unwrap(), stream)
}

/// Reads `stream` in the background for ever, counting the bytes: a client that keeps up.
pub fn keep_reading(mut stream: TcpStream) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        let mut chunk = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = stream.read(&mut chunk).await {
            counted.fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
        }
    });
    count
}

/// Whether `stream` is still open after `for_at_least`, reading (and dropping) what arrives meanwhile.
pub async fn open_after(stream: &mut TcpStream, for_at_least: Duration) -> bool {
    !closed_within(stream, for_at_least).await
}

/// The ErrorInfo reason of a `google.rpc.Status` JSON body.
pub fn reason(body: &str) -> String {
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let details = json["details"].as_array().unwrap_or_else(|| panic!("no details in {body}"));
    let info = details.iter().find(|d| d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo").unwrap();
    info["reason"].as_str().unwrap().to_owned()
}
