//! The drawdown guard: equity high-water mark, drawdown percentage, level with hysteresis, and the
//! pre-liquidation countdown.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;

use super::pnl::round_percent;
use super::types::stored_enum;

stored_enum!(
    /// Drawdown guard level, ordered by severity.
    DrawdownLevel, "drawdown level" {
        /// No equity known yet.
        Unknown => "unknown",
        /// Below the warning threshold.
        Normal => "normal",
        /// At or above the warning threshold.
        Warning => "warning",
        /// Close everything.
        Critical => "critical",
    }
);

/// Thresholds of the drawdown guard (per account, with service-wide defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct DrawdownThresholds {
    /// WARNING at or above this drawdown, in percent (default 15).
    pub warning_pct: Decimal,
    /// CRITICAL at or above this drawdown, in percent (default 20).
    pub max_pct: Decimal,
    /// CRITICAL below this equity, in account currency (default 100).
    pub min_equity: Decimal,
    /// A level is left only when the drawdown is this many percentage points below its threshold (default 1).
    pub hysteresis_pct: Decimal,
    /// Countdown from entering CRITICAL to liquidation (default 10 s).
    pub pre_liquidation: Duration,
}

impl Default for DrawdownThresholds {
    fn default() -> Self {
        DrawdownThresholds {
            warning_pct: Decimal::from(15),
            max_pct: Decimal::from(20),
            min_equity: Decimal::from(100),
            hysteresis_pct: Decimal::ONE,
            pre_liquidation: Duration::seconds(10),
        }
    }
}

impl DrawdownThresholds {
    /// These thresholds with an account's overrides (each `None` keeps the service default).
    pub fn with_overrides(
        &self,
        warning_pct: Option<Decimal>,
        max_pct: Option<Decimal>,
        min_equity: Option<Decimal>,
    ) -> Self {
        DrawdownThresholds {
            warning_pct: warning_pct.unwrap_or(self.warning_pct),
            max_pct: max_pct.unwrap_or(self.max_pct),
            min_equity: min_equity.unwrap_or(self.min_equity),
            ..self.clone()
        }
    }
}

/// The new high-water mark after observing `equity`: it never decreases.
pub fn next_peak(peak: Option<Decimal>, equity: Decimal) -> Decimal {
    peak.map_or(equity, |p| p.max(equity))
}

/// `(peak - equity) / peak x 100`, rounded to 4 places, never below 0; 0 when the peak is not positive, and
/// `None` when it cannot be computed in range (impossible for decoded money: see [`super::bounds::MONEY`]).
pub fn drawdown_pct(peak: Decimal, equity: Decimal) -> Option<Decimal> {
    if peak <= Decimal::ZERO {
        return Some(Decimal::ZERO);
    }
    let pct = peak.checked_sub(equity)?.checked_mul(Decimal::ONE_HUNDRED)?.checked_div(peak)?;
    Some(round_percent(pct).max(Decimal::ZERO))
}

/// The level for a drawdown and equity, ignoring history.
fn raw_level(drawdown: Decimal, equity: Decimal, t: &DrawdownThresholds) -> DrawdownLevel {
    if equity < t.min_equity || drawdown >= t.max_pct {
        DrawdownLevel::Critical
    } else if drawdown >= t.warning_pct {
        DrawdownLevel::Warning
    } else {
        DrawdownLevel::Normal
    }
}

/// The level after a sync, given the previous one. Worsening is immediate; improving leaves a level only when
/// the drawdown is below that level's threshold minus the hysteresis (equity below the minimum stays CRITICAL).
/// A drawdown that could not be computed (`None`) judges on the minimum equity alone and otherwise keeps the
/// previous level.
pub fn next_level(
    previous: DrawdownLevel,
    drawdown: Option<Decimal>,
    equity: Decimal,
    t: &DrawdownThresholds,
) -> DrawdownLevel {
    let Some(drawdown) = drawdown else {
        return if equity < t.min_equity { DrawdownLevel::Critical } else { previous };
    };
    let raw = raw_level(drawdown, equity, t);
    if raw >= previous {
        return raw;
    }
    // Thresholds are bounded percentages (configuration), so these differences cannot overflow.
    if previous == DrawdownLevel::Critical && drawdown >= t.max_pct - t.hysteresis_pct {
        return DrawdownLevel::Critical;
    }
    if previous >= DrawdownLevel::Warning && drawdown >= t.warning_pct - t.hysteresis_pct {
        return DrawdownLevel::Warning;
    }
    raw
}

/// When an account CRITICAL since `since` (the server's clock) is to be liquidated.
pub fn liquidation_time(since: DateTime<Utc>, t: &DrawdownThresholds) -> DateTime<Utc> {
    since.checked_add_signed(t.pre_liquidation).unwrap_or(since)
}

