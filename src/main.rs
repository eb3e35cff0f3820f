//! The `trading-monitor` binary: parses the command line, starts logging, and runs the chosen command.

use std::process::ExitCode;

/// mimalloc instead of glibc malloc: profiling the cached read path showed ~12 % of server CPU in glibc's
/// malloc/free under multi-threaded churn (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use trading_monitor::config::{Cli, Command};
use trading_monitor::server::{Application, shutdown_signal};
use trading_monitor::{auth, demo, storage, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let telemetry = match telemetry::init(cli.log_format.into(), &cli.log_filter) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("error: invalid log or trace settings: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let code = match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "exiting");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown().await;
    code
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => Application::build(args).await?.run_until(shutdown_signal()).await,
        Command::Migrate(args) => {
            let pool = storage::pool(&args.to_settings())?;
            storage::migrate(&pool).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Token(args) => {
            let user_id = args.user_id.unwrap_or_else(uuid::Uuid::new_v4);
            let spec = auth::TokenSpec {
                user_id,
                scopes: &args.scopes,
                ttl: args.ttl,
                issuer: args.jwt_issuer.as_deref(),
                audience: args.jwt_audience.as_deref(),
            };
            println!("{}", auth::mint_hs256(&args.jwt_secret, &spec)?);
            Ok(())
        }
        Command::Demo(args) => demo::run(args, shutdown_signal()).await,
    }
}
