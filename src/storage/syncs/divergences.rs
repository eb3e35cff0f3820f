//! Applying a sync to divergences: open new ones, refresh the ones still present, resolve the ones gone.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::{CompletedSync, NewEvent, NewSync};
use crate::domain::DivergenceKind;
use crate::domain::events::EventType;
use crate::storage::{DivergenceRow, StorageError, parse_stored};

/// Opens new divergences, refreshes the ones still present, and resolves the ones that are gone.
pub(super) async fn apply_divergences(
    tx: &mut Transaction<'_, Postgres>,
    sync: &NewSync,
    sync_id: Uuid,
    c: &CompletedSync,
    position_ids: &[Uuid],
    events: &mut Vec<NewEvent>,
) -> Result<Vec<DivergenceRow>, StorageError> {
    let user_id = sync.user_id;
    let open = sqlx::query!(
        r#"SELECT divergence_id, kind, symbol, position_id, position_identifier, platform_trade_id, detected_at
           FROM divergences WHERE user_id = $1 AND resolved_at IS NULL"#,
        user_id
    )
    .fetch_all(&mut **tx)
    .await?;
    type Key = (String, Option<String>, Option<String>);
    let mut still_open: HashMap<Key, (Uuid, DateTime<Utc>)> = open
        .iter()
        .map(|r| {
            (
                (r.kind.clone(), r.position_identifier.clone(), r.platform_trade_id.clone()),
                (r.divergence_id, r.detected_at),
            )
        })
        .collect();

    // Every finding is either a divergence still open (refreshed) or a new one (inserted): two bulk statements,
    // whatever the number of findings.
    let mut rows = Vec::with_capacity(c.reconciliation.findings.len());
    let mut refreshed: Vec<usize> = Vec::new();
    let mut inserted: Vec<usize> = Vec::new();
    for f in &c.reconciliation.findings {
        let broker = f.broker.map(|i| &c.broker[i]);
        let platform = f.platform.map(|j| &c.platform[j]);
        let identifier = broker.map(|b| b.core.position_identifier.clone());
        let trade_id = platform.map(|p| p.platform_trade_id.clone());
        let symbol =
            broker.map(|b| b.core.symbol.clone()).or_else(|| platform.map(|p| p.symbol.clone())).unwrap_or_default();
        let position_id = f.broker.map(|i| position_ids[i]);
        let key = (f.kind.as_str().to_owned(), identifier.clone(), trade_id.clone());
        let (divergence_id, detected_at) = match still_open.remove(&key) {
            Some(existing) => {
                refreshed.push(rows.len());
                existing
            }
            None => {
                inserted.push(rows.len());
                let id = Uuid::now_v7();
                events.push(NewEvent {
                    event_type: EventType::DivergenceDetected,
                    position_id,
                    symbol: Some(symbol.clone()),
                    message: format!("{} detected: {}", f.kind, f.message),
                    details: json!({
                        "divergence_id": id.to_string(),
                        "kind": f.kind.as_str(),
                        "broker_value": f.broker_value,
                        "platform_value": f.platform_value,
                        "difference_percent": f.difference_pct.map(|d| d.to_string()),
                        "platform_trade_id": trade_id,
                    }),
                });
                (id, sync.finished_at)
            }
        };
        rows.push(DivergenceRow {
            divergence_id,
            kind: f.kind,
            symbol,
            position_id,
            position_identifier: identifier,
            platform_trade_id: trade_id,
            broker_value: f.broker_value.clone(),
            platform_value: f.platform_value.clone(),
            difference_pct: f.difference_pct,
            message: f.message.clone(),
            detected_at,
            resolved_at: None,
        });
    }

    let column = |which: &[usize], f: fn(&DivergenceRow) -> Option<String>| -> Vec<Option<String>> {
        which.iter().map(|&k| f(&rows[k])).collect()
    };
    if !refreshed.is_empty() {
        sqlx::query!(
            r#"UPDATE divergences d SET broker_value = t.broker_value, platform_value = t.platform_value,
                      difference_pct = t.difference_pct, message = t.message, last_seen_sync_id = $1,
                      position_id = t.position_id
               FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::numeric[], $6::text[], $7::uuid[])
                    AS t(divergence_id, broker_value, platform_value, difference_pct, message, position_id)
               WHERE d.divergence_id = t.divergence_id"#,
            sync_id,
            &refreshed.iter().map(|&k| rows[k].divergence_id).collect::<Vec<_>>(),
            &column(&refreshed, |r| r.broker_value.clone()) as &[Option<String>],
            &column(&refreshed, |r| r.platform_value.clone()) as &[Option<String>],
            &refreshed.iter().map(|&k| rows[k].difference_pct).collect::<Vec<_>>()
                as &[Option<rust_decimal::Decimal>],
            &refreshed.iter().map(|&k| rows[k].message.clone()).collect::<Vec<_>>(),
            &refreshed.iter().map(|&k| rows[k].position_id).collect::<Vec<_>>() as &[Option<Uuid>]
        )
        .execute(&mut **tx)
        .await?;
    }
    if !inserted.is_empty() {
        sqlx::query!(
            r#"INSERT INTO divergences (divergence_id, user_id, kind, symbol, position_id, position_identifier,
                      platform_trade_id, broker_value, platform_value, difference_pct, message, detected_sync_id,
                      detected_at, last_seen_sync_id)
               SELECT t.divergence_id, $1, t.kind, t.symbol, t.position_id, t.position_identifier,
                      t.platform_trade_id, t.broker_value, t.platform_value, t.difference_pct, t.message, $2, $3, $2
               FROM UNNEST($4::uuid[], $5::text[], $6::text[], $7::uuid[], $8::text[], $9::text[], $10::text[],
                           $11::text[], $12::numeric[], $13::text[])
                    AS t(divergence_id, kind, symbol, position_id, position_identifier, platform_trade_id,
                         broker_value, platform_value, difference_pct, message)"#,
            user_id,
            sync_id,
            sync.finished_at,
            &inserted.iter().map(|&k| rows[k].divergence_id).collect::<Vec<_>>(),
            &inserted.iter().map(|&k| rows[k].kind.as_str().to_owned()).collect::<Vec<_>>(),
            &inserted.iter().map(|&k| rows[k].symbol.clone()).collect::<Vec<_>>(),
            &inserted.iter().map(|&k| rows[k].position_id).collect::<Vec<_>>() as &[Option<Uuid>],
            &column(&inserted, |r| r.position_identifier.clone()) as &[Option<String>],
            &column(&inserted, |r| r.platform_trade_id.clone()) as &[Option<String>],
            &column(&inserted, |r| r.broker_value.clone()) as &[Option<String>],
            &column(&inserted, |r| r.platform_value.clone()) as &[Option<String>],
            &inserted.iter().map(|&k| rows[k].difference_pct).collect::<Vec<_>>() as &[Option<rust_decimal::Decimal>],
            &inserted.iter().map(|&k| rows[k].message.clone()).collect::<Vec<_>>()
        )
        .execute(&mut **tx)
        .await?;
    }

    let resolved: Vec<Uuid> = still_open.values().map(|(id, _)| *id).collect();
    if !resolved.is_empty() {
        let gone = sqlx::query!(
            r#"UPDATE divergences SET resolved_at = $2, resolved_sync_id = $3
               WHERE divergence_id = ANY($1)
               RETURNING divergence_id, kind, symbol, position_id, message"#,
            &resolved,
            sync.finished_at,
            sync_id
        )
        .fetch_all(&mut **tx)
        .await?;
        for g in gone {
            let kind: DivergenceKind = parse_stored(&g.kind)?;
            events.push(NewEvent {
                event_type: EventType::DivergenceResolved,
                position_id: g.position_id,
                symbol: Some(g.symbol),
                message: format!("{kind} resolved (was: {})", g.message),
                details: json!({ "divergence_id": g.divergence_id.to_string(), "kind": kind.as_str() }),
            });
        }
    }
    Ok(rows)
}
