//! `trading-gateway`: the REST/JSON gateway in front of a trading-monitor gRPC server.

use std::process::ExitCode;

use clap::Parser;
use trading_gateway::cli::Cli;
use trading_gateway::{Gateway, upstream};

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
    let upstreams = upstream::connect(&cli.upstream, &cli.connect_options())?;
    let gateway = Gateway::new(upstreams, cli.http)?;
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
