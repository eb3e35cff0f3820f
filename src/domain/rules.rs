//! The rules every account is judged by, as the domain uses them: reconciliation staleness, the drawdown and
//! market guard thresholds, and the matcher's tolerances. `config` builds them from the command line.

use super::drawdown::DrawdownThresholds;
use super::market::MarketThresholds;
use super::reconcile::Tolerances;

/// The rule settings of the service.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// The reconciliation state is STALE when the last successful sync is older than this.
    pub stale_sync_after: chrono::Duration,
    /// Drawdown guard thresholds.
    pub drawdown: DrawdownThresholds,
    /// Market guard thresholds.
    pub market: MarketThresholds,
    /// Divergence tolerances of the matcher.
    pub matching: Tolerances,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            stale_sync_after: chrono::Duration::seconds(30),
            drawdown: DrawdownThresholds::default(),
            market: MarketThresholds::default(),
            matching: Tolerances::default(),
        }
    }
}
