//! The market-condition guard: price gaps, wide spreads and stale quotes per symbol, and the overall guard
//! verdict.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;

use super::drawdown::DrawdownLevel;
use super::pnl::round_percent;
use super::types::stored_enum;

stored_enum!(
    /// Severity of a market alert, ordered.
    AlertSeverity, "alert severity" {
        /// Attention.
        Warning => "warning",
        /// Act.
        Critical => "critical",
    }
);

stored_enum!(
    /// What a market alert observed.
    MarketAlertKind, "market alert kind" {
        /// A candle opened far from the previous close.
        PriceGap => "price_gap",
        /// The spread is wide relative to the price.
        WideSpread => "wide_spread",
        /// No quote for too long.
        StaleQuote => "stale_quote",
    }
);

/// Thresholds of the market guard.
#[derive(Debug, Clone, PartialEq)]
pub struct MarketThresholds {
    /// Gap warning at or above this percentage (default 5).
    pub gap_warning_pct: Decimal,
    /// Gap critical at or above this percentage (default 10).
    pub gap_critical_pct: Decimal,
    /// Spread warning strictly above this percentage (default 0.5).
    pub spread_warning_pct: Decimal,
    /// Spread critical at or above this percentage (default 1).
    pub spread_critical_pct: Decimal,
    /// A held symbol without a quote for longer than this is stale (default 60 s).
    pub stale_after: Duration,
    /// Alerts at or above this severity say positions should be closed (default WARNING).
    pub close_from: AlertSeverity,
}

impl Default for MarketThresholds {
    fn default() -> Self {
        MarketThresholds {
            gap_warning_pct: Decimal::from(5),
            gap_critical_pct: Decimal::from(10),
            spread_warning_pct: Decimal::new(5, 1),
            spread_critical_pct: Decimal::ONE,
            stale_after: Duration::seconds(60),
            close_from: AlertSeverity::Warning,
        }
    }
}

/// A crossed threshold: the severity and the threshold that was crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breach {
    /// How bad.
    pub severity: AlertSeverity,
    /// The threshold crossed, in percent.
    pub threshold_pct: Decimal,
}

/// `|open - previous_close| / previous_close x 100`, rounded to 4 places; `None` when it cannot be computed
/// (a zero previous close, or out of range: impossible for decoded prices, see [`super::bounds::PRICE`]).
pub fn gap_pct(previous_close: Decimal, open: Decimal) -> Option<Decimal> {
    let pct = open.checked_sub(previous_close)?.abs().checked_mul(Decimal::ONE_HUNDRED)?.checked_div(previous_close)?;
    Some(round_percent(pct))
}

/// `(ask - bid) / bid x 100`, rounded to 4 places; `None` when it cannot be computed (see [`gap_pct`]).
pub fn spread_pct(bid: Decimal, ask: Decimal) -> Option<Decimal> {
    let pct = ask.checked_sub(bid)?.checked_mul(Decimal::ONE_HUNDRED)?.checked_div(bid)?;
    Some(round_percent(pct))
}

/// The breach of a gap, if any (warning >= 5 %, critical >= 10 % by default).
pub fn gap_breach(gap: Decimal, t: &MarketThresholds) -> Option<Breach> {
    if gap >= t.gap_critical_pct {
        Some(Breach { severity: AlertSeverity::Critical, threshold_pct: t.gap_critical_pct })
    } else if gap >= t.gap_warning_pct {
        Some(Breach { severity: AlertSeverity::Warning, threshold_pct: t.gap_warning_pct })
    } else {
        None
    }
}

/// The breach of a spread, if any (warning > 0.5 %, critical >= 1 % by default).
pub fn spread_breach(spread: Decimal, t: &MarketThresholds) -> Option<Breach> {
    if spread >= t.spread_critical_pct {
        Some(Breach { severity: AlertSeverity::Critical, threshold_pct: t.spread_critical_pct })
    } else if spread > t.spread_warning_pct {
        Some(Breach { severity: AlertSeverity::Warning, threshold_pct: t.spread_warning_pct })
    } else {
        None
    }
}

/// Whether a held symbol's quote is stale at `now`: never quoted, or last quoted longer than `stale_after` ago.
pub fn quote_is_stale(last_quote: Option<DateTime<Utc>>, now: DateTime<Utc>, t: &MarketThresholds) -> bool {
    last_quote.is_none_or(|at| now.signed_duration_since(at) > t.stale_after)
}

