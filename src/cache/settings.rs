//! The cache's settings (`config::cache` builds them from the command line).

use std::time::Duration;

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
