//! Quotes and the market/drawdown guards.

use chrono::{Duration, Utc};
use pb::AlertSeverity as Severity;
use pb::DrawdownLevel as Level;
use pb::MarketAlertKind as AlertKind;
use pb::SystemStatus as System;
use trading_monitor::pb;
use uuid::Uuid;

use trading_testkit::*;

fn candles(candle_closes: Vec<pb::CandleClose>) -> pb::SubmitQuotesRequest {
    pb::SubmitQuotesRequest { quotes: vec![], candle_closes }
}

/// A quote stamped `seconds` ago (negative: in the future).
fn aged(seconds: i64, q: pb::Quote) -> pb::Quote {
    pb::Quote { quote_time: ts(Utc::now() - Duration::seconds(seconds)), ..q }
}

/// Syncs `user` at this equity, holding one buy position in each symbol.
async fn hold(app: &TestApp, user: Uuid, equity: &str, symbols: &[&str]) {
    let brokers = symbols.iter().enumerate().map(|(i, s)| broker(&i.to_string(), s, pb::Side::Buy, "1", "100", "100"));
    app.submit(sync(user, equity, brokers.collect(), vec![])).await.unwrap();
}

/// The same sync, as if it had finished `seconds` ago.
fn finished_ago(seconds: i64, request: pb::SubmitBrokerSyncRequest) -> pb::SubmitBrokerSyncRequest {
    let finished = Utc::now() - Duration::seconds(seconds);
    pb::SubmitBrokerSyncRequest {
        started_time: ts(finished - Duration::seconds(1)),
        finished_time: ts(finished),
        ..request
    }
}

async fn drawdown(app: &TestApp, user: Uuid) -> pb::DrawdownStatus {
    let request = pb::GetDrawdownStatusRequest::default();
    let response = app.guards().get_drawdown_status(authed(request, &token(user, &[]))).await.unwrap();
    response.into_inner().drawdown.unwrap()
}

async fn alerts(app: &TestApp, user: Uuid, symbol: &str) -> Result<pb::ListMarketAlertsResponse, tonic::Status> {
    let request = pb::ListMarketAlertsRequest { symbol: symbol.into(), ..Default::default() };
    app.guards().list_market_alerts(authed(request, &token(user, &[]))).await.map(|r| r.into_inner())
}

type AlertSummary<'a> = (&'a str, AlertKind, Severity, &'a str, &'a str, bool);

fn summary(a: &pb::MarketAlert) -> AlertSummary<'_> {
    (&a.symbol, a.kind(), a.severity(), &a.value_percent, &a.threshold_percent, a.should_close_positions)
}

fn summaries(alerts: &[pb::MarketAlert]) -> Vec<AlertSummary<'_>> {
    alerts.iter().map(summary).collect()
}

fn of_type(events: &[pb::ReconciliationEvent], t: pb::EventType) -> Vec<&pb::ReconciliationEvent> {
    events.iter().filter(|e| e.event_type() == t).collect()
}

async fn count(app: &TestApp, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&app.pool).await.unwrap()
}

#[tokio::test]
async fn drawdown_levels_follow_equity_with_hysteresis_and_each_change_is_an_event() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let steps = [
        ("10000", Level::Normal, "0"),
        ("8500", Level::Warning, "15"),
        ("8000", Level::Critical, "20"),
        ("8050", Level::Critical, "19.50"), // above 20 - 1: stays
        ("8150", Level::Warning, "18.50"),  // below 19: leaves CRITICAL, still >= 15 - 1
        ("8550", Level::Warning, "14.50"),  // above 14: stays
        ("8700", Level::Normal, "13"),
    ];
    let mut critical_since = None;

    for (equity, level, percent) in steps {
        app.submit(sync(user, equity, vec![], vec![])).await.unwrap();
        let d = drawdown(&app, user).await;
        let seen = (d.level(), d.drawdown_percent.as_str(), d.equity.as_str(), d.peak_equity.as_str());
        assert_eq!(seen, (level, percent, equity, "10000"), "at equity {equity}");
        assert_eq!(d.should_close_all, level == Level::Critical, "at equity {equity}");
        if level == Level::Critical {
            let left = d.time_to_liquidation.expect("a countdown while CRITICAL");
            assert!((5..10).contains(&left.seconds), "{left:?}");
            // Staying CRITICAL does not restart the countdown.
            assert_eq!(critical_since.get_or_insert(d.level_since_time), &d.level_since_time);
        } else {
            assert_eq!(d.time_to_liquidation, None, "at equity {equity}");
        }
    }

    let events = app.all_events(user).await;
    let changes: Vec<_> = of_type(&events, pb::EventType::DrawdownLevelChanged)
        .iter()
        .rev()
        .map(|e| (e.details["from"].as_str(), e.details["to"].as_str(), e.details["drawdown_percent"].as_str()))
        .collect();
    assert_eq!(
        changes,
        [
            ("unknown", "normal", "0"),
            ("normal", "warning", "15"),
            ("warning", "critical", "20"),
            ("critical", "warning", "18.50"),
            ("warning", "normal", "13"),
        ]
    );
}