/// When a quote of `at` goes (or went) stale.
pub fn stale_since(at: DateTime<Utc>, t: &MarketThresholds) -> DateTime<Utc> {
    at.checked_add_signed(t.stale_after).unwrap_or(at)
}

/// Whether an alert of this severity says positions should be closed.
pub fn should_close(severity: AlertSeverity, t: &MarketThresholds) -> bool {
    severity >= t.close_from
}

/// Overall guard verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SystemStatus {
    /// Nothing to act on.
    Healthy,
    /// A warning somewhere.
    Warning,
    /// A critical drawdown or alert.
    Critical,
}

/// The worse of the drawdown level and the alerts' severities.
pub fn system_status(drawdown: DrawdownLevel, alerts: impl IntoIterator<Item = AlertSeverity>) -> SystemStatus {
    let from_drawdown = match drawdown {
        DrawdownLevel::Unknown | DrawdownLevel::Normal => SystemStatus::Healthy,
        DrawdownLevel::Warning => SystemStatus::Warning,
        DrawdownLevel::Critical => SystemStatus::Critical,
    };
    alerts
        .into_iter()
        .map(|s| match s {
            AlertSeverity::Warning => SystemStatus::Warning,
            AlertSeverity::Critical => SystemStatus::Critical,
        })
        .fold(from_drawdown, SystemStatus::max)
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    fn t() -> MarketThresholds {
        MarketThresholds::default()
    }

    #[test]
    fn gaps_are_relative_to_the_previous_close_in_either_direction() {
        assert_eq!(gap_pct(dec!(2000), dec!(2100)), Some(dec!(5)));
        assert_eq!(gap_pct(dec!(2000), dec!(1800)), Some(dec!(10)));
        assert_eq!(gap_pct(dec!(0), dec!(1)), None);
        assert_eq!(gap_pct(Decimal::MIN, Decimal::MAX), None, "out of range, not a panic");
        assert_eq!(gap_breach(dec!(4.9999), &t()), None);
        assert_eq!(gap_breach(dec!(5), &t()).map(|b| b.severity), Some(AlertSeverity::Warning));
        assert_eq!(gap_breach(dec!(10), &t()).map(|b| b.severity), Some(AlertSeverity::Critical));
    }

    #[test]
    fn spread_warning_is_strictly_above_its_threshold_and_critical_inclusive() {
        assert_eq!(spread_pct(dec!(100), dec!(100.5)), Some(dec!(0.5)));
        assert_eq!(spread_pct(Decimal::MIN, Decimal::MAX), None);
        assert_eq!(spread_breach(dec!(0.5), &t()), None);
        assert_eq!(spread_breach(dec!(0.5001), &t()).map(|b| b.severity), Some(AlertSeverity::Warning));
        assert_eq!(spread_breach(dec!(1), &t()).map(|b| b.severity), Some(AlertSeverity::Critical));
    }

    #[test]
    fn quotes_go_stale_after_the_threshold_and_never_quoted_is_stale() {
        let now: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z").unwrap().into();
        assert!(!quote_is_stale(Some(now - Duration::seconds(60)), now, &t()));
        assert!(quote_is_stale(Some(now - Duration::seconds(61)), now, &t()));
        assert!(quote_is_stale(None, now, &t()));
    }

    #[test]
    fn closing_starts_at_the_configured_severity() {
        assert!(should_close(AlertSeverity::Warning, &t()));
        let strict = MarketThresholds { close_from: AlertSeverity::Critical, ..t() };
        assert!(!should_close(AlertSeverity::Warning, &strict));
        assert!(should_close(AlertSeverity::Critical, &strict));
    }

    #[test]
    fn the_system_status_is_the_worst_signal() {
        assert_eq!(system_status(DrawdownLevel::Unknown, []), SystemStatus::Healthy);
        assert_eq!(system_status(DrawdownLevel::Warning, []), SystemStatus::Warning);
        assert_eq!(
            system_status(DrawdownLevel::Normal, [AlertSeverity::Warning, AlertSeverity::Critical]),
            SystemStatus::Critical
        );
        assert_eq!(system_status(DrawdownLevel::Critical, [AlertSeverity::Warning]), SystemStatus::Critical);
    }
}
