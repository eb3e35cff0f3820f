//! The reconciliation state of an account, derived from its summary row.

use chrono::{DateTime, Duration, Utc};

/// Overall reconciliation state, in order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconciliationState {
    /// No sync recorded.
    NeverSynced,
    /// The most recent sync failed.
    Error,
    /// The last successful sync is older than the stale threshold.
    Stale,
    /// Unresolved divergences.
    Warning,
    /// No open positions.
    Idle,
    /// Open positions, all reconciled.
    Healthy,
}

/// What the state depends on, as kept in the per-user summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncFacts {
    /// Syncs recorded, successful or failed.
    pub total_syncs: i64,
    /// Whether the most recent sync failed.
    pub last_sync_failed: bool,
    /// Finish time of the most recent successful sync.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Open positions as of the last successful sync.
    pub open_positions: i32,
    /// Unresolved divergences.
    pub open_divergences: i32,
}

/// Derives the state at `now`. A failed sync wins over staleness (it says *why* data is old); staleness wins
/// over divergences (old divergences may already be resolved at the broker).
pub fn reconciliation_state(facts: &SyncFacts, now: DateTime<Utc>, stale_after: Duration) -> ReconciliationState {
    if facts.total_syncs == 0 {
        return ReconciliationState::NeverSynced;
    }
    if facts.last_sync_failed {
        return ReconciliationState::Error;
    }
    match facts.last_success_at {
        None => return ReconciliationState::Error,
        Some(at) if now - at > stale_after => return ReconciliationState::Stale,
        Some(_) => {}
    }
    if facts.open_divergences > 0 {
        ReconciliationState::Warning
    } else if facts.open_positions == 0 {
        ReconciliationState::Idle
    } else {
        ReconciliationState::Healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> SyncFacts {
        SyncFacts {
            total_syncs: 3,
            last_sync_failed: false,
            last_success_at: Some(now() - Duration::seconds(5)),
            open_positions: 2,
            open_divergences: 0,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z").unwrap().into()
    }

    fn state(f: SyncFacts) -> ReconciliationState {
        reconciliation_state(&f, now(), Duration::seconds(30))
    }

    #[test]
    fn an_account_without_syncs_was_never_synced() {
        assert_eq!(
            state(SyncFacts { total_syncs: 0, last_success_at: None, ..facts() }),
            ReconciliationState::NeverSynced
        );
    }

    #[test]
    fn a_failed_last_sync_is_an_error_even_when_stale_or_divergent() {
        let f = SyncFacts {
            last_sync_failed: true,
            last_success_at: Some(now() - Duration::hours(1)),
            open_divergences: 2,
            ..facts()
        };
        assert_eq!(state(f), ReconciliationState::Error);
    }

    #[test]
    fn only_failed_syncs_is_an_error() {
        assert_eq!(state(SyncFacts { last_success_at: None, ..facts() }), ReconciliationState::Error);
    }

    #[test]
    fn an_old_success_is_stale_and_the_threshold_is_exclusive() {
        assert_eq!(
            state(SyncFacts { last_success_at: Some(now() - Duration::seconds(31)), ..facts() }),
            ReconciliationState::Stale
        );
        assert_eq!(
            state(SyncFacts { last_success_at: Some(now() - Duration::seconds(30)), ..facts() }),
            ReconciliationState::Healthy
        );
    }

    #[test]
    fn divergences_warn_and_no_positions_is_idle() {
        assert_eq!(state(SyncFacts { open_divergences: 1, ..facts() }), ReconciliationState::Warning);
        assert_eq!(state(SyncFacts { open_positions: 0, ..facts() }), ReconciliationState::Idle);
        assert_eq!(state(facts()), ReconciliationState::Healthy);
    }
}
