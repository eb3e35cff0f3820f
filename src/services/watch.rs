//! The watch streams: `WatchReconciliationEvents` and `WatchGuardStatus`.
//!
//! Each stream is a task that writes into a bounded channel the response body reads from. It catches up from
//! the event feed in PostgreSQL, then follows the replica hub's batches (`crate::watch`), going back to the
//! table whenever it might have missed one (it lagged behind the broadcast, or a batch does not start where
//! it is). Its position only moves over what it has examined, and every message carries the token of the point
//! after it, so a resumed stream continues exactly there.
//!
//! Bounds: a stream counts against per-caller and per-replica limits while it is open; it buffers at most
//! `--watch-buffer` messages; when the client has not read for `--watch-send-timeout` the task ends and the
//! stream's next (and last) message is RESOURCE_EXHAUSTED (SLOW_CONSUMER). On shutdown every stream ends with
//! UNAVAILABLE (SHUTTING_DOWN).

use std::collections::{HashMap, HashSet};
use std::future::Future as _;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tonic::Status;
use uuid::Uuid;

use super::decode::{self, caller};
use super::encode::{self, ts};
use super::{AppState, guards};
use crate::auth::{Caller, Scope};
use crate::domain::events::EventType;
use crate::error::ApiError;
use crate::pb;
use crate::storage::feed::{self, FeedEvent, FeedPosition};
use crate::storage::{self, Book};
use crate::watch::token::{self, DatabaseTag, Token, TokenProblem};
use crate::watch::{Batch, Registration};

/// Events per catch-up read, and accounts per snapshot read.
const PAGE: i64 = 500;
/// `user_id` meaning every user.
pub const ALL_USERS: &str = "-";
/// Bounds of a requested heartbeat interval.
const HEARTBEAT_BOUNDS: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(300));

/// How streams behave (from `config::WatchArgs`).
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// Heartbeat interval when the request names none.
    pub heartbeat: Duration,
    /// How long a send may wait for the client to read.
    pub send_timeout: Duration,
    /// Messages buffered per stream.
    pub buffer: usize,
}

// ---------------------------------------------------------------------------------------------------------------
// The response stream and the task writing it.

/// The response body's side of a stream: queued messages, unless the task left an error to deliver first
/// (when the queue is full because the client stopped reading).
pub struct Delivery<M> {
    rx: mpsc::Receiver<Result<M, Status>>,
    abort: Option<oneshot::Receiver<Status>>,
    ended: bool,
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
enum End {
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
struct Out<M> {
    tx: mpsc::Sender<Result<M, Status>>,
    abort: Option<oneshot::Sender<Status>>,
    send_timeout: Duration,
    last_sent: Instant,
    /// The server is shutting down.
    stopping: watch::Receiver<bool>,
    /// When the caller's token expires.
    expires: Instant,
}

impl<M: Send + 'static> Out<M> {
    fn new(state: &AppState, caller: &Caller) -> (Out<M>, Delivery<M>) {
        let settings = &state.watch;
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
        };
        (out, Delivery { rx, abort: Some(abort_rx), ended: false })
    }

    /// Whether the stream must end now (shutdown, or the token expired) without waiting for anything.
    fn check(&self) -> Result<(), End> {
        if *self.stopping.borrow() {
            return Err(End::Failed(ApiError::ShuttingDown));
        }
        if Instant::now() >= self.expires {
            return Err(End::Expired);
        }
        Ok(())
    }

