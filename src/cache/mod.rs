//! Cache-aside for the read RPCs: an in-process L1 (moka) in front of Redis (fred), in front of PostgreSQL, with
//! single-flight loads, O(1) invalidation heard by every replica, refresh-ahead of hot entries, a circuit
//! breaker, and stale serving while PostgreSQL is down.
//!
//! **What is cached** is per-user *state* that changes only with that user's own writes (the book: account, open
//! positions, divergences; the reconciliation status with its recent events), never prices: responses are valued
//! against the replica-local market snapshot when they are served (`market_view`), so a quote batch invalidates
//! nothing per user unless it raises or clears an alert (whose events land in the holders' logs).
//!
//! **Keys.** Every key of a user shares the hash tag `{u:<user_id>}`, so the pair read together lives in one
//! Redis Cluster slot:
//! - `<prefix>:gen:{u:<user>}`: the user's generation; invalidation is `SET NX <now µs>` + `INCR` (never
//!   `KEYS`/`SCAN`), so a generation never repeats, even after a restart without persistence or a `FLUSHALL`.
//! - `<prefix>:{u:<user>}:<kind>:<shape>`: the encoded value behind a header with the generation it was loaded
//!   under, when it was read from PostgreSQL, and until when it is fresh (TTL with jitter). It lives
//!   `stale_max_age` in Redis so it can be served stale if PostgreSQL goes down.
//!
//! A lookup is one `MGET` of the two; a value of another generation is a miss, so an acknowledged write (which
//! bumps the generation before the RPC returns) is never followed by older data from Redis. A load that raced
//! with a write stores its value under the old generation, where nobody reads it.
//!
//! **L1** holds decoded values, tagged with this replica's per-user invalidation epoch. An invalidation (this
//! replica's own, or another's heard on the invalidation channel, see `listener`) bumps the epoch and hides the
//! user's entries at once. While this replica hears every invalidation, an L1 entry is served for the value's
//! whole freshness; while it does not, only for the short `l1_ttl` (other replicas' writes then go unseen here
//! for at most that long), and while Redis is unreachable altogether for the whole freshness again (no replica
//! can see another's writes then; this keeps PostgreSQL's load at one query per key per TTL).
//!
//! **Refresh-ahead.** A hit on a value in the last `refresh_ahead` fraction of its freshness starts one
//! background load (single flight), so hot keys are replaced before they expire and no caller waits on
//! PostgreSQL for them.
//!
//! **Faults.** Every Redis call has a short timeout (fred's per-command options plus an outer timeout); a
//! breaker stops calling Redis while it fails and lets one probe through after a cooldown. Reads then go to
//! PostgreSQL ("bypass"), with no error to the caller. If an invalidation cannot reach Redis, this replica stops
//! trusting that user's Redis values for `stale_max_age`.

mod breaker;
mod flight;
mod listener;
mod metrics;
mod redis;
mod stored;
mod value;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fred::clients::Pool;
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::prelude::{Builder, Config, ReconnectPolicy};
use uuid::Uuid;

pub use breaker::{Breaker, Transition};
pub use metrics::{Event, Freshness, Metrics, Rpc, Snapshot};
pub use value::CacheValue;

use flight::{Flight, FlightGuard, Flights};
use listener::{Hearing, Invalidations, ListenerSettings};
use stored::{Stored, now_ms};
use value::{Shared, downcast};

use crate::error::ApiError;

/// Cache settings (see `config::CacheArgs` for the meaning and defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    /// When false every read goes to PostgreSQL (`x-cache: bypass`).
    pub enabled: bool,
    /// Redis URL (`redis://host:port`, `redis-cluster://...`).
    pub redis_url: String,
    /// Connections in the fred pool.
    pub pool_size: usize,
    /// Key namespace, e.g. `trading:v1`.
    pub key_prefix: String,
    /// Freshness of a cached value.
    pub ttl: Duration,
    /// Random extra TTL, as a fraction of `ttl` (0.1 = up to +10 %), so keys do not expire together.
    pub ttl_jitter: f64,
    /// How old a cached value may be and still be served (marked stale) while PostgreSQL is down.
    pub stale_max_age: Duration,
    /// How long an L1 entry is served while this replica cannot hear other replicas' invalidations.
    pub l1_ttl: Duration,
    /// Most bytes the L1 holds (keys plus encoded values): callers cannot grow it without bound.
    pub l1_max_bytes: u64,
    /// A hit within this fraction of the end of a value's freshness refreshes it in the background.
    pub refresh_ahead: f64,
    /// How often this replica sends itself a heartbeat on the invalidation channel.
    pub heartbeat: Duration,
    /// How recent the last heartbeat heard must be for this replica to count as hearing invalidations.
    pub hearing_lease: Duration,
    /// Upper bound on one Redis call.
    pub redis_timeout: Duration,
    /// Consecutive Redis failures that open the breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before probing.
    pub breaker_cooldown: Duration,
}

