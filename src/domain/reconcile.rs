//! Reconciliation of one sync: matches broker positions to the platform's open positions and classifies the gaps.
//!
//! Matching is one-to-one: first by `position_identifier` where the platform knows it, then by (symbol, side),
//! nearest volume and entry first. Matching has no tolerance cut-off, so it is never stricter than the divergence
//! checks (the prototype matched only within 5 % volume, so its 10 % volume check could never fire). Tolerances are
//! relative to price, in percent.

use rust_decimal::Decimal;

use super::pnl::round_percent;
use super::{DivergenceKind, Side, matching};

/// A position as the broker reports it (only the fields matching needs, plus identity).
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerSide {
    /// Broker (MT5) position identifier.
    pub position_identifier: String,
    /// Instrument symbol.
    pub symbol: String,
    /// Direction.
    pub side: Side,
    /// Lots.
    pub volume: Decimal,
    /// Price the broker filled at.
    pub open_price: Decimal,
    /// Take-profit price, if set.
    pub take_profit: Option<Decimal>,
    /// Stop-loss price, if set.
    pub stop_loss: Option<Decimal>,
}

/// A position as the platform believes it is open.
#[derive(Debug, Clone, PartialEq)]
pub struct PlatformSide {
    /// The platform's trade id.
    pub platform_trade_id: String,
    /// Instrument symbol.
    pub symbol: String,
    /// Direction.
    pub side: Side,
    /// Lots.
    pub volume: Decimal,
    /// Entry price the platform expects.
    pub entry_price: Decimal,
    /// Take-profit price, if set.
    pub take_profit: Option<Decimal>,
    /// Stop-loss price, if set.
    pub stop_loss: Option<Decimal>,
    /// The broker position identifier, when the platform knows it.
    pub position_identifier: Option<String>,
}

/// Relative tolerances, in percent. Defaults: entry 0.05, volume 1, take-profit/stop-loss 0.05.
#[derive(Debug, Clone, PartialEq)]
pub struct Tolerances {
    /// Maximum |Δentry| / platform entry x 100.
    pub entry_pct: Decimal,
    /// Maximum |Δvolume| / platform volume x 100.
    pub volume_pct: Decimal,
    /// Maximum |Δprice| / platform entry x 100 for take profit and stop loss.
    pub protection_pct: Decimal,
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances { entry_pct: Decimal::new(5, 2), volume_pct: Decimal::ONE, protection_pct: Decimal::new(5, 2) }
    }
}

/// One detected divergence; indices point into the input slices.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// What differs.
    pub kind: DivergenceKind,
    /// Index of the broker position, if one is involved.
    pub broker: Option<usize>,
    /// Index of the platform position, if one is involved.
    pub platform: Option<usize>,
    /// The broker's compared value as a decimal string (or side name); `None` when the broker has none.
    pub broker_value: Option<String>,
    /// The platform's compared value as a decimal string (or side name); `None` when the platform has none.
    pub platform_value: Option<String>,
    /// Relative difference in percent, rounded to 4 places; `None` when it cannot be computed.
    pub difference_pct: Option<Decimal>,
    /// Short description for a person.
    pub message: String,
}

/// The result of reconciling one sync.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reconciliation {
    /// Matched (broker index, platform index) pairs, sorted by broker index.
    pub pairs: Vec<(usize, usize)>,
    /// Broker positions without a platform counterpart, sorted.
    pub broker_only: Vec<usize>,
    /// Platform positions not open at the broker, sorted.
    pub missing_at_broker: Vec<usize>,
    /// Pair findings in pair order (side, entry, volume, take profit, stop loss), then broker-only, then missing.
    pub findings: Vec<Finding>,
}

impl Reconciliation {
    /// Findings of matched pairs (all kinds except `BrokerOnly` / `MissingAtBroker`).
    pub fn pair_divergence_count(&self) -> usize {
        let unpaired = [DivergenceKind::BrokerOnly, DivergenceKind::MissingAtBroker];
        self.findings.iter().filter(|f| !unpaired.contains(&f.kind)).count()
    }
}