#[tokio::test]
async fn equity_below_the_minimum_is_critical_whatever_the_drawdown() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    app.submit(sync(user, "105", vec![], vec![])).await.unwrap();
    assert_eq!(drawdown(&app, user).await.level(), Level::Normal);

    app.submit(sync(user, "99", vec![], vec![])).await.unwrap();

    let d = drawdown(&app, user).await;
    assert_eq!((d.level(), d.drawdown_percent.as_str(), d.min_equity.as_str()), (Level::Critical, "5.7143", "100"));
    assert!(d.should_close_all);
    let guard = app.guard_status(user).await;
    assert_eq!((guard.system_status(), guard.any_positions_should_close), (System::Critical, true));
}

#[tokio::test]
async fn the_liquidation_countdown_starts_when_the_service_learns_of_the_level_and_runs_out_to_zero() {
    // A 1 s countdown, and no cache: this test reads the countdown as time passes.
    let app = spawn_app_with(|args| {
        args.rules.pre_liquidation = std::time::Duration::from_secs(1);
        args.cache.cache_disabled = true;
    })
    .await;
    let user = Uuid::new_v4();
    app.submit(finished_ago(40, sync(user, "10000", vec![], vec![]))).await.unwrap();
    // Reported 20 s ago: a countdown dated by the client's clock would already be over when anyone sees it.
    let entered = finished_ago(20, sync(user, "7000", vec![], vec![]));
    let entered_at = entered.finished_time;
    let before = Utc::now();

    app.submit(entered).await.unwrap();

    let d = drawdown(&app, user).await;
    assert_eq!((d.level(), d.should_close_all), (Level::Critical, true));
    let left = d.time_to_liquidation.expect("a countdown while CRITICAL");
    assert!(left.seconds == 0 && left.nanos > 0, "most of the 1 s countdown is left: {left:?}");
    let since = d.level_since_time.unwrap();
    assert!(since.seconds >= before.timestamp(), "the level change is dated by the server's clock");
    // The equity's own time stays the reported one (PostgreSQL keeps microseconds).
    let micros = |t: Option<prost_types::Timestamp>| t.map(|t| (t.seconds, t.nanos / 1000));
    assert_eq!(micros(d.equity_time), micros(entered_at));
    let change = app.all_events(user).await.into_iter().find(|e| e.event_type() == pb::EventType::DrawdownLevelChanged);
    let change = change.expect("a level change event");
    assert!(change.occurred_time.unwrap().seconds >= before.timestamp(), "events are dated by the server too");
    assert!(change.details["equity_time"].starts_with(&entered_at_text(entered_at)), "{:?}", change.details);

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let d = drawdown(&app, user).await;
    assert_eq!(d.time_to_liquidation, Some(prost_types::Duration { seconds: 0, nanos: 0 }));
}

/// The first 19 characters (seconds precision) of a timestamp in RFC 3339, as event details write times.
fn entered_at_text(t: Option<prost_types::Timestamp>) -> String {
    let t = t.unwrap();
    let at = chrono::DateTime::from_timestamp(t.seconds, 0).unwrap();
    at.to_rfc3339()[..19].to_owned()
}

#[tokio::test]
async fn a_never_synced_account_has_an_unknown_drawdown_and_a_healthy_guard() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();

    let guard = app.guard_status(user).await;

    let d = guard.drawdown.as_ref().unwrap();
    assert_eq!(d.level(), Level::Unknown);
    assert_eq!((d.equity.as_str(), d.peak_equity.as_str(), d.drawdown_percent.as_str()), ("", "", ""));
    let thresholds =
        (d.warning_threshold_percent.as_str(), d.critical_threshold_percent.as_str(), d.min_equity.as_str());
    assert_eq!(thresholds, ("15", "20", "100"));
    assert!(!d.should_close_all && d.time_to_liquidation.is_none() && d.level_since_time.is_none());
    assert_eq!((guard.system_status(), guard.any_positions_should_close), (System::Healthy, false));
    assert!(guard.market_alerts.is_empty());
}

