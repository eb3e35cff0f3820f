//! `otlp-sink`: an OTLP/gRPC trace receiver that only counts what it is sent, so a benchmark can measure what
//! exporting costs the server without a collector's own work on the same cores.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    spans: AtomicU64,
}

struct Sink(Arc<Counts>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize =
            request.get_ref().resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
        self.0.requests.fetch_add(1, Ordering::Relaxed);
        self.0.spans.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// Serves until SIGTERM or ctrl-c, then prints how many spans it received.
pub async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let counts = Arc::new(Counts::default());
    let stopped = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        anyhow::Ok(())
    };
    tonic::transport::Server::builder()
        .add_service(
            TraceServiceServer::new(Sink(counts.clone())).accept_compressed(tonic::codec::CompressionEncoding::Gzip),
        )
        .serve_with_shutdown(listen, async {
            let _ = stopped.await;
        })
        .await?;
    println!(
        "otlp sink: {} spans in {} export requests",
        counts.spans.load(Ordering::Relaxed),
        counts.requests.load(Ordering::Relaxed)
    );
    Ok(())
}
