//! Property tests: extreme and boundary decimals, through decoding and every rule, never panic. Decoding
//! refuses what is out of bounds; the rules, given anything at all (even what decoding would refuse), return a
//! value or "unavailable", never a panic.

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;

use super::bounds::{MONEY, PERCENT, PRICE, VOLUME};
use super::drawdown::{self, DrawdownLevel, DrawdownThresholds};
use super::market::{self, MarketThresholds};
use super::pnl::{self, FxRates, InstrumentSpec, PositionFigures};
use super::reconcile::{self, BrokerSide, PlatformSide, Tolerances};
use super::status::{SyncFacts, reconciliation_state};
use super::{Side, matching};

/// Decimals at and around every edge that matters: rust_decimal's extremes, the bounds, zero, the smallest
/// steps, and ordinary values.
fn extreme() -> impl Strategy<Value = Decimal> {
    let edges = vec![
        Decimal::MAX,
        Decimal::MIN,
        Decimal::ZERO,
        Decimal::ONE,
        Decimal::NEGATIVE_ONE,
        Decimal::new(1, 28),
        Decimal::new(-1, 28),
        Decimal::new(1, 10),
        Decimal::from_i128_with_scale(999_999_999_999_999_999, 10),
        Decimal::from_i128_with_scale(99_999_999_999_999_999_999_999, 8),
        Decimal::from(1_000_000_000),
        Decimal::from(1_000_000_000_000_000i64),
        Decimal::from_i128_with_scale(79_228_162_514_264_337_593_543_950_335, 28),
    ];
    prop_oneof![
        prop::sample::select(edges),
        any::<i64>().prop_map(Decimal::from),
        (any::<i64>(), 0u32..=28).prop_map(|(m, s)| Decimal::new(m, s)),
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<bool>(), 0u32..=28)
            .prop_map(|(lo, mid, hi, neg, scale)| Decimal::from_parts(lo, mid, hi, neg, scale)),
    ]
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Buy), Just(Side::Sell)]
}

fn time() -> impl Strategy<Value = DateTime<Utc>> {
    prop_oneof![
        Just(DateTime::<Utc>::MIN_UTC),
        Just(DateTime::<Utc>::MAX_UTC),
        (0i64..4_102_444_800).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or_default()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn decoding_any_decimal_text_never_panics(value in extreme()) {
        for text in [value.to_string(), format!("{value}1"), format!("-{value}"), format!("{value}.{value}")] {
            for bounds in [PRICE, VOLUME, MONEY, PERCENT] {
                let _ = bounds.parse(&text);
            }
        }
    }

    #[test]
    fn valuing_a_position_never_panics(
        (side, volume, entry, current) in (side(), extreme(), extreme(), extreme()),
        (profit, swap, commission) in (prop::option::of(extreme()), prop::option::of(extreme()), prop::option::of(extreme())),
        (contract_size, bid, ask) in (extreme(), extreme(), extreme()),
    ) {
        let figures = PositionFigures { side, volume, entry_price: entry, current_price: current, broker_profit: profit, swap, commission };
        let mut rates = FxRates::default();
        rates.insert_quote("GBP", "USD", bid, ask);
        rates.insert("USD", "JPY", ask);
        let instrument = InstrumentSpec { contract_size, quote_currency: "USD".into() };
        for currency in ["USD", "GBP", "JPY", "CHF"] {
            let _ = pnl::value_position(&figures, Some(&instrument), currency, &rates);
            let _ = pnl::value_position(&figures, None, currency, &rates);
        }
        let _ = pnl::checked_sum([profit.unwrap_or_default(), volume, entry, current]);
        let _ = pnl::percent_of(volume, entry);
        let _ = pnl::round_money(current);
        let _ = pnl::round_percent(current);
    }

    #[test]
    fn the_drawdown_guard_never_panics(
        peak in prop::option::of(extreme()),
        equity in extreme(),
        (warning, max, min_equity, hysteresis) in (extreme(), extreme(), extreme(), extreme()),
        previous in 0usize..4,
        (since, now) in (time(), time()),
    ) {
        let peak = drawdown::next_peak(peak, equity);
        let dd = drawdown::drawdown_pct(peak, equity);
        let t = DrawdownThresholds { warning_pct: warning, max_pct: max, min_equity, hysteresis_pct: hysteresis, pre_liquidation: Duration::seconds(10) };
        // Thresholds come from bounded configuration; the level must hold for any drawdown and equity with them.
        let _ = drawdown::next_level(DrawdownLevel::ALL[previous], dd, equity, &DrawdownThresholds::default());
        let _ = t.with_overrides(Some(warning), Some(max), Some(min_equity));
        let _ = drawdown::time_to_liquidation(since, now, &DrawdownThresholds::default());
        let _ = drawdown::liquidation_time(since, &DrawdownThresholds { pre_liquidation: Duration::days(365 * 1000), ..t });
    }

    #[test]
    fn the_market_guard_never_panics(a in extreme(), b in extreme(), (last, now) in (prop::option::of(time()), time())) {
        let t = MarketThresholds::default();
        if let Some(gap) = market::gap_pct(a, b) {
            let _ = market::gap_breach(gap, &t);
        }
        if let Some(spread) = market::spread_pct(a, b) {
            let _ = market::spread_breach(spread, &t);
        }
        let _ = market::quote_is_stale(last, now, &t);
        let _ = market::stale_since(now, &MarketThresholds { stale_after: Duration::days(365 * 1000), ..t });
    }

    #[test]
    fn reconciling_and_matching_never_panic(
        brokers in prop::collection::vec((extreme(), extreme(), prop::option::of(extreme()), prop::option::of(extreme()), side()), 0..6),
        platforms in prop::collection::vec((extreme(), extreme(), prop::option::of(extreme()), prop::option::of(extreme()), side(), any::<bool>()), 0..6),
    ) {
        let b: Vec<BrokerSide> = brokers.iter().enumerate().map(|(i, (volume, price, tp, sl, side))| BrokerSide {
            position_identifier: i.to_string(),
            symbol: "XAUUSD".into(),
            side: *side,
            volume: *volume,
            open_price: *price,
            take_profit: *tp,
            stop_loss: *sl,
        }).collect();
        let p: Vec<PlatformSide> = platforms.iter().enumerate().map(|(j, (volume, price, tp, sl, side, known))| PlatformSide {
            platform_trade_id: format!("T{j}"),
            symbol: "XAUUSD".into(),
            side: *side,
            volume: *volume,
            entry_price: *price,
            take_profit: *tp,
            stop_loss: *sl,
            position_identifier: known.then(|| j.to_string()),
        }).collect();
        let r = reconcile::reconcile(&b, &p, &Tolerances::default());
        prop_assert_eq!(r.pairs.len() + r.broker_only.len(), b.len());
        let candidates: Vec<_> = b.iter().map(|x| matching::Candidate { symbol: &x.symbol, side: x.side, volume: x.volume, entry: x.open_price }).collect();
        let ids: Vec<&str> = b.iter().map(|x| x.position_identifier.as_str()).collect();
        let _ = matching::pair(&candidates, &ids, &candidates, &vec![None; candidates.len()]);
    }

    #[test]
    fn the_reconciliation_state_never_panics(total in any::<i64>(), failed in any::<bool>(), at in prop::option::of(time()), now in time(), open in any::<i32>(), divergences in any::<i32>()) {
        let facts = SyncFacts { total_syncs: total, last_sync_failed: failed, last_success_at: at, open_positions: open, open_divergences: divergences };
        let _ = reconciliation_state(&facts, now, Duration::seconds(30));
    }
}