#[tokio::test]
async fn a_price_gap_raises_regrades_and_clears_an_alert_for_the_holders_only() {
    let app = spawn_app().await;
    let (holder, bystander) = (Uuid::new_v4(), Uuid::new_v4());
    hold(&app, holder, "10000", &["BTCUSD"]).await;
    hold(&app, bystander, "10000", &["XAUUSD"]).await;
    app.quote(quotes(vec![quote("BTCUSD", "65000", "65010"), quote("XAUUSD", "2000", "2000.5")])).await.unwrap();

    let raised = app.quote(candles(vec![candle("BTCUSD", "65000", "68500")])).await.unwrap();

    assert_eq!((raised.accepted_quotes, raised.accepted_candle_closes, raised.cleared_alerts_count), (0, 1, 0));
    assert_eq!(
        summaries(&raised.raised_alerts),
        [("BTCUSD", AlertKind::PriceGap, Severity::Warning, "5.3846", "5", true)]
    );
    let listed = alerts(&app, holder, "").await.unwrap();
    assert_eq!(listed.alerts, raised.raised_alerts);
    assert!(listed.any_positions_should_close);
    assert!(alerts(&app, bystander, "").await.unwrap().alerts.is_empty());

    let regraded = app.quote(candles(vec![candle("BTCUSD", "65000", "72000")])).await.unwrap();

    let critical = ("BTCUSD", AlertKind::PriceGap, Severity::Critical, "10.7692", "10", true);
    assert_eq!(summaries(&regraded.raised_alerts), [critical]);
    let guard = app.guard_status(holder).await;
    assert_eq!(summaries(&guard.market_alerts), [critical]);
    assert_eq!((guard.system_status(), guard.any_positions_should_close), (System::Critical, true));

    let cleared = app.quote(candles(vec![candle("BTCUSD", "65000", "65500")])).await.unwrap();

    assert_eq!((cleared.raised_alerts.len(), cleared.cleared_alerts_count), (0, 1));
    let guard = app.guard_status(holder).await;
    assert!(guard.market_alerts.is_empty());
    assert_eq!((guard.system_status(), guard.any_positions_should_close), (System::Healthy, false));
    let events = app.all_events(holder).await;
    let raised_events = of_type(&events, pb::EventType::MarketAlertRaised);
    let severities: Vec<_> = raised_events.iter().rev().map(|e| e.details["severity"].as_str()).collect();
    assert_eq!(severities, ["warning", "critical"]);
    assert!(raised_events.iter().all(|e| e.symbol == "BTCUSD" && e.details["kind"] == "price_gap"));
    let last_cleared = of_type(&events, pb::EventType::MarketAlertCleared)[0];
    assert_eq!(last_cleared.details["alert_id"], regraded.raised_alerts[0].alert_id);
    let bystander_events = app.all_events(bystander).await;
    assert!(of_type(&bystander_events, pb::EventType::MarketAlertRaised).is_empty());
    assert!(of_type(&bystander_events, pb::EventType::MarketAlertCleared).is_empty());
}

#[tokio::test]
async fn a_wide_spread_on_a_held_symbol_is_a_warning_then_critical_and_a_normal_spread_clears_it() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    hold(&app, user, "10000", &["XAUUSD"]).await;

    let at_threshold = app.quote(quotes(vec![quote("XAUUSD", "2000", "2010")])).await.unwrap();
    assert!(at_threshold.raised_alerts.is_empty(), "0.5 % is not above the 0.5 % warning threshold");

    let warning = app.quote(quotes(vec![quote("XAUUSD", "2000", "2012")])).await.unwrap();
    let critical = app.quote(quotes(vec![quote("XAUUSD", "2000", "2020")])).await.unwrap();
    let listed = alerts(&app, user, "").await.unwrap();
    let normal = app.quote(quotes(vec![quote("XAUUSD", "2000", "2000.50")])).await.unwrap();

    assert_eq!(
        summaries(&warning.raised_alerts),
        [("XAUUSD", AlertKind::WideSpread, Severity::Warning, "0.60", "0.5", true)]
    );
    let critical_alert = ("XAUUSD", AlertKind::WideSpread, Severity::Critical, "1", "1", true);
    assert_eq!(summaries(&critical.raised_alerts), [critical_alert]);
    assert_eq!(summaries(&listed.alerts), [critical_alert]);
    assert_eq!((normal.raised_alerts.len(), normal.cleared_alerts_count), (0, 1));
    assert!(alerts(&app, user, "").await.unwrap().alerts.is_empty());
}

