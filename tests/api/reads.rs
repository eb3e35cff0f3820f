//! Read RPCs: semantics, owner scoping, scopes, paging and bad input.

use std::collections::HashSet;

use tonic::Code;
use trading_monitor::pb;
use trading_monitor::pb::Side::{Buy, Sell};
use uuid::Uuid;

use trading_testkit::*;

#[tokio::test]
async fn a_user_who_never_synced_is_never_synced_with_no_invented_times() {
    let app = spawn_app().await;
    let status = app.status(Uuid::new_v4()).await;
    assert_eq!(status.state(), pb::ReconciliationState::NeverSynced);
    assert_eq!(status.total_syncs, 0);
    assert!(status.last_sync_time.is_none());
    assert!(status.last_sync_duration.is_none());
    assert!(status.last_successful_sync_time.is_none());
    assert!(status.as_of.is_some());
}

#[tokio::test]
async fn open_and_matched_counts_differ_when_a_position_is_unmatched() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let gold = broker("1", "XAUUSD", Buy, "1", "2000", "2010");
    let manual = broker("2", "EURUSD", Sell, "1", "1.1", "1.1");
    app.submit(sync(user, "10000", vec![gold, manual], vec![platform("P1", "XAUUSD", Buy, "1", "2000", "1")]))
        .await
        .unwrap();

    let status = app.status(user).await;
    assert_eq!(status.total_syncs, 1);
    assert_eq!(status.open_positions_count, 2);
    assert_eq!(status.matched_positions_count, 1);
    assert_eq!(status.divergences_count, 1, "the manual trade is BROKER_ONLY");
    assert_eq!(status.state(), pb::ReconciliationState::Warning);
    assert!(status.last_sync_time.is_some() && status.last_sync_duration.is_some());
    assert_eq!(status.last_sync_duration.unwrap().nanos, 400_000_000);
}

#[tokio::test]
async fn recent_events_default_to_five_and_the_limit_is_validated() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    for _ in 0..4 {
        app.submit(sync(user, "10000", vec![], vec![])).await.unwrap();
    }
    // 4 syncs + 1 drawdown level change (unknown -> normal).
    let me = token(user, &[]);
    let default = pb::GetReconciliationStatusRequest { user_id: String::new(), recent_events_limit: 0 };
    let status = app.recon().get_reconciliation_status(authed(default, &me)).await.unwrap().into_inner();
    assert_eq!(status.recent_events.len(), 5);
    assert_eq!(status.state(), pb::ReconciliationState::Idle);

    let negative = pb::GetReconciliationStatusRequest { user_id: String::new(), recent_events_limit: -1 };
    let err = app.recon().get_reconciliation_status(authed(negative, &me)).await.unwrap_err();
    assert_eq!(bad_fields(&err), ["recent_events_limit"]);

    let huge = pb::GetReconciliationStatusRequest { user_id: String::new(), recent_events_limit: 1_000_000 };
    let capped = app.recon().get_reconciliation_status(authed(huge, &me)).await.unwrap().into_inner();
    assert_eq!(capped.recent_events.len(), 5, "capped at 100, and only 5 exist");
}

/// Inserts `n` events for `user` sharing only `n / 12` distinct timestamps, so paging must break ties by id.
async fn seed_events(app: &TestApp, user: Uuid, n: i64) {
    sqlx::query(
        "INSERT INTO events (user_id, event_type, occurred_at, message)
         SELECT $1, CASE WHEN g % 3 = 0 THEN 'sync_failed' ELSE 'sync_completed' END,
                now() - make_interval(secs => (g / 12)), 'seeded ' || g
         FROM generate_series(1, $2) AS g",
    )
    .bind(user)
    .bind(n)
    .execute(&app.pool)
    .await
    .unwrap();
}

async fn walk(
    app: &TestApp,
    user: Uuid,
    mut request: pb::ListReconciliationEventsRequest,
) -> Vec<pb::ReconciliationEvent> {
    let me = token(user, &[]);
    let mut events = Vec::new();
    loop {
        let page = app.recon().list_reconciliation_events(authed(request.clone(), &me)).await.unwrap().into_inner();
        assert!(page.events.len() <= request.page_size.max(1) as usize);
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return events;
        }
        request.page_token = page.next_page_token;
    }
}

fn assert_newest_first(events: &[pb::ReconciliationEvent]) {
    let keys: Vec<(i64, i32, i64)> = events
        .iter()
        .map(|e| {
            let t = e.occurred_time.unwrap();
            (t.seconds, t.nanos, e.event_id.parse().unwrap())
        })
        .collect();
    assert!(keys.windows(2).all(|w| w[0] > w[1]), "not strictly newest first");
}

