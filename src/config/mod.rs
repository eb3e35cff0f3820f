//! Command line and environment configuration. Every option has a `--long` flag and an environment variable
//! (`DATABASE_URL`, `REDIS_URL`, the rest `TM_*`); doc comments here are the `--help` text. Parsing never reads
//! or writes the process environment outside clap, so tests build these structs directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use rust_decimal::Decimal;
use secrecy::SecretString;

use crate::domain::bounds::{DecimalBounds, MONEY, PERCENT};
use crate::domain::drawdown::DrawdownThresholds;
use crate::domain::market::{AlertSeverity, MarketThresholds};
use crate::domain::reconcile::Tolerances;

/// Default database: the local PostgreSQL with trust auth. `sslmode=disable` because TLS on loopback costs ~20 %
/// throughput for nothing; use `sslmode=require` (or stronger) for a remote server.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/trading_monitor?sslmode=disable";

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

/// PostgreSQL connection settings.
#[derive(Debug, Clone, Args)]
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

/// JWT verification settings. Exactly one key source must match the algorithm: a shared secret for HS256, a PEM
/// public key for RS256/ES256.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// Signature algorithm accepted; tokens signed with any other algorithm (including `none`) are rejected.
    #[arg(long, env = "TM_JWT_ALGORITHM", value_enum, default_value_t = JwtAlgorithm::Hs256)]
    pub jwt_algorithm: JwtAlgorithm,
    /// Shared secret for HS256 (at least 32 bytes).
    #[arg(long, env = "TM_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,
    /// PEM file with the RSA (RS256) or EC P-256 (ES256) public key.
    #[arg(long, env = "TM_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Required `iss` claim value; not checked when unset (must be set for RS256/ES256).
    #[arg(long, env = "TM_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim value (a token's `aud` may be this string or an array containing it); not checked
    /// when unset (must be set for RS256/ES256).
    #[arg(long, env = "TM_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[arg(long, env = "TM_JWT_LEEWAY", value_parser = humantime::parse_duration, default_value = "30s")]
    pub jwt_leeway: Duration,
    /// Longest token lifetime accepted: a token whose `exp` is further than this from now (or from its `iat`)
    /// is UNAUTHENTICATED, so a leaked long-lived token cannot be used for long.
    #[arg(long, env = "TM_JWT_MAX_LIFETIME", value_parser = humantime::parse_duration, default_value = "24h")]
    pub jwt_max_lifetime: Duration,
    /// Require a token for server reflection too (health never needs one).
    #[arg(long, env = "TM_REFLECTION_REQUIRES_AUTH", default_value_t = false)]
    pub reflection_requires_auth: bool,
}

/// Accepted JWT algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    #[value(name = "HS256")]
    Hs256,
    /// RSA PKCS#1 v1.5 SHA-256 with a public key.
    #[value(name = "RS256")]
    Rs256,
    /// ECDSA P-256 SHA-256 with a public key.
    #[value(name = "ES256")]
    Es256,
}