#[tokio::test]
async fn a_held_symbol_without_a_recent_quote_is_stale() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    hold(&app, user, "10000", &["XAUUSD"]).await;

    let never = alerts(&app, user, "").await.unwrap();

    assert_eq!(summaries(&never.alerts), [("XAUUSD", AlertKind::StaleQuote, Severity::Warning, "", "", true)]);
    let stale = &never.alerts[0];
    assert_eq!((stale.alert_id.as_str(), stale.quote_age, stale.raised_time), ("", None, None));
    assert!(never.any_positions_should_close);

    let old = aged(120, quote("XAUUSD", "2000", "2000.50"));
    let quote_time = old.quote_time.unwrap();
    app.quote(quotes(vec![old])).await.unwrap();
    let listed = alerts(&app, user, "").await.unwrap();
    assert_eq!(listed.alerts.len(), 1);
    let age = listed.alerts[0].quote_age.unwrap();
    assert!((120..130).contains(&age.seconds), "{age:?}");
    assert_eq!(listed.alerts[0].raised_time.unwrap().seconds, quote_time.seconds + 60);

    app.quote(quotes(vec![aged(30, quote("XAUUSD", "2000", "2000.50"))])).await.unwrap();
    let recent = alerts(&app, user, "").await.unwrap();
    assert!(recent.alerts.is_empty() && !recent.any_positions_should_close, "{recent:?}");
}

#[tokio::test]
async fn the_guard_status_combines_drawdown_and_alerts_for_held_symbols_only() {
    let app = spawn_app().await;
    let (user, flat) = (Uuid::new_v4(), Uuid::new_v4());
    hold(&app, user, "10000", &["XAUUSD", "BTCUSD"]).await;
    hold(&app, user, "8500", &["XAUUSD", "BTCUSD"]).await;
    let fresh =
        vec![quote("XAUUSD", "2000", "2000.5"), quote("BTCUSD", "65000", "65010"), quote("EURUSD", "1.08", "1.08")];
    app.quote(quotes(fresh)).await.unwrap();

    let guard = app.guard_status(user).await;
    assert_eq!(guard.drawdown.as_ref().unwrap().level(), Level::Warning);
    assert_eq!((guard.system_status(), guard.any_positions_should_close), (System::Warning, false));
    assert!(guard.market_alerts.is_empty());

    app.quote(quotes(vec![quote("XAUUSD", "2000", "2012"), quote("EURUSD", "1.0000", "1.0200")])).await.unwrap();
    let guard = app.guard_status(user).await;
    let spread = ("XAUUSD", AlertKind::WideSpread, Severity::Warning, "0.60", "0.5", true);
    assert_eq!(summaries(&guard.market_alerts), [spread], "the EURUSD spread is not the user's concern");
    assert_eq!((guard.system_status(), guard.any_positions_should_close), (System::Warning, true));

    app.quote(candles(vec![candle("BTCUSD", "65000", "72000")])).await.unwrap();
    let guard = app.guard_status(user).await;
    let gap = ("BTCUSD", AlertKind::PriceGap, Severity::Critical, "10.7692", "10", true);
    assert_eq!(summaries(&guard.market_alerts), [gap, spread], "most severe first");
    assert_eq!((guard.system_status(), guard.any_positions_should_close), (System::Critical, true));

    assert_eq!(summaries(&alerts(&app, user, "XAUUSD").await.unwrap().alerts), [spread]);
    let not_held = alerts(&app, user, "EURUSD").await.unwrap();
    assert!(not_held.alerts.is_empty() && !not_held.any_positions_should_close);
    assert_eq!(bad_fields(&alerts(&app, user, "xau").await.unwrap_err()), ["symbol"]);

    app.submit(sync(flat, "10000", vec![], vec![])).await.unwrap();
    app.submit(sync(flat, "7000", vec![], vec![])).await.unwrap();
    let guard = app.guard_status(flat).await;
    assert!(guard.market_alerts.is_empty());
    assert_eq!((guard.system_status(), guard.any_positions_should_close), (System::Critical, true));
}

