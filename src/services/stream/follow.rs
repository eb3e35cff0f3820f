//! The follow loop every watch stream runs after its first snapshot, and what opening or resuming one takes.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Delivery, End, Out};
use crate::auth::{Caller, Scope};
use crate::feed::token::{self, DatabaseTag, Token, TokenProblem};
use crate::feed::{Batch, Contents, Registration};
use crate::pb;
use crate::services::encode::ts;
use crate::services::{ApiError, AppState, decode};
use crate::storage::feed::{self, FeedPosition};

/// Events per catch-up read, and accounts per snapshot read.
pub const PAGE: i64 = 500;
/// `user_id` meaning every user.
pub const ALL_USERS: &str = "-";
/// Bounds of a requested heartbeat interval.
const HEARTBEAT_BOUNDS: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(300));

/// What every stream's task holds.
pub struct Common {
    /// What the handlers share.
    pub state: AppState,
    /// The database tag of the tokens it sends.
    pub tag: DatabaseTag,
    heartbeat: Duration,
    /// Everything up to here has been examined.
    pub cursor: FeedPosition,
    batches: broadcast::Receiver<Arc<Batch>>,
    stopping: CancellationToken,
    /// Whose stream it is (its catch-up pages are charged to it).
    caller: Caller,
}

/// What woke a following stream.
enum Wake {
    Batch(Arc<Batch>),
    /// It fell behind the broadcast: re-read from the table.
    Lagged,
    Heartbeat,
}

impl Common {
    /// Waits for the right to read one catch-up page: a token of the caller's rate budget unless this is the
    /// catch-up's `first` page, then one of the replica's catch-up permits, to be held while the page is read
    /// (not while it is sent). Gives up on shutdown, on the token's expiry or when the client goes away.
    pub async fn page_permit<M: Send + 'static>(
        &self,
        out: &Out<M>,
        first: bool,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, End> {
        let catch_up = &self.state.catch_up;
        if !first {
            while let Err(wait) = catch_up.budget.charge(&self.caller) {
                tracing::debug!(user_id = %self.caller.user_id, wait_ms = wait.as_millis() as u64, "catch-up paced by the rate limit");
                self.unless_ended(out, tokio::time::sleep(wait)).await?;
            }
        }
        self.read_permit(out).await
    }

    /// Waits for one of the replica's catch-up permits, to be held while the stream reads PostgreSQL itself (a
    /// page, or the book of an account it must judge), so that streams never read with more than
    /// `--watch-catch-up-concurrency` connections of the pool at once.
    pub async fn read_permit<M: Send + 'static>(&self, out: &Out<M>) -> Result<tokio::sync::OwnedSemaphorePermit, End> {
        self.unless_ended(out, self.state.catch_up.permits.clone().acquire_owned())
            .await?
            .map_err(|_| End::Failed(ApiError::ShuttingDown))
    }

    /// `wait`, unless the stream must end first.
    async fn unless_ended<M: Send + 'static, T>(&self, out: &Out<M>, wait: impl Future<Output = T>) -> Result<T, End> {
        tokio::select! {
            biased;
            () = self.stopping.cancelled() => Err(End::Failed(ApiError::ShuttingDown)),
            () = tokio::time::sleep_until(out.expires) => Err(End::Expired),
            () = out.tx.closed() => Err(End::Gone),
            value = wait => Ok(value),
        }
    }

    /// The resume token of the cursor.
    pub fn token(&self) -> String {
        token::encode(self.tag, &Token::at(self.cursor.clone()))
    }

    /// The next thing to do, or the end (shutdown, token expired, client gone).
    async fn next<M: Send + 'static>(&mut self, out: &Out<M>) -> Result<Wake, End> {
        if self.state.hub.current_tag().is_some_and(|now| now != self.tag) {
            // PostgreSQL is another database now (a standby promoted): this stream's position, and its tokens,
            // mean nothing there. The client re-reads and watches again.
            return Err(End::Failed(ApiError::ResumeTokenInvalid(TokenProblem::OtherDatabase)));
        }
        let beat = out.last_sent + self.heartbeat;
        tokio::select! {
            biased;
            () = self.stopping.cancelled() => Err(End::Failed(ApiError::ShuttingDown)),
            () = tokio::time::sleep_until(out.expires) => Err(End::Expired),
            () = out.tx.closed() => Err(End::Gone),
            received = self.batches.recv() => match received {
                Ok(batch) => Ok(Wake::Batch(batch)),
                Err(broadcast::error::RecvError::Lagged(_)) => Ok(Wake::Lagged),
                Err(broadcast::error::RecvError::Closed) => Err(End::Failed(ApiError::ShuttingDown)),
            },
            () = tokio::time::sleep_until(beat) => Ok(Wake::Heartbeat),
        }
    }
}

/// A heartbeat sent now.
pub fn heartbeat(caught_up: bool) -> pb::WatchHeartbeat {
    pb::WatchHeartbeat { caught_up, sent_time: Some(ts(Utc::now())) }
}

/// What a kind of stream does with what [`follow`] hands it.
pub trait Follower {
    /// The stream's message.
    type Message: Send + 'static;
    /// What every stream holds.
    fn common(&mut self) -> &mut Common;
    /// A heartbeat message with this resume token.
    fn heartbeat(resume_token: String) -> Self::Message;
    /// Sends what the table holds that the cursor has not read, as far as the feed is readable.
    async fn catch_up(&mut self, out: &mut Out<Self::Message>) -> Result<(), End>;
    /// Sends what a batch holds (`contents`) that the cursor has not read (the cursor has read the batch's start).
    async fn apply(&mut self, out: &mut Out<Self::Message>, batch: &Batch, contents: &Contents) -> Result<(), End>;
}

