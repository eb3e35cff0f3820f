//! Server-streaming RPCs over HTTP, two ways:
//!
//! - **Server-Sent Events** when the request accepts `text/event-stream` (what a browser's `EventSource`
//!   sends): each message is an event whose `id:` is its `resume_token`, `event:` the kind of message (the set
//!   field of its `oneof`, e.g. `event`, `update`, `heartbeat`) and `data:` the message's canonical JSON. A
//!   reconnecting `EventSource` sends `Last-Event-ID`, which becomes the request's `resume_token`. The stream
//!   starts with `retry: 2000` (reconnect after 2 s). An error after the stream started is a last event
//!   `event: error` with the `google.rpc.Status` JSON; one before (such as a resume token that cannot be
//!   resumed, HTTP 410) is an ordinary error response.
//! - Otherwise **newline-delimited JSON** (`application/x-ndjson`), grpc-gateway v2's framing: one
//!   `{"result": message}` per line, and a final `{"error": status}` line if the stream ends with an error.
//!
//! Since `EventSource` cannot send headers, streaming routes also take the bearer token as an `access_token`
//! query parameter (RFC 6750 §2.3); an `Authorization` header wins when both are present. URLs end up in
//! histories and proxy logs, so prefer the header wherever the client can set one.
//!
//! Limits: the gateway serves at most `--http-max-streams` streams at once (one more is 429 `TOO_MANY_STREAMS`,
//! refused before the service is called), and a stream whose client has not taken its next message for
//! `--http-send-timeout` is ended and its upstream call cancelled (see [`respond`]).
//!
//! grpc-gateway itself does not do SSE (grpc-ecosystem/grpc-gateway#26); this module is written here for that
//! reason, on axum's streaming body.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt as _;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use prost_reflect::{DynamicMessage, ReflectMessage, Value};
use tokio::sync::{OwnedSemaphorePermit, watch};

use crate::errors::{self, GatewayError};
use crate::routing::Route;

/// The query parameter carrying a bearer token on streaming routes.
pub const ACCESS_TOKEN: &str = "access_token";
/// What a reconnecting `EventSource` is told to wait, in milliseconds.
const RETRY_MS: u32 = 2000;
/// How long the last frame of a stream ended by the gateway's shutdown may wait for its client: a client that
/// reads takes it at once, one that does not has its response cut off instead.
const SHUTDOWN_FRAME_WAIT: Duration = Duration::from_secs(1);

/// How a stream is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `text/event-stream`.
    Sse,
    /// `application/x-ndjson`, `{"result": ...}` lines.
    NdJson,
}

impl Framing {
    /// Server-Sent Events when the client accepts them.
    pub fn of(headers: &HeaderMap) -> Framing {
        let sse =
            headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
                |v| {
                    let mut parts = v.split(';');
                    let media = parts.next().unwrap_or_default().trim();
                    // `q=0` means "not acceptable".
                    let refused = parts.any(|p| {
                        p.trim().strip_prefix("q=").and_then(|q| q.trim().parse::<f32>().ok()).is_some_and(|q| q <= 0.0)
                    });
                    media.eq_ignore_ascii_case("text/event-stream") && !refused
                },
            );
        if sse { Framing::Sse } else { Framing::NdJson }
    }
}

/// A streaming request's extras: the query without `access_token`, the token it carried, and `Last-Event-ID`.
pub struct Extras {
    /// The query string without `access_token`.
    pub query: Option<String>,
    /// The token the query carried (EventSource cannot send headers).
    pub access_token: Option<String>,
    /// `Last-Event-ID`: the resume token of the last event the client saw.
    pub last_event_id: Option<String>,
}

/// Takes the streaming extras out of a request.
pub fn extras(query: Option<&str>, headers: &HeaderMap) -> Extras {
    let mut access_token = None;
    let query = query.map(|q| {
        let kept: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes())
            .filter_map(|(k, v)| {
                if k == ACCESS_TOKEN {
                    access_token = Some(v.into_owned());
                    None
                } else {
                    Some((k.into_owned(), v.into_owned()))
                }
            })
            .collect();
        form_urlencoded::Serializer::new(String::new()).extend_pairs(kept).finish()
    });
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned);
    Extras { query, access_token, last_event_id }
}

