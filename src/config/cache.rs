//! `--cache-*` / `--redis-*`: the cache, turned into [`cache::CacheSettings`].

use std::time::Duration;

use clap::Args;

use crate::cache;

/// Redis cache settings. Redis is an optimisation: when it is down, slow or disabled, reads go to PostgreSQL.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Cache (Redis)")]
pub struct CacheArgs {
    /// Redis URL (`redis://host:port/db`; for a cluster `redis-cluster://host:port?node=host:port&node=…`, naming
    /// several nodes: after losing a connection the client finds the cluster again through these seeds only).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Turn the cache off: every read goes to PostgreSQL (`x-cache: bypass`).
    #[arg(long, env = "TM_CACHE_DISABLED", default_value_t = false)]
    pub cache_disabled: bool,
    /// How long a cached response is fresh.
    #[arg(long, env = "TM_CACHE_TTL", value_parser = humantime::parse_duration, default_value = "5s")]
    pub cache_ttl: Duration,
    /// Random extra freshness per entry, percent of the TTL, so entries do not all expire together.
    #[arg(long, env = "TM_CACHE_TTL_JITTER_PCT", default_value_t = 10)]
    pub cache_ttl_jitter_pct: u8,
    /// While PostgreSQL is down, cached responses up to this old are served (marked `x-cache: stale`).
    #[arg(long, env = "TM_CACHE_STALE_MAX_AGE", value_parser = humantime::parse_duration, default_value = "30s")]
    pub cache_stale_max_age: Duration,
    /// How long the in-process L1 serves an entry while this replica cannot hear other replicas'
    /// invalidations (while it can, entries live their whole freshness): bounds how long another replica's
    /// write can go unseen here then.
    #[arg(long, env = "TM_CACHE_L1_TTL", value_parser = humantime::parse_duration, default_value = "500ms")]
    pub cache_l1_ttl: Duration,
    /// A cached value hit within this last share of its freshness (percent of the TTL) is refreshed in the
    /// background, so hot keys never make a caller wait on PostgreSQL; 0 turns refresh-ahead off.
    #[arg(long, env = "TM_CACHE_REFRESH_AHEAD_PCT", default_value_t = 20)]
    pub cache_refresh_ahead_pct: u8,
    /// How often each replica sends itself a heartbeat on the invalidation channel.
    #[arg(long, env = "TM_CACHE_HEARTBEAT", value_parser = humantime::parse_duration, default_value = "250ms")]
    pub cache_heartbeat: Duration,
    /// A replica counts as hearing invalidations while its own last heartbeat came back within this long.
    #[arg(long, env = "TM_CACHE_HEARING_LEASE", value_parser = humantime::parse_duration, default_value = "1s")]
    pub cache_hearing_lease: Duration,
    /// Most memory the in-process L1 may use, in bytes (keys plus encoded responses).
    #[arg(long, env = "TM_CACHE_L1_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub cache_l1_max_bytes: u64,
    /// Key namespace in Redis.
    #[arg(long, env = "TM_CACHE_KEY_PREFIX", default_value = "trading:v1")]
    pub cache_key_prefix: String,
    /// Upper bound on one Redis call; slower calls count as failures.
    #[arg(long, env = "TM_REDIS_TIMEOUT", value_parser = humantime::parse_duration, default_value = "100ms")]
    pub redis_timeout: Duration,
    /// Connections to Redis.
    #[arg(long, env = "TM_REDIS_POOL_SIZE", default_value_t = 4)]
    pub redis_pool_size: usize,
    /// Consecutive Redis failures after which the cache stops calling Redis for a while.
    #[arg(long, env = "TM_REDIS_BREAKER_FAILURES", default_value_t = 3)]
    pub redis_breaker_failures: u32,
    /// How long the cache leaves Redis alone after the breaker opens, before one probe.
    #[arg(long, env = "TM_REDIS_BREAKER_COOLDOWN", value_parser = humantime::parse_duration, default_value = "1s")]
    pub redis_breaker_cooldown: Duration,
}

impl CacheArgs {
    /// The cache settings these arguments describe.
    pub fn to_settings(&self) -> cache::CacheSettings {
        cache::CacheSettings {
            enabled: !self.cache_disabled,
            redis_url: self.redis_url.clone(),
            pool_size: self.redis_pool_size,
            key_prefix: self.cache_key_prefix.clone(),
            ttl: self.cache_ttl,
            ttl_jitter: f64::from(self.cache_ttl_jitter_pct.min(100)) / 100.0,
            stale_max_age: self.cache_stale_max_age.max(self.cache_ttl),
            // L1 must never make a value outlive its freshness.
            l1_ttl: self.cache_l1_ttl.min(self.cache_ttl),
            l1_max_bytes: self.cache_l1_max_bytes,
            refresh_ahead: f64::from(self.cache_refresh_ahead_pct.min(100)) / 100.0,
            heartbeat: self.cache_heartbeat,
            hearing_lease: self.cache_hearing_lease.max(self.cache_heartbeat * 2),
            redis_timeout: self.redis_timeout,
            breaker_failures: self.redis_breaker_failures,
            breaker_cooldown: self.redis_breaker_cooldown,
        }
    }
}
