//! The event feed followed live, per replica: what the watch streams (`services::stream`) follow.
//!
//! - [`hub`]: one reader per replica. It wakes when any replica acknowledges a write: every write already
//!   publishes its users on the cache's invalidation channel after its commit, and every replica hears it, so
//!   one bus carries both (PostgreSQL's NOTIFY, which serialised every event-writing commit of the cluster on
//!   one lock, is gone). It re-reads every safety interval anyway (a wake-up is only a hint), and every poll
//!   interval while it cannot hear other replicas (Redis away, or the cache disabled). Each read is one feed
//!   page for every user, whatever the number of watchers; pages are broadcast as batches to the replica's
//!   streams, with the books of guard-watched accounts loaded once per batch (for events that can change a
//!   guard), the contents of the most recent batches kept up to a number of bytes.
//! - [`lag`]: the transactions the reader waits for, as metrics, and the log of long-running ones.
//! - [`clock`]: records time-driven changes (a held symbol's quote going stale, a liquidation countdown running
//!   out) as events, so watchers hear of them.
//! - [`token`]: resume tokens.
//!
//! PostgreSQL is the source of truth: a stream catches up from the table, then follows the batches, and goes
//! back to the table whenever it might have missed one (it lagged, a batch does not start where it is, or the
//! batch's contents were let go of).

pub mod batch;
pub mod clock;
pub mod hub;
pub mod lag;
pub mod token;

pub use batch::{Batch, Contents};
pub use hub::{Hub, HubError, HubSettings, Per, Registration};
pub use lag::Lag;
