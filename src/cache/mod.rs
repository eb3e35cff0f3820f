//! Cache-aside for the read RPCs: an in-process L1 (moka) in front of Redis (fred), with single-flight loads,
//! O(1) invalidation, a circuit breaker, and stale serving while PostgreSQL is down.
//!
//! **Keys.** Every key of a user shares the hash tag `{u:<user_id>}`, so the pair read together lives in one
//! Redis Cluster slot:
//! - `<prefix>:{u:<user>}:gen`: the user's generation counter; invalidation is `INCR` (never `KEYS`/`SCAN`).
//! - `<prefix>:{u:<user>}:<rpc>:<request shape>`: the encoded protobuf response, prefixed by the generation it
//!   was loaded under, when it was read from PostgreSQL, and until when it is fresh (TTL with jitter). It lives
//!   `stale_max_age` in Redis so it can be served stale if PostgreSQL goes down.
//!
//! - `<prefix>:market:gen`: the market generation. A quote moves P&L and alerts not only for the holders of the
//!   quoted symbol but for every account that converts through it (a GBPUSD quote revalues a GBP account's
//!   gold), so quote ingest bumps this one counter, and responses that depend on prices also carry it.
//!
//! One round trip (a pipeline: `MGET` of the user's two keys, plus `GET` of the market generation for
//! price-dependent RPCs) answers a lookup; a value whose generations differ from the counters is a miss, so an
//! acknowledged write (which bumps a counter before the RPC returns) is never followed by older data from
//! Redis. A load that raced with a write stores its value under the old generation, where nobody reads it.
//!
//! **L1** entries carry this replica's per-user invalidation epoch, so this replica's own invalidations hide
//! them at once; other replicas' invalidations reach L1 within its short TTL. While Redis is unreachable (when
//! replicas cannot see each other's invalidations at all) L1 keeps responses for the full TTL, so PostgreSQL's
//! load stays at one query per key per TTL. L1 is cleared when Redis recovers.
//!
//! **Faults.** Every Redis call has a short timeout (fred's per-command options plus an outer timeout); a
//! breaker stops calling Redis while it fails and lets one probe through after a cooldown. Reads then go to
//! PostgreSQL ("bypass"), with no error to the caller. If an invalidation cannot reach Redis, this replica stops
//! trusting that user's Redis values for `stale_max_age`.

mod breaker;
mod metrics;
mod redis;
mod stored;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::clients::Pool;
use fred::interfaces::{ClientLike, EventInterface, KeysInterface};
use fred::prelude::{Builder, Config, Expiration, ReconnectPolicy};
use prost::Message;
use tokio::sync::OnceCell;
use uuid::Uuid;

pub use breaker::{Breaker, Transition};
pub use metrics::{Event, Freshness, Metrics, Rpc, Snapshot};

use redis::incr_all;
use stored::{Stored, now_ms};

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
    /// Freshness of a cached response.
    pub ttl: Duration,
    /// Random extra TTL, as a fraction of `ttl` (0.1 = up to +10 %), so keys do not expire together.
    pub ttl_jitter: f64,
    /// How old a cached response may be and still be served (marked stale) while PostgreSQL is down.
    pub stale_max_age: Duration,
    /// TTL of the in-process L1.
    pub l1_ttl: Duration,
    /// Most bytes the L1 holds (keys plus encoded responses): callers cannot grow it without bound.
    pub l1_max_bytes: u64,
    /// Upper bound on one Redis call.
    pub redis_timeout: Duration,
    /// Consecutive Redis failures that open the breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before probing.
    pub breaker_cooldown: Duration,
}

/// This replica's invalidation epochs when a load started: the user's and the market's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Epochs {
    user: u64,
    market: u64,
}

/// A response in L1.
#[derive(Debug)]
struct L1Entry {
    payload: Vec<u8>,
    epochs: Epochs,
    /// How long it may stay: the L1 TTL, or less if the value's freshness ends sooner.
    ttl: Duration,
}

/// Per-entry L1 expiry: each entry carries its own remaining lifetime.
struct L1Expiry;

