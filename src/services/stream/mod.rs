//! What the two watch RPCs (`reconciliation::watch`, `guards::watch`) share: the response stream and the task
//! writing it ([`Delivery`], [`Out`]), and the follow loop over the replica's feed ([`follow`]).
//!
//! Each stream is a task that writes into a bounded channel the response body reads from. It catches up from
//! the event feed in PostgreSQL, then follows the replica hub's batches (`crate::feed`), going back to the
//! table whenever it might have missed one (it lagged behind the broadcast, or a batch does not start where
//! it is). Its position only moves over what it has examined, and every message carries the token of the point
//! after it, so a resumed stream continues exactly there.
//!
//! Bounds: a stream counts against per-caller and per-replica limits for as long as its transport stream
//! lives (the registration is held by the response body, not by the task: a client that stopped reading keeps
//! its slot until it reads its final status or goes away); it buffers at most `--watch-buffer` messages; when
//! the client has not read for `--watch-send-timeout` the task ends and the stream's next (and last) message is
//! RESOURCE_EXHAUSTED (SLOW_CONSUMER). Catching up from the table costs the caller one rate-limit token per page
//! and runs under a per-replica bound (`--watch-catch-up-concurrency`). On shutdown every stream ends with
//! UNAVAILABLE (SHUTTING_DOWN).

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::{ApiError, AppState};
use crate::auth::{AuthError, Caller};
use crate::feed::Registration;
use crate::storage;

mod follow;

pub use follow::{Common, Follower, PAGE, follow, heartbeat, heartbeat_interval, open, resume, watched_user};

/// How streams behave (`config::watch` builds it from the command line).
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Heartbeat interval when the request names none.
    pub heartbeat: Duration,
    /// How long a send may wait for the client to read.
    pub send_timeout: Duration,
    /// Messages buffered per stream.
    pub buffer: usize,
    /// Catch-up pages read at once on this replica.
    pub catch_up_concurrency: usize,
}

/// What a caller's rate limit charges for work a call goes on causing after it was admitted: a watch's
/// catch-up pages. The server's rate limiter implements it; a limit that is off always admits.
pub trait Budget: Send + Sync + std::fmt::Debug + 'static {
    /// Takes one call's worth of `caller`'s budget, or says how long until there is one.
    fn charge(&self, caller: &Caller) -> Result<(), Duration>;
}

/// What catching up from the table may take: every page after a catch-up's first costs the caller one
/// rate-limit token (the first is paid by the call, or is the replica's own doing when a stream fell behind the
/// broadcast), and at most `--watch-catch-up-concurrency` pages are read at once on this replica, so replays
/// cannot take the pool from everything else.
#[derive(Debug, Clone)]
pub struct CatchUp {
    budget: std::sync::Arc<dyn Budget>,
    permits: std::sync::Arc<tokio::sync::Semaphore>,
}

impl CatchUp {
    /// Charges `budget`, with `concurrency` page reads at once (at least one).
    pub fn new(budget: std::sync::Arc<dyn Budget>, concurrency: usize) -> CatchUp {
        CatchUp { budget, permits: std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency.max(1))) }
    }

    /// Page reads that may start now on this replica (for tests and metrics).
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

/// The response body's side of a stream: queued messages, unless the task left an error to deliver first
/// (when the queue is full because the client stopped reading). It holds the stream's registration, so the
/// stream counts against the limits until the transport lets go of it, whenever the task ended.
pub struct Delivery<M> {
    rx: mpsc::Receiver<Result<M, Status>>,
    abort: Option<oneshot::Receiver<Status>>,
    ended: bool,
    _registration: Option<Registration>,
}

impl<M> futures::Stream for Delivery<M> {
    type Item = Result<M, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if let Some(abort) = &mut this.abort {
            match Pin::new(abort).poll(cx) {
                Poll::Ready(Ok(status)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(status)));
                }
                // The task ended without aborting: deliver what it queued.
                Poll::Ready(Err(_)) => this.abort = None,
                Poll::Pending => {}
            }
        }
        this.rx.poll_recv(cx)
    }
}

/// Why a stream's task ended.
pub enum End {
    /// The client went away.
    Gone,
    /// The stream ends with this error.
    Failed(ApiError),
    /// The caller's token expired: the stream ends UNAUTHENTICATED (TOKEN_EXPIRED), as a new call would.
    Expired,
}

impl From<storage::StorageError> for End {
    fn from(e: storage::StorageError) -> Self {
        End::Failed(e.into())
    }
}

/// The task's side of a stream.
pub struct Out<M> {
    pub(super) tx: mpsc::Sender<Result<M, Status>>,
    abort: Option<oneshot::Sender<Status>>,
    send_timeout: Duration,
    pub(super) last_sent: Instant,
    /// Cancelled when the server shuts down.
    stopping: CancellationToken,
    /// When the caller's token expires.
    pub(super) expires: Instant,
    /// Whether [`Out::finish`] ran: if the task is dropped without it (it panicked), the stream ends INTERNAL,
    /// not with a status OK that a client would take for a normal end.
    finished: bool,
}

