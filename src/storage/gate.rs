//! Failing fast while PostgreSQL is down.
//!
//! A call that needs PostgreSQL while it is unreachable would otherwise wait for a connection for the whole
//! acquire timeout (3 s by default: the pool keeps trying to connect), so a caller with a short deadline gets
//! DEADLINE_EXCEEDED instead of a quick UNAVAILABLE. Once the service knows PostgreSQL is unreachable (the health
//! probe failed, or a call found it unreachable), [`Db::pool`] refuses at once with [`StorageError::Down`]
//! (UNAVAILABLE with `RetryInfo`); the health probe then checks every 100 ms with its own short-lived connection
//! and opens the gate again when one succeeds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::PgPool;
use tokio::sync::Notify;

use super::StorageError;

/// The pool, behind the gate. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    pool: PgPool,
    gate: Arc<Gate>,
}

#[derive(Debug, Default)]
struct Gate {
    down: AtomicBool,
    /// Wakes the health probe when a call finds PostgreSQL unreachable.
    noticed: Notify,
}

impl Db {
    /// A gate over `pool`, open.
    pub fn new(pool: PgPool) -> Db {
        Db { pool, gate: Arc::new(Gate::default()) }
    }

    /// The pool for a call, or [`StorageError::Down`] at once while PostgreSQL is known to be unreachable.
    pub fn pool(&self) -> Result<&PgPool, StorageError> {
        if self.is_down() { Err(StorageError::Down) } else { Ok(&self.pool) }
    }

    /// The pool whatever the gate says: for the health probe and the background tasks, which handle failures
    /// themselves.
    pub fn raw(&self) -> &PgPool {
        &self.pool
    }

    /// Passes a call's result on, closing the gate if it found PostgreSQL unreachable.
    pub fn observe<T>(&self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        if let Err(StorageError::Unavailable(_)) = &result {
            self.set_down(true);
            self.gate.noticed.notify_one();
        }
        result
    }

    /// Whether PostgreSQL is known to be unreachable.
    pub fn is_down(&self) -> bool {
        self.gate.down.load(Ordering::Relaxed)
    }

    /// Records what the health probe found.
    pub fn set_down(&self, down: bool) {
        let was = self.gate.down.swap(down, Ordering::Relaxed);
        if was != down {
            if down {
                tracing::warn!("PostgreSQL unreachable: calls that need it fail fast with UNAVAILABLE");
            } else {
                tracing::info!("PostgreSQL reachable again");
            }
        }
    }

    /// Resolves when a call finds PostgreSQL unreachable.
    pub async fn noticed(&self) {
        self.gate.noticed.notified().await;
    }
}
