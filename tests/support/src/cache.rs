//! Reads that report the `x-cache` header they were answered with, and the settings the cache tests share.

use std::time::{Duration, Instant};

use trading_monitor::cache::Rpc;
use trading_monitor::config::ServeArgs;
use trading_monitor::pb;
use uuid::Uuid;

use crate::app::TestApp;
use crate::assert::x_cache;
use crate::auth::{authed, token};

/// Milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// PostgreSQL loads the server issued for `rpc` so far.
pub fn pg(app: &TestApp, rpc: Rpc) -> u64 {
    app.cache.metrics().snapshot(rpc).pg_queries
}

/// `user`'s reconciliation status (10 recent events) and how it was served.
pub async fn status(app: &TestApp, user: Uuid) -> (String, pb::GetReconciliationStatusResponse) {
    let request = pb::GetReconciliationStatusRequest { user_id: String::new(), recent_events_limit: 10 };
    let response = app.recon().get_reconciliation_status(authed(request, &token(user, &[]))).await.unwrap();
    (x_cache(&response), response.into_inner())
}

/// `user`'s open positions (of `symbol`, or all when empty) and how they were served.
pub async fn positions(
    app: &TestApp,
    user: Uuid,
    symbol: &str,
) -> Result<(String, pb::ListOpenPositionsResponse), tonic::Status> {
    let request = pb::ListOpenPositionsRequest { symbol: symbol.into(), ..Default::default() };
    let response = app.positions().list_open_positions(authed(request, &token(user, &[]))).await?;
    Ok((x_cache(&response), response.into_inner()))
}

/// Calls one cached RPC for `user` (GetPosition reads `position_id`) and returns its `x-cache` value.
pub async fn read(app: &TestApp, rpc: Rpc, user: Uuid, position_id: &str) -> Result<String, tonic::Status> {
    let me = token(user, &[]);
    let (mut recon, mut positions, mut guards) = (app.recon(), app.positions(), app.guards());
    Ok(match rpc {
        Rpc::GetReconciliationStatus => {
            let request = pb::GetReconciliationStatusRequest::default();
            x_cache(&recon.get_reconciliation_status(authed(request, &me)).await?)
        }
        Rpc::ListOpenPositions => {
            x_cache(&positions.list_open_positions(authed(pb::ListOpenPositionsRequest::default(), &me)).await?)
        }
        Rpc::GetPosition => {
            let request = pb::GetPositionRequest { position_id: position_id.into(), user_id: String::new() };
            x_cache(&positions.get_position(authed(request, &me)).await?)
        }
        Rpc::GetGuardStatus => {
            x_cache(&guards.get_guard_status(authed(pb::GetGuardStatusRequest::default(), &me)).await?)
        }
        Rpc::GetDrawdownStatus => {
            x_cache(&guards.get_drawdown_status(authed(pb::GetDrawdownStatusRequest::default(), &me)).await?)
        }
        Rpc::ListMarketAlerts => {
            x_cache(&guards.list_market_alerts(authed(pb::ListMarketAlertsRequest::default(), &me)).await?)
        }
    })
}

/// Reads the status until it is a miss (Redis answered and was populated), waiting out L1 between tries.
pub async fn until_miss(app: &TestApp, user: Uuid, within: Duration) -> pb::GetReconciliationStatusResponse {
    let deadline = Instant::now() + within;
    loop {
        let (cache, body) = status(app, user).await;
        if cache == "miss" {
            return body;
        }
        assert!(Instant::now() < deadline, "no miss within {within:?}: Redis is not used (last x-cache {cache})");
        tokio::time::sleep(ms(150)).await;
    }
}

/// Makes a server unable to hear invalidations (its first heartbeat would come back only after a minute), so
/// its L1 behaves as while the invalidation channel is down: entries live only the short L1 TTL.
pub fn deaf(args: &mut ServeArgs) {
    args.cache.cache_heartbeat = Duration::from_secs(60);
}
