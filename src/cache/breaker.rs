//! A small circuit breaker around Redis: after `threshold` consecutive failures it opens for `cooldown`, then
//! lets exactly one probe through (half-open); the probe's success closes it, its failure re-opens it.
//!
//! Hand-written because the behaviour needed is ten lines of state and the crates on offer wrap a whole
//! `tower::Service`, which the cache's individual Redis calls are not.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is out; if it never reports back (its request was cancelled), another may go after `until`.
    HalfOpen {
        until: Instant,
    },
}

/// What happened to the breaker on a success, so the caller can react to a recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changed.
    None,
    /// The breaker was open or half-open and is now closed.
    Recovered,
}

/// The breaker.
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
    threshold: u32,
    cooldown: Duration,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker { state: Mutex::new(State::Closed { failures: 0 }), threshold: threshold.max(1), cooldown }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain value; a panic elsewhere cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a call may go to Redis now. While open, the first call after the cooldown is the probe.
    pub fn allow(&self) -> bool {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } | State::HalfOpen { until } if Instant::now() >= until => {
                *state = State::HalfOpen { until: Instant::now() + self.cooldown };
                true
            }
            State::Open { .. } | State::HalfOpen { .. } => false,
        }
    }

    /// Whether the breaker is closed (Redis believed healthy).
    pub fn is_closed(&self) -> bool {
        matches!(*self.lock(), State::Closed { .. })
    }

    /// Records a successful call.
    pub fn success(&self) -> Transition {
        let mut state = self.lock();
        let recovered = !matches!(*state, State::Closed { .. });
        *state = State::Closed { failures: 0 };
        if recovered { Transition::Recovered } else { Transition::None }
    }

    /// Records a failed call (error or timeout).
    pub fn failure(&self) {
        let mut state = self.lock();
        *state = match *state {
            State::Closed { failures } if failures + 1 < self.threshold => State::Closed { failures: failures + 1 },
            State::Closed { .. } | State::HalfOpen { .. } | State::Open { .. } => {
                State::Open { until: Instant::now() + self.cooldown }
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_opens_after_the_threshold_and_probes_once_after_the_cooldown() {
        let b = Breaker::new(2, Duration::from_millis(30));
        assert!(b.allow());
        b.failure();
        assert!(b.allow(), "one failure is below the threshold");
        b.failure();
        assert!(!b.allow(), "open");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow(), "the probe");
        assert!(!b.allow(), "only one probe at a time");
        b.failure();
        assert!(!b.allow(), "a failed probe re-opens");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow(), "a probe");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow(), "a probe that never reported back does not block further probes");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow());
        assert_eq!(b.success(), Transition::Recovered);
        assert!(b.is_closed() && b.allow());
        assert_eq!(b.success(), Transition::None);
    }
}
