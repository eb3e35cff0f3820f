//! The service's metrics, in one `prometheus-client` registry, served as Prometheus text at the admin
//! listener's `/metrics`.
//!
//! - `trading_monitor_rpc_requests_total{method,code}` and `trading_monitor_rpc_duration_seconds{method}` (a
//!   histogram), recorded by the trace layer for every call;
//! - the cache counters per cached RPC (`trading_monitor_cache_{hits,l1_hits,misses,stale,bypass,redis_errors,
//!   refreshes}_total`, `trading_monitor_pg_queries_total`), read from the cache's own counters at scrape time;
//! - the PostgreSQL pool: `trading_monitor_pg_pool_connections{state="idle"|"in_use"}` and
//!   `trading_monitor_pg_pool_max_connections`, read at scrape time, and the histogram
//!   `trading_monitor_pg_pool_acquire_seconds` of the time each acquire waited for a connection (see
//!   `telemetry::pool_acquire_wait`);
//! - the prototype's domain series, under the names it gave them: `mt5_position_sync_total{result}`,
//!   `reconciliation_divergences_total{reason}`, `drawdown_guard_triggers_total{level}`,
//!   `market_guard_alerts_total{kind,severity}` and `reconciliation_latency_seconds` (the reported duration of
//!   each sync, finish minus start).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sqlx::PgPool;

