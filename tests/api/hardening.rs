//! Hardening: no input can crash a read, late market data never rewrites the present, reported times are
//! bounded, and costs are bounded by design (sync size, event-log queries, panics).

use chrono::{Duration, Utc};
use tonic::Code;
use trading_monitor::pb;
use uuid::Uuid;

use trading_testkit::*;

fn quotes(quotes: Vec<pb::Quote>) -> pb::SubmitQuotesRequest {
    pb::SubmitQuotesRequest { quotes, candle_closes: vec![] }
}

fn candles(candle_closes: Vec<pb::CandleClose>) -> pb::SubmitQuotesRequest {
    pb::SubmitQuotesRequest { quotes: vec![], candle_closes }
}

fn aged(seconds_ago: i64, mut c: pb::CandleClose) -> pb::CandleClose {
    c.open_time = ts(Utc::now() - Duration::seconds(seconds_ago));
    c
}

fn snapshot(request: &mut pb::SubmitBrokerSyncRequest) -> &mut pb::SyncSnapshot {
    match request.result.as_mut() {
        Some(pb::submit_broker_sync_request::Result::Snapshot(s)) => s,
        _ => unreachable!("a snapshot request"),
    }
}

/// Every read a holder makes, all of which must succeed.
async fn every_read_succeeds(app: &TestApp, user: Uuid) {
    let t = token(user, &[]);
    app.positions().list_open_positions(authed(pb::ListOpenPositionsRequest::default(), &t)).await.expect("positions");
    app.guards().get_guard_status(authed(pb::GetGuardStatusRequest::default(), &t)).await.expect("guards");
    app.guards().get_drawdown_status(authed(pb::GetDrawdownStatusRequest::default(), &t)).await.expect("drawdown");
    app.guards().list_market_alerts(authed(pb::ListMarketAlertsRequest::default(), &t)).await.expect("alerts");
    let status = pb::GetReconciliationStatusRequest::default();
    app.recon().get_reconciliation_status(authed(status, &t)).await.expect("status");
    app.all_events(user).await;
}

#[tokio::test]
async fn an_oversized_quote_is_refused_naming_the_field_and_holders_keep_reading() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    app.submit(sync(user, "10000", vec![broker("1", "XAUUSD", pb::Side::Buy, "1", "2000", "2000")], vec![]))
        .await
        .unwrap();
    let huge = "40000000000000000000000000000";
    let forty_ones = format!("0.{}", "1".repeat(40));

    let err = app.quote(quotes(vec![quote("XAUUSD", huge, huge)])).await.unwrap_err();
    assert_eq!(bad_fields(&err), ["quotes[0].bid", "quotes[0].ask"]);
    assert!(err.message().contains("too large"), "{}", err.message());
    let err = app.quote(quotes(vec![quote("XAUUSD", &forty_ones, "1")])).await.unwrap_err();
    assert_eq!(bad_fields(&err), ["quotes[0].bid"], "more places than kept: refused, never rounded");
    assert!(err.message().contains("40 decimal places"), "{}", err.message());
    let err = app.quote(candles(vec![candle("XAUUSD", "1000000000", "1")])).await.unwrap_err();
    assert_eq!(bad_fields(&err), ["candle_closes[0].previous_close"]);

    every_read_succeeds(&app, user).await;
}

#[tokio::test]
async fn money_volumes_and_prices_beyond_their_bounds_are_refused_in_a_sync() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let mut request = sync(
        user,
        "1000000000000000000000000000",
        vec![pb::BrokerPosition {
            profit: "900000000000000000000000000".into(),
            swap: "0.123456789".into(),
            volume: "1.000000001".into(),
            take_profit: "-5".into(),
            ..broker("1", "XAUUSD", pb::Side::Buy, "1", "2000", "2000")
        }],
        vec![platform("T-1", "XAUUSD", pb::Side::Buy, "1000000000", "2000", "1")],
    );
    snapshot(&mut request).account.as_mut().unwrap().margin = format!("0.{}", "1".repeat(40));

    let err = app.submit(request).await.unwrap_err();

    assert_eq!(
        bad_fields(&err),
        [
            "snapshot.account.balance",
            "snapshot.account.equity",
            "snapshot.account.margin",
            "snapshot.broker_positions[0].volume",
            "snapshot.broker_positions[0].take_profit",
            "snapshot.broker_positions[0].swap",
            "snapshot.broker_positions[0].profit",
            "snapshot.platform_positions[0].volume",
        ]
    );
    assert_eq!(app.status(user).await.total_syncs, 0, "nothing was written");
}

