//! Invalidation: at once in this replica's L1, and for every replica through Redis (generation bump and an
//! announcement on the invalidation channel); invalidations that cannot reach Redis are retried until they do.

use std::sync::Arc;
use std::time::Duration;

use fred::interfaces::{ClientLike, PubsubInterface};
use uuid::Uuid;

use super::Cache;
use super::redis;

/// How often invalidations that did not reach Redis are retried, how many per try, and how many are kept.
const PENDING_RETRY: Duration = Duration::from_millis(100);
const PENDING_BATCH: usize = 1_000;
const PENDING_MAX: usize = 100_000;

impl Cache {
    /// Invalidates everything cached for `users`: at once in this replica's L1, and for every replica by bumping
    /// each user's generation in Redis and announcing them on the invalidation channel (one pipelined round
    /// trip). Call after the write committed, before acknowledging it.
    pub async fn invalidate(&self, users: &[Uuid]) {
        if users.is_empty() {
            return;
        }
        // This replica's own watchers read at once; the others hear the announcement below.
        self.inner.writes.notify_one();
        if !self.inner.settings.enabled {
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

    /// Retries invalidations that could not reach Redis (a failover, an outage) until they do, so the other
    /// replicas drop what they hold for those users as soon as Redis is back, instead of serving it until it
    /// expires. Stops when the cache is dropped.
    pub(super) async fn retry_pending(self) {
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

    /// Best effort: announces the users on the channel without bumping their generations, saying so
    /// (`nb,…`): the receivers then ignore the users' Redis values too, not only their L1 entries.
    async fn announce_only(&self, users: &[Uuid]) {
        let Some(pool) = &self.inner.redis else { return };
        let message = std::iter::once(super::listener::NOT_BUMPED.to_owned())
            .chain(users.iter().map(Uuid::to_string))
            .collect::<Vec<_>>()
            .join(",");
        let channel = format!("{}:invalidations", self.inner.settings.key_prefix);
        let client = pool.next_connected().with_options(&Cache::options());
        let publish = client.publish::<i64, _, _>(channel, message);
        let _ = tokio::time::timeout(self.inner.settings.redis_timeout, publish).await;
    }
}
