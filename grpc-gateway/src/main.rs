//! `trading-gateway`: the REST/JSON gateway in front of a trading-monitor gRPC server.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use trading_gateway::{Gateway, HttpArgs, upstream};

/// REST/JSON gateway for trading-monitor: every RPC annotated with google.api.http in the protos becomes an HTTP
/// route (canonical proto3 JSON, grpc-gateway-style errors), plus /openapi.json, /healthz and a status page at /.
#[derive(Parser, Debug)]
#[command(name = "trading-gateway", version, about, long_about = None)]
struct Cli {
    /// The trading-monitor gRPC server to call.
    #[arg(long, env = "TGW_UPSTREAM", default_value = "http://127.0.0.1:50051")]
    upstream: String,
    /// Address to serve HTTP on.
    #[arg(long, env = "TGW_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// How long to wait for a TCP connection to the upstream before answering 503.
    #[arg(long, env = "TGW_CONNECT_TIMEOUT", value_parser = humantime::parse_duration, default_value = "1s")]
    connect_timeout: Duration,
    /// Print the OpenAPI document and exit.
    #[arg(long)]
    print_openapi: bool,
    #[command(flatten)]
    http: HttpArgs,
    /// Log filter (tracing-subscriber EnvFilter syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log_filter: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt().with_env_filter(cli.log_filter.as_str()).with_writer(std::io::stderr).init();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let upstream = upstream::connect(&cli.upstream, cli.connect_timeout)?;
    let gateway = Gateway::new(upstream, cli.http)?;
    if cli.print_openapi {
        println!("{}", String::from_utf8_lossy(&gateway.openapi_json()));
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    tracing::info!(upstream = %cli.upstream, "gateway starting");
    gateway.serve(listener, shutdown()).await
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
