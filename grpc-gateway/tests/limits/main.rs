//! The gateway's limits on a real listener (127.0.0.1:0) in front of a fake upstream ([`fake`]): stream send
//! timeouts, the stream cap, the upstream connection pools, and the HTTP server's header-read and idle timeouts,
//! connection cap and graceful shutdown. Clients are hand-written HTTP/1.1 over TCP ([`client`]) so that a test
//! decides exactly what is sent and when it is read. Timeouts are short and configured; nothing is timed.

mod client;
mod fake;
mod server;
mod streams;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use trading_gateway::upstream::{self, ConnectOptions};
use trading_gateway::{Gateway, HttpArgs};

/// A standalone gateway serving until [`Running::shut_down`] (or the test's end).
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    served: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Starts the shutdown; resolves when `serve` has returned, or after `within` (then false).
    pub async fn shut_down(mut self, within: Duration) -> bool {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(within, &mut self.served).await.is_ok()
    }
}

/// A standalone gateway on 127.0.0.1:0 in front of `upstream`.
pub async fn gateway(upstream: SocketAddr, args: HttpArgs, options: ConnectOptions) -> Running {
    let upstreams = upstream::connect(&format!("http://{upstream}"), &options).unwrap();
    let gateway = Gateway::new(upstreams, args).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(async move {
        gateway
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await
    });
    Running { addr, stop: Some(stop), served }
}

/// Polls `condition` every 50 ms until it holds or `within` passes; whether it held.
pub async fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
