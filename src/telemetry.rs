//! Logging and traces.
//!
//! Logs: a `tracing` subscriber with an EnvFilter and text or JSON output on stderr. A log line inside a call
//! carries the call's span fields, `trace_id` among them, so it leads to its trace.
//!
//! Traces: OpenTelemetry spans exported over OTLP/gRPC, only when an endpoint is configured with the standard
//! variables (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_EXPORTER_OTLP_COMPRESSION`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER` / `_ARG` and `OTEL_BSP_*` are read by the OpenTelemetry SDK). With none set, no
//! exporter, no OpenTelemetry layer and no span of its own run: the request path only checks [`exporting`].

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::resource::EnvResourceDetector;
use opentelemetry_sdk::trace::SdkTracerProvider;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Whether spans are being exported; set once by [`init`].
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// How long shutdown waits for the last spans to reach the collector.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The target of spans that are logged but never exported (health checks, reflection).
pub const UNTRACED: &str = "trading_monitor::untraced";

/// What [`init`] started; [`Telemetry::shutdown`] flushes it.
#[must_use = "call shutdown() before exiting, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still queued (waiting at most 5 s) and stops the exporter. Spans of calls that finished
    /// before this are not lost on a clean exit.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let started = Instant::now();
        // The SDK's shutdown blocks this thread until its batch thread has exported, over a tonic channel
        // that runs on this runtime: off the runtime's threads, so they stay free to drive it.
        let outcome = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT)).await;
        let flush_ms = started.elapsed().as_millis() as u64;
        match outcome {
            // Ok also when the collector could not be reached: the SDK drops what it cannot send.
            Ok(Ok(())) => tracing::info!(flush_ms, "trace exporter shut down (queued spans sent or dropped)"),
            Ok(Err(e)) => tracing::warn!(flush_ms, error = %e, "trace exporter did not shut down cleanly"),
            Err(e) => tracing::warn!(flush_ms, error = %e, "trace exporter did not shut down cleanly"),
        }
    }
}

/// Whether spans are exported: when not, callers skip the work that only traces need.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Installs the global subscriber, with the OpenTelemetry layer when an OTLP endpoint is configured. `filter`
/// uses EnvFilter syntax (`info`, `trading_monitor=debug`, ...) and applies to logs only: every span of ours is
/// exported whatever the log level. Call inside the Tokio runtime (the exporter's channel runs on it).
pub fn init(format: LogFormat, filter: &str) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_new(filter)?;
    let provider = tracer_provider()?;
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("trading-monitor"))
            .with_level(true)
            .with_threads(false)
            // A static per-target filter: with a dynamic one (`filter_fn`) some spans went missing from the export.
            .with_filter(
                Targets::new()
                    .with_target("trading_monitor", tracing::Level::INFO)
                    .with_target(UNTRACED, tracing::level_filters::LevelFilter::OFF),
            )
    });
    // Per-layer filters: the log filter is the log layer's own, so spans below the log level are still
    // exported, and sqlx's TRACE acquire events reach the pool-wait layer without being logged.
    match otel {
        Some(otel) => tracing_subscriber::registry()
            .with(otel)
            .with(pool_wait())
            .with(logs(format).with_filter(filter))
            .try_init()?,
        // Not `.with(None)`: an absent layer counts as one that wants every callsite, and with per-layer
        // filters that turns on every span of every crate (measured: twice the CPU per cached read).
        None => tracing_subscriber::registry().with(pool_wait()).with(logs(format).with_filter(filter)).try_init()?,
    }
    EXPORTING.store(provider.is_some(), Ordering::Relaxed);
    if provider.is_some() {
        tracing::info!("exporting traces over OTLP/gRPC");
    }
    Ok(Telemetry { provider })
}

/// The pool-wait layer, seeing only sqlx's acquire events.
fn pool_wait<S: tracing::Subscriber>() -> tracing_subscriber::filter::Filtered<PoolWait, Targets, S> {
    PoolWait.with_filter(Targets::new().with_target(ACQUIRE_TARGET, tracing::Level::TRACE))
}