#[tokio::test]
async fn values_at_the_edges_of_every_bound_are_accepted_and_every_read_of_them_succeeds() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let (max_price, min_price) = ("999999999.9999999999", "0.0000000001");
    let max_volume = "999999999.99999999";
    let max_money = "999999999999999.99999999";
    let brokers = vec![
        // Computed P&L: (max - min) x max volume x contract size 100: beyond 28 digits, so unavailable, not a panic.
        broker("1", "XAUUSD", pb::Side::Buy, max_volume, min_price, max_price),
        pb::BrokerPosition {
            profit: max_money.into(),
            swap: max_money.into(),
            commission: max_money.into(),
            ..broker("2", "EURUSD", pb::Side::Sell, max_volume, max_price, min_price)
        },
        pb::BrokerPosition {
            profit: format!("-{max_money}"),
            ..broker("3", "BTCUSD", pb::Side::Buy, "0.00000001", max_price, max_price)
        },
    ];
    let platforms = vec![platform("T-1", "XAUUSD", pb::Side::Buy, "0.00000001", max_price, "1")];
    app.submit(sync(user, max_money, brokers.clone(), platforms.clone())).await.unwrap();
    app.quote(quotes(vec![quote("XAUUSD", min_price, max_price), quote("GBPUSD", min_price, min_price)]))
        .await
        .unwrap();
    app.quote(candles(vec![candle("XAUUSD", min_price, max_price), candle("BTCUSD", max_price, min_price)]))
        .await
        .unwrap();
    every_read_succeeds(&app, user).await;

    // The deepest possible drawdown: from the largest equity to the most negative one.
    app.submit(sync(user, &format!("-{max_money}"), brokers, platforms)).await.unwrap();

    every_read_succeeds(&app, user).await;
    let listed = app.open_positions(user).await;
    let gold = listed.positions.iter().find(|p| p.position_identifier == "1").unwrap();
    assert_eq!(gold.pnl_source(), pb::PnlSource::Unavailable);
    assert_eq!(gold.pnl_unavailable_reason, "P&L overflows the decimal range");
    assert_eq!(listed.total_unrealized_pnl, "", "never silently partial");
    let drawdown = app.guard_status(user).await.drawdown.unwrap();
    assert_eq!((drawdown.level(), drawdown.drawdown_percent.as_str()), (pb::DrawdownLevel::Critical, "200"));
}

#[tokio::test]
async fn a_late_candle_never_clears_an_alert_a_newer_one_raised() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    app.submit(sync(user, "10000", vec![broker("1", "BTCUSD", pb::Side::Buy, "1", "60000", "60000")], vec![]))
        .await
        .unwrap();
    let newer = candles(vec![aged(0, candle("BTCUSD", "60000", "67200"))]); // a 12 % gap: CRITICAL
    let raised = app.quote(newer.clone()).await.unwrap();
    assert_eq!(raised.raised_alerts.len(), 1);

    // A late batch with an older candle (0.1 %), and a retry of the newer one.
    let late = app.quote(candles(vec![aged(60, candle("BTCUSD", "60000", "60060"))])).await.unwrap();
    let retried = app.quote(newer).await.unwrap();

    assert_eq!((late.accepted_candle_closes, late.raised_alerts.len(), late.cleared_alerts_count), (1, 0, 0));
    assert_eq!((retried.raised_alerts.len(), retried.cleared_alerts_count), (0, 0));
    let guard = app.guard_status(user).await;
    assert!(guard.any_positions_should_close);
    let gaps: Vec<_> = guard.market_alerts.iter().filter(|a| a.kind() == pb::MarketAlertKind::PriceGap).collect();
    assert_eq!(gaps.len(), 1);
    assert_eq!((gaps[0].severity(), gaps[0].value_percent.as_str()), (pb::AlertSeverity::Critical, "12"));
    let events = app.all_events(user).await;
    assert!(!events.iter().any(|e| e.event_type() == pb::EventType::MarketAlertCleared));
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM candle_closes").fetch_one(&app.pool).await.unwrap();
    assert_eq!(stored, 2, "the late candle is recorded");
}

/// Gap of a candle with this open after a previous close of 60000, as the guard rounds it.
fn gap_severity(open: u32) -> Option<pb::AlertSeverity> {
    let gap = (f64::from(open) - 60_000.0).abs() / 60_000.0 * 100.0;
    if gap >= 10.0 {
        Some(pb::AlertSeverity::Critical)
    } else if gap >= 5.0 {
        Some(pb::AlertSeverity::Warning)
    } else {
        None
    }
}