/// Transport and lifecycle settings of the gRPC server.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Also serve the REST/JSON gateway (routes from the protos, /openapi.json, /healthz and a status page at /) on
    /// this address, calling the gRPC services in process. `demo` defaults to 127.0.0.1:8080.
    #[arg(long, env = "TM_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// The admin HTTP listener, off the public ports: `/metrics` (Prometheus text), `/livez` (the process
    /// answers) and `/readyz` (PostgreSQL reachable and every migration applied). Off if unset.
    #[arg(long, env = "TM_ADMIN_LISTEN", alias = "metrics-listen")]
    pub admin_listen: Option<SocketAddr>,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "TM_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Largest accepted request message, in bytes; larger ones are rejected by tonic's decoder with OUT_OF_RANGE
    /// before any handler runs.
    #[arg(long, env = "TM_MAX_REQUEST_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_request_bytes: usize,
    /// Maximum calls in flight at once, over all connections; one more is refused at once with
    /// RESOURCE_EXHAUSTED and a retry hint (health checks are exempt).
    #[arg(long, env = "TM_MAX_CONCURRENT_REQUESTS", default_value_t = 512)]
    pub max_concurrent_requests: usize,
    /// Upper bound on one call's processing time (a caller's shorter `grpc-timeout` is honoured); past it the
    /// call is dropped and answered DEADLINE_EXCEEDED.
    #[arg(long, env = "TM_REQUEST_TIMEOUT", value_parser = humantime::parse_duration, default_value = "15s")]
    pub request_timeout: Duration,
    /// After SIGTERM/ctrl-c, how long in-flight requests may take to finish before the server stops anyway.
    #[arg(long, env = "TM_SHUTDOWN_GRACE", value_parser = humantime::parse_duration, default_value = "10s")]
    pub shutdown_grace: Duration,
    /// How often each replica re-reads the market snapshot (latest quotes, active alerts) it values positions
    /// with: bounds how old another replica's quotes can be here (a replica's own quotes are seen at once).
    #[arg(long, env = "TM_MARKET_REFRESH_INTERVAL", value_parser = humantime::parse_duration, default_value = "100ms")]
    pub market_refresh_interval: Duration,
    /// How often the health reporter checks PostgreSQL.
    #[arg(long, env = "TM_HEALTH_INTERVAL", value_parser = humantime::parse_duration, default_value = "2s")]
    pub health_interval: Duration,
    /// Calls (and watch streams) one HTTP/2 connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS);
    /// a client's further calls wait for one to end.
    #[arg(long, env = "TM_MAX_STREAMS_PER_CONNECTION", default_value_t = 200)]
    pub max_streams_per_connection: u32,
    /// Largest accepted request metadata (the HTTP/2 header list, after decoding), in bytes; a larger one is
    /// refused before any handler runs.
    #[arg(long, env = "TM_MAX_METADATA_BYTES", default_value_t = 16 * 1024)]
    pub max_metadata_bytes: u32,
    /// Calls per second one user's token (its `sub`) may make; 0 turns the limit off. Over it, a call is answered
    /// at once with RESOURCE_EXHAUSTED (reason RATE_LIMITED) and a retry delay.
    #[arg(long, env = "TM_RATE_LIMIT_PER_USER", default_value_t = 500)]
    pub rate_limit_per_user: u32,
    /// How many calls a user may make at once after a quiet spell (the bucket's size).
    #[arg(long, env = "TM_RATE_LIMIT_USER_BURST", default_value_t = 1000)]
    pub rate_limit_user_burst: u32,
    /// Calls per second one service token (with `trading:sync:write`: a backend acting for many users) may make;
    /// 0 turns the limit off.
    #[arg(long, env = "TM_RATE_LIMIT_PER_SERVICE", default_value_t = 10000)]
    pub rate_limit_per_service: u32,
    /// The service tokens' burst.
    #[arg(long, env = "TM_RATE_LIMIT_SERVICE_BURST", default_value_t = 20000)]
    pub rate_limit_service_burst: u32,
    /// Skip applying migrations at start-up (use `migrate` separately).
    #[arg(long, env = "TM_SKIP_MIGRATIONS", default_value_t = false)]
    pub skip_migrations: bool,
}