/// Matches `broker` to `platform` positions one-to-one (see [`super::matching`]: O(n log n)) and classifies
/// every pair and every unmatched position.
pub fn reconcile(broker: &[BrokerSide], platform: &[PlatformSide], tol: &Tolerances) -> Reconciliation {
    let broker_candidates: Vec<_> = broker
        .iter()
        .map(|b| matching::Candidate { symbol: &b.symbol, side: b.side, volume: b.volume, entry: b.open_price })
        .collect();
    let platform_candidates: Vec<_> = platform
        .iter()
        .map(|p| matching::Candidate { symbol: &p.symbol, side: p.side, volume: p.volume, entry: p.entry_price })
        .collect();
    let broker_ids: Vec<&str> = broker.iter().map(|b| b.position_identifier.as_str()).collect();
    let identifiers: Vec<Option<&str>> = platform.iter().map(|p| p.position_identifier.as_deref()).collect();
    let partner = matching::pair(&broker_candidates, &broker_ids, &platform_candidates, &identifiers);
    let mut platform_matched = vec![false; platform.len()];
    for j in partner.iter().flatten() {
        platform_matched[*j] = true;
    }

    let mut result = Reconciliation::default();
    for (i, matched) in partner.iter().enumerate() {
        match matched {
            Some(j) => result.pairs.push((i, *j)),
            None => result.broker_only.push(i),
        }
    }
    result.missing_at_broker = (0..platform.len()).filter(|&j| !platform_matched[j]).collect();

    for &(i, j) in &result.pairs {
        classify(i, &broker[i], j, &platform[j], tol, &mut result.findings);
    }
    for &i in &result.broker_only {
        let b = &broker[i];
        let message = format!(
            "broker position {} {} {} {} has no platform counterpart",
            b.position_identifier, b.symbol, b.side, b.volume
        );
        result.findings.push(unpaired(DivergenceKind::BrokerOnly, Some(i), None, message));
    }
    for &j in &result.missing_at_broker {
        let p = &platform[j];
        let message = format!(
            "platform trade {} {} {} {} is not open at the broker",
            p.platform_trade_id, p.symbol, p.side, p.volume
        );
        result.findings.push(unpaired(DivergenceKind::MissingAtBroker, None, Some(j), message));
    }
    result
}

/// Appends the findings of one matched pair, in the order side, entry, volume, take profit, stop loss.
fn classify(i: usize, b: &BrokerSide, j: usize, p: &PlatformSide, tol: &Tolerances, out: &mut Vec<Finding>) {
    use DivergenceKind::{EntrySlippage, SideMismatch, StopLossMismatch, TakeProfitMismatch, VolumeMismatch};
    let finding = |kind, broker_value, platform_value, difference_pct, message| Finding {
        kind,
        broker: Some(i),
        platform: Some(j),
        broker_value,
        platform_value,
        difference_pct,
        message,
    };
    if b.side != p.side {
        let message = format!("side {} at broker vs {} on platform", b.side, p.side);
        let (bs, ps) = (Some(b.side.as_str().to_owned()), Some(p.side.as_str().to_owned()));
        out.push(finding(SideMismatch, bs, ps, None, message));
    }
    let (entry, protection) = (p.entry_price, tol.protection_pct);
    let checks = [
        (EntrySlippage, "entry", Some(b.open_price), Some(entry), entry, tol.entry_pct),
        (VolumeMismatch, "volume", Some(b.volume), Some(p.volume), p.volume, tol.volume_pct),
        (TakeProfitMismatch, "take profit", b.take_profit, p.take_profit, entry, protection),
        (StopLossMismatch, "stop loss", b.stop_loss, p.stop_loss, entry, protection),
    ];
    for (kind, label, at_broker, on_platform, base, limit) in checks {
        let (difference_pct, message) = match (at_broker, on_platform) {
            (None, None) => continue,
            (Some(_), None) => (None, format!("{label} set at broker only")),
            (None, Some(_)) => (None, format!("{label} set on platform only")),
            (Some(bv), Some(pv)) => {
                let pct = percent_diff(bv, pv, base);
                if !pct.map_or(bv != pv, |d| d > limit) {
                    continue;
                }
                let pct = pct.map(round_percent);
                let suffix = pct.map(|d| format!(" ({d} %)")).unwrap_or_default();
                (pct, format!("{label} {bv} at broker vs {pv} on platform{suffix}"))
            }
        };
        let (bs, ps) = (at_broker.map(|v| v.to_string()), on_platform.map(|v| v.to_string()));
        out.push(finding(kind, bs, ps, difference_pct, message));
    }
}

fn unpaired(kind: DivergenceKind, broker: Option<usize>, platform: Option<usize>, message: String) -> Finding {
    Finding { kind, broker, platform, broker_value: None, platform_value: None, difference_pct: None, message }
}