#[tokio::test]
async fn shuffled_candle_and_quote_batches_leave_the_state_the_newest_data_implies() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let hold = vec![
        broker("1", "BTCUSD", pb::Side::Buy, "1", "60000", "60000"),
        broker("2", "XAUUSD", pb::Side::Buy, "1", "2000", "2000"),
    ];
    app.submit(sync(user, "10000", hold, vec![])).await.unwrap();
    // 24 candles and 24 quotes one second apart, each moving the gap / spread across the thresholds.
    let opens = [60_100, 66_600, 63_300, 60_000, 67_000, 61_000, 63_500, 59_000, 53_000, 65_500, 60_500, 63_100];
    let asks = ["2000.5", "2012", "2030", "2001", "2025", "2011", "2000", "2019", "2003", "2010.2", "2040", "2002"];
    let mut batches: Vec<pb::SubmitQuotesRequest> = Vec::new();
    for i in 0..24 {
        let seconds_ago = 30 - i as i64;
        let open = opens[i % opens.len()];
        let q = pb::Quote {
            quote_time: ts(Utc::now() - Duration::seconds(seconds_ago)),
            ..quote("XAUUSD", "2000", asks[i % asks.len()])
        };
        let c = aged(seconds_ago, candle("BTCUSD", "60000", &open.to_string()));
        batches.push(pb::SubmitQuotesRequest { quotes: vec![q], candle_closes: vec![c] });
    }
    let newest = batches.last().cloned().unwrap();
    // Shuffle across batches, then merge neighbours so some batches carry several, in shuffled order too.
    batches.sort_by_cached_key(|_| Uuid::new_v4());
    let mut merged: Vec<pb::SubmitQuotesRequest> = Vec::new();
    for (i, b) in batches.into_iter().enumerate() {
        match merged.last_mut() {
            Some(last) if i % 3 != 0 => {
                last.quotes.extend(b.quotes);
                last.candle_closes.extend(b.candle_closes);
            }
            _ => merged.push(b),
        }
    }
    for batch in merged {
        app.quote(batch).await.unwrap();
    }

    let guard = app.guard_status(user).await;
    let severity = |kind: pb::MarketAlertKind| {
        guard.market_alerts.iter().find(|a| a.kind() == kind).map(pb::MarketAlert::severity)
    };
    let newest_open: u32 = newest.candle_closes[0].open.parse().unwrap();
    assert_eq!(severity(pb::MarketAlertKind::PriceGap), gap_severity(newest_open), "{guard:?}");
    // The newest ask is asks[23 % 12] = "2002": a 0.1 % spread, so no spread alert whatever came later.
    assert_eq!(severity(pb::MarketAlertKind::WideSpread), None, "{guard:?}");
    let (bid, ask): (String, String) =
        sqlx::query_as("SELECT bid::text, ask::text FROM latest_quotes WHERE symbol = 'XAUUSD'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((bid.as_str(), ask.as_str()), ("2000", newest.quotes[0].ask.as_str()));
}

#[tokio::test]
async fn reported_times_out_of_range_are_invalid_argument_never_internal() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let year_minus_200000 = prost_types::Timestamp { seconds: -6_373_484_000_000, nanos: 0 };
    let year_1999 = ts(chrono::DateTime::parse_from_rfc3339("1999-12-31T23:59:59Z").unwrap().into());

    let mut ancient = sync(user, "10000", vec![], vec![]);
    ancient.started_time = Some(year_minus_200000);
    assert_eq!(bad_fields(&app.submit(ancient).await.unwrap_err()), ["started_time"]);
    let mut old = sync(user, "10000", vec![broker("1", "XAUUSD", pb::Side::Buy, "1", "2000", "2000")], vec![]);
    snapshot(&mut old).broker_positions[0].open_time = year_1999;
    assert_eq!(bad_fields(&app.submit(old).await.unwrap_err()), ["snapshot.broker_positions[0].open_time"]);
    let stale_quote = pb::Quote { quote_time: year_1999, ..quote("XAUUSD", "1", "1") };
    assert_eq!(bad_fields(&app.quote(quotes(vec![stale_quote])).await.unwrap_err()), ["quotes[0].quote_time"]);

    let window = pb::ListReconciliationEventsRequest { start_time: Some(year_minus_200000), ..Default::default() };
    let err = app.recon().list_reconciliation_events(authed(window, &token(user, &[]))).await.unwrap_err();
    assert_eq!(bad_fields(&err), ["start_time"]);
}

#[tokio::test]
async fn a_sync_over_the_position_cap_is_refused_at_once() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let brokers: Vec<_> =
        (0..2001).map(|i| broker(&i.to_string(), "XAUUSD", pb::Side::Buy, "1", "2000", "2000")).collect();

    let err = app.submit(sync(user, "10000", brokers, vec![])).await.unwrap_err();

    assert_eq!(bad_fields(&err), ["snapshot.broker_positions"]);
    assert!(err.message().contains("at most 2000"), "{}", err.message());
}

