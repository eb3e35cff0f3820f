//! `ReconciliationService.WatchReconciliationEvents`: one user's (or, with `trading:read:any`, everybody's)
//! reconciliation events as they are recorded, resumable from any message's token. The mechanics shared with
//! `WatchGuardStatus` are in `services::stream`.

use tonic::Request;

use super::events::event_types;
use crate::domain::events::EventType;
use crate::feed::{Batch, Contents};
use crate::pb;
use crate::services::encode;
use crate::services::stream::{self, Common, Delivery, End, Follower, Out, PAGE};
use crate::services::{ApiError, AppState, decode};
use crate::storage::feed::{self, FeedEvent, FeedPosition};
use uuid::Uuid;

/// What the stream sends.
pub type EventMessage = pb::WatchReconciliationEventsResponse;

/// Starts a WatchReconciliationEvents stream.
pub async fn watch_events(
    state: &AppState,
    request: Request<pb::WatchReconciliationEventsRequest>,
) -> Result<Delivery<EventMessage>, ApiError> {
    let caller = decode::caller(&request)?;
    let req = request.into_inner();
    let user = stream::watched_user(&caller, &req.user_id)?;
    let types = event_types(&req.event_types)?;
    let heartbeat = stream::heartbeat_interval(req.heartbeat_interval.as_ref(), state.streams.heartbeat)?;
    let start = pb::WatchStart::try_from(req.start)
        .map_err(|_| ApiError::invalid("start", format!("{} is not a WatchStart", req.start)))?;
    let opened = stream::open(state, &caller, None).await?;
    let cursor = if !req.resume_token.is_empty() {
        stream::resume(state, opened.tag, &req.resume_token).await?.position
    } else if start == pb::WatchStart::Oldest {
        FeedPosition::start()
    } else {
        state.hub.position().await?
    };
    let (common, out, delivery) = opened.start(state, &caller, heartbeat, cursor);
    let stream = EventsWatch { common, user, types };
    tokio::spawn(stream.run(out));
    Ok(delivery)
}

struct EventsWatch {
    common: Common,
    user: Option<Uuid>,
    types: Option<Vec<EventType>>,
}

impl EventsWatch {
    async fn run(mut self, mut out: Out<EventMessage>) {
        let end = stream::follow(&mut self, &mut out).await;
        out.finish(end.err().unwrap_or(End::Gone));
    }
}

impl Follower for EventsWatch {
    type Message = EventMessage;

    fn common(&mut self) -> &mut Common {
        &mut self.common
    }

    fn heartbeat(resume_token: String) -> EventMessage {
        EventMessage {
            kind: Some(pb::watch_reconciliation_events_response::Kind::Heartbeat(stream::heartbeat(true))),
            resume_token,
        }
    }

    async fn catch_up(&mut self, out: &mut Out<EventMessage>) -> Result<(), End> {
        let mut first = true;
        loop {
            out.check()?;
            let permit = self.common.page_permit(out, std::mem::take(&mut first)).await?;
            let db = &self.common.state.db;
            let page = db.run("feed.page", feed::page(db.pool()?, self.user, &self.common.cursor, PAGE)).await?;
            drop(permit);
            crate::feed::hub::show_commits_of(&self.common.state.cache, &page.events);
            for event in &page.events {
                self.offer(out, event, &page.next).await?;
            }
            self.common.cursor = self.common.cursor.join(&page.next);
            if page.caught_up {
                return Ok(());
            }
        }
    }

    async fn apply(&mut self, out: &mut Out<EventMessage>, batch: &Batch, contents: &Contents) -> Result<(), End> {
        for event in &contents.events {
            if self.user.is_none_or(|u| u == event.user_id) {
                self.offer(out, event, &batch.up_to).await?;
            }
        }
        self.common.cursor = self.common.cursor.join(&batch.up_to);
        Ok(())
    }
}

impl EventsWatch {
    /// Sends one event of a page or batch ending at `to` if the cursor has not read it and it passes the filter;
    /// the cursor moves over it (and over everything of `to` before it) either way.
    async fn offer(&mut self, out: &mut Out<EventMessage>, event: &FeedEvent, to: &FeedPosition) -> Result<(), End> {
        if !event.owed_by(&self.common.cursor) {
            return Ok(());
        }
        self.common.cursor = self.common.cursor.through(to, event.tx, event.event.event_id);
        if self.types.as_ref().is_some_and(|types| !types.contains(&event.event.event_type)) {
            return Ok(());
        }
        let message = EventMessage {
            kind: Some(pb::watch_reconciliation_events_response::Kind::Event(encode::event(
                event.event.clone(),
                event.user_id,
            ))),
            resume_token: self.common.token(),
        };
        out.send(message).await
    }
}
