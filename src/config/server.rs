//! The gRPC server's transport and lifecycle settings (listen addresses, limits, rate limits, shutdown).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

/// Transport and lifecycle settings of the gRPC server.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Server")]
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
