//! Ingest: SubmitBrokerSync through the engine.

use std::collections::HashSet;

use chrono::{Duration, Utc};
use pb::DivergenceKind as Kind;
use pb::EventType as Ev;
use pb::Side::{Buy, Sell, Unspecified};
use trading_monitor::pb;
use uuid::Uuid;

use trading_testkit::*;

/// The platform's record of a broker position, identical to it.
fn mirror(b: &pb::BrokerPosition, trade: &str) -> pb::PlatformPosition {
    pb::PlatformPosition {
        platform_trade_id: trade.into(),
        symbol: b.symbol.clone(),
        side: b.side,
        volume: b.volume.clone(),
        entry_price: b.open_price.clone(),
        take_profit: b.take_profit.clone(),
        stop_loss: b.stop_loss.clone(),
        position_identifier: b.position_identifier.clone(),
    }
}

/// Five broker positions, each differing from the platform in one way (1003 in two), and a platform trade the
/// broker does not have: 1001 entry, 1002 volume (10 %, matched by symbol and side: matching is no stricter than
/// the checks), 1003 take profit (both set) and stop loss (broker only),
/// 1004 side (through the identifier), 1005 broker only, T-6 missing at the broker.
fn divergent_book() -> (Vec<pb::BrokerPosition>, Vec<pb::PlatformPosition>) {
    let brokers = vec![
        broker("1001", "XAUUSD", Buy, "0.50", "2351.50", "2355.00"),
        broker("1002", "EURUSD", Buy, "1.10", "1.08000", "1.08100"),
        pb::BrokerPosition {
            take_profit: "2250".into(),
            stop_loss: "2350".into(),
            ..broker("1003", "XAUUSD", Sell, "0.20", "2300", "2290")
        },
        broker("1004", "BTCUSD", Buy, "0.10", "60000", "61000"),
        broker("1005", "GBPUSD", Buy, "0.30", "1.25000", "1.25100"),
    ];
    let platforms = vec![
        platform("T-1", "XAUUSD", Buy, "0.50", "2350.00", "1001"),
        platform("T-2", "EURUSD", Buy, "1.00", "1.08000", ""),
        pb::PlatformPosition { take_profit: "2240".into(), ..platform("T-3", "XAUUSD", Sell, "0.20", "2300", "1003") },
        platform("T-4", "BTCUSD", Sell, "0.10", "60000", "1004"),
        platform("T-6", "USDJPY", Sell, "0.50", "150.000", ""),
    ];
    (brokers, platforms)
}

type DivergenceSummary<'a> = (Kind, &'a str, &'a str, &'a str, &'a str, &'a str);

fn summary(d: &pb::Divergence) -> DivergenceSummary<'_> {
    (d.kind(), &d.position_identifier, &d.platform_trade_id, &d.broker_value, &d.platform_value, &d.difference_percent)
}

fn of_type(events: &[pb::ReconciliationEvent], t: Ev) -> Vec<&pb::ReconciliationEvent> {
    events.iter().filter(|e| e.event_type() == t).collect()
}

fn position<'a>(list: &'a pb::ListOpenPositionsResponse, identifier: &str) -> &'a pb::Position {
    list.positions.iter().find(|p| p.position_identifier == identifier).expect("position is listed")
}

async fn get_position(app: &TestApp, user: Uuid, position_id: &str) -> pb::Position {
    let request = pb::GetPositionRequest { position_id: position_id.into(), user_id: String::new() };
    let response = app.positions().get_position(authed(request, &token(user, &[]))).await.unwrap();
    response.into_inner().position.unwrap()
}

async fn count(app: &TestApp, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&app.pool).await.unwrap()
}

fn snapshot(request: &mut pb::SubmitBrokerSyncRequest) -> &mut pb::SyncSnapshot {
    match request.result.as_mut() {
        Some(pb::submit_broker_sync_request::Result::Snapshot(s)) => s,
        _ => unreachable!("a snapshot request"),
    }
}

