//! The replica's feed reader and the batches it broadcasts (see the module doc of `feed`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use sqlx::PgPool;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::batch::{Batch, Contents, Retained};
use super::lag::Lag;
use super::token::DatabaseTag;
use crate::cache::Cache;
use crate::domain::events::EventType;
use crate::market_view::MarketView;
use crate::storage::feed::{self, FeedEvent, FeedPosition};
use crate::storage::{Book, StorageError};
use crate::telemetry::error_chain;

/// Events per feed read.
const PAGE: i64 = 500;
/// A transaction the reader has owed this long is logged (once) with the session holding it.
const OVERDUE_AFTER: Duration = Duration::from_secs(60);
/// How often the hub reads the database's identity again while the feed is readable (it also does whenever
/// the feed becomes readable after it was not): a failover behind an unchanged address can be noticed this late
/// at most.
const IDENTITY_RECHECK: Duration = Duration::from_secs(10);
/// Books loaded at once for one batch.
const BOOK_LOADS: usize = 8;

/// How the hub reads and what it allows.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// Re-read this often without a wake-up while this replica hears other replicas' writes (a safety net:
    /// a wake-up is only a hint).
    pub safety_interval: Duration,
    /// Re-read this often while it does not (Redis away, or the cache disabled): the bounded fallback.
    pub poll_interval: Duration,
    /// Batches a slow stream may fall behind before it must re-read from the table.
    pub capacity: usize,
    /// Bytes of recent batches' contents (events, books) kept for streams to apply; older ones are let go of
    /// and a stream that comes to them reads the table.
    pub batch_memory: usize,
    /// Streams per caller.
    pub max_per_user: usize,
    /// Streams on this replica.
    pub max_streams: usize,
}

/// Why a stream cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// A limit on open streams is reached.
    #[error("too many watch streams: at most {limit} per {}", .per.as_str())]
    TooManyWatches {
        /// The limit.
        limit: usize,
        /// What it counts.
        per: Per,
    },
    /// The feed could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What a stream limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    /// One caller's streams.
    User,
    /// This replica's streams.
    Replica,
}

impl Per {
    /// `user` or `replica`.
    pub fn as_str(self) -> &'static str {
        match self {
            Per::User => "user",
            Per::Replica => "replica",
        }
    }
}

/// The replica's hub. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    market: MarketView,
    settings: HubSettings,
    /// The database tag of resume tokens, once read; the reader reads it again now and then (a failover).
    tag: Mutex<Option<DatabaseTag>>,
    batches: broadcast::Sender<Arc<Batch>>,
    /// `up_to` of the last batch sent (`None` until the first read).
    position: Mutex<Option<FeedPosition>>,
    /// The transactions the reader waits for.
    lag: Lag,
    streams: Mutex<Streams>,
    /// Woken by every write acknowledged by any replica (`Cache::writes`).
    wake: Arc<Notify>,
    /// Whether other replicas' writes are heard, which sets how often to re-read without a wake-up; told of
    /// the commits each batch shows before it goes out.
    cache: Cache,
    /// When the last read of the feed began (`None` while resting).
    read_started: Mutex<Option<std::time::Instant>>,
    /// The contents of the most recent batches, kept alive.
    retained: Mutex<Retained>,
    /// When the database's identity was last read by the reader.
    identity_read: Mutex<Option<std::time::Instant>>,
}

#[derive(Debug, Default)]
struct Streams {
    total: usize,
    per_caller: HashMap<Uuid, usize>,
    /// Guard watchers per watched account, and of every account.
    guard_users: HashMap<Uuid, usize>,
    guard_all: usize,
}

impl Inner {
    fn last_position(&self) -> Option<FeedPosition> {
        self.position.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set_position(&self, at: FeedPosition) {
        *self.position.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(at);
    }

    /// Whether a stream is open on this replica.
    fn watched(&self) -> bool {
        self.streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner).total > 0
    }

    /// Stops following while nobody watches: forgets the position (the next stream starts from the database's
    /// position then, and the next read too; a stream whose first batch does not start where it is reads the
    /// table in between) and what was owed.
    fn rest(&self) {
        *self.position.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        *self.read_started.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        *self.retained.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Retained::default();
        self.lag.clear();
    }
}