#[tokio::test]
async fn a_full_walk_returns_every_event_exactly_once_in_order() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    seed_events(&app, user, 120).await;
    seed_events(&app, Uuid::new_v4(), 30).await; // someone else's, never returned

    let events = walk(&app, user, pb::ListReconciliationEventsRequest { page_size: 7, ..Default::default() }).await;
    assert_eq!(events.len(), 120);
    let ids: HashSet<_> = events.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(ids.len(), 120, "no duplicates");
    assert_newest_first(&events);
    assert!(events.iter().all(|e| e.user_id == user.to_string()));
}

#[tokio::test]
async fn event_walks_filter_by_type_and_time_window() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    seed_events(&app, user, 120).await;

    let failed = walk(
        &app,
        user,
        pb::ListReconciliationEventsRequest {
            page_size: 9,
            event_types: vec![pb::EventType::SyncFailed.into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(failed.len(), 40);
    assert!(failed.iter().all(|e| e.event_type() == pb::EventType::SyncFailed));
    assert_newest_first(&failed);

    let all = walk(&app, user, pb::ListReconciliationEventsRequest { page_size: 500, ..Default::default() }).await;
    let start = all[100].occurred_time;
    let end = all[20].occurred_time;
    let window = walk(
        &app,
        user,
        pb::ListReconciliationEventsRequest { page_size: 11, start_time: start, end_time: end, ..Default::default() },
    )
    .await;
    let expected: Vec<_> = all
        .iter()
        .filter(|e| {
            let t = e.occurred_time.unwrap();
            let (s, en) = (start.unwrap(), end.unwrap());
            (t.seconds, t.nanos) >= (s.seconds, s.nanos) && (t.seconds, t.nanos) < (en.seconds, en.nanos)
        })
        .map(|e| e.event_id.clone())
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(window.iter().map(|e| e.event_id.clone()).collect::<Vec<_>>(), expected);
}

#[tokio::test]
async fn bad_paging_input_is_invalid_argument_naming_the_field() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    seed_events(&app, user, 20).await;
    let me = token(user, &[]);
    let list = |r: pb::ListReconciliationEventsRequest| {
        let mut client = app.recon();
        let me = me.clone();
        async move { client.list_reconciliation_events(authed(r, &me)).await }
    };

    let err = list(pb::ListReconciliationEventsRequest { page_size: -5, ..Default::default() }).await.unwrap_err();
    assert_eq!(bad_fields(&err), ["page_size"]);
    let err = list(pb::ListReconciliationEventsRequest { page_token: "garbage!".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), ["page_token"]);
    let err =
        list(pb::ListReconciliationEventsRequest { event_types: vec![0], ..Default::default() }).await.unwrap_err();
    assert_eq!(bad_fields(&err), ["event_types[0]"]);

    // A token is bound to the filters that produced it.
    let first = list(pb::ListReconciliationEventsRequest { page_size: 5, ..Default::default() }).await.unwrap();
    let token_for_all = first.into_inner().next_page_token;
    let err = list(pb::ListReconciliationEventsRequest {
        page_size: 5,
        page_token: token_for_all,
        event_types: vec![pb::EventType::SyncFailed.into()],
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(bad_fields(&err), ["page_token"]);
}

#[tokio::test]
async fn open_positions_page_with_totals_over_all_pages_and_filter_by_symbol() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let mut brokers = Vec::new();
    for i in 0..5 {
        let mut p = broker(&format!("{i}"), if i % 2 == 0 { "XAUUSD" } else { "EURUSD" }, Buy, "1", "100", "100");
        p.profit = format!("{}.50", i + 1);
        p.open_time = ts(chrono::Utc::now() - chrono::Duration::minutes(60 - i));
        brokers.push(p);
    }
    app.submit(sync(user, "1000", brokers, vec![])).await.unwrap();
    let me = token(user, &[]);

    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = pb::ListOpenPositionsRequest { page_size: 2, page_token, ..Default::default() };
        let page = app.positions().list_open_positions(authed(request, &me)).await.unwrap().into_inner();
        assert!(page.positions.len() <= 2);
        assert_eq!(page.total_count, 5);
        assert_eq!(page.total_unrealized_pnl, "17.50", "1.5+2.5+3.5+4.5+5.5 on every page");
        assert_eq!(page.total_unrealized_pnl_percent, "1.75", "of equity 1000");
        assert_eq!(page.account_currency, "GBP");
        seen.extend(page.positions.into_iter().map(|p| p.position_identifier));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen, ["0", "1", "2", "3", "4"], "oldest entry first, each once");

    let gold = pb::ListOpenPositionsRequest { symbol: "XAUUSD".into(), ..Default::default() };
    let page = app.positions().list_open_positions(authed(gold, &me)).await.unwrap().into_inner();
    assert_eq!(page.positions.iter().map(|p| p.position_identifier.as_str()).collect::<Vec<_>>(), ["0", "2", "4"]);
    assert_eq!(page.total_unrealized_pnl, "10.50");

    let bad = pb::ListOpenPositionsRequest { symbol: "xau usd".into(), ..Default::default() };
    let err = app.positions().list_open_positions(authed(bad, &me)).await.unwrap_err();
    assert_eq!(bad_fields(&err), ["symbol"]);
}

#[tokio::test]
async fn a_position_of_another_user_is_not_found() {
    let app = spawn_app().await;
    let (owner, stranger) = (Uuid::new_v4(), Uuid::new_v4());
    app.submit(sync(owner, "1000", vec![broker("9", "XAUUSD", Buy, "1", "2000", "2000")], vec![])).await.unwrap();
    let id = app.open_positions(owner).await.positions[0].position_id.clone();

    let mine = pb::GetPositionRequest { position_id: id.clone(), user_id: String::new() };
    let found = app.positions().get_position(authed(mine.clone(), &token(owner, &[]))).await.unwrap().into_inner();
    assert_eq!(found.position.unwrap().position_identifier, "9");

    let err = app.positions().get_position(authed(mine, &token(stranger, &[]))).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // A service with read:any must name the owner.
    let named = pb::GetPositionRequest { position_id: id, user_id: owner.to_string() };
    let ok = app.positions().get_position(authed(named, &token(stranger, &[READ_ANY]))).await;
    assert!(ok.is_ok());

    let missing = pb::GetPositionRequest { position_id: Uuid::new_v4().to_string(), user_id: String::new() };
    assert_eq!(
        app.positions().get_position(authed(missing, &token(owner, &[]))).await.unwrap_err().code(),
        Code::NotFound
    );
    let malformed = pb::GetPositionRequest { position_id: "42".into(), user_id: String::new() };
    let err = app.positions().get_position(authed(malformed, &token(owner, &[]))).await.unwrap_err();
    assert_eq!(bad_fields(&err), ["position_id"]);
}

#[tokio::test]
async fn naming_another_user_needs_the_read_any_scope() {
    let app = spawn_app().await;
    let (caller, other) = (Uuid::new_v4(), Uuid::new_v4());
    let request = || pb::GetGuardStatusRequest { user_id: other.to_string() };

    let err = app.guards().get_guard_status(authed(request(), &token(caller, &[]))).await.unwrap_err();
    assert_eq!(code_and_reason(&err), (Code::PermissionDenied, "SCOPE_MISSING".into()));
    assert_eq!(error_info(&err).2["scope"], "trading:read:any");
    let err = app.guards().get_guard_status(authed(request(), &token(caller, &[SYNC_WRITE]))).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(app.guards().get_guard_status(authed(request(), &token(caller, &[READ_ANY]))).await.is_ok());

    // Naming yourself needs nothing, by id or as `me`; a malformed id is the field's fault.
    let me = pb::GetDrawdownStatusRequest { user_id: caller.to_string() };
    assert!(app.guards().get_drawdown_status(authed(me, &token(caller, &[]))).await.is_ok());
    app.submit(sync(caller, "1000", vec![broker("7", "XAUUSD", Buy, "1", "2000", "2000")], vec![])).await.unwrap();
    let by_alias = pb::ListOpenPositionsRequest { user_id: "me".into(), ..Default::default() };
    let mine = app.positions().list_open_positions(authed(by_alias, &token(caller, &[]))).await.unwrap().into_inner();
    assert_eq!(mine.positions.len(), 1);
    assert_eq!(mine.positions[0].user_id, caller.to_string());
    let status = pb::GetReconciliationStatusRequest { user_id: "me".into(), ..Default::default() };
    let status = app.recon().get_reconciliation_status(authed(status, &token(caller, &[]))).await.unwrap();
    assert_eq!(status.into_inner().user_id, caller.to_string());
    let bad = pb::GetDrawdownStatusRequest { user_id: "not-a-uuid".into() };
    let err = app.guards().get_drawdown_status(authed(bad, &token(caller, &[]))).await.unwrap_err();
    assert_eq!(bad_fields(&err), ["user_id"]);
}

#[tokio::test]
async fn guard_reads_of_a_new_user_are_healthy_and_unknown() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let status = app.guard_status(user).await;
    assert_eq!(status.system_status(), pb::SystemStatus::Healthy);
    assert_eq!(status.drawdown.unwrap().level(), pb::DrawdownLevel::Unknown);
    assert!(status.market_alerts.is_empty());
    assert!(!status.any_positions_should_close);
    assert!(at(&status.evaluated_time) >= at(&status.as_of), "evaluated when served, on data read earlier");

    let bad = pb::ListMarketAlertsRequest { symbol: "BTC/USD".into(), ..Default::default() };
    let err = app.guards().list_market_alerts(authed(bad, &token(user, &[]))).await.unwrap_err();
    assert_eq!(bad_fields(&err), ["symbol"]);
}
