//! Where a reader of the feed is: which events it has read. Pure, so the rules that make delivery exact
//! (nothing skipped, nothing twice) are tested here on their own.
//!
//! Events are ordered by `(tx, event_id)`: `tx` is the writing transaction's id (`xid8`), `event_id` grows
//! within a transaction. Transactions commit in any order, so "everything up to a point" is not enough: a
//! reader must also remember the transactions that were still running when it read past them. A position is
//! therefore a **horizon** (transactions at or above it: nothing read; below it: read in full) and the list of
//! transactions below the horizon it still **owes** (each with the last of its events already read, 0 for
//! none). That is what PgQ keeps between two snapshots (the in-progress set of the earlier one).
//!
//! `read(P, x)` is how far transaction `x` has been read under `P`; an event `e` has been read iff
//! `e.event_id <= read(P, e.tx)`. Every operation below is defined pointwise on `read`.

use std::sync::Arc;

/// Transactions a position may owe at most. A read adds at most this many minus two (see `free`), so a
/// position never exceeds it; past it, delivery waits for the oldest running transactions, as it did before
/// positions owed anything.
pub const MAX_OWED: usize = 128;

/// Which events of the feed have been read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FeedPosition {
    /// Transactions (`xid8` as an integer) at or above this: nothing read. Below it: read in full, except
    /// `owed`.
    pub horizon: i64,
    /// Transactions below `horizon` not read in full, ascending by id, with the last event id read of each (0:
    /// none). At most [`MAX_OWED`].
    pub owed: Arc<[(i64, i64)]>,
}

/// How far one transaction has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Read {
    /// Up to and including this event id (0: nothing).
    Upto(i64),
    /// All of it.
    All,
}

impl FeedPosition {
    /// Before every event.
    pub fn start() -> FeedPosition {
        FeedPosition { horizon: 0, owed: Arc::from([]) }
    }

    /// Everything below `horizon` except `owed` (which must be ascending, below `horizon`, nothing read).
    pub fn at(horizon: i64, running: impl IntoIterator<Item = i64>) -> FeedPosition {
        let owed: Vec<(i64, i64)> = running.into_iter().filter(|x| *x < horizon).map(|x| (x, 0)).collect();
        FeedPosition { horizon, owed: owed.into() }
    }

    fn read(&self, tx: i64) -> Read {
        if tx >= self.horizon {
            return Read::Upto(0);
        }
        match self.owed.binary_search_by_key(&tx, |(x, _)| *x) {
            Ok(i) => Read::Upto(self.owed[i].1),
            Err(_) => Read::All,
        }
    }

    /// Whether the event `(tx, event_id)` has not been read yet.
    pub fn owes(&self, tx: i64, event_id: i64) -> bool {
        Read::Upto(event_id) > self.read(tx)
    }

    /// Whether this position has read everything `other` has.
    pub fn covers(&self, other: &FeedPosition) -> bool {
        if self.horizon < other.horizon {
            // Transactions in [self.horizon, other.horizon) are unread here: `other` must not have read any.
            let unread_there =
                other.owed.iter().filter(|(x, k)| (self.horizon..other.horizon).contains(x) && *k == 0).count();
            if i64::try_from(unread_there).ok() != other.horizon.checked_sub(self.horizon) {
                return false;
            }
        }
        self.owed.iter().all(|(x, k)| *x >= other.horizon || other.read(*x) <= Read::Upto(*k))
    }

    /// What either has read. Its owed transactions are a subset of those of the one with the higher horizon,
    /// so it is never larger than that one.
    pub fn join(&self, other: &FeedPosition) -> FeedPosition {
        let (low, high) = if self.horizon <= other.horizon { (self, other) } else { (other, self) };
        let owed: Vec<(i64, i64)> = high
            .owed
            .iter()
            .filter_map(|(x, k)| match low.read(*x) {
                Read::All => None,
                Read::Upto(l) => Some((*x, l.max(*k))),
            })
            .collect();
        FeedPosition { horizon: high.horizon, owed: owed.into() }
    }

    /// This position, plus what `to` has read up to and including the event `(tx, event_id)` in feed order:
    /// where a reader is after sending that event of a page or batch that ends at `to` (which must have read
    /// the event).
    pub fn through(&self, to: &FeedPosition, tx: i64, event_id: i64) -> FeedPosition {
        let joined = self.join(to);
        let mut owed: Vec<(i64, i64)> = joined.owed.iter().copied().filter(|(x, _)| *x < tx).collect();
        let before = match self.read(tx) {
            Read::All => i64::MAX,
            Read::Upto(k) => k,
        };
        owed.push((tx, event_id.max(before)));
        owed.extend(self.owed.iter().copied().filter(|(x, _)| *x > tx));
        let horizon = self.horizon.max(tx + 1);
        // A transaction read in full needs no entry.
        owed.retain(|(_, k)| *k != i64::MAX);
        FeedPosition { horizon, owed: owed.into() }
    }

