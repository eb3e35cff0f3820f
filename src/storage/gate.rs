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

use std::future::Future;

use sqlx::PgPool;
use tokio::sync::{Notify, watch};

use super::StorageError;

/// The pool, behind the gate. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    pool: PgPool,
    gate: Arc<Gate>,
}

#[derive(Debug)]
struct Gate {
    down: AtomicBool,
    /// Turns true when the gate closes: calls still waiting on PostgreSQL give up then.
    closed: watch::Sender<bool>,
    /// Wakes the health probe when a call finds PostgreSQL unreachable.
    noticed: Notify,
}

impl Db {
    /// A gate over `pool`, open.
    pub fn new(pool: PgPool) -> Db {
        Db {
            pool,
            gate: Arc::new(Gate {
                down: AtomicBool::new(false),
                closed: watch::channel(false).0,
                noticed: Notify::new(),
            }),
        }
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

    /// Runs a call on PostgreSQL: its result, closing the gate if it found PostgreSQL unreachable; or, if the
    /// gate closes while it waits (another call found PostgreSQL gone, or the probe did), [`StorageError::Down`]
    /// at once instead of waiting out the pool's acquire timeout. Giving up is safe for writes too: a call that
    /// is not answered is not acknowledged, and ingest is idempotent on its request id.
    ///
    /// `name` names the call (`book.load`) in its trace span: a client span with `db.system=postgresql` and the
    /// name as `db.operation.name`, never the parameters. The span exists only while traces are exported.
    pub async fn run<T>(
        &self,
        name: &'static str,
        call: impl Future<Output = Result<T, StorageError>>,
    ) -> Result<T, StorageError> {
        let mut closed = self.gate.closed.subscribe();
        let call = async {
            tokio::select! {
                result = call => result,
                _ = closed.wait_for(|closed| *closed) => Err(StorageError::Down),
            }
        };
        let result = crate::telemetry::client_call("postgresql", name, call).await;
        self.observe(result)
    }

    /// Passes a call's result on, closing the gate if it found PostgreSQL unreachable (a connection-level
    /// failure). A busy pool or server, or a statement that timed out, is not proof of that: it fails this call
    /// only; a busy one wakes the probe to find out.
    fn observe<T>(&self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        match &result {
            Err(StorageError::Unavailable(_)) => {
                self.set_down(true);
                self.gate.noticed.notify_one();
            }
            Err(StorageError::Busy(_)) => self.gate.noticed.notify_one(),
            _ => {}
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
        self.gate.closed.send_replace(down);
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
