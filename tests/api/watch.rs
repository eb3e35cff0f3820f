//! Watch streams over gRPC: every event once, in order, across resumes, replicas, lost notifications, slow
//! clients and shutdowns; the guard status pushed when it changes, including changes time alone makes.

use std::collections::HashSet;
use std::time::Duration;

use tokio_stream::StreamExt;
use tonic::Streaming;
use trading_monitor::pb;
use trading_monitor::pb::watch_guard_status_response::Kind as GuardKind;
use trading_monitor::pb::watch_reconciliation_events_response::Kind as EventKind;
use uuid::Uuid;

use trading_testkit::*;

/// Long enough for the horizon to pass transactions of the other tests running on the same cluster.
const WAIT: Duration = Duration::from_secs(15);

type Events = Streaming<pb::WatchReconciliationEventsResponse>;
type Guards = Streaming<pb::WatchGuardStatusResponse>;

fn events_request(user: &str, resume_token: &str) -> pb::WatchReconciliationEventsRequest {
    pb::WatchReconciliationEventsRequest {
        user_id: user.into(),
        resume_token: resume_token.into(),
        ..Default::default()
    }
}

async fn watch_events(
    app: &TestApp,
    request: pb::WatchReconciliationEventsRequest,
    token: &str,
) -> Result<Events, tonic::Status> {
    app.recon().watch_reconciliation_events(authed(request, token)).await.map(|r| r.into_inner())
}

async fn watch_guards(
    app: &TestApp,
    request: pb::WatchGuardStatusRequest,
    token: &str,
) -> Result<Guards, tonic::Status> {
    app.guards().watch_guard_status(authed(request, token)).await.map(|r| r.into_inner())
}

/// The next message, failing the test after [`WAIT`].
async fn next<M: std::fmt::Debug>(stream: &mut Streaming<M>) -> Result<M, tonic::Status> {
    match tokio::time::timeout(WAIT, stream.next()).await {
        Ok(Some(message)) => message,
        Ok(None) => panic!("the stream ended"),
        Err(_) => panic!("no message within {WAIT:?}"),
    }
}

/// The first heartbeat's token: the watch has caught up and is following.
async fn caught_up(stream: &mut Events) -> String {
    loop {
        let message = next(stream).await.unwrap();
        if let Some(EventKind::Heartbeat(beat)) = &message.kind {
            assert!(beat.caught_up);
            return message.resume_token;
        }
    }
}

/// Events (with each one's resume token) until `done` holds of the events so far.
async fn events_until(
    stream: &mut Events,
    done: impl Fn(&[pb::ReconciliationEvent]) -> bool,
) -> (Vec<pb::ReconciliationEvent>, String) {
    let (mut events, mut last) = (Vec::new(), String::new());
    while !done(&events) {
        let message = next(stream).await.unwrap();
        last = message.resume_token;
        if let Some(EventKind::Event(event)) = message.kind {
            events.push(event);
        }
    }
    (events, last)
}

fn ids(events: &[pb::ReconciliationEvent]) -> Vec<i64> {
    events.iter().map(|e| e.event_id.parse().unwrap()).collect()
}

/// Every event id of `user` in the table.
async fn stored_ids(app: &TestApp, user: Uuid) -> HashSet<i64> {
    app.all_events(user).await.iter().map(|e| e.event_id.parse().unwrap()).collect()
}

fn assert_once_each(events: &[pb::ReconciliationEvent]) {
    let ids = ids(events);
    let unique: HashSet<i64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "duplicates: {ids:?}");
}

