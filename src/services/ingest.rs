//! The write side: `SubmitBrokerSync` (decode, reconcile with the domain matcher, record atomically) and
//! `SubmitQuotes` (decode, record, raise/clear alerts). Both need the `trading:sync:write` scope. Decoding
//! collects every invalid field, so a caller sees all problems of a request at once.

use chrono::{DateTime, Duration, DurationRound, Utc};
use prost::Message;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use tonic::{Request, Response};

use super::decode::{self, caller, require_scope};
use super::encode::{self, ts};
use super::{AppState, RpcResult};
use crate::auth::Scope;
use crate::config::Rules;
use crate::domain::Side;
use crate::domain::bounds::{DecimalBounds, MONEY, PRICE, VOLUME};
use crate::domain::drawdown::DrawdownLevel;
use crate::domain::reconcile::{self, BrokerSide, PlatformSide};
use crate::error::{ApiError, FieldViolation, Precondition};
use crate::pb;
use crate::storage::quotes::{self, NewCandleClose, NewQuote, QuotesOutcome};
use crate::storage::syncs::{
    self, BrokerPositionInput, CompletedSync, NewSync, RecordOutcome, RequestIdConflict, SyncOutcome, SyncRecord,
    SyncResult,
};

/// How far in the future a reported time may be (clock skew between feed, worker and server).
const MAX_FUTURE: Duration = Duration::seconds(5);
/// The earliest reported time accepted (nothing this service tracks happened before 2000).
const EARLIEST_REPORTED: i64 = 946_684_800; // 2000-01-01T00:00:00Z
/// Most broker positions, and most platform positions, in one sync (stated in the proto).
pub const MAX_POSITIONS_PER_SYNC: usize = 2_000;
/// Syncs with at most this many positions (both sides) are decoded and matched on the calling worker: tens of
/// microseconds, less than the hop to the blocking pool would cost.
const INLINE_DECODE_POSITIONS: usize = 256;
/// Most quotes, and most candle closes, in one batch (stated in the proto).
pub const MAX_QUOTES_PER_BATCH: usize = 10_000;

/// Collects field violations while decoding.
#[derive(Default)]
struct Violations(Vec<FieldViolation>);

impl Violations {
    fn take<T>(&mut self, result: Result<T, ApiError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(ApiError::InvalidArgument(v)) => {
                self.0.extend(v);
                None
            }
            Err(other) => {
                self.0.push(FieldViolation { field: String::new(), description: other.to_string() });
                None
            }
        }
    }

    fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation { field: field.into(), description: description.into() });
    }

    fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() { Ok(()) } else { Err(ApiError::InvalidArgument(self.0)) }
    }
}

fn required_text(v: &mut Violations, field: &str, value: &str, max: usize) -> Option<String> {
    if value.is_empty() {
        v.add(field, "is required");
        None
    } else if value.chars().count() > max {
        v.add(field, format!("must be at most {max} characters"));
        None
    } else {
        Some(value.to_owned())
    }
}

fn bounded(v: &mut Violations, field: &str, value: &str, bounds: &DecimalBounds) -> Option<Decimal> {
    v.take(decode::decimal(field, value, bounds))
}

fn optional_bounded(v: &mut Violations, field: &str, value: &str, bounds: &DecimalBounds) -> Option<Option<Decimal>> {
    v.take(decode::optional_decimal(field, value, bounds))
}

fn side(v: &mut Violations, field: &str, value: i32) -> Option<Side> {
    match pb::Side::try_from(value) {
        Ok(pb::Side::Buy) => Some(Side::Buy),
        Ok(pb::Side::Sell) => Some(Side::Sell),
        _ => {
            v.add(field, "must be SIDE_BUY or SIDE_SELL");
            None
        }
    }
}

fn time(
    v: &mut Violations,
    field: &str,
    value: Option<&prost_types::Timestamp>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let Some(t) = value else {
        v.add(field, "is required");
        return None;
    };
    let t = v.take(decode::timestamp(field, t))?;
    if t > now + MAX_FUTURE {
        v.add(field, format!("is in the future ({t} is after the server time {now}; at most 5 s of skew is accepted)"));
        return None;
    }
    if t.timestamp() < EARLIEST_REPORTED {
        v.add(field, format!("is too far in the past ({t} is before 2000-01-01T00:00:00Z)"));
        return None;
    }
    // The database keeps microseconds; dropping finer digits here keeps every comparison (newest quote of a
    // batch, a candle already stored) on the precision that is stored.
    t.duration_trunc(Duration::microseconds(1)).ok()
}

