//! Conversions from storage rows and domain values to generated messages.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::domain::drawdown::DrawdownLevel;
use crate::domain::events::EventType;
use crate::domain::market::{AlertSeverity, MarketAlertKind, SystemStatus};
use crate::domain::status::ReconciliationState;
use crate::domain::{CloseReason, DivergenceKind, Side};
use crate::pb;
use crate::storage::{DivergenceRow, EventRow};

/// UTC time as a protobuf timestamp.
pub fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    pb::timestamp(t)
}

/// Optional time as an optional timestamp.
pub fn opt_ts(t: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    t.map(ts)
}

/// A duration as a protobuf duration (negative durations are clamped to zero).
pub fn duration(d: chrono::Duration) -> prost_types::Duration {
    let d = d.max(chrono::Duration::zero());
    prost_types::Duration { seconds: d.num_seconds(), nanos: d.subsec_nanos() }
}

/// A decimal string; empty when absent.
pub fn dec(d: Option<Decimal>) -> String {
    d.map(|d| d.to_string()).unwrap_or_default()
}

/// An optional string; empty when absent.
pub fn text(s: Option<impl ToString>) -> String {
    s.map(|s| s.to_string()).unwrap_or_default()
}

pub fn side(s: Side) -> pb::Side {
    match s {
        Side::Buy => pb::Side::Buy,
        Side::Sell => pb::Side::Sell,
    }
}

pub fn event_type(t: EventType) -> pb::EventType {
    match t {
        EventType::SyncCompleted => pb::EventType::SyncCompleted,
        EventType::SyncFailed => pb::EventType::SyncFailed,
        EventType::PositionOpened => pb::EventType::PositionOpened,
        EventType::PositionClosed => pb::EventType::PositionClosed,
        EventType::DivergenceDetected => pb::EventType::DivergenceDetected,
        EventType::DivergenceResolved => pb::EventType::DivergenceResolved,
        EventType::DrawdownLevelChanged => pb::EventType::DrawdownLevelChanged,
        EventType::MarketAlertRaised => pb::EventType::MarketAlertRaised,
        EventType::MarketAlertCleared => pb::EventType::MarketAlertCleared,
        EventType::LiquidationDue => pb::EventType::LiquidationDue,
        // A kind a newer version wrote: the contract says enums may gain values, so callers handle this one.
        EventType::Unknown => pb::EventType::Unspecified,
    }
}

pub fn reconciliation_state(s: ReconciliationState) -> pb::ReconciliationState {
    match s {
        ReconciliationState::NeverSynced => pb::ReconciliationState::NeverSynced,
        ReconciliationState::Error => pb::ReconciliationState::Error,
        ReconciliationState::Stale => pb::ReconciliationState::Stale,
        ReconciliationState::Warning => pb::ReconciliationState::Warning,
        ReconciliationState::Idle => pb::ReconciliationState::Idle,
        ReconciliationState::Healthy => pb::ReconciliationState::Healthy,
    }
}

pub fn divergence_kind(k: DivergenceKind) -> pb::DivergenceKind {
    match k {
        DivergenceKind::EntrySlippage => pb::DivergenceKind::EntrySlippage,
        DivergenceKind::VolumeMismatch => pb::DivergenceKind::VolumeMismatch,
        DivergenceKind::TakeProfitMismatch => pb::DivergenceKind::TakeProfitMismatch,
        DivergenceKind::StopLossMismatch => pb::DivergenceKind::StopLossMismatch,
        DivergenceKind::SideMismatch => pb::DivergenceKind::SideMismatch,
        DivergenceKind::BrokerOnly => pb::DivergenceKind::BrokerOnly,
        DivergenceKind::MissingAtBroker => pb::DivergenceKind::MissingAtBroker,
    }
}

pub fn close_reason(r: CloseReason) -> pb::CloseReason {
    match r {
        CloseReason::ClosedAtBroker => pb::CloseReason::ClosedAtBroker,
        CloseReason::ClosedByPlatform => pb::CloseReason::ClosedByPlatform,
    }
}

pub fn drawdown_level(l: DrawdownLevel) -> pb::DrawdownLevel {
    match l {
        DrawdownLevel::Unknown => pb::DrawdownLevel::Unknown,
        DrawdownLevel::Normal => pb::DrawdownLevel::Normal,
        DrawdownLevel::Warning => pb::DrawdownLevel::Warning,
        DrawdownLevel::Critical => pb::DrawdownLevel::Critical,
    }
}

pub fn alert_kind(k: MarketAlertKind) -> pb::MarketAlertKind {
    match k {
        MarketAlertKind::PriceGap => pb::MarketAlertKind::PriceGap,
        MarketAlertKind::WideSpread => pb::MarketAlertKind::WideSpread,
        MarketAlertKind::StaleQuote => pb::MarketAlertKind::StaleQuote,
    }
}

pub fn alert_severity(s: AlertSeverity) -> pb::AlertSeverity {
    match s {
        AlertSeverity::Warning => pb::AlertSeverity::Warning,
        AlertSeverity::Critical => pb::AlertSeverity::Critical,
    }
}

pub fn system_status(s: SystemStatus) -> pb::SystemStatus {
    match s {
        SystemStatus::Healthy => pb::SystemStatus::Healthy,
        SystemStatus::Warning => pb::SystemStatus::Warning,
        SystemStatus::Critical => pb::SystemStatus::Critical,
    }
}

/// An event of `user_id`'s log.
pub fn event(row: EventRow, user_id: uuid::Uuid) -> pb::ReconciliationEvent {
    let details = match row.details {
        serde_json::Value::Object(map) => map
            .into_iter()
            .filter_map(|(k, v)| match v {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) => Some((k, s)),
                other => Some((k, other.to_string())),
            })
            .collect(),
        _ => Default::default(),
    };
    pb::ReconciliationEvent {
        event_id: row.event_id.to_string(),
        event_type: event_type(row.event_type).into(),
        occurred_time: Some(ts(row.occurred_at)),
        user_id: user_id.to_string(),
        sync_id: text(row.sync_id),
        position_id: text(row.position_id),
        symbol: row.symbol.unwrap_or_default(),
        message: row.message,
        details,
    }
}

/// A divergence.
pub fn divergence(row: &DivergenceRow) -> pb::Divergence {
    pb::Divergence {
        divergence_id: row.divergence_id.to_string(),
        kind: divergence_kind(row.kind).into(),
        symbol: row.symbol.clone(),
        position_id: text(row.position_id),
        position_identifier: text(row.position_identifier.as_ref()),
        platform_trade_id: text(row.platform_trade_id.as_ref()),
        broker_value: text(row.broker_value.as_ref()),
        platform_value: text(row.platform_value.as_ref()),
        difference_percent: dec(row.difference_pct),
        message: row.message.clone(),
        detected_time: Some(ts(row.detected_at)),
        resolved_time: opt_ts(row.resolved_at),
    }
}

/// A stored gap or spread alert.
pub fn market_alert(a: crate::storage::AlertRow, rules: &crate::domain::market::MarketThresholds) -> pb::MarketAlert {
    pb::MarketAlert {
        alert_id: a.alert_id.to_string(),
        symbol: a.symbol,
        kind: alert_kind(a.kind).into(),
        severity: alert_severity(a.severity).into(),
        value_percent: a.value_pct.to_string(),
        threshold_percent: a.threshold_pct.to_string(),
        quote_age: None,
        should_close_positions: crate::domain::market::should_close(a.severity, rules),
        raised_time: Some(ts(a.raised_at)),
        message: a.message,
        observed_time: opt_ts(a.observed_at),
    }
}
