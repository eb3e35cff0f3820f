//! Issue 11: OpenTelemetry traces, received by an OTLP collector of the test's own (a tonic server implementing
//! the collector's `TraceService`) from the real binary, configured only by the standard `OTEL_*` variables.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tonic::Code;
use trading_monitor::pb;
use uuid::Uuid;

use trading_testkit::*;

/// A resource's attributes.
type Attributes = HashMap<String, Val>;

/// Keeps every span it is sent, with its resource's attributes.
#[derive(Default, Clone)]
struct Collector {
    received: Arc<Mutex<Vec<(Attributes, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = self.received.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let resource = attributes(&resource_spans.resource.map(|r| r.attributes).unwrap_or_default());
            for scope in resource_spans.scope_spans {
                received.extend(scope.spans.into_iter().map(|s| (resource.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// An attribute's value, as far as these tests look.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    S(String),
    I(i64),
    Other,
}

fn attributes(list: &[KeyValue]) -> Attributes {
    list.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v: &AnyValue| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => Val::S(s.clone()),
                Some(any_value::Value::IntValue(i)) => Val::I(*i),
                _ => Val::Other,
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn s(v: &str) -> Val {
    Val::S(v.to_owned())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A W3C trace context of the test's own: (trace id, parent span id, `traceparent`).
fn caller_context() -> (String, String, String) {
    let trace = Uuid::new_v4().simple().to_string();
    let parent = Uuid::new_v4().simple().to_string()[..16].to_owned();
    let header = format!("00-{trace}-{parent}-01");
    (trace, parent, header)
}

/// One gRPC call and one REST call with a caller's `traceparent` each, and a call that fails NOT_FOUND; then
/// SIGTERM. The batch exporter is told to wait a minute between exports, so every span received arrived with
/// the flush on shutdown. (The same process also shows the pool's acquire-wait histogram filled.)
#[tokio::test]
async fn calls_continue_the_callers_trace_with_rpc_and_database_spans_flushed_on_shutdown() {
    let collector = Collector::default();
    let otlp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp_port = otlp.local_addr().unwrap().port();
    let serving = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(otlp)),
    );

    let database = fresh_database().await;
    let (port, http_port, admin_port) = (free_port(), free_port(), free_port());
    let log = std::env::temp_dir().join(format!("trading-monitor-traces-{}.log", Uuid::new_v4().simple()));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_trading-monitor"))
        .args(["--log-format", "json", "serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--http-listen", &format!("127.0.0.1:{http_port}"), "--database-url", &url_for(&database)])
        .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
        .args(["--jwt-secret", SECRET, "--shutdown-grace", "3s", "--health-interval", "200ms"])
        .args(["--cache-key-prefix", &format!("trading:v1:test-{}", Uuid::new_v4().simple())])
        .env("RUST_LOG", "info")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{otlp_port}"))
        .env("OTEL_SERVICE_NAME", "trading-monitor-under-test")
        .env("OTEL_BSP_SCHEDULE_DELAY", "60000")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .map(KillOnDrop)
        .expect("the server binary runs");
    let channel = until_serving(port).await;
    until_redis_answers(&channel).await;
    let user = Uuid::new_v4();
    let own = token(user, &[]);
    fn with_parent<T>(message: T, token: &str, traceparent: &str) -> tonic::Request<T> {
        let mut request = authed(message, token);
        request.metadata_mut().insert("traceparent", traceparent.parse().unwrap());
        request
    }

    // A cache miss: Redis, then PostgreSQL, then Redis again.
    let (read_trace, read_parent, header) = caller_context();
    let mut positions = pb::positions_service_client::PositionsServiceClient::new(channel);
    positions.list_open_positions(with_parent(pb::ListOpenPositionsRequest::default(), &own, &header)).await.unwrap();

    // The caller's mistake: NOT_FOUND, which is not a failure of the server span.
    let (missing_trace, _, header) = caller_context();
    let missing = Uuid::new_v4().to_string();
    let request = pb::GetPositionRequest { position_id: missing.clone(), user_id: String::new() };
    let err = positions.get_position(with_parent(request, &own, &header)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Through the REST gateway: the browser's traceparent is forwarded as gRPC metadata.
    let (rest_trace, rest_parent, header) = caller_context();
    let reply = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{http_port}/v1/users/me/guardStatus"))
        .bearer_auth(&own)
        .header("traceparent", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);

    // The pool's acquire waits, which sqlx reports only as log events, are in the histogram.
    let metrics = reqwest::get(format!("http://127.0.0.1:{admin_port}/metrics")).await.unwrap().text().await.unwrap();
    let acquires = metrics
        .lines()
        .find_map(|l| l.strip_prefix("trading_monitor_pg_pool_acquire_seconds_count "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no acquire histogram in:\n{metrics}"));
    assert!(acquires >= 3.0, "{acquires} acquires counted after three reads from PostgreSQL");

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(collector.received.lock().unwrap().is_empty(), "spans were exported before shutdown");
    let exit = terminate(&mut child, Duration::from_secs(10)).await;
    assert!(exit.success(), "exit status {exit:?}");
    let spans = collector.received.lock().unwrap().clone();
    serving.abort();
    let logs = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    drop_database(&database).await;
    assert!(!spans.is_empty(), "no span was flushed on shutdown; the server logged:\n{logs}");

    // The resource.
    let (resource, _) = &spans[0];
    assert_eq!(resource.get("service.name"), Some(&s("trading-monitor-under-test")));
    assert_eq!(resource.get("service.version"), Some(&s(env!("CARGO_PKG_VERSION"))));
    assert!(matches!(resource.get("service.instance.id"), Some(Val::S(id)) if !id.is_empty()));

    let in_trace = |trace: &str| spans.iter().map(|(_, s)| s).filter(|s| hex(&s.trace_id) == trace).collect::<Vec<_>>();
    let server_span = |trace: &str, name: &str| {
        let found = in_trace(trace);
        let server: Vec<_> = found.iter().filter(|s| s.kind == SpanKind::Server as i32).collect();
        assert_eq!(server.len(), 1, "one server span in trace {trace}: {found:#?}");
        assert_eq!(server[0].name, name);
        (*server[0]).clone()
    };

    // The gRPC read: the caller's trace, its parent, the RPC conventions, the user.
    let read = server_span(&read_trace, "trading.v1.PositionsService/ListOpenPositions");
    assert_eq!(hex(&read.parent_span_id), read_parent);
    let a = attributes(&read.attributes);
    assert_eq!(a.get("rpc.system"), Some(&s("grpc")));
    assert_eq!(a.get("rpc.service"), Some(&s("trading.v1.PositionsService")));
    assert_eq!(a.get("rpc.method"), Some(&s("ListOpenPositions")));
    assert_eq!(a.get("rpc.grpc.status_code"), Some(&Val::I(0)));
    assert_eq!(a.get("user.id"), Some(&s(&user.to_string())));

    // Its client spans, children of the server span (directly or below another span of ours).
    let trace = in_trace(&read_trace);
    let below_server = |span: &Span| {
        let mut parent = span.parent_span_id.clone();
        while let Some(up) = trace.iter().find(|s| s.span_id == parent) {
            if up.span_id == read.span_id {
                return true;
            }
            parent = up.parent_span_id.clone();
        }
        false
    };
    let clients: Vec<(String, Attributes)> = trace
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .inspect(|s| assert!(below_server(s), "a client span outside the server span: {s:#?}"))
        .map(|s| (s.name.clone(), attributes(&s.attributes)))
        .collect();
    let names: Vec<&str> = clients.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"book.load"), "no PostgreSQL span in {names:?}");
    assert!(names.contains(&"MGET") && names.contains(&"SET"), "no Redis spans in {names:?}");
    for (name, a) in &clients {
        let system = if name == "book.load" { "postgresql" } else { "redis" };
        assert_eq!(a.get("db.system"), Some(&s(system)), "{name}");
        assert_eq!(a.get("db.operation.name"), Some(&s(name)), "{name}");
    }

    // The NOT_FOUND call: its code, no error status, and no parameter in any of its spans.
    let failed = server_span(&missing_trace, "trading.v1.PositionsService/GetPosition");
    assert_eq!(attributes(&failed.attributes).get("rpc.grpc.status_code"), Some(&Val::I(Code::NotFound as i64)));
    assert_ne!(failed.status.as_ref().map(|s| s.code), Some(2), "NOT_FOUND marked the server span as an error");
    let positions_get = in_trace(&missing_trace).into_iter().find(|s| s.name == "positions.get");
    assert!(positions_get.is_some(), "no PostgreSQL span for GetPosition");
    for span in in_trace(&missing_trace) {
        assert!(!format!("{span:?}").contains(&missing), "a span carries the request's position id: {span:#?}");
    }
    // Its log line leads to its trace.
    let line = logs
        .lines()
        .find(|l| l.contains("rpc rejected") && l.contains(&missing_trace))
        .unwrap_or_else(|| panic!("no log line with trace id {missing_trace} in:\n{logs}"));
    assert!(line.contains("\"trace_id\""), "{line}");

    // Through the gateway: the browser's trace and parent.
    let rest = server_span(&rest_trace, "trading.v1.GuardsService/GetGuardStatus");
    assert_eq!(hex(&rest.parent_span_id), rest_parent);
    assert_eq!(attributes(&rest.attributes).get("user.id"), Some(&s(&user.to_string())));

    let flushed = logs.lines().find(|l| l.contains("trace exporter shut down")).expect("the flush is logged");
    println!("{} spans received, all at shutdown; {flushed}", spans.len());
}