#[tokio::test]
async fn a_late_commit_is_delivered_when_it_lands_once_even_across_a_resume_on_another_replica() {
    let (app, other) = spawn_replicas_with(|_| {}).await;
    // A fresh quote, or the clock would (rightly) add a stale-quote event for the held symbol.
    app.quote(quotes(vec![quote("XAUUSD", "2000", "2000.10")])).await.unwrap();
    let user = Uuid::new_v4();
    let mine = token(user, &[]);
    let mut stream = watch_events(&app, events_request("", ""), &mine).await.unwrap();
    caught_up(&mut stream).await;

    // A writer that started first and commits last, and a whole sync that commits meanwhile.
    let mut slow = app.pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (user_id, event_type, occurred_at, message) VALUES ($1, 'sync_failed', now(), 'slow')",
    )
    .bind(user)
    .execute(&mut *slow)
    .await
    .unwrap();
    app.submit(sync(user, "1000", vec![broker("1", "XAUUSD", pb::Side::Buy, "1", "2000", "2000")], vec![]))
        .await
        .unwrap();

    // The sync's events are delivered while the earlier writer still runs (it holds back only its own).
    let synced = stored_ids(&app, user).await;
    let (first, token_after_sync) =
        events_until(&mut stream, |e| ids(e).into_iter().collect::<HashSet<_>>() == synced).await;
    assert!(first.iter().all(|e| e.message != "slow" && !e.sync_id.is_empty()), "{first:?}");

    // The client goes away; the writer commits; the client resumes on another replica from its last token and
    // gets exactly the late event: it was owed, and the token carried that.
    drop(stream);
    slow.commit().await.unwrap();
    let mut resumed = watch_events(&other, events_request("", &token_after_sync), &mine).await.unwrap();
    let (rest, _) = events_until(&mut resumed, |e| !e.is_empty()).await;
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0].message, "slow");
    let mut all = first;
    all.extend(rest);
    assert_once_each(&all);
    assert_eq!(
        ids(&all).into_iter().collect::<HashSet<_>>(),
        stored_ids(&app, user).await,
        "exactly the stored events"
    );
    // And nothing more: the next message is a heartbeat.
    let next = next(&mut resumed).await.unwrap();
    assert!(matches!(next.kind, Some(EventKind::Heartbeat(_))), "{next:?}");
}

/// Reproduced from outside (issue 18): a session left open in a transaction on another database of the same
/// cluster (`psql -d postgres`, `BEGIN; SELECT pg_current_xact_id();`) held back every watch for as long as it
/// stayed open, while a unary read already said CRITICAL.
#[tokio::test]
async fn a_transaction_left_open_on_another_database_of_the_cluster_does_not_hold_back_guard_updates() {
    use sqlx::Connection;
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    app.submit(sync(user, "10000", vec![], vec![])).await.unwrap();

    let mut elsewhere = sqlx::PgConnection::connect(&url_for("postgres")).await.unwrap();
    let mut forgotten = elsewhere.begin().await.unwrap();
    let xid: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text").fetch_one(&mut *forgotten).await.unwrap();
    // The premise: it holds back the oldest running transaction this service's database sees.
    let held_back: bool = sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot()) <= $1::text::xid8")
        .bind(&xid)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(held_back, "transaction {xid} does not hold back the cluster's xmin");

    let request = pb::WatchGuardStatusRequest {
        heartbeat_interval: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
        ..Default::default()
    };
    let mut stream = watch_guards(&app, request, &token(user, &[])).await.unwrap();
    let (first, _) = update(&mut stream).await;
    assert_eq!(level(&first), pb::DrawdownLevel::Normal);

    // CRITICAL, "close everything": a unary read says so at once...
    app.submit(sync(user, "7000", vec![], vec![])).await.unwrap();
    let unary = app.guard_status(user).await;
    assert_eq!(unary.drawdown.as_ref().unwrap().level(), pb::DrawdownLevel::Critical);

    // ...and the watch within seconds, while that transaction stays open.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let critical = loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(pb::WatchGuardStatusResponse { kind: Some(GuardKind::Update(changed)), .. }))) => {
                break changed;
            }
            Ok(Some(Ok(_heartbeat))) => {}
            Ok(other) => panic!("the stream ended: {other:?}"),
            Err(_) => panic!("no guard update within 5 s while transaction {xid} is open on database postgres"),
        }
    };
    assert_eq!(critical.user_id, user.to_string());
    assert_eq!(level(&critical), pb::DrawdownLevel::Critical);
    assert!(critical.status.as_ref().unwrap().drawdown.as_ref().unwrap().should_close_all);
    let status: Option<String> =
        sqlx::query_scalar("SELECT pg_xact_status($1::text::xid8)").bind(&xid).fetch_one(&app.pool).await.unwrap();
    assert_eq!(status.as_deref(), Some("in progress"), "it came past the open transaction, not after it");
    forgotten.rollback().await.unwrap();
}