/// An open stream, counted against the limits until dropped.
#[derive(Debug)]
pub struct Registration {
    hub: Arc<Inner>,
    caller: Uuid,
    /// `Some(None)`: a guard watch of every account; `Some(Some(u))`: of `u`.
    guard: Option<Option<Uuid>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut streams = self.hub.streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        streams.total -= 1;
        if streams.total == 0 {
            // The last stream: the reader rests from now on, and its position goes stale, so forget it now.
            self.hub.rest();
        }
        decrement(&mut streams.per_caller, self.caller);
        match self.guard {
            Some(None) => streams.guard_all -= 1,
            Some(Some(user)) => decrement(&mut streams.guard_users, user),
            None => {}
        }
    }
}

fn decrement(counts: &mut HashMap<Uuid, usize>, key: Uuid) {
    if let Some(n) = counts.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(&key);
        }
    }
}

impl Hub {
    /// A hub over `pool`, woken by the writes `cache` hears of; it reads once [`Hub::run`] runs.
    pub fn new(pool: PgPool, market: MarketView, settings: HubSettings, cache: Cache) -> Hub {
        let (batches, _) = broadcast::channel(settings.capacity.max(1));
        Hub {
            inner: Arc::new(Inner {
                pool,
                market,
                settings,
                tag: Mutex::new(None),
                batches,
                position: Mutex::new(None),
                lag: Lag::default(),
                streams: Mutex::new(Streams::default()),
                wake: cache.writes(),
                cache,
                read_started: Mutex::new(None),
                retained: Mutex::new(Retained::default()),
                identity_read: Mutex::new(None),
            }),
        }
    }

    /// The transactions the reader waits for (`/metrics` reads it).
    pub fn lag(&self) -> Lag {
        self.inner.lag.clone()
    }

    /// The pool streams read from.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The database tag of resume tokens (the reader reads it again every [`IDENTITY_RECHECK`] and whenever
    /// the feed becomes readable after it was not).
    pub async fn tag(&self) -> Result<DatabaseTag, StorageError> {
        if let Some(tag) = self.current_tag() {
            return Ok(tag);
        }
        let id = feed::database_id(&self.inner.pool).await?;
        Ok(*self
            .inner
            .tag
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert(DatabaseTag::of(&id)))
    }

    /// The database tag as last read, if it has been. A stream whose tag is no longer this one follows a
    /// database that is not there any more (a failover to another timeline) and must end.
    pub fn current_tag(&self) -> Option<DatabaseTag> {
        *self.inner.tag.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a new stream of `caller` against the limits (`guard`: see [`Registration`]).
    pub fn register(&self, caller: Uuid, guard: Option<Option<Uuid>>) -> Result<Registration, HubError> {
        let settings = &self.inner.settings;
        let mut streams = self.inner.streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if streams.total >= settings.max_streams {
            return Err(HubError::TooManyWatches { limit: settings.max_streams, per: Per::Replica });
        }
        let mine = streams.per_caller.entry(caller).or_default();
        if *mine >= settings.max_per_user {
            return Err(HubError::TooManyWatches { limit: settings.max_per_user, per: Per::User });
        }
        *mine += 1;
        streams.total += 1;
        if streams.total == 1 {
            // The reader rests while nobody watches: start it.
            self.inner.wake.notify_one();
        }
        match guard {
            Some(None) => streams.guard_all += 1,
            Some(Some(user)) => *streams.guard_users.entry(user).or_default() += 1,
            None => {}
        }
        drop(streams);
        Ok(Registration { hub: self.inner.clone(), caller, guard })
    }

    /// Open streams on this replica.
    pub fn streams(&self) -> usize {
        self.inner.streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner).total
    }

