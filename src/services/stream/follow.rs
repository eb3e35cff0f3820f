//! The follow loop every watch stream runs after its first snapshot, and what opening or resuming one takes.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{End, Out};
use crate::auth::{Caller, Scope};
use crate::feed::token::{self, DatabaseTag, Token, TokenProblem};
use crate::feed::{Batch, Registration};
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
    _registration: Registration,
}

/// What woke a following stream.
enum Wake {
    Batch(Arc<Batch>),
    /// It fell behind the broadcast: re-read from the table.
    Lagged,
    Heartbeat,
}

impl Common {
    /// The resume token of the cursor.
    pub fn token(&self) -> String {
        token::encode(self.tag, &Token::at(self.cursor.clone()))
    }

    /// The next thing to do, or the end (shutdown, token expired, client gone).
    async fn next<M: Send + 'static>(&mut self, out: &Out<M>) -> Result<Wake, End> {
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
    /// Sends what a batch holds that the cursor has not read (the cursor has read the batch's start).
    async fn apply(&mut self, out: &mut Out<Self::Message>, batch: &Batch) -> Result<(), End>;
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
                // another replica), or one whose owed transactions would not fit: the table instead.
                if cursor.covers(&batch.from) && cursor.fits_with(&batch.up_to) {
                    stream.apply(out, &batch).await?;
                } else {
                    stream.catch_up(out).await?;
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
    /// What the stream's task holds, starting at `cursor`.
    pub fn start(self, state: &AppState, heartbeat: Duration, cursor: FeedPosition) -> Common {
        Common {
            state: state.clone(),
            tag: self.tag,
            heartbeat,
            cursor,
            batches: self.batches,
            stopping: state.stopping.clone(),
            _registration: self.registration,
        }
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
