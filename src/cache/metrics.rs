//! Cache counters per cached RPC, readable in-process (tests, loadgen) and through `crate::metrics` (`/metrics`).

use std::sync::atomic::{AtomicU64, Ordering};

/// The cached RPCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rpc {
    /// ReconciliationService/GetReconciliationStatus.
    GetReconciliationStatus,
    /// PositionsService/ListOpenPositions.
    ListOpenPositions,
    /// PositionsService/GetPosition.
    GetPosition,
    /// GuardsService/GetGuardStatus.
    GetGuardStatus,
    /// GuardsService/GetDrawdownStatus.
    GetDrawdownStatus,
    /// GuardsService/ListMarketAlerts.
    ListMarketAlerts,
}

impl Rpc {
    /// Every cached RPC.
    pub const ALL: [Rpc; 6] = [
        Rpc::GetReconciliationStatus,
        Rpc::ListOpenPositions,
        Rpc::GetPosition,
        Rpc::GetGuardStatus,
        Rpc::GetDrawdownStatus,
        Rpc::ListMarketAlerts,
    ];

    /// The method name, as in the proto.
    pub fn name(self) -> &'static str {
        match self {
            Rpc::GetReconciliationStatus => "GetReconciliationStatus",
            Rpc::ListOpenPositions => "ListOpenPositions",
            Rpc::GetPosition => "GetPosition",
            Rpc::GetGuardStatus => "GetGuardStatus",
            Rpc::GetDrawdownStatus => "GetDrawdownStatus",
            Rpc::ListMarketAlerts => "ListMarketAlerts",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What a cached read returned, also sent as the `x-cache` response metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Served from the in-process L1 or from Redis, within its freshness.
    Hit,
    /// Read from PostgreSQL (and cached).
    Miss,
    /// PostgreSQL was unavailable; served a cached value older than the TTL (within the stale limit).
    Stale,
    /// The cache was skipped (disabled, Redis unavailable): read from PostgreSQL.
    Bypass,
}

impl Freshness {
    /// The `x-cache` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Freshness::Hit => "hit",
            Freshness::Miss => "miss",
            Freshness::Stale => "stale",
            Freshness::Bypass => "bypass",
        }
    }
}

/// Counters of one RPC.
#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    l1_hits: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
    bypass: AtomicU64,
    redis_errors: AtomicU64,
    pg_queries: AtomicU64,
    refreshes: AtomicU64,
}

/// A point-in-time copy of one RPC's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Responses served from cache (L1 or Redis).
    pub hits: u64,
    /// Of `hits`, served from the in-process L1.
    pub l1_hits: u64,
    /// Responses read from PostgreSQL and cached.
    pub misses: u64,
    /// Stale responses served while PostgreSQL was down.
    pub stale: u64,
    /// Responses read from PostgreSQL without the cache.
    pub bypass: u64,
    /// Redis calls that failed or timed out.
    pub redis_errors: u64,
    /// PostgreSQL loads issued (each one statement), including refreshes.
    pub pg_queries: u64,
    /// Background refreshes of hot values near the end of their freshness (no caller waited on them).
    pub refreshes: u64,
}

impl std::ops::Add for Snapshot {
    type Output = Snapshot;
    fn add(self, o: Snapshot) -> Snapshot {
        Snapshot {
            hits: self.hits + o.hits,
            l1_hits: self.l1_hits + o.l1_hits,
            misses: self.misses + o.misses,
            stale: self.stale + o.stale,
            bypass: self.bypass + o.bypass,
            redis_errors: self.redis_errors + o.redis_errors,
            pg_queries: self.pg_queries + o.pg_queries,
            refreshes: self.refreshes + o.refreshes,
        }
    }
}

/// Counters of every cached RPC.
#[derive(Debug, Default)]
pub struct Metrics {
    by_rpc: [Counters; 6],
}

/// Which counter to bump.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    /// A response served from Redis.
    Hit,
    /// A response served from L1.
    L1Hit,
    /// A response loaded and cached.
    Miss,
    /// A stale response.
    Stale,
    /// A response loaded without the cache.
    Bypass,
    /// A failed Redis call.
    RedisError,
    /// A PostgreSQL load.
    PgQuery,
    /// A background refresh (from Redis or PostgreSQL) of a value near the end of its freshness.
    Refresh,
}

impl Metrics {
    /// Counts one event.
    pub fn record(&self, rpc: Rpc, event: Event) {
        let c = &self.by_rpc[rpc.index()];
        let counter = match event {
            Event::Hit => &c.hits,
            Event::L1Hit => {
                c.hits.fetch_add(1, Ordering::Relaxed);
                &c.l1_hits
            }
            Event::Miss => &c.misses,
            Event::Stale => &c.stale,
            Event::Bypass => &c.bypass,
            Event::RedisError => &c.redis_errors,
            Event::PgQuery => &c.pg_queries,
            Event::Refresh => &c.refreshes,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters of one RPC.
    pub fn snapshot(&self, rpc: Rpc) -> Snapshot {
        let c = &self.by_rpc[rpc.index()];
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Snapshot {
            hits: load(&c.hits),
            l1_hits: load(&c.l1_hits),
            misses: load(&c.misses),
            stale: load(&c.stale),
            bypass: load(&c.bypass),
            redis_errors: load(&c.redis_errors),
            pg_queries: load(&c.pg_queries),
            refreshes: load(&c.refreshes),
        }
    }

    /// The sum over every RPC.
    pub fn total(&self) -> Snapshot {
        Rpc::ALL.iter().map(|r| self.snapshot(*r)).fold(Snapshot::default(), |a, b| a + b)
    }
}
