//! The kinds of entries in the append-only event log.

use super::types::stored_enum;

stored_enum!(
    /// What an event records.
    EventType, "event type" {
        /// A sync was recorded and reconciled.
        SyncCompleted => "sync_completed",
        /// The backend reported that a sync failed.
        SyncFailed => "sync_failed",
        /// A position appeared at the broker.
        PositionOpened => "position_opened",
        /// A position left the broker.
        PositionClosed => "position_closed",
        /// A divergence between broker and platform was found.
        DivergenceDetected => "divergence_detected",
        /// A divergence no longer holds.
        DivergenceResolved => "divergence_resolved",
        /// The drawdown guard changed level.
        DrawdownLevelChanged => "drawdown_level_changed",
        /// A market alert on a held symbol was raised.
        MarketAlertRaised => "market_alert_raised",
        /// A market alert on a held symbol cleared.
        MarketAlertCleared => "market_alert_cleared",
        /// The pre-liquidation countdown of a CRITICAL account ran out.
        LiquidationDue => "liquidation_due",
        /// A kind this version does not know: written by a newer version of the service (during a rolling
        /// deploy). Read as such (callers see `EVENT_TYPE_UNSPECIFIED`), never written.
        Unknown => "unknown",
    }
);

impl EventType {
    /// The stored kind, or [`EventType::Unknown`] for one this version does not know: one stored event of a
    /// newer kind must not make a whole page of the log unreadable.
    pub fn from_stored(text: &str) -> EventType {
        text.parse().unwrap_or(EventType::Unknown)
    }

    /// Whether an event of this kind can change an account's guard status (its drawdown verdict, its positions'
    /// market alerts, its liquidation countdown). A failed sync changes no balance and no position, and a
    /// divergence is the reconciliation's business: guard watchers need not re-judge the account for those. A
    /// kind this version does not know might.
    pub fn may_change_guards(self) -> bool {
        match self {
            EventType::SyncFailed | EventType::DivergenceDetected | EventType::DivergenceResolved => false,
            EventType::SyncCompleted
            | EventType::PositionOpened
            | EventType::PositionClosed
            | EventType::DrawdownLevelChanged
            | EventType::MarketAlertRaised
            | EventType::MarketAlertCleared
            | EventType::LiquidationDue
            | EventType::Unknown => true,
        }
    }

    /// The kinds a caller may filter on (all but [`EventType::Unknown`]).
    pub fn filterable() -> impl Iterator<Item = EventType> {
        EventType::ALL.iter().copied().filter(|t| *t != EventType::Unknown)
    }
}

/// Deserializes a stored kind leniently (see [`EventType::from_stored`]).
pub fn deserialize_lenient<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<EventType, D::Error> {
    let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(deserializer)?;
    Ok(EventType::from_stored(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_of_a_newer_version_reads_as_unknown_and_is_not_a_filter() {
        assert_eq!(EventType::from_stored("position_opened"), EventType::PositionOpened);
        assert_eq!(EventType::from_stored("margin_call_due"), EventType::Unknown);
        assert!(EventType::filterable().all(|t| t != EventType::Unknown));
        let row: serde_json::Value = serde_json::json!("margin_call_due");
        assert_eq!(deserialize_lenient(row).unwrap(), EventType::Unknown);
    }
}