#[tokio::test]
async fn an_invalid_quote_batch_names_the_entry_and_field_and_writes_nothing() {
    let app = spawn_app().await;
    // A 1.5 % spread: a critical alert if it were ever written.
    let wide = || quote("XAUUSD", "2000", "2030");
    let with_candle = |c: pb::CandleClose| pb::SubmitQuotesRequest { quotes: vec![wide()], candle_closes: vec![c] };
    let cases: Vec<(&str, pb::SubmitQuotesRequest)> = vec![
        ("quotes[0].bid", quotes(vec![quote("XAUUSD", "0", "1")])),
        ("quotes[1].bid", quotes(vec![wide(), quote("EURUSD", "-1.08", "1.08")])),
        ("quotes[1].bid", quotes(vec![wide(), quote("EURUSD", "1e3", "1.08")])),
        ("quotes[1].ask", quotes(vec![wide(), quote("EURUSD", "1.0801", "1.0800")])),
        ("quotes[0].symbol", quotes(vec![quote("xau", "1", "1")])),
        ("quotes[1].quote_time", quotes(vec![wide(), aged(-60, quote("EURUSD", "1.08", "1.08"))])),
        ("quotes[1].quote_time", quotes(vec![wide(), pb::Quote { quote_time: None, ..quote("EURUSD", "1", "1") }])),
        ("quotes", pb::SubmitQuotesRequest::default()),
        ("candle_closes[0].previous_close", with_candle(candle("BTCUSD", "0", "65000"))),
        ("candle_closes[0].open", with_candle(candle("BTCUSD", "65000", "abc"))),
    ];
    for (field, batch) in cases {
        let err = app.quote(batch).await.expect_err(field);
        assert_eq!(bad_fields(&err), [field], "{err:?}");
        assert_eq!(error_info(&err).2.get("field").map(String::as_str), Some(field), "{err:?}");
    }
    // Well-formed, but no such instrument: a precondition on the service's state, not a malformed field.
    let unknown = [
        ("quotes[1].symbol", quotes(vec![wide(), quote("ZZZZZZ", "1", "1")])),
        ("candle_closes[0].symbol", with_candle(candle("ZZZZZZ", "1", "2"))),
    ];
    for (field, batch) in unknown {
        let err = app.quote(batch).await.expect_err(field);
        assert_eq!(code_and_reason(&err), (tonic::Code::FailedPrecondition, "UNKNOWN_SYMBOL".into()), "{err:?}");
        let (_, _, metadata) = error_info(&err);
        assert_eq!((metadata["symbol"].as_str(), metadata["field"].as_str()), ("ZZZZZZ", field));
    }

    assert_eq!(count(&app, "SELECT count(*) FROM latest_quotes").await, 0);
    assert_eq!(count(&app, "SELECT count(*) FROM candle_closes").await, 0);
    assert_eq!(count(&app, "SELECT count(*) FROM market_alerts").await, 0);
    let accepted = app.quote(quotes(vec![quote("XAUUSD", "2000", "2000"), wide()])).await.unwrap();
    assert_eq!(accepted.accepted_quotes, 2, "ask equal to bid is valid");
}

#[tokio::test]
async fn submitting_quotes_needs_the_sync_write_scope() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    for scopes in [&[][..], &[READ_ANY][..]] {
        let batch = quotes(vec![quote("XAUUSD", "2000", "2030")]);
        let err = app.guards().submit_quotes(authed(batch, &token(user, scopes))).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{scopes:?}");
    }
    assert_eq!(count(&app, "SELECT count(*) FROM latest_quotes").await, 0);
}

