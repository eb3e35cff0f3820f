//! Recording a broker sync: one transaction that applies the reconciled snapshot (account, positions,
//! platform positions, divergences, drawdown, events, summary) and stores the response for idempotent replay.
//!
//! Concurrency: the account row is locked (`FOR UPDATE`) first, so syncs of one user apply one at a time and
//! the high-water mark can never lose a peak; syncs of different users do not wait for each other.
//!
//! Time: a sync whose reported finish time is older than the snapshot already applied is *superseded*: it is
//! recorded (counted, with its event) but changes nothing: not positions, divergences, equity, the high-water
//! mark nor the drawdown level. Reported times are kept as the facts they are (`equity_time`, position and
//! divergence times, event details); event times and drawdown level changes take the server's clock, so a late
//! sync cannot start a liquidation countdown in the past.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

mod account;
mod divergences;
mod positions;

use account::{AccountChange, account_change};
use divergences::apply_divergences;
use positions::apply_positions;

use super::{DivergenceRow, StorageError, parse_stored};
use crate::domain::drawdown::{DrawdownLevel, DrawdownThresholds};
use crate::domain::events::EventType;
use crate::domain::reconcile::{BrokerSide, PlatformSide, Reconciliation};

/// A broker position as submitted: the fields matching uses plus the rest of what the broker reports.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerPositionInput {
    /// Identity and matched fields.
    pub core: BrokerSide,
    /// Broker ticket.
    pub ticket: String,
    /// Current price at the broker.
    pub current_price: Decimal,
    /// Swap, if reported.
    pub swap: Option<Decimal>,
    /// Commission, if reported.
    pub commission: Option<Decimal>,
    /// Floating profit, if reported.
    pub profit: Option<Decimal>,
    /// Open time.
    pub open_time: DateTime<Utc>,
}

/// A successful broker query, already reconciled by the domain.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletedSync {
    /// ISO 4217 account currency.
    pub currency: String,
    /// Balance.
    pub balance: Decimal,
    /// Equity.
    pub equity: Decimal,
    /// Used margin, if reported.
    pub margin: Option<Decimal>,
    /// Broker positions.
    pub broker: Vec<BrokerPositionInput>,
    /// Platform positions.
    pub platform: Vec<PlatformSide>,
    /// The matching result over `broker` and `platform`.
    pub reconciliation: Reconciliation,
}

/// What the sync worker reported.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncResult {
    /// The broker could not be queried: nothing is closed.
    Failed {
        /// Why.
        error_message: String,
    },
    /// The broker answered.
    Completed(Box<CompletedSync>),
}

/// One submitted sync.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSync {
    /// Idempotency key.
    pub request_id: Uuid,
    /// Account owner.
    pub user_id: Uuid,
    /// Worker start time.
    pub started_at: DateTime<Utc>,
    /// Worker finish time.
    pub finished_at: DateTime<Utc>,
    /// Outcome.
    pub result: SyncResult,
    /// SHA-256 of the request as received (its protobuf encoding), to tell a retry of this request from another
    /// request reusing its `request_id`.
    pub fingerprint: [u8; 32],
}

/// How a recorded sync ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    /// Reconciled and applied.
    Completed,
    /// The broker could not be queried; nothing was applied.
    Failed,
    /// Older than the snapshot already applied: recorded, nothing applied.
    Superseded,
}

impl SyncOutcome {
    /// Its name, as stored (and as the `result` label of `mt5_position_sync_total`).
    pub fn as_str(self) -> &'static str {
        match self {
            SyncOutcome::Completed => "completed",
            SyncOutcome::Failed => "failed",
            SyncOutcome::Superseded => "superseded",
        }
    }
}