use crate::cache::{Cache, Rpc};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodCode {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Method {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Level {
    level: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Alert {
    kind: String,
    severity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabel {
    rpc: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct State {
    state: &'static str,
}

/// Every series, and the registry that encodes them. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    rpc_requests: Family<MethodCode, Counter>,
    rpc_duration: Family<Method, Histogram, fn() -> Histogram>,
    syncs: Family<ResultLabel, Counter>,
    divergences: Family<Reason, Counter>,
    drawdown_triggers: Family<Level, Counter>,
    market_alerts: Family<Alert, Counter>,
    sync_latency: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn rpc_histogram() -> Histogram {
    // 100 µs to ~13 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

impl Metrics {
    /// The registry, with the cache's counters, the pool and the `collectors` of other rooms (the feed's lag)
    /// read at scrape time.
    pub fn new(cache: Cache, pool: PgPool, collectors: Vec<Box<dyn Collector>>) -> Metrics {
        let mut registry = Registry::default();
        let rpc_requests = Family::<MethodCode, Counter>::default();
        let rpc_duration = Family::<Method, Histogram, fn() -> Histogram>::new_with_constructor(rpc_histogram);
        let syncs = Family::<ResultLabel, Counter>::default();
        let divergences = Family::<Reason, Counter>::default();
        let drawdown_triggers = Family::<Level, Counter>::default();
        let market_alerts = Family::<Alert, Counter>::default();
        // 1 ms to ~65 s.
        let sync_latency = Histogram::new(exponential_buckets(0.001, 2.0, 17));

        registry.register("mt5_position_sync", "Broker syncs recorded, by result", syncs.clone());
        registry.register(
            "reconciliation_divergences",
            "Divergences detected for the first time, by kind",
            divergences.clone(),
        );
        registry.register(
            "drawdown_guard_triggers",
            "Drawdown level changes into WARNING or CRITICAL (and back to NORMAL), by level entered",
            drawdown_triggers.clone(),
        );
        registry.register("market_guard_alerts", "Market alerts raised, by kind and severity", market_alerts.clone());
        registry.register(
            "reconciliation_latency_seconds",
            "Reported duration of each broker sync (finish - start)",
            sync_latency.clone(),
        );
        let own = registry.sub_registry_with_prefix("trading_monitor");
        own.register("rpc_requests", "gRPC calls handled, by method and status code", rpc_requests.clone());
        own.register("rpc_duration_seconds", "Time to the response headers of each gRPC call", rpc_duration.clone());
        own.register_collector(Box::new(CacheCollector(cache)));
        own.register_collector(Box::new(PoolCollector(pool)));
        for collector in collectors {
            own.register_collector(collector);
        }
        own.register(
            "pg_pool_acquire_seconds",
            "Time each PostgreSQL call waited for a pooled connection",
            crate::telemetry::pool_acquire_wait().clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                rpc_requests,
                rpc_duration,
                syncs,
                divergences,
                drawdown_triggers,
                market_alerts,
                sync_latency,
            }),
        }
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.inner.registry);
        out
    }

    /// One gRPC call: its method (`package.Service/Method`, or `_OTHER`: one of a bounded set, never a path as
    /// the caller sent it), status code and time to its response headers.
    pub fn rpc(&self, method: &'static str, code: tonic::Code, elapsed: Duration) {
        self.inner.rpc_requests.get_or_create(&MethodCode { method, code: code_name(code) }).inc();
        self.inner.rpc_duration.get_or_create(&Method { method }).observe(elapsed.as_secs_f64());
    }

    /// A recorded broker sync: `result` (`completed`, `failed`, `superseded`), its reported duration, the
    /// divergence kinds it detected for the first time, and the drawdown level it moved the account into.
    pub fn sync(&self, result: &str, duration: Duration, detected: &[String], level_entered: Option<&str>) {
        let i = &self.inner;
        i.syncs.get_or_create(&ResultLabel { result: result.to_owned() }).inc();
        i.sync_latency.observe(duration.as_secs_f64());
        for kind in detected {
            i.divergences.get_or_create(&Reason { reason: kind.clone() }).inc();
        }
        if let Some(level) = level_entered {
            i.drawdown_triggers.get_or_create(&Level { level: level.to_owned() }).inc();
        }
    }

    /// A market alert raised.
    pub fn alert(&self, kind: &str, severity: &str) {
        self.inner.market_alerts.get_or_create(&Alert { kind: kind.to_owned(), severity: severity.to_owned() }).inc();
    }
}

/// A status code's name as the `code` label shows it (`Ok`, `NotFound`, ...).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "Ok",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// The cache's counters, read at scrape time (they also serve in-process readers: tests, loadgen).
#[derive(Debug)]
struct CacheCollector(Cache);

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        type Read = fn(&crate::cache::Snapshot) -> u64;
        let series: [(&str, &str, Read); 8] = [
            ("cache_hits", "responses served from cache (L1 or Redis)", |s| s.hits),
            ("cache_l1_hits", "responses served from the in-process L1", |s| s.l1_hits),
            ("cache_misses", "responses read from PostgreSQL and cached", |s| s.misses),
            ("cache_stale", "stale responses served while PostgreSQL was down", |s| s.stale),
            ("cache_bypass", "responses read from PostgreSQL without the cache", |s| s.bypass),
            ("cache_redis_errors", "Redis calls that failed or timed out", |s| s.redis_errors),
            ("pg_queries", "PostgreSQL loads issued by cached RPCs", |s| s.pg_queries),
            ("cache_refreshes", "background refreshes of values near expiry", |s| s.refreshes),
        ];
        let metrics = self.0.metrics();
        for (name, help, read) in series {
            let mut family =
                encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Counter)?;
            for rpc in Rpc::ALL {
                let counter = ConstCounter::new(read(&metrics.snapshot(rpc)));
                counter.encode(family.encode_family(&RpcLabel { rpc: rpc.name() })?)?;
            }
        }
        Ok(())
    }
}

/// The PostgreSQL pool's connections, read at scrape time.
#[derive(Debug)]
struct PoolCollector(PgPool);

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let size = i64::from(self.0.size());
        let idle = i64::try_from(self.0.num_idle()).unwrap_or(i64::MAX);
        let mut family = encoder.encode_descriptor(
            "pg_pool_connections",
            "Connections of the PostgreSQL pool, by state",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        ConstGauge::new(idle).encode(family.encode_family(&State { state: "idle" })?)?;
        ConstGauge::new((size - idle).max(0)).encode(family.encode_family(&State { state: "in_use" })?)?;
        let max = i64::from(self.0.options().get_max_connections());
        let gauge = ConstGauge::new(max);
        gauge.encode(encoder.encode_descriptor(
            "pg_pool_max_connections",
            "The pool's maximum connections",
            None,
            gauge.metric_type(),
        )?)?;
        Ok(())
    }
}
