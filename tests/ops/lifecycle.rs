//! The service's life under process faults: PostgreSQL stopped and started again (a cluster of the test's own),
//! and SIGTERM to the real binary with a watch open.

use std::time::Duration;

use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;
use trading_monitor::pb;
use trading_testkit::*;
use uuid::Uuid;

/// Issue 11: once the service knows PostgreSQL is unreachable, calls that need it fail with UNAVAILABLE at once
/// (not after the pool's 3 s acquire timeout), and everything recovers by itself when it is back.
#[tokio::test]
async fn while_postgres_is_down_calls_that_need_it_fail_fast_and_recover_by_themselves() {
    let pg = PgCluster::start();
    let database = "trading_monitor_fail_fast";
    let app = pg.serve(database).await;
    wait_for(&app, ServingStatus::Serving).await;
    let user = Uuid::new_v4();
    app.submit(sync(user, "1000", vec![], vec![])).await.unwrap();

    pg.kill();
    wait_for(&app, ServingStatus::NotServing).await;
    let mut slowest = Duration::ZERO;
    let retried = sync(user, "1100", vec![], vec![]);
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let status = app.submit(retried.clone()).await.unwrap_err();
        slowest = slowest.max(started.elapsed());
        assert_eq!(code_and_reason(&status), (Code::Unavailable, "DATABASE_UNAVAILABLE".into()));
        assert!(status.get_details_retry_info().is_some_and(|r| r.retry_delay.is_some()));
    }
    println!("while PostgreSQL was down, the slowest of 5 writes failed after {slowest:?}");
    assert!(slowest < Duration::from_millis(500), "a write took {slowest:?} to fail");

    pg.resume();
    // The same request succeeds by itself once PostgreSQL is back, and health says so.
    let mut recovered = None;
    for _ in 0..100 {
        if let Ok(response) = app.submit(retried.clone()).await {
            recovered = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered.is_some(), "writes never recovered");
    wait_for(&app, ServingStatus::Serving).await;
    assert_eq!(app.status(user).await.total_syncs, 2);
}

/// Issue 11: SIGTERM to the real process with a watch open: health goes NOT_SERVING, the stream ends
/// UNAVAILABLE (SHUTTING_DOWN) so its client resumes elsewhere, and the process exits 0 within the grace period.
#[tokio::test]
async fn sigterm_ends_open_streams_unavailable_and_the_process_exits_0() {
    use tokio_stream::StreamExt;
    let database = fresh_database().await;
    let port = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_trading-monitor"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--database-url", &url_for(&database)])
        .args(["--jwt-secret", SECRET, "--shutdown-grace", "3s", "--health-interval", "200ms"])
        .args(["--cache-key-prefix", &format!("trading:v1:test-{}", Uuid::new_v4().simple())])
        .env("RUST_LOG", "warn")
        .spawn()
        .map(KillOnDrop)
        .expect("the server binary runs");
    let channel = until_serving(port).await;
    let mut client = pb::reconciliation_service_client::ReconciliationServiceClient::new(channel);
    let request = authed(pb::WatchReconciliationEventsRequest::default(), &token(Uuid::new_v4(), &[]));
    let mut stream = client.watch_reconciliation_events(request).await.unwrap().into_inner();
    assert!(stream.next().await.is_some_and(|m| m.is_ok()), "the first heartbeat");

    let signalled = std::time::Instant::now();
    let status = std::process::Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("the stream ends");
    let ended = ended.expect("with a status").expect_err("an error status");
    assert_eq!(code_and_reason(&ended), (Code::Unavailable, "SHUTTING_DOWN".into()));
    let exit = loop {
        if let Some(exit) = child.0.try_wait().unwrap() {
            break exit;
        }
        assert!(signalled.elapsed() < Duration::from_secs(6), "still running after the grace period");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "exit status {exit:?}");
    println!("after SIGTERM: stream ended UNAVAILABLE, process exited 0 in {:?}", signalled.elapsed());
    drop_database(&database).await;
}
