//! The standalone gateway's command line (`trading-gateway --help`); in the library so the service's
//! configuration reference (`docs/configuration.md`) is generated from the same definition.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use crate::HttpArgs;
use crate::upstream::ConnectOptions;

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
    /// HTTP/2 connections to the upstream that unary calls (and `/healthz`) are spread over, all opened on the
    /// first call. One connection carries the service's `--max-streams-per-connection` calls at once (200).
    #[arg(long, env = "TGW_UPSTREAM_CONNECTIONS", value_parser = clap::value_parser!(u16).range(1..=256), default_value_t = 4)]
    pub upstream_connections: u16,
    /// HTTP/2 connections to the upstream that streams (Server-Sent Events, NDJSON) are spread over, apart from
    /// the unary ones, so a client that stops reading a stream can never hold up unary calls. Each carries the
    /// service's `--max-streams-per-connection` streams at once (200); keep `--http-max-streams` at or below
    /// this times that.
    #[arg(long, env = "TGW_UPSTREAM_STREAM_CONNECTIONS", value_parser = clap::value_parser!(u16).range(1..=256), default_value_t = 4)]
    pub upstream_stream_connections: u16,
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

impl Cli {
    /// How to connect to the upstream.
    pub fn connect_options(&self) -> ConnectOptions {
        ConnectOptions {
            connect_timeout: self.connect_timeout,
            connections: self.upstream_connections.into(),
            stream_connections: self.upstream_stream_connections.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_connections_are_at_least_one() {
        let options = Cli::try_parse_from(["trading-gateway"]).unwrap().connect_options();
        let defaults = ConnectOptions::default();
        assert_eq!(
            (options.connections, options.stream_connections),
            (defaults.connections, defaults.stream_connections)
        );
        for flag in ["--upstream-connections", "--upstream-stream-connections"] {
            for bad in ["0", "-1", "many", "257"] {
                let arg = format!("{flag}={bad}");
                let error = Cli::try_parse_from(["trading-gateway", arg.as_str()]).unwrap_err().to_string();
                assert!(error.contains(flag), "{error}");
            }
        }
        let options =
            Cli::try_parse_from(["trading-gateway", "--upstream-connections", "2"]).unwrap().connect_options();
        assert_eq!(options.connections, 2);
    }
}
