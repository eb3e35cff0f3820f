//! PostgreSQL access through sqlx: the pool, migrations, and every query (compile-checked with `query!`; the
//! `.sqlx/` cache lets the crate build with `SQLX_OFFLINE=true`). Submodules group queries by table family.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use crate::domain::ParseEnumError;

pub mod accounts;
pub mod book;
pub mod clock;
pub mod events;
pub mod feed;
pub mod gate;
pub mod market;
pub mod positions;
pub mod quotes;
pub mod summaries;
pub mod syncs;

pub use accounts::AccountRow;
pub use book::Book;
pub use events::{EventPage, EventQuery, EventRow};
pub use gate::Db;
pub use market::{AlertRow, InstrumentRow, MarketSnapshot, QuoteRow};
pub use positions::{DivergenceRow, PositionRow};
pub use summaries::{StatusRead, SummaryRow};

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How to reach PostgreSQL and how the pool behaves (`config::database` builds it from the command line).
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// PostgreSQL URL.
    pub url: String,
    /// Most connections in the pool.
    pub max_connections: u32,
    /// How long a call waits for a free connection before failing with [`StorageError::Unavailable`].
    pub acquire_timeout: Duration,
    /// Server-side bound on every statement.
    pub statement_timeout: Duration,
}

/// Storage failures, split by what a caller can do about them.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// PostgreSQL cannot be reached or the connection died (I/O, TLS, SQLSTATE class 08, 57P01-57P03, the pool
    /// closed): retry later. Only this closes the fail-fast gate ([`gate`]).
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// PostgreSQL answers but has no room for this call: no pooled connection within the acquire timeout, or
    /// 53300 too_many_connections. This call only: a saturated server is not a down one.
    #[error("database busy")]
    Busy(#[source] sqlx::Error),
    /// The statement ran past `statement_timeout` (or was cancelled): 57014. This call only; its transaction was
    /// rolled back.
    #[error("database statement timed out")]
    TimedOut(#[source] sqlx::Error),
    /// The transaction conflicted with a concurrent one (SQLSTATE 40001 serialization failure, 40P01 deadlock)
    /// and was rolled back: the same request can be retried.
    #[error("transaction aborted by a concurrent one")]
    Conflict(#[source] sqlx::Error),
    /// A query failed for another reason (a bug, a constraint).
    #[error("database query failed")]
    Query(#[source] sqlx::Error),
    /// PostgreSQL is known to be unreachable (see [`gate`]); nothing was tried.
    #[error("database unavailable (known down)")]
    Down,
    /// A stored value violates an invariant the code relies on.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// Applying migrations failed.
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StorageError {
    fn from(err: sqlx::Error) -> Self {
        if is_connection_level(&err) {
            StorageError::Unavailable(err)
        } else if is_busy(&err) {
            StorageError::Busy(err)
        } else if is_timed_out(&err) {
            StorageError::TimedOut(err)
        } else if is_conflict(&err) {
            StorageError::Conflict(err)
        } else {
            StorageError::Query(err)
        }
    }
}

impl From<ParseEnumError> for StorageError {
    fn from(err: ParseEnumError) -> Self {
        StorageError::Corrupt(err.to_string())
    }
}

/// Whether an error means "the database is not there right now" (the connection failed or died) rather than
/// "this call could not run" or "this query is wrong".
fn is_connection_level(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolClosed => true,
        // 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now, 08xxx connection exceptions.
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|c| matches!(&*c, "57P01" | "57P02" | "57P03") || c.starts_with("08"))
        }
        _ => false,
    }
}

/// Whether PostgreSQL had no room for the call: the pool's acquire timed out (it also retries 53300 until
/// then), or a connection was refused with 53300 too_many_connections.
fn is_busy(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(db) => db.code().as_deref() == Some("53300"),
        _ => false,
    }
}

/// Whether the statement was cancelled: 57014 query_canceled (`statement_timeout`, or `pg_cancel_backend`).
fn is_timed_out(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("57014"))
}

/// Whether a transaction lost to a concurrent one (serialization failure or deadlock).
fn is_conflict(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().is_some_and(|c| matches!(&*c, "40001" | "40P01")))
}

/// Parses a stored lower-case enumeration value.
pub(crate) fn parse_stored<T: FromStr<Err = ParseEnumError>>(s: &str) -> Result<T, StorageError> {
    Ok(s.parse()?)
}

