//! Reconciliation and guard thresholds, turned into [`domain::Rules`] after validation.

use std::time::Duration;

use clap::{Args, ValueEnum};
use rust_decimal::Decimal;

use super::ConfigError;
use crate::domain::Rules;
use crate::domain::bounds::{DecimalBounds, MONEY, PERCENT};
use crate::domain::drawdown::DrawdownThresholds;
use crate::domain::market::{AlertSeverity, MarketThresholds};
use crate::domain::reconcile::Tolerances;

/// Reconciliation and guard rules.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Rules")]
pub struct RuleArgs {
    /// The reconciliation state is STALE when the last successful sync is older than this.
    #[arg(long, env = "TM_STALE_SYNC_AFTER", value_parser = humantime::parse_duration, default_value = "30s")]
    pub stale_sync_after: Duration,
    /// Drawdown WARNING threshold, percent.
    #[arg(long, env = "TM_DRAWDOWN_WARNING_PCT", default_value = "15")]
    pub drawdown_warning_pct: Decimal,
    /// Drawdown CRITICAL threshold, percent.
    #[arg(long, env = "TM_DRAWDOWN_MAX_PCT", default_value = "20")]
    pub drawdown_max_pct: Decimal,
    /// Equity below which the drawdown guard is CRITICAL, in account currency.
    #[arg(long, env = "TM_MIN_EQUITY", default_value = "100")]
    pub min_equity: Decimal,
    /// Hysteresis: a drawdown level is left only this many percentage points below its threshold.
    #[arg(long, env = "TM_DRAWDOWN_HYSTERESIS_PCT", default_value = "1")]
    pub drawdown_hysteresis_pct: Decimal,
    /// Pre-liquidation countdown after entering CRITICAL.
    #[arg(long, env = "TM_PRE_LIQUIDATION", value_parser = humantime::parse_duration, default_value = "10s")]
    pub pre_liquidation: Duration,
    /// Price-gap WARNING threshold, percent.
    #[arg(long, env = "TM_GAP_WARNING_PCT", default_value = "5")]
    pub gap_warning_pct: Decimal,
    /// Price-gap CRITICAL threshold, percent.
    #[arg(long, env = "TM_GAP_CRITICAL_PCT", default_value = "10")]
    pub gap_critical_pct: Decimal,
    /// Spread WARNING threshold (strictly above), percent.
    #[arg(long, env = "TM_SPREAD_WARNING_PCT", default_value = "0.5")]
    pub spread_warning_pct: Decimal,
    /// Spread CRITICAL threshold, percent.
    #[arg(long, env = "TM_SPREAD_CRITICAL_PCT", default_value = "1")]
    pub spread_critical_pct: Decimal,
    /// A symbol with open positions and no quote for longer than this raises a STALE_QUOTE warning.
    #[arg(long, env = "TM_STALE_QUOTE_AFTER", value_parser = humantime::parse_duration, default_value = "60s")]
    pub stale_quote_after: Duration,
    /// A matched pair diverges when |entry difference| / platform entry exceeds this, percent.
    #[arg(long, env = "TM_ENTRY_TOLERANCE_PCT", default_value = "0.05")]
    pub entry_tolerance_pct: Decimal,
    /// A matched pair diverges when |volume difference| / platform volume exceeds this, percent.
    #[arg(long, env = "TM_VOLUME_TOLERANCE_PCT", default_value = "1")]
    pub volume_tolerance_pct: Decimal,
    /// Take-profit / stop-loss levels diverge when their difference relative to the entry price exceeds this,
    /// percent.
    #[arg(long, env = "TM_PROTECTION_TOLERANCE_PCT", default_value = "0.05")]
    pub protection_tolerance_pct: Decimal,
    /// Market alerts at or above this severity say positions should be closed.
    #[arg(long, env = "TM_CLOSE_POSITIONS_FROM", value_enum, default_value_t = Severity::Warning)]
    pub close_positions_from: Severity,
}

/// Alert severity, for configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Severity {
    /// WARNING and CRITICAL alerts.
    Warning,
    /// CRITICAL alerts only.
    Critical,
}