impl moka::Expiry<String, Arc<L1Entry>> for L1Expiry {
    fn expire_after_create(&self, _: &String, entry: &Arc<L1Entry>, _: std::time::Instant) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// Bytes an L1 entry costs besides its key and payload (the entry, its Arc and moka's bookkeeping, roughly).
const L1_ENTRY_OVERHEAD: usize = 128;

/// How long this replica remembers an invalidation epoch (far longer than any request may run).
const EPOCH_LIFETIME: Duration = Duration::from_secs(120);

/// The outcome of a shared load.
type Flight = Result<(Vec<u8>, Freshness), Arc<ApiError>>;

/// Loads in progress, by key and epochs: the shared cell and how many callers are waiting on it.
type Flights = Mutex<HashMap<String, (Arc<OnceCell<Flight>>, usize)>>;

/// One caller's share of a flight. Dropping it removes the flight from the map once the load is done, or
/// when it was the last caller waiting: a load whose callers were all cancelled (deadline, reset stream) or
/// that panicked must not leave its entry behind.
struct FlightGuard<'a> {
    flights: &'a Flights,
    key: String,
    cell: Arc<OnceCell<Flight>>,
}

impl<'a> FlightGuard<'a> {
    fn join(flights: &'a Flights, key: String) -> Self {
        let mut map = flights.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (cell, callers) = map.entry(key.clone()).or_insert_with(|| (Arc::new(OnceCell::new()), 0));
        *callers += 1;
        let cell = cell.clone();
        FlightGuard { flights, key, cell }
    }
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.flights.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((cell, callers)) = map.get_mut(&self.key)
            && Arc::ptr_eq(cell, &self.cell)
        {
            *callers -= 1;
            if *callers == 0 || cell.initialized() {
                map.remove(&self.key);
            }
        }
    }
}