/// Reconciliation and guard rules.
#[derive(Debug, Clone, Args)]
pub struct RuleArgs {
    /// The reconciliation state is STALE when the last successful sync is older than this.
    #[arg(long, env = "TM_STALE_SYNC_AFTER", value_parser = humantime::parse_duration, default_value = "30s")]
    pub stale_sync_after: Duration,
    /// Drawdown WARNING threshold, percent.
    #[arg(long, env = "TM_DRAWDOWN_WARNING_PCT", default_value = "15")]
    pub drawdown_warning_pct: Decimal,
    /// Drawdown CRITICAL threshold, percent.
    #[arg(long, env = "TM_DRAWDOWN_MAX_PCT", default_value = "20")]
    pub drawdown_max_pct: Decimal,
    /// Equity below which the drawdown guard is CRITICAL, in account currency.
    #[arg(long, env = "TM_MIN_EQUITY", default_value = "100")]
    pub min_equity: Decimal,
    /// Hysteresis: a drawdown level is left only this many percentage points below its threshold.
    #[arg(long, env = "TM_DRAWDOWN_HYSTERESIS_PCT", default_value = "1")]
    pub drawdown_hysteresis_pct: Decimal,
    /// Pre-liquidation countdown after entering CRITICAL.
    #[arg(long, env = "TM_PRE_LIQUIDATION", value_parser = humantime::parse_duration, default_value = "10s")]
    pub pre_liquidation: Duration,
    /// Price-gap WARNING threshold, percent.
    #[arg(long, env = "TM_GAP_WARNING_PCT", default_value = "5")]
    pub gap_warning_pct: Decimal,
    /// Price-gap CRITICAL threshold, percent.
    #[arg(long, env = "TM_GAP_CRITICAL_PCT", default_value = "10")]
    pub gap_critical_pct: Decimal,
    /// Spread WARNING threshold (strictly above), percent.
    #[arg(long, env = "TM_SPREAD_WARNING_PCT", default_value = "0.5")]
    pub spread_warning_pct: Decimal,
    /// Spread CRITICAL threshold, percent.
    #[arg(long, env = "TM_SPREAD_CRITICAL_PCT", default_value = "1")]
    pub spread_critical_pct: Decimal,
    /// A symbol with open positions and no quote for longer than this raises a STALE_QUOTE warning.
    #[arg(long, env = "TM_STALE_QUOTE_AFTER", value_parser = humantime::parse_duration, default_value = "60s")]
    pub stale_quote_after: Duration,
    /// A matched pair diverges when |entry difference| / platform entry exceeds this, percent.
    #[arg(long, env = "TM_ENTRY_TOLERANCE_PCT", default_value = "0.05")]
    pub entry_tolerance_pct: Decimal,
    /// A matched pair diverges when |volume difference| / platform volume exceeds this, percent.
    #[arg(long, env = "TM_VOLUME_TOLERANCE_PCT", default_value = "1")]
    pub volume_tolerance_pct: Decimal,
    /// Take-profit / stop-loss levels diverge when their difference relative to the entry price exceeds this,
    /// percent.
    #[arg(long, env = "TM_PROTECTION_TOLERANCE_PCT", default_value = "0.05")]
    pub protection_tolerance_pct: Decimal,
    /// Market alerts at or above this severity say positions should be closed.
    #[arg(long, env = "TM_CLOSE_POSITIONS_FROM", value_enum, default_value_t = Severity::Warning)]
    pub close_positions_from: Severity,
}

/// Alert severity, for configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Severity {
    /// WARNING and CRITICAL alerts.
    Warning,
    /// CRITICAL alerts only.
    Critical,
}