/// A stream's life after its first snapshot: catch up from the table, say so with a heartbeat, then follow the
/// batches, going back to the table when it lagged or a batch starts where the cursor has not read, with a
/// heartbeat whenever the stream has been silent for its interval.
pub async fn follow<F: Follower>(stream: &mut F, out: &mut Out<F::Message>) -> Result<(), End> {
    stream.catch_up(out).await?;
    beat(stream, out).await?;
    loop {
        match stream.common().next(out).await? {
            Wake::Batch(batch) => {
                let cursor = &stream.common().cursor;
                if cursor.covers(&batch.up_to) {
                    continue;
                }
                // A batch this stream has not read the start of (it lagged, or its cursor came from a token of
                // another replica), one whose owed transactions would not fit, or one whose contents the hub has
                // let go of (memory): the table instead.
                let contents = batch.contents();
                match contents {
                    Some(contents) if cursor.covers(&batch.from) && cursor.fits_with(&batch.up_to) => {
                        stream.apply(out, &batch, &contents).await?;
                    }
                    _ => stream.catch_up(out).await?,
                }
            }
            Wake::Lagged => stream.catch_up(out).await?,
            Wake::Heartbeat => beat(stream, out).await?,
        }
    }
}

async fn beat<F: Follower>(stream: &mut F, out: &mut Out<F::Message>) -> Result<(), End> {
    let token = stream.common().token();
    out.send(F::heartbeat(token)).await
}

/// Whose data a watch follows: one user (`Some`) or everybody (`None`, `-`, which needs `trading:read:any`).
pub fn watched_user(caller: &Caller, requested: &str) -> Result<Option<Uuid>, ApiError> {
    if requested == ALL_USERS {
        decode::require_scope(caller, Scope::ReadAny)?;
        return Ok(None);
    }
    decode::target_user(caller, "user_id", requested).map(Some)
}

/// The requested heartbeat interval, or the default.
pub fn heartbeat_interval(value: Option<&prost_types::Duration>, default: Duration) -> Result<Duration, ApiError> {
    let Some(d) = value else { return Ok(default) };
    if d.seconds == 0 && d.nanos == 0 {
        return Ok(default);
    }
    let (min, max) = HEARTBEAT_BOUNDS;
    let interval = u64::try_from(d.seconds)
        .ok()
        .zip(u32::try_from(d.nanos).ok().filter(|n| *n < 1_000_000_000))
        .map(|(s, n)| Duration::new(s, n))
        .filter(|i| (min..=max).contains(i))
        .ok_or_else(|| {
            ApiError::invalid(
                "heartbeat_interval",
                format!("must be between {} s and {} s", min.as_secs(), max.as_secs()),
            )
        })?;
    Ok(interval)
}

/// The stream's registration, its subscription (taken before any read, so nothing falls between the catch-up
/// and the batches) and the token's database tag.
pub async fn open(state: &AppState, caller: &Caller, guard: Option<Option<Uuid>>) -> Result<Opened, ApiError> {
    let registration = state.hub.register(caller.user_id, guard)?;
    let batches = state.hub.subscribe();
    let tag = state.hub.tag().await?;
    Ok(Opened { registration, batches, tag })
}

/// A stream registered and subscribed, before its starting point is known.
pub struct Opened {
    registration: Registration,
    batches: broadcast::Receiver<Arc<Batch>>,
    /// The database tag of the stream's tokens.
    pub tag: DatabaseTag,
}

impl Opened {
    /// The stream, starting at `cursor`: what its task holds, the task's side of the stream and the response
    /// body (which holds the registration).
    pub fn start<M: Send + 'static>(
        self,
        state: &AppState,
        caller: &Caller,
        heartbeat: Duration,
        cursor: FeedPosition,
    ) -> (Common, Out<M>, Delivery<M>) {
        let (out, delivery) = Out::new(state, caller, self.registration);
        let common = Common {
            state: state.clone(),
            tag: self.tag,
            heartbeat,
            cursor,
            batches: self.batches,
            stopping: state.stopping.clone(),
            caller: caller.clone(),
        };
        (common, out, delivery)
    }
}

/// The token a request resumes from: made for this database and not ahead of its feed.
pub async fn resume(state: &AppState, tag: DatabaseTag, text: &str) -> Result<Token, ApiError> {
    let token = token::decode(tag, text).map_err(ApiError::ResumeTokenInvalid)?;
    if token.position.horizon > state.db.run("feed.xmax", feed::xmax(state.db.pool()?)).await? {
        return Err(ApiError::ResumeTokenInvalid(TokenProblem::Ahead));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_interval_is_the_default_when_absent_and_bounded_otherwise() {
        let default = Duration::from_secs(15);
        assert_eq!(heartbeat_interval(None, default).unwrap(), default);
        let d = |seconds, nanos| prost_types::Duration { seconds, nanos };
        assert_eq!(heartbeat_interval(Some(&d(0, 0)), default).unwrap(), default);
        assert_eq!(heartbeat_interval(Some(&d(2, 500_000_000)), default).unwrap(), Duration::from_millis(2500));
        for bad in [d(0, 1), d(301, 0), d(-1, 0), d(5, -1), d(0, 2_000_000_000)] {
            assert!(heartbeat_interval(Some(&bad), default).is_err(), "{bad:?}");
        }
    }
}