#[tokio::test]
async fn the_largest_allowed_sync_is_reconciled_and_its_counts_agree_with_its_list() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    // 2,000 x 2,000 in one symbol and side, no identifiers known: all matched by nearest volume and entry.
    let brokers: Vec<_> = (0..2000)
        .map(|i| {
            broker(
                &format!("B{i}"),
                "XAUUSD",
                pb::Side::Buy,
                &format!("0.{:02}", 1 + i % 50),
                &format!("{}", 2000 + i % 97),
                "2100",
            )
        })
        .collect();
    let platforms: Vec<_> = (0..2000)
        .map(|i| {
            platform(
                &format!("T{i}"),
                "XAUUSD",
                pb::Side::Buy,
                &format!("0.{:02}", 1 + (i * 7) % 50),
                &format!("{}", 2000 + (i * 3) % 97),
                "",
            )
        })
        .collect();

    let response = app.submit(sync(user, "10000", brokers, platforms)).await.unwrap();

    assert_eq!(response.matched_count, 2000);
    assert_eq!((response.broker_only_count, response.missing_at_broker_count), (0, 0));
    assert_eq!(response.divergences.len(), response.divergence_count as usize);
    let status = app.status(user).await;
    assert_eq!((status.open_positions_count, status.divergences_count), (2000, response.divergence_count));
}

/// A PositionsService whose every call panics.
struct Panicking;

#[tonic::async_trait]
impl pb::positions_service_server::PositionsService for Panicking {
    async fn list_open_positions(
        &self,
        _: tonic::Request<pb::ListOpenPositionsRequest>,
    ) -> Result<tonic::Response<pb::ListOpenPositionsResponse>, tonic::Status> {
        panic!("a bug with a secret in its message")
    }

    async fn get_position(
        &self,
        _: tonic::Request<pb::GetPositionRequest>,
    ) -> Result<tonic::Response<pb::GetPositionResponse>, tonic::Status> {
        Ok(tonic::Response::new(pb::GetPositionResponse::default()))
    }
}

#[tokio::test]
async fn a_panicking_handler_answers_an_opaque_internal_and_the_connection_keeps_serving() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(trading_monitor::server::CatchPanicLayer)
            .add_service(pb::positions_service_server::PositionsServiceServer::new(Panicking))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut client = pb::positions_service_client::PositionsServiceClient::new(channel);

    for _ in 0..2 {
        let err = client.list_open_positions(pb::ListOpenPositionsRequest::default()).await.unwrap_err();
        assert_eq!((err.code(), err.message()), (Code::Internal, "internal error"));
    }
    assert!(client.get_position(pb::GetPositionRequest::default()).await.is_ok(), "the same connection still serves");
    server.abort();
}

#[tokio::test]
async fn an_event_filter_on_a_type_the_user_never_had_costs_the_same_whatever_the_history() {
    let app = spawn_app().await;
    let (quiet, busy) = (Uuid::new_v4(), Uuid::new_v4());
    // 30,000 events of one type for one user; the filtered type is common in the table (other users), so the
    // planner's statistics call it common.
    sqlx::query(
        "INSERT INTO events (user_id, event_type, occurred_at, message)
         SELECT $1, 'sync_completed', now() - make_interval(secs => g), 'seeded' FROM generate_series(1, 30000) g
         UNION ALL
         SELECT $2, 'divergence_detected', now() - make_interval(secs => g), 'seeded' FROM generate_series(1, 30000) g",
    )
    .bind(quiet)
    .bind(busy)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE events").execute(&app.pool).await.unwrap();

    // The exact statement the binary runs, from the offline query cache.
    let query = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.sqlx"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .filter_map(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .filter_map(|json| json["query"].as_str().map(str::to_owned))
        .find(|q| q.contains("event_type = t.event_type"))
        .expect("the event-type query is in .sqlx");
    let explain = format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {query}");
    let plan: serde_json::Value = sqlx::query_scalar(sqlx::AssertSqlSafe(explain))
        .bind(quiet)
        .bind(chrono::DateTime::<Utc>::from_timestamp(0, 0).unwrap())
        .bind(Utc::now() + Duration::days(1))
        .bind(i64::MAX)
        .bind(51_i64)
        .bind(vec!["divergence_detected".to_owned()])
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let top = &plan[0]["Plan"];
    let buffers = top["Shared Hit Blocks"].as_i64().unwrap() + top["Shared Read Blocks"].as_i64().unwrap();
    assert!(buffers < 50, "{buffers} buffers for an empty page over 30,000 events: {plan:#}");
}
