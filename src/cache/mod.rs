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
mod commits;
mod error;
mod flight;
mod invalidate;
mod l1;
mod listener;
mod metrics;
mod read;
mod redis;
mod settings;
mod stored;
mod value;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fred::clients::Pool;
use fred::interfaces::{ClientLike, EventInterface};
use fred::prelude::{Builder, Config, ReconnectPolicy};
use uuid::Uuid;

pub use breaker::{Breaker, Transition};
pub use error::{CacheError, LoadError};
pub use metrics::{Event, Freshness, Metrics, Rpc, Snapshot};
pub use settings::CacheSettings;
pub use value::CacheValue;
#[cfg(test)]
pub(crate) use value::assert_layout;

use flight::Flights;
use l1::{Epochs, L1, ListenerTarget};
use listener::{Hearing, ListenerSettings};

/// The cache. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    settings: CacheSettings,
    redis: Option<Pool>,
    hearing: Option<Arc<Hearing>>,
    l1: L1,
    epochs: Epochs,
    /// Users whose Redis values this replica must not trust (an invalidation failed to reach Redis).
    distrusted: moka::sync::Cache<Uuid, ()>,
    /// Announcements heard, and commits the feed showed before theirs (`commits`).
    announcements: commits::Announcements,
    /// When a connection to Redis was last re-established (ms since the epoch; 0: never): Redis values read
    /// from PostgreSQL before it are not served as fresh.
    reconnected_at: Arc<std::sync::atomic::AtomicI64>,
    /// Users whose invalidation has not reached Redis yet; retried in the background until it does.
    pending: std::sync::Mutex<std::collections::HashSet<Uuid>>,
    flights: Flights,
    breaker: Breaker,
    metrics: Metrics,
    /// Woken whenever a replica (this one or another, heard on the invalidation channel) acknowledged a write.
    writes: Arc<tokio::sync::Notify>,
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
        let l1 = l1::new(&settings);
        let epochs = Epochs::new();
        let writes = Arc::new(tokio::sync::Notify::new());
        let reconnected_at = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let announcements = commits::Announcements::new(settings.ttl.mul_f64(1.0 + settings.ttl_jitter.max(0.0)));
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
            // Listeners first, so the first connection is seen as such.
            for client in pool.clients() {
                let l1 = l1.clone();
                let reconnected_at = reconnected_at.clone();
                let connected_before = Arc::new(std::sync::atomic::AtomicBool::new(false));
                // Values written while this replica could not see Redis may be missing invalidations. And a
                // reconnect may follow a failover that lost generation bumps (asynchronous replication): a
                // value read before it may pass for current again, so those count as misses from now on.
                let _listener = client.on_reconnect(move |server| {
                    let l1 = l1.clone();
                    if connected_before.swap(true, Ordering::AcqRel) {
                        reconnected_at.fetch_max(stored::now_ms(), Ordering::AcqRel);
                    }
                    async move {
                        tracing::debug!(server = %server, "redis connected: clearing L1");
                        l1.invalidate_all();
                        Ok(())
                    }
                });
            }
            let _connection_tasks = pool.connect();
            let listener = ListenerSettings {
                channel: format!("{}:invalidations", settings.key_prefix),
                heartbeat: settings.heartbeat,
                lease: settings.hearing_lease,
                timeout: settings.redis_timeout.max(Duration::from_millis(250)),
            };
            let target = ListenerTarget {
                epochs: epochs.clone(),
                l1: l1.clone(),
                writes: writes.clone(),
                announcements: announcements.clone(),
            };
            let hearing = listener::start(config, listener, target)?;
            (Some(pool), Some(hearing))
        } else {
            (None, None)
        };
        let inner = Arc::new(Inner {
            distrusted: moka::sync::Cache::builder().time_to_live(settings.stale_max_age).build(),
            announcements,
            reconnected_at,
            pending: std::sync::Mutex::new(std::collections::HashSet::new()),
            flights: Flights::default(),
            breaker: Breaker::new(settings.breaker_failures, settings.breaker_cooldown),
            metrics: Metrics::default(),
            settings,
            redis,
            hearing,
            l1,
            epochs,
            writes,
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

    /// Wakes its waiter whenever a write was acknowledged: by this replica (`invalidate`), or by another one
    /// (heard on the invalidation channel, while this replica hears it). The feed's hub waits on it, so the one
    /// message every write already publishes after its commit is also what wakes every replica's watchers.
    pub fn writes(&self) -> Arc<tokio::sync::Notify> {
        self.inner.writes.clone()
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
}
