//! The read path: L1, then Redis, then one load for all concurrent callers of a key (single flight), with
//! refresh-ahead of hot values and stale serving while the source of truth is unreachable.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::Cache;
use super::error::{CacheError, LoadError};
use super::flight::{Flight, FlightGuard};
use super::metrics::{Event, Freshness, Rpc};
use super::redis;
use super::stored::{Stored, now_ms};
use super::value::{CacheValue, Shared, downcast};

impl Cache {
    /// Serves the `kind` value of `user` for `shape` (the request's other inputs that change the value,
    /// normalised) from cache, or runs `load` once for all concurrent callers of the same key and caches its
    /// result. `rpc` is the RPC being served, for the counters. A load failing with an error that
    /// [`LoadError::is_unavailable`] is answered with a stale value when one is young enough.
    pub async fn get<T, E, F, Fut>(
        &self,
        rpc: Rpc,
        user: Uuid,
        kind: &'static str,
        shape: &str,
        load: F,
    ) -> Result<(Arc<T>, Freshness), E>
    where
        T: CacheValue,
        E: LoadError + From<CacheError>,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
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
                self.refresh_in_background::<T, E, F, Fut>(rpc, user, key, epoch, load);
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
        let (value, freshness) = result.map_err(|shared| match shared.downcast_ref::<E>() {
            Some(e) => e.share(),
            None => E::from(CacheError::TypeClash),
        })?;
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
        let value = downcast::<T>(value).ok_or_else(|| E::from(CacheError::TypeClash))?;
        Ok((value, freshness))
    }

    fn near_expiry(&self, fresh_until: Instant, now: Instant) -> bool {
        let window = self.inner.settings.ttl.mul_f64(self.inner.settings.refresh_ahead.clamp(0.0, 1.0));
        fresh_until.saturating_duration_since(now) < window
    }

    /// Starts one background load of a value near the end of its freshness (unless one is in progress).
    fn refresh_in_background<T, E, F, Fut>(&self, rpc: Rpc, user: Uuid, key: String, epoch: u64, load: F)
    where
        T: CacheValue,
        E: LoadError,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
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
    async fn fill<T, E, F, Fut>(&self, rpc: Rpc, user: Uuid, key: String, epoch: u64, load: F, refresh: bool) -> Flight
    where
        T: CacheValue,
        E: LoadError,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let metrics = &self.inner.metrics;
        let settings = &self.inner.settings;
        let usable = self.inner.redis.is_some()
            && !self.inner.distrusted.contains_key(&user)
            && !self.inner.announcements.unannounced(&user)
            && self.inner.breaker.allow();
        let mut generation = None;
        let mut stale = None;
        if usable && let Some(pool) = &self.inner.redis {
            let found = self.redis_call(Some(rpc), "MGET", redis::lookup(pool, self.gen_key(user), key.clone())).await;
            if let Some((current, stored)) = found {
                generation = Some(current);
                // A value of another generation is out of date; one of another layout version was stored by a
                // replica of another build (a rolling deploy) and may not decode into this one's type correctly.
                if let Some(s) = stored.filter(|s| s.generation == current && s.schema == T::SCHEMA) {
                    let now = now_ms();
                    let left = Duration::from_millis(u64::try_from(s.fresh_until_ms - now).unwrap_or(0));
                    let wanted = if refresh {
                        settings.ttl.mul_f64(settings.refresh_ahead.clamp(0.0, 1.0))
                    } else {
                        Duration::ZERO
                    };
                    // Read before a reconnect: a failover in between may have lost the bump that outdated it.
                    let since_reconnect = s.read_at_ms >= self.inner.reconnected_at.load(Ordering::Acquire);
                    if now < s.fresh_until_ms
                        && since_reconnect
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
                                self.refresh_in_background::<T, E, F, Fut>(rpc, user, key, epoch, load);
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
                    let stored = Stored { schema: T::SCHEMA, generation, read_at_ms, fresh_until_ms, payload };
                    let lifetime = i64::try_from(settings.stale_max_age.as_millis()).unwrap_or(i64::MAX);
                    let _ = self.redis_call(Some(rpc), "SET", redis::write(pool, key, stored, lifetime)).await;
                }
                metrics.record(rpc, if refresh { Event::Refresh } else { Event::Miss });
                Ok((shared, Freshness::Miss))
            }
            Err(e) if e.is_unavailable() => match stale.and_then(|payload| T::decode(&payload)) {
                Some(value) => {
                    tracing::warn!(rpc = rpc.name(), %user, error = %e, "source unavailable: serving a stale cached value");
                    metrics.record(rpc, Event::Stale);
                    Ok((Arc::new(value) as Shared, Freshness::Stale))
                }
                None => Err(Arc::new(e)),
            },
            Err(other) => Err(Arc::new(other)),
        }
    }

    fn jittered_ttl(&self) -> Duration {
        // Uuid v4 bytes are a ready source of randomness; no need for a dedicated RNG here.
        let unit = (Uuid::new_v4().as_u128() % 10_000) as f64 / 10_000.0;
        self.inner.settings.ttl.mul_f64(1.0 + self.inner.settings.ttl_jitter.max(0.0) * unit)
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;
    use crate::cache::CacheSettings;

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

    #[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
    struct Response {
        value: u64,
    }
    crate::postcard_cache_value!(Response, schema = 1);

    /// A load error of a caller: never "unavailable".
    #[derive(Debug, thiserror::Error)]
    #[error("load failed")]
    struct Failed;

    impl LoadError for Failed {
        fn is_unavailable(&self) -> bool {
            false
        }
        fn share(&self) -> Self {
            Failed
        }
    }

    impl From<CacheError> for Failed {
        fn from(_: CacheError) -> Self {
            Failed
        }
    }

    fn never() -> impl Future<Output = Result<Response, Failed>> + Send + 'static {
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
        let caught = std::panic::AssertUnwindSafe(cache.get::<Response, Failed, _, _>(
            Rpc::GetDrawdownStatus,
            user,
            "t",
            "",
            panicking,
        ))
        .catch_unwind()
        .await;
        assert!(caught.is_err(), "the panic propagates to the caller (the server's catch-panic layer answers it)");
        assert_eq!(cache.flights_in_progress(), 0);
        let ok =
            cache.get(Rpc::GetDrawdownStatus, user, "t", "", || async { Ok::<_, Failed>(Response::default()) }).await;
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
                    Ok::<_, Failed>(Response::default())
                })
                .await
        };
        let (leader, waiter) = tokio::join!(leader, waiter);
        assert!(leader.is_err());
        assert!(waiter.is_ok(), "{waiter:?}");
        assert_eq!(cache.flights_in_progress(), 0);
    }
}