    /// Whether joining `other` and one more partly read transaction stays within [`MAX_OWED`].
    pub fn fits_with(&self, other: &FeedPosition) -> bool {
        let mut xs: Vec<i64> = self.owed.iter().chain(other.owed.iter()).map(|(x, _)| *x).collect();
        xs.sort_unstable();
        xs.dedup();
        xs.len() < MAX_OWED
    }

    /// How many more running transactions a read from here may owe: two slots stay free, for a partly read
    /// transaction and for the merges of `through` and `join`.
    pub fn free(&self) -> i32 {
        i32::try_from(MAX_OWED).unwrap_or(i32::MAX) - 2 - i32::try_from(self.owed.len()).unwrap_or(i32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    fn pos(horizon: i64, owed: &[(i64, i64)]) -> FeedPosition {
        FeedPosition { horizon, owed: owed.to_vec().into() }
    }

    #[test]
    fn an_owed_transaction_is_unread_past_what_was_read_of_it_and_the_rest_below_the_horizon_is_read() {
        let p = pos(10, &[(4, 0), (7, 3)]);
        assert!(p.owes(4, 1) && !p.owes(7, 3) && p.owes(7, 4) && !p.owes(5, 99) && p.owes(10, 1) && p.owes(12, 1));
        assert!(!FeedPosition::start().owes(0, 0) && FeedPosition::start().owes(0, 1));
    }

    #[test]
    fn covers_join_and_through_follow_what_was_read() {
        let a = pos(10, &[(4, 0)]);
        let b = pos(12, &[(4, 0), (10, 0), (11, 0)]);
        assert!(b.covers(&a), "b read everything a did (10 and 11 are unread in both)");
        assert!(!a.covers(&pos(12, &[(4, 0), (10, 0)])), "that one read 11");
        assert_eq!(a.join(&pos(10, &[])), pos(10, &[]));
        assert_eq!(pos(10, &[(4, 2)]).join(&pos(8, &[(4, 5)])), pos(10, &[(4, 5)]));
        // After event (11, 7) of a batch ending at b: everything of b below 11, and 11 up to 7.
        assert_eq!(a.through(&b, 11, 7), pos(12, &[(4, 0), (10, 0), (11, 7)]));
    }

    /// A simulated database: transactions that begin, write events, and commit or abort, in any interleaving,
    /// and snapshots taken the way PostgreSQL takes them.
    #[derive(Debug, Clone)]
    enum Step {
        Begin,
        Write(usize),
        Commit(usize),
        Abort(usize),
        Read { limit: usize },
        Resume,
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        prop::collection::vec(
            prop_oneof![
                2 => Just(Step::Begin),
                4 => (0..6usize).prop_map(Step::Write),
                2 => (0..6usize).prop_map(Step::Commit),
                1 => (0..6usize).prop_map(Step::Abort),
                3 => (1..4usize).prop_map(|limit| Step::Read { limit }),
                1 => Just(Step::Resume),
            ],
            0..120,
        )
    }

    #[derive(Default)]
    struct Db {
        next_xid: i64,
        next_event: i64,
        running: BTreeMap<i64, Vec<i64>>,
        committed: Vec<(i64, i64)>,
    }

    impl Db {
        /// One page read as `storage::feed::page` does it: the owed and new events visible in the snapshot,
        /// in order, at most `limit`, and the next position.
        fn page(&self, after: &FeedPosition, limit: usize) -> (Vec<(i64, i64)>, FeedPosition) {
            let xmax = self.next_xid;
            let running: Vec<i64> = self.running.keys().copied().collect();
            let free = usize::try_from(after.free()).unwrap_or(0);
            let above: Vec<i64> = running.iter().copied().filter(|x| *x >= after.horizon).collect();
            let cap = if after.free() < 0 { after.horizon } else { above.get(free).copied().unwrap_or(xmax).min(xmax) };
            let mut events: Vec<(i64, i64)> =
                self.committed.iter().copied().filter(|(tx, id)| *tx < cap && after.owes(*tx, *id)).collect();
            events.sort_unstable();
            events.truncate(limit);
            let still: Vec<i64> = running
                .iter()
                .copied()
                .filter(|x| *x < cap && (*x >= after.horizon || after.owed.iter().any(|(o, _)| o == x)))
                .collect();
            let end = FeedPosition::at(cap, still);
            let next = match events.last() {
                Some((tx, id)) if events.len() == limit => after.through(&end, *tx, *id),
                _ => end,
            };
            (events, next)
        }
    }

    #[test]
    fn more_running_writers_than_a_position_can_owe_delay_the_excess_but_lose_nothing() {
        let mut db = Db::default();
        // 300 writers begin, each writes one event; they commit newest first, a read after every ten commits.
        for _ in 0..300 {
            db.next_event += 1;
            db.running.insert(db.next_xid, vec![db.next_event]);
            db.next_xid += 1;
        }
        let mut cursor = FeedPosition::start();
        let mut delivered = BTreeSet::new();
        let mut capped_reads = 0;
        for tx in (0..300).rev() {
            let events = db.running.remove(&tx).unwrap();
            db.committed.extend(events.into_iter().map(|id| (tx, id)));
            if tx % 10 == 0 {
                let (events, next) = db.page(&cursor, 50);
                capped_reads += usize::from(next.horizon < db.next_xid);
                for (tx, id) in &events {
                    assert!(cursor.owes(*tx, *id) && delivered.insert((*tx, *id)), "twice: {tx}/{id}");
                    cursor = cursor.through(&next, *tx, *id);
                }
                cursor = cursor.join(&next);
                assert!(cursor.owed.len() <= MAX_OWED);
            }
        }
        loop {
            let (events, next) = db.page(&cursor, 50);
            for (tx, id) in &events {
                assert!(cursor.owes(*tx, *id) && delivered.insert((*tx, *id)), "twice: {tx}/{id}");
                cursor = cursor.through(&next, *tx, *id);
            }
            cursor = cursor.join(&next);
            if events.is_empty() {
                break;
            }
        }
        assert!(capped_reads > 0, "the reads were capped while too many writers ran");
        assert_eq!(delivered.len(), 300, "every event once");
    }

    proptest! {
        #[test]
        fn a_reader_gets_every_committed_event_exactly_once_whatever_the_interleaving(script in steps()) {
            let mut db = Db::default();
            let mut open: Vec<i64> = Vec::new();
            let mut cursor = FeedPosition::start();
            let mut delivered: Vec<(i64, i64)> = Vec::new();
            let mut tokens: Vec<(FeedPosition, usize)> = vec![(cursor.clone(), 0)];
            for step in script {
                match step {
                    Step::Begin => {
                        db.running.insert(db.next_xid, Vec::new());
                        open.push(db.next_xid);
                        db.next_xid += 1;
                    }
                    Step::Write(i) if !open.is_empty() => {
                        let tx = open[i % open.len()];
                        db.next_event += 1;
                        db.running.get_mut(&tx).unwrap().push(db.next_event);
                    }
                    Step::Commit(i) if !open.is_empty() => {
                        let tx = open.remove(i % open.len());
                        for id in db.running.remove(&tx).unwrap() {
                            db.committed.push((tx, id));
                        }
                    }
                    Step::Abort(i) if !open.is_empty() => {
                        let tx = open.remove(i % open.len());
                        db.running.remove(&tx);
                    }
                    Step::Read { limit } => {
                        let (events, next) = db.page(&cursor, limit);
                        let mut at = cursor.clone();
                        for (tx, id) in &events {
                            prop_assert!(at.owes(*tx, *id), "delivered twice: {tx}/{id}");
                            at = at.through(&next, *tx, *id);
                            delivered.push((*tx, *id));
                            tokens.push((at.clone(), delivered.len()));
                        }
                        prop_assert!(next.covers(&at) && at.covers(&cursor), "the position moved back");
                        cursor = cursor.join(&next);
                        prop_assert!(cursor.owed.len() <= MAX_OWED);
                        tokens.push((cursor.clone(), delivered.len()));
                    }
                    Step::Resume => {
                        // A client resumes from one of the tokens it was sent (and forgets what came after it):
                        // it gets again what came after it, and nothing before.
                        let mid = tokens.len() / 2;
                        let (position, upto) = tokens[mid].clone();
                        tokens.truncate(mid + 1);
                        cursor = position;
                        delivered.truncate(upto);
                    }
                    _ => {}
                }
            }
            for tx in open {
                for id in db.running.remove(&tx).unwrap() {
                    db.committed.push((tx, id));
                }
            }
            loop {
                let (events, next) = db.page(&cursor, 3);
                for (tx, id) in &events {
                    prop_assert!(cursor.owes(*tx, *id));
                    cursor = cursor.through(&next, *tx, *id);
                    delivered.push((*tx, *id));
                }
                cursor = cursor.join(&next);
                if events.is_empty() {
                    break;
                }
            }
            let once: BTreeSet<(i64, i64)> = delivered.iter().copied().collect();
            prop_assert_eq!(once.len(), delivered.len(), "an event was delivered twice");
            let committed: BTreeSet<(i64, i64)> = db.committed.iter().copied().collect();
            prop_assert_eq!(once, committed, "every committed event, once");
        }
    }
}
