//! `loadgen`: a load generator for trading-monitor. It signs its own JWTs with the server's HS256 secret, keeps
//! a fixed number of concurrent callers busy for a fixed time, and prints throughput, latency percentiles and
//! errors by gRPC code. See BENCHMARKS.md for the commands and recorded results.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use clap::{Parser, Subcommand};
use secrecy::SecretString;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use trading_monitor::auth::{TokenSpec, mint_hs256};
use trading_monitor::pb;
use trading_monitor::pb::reconciliation_service_client::ReconciliationServiceClient;
use uuid::Uuid;

/// Load generator for trading-monitor.
#[derive(Debug, Parser)]
struct Args {
    /// Server address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
    /// HS256 secret of the server (to sign tokens).
    #[arg(long, env = "TM_JWT_SECRET", hide_env_values = true)]
    jwt_secret: SecretString,
    /// How long to run.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    duration: Duration,
    /// Concurrent callers.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// HTTP/2 connections the callers share.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// SubmitBrokerSync: each call is one user's full sync with N matched broker/platform position pairs.
    Ingest {
        /// Distinct users synced round-robin (each caller owns its own users, so one user is never synced
        /// concurrently, as with a real sync worker).
        #[arg(long, default_value_t = 400)]
        users: usize,
        /// Positions per sync.
        #[arg(long, default_value_t = 20)]
        positions: usize,
    },
}

/// Latencies and errors of one caller.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        for (code, n) in other.errors {
            *self.errors.entry(code).or_default() += n;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(name: &str, mut tally: Tally, elapsed: Duration) {
    tally.latencies.sort();
    let ok = tally.latencies.len();
    let errors: u64 = tally.errors.values().sum();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("{name}: {ok} ok, {errors} errors in {:.1} s", elapsed.as_secs_f64());
    println!("  throughput  {:.0} req/s", ok as f64 / elapsed.as_secs_f64());
    println!(
        "  latency ms  p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}",
        ms(percentile(&tally.latencies, 50.0)),
        ms(percentile(&tally.latencies, 95.0)),
        ms(percentile(&tally.latencies, 99.0)),
        ms(tally.latencies.last().copied().unwrap_or_default())
    );
    for (code, n) in &tally.errors {
        println!("  error {code}: {n}");
    }
}

fn ts(t: chrono::DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(pb::timestamp(t))
}

/// One user's sync: `n` broker positions, each matched by identifier with a platform position.
fn sync_request(user: Uuid, n: usize, round: u64) -> pb::SubmitBrokerSyncRequest {
    let now = Utc::now();
    let symbols = ["XAUUSD", "EURUSD", "BTCUSD", "GBPUSD", "USDJPY"];
    let prices = ["2350.00", "1.08500", "65000.00", "1.26500", "151.200"];
    let mut broker = Vec::with_capacity(n);
    let mut platform = Vec::with_capacity(n);
    for i in 0..n {
        let (symbol, price) = (symbols[i % symbols.len()], prices[i % prices.len()]);
        let side = if i % 2 == 0 { pb::Side::Buy } else { pb::Side::Sell };
        broker.push(pb::BrokerPosition {
            position_identifier: format!("{}", 1000 + i),
            ticket: format!("{}", 500_000 + i),
            symbol: symbol.into(),
            side: side.into(),
            volume: "0.10".into(),
            open_price: price.into(),
            current_price: price.into(),
            swap: "-0.50".into(),
            commission: "-1.00".into(),
            profit: format!("{}.25", round % 50),
            open_time: ts(now - chrono::Duration::hours(2)),
            ..Default::default()
        });
        platform.push(pb::PlatformPosition {
            platform_trade_id: format!("T-{i}"),
            symbol: symbol.into(),
            side: side.into(),
            volume: "0.10".into(),
            entry_price: price.into(),
            position_identifier: format!("{}", 1000 + i),
            ..Default::default()
        });
    }
    pb::SubmitBrokerSyncRequest {
        request_id: Uuid::new_v4().to_string(),
        user_id: user.to_string(),
        started_time: ts(now - chrono::Duration::milliseconds(300)),
        finished_time: ts(now),
        result: Some(pb::submit_broker_sync_request::Result::Snapshot(pb::SyncSnapshot {
            account: Some(pb::AccountSnapshot {
                balance: "10000.00".into(),
                equity: format!("{}.00", 9_500 + round % 1_000),
                margin: "500.00".into(),
                currency: "USD".into(),
                broker_time: ts(now),
            }),
            broker_positions: broker,
            platform_positions: platform,
        })),
    }
}

async fn ingest(args: &Args, channels: &[Channel], users: usize, positions: usize) -> anyhow::Result<()> {
    let scopes = vec!["trading:sync:write".to_owned()];
    let token = mint_hs256(
        &args.jwt_secret,
        &TokenSpec {
            user_id: Uuid::new_v4(),
            scopes: &scopes,
            ttl: Duration::from_secs(3600),
            issuer: None,
            audience: None,
        },
    )?;
    let auth: MetadataValue<_> = format!("Bearer {token}").parse()?;
    let users: Vec<Uuid> = (0..users).map(|_| Uuid::new_v4()).collect();
    let deadline = Instant::now() + args.duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for caller in 0..args.concurrency {
        let mut client = ReconciliationServiceClient::new(channels[caller % channels.len()].clone());
        let mine: Vec<Uuid> = users.iter().skip(caller).step_by(args.concurrency).copied().collect();
        let auth = auth.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut round = 0u64;
            while Instant::now() < deadline {
                let user = mine[(round as usize) % mine.len()];
                let mut request = tonic::Request::new(sync_request(user, positions, round));
                request.metadata_mut().insert("authorization", auth.clone());
                let sent = Instant::now();
                match client.submit_broker_sync(request).await {
                    Ok(_) => tally.latencies.push(sent.elapsed()),
                    Err(status) => *tally.errors.entry(format!("{:?}", status.code())).or_default() += 1,
                }
                round += 1;
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        total.merge(task.await?);
    }
    report(&format!("ingest ({positions} positions/sync, {} callers)", args.concurrency), total, started.elapsed());
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.concurrency > 0 && args.connections > 0, "--concurrency and --connections must be positive");
    let mut channels = Vec::new();
    for _ in 0..args.connections {
        let channel = Endpoint::from_shared(args.target.clone())?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("cannot connect to {}", args.target))?;
        channels.push(channel);
    }
    match args.mode {
        Mode::Ingest { users, positions } => {
            anyhow::ensure!(users >= args.concurrency, "--users must be at least --concurrency");
            ingest(&args, &channels, users, positions).await
        }
    }
}
