//! The HTTP server behind [`crate::Gateway::serve`]: an accept loop of its own around hyper-util's connections,
//! because `axum::serve` takes no settings. It adds what a public listener needs:
//!
//! - a cap on open connections (`--http-max-connections`): at the cap the loop stops accepting, so further
//!   clients wait in the kernel's listen backlog (their connect succeeds, their request waits) until a
//!   connection closes;
//! - a header-read timeout and an idle timeout per connection ([`activity`]);
//! - a graceful shutdown: stop accepting, let each connection finish what it is answering (the gateway ends
//!   its streams first), and close whatever is still open after the drain time.
//!
//! HTTP/1.1, h2c and upgrades work as under `axum::serve`, and handlers still get `ConnectInfo<SocketAddr>`.

mod activity;
mod connection;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

pub(crate) use activity::Timeouts;

/// The server's settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    /// Connections open at once.
    pub max_connections: u32,
    /// A connection's timeouts.
    pub timeouts: Timeouts,
    /// How long connections may take to close after the shutdown began.
    pub drain: Duration,
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains the connections.
pub(crate) async fn run(
    listener: TcpListener,
    router: Router,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
) {
    let permits = Arc::new(Semaphore::new(settings.max_connections as usize));
    let (stop, stopped) = watch::channel(false);
    let shared = Arc::new(connection::Shared {
        router,
        builder: connection::builder(),
        timeouts: settings.timeouts,
        drain: settings.drain,
    });
    tokio::pin!(shutdown);
    'accept: loop {
        // At the cap, nothing is accepted until a connection closes.
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break 'accept,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (stream, remote) = loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break 'accept,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => break accepted,
                    // The client gave up before it was accepted: nothing to do.
                    Err(e) if is_connection_error(&e) => {}
                    // Out of file descriptors or memory: wait a little rather than spin.
                    Err(error) => {
                        tracing::warn!(%error, "cannot accept an HTTP connection; retrying in 1 s");
                        tokio::select! {
                            () = &mut shutdown => break 'accept,
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                },
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection::serve(stream, remote, shared.clone(), stopped.clone(), permit));
    }
    drop(listener);
    stop.send_replace(true);
    // Every connection holds a permit until it closes.
    let _ = permits.acquire_many(settings.max_connections).await;
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}
