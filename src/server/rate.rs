//! Per-caller rate limits: a token bucket per token `sub` (governor's keyed GCRA limiter), one quota for users
//! and a larger one for service tokens (those with `trading:sync:write`: trading backends act for many users).
//! A call over its caller's rate is answered at once with RESOURCE_EXHAUSTED (reason RATE_LIMITED) and a
//! `RetryInfo` saying when the next call would be admitted. Runs after authentication (it needs the caller);
//! health and reflection have no caller and are never limited.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use uuid::Uuid;

use super::admit::Admission;
use super::refusals::Refusals;
use crate::auth::{Caller, Scope};
use crate::services::ApiError;

/// A rate: calls per second, and how many may come at once after a quiet spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Sustained calls per second (0: no limit).
    pub per_second: u32,
    /// Calls admitted at once after a quiet spell (the bucket's size).
    pub burst: u32,
}

impl Rate {
    fn quota(self) -> Option<Quota> {
        let per_second = NonZeroU32::new(self.per_second)?;
        let burst = NonZeroU32::new(self.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Some(Quota::per_second(per_second).allow_burst(burst))
    }
}

#[derive(Debug)]
struct Limiters {
    users: Option<(Rate, DefaultKeyedRateLimiter<Uuid>)>,
    services: Option<(Rate, DefaultKeyedRateLimiter<Uuid>)>,
    clock: DefaultClock,
    refusals: Refusals,
}

/// The buckets, shared by every clone; run as a layer with [`AdmitLayer`](super::admit::AdmitLayer).
#[derive(Debug, Clone)]
pub struct RateLimits {
    limiters: Arc<Limiters>,
}

impl RateLimits {
    /// Limits for users and for service tokens; a rate of 0 per second turns that limit off.
    pub fn new(users: Rate, services: Rate) -> RateLimits {
        let make = |rate: Rate| rate.quota().map(|q| (rate, DefaultKeyedRateLimiter::keyed(q)));
        RateLimits {
            limiters: Arc::new(Limiters {
                users: make(users),
                services: make(services),
                clock: DefaultClock::default(),
                refusals: Refusals::default(),
            }),
        }
    }

    /// Forgets idle buckets every minute until `stop` is cancelled.
    pub async fn forget_idle_until(self, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(60)) => self.forget_idle(),
                () = stop.cancelled() => return,
            }
        }
    }

    /// Forgets the buckets of callers that have been quiet long enough to be full again (bounds the memory
    /// to the callers of the last moments); call now and then.
    pub fn forget_idle(&self) {
        for (_, limiter) in self.limiters.users.iter().chain(self.limiters.services.iter()) {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Whether `caller` may make a call now; if not, how long until it may.
    fn check(&self, caller: &Caller) -> Result<(), (Rate, Duration)> {
        let service = caller.has(Scope::SyncWrite);
        let limiter = if service { &self.limiters.services } else { &self.limiters.users };
        let Some((rate, limiter)) = limiter else { return Ok(()) };
        limiter
            .check_key(&caller.user_id)
            .map_err(|not_until| (*rate, not_until.wait_time_from(self.limiters.clock.now())))
    }
}

impl crate::services::Budget for RateLimits {
    fn charge(&self, caller: &Caller) -> Result<(), Duration> {
        self.check(caller).map_err(|(_, wait)| wait.max(Duration::from_millis(1)))
    }
}

impl Admission for RateLimits {
    fn admit<B>(&self, request: &mut http::Request<B>) -> Result<(), tonic::Status> {
        let Some(caller) = request.extensions().get::<Caller>() else { return Ok(()) };
        let Err((rate, wait)) = self.check(caller) else { return Ok(()) };
        if let Some(refused) = self.limiters.refusals.note() {
            tracing::info!(user_id = %caller.user_id, refused, "rate limited (the latest caller, and how many calls)");
        }
        // Whole milliseconds, at least one, so a client never retries at once.
        let wait = Duration::from_millis((wait.as_millis() as u64).max(1));
        Err(ApiError::RateLimited { per_second: rate.per_second, burst: rate.burst, retry_after: wait }.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(scopes: Vec<Scope>) -> Caller {
        Caller { user_id: Uuid::new_v4(), scopes, expires_at: u64::MAX }
    }

    #[test]
    fn each_caller_has_its_own_bucket_and_service_tokens_their_own_rate() {
        let layer = RateLimits::new(Rate { per_second: 1, burst: 2 }, Rate { per_second: 1, burst: 4 });
        let (alice, bob, backend) = (caller(vec![]), caller(vec![]), caller(vec![Scope::SyncWrite]));
        assert!(layer.check(&alice).is_ok() && layer.check(&alice).is_ok());
        let (_, wait) = layer.check(&alice).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(layer.check(&bob).is_ok(), "another caller is not affected");
        for _ in 0..4 {
            assert!(layer.check(&backend).is_ok());
        }
        assert!(layer.check(&backend).is_err());
        let off = RateLimits::new(Rate { per_second: 0, burst: 0 }, Rate { per_second: 0, burst: 0 });
        assert!((0..1000).all(|_| off.check(&alice).is_ok()));
    }
}