/// Sets the request's `resume_token` to the `Last-Event-ID` a reconnecting `EventSource` sent (it wins over a
/// `resume_token` in the query: it is newer).
pub fn resume_from(message: &mut DynamicMessage, last_event_id: Option<&str>) {
    if let (Some(id), Some(field)) = (last_event_id, message.descriptor().get_field_by_name("resume_token")) {
        message.set_field(&field, Value::String(id.to_owned()));
    }
}

/// Writes one stream message. `json` is its canonical JSON; `decoded` gives its kind and resume token.
fn frame(framing: Framing, json: &[u8], decoded: Option<&DynamicMessage>) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 128);
    match framing {
        Framing::NdJson => {
            out.extend_from_slice(b"{\"result\":");
            out.extend_from_slice(json);
            out.extend_from_slice(b"}\n");
        }
        Framing::Sse => {
            if let Some(message) = decoded {
                if let Some(Value::String(token)) = message.get_field_by_name("resume_token").as_deref()
                    && !token.is_empty()
                {
                    out.extend_from_slice(format!("id: {token}\n").as_bytes());
                }
                if let Some(kind) = kind(message) {
                    out.extend_from_slice(format!("event: {kind}\n").as_bytes());
                }
            }
            data_lines(&mut out, json);
        }
    }
    Bytes::from(out)
}

/// The last frame of a stream that ended with an error.
fn error_frame(framing: Framing, status: &serde_json::Value) -> Bytes {
    let json = status.to_string();
    match framing {
        Framing::NdJson => Bytes::from(format!("{{\"error\":{json}}}\n")),
        Framing::Sse => {
            let mut out = b"event: error\n".to_vec();
            data_lines(&mut out, json.as_bytes());
            Bytes::from(out)
        }
    }
}