fn too_many(v: &mut Violations, field: &str, len: usize, max: usize) {
    if len > max {
        v.add(field, format!("has {len} entries; at most {max} are accepted per request"));
    }
}

fn decode_broker(
    v: &mut Violations,
    i: usize,
    p: &pb::BrokerPosition,
    now: DateTime<Utc>,
) -> Option<BrokerPositionInput> {
    let f = |name: &str| format!("snapshot.broker_positions[{i}].{name}");
    let identifier = required_text(v, &f("position_identifier"), &p.position_identifier, 64);
    let ticket = if p.ticket.chars().count() > 64 {
        v.add(f("ticket"), "must be at most 64 characters");
        None
    } else {
        Some(p.ticket.clone())
    };
    let symbol = v.take(decode::symbol(&f("symbol"), &p.symbol));
    let side = side(v, &f("side"), p.side);
    let volume = bounded(v, &f("volume"), &p.volume, &VOLUME);
    let open_price = bounded(v, &f("open_price"), &p.open_price, &PRICE);
    let current_price = bounded(v, &f("current_price"), &p.current_price, &PRICE);
    let take_profit = optional_bounded(v, &f("take_profit"), &p.take_profit, &PRICE);
    let stop_loss = optional_bounded(v, &f("stop_loss"), &p.stop_loss, &PRICE);
    let swap = optional_bounded(v, &f("swap"), &p.swap, &MONEY);
    let commission = optional_bounded(v, &f("commission"), &p.commission, &MONEY);
    let profit = optional_bounded(v, &f("profit"), &p.profit, &MONEY);
    let open_time = time(v, &f("open_time"), p.open_time.as_ref(), now);
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
    let trade_id = required_text(v, &f("platform_trade_id"), &p.platform_trade_id, 64);
    let symbol = v.take(decode::symbol(&f("symbol"), &p.symbol));
    let side = side(v, &f("side"), p.side);
    let volume = bounded(v, &f("volume"), &p.volume, &VOLUME);
    let entry_price = bounded(v, &f("entry_price"), &p.entry_price, &PRICE);
    let take_profit = optional_bounded(v, &f("take_profit"), &p.take_profit, &PRICE);
    let stop_loss = optional_bounded(v, &f("stop_loss"), &p.stop_loss, &PRICE);
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

/// Flags the second and later occurrences of a key.
fn duplicates<'a>(v: &mut Violations, keys: impl Iterator<Item = &'a str>, field: impl Fn(usize) -> String) {
    let mut seen = std::collections::HashMap::new();
    for (i, key) in keys.enumerate() {
        if let Some(first) = seen.insert(key, i) {
            v.add(field(i), format!("{key:?} repeats entry {first}"));
        }
    }
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
    let started_at = time(&mut v, "started_time", req.started_time.as_ref(), now);
    let finished_at = time(&mut v, "finished_time", req.finished_time.as_ref(), now);
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
        Some(pb::submit_broker_sync_request::Result::Failure(f)) => {
            required_text(&mut v, "failure.error_message", &f.error_message, 2000)
                .map(|error_message| SyncResult::Failed { error_message })
        }
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
    let balance = bounded(v, "snapshot.account.balance", &account.balance, &MONEY);
    let equity = bounded(v, "snapshot.account.equity", &account.equity, &MONEY);
    let margin = optional_bounded(v, "snapshot.account.margin", &account.margin, &MONEY);
    let currency = if account.currency.len() == 3 && account.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        Some(account.currency.clone())
    } else {
        v.add("snapshot.account.currency", format!("{:?} is not an ISO 4217 code like \"GBP\"", account.currency));
        None
    };
    let before = v.0.len();
    too_many(v, "snapshot.broker_positions", s.broker_positions.len(), MAX_POSITIONS_PER_SYNC);
    too_many(v, "snapshot.platform_positions", s.platform_positions.len(), MAX_POSITIONS_PER_SYNC);
    if v.0.len() > before {
        // Do not spend time decoding an oversized list entry by entry.
        return None;
    }
    let broker: Vec<_> = s.broker_positions.iter().enumerate().map(|(i, p)| decode_broker(v, i, p, now)).collect();
    let platform: Vec<_> = s.platform_positions.iter().enumerate().map(|(i, p)| decode_platform(v, i, p)).collect();
    duplicates(v, s.broker_positions.iter().map(|p| p.position_identifier.as_str()), |i| {
        format!("snapshot.broker_positions[{i}].position_identifier")
    });
    duplicates(v, s.platform_positions.iter().map(|p| p.platform_trade_id.as_str()), |i| {
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

/// `GuardsService.SubmitQuotes`.
pub async fn submit_quotes(
    state: &AppState,
    request: Request<pb::SubmitQuotesRequest>,
) -> RpcResult<pb::SubmitQuotesResponse> {
    let caller = caller(&request)?;
    require_scope(&caller, Scope::SyncWrite)?;
    let req = request.get_ref();
    let now = Utc::now();
    let mut v = Violations::default();
    if req.quotes.is_empty() && req.candle_closes.is_empty() {
        v.add("quotes", "the batch is empty: send quotes, candle_closes or both");
    }
    too_many(&mut v, "quotes", req.quotes.len(), MAX_QUOTES_PER_BATCH);
    too_many(&mut v, "candle_closes", req.candle_closes.len(), MAX_QUOTES_PER_BATCH);
    if !v.0.is_empty() {
        // Do not decode an oversized batch entry by entry.
        return Err(ApiError::InvalidArgument(v.0).into());
    }
    let quotes: Vec<Option<NewQuote>> = req
        .quotes
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let f = |name: &str| format!("quotes[{i}].{name}");
            let symbol = v.take(decode::symbol(&f("symbol"), &q.symbol));
            let bid = bounded(&mut v, &f("bid"), &q.bid, &PRICE);
            let ask = bounded(&mut v, &f("ask"), &q.ask, &PRICE);
            if let (Some(b), Some(a)) = (bid, ask)
                && a < b
            {
                v.add(f("ask"), format!("ask {a} is below bid {b}"));
                return None;
            }
            let quote_time = time(&mut v, &f("quote_time"), q.quote_time.as_ref(), now);
            Some(NewQuote { symbol: symbol?.as_str().to_owned(), bid: bid?, ask: ask?, quote_time: quote_time? })
        })
        .collect();
    let candles: Vec<Option<NewCandleClose>> = req
        .candle_closes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let f = |name: &str| format!("candle_closes[{i}].{name}");
            let symbol = v.take(decode::symbol(&f("symbol"), &c.symbol));
            let previous_close = bounded(&mut v, &f("previous_close"), &c.previous_close, &PRICE);
            let open = bounded(&mut v, &f("open"), &c.open, &PRICE);
            let open_time = time(&mut v, &f("open_time"), c.open_time.as_ref(), now);
            Some(NewCandleClose {
                symbol: symbol?.as_str().to_owned(),
                previous_close: previous_close?,
                open: open?,
                open_time: open_time?,
            })
        })
        .collect();
    v.finish()?;
    let quotes: Vec<NewQuote> = quotes.into_iter().flatten().collect();
    let candles: Vec<NewCandleClose> = candles.into_iter().flatten().collect();

    let db = &state.db;
    let pool = db.pool().map_err(ApiError::from)?;
    let outcome = db
        .run("quotes.record", quotes::record(pool, &quotes, &candles, &state.rules.market))
        .await
        .map_err(ApiError::from)?;
    let (raised, cleared) = match outcome {
        QuotesOutcome::Recorded { raised, cleared, holders } => {
            // Before acknowledging: this replica's reads value positions with the new prices and alerts at once
            // (other replicas within their market refresh interval), and the holders of a symbol whose alert
            // changed lose their cached status (new events in their logs). Nothing else is invalidated.
            if let Err(e) = state.market.refresh().await {
                tracing::warn!(error = %crate::error::error_chain(&e), "quotes committed but the market snapshot could not be re-read");
            }
            state.cache.invalidate(&holders).await;
            for alert in &raised {
                state.metrics.alert(alert.kind.as_str(), alert.severity.as_str());
            }
            (raised, cleared)
        }
        QuotesOutcome::UnknownSymbol(symbol) => {
            let field = quotes
                .iter()
                .position(|q| q.symbol == symbol)
                .map(|i| format!("quotes[{i}].symbol"))
                .or_else(|| {
                    candles.iter().position(|c| c.symbol == symbol).map(|i| format!("candle_closes[{i}].symbol"))
                })
                .unwrap_or_else(|| "quotes".into());
            return Err(ApiError::FailedPrecondition(Precondition::UnknownSymbol { symbol, field }).into());
        }
    };
    let rules = &state.rules.market;
    Ok(Response::new(pb::SubmitQuotesResponse {
        accepted_quotes: i32::try_from(quotes.len()).unwrap_or(i32::MAX),
        accepted_candle_closes: i32::try_from(candles.len()).unwrap_or(i32::MAX),
        raised_alerts: raised.into_iter().map(|a| encode::market_alert(a, rules)).collect(),
        cleared_alerts_count: i32::try_from(cleared).unwrap_or(i32::MAX),
    }))
}
