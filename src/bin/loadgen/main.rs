//! `loadgen`: a load generator for trading-monitor. It signs its own JWTs with the server's HS256 secret, keeps
//! a fixed number of concurrent callers busy for a fixed time, and prints throughput, latency percentiles and
//! errors by gRPC code (and, for reads, the cache hit rate and PostgreSQL loads from the server's `/metrics`).
//! See BENCHMARKS.md and scripts/bench-*.sh for the commands and recorded results.

mod echo;
mod feed;
mod ingest;
mod reads;
mod report;
mod seed;
mod sink;
mod watch;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use secrecy::SecretString;
use tonic::transport::{Channel, Endpoint};

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
    /// Concurrent callers (streams) [default: 8 for ingest, 100 for mix].
    #[arg(long)]
    concurrency: Option<usize>,
    /// HTTP/2 connections the callers share.
    #[arg(long, default_value_t = 4)]
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
        /// The shape of each book: `keyed` (the platform knows every broker identifier; five symbols) or
        /// `unkeyed` (one symbol and side, no identifiers, scattered volumes and entries: the matcher's
        /// nearest-first pass does all the work, and many pairs diverge).
        #[arg(long, value_enum, default_value_t = ingest::Book::Keyed)]
        book: ingest::Book,
        /// Meanwhile, watch every user's events on one stream (`WatchReconciliationEvents`, user `-`), so the
        /// server's feed reader works as it does with watchers; prints how many events the stream received.
        #[arg(long)]
        watch_all: bool,
    },
    /// Load demo-like data for the read benchmark's users (one sync each, plus FX quotes).
    Seed {
        /// Users to create.
        #[arg(long, default_value_t = 1000)]
        users: usize,
    },
    /// Print the benchmark users' tokens, one per line (what `scripts/wrk-mix.lua` sends over REST).
    Tokens {
        /// Users that were seeded.
        #[arg(long, default_value_t = 1000)]
        users: usize,
    },
    /// The prototype's read mix 5:3:2 (GetReconciliationStatus : ListOpenPositions : GetGuardStatus).
    Mix {
        /// Users to spread reads over (must have been seeded).
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// The server's metrics address (host:port) for cache hit rate and PostgreSQL loads.
        #[arg(long)]
        metrics: Option<String>,
        /// Name printed with the results.
        #[arg(long, default_value = "mix")]
        label: String,
        /// Meanwhile, submit this many quote batches per second (five symbols, small moves).
        #[arg(long, default_value_t = 0.0)]
        quotes_per_sec: f64,
        /// Meanwhile, re-sync this many of the seeded users per second, round-robin.
        #[arg(long, default_value_t = 0.0)]
        syncs_per_sec: f64,
    },
    /// Cross-replica invalidation latency: writes through --target, reads through --reader.
    ReplicaLatency {
        /// The replica that reads (the other one, --target, takes the writes).
        #[arg(long)]
        reader: String,
        /// Users that were seeded.
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// Writes to time.
        #[arg(long, default_value_t = 200)]
        samples: usize,
    },
    /// N concurrent requests for one cold key; prints the PostgreSQL loads they caused.
    Stampede {
        /// Users that were seeded (user 0 is used).
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// Concurrent requests.
        #[arg(long, default_value_t = 1000)]
        requests: usize,
        /// The server's metrics address (host:port).
        #[arg(long)]
        metrics: String,
    },
    /// Watch streams on --target (`--streams-per-user` per seeded user) while --writer submits one event per
    /// write; prints write-to-watcher latency, server CPU and memory, PostgreSQL transactions per second.
    Watch {
        /// Users that were seeded; each gets `streams_per_user` streams.
        #[arg(long, default_value_t = 100)]
        users: usize,
        /// Streams per user.
        #[arg(long, default_value_t = 10)]
        streams_per_user: usize,
        /// Writes (one event each) per second.
        #[arg(long, default_value_t = 50.0)]
        events_per_sec: f64,
        /// The replica that takes the writes (default: --target).
        #[arg(long)]
        writer: Option<String>,
        /// Instead of watching, each dashboard polls GetGuardStatus and GetReconciliationStatus this often.
        #[arg(long, value_parser = humantime::parse_duration)]
        poll_every: Option<Duration>,
        /// The watched server's PID, for its CPU and memory.
        #[arg(long)]
        server_pid: Option<u32>,
        /// The server's database, for its transactions per second.
        #[arg(long)]
        database_url: Option<String>,
        /// Name printed with the results.
        #[arg(long, default_value = "watch")]
        label: String,
    },
    /// An OTLP/gRPC trace receiver that counts the spans it is sent (prints them on SIGTERM); needs no server.
    OtlpSink {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:4317")]
        listen: SocketAddr,
    },
    /// Serve the baseline: the same services with canned responses captured from --target.
    EchoServer {
        /// Address to serve on.
        #[arg(long, default_value = "127.0.0.1:50092")]
        listen: SocketAddr,
        /// Users that were seeded (user 0's responses are captured).
        #[arg(long, default_value_t = 1000)]
        users: usize,
    },
}