/// What a recorded sync produced. The counts and `divergences` describe what was applied, so they agree: all
/// zero and empty for a failed or superseded sync.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncRecord {
    /// Server id of the sync.
    pub sync_id: Uuid,
    /// How it ended.
    pub outcome: SyncOutcome,
    /// Matched pairs.
    pub matched: i32,
    /// Divergences of matched pairs.
    pub pair_divergences: i32,
    /// Broker-only positions.
    pub broker_only: i32,
    /// Platform positions missing at the broker.
    pub missing_at_broker: i32,
    /// Every divergence found by this sync (new or still open), with ids.
    pub divergences: Vec<DivergenceRow>,
    /// Commit time (transaction start).
    pub committed_at: DateTime<Utc>,
    /// The kinds of the divergences this sync detected for the first time (for metrics).
    pub detected_kinds: Vec<String>,
    /// The drawdown level the account entered with this sync, if it changed (for metrics).
    pub level_entered: Option<DrawdownLevel>,
}

/// The outcome of [`record`].
#[derive(Debug, Clone, PartialEq)]
pub enum RecordOutcome {
    /// Applied and committed.
    Recorded(SyncRecord),
    /// The request id was seen before for this user: the stored response, verbatim.
    Replayed(Vec<u8>),
    /// The request id was used before for a different request.
    RequestIdConflict(RequestIdConflict),
    /// The snapshot's currency differs from the account's.
    CurrencyMismatch {
        /// The account's currency.
        account_currency: String,
        /// The currency the sync reported.
        reported_currency: String,
    },
}

/// How the request that first used a request id differed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestIdConflict {
    /// It was another user's sync.
    OtherUser,
    /// It was another sync of the same user (a different payload).
    OtherPayload,
}

/// An event to append.
pub(super) struct NewEvent {
    pub(super) event_type: EventType,
    pub(super) position_id: Option<Uuid>,
    pub(super) symbol: Option<String>,
    pub(super) message: String,
    pub(super) details: serde_json::Value,
}