/// Redis cache settings. Redis is an optimisation: when it is down, slow or disabled, reads go to PostgreSQL.
#[derive(Debug, Clone, Args)]
pub struct CacheArgs {
    /// Redis URL (`redis://host:port/db`; for a cluster `redis-cluster://host:port?node=host:port&node=…`, naming
    /// several nodes: after losing a connection the client finds the cluster again through these seeds only).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Turn the cache off: every read goes to PostgreSQL (`x-cache: bypass`).
    #[arg(long, env = "TM_CACHE_DISABLED", default_value_t = false)]
    pub cache_disabled: bool,
    /// How long a cached response is fresh.
    #[arg(long, env = "TM_CACHE_TTL", value_parser = humantime::parse_duration, default_value = "5s")]
    pub cache_ttl: Duration,
    /// Random extra freshness per entry, percent of the TTL, so entries do not all expire together.
    #[arg(long, env = "TM_CACHE_TTL_JITTER_PCT", default_value_t = 10)]
    pub cache_ttl_jitter_pct: u8,
    /// While PostgreSQL is down, cached responses up to this old are served (marked `x-cache: stale`).
    #[arg(long, env = "TM_CACHE_STALE_MAX_AGE", value_parser = humantime::parse_duration, default_value = "30s")]
    pub cache_stale_max_age: Duration,
    /// How long the in-process L1 serves an entry while this replica cannot hear other replicas'
    /// invalidations (while it can, entries live their whole freshness): bounds how long another replica's
    /// write can go unseen here then.
    #[arg(long, env = "TM_CACHE_L1_TTL", value_parser = humantime::parse_duration, default_value = "500ms")]
    pub cache_l1_ttl: Duration,
    /// A cached value hit within this last share of its freshness (percent of the TTL) is refreshed in the
    /// background, so hot keys never make a caller wait on PostgreSQL; 0 turns refresh-ahead off.
    #[arg(long, env = "TM_CACHE_REFRESH_AHEAD_PCT", default_value_t = 20)]
    pub cache_refresh_ahead_pct: u8,
    /// How often each replica sends itself a heartbeat on the invalidation channel.
    #[arg(long, env = "TM_CACHE_HEARTBEAT", value_parser = humantime::parse_duration, default_value = "250ms")]
    pub cache_heartbeat: Duration,
    /// A replica counts as hearing invalidations while its own last heartbeat came back within this long.
    #[arg(long, env = "TM_CACHE_HEARING_LEASE", value_parser = humantime::parse_duration, default_value = "1s")]
    pub cache_hearing_lease: Duration,
    /// Most memory the in-process L1 may use, in bytes (keys plus encoded responses).
    #[arg(long, env = "TM_CACHE_L1_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub cache_l1_max_bytes: u64,
    /// Key namespace in Redis.
    #[arg(long, env = "TM_CACHE_KEY_PREFIX", default_value = "trading:v1")]
    pub cache_key_prefix: String,
    /// Upper bound on one Redis call; slower calls count as failures.
    #[arg(long, env = "TM_REDIS_TIMEOUT", value_parser = humantime::parse_duration, default_value = "100ms")]
    pub redis_timeout: Duration,
    /// Connections to Redis.
    #[arg(long, env = "TM_REDIS_POOL_SIZE", default_value_t = 4)]
    pub redis_pool_size: usize,
    /// Consecutive Redis failures after which the cache stops calling Redis for a while.
    #[arg(long, env = "TM_REDIS_BREAKER_FAILURES", default_value_t = 3)]
    pub redis_breaker_failures: u32,
    /// How long the cache leaves Redis alone after the breaker opens, before one probe.
    #[arg(long, env = "TM_REDIS_BREAKER_COOLDOWN", value_parser = humantime::parse_duration, default_value = "1s")]
    pub redis_breaker_cooldown: Duration,
}

impl CacheArgs {
    /// The cache settings these arguments describe.
    pub fn to_settings(&self) -> crate::cache::CacheSettings {
        crate::cache::CacheSettings {
            enabled: !self.cache_disabled,
            redis_url: self.redis_url.clone(),
            pool_size: self.redis_pool_size,
            key_prefix: self.cache_key_prefix.clone(),
            ttl: self.cache_ttl,
            ttl_jitter: f64::from(self.cache_ttl_jitter_pct.min(100)) / 100.0,
            stale_max_age: self.cache_stale_max_age.max(self.cache_ttl),
            // L1 must never make a value outlive its freshness.
            l1_ttl: self.cache_l1_ttl.min(self.cache_ttl),
            l1_max_bytes: self.cache_l1_max_bytes,
            refresh_ahead: f64::from(self.cache_refresh_ahead_pct.min(100)) / 100.0,
            heartbeat: self.cache_heartbeat,
            hearing_lease: self.cache_hearing_lease.max(self.cache_heartbeat * 2),
            redis_timeout: self.redis_timeout,
            breaker_failures: self.redis_breaker_failures,
            breaker_cooldown: self.redis_breaker_cooldown,
        }
    }
}

/// Everything `serve` and `demo` need.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub rules: RuleArgs,
    #[command(flatten)]
    pub http: trading_gateway::HttpArgs,
    #[command(flatten)]
    pub watch: WatchArgs,
}

