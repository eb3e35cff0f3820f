//! The cache's Redis calls: per-call options and timeout, the breaker bookkeeping, the one-round-trip lookup,
//! the value write, and pipelined invalidation.

use std::future::Future;

use fred::clients::Pool;
use fred::interfaces::{ClientLike, KeysInterface, PubsubInterface};
use fred::prelude::{Expiration, Options};
use fred::types::{SetOptions, Value};

use super::stored::{Stored, now_ms};
use super::{Cache, Event, Rpc, Transition};
use crate::telemetry;

impl Cache {
    /// Options of every Redis command: short timeout, one attempt, fail at once while disconnected.
    pub(super) fn options() -> Options {
        Options { max_attempts: Some(1), fail_fast: true, ..Default::default() }
    }

    /// Runs one Redis call (`command`, its name in a trace span) under the breaker and the outer timeout.
    pub(super) async fn redis_call<T, F>(&self, rpc: Option<Rpc>, command: &'static str, call: F) -> Option<T>
    where
        F: Future<Output = Result<T, fred::error::Error>>,
    {
        let outcome = telemetry::client_call("redis", command, async {
            match tokio::time::timeout(self.inner.settings.redis_timeout, call).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err("timed out".to_owned()),
            }
        })
        .await;
        match outcome {
            Ok(value) => {
                if self.inner.breaker.success() == Transition::Recovered {
                    tracing::info!("redis reachable again: closing the breaker and clearing L1");
                    self.inner.l1.invalidate_all();
                }
                Some(value)
            }
            Err(reason) => {
                self.redis_failed(rpc, &reason);
                None
            }
        }
    }

    fn redis_failed(&self, rpc: Option<Rpc>, reason: &str) {
        let was_closed = self.inner.breaker.is_closed();
        self.inner.breaker.failure();
        if let Some(rpc) = rpc {
            self.inner.metrics.record(rpc, Event::RedisError);
        }
        if was_closed && !self.inner.breaker.is_closed() {
            tracing::warn!(reason, "redis failing: opening the breaker, reads go to PostgreSQL");
        } else {
            tracing::debug!(reason, "redis call failed");
        }
    }
}

/// One round trip: the user's generation and the cached value (one hash slot, so `MGET` is fine on a cluster).
pub(super) async fn lookup(
    pool: &Pool,
    gen_key: String,
    key: String,
) -> Result<(i64, Option<Stored>), fred::error::Error> {
    let client = pool.next_connected().with_options(&Cache::options());
    let values: Vec<Value> = client.mget(vec![gen_key, key]).await?;
    let generation = values.first().and_then(Value::as_i64).unwrap_or(0);
    let stored = values.get(1).and_then(Value::as_bytes).and_then(Stored::decode);
    Ok((generation, stored))
}

/// Stores a value for `lifetime_ms` (how long it may be served stale, past its freshness).
pub(super) async fn write(
    pool: &Pool,
    key: String,
    stored: Stored,
    lifetime_ms: i64,
) -> Result<(), fred::error::Error> {
    let client = pool.next_connected().with_options(&Cache::options());
    client.set::<(), _, _>(key, stored.encode(), Some(Expiration::PX(lifetime_ms)), None, false).await
}

/// Bumps every generation and announces the users on the invalidation channel, in one pipeline.
///
/// A generation that does not exist (a Redis restarted without persistence, `FLUSHALL`, an eviction) starts at
/// the current time in microseconds, not at 1: a generation value never repeats, so a value stored under an
/// old generation can never pass for current.
pub(super) async fn invalidate(
    pool: &Pool,
    gen_keys: Vec<String>,
    channel: &str,
    message: String,
) -> Result<(), fred::error::Error> {
    let client = pool.next_connected();
    let pipeline = client.pipeline();
    let start = now_ms().saturating_mul(1000);
    for key in gen_keys {
        let _: () = pipeline.set(key.as_str(), start, None, Some(SetOptions::NX), false).await?;
        let _: () = pipeline.incr(key).await?;
    }
    let _: () = pipeline.publish(channel, message).await?;
    let _: Vec<Value> = pipeline.all().await?;
    Ok(())
}