#[tokio::test]
async fn every_divergence_kind_is_reported_with_its_values_and_a_later_clean_sync_resolves_them() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let (brokers, platforms) = divergent_book();

    let response = app.submit(sync(user, "10000", brokers.clone(), platforms)).await.unwrap();

    assert_eq!(response.status(), pb::SyncStatus::Completed);
    let counts = (
        response.matched_count,
        response.divergence_count,
        response.broker_only_count,
        response.missing_at_broker_count,
    );
    assert_eq!(counts, (4, 5, 1, 1));
    let found: Vec<_> = response.divergences.iter().map(summary).collect();
    assert_eq!(
        found,
        [
            (Kind::EntrySlippage, "1001", "T-1", "2351.50", "2350.00", "0.0638"),
            (Kind::VolumeMismatch, "1002", "T-2", "1.10", "1.00", "10"),
            (Kind::TakeProfitMismatch, "1003", "T-3", "2250", "2240", "0.4348"),
            (Kind::StopLossMismatch, "1003", "T-3", "2350", "", ""),
            (Kind::SideMismatch, "1004", "T-4", "buy", "sell", ""),
            (Kind::BrokerOnly, "1005", "", "", "", ""),
            (Kind::MissingAtBroker, "", "T-6", "", "", ""),
        ]
    );
    assert_eq!(response.divergences[0].message, "entry 2351.50 at broker vs 2350.00 on platform (0.0638 %)");
    assert!(response.divergences[..6].iter().all(|d| !d.position_id.is_empty() && d.resolved_time.is_none()));
    assert_eq!((response.divergences[6].position_id.as_str(), response.divergences[6].symbol.as_str()), ("", "USDJPY"));

    let status = app.status(user).await;
    assert_eq!(status.state(), pb::ReconciliationState::Warning);
    assert_eq!((status.divergences_count, status.open_positions_count, status.matched_positions_count), (7, 5, 4));
    let open = app.open_positions(user).await;
    let slipped = position(&open, "1001");
    assert_eq!((slipped.matched, slipped.platform_trade_id.as_str()), (true, "T-1"));
    assert_eq!(slipped.open_divergences.iter().map(|d| d.kind()).collect::<Vec<_>>(), [Kind::EntrySlippage]);
    assert!(!position(&open, "1005").matched);

    let clean: Vec<_> = brokers.iter().enumerate().map(|(i, b)| mirror(b, &format!("T-{}", i + 1))).collect();
    let response = app.submit(sync(user, "10000", brokers, clean)).await.unwrap();

    let counts = (
        response.matched_count,
        response.divergence_count,
        response.broker_only_count,
        response.missing_at_broker_count,
    );
    assert_eq!((counts, response.divergences.len()), ((5, 0, 0, 0), 0));
    let status = app.status(user).await;
    assert_eq!(status.state(), pb::ReconciliationState::Healthy);
    assert_eq!((status.divergences_count, status.open_positions_count, status.matched_positions_count), (0, 5, 5));
    let events = app.all_events(user).await;
    let mut resolved: Vec<&str> =
        of_type(&events, Ev::DivergenceResolved).iter().map(|e| e.details["kind"].as_str()).collect();
    resolved.sort_unstable();
    assert_eq!(
        resolved,
        [
            "broker_only",
            "entry_slippage",
            "missing_at_broker",
            "side_mismatch",
            "stop_loss_mismatch",
            "take_profit_mismatch",
            "volume_mismatch"
        ]
    );
    assert!(position(&app.open_positions(user).await, "1001").open_divergences.is_empty());
}

#[tokio::test]
async fn differences_within_tolerance_match_cleanly_and_protection_set_on_the_platform_only_diverges() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    // 1 / 2350 = 0.0426 % entry and 1 % volume are within the defaults (0.05 %, 1 %).
    let brokers = vec![broker("1", "XAUUSD", Buy, "1.01", "2351.00", "2352.00")];
    let exact = vec![platform("T-1", "XAUUSD", Buy, "1.00", "2350.00", "")];

    let response = app.submit(sync(user, "10000", brokers.clone(), exact.clone())).await.unwrap();
    assert_eq!((response.matched_count, response.divergences.len()), (1, 0));
    assert_eq!(app.status(user).await.state(), pb::ReconciliationState::Healthy);

    let with_tp = vec![pb::PlatformPosition { take_profit: "2400".into(), ..exact[0].clone() }];
    let response = app.submit(sync(user, "10000", brokers, with_tp)).await.unwrap();
    let found: Vec<_> = response.divergences.iter().map(summary).collect();
    assert_eq!(found, [(Kind::TakeProfitMismatch, "1", "T-1", "", "2400", "")]);
    assert_eq!(response.divergences[0].message, "take profit set on platform only");
    assert_eq!(app.status(user).await.divergences_count, 1);
}

