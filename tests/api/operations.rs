//! Operations: health per service (and NOT_SERVING without PostgreSQL), reflection, the decode limit,
//! graceful shutdown, rate limits, the admin listener, per-connection limits (process faults: `ops`).

use std::time::Duration;

use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::{v1, v1alpha};
use tonic_types::StatusExt;
use trading_monitor::pb;
use uuid::Uuid;

use trading_testkit::*;

#[tokio::test]
async fn every_service_is_serving_while_postgres_answers() {
    let app = spawn_app().await;
    wait_for(&app, ServingStatus::Serving).await;
}

#[tokio::test]
async fn without_postgres_health_is_not_serving_and_reads_are_unavailable_with_a_retry_hint() {
    let mut args = serve_args("unused");
    args.database.database_url = "postgres://postgres@127.0.0.1:1/nothing?sslmode=disable".into();
    args.database.db_acquire_timeout = Duration::from_millis(300);
    args.server.skip_migrations = true;
    // No database was created, so the harness's cleanup has nothing to drop.
    let app = spawn_with_args(args, format!("tm_test_absent_{}", Uuid::new_v4().simple())).await;

    for service in SERVICES {
        assert_eq!(health(&app, service).await, ServingStatus::NotServing, "{service}");
    }
    let request = pb::GetReconciliationStatusRequest::default();
    let status = app.recon().get_reconciliation_status(authed(request, &token(Uuid::new_v4(), &[]))).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.get_details_retry_info().is_some(), "UNAVAILABLE carries google.rpc.RetryInfo");
    assert!(!status.message().contains("127.0.0.1:1"), "no connection details leak: {}", status.message());
}

async fn reflected_services_v1(app: &TestApp) -> Vec<String> {
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut stream = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let response = stream.message().await.unwrap().unwrap();
    match response.message_response {
        Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection response {other:?}"),
    }
}

async fn reflected_services_v1alpha(app: &TestApp) -> Vec<String> {
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut stream = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let response = stream.message().await.unwrap().unwrap();
    match response.message_response {
        Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection response {other:?}"),
    }
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_the_three_services_without_a_token() {
    let app = spawn_app().await;
    for services in [reflected_services_v1(&app).await, reflected_services_v1alpha(&app).await] {
        for expected in ["trading.v1.ReconciliationService", "trading.v1.PositionsService", "trading.v1.GuardsService"]
        {
            assert!(services.iter().any(|s| s == expected), "{expected} missing from {services:?}");
        }
    }
}

#[tokio::test]
async fn a_message_over_the_decode_limit_is_rejected_before_the_handler() {
    let app = spawn_app_with(|args| args.server.max_request_bytes = 1024).await;
    let batch = quotes(vec![quote("XAUUSD", "2000", "2001"); 100]);
    let status = app.quote(batch).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM latest_quotes").fetch_one(&app.pool).await.unwrap();
    assert_eq!(count, 0);
}

#[tokio::test]
async fn shutdown_stops_the_server_within_the_grace_period() {
    let mut app = spawn_app().await;
    wait_for(&app, ServingStatus::Serving).await;
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), app.stop()).await.expect("stops in time").expect("clean stop");
    assert!(started.elapsed() < Duration::from_secs(3));
    let after = HealthClient::new(app.channel.clone()).check(HealthCheckRequest { service: String::new() }).await;
    assert!(after.is_err(), "no longer accepting calls");
}

