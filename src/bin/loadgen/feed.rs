//! A live market while the read mix runs: a quote feeder (batches of five symbols with small random moves) and
//! a sync feeder (the seeded users re-synced round-robin), each at a steady rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use secrecy::SecretString;
use tokio::sync::Semaphore;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use trading_monitor::pb;
use trading_monitor::pb::guards_service_client::GuardsServiceClient;
use trading_monitor::pb::reconciliation_service_client::ReconciliationServiceClient;
use trading_monitor::samples;
use uuid::Uuid;

use crate::seed::seed_sync;

/// How much market to feed while the mix runs.
#[derive(Debug, Clone, Copy)]
pub struct Feeding {
    pub quotes_per_sec: f64,
    pub syncs_per_sec: f64,
}

/// What the feeders did.
#[derive(Debug, Default)]
pub struct Fed {
    pub quote_batches: AtomicU64,
    pub syncs: AtomicU64,
    pub errors: AtomicU64,
}

/// A token that may write syncs and quotes.
pub fn writer_auth(secret: &SecretString) -> anyhow::Result<MetadataValue<Ascii>> {
    super::seed::bearer(secret, Uuid::new_v4(), &["trading:sync:write".to_owned()])
}

/// Runs the feeders until `stop`: `quotes_per_sec` batches and `syncs_per_sec` syncs (of users 0..users).
pub fn start(
    channel: Channel,
    auth: MetadataValue<Ascii>,
    quotes_per_sec: f64,
    syncs_per_sec: f64,
    users: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<Fed>, Vec<tokio::task::JoinHandle<()>>) {
    let fed = Arc::new(Fed::default());
    let mut tasks = Vec::new();
    // Up to 32 calls in flight, so a slow call does not lower the rate.
    let in_flight = Arc::new(Semaphore::new(32));
    if quotes_per_sec > 0.0 {
        let (channel, auth, fed, stop, in_flight) =
            (channel.clone(), auth.clone(), fed.clone(), stop.clone(), in_flight.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / quotes_per_sec));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut step: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                step += 1;
                let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
                let (mut client, auth, fed) = (GuardsServiceClient::new(channel.clone()), auth.clone(), fed.clone());
                tokio::spawn(async move {
                    let mut request = tonic::Request::new(quote_batch(step));
                    request.metadata_mut().insert("authorization", auth);
                    match client.submit_quotes(request).await {
                        Ok(_) => fed.quote_batches.fetch_add(1, Ordering::Relaxed),
                        Err(_) => fed.errors.fetch_add(1, Ordering::Relaxed),
                    };
                    drop(permit);
                });
            }
        }));
    }
    if syncs_per_sec > 0.0 && users > 0 {
        let (fed, stop) = (fed.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / syncs_per_sec));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut next = 0usize;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let user = next % users;
                next += 1;
                let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
                let (mut client, auth, fed) =
                    (ReconciliationServiceClient::new(channel.clone()), auth.clone(), fed.clone());
                tokio::spawn(async move {
                    let mut request = tonic::Request::new(seed_sync(user));
                    request.metadata_mut().insert("authorization", auth);
                    match client.submit_broker_sync(request).await {
                        Ok(_) => fed.syncs.fetch_add(1, Ordering::Relaxed),
                        Err(_) => fed.errors.fetch_add(1, Ordering::Relaxed),
                    };
                    drop(permit);
                });
            }
        }));
    }
    (fed, tasks)
}

/// Five symbols around fixed levels, moving by a few ticks (never enough to raise an alert).
fn quote_batch(step: u64) -> pb::SubmitQuotesRequest {
    let now = Utc::now();
    let wiggle = |n: u64| ((step.wrapping_mul(2_654_435_761).wrapping_add(n * 97)) % 21) as i64 - 10;
    let levels: [(&str, i64, u32, i64); 5] = [
        ("XAUUSD", 235_000, 2, 50),
        ("EURUSD", 108_500, 5, 2),
        ("GBPUSD", 126_500, 5, 2),
        ("USDJPY", 151_200, 3, 3),
        ("BTCUSD", 6_500_000, 2, 1_000),
    ];
    let quotes = levels
        .iter()
        .enumerate()
        .map(|(n, (symbol, mid, scale, spread))| {
            let bid = mid + wiggle(n as u64) * spread / 2;
            let decimal = |v: i64| rust_decimal::Decimal::new(v, *scale).to_string();
            samples::quote_at(symbol, &decimal(bid), &decimal(bid + spread), now)
        })
        .collect();
    samples::quotes(quotes)
}