#[tokio::test]
async fn start_oldest_replays_the_log_filters_skip_and_heartbeats_advance_the_token() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    app.submit(sync(user, "1000", vec![broker("1", "XAUUSD", pb::Side::Buy, "1", "2000", "2000")], vec![]))
        .await
        .unwrap();
    let stored = stored_ids(&app, user).await;
    // A short heartbeat: when other tests' transactions hold the horizon back, part of the replay arrives after
    // the first heartbeat, and `caught_up` below then waits for the next one.
    let request = pb::WatchReconciliationEventsRequest {
        start: pb::WatchStart::Oldest.into(),
        heartbeat_interval: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
        ..Default::default()
    };
    let mut stream = watch_events(&app, request, &token(user, &[])).await.unwrap();
    let (replayed, _) = events_until(&mut stream, |e| e.len() >= stored.len()).await;
    assert_eq!(ids(&replayed).into_iter().collect::<HashSet<_>>(), stored);
    caught_up(&mut stream).await;

    // Only SYNC_FAILED, a heartbeat every second: other events move the token without being sent.
    let request = pb::WatchReconciliationEventsRequest {
        event_types: vec![pb::EventType::SyncFailed.into()],
        heartbeat_interval: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
        ..Default::default()
    };
    let mut filtered = watch_events(&app, request.clone(), &token(user, &[])).await.unwrap();
    let before = caught_up(&mut filtered).await;
    app.submit(sync(user, "1100", vec![], vec![])).await.unwrap();
    app.submit(failed_sync(user, "terminal offline")).await.unwrap();
    let (failed, after) = events_until(&mut filtered, |e| !e.is_empty()).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].event_type(), pb::EventType::SyncFailed);
    assert_ne!(before, after);
    let beat = next(&mut filtered).await.unwrap();
    assert!(matches!(beat.kind, Some(EventKind::Heartbeat(ref h)) if h.caught_up && h.sent_time.is_some()));

    // Resuming from the filtered watch's token replays nothing it already skipped or sent.
    let resumed = pb::WatchReconciliationEventsRequest { resume_token: beat.resume_token, ..request };
    let mut resumed = watch_events(&app, resumed, &token(user, &[])).await.unwrap();
    let first = next(&mut resumed).await.unwrap();
    assert!(matches!(first.kind, Some(EventKind::Heartbeat(_))), "replayed: {first:?}");
}

#[tokio::test]
async fn bad_requests_and_tokens_are_refused_with_reasons() {
    let app = spawn_app().await;
    let other = spawn_app().await;
    let user = Uuid::new_v4();
    let mine = token(user, &[]);

    let status = watch_events(&app, events_request("-", ""), &mine).await.unwrap_err();
    assert_eq!(code_and_reason(&status), (tonic::Code::PermissionDenied, "SCOPE_MISSING".into()));
    let status = watch_events(&app, events_request(&Uuid::new_v4().to_string(), ""), &mine).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    let too_fast = pb::WatchReconciliationEventsRequest {
        heartbeat_interval: Some(prost_types::Duration { seconds: 0, nanos: 1_000_000 }),
        ..Default::default()
    };
    let status = watch_events(&app, too_fast, &mine).await.unwrap_err();
    assert_eq!(bad_fields(&status), ["heartbeat_interval"]);

    let mut stream = watch_events(&app, events_request("", ""), &mine).await.unwrap();
    let good = caught_up(&mut stream).await;
    // Malformed, from another database, from the future.
    let mut ahead = base64_decode(&good);
    ahead[9..17].copy_from_slice(&(i64::MAX / 2).to_be_bytes());
    let mut newer = base64_decode(&good);
    newer[0] = 3;
    let cases = [
        ("garbage".to_owned(), &app, "malformed"),
        (good.clone(), &other, "other_database"),
        (base64_encode(&ahead), &app, "ahead"),
        (base64_encode(&newer), &app, "unsupported_version"),
    ];
    for (resume, server, why) in cases {
        let status = watch_events(server, events_request("", &resume), &mine).await.unwrap_err();
        assert_eq!(code_and_reason(&status), (tonic::Code::FailedPrecondition, "RESUME_TOKEN_INVALID".into()));
        assert_eq!(error_info(&status).2["why"], why);
    }
    let status = watch_guards(&other, pb::WatchGuardStatusRequest { resume_token: good, ..Default::default() }, &mine)
        .await
        .unwrap_err();
    assert_eq!(code_and_reason(&status), (tonic::Code::FailedPrecondition, "RESUME_TOKEN_INVALID".into()));
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).unwrap()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn the_all_users_feed_sees_every_user() {
    let app = spawn_app().await;
    let risk = token(Uuid::new_v4(), &[READ_ANY]);
    let mut stream = watch_events(&app, events_request("-", ""), &risk).await.unwrap();
    caught_up(&mut stream).await;
    let users: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    for user in &users {
        app.submit(sync(*user, "1000", vec![], vec![])).await.unwrap();
    }
    let (seen, _) =
        events_until(&mut stream, |e| users.iter().all(|u| e.iter().any(|ev| ev.user_id == u.to_string()))).await;
    assert_once_each(&seen);
}

