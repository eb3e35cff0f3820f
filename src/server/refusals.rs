//! Refusals counted, and logged at most once a second: under overload, a log line per refused call would add
//! a flood of writes to stderr to the load being shed. (Each refused call is still counted per code in the
//! metrics, by the trace layer.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often refusals are reported at most.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Refusals since the last report.
#[derive(Debug)]
pub struct Refusals {
    started: Instant,
    unreported: AtomicU64,
    /// Milliseconds after `started` before which no report is due.
    quiet_until_ms: AtomicU64,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals { started: Instant::now(), unreported: AtomicU64::new(0), quiet_until_ms: AtomicU64::new(0) }
    }
}

impl Refusals {
    /// Counts one refusal. Returns how many there were since the last report (this one included) when a report
    /// is due: the first refusal, then at most one a second.
    pub fn note(&self) -> Option<u64> {
        self.note_at(self.started.elapsed())
    }

    fn note_at(&self, now: Duration) -> Option<u64> {
        self.unreported.fetch_add(1, Ordering::Relaxed);
        let now_ms = now.as_millis() as u64;
        let quiet_until = self.quiet_until_ms.load(Ordering::Relaxed);
        let next = now_ms + REPORT_EVERY.as_millis() as u64;
        if now_ms < quiet_until
            || self.quiet_until_ms.compare_exchange(quiet_until, next, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return None;
        }
        Some(self.unreported.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_refusal_is_reported_then_at_most_one_report_a_second_with_the_count() {
        let r = Refusals::default();
        let ms = Duration::from_millis;
        assert_eq!(r.note_at(ms(0)), Some(1));
        assert_eq!(r.note_at(ms(10)), None);
        assert_eq!(r.note_at(ms(999)), None);
        assert_eq!(r.note_at(ms(1000)), Some(3));
        assert_eq!(r.note_at(ms(1500)), None);
        assert_eq!(r.note_at(ms(5000)), Some(2));
    }
}