/// A decoded value in L1.
struct L1Entry {
    value: Shared,
    epoch: u64,
    inserted: Instant,
    fresh_until: Instant,
    /// Loaded while Redis could not be used: no replica could see another's writes then, so it is served for
    /// its whole freshness (L1 is cleared when Redis comes back).
    without_redis: bool,
    /// Bytes it stands for (key + encoded value), for the L1's byte bound.
    weight: u32,
}

/// Per-entry L1 expiry: an entry lives until its value's freshness ends.
struct L1Expiry;

impl moka::Expiry<String, Arc<L1Entry>> for L1Expiry {
    fn expire_after_create(&self, _: &String, entry: &Arc<L1Entry>, now: Instant) -> Option<Duration> {
        Some(entry.fresh_until.saturating_duration_since(now))
    }

    // A refreshed value replaces the old one under the same key: it lives by its own freshness (moka's default
    // would keep the old entry's expiry).
    fn expire_after_update(
        &self,
        key: &String,
        entry: &Arc<L1Entry>,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, entry, now)
    }
}

/// Bytes an L1 entry costs besides its key and payload (the entry, its Arcs and moka's bookkeeping, roughly).
const L1_ENTRY_OVERHEAD: usize = 128;

/// How often invalidations that did not reach Redis are retried, how many per try, and how many are kept.
const PENDING_RETRY: Duration = Duration::from_millis(100);
const PENDING_BATCH: usize = 1_000;
const PENDING_MAX: usize = 100_000;

/// The cache. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    settings: CacheSettings,
    redis: Option<Pool>,
    hearing: Option<Arc<Hearing>>,
    l1: moka::sync::Cache<String, Arc<L1Entry>>,
    epochs: Epochs,
    /// Users whose Redis values this replica must not trust (an invalidation failed to reach Redis).
    distrusted: moka::sync::Cache<Uuid, ()>,
    /// Users whose invalidation has not reached Redis yet; retried in the background until it does.
    pending: std::sync::Mutex<std::collections::HashSet<Uuid>>,
    flights: Flights,
    breaker: Breaker,
    metrics: Metrics,
}

/// This replica's invalidation epochs (shared with the listener), one per stripe of users: bumping a user's
/// stripe hides the L1 entries of everyone in it (1 in 4,096 users: a rare extra miss), in exchange for one
/// atomic load per read instead of a map lookup. Epochs only grow, so an entry can never see its epoch return.
#[derive(Clone)]
struct Epochs {
    stripes: Arc<[AtomicU64]>,
}

/// Stripes of [`Epochs`] (a power of two).
const EPOCH_STRIPES: usize = 4096;

impl Epochs {
    fn new() -> Self {
        Epochs { stripes: (0..EPOCH_STRIPES).map(|_| AtomicU64::new(0)).collect() }
    }

    fn stripe(&self, user: Uuid) -> &AtomicU64 {
        let id = user.as_u128();
        let mixed = ((id as u64) ^ ((id >> 64) as u64)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // The top bits of the product are the well-mixed ones.
        &self.stripes[(mixed >> (64 - EPOCH_STRIPES.trailing_zeros())) as usize]
    }

    fn get(&self, user: Uuid) -> u64 {
        self.stripe(user).load(Ordering::Acquire)
    }

    fn bump(&self, user: Uuid) {
        self.stripe(user).fetch_add(1, Ordering::AcqRel);
    }
}

/// What the listener changes.
struct ListenerTarget {
    epochs: Epochs,
    l1: moka::sync::Cache<String, Arc<L1Entry>>,
}

impl Invalidations for ListenerTarget {
    fn users(&self, users: &[Uuid]) {
        for user in users {
            self.epochs.bump(*user);
        }
    }

