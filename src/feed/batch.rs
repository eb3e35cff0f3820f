//! What the hub broadcasts: a [`Batch`] per feed read, its [`Contents`] (events, books) kept apart so that only
//! the most recent ones, up to a number of bytes, stay in memory ([`Retained`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};

use uuid::Uuid;

use crate::storage::Book;
use crate::storage::feed::{FeedEvent, FeedPosition};

/// One read of the feed: the events `up_to` has read and `from` had not (possibly none: the position still
/// advances, or a transaction it waited for ended), with the books of the accounts that changed in a way that
/// can change a guard status and are watched for it.
///
/// The broadcast keeps the last `capacity` batches whoever has read them, so what they hold is kept apart
/// ([`Contents`]) and only the most recent, up to `--watch-batch-memory` bytes, is kept alive by the hub: a
/// stream that comes to a batch whose contents are gone reads the table instead, as when it lagged.
#[derive(Debug)]
pub struct Batch {
    /// Where the read started.
    pub from: FeedPosition,
    /// Where it ended.
    pub up_to: FeedPosition,
    contents: Weak<Contents>,
}

impl Batch {
    /// A batch from `from` to `up_to` holding `contents` for as long as someone keeps them alive.
    pub(super) fn new(from: FeedPosition, up_to: FeedPosition, contents: &Arc<Contents>) -> Batch {
        Batch { from, up_to, contents: Arc::downgrade(contents) }
    }

    /// What the batch holds, unless the hub has let go of it (the stream must then read the table).
    pub fn contents(&self) -> Option<Arc<Contents>> {
        self.contents.upgrade()
    }
}

/// What a [`Batch`] holds.
#[derive(Debug)]
pub struct Contents {
    /// The events, in feed order.
    pub events: Vec<FeedEvent>,
    /// Books read after the events, of watched accounts with events that can change their guard status.
    pub books: HashMap<Uuid, Arc<Book>>,
    /// About how much memory the above takes.
    bytes: usize,
}

impl Contents {
    pub(super) fn new(events: Vec<FeedEvent>, books: HashMap<Uuid, Arc<Book>>) -> Contents {
        let bytes = events.iter().map(approximate_event_bytes).sum::<usize>()
            + books.values().map(|b| approximate_book_bytes(b)).sum::<usize>();
        Contents { events, books, bytes }
    }
}

/// The contents of the most recent batches, kept alive up to a number of bytes (the newest always).
#[derive(Debug, Default)]
pub(super) struct Retained {
    kept: VecDeque<Arc<Contents>>,
    bytes: usize,
}

impl Retained {
    /// Keeps `contents`, letting go of the oldest kept until the total fits in `budget` (but never of it).
    pub(super) fn keep(&mut self, contents: Arc<Contents>, budget: usize) {
        self.bytes += contents.bytes;
        self.kept.push_back(contents);
        while self.bytes > budget && self.kept.len() > 1 {
            if let Some(oldest) = self.kept.pop_front() {
                self.bytes -= oldest.bytes;
            }
        }
    }
}

/// About the heap and inline bytes of an event (its JSON details walked, not serialized).
fn approximate_event_bytes(e: &FeedEvent) -> usize {
    fn json(v: &serde_json::Value) -> usize {
        size_of::<serde_json::Value>()
            + match v {
                serde_json::Value::String(s) => s.len(),
                serde_json::Value::Array(a) => a.iter().map(json).sum(),
                serde_json::Value::Object(o) => o.iter().map(|(k, v)| k.len() + 32 + json(v)).sum(),
                _ => 0,
            }
    }
    size_of::<FeedEvent>()
        + e.event.message.len()
        + e.event.symbol.as_ref().map_or(0, String::len)
        + json(&e.event.details)
}

/// About the bytes of a book (its rows, plus a little per row for their strings).
fn approximate_book_bytes(b: &Book) -> usize {
    size_of::<Book>()
        + b.account.as_ref().map_or(0, |_| 64)
        + b.positions.len() * (size_of::<crate::storage::PositionRow>() + 64)
        + b.divergences.len() * (size_of::<crate::storage::DivergenceRow>() + 64)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::domain::events::EventType;
    use crate::storage::events::EventRow;

    /// An event of `user` (for the hub's tests too).
    pub(crate) fn event(user: Uuid, event_type: EventType, message: &str) -> FeedEvent {
        FeedEvent {
            user_id: user,
            tx: 1,
            event: EventRow {
                event_id: 1,
                event_type,
                occurred_at: chrono::Utc::now(),
                sync_id: None,
                position_id: None,
                symbol: None,
                message: message.to_owned(),
                details: serde_json::json!({ "error": "broker timeout" }),
            },
        }
    }

    #[test]
    fn batch_contents_are_kept_up_to_a_number_of_bytes_the_newest_always() {
        let user = Uuid::new_v4();
        let contents = |n: usize| {
            let events = (0..n).map(|_| event(user, EventType::SyncCompleted, &"x".repeat(100))).collect();
            Arc::new(Contents::new(events, HashMap::new()))
        };
        let one = contents(10).bytes;
        assert!(one > 10 * 100, "{one}");
        let mut retained = Retained::default();
        let (first, second, third) = (contents(10), contents(10), contents(10));
        let batches: Vec<_> = [&first, &second, &third].iter().map(|c| Arc::downgrade(c)).collect();
        for c in [first, second, third] {
            retained.keep(c, 2 * one);
        }
        assert_eq!((retained.kept.len(), retained.bytes), (2, 2 * one));
        assert!(batches[0].upgrade().is_none(), "the oldest is let go of: its streams read the table");
        assert!(batches[1].upgrade().is_some() && batches[2].upgrade().is_some());
        let big = contents(100);
        let big_batch = Arc::downgrade(&big);
        retained.keep(big, 2 * one);
        assert_eq!(retained.kept.len(), 1, "the newest is kept even when it alone is over the budget");
        assert!(big_batch.upgrade().is_some());
    }
}
