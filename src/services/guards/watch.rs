//! `GuardsService.WatchGuardStatus`: one account's guard status (or, with `trading:read:any`, every account's)
//! whenever its verdict changes, resumable from any message's token. The mechanics shared with
//! `WatchReconciliationEvents` are in `services::stream`.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use chrono::Utc;
use tonic::Request;
use uuid::Uuid;

use crate::feed::token::{self, Token};
use crate::feed::{Batch, Contents};
use crate::pb;
use crate::services::stream::{self, Common, Delivery, End, Follower, Out, PAGE};
use crate::services::{ApiError, AppState, decode};
use crate::storage::feed::{self, FeedPosition};
use crate::storage::{self, Book};

/// What the stream sends.
pub type GuardMessage = pb::WatchGuardStatusResponse;

/// Starts a WatchGuardStatus stream.
pub async fn watch_guards(
    state: &AppState,
    request: Request<pb::WatchGuardStatusRequest>,
) -> Result<Delivery<GuardMessage>, ApiError> {
    let caller = decode::caller(&request)?;
    let req = request.into_inner();
    let user = stream::watched_user(&caller, &req.user_id)?;
    let heartbeat = stream::heartbeat_interval(req.heartbeat_interval.as_ref(), state.streams.heartbeat)?;
    let opened = stream::open(state, &caller, Some(user)).await?;
    let resumed = if req.resume_token.is_empty() {
        None
    } else {
        Some(stream::resume(state, opened.tag, &req.resume_token).await?)
    };
    let (cursor, snapshot) = match (user, resumed) {
        // One account: its status is sent first in any case.
        (Some(_), Some(token)) => (token.position, Snapshot::One),
        (Some(_), None) => (state.hub.position().await?, Snapshot::One),
        (None, None) => (state.hub.position().await?, Snapshot::All { after: None }),
        (None, Some(Token { position, snapshot_after: Some(after) })) => {
            (position, Snapshot::All { after: Some(after) })
        }
        (None, Some(Token { position, snapshot_after: None })) => (position, Snapshot::Changed),
    };
    let (common, out, delivery) = opened.start(state, &caller, heartbeat, cursor);
    let stream = GuardsWatch { common, user, sent: HashMap::new() };
    tokio::spawn(stream.run(out, snapshot));
    Ok(delivery)
}

/// What a guard watch sends before following changes.
enum Snapshot {
    /// The watched account's status.
    One,
    /// Every account's status, in id order, after `after`.
    All { after: Option<Uuid> },
    /// (Resumed) the accounts that changed after the cursor.
    Changed,
}

struct GuardsWatch {
    common: Common,
    user: Option<Uuid>,
    /// What was last sent per account, as a [`change_key`].
    sent: HashMap<Uuid, u64>,
}

impl GuardsWatch {
    async fn run(mut self, mut out: Out<GuardMessage>, snapshot: Snapshot) {
        let end = self.follow(&mut out, snapshot).await;
        out.finish(end.err().unwrap_or(End::Gone));
    }

    async fn follow(&mut self, out: &mut Out<GuardMessage>, snapshot: Snapshot) -> Result<(), End> {
        match (snapshot, self.user) {
            (Snapshot::One, Some(user)) => {
                let token = self.common.token();
                self.send_status(out, user, None, token).await?;
            }
            (Snapshot::All { mut after }, _) => {
                let start = self.common.cursor.clone();
                let mut first = true;
                loop {
                    // Each page of accounts is a catch-up page (and each of its accounts a book read).
                    let permit = self.common.page_permit(out, std::mem::take(&mut first)).await?;
                    let db = &self.common.state.db;
                    let ids =
                        db.run("accounts.ids_after", storage::accounts::ids_after(db.pool()?, after, PAGE)).await?;
                    drop(permit);
                    for user in &ids {
                        let token = token::encode(
                            self.common.tag,
                            &Token { position: start.clone(), snapshot_after: Some(*user) },
                        );
                        self.send_status(out, *user, None, token).await?;
                    }
                    if (ids.len() as i64) < PAGE {
                        break;
                    }
                    after = ids.last().copied();
                }
            }
            _ => {}
        }
        // Then what changed while the snapshot was read (or, resumed, since the token), and on.
        stream::follow(self, out).await
    }
}

impl Follower for GuardsWatch {
    type Message = GuardMessage;

    fn common(&mut self) -> &mut Common {
        &mut self.common
    }

    fn heartbeat(resume_token: String) -> GuardMessage {
        GuardMessage {
            kind: Some(pb::watch_guard_status_response::Kind::Heartbeat(stream::heartbeat(true))),
            resume_token,
        }
    }

    /// Re-judges every watched account with events in the table after the cursor, page by page.
    async fn catch_up(&mut self, out: &mut Out<GuardMessage>) -> Result<(), End> {
        let mut first = true;
        loop {
            out.check()?;
            let permit = self.common.page_permit(out, std::mem::take(&mut first)).await?;
            let db = &self.common.state.db;
            let page = db.run("feed.page", feed::page(db.pool()?, self.user, &self.common.cursor, PAGE)).await?;
            drop(permit);
            crate::feed::hub::show_commits_of(&self.common.state.cache, &page.events);
            // The hub does this for its batches, but this page may be ahead of them.
            crate::feed::hub::show_alerts_of(&self.common.state.market, &page.events).await;
            let changed: HashSet<Uuid> =
                page.events.iter().filter(|e| e.event.event_type.may_change_guards()).map(|e| e.user_id).collect();
            self.send_changed(out, changed.into_iter().collect(), None, &page.next).await?;
            if page.caught_up {
                return Ok(());
            }
        }
    }

