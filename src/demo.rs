//! `demo`: creates and migrates the database, starts the server, then acts as a trading backend would. It
//! submits broker syncs and quotes for three users through the public gRPC API (so the real engine computes
//! every number), prints tokens and ready-to-paste commands, and keeps syncing and quoting every few seconds so
//! the data stays live.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, DurationRound, Utc};
use secrecy::SecretString;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::auth::{self, TokenSpec};
use crate::config::{JwtAlgorithm, ServeArgs};
use crate::pb;
use crate::pb::guards_service_client::GuardsServiceClient;
use crate::pb::reconciliation_service_client::ReconciliationServiceClient;
use crate::samples::{self, BrokerExt, Protect, broker, platform};
use crate::server::Application;
use crate::storage;
use trading_gateway::page::DemoUser;

/// The development secret used when none is configured. Printed tokens are signed with it.
pub const DEMO_SECRET: &str = "trading-monitor-demo-secret-change-me-0123456789";

/// Where the demo serves REST and the status page unless `--http-listen` says otherwise.
pub const DEMO_HTTP_LISTEN: &str = "127.0.0.1:8080";
/// Where the demo serves the admin endpoints (`/metrics`, `/livez`, `/readyz`) unless told otherwise.
pub const DEMO_ADMIN_LISTEN: &str = "127.0.0.1:9100";

/// Alice: GBP account, a drawdown in WARNING, an entry-slippage divergence, a BTCUSD gap alert.
pub const ALICE: Uuid = Uuid::from_u128(0xa11ce000_0000_4000_8000_000000000001);
/// Bob: USD account, a manual (broker-only) trade and a position closed at the broker.
pub const BOB: Uuid = Uuid::from_u128(0xb0b00000_0000_4000_8000_000000000002);
/// Carol: EUR account whose last sync failed (MT5 terminal offline).
pub const CAROL: Uuid = Uuid::from_u128(0xca201000_0000_4000_8000_000000000003);

/// Runs the demo until `shutdown` resolves.
pub async fn run(mut args: ServeArgs, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    if args.auth.jwt_algorithm == JwtAlgorithm::Hs256 && args.auth.jwt_secret.is_none() {
        tracing::warn!("no TM_JWT_SECRET configured: the demo signs tokens with its built-in development secret");
        args.auth.jwt_secret = Some(SecretString::from(DEMO_SECRET));
    }
    let secret = args.auth.jwt_secret.clone().context("the demo mints HS256 tokens: set TM_JWT_SECRET")?;
    storage::create_database_if_missing(&args.database.database_url)
        .await
        .with_context(|| "cannot create the demo database (is PostgreSQL running? see DATABASE_URL)")?;
    if args.server.http_listen.is_none() {
        args.server.http_listen = Some(DEMO_HTTP_LISTEN.parse()?);
        // The admin listener too, unless a caller chose its own ports (the tests).
        if args.server.admin_listen.is_none() {
            args.server.admin_listen = Some(DEMO_ADMIN_LISTEN.parse()?);
        }
    }
    let mint = |user_id: Uuid, scopes: &[String]| {
        auth::mint_hs256(
            &secret,
            &TokenSpec { user_id, scopes, ttl: Duration::from_secs(86_400), issuer: None, audience: None },
        )
    };
    let mut app = Application::build(args).await?;
    let addr = app.local_addr();
    let http = app.http_addr();
    let admin = app.admin_addr().map(|a| a.to_string());
    app.set_demo_users(vec![
        DemoUser { label: "alice (GBP, drawdown WARNING)".into(), token: mint(ALICE, &[])? },
        DemoUser { label: "bob (USD, manual trade)".into(), token: mint(BOB, &[])? },
        DemoUser { label: "carol (EUR, last sync failed)".into(), token: mint(CAROL, &[])? },
    ]);
    let server = tokio::spawn(app.run_until(shutdown));

    let channel = Channel::from_shared(format!("http://{addr}"))?.connect().await?;
    let backend = Backend {
        channel,
        token: mint(
            Uuid::from_u128(0x5e41ce00_0000_4000_8000_000000000000),
            &["trading:sync:write".to_owned(), "trading:read:any".to_owned()],
        )?,
        opened: Utc::now().duration_trunc(chrono::Duration::hours(1))? - chrono::Duration::hours(5),
    };
    backend.load_history().await.context("loading demo data")?;

    let user_token = mint(ALICE, &[])?;
    let service_token = mint(Uuid::new_v4(), &["trading:read:any".to_owned()])?;
    print_instructions(&addr.to_string(), http.map(|a| a.to_string()).as_deref(), &user_token, &service_token);
    if let Some(admin) = admin {
        println!("# admin: metrics, liveness, readiness\ncurl http://{admin}/metrics\ncurl http://{admin}/readyz\n");
    }

    let feed = tokio::spawn(async move { backend.keep_live().await });
    let result = server.await.context("server task failed")?;
    feed.abort();
    result
}

