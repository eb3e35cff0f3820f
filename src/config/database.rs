//! `--database-*` / `--db-*`: how to reach PostgreSQL, turned into [`storage::DatabaseSettings`].

use std::time::Duration;

use clap::Args;

use crate::storage;

/// Default database: the local PostgreSQL with trust auth. `sslmode=disable` because TLS on loopback costs ~20 %
/// throughput for nothing; use `sslmode=require` (or stronger) for a remote server.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/trading_monitor?sslmode=disable";

/// PostgreSQL connection settings.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "PostgreSQL")]
pub struct DatabaseArgs {
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Maximum connections in the pool.
    #[arg(long, env = "TM_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
    /// How long a request waits for a free connection before failing with UNAVAILABLE.
    #[arg(long, env = "TM_DB_ACQUIRE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "3s")]
    pub db_acquire_timeout: Duration,
    /// Server-side statement timeout applied to every connection.
    #[arg(long, env = "TM_DB_STATEMENT_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5s")]
    pub db_statement_timeout: Duration,
}

impl DatabaseArgs {
    /// The storage settings these arguments describe.
    pub fn to_settings(&self) -> storage::DatabaseSettings {
        storage::DatabaseSettings {
            url: self.database_url.clone(),
            max_connections: self.db_max_connections,
            acquire_timeout: self.db_acquire_timeout,
            statement_timeout: self.db_statement_timeout,
        }
    }
}
