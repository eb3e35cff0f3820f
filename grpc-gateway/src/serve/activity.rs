//! What one connection is doing, for its timeouts: how many requests it has in flight, when it last had none,
//! whether bytes of a new request head have arrived since, and since when its client has taken none of the
//! bytes the server is trying to write. The socket reports reads and blocked writes ([`Watched`]), the service
//! reports requests starting and their responses ending ([`Activity::begin`], [`Tracked`]).
//!
//! None of these wakes the connection's task: every change only sets a deadline at least the shortest timeout
//! away, and the task never sleeps longer than that before it looks again ([`Timeouts::shortest`]), so it is
//! never late and costs nothing per request.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// A connection's timeouts (see `HttpArgs`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    /// From a request head's first byte (or the connection's opening, for its first request) to its end.
    pub header_read: Duration,
    /// With no request in flight and no new one started.
    pub idle: Duration,
    /// With a write blocked: the client takes no bytes (its receive buffer and the socket's are full).
    pub send: Duration,
}

/// Why a connection's deadline is there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// A request head (or a new connection's first request) is late: the connection is dropped.
    Head,
    /// The connection has been idle too long: it is shut down gracefully.
    Idle,
    /// The client has taken nothing for the send timeout: the connection is dropped.
    Stalled,
}

/// One connection's activity.
pub(crate) struct Activity {
    /// Requests whose response has not ended (read without the lock by [`Watched`]).
    in_flight: AtomicUsize,
    /// Bytes arrived while no request was in flight (a fast path for [`Watched`]; the time is in `state`).
    head: AtomicBool,
    /// A write is blocked (a fast path for [`Watched`]; the time is in `state`).
    blocked: AtomicBool,
    state: Mutex<State>,
}

struct State {
    /// Requests started on this connection.
    requests: u64,
    /// When the connection opened, or its last response ended.
    idle_since: Instant,
    /// When the first byte of the next request head arrived (HTTP/1.1), if it has.
    head_since: Option<Instant>,
    /// Whether the connection speaks HTTP/2 (known from its first request).
    http2: bool,
    /// Since when writes have been blocked, if they are.
    blocked_since: Option<Instant>,
}

impl Timeouts {
    /// The shortest of the three: the longest the connection's task sleeps before it looks at the deadline
    /// again. Anything that happens later sets a deadline at least this far away, so it is not missed.
    pub(crate) fn shortest(&self) -> Duration {
        self.header_read.min(self.idle).min(self.send)
    }
}