/// Records a sync atomically. `encode` turns the record into the response bytes stored for replays; it runs
/// inside the transaction, so the stored response is exactly the one returned.
pub async fn record(
    pool: &PgPool,
    sync: &NewSync,
    drawdown_defaults: &DrawdownThresholds,
    encode: impl FnOnce(&SyncRecord) -> Vec<u8>,
) -> Result<RecordOutcome, StorageError> {
    if let Some(outcome) = replay(pool, sync).await? {
        return Ok(outcome);
    }
    let mut tx = pool.begin().await?;
    let user_id = sync.user_id;
    let account = lock_account(&mut tx, user_id).await?;
    let committed_at = account.now;

    if let SyncResult::Completed(c) = &sync.result
        && let Some(existing) = &account.currency
        && existing != &c.currency
    {
        return Ok(RecordOutcome::CurrencyMismatch {
            account_currency: existing.clone(),
            reported_currency: c.currency.clone(),
        });
    }

    // A snapshot older than the one already applied (late delivery, concurrent workers) must not roll anything
    // back.
    let superseded = matches!(sync.result, SyncResult::Completed(_))
        && account.equity_time.is_some_and(|applied| sync.finished_at < applied);
    let (outcome, error_message) = match &sync.result {
        SyncResult::Failed { error_message } => (SyncOutcome::Failed, Some(error_message.as_str())),
        SyncResult::Completed(_) if superseded => (SyncOutcome::Superseded, None),
        SyncResult::Completed(_) => (SyncOutcome::Completed, None),
    };
    let sync_id = Uuid::now_v7();
    let mut events = Vec::new();
    let mut change: Option<AccountChange> = None;
    let reported = sync.finished_at.to_rfc3339();
    let empty = |outcome| SyncRecord {
        sync_id,
        outcome,
        matched: 0,
        pair_divergences: 0,
        broker_only: 0,
        missing_at_broker: 0,
        divergences: Vec::new(),
        committed_at,
        detected_kinds: Vec::new(),
        level_entered: None,
    };
    let record = match &sync.result {
        SyncResult::Failed { error_message } => {
            events.push(NewEvent {
                event_type: EventType::SyncFailed,
                position_id: None,
                symbol: None,
                message: format!("sync failed: {error_message}"),
                details: json!({ "error": error_message, "finished_time": reported }),
            });
            empty(SyncOutcome::Failed)
        }
        SyncResult::Completed(c) if superseded => {
            events.push(NewEvent {
                event_type: EventType::SyncCompleted,
                position_id: None,
                symbol: None,
                message: format!(
                    "sync superseded: it finished at {reported}, before the snapshot already applied; recorded, \
                     nothing changed"
                ),
                details: json!({
                    "superseded": "true",
                    "equity": c.equity.to_string(),
                    "finished_time": reported,
                    "applied_snapshot_time": account.equity_time.map(|t| t.to_rfc3339()),
                }),
            });
            empty(SyncOutcome::Superseded)
        }
        SyncResult::Completed(c) => {
            let thresholds = drawdown_defaults.with_overrides(
                account.warning_drawdown_pct,
                account.max_drawdown_pct,
                account.min_equity,
            );
            let previous_level: DrawdownLevel = parse_stored(&account.drawdown_level)?;
            let positions = apply_positions(&mut tx, sync, sync_id, c, &mut events).await?;
            let divergences = apply_divergences(&mut tx, sync, sync_id, c, &positions, &mut events).await?;
            let account = account_change(sync, c, account.peak_equity, previous_level, &thresholds, &mut events);
            let level_entered = (account.level != previous_level).then_some(account.level);
            change = Some(account);
            let detected_kinds = events
                .iter()
                .filter(|e| e.event_type == EventType::DivergenceDetected)
                .filter_map(|e| e.details.get("kind").and_then(|k| k.as_str()).map(str::to_owned))
                .collect();
            let r = &c.reconciliation;
            let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
            events.push(NewEvent {
                event_type: EventType::SyncCompleted,
                position_id: None,
                symbol: None,
                message: format!(
                    "sync reconciled: {} matched, {} divergences, {} broker-only, {} missing at broker",
                    r.pairs.len(),
                    r.pair_divergence_count(),
                    r.broker_only.len(),
                    r.missing_at_broker.len()
                ),
                details: json!({
                    "matched": r.pairs.len().to_string(),
                    "divergences": r.pair_divergence_count().to_string(),
                    "broker_only": r.broker_only.len().to_string(),
                    "missing_at_broker": r.missing_at_broker.len().to_string(),
                    "equity": c.equity.to_string(),
                    "superseded": "false",
                    "finished_time": reported,
                }),
            });
            SyncRecord {
                sync_id,
                outcome: SyncOutcome::Completed,
                matched: count(r.pairs.len()),
                pair_divergences: count(r.pair_divergence_count()),
                broker_only: count(r.broker_only.len()),
                missing_at_broker: count(r.missing_at_broker.len()),
                divergences,
                committed_at,
                detected_kinds,
                level_entered,
            }
        }
    };

    let response = encode(&record);
    let inserted = finish(&mut tx, sync, &record, outcome, error_message, change, events, response).await?;
    if !inserted {
        // A concurrent submission of the same request id committed first (it held the account lock while we
        // waited): undo everything and answer as it did.
        tx.rollback().await?;
        // (`None` cannot happen: the row that won is committed. Answer as for a different request, never silently.)
        return Ok(replay(pool, sync)
            .await?
            .unwrap_or(RecordOutcome::RequestIdConflict(RequestIdConflict::OtherPayload)));
    }
    tx.commit().await?;
    Ok(RecordOutcome::Recorded(record))
}

