//! Applying a sync to positions: upsert what the broker reports, close what left it, replace the platform's
//! view.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::{BrokerPositionInput, CompletedSync, NewEvent, NewSync};
use crate::domain::CloseReason;
use crate::domain::events::EventType;
use crate::domain::reconcile::PlatformSide;
use crate::storage::StorageError;

/// Upserts broker positions and closes the ones that left the broker. Returns position ids by broker index.
pub(super) async fn apply_positions(
    tx: &mut Transaction<'_, Postgres>,
    sync: &NewSync,
    sync_id: Uuid,
    c: &CompletedSync,
    events: &mut Vec<NewEvent>,
) -> Result<Vec<Uuid>, StorageError> {
    let user_id = sync.user_id;
    let identifiers: Vec<String> = c.broker.iter().map(|b| b.core.position_identifier.clone()).collect();
    let existing = sqlx::query!(
        r#"SELECT position_id, position_identifier, status, symbol, platform_trade_id
           FROM positions WHERE user_id = $1 AND (status = 'open' OR position_identifier = ANY($2))"#,
        user_id,
        &identifiers
    )
    .fetch_all(&mut **tx)
    .await?;
    let known: HashMap<&str, (Uuid, bool)> =
        existing.iter().map(|r| (r.position_identifier.as_str(), (r.position_id, r.status == "open"))).collect();

    let partner: HashMap<usize, usize> = c.reconciliation.pairs.iter().copied().collect();
    let mut ids = Vec::with_capacity(c.broker.len());
    for b in &c.broker {
        let (id, was_open) = known.get(b.core.position_identifier.as_str()).copied().unwrap_or((Uuid::now_v7(), false));
        if !was_open {
            events.push(NewEvent {
                event_type: EventType::PositionOpened,
                position_id: Some(id),
                symbol: Some(b.core.symbol.clone()),
                message: format!(
                    "position {} opened: {} {} {} at {}",
                    b.core.position_identifier, b.core.symbol, b.core.side, b.core.volume, b.core.open_price
                ),
                details: json!({
                    "position_identifier": b.core.position_identifier,
                    "side": b.core.side.as_str(),
                    "volume": b.core.volume.to_string(),
                    "open_price": b.core.open_price.to_string(),
                }),
            });
        }
        ids.push(id);
    }

    // Positions open before this sync and absent from it left the broker. If the platform still lists them it
    // was the broker's doing (SL/TP, stop-out, manual close); otherwise the platform closed them.
    let broker_ids: HashSet<&str> = identifiers.iter().map(String::as_str).collect();
    let platform_ids: HashSet<&str> = c.platform.iter().map(|p| p.platform_trade_id.as_str()).collect();
    let platform_identifiers: HashSet<&str> =
        c.platform.iter().filter_map(|p| p.position_identifier.as_deref()).collect();
    let mut closed_ids = Vec::new();
    let mut closed_reasons = Vec::new();
    for r in existing.iter().filter(|r| r.status == "open" && !broker_ids.contains(r.position_identifier.as_str())) {
        let still_on_platform = platform_identifiers.contains(r.position_identifier.as_str())
            || r.platform_trade_id.as_deref().is_some_and(|t| platform_ids.contains(t));
        let reason = if still_on_platform { CloseReason::ClosedAtBroker } else { CloseReason::ClosedByPlatform };
        events.push(NewEvent {
            event_type: EventType::PositionClosed,
            position_id: Some(r.position_id),
            symbol: Some(r.symbol.clone()),
            message: format!("position {} closed ({})", r.position_identifier, reason),
            details: json!({ "position_identifier": r.position_identifier, "close_reason": reason.as_str() }),
        });
        closed_ids.push(r.position_id);
        closed_reasons.push(reason.as_str().to_owned());
    }

    // One statement closes those and upserts what the broker reports (disjoint rows).
    let col = |f: fn(&BrokerPositionInput) -> String| c.broker.iter().map(f).collect::<Vec<_>>();
    let dec = |f: fn(&BrokerPositionInput) -> Decimal| c.broker.iter().map(f).collect::<Vec<_>>();
    let opt = |f: fn(&BrokerPositionInput) -> Option<Decimal>| c.broker.iter().map(f).collect::<Vec<_>>();
    let matched: Vec<bool> = (0..c.broker.len()).map(|i| partner.contains_key(&i)).collect();
    let trade_ids: Vec<Option<String>> =
        (0..c.broker.len()).map(|i| partner.get(&i).map(|&p| c.platform[p].platform_trade_id.clone())).collect();
    let open_times: Vec<DateTime<Utc>> = c.broker.iter().map(|b| b.open_time).collect();
    sqlx::query!(
        r#"WITH closed AS (
               UPDATE positions p SET status = 'closed', closed_at = $2, close_reason = t.reason, matched = false
               FROM UNNEST($20::uuid[], $21::text[]) AS t(position_id, reason)
               WHERE p.position_id = t.position_id
           )
           INSERT INTO positions (position_id, user_id, position_identifier, ticket, symbol, side, volume, open_price,
                open_time, current_price, current_price_time, take_profit, stop_loss, swap, commission, profit,
                matched, platform_trade_id, status, first_seen_sync_id, last_seen_sync_id, last_seen_at)
           SELECT t.position_id, $1, t.identifier, t.ticket, t.symbol, t.side, t.volume, t.open_price, t.open_time,
                  t.current_price, $2, t.take_profit, t.stop_loss, t.swap, t.commission, t.profit, t.matched,
                  t.trade_id, 'open', $3, $3, $2
           FROM UNNEST($4::uuid[], $5::text[], $6::text[], $7::text[], $8::text[], $9::numeric[], $10::numeric[],
                       $11::timestamptz[], $12::numeric[], $13::numeric[], $14::numeric[], $15::numeric[],
                       $16::numeric[], $17::numeric[], $18::bool[], $19::text[])
                AS t(position_id, identifier, ticket, symbol, side, volume, open_price, open_time, current_price,
                     take_profit, stop_loss, swap, commission, profit, matched, trade_id)
           ON CONFLICT (user_id, position_identifier) DO UPDATE SET
                ticket = EXCLUDED.ticket, symbol = EXCLUDED.symbol, side = EXCLUDED.side, volume = EXCLUDED.volume,
                open_price = EXCLUDED.open_price, open_time = EXCLUDED.open_time,
                current_price = EXCLUDED.current_price, current_price_time = EXCLUDED.current_price_time,
                take_profit = EXCLUDED.take_profit, stop_loss = EXCLUDED.stop_loss, swap = EXCLUDED.swap,
                commission = EXCLUDED.commission, profit = EXCLUDED.profit, matched = EXCLUDED.matched,
                platform_trade_id = EXCLUDED.platform_trade_id, status = 'open', close_reason = NULL,
                closed_at = NULL, last_seen_sync_id = EXCLUDED.last_seen_sync_id,
                last_seen_at = EXCLUDED.last_seen_at"#,
        user_id,
        sync.finished_at,
        sync_id,
        &ids,
        &identifiers,
        &col(|b| b.ticket.clone()),
        &col(|b| b.core.symbol.clone()),
        &col(|b| b.core.side.as_str().to_owned()),
        &dec(|b| b.core.volume),
        &dec(|b| b.core.open_price),
        &open_times,
        &dec(|b| b.current_price),
        &opt(|b| b.core.take_profit) as &[Option<Decimal>],
        &opt(|b| b.core.stop_loss) as &[Option<Decimal>],
        &opt(|b| b.swap) as &[Option<Decimal>],
        &opt(|b| b.commission) as &[Option<Decimal>],
        &opt(|b| b.profit) as &[Option<Decimal>],
        &matched,
        &trade_ids as &[Option<String>],
        &closed_ids,
        &closed_reasons
    )
    .execute(&mut **tx)
    .await?;

    // The platform's view is replaced by this sync's (one statement: the trades it no longer lists go, the
    // others are upserted; the two touch disjoint rows).
    let trade_ids: Vec<String> = c.platform.iter().map(|p| p.platform_trade_id.clone()).collect();
    let pcol = |f: fn(&PlatformSide) -> String| c.platform.iter().map(f).collect::<Vec<_>>();
    let pdec = |f: fn(&PlatformSide) -> Decimal| c.platform.iter().map(f).collect::<Vec<_>>();
    let popt = |f: fn(&PlatformSide) -> Option<Decimal>| c.platform.iter().map(f).collect::<Vec<_>>();
    let pident: Vec<Option<String>> = c.platform.iter().map(|p| p.position_identifier.clone()).collect();
    sqlx::query!(
        r#"WITH gone AS (DELETE FROM platform_positions WHERE user_id = $1 AND NOT (platform_trade_id = ANY($3)))
           INSERT INTO platform_positions (user_id, platform_trade_id, symbol, side, volume, entry_price, take_profit,
                stop_loss, position_identifier, last_seen_sync_id)
           SELECT $1, t.trade_id, t.symbol, t.side, t.volume, t.entry_price, t.take_profit, t.stop_loss,
                  t.identifier, $2
           FROM UNNEST($3::text[], $4::text[], $5::text[], $6::numeric[], $7::numeric[], $8::numeric[],
                       $9::numeric[], $10::text[])
                AS t(trade_id, symbol, side, volume, entry_price, take_profit, stop_loss, identifier)
           ON CONFLICT (user_id, platform_trade_id) DO UPDATE SET
                symbol = EXCLUDED.symbol, side = EXCLUDED.side, volume = EXCLUDED.volume,
                entry_price = EXCLUDED.entry_price, take_profit = EXCLUDED.take_profit,
                stop_loss = EXCLUDED.stop_loss, position_identifier = EXCLUDED.position_identifier,
                last_seen_sync_id = EXCLUDED.last_seen_sync_id, updated_at = now()"#,
        user_id,
        sync_id,
        &trade_ids,
        &pcol(|p| p.symbol.clone()),
        &pcol(|p| p.side.as_str().to_owned()),
        &pdec(|p| p.volume),
        &pdec(|p| p.entry_price),
        &popt(|p| p.take_profit) as &[Option<Decimal>],
        &popt(|p| p.stop_loss) as &[Option<Decimal>],
        &pident as &[Option<String>]
    )
    .execute(&mut **tx)
    .await?;
    Ok(ids)
}