    /// Queues a message, waiting at most the send timeout for room (and no longer than shutdown or the token's
    /// expiry).
    async fn send(&mut self, message: M) -> Result<(), End> {
        self.check()?;
        let expires = self.expires;
        tokio::select! {
            biased;
            () = async { let _ = self.stopping.wait_for(|stop| *stop).await; } => Err(End::Failed(ApiError::ShuttingDown)),
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
    fn finish(mut self, end: End) {
        let status = match end {
            End::Gone => return,
            End::Expired => Status::from(crate::auth::AuthError::Expired),
            End::Failed(error) => {
                match &error {
                    ApiError::SlowConsumer { .. } => tracing::info!(error = %error, "watch ended: slow consumer"),
                    ApiError::ShuttingDown => {}
                    other => tracing::info!(error = %other, "watch ended"),
                }
                Status::from(error)
            }
        };
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

/// What every stream's task holds.
struct Common {
    state: AppState,
    tag: DatabaseTag,
    heartbeat: Duration,
    cursor: FeedPosition,
    batches: broadcast::Receiver<Arc<Batch>>,
    stopping: watch::Receiver<bool>,
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
    fn token(&self) -> String {
        token::encode(self.tag, Token::at(self.cursor))
    }

    /// The next thing to do, or the end (shutdown, token expired, client gone).
    async fn next<M: Send + 'static>(&mut self, out: &Out<M>) -> Result<Wake, End> {
        let beat = out.last_sent + self.heartbeat;
        tokio::select! {
            biased;
            _ = self.stopping.wait_for(|stop| *stop) => Err(End::Failed(ApiError::ShuttingDown)),
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

fn heartbeat(caught_up: bool) -> pb::WatchHeartbeat {
    pb::WatchHeartbeat { caught_up, sent_time: Some(ts(Utc::now())) }
}

/// What a kind of stream does with what [`follow`] hands it.
trait Follower {
    /// The stream's message.
    type Message: Send + 'static;
    fn common(&mut self) -> &mut Common;
    /// A heartbeat message with this resume token.
    fn heartbeat(resume_token: String) -> Self::Message;
    /// Sends what the table holds after the cursor, up to the feed's horizon.
    async fn catch_up(&mut self, out: &mut Out<Self::Message>) -> Result<(), End>;
    /// Sends what a batch holds after the cursor (the batch starts at or before it, and ends after it).
    async fn apply(&mut self, out: &mut Out<Self::Message>, batch: &Batch) -> Result<(), End>;
}

/// A stream's life after its first snapshot: catch up from the table, say so with a heartbeat, then follow the
/// batches, going back to the table when it lagged or a batch starts past the cursor, with a heartbeat whenever
/// the stream has been silent for its interval.
async fn follow<F: Follower>(stream: &mut F, out: &mut Out<F::Message>) -> Result<(), End> {
    stream.catch_up(out).await?;
    beat(stream, out).await?;
    loop {
        match stream.common().next(out).await? {
            Wake::Batch(batch) => {
                let cursor = stream.common().cursor;
                if batch.up_to <= cursor {
                    continue;
                }
                if batch.from > cursor {
                    stream.catch_up(out).await?;
                } else {
                    stream.apply(out, &batch).await?;
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

// ---------------------------------------------------------------------------------------------------------------
// Requests.

/// Whose data a watch follows: one user (`Some`) or everybody (`None`, `-`, which needs `trading:read:any`).
fn watched_user(caller: &Caller, requested: &str) -> Result<Option<Uuid>, ApiError> {
    if requested == ALL_USERS {
        decode::require_scope(caller, Scope::ReadAny)?;
        return Ok(None);
    }
    decode::target_user(caller, "user_id", requested).map(Some)
}

/// The requested heartbeat interval, or the default.
fn heartbeat_interval(value: Option<&prost_types::Duration>, default: Duration) -> Result<Duration, ApiError> {
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
async fn open(state: &AppState, caller: &Caller, guard: Option<Option<Uuid>>) -> Result<Opened, ApiError> {
    let registration = state.hub.register(caller.user_id, guard)?;
    let batches = state.hub.subscribe();
    let tag = state.hub.tag().await?;
    Ok(Opened { registration, batches, tag })
}

/// A stream registered and subscribed, before its starting point is known.
struct Opened {
    registration: Registration,
    batches: broadcast::Receiver<Arc<Batch>>,
    tag: DatabaseTag,
}

impl Opened {
    /// What the stream's task holds, starting at `cursor`.
    fn start(self, state: &AppState, heartbeat: Duration, cursor: FeedPosition) -> Common {
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
async fn resume(state: &AppState, tag: DatabaseTag, text: &str) -> Result<Token, ApiError> {
    let token = token::decode(tag, text).map_err(ApiError::ResumeTokenInvalid)?;
    if token.position > state.db.run("feed.now", feed::now(state.db.pool()?)).await? {
        return Err(ApiError::ResumeTokenInvalid(TokenProblem::Ahead));
    }
    Ok(token)
}

// ---------------------------------------------------------------------------------------------------------------
// WatchReconciliationEvents.

type EventMessage = pb::WatchReconciliationEventsResponse;

/// Starts a WatchReconciliationEvents stream.
pub async fn watch_events(
    state: &AppState,
    request: tonic::Request<pb::WatchReconciliationEventsRequest>,
) -> Result<Delivery<EventMessage>, ApiError> {
    let caller = caller(&request)?;
    let req = request.into_inner();
    let user = watched_user(&caller, &req.user_id)?;
    let types = super::reconciliation::event_types(&req.event_types)?;
    let heartbeat = heartbeat_interval(req.heartbeat_interval.as_ref(), state.watch.heartbeat)?;
    let start = pb::WatchStart::try_from(req.start)
        .map_err(|_| ApiError::invalid("start", format!("{} is not a WatchStart", req.start)))?;
    let opened = open(state, &caller, None).await?;
    let cursor = if !req.resume_token.is_empty() {
        resume(state, opened.tag, &req.resume_token).await?.position
    } else if start == pb::WatchStart::Oldest {
        FeedPosition::START
    } else {
        state.hub.position().await?
    };
    let (out, delivery) = Out::new(state, &caller);
    let stream = EventsWatch { common: opened.start(state, heartbeat, cursor), user, types };
    tokio::spawn(stream.run(out));
    Ok(delivery)
}

struct EventsWatch {
    common: Common,
    user: Option<Uuid>,
    types: Option<Vec<EventType>>,
}

impl EventsWatch {
    async fn run(mut self, mut out: Out<EventMessage>) {
        let end = follow(&mut self, &mut out).await;
        out.finish(end.err().unwrap_or(End::Gone));
    }
}

impl Follower for EventsWatch {
    type Message = EventMessage;

    fn common(&mut self) -> &mut Common {
        &mut self.common
    }

    fn heartbeat(resume_token: String) -> EventMessage {
        EventMessage {
            kind: Some(pb::watch_reconciliation_events_response::Kind::Heartbeat(heartbeat(true))),
            resume_token,
        }
    }

    async fn catch_up(&mut self, out: &mut Out<EventMessage>) -> Result<(), End> {
        loop {
            out.check()?;
            let db = &self.common.state.db;
            let page = db.run("feed.page", feed::page(db.pool()?, self.user, self.common.cursor, PAGE)).await?;
            for event in &page.events {
                self.offer(out, event).await?;
            }
            self.common.cursor = self.common.cursor.max(page.next);
            if page.caught_up {
                return Ok(());
            }
        }
    }

    async fn apply(&mut self, out: &mut Out<EventMessage>, batch: &Batch) -> Result<(), End> {
        for event in &batch.events {
            if self.user.is_none_or(|u| u == event.user_id) {
                self.offer(out, event).await?;
            }
        }
        self.common.cursor = self.common.cursor.max(batch.up_to);
        Ok(())
    }
}

impl EventsWatch {
    /// Sends one event if it is after the cursor and passes the filter; the cursor moves over it either way.
    async fn offer(&mut self, out: &mut Out<EventMessage>, event: &FeedEvent) -> Result<(), End> {
        if event.position <= self.common.cursor {
            return Ok(());
        }
        self.common.cursor = event.position;
        if self.types.as_ref().is_some_and(|types| !types.contains(&event.event.event_type)) {
            return Ok(());
        }
        let message = EventMessage {
            kind: Some(pb::watch_reconciliation_events_response::Kind::Event(encode::event(
                event.event.clone(),
                event.user_id,
            ))),
            resume_token: self.common.token(),
        };
        out.send(message).await
    }
}

// ---------------------------------------------------------------------------------------------------------------
// WatchGuardStatus.

type GuardMessage = pb::WatchGuardStatusResponse;

/// Starts a WatchGuardStatus stream.
pub async fn watch_guards(
    state: &AppState,
    request: tonic::Request<pb::WatchGuardStatusRequest>,
) -> Result<Delivery<GuardMessage>, ApiError> {
    let caller = caller(&request)?;
    let req = request.into_inner();
    let user = watched_user(&caller, &req.user_id)?;
    let heartbeat = heartbeat_interval(req.heartbeat_interval.as_ref(), state.watch.heartbeat)?;
    let opened = open(state, &caller, Some(user)).await?;
    let resumed =
        if req.resume_token.is_empty() { None } else { Some(resume(state, opened.tag, &req.resume_token).await?) };
    let (cursor, snapshot) = match (user, resumed) {
        // One account: its status is sent first in any case.
        (Some(_), Some(token)) => (token.position, Snapshot::One),
        (Some(_), None) => (state.hub.position().await?, Snapshot::One),
        (None, None) => (state.hub.position().await?, Snapshot::All { after: None }),
        (None, Some(Token { position, snapshot_after: Some(after) })) => {
            (position, Snapshot::All { after: Some(after) })
        }
        (None, Some(Token { position, snapshot_after: None })) => (position, Snapshot::Changed),
    };
    let (out, delivery) = Out::new(state, &caller);
    let stream = GuardsWatch { common: opened.start(state, heartbeat, cursor), user, sent: HashMap::new() };
    tokio::spawn(stream.run(out, snapshot));
    Ok(delivery)
}

/// What a guard watch sends before following changes.
enum Snapshot {
    /// The watched account's status.
    One,
    /// Every account's status, in id order, after `after`.
    All { after: Option<Uuid> },
    /// (Resumed) the accounts that changed after the cursor.
    Changed,
}

struct GuardsWatch {
    common: Common,
    user: Option<Uuid>,
    /// What was last sent per account, as a [`change_key`].
    sent: HashMap<Uuid, u64>,
}

impl GuardsWatch {
    async fn run(mut self, mut out: Out<GuardMessage>, snapshot: Snapshot) {
        let end = self.follow(&mut out, snapshot).await;
        out.finish(end.err().unwrap_or(End::Gone));
    }

    async fn follow(&mut self, out: &mut Out<GuardMessage>, snapshot: Snapshot) -> Result<(), End> {
        match (snapshot, self.user) {
            (Snapshot::One, Some(user)) => {
                let token = self.common.token();
                self.send_status(out, user, None, token).await?;
            }
            (Snapshot::All { mut after }, _) => {
                let start = self.common.cursor;
                loop {
                    let db = &self.common.state.db;
                    let ids =
                        db.run("accounts.ids_after", storage::accounts::ids_after(db.pool()?, after, PAGE)).await?;
                    for user in &ids {
                        let token =
                            token::encode(self.common.tag, Token { position: start, snapshot_after: Some(*user) });
                        self.send_status(out, *user, None, token).await?;
                    }
                    if (ids.len() as i64) < PAGE {
                        break;
                    }
                    after = ids.last().copied();
                }
            }
            _ => {}
        }
        // Then what changed while the snapshot was read (or, resumed, since the token), and on.
        follow(self, out).await
    }
}

impl Follower for GuardsWatch {
    type Message = GuardMessage;

    fn common(&mut self) -> &mut Common {
        &mut self.common
    }

    fn heartbeat(resume_token: String) -> GuardMessage {
        GuardMessage { kind: Some(pb::watch_guard_status_response::Kind::Heartbeat(heartbeat(true))), resume_token }
    }

    /// Re-judges every watched account with events in the table after the cursor, page by page.
    async fn catch_up(&mut self, out: &mut Out<GuardMessage>) -> Result<(), End> {
        loop {
            out.check()?;
            let db = &self.common.state.db;
            let page = db.run("feed.page", feed::page(db.pool()?, self.user, self.common.cursor, PAGE)).await?;
            // The hub does this for its batches, but this page may be ahead of them.
            crate::watch::hub::show_alerts_of(&self.common.state.market, &page.events).await;
            let changed: HashSet<Uuid> = page.events.iter().map(|e| e.user_id).collect();
            self.send_changed(out, changed.into_iter().collect(), None, page.next).await?;
            if page.caught_up {
                return Ok(());
            }
        }
    }

    /// Re-judges the watched accounts with events in the batch.
    async fn apply(&mut self, out: &mut Out<GuardMessage>, batch: &Batch) -> Result<(), End> {
        let changed = batch
            .events
            .iter()
            .filter(|e| e.position > self.common.cursor && self.user.is_none_or(|u| u == e.user_id))
            .map(|e| e.user_id)
            .collect();
        self.send_changed(out, changed, Some(batch), batch.up_to).await
    }
}

impl GuardsWatch {
    /// Sends the accounts whose status changed among `users`, then moves the cursor to `to`. Until the last
    /// one, messages carry the token of the cursor before: a stream resumed in between judges them all again
    /// (a repeated status is harmless; a skipped one would not be).
    async fn send_changed(
        &mut self,
        out: &mut Out<GuardMessage>,
        mut users: Vec<Uuid>,
        batch: Option<&Batch>,
        to: FeedPosition,
    ) -> Result<(), End> {
        users.sort_unstable();
        users.dedup();
        let before = self.common.token();
        let after = token::encode(self.common.tag, Token::at(to));
        let last = users.len().saturating_sub(1);
        for (i, user) in users.into_iter().enumerate() {
            let book = batch.and_then(|b| b.books.get(&user)).cloned();
            let token = if i == last { after.clone() } else { before.clone() };
            self.send_status_if_changed(out, user, book, token).await?;
        }
        self.common.cursor = self.common.cursor.max(to);
        Ok(())
    }

    async fn send_status(
        &mut self,
        out: &mut Out<GuardMessage>,
        user: Uuid,
        book: Option<Arc<Book>>,
        resume_token: String,
    ) -> Result<(), End> {
        self.sent.remove(&user);
        self.send_status_if_changed(out, user, book, resume_token).await
    }

    async fn send_status_if_changed(
        &mut self,
        out: &mut Out<GuardMessage>,
        user: Uuid,
        book: Option<Arc<Book>>,
        resume_token: String,
    ) -> Result<(), End> {
        let state = &self.common.state;
        let book = match book {
            Some(book) => book,
            None => Arc::new(state.db.run("book.load", storage::book::load(state.db.pool()?, user)).await?),
        };
        // The later of this server's clock and the database's (which dates the clock's events), so a countdown
        // the database says ran out is judged run out here too.
        let now = Utc::now().max(book.read_at);
        let status = guards::guard_status(&book, &state.market.current(), &state.rules, now);
        let key = change_key(&status);
        if self.sent.insert(user, key) == Some(key) {
            return Ok(());
        }
        let message = GuardMessage {
            kind: Some(pb::watch_guard_status_response::Kind::Update(pb::GuardStatusUpdate {
                user_id: user.to_string(),
                status: Some(status),
            })),
            resume_token,
        };
        out.send(message).await
    }
}

/// What makes a guard status "changed": the verdicts, the drawdown level and its spell, whether the liquidation
/// countdown has run out, and the set of alerts with their severities. Not the values that merely tick
/// (countdown, quote age) or move with every sync (equity, drawdown percent).
fn change_key(status: &pb::GetGuardStatusResponse) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    status.system_status.hash(&mut h);
    status.any_positions_should_close.hash(&mut h);
    if let Some(d) = &status.drawdown {
        d.level.hash(&mut h);
        d.should_close_all.hash(&mut h);
        d.level_since_time.as_ref().map(|t| (t.seconds, t.nanos)).hash(&mut h);
        d.time_to_liquidation.as_ref().map(|t| t.seconds == 0 && t.nanos == 0).hash(&mut h);
    }
    for a in &status.market_alerts {
        (&a.alert_id, &a.symbol, a.kind, a.severity, a.should_close_positions).hash(&mut h);
    }
    h.finish()
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

    #[test]
    fn only_verdicts_levels_and_alerts_change_a_guard_status_not_ticking_values() {
        let mut status = pb::GetGuardStatusResponse {
            drawdown: Some(pb::DrawdownStatus {
                level: pb::DrawdownLevel::Critical.into(),
                time_to_liquidation: Some(prost_types::Duration { seconds: 8, nanos: 0 }),
                equity: "900".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let key = change_key(&status);
        let drawdown = status.drawdown.as_mut().unwrap();
        drawdown.time_to_liquidation = Some(prost_types::Duration { seconds: 3, nanos: 0 });
        drawdown.equity = "850".into();
        assert_eq!(change_key(&status), key, "ticking and moving values are not changes");
        status.drawdown.as_mut().unwrap().time_to_liquidation = Some(prost_types::Duration::default());
        let due = change_key(&status);
        assert_ne!(due, key, "the countdown running out is");
        status.market_alerts.push(pb::MarketAlert { symbol: "XAUUSD".into(), ..Default::default() });
        assert_ne!(change_key(&status), due, "an alert is");
    }
}
