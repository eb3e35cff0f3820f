//! The read benchmark: the prototype's 5:3:2 read mix over many concurrent streams (users seeded by `seed`),
//! and the cold-key stampede. Cache effectiveness comes from the server's `/metrics` (scraped before/after).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic_types::StatusExt;
use trading_monitor::pb;
use trading_monitor::pb::guards_service_client::GuardsServiceClient;
use trading_monitor::pb::positions_service_client::PositionsServiceClient;
use trading_monitor::pb::reconciliation_service_client::ReconciliationServiceClient;

use crate::report::{Tally, report};
use crate::seed::{Users, seed_sync};

/// A small xorshift generator: the mix needs cheap, reproducible choices, not cryptographic randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The cache counters, summed over RPCs, from a Prometheus text page.
pub async fn scrape(address: &str) -> anyhow::Result<HashMap<String, f64>> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream
        .write_all(format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    let mut totals = HashMap::new();
    for line in body.lines().filter(|l| l.starts_with("trading_monitor_")) {
        let (name, value) = line.rsplit_once(' ').unwrap_or((line, "0"));
        let name = name.split('{').next().unwrap_or(name).to_owned();
        *totals.entry(name).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    Ok(totals)
}

fn delta(after: &HashMap<String, f64>, before: &HashMap<String, f64>, name: &str) -> f64 {
    after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
}

/// Runs the 5:3:2 mix (GetReconciliationStatus : ListOpenPositions : GetGuardStatus) for `duration` with
/// `concurrency` callers spread over `channels`, each request for a random user with that user's token.
pub async fn mix(
    label: &str,
    channels: &[Channel],
    users: &Users,
    duration: Duration,
    concurrency: usize,
    metrics: Option<&str>,
    market: Option<(crate::feed::Feeding, MetadataValue<Ascii>)>,
) -> anyhow::Result<()> {
    let before = match metrics {
        Some(address) => Some(scrape(address).await?),
        None => None,
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeders = market.map(|(feeding, auth)| {
        let channel = channels[0].clone();
        crate::feed::start(channel, auth, feeding.quotes_per_sec, feeding.syncs_per_sec, users.ids.len(), stop.clone())
    });
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for caller in 0..concurrency {
        let channel = channels[caller % channels.len()].clone();
        let (ids, auth) = (users.ids.clone(), users.auth.clone());
        tasks.push(tokio::spawn(async move {
            let mut recon = ReconciliationServiceClient::new(channel.clone());
            let mut positions = PositionsServiceClient::new(channel.clone());
            let mut guards = GuardsServiceClient::new(channel);
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (caller as u64 + 1));
            let mut tally = Tally::default();
            while Instant::now() < deadline {
                let u = (rng.next() % ids.len() as u64) as usize;
                let op = rng.next() % 10;
                let sent = Instant::now();
                let result = if op < 5 {
                    let mut r = tonic::Request::new(pb::GetReconciliationStatusRequest::default());
                    r.metadata_mut().insert("authorization", auth[u].clone());
                    recon.get_reconciliation_status(r).await.map(|_| ())
                } else if op < 8 {
                    let mut r = tonic::Request::new(pb::ListOpenPositionsRequest::default());
                    r.metadata_mut().insert("authorization", auth[u].clone());
                    positions.list_open_positions(r).await.map(|_| ())
                } else {
                    let mut r = tonic::Request::new(pb::GetGuardStatusRequest::default());
                    r.metadata_mut().insert("authorization", auth[u].clone());
                    guards.get_guard_status(r).await.map(|_| ())
                };
                match result {
                    Ok(()) => tally.latencies.push(sent.elapsed()),
                    Err(status) => {
                        *tally.errors.entry(format!("{:?}", status.code())).or_default() += 1;
                        // A well-behaved client: refused for load, it waits as long as the server asks.
                        if status.code() == tonic::Code::ResourceExhausted
                            && let Some(wait) = status.get_details_retry_info().and_then(|r| r.retry_delay)
                        {
                            tokio::time::sleep(wait).await;
                        }
                    }
                }
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        total.merge(task.await?);
    }
    let elapsed = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    report(&format!("{label} (5:3:2 mix, {concurrency} streams, {} users)", users.ids.len()), total, elapsed);
    if let Some((fed, tasks)) = feeders {
        for task in tasks {
            task.await?;
        }
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        println!(
            "  market      {} quote batches ({:.1}/s), {} syncs ({:.1}/s), {} failed",
            load(&fed.quote_batches),
            load(&fed.quote_batches) as f64 / elapsed.as_secs_f64(),
            load(&fed.syncs),
            load(&fed.syncs) as f64 / elapsed.as_secs_f64(),
            load(&fed.errors)
        );
    }
    if let (Some(address), Some(before)) = (metrics, before) {
        let after = scrape(address).await?;
        let hits = delta(&after, &before, "trading_monitor_cache_hits_total");
        let served = hits
            + delta(&after, &before, "trading_monitor_cache_misses_total")
            + delta(&after, &before, "trading_monitor_cache_stale_total")
            + delta(&after, &before, "trading_monitor_cache_bypass_total");
        let pg = delta(&after, &before, "trading_monitor_pg_queries_total");
        // Cached per user: the status (one size for the mix's default limit) and the book (positions, guards).
        let distinct = 2 * users.ids.len();
        println!(
            "  cache       hit rate {:.1} %  ({} hits, {} L1)  redis errors {}",
            if served > 0.0 { 100.0 * hits / served } else { 0.0 },
            hits,
            delta(&after, &before, "trading_monitor_cache_l1_hits_total"),
            delta(&after, &before, "trading_monitor_cache_redis_errors_total"),
        );
        // The bound without writes: distinct keys x (run time / TTL) + distinct keys, for the default 5 s TTL;
        // each sync fed adds up to two loads (its user's two keys).
        println!(
            "  postgres    {pg} loads ({} refreshes ahead); bound for {distinct} distinct keys over {:.1} s at a 5 s TTL: {:.0}",
            delta(&after, &before, "trading_monitor_cache_refreshes_total"),
            elapsed.as_secs_f64(),
            distinct as f64 * (elapsed.as_secs_f64() / 5.0) + distinct as f64
        );
    }
    Ok(())
}

/// Fires `n` concurrent requests for one cold key (user 0's status with 100 recent events, which the mix never
/// asks for) and prints how many PostgreSQL loads they caused.
pub async fn stampede(channels: &[Channel], users: &Users, n: usize, metrics: &str) -> anyhow::Result<()> {
    let before = scrape(metrics).await?;
    let limit = 100;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let mut client = ReconciliationServiceClient::new(channels[i % channels.len()].clone());
        let auth = users.auth[0].clone();
        tasks.push(tokio::spawn(async move {
            let mut r = tonic::Request::new(pb::GetReconciliationStatusRequest {
                user_id: String::new(),
                recent_events_limit: limit,
            });
            r.metadata_mut().insert("authorization", auth);
            client.get_reconciliation_status(r).await.map(|_| ())
        }));
    }
    let mut failed = 0;
    for task in tasks {
        if task.await?.is_err() {
            failed += 1;
        }
    }
    let after = scrape(metrics).await?;
    println!(
        "stampede: {n} concurrent requests for one cold key in {:.1} ms: {failed} failed, {} PostgreSQL loads",
        started.elapsed().as_secs_f64() * 1000.0,
        delta(&after, &before, "trading_monitor_pg_queries_total")
    );
    Ok(())
}

/// Cross-replica invalidation latency: for each sample, warm user `i`'s status on `reader` (a hit), submit a
/// sync on `writer`, and time how long `reader` takes to show it.
pub async fn replica_latency(
    reader: Channel,
    writer: Channel,
    users: &Users,
    samples: usize,
    auth: MetadataValue<Ascii>,
) -> anyhow::Result<()> {
    let mut recon = ReconciliationServiceClient::new(reader);
    let mut submit = ReconciliationServiceClient::new(writer);
    let status = |u: usize| {
        let mut r = tonic::Request::new(pb::GetReconciliationStatusRequest::default());
        r.metadata_mut().insert("authorization", users.auth[u].clone());
        r
    };
    let mut latencies = Vec::with_capacity(samples);
    for sample in 0..samples {
        let u = sample % users.ids.len();
        let before = recon.get_reconciliation_status(status(u)).await?.into_inner().total_syncs;
        recon.get_reconciliation_status(status(u)).await?; // now cached
        let mut request = tonic::Request::new(seed_sync(u));
        request.metadata_mut().insert("authorization", auth.clone());
        submit.submit_broker_sync(request).await?;
        let acknowledged = Instant::now();
        loop {
            if recon.get_reconciliation_status(status(u)).await?.into_inner().total_syncs > before {
                latencies.push(acknowledged.elapsed());
                break;
            }
            anyhow::ensure!(acknowledged.elapsed() < Duration::from_secs(10), "a write was never seen");
        }
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "cross-replica invalidation (write acknowledged by one replica -> the other's next read shows it), {samples} samples:"
    );
    println!(
        "  latency ms  p50 {:.2}  p99 {:.2}  max {:.2}",
        ms(crate::report::percentile(&latencies, 50.0)),
        ms(crate::report::percentile(&latencies, 99.0)),
        ms(latencies.last().copied().unwrap_or_default())
    );
    Ok(())
}