#[tokio::test]
async fn a_watcher_told_of_an_event_reads_the_state_after_it_even_if_the_writer_never_invalidated() {
    let app = spawn_app().await;
    until_hearing(&app).await;
    let user = Uuid::new_v4();
    app.submit(sync(user, "1000", vec![], vec![])).await.unwrap();
    // The status is cached (in L1 and Redis), then served as a hit.
    cache::status(&app, user).await;
    let (served, cached) = cache::status(&app, user).await;
    assert_eq!(served, "hit");
    let mine = token(user, &[]);
    let mut stream = watch_events(&app, events_request("", ""), &mine).await.unwrap();
    caught_up(&mut stream).await;

    // A writer (another replica) commits an event and dies before it can invalidate anything: no generation
    // bump, no announcement. Written straight to the database, as that replica would have.
    sqlx::query(
        "INSERT INTO events (user_id, event_type, occurred_at, message) VALUES ($1, 'sync_failed', now(), 'died')",
    )
    .bind(user)
    .execute(&app.pool)
    .await
    .unwrap();
    events_until(&mut stream, |e| e.iter().any(|e| e.message == "died")).await;

    // Told of the event, the client re-reads at once: the state must include it.
    let (_, after) = cache::status(&app, user).await;
    assert!(
        after.recent_events.iter().any(|e| e.message == "died"),
        "the status read after the event was pushed is from before it: {:?} (cached: {:?})",
        after.recent_events.iter().map(|e| &e.message).collect::<Vec<_>>(),
        cached.recent_events.iter().map(|e| &e.message).collect::<Vec<_>>(),
    );
}

#[tokio::test]
async fn a_write_acknowledged_by_one_replica_reaches_a_watcher_on_another() {
    let (a, b) = spawn_replicas_with(|_| {}).await;
    let user = Uuid::new_v4();
    let mut stream = watch_events(&b, events_request("", ""), &token(user, &[])).await.unwrap();
    caught_up(&mut stream).await;
    let sync = sync(user, "1000", vec![], vec![]);
    let sync_id = a.submit(sync).await.unwrap().sync_id;
    let (events, _) =
        events_until(&mut stream, |e| e.iter().any(|e| e.event_type() == pb::EventType::SyncCompleted)).await;
    assert!(events.iter().all(|e| e.sync_id == sync_id), "{events:?}");
}

#[tokio::test]
async fn streams_are_limited_per_caller_and_a_closed_one_frees_its_place() {
    let app = spawn_app_with(|args| args.watch.watch_max_per_user = 2).await;
    let user = Uuid::new_v4();
    let mine = token(user, &[]);
    let first = watch_events(&app, events_request("", ""), &mine).await.unwrap();
    let _second = watch_guards(&app, pb::WatchGuardStatusRequest::default(), &mine).await.unwrap();
    let status = watch_events(&app, events_request("", ""), &mine).await.unwrap_err();
    assert_eq!(code_and_reason(&status), (tonic::Code::ResourceExhausted, "TOO_MANY_WATCHES".into()));
    assert_eq!(error_info(&status).2["per"], "user");
    // Somebody else still may.
    watch_events(&app, events_request("", ""), &token(Uuid::new_v4(), &[])).await.unwrap();
    drop(first);
    for _ in 0..100 {
        if watch_events(&app, events_request("", ""), &mine).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("a closed stream never freed its place");
}

/// A watch of `user`'s events, caught up (with its token), then flooded: 1,500 positions opened, far more than
/// the stream's buffer and its connection's flow-control windows (16 KiB here; tonic's are megabytes), so a
/// client that does not read holds the server back soon.
async fn flooded_watch(app: &TestApp, user: Uuid, mine: &str) -> (Events, String) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .initial_stream_window_size(16 * 1024)
        .initial_connection_window_size(16 * 1024)
        .connect()
        .await
        .unwrap();
    let mut client = pb::reconciliation_service_client::ReconciliationServiceClient::new(channel);
    let mut stream =
        client.watch_reconciliation_events(authed(events_request("", ""), mine)).await.unwrap().into_inner();
    let caught_up = caught_up(&mut stream).await;
    let brokers = (0..1500).map(|i| broker(&i.to_string(), "XAUUSD", pb::Side::Buy, "1", "2000", "2000")).collect();
    app.submit(sync(user, "100000", brokers, vec![])).await.unwrap();
    (stream, caught_up)
}

