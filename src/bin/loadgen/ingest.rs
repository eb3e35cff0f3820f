//! The ingest benchmark: concurrent callers pushing full broker syncs.

use std::time::{Duration, Instant};

use chrono::Utc;
use secrecy::SecretString;
use tonic::transport::Channel;
use trading_monitor::pb;
use trading_monitor::pb::reconciliation_service_client::ReconciliationServiceClient;
use trading_monitor::samples::{self, BrokerExt};
use uuid::Uuid;

use crate::report::{Tally, report};

/// The shape of the books synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Book {
    /// Matched by identifier, five symbols, alternating sides.
    Keyed,
    /// One symbol and side, no identifiers, scattered volumes and entries.
    Unkeyed,
}

/// What each call carries.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Distinct users.
    pub users: usize,
    /// Positions per side.
    pub positions: usize,
    /// Book shape.
    pub book: Book,
    /// Whether one stream watches every user's events meanwhile.
    pub watch_all: bool,
}

/// One user's sync: `n` broker positions, each matched by identifier with a platform position.
fn sync_request(user: Uuid, n: usize, round: u64, book: Book) -> pb::SubmitBrokerSyncRequest {
    if book == Book::Unkeyed {
        return unkeyed_request(user, n, round);
    }
    let now = Utc::now();
    let symbols = ["XAUUSD", "EURUSD", "BTCUSD", "GBPUSD", "USDJPY"];
    let prices = ["2350.00", "1.08500", "65000.00", "1.26500", "151.200"];
    let mut broker = Vec::with_capacity(n);
    let mut platform = Vec::with_capacity(n);
    for i in 0..n {
        let (symbol, price) = (symbols[i % symbols.len()], prices[i % prices.len()]);
        let side = if i % 2 == 0 { pb::Side::Buy } else { pb::Side::Sell };
        let id = format!("{}", 1000 + i);
        broker.push(pb::BrokerPosition {
            ticket: format!("{}", 500_000 + i),
            ..samples::broker(&id, symbol, side, "0.10", price, price)
                .reported("-0.50", "-1.00", &format!("{}.25", round % 50))
                .opened(now - chrono::Duration::hours(2))
        });
        platform.push(samples::platform(&format!("T-{i}"), symbol, side, "0.10", price, &id));
    }
    request(user, round, broker, platform)
}

/// One symbol and side, no identifiers known: volumes and entries scattered (deterministically per round) so
/// the nearest-first matching has real choices, and many pairs diverge in volume or entry.
fn unkeyed_request(user: Uuid, n: usize, round: u64) -> pb::SubmitBrokerSyncRequest {
    let now = Utc::now();
    let spread = |i: usize, salt: usize, modulo: usize| (i.wrapping_mul(2_654_435_761).wrapping_add(salt)) % modulo;
    let r = round as usize;
    let broker = (0..n)
        .map(|i| {
            let volume = format!("0.{:02}", 1 + spread(i, r, 99));
            let open = format!("{}.{:02}", 2300 + spread(i, 7 + r, 100), spread(i, 3, 100));
            pb::BrokerPosition {
                ticket: format!("{}", 500_000 + i),
                ..samples::broker(&format!("{}", 1000 + i), "XAUUSD", pb::Side::Buy, &volume, &open, "2350.00")
                    .opened(now - chrono::Duration::hours(2))
            }
        })
        .collect();
    let platform = (0..n)
        .map(|i| {
            let volume = format!("0.{:02}", 1 + spread(i, 11 + r, 99));
            let entry = format!("{}.{:02}", 2300 + spread(i, 13 + r, 100), spread(i, 5, 100));
            samples::platform(&format!("T-{i}"), "XAUUSD", pb::Side::Buy, &volume, &entry, "")
        })
        .collect();
    request(user, round, broker, platform)
}

/// A sync of these positions in a USD account whose equity moves with the round.
fn request(
    user: Uuid,
    round: u64,
    broker: Vec<pb::BrokerPosition>,
    platform: Vec<pb::PlatformPosition>,
) -> pb::SubmitBrokerSyncRequest {
    let now = Utc::now();
    let equity = format!("{}.00", 9_500 + round % 1_000);
    let account = samples::account("USD", "10000.00", &equity, "500.00", now);
    samples::snapshot_sync(user, now, chrono::Duration::milliseconds(300), account, broker, platform)
}

/// Runs the ingest benchmark: `concurrency` callers pushing full syncs for `duration`.
pub async fn run(
    secret: &SecretString,
    channels: &[Channel],
    duration: Duration,
    concurrency: usize,
    shape: Shape,
) -> anyhow::Result<()> {
    let Shape { users, positions, book, watch_all } = shape;
    let auth = super::feed::writer_auth(secret)?;
    let users: Vec<Uuid> = (0..users).map(|_| Uuid::new_v4()).collect();
    let deadline = Instant::now() + duration;
    let watcher = if watch_all { Some(watch_everyone(secret, channels[0].clone(), deadline).await?) } else { None };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for caller in 0..concurrency {
        let mut client = ReconciliationServiceClient::new(channels[caller % channels.len()].clone());
        let mine: Vec<Uuid> = users.iter().skip(caller).step_by(concurrency).copied().collect();
        let auth = auth.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut round = 0u64;
            while Instant::now() < deadline {
                let user = mine[(round as usize) % mine.len()];
                let mut request = tonic::Request::new(sync_request(user, positions, round, book));
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
    let label = format!("ingest ({positions} {book:?} positions/side/sync, {concurrency} callers)").to_lowercase();
    report(&label, total, started.elapsed());
    if let Some(watcher) = watcher {
        println!("  watcher     {} events received on one stream of every user", watcher.await??);
    }
    Ok(())
}

/// Opens one stream of every user's events and counts the events it receives until `deadline`.
async fn watch_everyone(
    secret: &SecretString,
    channel: Channel,
    deadline: Instant,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<u64>>> {
    let auth = super::seed::bearer(secret, Uuid::new_v4(), &["trading:read:any".to_owned()])?;
    let mut request =
        tonic::Request::new(pb::WatchReconciliationEventsRequest { user_id: "-".into(), ..Default::default() });
    request.metadata_mut().insert("authorization", auth);
    let mut stream = ReconciliationServiceClient::new(channel).watch_reconciliation_events(request).await?.into_inner();
    Ok(tokio::spawn(async move {
        let mut events = 0u64;
        let until = tokio::time::Instant::from_std(deadline);
        while let Ok(message) = tokio::time::timeout_at(until, stream.message()).await {
            match message? {
                Some(pb::WatchReconciliationEventsResponse {
                    kind: Some(pb::watch_reconciliation_events_response::Kind::Event(_)),
                    ..
                }) => events += 1,
                Some(_) => {}
                None => anyhow::bail!("the watch stream ended before the run did"),
            }
        }
        Ok(events)
    }))
}
