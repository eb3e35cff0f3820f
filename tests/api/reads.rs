//! Read RPCs: semantics, owner scoping, scopes, paging and bad input.

use trading_monitor::pb;
use uuid::Uuid;

use crate::helpers::*;

#[tokio::test]
async fn a_user_who_never_synced_is_never_synced_with_no_invented_times() {
    let app = spawn_app().await;
    let status = app.status(Uuid::new_v4()).await;
    assert_eq!(status.state(), pb::ReconciliationState::NeverSynced);
    assert_eq!(status.total_syncs, 0);
    assert!(status.last_sync_time.is_none());
    assert!(status.last_sync_duration.is_none());
    assert!(status.as_of.is_some());
}