/// |a - b| x 100 / |base|, unrounded; `None` (not computable: compare by equality) for a zero base or on overflow.
fn percent_diff(a: Decimal, b: Decimal, base: Decimal) -> Option<Decimal> {
    if base.is_zero() {
        return None;
    }
    a.checked_sub(b)?.abs().checked_mul(Decimal::ONE_HUNDRED)?.checked_div(base.abs())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    use super::*;
    use DivergenceKind::*;

    fn broker(id: &str, symbol: &str, side: Side, volume: Decimal, open_price: Decimal) -> BrokerSide {
        let (symbol, position_identifier) = (symbol.to_owned(), id.to_owned());
        BrokerSide { position_identifier, symbol, side, volume, open_price, take_profit: None, stop_loss: None }
    }

    fn platform(id: &str, symbol: &str, side: Side, volume: Decimal, entry_price: Decimal) -> PlatformSide {
        PlatformSide {
            platform_trade_id: id.to_owned(),
            symbol: symbol.to_owned(),
            side,
            volume,
            entry_price,
            take_profit: None,
            stop_loss: None,
            position_identifier: None,
        }
    }

    fn gold_b(id: &str, volume: Decimal, price: Decimal) -> BrokerSide {
        broker(id, "XAUUSD", Side::Buy, volume, price)
    }

    fn gold_p(id: &str, volume: Decimal, price: Decimal) -> PlatformSide {
        platform(id, "XAUUSD", Side::Buy, volume, price)
    }

    fn kinds(b: BrokerSide, p: PlatformSide) -> Vec<DivergenceKind> {
        reconcile(&[b], &[p], &Tolerances::default()).findings.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn an_identifier_match_beats_symbol_and_nearest_volume_matching() {
        let b = [gold_b("100", dec!(0.50), dec!(2350)), broker("200", "XAUUSD.M", Side::Buy, dec!(0.60), dec!(2350))];
        let p = [PlatformSide { position_identifier: Some("200".into()), ..gold_p("T-1", dec!(0.50), dec!(2350)) }];
        let r = reconcile(&b, &p, &Tolerances::default());
        assert_eq!((r.pairs, r.broker_only), (vec![(1, 0)], vec![0]));
        let found: Vec<_> = r.findings.iter().map(|f| f.kind).collect();
        assert_eq!(found, [VolumeMismatch, BrokerOnly]);
    }

    #[test]
    fn a_side_mismatch_is_found_through_the_identifier_only() {
        let b = broker("100", "XAUUSD", Side::Buy, dec!(0.50), dec!(2350));
        let p = PlatformSide { side: Side::Sell, ..gold_p("T-1", dec!(0.50), dec!(2350)) };
        let known = PlatformSide { position_identifier: Some("100".into()), ..p.clone() };
        let r = reconcile(std::slice::from_ref(&b), &[known], &Tolerances::default());
        assert_eq!(r.pair_divergence_count(), 1);
        let f = &r.findings[0];
        assert_eq!((f.kind, f.broker, f.platform), (SideMismatch, Some(0), Some(0)));
        assert_eq!((f.broker_value.as_deref(), f.platform_value.as_deref()), (Some("buy"), Some("sell")));
        assert_eq!((f.difference_pct, f.message.as_str()), (None, "side buy at broker vs sell on platform"));
        assert_eq!(kinds(b, p), [BrokerOnly, MissingAtBroker]);
    }

    #[test]
    fn each_divergence_fires_just_above_its_tolerance_and_not_at_it() {
        let p = PlatformSide {
            take_profit: Some(dec!(2100)),
            stop_loss: Some(dec!(1900)),
            ..gold_p("T", dec!(1), dec!(2000))
        };
        let b = BrokerSide { take_profit: p.take_profit, stop_loss: p.stop_loss, ..gold_b("1", dec!(1), dec!(2000)) };
        assert!(kinds(b.clone(), p.clone()).is_empty());
        let at = |b: BrokerSide| kinds(b, p.clone());
        assert!(at(BrokerSide { open_price: dec!(2001.00), ..b.clone() }).is_empty());
        assert_eq!(at(BrokerSide { open_price: dec!(2001.01), ..b.clone() }), [EntrySlippage]);
        assert!(at(BrokerSide { volume: dec!(1.01), ..b.clone() }).is_empty());
        assert_eq!(at(BrokerSide { volume: dec!(1.0101), ..b.clone() }), [VolumeMismatch]);
        assert!(at(BrokerSide { take_profit: Some(dec!(2099)), ..b.clone() }).is_empty());
        assert_eq!(at(BrokerSide { take_profit: Some(dec!(2098.99)), ..b.clone() }), [TakeProfitMismatch]);
        assert!(at(BrokerSide { stop_loss: Some(dec!(1901)), ..b.clone() }).is_empty());
        assert_eq!(at(BrokerSide { stop_loss: Some(dec!(1901.01)), ..b.clone() }), [StopLossMismatch]);
    }

    #[test]
    fn a_numeric_finding_carries_both_values_the_rounded_percent_and_a_message() {
        let r = reconcile(
            &[gold_b("1", dec!(0.50), dec!(2350.10))],
            &[gold_p("T-1", dec!(0.50), dec!(2348.00))],
            &Tolerances::default(),
        );
        let f = &r.findings[0];
        assert_eq!((f.broker_value.as_deref(), f.platform_value.as_deref()), (Some("2350.10"), Some("2348.00")));
        assert_eq!(f.difference_pct, Some(dec!(0.0894)));
        assert_eq!(f.message, "entry 2350.10 at broker vs 2348.00 on platform (0.0894 %)");
    }

    #[test]
    fn protection_set_on_one_side_only_diverges_even_at_zero_and_absent_on_both_does_not() {
        let b = BrokerSide { stop_loss: Some(dec!(2300)), ..gold_b("1", dec!(0.5), dec!(2350)) };
        let p = PlatformSide { take_profit: Some(dec!(0)), ..gold_p("T-1", dec!(0.5), dec!(2350)) };
        let r = reconcile(&[b], &[p], &Tolerances::default());
        let summary: Vec<_> = r
            .findings
            .iter()
            .map(|f| (f.kind, f.broker_value.clone(), f.platform_value.clone(), f.message.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (TakeProfitMismatch, None, Some("0".to_owned()), "take profit set on platform only"),
                (StopLossMismatch, Some("2300".to_owned()), None, "stop loss set at broker only"),
            ]
        );
        assert!(r.findings.iter().all(|f| f.difference_pct.is_none()));
    }

    #[test]
    fn the_nearest_volume_pairs_first_and_a_ten_percent_gap_still_matches() {
        let b = [gold_b("1", dec!(1.00), dec!(2350)), gold_b("2", dec!(0.50), dec!(2350))];
        let p = [gold_p("T-1", dec!(0.55), dec!(2350)), gold_p("T-2", dec!(1.00), dec!(2350))];
        let r = reconcile(&b, &p, &Tolerances::default());
        assert_eq!(r.pairs, [(0, 1), (1, 0)]);
        let f = &r.findings[0];
        assert_eq!((r.findings.len(), f.kind, f.difference_pct), (1, VolumeMismatch, Some(dec!(9.0909))));
    }

    #[test]
    fn with_equal_volumes_the_nearest_entry_pairs_first() {
        let b = [gold_b("1", dec!(1), dec!(2350)), gold_b("2", dec!(1), dec!(2340))];
        let p = [gold_p("T-1", dec!(1), dec!(2340.5)), gold_p("T-2", dec!(1), dec!(2351))];
        assert_eq!(reconcile(&b, &p, &Tolerances::default()).pairs, [(0, 1), (1, 0)]);
    }

    #[test]
    fn unmatched_positions_are_reported_as_broker_only_and_missing_at_broker() {
        let b = [gold_b("12345", dec!(0.50), dec!(2350))];
        let p = [platform("T-1", "XAUUSD", Side::Sell, dec!(0.50), dec!(2350))];
        let r = reconcile(&b, &p, &Tolerances::default());
        assert_eq!((r.pair_divergence_count(), r.broker_only, r.missing_at_broker), (0, vec![0], vec![0]));
        let found: Vec<_> = r.findings.iter().map(|f| (f.kind, f.broker, f.platform)).collect();
        assert_eq!(found, [(BrokerOnly, Some(0), None), (MissingAtBroker, None, Some(0))]);
        assert_eq!(r.findings[0].message, "broker position 12345 XAUUSD buy 0.50 has no platform counterpart");
        assert_eq!(r.findings[1].message, "platform trade T-1 XAUUSD sell 0.50 is not open at the broker");
    }

    #[test]
    fn zero_references_do_not_panic_and_compare_by_equality() {
        assert!(kinds(gold_b("1", dec!(0), dec!(0)), gold_p("T", dec!(0), dec!(0))).is_empty());
        let r = reconcile(&[gold_b("1", dec!(1), dec!(0))], &[gold_p("T", dec!(0), dec!(0))], &Tolerances::default());
        let f = &r.findings[0];
        assert_eq!((r.findings.len(), f.kind, f.difference_pct), (1, VolumeMismatch, None));
    }

    fn decimal(lo: i64, hi: i64, scale: u32) -> impl Strategy<Value = Decimal> {
        (lo..hi).prop_map(move |n| Decimal::new(n, scale))
    }

    fn any_side() -> impl Strategy<Value = Side> {
        prop_oneof![Just(Side::Buy), Just(Side::Sell)]
    }

    fn any_broker() -> impl Strategy<Value = BrokerSide> {
        let symbol = prop::sample::select(vec!["XAUUSD", "EURUSD"]);
        let price = || decimal(230_000, 240_000, 2);
        let protection = || proptest::option::of(price());
        (0..5u8, symbol, any_side(), decimal(1, 300, 2), price(), protection(), protection()).prop_map(
            |(id, symbol, side, volume, price, take_profit, stop_loss)| BrokerSide {
                take_profit,
                stop_loss,
                ..broker(&id.to_string(), symbol, side, volume, price)
            },
        )
    }

    fn any_platform() -> impl Strategy<Value = PlatformSide> {
        (any_broker(), proptest::option::of(0..5u8)).prop_map(|(b, id)| PlatformSide {
            take_profit: b.take_profit,
            stop_loss: b.stop_loss,
            position_identifier: id.map(|n| n.to_string()),
            ..platform("T", &b.symbol, b.side, b.volume, b.open_price)
        })
    }

    proptest! {
        #[test]
        fn every_position_is_paired_once_or_reported_unmatched_once(
            b in prop::collection::vec(any_broker(), 0..8),
            p in prop::collection::vec(any_platform(), 0..8),
        ) {
            let r = reconcile(&b, &p, &Tolerances::default());
            let mut seen_b: Vec<_> = r.pairs.iter().map(|x| x.0).chain(r.broker_only.clone()).collect();
            let mut seen_p: Vec<_> = r.pairs.iter().map(|x| x.1).chain(r.missing_at_broker.clone()).collect();
            prop_assert!(r.pairs.windows(2).all(|w| w[0].0 < w[1].0));
            prop_assert!(r.broker_only.is_sorted() && r.missing_at_broker.is_sorted());
            seen_b.sort_unstable();
            seen_p.sort_unstable();
            prop_assert_eq!(seen_b, (0..b.len()).collect::<Vec<_>>());
            prop_assert_eq!(seen_p, (0..p.len()).collect::<Vec<_>>());
        }

        #[test]
        fn a_sync_compared_with_itself_has_no_findings(
            b in prop::collection::vec(any_broker(), 0..8),
            known in prop::collection::vec(any::<bool>(), 8),
        ) {
            let unique = |(i, x): (usize, BrokerSide)| BrokerSide { position_identifier: format!("P{i}"), ..x };
            let b: Vec<_> = b.into_iter().enumerate().map(unique).collect();
            let p: Vec<_> = b.iter().zip(&known).map(|(x, &k)| PlatformSide {
                take_profit: x.take_profit,
                stop_loss: x.stop_loss,
                position_identifier: k.then(|| x.position_identifier.clone()),
                ..platform("T", &x.symbol, x.side, x.volume, x.open_price)
            }).collect();
            let r = reconcile(&b, &p, &Tolerances::default());
            prop_assert_eq!(r.findings, Vec::new());
            prop_assert_eq!(r.pairs, (0..b.len()).map(|i| (i, i)).collect::<Vec<_>>());
        }

        #[test]
        fn finding_counts_agree_with_the_index_lists(
            b in prop::collection::vec(any_broker(), 0..8),
            p in prop::collection::vec(any_platform(), 0..8),
        ) {
            let r = reconcile(&b, &p, &Tolerances::default());
            let count = |kind| r.findings.iter().filter(|f| f.kind == kind).count();
            prop_assert_eq!(count(BrokerOnly), r.broker_only.len());
            prop_assert_eq!(count(MissingAtBroker), r.missing_at_broker.len());
            let unpaired = r.broker_only.len() + r.missing_at_broker.len();
            prop_assert_eq!(r.pair_divergence_count() + unpaired, r.findings.len());
            let unpaired_kinds = [BrokerOnly, MissingAtBroker];
            for f in &r.findings {
                match (f.broker, f.platform) {
                    (Some(i), Some(j)) => prop_assert!(r.pairs.contains(&(i, j)) && !unpaired_kinds.contains(&f.kind)),
                    (Some(i), None) => prop_assert!(f.kind == BrokerOnly && r.broker_only.contains(&i)),
                    (None, Some(j)) => prop_assert!(f.kind == MissingAtBroker && r.missing_at_broker.contains(&j)),
                    (None, None) => prop_assert!(false, "a finding without a position"),
                }
            }
        }
    }
}