    fn flush(&self) {
        self.l1.invalidate_all();
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("settings", &self.inner.settings).finish_non_exhaustive()
    }
}

impl Cache {
    /// Builds the cache and starts connecting to Redis in the background: start-up never waits for Redis,
    /// and a Redis that is down only means reads bypass it.
    pub fn new(settings: CacheSettings) -> Result<Cache, fred::error::Error> {
        let l1 = moka::sync::Cache::builder()
            .max_capacity(settings.l1_max_bytes)
            .weigher(|_: &String, entry: &Arc<L1Entry>| entry.weight)
            .expire_after(L1Expiry)
            .build();
        let epochs = Epochs::new();
        let (redis, hearing) = if settings.enabled {
            let config = Config::from_url(&settings.redis_url)?;
            let pool = Builder::from_config(config.clone())
                .with_connection_config(|c| {
                    c.connection_timeout = Duration::from_secs(1);
                    c.internal_command_timeout = Duration::from_secs(1);
                    c.max_command_attempts = 1;
                })
                .with_performance_config(|p| p.default_command_timeout = settings.redis_timeout)
                // Without a policy fred never reconnects after losing Redis.
                .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
                .build_pool(settings.pool_size.max(1))?;
            let _connection_tasks = pool.connect();
            for client in pool.clients() {
                let l1 = l1.clone();
                // Values written while this replica could not see Redis may be missing invalidations.
                let _listener = client.on_reconnect(move |server| {
                    let l1 = l1.clone();
                    async move {
                        tracing::debug!(server = %server, "redis connected: clearing L1");
                        l1.invalidate_all();
                        Ok(())
                    }
                });
            }
            let listener = ListenerSettings {
                channel: format!("{}:invalidations", settings.key_prefix),
                heartbeat: settings.heartbeat,
                lease: settings.hearing_lease,
                timeout: settings.redis_timeout.max(Duration::from_millis(250)),
            };
            let target = ListenerTarget { epochs: epochs.clone(), l1: l1.clone() };
            let hearing = listener::start(config, listener, target)?;
            (Some(pool), Some(hearing))
        } else {
            (None, None)
        };
        let inner = Arc::new(Inner {
            distrusted: moka::sync::Cache::builder().time_to_live(settings.stale_max_age).build(),
            pending: std::sync::Mutex::new(std::collections::HashSet::new()),
            flights: Flights::default(),
            breaker: Breaker::new(settings.breaker_failures, settings.breaker_cooldown),
            metrics: Metrics::default(),
            settings,
            redis,
            hearing,
            l1,
            epochs,
        });
        let cache = Cache { inner };
        if cache.inner.redis.is_some() {
            tokio::spawn(cache.clone().retry_pending());
        }
        Ok(cache)
    }

    /// Waits (at most `limit`) until every Redis connection is up; whether they are. A replica that serves
    /// before then reads its first users without the cache (bypass), so start-up waits briefly; a Redis that
    /// is down only delays it by `limit`, then reads go to PostgreSQL as they would anyway.
    pub async fn wait_for_redis(&self, limit: Duration) -> bool {
        let Some(pool) = &self.inner.redis else { return true };
        matches!(tokio::time::timeout(limit, pool.wait_for_connect()).await, Ok(Ok(())))
    }

    /// Retries invalidations that could not reach Redis (a failover, an outage) until they do, so the other
    /// replicas drop what they hold for those users as soon as Redis is back, instead of serving it until it
    /// expires. Stops when the cache is dropped.
    async fn retry_pending(self) {
        let weak = Arc::downgrade(&self.inner);
        drop(self);
        loop {
            tokio::time::sleep(PENDING_RETRY).await;
            let Some(inner) = weak.upgrade() else { return };
            let cache = Cache { inner };
            let users: Vec<Uuid> = {
                let pending = cache.inner.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                pending.iter().copied().take(PENDING_BATCH).collect()
            };
            if users.is_empty() || !cache.inner.breaker.allow() {
                continue;
            }
            if cache.announce(&users).await {
                let mut pending = cache.inner.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for user in &users {
                    pending.remove(user);
                }
                tracing::info!(users = users.len(), "delayed cache invalidations reached redis");
            }
        }
    }