/// Watch streams (WatchReconciliationEvents, WatchGuardStatus) and the connections that carry them.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Heartbeat interval of a watch that does not ask for one: a silent stream gets a heartbeat (with a fresh
    /// resume token) this often, so proxies keep it open.
    #[arg(long, env = "TM_WATCH_HEARTBEAT", value_parser = humantime::parse_duration, default_value = "15s")]
    pub watch_heartbeat: Duration,
    /// Watch streams one caller (a token's `sub`) may hold open on this replica; one more is RESOURCE_EXHAUSTED.
    #[arg(long, env = "TM_WATCH_MAX_PER_USER", default_value_t = 16)]
    pub watch_max_per_user: usize,
    /// Watch streams this replica holds open at most; one more is RESOURCE_EXHAUSTED.
    #[arg(long, env = "TM_WATCH_MAX_STREAMS", default_value_t = 5000)]
    pub watch_max_streams: usize,
    /// A watch whose client has not read for this long (its buffer full) is ended with RESOURCE_EXHAUSTED
    /// (reason SLOW_CONSUMER), so a stuck client holds bounded memory; it can resume without loss.
    #[arg(long, env = "TM_WATCH_SEND_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    pub watch_send_timeout: Duration,
    /// Messages buffered per watch before the client must read.
    #[arg(long, env = "TM_WATCH_BUFFER", default_value_t = 64)]
    pub watch_buffer: usize,
    /// The event feed is re-read this often even without a notification (NOTIFY is only a wake-up and is lost
    /// while the listening connection is down); also how often heartbeat positions advance.
    #[arg(long, env = "TM_WATCH_SAFETY_INTERVAL", value_parser = humantime::parse_duration, default_value = "1s")]
    pub watch_safety_interval: Duration,
    /// How often the clock records time-driven changes as events (a quote going stale, a liquidation countdown
    /// running out): the most they are late.
    #[arg(long, env = "TM_CLOCK_INTERVAL", value_parser = humantime::parse_duration, default_value = "1s")]
    pub clock_interval: Duration,
    /// HTTP/2 keep-alive ping interval on idle connections (0 turns pings off).
    #[arg(long, env = "TM_HTTP2_KEEPALIVE_INTERVAL", value_parser = humantime::parse_duration, default_value = "30s")]
    pub http2_keepalive_interval: Duration,
    /// How long a keep-alive ping may go unanswered before the connection is closed.
    #[arg(long, env = "TM_HTTP2_KEEPALIVE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub http2_keepalive_timeout: Duration,
    /// Connections are closed (gracefully, GOAWAY) after about this long (±10 %, drawn per replica), so clients
    /// spread over replicas again; watches then resume elsewhere (0: never).
    #[arg(long, env = "TM_MAX_CONNECTION_AGE", value_parser = humantime::parse_duration, default_value = "30m")]
    pub max_connection_age: Duration,
    /// How long calls on an aged-out connection may still run before it is closed.
    #[arg(long, env = "TM_MAX_CONNECTION_AGE_GRACE", value_parser = humantime::parse_duration, default_value = "5m")]
    pub max_connection_age_grace: Duration,
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

/// Settings of the rules as the domain uses them.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// See [`RuleArgs::stale_sync_after`].
    pub stale_sync_after: chrono::Duration,
    /// Drawdown guard thresholds.
    pub drawdown: DrawdownThresholds,
    /// Market guard thresholds.
    pub market: MarketThresholds,
    /// Divergence tolerances of the matcher.
    pub matching: Tolerances,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            stale_sync_after: chrono::Duration::seconds(30),
            drawdown: DrawdownThresholds::default(),
            market: MarketThresholds::default(),
            matching: Tolerances::default(),
        }
    }
}

/// An invalid combination of settings.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

fn chrono_duration(d: Duration, name: &str) -> Result<chrono::Duration, ConfigError> {
    chrono::Duration::from_std(d).map_err(|_| ConfigError(format!("{name} is too large")))
}

