//! The event feed followed live, per replica: what the watch streams (`services::stream`) follow.
//!
//! - [`hub`]: one reader per replica. A `PgListener` on `trading_events` wakes it when events commit, and it
//!   re-reads every safety interval anyway (a notification is only a wake-up and is lost while the listening
//!   connection is down). Each read is one feed page for every user, whatever the number of watchers; pages are
//!   broadcast as batches to the replica's streams, with the books of watched accounts loaded once per batch.
//! - [`lag`]: the transactions the reader waits for, as metrics, and the log of long-running ones.
//! - [`clock`]: records time-driven changes (a held symbol's quote going stale, a liquidation countdown running
//!   out) as events, so watchers hear of them.
//! - [`token`]: resume tokens.
//!
//! PostgreSQL is the source of truth: a stream catches up from the table, then follows the batches, and goes
//! back to the table whenever it might have missed one (it lagged, or a batch does not start where it is).

pub mod clock;
pub mod hub;
pub mod lag;
pub mod token;

pub use hub::{Batch, Hub, HubError, HubSettings, Per, Registration};
pub use lag::Lag;
