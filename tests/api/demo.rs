//! The demo (`scripts/demo.sh`): it loads its users through the public API and serves; started again on the same
//! database it must still start (its history's request ids are per run, since the payload's times are).

use std::time::Duration;

use trading_testkit::*;

#[tokio::test]
async fn the_demo_starts_twice_on_the_same_database() {
    let database = fresh_database().await;
    for run in 1..=2 {
        let mut args = serve_args(&database);
        args.server.http_listen = Some("127.0.0.1:0".parse().unwrap());
        let result = trading_monitor::demo::run(args, tokio::time::sleep(Duration::from_secs(3))).await;
        assert!(result.is_ok(), "run {run}: {result:?}");
    }
    let pool = sqlx::PgPool::connect(&url_for(&database)).await.unwrap();
    let syncs: i64 = sqlx::query_scalar("SELECT count(*) FROM syncs").fetch_one(&pool).await.unwrap();
    assert!(syncs >= 18, "two runs of 3 syncs for 3 users: {syncs}");
}