#[tokio::test]
async fn a_client_that_stops_reading_is_ended_and_resumes_without_loss() {
    let app = spawn_app_with(|args| {
        args.watch.watch_send_timeout = Duration::from_millis(300);
        args.watch.watch_buffer = 4;
    })
    .await;
    let user = Uuid::new_v4();
    let mine = token(user, &[]);
    let (mut stream, mut last) = flooded_watch(&app, user, &mine).await;
    let stored = stored_ids(&app, user).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Reading again: what was in flight, then the end.
    let mut received = Vec::new();
    let ended = loop {
        match next(&mut stream).await {
            Ok(message) => {
                last = message.resume_token;
                if let Some(EventKind::Event(e)) = message.kind {
                    received.push(e);
                }
            }
            Err(status) => break status,
        }
    };
    assert_eq!(code_and_reason(&ended), (tonic::Code::ResourceExhausted, "SLOW_CONSUMER".into()));
    assert!(received.len() < stored.len(), "the stream was not cut short");
    let mut resumed = watch_events(&app, events_request("", &last), &mine).await.unwrap();
    let (rest, _) = events_until(&mut resumed, |e| received.len() + e.len() >= stored.len()).await;
    received.extend(rest);
    assert_once_each(&received);
    assert_eq!(ids(&received).into_iter().collect::<HashSet<_>>(), stored);
}