/// Connection options from the configuration: URL plus session settings.
///
/// - `statement_timeout`: a server-side bound on every statement.
/// - `plan_cache_mode = force_generic_plan`: sqlx prepares every statement once per connection; PostgreSQL's
///   default then plans the first five executions for their parameter values and may keep doing so, which
///   costs more than running these small keyed reads. Every query here reads one user's rows through an index
///   that starts with the user (or a small global table), so the generic plan is the same plan; `scripts/explain.py`
///   checks the generic plans of every read on a 1M-event database (no sequential scans, no scans that discard
///   rows). Measured (BENCHMARKS.md, uncached reads): PostgreSQL CPU per request ~120 -> ~80 µs.
pub fn connect_options(settings: &DatabaseSettings) -> Result<PgConnectOptions, StorageError> {
    let timeout_ms = settings.statement_timeout.as_millis().to_string();
    Ok(PgConnectOptions::from_str(&settings.url)
        .map_err(StorageError::Query)?
        .options([("statement_timeout", timeout_ms.as_str()), ("plan_cache_mode", "force_generic_plan")])
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500)))
}

/// A lazily connecting pool: start-up succeeds while PostgreSQL is down, and health reports NOT_SERVING until
/// it is reachable.
pub fn pool(settings: &DatabaseSettings) -> Result<PgPool, StorageError> {
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        // Every acquire's wait as a TRACE event: the only way sqlx reports it; telemetry turns it into the
        // `trading_monitor_pg_pool_acquire_seconds` histogram (nothing is logged at the default levels).
        .acquire_time_level(log::LevelFilter::Trace)
        .connect_lazy_with(connect_options(settings)?))
}

/// Creates the database named in the URL if it does not exist (used by `demo` and tests), connecting to the
/// `postgres` maintenance database of the same server.
pub async fn create_database_if_missing(url: &str) -> Result<(), StorageError> {
    let options = PgConnectOptions::from_str(url).map_err(StorageError::Query)?;
    let name = options.get_database().unwrap_or("postgres").to_owned();
    let mut admin = options.database("postgres").connect().await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut admin)
        .await?;
    if !exists {
        // Identifiers cannot be bound as parameters; quote it.
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {quoted}"))).execute(&mut admin).await?;
        tracing::info!(database = %name, "created database");
    }
    Ok(())
}

/// Applies pending migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), StorageError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// One round trip, for health checks.
pub async fn ping(pool: &PgPool) -> Result<(), StorageError> {
    sqlx::query_scalar!("SELECT 1 AS \"one!\"").fetch_one(pool).await?;
    Ok(())
}

/// Whether every migration this binary embeds has been applied successfully.
pub async fn migrations_applied(pool: &PgPool) -> Result<bool, StorageError> {
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(pool)
        .await?;
    Ok(MIGRATOR.iter().all(|m| applied.binary_search(&m.version).is_ok()))
}

/// Whether PostgreSQL answers, for the health probe: one round trip on an idle pooled connection when there is
/// one (the common case, and the only way that works while the role is at its connection limit), else on a
/// connection of its own (not a pool acquire, which keeps retrying to connect for its whole timeout). Only a
/// connection-level failure counts as down: a server that refuses a new connection with 53300, or is otherwise
/// saturated, is up, and reporting it down would take every replica out of service together.
pub async fn probe(pool: &PgPool) -> Result<(), StorageError> {
    use sqlx::Connection;
    // `try_acquire` takes only an idle connection, never one a waiting call would get, and does not ping.
    if let Some(mut pooled) = pool.try_acquire() {
        match sqlx::query_scalar!("SELECT 1 AS \"one!\"").fetch_one(&mut *pooled).await {
            Ok(_) => return Ok(()),
            // A dead pooled connection (PostgreSQL restarted since) says nothing of the server now: drop it and
            // ask with a new one.
            Err(_) => pooled.close_on_drop(),
        }
    }
    match sqlx::PgConnection::connect_with(&pool.connect_options()).await {
        Ok(mut conn) => {
            sqlx::query_scalar!("SELECT 1 AS \"one!\"").fetch_one(&mut conn).await?;
            let _ = conn.close().await;
            Ok(())
        }
        Err(e) if is_connection_level(&e) => Err(StorageError::Unavailable(e)),
        Err(e) => match StorageError::from(e) {
            // It answered: too many connections, or busy.
            StorageError::Busy(_) | StorageError::TimedOut(_) => Ok(()),
            other => Err(other),
        },
    }
}