fn print_instructions(addr: &str, http: Option<&str>, user_token: &str, service_token: &str) {
    print!(
        r#"
trading-monitor demo is serving on {addr} (ctrl-c to stop). Demo users:
  alice {ALICE}  GBP: drawdown WARNING, entry-slippage divergence, BTCUSD gap alert
  bob   {BOB}  USD: manual broker-only trade, a position closed at the broker
  carol {CAROL}  EUR: last sync failed (state ERROR)

# alice's own token (no scopes) and a service token that may read any user:
export TOKEN={user_token}
export SERVICE_TOKEN={service_token}

# with buf (npm i -g @bufbuild/buf), through server reflection:
buf curl --protocol grpc --http2-prior-knowledge -H "authorization: Bearer $TOKEN" -d '{{}}' http://{addr}/trading.v1.PositionsService/ListOpenPositions
buf curl --protocol grpc --http2-prior-knowledge -H "authorization: Bearer $TOKEN" -d '{{}}' http://{addr}/trading.v1.ReconciliationService/GetReconciliationStatus
buf curl --protocol grpc --http2-prior-knowledge -H "authorization: Bearer $TOKEN" -d '{{}}' http://{addr}/trading.v1.GuardsService/GetGuardStatus
buf curl --protocol grpc --http2-prior-knowledge -H "authorization: Bearer $TOKEN" -d '{{"page_size": 10}}' http://{addr}/trading.v1.ReconciliationService/ListReconciliationEvents
buf curl --protocol grpc --http2-prior-knowledge -H "authorization: Bearer $SERVICE_TOKEN" -d '{{"user_id": "{BOB}"}}' http://{addr}/trading.v1.ReconciliationService/GetReconciliationStatus

# with grpcurl:
grpcurl -plaintext {addr} list
grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d '{{}}' {addr} trading.v1.PositionsService/ListOpenPositions
grpcurl -plaintext -d '{{}}' {addr} grpc.health.v1.Health/Check
# live: the guard status now and on every change (BTCUSD swings every 2 minutes), and every user's events
grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d '{{}}' {addr} trading.v1.GuardsService/WatchGuardStatus
grpcurl -plaintext -H "authorization: Bearer $SERVICE_TOKEN" -d '{{"user_id": "-"}}' {addr} trading.v1.ReconciliationService/WatchReconciliationEvents
"#
    );
    if let Some(http) = http {
        print!(
            r#"
# REST (JSON) through the in-process gateway; status page: http://{http}/ (pick a demo user); OpenAPI: http://{http}/openapi.json
curl -H "Authorization: Bearer $TOKEN" http://{http}/v1/users/me/positions
curl -H "Authorization: Bearer $TOKEN" http://{http}/v1/users/me/positions/POSITION_ID
curl -H "Authorization: Bearer $TOKEN" "http://{http}/v1/users/me/reconciliationStatus?recentEventsLimit=3"
curl -H "Authorization: Bearer $TOKEN" "http://{http}/v1/users/me/reconciliationEvents?pageSize=10&eventTypes=EVENT_TYPE_DIVERGENCE_DETECTED"
curl -H "Authorization: Bearer $TOKEN" http://{http}/v1/users/me/guardStatus
curl -H "Authorization: Bearer $TOKEN" http://{http}/v1/users/me/drawdownStatus
curl -H "Authorization: Bearer $TOKEN" http://{http}/v1/users/me/marketAlerts
curl -H "Authorization: Bearer $SERVICE_TOKEN" http://{http}/v1/users/{BOB}/reconciliationStatus
curl -i http://{http}/v1/users/me/positions     # 401 + WWW-Authenticate, google.rpc.Status body
curl http://{http}/healthz
curl -N -H 'Accept: text/event-stream' -H "Authorization: Bearer $TOKEN" http://{http}/v1/users/me/guardStatus:watch
curl -N -H "Authorization: Bearer $TOKEN" http://{http}/v1/users/me/reconciliationEvents:watch
"#
        );
    }
    println!();
}