#[tokio::test]
async fn a_repeated_request_id_returns_the_original_response_and_writes_nothing() {
    let app = spawn_app().await;
    let (user, intruder) = (Uuid::new_v4(), Uuid::new_v4());
    let request = sync(user, "10000", vec![broker("1", "XAUUSD", Buy, "0.5", "2350", "2355")], vec![]);
    let first = app.submit(request.clone()).await.unwrap();
    let events = app.all_events(user).await;

    let again = app.submit(request.clone()).await.unwrap();
    assert_eq!(again, first);

    // The same request id with another payload is not a retry: refused, never answered with the old response.
    let other_content =
        pb::SubmitBrokerSyncRequest { request_id: request.request_id.clone(), ..sync(user, "5000", vec![], vec![]) };
    let err = app.submit(other_content).await.unwrap_err();
    assert_eq!(code_and_reason(&err), (tonic::Code::AlreadyExists, "REQUEST_ID_REUSED".into()), "{err:?}");
    assert_eq!(error_info(&err).2["request_id"], request.request_id);

    assert_eq!(app.status(user).await.total_syncs, 1);
    assert_eq!(app.all_events(user).await, events);
    assert_eq!(app.guard_status(user).await.drawdown.unwrap().equity, "10000");
    assert_eq!(app.open_positions(user).await.total_count, 1);

    let stolen = pb::SubmitBrokerSyncRequest { user_id: intruder.to_string(), ..request };
    let err = app.submit(stolen).await.unwrap_err();
    assert_eq!(code_and_reason(&err), (tonic::Code::AlreadyExists, "REQUEST_ID_REUSED".into()), "{err:?}");
    assert!(err.message().contains("another user"), "{err:?}");
    assert_eq!(app.status(intruder).await.total_syncs, 0);
    assert!(app.all_events(intruder).await.is_empty());
}

#[tokio::test]
async fn concurrent_copies_of_one_request_record_it_once_and_all_get_the_same_response() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let request = sync(user, "10000", vec![broker("1", "XAUUSD", Buy, "0.5", "2350", "2355")], vec![]);

    let responses = futures::future::join_all((0..5).map(|_| app.submit(request.clone()))).await;

    let responses: Vec<_> = responses.into_iter().map(|r| r.expect("every copy succeeds")).collect();
    assert!(responses.iter().all(|r| *r == responses[0]), "{responses:?}");
    assert_eq!(app.status(user).await.total_syncs, 1);
    assert_eq!(of_type(&app.all_events(user).await, Ev::SyncCompleted).len(), 1);
}

#[tokio::test]
async fn a_failed_sync_is_an_error_state_and_closes_nothing() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let brokers =
        vec![broker("1", "XAUUSD", Buy, "0.5", "2350", "2355"), broker("2", "EURUSD", Sell, "1", "1.08", "1.07")];
    app.submit(sync(user, "10000", brokers, vec![])).await.unwrap();
    let before = app.open_positions(user).await;

    let response = app.submit(failed_sync(user, "MT5 terminal not connected")).await.unwrap();

    assert_eq!(response.status(), pb::SyncStatus::Failed);
    assert_eq!((response.matched_count, response.missing_at_broker_count, response.divergences.len()), (0, 0, 0));
    let status = app.status(user).await;
    assert_eq!(status.state(), pb::ReconciliationState::Error);
    assert_eq!(status.last_sync_error, "MT5 terminal not connected");
    assert_eq!((status.total_syncs, status.failed_syncs, status.open_positions_count), (2, 1, 2));
    assert!(status.last_successful_sync_time.is_some());
    let after = app.open_positions(user).await;
    assert_eq!((after.total_count, &after.positions), (2, &before.positions));
    let events = app.all_events(user).await;
    assert_eq!(of_type(&events, Ev::SyncFailed).len(), 1);
    assert_eq!(of_type(&events, Ev::SyncFailed)[0].sync_id, response.sync_id);
    assert!(of_type(&events, Ev::PositionClosed).is_empty());
}

