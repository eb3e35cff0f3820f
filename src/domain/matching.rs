//! Pairing broker positions with platform positions, one-to-one, in O(n log n).
//!
//! The rule: first by the broker identifier the platform knows (first claimant wins); then, within each
//! (symbol, side), the *greedy nearest-first* matching: repeatedly pair the remaining broker/platform pair with
//! the smallest key `(volume closeness, entry closeness, broker index, platform index)`, where closeness is the
//! relative difference `|broker - platform| / platform`. There is no cut-off, so matching is never stricter than
//! the divergence checks.
//!
//! Building every candidate pair and sorting them is quadratic in time and memory (3,000 x 3,000 positions took
//! 5.3 s and ~1 GB). This module computes exactly the same matching in O(n log n) with the nearest-neighbour
//! chain: follow nearest neighbours (broker -> its nearest platform -> that platform's nearest broker ...) until
//! two elements are each other's nearest, pair them, and continue from the rest of the chain. A mutually-nearest
//! pair under a strict total order on pairs is "locally dominant", and pairing locally dominant pairs in any order
//! gives the same result as the global greedy (Preis 1999); every element is pushed on the chain at most once, so
//! there are O(n) nearest-neighbour queries, each O(log n) in ordered maps, because for a relative difference the
//! nearest value is always the closest one below or above in sorted order.
//!
//! Keys are compared exactly (as fractions of integers), not as rounded decimals, so "nearest" never depends on
//! rounding. That needs every volume and price positive, below 10^9 and with at most 10 decimal places, which the
//! request decoding guarantees ([`super::bounds`]); a group holding anything else is matched by the plain
//! quadratic greedy instead (unreachable through the API, kept so this function is total).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use rust_decimal::Decimal;

use super::Side;

/// The fields pairing looks at, for one position of either side.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate<'a> {
    /// Instrument symbol.
    pub symbol: &'a str,
    /// Direction.
    pub side: Side,
    /// Lots.
    pub volume: Decimal,
    /// Entry (open) price.
    pub entry: Decimal,
}

/// Pairs `broker` with `platform` positions. `identifiers[j]` is the broker identifier platform position `j`
/// knows, `broker_ids[i]` broker position `i`'s identifier. Returns, for each broker position, the index of its
/// platform partner.
pub fn pair(
    broker: &[Candidate<'_>],
    broker_ids: &[&str],
    platform: &[Candidate<'_>],
    identifiers: &[Option<&str>],
) -> Vec<Option<usize>> {
    let mut partner: Vec<Option<usize>> = vec![None; broker.len()];
    let mut platform_matched = vec![false; platform.len()];

    // Pass 1: the identifier the platform knows, regardless of symbol or side; first claimant wins.
    let mut by_id: HashMap<&str, std::collections::VecDeque<usize>> = HashMap::new();
    for (i, id) in broker_ids.iter().enumerate() {
        by_id.entry(id).or_default().push_back(i);
    }
    for (j, id) in identifiers.iter().enumerate() {
        let Some(id) = id else { continue };
        if let Some(i) = by_id.get_mut(id).and_then(std::collections::VecDeque::pop_front) {
            partner[i] = Some(j);
            platform_matched[j] = true;
        }
    }

    // Pass 2: nearest-first within each (symbol, side).
    // (symbol, side) -> (broker indices, platform indices) still unmatched.
    type Groups<'a> = HashMap<(&'a str, Side), (Vec<usize>, Vec<usize>)>;
    let mut groups: Groups<'_> = HashMap::new();
    for (i, b) in broker.iter().enumerate().filter(|(i, _)| partner[*i].is_none()) {
        groups.entry((b.symbol, b.side)).or_default().0.push(i);
    }
    for (j, p) in platform.iter().enumerate().filter(|(j, _)| !platform_matched[*j]) {
        if let Some(group) = groups.get_mut(&(p.symbol, p.side)) {
            group.1.push(j);
        }
    }
    for (brokers, platforms) in groups.into_values() {
        if brokers.is_empty() || platforms.is_empty() {
            continue;
        }
        let pairs = match NearestChain::new(broker, &brokers, platform, &platforms) {
            Some(chain) => chain.run(),
            None => greedy(broker, &brokers, platform, &platforms),
        };
        for (i, j) in pairs {
            partner[i] = Some(j);
        }
    }
    partner
}

/// A value in units of 10^-10 (the finest scale decoding accepts), when it is positive and below 10^9.
fn units(value: Decimal) -> Option<u128> {
    if value <= Decimal::ZERO || value >= Decimal::from(1_000_000_000) || value.normalize().scale() > 10 {
        return None;
    }
    let scaled = value.checked_mul(Decimal::from(10_000_000_000u64))?.normalize();
    u128::try_from(scaled.mantissa()).ok().filter(|_| scaled.scale() == 0)
}

/// An exact relative difference `|a - b| / b` (b > 0), compared by cross-multiplication; both terms are below
/// 10^19, so products stay below 10^38 and fit in `u128`.
#[derive(Debug, Clone, Copy)]
struct Ratio {
    num: u128,
    den: u128,
}

impl Ratio {
    fn of(value: u128, reference: u128) -> Ratio {
        Ratio { num: value.abs_diff(reference), den: reference }
    }
}

impl PartialEq for Ratio {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Ratio {}
impl PartialOrd for Ratio {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ratio {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.num * other.den).cmp(&(other.num * self.den))
    }
}

/// How near one position is to another, for the quadratic fallback: exact when both values are in range, else
/// after every exact one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Closeness {
    Exact(Ratio),
    OutOfRange,
}

