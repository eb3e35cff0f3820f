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

    let mut rows = Vec::with_capacity(c.reconciliation.findings.len());
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
            Some((id, detected_at)) => {
                sqlx::query!(
                    r#"UPDATE divergences SET broker_value = $2, platform_value = $3, difference_pct = $4, message = $5,
                              last_seen_sync_id = $6, position_id = $7
                       WHERE divergence_id = $1"#,
                    id,
                    f.broker_value,
                    f.platform_value,
                    f.difference_pct,
                    f.message,
                    sync_id,
                    position_id
                )
                .execute(&mut **tx)
                .await?;
                (id, detected_at)
            }
            None => {
                let id = Uuid::now_v7();
                sqlx::query!(
                    r#"INSERT INTO divergences (divergence_id, user_id, kind, symbol, position_id, position_identifier,
                              platform_trade_id, broker_value, platform_value, difference_pct, message,
                              detected_sync_id, detected_at, last_seen_sync_id)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $12)"#,
                    id,
                    user_id,
                    f.kind.as_str(),
                    symbol,
                    position_id,
                    identifier,
                    trade_id,
                    f.broker_value,
                    f.platform_value,
                    f.difference_pct,
                    f.message,
                    sync_id,
                    sync.finished_at
                )
                .execute(&mut **tx)
                .await?;
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