    /// The batches from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Batch>> {
        self.inner.batches.subscribe()
    }

    /// Where the last batch ended, if the hub has read; else the feed's position now from the database.
    pub async fn position(&self) -> Result<FeedPosition, StorageError> {
        let known = self.inner.last_position();
        match known {
            Some(position) => Ok(position),
            None => feed::now(&self.inner.pool).await,
        }
    }

    /// Reads the feed whenever a write is acknowledged (by any replica: the cache's invalidation channel carries
    /// the news) and, without one, every safety interval, or every poll interval while other replicas' writes
    /// cannot be heard; until `stop` is cancelled. While no stream is open on the replica it does not read at
    /// all (a replica that only takes writes and reads spends nothing on the feed), and the first stream to
    /// open wakes it.
    pub async fn run(self, stop: CancellationToken) {
        let mut failing = false;
        loop {
            if !self.inner.watched() {
                self.inner.rest();
            } else {
                match self.read_forward(failing).await {
                    Ok(()) if failing => {
                        tracing::info!("event feed readable again");
                        failing = false;
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        tracing::warn!(error = %error_chain(&e), "cannot read the event feed; retrying");
                        failing = true;
                    }
                    Err(_) => {}
                }
                self.log_overdue().await;
            }
            // Until a wake-up, or until the re-read is due: after the safety interval while other replicas'
            // writes are heard, after the poll interval while they are not (checked every tick, so losing Redis
            // shortens a wait already begun).
            let read_at = tokio::time::Instant::now();
            let settings = &self.inner.settings;
            let tick = settings.poll_interval.min(settings.safety_interval);
            loop {
                tokio::select! {
                    () = self.inner.wake.notified() => break,
                    () = tokio::time::sleep(tick) => {}
                    () = stop.cancelled() => return,
                }
                let idle = if self.inner.cache.hearing_invalidations() {
                    settings.safety_interval
                } else {
                    settings.poll_interval
                };
                if read_at.elapsed() >= idle {
                    break;
                }
            }
        }
    }

    /// Logs, once each, the transactions the reader has owed for longer than [`OVERDUE_AFTER`], with the session
    /// (or prepared transaction) holding each: such a session also holds PostgreSQL's xmin back, which keeps
    /// vacuum from removing dead rows anywhere in the cluster.
    async fn log_overdue(&self) {
        let overdue = self.inner.lag.overdue(OVERDUE_AFTER);
        if overdue.is_empty() {
            return;
        }
        match feed::blockers(&self.inner.pool, &overdue).await {
            Ok(blockers) => {
                for b in blockers {
                    tracing::warn!(
                        tx = b.tx,
                        pid = b.pid,
                        database = b.database,
                        user = b.user,
                        application = b.application,
                        state = b.state,
                        transaction_start = b.transaction_start.map(|t| t.to_rfc3339()),
                        prepared_gid = b.prepared_gid,
                        "a transaction has been running for over a minute: watch streams deliver its events when \
                         it commits, and it holds the cluster's xmin back"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), transactions = ?overdue, "cannot look up long-running transactions")
            }
        }
    }

    /// Reads and broadcasts pages until the feed is caught up; first reads the database's identity if it is not
    /// known, the last read `failed` (PostgreSQL may be another one now: a standby promoted), or it was last read
    /// [`IDENTITY_RECHECK`] ago.
    async fn read_forward(&self, failed: bool) -> Result<(), StorageError> {
        let inner = &self.inner;
        let known = self.current_tag();
        let due = inner
            .identity_read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_none_or(|at| at.elapsed() >= IDENTITY_RECHECK);
        if known.is_none() || failed || due {
            let tag = DatabaseTag::of(&feed::database_id(&inner.pool).await?);
            *inner.identity_read.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(std::time::Instant::now());
            if known.is_some_and(|k| k != tag) {
                tracing::warn!(
                    "the database's identity changed (a failover to another timeline, or a restore): open watch \
                     streams end and resume tokens issued before are refused (clients re-read and watch again)"
                );
                // Positions of the other database mean nothing here.
                *inner.position.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                inner.lag.clear();
            }
            *inner.tag.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tag);
        }
        let known = inner.last_position();
        let mut at = match known {
            Some(at) => at,
            None => {
                // First read: start now (streams catch up on what came before from the table themselves).
                let at = feed::now(&inner.pool).await?;
                inner.set_position(at.clone());
                at
            }
        };
        loop {
            let started = std::time::Instant::now();
            let page = feed::page(&inner.pool, None, &at, PAGE).await?;
            let since = inner.read_started.lock().unwrap_or_else(std::sync::PoisonError::into_inner).replace(started);
            if !page.events.is_empty() {
                // Before anyone hears of these commits, make sure this replica's reads show them.
                let mut users: Vec<Uuid> = page.events.iter().map(|e| e.user_id).collect();
                users.sort_unstable();
                users.dedup();
                inner.cache.committed(&users, since);
            }
            show_alerts_of(&inner.market, &page.events).await;
            let books = self.books_for(&page.events).await;
            inner.lag.observe(&page.next, page.capped);
            let moved = !page.events.is_empty() || page.next != at;
            let from = std::mem::replace(&mut at, page.next.clone());
            inner.set_position(at.clone());
            // Nothing new, not even a transaction that ended: nothing to tell. No receivers is fine: nobody watches.
            if moved {
                inner.lag.delivered(page.events.iter().map(|e| e.event.occurred_at));
                let contents = Arc::new(Contents::new(page.events, books));
                let batch = Batch::new(from, page.next, &contents);
                let budget = inner.settings.batch_memory;
                inner.retained.lock().unwrap_or_else(std::sync::PoisonError::into_inner).keep(contents, budget);
                let _ = inner.batches.send(Arc::new(batch));
            }
            if page.caught_up {
                return Ok(());
            }
        }
    }

    /// The books of accounts with events in `events` that can change a guard status and that someone watches
    /// the guard status of; an account whose book cannot be read is left out (its watchers read it themselves).
    async fn books_for(&self, events: &[FeedEvent]) -> HashMap<Uuid, Arc<Book>> {
        let users = {
            let streams = self.inner.streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            guard_books_wanted(events, streams.guard_all > 0, |u| streams.guard_users.contains_key(u))
        };
        let pool = &self.inner.pool;
        futures::stream::iter(users)
            .map(|user| async move { (user, crate::storage::book::load(pool, user).await) })
            .buffer_unordered(BOOK_LOADS)
            .filter_map(|(user, book)| async move { book.ok().map(|b| (user, Arc::new(b))) })
            .collect()
            .await
    }
}