    /// Bumps the users' generations and announces them on the channel; whether Redis took it.
    async fn announce(&self, users: &[Uuid]) -> bool {
        let Some(pool) = &self.inner.redis else { return false };
        let keys: Vec<String> = users.iter().map(|u| self.gen_key(*u)).collect();
        let message = users.iter().map(Uuid::to_string).collect::<Vec<_>>().join(",");
        let channel = format!("{}:invalidations", self.inner.settings.key_prefix);
        self.redis_call(None, "pipeline SET NX, INCR, PUBLISH", redis::invalidate(pool, keys, &channel, message))
            .await
            .is_some()
    }

    /// Best effort: announces the users on the channel without bumping their generations.
    async fn announce_only(&self, users: &[Uuid]) {
        let Some(pool) = &self.inner.redis else { return };
        let message = users.iter().map(Uuid::to_string).collect::<Vec<_>>().join(",");
        let channel = format!("{}:invalidations", self.inner.settings.key_prefix);
        let client = pool.next_connected().with_options(&Cache::options());
        let publish = client.publish::<i64, _, _>(channel, message);
        let _ = tokio::time::timeout(self.inner.settings.redis_timeout, publish).await;
    }

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Whether Redis is currently believed healthy (breaker closed).
    pub fn redis_healthy(&self) -> bool {
        self.inner.redis.is_some() && self.inner.breaker.is_closed()
    }

    /// Whether this replica hears every other replica's invalidations right now (so its L1 keeps entries for
    /// their whole freshness).
    pub fn hearing_invalidations(&self) -> bool {
        self.inner.hearing.as_ref().is_some_and(|h| h.now())
    }

    /// Invalidation messages heard from the channel, and L1 flushes done because some may have been missed.
    pub fn listener_counts(&self) -> (u64, u64) {
        self.inner
            .hearing
            .as_ref()
            .map_or((0, 0), |h| (h.messages.load(Ordering::Relaxed), h.flushes.load(Ordering::Relaxed)))
    }

