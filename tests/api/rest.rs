//! The REST gateway (`grpc-gateway/`) in front of the real service: in process (`--http-listen`) and standalone
//! (`trading_gateway::Gateway` over a gRPC channel), through a real HTTP client.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use trading_monitor::pb;
use uuid::Uuid;

use trading_testkit::*;

async fn spawn_with_http() -> TestApp {
    spawn_app_with(|args| {
        args.server.http_listen = Some("127.0.0.1:0".parse().unwrap());
        args.http.cors_allow_origins = vec!["http://dashboard.example".into()];
        args.http.max_body_bytes = 64 * 1024;
    })
    .await
}

/// A standalone gateway (its own listener, a gRPC channel to `upstream`), served until the test ends.
async fn standalone(upstream: SocketAddr, connect_timeout: Duration) -> SocketAddr {
    // The same HTTP settings as `spawn_with_http`.
    let args = trading_gateway::HttpArgs {
        cors_allow_origins: vec!["http://dashboard.example".into()],
        max_body_bytes: 64 * 1024,
        ..Default::default()
    };
    let options = trading_gateway::upstream::ConnectOptions { connect_timeout, ..Default::default() };
    let upstreams = trading_gateway::upstream::connect(&format!("http://{upstream}"), &options).unwrap();
    let gateway = trading_gateway::Gateway::new(upstreams, args).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { gateway.serve(listener, std::future::pending()).await });
    addr
}

fn client() -> Client {
    Client::builder().timeout(Duration::from_secs(20)).build().unwrap()
}

struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn call(base: SocketAddr, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
    let mut request = client().request(method, format!("http://{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    Reply { status, headers, body }
}

async fn get(base: SocketAddr, path: &str, token: &str) -> Reply {
    call(base, Method::GET, path, Some(token), None).await
}

/// The ErrorInfo reason of an error body, checking the google.rpc.Status shape on the way.
fn reason(reply: &Reply) -> String {
    let body = &reply.body;
    assert!(body["code"].is_i64() && body["message"].is_string() && body["details"].is_array(), "{body}");
    let info = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo")
        .unwrap_or_else(|| panic!("no ErrorInfo in {body}"));
    assert_eq!(info["domain"], "trading-monitor");
    info["reason"].as_str().unwrap().to_owned()
}

fn violations(reply: &Reply) -> Vec<String> {
    reply.body["details"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["@type"] == "type.googleapis.com/google.rpc.BadRequest")
        .flat_map(|d| d["fieldViolations"].as_array().unwrap().iter().map(|v| v["field"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test]
async fn every_read_route_answers_canonical_json_in_process_and_standalone() {
    let app = spawn_with_http().await;
    let alice = seed(&app).await;
    let own = token(alice, &[]);
    let service = token(Uuid::new_v4(), &[READ_ANY]);
    let standalone = standalone(app.addr, Duration::from_secs(1)).await;
    for base in [app.http.unwrap(), standalone] {
        // The caller's own positions: lowerCamelCase, enums as names, decimals as strings, Timestamps RFC 3339,
        // unpopulated fields written out, int32 as numbers.
        let reply = get(base, "/v1/users/me/positions", &own).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.headers["content-type"], "application/json");
        assert!(reply.headers.contains_key("x-request-id"));
        assert!(reply.headers.contains_key("x-cache"), "{:?}", reply.headers);
        let positions = reply.body["positions"].as_array().unwrap();
        assert_eq!(positions.len(), 2);
        assert_eq!(reply.body["totalCount"], 2);
        assert_eq!(reply.body["accountCurrency"], "GBP");
        let first = &positions[0];
        assert_eq!(first["side"], "SIDE_BUY");
        assert_eq!(first["status"], "POSITION_STATUS_OPEN");
        assert!(first["entryTime"].as_str().unwrap().ends_with('Z'));
        assert!(first.get("position_id").is_none() && first["positionId"].is_string());
        assert_eq!(first["takeProfit"], "", "unpopulated fields are written out");
        let position_id = first["positionId"].as_str().unwrap().to_owned();

        // The same through the user's id, by a service token; and one position.
        let by_id = get(base, &format!("/v1/users/{alice}/positions?symbol=EURUSD&pageSize=1"), &service).await;
        assert_eq!(by_id.status, StatusCode::OK, "{}", by_id.body);
        assert_eq!(by_id.body["positions"].as_array().unwrap().len(), 1);
        assert!(!by_id.body["nextPageToken"].as_str().unwrap().is_empty());
        let one = get(base, &format!("/v1/users/me/positions/{position_id}"), &own).await;
        assert_eq!(one.status, StatusCode::OK, "{}", one.body);
        assert_eq!(one.body["position"]["positionId"], position_id.as_str());

        let status = get(base, "/v1/users/me/reconciliationStatus?recentEventsLimit=3", &own).await;
        assert_eq!(status.status, StatusCode::OK, "{}", status.body);
        assert_eq!(status.body["state"], "RECONCILIATION_STATE_WARNING");
        assert_eq!(status.body["totalSyncs"], "1", "int64 is a string");
        assert_eq!(status.body["openPositionsCount"], 2);
        assert!(status.body["recentEvents"].as_array().unwrap().len() <= 3);

        // Repeated enum query parameters, by name and by number, and Timestamps in the query.
        let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
        let events = get(
            base,
            &format!(
                "/v1/users/me/reconciliationEvents?eventTypes=EVENT_TYPE_SYNC_COMPLETED&event_types=1&startTime={}",
                urlencode(&since)
            ),
            &own,
        )
        .await;
        assert_eq!(events.status, StatusCode::OK, "{}", events.body);
        let types: Vec<&str> =
            events.body["events"].as_array().unwrap().iter().map(|e| e["eventType"].as_str().unwrap()).collect();
        assert!(!types.is_empty());
        assert!(
            types
                .iter()
                .all(|t| *t == "EVENT_TYPE_SYNC_COMPLETED" || *t == pb::EventType::try_from(1).unwrap().as_str_name()),
            "{types:?}"
        );

        for path in ["/v1/users/me/guardStatus", "/v1/users/me/drawdownStatus", "/v1/users/me/marketAlerts"] {
            let reply = get(base, path, &own).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
        }
        let guards = get(base, "/v1/users/me/guardStatus", &own).await;
        assert_eq!(guards.body["drawdown"]["level"], "DRAWDOWN_LEVEL_NORMAL");
        assert_eq!(guards.body["anyPositionsShouldClose"], false);

        // HEAD answers like GET, without a body.
        let head =
            client().head(format!("http://{base}/v1/users/me/positions")).bearer_auth(&own).send().await.unwrap();
        assert_eq!(head.status(), StatusCode::OK);
    }
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn ingest_routes_take_the_whole_request_as_the_body() {
    let app = spawn_with_http().await;
    let standalone = standalone(app.addr, Duration::from_secs(1)).await;
    for base in [app.http.unwrap(), standalone] {
        ingest_through(&app, base).await;
    }
}

async fn ingest_through(app: &TestApp, base: SocketAddr) {
    let writer = writer();
    let user = Uuid::new_v4();
    let now = chrono::Utc::now();
    let request_id = Uuid::new_v4().to_string();
    let body = json!({
        "requestId": request_id,
        "started_time": (now - chrono::Duration::seconds(1)).to_rfc3339(),
        "finishedTime": now.to_rfc3339(),
        "snapshot": {
            "account": { "balance": "5000", "equity": "5000", "margin": "0", "currency": "USD", "brokerTime": now.to_rfc3339() },
            "brokerPositions": [{
                "positionIdentifier": "7", "ticket": "T7", "symbol": "EURUSD", "side": "SIDE_BUY", "volume": "1",
                "openPrice": "1.1", "currentPrice": "1.1", "openTime": (now - chrono::Duration::hours(1)).to_rfc3339(),
            }],
        },
    });
    let path = format!("/v1/users/{user}/brokerSyncs:submit");
    let reply = call(base, Method::POST, &path, Some(&writer), Some(body.clone())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["status"], "SYNC_STATUS_COMPLETED");
    assert_eq!(reply.body["brokerOnlyCount"], 1);
    assert_eq!(app.open_positions(user).await.positions.len(), 1);

    // The same request again is answered from the first one (IDEMPOTENT); a different payload under the same
    // request id is a conflict.
    let again = call(base, Method::POST, &path, Some(&writer), Some(body.clone())).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["syncId"], reply.body["syncId"]);
    let mut other = body.clone();
    other["snapshot"]["account"]["equity"] = json!("4000");
    let conflict = call(base, Method::POST, &path, Some(&writer), Some(other)).await;
    assert_eq!(conflict.status, StatusCode::CONFLICT, "{}", conflict.body);
    assert_eq!(reason(&conflict), "REQUEST_ID_REUSED");

    // A body naming a different user than the path is refused, not silently overridden.
    let mut mismatch = body.clone();
    mismatch["requestId"] = json!(Uuid::new_v4().to_string());
    mismatch["userId"] = json!(Uuid::new_v4().to_string());
    let refused = call(base, Method::POST, &path, Some(&writer), Some(mismatch)).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert_eq!(violations(&refused), ["userId"]);

    let quotes = call(
        base,
        Method::POST,
        "/v1/quotes:submit",
        Some(&writer),
        Some(
            json!({ "quotes": [{ "symbol": "EURUSD", "bid": "1.2", "ask": "1.2002", "quoteTime": now.to_rfc3339() }] }),
        ),
    )
    .await;
    assert_eq!(quotes.status, StatusCode::OK, "{}", quotes.body);
    assert_eq!(quotes.body["acceptedQuotes"], 1);
}

#[tokio::test]
async fn errors_use_the_grpc_gateway_table_and_google_rpc_status_bodies() {
    let app = spawn_with_http().await;
    let alice = seed(&app).await;
    let standalone = standalone(app.addr, Duration::from_secs(1)).await;
    for base in [app.http.unwrap(), standalone] {
        errors_through(base, &token(alice, &[])).await;
    }
}

async fn errors_through(base: SocketAddr, own: &str) {
    let own = own.to_owned();

    // 401: no token, with WWW-Authenticate.
    let reply = call(base, Method::GET, "/v1/users/me/positions", None, None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.headers["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    assert_eq!(reply.body["code"], 16);
    assert_eq!(reason(&reply), "TOKEN_MISSING");
    let reply = get(base, "/v1/users/me/positions", "not-a-jwt").await;
    assert_eq!((reply.status, reason(&reply).as_str()), (StatusCode::UNAUTHORIZED, "TOKEN_INVALID"));

    // 403: another user's data without the scope.
    let reply = get(base, &format!("/v1/users/{}/positions", Uuid::new_v4()), &own).await;
    assert_eq!((reply.status, reason(&reply).as_str()), (StatusCode::FORBIDDEN, "SCOPE_MISSING"));

    // 404: an unknown position.
    let reply = get(base, &format!("/v1/users/me/positions/{}", Uuid::new_v4()), &own).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
    assert_eq!(reply.body["code"], 5);

    // 400 from the service, with its field violations.
    let reply = get(base, "/v1/users/me/positions?pageSize=-1", &own).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert_eq!(violations(&reply), ["page_size"]);
    // 400 from the gateway: an unknown query parameter, a wrong type, an unknown enum name.
    for (query, field) in [("pageSise=1", "pageSise"), ("pageSize=ten", "pageSize"), ("symbol=A&symbol=B", "symbol")] {
        let reply = get(base, &format!("/v1/users/me/positions?{query}"), &own).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}: {}", reply.body);
        assert_eq!(reason(&reply), "INVALID_REQUEST", "{query}");
        assert!(violations(&reply)[0].contains(field), "{query}: {}", reply.body);
    }
    let reply = get(base, "/v1/users/me/reconciliationEvents?eventTypes=EVENT_TYPE_NOPE", &own).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert!(reply.body["message"].as_str().unwrap().contains("EVENT_TYPE_SYNC_COMPLETED"), "{}", reply.body);

    // 400: unknown body field (a typo must not be ignored), malformed JSON, a body on a GET.
    let writer = writer();
    let typo =
        json!({ "quotes": [{ "symbol": "EURUSD", "bid": "1", "ask": "1.1", "quoteTyme": "2026-01-01T00:00:00Z" }] });
    let reply = call(base, Method::POST, "/v1/quotes:submit", Some(&writer), Some(typo)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert!(reply.body["message"].as_str().unwrap().contains("quoteTyme"), "{}", reply.body);
    assert_eq!(violations(&reply), ["quotes[0]"]);
    let raw_quotes = |content_type: &'static str, body: &'static str| {
        client()
            .post(format!("http://{base}/v1/quotes:submit"))
            .bearer_auth(&writer)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let malformed = raw_quotes("application/json", "{\"quotes\": [").await.unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    // 415: not JSON.
    let form = raw_quotes("application/x-www-form-urlencoded", "quotes=1").await.unwrap();
    assert_eq!(form.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // 413: over the configured limit (64 KiB here).
    let big = json!({ "quotes": [{ "symbol": "X".repeat(70 * 1024), "bid": "1", "ask": "1" }] });
    let reply = call(base, Method::POST, "/v1/quotes:submit", Some(&writer), Some(big)).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reason(&reply), "REQUEST_TOO_LARGE");

    // 400 FAILED_PRECONDITION: a quote for an unknown instrument.
    let reply = call(
        base,
        Method::POST,
        "/v1/quotes:submit",
        Some(&writer),
        Some(json!({ "quotes": [{ "symbol": "NOPE", "bid": "1", "ask": "1.1", "quoteTime": chrono::Utc::now().to_rfc3339() }] })),
    )
    .await;
    assert_eq!((reply.status, reason(&reply).as_str()), (StatusCode::BAD_REQUEST, "UNKNOWN_SYMBOL"), "{}", reply.body);
    assert_eq!(reply.body["code"], 9);

    // Unknown route 404 and wrong method 405, same body shape.
    let reply = get(base, "/v1/users/me/nothing", &own).await;
    assert_eq!((reply.status, reason(&reply).as_str()), (StatusCode::NOT_FOUND, "ROUTE_NOT_FOUND"));
    let reply = call(base, Method::DELETE, "/v1/users/me/positions", Some(&own), None).await;
    assert_eq!((reply.status, reason(&reply).as_str()), (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"));
    assert_eq!(reply.headers["allow"], "GET");
    let reply = call(base, Method::GET, "/v1/quotes:submit", Some(&own), None).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn headers_map_to_metadata_and_back() {
    let app = spawn_with_http().await;
    let base = app.http.unwrap();
    let alice = seed(&app).await;
    let own = token(alice, &[]);
    let url = format!("http://{base}/v1/users/me/positions");

    // The request id is echoed (or made up).
    let response = client().get(&url).bearer_auth(&own).header("x-request-id", "req-42").send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "req-42");
    let cache = response.headers()["x-cache"].to_str().unwrap().to_owned();
    assert_eq!(response.headers()["grpc-metadata-x-cache"], cache.as_str());

    // A client timeout becomes the deadline. A quote batch waits for its symbol's lock, held here by a test
    // transaction, so the call cannot finish before the deadline.
    let blocker = hold_symbol(&app, "EURUSD").await;
    let batch = json!({ "quotes": [{ "symbol": "EURUSD", "bid": "1.2", "ask": "1.2002", "quoteTime": chrono::Utc::now().to_rfc3339() }] });
    for (name, value) in [("grpc-timeout", "300m"), ("x-request-timeout", "0.3")] {
        let started = Instant::now();
        let response = client()
            .post(format!("http://{base}/v1/quotes:submit"))
            .bearer_auth(writer())
            .header(name, value)
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT, "{name}");
        assert!(started.elapsed() < Duration::from_secs(3), "{name}: {:?}", started.elapsed());
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], 4, "{body}");
    }
    blocker.rollback().await.unwrap();
    // A generous one is capped, and works.
    let response = client().get(&url).bearer_auth(&own).header("grpc-timeout", "100H").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = client().get(&url).bearer_auth(&own).header("x-request-timeout", "soon").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn cors_preflight_is_answered_for_allowed_origins_only() {
    let app = spawn_with_http().await;
    let base = app.http.unwrap();
    let preflight = |origin: &'static str| {
        client()
            .request(Method::OPTIONS, format!("http://{base}/v1/users/me/positions"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight("http://dashboard.example").await.unwrap();
    assert!(allowed.status().is_success());
    assert_eq!(allowed.headers()["access-control-allow-origin"], "http://dashboard.example");
    assert!(allowed.headers()["access-control-allow-headers"].to_str().unwrap().contains("authorization"));
    assert!(!allowed.headers().contains_key("access-control-allow-credentials"));
    let refused = preflight("http://evil.example").await.unwrap();
    assert!(!refused.headers().contains_key("access-control-allow-origin"));
    // An actual cross-origin call from an allowed origin exposes the request id.
    let alice = seed(&app).await;
    let response = client()
        .get(format!("http://{base}/v1/users/me/positions"))
        .bearer_auth(token(alice, &[]))
        .header("origin", "http://dashboard.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], "http://dashboard.example");
    assert!(response.headers()["access-control-expose-headers"].to_str().unwrap().contains("x-request-id"));
}

#[tokio::test]
async fn healthz_follows_grpc_health_and_an_unreachable_upstream_is_503_within_the_connect_timeout() {
    let app = spawn_with_http().await;
    let base = app.http.unwrap();
    let mut healthy = false;
    for _ in 0..50 {
        let reply = call(base, Method::GET, "/healthz", None, None).await;
        if reply.status == StatusCode::OK {
            assert_eq!(reply.body["status"], "SERVING");
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "never SERVING");

    // A port nobody listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let gateway = standalone(closed, Duration::from_millis(300)).await;
    let started = Instant::now();
    let reply = get(gateway, "/v1/users/me/positions", &writer()).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{}", reply.body);
    assert_eq!(reason(&reply), "UPSTREAM_UNAVAILABLE");
    assert!(!reply.body["message"].as_str().unwrap().contains("127.0.0.1"), "no internal details: {}", reply.body);
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    let reply = call(gateway, Method::GET, "/healthz", None, None).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn the_openapi_document_lists_every_annotated_rpc() {
    let app = spawn_with_http().await;
    let reply = call(app.http.unwrap(), Method::GET, "/openapi.json", None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let doc = reply.body;
    assert_eq!(doc["openapi"], "3.1.0");
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations.push((method.clone(), path.clone(), op["operationId"].as_str().unwrap().to_owned()));
        }
    }
    operations.sort();
    let expected = [
        ("get", "/v1/users/{user_id}/drawdownStatus", "GuardsService_GetDrawdownStatus"),
        ("get", "/v1/users/{user_id}/guardStatus", "GuardsService_GetGuardStatus"),
        ("get", "/v1/users/{user_id}/guardStatus:watch", "GuardsService_WatchGuardStatus"),
        ("get", "/v1/users/{user_id}/marketAlerts", "GuardsService_ListMarketAlerts"),
        ("get", "/v1/users/{user_id}/positions", "PositionsService_ListOpenPositions"),
        ("get", "/v1/users/{user_id}/positions/{position_id}", "PositionsService_GetPosition"),
        ("get", "/v1/users/{user_id}/reconciliationEvents", "ReconciliationService_ListReconciliationEvents"),
        ("get", "/v1/users/{user_id}/reconciliationEvents:watch", "ReconciliationService_WatchReconciliationEvents"),
        ("get", "/v1/users/{user_id}/reconciliationStatus", "ReconciliationService_GetReconciliationStatus"),
        ("post", "/v1/quotes:submit", "GuardsService_SubmitQuotes"),
        ("post", "/v1/users/{user_id}/brokerSyncs:submit", "ReconciliationService_SubmitBrokerSync"),
    ];
    let got: Vec<(&str, &str, &str)> =
        operations.iter().map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())).collect();
    let mut expected = expected.to_vec();
    expected.sort();
    assert_eq!(got, expected);
    // Every RPC of the descriptor set has a route (an unannotated RPC would be unreachable over REST).
    let pool = trading_gateway::descriptors::pool().unwrap();
    let rpcs: usize =
        pool.services().filter(|s| s.parent_file().package_name() == "trading.v1").map(|s| s.methods().len()).sum();
    assert_eq!(rpcs, expected.len());
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["trading.v1.Position"]["properties"]["positionId"]["readOnly"], true);
    assert!(schemas["trading.v1.SubmitQuotesRequest"]["required"].as_array().is_none_or(|r| !r.is_empty()));
    assert_eq!(schemas["trading.v1.Side"]["type"], Value::Null, "enums are inlined");
    assert!(schemas["google.rpc.Status"].is_object());
    assert_eq!(doc["components"]["securitySchemes"]["bearerAuth"]["scheme"], "bearer");
    let list = &doc["paths"]["/v1/users/{user_id}/positions"]["get"];
    assert!(list["description"].as_str().unwrap().contains("paged"));
    let params: Vec<&str> =
        list["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(params, ["user_id", "symbol", "pageSize", "pageToken"]);
}

#[tokio::test]
async fn overload_is_429_with_retry_after() {
    let app = spawn_app_with(|args| {
        args.server.http_listen = Some("127.0.0.1:0".parse().unwrap());
        args.server.max_concurrent_requests = 1;
    })
    .await;
    let base = app.http.unwrap();
    let alice = seed(&app).await;
    // The one admitted call waits for a symbol lock this test holds.
    let blocker = hold_symbol(&app, "EURUSD").await;
    let batch = json!({ "quotes": [{ "symbol": "EURUSD", "bid": "1.2", "ask": "1.2002", "quoteTime": chrono::Utc::now().to_rfc3339() }] });
    let slow = tokio::spawn(async move {
        call(base, Method::POST, "/v1/quotes:submit", Some(&writer()), Some(batch)).await.status
    });
    let mut shed = None;
    for _ in 0..50 {
        let reply = get(base, "/v1/users/me/positions", &token(alice, &[])).await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            shed = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reply = shed.expect("a second call while one holds the only slot is shed");
    assert_eq!(reason(&reply), "OVERLOADED");
    assert_eq!(reply.headers["retry-after"], "1");
    assert!(
        reply.body["details"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["@type"] == "type.googleapis.com/google.rpc.RetryInfo")
    );
    blocker.rollback().await.unwrap();
    assert_eq!(slow.await.unwrap(), StatusCode::OK);
}

/// An open HTTP stream, read frame by frame.
struct HttpStream {
    response: reqwest::Response,
    buffer: String,
}

impl HttpStream {
    async fn open(base: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<HttpStream, reqwest::Response> {
        // No overall timeout: the stream stays open; reads are bounded one by one.
        let mut request = Client::new().get(format!("http://{base}{path}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        if response.status() != StatusCode::OK {
            return Err(response);
        }
        Ok(HttpStream { response, buffer: String::new() })
    }

    /// The next frame ending in `separator` (`\n\n` for SSE, `\n` for NDJSON).
    async fn frame(&mut self, separator: &str) -> String {
        loop {
            if let Some(at) = self.buffer.find(separator) {
                let frame = self.buffer[..at].to_owned();
                self.buffer.drain(..at + separator.len());
                return frame;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(15), self.response.chunk())
                .await
                .expect("a frame within 15 s")
                .unwrap()
                .expect("the stream stays open");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next Server-Sent Event (comments and `retry:` skipped) as (event, id, data).
    async fn event(&mut self) -> (String, String, Value) {
        loop {
            let frame = self.frame("\n\n").await;
            let (mut event, mut id, mut data) = (String::new(), String::new(), String::new());
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    event = v.to_owned();
                } else if let Some(v) = line.strip_prefix("id: ") {
                    id = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            if !data.is_empty() {
                return (event, id, serde_json::from_str(&data).unwrap());
            }
        }
    }
}

#[tokio::test]
async fn watches_stream_as_server_sent_events_and_resume_from_last_event_id() {
    let app = spawn_with_http().await;
    let base = app.http.unwrap();
    let user = Uuid::new_v4();
    let bearer = format!("Bearer {}", token(user, &[]));
    let sse = [("accept", "text/event-stream"), ("authorization", bearer.as_str())];
    let path = "/v1/users/me/reconciliationEvents:watch";
    let mut stream = HttpStream::open(base, path, &sse).await.unwrap();
    assert_eq!(stream.response.headers()["content-type"], "text/event-stream");
    let (kind, id, data) = stream.event().await;
    assert_eq!((kind.as_str(), data["heartbeat"]["caughtUp"].as_bool()), ("heartbeat", Some(true)));
    assert_eq!(data["resumeToken"], id.as_str());

    app.submit(sync(user, "1000", vec![], vec![])).await.unwrap();
    let mut last = id;
    let mut types = Vec::new();
    while !types.iter().any(|t| t == "EVENT_TYPE_SYNC_COMPLETED") {
        let (kind, id, data) = stream.event().await;
        assert_eq!(kind, "event");
        types.push(data["event"]["eventType"].as_str().unwrap().to_owned());
        last = id;
    }
    drop(stream);

    // Reconnecting as EventSource does (Last-Event-ID, the token as a query parameter): nothing is replayed.
    let query = format!("{path}?access_token={}", token(user, &[]));
    let mut resumed =
        HttpStream::open(base, &query, &[("accept", "text/event-stream"), ("last-event-id", &last)]).await.unwrap();
    let (kind, _, _) = resumed.event().await;
    assert_eq!(kind, "heartbeat", "replayed an event already received");
    app.submit(failed_sync(user, "terminal offline")).await.unwrap();
    let (kind, _, data) = resumed.event().await;
    assert_eq!((kind.as_str(), data["event"]["eventType"].as_str()), ("event", Some("EVENT_TYPE_SYNC_FAILED")));

    // A token that cannot be resumed is 410 before the stream starts; no token at all is 401.
    let gone = HttpStream::open(base, path, &[("authorization", &bearer), ("last-event-id", "bogus")]).await.err();
    let gone = gone.expect("refused");
    assert_eq!(gone.status(), StatusCode::GONE);
    let body: Value = gone.json().await.unwrap();
    let info = body["details"].as_array().unwrap().iter().find(|d| d["reason"].is_string()).cloned();
    assert_eq!(info.unwrap()["reason"], "RESUME_TOKEN_INVALID", "{body}");
    let missing = HttpStream::open(base, path, &[("accept", "text/event-stream")]).await.err().expect("refused");
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn watches_stream_as_newline_delimited_json_in_process_and_standalone() {
    let app = spawn_with_http().await;
    let standalone = standalone(app.addr, Duration::from_secs(2)).await;
    let user = Uuid::new_v4();
    let bearer = format!("Bearer {}", token(user, &[]));
    for base in [app.http.unwrap(), standalone] {
        let mut stream = HttpStream::open(
            base,
            "/v1/users/me/guardStatus:watch?heartbeatInterval=1s",
            &[("authorization", &bearer)],
        )
        .await
        .unwrap();
        assert_eq!(stream.response.headers()["content-type"], "application/x-ndjson");
        let first: Value = serde_json::from_str(&stream.frame("\n").await).unwrap();
        assert_eq!(first["result"]["update"]["userId"], user.to_string());
        assert_eq!(first["result"]["update"]["status"]["systemStatus"], "SYSTEM_STATUS_HEALTHY");
        let beat: Value = serde_json::from_str(&stream.frame("\n").await).unwrap();
        assert_eq!(beat["result"]["heartbeat"]["caughtUp"], true);
        assert!(beat["result"]["resumeToken"].as_str().is_some_and(|t| !t.is_empty()));
    }
    // A bad request is an ordinary error response.
    let reply = get(app.http.unwrap(), "/v1/users/me/guardStatus:watch?heartbeatInterval=1ms", &token(user, &[])).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(violations(&reply), ["heartbeatInterval"]);
}