fn closeness(value: Decimal, reference: Decimal) -> Closeness {
    match (units(value), units(reference)) {
        (Some(v), Some(r)) => Closeness::Exact(Ratio::of(v, r)),
        _ => Closeness::OutOfRange,
    }
}

/// The plain greedy: every candidate pair, sorted by key, taken while both ends are free. The reference the
/// chain is tested against, and the fallback for out-of-range values.
fn greedy(
    broker: &[Candidate<'_>],
    brokers: &[usize],
    platform: &[Candidate<'_>],
    platforms: &[usize],
) -> Vec<(usize, usize)> {
    let mut candidates = Vec::with_capacity(brokers.len() * platforms.len());
    for &i in brokers {
        for &j in platforms {
            let (b, p) = (&broker[i], &platform[j]);
            candidates.push((closeness(b.volume, p.volume), closeness(b.entry, p.entry), i, j));
        }
    }
    candidates.sort_unstable();
    let (mut taken_b, mut taken_p) = (BTreeSet::new(), BTreeSet::new());
    let mut pairs = Vec::new();
    for (_, _, i, j) in candidates {
        if !taken_b.contains(&i) && !taken_p.contains(&j) {
            taken_b.insert(i);
            taken_p.insert(j);
            pairs.push((i, j));
        }
    }
    pairs
}

/// Free positions of one side: volume -> entry -> indices (all in units of 10^-10).
#[derive(Debug, Default)]
struct Side2d(BTreeMap<u128, BTreeMap<u128, BTreeSet<usize>>>);

impl Side2d {
    fn insert(&mut self, volume: u128, entry: u128, index: usize) {
        self.0.entry(volume).or_default().entry(entry).or_default().insert(index);
    }

    fn remove(&mut self, volume: u128, entry: u128, index: usize) {
        let Some(entries) = self.0.get_mut(&volume) else { return };
        if let Some(set) = entries.get_mut(&entry) {
            set.remove(&index);
            if set.is_empty() {
                entries.remove(&entry);
            }
        }
        if entries.is_empty() {
            self.0.remove(&volume);
        }
    }

    /// The nearest keys to `x` in `map`: the greatest at or below and the least above (each at most once).
    fn around<V>(map: &BTreeMap<u128, V>, x: u128) -> impl Iterator<Item = (u128, &V)> {
        let below = map.range(..=x).next_back();
        let above = map.range(x + 1..).next();
        below.into_iter().chain(above).map(|(k, v)| (*k, v))
    }

    /// The free position minimising `(volume closeness, entry closeness, index)` to a position at `(volume,
    /// entry)` of the other side. `relative_to_self` says whose value is the reference (the denominator) of a
    /// closeness: the platform's, always; so it is `true` when the free positions here are platform positions.
    fn nearest(&self, volume: u128, entry: u128, relative_to_self: bool) -> Option<(Ratio, Ratio, usize)> {
        let ratio = |mine: u128, theirs: u128| {
            if relative_to_self { Ratio::of(theirs, mine) } else { Ratio::of(mine, theirs) }
        };
        let mut best: Option<(Ratio, Ratio, usize)> = None;
        // Only the nearest volume below or above can hold the nearest pair, and within a volume only the nearest
        // entry below or above: a relative difference grows monotonically away from the value on either side.
        for (v, entries) in Self::around(&self.0, volume) {
            let dv = ratio(v, volume);
            if best.is_some_and(|(bv, _, _)| dv > bv) {
                continue;
            }
            for (e, indices) in Self::around(entries, entry) {
                let Some(&index) = indices.first() else { continue };
                let key = (dv, ratio(e, entry), index);
                if best.is_none_or(|b| key < b) {
                    best = Some(key);
                }
            }
        }
        best
    }
}

/// The nearest-neighbour chain over one (symbol, side) group.
struct NearestChain {
    /// (volume, entry) in units, by broker / platform index (only this group's indices are meaningful).
    broker_units: HashMap<usize, (u128, u128)>,
    platform_units: HashMap<usize, (u128, u128)>,
    free_brokers: Side2d,
    free_platforms: Side2d,
    /// Brokers of this group in index order, to start new chains deterministically.
    brokers: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Broker(usize),
    Platform(usize),
}

impl NearestChain {
    /// `None` when a value is out of range for exact keys.
    fn new(
        broker: &[Candidate<'_>],
        brokers: &[usize],
        platform: &[Candidate<'_>],
        platforms: &[usize],
    ) -> Option<Self> {
        let mut chain = NearestChain {
            broker_units: HashMap::with_capacity(brokers.len()),
            platform_units: HashMap::with_capacity(platforms.len()),
            free_brokers: Side2d::default(),
            free_platforms: Side2d::default(),
            brokers: brokers.to_vec(),
        };
        for &i in brokers {
            let (v, e) = (units(broker[i].volume)?, units(broker[i].entry)?);
            chain.broker_units.insert(i, (v, e));
            chain.free_brokers.insert(v, e, i);
        }
        for &j in platforms {
            let (v, e) = (units(platform[j].volume)?, units(platform[j].entry)?);
            chain.platform_units.insert(j, (v, e));
            chain.free_platforms.insert(v, e, j);
        }
        Some(chain)
    }

    fn nearest(&self, node: Node) -> Option<Node> {
        match node {
            Node::Broker(i) => {
                let (v, e) = self.broker_units[&i];
                self.free_platforms.nearest(v, e, true).map(|(_, _, j)| Node::Platform(j))
            }
            Node::Platform(j) => {
                let (v, e) = self.platform_units[&j];
                self.free_brokers.nearest(v, e, false).map(|(_, _, i)| Node::Broker(i))
            }
        }
    }

    fn take(&mut self, node: Node) {
        match node {
            Node::Broker(i) => {
                let (v, e) = self.broker_units[&i];
                self.free_brokers.remove(v, e, i);
            }
            Node::Platform(j) => {
                let (v, e) = self.platform_units[&j];
                self.free_platforms.remove(v, e, j);
            }
        }
    }

    fn is_free(&self, node: Node) -> bool {
        let contains = |side: &Side2d, (v, e): (u128, u128), index: usize| {
            side.0.get(&v).and_then(|entries| entries.get(&e)).is_some_and(|set| set.contains(&index))
        };
        match node {
            Node::Broker(i) => contains(&self.free_brokers, self.broker_units[&i], i),
            Node::Platform(j) => contains(&self.free_platforms, self.platform_units[&j], j),
        }
    }

    fn run(mut self) -> Vec<(usize, usize)> {
        let mut pairs = Vec::new();
        let mut chain: Vec<Node> = Vec::new();
        let mut next_start = 0;
        loop {
            if chain.is_empty() {
                while next_start < self.brokers.len() && !self.is_free(Node::Broker(self.brokers[next_start])) {
                    next_start += 1;
                }
                let Some(&i) = self.brokers.get(next_start) else { break };
                chain.push(Node::Broker(i));
            }
            let top = chain[chain.len() - 1];
            let Some(nearest) = self.nearest(top) else { break };
            if chain.len() >= 2 && chain[chain.len() - 2] == nearest {
                // Each is the other's nearest: a locally dominant pair.
                chain.truncate(chain.len() - 2);
                self.take(top);
                self.take(nearest);
                pairs.push(match (top, nearest) {
                    (Node::Broker(i), Node::Platform(j)) | (Node::Platform(j), Node::Broker(i)) => (i, j),
                    _ => unreachable!("a chain alternates between brokers and platforms"),
                });
            } else {
                chain.push(nearest);
            }
        }
        pairs
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    use super::*;

    fn c(symbol: &str, volume: Decimal, entry: Decimal) -> Candidate<'_> {
        Candidate { symbol, side: Side::Buy, volume, entry }
    }

    #[test]
    fn ratios_compare_exactly_where_rounded_decimals_would_tie() {
        // 1/3 vs 0.3333333333: distinct, though both round to the same 10-place decimal.
        let third = Ratio { num: 1, den: 3 };
        let close = Ratio { num: 3_333_333_333, den: 10_000_000_000 };
        assert!(close < third);
        assert_eq!(Ratio { num: 2, den: 6 }, third);
    }

    #[test]
    fn units_refuse_what_decoding_refuses() {
        assert_eq!(units(dec!(1.5)), Some(15_000_000_000));
        assert_eq!(units(dec!(0.0000000001)), Some(1));
        for bad in [dec!(0), dec!(-1), dec!(1000000000), dec!(0.00000000001)] {
            assert_eq!(units(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_nearest_volume_pairs_first_and_equal_volumes_go_by_the_nearest_entry() {
        let b = [c("X", dec!(1.00), dec!(2350)), c("X", dec!(0.50), dec!(2350))];
        let p = [c("X", dec!(0.55), dec!(2350)), c("X", dec!(1.00), dec!(2350))];
        assert_eq!(pair(&b, &["1", "2"], &p, &[None, None]), [Some(1), Some(0)]);
        let b = [c("X", dec!(1), dec!(2350)), c("X", dec!(1), dec!(2340))];
        let p = [c("X", dec!(1), dec!(2340.5)), c("X", dec!(1), dec!(2351))];
        assert_eq!(pair(&b, &["1", "2"], &p, &[None, None]), [Some(1), Some(0)]);
    }

    #[test]
    fn ten_thousand_identical_positions_pair_in_index_order() {
        let b: Vec<_> = (0..10_000).map(|_| c("X", dec!(0.1), dec!(100))).collect();
        let ids: Vec<String> = (0..b.len()).map(|i| i.to_string()).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let result = pair(&b, &ids, &b, &vec![None; b.len()]);
        assert!(result.iter().enumerate().all(|(i, j)| *j == Some(i)));
    }

    /// The chain against the plain greedy, on one group.
    type Pairs = Vec<(usize, usize)>;

    fn both(b: &[Candidate<'_>], p: &[Candidate<'_>]) -> (Pairs, Pairs) {
        let (bi, pj): (Vec<usize>, Vec<usize>) = ((0..b.len()).collect(), (0..p.len()).collect());
        let mut fast = NearestChain::new(b, &bi, p, &pj).expect("in range").run();
        fast.sort_unstable();
        let mut slow = greedy(b, &bi, p, &pj);
        slow.sort_unstable();
        (fast, slow)
    }

    #[test]
    fn an_adversarial_book_where_every_broker_wants_the_same_platforms_is_fast_and_exact() {
        // Brokers packed at one end, platforms spread away from it: each broker's preference list is the same.
        let b: Vec<_> = (0..400).map(|i| c("X", Decimal::new(10_000 + i, 4), dec!(100))).collect();
        let p: Vec<_> = (0..400).map(|i| c("X", Decimal::from(2 + i), dec!(100))).collect();
        let (fast, slow) = both(&b, &p);
        assert_eq!(fast, slow);
    }

    fn small() -> impl Strategy<Value = Decimal> {
        // Few distinct values, so ties of every kind (equal values, symmetric distances) are common.
        prop::sample::select(vec![dec!(0.5), dec!(1), dec!(1.5), dec!(2), dec!(3), dec!(0.75), dec!(1.2)])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn the_chain_matches_exactly_what_the_quadratic_greedy_matches(
            b in prop::collection::vec((small(), small()), 0..14),
            p in prop::collection::vec((small(), small()), 0..14),
        ) {
            let b: Vec<_> = b.into_iter().map(|(v, e)| c("X", v, e)).collect();
            let p: Vec<_> = p.into_iter().map(|(v, e)| c("X", v, e)).collect();
            let (fast, slow) = both(&b, &p);
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn the_chain_matches_the_greedy_on_spread_values(
            b in prop::collection::vec((1i64..100_000, 1i64..100_000), 0..40),
            p in prop::collection::vec((1i64..100_000, 1i64..100_000), 0..40),
        ) {
            let b: Vec<_> = b.into_iter().map(|(v, e)| c("X", Decimal::new(v, 3), Decimal::new(e, 2))).collect();
            let p: Vec<_> = p.into_iter().map(|(v, e)| c("X", Decimal::new(v, 3), Decimal::new(e, 2))).collect();
            let (fast, slow) = both(&b, &p);
            prop_assert_eq!(fast, slow);
        }
    }
}
