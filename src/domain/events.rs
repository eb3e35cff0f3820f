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
    }
);