#[tokio::test]
async fn a_position_the_broker_dropped_while_the_platform_still_lists_it_is_closed_at_broker() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let gold = broker("1001", "XAUUSD", Buy, "0.5", "2350", "2355");
    let euro = broker("1002", "EURUSD", Buy, "1", "1.08", "1.081");
    let platforms =
        vec![platform("T-1", "XAUUSD", Buy, "0.5", "2350", ""), platform("T-2", "EURUSD", Buy, "1", "1.08", "1002")];
    app.submit(sync(user, "10000", vec![gold, euro.clone()], platforms.clone())).await.unwrap();
    let gold_id = position(&app.open_positions(user).await, "1001").position_id.clone();

    let response = app.submit(sync(user, "10000", vec![euro], platforms)).await.unwrap();

    assert_eq!((response.matched_count, response.missing_at_broker_count), (1, 1));
    assert_eq!(
        response.divergences.iter().map(summary).collect::<Vec<_>>(),
        [(Kind::MissingAtBroker, "", "T-1", "", "", "")]
    );
    let closed = get_position(&app, user, &gold_id).await;
    assert_eq!(closed.status(), pb::PositionStatus::Closed);
    assert_eq!(closed.close_reason(), pb::CloseReason::ClosedAtBroker);
    assert!(closed.closed_time.is_some());
    let status = app.status(user).await;
    assert_eq!((status.open_positions_count, status.matched_positions_count, status.divergences_count), (1, 1, 1));
    let events = app.all_events(user).await;
    assert_eq!(of_type(&events, Ev::PositionOpened).len(), 2);
    let closes = of_type(&events, Ev::PositionClosed);
    assert_eq!(closes.len(), 1);
    assert_eq!(
        (closes[0].position_id.as_str(), closes[0].details["close_reason"].as_str()),
        (gold_id.as_str(), "closed_at_broker")
    );
}

#[tokio::test]
async fn a_position_gone_from_both_broker_and_platform_is_closed_by_platform() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let gold = broker("1001", "XAUUSD", Buy, "0.5", "2350", "2355");
    app.submit(sync(user, "10000", vec![gold.clone()], vec![mirror(&gold, "T-1")])).await.unwrap();
    let gold_id = position(&app.open_positions(user).await, "1001").position_id.clone();

    let response = app.submit(sync(user, "10000", vec![], vec![])).await.unwrap();

    assert_eq!((response.missing_at_broker_count, response.divergences.len()), (0, 0));
    let closed = get_position(&app, user, &gold_id).await;
    assert_eq!(
        (closed.status(), closed.close_reason()),
        (pb::PositionStatus::Closed, pb::CloseReason::ClosedByPlatform)
    );
    let status = app.status(user).await;
    assert_eq!((status.state(), status.open_positions_count), (pb::ReconciliationState::Idle, 0));
    assert_eq!(app.open_positions(user).await.total_count, 0);
    let events = app.all_events(user).await;
    let closes = of_type(&events, Ev::PositionClosed);
    assert_eq!(closes.len(), 1);
    assert_eq!(closes[0].details["close_reason"], "closed_by_platform");
}

#[tokio::test]
async fn a_position_keeps_its_id_and_history_when_the_broker_changes_its_ticket() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let gold = broker("1001", "XAUUSD", Buy, "0.5", "2350", "2355");
    app.submit(sync(user, "10000", vec![gold.clone()], vec![])).await.unwrap();
    let before = position(&app.open_positions(user).await, "1001").clone();

    let renumbered = pb::BrokerPosition { ticket: "T-new".into(), current_price: "2360".into(), ..gold };
    app.submit(sync(user, "10000", vec![renumbered], vec![])).await.unwrap();

    let list = app.open_positions(user).await;
    let after = position(&list, "1001");
    assert_eq!((list.total_count, after.position_id.as_str()), (1, before.position_id.as_str()));
    assert_eq!((after.ticket.as_str(), after.current_price.as_str()), ("T-new", "2360"));
    let events = app.all_events(user).await;
    assert_eq!((of_type(&events, Ev::PositionOpened).len(), of_type(&events, Ev::DivergenceDetected).len()), (1, 1));
}

#[tokio::test]
async fn broker_reported_pnl_is_profit_plus_swap_plus_commission() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let reported = pb::BrokerPosition {
        profit: "125.40".into(),
        swap: "-3.10".into(),
        commission: "-7.00".into(),
        ..broker("1", "XAUUSD", Buy, "0.5", "2350.00", "2360.50")
    };
    app.submit(sync(user, "10000", vec![reported], vec![])).await.unwrap();

    let list = app.open_positions(user).await;

    let p = &list.positions[0];
    assert_eq!((p.unrealized_pnl.as_str(), p.pnl_source()), ("115.30", pb::PnlSource::BrokerReported));
    assert_eq!((p.broker_profit.as_str(), p.swap.as_str(), p.commission.as_str()), ("125.40", "-3.10", "-7.00"));
    assert_eq!(p.pnl_unavailable_reason, "");
    assert_eq!((list.total_unrealized_pnl.as_str(), list.total_unrealized_pnl_percent.as_str()), ("115.30", "1.1530"));
    assert_eq!((list.account_currency.as_str(), list.account_equity.as_str()), ("GBP", "10000"));
}

