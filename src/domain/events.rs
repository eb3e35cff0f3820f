//! The kinds of entries in the append-only event log.

use super::types::stored_enum;

stored_enum!(
    /// What an event records.
    EventType, "event type" {
        SyncCompleted => "sync_completed",
        SyncFailed => "sync_failed",
        PositionOpened => "position_opened",
        PositionClosed => "position_closed",
        DivergenceDetected => "divergence_detected",
        DivergenceResolved => "divergence_resolved",
        DrawdownLevelChanged => "drawdown_level_changed",
        MarketAlertRaised => "market_alert_raised",
        MarketAlertCleared => "market_alert_cleared",
        LiquidationDue => "liquidation_due",
    }
);