/// The accounts whose books a batch of `events` should carry: those with an event that can change a guard
/// status (a failed sync or a divergence cannot) and a guard watcher (of every account, or of them).
fn guard_books_wanted(events: &[FeedEvent], all_watched: bool, watched: impl Fn(&Uuid) -> bool) -> Vec<Uuid> {
    let mut users: Vec<Uuid> = events
        .iter()
        .filter(|e| e.event.event_type.may_change_guards())
        .map(|e| e.user_id)
        .filter(|u| all_watched || watched(u))
        .collect();
    users.sort_unstable();
    users.dedup();
    users
}

/// How recent an event a stream read from the table itself must be for [`show_commits_of`] to report it.
const RECENT: Duration = Duration::from_secs(60);

/// A stream catching up reads the table itself, and can come across commits as fresh as the hub's (a resume on
/// another replica right after a writer died before invalidating, a stream that fell behind): tells the cache
/// of the recent ones, as the hub does of its batches (`Cache::committed`). Older events' writers invalidated
/// long ago; a transaction that ran for over [`RECENT`] before committing is what this misses.
pub fn show_commits_of(cache: &Cache, events: &[FeedEvent]) {
    let recent = chrono::Utc::now() - RECENT;
    let mut users: Vec<Uuid> = events.iter().filter(|e| e.event.occurred_at >= recent).map(|e| e.user_id).collect();
    if users.is_empty() {
        return;
    }
    users.sort_unstable();
    users.dedup();
    cache.committed(&users, None);
}

/// Guard watchers judge alerts from the market snapshot: when `events` raise or clear alerts, re-reads it so it
/// shows them (the periodic refresh may not have come by yet).
pub async fn show_alerts_of(market: &MarketView, events: &[FeedEvent]) {
    let alerts =
        |e: &FeedEvent| matches!(e.event.event_type, EventType::MarketAlertRaised | EventType::MarketAlertCleared);
    if events.iter().any(alerts)
        && let Err(e) = market.refresh().await
    {
        tracing::warn!(error = %error_chain(&e), "cannot refresh the market snapshot for watchers");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::batch::tests::event;

    #[test]
    fn books_are_loaded_only_for_watched_accounts_with_events_that_can_change_a_guard() {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let events = vec![
            event(a, EventType::SyncFailed, "failed"),
            event(b, EventType::DivergenceDetected, "diverged"),
            event(b, EventType::SyncCompleted, "synced"),
            event(c, EventType::SyncFailed, "failed"),
            event(c, EventType::DivergenceResolved, "resolved"),
        ];
        assert_eq!(guard_books_wanted(&events, true, |_| false), vec![b]);
        assert_eq!(guard_books_wanted(&events, false, |u| *u == b), vec![b]);
        assert!(guard_books_wanted(&events, false, |u| *u == a || *u == c).is_empty());
        assert!(guard_books_wanted(&events, false, |_| false).is_empty(), "nobody watches guards");
        let unknown = [event(a, EventType::Unknown, "a newer kind")];
        assert_eq!(guard_books_wanted(&unknown, true, |_| false), vec![a], "a kind it does not know might");
    }
}