#[tokio::test]
async fn computed_pnl_uses_the_contract_size_and_converts_with_the_latest_quote() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let brokers = vec![
        broker("1", "XAUUSD", Buy, "0.5", "2350.00", "2360.50"),
        broker("2", "BTCUSD", Sell, "0.1", "60000", "61000"),
    ];
    app.submit(sync(user, "8000", brokers, vec![])).await.unwrap();
    app.quote(pb::SubmitQuotesRequest { quotes: vec![quote("GBPUSD", "1.2499", "1.2501")], ..Default::default() })
        .await
        .unwrap();

    let list = app.open_positions(user).await;

    // 10.50 x 0.5 lots x 100 oz = 525 USD = 420 GBP at 1.25; -1000 x 0.1 x 1 = -100 USD = -80 GBP.
    let (gold, btc) = (position(&list, "1"), position(&list, "2"));
    assert_eq!((gold.unrealized_pnl.as_str(), gold.pnl_source()), ("420.00", pb::PnlSource::Computed));
    assert_eq!(gold.unrealized_pnl_percent, "0.4468", "420 of an entry notional of 94000 GBP");
    assert_eq!((btc.unrealized_pnl.as_str(), btc.pnl_source()), ("-80.00", pb::PnlSource::Computed));
    assert_eq!(btc.unrealized_pnl_percent, "-1.6667");
    assert_eq!((list.total_unrealized_pnl.as_str(), list.total_unrealized_pnl_percent.as_str()), ("340.00", "4.25"));

    // Quotes newer than the sync move the prices: a buy is valued at the bid, a sell at the ask.
    let moved = vec![quote("XAUUSD", "2370.00", "2370.50"), quote("BTCUSD", "60500", "60600")];
    app.quote(pb::SubmitQuotesRequest { quotes: moved, ..Default::default() }).await.unwrap();
    let list = app.open_positions(user).await;
    let gold = position(&list, "1");
    assert_eq!((gold.current_price.as_str(), gold.unrealized_pnl.as_str()), ("2370.00", "800.00"));
    let btc = position(&list, "2");
    assert_eq!((btc.current_price.as_str(), btc.unrealized_pnl.as_str()), ("60600", "-48.00"));
    assert_eq!((list.total_unrealized_pnl.as_str(), list.total_unrealized_pnl_percent.as_str()), ("752.00", "9.40"));
}

#[tokio::test]
async fn pnl_without_a_conversion_quote_is_unavailable_and_the_total_is_not_silently_partial() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let brokers = vec![
        broker("1", "XAUUSD", Buy, "0.5", "2350.00", "2360.50"),
        pb::BrokerPosition { profit: "12.00".into(), ..broker("2", "BTCUSD", Buy, "0.1", "60000", "60150") },
    ];
    app.submit(sync(user, "10000", brokers, vec![])).await.unwrap();

    let list = app.open_positions(user).await;

    let gold = position(&list, "1");
    assert_eq!((gold.unrealized_pnl.as_str(), gold.pnl_source()), ("", pb::PnlSource::Unavailable));
    assert!(gold.pnl_unavailable_reason.contains("USD") && gold.pnl_unavailable_reason.contains("GBP"));
    assert_eq!(gold.unrealized_pnl_percent, "");
    assert_eq!(position(&list, "2").unrealized_pnl, "12.00");
    assert_eq!((list.total_unrealized_pnl.as_str(), list.total_unrealized_pnl_percent.as_str()), ("", ""));
    assert!(!list.total_unavailable_reason.is_empty());

    app.quote(pb::SubmitQuotesRequest { quotes: vec![quote("GBPUSD", "1.25", "1.25")], ..Default::default() })
        .await
        .unwrap();
    let list = app.open_positions(user).await;
    assert_eq!((list.total_unrealized_pnl.as_str(), list.total_unavailable_reason.as_str()), ("432.00", ""));
}

