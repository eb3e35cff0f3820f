//! Restarts under load (issue 11): PostgreSQL killed and restarted while syncs and reads run, on a cluster of the
//! test's own; Redis killed and restarted under reads. Nothing acknowledged is lost, failed calls say UNAVAILABLE
//! and succeed on retry, and everything recovers by itself. The figures are printed (`--nocapture`) and
//! recorded in docs/reliability.md.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::Code;
use trading_monitor::pb;
use uuid::Uuid;

use trading_testkit::*;

/// What a group of callers saw.
#[derive(Default)]
struct Seen {
    ok: u64,
    failed: std::collections::BTreeMap<String, u64>,
    latencies: Vec<Duration>,
    /// The longest a single call took to fail.
    slowest_failure: Duration,
}

impl Seen {
    fn record(&mut self, took: Duration, result: Result<(), tonic::Status>) {
        self.latencies.push(took);
        match result {
            Ok(()) => self.ok += 1,
            Err(status) => {
                *self.failed.entry(format!("{:?}", status.code())).or_default() += 1;
                self.slowest_failure = self.slowest_failure.max(took);
            }
        }
    }

    fn p99(&mut self) -> Duration {
        self.latencies.sort();
        self.latencies
            .get(self.latencies.len().saturating_sub(1).min(self.latencies.len() * 99 / 100))
            .copied()
            .unwrap_or_default()
    }
}