impl<M: Send + 'static> Out<M> {
    /// A stream for `caller`, counted against the limits by `registration`: the task's side and the response
    /// body's.
    pub fn new(state: &AppState, caller: &Caller, registration: Registration) -> (Out<M>, Delivery<M>) {
        let settings = &state.streams;
        let (tx, rx) = mpsc::channel(settings.buffer.max(1));
        let (abort_tx, abort_rx) = oneshot::channel();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let left = Duration::from_secs(caller.expires_at).saturating_sub(now).min(Duration::from_secs(366 * 86_400));
        let out = Out {
            tx,
            abort: Some(abort_tx),
            send_timeout: settings.send_timeout,
            last_sent: Instant::now(),
            stopping: state.stopping.clone(),
            expires: Instant::now() + left,
            finished: false,
        };
        (out, Delivery { rx, abort: Some(abort_rx), ended: false, _registration: Some(registration) })
    }

    /// Whether the stream must end now (shutdown, or the token expired) without waiting for anything.
    pub fn check(&self) -> Result<(), End> {
        if self.stopping.is_cancelled() {
            return Err(End::Failed(ApiError::ShuttingDown));
        }
        if Instant::now() >= self.expires {
            return Err(End::Expired);
        }
        Ok(())
    }

    /// Queues a message, waiting at most the send timeout for room (and no longer than shutdown or the token's
    /// expiry).
    pub async fn send(&mut self, message: M) -> Result<(), End> {
        self.check()?;
        let expires = self.expires;
        tokio::select! {
            biased;
            () = self.stopping.cancelled() => Err(End::Failed(ApiError::ShuttingDown)),
            () = tokio::time::sleep_until(expires) => Err(End::Expired),
            sent = tokio::time::timeout(self.send_timeout, self.tx.send(Ok(message))) => match sent {
                Ok(Ok(())) => {
                    self.last_sent = Instant::now();
                    Ok(())
                }
                Ok(Err(_)) => Err(End::Gone),
                Err(_) => Err(End::Failed(ApiError::SlowConsumer { timeout: self.send_timeout })),
            },
        }
    }

    /// Ends the stream: with its error as the last message (ahead of the queue if the queue is full).
    pub fn finish(mut self, end: End) {
        self.finished = true;
        let status = match end {
            End::Gone => return,
            End::Expired => Status::from(ApiError::Unauthenticated(AuthError::Expired)),
            End::Failed(error) => {
                match &error {
                    ApiError::SlowConsumer { .. } => tracing::info!(error = %error, "watch ended: slow consumer"),
                    ApiError::ShuttingDown => {}
                    other => tracing::info!(error = %other, "watch ended"),
                }
                Status::from(error)
            }
        };
        self.last_word(status);
    }
}

impl<M> Out<M> {
    /// Sends the stream's final status, ahead of the queue if the queue is full.
    fn last_word(&mut self, status: Status) {
        match self.tx.try_send(Err(status)) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(Err(status))) => {
                if let Some(abort) = self.abort.take() {
                    let _ = abort.send(status);
                }
            }
            Err(TrySendError::Full(Ok(_))) => {}
        }
    }
}

impl<M> Drop for Out<M> {
    fn drop(&mut self) {
        if !self.finished {
            tracing::error!("a watch stream's task ended without finishing (it panicked): the stream ends INTERNAL");
            self.last_word(Status::from(ApiError::Panicked));
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn stream() -> (Out<u32>, Delivery<u32>) {
        let (tx, rx) = mpsc::channel(4);
        let (abort_tx, abort_rx) = oneshot::channel();
        let out = Out {
            tx,
            abort: Some(abort_tx),
            send_timeout: Duration::from_secs(1),
            last_sent: Instant::now(),
            stopping: CancellationToken::new(),
            expires: Instant::now() + Duration::from_secs(60),
            finished: false,
        };
        (out, Delivery { rx, abort: Some(abort_rx), ended: false, _registration: None })
    }

    #[tokio::test]
    async fn a_stream_whose_task_panics_ends_internal_not_ok() {
        let (mut out, mut delivery) = stream();
        let task = tokio::spawn(async move {
            out.send(7).await.ok();
            panic!("a bug in a stream task");
        });
        assert!(task.await.is_err(), "the task panicked");
        assert_eq!(delivery.next().await.map(|m| m.ok()), Some(Some(7)));
        let last = delivery.next().await.expect("a final status").expect_err("an error");
        assert_eq!(last.code(), tonic::Code::Internal);
        assert!(delivery.next().await.is_none());
    }

    #[tokio::test]
    async fn a_stream_that_ends_normally_ends_with_nothing_more() {
        let (out, mut delivery) = stream();
        out.finish(End::Gone);
        assert!(delivery.next().await.is_none());
    }
}
