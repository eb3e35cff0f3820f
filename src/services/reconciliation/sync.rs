//! `ReconciliationService.SubmitBrokerSync`: decode (every invalid field at once), reconcile with the domain
//! matcher, record atomically with idempotency on `request_id`, invalidate the user's cache, answer. Needs the
//! `trading:sync:write` scope.

use chrono::{DateTime, Utc};
use prost::Message;
use sha2::{Digest, Sha256};
use tonic::{Request, Response};

use crate::auth::Scope;
use crate::domain::Rules;
use crate::domain::bounds::{MONEY, PRICE, VOLUME};
use crate::domain::drawdown::DrawdownLevel;
use crate::domain::reconcile::{self, BrokerSide, PlatformSide};
use crate::pb;
use crate::services::decode::{self, caller, require_scope};
use crate::services::encode::{self, ts};
use crate::services::error::Precondition;
use crate::services::violations::Violations;
use crate::services::{ApiError, AppState, RpcResult};
use crate::storage::syncs::{
    self, BrokerPositionInput, CompletedSync, NewSync, RecordOutcome, RequestIdConflict, SyncOutcome, SyncRecord,
    SyncResult,
};

/// Most broker positions, and most platform positions, in one sync (stated in the proto).
pub const MAX_POSITIONS_PER_SYNC: usize = 2_000;
/// Syncs with at most this many positions (both sides) are decoded and matched on the calling worker: tens of
/// microseconds, less than the hop to the blocking pool would cost.
const INLINE_DECODE_POSITIONS: usize = 256;

fn decode_broker(
    v: &mut Violations,
    i: usize,
    p: &pb::BrokerPosition,
    now: DateTime<Utc>,
) -> Option<BrokerPositionInput> {
    let f = |name: &str| format!("snapshot.broker_positions[{i}].{name}");
    let identifier = v.required_text(&f("position_identifier"), &p.position_identifier, 64);
    let ticket = if p.ticket.chars().count() > 64 {
        v.add(f("ticket"), "must be at most 64 characters");
        None
    } else {
        Some(p.ticket.clone())
    };
    let symbol = v.take(decode::symbol(&f("symbol"), &p.symbol));
    let side = v.side(&f("side"), p.side);
    let volume = v.decimal(&f("volume"), &p.volume, &VOLUME);
    let open_price = v.decimal(&f("open_price"), &p.open_price, &PRICE);
    let current_price = v.decimal(&f("current_price"), &p.current_price, &PRICE);
    let take_profit = v.optional_decimal(&f("take_profit"), &p.take_profit, &PRICE);
    let stop_loss = v.optional_decimal(&f("stop_loss"), &p.stop_loss, &PRICE);
    let swap = v.optional_decimal(&f("swap"), &p.swap, &MONEY);
    let commission = v.optional_decimal(&f("commission"), &p.commission, &MONEY);
    let profit = v.optional_decimal(&f("profit"), &p.profit, &MONEY);
    let open_time = v.reported_time(&f("open_time"), p.open_time.as_ref(), now);
    Some(BrokerPositionInput {
        core: BrokerSide {
            position_identifier: identifier?,
            symbol: symbol?.as_str().to_owned(),
            side: side?,
            volume: volume?,
            open_price: open_price?,
            take_profit: take_profit?,
            stop_loss: stop_loss?,
        },
        ticket: ticket?,
        current_price: current_price?,
        swap: swap?,
        commission: commission?,
        profit: profit?,
        open_time: open_time?,
    })
}

fn decode_platform(v: &mut Violations, i: usize, p: &pb::PlatformPosition) -> Option<PlatformSide> {
    let f = |name: &str| format!("snapshot.platform_positions[{i}].{name}");
    let trade_id = v.required_text(&f("platform_trade_id"), &p.platform_trade_id, 64);
    let symbol = v.take(decode::symbol(&f("symbol"), &p.symbol));
    let side = v.side(&f("side"), p.side);
    let volume = v.decimal(&f("volume"), &p.volume, &VOLUME);
    let entry_price = v.decimal(&f("entry_price"), &p.entry_price, &PRICE);
    let take_profit = v.optional_decimal(&f("take_profit"), &p.take_profit, &PRICE);
    let stop_loss = v.optional_decimal(&f("stop_loss"), &p.stop_loss, &PRICE);
    let identifier = if p.position_identifier.chars().count() > 64 {
        v.add(f("position_identifier"), "must be at most 64 characters");
        None
    } else {
        Some((!p.position_identifier.is_empty()).then(|| p.position_identifier.clone()))
    };
    Some(PlatformSide {
        platform_trade_id: trade_id?,
        symbol: symbol?.as_str().to_owned(),
        side: side?,
        volume: volume?,
        entry_price: entry_price?,
        take_profit: take_profit?,
        stop_loss: stop_loss?,
        position_identifier: identifier?,
    })
}

