//! The in-process L1: decoded values tagged with this replica's per-user invalidation epoch, bounded in bytes,
//! each living until its value's freshness ends (see the module docs of `cache` for when an entry is served).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fred::interfaces::ClientLike;
use uuid::Uuid;

use super::listener::Invalidations;
use super::value::Shared;
use super::{Cache, CacheSettings};

pub(super) type L1 = moka::sync::Cache<String, Arc<L1Entry>>;

/// A decoded value in L1.
pub(super) struct L1Entry {
    pub(super) value: Shared,
    pub(super) epoch: u64,
    inserted: Instant,
    pub(super) fresh_until: Instant,
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

/// An empty L1 holding at most `settings.l1_max_bytes`.
pub(super) fn new(settings: &CacheSettings) -> L1 {
    moka::sync::Cache::builder()
        .max_capacity(settings.l1_max_bytes)
        .weigher(|_: &String, entry: &Arc<L1Entry>| entry.weight)
        .expire_after(L1Expiry)
        .build()
}

/// This replica's invalidation epochs (shared with the listener), one per stripe of users: bumping a user's
/// stripe hides the L1 entries of everyone in it (1 in 4,096 users: a rare extra miss), in exchange for one
/// atomic load per read instead of a map lookup. Epochs only grow, so an entry can never see its epoch return.
#[derive(Clone)]
pub(super) struct Epochs {
    stripes: Arc<[AtomicU64]>,
}

/// Stripes of [`Epochs`] (a power of two).
const EPOCH_STRIPES: usize = 4096;

impl Epochs {
    pub(super) fn new() -> Self {
        Epochs { stripes: (0..EPOCH_STRIPES).map(|_| AtomicU64::new(0)).collect() }
    }

    fn stripe(&self, user: Uuid) -> &AtomicU64 {
        let id = user.as_u128();
        let mixed = ((id as u64) ^ ((id >> 64) as u64)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // The top bits of the product are the well-mixed ones.
        &self.stripes[(mixed >> (64 - EPOCH_STRIPES.trailing_zeros())) as usize]
    }

    pub(super) fn get(&self, user: Uuid) -> u64 {
        self.stripe(user).load(Ordering::Acquire)
    }

    pub(super) fn bump(&self, user: Uuid) {
        self.stripe(user).fetch_add(1, Ordering::AcqRel);
    }
}

/// What the listener changes.
pub(super) struct ListenerTarget {
    pub(super) epochs: Epochs,
    pub(super) l1: L1,
    /// Woken when another replica wrote (see `Cache::writes`).
    pub(super) writes: Arc<tokio::sync::Notify>,
    pub(super) announcements: super::commits::Announcements,
}

impl Invalidations for ListenerTarget {
    fn users(&self, users: &[Uuid]) {
        for user in users {
            self.epochs.bump(*user);
            self.announcements.heard(*user);
        }
        self.writes.notify_one();
    }

    fn not_bumped(&self, users: &[Uuid]) {
        for user in users {
            self.announcements.not_bumped(*user);
        }
    }

    fn flush(&self) {
        self.l1.invalidate_all();
        // Announcements may have been missed: whoever waits for writes should look again.
        self.writes.notify_one();
    }
}

impl Cache {
    /// Whether an L1 entry may be served now (see the module docs).
    pub(super) fn l1_usable(&self, entry: &L1Entry, now: Instant) -> bool {
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

    /// Puts a value in L1 for `freshness`, unless an invalidation happened since its load started.
    pub(super) fn fill_l1(
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
}
