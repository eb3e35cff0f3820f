//! The replica's background work as one set with one stop: every task the server runs besides serving calls
//! (health probe, market refresher, feed hub, clock, rate-limit sweeper, admin listener, REST gateway) is
//! spawned here, sees the same cancellation, and is awaited or aborted together when the server stops.

use std::future::Future;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The background tasks and their one stop signal.
pub struct Background {
    tasks: JoinSet<()>,
    stop: CancellationToken,
}

impl Background {
    /// No tasks yet; `stop` is the signal they all watch (the server cancels it when shutdown begins).
    pub fn new(stop: CancellationToken) -> Self {
        Background { tasks: JoinSet::new(), stop }
    }

    /// Runs `task` until it ends by itself or the set is shut down; `name` is logged if it fails.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(async move {
            task.await;
            tracing::debug!(task = name, "background task ended");
        });
    }

    /// Cancels the stop signal (if nobody has yet), then aborts whatever is still running (the tasks that
    /// watch the signal have usually ended during the drain; the admin listener serves until here) and waits
    /// until every task is gone.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        self.tasks.shutdown().await;
    }
}