#[tokio::test]
async fn reads_right_after_an_acknowledged_sync_reflect_it() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let gold = broker("1", "XAUUSD", Buy, "0.5", "2350", "2355");
    app.submit(sync(user, "10000", vec![gold.clone()], vec![])).await.unwrap();
    assert_eq!(app.status(user).await.open_positions_count, 1);
    assert_eq!(app.open_positions(user).await.total_count, 1);

    let euro = broker("2", "EURUSD", Sell, "1", "1.08", "1.07");
    let response = app.submit(sync(user, "12000", vec![gold, euro], vec![])).await.unwrap();

    let status = app.status(user).await;
    assert_eq!((status.total_syncs, status.open_positions_count, status.divergences_count), (2, 2, 2));
    assert_eq!(status.last_sync_duration, Some(prost_types::Duration { seconds: 0, nanos: 400_000_000 }));
    assert_eq!(status.recent_events[0].sync_id, response.sync_id);
    let list = app.open_positions(user).await;
    assert_eq!((list.total_count, list.account_equity.as_str()), (2, "12000"));
    assert_eq!(app.guard_status(user).await.drawdown.unwrap().peak_equity, "12000");
}

#[tokio::test]
async fn invalid_syncs_name_the_exact_field_and_write_nothing() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    type Edit = fn(&mut pb::SubmitBrokerSyncRequest);
    let cases: Vec<(&str, Edit)> = vec![
        ("request_id", |r| r.request_id.clear()),
        ("request_id", |r| r.request_id = "sync-42".into()),
        ("user_id", |r| r.user_id.clear()),
        // `me` is a reader's alias; a sync worker acts for many users and must name one.
        ("user_id", |r| r.user_id = "me".into()),
        ("snapshot.broker_positions[0].volume", |r| snapshot(r).broker_positions[0].volume = "0".into()),
        ("snapshot.broker_positions[0].volume", |r| snapshot(r).broker_positions[0].volume = "-0.5".into()),
        ("snapshot.platform_positions[0].volume", |r| snapshot(r).platform_positions[0].volume = "0".into()),
        ("snapshot.account.equity", |r| snapshot(r).account.as_mut().unwrap().equity = "1e3".into()),
        ("snapshot.broker_positions[0].open_price", |r| snapshot(r).broker_positions[0].open_price = "1e3".into()),
        ("snapshot.broker_positions[0].symbol", |r| snapshot(r).broker_positions[0].symbol = "xau".into()),
        ("snapshot.platform_positions[0].side", |r| snapshot(r).platform_positions[0].side = Unspecified.into()),
        ("snapshot.broker_positions[0].side", |r| snapshot(r).broker_positions[0].side = Unspecified.into()),
        ("finished_time", |r| r.finished_time = ts(Utc::now() - Duration::seconds(10))),
        ("finished_time", |r| r.finished_time = ts(Utc::now() + Duration::days(1))),
        ("started_time", |r| r.started_time = ts(Utc::now() + Duration::days(1))),
        ("finished_time", |r| r.finished_time = Some(prost_types::Timestamp { seconds: 1, nanos: -1 })),
        ("started_time", |r| r.started_time = None),
        ("snapshot.broker_positions[0].open_time", |r| {
            snapshot(r).broker_positions[0].open_time = ts(Utc::now() + Duration::hours(1))
        }),
        ("snapshot.broker_positions[1].position_identifier", |r| {
            let s = snapshot(r);
            let twin = pb::BrokerPosition { ticket: "T-other".into(), ..s.broker_positions[0].clone() };
            s.broker_positions.push(twin);
        }),
        ("snapshot.platform_positions[1].platform_trade_id", |r| {
            let s = snapshot(r);
            let twin = s.platform_positions[0].clone();
            s.platform_positions.push(twin);
        }),
        ("snapshot.account.currency", |r| snapshot(r).account.as_mut().unwrap().currency = "gbp".into()),
        ("snapshot.account", |r| snapshot(r).account = None),
        ("result", |r| r.result = None),
    ];

    for (field, edit) in cases {
        let mut request = sync(
            user,
            "10000",
            vec![broker("1001", "XAUUSD", Buy, "0.5", "2350", "2355")],
            vec![platform("T-1", "XAUUSD", Buy, "0.5", "2350", "1001")],
        );
        edit(&mut request);
        let err = app.submit(request).await.expect_err(field);
        assert_eq!(bad_fields(&err), [field], "{err:?}");
    }

    assert_eq!(app.status(user).await.total_syncs, 0);
    assert_eq!(count(&app, "SELECT count(*) FROM syncs").await, 0);
    assert_eq!(count(&app, "SELECT count(*) FROM accounts").await, 0);
    assert_eq!(count(&app, "SELECT count(*) FROM events").await, 0);
}