/// Decodes and reconciles a sync. CPU-bound (up to 2 x [`MAX_POSITIONS_PER_SYNC`] positions): run it off the
/// async workers.
fn decode_sync(req: &pb::SubmitBrokerSyncRequest, rules: &Rules, now: DateTime<Utc>) -> Result<NewSync, ApiError> {
    let mut v = Violations::default();
    let request_id = v.take(decode::parse_uuid("request_id", &req.request_id));
    let user_id = if req.user_id.is_empty() {
        v.add("user_id", "is required");
        None
    } else {
        v.take(decode::parse_uuid("user_id", &req.user_id))
    };
    let started_at = v.reported_time("started_time", req.started_time.as_ref(), now);
    let finished_at = v.reported_time("finished_time", req.finished_time.as_ref(), now);
    if let (Some(s), Some(f)) = (started_at, finished_at)
        && f < s
    {
        v.add("finished_time", "must not be before started_time");
    }
    let result = match &req.result {
        None => {
            v.add("result", "exactly one of snapshot or failure is required");
            None
        }
        Some(pb::submit_broker_sync_request::Result::Failure(f)) => v
            .required_text("failure.error_message", &f.error_message, 2000)
            .map(|error_message| SyncResult::Failed { error_message }),
        Some(pb::submit_broker_sync_request::Result::Snapshot(s)) => decode_snapshot(&mut v, s, rules, now),
    };
    v.finish()?;
    match (request_id, user_id, started_at, finished_at, result) {
        (Some(request_id), Some(user_id), Some(started_at), Some(finished_at), Some(result)) => {
            let fingerprint = Sha256::digest(req.encode_to_vec()).into();
            Ok(NewSync { request_id, user_id, started_at, finished_at, result, fingerprint })
        }
        // Every None above recorded a violation, so finish() returned early.
        _ => Err(ApiError::Internal("sync decoding lost a violation".into())),
    }
}

fn decode_snapshot(v: &mut Violations, s: &pb::SyncSnapshot, rules: &Rules, now: DateTime<Utc>) -> Option<SyncResult> {
    let Some(account) = &s.account else {
        v.add("snapshot.account", "is required");
        return None;
    };
    let balance = v.decimal("snapshot.account.balance", &account.balance, &MONEY);
    let equity = v.decimal("snapshot.account.equity", &account.equity, &MONEY);
    let margin = v.optional_decimal("snapshot.account.margin", &account.margin, &MONEY);
    let currency = if account.currency.len() == 3 && account.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        Some(account.currency.clone())
    } else {
        v.add("snapshot.account.currency", format!("{:?} is not an ISO 4217 code like \"GBP\"", account.currency));
        None
    };
    let before = v.len();
    v.at_most("snapshot.broker_positions", s.broker_positions.len(), MAX_POSITIONS_PER_SYNC);
    v.at_most("snapshot.platform_positions", s.platform_positions.len(), MAX_POSITIONS_PER_SYNC);
    if v.len() > before {
        // Do not spend time decoding an oversized list entry by entry.
        return None;
    }
    let broker: Vec<_> = s.broker_positions.iter().enumerate().map(|(i, p)| decode_broker(v, i, p, now)).collect();
    let platform: Vec<_> = s.platform_positions.iter().enumerate().map(|(i, p)| decode_platform(v, i, p)).collect();
    v.duplicates(s.broker_positions.iter().map(|p| p.position_identifier.as_str()), |i| {
        format!("snapshot.broker_positions[{i}].position_identifier")
    });
    v.duplicates(s.platform_positions.iter().map(|p| p.platform_trade_id.as_str()), |i| {
        format!("snapshot.platform_positions[{i}].platform_trade_id")
    });
    let broker: Vec<BrokerPositionInput> = broker.into_iter().collect::<Option<_>>()?;
    let platform: Vec<PlatformSide> = platform.into_iter().collect::<Option<_>>()?;
    let sides: Vec<BrokerSide> = broker.iter().map(|b| b.core.clone()).collect();
    let reconciliation = reconcile::reconcile(&sides, &platform, &rules.matching);
    Some(SyncResult::Completed(Box::new(CompletedSync {
        currency: currency?,
        balance: balance?,
        equity: equity?,
        margin: margin?,
        broker,
        platform,
        reconciliation,
    })))
}