/// Issue 11: a caller over its rate is refused at once with RATE_LIMITED and a retry delay; other callers are
/// not affected; service tokens have their own rate; over REST it is 429 with Retry-After.
#[tokio::test]
async fn a_caller_over_its_rate_is_refused_at_once_with_a_retry_delay() {
    let app = spawn_app_with(|args| {
        args.server.rate_limit_per_user = 2;
        args.server.rate_limit_user_burst = 3;
        args.server.rate_limit_per_service = 1;
        args.server.rate_limit_service_burst = 5;
        args.server.http_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let read = |user: Uuid| {
        let mut client = app.guards();
        async move { client.get_guard_status(authed(pb::GetGuardStatusRequest::default(), &token(user, &[]))).await }
    };
    for _ in 0..3 {
        read(alice).await.unwrap();
    }
    let started = std::time::Instant::now();
    let refused = read(alice).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(200), "answered at once");
    assert_eq!(code_and_reason(&refused), (Code::ResourceExhausted, "RATE_LIMITED".into()));
    let wait = refused.get_details_retry_info().and_then(|r| r.retry_delay).expect("a retry delay");
    assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500), "{wait:?}");
    assert_eq!(error_info(&refused).2["per_second"], "2");
    read(bob).await.expect("another caller is not limited");

    // A service token: its own, larger bucket.
    let backend = writer();
    for _ in 0..5 {
        app.guards()
            .get_guard_status(authed(pb::GetGuardStatusRequest { user_id: alice.to_string() }, &backend))
            .await
            .unwrap();
    }
    let refused = app
        .guards()
        .get_guard_status(authed(pb::GetGuardStatusRequest { user_id: alice.to_string() }, &backend))
        .await
        .unwrap_err();
    assert_eq!(code_and_reason(&refused), (Code::ResourceExhausted, "RATE_LIMITED".into()));

    // Over REST, after the delay it passes again; over the rate it is 429 with Retry-After.
    tokio::time::sleep(wait).await;
    read(alice).await.expect("admitted again after the retry delay");
    let client = reqwest::Client::new();
    let url = format!("http://{}/v1/users/me/guardStatus", app.http.unwrap());
    let mut last = None;
    for _ in 0..5 {
        last = Some(client.get(&url).bearer_auth(token(alice, &[])).send().await.unwrap());
    }
    let last = last.unwrap();
    assert_eq!(last.status(), reqwest::StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(last.headers()["retry-after"], "1");
}

/// The admin listener's `/metrics` as a map from series (name and labels, as printed) to value.
async fn scrape(admin: std::net::SocketAddr) -> std::collections::HashMap<String, f64> {
    let body = reqwest::get(format!("http://{admin}/metrics")).await.unwrap().text().await.unwrap();
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            l.rsplit_once(' ').map(|(series, value)| (series.to_owned(), value.parse().unwrap_or(f64::NAN)))
        })
        .collect()
}