#[tokio::test]
async fn a_snapshot_in_another_currency_than_the_account_is_rejected_and_not_recorded() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    app.submit(sync(user, "10000", vec![], vec![])).await.unwrap();

    let err = app.submit(sync_in(user, "USD", "10000", vec![], vec![])).await.unwrap_err();

    assert_eq!(code_and_reason(&err), (tonic::Code::FailedPrecondition, "CURRENCY_MISMATCH".into()), "{err:?}");
    let (_, _, metadata) = error_info(&err);
    assert_eq!((metadata["account_currency"].as_str(), metadata["reported_currency"].as_str()), ("GBP", "USD"));
    assert_eq!(app.status(user).await.total_syncs, 1);
}

#[tokio::test]
async fn submitting_a_sync_needs_the_sync_write_scope() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    for scopes in [&[][..], &[READ_ANY][..]] {
        let request = sync(user, "10000", vec![], vec![]);
        let err = app.recon().submit_broker_sync(authed(request, &token(user, scopes))).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{scopes:?}");
    }
    assert_eq!(app.status(user).await.total_syncs, 0);
}

#[tokio::test]
async fn fifty_concurrent_syncs_of_one_user_are_all_recorded_and_keep_the_highest_peak() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let mut equities: Vec<u32> = (0..50).map(|i| 10_000 + i * 10).collect();
    equities.sort_by_cached_key(|_| Uuid::new_v4());
    let gold = broker("1001", "XAUUSD", Buy, "0.5", "2350", "2355");
    // One reported finish time for all: none is older than another, so every one is applied (none superseded)
    // and they race for the account row in any order.
    let finished = ts(Utc::now());
    let requests: Vec<_> = equities
        .iter()
        .map(|e| pb::SubmitBrokerSyncRequest {
            finished_time: finished,
            ..sync(user, &e.to_string(), vec![gold.clone()], vec![mirror(&gold, "T-1")])
        })
        .collect();

    let responses = futures::future::join_all(requests.into_iter().map(|r| app.submit(r))).await;

    let sync_ids: HashSet<String> = responses.into_iter().map(|r| r.expect("every sync succeeds").sync_id).collect();
    assert_eq!(sync_ids.len(), 50);
    let status = app.status(user).await;
    assert_eq!((status.total_syncs, status.failed_syncs, status.open_positions_count), (50, 0, 1));
    let request = pb::GetDrawdownStatusRequest::default();
    let drawdown =
        app.guards().get_drawdown_status(authed(request, &token(user, &[]))).await.unwrap().into_inner().drawdown;
    let drawdown = drawdown.unwrap();
    assert_eq!((drawdown.peak_equity.as_str(), drawdown.level()), ("10490", pb::DrawdownLevel::Normal));
    let events = app.all_events(user).await;
    assert_eq!(of_type(&events, Ev::SyncCompleted).len(), 50);
    assert_eq!(of_type(&events, Ev::PositionOpened).len(), 1);
    assert_eq!(of_type(&events, Ev::DrawdownLevelChanged).len(), 1);
    let ids: HashSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), events.len());
    assert_eq!(events.len(), 52);
}

#[tokio::test]
async fn the_event_log_tells_the_story_of_a_sync_newest_first() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let first = app.submit(sync(user, "10000", vec![broker("1", "XAUUSD", Buy, "0.5", "2350", "2355")], vec![])).await;
    let first = first.unwrap();
    let second = app.submit(sync(user, "10000", vec![], vec![])).await.unwrap();

    let events = app.all_events(user).await;

    let story: Vec<(Ev, &str)> = events.iter().map(|e| (e.event_type(), e.sync_id.as_str())).collect();
    let (s1, s2) = (first.sync_id.as_str(), second.sync_id.as_str());
    assert_eq!(
        story,
        [
            (Ev::SyncCompleted, s2),
            (Ev::DivergenceResolved, s2),
            (Ev::PositionClosed, s2),
            (Ev::SyncCompleted, s1),
            (Ev::DrawdownLevelChanged, s1),
            (Ev::DivergenceDetected, s1),
            (Ev::PositionOpened, s1),
        ]
    );
    let order: Vec<_> = events
        .iter()
        .map(|e| {
            let t = e.occurred_time.unwrap();
            ((t.seconds, t.nanos), e.event_id.parse::<i64>().unwrap())
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] > w[1]), "strictly newest first: {order:?}");
    let opened = &events[6];
    assert_eq!((opened.symbol.as_str(), opened.details["position_identifier"].as_str()), ("XAUUSD", "1"));
    assert_eq!(events[5].details["kind"], "broker_only");
    assert_eq!((events[4].details["from"].as_str(), events[4].details["to"].as_str()), ("unknown", "normal"));
    assert_eq!(events[5].position_id, opened.position_id);
}