/// A trading backend talking to the service over gRPC.
struct Backend {
    channel: Channel,
    token: String,
    /// When the demo positions were opened (fixed, so live syncs do not move entry times).
    opened: DateTime<Utc>,
}

impl Backend {
    fn request<T>(&self, message: T) -> anyhow::Result<tonic::Request<T>> {
        let mut request = tonic::Request::new(message);
        let value: MetadataValue<_> = format!("Bearer {}", self.token).parse()?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }

    async fn sync(&self, sync: pb::SubmitBrokerSyncRequest) -> anyhow::Result<pb::SubmitBrokerSyncResponse> {
        let mut client = ReconciliationServiceClient::new(self.channel.clone());
        Ok(client.submit_broker_sync(self.request(sync)?).await?.into_inner())
    }

    async fn quotes(&self, batch: pb::SubmitQuotesRequest) -> anyhow::Result<pb::SubmitQuotesResponse> {
        let mut client = GuardsServiceClient::new(self.channel.clone());
        Ok(client.submit_quotes(self.request(batch)?).await?.into_inner())
    }

    /// Three minutes of history ending now. The request ids are this run's own (the payload's times are relative
    /// to now, and a reused request id with another payload is refused), so a demo started again on the same
    /// database simply adds newer syncs.
    async fn load_history(&self) -> anyhow::Result<()> {
        let now = Utc::now();
        let minutes_ago = |m: i64| now - chrono::Duration::minutes(m);
        for (step, at) in [(1, minutes_ago(3)), (2, minutes_ago(2)), (3, minutes_ago(1))] {
            for user in [ALICE, BOB, CAROL] {
                let request_id = Uuid::new_v5(&user, format!("demo-sync-{step}-{}", now.timestamp_micros()).as_bytes());
                let response = self.sync(scenario(user, step, at, self.opened, request_id)).await?;
                tracing::debug!(user_id = %user, step, divergences = response.divergences.len(), "demo sync submitted");
            }
        }
        // A 5.4 % BTCUSD opening gap: a WARNING alert for its holders.
        self.quotes(quotes(now, 0.0, Some(("65000.00", "68500.00")))).await?;
        Ok(())
    }

    /// Keeps the demo live: quotes every 5 s (prices drift in a slow ±0.2 % wave, so P&L moves), a fresh sync of
    /// each user's latest state every 10 s, and every 2 minutes a 13 % BTCUSD opening gap (a CRITICAL alert: its
    /// holders should close positions) that a normal candle clears 30 s later.
    async fn keep_live(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        for n in 1u64.. {
            tick.tick().await;
            let now = Utc::now();
            let wave = 0.002 * (n as f64 / 6.0).sin();
            let candle = match n % 24 {
                12 => Some(("60000.00", "67950.00")),
                18 => Some(("67900.00", "67950.00")),
                _ => None,
            };
            if let Err(e) = self.quotes(quotes(now, wave, candle)).await {
                tracing::warn!(error = %e, "demo quote feed failed");
            }
            if n % 2 == 0 {
                for user in [ALICE, BOB, CAROL] {
                    if let Err(e) = self.sync(scenario(user, 3, now, self.opened, Uuid::new_v4())).await {
                        tracing::warn!(error = %e, "demo sync failed");
                    }
                }
            }
        }
    }
}

/// A snapshot sync with the demo's own request id (so a replay of the history is recognised as one).
fn snapshot(
    request_id: Uuid,
    user: Uuid,
    at: DateTime<Utc>,
    (currency, balance, equity, margin): (&str, &str, &str, &str),
    brokers: Vec<pb::BrokerPosition>,
    platforms: Vec<pb::PlatformPosition>,
) -> pb::SubmitBrokerSyncRequest {
    let account = samples::account(currency, balance, equity, margin, at);
    let took = chrono::Duration::milliseconds(850);
    pb::SubmitBrokerSyncRequest {
        request_id: request_id.to_string(),
        ..samples::snapshot_sync(user, at, took, account, brokers, platforms)
    }
}