/// Issue 11: after a known set of calls, each counter moved by exactly the expected amount; `/livez` and
/// `/readyz` answer.
#[tokio::test]
async fn the_admin_listener_counts_calls_and_domain_events_exactly_and_says_ready() {
    let app = spawn_app_with(|args| args.server.admin_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let admin = app.admin.unwrap();
    wait_for(&app, ServingStatus::Serving).await;
    // Reads bypass the cache until the replica hears its own invalidations; the counts below assume it does.
    until_hearing(&app).await;
    for (path, expected) in [("/livez", 200), ("/readyz", 200)] {
        let response = reqwest::get(format!("http://{admin}{path}")).await.unwrap();
        assert_eq!(response.status().as_u16(), expected, "{path}");
    }
    // Held symbols are quoted, so the clock records nothing stale.
    app.quote(quotes(vec![quote("XAUUSD", "2000", "2000.10")])).await.unwrap();
    let before = scrape(admin).await;
    let user = Uuid::new_v4();
    let gold = || vec![broker("1", "XAUUSD", pb::Side::Buy, "1", "2000", "2000")];
    app.submit(sync(user, "10000", gold(), vec![])).await.unwrap(); // completed; a broker_only divergence
    app.submit(sync(user, "7000", gold(), vec![])).await.unwrap(); // completed; CRITICAL
    app.submit(failed_sync(user, "terminal offline")).await.unwrap(); // failed
    app.quote(quotes(vec![quote("XAUUSD", "2000", "2030")])).await.unwrap(); // a critical wide spread
    for _ in 0..3 {
        app.guard_status(user).await;
    }
    let unauthenticated =
        app.guards().get_guard_status(tonic::Request::new(pb::GetGuardStatusRequest::default())).await.unwrap_err();
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);
    // Made-up methods are all counted as one `_OTHER` series, not a series per path a caller invents.
    let made_up = [Uuid::new_v4().simple().to_string(), Uuid::new_v4().simple().to_string()];
    for path in [format!("/trading.v1.GuardsService/No{}", made_up[0]), format!("/x{}.Y/Z", made_up[1])] {
        let mut grpc = tonic::client::Grpc::new(app.channel.clone());
        grpc.ready().await.unwrap();
        let codec = tonic_prost::ProstCodec::<pb::GetGuardStatusRequest, pb::GetGuardStatusResponse>::default();
        let request = authed(pb::GetGuardStatusRequest::default(), &token(user, &[]));
        let path = http::uri::PathAndQuery::try_from(path).unwrap();
        assert_eq!(grpc.unary(request, path, codec).await.unwrap_err().code(), Code::Unimplemented);
    }
    let after = scrape(admin).await;
    for id in &made_up {
        assert!(!after.keys().any(|series| series.contains(id.as_str())), "a series for a made-up method ({id})");
    }

    let moved = |series: &str| after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0);
    let expected = [
        (r#"mt5_position_sync_total{result="completed"}"#, 2.0),
        (r#"mt5_position_sync_total{result="failed"}"#, 1.0),
        (r#"reconciliation_divergences_total{reason="broker_only"}"#, 1.0),
        (r#"drawdown_guard_triggers_total{level="critical"}"#, 1.0),
        (r#"market_guard_alerts_total{kind="wide_spread",severity="critical"}"#, 1.0),
        ("reconciliation_latency_seconds_count", 3.0),
        (r#"trading_monitor_rpc_requests_total{method="trading.v1.GuardsService/GetGuardStatus",code="Ok"}"#, 3.0),
        (
            r#"trading_monitor_rpc_requests_total{method="trading.v1.GuardsService/GetGuardStatus",code="Unauthenticated"}"#,
            1.0,
        ),
        (
            r#"trading_monitor_rpc_requests_total{method="trading.v1.ReconciliationService/SubmitBrokerSync",code="Ok"}"#,
            3.0,
        ),
        (r#"trading_monitor_rpc_duration_seconds_count{method="trading.v1.GuardsService/GetGuardStatus"}"#, 4.0),
        (r#"trading_monitor_rpc_requests_total{method="_OTHER",code="Unimplemented"}"#, 2.0),
        (r#"trading_monitor_pg_queries_total{rpc="GetGuardStatus"}"#, 1.0),
        (r#"trading_monitor_cache_misses_total{rpc="GetGuardStatus"}"#, 1.0),
        (r#"trading_monitor_cache_hits_total{rpc="GetGuardStatus"}"#, 2.0),
    ];
    for (series, delta) in expected {
        assert_eq!(moved(series), delta, "{series}");
    }
    assert!(after.contains_key(r#"trading_monitor_pg_pool_connections{state="idle"}"#), "{after:?}");
    assert_eq!(after["trading_monitor_pg_pool_max_connections"], 16.0);
}

/// Issue 18: `/metrics` shows the watch feed's delivery lag: how long events took to reach this replica's
/// streams, and what the feed waits for.
#[tokio::test]
async fn the_metrics_show_the_watch_feeds_delivery_lag() {
    let app = spawn_app_with(|args| args.server.admin_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let admin = app.admin.unwrap();
    let user = Uuid::new_v4();
    let request = pb::WatchReconciliationEventsRequest::default();
    let mut stream =
        app.recon().watch_reconciliation_events(authed(request, &token(user, &[]))).await.unwrap().into_inner();
    app.submit(sync(user, "1000", vec![], vec![])).await.unwrap();
    loop {
        let message = stream.message().await.unwrap().expect("the stream stays open");
        if matches!(message.kind, Some(pb::watch_reconciliation_events_response::Kind::Event(_))) {
            break;
        }
    }
    let metrics = scrape(admin).await;
    let delivered = metrics.get("trading_monitor_feed_delivery_seconds_count").copied().unwrap_or(0.0);
    assert!(delivered >= 1.0, "the event delivered is counted: {delivered}");
    assert!(metrics["trading_monitor_feed_delivery_seconds_sum"] >= 0.0);
    assert!(metrics.contains_key("trading_monitor_feed_oldest_owed_seconds"), "{metrics:?}");
}

/// Issue 11: per-connection stream limit (SETTINGS_MAX_CONCURRENT_STREAMS) and the metadata size limit.
#[tokio::test]
async fn a_connection_holds_at_most_its_streams_and_oversized_metadata_is_refused() {
    let app = spawn_app_with(|args| {
        args.server.max_streams_per_connection = 2;
        args.server.max_metadata_bytes = 8 * 1024;
    })
    .await;
    let user = Uuid::new_v4();
    let mine = token(user, &[]);
    // One connection: two watches take both of its streams.
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr)).unwrap().connect().await.unwrap();
    let watch = |channel: tonic::transport::Channel| {
        let mine = mine.clone();
        async move {
            let mut client = pb::reconciliation_service_client::ReconciliationServiceClient::new(channel);
            client.watch_reconciliation_events(authed(pb::WatchReconciliationEventsRequest::default(), &mine)).await
        }
    };
    let first = watch(channel.clone()).await.unwrap();
    let _second = watch(channel.clone()).await.unwrap();
    // A third call on the same connection waits for a free stream...
    let mut guards = pb::guards_service_client::GuardsServiceClient::new(channel.clone());
    let third = tokio::time::timeout(
        Duration::from_millis(800),
        guards.get_guard_status(authed(pb::GetGuardStatusRequest::default(), &mine)),
    )
    .await;
    assert!(third.is_err(), "a third stream was opened on the connection: {third:?}");
    // ...and proceeds once one ends; another connection is not affected meanwhile.
    app.guards().get_guard_status(authed(pb::GetGuardStatusRequest::default(), &mine)).await.unwrap();
    drop(first);
    tokio::time::timeout(
        Duration::from_secs(5),
        guards.get_guard_status(authed(pb::GetGuardStatusRequest::default(), &mine)),
    )
    .await
    .expect("the call proceeds once a stream is free")
    .unwrap();

    // Metadata over the limit is refused before any handler; the server keeps serving.
    let padded = |bytes: usize| {
        let mut request = authed(pb::GetGuardStatusRequest::default(), &mine);
        request.metadata_mut().insert("x-padding", "a".repeat(bytes).parse().unwrap());
        request
    };
    app.guards().get_guard_status(padded(4 * 1024)).await.expect("metadata under the 8 KiB limit is accepted");
    let refused = app.guards().get_guard_status(padded(12 * 1024)).await;
    assert!(refused.is_err(), "metadata over the 8 KiB limit was accepted");
    println!("12 KiB of metadata against an 8 KiB limit: {:?}", refused.unwrap_err().code());
    app.guards().get_guard_status(authed(pb::GetGuardStatusRequest::default(), &mine)).await.unwrap();
}

/// Issue 18, reproduced from outside: a replica whose pool is healthy went NOT_SERVING, and failed every call,
/// when its role reached its connection limit (the probe's new connection got 53300): every replica does the
/// same, so partial saturation became a total outage.
#[tokio::test]
async fn a_role_at_its_connection_limit_with_a_healthy_pool_stays_serving_and_answers() {
    use sqlx::postgres::PgConnectOptions;
    use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};
    use std::str::FromStr;

    let database = fresh_database().await;
    // Roles are the cluster's: managed from the maintenance database, which outlives the test's.
    let admin = PgPool::connect(&url_for("postgres")).await.unwrap();
    let role = format!("tm_limited_{}", Uuid::new_v4().simple());
    for sql in [
        format!("CREATE ROLE {role} LOGIN NOSUPERUSER PASSWORD 'limited'"),
        format!("GRANT pg_read_all_data, pg_write_all_data TO {role}"),
    ] {
        sqlx::query(AssertSqlSafe(sql)).execute(&admin).await.unwrap();
    }
    let server = PgConnectOptions::from_str(&url_for(&database)).unwrap();
    let url =
        format!("postgres://{role}:limited@{}:{}/{database}?sslmode=disable", server.get_host(), server.get_port());
    let mut args = serve_args(&database);
    args.database.database_url = url.clone();
    args.database.db_max_connections = 3;
    args.server.skip_migrations = true;
    let app = spawn_with_args(args, database.clone()).await;
    wait_for(&app, ServingStatus::Serving).await;
    let user = Uuid::new_v4();
    app.submit(sync(user, "1000", vec![], vec![])).await.unwrap();
    // Warm the pool up to its 3 connections (uncached reads, at once), as a replica under load has it.
    let reads = (0..9).map(|_| app.all_events(user));
    futures::future::join_all(reads).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The role may now hold exactly what the server holds.
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND backend_start < now() - interval '1 second'",
    )
    .bind(&role)
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(held, 3, "the server holds its pool's connections");
    sqlx::query(AssertSqlSafe(format!("ALTER ROLE {role} CONNECTION LIMIT {held}"))).execute(&admin).await.unwrap();
    // The premise: one more connection as the role is refused with 53300.
    let refused = PgConnection::connect(&url).await.map(|_| ()).unwrap_err();
    assert!(matches!(&refused, sqlx::Error::Database(e) if e.code().as_deref() == Some("53300")), "{refused}");

    // For 3 s (15 probes): every service SERVING, and calls answered on the pool's connections.
    let until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < until {
        for service in SERVICES {
            assert_eq!(health(&app, service).await, ServingStatus::Serving, "{service}");
        }
        app.submit(sync(user, "1000", vec![], vec![])).await.unwrap();
        assert!(!app.all_events(user).await.is_empty());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    drop(app); // drops the database (WITH FORCE), ending the role's sessions
    sqlx::query(AssertSqlSafe(format!("DROP ROLE IF EXISTS {role}"))).execute(&admin).await.unwrap();
}

/// Issue 18: one statement hitting `statement_timeout` (57014) closed the gate and failed every call in flight.
#[tokio::test]
async fn a_statement_timeout_fails_only_its_own_call_and_leaves_the_gate_open() {
    let app = spawn_app_with(|args| args.database.db_statement_timeout = Duration::from_secs(2)).await;
    wait_for(&app, ServingStatus::Serving).await;
    let blocker = hold_symbol(&app, "XAUUSD").await;
    let batch = || quotes(vec![quote("XAUUSD", "2000", "2000.10")]);
    // A waits for the symbol's lock from 0 s and hits the statement timeout at 2 s. B waits from 1 s (its limit
    // is 3 s); the lock is free at 2.4 s, so B succeeds — unless A's timeout closed the gate and aborted it.
    let (a, b, ()) = tokio::join!(
        app.quote(batch()),
        async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            app.quote(batch()).await
        },
        async {
            tokio::time::sleep(Duration::from_millis(2400)).await;
            blocker.rollback().await.unwrap();
        },
    );
    let a = a.unwrap_err();
    assert_eq!(code_and_reason(&a), (Code::DeadlineExceeded, "TIMEOUT".into()), "{a:?}");
    b.expect("a call in flight when another timed out");
    assert_eq!(health(&app, "").await, ServingStatus::Serving);
}