/// Creates the account and its summary row if they do not exist, and locks the account row: syncs of one user
/// apply one at a time. One round trip for an existing user (the inserts are no-ops); a new user's rows become
/// visible to a second read only (a statement sees the rows as they were when it started).
async fn lock_account(tx: &mut Transaction<'_, Postgres>, user_id: Uuid) -> Result<LockedAccount, StorageError> {
    for _ in 0..2 {
        let row = sqlx::query_as!(
            LockedAccount,
            r#"WITH a AS (INSERT INTO accounts (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING RETURNING user_id),
                    s AS (INSERT INTO reconciliation_summaries (user_id) SELECT user_id FROM a
                          ON CONFLICT (user_id) DO NOTHING)
               SELECT currency, equity_time, peak_equity, drawdown_level, warning_drawdown_pct,
                      max_drawdown_pct, min_equity, now() AS "now!"
               FROM accounts WHERE user_id = $1 FOR UPDATE"#,
            user_id
        )
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(row) = row {
            return Ok(row);
        }
    }
    Err(StorageError::Corrupt(format!("the account of {user_id} was neither found nor created")))
}

/// The account row as a sync reads it, locked.
struct LockedAccount {
    currency: Option<String>,
    equity_time: Option<DateTime<Utc>>,
    peak_equity: Option<Decimal>,
    drawdown_level: String,
    warning_drawdown_pct: Option<Decimal>,
    max_drawdown_pct: Option<Decimal>,
    min_equity: Option<Decimal>,
    now: DateTime<Utc>,
}

/// The sync's last statement: the account's snapshot and drawdown level (when `change`), the events, the
/// summary counters, and the sync row with its stored response. Whether the sync row was inserted (`false`:
/// the request id was taken meanwhile, see `record`).
///
/// Summary: "last sync" fields only move forward in time (a late, older sync is counted but does not become the
/// last one); open/matched/divergence counts are recomputed from the user's *open* rows (tens, via partial
/// indexes), never from history.
async fn finish(
    tx: &mut Transaction<'_, Postgres>,
    sync: &NewSync,
    record: &SyncRecord,
    outcome: SyncOutcome,
    error_message: Option<&str>,
    change: Option<AccountChange>,
    events: Vec<NewEvent>,
    response: Vec<u8>,
) -> Result<bool, StorageError> {
    let mut types = Vec::with_capacity(events.len());
    let mut positions = Vec::with_capacity(events.len());
    let mut symbols = Vec::with_capacity(events.len());
    let mut messages = Vec::with_capacity(events.len());
    let mut details = Vec::with_capacity(events.len());
    for e in events {
        types.push(e.event_type.as_str().to_owned());
        positions.push(e.position_id);
        symbols.push(e.symbol);
        messages.push(e.message);
        details.push(without_nulls(e.details));
    }
    let completed = match &sync.result {
        SyncResult::Completed(c) => Some(c.as_ref()),
        SyncResult::Failed { .. } => None,
    };
    let inserted = sqlx::query_scalar!(
        r#"WITH account AS (
               UPDATE accounts SET currency = $18, balance = $12, equity = $13, margin = $14, equity_time = $6,
                      peak_equity = GREATEST(COALESCE(peak_equity, $19), $19),
                      drawdown_level = $20,
                      drawdown_level_since = CASE WHEN drawdown_level = $20 THEN drawdown_level_since ELSE now() END,
                      updated_at = now()
               WHERE user_id = $3 AND $17
           ),
           events AS (
               INSERT INTO events (user_id, event_type, occurred_at, sync_id, position_id, symbol, message, details)
               SELECT $3, t.event_type, now(), $1, t.position_id, t.symbol, t.message, t.details
               FROM UNNEST($21::text[], $22::uuid[], $23::text[], $24::text[], $25::jsonb[]) WITH ORDINALITY
                    AS t(event_type, position_id, symbol, message, details, n)
               ORDER BY t.n
           ),
           summary AS (
               UPDATE reconciliation_summaries s SET
                    total_syncs = s.total_syncs + 1,
                    failed_syncs = s.failed_syncs + CASE WHEN $16 THEN 0 ELSE 1 END,
                    last_sync_id = CASE WHEN s.last_sync_finished_at > $6 THEN s.last_sync_id ELSE $1 END,
                    last_sync_status = CASE WHEN s.last_sync_finished_at > $6 THEN s.last_sync_status
                                            WHEN $16 THEN 'completed' ELSE 'failed' END,
                    last_sync_started_at = CASE WHEN s.last_sync_finished_at > $6 THEN s.last_sync_started_at
                                                ELSE $5 END,
                    last_sync_error = CASE WHEN s.last_sync_finished_at > $6 THEN s.last_sync_error ELSE $7 END,
                    last_sync_finished_at = GREATEST(s.last_sync_finished_at, $6),
                    last_success_at = CASE WHEN $16 THEN GREATEST(s.last_success_at, $6) ELSE s.last_success_at END,
                    open_positions_count = CASE WHEN $16 THEN
                        (SELECT count(*) FROM positions p WHERE p.user_id = $3 AND p.status = 'open')::int
                        ELSE s.open_positions_count END,
                    matched_positions_count = CASE WHEN $16 THEN
                        (SELECT count(*) FROM positions p WHERE p.user_id = $3 AND p.status = 'open' AND p.matched)::int
                        ELSE s.matched_positions_count END,
                    open_divergences_count = CASE WHEN $16 THEN
                        (SELECT count(*) FROM divergences d WHERE d.user_id = $3 AND d.resolved_at IS NULL)::int
                        ELSE s.open_divergences_count END,
                    updated_at = now()
               WHERE s.user_id = $3
           )
           INSERT INTO syncs (sync_id, request_id, user_id, status, started_at, finished_at, error_message,
                              matched_count, divergence_count, broker_only_count, missing_count, balance, equity,
                              margin, response, request_fingerprint)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $26)
           ON CONFLICT (request_id) DO NOTHING
           RETURNING sync_id"#,
        record.sync_id,
        sync.request_id,
        sync.user_id,
        outcome.as_str(),
        sync.started_at,
        sync.finished_at,
        error_message,
        record.matched,
        record.pair_divergences,
        record.broker_only,
        record.missing_at_broker,
        completed.map(|c| c.balance),
        completed.map(|c| c.equity),
        completed.and_then(|c| c.margin),
        response,
        record.outcome != SyncOutcome::Failed,
        change.is_some(),
        completed.map(|c| c.currency.clone()),
        change.as_ref().map(|c| c.peak),
        change.as_ref().map_or(DrawdownLevel::Unknown, |c| c.level).as_str(),
        &types,
        &positions as &[Option<Uuid>],
        &symbols as &[Option<String>],
        &messages,
        &details,
        sync.fingerprint.as_slice()
    )
    .fetch_optional(&mut **tx)
    .await?;
    Ok(inserted.is_some())
}

