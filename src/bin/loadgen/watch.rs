//! The watch benchmark: `users × streams_per_user` WatchReconciliationEvents streams on one replica, a writer
//! submitting `events_per_sec` failed syncs (one SYNC_FAILED event each, stamped with the send time) through
//! another, and per delivery the time from just before the write to its arrival at a watcher. Also the server's
//! CPU and memory (from /proc, given its PID) and PostgreSQL transactions per second (from pg_stat_database),
//! so runs with different numbers of streams can be compared. `poll` mode replaces the streams by dashboards
//! polling GetGuardStatus and GetReconciliationStatus every `poll_every`, for the comparison.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_stream::StreamExt;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use trading_monitor::pb;
use trading_monitor::pb::guards_service_client::GuardsServiceClient;
use trading_monitor::pb::reconciliation_service_client::ReconciliationServiceClient;
use trading_monitor::samples;

use crate::report::percentile;
use crate::seed::Users;

/// What one run measures.
pub struct Plan {
    pub label: String,
    pub streams_per_user: usize,
    pub events_per_sec: f64,
    pub duration: Duration,
    /// Poll instead of watching, this often per dashboard.
    pub poll_every: Option<Duration>,
    pub server_pid: Option<u32>,
    pub database_url: Option<String>,
}

/// Nanoseconds since the epoch (the writer and the watchers share this machine's clock).
fn now_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos()
}

fn request<T>(message: T, auth: &MetadataValue<Ascii>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", auth.clone());
    request
}

/// The server's CPU time (user + system) and resident memory, from /proc.
fn process(pid: u32) -> Option<(Duration, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    // USER_HZ is 100 on Linux.
    Some((Duration::from_millis(ticks * 10), rss_kib * 1024))
}

/// Transactions committed and rolled back in the database so far.
async fn transactions(url: &str) -> anyhow::Result<i64> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let n: i64 = sqlx::query_scalar(
        "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&mut conn)
    .await?;
    Ok(n)
}