/// `data:` lines (one per line of `json`, which compact JSON never splits) and the blank line ending an event.
fn data_lines(out: &mut Vec<u8>, json: &[u8]) {
    for line in json.split(|b| *b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// The name of the set field of the message's first `oneof` (its kind), if any.
fn kind(message: &DynamicMessage) -> Option<String> {
    let descriptor = message.descriptor();
    descriptor
        .oneofs()
        .flat_map(|o| o.fields().collect::<Vec<_>>())
        .find(|f| message.has_field(f))
        .map(|f| f.name().to_owned())
}

/// What a stream's producer needs besides its messages: when to give up on its client, and when to stop.
pub struct StreamLimits {
    /// Turns true when the gateway shuts down: the stream ends at once with UNAVAILABLE (`SHUTTING_DOWN`), so
    /// open streams never hold a graceful shutdown up.
    pub closing: watch::Receiver<bool>,
    /// How long a frame may wait for the client to take the one before it (`--http-send-timeout`).
    pub send_timeout: Duration,
    /// The stream's place under `--http-max-streams`, given back when the stream ends.
    pub slot: Option<OwnedSemaphorePermit>,
}

/// How a frame's delivery went.
enum Sent {
    /// The client took it (into the response body).
    Taken,
    /// The response body is gone: the client went away.
    Gone,
    /// The gateway is shutting down.
    Closing,
    /// The client took nothing for the send timeout.
    Stalled,
}

/// The HTTP response for an upstream stream: each message as it arrives, then the end. `to_json` turns a
/// message's wire bytes into canonical JSON.
///
/// The response ends, and `messages` is dropped (which cancels the upstream call and frees its share of the
/// upstream connection's flow-control window), when the upstream stream ends, when the client goes away, when
/// the gateway shuts down, or when the client has taken nothing for `limits.send_timeout`. A last error frame
/// says why when it can still be queued; when it cannot (the client is not reading), the response is cut off
/// instead (HTTP/1.1: the connection is closed without the chunked body's end; HTTP/2: the stream is reset), so
/// the client never mistakes it for a stream that ended normally.
pub fn respond(
    route: &Route,
    framing: Framing,
    mut messages: tonic::Streaming<Bytes>,
    pool: prost_reflect::DescriptorPool,
    to_json: impl Fn(&Route, Bytes) -> Result<Bytes, GatewayError> + Send + 'static,
    limits: StreamLimits,
) -> Response {
    let route = route.clone();
    let output = route.method.output();
    let opening = match framing {
        Framing::Sse => Some(Bytes::from(format!(": trading-monitor stream\nretry: {RETRY_MS}\n\n"))),
        Framing::NdJson => None,
    };
    let StreamLimits { mut closing, send_timeout, slot } = limits;
    let body = async_stream(move |tx, cut| async move {
        let _slot = slot;
        // Everything this task sends waits for the client (the channel holds one frame), but never past the send
        // timeout or the gateway's shutdown; a client that went away is noticed at once, not at the next message.
        let closing_for_sends = closing.clone();
        let send = |frame: Bytes| {
            let (tx, mut closing) = (tx.clone(), closing_for_sends.clone());
            async move {
                tokio::select! {
                    sent = tokio::time::timeout(send_timeout, tx.send(frame)) => match sent {
                        Ok(Ok(())) => Sent::Taken,
                        Ok(Err(_)) => Sent::Gone,
                        Err(_) => Sent::Stalled,
                    },
                    () = async { let _ = closing.wait_for(|c| *c).await; } => Sent::Closing,
                }
            }
        };
        // The last frame, an error: queued if there is room within `wait`, the response cut off otherwise.
        let last = |status: serde_json::Value, wait: Duration| {
            let (tx, cut) = (tx.clone(), cut.clone());
            async move {
                let frame = error_frame(framing, &status);
                let queued = match tokio::time::timeout(wait, tx.send(frame)).await {
                    Ok(sent) => sent.is_ok(),
                    Err(_) => false,
                };
                if !queued {
                    cut.cut();
                }
            }
        };
        let path = route.grpc_path.path().to_owned();
        let (path, last) = (&path, &last);
        let ended = |sent: Sent| async move {
            match sent {
                Sent::Taken | Sent::Gone => {}
                // A client that reads takes it at once; one that does not is not waited for long.
                Sent::Closing => last(shutting_down(), send_timeout.min(SHUTDOWN_FRAME_WAIT)).await,
                Sent::Stalled => {
                    tracing::info!(
                        path = %path,
                        timeout_ms = send_timeout.as_millis() as u64,
                        "stream ended: its client took nothing for the send timeout"
                    );
                    let status = errors::own_status_json(
                        tonic::Code::ResourceExhausted,
                        errors::SLOW_CONSUMER,
                        "the stream was ended because the client did not read; reconnect (resume with the last resume token)",
                    );
                    last(status, Duration::ZERO).await;
                }
            }
        };
        if let Some(opening) = opening {
            match send(opening).await {
                Sent::Taken => {}
                other => return ended(other).await,
            }
        }
        loop {
            let next = tokio::select! {
                next = messages.next() => next,
                () = tx.closed() => return,
                () = async { let _ = closing.wait_for(|c| *c).await; } => return ended(Sent::Closing).await,
            };
            let frame = match next {
                None => return,
                Some(Ok(bytes)) => {
                    let decoded = match framing {
                        Framing::Sse => DynamicMessage::decode(output.clone(), bytes.clone()).ok(),
                        Framing::NdJson => None,
                    };
                    match to_json(&route, bytes) {
                        Ok(json) => frame(framing, &json, decoded.as_ref()),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot encode a stream message");
                            drop(messages);
                            let status = errors::own_status_json(tonic::Code::Internal, "INTERNAL", "internal error");
                            return ended(send(error_frame(framing, &status)).await).await;
                        }
                    }
                }
                Some(Err(status)) => {
                    let json = match crate::upstream::classify(status) {
                        GatewayError::Upstream(status) => errors::status_json(&pool, &status),
                        _ => errors::own_status_json(
                            tonic::Code::Unavailable,
                            "UPSTREAM_UNAVAILABLE",
                            "the trading-monitor service is unavailable; reconnect",
                        ),
                    };
                    drop(messages);
                    return ended(send(error_frame(framing, &json)).await).await;
                }
            };
            match send(frame).await {
                Sent::Taken => {}
                // Returning drops `messages`, which cancels the upstream call.
                other => return ended(other).await,
            }
        }
    });
    let content_type = match framing {
        Framing::Sse => "text/event-stream",
        Framing::NdJson => "application/x-ndjson",
    };
    let mut response = (StatusCode::OK, Body::from_stream(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx-style proxies not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn shutting_down() -> serde_json::Value {
    errors::own_status_json(
        tonic::Code::Unavailable,
        "SHUTTING_DOWN",
        "the gateway is shutting down; reconnect (resume with the last resume token)",
    )
}

/// Set by a producer to end its response with an error (cut off) rather than normally.
#[derive(Clone, Default)]
struct Cut(Arc<AtomicBool>);

impl Cut {
    fn cut(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn is_cut(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The error a cut-off response body ends with; hyper then closes the HTTP/1.1 connection or resets the
/// HTTP/2 stream.
#[derive(Debug, thiserror::Error)]
#[error("the stream was cut off: its client did not read")]
pub struct StreamCut;

/// A body stream fed by a task through a channel of one frame: the task runs only as fast as the client reads.
/// When the task ends having called [`Cut::cut`], the body ends with [`StreamCut`] after the frames queued.
fn async_stream<F, Fut>(produce: F) -> impl futures::Stream<Item = Result<Bytes, StreamCut>> + Send + 'static
where
    F: FnOnce(tokio::sync::mpsc::Sender<Bytes>, Cut) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let cut = Cut::default();
    tokio::spawn(produce(tx, cut.clone()));
    futures::stream::unfold(Some((rx, cut)), |state| async move {
        let (mut rx, cut) = state?;
        match rx.recv().await {
            Some(frame) => Some((Ok(frame), Some((rx, cut)))),
            // The sender is gone: the producer has ended, and set `cut` first if it was going to.
            None if cut.is_cut() => Some((Err(StreamCut), None)),
            None => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_stream_is_chosen_by_accept_and_access_token_leaves_the_query() {
        let mut headers = HeaderMap::new();
        assert_eq!(Framing::of(&headers), Framing::NdJson);
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json, text/event-stream;q=0.9"));
        assert_eq!(Framing::of(&headers), Framing::Sse);
        headers.insert(header::ACCEPT, HeaderValue::from_static("text/event-stream;q=0, application/json"));
        assert_eq!(Framing::of(&headers), Framing::NdJson);
        headers.insert(header::ACCEPT, HeaderValue::from_static("text/event-stream"));
        headers.insert("last-event-id", HeaderValue::from_static(" abc "));
        let e = extras(Some("access_token=t%2Bk&eventTypes=EVENT_TYPE_SYNC_FAILED"), &headers);
        assert_eq!(e.access_token.as_deref(), Some("t+k"));
        assert_eq!(e.query.as_deref(), Some("eventTypes=EVENT_TYPE_SYNC_FAILED"));
        assert_eq!(e.last_event_id.as_deref(), Some("abc"));
    }

    #[test]
    fn frames_follow_each_framing() {
        assert_eq!(&frame(Framing::NdJson, b"{\"a\":1}", None)[..], b"{\"result\":{\"a\":1}}\n");
        assert_eq!(&frame(Framing::Sse, b"{\"a\":1}", None)[..], b"data: {\"a\":1}\n\n");
        let status = serde_json::json!({"code": 14});
        assert_eq!(&error_frame(Framing::NdJson, &status)[..], b"{\"error\":{\"code\":14}}\n");
        assert_eq!(&error_frame(Framing::Sse, &status)[..], b"event: error\ndata: {\"code\":14}\n\n");
    }
}
