//! How much the replica's feed reader is held back, for `/metrics` and the logs.
//!
//! A transaction still running below the feed's horizon is *owed*: its events are delivered when it commits,
//! while everything else flows past it. Nothing is held back by it unless more than `MAX_OWED` writing
//! transactions run at once (the read is then *capped* at the oldest of the excess ones). The age of the
//! oldest owed transaction still says something: a session left open for minutes is worth an operator's look
//! (it holds PostgreSQL's xmin back too, which blocks vacuum), so the hub logs it once, with what the cluster
//! says about the session holding it.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::storage::feed::FeedPosition;

/// The reader's lag. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Lag {
    inner: Arc<Mutex<State>>,
    /// Seconds from an event's transaction start (its `occurred_at`, PostgreSQL's `now()`) to this replica's
    /// broadcast of it: the delivery lag every stream on the replica starts from.
    delivery: Histogram,
}

impl Default for Lag {
    fn default() -> Lag {
        // 1 ms to ~65 s.
        Lag { inner: Arc::default(), delivery: Histogram::new(exponential_buckets(0.001, 2.0, 17)) }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Owed transactions, by id, and when the reader first owed each.
    owed: BTreeMap<i64, Instant>,
    /// Whether the last read was capped below the snapshot's `xmax`.
    capped: bool,
    /// Transactions already logged as overdue.
    logged: HashSet<i64>,
}

/// The lag at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LagSnapshot {
    /// Transactions owed.
    pub owed: usize,
    /// How long the oldest of them has been owed (zero when none is).
    pub oldest: Duration,
    /// Whether committed events are waiting for older transactions to end.
    pub capped: bool,
}

impl Lag {
    /// Forgets everything owed: the reader stopped reading (nobody on the replica watches).
    pub fn clear(&self) {
        let mut state = self.lock();
        state.owed.clear();
        state.logged.clear();
        state.capped = false;
    }

    /// Records where a read left the reader.
    pub fn observe(&self, position: &FeedPosition, capped: bool) {
        let now = Instant::now();
        let mut state = self.lock();
        state.owed.retain(|tx, _| position.owed.binary_search_by_key(tx, |(x, _)| *x).is_ok());
        for (tx, _) in position.owed.iter() {
            state.owed.entry(*tx).or_insert(now);
        }
        let State { owed, logged, .. } = &mut *state;
        logged.retain(|tx| owed.contains_key(tx));
        state.capped = capped;
    }

    /// Records the delivery lag of events broadcast now, written at `occurred` (the database's clock; a
    /// negative difference, clocks apart, counts as zero).
    pub fn delivered(&self, occurred: impl Iterator<Item = chrono::DateTime<chrono::Utc>>) {
        let now = chrono::Utc::now();
        for at in occurred {
            let seconds = (now - at).to_std().map_or(0.0, |d| d.as_secs_f64());
            self.delivery.observe(seconds);
        }
    }

    /// The lag now.
    pub fn snapshot(&self) -> LagSnapshot {
        let state = self.lock();
        let oldest = state.owed.values().min().map_or(Duration::ZERO, Instant::elapsed);
        LagSnapshot { owed: state.owed.len(), oldest, capped: state.capped }
    }

    /// The owed transactions older than `after` not logged yet (marked logged now), oldest first.
    pub fn overdue(&self, after: Duration) -> Vec<i64> {
        let mut state = self.lock();
        let overdue: Vec<i64> = state
            .owed
            .iter()
            .filter(|(tx, since)| since.elapsed() >= after && !state.logged.contains(tx))
            .map(|(tx, _)| *tx)
            .collect();
        state.logged.extend(overdue.iter().copied());
        overdue
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The lag's gauges, read at scrape time.
impl Collector for Lag {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let lag = self.snapshot();
        let gauges: [(&str, &str, f64); 3] = [
            (
                "feed_owed_transactions",
                "Transactions still running below the event feed's horizon, whose events are delivered when they commit",
                lag.owed as f64,
            ),
            (
                "feed_oldest_owed_seconds",
                "How long the oldest transaction the event feed waits for has been running, as this replica saw it",
                lag.oldest.as_secs_f64(),
            ),
            (
                "feed_capped",
                "1 while committed events wait for older transactions (more writers running at once than a position can owe)",
                if lag.capped { 1.0 } else { 0.0 },
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        self.delivery.encode(encoder.encode_descriptor(
            "feed_delivery_seconds",
            "Seconds from an event's writing transaction's start to this replica's broadcast of it to its watch streams",
            None,
            self.delivery.metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owed_transactions_age_from_when_first_owed_and_are_logged_once() {
        let lag = Lag::default();
        let owing = |owed: &[(i64, i64)]| FeedPosition { horizon: 100, owed: owed.to_vec().into() };
        lag.observe(&owing(&[(5, 0), (9, 0)]), false);
        std::thread::sleep(Duration::from_millis(20));
        lag.observe(&owing(&[(5, 0), (9, 0), (12, 0)]), true);
        let now = lag.snapshot();
        assert_eq!((now.owed, now.capped), (3, true));
        assert!(now.oldest >= Duration::from_millis(20));
        assert_eq!(lag.overdue(Duration::from_millis(10)), vec![5, 9]);
        assert_eq!(lag.overdue(Duration::from_millis(10)), Vec::<i64>::new(), "logged once");
        lag.observe(&owing(&[]), false);
        assert_eq!(lag.snapshot(), LagSnapshot { owed: 0, oldest: Duration::ZERO, capped: false });
    }
}
