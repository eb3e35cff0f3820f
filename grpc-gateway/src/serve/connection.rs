//! One accepted connection: HTTP/1.1 or cleartext HTTP/2 (h2c, prior knowledge) through hyper-util's `auto`
//! builder, with upgrades, as `axum::serve` does, plus the deadlines of [`super::activity`] and a bounded drain
//! when the server or the idle timeout shuts it down.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::Instant;
use tower::ServiceExt as _;

use super::activity::{Activity, Expiry, Timeouts, Tracked, Watched};

/// What every connection shares.
pub(crate) struct Shared {
    pub router: Router,
    pub builder: Builder<TokioExecutor>,
    pub timeouts: Timeouts,
    /// How long a connection may take to close once shut down gracefully by the server.
    pub drain: Duration,
}

/// The hyper-util builder: HTTP/1.1 and h2c. Header-read and idle timeouts are [`Activity`]'s, not hyper's:
/// hyper's HTTP/1 header-read timeout also runs while a keep-alive connection waits for its next request (so it
/// would double as a short idle timeout), and does not run while `auto` is still telling the versions apart (a
/// client that sends nothing would be held for ever).
pub(crate) fn builder() -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().header_read_timeout(None);
    // The CONNECT protocol, for WebSockets over HTTP/2, as axum::serve sets it.
    builder.http2().enable_connect_protocol();
    builder
}

/// Serves one connection until it closes, is timed out, or the server stops (`stop` turns true); `permit` is its
/// place under `--http-max-connections`, given back when it closes.
pub(crate) async fn serve(
    stream: TcpStream,
    remote: SocketAddr,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
) {
    let _permit = permit;
    let activity = Activity::new();
    let service = {
        let (activity, router) = (activity.clone(), shared.router.clone());
        hyper::service::service_fn(move |request: http::Request<Incoming>| {
            let guard = activity.begin(request.version());
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(remote));
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await.unwrap_or_else(|never| match never {});
                Ok::<_, Infallible>(response.map(|body| Tracked::new(body, guard)))
            }
        })
    };
    let io = TokioIo::new(Watched::new(stream, activity.clone()));
    let connection = shared.builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    // Once shut down gracefully: when the connection is dropped if it has not closed by then.
    let mut draining: Option<Instant> = None;
    loop {
        // The connection's deadline, but no further than the shortest timeout: nothing wakes this task when the
        // connection's activity changes (that would cost every request a wake-up), and whatever happens from now
        // on sets a deadline at least that far away.
        let deadline = match draining {
            Some(at) => at,
            None => {
                let look_again = Instant::now() + shared.timeouts.shortest();
                activity.deadline(shared.timeouts).map_or(look_again, |(at, _)| at.min(look_again))
            }
        };
        let sleep = tokio::time::sleep_until(deadline);
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(error) = served {
                    tracing::debug!(%remote, %error, "HTTP connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|stop| *stop), if draining.is_none() => {
                connection.as_mut().graceful_shutdown();
                draining = Some(Instant::now() + shared.drain);
            }
            () = sleep => {
                if draining.is_some() {
                    tracing::debug!(%remote, "HTTP connection still open after its drain time; closing it");
                    return;
                }
                let now = Instant::now();
                match activity.deadline(shared.timeouts) {
                    Some((at, Expiry::Head)) if at <= now => {
                        tracing::debug!(%remote, "no complete request head within the header-read timeout; closing");
                        return;
                    }
                    Some((at, Expiry::Stalled)) if at <= now => {
                        tracing::info!(%remote, "HTTP client took nothing for the send timeout; closing its connection");
                        return;
                    }
                    Some((at, Expiry::Idle)) if at <= now => {
                        tracing::debug!(%remote, "HTTP connection idle for the idle timeout; closing it");
                        connection.as_mut().graceful_shutdown();
                        // Usually closes at once (HTTP/1.1) or after the GOAWAY (HTTP/2).
                        draining = Some(now + shared.timeouts.header_read);
                    }
                    _ => {}
                }
            }
        }
    }
}