#[tokio::test]
async fn a_client_that_stopped_reading_keeps_its_place_until_its_stream_is_gone() {
    let app = spawn_app_with(|args| {
        args.watch.watch_send_timeout = Duration::from_millis(300);
        args.watch.watch_buffer = 4;
        args.watch.watch_max_per_user = 1;
    })
    .await;
    let user = Uuid::new_v4();
    let mine = token(user, &[]);
    let (mut stalled, _) = flooded_watch(&app, user, &mine).await;
    // Long past the send timeout: the server has given up on this client (SLOW_CONSUMER is queued for it), but
    // its transport stream still holds buffers on the server, so it still counts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let refused = watch_events(&app, events_request("", ""), &mine).await.unwrap_err();
    assert_eq!(code_and_reason(&refused), (tonic::Code::ResourceExhausted, "TOO_MANY_WATCHES".into()));
    // Once the client has read its stream to the end, the place is free.
    let ended = loop {
        if let Err(status) = next(&mut stalled).await {
            break status;
        }
    };
    assert_eq!(code_and_reason(&ended), (tonic::Code::ResourceExhausted, "SLOW_CONSUMER".into()));
    drop(stalled);
    for _ in 0..100 {
        if watch_events(&app, events_request("", ""), &mine).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("an ended stream never freed its place");
}

#[tokio::test]
async fn a_long_catch_up_pays_for_its_pages_with_the_callers_rate_limit() {
    // One call per second, none saved up: opening the stream spends it, so each page after the first waits.
    let app = spawn_app_with(|args| {
        args.server.rate_limit_per_user = 1;
        args.server.rate_limit_user_burst = 1;
    })
    .await;
    let user = Uuid::new_v4();
    // Three pages of events (500 each).
    let brokers = (0..1200).map(|i| broker(&i.to_string(), "XAUUSD", pb::Side::Buy, "1", "2000", "2000")).collect();
    app.submit(sync(user, "100000", brokers, vec![])).await.unwrap();
    // From the table (listing them would spend the caller's rate).
    let stored: HashSet<i64> = sqlx::query_scalar::<_, i64>("SELECT event_id FROM events WHERE user_id = $1")
        .bind(user)
        .fetch_all(&app.pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert!(stored.len() > 1000, "{}", stored.len());
    let request = pb::WatchReconciliationEventsRequest { start: pb::WatchStart::Oldest.into(), ..Default::default() };
    let started = std::time::Instant::now();
    let mut stream = watch_events(&app, request, &token(user, &[])).await.unwrap();
    let (replayed, _) = events_until(&mut stream, |e| e.len() >= stored.len()).await;
    let took = started.elapsed();
    assert_once_each(&replayed);
    assert_eq!(ids(&replayed).into_iter().collect::<HashSet<_>>(), stored);
    // Two pages paid for at one per second (a lower bound only: a slow machine takes longer, never shorter).
    assert!(took >= Duration::from_millis(1500), "the replay was not paced: {took:?}");
}

#[tokio::test]
async fn streams_read_the_log_when_the_batches_they_came_to_were_let_go_of() {
    // One byte: the hub keeps only the newest batch's contents, so streams mostly read the table instead.
    let app = spawn_app_with(|args| args.watch.watch_batch_memory = 1).await;
    let user = Uuid::new_v4();
    let mine = token(user, &[]);
    let mut stream = watch_events(&app, events_request("", ""), &mine).await.unwrap();
    let mut guards = watch_guards(&app, pb::WatchGuardStatusRequest::default(), &mine).await.unwrap();
    caught_up(&mut stream).await;
    for i in 0..5 {
        let brokers = vec![broker(&i.to_string(), "XAUUSD", pb::Side::Buy, "1", "2000", "2000")];
        app.submit(sync(user, &(1000 - 100 * i).to_string(), brokers, vec![])).await.unwrap();
    }
    let stored = stored_ids(&app, user).await;
    let (received, _) = events_until(&mut stream, |e| e.len() >= stored.len()).await;
    assert_once_each(&received);
    assert_eq!(ids(&received).into_iter().collect::<HashSet<_>>(), stored);
    // 1,000 down to 600: a 40 % drawdown, CRITICAL, pushed all the same.
    loop {
        let (pushed, _) = update(&mut guards).await;
        if level(&pushed) == pb::DrawdownLevel::Critical {
            assert!(pushed.status.unwrap().any_positions_should_close);
            break;
        }
    }
}

#[tokio::test]
async fn on_shutdown_streams_end_unavailable_and_resume_on_another_replica_without_a_gap() {
    let (mut a, b) = spawn_replicas_with(|_| {}).await;
    let user = Uuid::new_v4();
    let mine = token(user, &[]);
    let mut stream = watch_events(&a, events_request("", ""), &mine).await.unwrap();
    caught_up(&mut stream).await;
    b.submit(sync(user, "1000", vec![], vec![])).await.unwrap();
    let (mut seen, last) = events_until(&mut stream, |e| !e.is_empty()).await;
    let (stopped, ended) = tokio::join!(a.stop(), async {
        loop {
            if let Err(status) = next(&mut stream).await {
                break status;
            }
        }
    });
    stopped.unwrap();
    assert_eq!(code_and_reason(&ended), (tonic::Code::Unavailable, "SHUTTING_DOWN".into()));
    // Written while nobody watched.
    b.submit(failed_sync(user, "gone")).await.unwrap();
    let mut resumed = watch_events(&b, events_request("", &last), &mine).await.unwrap();
    let stored = stored_ids(&b, user).await;
    let (rest, _) = events_until(&mut resumed, |e| seen.len() + e.len() >= stored.len()).await;
    seen.extend(rest);
    assert_once_each(&seen);
    assert_eq!(ids(&seen).into_iter().collect::<HashSet<_>>(), stored);
}

/// The next guard update (skipping heartbeats).
async fn update(stream: &mut Guards) -> (pb::GuardStatusUpdate, String) {
    loop {
        let message = next(stream).await.unwrap();
        if let Some(GuardKind::Update(update)) = message.kind {
            return (update, message.resume_token);
        }
    }
}

/// Heartbeats only, for `period`.
async fn quiet(stream: &mut Guards, period: Duration) {
    let until = tokio::time::Instant::now() + period;
    while let Ok(Some(message)) = tokio::time::timeout_at(until, stream.next()).await {
        let message = message.unwrap();
        assert!(matches!(message.kind, Some(GuardKind::Heartbeat(_))), "not a change: {message:?}");
    }
}

fn level(update: &pb::GuardStatusUpdate) -> pb::DrawdownLevel {
    update.status.as_ref().unwrap().drawdown.as_ref().unwrap().level()
}

#[tokio::test]
async fn a_guard_watch_sends_the_status_then_each_change_including_the_countdown_running_out() {
    let app = spawn_app_with(|args| args.rules.pre_liquidation = Duration::from_secs(1)).await;
    let user = Uuid::new_v4();
    let held = || vec![broker("1", "XAUUSD", pb::Side::Buy, "1", "2000", "2000")];
    app.quote(quotes(vec![quote("XAUUSD", "2000", "2000.10")])).await.unwrap();
    app.submit(sync(user, "10000", held(), vec![])).await.unwrap();
    let mut stream = watch_guards(&app, pb::WatchGuardStatusRequest::default(), &token(user, &[])).await.unwrap();
    let (first, _) = update(&mut stream).await;
    assert_eq!((first.user_id.as_str(), level(&first)), (user.to_string().as_str(), pb::DrawdownLevel::Normal));

    // Equity moving within the level is not a change.
    app.submit(sync(user, "9950", held(), vec![])).await.unwrap();
    quiet(&mut stream, Duration::from_millis(1500)).await;

    // CRITICAL: close everything, with a countdown; then the countdown runs out (time alone).
    app.submit(sync(user, "7000", held(), vec![])).await.unwrap();
    let (critical, _) = update(&mut stream).await;
    let status = critical.status.unwrap();
    let drawdown = status.drawdown.unwrap();
    assert_eq!(drawdown.level(), pb::DrawdownLevel::Critical);
    assert!(status.any_positions_should_close && drawdown.should_close_all);
    assert!(drawdown.time_to_liquidation.unwrap().seconds <= 1);
    let (due, _) = update(&mut stream).await;
    let ttl = due.status.unwrap().drawdown.unwrap().time_to_liquidation.unwrap();
    assert_eq!((ttl.seconds, ttl.nanos), (0, 0));
    let events = app.all_events(user).await;
    assert_eq!(events.iter().filter(|e| e.event_type() == pb::EventType::LiquidationDue).count(), 1);

    // A market alert on a held symbol is a change; on another symbol it is not.
    app.quote(quotes(vec![quote("EURUSD", "1", "1.5")])).await.unwrap();
    quiet(&mut stream, Duration::from_millis(1000)).await;
    app.quote(quotes(vec![quote("XAUUSD", "2000", "2030")])).await.unwrap();
    let (alerted, _) = update(&mut stream).await;
    let alerts = alerted.status.unwrap().market_alerts;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].kind(), pb::MarketAlertKind::WideSpread);
}