fn chrono_duration(d: Duration, name: &str) -> Result<chrono::Duration, ConfigError> {
    chrono::Duration::from_std(d).map_err(|_| ConfigError(format!("{name} is too large")))
}

impl RuleArgs {
    /// Validates the thresholds and converts them for the domain.
    pub fn to_rules(&self) -> Result<Rules, ConfigError> {
        let bounded = |v: Decimal, bounds: &DecimalBounds, name: &str| {
            bounds.check(v).map(|()| v).map_err(|e| ConfigError(format!("{name} {v} {e}")))
        };
        let positive = |v: Decimal, name: &str| {
            let v = bounded(v, &PERCENT, name)?;
            if v > Decimal::ZERO { Ok(v) } else { Err(ConfigError(format!("{name} must be positive"))) }
        };
        let drawdown = DrawdownThresholds {
            warning_pct: positive(self.drawdown_warning_pct, "--drawdown-warning-pct")?,
            max_pct: positive(self.drawdown_max_pct, "--drawdown-max-pct")?,
            min_equity: bounded(self.min_equity, &MONEY, "--min-equity")?.max(Decimal::ZERO),
            hysteresis_pct: bounded(self.drawdown_hysteresis_pct, &PERCENT, "--drawdown-hysteresis-pct")?,
            pre_liquidation: chrono_duration(self.pre_liquidation, "--pre-liquidation")?,
        };
        if drawdown.warning_pct > drawdown.max_pct {
            return Err(ConfigError("--drawdown-warning-pct must not exceed --drawdown-max-pct".into()));
        }
        let market = MarketThresholds {
            gap_warning_pct: positive(self.gap_warning_pct, "--gap-warning-pct")?,
            gap_critical_pct: positive(self.gap_critical_pct, "--gap-critical-pct")?,
            spread_warning_pct: positive(self.spread_warning_pct, "--spread-warning-pct")?,
            spread_critical_pct: positive(self.spread_critical_pct, "--spread-critical-pct")?,
            stale_after: chrono_duration(self.stale_quote_after, "--stale-quote-after")?,
            close_from: match self.close_positions_from {
                Severity::Warning => AlertSeverity::Warning,
                Severity::Critical => AlertSeverity::Critical,
            },
        };
        if market.gap_warning_pct > market.gap_critical_pct || market.spread_warning_pct > market.spread_critical_pct {
            return Err(ConfigError("warning thresholds must not exceed critical ones".into()));
        }
        let non_negative = |v: Decimal, name: &str| bounded(v, &PERCENT, name);
        let matching = Tolerances {
            entry_pct: non_negative(self.entry_tolerance_pct, "--entry-tolerance-pct")?,
            volume_pct: non_negative(self.volume_tolerance_pct, "--volume-tolerance-pct")?,
            protection_pct: non_negative(self.protection_tolerance_pct, "--protection-tolerance-pct")?,
        };
        Ok(Rules {
            stale_sync_after: chrono_duration(self.stale_sync_after, "--stale-sync-after")?,
            drawdown,
            market,
            matching,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::config::{Cli, Command};

    fn rules(args: &[&str]) -> Result<Rules, ConfigError> {
        let cli = Cli::try_parse_from(["trading-monitor", "serve"].iter().chain(args)).unwrap();
        let Command::Serve(serve) = cli.command else { panic!("not serve") };
        serve.rules.to_rules()
    }

    #[test]
    fn default_rules_match_the_domain_defaults() {
        assert_eq!(rules(&[]).unwrap(), Rules::default());
    }

    #[test]
    fn thresholds_outside_the_percentage_bounds_are_rejected() {
        for (flag, value) in [
            ("--drawdown-max-pct", "1000"),
            ("--gap-warning-pct", "0.00001"),
            ("--drawdown-hysteresis-pct", "12.34567"),
        ] {
            assert!(rules(&[flag, value]).is_err(), "{flag} {value}");
        }
    }

    #[test]
    fn a_warning_above_the_maximum_is_rejected() {
        assert!(rules(&["--drawdown-warning-pct", "25"]).is_err());
    }
}