impl RuleArgs {
    /// Validates the thresholds and converts them for the domain.
    pub fn to_rules(&self) -> Result<Rules, ConfigError> {
        let bounded = |v: Decimal, bounds: &DecimalBounds, name: &str| {
            bounds.check(v).map(|()| v).map_err(|e| ConfigError(format!("{name} {v} {e}")))
        };
        let positive = |v: Decimal, name: &str| {
            let v = bounded(v, &PERCENT, name)?;
            if v > Decimal::ZERO { Ok(v) } else { Err(ConfigError(format!("{name} must be positive"))) }
        };
        let drawdown = DrawdownThresholds {
            warning_pct: positive(self.drawdown_warning_pct, "--drawdown-warning-pct")?,
            max_pct: positive(self.drawdown_max_pct, "--drawdown-max-pct")?,
            min_equity: bounded(self.min_equity, &MONEY, "--min-equity")?.max(Decimal::ZERO),
            hysteresis_pct: bounded(self.drawdown_hysteresis_pct, &PERCENT, "--drawdown-hysteresis-pct")?,
            pre_liquidation: chrono_duration(self.pre_liquidation, "--pre-liquidation")?,
        };
        if drawdown.warning_pct > drawdown.max_pct {
            return Err(ConfigError("--drawdown-warning-pct must not exceed --drawdown-max-pct".into()));
        }
        let market = MarketThresholds {
            gap_warning_pct: positive(self.gap_warning_pct, "--gap-warning-pct")?,
            gap_critical_pct: positive(self.gap_critical_pct, "--gap-critical-pct")?,
            spread_warning_pct: positive(self.spread_warning_pct, "--spread-warning-pct")?,
            spread_critical_pct: positive(self.spread_critical_pct, "--spread-critical-pct")?,
            stale_after: chrono_duration(self.stale_quote_after, "--stale-quote-after")?,
            close_from: match self.close_positions_from {
                Severity::Warning => AlertSeverity::Warning,
                Severity::Critical => AlertSeverity::Critical,
            },
        };
        if market.gap_warning_pct > market.gap_critical_pct || market.spread_warning_pct > market.spread_critical_pct {
            return Err(ConfigError("warning thresholds must not exceed critical ones".into()));
        }
        let non_negative = |v: Decimal, name: &str| bounded(v, &PERCENT, name);
        let matching = Tolerances {
            entry_pct: non_negative(self.entry_tolerance_pct, "--entry-tolerance-pct")?,
            volume_pct: non_negative(self.volume_tolerance_pct, "--volume-tolerance-pct")?,
            protection_pct: non_negative(self.protection_tolerance_pct, "--protection-tolerance-pct")?,
        };
        Ok(Rules {
            stale_sync_after: chrono_duration(self.stale_sync_after, "--stale-sync-after")?,
            drawdown,
            market,
            matching,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn default_rules_match_the_domain_defaults() {
        let cli = Cli::try_parse_from(["trading-monitor", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else { panic!("not serve") };
        assert_eq!(args.rules.to_rules().unwrap(), Rules::default());
    }

    #[test]
    fn thresholds_outside_the_percentage_bounds_are_rejected() {
        for (flag, value) in [
            ("--drawdown-max-pct", "1000"),
            ("--gap-warning-pct", "0.00001"),
            ("--drawdown-hysteresis-pct", "12.34567"),
        ] {
            let cli = Cli::try_parse_from(["trading-monitor", "serve", flag, value]).unwrap();
            let Command::Serve(args) = cli.command else { panic!("not serve") };
            assert!(args.rules.to_rules().is_err(), "{flag} {value}");
        }
    }

    #[test]
    fn a_warning_above_the_maximum_is_rejected() {
        let cli = Cli::try_parse_from(["trading-monitor", "serve", "--drawdown-warning-pct", "25"]).unwrap();
        let Command::Serve(args) = cli.command else { panic!("not serve") };
        assert!(args.rules.to_rules().is_err());
    }
}