/// Time left before liquidation for an account CRITICAL since `since`; zero once the countdown has run out.
pub fn time_to_liquidation(since: DateTime<Utc>, now: DateTime<Utc>, t: &DrawdownThresholds) -> Duration {
    liquidation_time(since, t).signed_duration_since(now).max(Duration::zero())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    use super::*;

    fn t() -> DrawdownThresholds {
        DrawdownThresholds::default()
    }

    fn nl(previous: DrawdownLevel, drawdown: Decimal, equity: Decimal, t: &DrawdownThresholds) -> DrawdownLevel {
        next_level(previous, Some(drawdown), equity, t)
    }

    #[test]
    fn an_incomputable_drawdown_keeps_the_level_unless_equity_is_below_the_minimum() {
        assert_eq!(next_level(DrawdownLevel::Warning, None, dec!(5000), &t()), DrawdownLevel::Warning);
        assert_eq!(next_level(DrawdownLevel::Normal, None, dec!(50), &t()), DrawdownLevel::Critical);
    }

    #[test]
    fn drawdown_is_relative_to_the_peak() {
        assert_eq!(drawdown_pct(dec!(10000), dec!(8400)), Some(dec!(16)));
        assert_eq!(drawdown_pct(dec!(10000), dec!(10500)), Some(dec!(0)));
        assert_eq!(drawdown_pct(dec!(0), dec!(10)), Some(dec!(0)));
        assert_eq!(drawdown_pct(dec!(3), dec!(2)), Some(dec!(33.3333)));
        assert_eq!(drawdown_pct(Decimal::MAX, Decimal::MIN), None, "out of range, not a panic");
    }

    #[test]
    fn levels_follow_the_default_thresholds() {
        let eq = dec!(5000);
        assert_eq!(nl(DrawdownLevel::Unknown, dec!(14.99), eq, &t()), DrawdownLevel::Normal);
        assert_eq!(nl(DrawdownLevel::Unknown, dec!(15), eq, &t()), DrawdownLevel::Warning);
        assert_eq!(nl(DrawdownLevel::Normal, dec!(20), eq, &t()), DrawdownLevel::Critical);
        assert_eq!(nl(DrawdownLevel::Normal, dec!(1), dec!(99.99), &t()), DrawdownLevel::Critical);
    }

    #[test]
    fn a_level_is_left_only_one_point_below_its_threshold() {
        let eq = dec!(5000);
        assert_eq!(nl(DrawdownLevel::Warning, dec!(14.5), eq, &t()), DrawdownLevel::Warning);
        assert_eq!(nl(DrawdownLevel::Warning, dec!(14), eq, &t()), DrawdownLevel::Warning);
        assert_eq!(nl(DrawdownLevel::Warning, dec!(13.99), eq, &t()), DrawdownLevel::Normal);
        assert_eq!(nl(DrawdownLevel::Critical, dec!(19.5), eq, &t()), DrawdownLevel::Critical);
        assert_eq!(nl(DrawdownLevel::Critical, dec!(18.9), eq, &t()), DrawdownLevel::Warning);
        assert_eq!(nl(DrawdownLevel::Critical, dec!(10), eq, &t()), DrawdownLevel::Normal);
    }

    #[test]
    fn account_overrides_replace_only_the_thresholds_they_set() {
        let t = t().with_overrides(Some(dec!(10)), None, Some(dec!(500)));
        assert_eq!((t.warning_pct, t.max_pct, t.min_equity), (dec!(10), dec!(20), dec!(500)));
        assert_eq!((t.hysteresis_pct, t.pre_liquidation), (dec!(1), Duration::seconds(10)));
    }

    #[test]
    fn the_liquidation_countdown_runs_down_to_zero() {
        let since: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z").unwrap().into();
        assert_eq!(time_to_liquidation(since, since + Duration::seconds(3), &t()), Duration::seconds(7));
        assert_eq!(time_to_liquidation(since, since + Duration::seconds(30), &t()), Duration::zero());
    }

    proptest! {
        #[test]
        fn the_peak_never_decreases(start in 0i64..1_000_000, equities in prop::collection::vec(0i64..1_000_000, 1..50)) {
            let mut peak = Decimal::from(start);
            for e in equities {
                let next = next_peak(Some(peak), Decimal::from(e));
                prop_assert!(next >= peak);
                prop_assert!(next >= Decimal::from(e));
                peak = next;
            }
        }

        #[test]
        fn drawdown_stays_between_0_and_100_for_non_negative_equity(peak in 1i64..1_000_000, equity in 0i64..2_000_000) {
            let d = drawdown_pct(Decimal::from(peak), Decimal::from(equity)).unwrap();
            prop_assert!(d >= Decimal::ZERO && d <= Decimal::ONE_HUNDRED);
        }

        #[test]
        fn hysteresis_never_reports_better_than_the_raw_level(prev in 0usize..4, dd in 0i64..3000, eq in 0i64..10_000) {
            let prev = DrawdownLevel::ALL[prev];
            let (dd, eq) = (Decimal::new(dd, 2), Decimal::from(eq));
            prop_assert!(nl(prev, dd, eq, &t()) >= raw_level(dd, eq, &t()));
        }
    }
}