fn sync_response(record: &SyncRecord) -> pb::SubmitBrokerSyncResponse {
    pb::SubmitBrokerSyncResponse {
        sync_id: record.sync_id.to_string(),
        status: match record.outcome {
            SyncOutcome::Completed => pb::SyncStatus::Completed,
            SyncOutcome::Failed => pb::SyncStatus::Failed,
            SyncOutcome::Superseded => pb::SyncStatus::Superseded,
        }
        .into(),
        matched_count: record.matched,
        divergence_count: record.pair_divergences,
        broker_only_count: record.broker_only,
        missing_at_broker_count: record.missing_at_broker,
        divergences: record.divergences.iter().map(encode::divergence).collect(),
        committed_time: Some(ts(record.committed_at)),
    }
}

/// `ReconciliationService.SubmitBrokerSync`.
pub async fn submit_broker_sync(
    state: &AppState,
    request: Request<pb::SubmitBrokerSyncRequest>,
) -> RpcResult<pb::SubmitBrokerSyncResponse> {
    let caller = caller(&request)?;
    require_scope(&caller, Scope::SyncWrite)?;
    let req = request.into_inner();
    let size = match &req.result {
        Some(pb::submit_broker_sync_request::Result::Snapshot(s)) => {
            s.broker_positions.len() + s.platform_positions.len()
        }
        _ => 0,
    };
    let sync = if size <= INLINE_DECODE_POSITIONS {
        decode_sync(&req, &state.rules, Utc::now())?
    } else {
        // Up to a few milliseconds of CPU: off the async workers, so other calls are not held up behind it.
        let rules = state.rules.clone();
        tokio::task::spawn_blocking(move || decode_sync(&req, &rules, Utc::now()))
            .await
            .map_err(|e| ApiError::Internal(Box::new(e)))??
    };
    let db = &state.db;
    let pool = db.pool().map_err(ApiError::from)?;
    let recorded = db
        .run("syncs.record", syncs::record(pool, &sync, &state.rules.drawdown, |r| sync_response(r).encode_to_vec()))
        .await;
    let outcome = recorded.map_err(ApiError::from)?;
    if matches!(outcome, RecordOutcome::Recorded(_) | RecordOutcome::Replayed(_)) {
        // Before acknowledging: no read through this service may return data older than this sync. (A replay
        // invalidates again in case the original call died between commit and invalidation.)
        state.cache.invalidate(&[sync.user_id]).await;
    }
    let response = match outcome {
        RecordOutcome::Recorded(record) => {
            let duration = (sync.finished_at - sync.started_at).to_std().unwrap_or_default();
            let trigger = record
                .level_entered
                .filter(|l| matches!(l, DrawdownLevel::Warning | DrawdownLevel::Critical))
                .map(|l| l.as_str());
            state.metrics.sync(record.outcome.as_str(), duration, &record.detected_kinds, trigger);
            tracing::debug!(
                user_id = %sync.user_id,
                sync_id = %record.sync_id,
                matched = record.matched,
                divergences = record.pair_divergences,
                broker_only = record.broker_only,
                missing = record.missing_at_broker,
                "sync recorded"
            );
            sync_response(&record)
        }
        RecordOutcome::Replayed(bytes) => {
            tracing::info!(user_id = %sync.user_id, request_id = %sync.request_id, "sync replayed");
            pb::SubmitBrokerSyncResponse::decode(bytes.as_slice()).map_err(|e| ApiError::Internal(Box::new(e)))?
        }
        RecordOutcome::RequestIdConflict(conflict) => {
            return Err(ApiError::RequestIdReused {
                request_id: sync.request_id.to_string(),
                why: match conflict {
                    RequestIdConflict::OtherUser => "was already used for another user's sync",
                    RequestIdConflict::OtherPayload => {
                        "was already used for a different sync of this user (a retry must repeat the request exactly)"
                    }
                },
            }
            .into());
        }
        RecordOutcome::CurrencyMismatch { account_currency, reported_currency } => {
            return Err(ApiError::FailedPrecondition(Precondition::CurrencyMismatch {
                account_currency,
                reported_currency,
            })
            .into());
        }
    };
    Ok(Response::new(response))
}