/// The sync of `user` at `step` (1-3; the live loop repeats step 3).
fn scenario(
    user: Uuid,
    step: u8,
    at: DateTime<Utc>,
    opened: DateTime<Utc>,
    request_id: Uuid,
) -> pb::SubmitBrokerSyncRequest {
    use pb::Side::{Buy, Sell};
    match (user, step) {
        (u, _) if u == ALICE => {
            let gold = broker("1001", "XAUUSD", Buy, "0.50", "2350.00", "2362.40")
                .protected("2400.00", "2320.00")
                .reported("-3.10", "-7.00", "516.55")
                .opened(opened);
            let euro = broker("1002", "EURUSD", Sell, "1.00", "1.08500", "1.08320")
                .protected("", "1.09000")
                .reported("-1.20", "-5.00", "142.30")
                .opened(opened);
            let btc = broker("1003", "BTCUSD", Buy, "0.10", "65000.00", "67950.00").opened(opened);
            let mut brokers = vec![gold, euro];
            let mut platforms = vec![
                platform("T-1", "XAUUSD", Buy, "0.50", "2350.00", "1001").protected("2400.00", "2320.00"),
                platform("T-2", "EURUSD", Sell, "1.00", "1.08500", "1002").protected("", "1.09000"),
            ];
            if step >= 2 {
                brokers.push(btc);
                // The platform's signal entered at 64,900: the broker filled 0.154 % higher.
                platforms.push(platform("T-3", "BTCUSD", Buy, "0.10", "64900.00", ""));
            }
            let equity = match step {
                1 => "10000.00",
                2 => "9200.00",
                _ => "8400.00",
            };
            snapshot(request_id, user, at, ("GBP", "10000.00", equity, "1450.00"), brokers, platforms)
        }
        (u, _) if u == BOB => {
            let gold = broker("2001", "XAUUSD", Buy, "1.00", "2340.00", "2362.40")
                .protected("", "2300.00")
                .reported("-6.40", "-12.00", "2240.00")
                .opened(opened);
            let euro =
                broker("2002", "EURUSD", Buy, "0.30", "1.08200", "1.08310").protected("", "1.08000").opened(opened);
            let manual = broker("2003", "GBPUSD", Buy, "0.20", "1.26200", "1.26500").opened(opened);
            let platforms = vec![
                platform("T-20", "XAUUSD", Buy, "1.00", "2340.00", "2001").protected("", "2300.00"),
                platform("T-21", "EURUSD", Buy, "0.30", "1.08200", "2002").protected("", "1.08000"),
            ];
            // From step 2 the EURUSD position has left the broker (its stop was hit) while the platform still
            // lists it, and a manual GBPUSD trade appeared.
            let brokers = if step == 1 { vec![gold, euro] } else { vec![gold, manual] };
            snapshot(request_id, user, at, ("USD", "25000.00", "27180.00", "2400.00"), brokers, platforms)
        }
        _ if step == 1 => {
            let yen =
                broker("3001", "USDJPY", Sell, "0.50", "151.800", "151.230").protected("", "153.000").opened(opened);
            let platforms = vec![platform("T-30", "USDJPY", Sell, "0.50", "151.800", "3001").protected("", "153.000")];
            snapshot(request_id, user, at, ("EUR", "5000.00", "5176.00", "300.00"), vec![yen], platforms)
        }
        _ => pb::SubmitBrokerSyncRequest {
            request_id: request_id.to_string(),
            ..samples::failed_sync_at(user, at, chrono::Duration::seconds(5), "MT5 terminal not connected")
        },
    }
}

/// The demo's quotes at `at`, for every demo symbol and the FX pairs conversion needs: prices moved by `wave` (a fraction, e.g. 0.001 = +0.1 %), and optionally a BTCUSD
/// candle close `(previous_close, open)` that the market guard judges for a gap.
fn quotes(at: DateTime<Utc>, wave: f64, candle: Option<(&str, &str)>) -> pb::SubmitQuotesRequest {
    let quote = |symbol: &str, bid: f64, spread: f64, places: usize| {
        let bid = bid * (1.0 + wave);
        samples::quote_at(symbol, &format!("{bid:.places$}"), &format!("{:.places$}", bid + spread), at)
    };
    pb::SubmitQuotesRequest {
        quotes: vec![
            quote("XAUUSD", 2362.40, 0.30, 2),
            quote("EURUSD", 1.08310, 0.00010, 5),
            quote("BTCUSD", 67950.00, 40.00, 2),
            quote("GBPUSD", 1.26500, 0.00020, 5),
            quote("USDJPY", 151.200, 0.030, 3),
            quote("EURJPY", 163.800, 0.050, 3),
        ],
        candle_closes: candle
            .map(|(previous_close, open)| samples::candle_at("BTCUSD", previous_close, open, at))
            .into_iter()
            .collect(),
    }
}