#[tokio::test]
async fn a_held_symbols_quote_going_stale_is_recorded_and_pushed_and_cleared_by_a_fresh_quote() {
    let app = spawn_app_with(|args| args.rules.stale_quote_after = Duration::from_secs(2)).await;
    let (holder, other) = (Uuid::new_v4(), Uuid::new_v4());
    app.quote(quotes(vec![quote("XAGUSD", "25", "25.01")])).await.unwrap();
    app.submit(sync(holder, "10000", vec![broker("1", "XAGUSD", pb::Side::Buy, "1", "25", "25")], vec![]))
        .await
        .unwrap();
    app.submit(sync(other, "10000", vec![], vec![])).await.unwrap();
    let mut stream = watch_guards(&app, pb::WatchGuardStatusRequest::default(), &token(holder, &[])).await.unwrap();
    let (fresh, _) = update(&mut stream).await;
    assert!(fresh.status.unwrap().market_alerts.is_empty());

    let (stale, _) = update(&mut stream).await;
    let alerts = stale.status.unwrap().market_alerts;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].kind(), pb::MarketAlertKind::StaleQuote);
    let raised: Vec<_> = app
        .all_events(holder)
        .await
        .into_iter()
        .filter(|e| e.event_type() == pb::EventType::MarketAlertRaised)
        .collect();
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].details["kind"], "stale_quote");
    assert_eq!(raised[0].symbol, "XAGUSD");
    assert!(app.all_events(other).await.iter().all(|e| e.event_type() != pb::EventType::MarketAlertRaised));

    app.quote(quotes(vec![quote("XAGUSD", "25", "25.01")])).await.unwrap();
    let (cleared, _) = update(&mut stream).await;
    assert!(cleared.status.unwrap().market_alerts.is_empty());
    let events = app.all_events(holder).await;
    assert_eq!(events.iter().filter(|e| e.event_type() == pb::EventType::MarketAlertCleared).count(), 1);
}

#[tokio::test]
async fn a_guard_watch_of_every_account_sends_each_then_only_the_changed_ones_and_resumes_mid_snapshot() {
    let app = spawn_app().await;
    let users: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for user in &users {
        app.submit(sync(*user, "10000", vec![], vec![])).await.unwrap();
    }
    let risk = token(Uuid::new_v4(), &[READ_ANY]);
    let all = pb::WatchGuardStatusRequest { user_id: "-".into(), ..Default::default() };
    let mut stream = watch_guards(&app, all.clone(), &risk).await.unwrap();
    let mut snapshot = Vec::new();
    let mut tokens = Vec::new();
    for _ in &users {
        let (u, t) = update(&mut stream).await;
        snapshot.push(u.user_id);
        tokens.push(t);
    }
    let mut expected: Vec<String> = users.iter().map(Uuid::to_string).collect();
    expected.sort();
    assert_eq!(snapshot, expected, "every account, in id order");

    // Only the changed account afterwards.
    let changed = users[1];
    app.submit(sync(changed, "7000", vec![], vec![])).await.unwrap();
    let (update_of_changed, _) = update(&mut stream).await;
    assert_eq!(update_of_changed.user_id, changed.to_string());
    assert_eq!(level(&update_of_changed), pb::DrawdownLevel::Critical);

    // Resumed after the first account of the snapshot: the rest of the snapshot.
    let resumed = pb::WatchGuardStatusRequest { resume_token: tokens[0].clone(), ..all };
    let mut resumed = watch_guards(&app, resumed, &risk).await.unwrap();
    let (second, _) = update(&mut resumed).await;
    let (third, _) = update(&mut resumed).await;
    assert_eq!([second.user_id, third.user_id], [expected[1].clone(), expected[2].clone()]);
}

