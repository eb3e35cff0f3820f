//! The standalone gateway's command line (`trading-gateway --help`); in the library so the service's
//! configuration reference (`docs/configuration.md`) is generated from the same definition.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use crate::HttpArgs;

/// REST/JSON gateway for trading-monitor: every RPC annotated with google.api.http in the protos becomes an HTTP
/// route (canonical proto3 JSON, grpc-gateway-style errors), plus /openapi.json, /healthz and a status page at /.
#[derive(Parser, Debug)]
#[command(name = "trading-gateway", version, about, long_about = None)]
pub struct Cli {
    /// The trading-monitor gRPC server to call.
    #[arg(long, env = "TGW_UPSTREAM", default_value = "http://127.0.0.1:50051")]
    pub upstream: String,
    /// Address to serve HTTP on.
    #[arg(long, env = "TGW_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// How long to wait for a TCP connection to the upstream before answering 503.
    #[arg(long, env = "TGW_CONNECT_TIMEOUT", value_parser = humantime::parse_duration, default_value = "1s")]
    pub connect_timeout: Duration,
    /// Print the OpenAPI document and exit.
    #[arg(long)]
    pub print_openapi: bool,
    /// Log filter (tracing-subscriber EnvFilter syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
    /// The HTTP settings it shares with the in-process gateway.
    #[command(flatten)]
    pub http: HttpArgs,
}
