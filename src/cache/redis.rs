//! The cache's Redis calls: per-call options and timeout, the breaker bookkeeping, the one-round-trip lookup,
//! and pipelined invalidation.

use fred::clients::Pool;
use fred::interfaces::KeysInterface;
use fred::prelude::Options;
use fred::types::Value;
use std::future::Future;
use uuid::Uuid;

use super::stored::Stored;
use super::{Cache, Event, Rpc, Transition};

impl Cache {
    /// Options of every Redis command: short timeout, one attempt, fail at once while disconnected.
    pub(super) fn options() -> Options {
        Options { max_attempts: Some(1), fail_fast: true, ..Default::default() }
    }

    /// Runs one Redis call under the breaker and the outer timeout.
    pub(super) async fn redis_call<T, F>(&self, rpc: Option<Rpc>, call: F) -> Option<T>
    where
        F: Future<Output = Result<T, fred::error::Error>>,
    {
        let outcome = tokio::time::timeout(self.inner.settings.redis_timeout, call).await;
        match outcome {
            Ok(Ok(value)) => {
                if self.inner.breaker.success() == Transition::Recovered {
                    tracing::info!("redis reachable again: closing the breaker and clearing L1");
                    self.inner.l1.invalidate_all();
                }
                Some(value)
            }
            Ok(Err(e)) => {
                self.redis_failed(rpc, &e.to_string());
                None
            }
            Err(_) => {
                self.redis_failed(rpc, "timed out");
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

    /// One round trip: the user's generation and the cached value (one slot, so `MGET` is fine on a cluster),
    /// plus the market generation when the RPC depends on prices (pipelined; it may live in another slot).
    pub(super) async fn lookup(
        &self,
        pool: &Pool,
        user: Uuid,
        key: &str,
        market: bool,
    ) -> Result<(i64, i64, Option<Stored>), fred::error::Error> {
        let pipeline = pool.next().pipeline();
        let _: () = pipeline.mget(vec![self.gen_key(user), key.to_owned()]).await?;
        if market {
            let _: () = pipeline.get(self.market_key()).await?;
        }
        let results: Vec<Value> = pipeline.all().await?;
        let pair = match results.first() {
            Some(Value::Array(values)) => values.as_slice(),
            _ => &[],
        };
        let generation = pair.first().and_then(Value::as_i64).unwrap_or(0);
        let stored = pair.get(1).and_then(Value::as_bytes).and_then(Stored::decode);
        let market_generation = if market { results.get(1).and_then(Value::as_i64).unwrap_or(0) } else { 0 };
        Ok((generation, market_generation, stored))
    }
}

/// INCRs every key in one pipeline (keys of different users may sit in different cluster slots; fred routes
/// each command).
pub(super) async fn incr_all(pool: &Pool, keys: Vec<String>) -> Result<(), fred::error::Error> {
    let client = pool.next();
    let pipeline = client.pipeline();
    for key in keys {
        let _: () = pipeline.incr(key).await?;
    }
    let _: Vec<Value> = pipeline.all().await?;
    Ok(())
}