#[tokio::test]
async fn streams_reading_under_one_catch_up_permit_take_turns_and_all_get_their_updates() {
    // One read at a time for all the streams of the replica: snapshots, pages and books take turns.
    let app = spawn_app_with(|args| args.watch.watch_catch_up_concurrency = 1).await;
    let users: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for user in &users {
        app.submit(sync(*user, "10000", vec![], vec![])).await.unwrap();
    }
    let risk = token(Uuid::new_v4(), &[READ_ANY]);
    let all = pb::WatchGuardStatusRequest { user_id: "-".into(), ..Default::default() };
    let mut streams = Vec::new();
    for _ in 0..5 {
        streams.push(watch_guards(&app, all.clone(), &risk).await.unwrap());
    }
    for stream in &mut streams {
        for _ in &users {
            update(stream).await;
        }
    }
    app.submit(sync(users[0], "7000", vec![], vec![])).await.unwrap();
    for stream in &mut streams {
        let (changed, _) = update(stream).await;
        assert_eq!(
            (changed.user_id.as_str(), level(&changed)),
            (users[0].to_string().as_str(), pb::DrawdownLevel::Critical)
        );
    }
}

#[tokio::test]
async fn a_held_symbol_never_quoted_is_recorded_stale_and_its_first_quote_clears_it() {
    let app = spawn_app().await;
    let holder = Uuid::new_v4();
    app.submit(sync(holder, "10000", vec![broker("1", "XAUUSD", pb::Side::Buy, "1", "2000", "2000")], vec![]))
        .await
        .unwrap();
    let mut stream = watch_guards(&app, pb::WatchGuardStatusRequest::default(), &token(holder, &[])).await.unwrap();
    let (first, _) = update(&mut stream).await;
    let alerts = first.status.unwrap().market_alerts;
    assert_eq!(alerts.iter().map(|a| a.kind()).collect::<Vec<_>>(), [pb::MarketAlertKind::StaleQuote]);
    // The clock records it (once), though no quote ever went stale.
    let mut raised = Vec::new();
    for _ in 0..100 {
        raised = app
            .all_events(holder)
            .await
            .into_iter()
            .filter(|e| e.event_type() == pb::EventType::MarketAlertRaised)
            .collect();
        if !raised.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].message, "warning stale_quote on XAUUSD: no quote ever received");
    app.quote(quotes(vec![quote("XAUUSD", "2000", "2000.10")])).await.unwrap();
    let (cleared, _) = update(&mut stream).await;
    assert!(cleared.status.unwrap().market_alerts.is_empty());
    let events = app.all_events(holder).await;
    assert_eq!(events.iter().filter(|e| e.event_type() == pb::EventType::MarketAlertCleared).count(), 1);
}

#[tokio::test]
async fn a_stream_ends_when_its_token_expires() {
    use secrecy::SecretString;
    use trading_monitor::auth::{TokenSpec, mint_hs256};
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let spec = TokenSpec { user_id: user, scopes: &[], ttl: Duration::from_secs(2), issuer: None, audience: None };
    let short = mint_hs256(&SecretString::from(SECRET), &spec).unwrap();
    let mut stream = watch_events(&app, events_request("", ""), &short).await.unwrap();
    caught_up(&mut stream).await;
    let ended = loop {
        if let Err(status) = next(&mut stream).await {
            break status;
        }
    };
    assert_eq!(code_and_reason(&ended), (tonic::Code::Unauthenticated, "TOKEN_EXPIRED".into()));
}

/// Issue 18: during a rolling deploy a newer replica writes an event kind this version does not know (as the
/// migration adding `liquidation_due` once did). It reads as `EVENT_TYPE_UNSPECIFIED` everywhere, and the
/// feed, the watches and the event reads keep working, instead of one row failing every page.
#[tokio::test]
async fn an_event_kind_of_a_newer_version_reads_as_unspecified_and_breaks_nothing() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let mine = token(user, &[]);
    let mut stream = watch_events(&app, events_request("", ""), &mine).await.unwrap();
    caught_up(&mut stream).await;

    // The newer version's migration widened the check; its replica wrote the new kind.
    sqlx::query("ALTER TABLE events DROP CONSTRAINT events_event_type_check").execute(&app.pool).await.unwrap();
    sqlx::query(
        "INSERT INTO events (user_id, event_type, occurred_at, message) VALUES ($1, 'margin_call_due', now(), 'new')",
    )
    .bind(user)
    .execute(&app.pool)
    .await
    .unwrap();
    app.submit(failed_sync(user, "after the new kind")).await.unwrap();

    let (seen, _) = events_until(&mut stream, |e| e.len() >= 2).await;
    assert_eq!(seen[0].message, "new");
    assert_eq!(seen[0].event_type(), pb::EventType::Unspecified);
    assert_eq!(seen[1].event_type(), pb::EventType::SyncFailed);
    let listed = app.all_events(user).await;
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|e| e.event_type() == pb::EventType::Unspecified));
    let status = app.status(user).await;
    assert_eq!(status.recent_events.len(), 2);
}