#[tokio::test]
async fn market_alerts_page_most_severe_first_and_a_token_only_fits_its_filter() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    hold(&app, user, "10000", &["XAUUSD", "BTCUSD", "EURUSD", "GBPUSD"]).await;
    // BTCUSD: a critical gap; XAUUSD and EURUSD: warning spreads; GBPUSD: a fresh, tight quote (no alert).
    app.quote(quotes(vec![
        quote("XAUUSD", "2000", "2012"),
        quote("EURUSD", "1.0000", "1.0060"),
        quote("GBPUSD", "1.2600", "1.2601"),
        quote("BTCUSD", "65000", "65010"),
    ]))
    .await
    .unwrap();
    app.quote(candles(vec![candle("BTCUSD", "65000", "72000")])).await.unwrap();
    let everything = alerts(&app, user, "").await.unwrap();
    let expected: Vec<(String, AlertKind)> = everything.alerts.iter().map(|a| (a.symbol.clone(), a.kind())).collect();
    assert_eq!(
        expected,
        [
            ("BTCUSD".into(), AlertKind::PriceGap),
            ("EURUSD".into(), AlertKind::WideSpread),
            ("XAUUSD".into(), AlertKind::WideSpread)
        ]
    );
    assert!(everything.next_page_token.is_empty(), "the default page holds them all");

    let mut walked = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let request = pb::ListMarketAlertsRequest { page_size: 1, page_token: token.clone(), ..Default::default() };
        let page = app.guards().list_market_alerts(authed(request, &token_for(user))).await.unwrap().into_inner();
        assert!(page.alerts.len() <= 1);
        assert!(page.any_positions_should_close, "the verdict covers every page");
        walked.extend(page.alerts.iter().map(|a| (a.symbol.clone(), a.kind())));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(walked, expected);

    let first = pb::ListMarketAlertsRequest { page_size: 1, ..Default::default() };
    let token = app.guards().list_market_alerts(authed(first, &token_for(user))).await.unwrap().into_inner();
    let other_filter = pb::ListMarketAlertsRequest {
        symbol: "XAUUSD".into(),
        page_token: token.next_page_token,
        ..Default::default()
    };
    let err = app.guards().list_market_alerts(authed(other_filter, &token_for(user))).await.unwrap_err();
    assert_eq!(bad_fields(&err), ["page_token"]);
    let negative = pb::ListMarketAlertsRequest { page_size: -1, ..Default::default() };
    let err = app.guards().list_market_alerts(authed(negative, &token_for(user))).await.unwrap_err();
    assert_eq!(bad_fields(&err), ["page_size"]);
}

fn token_for(user: Uuid) -> String {
    token(user, &[])
}

/// Issue 10's contract bug: a cached guard status must not freeze time. The countdown and a quote's age are
/// judged when the response is served, also when it comes from the cache.
#[tokio::test]
async fn a_cached_guard_status_still_counts_down_and_ages_quotes() {
    let app = spawn_app_with(|args| {
        args.rules.pre_liquidation = std::time::Duration::from_secs(10);
        args.rules.stale_quote_after = std::time::Duration::from_secs(1);
        // The clock would record the stale quote as an event (and so evict the cached status); this test is
        // about serve-time judging of a cached entry.
        args.watch.clock_interval = std::time::Duration::from_secs(3600);
    })
    .await;
    let user = Uuid::new_v4();
    app.quote(quotes(vec![quote("XAUUSD", "2000", "2000.5")])).await.unwrap();
    app.submit(finished_ago(40, sync(user, "10000", vec![], vec![]))).await.unwrap();
    hold(&app, user, "7000", &["XAUUSD"]).await;
    let read = || async {
        let request = pb::GetGuardStatusRequest::default();
        let response = app.guards().get_guard_status(authed(request, &token(user, &[]))).await.unwrap();
        let cache = response.metadata().get("x-cache").unwrap().to_str().unwrap().to_owned();
        (cache, response.into_inner())
    };
    let (_, first) = read().await;
    let left = first.drawdown.as_ref().unwrap().time_to_liquidation.unwrap();
    assert!(first.market_alerts.iter().all(|a| a.kind() != AlertKind::StaleQuote), "{:?}", first.market_alerts);

    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let (cache, second) = read().await;
    assert_eq!(cache, "hit", "the second read comes from the cache");
    let later = second.drawdown.as_ref().unwrap().time_to_liquidation.unwrap();
    let ms = |d: prost_types::Duration| d.seconds * 1000 + i64::from(d.nanos) / 1_000_000;
    assert!(ms(left) - ms(later) >= 1200, "the countdown moved with the clock: {left:?} then {later:?}");
    let stale: Vec<_> = second.market_alerts.iter().filter(|a| a.kind() == AlertKind::StaleQuote).collect();
    assert_eq!(stale.len(), 1, "the quote aged while cached: {:?}", second.market_alerts);
    let age = stale[0].quote_age.unwrap();
    assert!(age.seconds >= 1, "{age:?}");
    assert!(second.evaluated_time.unwrap().seconds > first.evaluated_time.unwrap().seconds);
}