    /// Re-judges the watched accounts with events in the batch.
    async fn apply(&mut self, out: &mut Out<GuardMessage>, batch: &Batch, contents: &Contents) -> Result<(), End> {
        let changed = contents
            .events
            .iter()
            .filter(|e| e.owed_by(&self.common.cursor) && self.user.is_none_or(|u| u == e.user_id))
            .filter(|e| e.event.event_type.may_change_guards())
            .map(|e| e.user_id)
            .collect();
        self.send_changed(out, changed, Some(&contents.books), &batch.up_to).await
    }
}

impl GuardsWatch {
    /// Sends the accounts whose status changed among `users`, then moves the cursor over `to`. Until the last
    /// one, messages carry the token of the cursor before: a stream resumed in between judges them all again
    /// (a repeated status is harmless; a skipped one would not be).
    async fn send_changed(
        &mut self,
        out: &mut Out<GuardMessage>,
        mut users: Vec<Uuid>,
        books: Option<&HashMap<Uuid, Arc<Book>>>,
        to: &FeedPosition,
    ) -> Result<(), End> {
        users.sort_unstable();
        users.dedup();
        let before = self.common.token();
        let moved = self.common.cursor.join(to);
        let after = token::encode(self.common.tag, &Token::at(moved.clone()));
        let last = users.len().saturating_sub(1);
        for (i, user) in users.into_iter().enumerate() {
            let book = books.and_then(|b| b.get(&user)).cloned();
            let token = if i == last { after.clone() } else { before.clone() };
            self.send_status_if_changed(out, user, book, token).await?;
        }
        self.common.cursor = moved;
        Ok(())
    }

    async fn send_status(
        &mut self,
        out: &mut Out<GuardMessage>,
        user: Uuid,
        book: Option<Arc<Book>>,
        resume_token: String,
    ) -> Result<(), End> {
        self.sent.remove(&user);
        self.send_status_if_changed(out, user, book, resume_token).await
    }

    async fn send_status_if_changed(
        &mut self,
        out: &mut Out<GuardMessage>,
        user: Uuid,
        book: Option<Arc<Book>>,
        resume_token: String,
    ) -> Result<(), End> {
        let state = &self.common.state;
        let book = match book {
            Some(book) => book,
            None => {
                let _permit = self.common.read_permit(out).await?;
                Arc::new(state.db.run("book.load", storage::book::load(state.db.pool()?, user)).await?)
            }
        };
        // The later of this server's clock and the database's (which dates the clock's events), so a countdown
        // the database says ran out is judged run out here too.
        let now = Utc::now().max(book.read_at);
        let status = super::status::guard_status(&book, &state.market.current(), &state.rules, now);
        let key = change_key(&status);
        if self.sent.insert(user, key) == Some(key) {
            return Ok(());
        }
        let message = GuardMessage {
            kind: Some(pb::watch_guard_status_response::Kind::Update(pb::GuardStatusUpdate {
                user_id: user.to_string(),
                status: Some(status),
            })),
            resume_token,
        };
        out.send(message).await
    }
}

/// What makes a guard status "changed": the verdicts, the drawdown level and its spell, whether the liquidation
/// countdown has run out, and the set of alerts with their severities. Not the values that merely tick
/// (countdown, quote age) or move with every sync (equity, drawdown percent).
fn change_key(status: &pb::GetGuardStatusResponse) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    status.system_status.hash(&mut h);
    status.any_positions_should_close.hash(&mut h);
    if let Some(d) = &status.drawdown {
        d.level.hash(&mut h);
        d.should_close_all.hash(&mut h);
        d.level_since_time.as_ref().map(|t| (t.seconds, t.nanos)).hash(&mut h);
        d.time_to_liquidation.as_ref().map(|t| t.seconds == 0 && t.nanos == 0).hash(&mut h);
    }
    for a in &status.market_alerts {
        (&a.alert_id, &a.symbol, a.kind, a.severity, a.should_close_positions).hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_verdicts_levels_and_alerts_change_a_guard_status_not_ticking_values() {
        let mut status = pb::GetGuardStatusResponse {
            drawdown: Some(pb::DrawdownStatus {
                level: pb::DrawdownLevel::Critical.into(),
                time_to_liquidation: Some(prost_types::Duration { seconds: 8, nanos: 0 }),
                equity: "900".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let key = change_key(&status);
        let drawdown = status.drawdown.as_mut().unwrap();
        drawdown.time_to_liquidation = Some(prost_types::Duration { seconds: 3, nanos: 0 });
        drawdown.equity = "850".into();
        assert_eq!(change_key(&status), key, "ticking and moving values are not changes");
        status.drawdown.as_mut().unwrap().time_to_liquidation = Some(prost_types::Duration::default());
        let due = change_key(&status);
        assert_ne!(due, key, "the countdown running out is");
        status.market_alerts.push(pb::MarketAlert { symbol: "XAUUSD".into(), ..Default::default() });
        assert_ne!(change_key(&status), due, "an alert is");
    }
}