#[tokio::test]
async fn postgres_restarted_under_load_loses_no_acknowledged_sync_and_everything_recovers() {
    let pg = PgCluster::start();
    let database = "trading_monitor_restart";
    let app = Arc::new(pg.serve(database).await);
    until_hearing(&app).await;
    let users: Vec<Uuid> = (0..12).map(|_| Uuid::new_v4()).collect();
    // Quiet users are read but never written during the run: their cached status stays valid.
    let quiet: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    for user in users.iter().chain(&quiet) {
        app.submit(sync(*user, "10000", vec![], vec![])).await.unwrap();
    }

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<Uuid>::new()));
    let writes = Arc::new(Mutex::new(Seen::default()));
    let reads = Arc::new(Mutex::new(Seen::default()));
    let quiet_reads = Arc::new(Mutex::new(Seen::default()));
    let mut tasks = Vec::new();
    // 6 writers, each retrying a failed sync with the same request id until it is acknowledged.
    for w in 0..6 {
        let (app, stop, acked, writes, users) =
            (app.clone(), stop.clone(), acked.clone(), writes.clone(), users.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let user = users[(w * 2 + n) % users.len()];
                n += 1;
                let request = sync(user, &format!("{}", 10000 - n), vec![], vec![]);
                let request_id: Uuid = request.request_id.parse().unwrap();
                loop {
                    let started = Instant::now();
                    let result = app.submit(request.clone()).await.map(|_| ());
                    let failed = result.as_ref().err().map(|s| s.code());
                    writes.lock().unwrap().record(started.elapsed(), result);
                    match failed {
                        None => {
                            acked.lock().unwrap().push(request_id);
                            break;
                        }
                        Some(Code::Unavailable) => tokio::time::sleep(Duration::from_millis(100)).await,
                        Some(other) => panic!("a write failed with {other:?}, not UNAVAILABLE"),
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    // Readers of the (cached) status: of the users being written, and of the quiet ones.
    for (r, (seen, whom)) in
        [(reads.clone(), users.clone()), (quiet_reads.clone(), quiet.clone())].into_iter().enumerate()
    {
        let (app, stop, reads, users) = (app.clone(), stop.clone(), seen, whom);
        tasks.push(tokio::spawn(async move {
            let mut n = r;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let user = users[n % users.len()];
                n += 1;
                let request = pb::GetReconciliationStatusRequest::default();
                let started = Instant::now();
                let result =
                    app.recon().get_reconciliation_status(authed(request, &token(user, &[]))).await.map(|_| ());
                reads.lock().unwrap().record(started.elapsed(), result);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(1500)).await;
    pg.kill();
    let down_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    pg.resume();
    let up_at = Instant::now();
    // Until a write succeeds again.
    let recovered = loop {
        if app.submit(sync(users[0], "9000", vec![], vec![])).await.is_ok() {
            break up_at.elapsed();
        }
        assert!(up_at.elapsed() < Duration::from_secs(10), "writes never recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }

    // Every acknowledged sync is stored.
    let acked = acked.lock().unwrap().clone();
    let pool = sqlx::PgPool::connect(&pg.url(database)).await.unwrap();
    let stored: Vec<Uuid> = sqlx::query_scalar("SELECT request_id FROM syncs WHERE request_id = ANY($1)")
        .bind(&acked)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), acked.len(), "acknowledged syncs missing from the database");
    let mut writes = std::mem::take(&mut *writes.lock().unwrap());
    let mut reads = std::mem::take(&mut *reads.lock().unwrap());
    let mut quiet_reads = std::mem::take(&mut *quiet_reads.lock().unwrap());
    let (write_p99, read_p99, quiet_p99) = (writes.p99(), reads.p99(), quiet_reads.p99());
    println!(
        "PostgreSQL killed for {:?} under 6 writers and 2 readers (12 written users, 4 quiet ones): {} writes acknowledged (all stored), failed \
         attempts {:?} (slowest failure {:?}), write p99 {:?}; reads of written users ok {}, failed {:?}, p99 \
         {:?}; reads of quiet users ok {}, failed {:?}, p99 {:?}; writes recovered {:?} after restart",
        up_at - down_at,
        acked.len(),
        writes.failed,
        writes.slowest_failure,
        write_p99,
        reads.ok,
        reads.failed,
        read_p99,
        quiet_reads.ok,
        quiet_reads.failed,
        quiet_p99,
        recovered
    );
    // A quiet user's cached status stays valid: it is served (stale, once past its TTL) throughout.
    assert!(quiet_reads.failed.is_empty(), "reads of quiet users failed: {:?}", quiet_reads.failed);
    // Not the pool's 3 s acquire timeout: the gate releases calls waiting on PostgreSQL when it closes.
    assert!(writes.slowest_failure < Duration::from_secs(1), "a write took {:?} to fail", writes.slowest_failure);
    assert!(writes.failed.keys().all(|code| code == "Unavailable"));
}

/// A watch request from now with a one-second heartbeat (so a stream notices a change of database soon).
fn watch_from(resume_token: &str) -> pb::WatchReconciliationEventsRequest {
    pb::WatchReconciliationEventsRequest {
        resume_token: resume_token.into(),
        heartbeat_interval: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
        ..Default::default()
    }
}

/// Retries `call` while PostgreSQL is coming back (UNAVAILABLE), for at most 30 s.
async fn when_back<T, F, Fut>(mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match call().await {
            Err(status) if status.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

#[tokio::test]
async fn after_a_failover_to_a_new_timeline_streams_end_and_tokens_from_before_are_refused() {
    let pg = PgCluster::start();
    let app = pg.serve("failover").await;
    let user = Uuid::new_v4();
    let mine = token(user, &[]);
    let mut stream = app.recon().watch_reconciliation_events(authed(watch_from(""), &mine)).await.unwrap().into_inner();
    app.submit(sync(user, "1000", vec![], vec![])).await.unwrap();
    // The token of a message after the event: a position on the old timeline.
    let before = loop {
        let message = stream.message().await.unwrap().expect("the stream stays open");
        if matches!(message.kind, Some(pb::watch_reconciliation_events_response::Kind::Event(_))) {
            break message.resume_token;
        }
    };

    // The standby is promoted: same cluster, same database, a new timeline. Transactions the old primary
    // committed last may be missing here and their ids handed out again, so no position from before holds.
    pg.fail_over();
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the stream ended without saying why"),
                Err(status) => break status,
            }
        }
    })
    .await
    .expect("the stream went on after the failover as if nothing happened");
    assert_eq!(code_and_reason(&ended), (Code::FailedPrecondition, "RESUME_TOKEN_INVALID".into()), "{ended:?}");
    assert_eq!(error_info(&ended).2["why"], "other_database");

    let watch = |from: String| {
        let (mut client, mine) = (app.recon(), mine.clone());
        async move { client.watch_reconciliation_events(authed(watch_from(&from), &mine)).await }
    };
    let refused = when_back(|| watch(before.clone())).await.map(|_| ()).unwrap_err();
    assert_eq!(code_and_reason(&refused), (Code::FailedPrecondition, "RESUME_TOKEN_INVALID".into()), "{refused:?}");
    // Watching again from now works, and delivers what is written after.
    let mut again = when_back(|| watch(String::new())).await.unwrap().into_inner();
    when_back(|| app.submit(sync(user, "1100", vec![], vec![]))).await.unwrap();
    loop {
        let message = again.message().await.unwrap().expect("the new stream stays open");
        if matches!(message.kind, Some(pb::watch_reconciliation_events_response::Kind::Event(_))) {
            break;
        }
    }
}