/// The cache. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    settings: CacheSettings,
    redis: Option<Pool>,
    l1: moka::future::Cache<String, Arc<L1Entry>>,
    /// Per-user invalidation epoch of this replica; entries live longer than any L1 entry they could hide.
    epochs: moka::sync::Cache<Uuid, u64>,
    next_epoch: AtomicU64,
    /// This replica's market epoch, bumped by its own quote ingests.
    market_epoch: AtomicU64,
    /// Users whose Redis values this replica must not trust (an invalidation failed to reach Redis).
    distrusted: moka::sync::Cache<Uuid, ()>,
    /// Until when price-dependent Redis values are not trusted (a market invalidation failed to reach Redis).
    market_distrusted_until: Mutex<Option<std::time::Instant>>,
    flights: Flights,
    breaker: Breaker,
    metrics: Metrics,
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
        let redis = if settings.enabled {
            let config = Config::from_url(&settings.redis_url)?;
            let pool = Builder::from_config(config)
                .with_connection_config(|c| {
                    c.connection_timeout = Duration::from_secs(1);
                    c.internal_command_timeout = Duration::from_secs(1);
                    c.max_command_attempts = 1;
                })
                .with_performance_config(|p| p.default_command_timeout = settings.redis_timeout)
                // Without a policy fred never reconnects after losing Redis.
                .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
                .build_pool(settings.pool_size.max(1))?;
            Some(pool)
        } else {
            None
        };
        let l1 = moka::future::Cache::builder()
            .max_capacity(settings.l1_max_bytes)
            // Bytes, not entries: a user's large response weighs what it costs.
            .weigher(|key: &String, entry: &Arc<L1Entry>| {
                u32::try_from(key.len() + entry.payload.len() + L1_ENTRY_OVERHEAD).unwrap_or(u32::MAX)
            })
            .expire_after(L1Expiry)
            .build();
        let inner = Arc::new(Inner {
            // An epoch must outlive every load that started before it was bumped (loads are bounded by the
            // request timeout); otherwise a slow load could see "no epoch" again and fill L1 with old data.
            epochs: moka::sync::Cache::builder().time_to_live(EPOCH_LIFETIME.max(settings.l1_ttl * 4)).build(),
            market_distrusted_until: Mutex::new(None),
            distrusted: moka::sync::Cache::builder().time_to_live(settings.stale_max_age).build(),
            next_epoch: AtomicU64::new(1),
            market_epoch: AtomicU64::new(0),
            flights: Mutex::new(HashMap::new()),
            breaker: Breaker::new(settings.breaker_failures, settings.breaker_cooldown),
            metrics: Metrics::default(),
            settings,
            redis,
            l1,
        });
        if let Some(pool) = &inner.redis {
            let _connection_tasks = pool.connect();
            for client in pool.clients() {
                let l1 = inner.l1.clone();
                // Values written while this replica could not see Redis may be missing invalidations.
                let _listener = client.on_reconnect(move |server| {
                    let l1 = l1.clone();
                    async move {
                        tracing::info!(server = %server, "redis reconnected: clearing L1");
                        l1.invalidate_all();
                        Ok(())
                    }
                });
            }
        }
        Ok(Cache { inner })
    }

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Loads in progress (shared by their concurrent callers); zero when the cache is idle.
    pub fn flights_in_progress(&self) -> usize {
        self.inner.flights.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// Whether Redis is currently believed healthy (breaker closed).
    pub fn redis_healthy(&self) -> bool {
        self.inner.redis.is_some() && self.inner.breaker.is_closed()
    }

    fn gen_key(&self, user: Uuid) -> String {
        format!("{}:{{u:{user}}}:gen", self.inner.settings.key_prefix)
    }

    fn data_key(&self, user: Uuid, rpc: Rpc, shape: &str) -> String {
        format!("{}:{{u:{user}}}:{}:{shape}", self.inner.settings.key_prefix, rpc.name())
    }

    fn market_key(&self) -> String {
        format!("{}:market:gen", self.inner.settings.key_prefix)
    }

    fn epochs(&self, user: Uuid, rpc: Rpc) -> Epochs {
        Epochs {
            user: self.inner.epochs.get(&user).unwrap_or(0),
            market: if rpc.depends_on_market() { self.inner.market_epoch.load(Ordering::Acquire) } else { 0 },
        }
    }

    /// Serves `rpc` for `user` and `shape` (the request's other fields, normalised) from cache, or runs `load`
    /// once for all concurrent callers of the same key and caches its result.
    pub async fn get_or_load<M, F, Fut>(
        &self,
        rpc: Rpc,
        user: Uuid,
        shape: &str,
        load: F,
    ) -> Result<(M, Freshness), ApiError>
    where
        M: Message + Default,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<M, ApiError>>,
    {
        let metrics = &self.inner.metrics;
        if !self.inner.settings.enabled {
            metrics.record(rpc, Event::PgQuery);
            metrics.record(rpc, Event::Bypass);
            return load().await.map(|m| (m, Freshness::Bypass));
        }
        let key = self.data_key(user, rpc, shape);
        let epochs = self.epochs(user, rpc);
        if let Some(entry) = self.inner.l1.get(&key).await
            && entry.epochs == epochs
        {
            metrics.record(rpc, Event::L1Hit);
            return decode(&entry.payload).map(|m| (m, Freshness::Hit));
        }

        // Callers that arrive after an invalidation must not join a load that started before it.
        let flight_key = format!("{key}#{}.{}", epochs.user, epochs.market);
        let guard = FlightGuard::join(&self.inner.flights, flight_key);
        let mut led = false;
        let result = guard
            .cell
            .get_or_init(|| {
                led = true;
                self.fill(rpc, user, key, epochs, load)
            })
            .await
            .clone();
        drop(guard);
        let (payload, freshness) = result.map_err(|e| share_error(&e))?;
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
        decode(&payload).map(|m| (m, freshness))
    }

    /// The leader's work: Redis, then PostgreSQL, then populate both levels.
    async fn fill<M, F, Fut>(&self, rpc: Rpc, user: Uuid, key: String, epochs: Epochs, load: F) -> Flight
    where
        M: Message + Default,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<M, ApiError>>,
    {
        let metrics = &self.inner.metrics;
        let settings = &self.inner.settings;
        let usable = self.inner.redis.is_some()
            && !self.inner.distrusted.contains_key(&user)
            && !(rpc.depends_on_market() && self.market_distrusted())
            && self.inner.breaker.allow();
        let mut generations = None;
        let mut stale = None;
        if usable && let Some(pool) = &self.inner.redis {
            let found = self.redis_call(Some(rpc), self.lookup(pool, user, &key, rpc.depends_on_market())).await;
            if let Some((current, market, stored)) = found {
                generations = Some((current, market));
                if let Some(s) = stored.filter(|s| s.generation == current && s.market_generation == market) {
                    let now = now_ms();
                    if now < s.fresh_until_ms {
                        let left = Duration::from_millis(u64::try_from(s.fresh_until_ms - now).unwrap_or(0));
                        self.fill_l1(user, rpc, key, epochs, s.payload.clone(), left.min(settings.l1_ttl)).await;
                        metrics.record(rpc, Event::Hit);
                        return Ok((s.payload, Freshness::Hit));
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
            Ok(message) => {
                let payload = message.encode_to_vec();
                // Without Redis no replica can see another's invalidations anyway, so L1 may keep the response
                // for the whole TTL (this replica's own writes still clear it at once, and L1 is cleared when
                // Redis returns); that keeps PostgreSQL's load at one query per key per TTL while Redis is down.
                let lifetime = if generations.is_some() { settings.l1_ttl } else { settings.ttl };
                self.fill_l1(user, rpc, key.clone(), epochs, payload.clone(), lifetime).await;
                let Some((generation, market_generation)) = generations else {
                    metrics.record(rpc, Event::Bypass);
                    return Ok((payload, Freshness::Bypass));
                };
                let stored = Stored {
                    generation,
                    market_generation,
                    read_at_ms,
                    fresh_until_ms: read_at_ms + self.jittered_ttl_ms(),
                    payload: payload.clone(),
                };
                if let Some(pool) = &self.inner.redis {
                    let expire = Expiration::PX(i64::try_from(settings.stale_max_age.as_millis()).unwrap_or(i64::MAX));
                    let client = pool.with_options(&Self::options());
                    let write = client.set::<(), _, _>(key, stored.encode(), Some(expire), None, false);
                    let _ = self.redis_call(Some(rpc), write).await;
                }
                metrics.record(rpc, Event::Miss);
                Ok((payload, Freshness::Miss))
            }
            Err(ApiError::Unavailable(reason)) => match stale {
                Some(payload) => {
                    tracing::warn!(rpc = rpc.name(), %user, reason, "postgres unavailable: serving a stale cached response");
                    metrics.record(rpc, Event::Stale);
                    Ok((payload, Freshness::Stale))
                }
                None => Err(Arc::new(ApiError::Unavailable(reason))),
            },
            Err(other) => Err(Arc::new(other)),
        }
    }

    /// Puts a response in L1 for `ttl`, unless an invalidation happened since its load started.
    async fn fill_l1(&self, user: Uuid, rpc: Rpc, key: String, epochs: Epochs, payload: Vec<u8>, ttl: Duration) {
        if self.epochs(user, rpc) != epochs {
            return;
        }
        self.inner.l1.insert(key, Arc::new(L1Entry { payload, epochs, ttl })).await;
    }

    fn market_distrusted(&self) -> bool {
        let until = self.inner.market_distrusted_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        until.is_some_and(|t| std::time::Instant::now() < t)
    }

    fn jittered_ttl_ms(&self) -> i64 {
        let ttl = self.inner.settings.ttl.as_millis() as f64;
        // Uuid v4 bytes are a ready source of randomness; no need for a dedicated RNG here.
        let unit = (Uuid::new_v4().as_u128() % 10_000) as f64 / 10_000.0;
        (ttl * (1.0 + self.inner.settings.ttl_jitter * unit)) as i64
    }

    /// Invalidates everything cached for `users`: at once in this replica's L1, and in Redis by bumping each
    /// user's generation (one pipelined round trip). Call after the write committed, before acknowledging it.
    pub async fn invalidate(&self, users: &[Uuid]) {
        if users.is_empty() || !self.inner.settings.enabled {
            return;
        }
        for user in users {
            self.inner.epochs.insert(*user, self.inner.next_epoch.fetch_add(1, Ordering::Relaxed));
        }
        let Some(pool) = &self.inner.redis else { return };
        let reached = if self.inner.breaker.allow() {
            let keys: Vec<String> = users.iter().map(|u| self.gen_key(*u)).collect();
            self.redis_call(None, incr_all(pool, keys)).await.is_some()
        } else {
            false
        };
        if !reached {
            tracing::warn!(
                users = users.len(),
                "could not invalidate in redis: ignoring their redis entries for a while"
            );
            for user in users {
                self.inner.distrusted.insert(*user, ());
            }
        }
    }
}

impl Cache {
    /// Invalidates every price-dependent response of every user (positions, guard status, alerts): at once in
    /// this replica's L1, and in Redis by bumping the market generation. Call after quotes committed.
    pub async fn invalidate_market(&self) {
        if !self.inner.settings.enabled {
            return;
        }
        self.inner.market_epoch.fetch_add(1, Ordering::AcqRel);
        let Some(pool) = &self.inner.redis else { return };
        let reached = self.inner.breaker.allow() && {
            let client = pool.with_options(&Self::options());
            self.redis_call(None, client.incr::<i64, _>(self.market_key())).await.is_some()
        };
        if !reached {
            // This replica stops trusting price-dependent Redis values for as long as they can live there.
            // (Other replicas may serve theirs until their TTL: nothing more can be done without Redis.)
            tracing::warn!(
                "could not bump the market generation in redis: ignoring cached prices in redis for a while"
            );
            let mut until =
                self.inner.market_distrusted_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *until = Some(std::time::Instant::now() + self.inner.settings.stale_max_age);
        }
    }
}

fn decode<M: Message + Default>(payload: &[u8]) -> Result<M, ApiError> {
    M::decode(payload).map_err(|e| ApiError::Internal(Box::new(e)))
}

/// Re-creates a shared load error for one of the callers that waited on it.
fn share_error(e: &ApiError) -> ApiError {
    match e {
        ApiError::InvalidArgument(v) => ApiError::InvalidArgument(v.clone()),
        ApiError::PermissionDenied(m) => ApiError::PermissionDenied(m.clone()),
        ApiError::NotFound(m) => ApiError::NotFound(m.clone()),
        ApiError::Unavailable(m) => ApiError::Unavailable(m.clone()),
        ApiError::Internal(source) => ApiError::Internal(source.to_string().into()),
    }
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
            redis_timeout: Duration::from_millis(50),
            breaker_failures: 1,
            breaker_cooldown: Duration::from_secs(60),
        })
        .unwrap()
    }

    type Response = crate::pb::GetDrawdownStatusResponse;

    #[tokio::test]
    async fn a_load_whose_callers_all_give_up_leaves_no_flight_behind() {
        let cache = cache();
        let user = Uuid::new_v4();
        let never = || std::future::pending::<Result<Response, ApiError>>();
        let one =
            tokio::time::timeout(Duration::from_millis(50), cache.get_or_load(Rpc::GetDrawdownStatus, user, "", never));
        let two =
            tokio::time::timeout(Duration::from_millis(80), cache.get_or_load(Rpc::GetDrawdownStatus, user, "", never));
        let (one, two) = tokio::join!(one, two);
        assert!(one.is_err() && two.is_err(), "both callers timed out");
        assert_eq!(cache.flights_in_progress(), 0);
    }

    #[tokio::test]
    async fn a_load_that_panics_leaves_no_flight_behind_and_the_next_caller_loads_again() {
        let cache = cache();
        let user = Uuid::new_v4();
        let panicking = || async { panic!("boom") };
        let caught = std::panic::AssertUnwindSafe(cache.get_or_load::<Response, _, _>(
            Rpc::GetDrawdownStatus,
            user,
            "",
            panicking,
        ))
        .catch_unwind()
        .await;
        assert!(caught.is_err(), "the panic propagates to the caller (the server's catch-panic layer answers it)");
        assert_eq!(cache.flights_in_progress(), 0);
        let ok = cache.get_or_load(Rpc::GetDrawdownStatus, user, "", || async { Ok(Response::default()) }).await;
        assert!(ok.is_ok());
        assert_eq!(cache.flights_in_progress(), 0);
    }

    #[tokio::test]
    async fn a_waiter_takes_over_when_the_leader_is_cancelled() {
        let cache = cache();
        let user = Uuid::new_v4();
        let leader = tokio::time::timeout(
            Duration::from_millis(30),
            cache.get_or_load(Rpc::GetDrawdownStatus, user, "", std::future::pending::<Result<Response, ApiError>>),
        );
        let waiter = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            cache
                .get_or_load(Rpc::GetDrawdownStatus, user, "", || async {
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