#[tokio::test]
async fn absent_values_in_event_details_are_left_out_rather_than_written_as_null() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    app.submit(sync(user, "10000", vec![broker("1", "XAUUSD", Buy, "0.5", "2350", "2355")], vec![])).await.unwrap();

    let events = app.all_events(user).await;

    let detected = of_type(&events, Ev::DivergenceDetected)[0];
    assert_eq!(detected.details["kind"], "broker_only");
    for key in ["broker_value", "platform_value", "difference_percent", "platform_trade_id"] {
        assert_eq!(detected.details.get(key).map_or("", String::as_str), "", "{key}: {:?}", detected.details);
    }
}

#[tokio::test]
async fn a_late_older_sync_is_superseded_counted_and_changes_nothing_not_even_the_peak() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let brokers =
        vec![broker("1", "XAUUSD", Buy, "0.5", "2350", "2355"), broker("3", "GBPUSD", Buy, "1", "1.25", "1.25")];
    let platforms =
        vec![platform("T-1", "XAUUSD", Buy, "0.6", "2350", "1"), platform("T-9", "USDJPY", Sell, "1", "150", "")];
    // Had it been applied: 1 matched (with a volume divergence), 1 broker-only, 1 missing: and a peak of 13000
    // that would put the account 23 % down, CRITICAL, with a countdown dated in the past.
    let mut older = sync(user, "13000", brokers, platforms);
    let five_seconds_ago = Utc::now() - Duration::seconds(5);
    older.started_time = ts(five_seconds_ago - Duration::milliseconds(300));
    older.finished_time = ts(five_seconds_ago);
    let newer = sync(user, "10000", vec![broker("2", "EURUSD", Sell, "1", "1.08", "1.08")], vec![]);

    app.submit(newer).await.unwrap();
    let response = app.submit(older).await.unwrap();

    assert_eq!(response.status(), pb::SyncStatus::Superseded);
    let counts = (
        response.matched_count,
        response.divergence_count,
        response.broker_only_count,
        response.missing_at_broker_count,
        response.divergences.len(),
    );
    assert_eq!(counts, (0, 0, 0, 0, 0), "the counts and the list agree: nothing was applied");
    let positions = app.open_positions(user).await;
    assert_eq!(positions.positions.iter().map(|p| p.position_identifier.as_str()).collect::<Vec<_>>(), ["2"]);
    assert_eq!(positions.account_equity, "10000");
    let status = app.status(user).await;
    assert_eq!((status.total_syncs, status.divergences_count), (2, 1), "only the newer sync's broker-only position");
    let newest = status.last_sync_time.unwrap();
    assert!(newest.seconds >= five_seconds_ago.timestamp() + 4, "the newer sync stays the last one");
    let drawdown = app.guard_status(user).await.drawdown.unwrap();
    assert_eq!((drawdown.peak_equity.as_str(), drawdown.equity.as_str()), ("10000", "10000"));
    assert_eq!((drawdown.drawdown_percent.as_str(), drawdown.level()), ("0", pb::DrawdownLevel::Normal));
    let events = app.all_events(user).await;
    let superseded: Vec<_> =
        of_type(&events, Ev::SyncCompleted).into_iter().filter(|e| e.details["superseded"] == "true").collect();
    assert_eq!(superseded.len(), 1);
    assert!(superseded[0].message.starts_with("sync superseded"), "{}", superseded[0].message);
    let detected = of_type(&events, Ev::DivergenceDetected);
    assert_eq!(detected.len(), 1, "only the newer sync's broker-only position");
    assert_eq!(detected[0].details["kind"], "broker_only");
    assert_eq!(of_type(&events, Ev::DrawdownLevelChanged).len(), 1, "only unknown -> normal, from the newer sync");
}