pub async fn run(
    watchers: &[Channel],
    writer: Channel,
    users: &Users,
    writer_auth: MetadataValue<Ascii>,
    plan: Plan,
) -> anyhow::Result<()> {
    let before_open = plan.server_pid.and_then(process);
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<Duration>::new()));
    let received = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let n = users.ids.len() * plan.streams_per_user;
    let poll_calls = Arc::new(AtomicU64::new(0));
    for i in 0..n {
        let user = i % users.ids.len();
        let channel = watchers[i % watchers.len()].clone();
        let auth = users.auth[user].clone();
        match plan.poll_every {
            None => {
                let mut client = ReconciliationServiceClient::new(channel);
                let watch = pb::WatchReconciliationEventsRequest::default();
                let mut stream = client.watch_reconciliation_events(request(watch, &auth)).await?.into_inner();
                let (latencies, received) = (latencies.clone(), received.clone());
                tasks.push(tokio::spawn(async move {
                    while let Some(Ok(message)) = stream.next().await {
                        let Some(pb::watch_reconciliation_events_response::Kind::Event(event)) = message.kind else {
                            continue;
                        };
                        // The event's message is "sync failed: bench t=<nanos>".
                        let stamp = event.message.split_once("bench t=").map(|(_, t)| t);
                        let Some(sent) = stamp.and_then(|t| t.parse::<u128>().ok()) else {
                            continue;
                        };
                        let latency = Duration::from_nanos(now_nanos().saturating_sub(sent) as u64);
                        latencies.lock().unwrap().push(latency);
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            Some(every) => {
                let calls = poll_calls.clone();
                tasks.push(tokio::spawn(async move {
                    let mut guards = GuardsServiceClient::new(channel.clone());
                    let mut recon = ReconciliationServiceClient::new(channel);
                    // Spread the dashboards over the interval.
                    tokio::time::sleep(every.mul_f64((i as f64 / n as f64) % 1.0)).await;
                    let mut tick = tokio::time::interval(every);
                    loop {
                        tick.tick().await;
                        let g = guards.get_guard_status(request(pb::GetGuardStatusRequest::default(), &auth));
                        let r = recon
                            .get_reconciliation_status(request(pb::GetReconciliationStatusRequest::default(), &auth));
                        let _ = tokio::join!(g, r);
                        calls.fetch_add(2, Ordering::Relaxed);
                    }
                }));
            }
        }
    }
    // Let the streams settle (their first catch-up and heartbeat) before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let opened = plan.server_pid.and_then(process);
    let tx_before = match &plan.database_url {
        Some(url) => Some(transactions(url).await?),
        None => None,
    };
    let start = Instant::now();
    let mut recon = ReconciliationServiceClient::new(writer);
    let interval = Duration::from_secs_f64(1.0 / plan.events_per_sec.max(0.001));
    let mut tick = tokio::time::interval(interval);
    let mut writes = 0u64;
    let mut write_errors: HashMap<String, u64> = HashMap::new();
    while start.elapsed() < plan.duration {
        tick.tick().await;
        let user = users.ids[writes as usize % users.ids.len()];
        let now = chrono::Utc::now();
        let took = chrono::Duration::milliseconds(10);
        let sync = samples::failed_sync_at(user, now, took, &format!("bench t={}", now_nanos()));
        match recon.submit_broker_sync(request(sync, &writer_auth)).await {
            Ok(_) => writes += 1,
            Err(status) => *write_errors.entry(format!("{:?}", status.code())).or_default() += 1,
        }
    }
    let elapsed = start.elapsed();
    let before_drain = plan.server_pid.and_then(process);
    let tx_after = match &plan.database_url {
        Some(url) => Some(transactions(url).await?),
        None => None,
    };
    // Late deliveries.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for task in &tasks {
        task.abort();
    }

    println!(
        "{}: {} {} for {:.1} s, {} writes ({:.1}/s)",
        plan.label,
        n,
        if plan.poll_every.is_some() { "polling dashboards" } else { "streams" },
        elapsed.as_secs_f64(),
        writes,
        writes as f64 / elapsed.as_secs_f64()
    );
    for (code, count) in &write_errors {
        println!("  write error {code}: {count}");
    }
    if plan.poll_every.is_none() {
        let mut latencies = latencies.lock().unwrap().clone();
        latencies.sort();
        let expected = writes * plan.streams_per_user as u64;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "  deliveries {} of {} expected; write-to-watcher ms p50 {:.1}  p99 {:.1}  max {:.1}",
            received.load(Ordering::Relaxed),
            expected,
            ms(percentile(&latencies, 50.0)),
            ms(percentile(&latencies, 99.0)),
            ms(latencies.last().copied().unwrap_or_default())
        );
    } else {
        println!("  polling calls {:.0}/s", poll_calls.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64());
    }
    if let (Some(a), Some(b)) = (tx_before, tx_after) {
        println!("  PostgreSQL transactions {:.0}/s", (b - a) as f64 / elapsed.as_secs_f64());
    }
    if let (Some((_, rss0)), Some((cpu1, rss1)), Some((cpu2, _))) = (before_open, opened, before_drain) {
        let per_stream = if rss1 > rss0 {
            format!("{:.1} KiB per stream", (rss1 - rss0) as f64 / 1024.0 / n as f64)
        } else {
            // The allocator reused memory an earlier phase freed: only a phase that grows the process tells.
            "per stream not measurable here (memory freed by an earlier phase was reused)".to_owned()
        };
        println!(
            "  server CPU {:.2} cores; memory {:.1} MiB with the streams ({per_stream}; {:.1} MiB before)",
            (cpu2 - cpu1).as_secs_f64() / elapsed.as_secs_f64(),
            rss1 as f64 / 1048576.0,
            rss0 as f64 / 1048576.0
        );
    }
    Ok(())
}