impl Activity {
    /// A connection opened now.
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            head: AtomicBool::new(false),
            blocked: AtomicBool::new(false),
            state: Mutex::new(State {
                requests: 0,
                idle_since: Instant::now(),
                head_since: None,
                http2: false,
                blocked_since: None,
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A request started; its response's end drops the guard.
    pub(crate) fn begin(self: &Arc<Self>, version: http::Version) -> RequestGuard {
        let mut state = self.state();
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        state.requests += 1;
        state.http2 |= version == http::Version::HTTP_2;
        state.head_since = None;
        self.head.store(false, Ordering::Release);
        drop(state);
        RequestGuard(self.clone())
    }

    fn end(&self) {
        let mut state = self.state();
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            state.idle_since = Instant::now();
            state.head_since = None;
            self.head.store(false, Ordering::Release);
        }
    }

    /// Bytes arrived from the client.
    fn read(&self) {
        if self.in_flight.load(Ordering::Acquire) != 0 || self.head.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut state = self.state();
        if self.in_flight.load(Ordering::Acquire) == 0 && state.head_since.is_none() {
            state.head_since = Some(Instant::now());
        }
    }

    /// A write could not proceed: the socket's send buffer is full.
    fn write_blocked(&self) {
        if self.blocked.swap(true, Ordering::AcqRel) {
            return;
        }
        self.state().blocked_since.get_or_insert_with(Instant::now);
    }

    /// A write went through: the client takes bytes again.
    fn write_unblocked(&self) {
        if self.blocked.swap(false, Ordering::AcqRel) {
            self.state().blocked_since = None;
        }
    }

    /// When the connection is due to be closed, and why: a blocked write's send timeout, or while no request is
    /// in flight, the next request head's or the idle timeout.
    pub(crate) fn deadline(&self, timeouts: Timeouts) -> Option<(Instant, Expiry)> {
        let state = self.state();
        let stalled = state.blocked_since.map(|since| (since + timeouts.send, Expiry::Stalled));
        let waiting =
            if self.in_flight.load(Ordering::Acquire) != 0 { None } else { Some(Self::waiting(&state, timeouts)) };
        match (stalled, waiting) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// The deadline of a connection with no request in flight.
    fn waiting(state: &State, timeouts: Timeouts) -> (Instant, Expiry) {
        if state.requests == 0 {
            // The first request, HTTP/1.1 or HTTP/2, is due within the header-read timeout of the opening.
            (state.idle_since + timeouts.header_read, Expiry::Head)
        } else if state.http2 {
            // HTTP/2 frames between requests (pings, settings) are not a request head.
            (state.idle_since + timeouts.idle, Expiry::Idle)
        } else if let Some(since) = state.head_since {
            (since + timeouts.header_read, Expiry::Head)
        } else {
            (state.idle_since + timeouts.idle, Expiry::Idle)
        }
    }
}

/// Held while a request is in flight: from the call of the service to the end (or drop) of its response body.
pub(crate) struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// A response body that holds its request's [`RequestGuard`] until hyper has sent (or dropped) it.
pub(crate) struct Tracked {
    body: Body,
    _guard: RequestGuard,
}

impl Tracked {
    pub(crate) fn new(body: Body, guard: RequestGuard) -> Tracked {
        Tracked { body, _guard: guard }
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A socket that reports the bytes it reads to its connection's [`Activity`].
pub(crate) struct Watched<T> {
    io: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    pub(crate) fn new(io: T, activity: Arc<Activity>) -> Watched<T> {
        Watched { io, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl<T> Watched<T> {
    fn wrote<R>(&self, polled: Poll<R>) -> Poll<R> {
        match polled {
            Poll::Pending => self.activity.write_blocked(),
            Poll::Ready(_) => self.activity.write_unblocked(),
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts =
        Timeouts { header_read: Duration::from_secs(10), idle: Duration::from_secs(90), send: Duration::from_secs(30) };

    /// The deadline's kind, and its start (the deadline less its timeout), checked to lie in `from..=to`.
    fn started(activity: &Activity, kind: Expiry, from: Instant, to: Instant) {
        let (at, expiry) = activity.deadline(TIMEOUTS).expect("a deadline");
        assert_eq!(expiry, kind);
        let timeout = match kind {
            Expiry::Head => TIMEOUTS.header_read,
            Expiry::Idle => TIMEOUTS.idle,
            Expiry::Stalled => TIMEOUTS.send,
        };
        assert!((from..=to).contains(&(at - timeout)), "{kind:?} deadline at {at:?}, not within {from:?}..={to:?}");
    }

    #[test]
    fn the_deadline_follows_what_the_connection_does() {
        let before = Instant::now();
        let activity = Activity::new();
        let opened = Instant::now();
        // A new connection owes its first request within the header-read timeout, bytes or not.
        started(&activity, Expiry::Head, before, opened);
        activity.read();
        started(&activity, Expiry::Head, before, opened);
        let guard = activity.begin(http::Version::HTTP_11);
        assert_eq!(activity.deadline(TIMEOUTS), None, "no deadline while a request is in flight");
        activity.read(); // the request's body: not a head
        std::thread::sleep(Duration::from_millis(5));
        let ending = Instant::now();
        drop(guard);
        started(&activity, Expiry::Idle, ending, Instant::now());
        std::thread::sleep(Duration::from_millis(5));
        let head = Instant::now();
        activity.read(); // the next head starts: its own, shorter clock
        started(&activity, Expiry::Head, head, Instant::now());
        activity.read();
        started(&activity, Expiry::Head, head, Instant::now());
        let ending = Instant::now();
        drop(activity.begin(http::Version::HTTP_11));
        started(&activity, Expiry::Idle, ending, Instant::now());
    }

    #[test]
    fn http2_connections_only_have_an_idle_deadline_after_their_first_request() {
        let activity = Activity::new();
        let first = activity.begin(http::Version::HTTP_2);
        let second = activity.begin(http::Version::HTTP_2);
        drop(first);
        assert_eq!(activity.deadline(TIMEOUTS), None, "one stream is still open");
        let ending = Instant::now();
        drop(second);
        activity.read(); // a ping
        started(&activity, Expiry::Idle, ending, Instant::now());
    }

    #[test]
    fn a_blocked_write_has_the_send_timeout_in_flight_or_not() {
        let activity = Activity::new();
        let guard = activity.begin(http::Version::HTTP_11);
        let blocked = Instant::now();
        activity.write_blocked();
        let first = Instant::now();
        started(&activity, Expiry::Stalled, blocked, first);
        std::thread::sleep(Duration::from_millis(5));
        activity.write_blocked(); // still blocked: the clock does not restart
        started(&activity, Expiry::Stalled, blocked, first);
        activity.write_unblocked();
        assert_eq!(activity.deadline(TIMEOUTS), None);
        drop(guard);
        let idle = Instant::now();
        activity.write_blocked(); // the response's last bytes: the idle deadline comes later
        started(&activity, Expiry::Stalled, idle, Instant::now());
    }
}