async fn channels(target: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n {
        let channel = Endpoint::from_shared(target.to_owned())?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("cannot connect to {target}"))?;
        channels.push(channel);
    }
    Ok(channels)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.connections > 0, "--connections must be positive");
    if let Mode::OtlpSink { listen } = &args.mode {
        return sink::serve(*listen).await;
    }
    let channels = channels(&args.target, args.connections).await?;
    match &args.mode {
        Mode::Ingest { users, positions, book, watch_all } => {
            let concurrency = args.concurrency.unwrap_or(8).max(1);
            anyhow::ensure!(*users >= concurrency, "--users must be at least --concurrency");
            let shape = ingest::Shape { users: *users, positions: *positions, book: *book, watch_all: *watch_all };
            ingest::run(&args.jwt_secret, &channels, args.duration, concurrency, shape).await
        }
        Mode::Seed { users } => seed::seed(channels[0].clone(), &args.jwt_secret, *users).await,
        Mode::Tokens { users } => {
            for auth in seed::users(*users, &args.jwt_secret)?.auth {
                println!("{}", auth.to_str()?.trim_start_matches("Bearer "));
            }
            Ok(())
        }
        Mode::Mix { users, metrics, label, quotes_per_sec, syncs_per_sec } => {
            let users = seed::users(*users, &args.jwt_secret)?;
            let concurrency = args.concurrency.unwrap_or(100).max(1);
            let market = (*quotes_per_sec > 0.0 || *syncs_per_sec > 0.0).then(|| {
                let feeding = feed::Feeding { quotes_per_sec: *quotes_per_sec, syncs_per_sec: *syncs_per_sec };
                feed::writer_auth(&args.jwt_secret).map(|auth| (feeding, auth))
            });
            let market = market.transpose()?;
            reads::mix(label, &channels, &users, args.duration, concurrency, metrics.as_deref(), market).await
        }
        Mode::ReplicaLatency { reader, users, samples } => {
            let users = seed::users(*users, &args.jwt_secret)?;
            let reader = self::channels(reader, 1).await?.remove(0);
            let auth = feed::writer_auth(&args.jwt_secret)?;
            reads::replica_latency(reader, channels[0].clone(), &users, *samples, auth).await
        }
        Mode::Stampede { users, requests, metrics } => {
            let users = seed::users(*users, &args.jwt_secret)?;
            reads::stampede(&channels, &users, *requests, metrics).await
        }
        Mode::Watch {
            users,
            streams_per_user,
            events_per_sec,
            writer,
            poll_every,
            server_pid,
            database_url,
            label,
        } => {
            let users = seed::users(*users, &args.jwt_secret)?;
            let writer = match writer {
                Some(w) => self::channels(w, 1).await?.remove(0),
                None => channels[0].clone(),
            };
            let auth = feed::writer_auth(&args.jwt_secret)?;
            let plan = watch::Plan {
                label: label.clone(),
                streams_per_user: (*streams_per_user).max(1),
                events_per_sec: *events_per_sec,
                duration: args.duration,
                poll_every: *poll_every,
                server_pid: *server_pid,
                database_url: database_url.clone(),
            };
            watch::run(&channels, writer, &users, auth, plan).await
        }
        Mode::OtlpSink { .. } => unreachable!("served above"),
        Mode::EchoServer { listen, users } => {
            let users = seed::users((*users).max(1), &args.jwt_secret)?;
            echo::serve(*listen, channels[0].clone(), &users).await
        }
    }
}