/// The log layer: text or JSON lines on stderr, with the current span's fields.
fn logs<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    match format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_writer(std::io::stderr).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    }
}

/// The tracer provider, when the environment asks for OTLP export.
fn tracer_provider() -> anyhow::Result<Option<SdkTracerProvider>> {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.eq_ignore_ascii_case("none"));
    if disabled || !(set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) {
        return Ok(None);
    }
    for name in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
        if let Ok(protocol) = std::env::var(name)
            && !protocol.is_empty()
        {
            anyhow::ensure!(protocol == "grpc", "{name}={protocol}: only OTLP over gRPC (`grpc`) is supported");
            break;
        }
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().build()?;
    Ok(Some(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource()).build()))
}

/// `service.name` (`OTEL_SERVICE_NAME`, else `OTEL_RESOURCE_ATTRIBUTES`, else `trading-monitor`), `service.version`
/// (this build), `service.instance.id` (new for each process) and whatever `OTEL_RESOURCE_ATTRIBUTES` adds.
fn resource() -> Resource {
    let mut builder = Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", "trading-monitor"),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", uuid::Uuid::new_v4().to_string()),
        ])
        .with_detector(Box::new(EnvResourceDetector::new()));
    if let Ok(name) = std::env::var("OTEL_SERVICE_NAME")
        && !name.is_empty()
    {
        builder = builder.with_service_name(name);
    }
    builder.build()
}

/// Makes `span` continue the caller's trace (W3C `traceparent` / `tracestate` in `headers`) and records its
/// trace id in the span's `trace_id` field, for the logs. Does nothing unless spans are exported.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if !exporting() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    // Fails only if the span is disabled; it then has no trace id to record either.
    if span.set_parent(parent).is_ok() {
        let trace_id = span.context().span().span_context().trace_id();
        span.record("trace_id", tracing::field::display(trace_id));
    }
}

/// Runs `call`, one call to PostgreSQL or Redis (`system`), in a client span named `name` (`book.load`,
/// `MGET`), marked failed if it returns an error. The span has no parameters, so no values from a request end
/// up in a trace. It exists only while spans are exported and inside a call's span: background work (the feed
/// reader, the clock, refreshes) would otherwise start a trace of its own every second.
pub async fn client_call<T, E>(
    system: &'static str,
    name: &'static str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    if !exporting() || tracing::Span::current().is_none() {
        return call.await;
    }
    let span = tracing::info_span!(
        "client",
        otel.name = name,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        db.system = system,
        db.system.name = system,
        db.operation.name = name,
    );
    let result = call.instrument(span.clone()).await;
    if result.is_err() {
        span.record("otel.status_code", "ERROR");
    }
    result
}

/// The target of sqlx's event for each connection acquired from the pool.
const ACQUIRE_TARGET: &str = "sqlx::pool::acquire";

/// The time each PostgreSQL acquire waited for a connection, 50 µs to ~6.5 s. One histogram for the process:
/// sqlx reports acquire times only as a `tracing` event (target `sqlx::pool::acquire`), which the subscriber
/// [`init`] installs feeds in here; `crate::metrics` registers it. (In a process without that subscriber, such
/// as the integration tests' in-process servers, it stays empty.)
pub fn pool_acquire_wait() -> &'static Histogram {
    static WAIT: OnceLock<Histogram> = OnceLock::new();
    WAIT.get_or_init(|| Histogram::new(exponential_buckets(0.00005, 2.0, 18)))
}

/// `error: cause: cause ...` on one line: how every module logs an error with its causes.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// Feeds sqlx's acquire events (`acquired_after_secs`) into [`pool_acquire_wait`].
struct PoolWait;

impl<S: tracing::Subscriber> Layer<S> for PoolWait {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Wait(Option<f64>);
        impl tracing::field::Visit for Wait {
            fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
                if field.name() == "acquired_after_secs" {
                    self.0 = Some(value);
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        let mut wait = Wait(None);
        event.record(&mut wait);
        if let Some(seconds) = wait.0 {
            pool_acquire_wait().observe(seconds);
        }
    }
}

/// Reads propagation fields from HTTP/2 headers (gRPC metadata).
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}