/// The stored response if this request id was already recorded for this very request (same user, same
/// fingerprint), or the conflict if it was recorded for another; `None` if it is new.
async fn replay(pool: &PgPool, sync: &NewSync) -> Result<Option<RecordOutcome>, StorageError> {
    let row =
        sqlx::query!("SELECT user_id, response, request_fingerprint FROM syncs WHERE request_id = $1", sync.request_id)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|r| {
        // Syncs recorded before fingerprints were kept have none: they replay on the request id alone.
        let same_payload = r.request_fingerprint.as_deref().is_none_or(|f| f == sync.fingerprint.as_slice());
        match r.response {
            _ if r.user_id != sync.user_id => RecordOutcome::RequestIdConflict(RequestIdConflict::OtherUser),
            _ if !same_payload => RecordOutcome::RequestIdConflict(RequestIdConflict::OtherPayload),
            Some(bytes) => RecordOutcome::Replayed(bytes),
            // Rows are only visible after commit, and the response is written before commit.
            None => RecordOutcome::RequestIdConflict(RequestIdConflict::OtherPayload),
        }
    }))
}

/// Drops absent (`null`) values: an absent detail is a missing key, never the text "null".
fn without_nulls(details: serde_json::Value) -> serde_json::Value {
    match details {
        serde_json::Value::Object(map) => {
            serde_json::Value::Object(map.into_iter().filter(|(_, v)| !v.is_null()).collect())
        }
        other => other,
    }
}