    /// Loads in progress (shared by their concurrent callers); zero when the cache is idle.
    pub fn flights_in_progress(&self) -> usize {
        self.inner.flights.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    fn gen_key(&self, user: Uuid) -> String {
        format!("{}:gen:{{u:{user}}}", self.inner.settings.key_prefix)
    }

    fn data_key(&self, user: Uuid, kind: &str, shape: &str) -> String {
        format!("{}:{{u:{user}}}:{kind}:{shape}", self.inner.settings.key_prefix)
    }

    /// Whether an L1 entry may be served now (see the module docs).
    fn l1_usable(&self, entry: &L1Entry, now: Instant) -> bool {
        if now >= entry.fresh_until {
            return false;
        }
        if entry.without_redis || self.hearing_invalidations() {
            return true;
        }
        if !self.redis_healthy() {
            // Nobody hears anybody while Redis is away; keep serving, and let one probe find out whether it is
            // back (L1 hits alone would never call Redis again).
            self.probe_redis_in_background();
            return true;
        }
        now.saturating_duration_since(entry.inserted) < self.inner.settings.l1_ttl
    }

    /// Sends one PING as the breaker's probe, if the breaker is due for one.
    fn probe_redis_in_background(&self) {
        if self.inner.redis.is_none() || !self.inner.breaker.allow() {
            return;
        }
        let cache = self.clone();
        tokio::spawn(async move {
            if let Some(pool) = &cache.inner.redis {
                let client = pool.next_connected().with_options(&Cache::options());
                let _ = cache.redis_call(None, "PING", client.ping::<()>(None)).await;
            }
        });
    }

    /// Serves the `kind` value of `user` for `shape` (the request's other inputs that change the value,
    /// normalised) from cache, or runs `load` once for all concurrent callers of the same key and caches its
    /// result. `rpc` is the RPC being served, for the counters.
    pub async fn get<T, F, Fut>(
        &self,
        rpc: Rpc,
        user: Uuid,
        kind: &'static str,
        shape: &str,
        load: F,
    ) -> Result<(Arc<T>, Freshness), ApiError>
    where
        T: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, ApiError>> + Send + 'static,
    {
        let metrics = &self.inner.metrics;
        if !self.inner.settings.enabled {
            metrics.record(rpc, Event::PgQuery);
            metrics.record(rpc, Event::Bypass);
            return load().await.map(|v| (Arc::new(v), Freshness::Bypass));
        }
        let key = self.data_key(user, kind, shape);
        let epoch = self.inner.epochs.get(user);
        let now = Instant::now();
        if let Some(entry) = self.inner.l1.get(&key)
            && entry.epoch == epoch
            && self.l1_usable(&entry, now)
            && let Some(value) = downcast::<T>(entry.value.clone())
        {
            metrics.record(rpc, Event::L1Hit);
            if self.near_expiry(entry.fresh_until, now) {
                self.refresh_in_background::<T, F, Fut>(rpc, user, key, epoch, load);
            }
            return Ok((value, Freshness::Hit));
        }

        // Callers that arrive after an invalidation must not join a load that started before it.
        let guard = FlightGuard::join(&self.inner.flights, format!("{key}#{epoch}"));
        let mut led = false;
        let result = guard
            .cell
            .get_or_init(|| {
                led = true;
                self.fill(rpc, user, key, epoch, load, false)
            })
            .await
            .clone();
        drop(guard);
        let (value, freshness) = result.map_err(|e| share_error(&e))?;
        let freshness = if led {
            freshness
        } else {
            // Served by another caller's load: no query of its own.
            match freshness {
                Freshness::Stale => {
                    metrics.record(rpc, Event::Stale);
                    Freshness::Stale
                }
                Freshness::Hit | Freshness::Miss | Freshness::Bypass => {
                    metrics.record(rpc, Event::Hit);
                    Freshness::Hit
                }
            }
        };
        let value = downcast::<T>(value)
            .ok_or_else(|| ApiError::Internal("a cache key was shared by values of two types".into()))?;
        Ok((value, freshness))
    }

    fn near_expiry(&self, fresh_until: Instant, now: Instant) -> bool {
        let window = self.inner.settings.ttl.mul_f64(self.inner.settings.refresh_ahead.clamp(0.0, 1.0));
        fresh_until.saturating_duration_since(now) < window
    }

    /// Starts one background load of a value near the end of its freshness (unless one is in progress).
    fn refresh_in_background<T, F, Fut>(&self, rpc: Rpc, user: Uuid, key: String, epoch: u64, load: F)
    where
        T: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, ApiError>> + Send + 'static,
    {
        // Refreshes share a flight among themselves (not with the caller's own load, which may be the one
        // that noticed the value is about to expire).
        let flight_key = format!("refresh:{key}#{epoch}");
        if FlightGuard::in_progress(&self.inner.flights, &flight_key) {
            return;
        }
        let cache = self.clone();
        tokio::spawn(async move {
            let guard = FlightGuard::join(&cache.inner.flights, flight_key);
            let _ = guard.cell.get_or_init(|| cache.fill(rpc, user, key, epoch, load, true)).await;
        });
    }

    /// The leader's work: Redis, then PostgreSQL, then populate both levels. A `refresh` takes a Redis value
    /// only if it is not itself about to expire.
    async fn fill<T, F, Fut>(&self, rpc: Rpc, user: Uuid, key: String, epoch: u64, load: F, refresh: bool) -> Flight
    where
        T: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, ApiError>> + Send + 'static,
    {
        let metrics = &self.inner.metrics;
        let settings = &self.inner.settings;
        let usable =
            self.inner.redis.is_some() && !self.inner.distrusted.contains_key(&user) && self.inner.breaker.allow();
        let mut generation = None;
        let mut stale = None;
        if usable && let Some(pool) = &self.inner.redis {
            let found = self.redis_call(Some(rpc), "MGET", redis::lookup(pool, self.gen_key(user), key.clone())).await;
            if let Some((current, stored)) = found {
                generation = Some(current);
                if let Some(s) = stored.filter(|s| s.generation == current) {
                    let now = now_ms();
                    let left = Duration::from_millis(u64::try_from(s.fresh_until_ms - now).unwrap_or(0));
                    let wanted = if refresh {
                        settings.ttl.mul_f64(settings.refresh_ahead.clamp(0.0, 1.0))
                    } else {
                        Duration::ZERO
                    };
                    if now < s.fresh_until_ms
                        && left > wanted
                        && let Some(value) = T::decode(&s.payload)
                    {
                        let value: Shared = Arc::new(value);
                        self.fill_l1(user, key.clone(), epoch, value.clone(), s.payload.len(), left, false);
                        if refresh {
                            metrics.record(rpc, Event::Refresh);
                        } else {
                            metrics.record(rpc, Event::Hit);
                            if left < settings.ttl.mul_f64(settings.refresh_ahead.clamp(0.0, 1.0)) {
                                self.refresh_in_background::<T, F, Fut>(rpc, user, key, epoch, load);
                            }
                        }
                        return Ok((value, Freshness::Hit));
                    }
                    let max_age = i64::try_from(settings.stale_max_age.as_millis()).unwrap_or(i64::MAX);
                    if now - s.read_at_ms <= max_age {
                        stale = Some(s.payload);
                    }
                }
            }
        }

        metrics.record(rpc, Event::PgQuery);
        let read_at_ms = now_ms();
        match load().await {
            Ok(value) => {
                let payload = value.encode();
                let freshness = self.jittered_ttl();
                let shared: Shared = Arc::new(value);
                self.fill_l1(user, key.clone(), epoch, shared.clone(), payload.len(), freshness, generation.is_none());
                let Some(generation) = generation else {
                    metrics.record(rpc, Event::Bypass);
                    return Ok((shared, Freshness::Bypass));
                };
                if let Some(pool) = &self.inner.redis {
                    let fresh_until_ms = read_at_ms + i64::try_from(freshness.as_millis()).unwrap_or(i64::MAX);
                    let stored = Stored { generation, read_at_ms, fresh_until_ms, payload };
                    let lifetime = i64::try_from(settings.stale_max_age.as_millis()).unwrap_or(i64::MAX);
                    let _ = self.redis_call(Some(rpc), "SET", redis::write(pool, key, stored, lifetime)).await;
                }
                metrics.record(rpc, if refresh { Event::Refresh } else { Event::Miss });
                Ok((shared, Freshness::Miss))
            }
            Err(ApiError::Unavailable(reason)) => match stale.and_then(|payload| T::decode(&payload)) {
                Some(value) => {
                    tracing::warn!(rpc = rpc.name(), %user, reason, "postgres unavailable: serving a stale cached value");
                    metrics.record(rpc, Event::Stale);
                    Ok((Arc::new(value) as Shared, Freshness::Stale))
                }
                None => Err(Arc::new(ApiError::Unavailable(reason))),
            },
            Err(other) => Err(Arc::new(other)),
        }
    }

    /// Puts a value in L1 for `freshness`, unless an invalidation happened since its load started.
    #[allow(clippy::too_many_arguments)]
    fn fill_l1(
        &self,
        user: Uuid,
        key: String,
        epoch: u64,
        value: Shared,
        bytes: usize,
        freshness: Duration,
        without_redis: bool,
    ) {
        if self.inner.epochs.get(user) != epoch {
            return;
        }
        let now = Instant::now();
        let weight = u32::try_from(key.len() + bytes + L1_ENTRY_OVERHEAD).unwrap_or(u32::MAX);
        let entry = L1Entry { value, epoch, inserted: now, fresh_until: now + freshness, without_redis, weight };
        self.inner.l1.insert(key, Arc::new(entry));
    }

    fn jittered_ttl(&self) -> Duration {
        // Uuid v4 bytes are a ready source of randomness; no need for a dedicated RNG here.
        let unit = (Uuid::new_v4().as_u128() % 10_000) as f64 / 10_000.0;
        self.inner.settings.ttl.mul_f64(1.0 + self.inner.settings.ttl_jitter.max(0.0) * unit)
    }

    /// Invalidates everything cached for `users`: at once in this replica's L1, and for every replica by bumping
    /// each user's generation in Redis and announcing them on the invalidation channel (one pipelined round
    /// trip). Call after the write committed, before acknowledging it.
    pub async fn invalidate(&self, users: &[Uuid]) {
        if users.is_empty() || !self.inner.settings.enabled {
            return;
        }
        for user in users {
            self.inner.epochs.bump(*user);
        }
        if self.inner.redis.is_none() {
            return;
        }
        let reached = self.inner.breaker.allow() && self.announce(users).await;
        // A read that fetched the old value from Redis before the bump landed may have filled L1 since the first
        // epoch bump: bump again so nothing read before the acknowledgement survives it.
        for user in users {
            self.inner.epochs.bump(*user);
        }
        if !reached {
            tracing::warn!(
                users = users.len(),
                "could not invalidate in redis: ignoring their redis entries here, retrying in the background"
            );
            // The generations may live on a node that is down (a cluster failing over) while the channel still
            // works through the others: tell the other replicas now, so they stop serving these users from L1.
            self.announce_only(users).await;
            let mut pending = self.inner.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for user in users {
                self.inner.distrusted.insert(*user, ());
                if pending.len() < PENDING_MAX {
                    pending.insert(*user);
                }
            }
        }
    }
}

/// Re-creates a shared load error for one of the callers that waited on it.
fn share_error(e: &ApiError) -> ApiError {
    e.share()
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    /// A cache whose Redis is unreachable (nothing listens on port 1), so every load goes to `load`.
    fn cache() -> Cache {
        Cache::new(CacheSettings {
            enabled: true,
            redis_url: "redis://127.0.0.1:1".into(),
            pool_size: 1,
            key_prefix: "test".into(),
            ttl: Duration::from_secs(5),
            ttl_jitter: 0.0,
            stale_max_age: Duration::from_secs(30),
            l1_ttl: Duration::from_millis(500),
            l1_max_bytes: 1 << 20,
            refresh_ahead: 0.2,
            heartbeat: Duration::from_millis(250),
            hearing_lease: Duration::from_secs(1),
            redis_timeout: Duration::from_millis(50),
            breaker_failures: 1,
            breaker_cooldown: Duration::from_secs(60),
        })
        .unwrap()
    }

    type Response = crate::pb::GetDrawdownStatusResponse;
    crate::prost_cache_value!(crate::pb::GetDrawdownStatusResponse);

    fn never() -> impl Future<Output = Result<Response, ApiError>> + Send + 'static {
        std::future::pending()
    }

