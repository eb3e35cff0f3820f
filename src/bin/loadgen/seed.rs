//! The benchmark's users: deterministic ids and tokens, and one demo-like sync each (seeded through the API).

use std::time::{Duration, Instant};

use chrono::Utc;
use secrecy::SecretString;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use trading_monitor::auth::{TokenSpec, mint_hs256};
use trading_monitor::pb;
use trading_monitor::pb::guards_service_client::GuardsServiceClient;
use trading_monitor::pb::reconciliation_service_client::ReconciliationServiceClient;
use trading_monitor::samples::{self, BrokerExt};
use uuid::Uuid;

/// The benchmark's users: deterministic ids (so `seed` and `mix` agree across runs) and their own tokens.
pub struct Users {
    pub ids: Vec<Uuid>,
    pub auth: Vec<MetadataValue<Ascii>>,
}

/// The `i`-th benchmark user.
pub fn user_id(i: usize) -> Uuid {
    Uuid::from_u128(0xbe0c_0000_0000_4000_8000_0000_0000_0000 + i as u128)
}

/// `authorization` metadata for every loadgen call: a bearer token of `user_id` with `scopes`, valid for two
/// hours (longer than any run).
pub fn bearer(secret: &SecretString, user_id: Uuid, scopes: &[String]) -> anyhow::Result<MetadataValue<Ascii>> {
    let spec = TokenSpec { user_id, scopes, ttl: Duration::from_secs(7200), issuer: None, audience: None };
    Ok(format!("Bearer {}", mint_hs256(secret, &spec)?).parse()?)
}

/// Ids and tokens (no scopes: each reads its own data) of `n` users.
pub fn users(n: usize, secret: &SecretString) -> anyhow::Result<Users> {
    let mut ids = Vec::with_capacity(n);
    let mut auth = Vec::with_capacity(n);
    for i in 0..n {
        let id = user_id(i);
        auth.push(bearer(secret, id, &[])?);
        ids.push(id);
    }
    Ok(Users { ids, auth })
}

/// One demo-like sync for user `i`: five positions in XAUUSD/EURUSD/BTCUSD/GBPUSD/USDJPY matched with the
/// platform except one entry slippage every seventh user, in a GBP or USD account.
pub fn seed_sync(i: usize) -> pb::SubmitBrokerSyncRequest {
    let now = Utc::now();
    let legs = [
        ("XAUUSD", "2350.00", "2362.40"),
        ("EURUSD", "1.08500", "1.08320"),
        ("BTCUSD", "65000.00", "67950.00"),
        ("GBPUSD", "1.26200", "1.26500"),
        ("USDJPY", "151.800", "151.230"),
    ];
    let mut broker = Vec::new();
    let mut platform = Vec::new();
    for (n, (symbol, open, current)) in legs.iter().enumerate() {
        let side = if n % 2 == 0 { pb::Side::Buy } else { pb::Side::Sell };
        let id = format!("{}", 10 * i + n);
        let profit = if n == 2 { "" } else { "12.30" };
        broker.push(pb::BrokerPosition {
            ticket: format!("{}", 90_000 + 10 * i + n),
            ..samples::broker(&id, symbol, side, "0.10", open, current)
                .reported("-0.40", "-1.00", profit)
                .opened(now - chrono::Duration::hours(3))
        });
        let entry = if n == 0 && i.is_multiple_of(7) { "2348.00" } else { open };
        platform.push(samples::platform(&format!("T-{i}-{n}"), symbol, side, "0.10", entry, &id));
    }
    let currency = if i.is_multiple_of(2) { "GBP" } else { "USD" };
    let account = samples::account(currency, "10000.00", "9650.00", "800.00", now);
    samples::snapshot_sync(user_id(i), now, chrono::Duration::milliseconds(500), account, broker, platform)
}

/// Submits one sync per user (8 at a time) and the quotes P&L conversion needs.
pub async fn seed(channel: Channel, secret: &SecretString, n: usize) -> anyhow::Result<()> {
    let auth = super::feed::writer_auth(secret)?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let mut client = ReconciliationServiceClient::new(channel.clone());
        let auth = auth.clone();
        tasks.push(tokio::spawn(async move {
            for i in (worker..n).step_by(8) {
                let mut request = tonic::Request::new(seed_sync(i));
                request.metadata_mut().insert("authorization", auth.clone());
                client.submit_broker_sync(request).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let mut request = tonic::Request::new(samples::quotes(vec![
        samples::quote("GBPUSD", "1.26500", "1.26520"),
        samples::quote("USDJPY", "151.200", "151.230"),
    ]));
    request.metadata_mut().insert("authorization", auth);
    GuardsServiceClient::new(channel).submit_quotes(request).await?;
    println!("seeded {n} users in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
