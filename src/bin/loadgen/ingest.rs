//! The ingest benchmark: concurrent callers pushing full broker syncs.

use std::time::{Duration, Instant};

use chrono::Utc;
use secrecy::SecretString;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use trading_monitor::auth::{TokenSpec, mint_hs256};
use trading_monitor::pb;
use trading_monitor::pb::reconciliation_service_client::ReconciliationServiceClient;
use uuid::Uuid;

use crate::report::{Tally, report};

fn ts(t: chrono::DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(pb::timestamp(t))
}

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
    request(user, round, broker, platform)
}

/// One symbol and side, no identifiers known: volumes and entries scattered (deterministically per round) so
/// the nearest-first matching has real choices, and many pairs diverge in volume or entry.
fn unkeyed_request(user: Uuid, n: usize, round: u64) -> pb::SubmitBrokerSyncRequest {
    let now = Utc::now();
    let spread = |i: usize, salt: usize, modulo: usize| (i.wrapping_mul(2_654_435_761).wrapping_add(salt)) % modulo;
    let r = round as usize;
    let broker = (0..n)
        .map(|i| pb::BrokerPosition {
            position_identifier: format!("{}", 1000 + i),
            ticket: format!("{}", 500_000 + i),
            symbol: "XAUUSD".into(),
            side: pb::Side::Buy.into(),
            volume: format!("0.{:02}", 1 + spread(i, r, 99)),
            open_price: format!("{}.{:02}", 2300 + spread(i, 7 + r, 100), spread(i, 3, 100)),
            current_price: "2350.00".into(),
            open_time: ts(now - chrono::Duration::hours(2)),
            ..Default::default()
        })
        .collect();
    let platform = (0..n)
        .map(|i| pb::PlatformPosition {
            platform_trade_id: format!("T-{i}"),
            symbol: "XAUUSD".into(),
            side: pb::Side::Buy.into(),
            volume: format!("0.{:02}", 1 + spread(i, 11 + r, 99)),
            entry_price: format!("{}.{:02}", 2300 + spread(i, 13 + r, 100), spread(i, 5, 100)),
            ..Default::default()
        })
        .collect();
    request(user, round, broker, platform)
}

fn request(
    user: Uuid,
    round: u64,
    broker: Vec<pb::BrokerPosition>,
    platform: Vec<pb::PlatformPosition>,
) -> pb::SubmitBrokerSyncRequest {
    let now = Utc::now();
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

/// Runs the ingest benchmark: `concurrency` callers pushing full syncs for `duration`.
pub async fn run(
    secret: &SecretString,
    channels: &[Channel],
    duration: Duration,
    concurrency: usize,
    shape: Shape,
) -> anyhow::Result<()> {
    let Shape { users, positions, book } = shape;
    let scopes = vec!["trading:sync:write".to_owned()];
    let token = mint_hs256(
        secret,
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
    let deadline = Instant::now() + duration;
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
    Ok(())
}
