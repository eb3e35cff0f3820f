//! Command line and environment configuration. Every option has a `--long` flag and an environment variable
//! (`DATABASE_URL`, `REDIS_URL`, the rest `TM_*`); doc comments here are the `--help` text. Parsing never reads
//! or writes the process environment outside clap, so tests build these structs directly.
//!
//! One file per room (database, cache, auth, server, watch, rules); each turns its arguments into that room's
//! plain settings struct (`to_settings`, `to_rules`), so no module outside `config` imports clap.
//! `docs/configuration.md` is generated from these definitions (`reference`), and a test fails when it is stale.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;

mod auth;
mod cache;
mod database;
pub mod reference;
mod rules;
mod server;
mod watch;

pub use auth::{AuthArgs, JwtAlgorithm};
pub use cache::CacheArgs;
pub use database::{DEFAULT_DATABASE_URL, DatabaseArgs};
pub use rules::{RuleArgs, Severity};
pub use server::ServerArgs;
pub use watch::WatchArgs;

/// trading-monitor: reconciles broker positions with the platform, values open positions and evaluates the
/// drawdown and market guards, over gRPC.
#[derive(Debug, Parser)]
#[command(name = "trading-monitor", version, about, long_about = None, after_help = TRACES_HELP)]
pub struct Cli {
    /// Log output format.
    #[arg(long, env = "TM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Log filter in `tracing` EnvFilter syntax, e.g. `info` or `trading_monitor=debug,sqlx=warn`.
    #[arg(long, env = "RUST_LOG", default_value = "info", global = true)]
    pub log_filter: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Traces are configured by OpenTelemetry's standard variables only, so `--help` names them here.
const TRACES_HELP: &str = "Traces: set OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://127.0.0.1:4317) to export spans \
over OTLP/gRPC; unset, nothing is exported. Also read: OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, \
OTEL_EXPORTER_OTLP_HEADERS, OTEL_EXPORTER_OTLP_TIMEOUT, OTEL_EXPORTER_OTLP_COMPRESSION, OTEL_TRACES_SAMPLER, \
OTEL_TRACES_SAMPLER_ARG, OTEL_BSP_*, OTEL_SDK_DISABLED.";

/// Sub-commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server (migrates the database first unless --skip-migrations).
    #[command(after_help = TRACES_HELP)]
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate(DatabaseArgs),
    /// Mint a development JWT signed with the configured HS256 secret and print it.
    Token(TokenArgs),
    /// Create the database if missing, migrate, load demo data for a few users, then serve and print a token and
    /// ready-to-paste grpcurl / buf curl commands.
    #[command(after_help = TRACES_HELP)]
    Demo(ServeArgs),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl From<LogFormat> for crate::telemetry::LogFormat {
    fn from(format: LogFormat) -> Self {
        match format {
            LogFormat::Text => crate::telemetry::LogFormat::Text,
            LogFormat::Json => crate::telemetry::LogFormat::Json,
        }
    }
}

/// Everything `serve` and `demo` need.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// PostgreSQL.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The cache.
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Token verification.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// The gRPC server.
    #[command(flatten)]
    pub server: ServerArgs,
    /// The rules accounts are judged by.
    #[command(flatten)]
    pub rules: RuleArgs,
    /// The in-process REST gateway.
    #[command(flatten)]
    pub http: trading_gateway::HttpArgs,
    /// Watch streams and their connections.
    #[command(flatten)]
    pub watch: WatchArgs,
}

/// Options of `token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The user the token is for (its `sub`); a random one when omitted.
    #[arg(long)]
    pub user_id: Option<uuid::Uuid>,
    /// Scopes to grant, repeatable: `trading:read:any`, `trading:sync:write`.
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// Lifetime of the token.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "24h")]
    pub ttl: Duration,
    /// HS256 secret to sign with (the server's `TM_JWT_SECRET`).
    #[arg(long, env = "TM_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: SecretString,
    /// `iss` claim to include.
    #[arg(long, env = "TM_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// `aud` claim to include.
    #[arg(long, env = "TM_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
}

/// An invalid combination of settings.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