    #[tokio::test]
    async fn a_load_whose_callers_all_give_up_leaves_no_flight_behind() {
        let cache = cache();
        let user = Uuid::new_v4();
        let one =
            tokio::time::timeout(Duration::from_millis(50), cache.get(Rpc::GetDrawdownStatus, user, "t", "", never));
        let two =
            tokio::time::timeout(Duration::from_millis(80), cache.get(Rpc::GetDrawdownStatus, user, "t", "", never));
        let (one, two) = tokio::join!(one, two);
        assert!(one.is_err() && two.is_err(), "both callers timed out");
        assert_eq!(cache.flights_in_progress(), 0);
    }

    #[tokio::test]
    async fn a_load_that_panics_leaves_no_flight_behind_and_the_next_caller_loads_again() {
        let cache = cache();
        let user = Uuid::new_v4();
        let panicking = || async { panic!("boom") };
        let caught =
            std::panic::AssertUnwindSafe(cache.get::<Response, _, _>(Rpc::GetDrawdownStatus, user, "t", "", panicking))
                .catch_unwind()
                .await;
        assert!(caught.is_err(), "the panic propagates to the caller (the server's catch-panic layer answers it)");
        assert_eq!(cache.flights_in_progress(), 0);
        let ok = cache.get(Rpc::GetDrawdownStatus, user, "t", "", || async { Ok(Response::default()) }).await;
        assert!(ok.is_ok());
        assert_eq!(cache.flights_in_progress(), 0);
    }

    #[tokio::test]
    async fn a_waiter_takes_over_when_the_leader_is_cancelled() {
        let cache = cache();
        let user = Uuid::new_v4();
        let leader =
            tokio::time::timeout(Duration::from_millis(30), cache.get(Rpc::GetDrawdownStatus, user, "t", "", never));
        let waiter = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            cache
                .get(Rpc::GetDrawdownStatus, user, "t", "", || async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(Response::default())
                })
                .await
        };
        let (leader, waiter) = tokio::join!(leader, waiter);
        assert!(leader.is_err());
        assert!(waiter.is_ok(), "{waiter:?}");
        assert_eq!(cache.flights_in_progress(), 0);
    }
}
