//! A REST/JSON gateway for trading-monitor, in the manner of grpc-ecosystem/grpc-gateway v2: routes, JSON mapping
//! and the OpenAPI document all come from the protos' `google.api.http` annotations, read at start-up from the
//! embedded descriptor set, so an annotated RPC added later needs no gateway code.
//!
//! It runs standalone (`trading-gateway --upstream http://127.0.0.1:50051`, over a gRPC channel) or inside the
//! service (`trading-monitor serve --http-listen ADDR`, calling the service's own layered routes in process).
//!
//! Modules, one concern each: [`template`] (path templates), [`routing`] (the route table), [`json`] (messages
//! from and to JSON), [`headers`] (headers and metadata), [`upstream`] (the gRPC calls), [`errors`] (status →
//! HTTP), [`openapi`] (the document), [`streaming`] (server-streaming RPCs as Server-Sent Events or NDJSON),
//! [`page`] (the embedded status page), [`descriptors`] (the contract), [`args`] (the shared HTTP settings), and
//! `serve` (the HTTP server: connection cap, header-read and idle timeouts, graceful shutdown).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use tower_http::cors::{AllowOrigin, CorsLayer};

pub mod args;
pub mod cli;
pub mod descriptors;
pub mod errors;
pub mod headers;
pub mod json;
pub mod openapi;
pub mod page;
pub mod routing;
mod serve;
pub mod streaming;
pub mod template;
pub mod transcode;
pub mod upstream;

pub use args::HttpArgs;
pub use errors::GatewayError;
pub use routing::RouteTable;
pub use upstream::{Upstream, Upstreams};

/// Why the gateway cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The embedded descriptor set does not decode.
    #[error("cannot decode the embedded descriptor set: {0}")]
    Descriptors(#[from] prost_reflect::DescriptorError),
    /// A route of the contract cannot be built.
    #[error(transparent)]
    Routes(#[from] routing::RouteError),
    /// A configured CORS origin is not an origin.
    #[error("invalid CORS origin {0:?} (expected e.g. https://ops.example.com)")]
    Origin(String),
    /// A setting is out of its range.
    #[error("invalid REST gateway setting {0}")]
    Setting(String),
}

struct Inner {
    pool: DescriptorPool,
    table: RouteTable,
    transcoder: transcode::Transcoder,
    upstreams: Upstreams,
    openapi: Bytes,
    args: HttpArgs,
    demo_users: Vec<page::DemoUser>,
    /// Turns true when the gateway shuts down: open streams end.
    closing: tokio::sync::watch::Sender<bool>,
    /// One permit per stream the gateway may serve at once (`--http-max-streams`).
    streams: Arc<tokio::sync::Semaphore>,
}

/// The gateway: its routes, its upstream and its settings.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

impl Gateway {
    /// Reads the contract and builds the route table and the OpenAPI document. `upstreams` is one [`Upstream`]
    /// for every call (the service in process) or [`upstream::connect`]'s pools (standalone).
    pub fn new(upstreams: impl Into<Upstreams>, args: HttpArgs) -> Result<Gateway, StartError> {
        args.validate().map_err(StartError::Setting)?;
        let pool = descriptors::pool()?;
        let table = RouteTable::from_pool(&pool)?;
        let document = openapi::document(&pool, &table, env!("CARGO_PKG_VERSION"));
        let openapi = Bytes::from(serde_json::to_vec_pretty(&document).expect("JSON values serialize"));
        let transcoder = transcode::Transcoder::new(&pool);
        Ok(Gateway {
            inner: Arc::new(Inner {
                pool,
                table,
                transcoder,
                upstreams: upstreams.into(),
                openapi,
                streams: Arc::new(tokio::sync::Semaphore::new(args.max_streams as usize)),
                args,
                demo_users: Vec::new(),
                closing: tokio::sync::watch::channel(false).0,
            }),
        })
    }

    /// Demo users (label and token) the status page offers in its picker (the `demo` command sets them).
    pub fn with_demo_users(mut self, users: Vec<page::DemoUser>) -> Gateway {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.demo_users = users,
            None => tracing::warn!("demo users must be set before the gateway is shared; ignored"),
        }
        self
    }

    /// The demo users, if any.
    pub fn demo_users(&self) -> &[page::DemoUser] {
        &self.inner.demo_users
    }

    /// The OpenAPI document served at `/openapi.json`.
    pub fn openapi_json(&self) -> Bytes {
        self.inner.openapi.clone()
    }

    /// The axum router: `/` (status page), `/openapi.json`, `/healthz`, and every API route.
    pub fn router(&self) -> Result<Router, StartError> {
        let cors = cors(&self.inner.args)?;
        Ok(Router::new()
            .route("/", get(page::index))
            .route("/page/{file}", get(page::asset))
            .route("/openapi.json", get(openapi_handler))
            .route("/healthz", get(healthz))
            .fallback(api)
            .with_state(self.clone())
            .layer(cors))
    }

    /// Serves on `listener` until `shutdown` resolves, then ends the open streams, lets the connections finish
    /// what they are answering (closing any still open `--http-max-timeout` later: no call outlives its
    /// deadline) and returns. Connections are capped and timed out as [`HttpArgs`] says.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let address = listener.local_addr()?;
        let router = self.router()?;
        tracing::info!(%address, "serving REST at http://{address}/ (OpenAPI at /openapi.json)");
        let gateway = self.clone();
        let shutdown = async move {
            shutdown.await;
            // Streams end first, or the graceful shutdown would wait for them for ever.
            gateway.inner.closing.send_replace(true);
        };
        let args = &self.inner.args;
        let settings = serve::Settings {
            max_connections: args.max_connections,
            timeouts: serve::Timeouts {
                header_read: args.header_read_timeout,
                idle: args.idle_timeout,
                send: args.send_timeout,
            },
            drain: args.max_timeout,
        };
        serve::run(listener, router, settings, shutdown).await;
        Ok(())
    }

    async fn call(&self, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let inbound = match headers::inbound(&parts.headers, self.inner.args.max_timeout) {
            Ok(inbound) => inbound,
            Err(e) => {
                let mut response = e.into_response_with(&self.inner.pool);
                let id = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).expect("valid header");
                response.headers_mut().insert(headers::REQUEST_ID, id);
                return response;
            }
        };
        let request_id = inbound.request_id.clone();
        let mut response = match self.answer(parts, body, inbound).await {
            Ok(response) => response,
            Err(e) => e.into_response_with(&self.inner.pool),
        };
        response.headers_mut().insert(headers::REQUEST_ID, request_id);
        response
    }

    async fn answer(
        &self,
        parts: http::request::Parts,
        body: Body,
        inbound: headers::Inbound,
    ) -> Result<Response, GatewayError> {
        let path = parts.uri.path();
        let (route, values) = match self.inner.table.lookup(&parts.method, path) {
            routing::Lookup::Found(route, values) => (route, values),
            routing::Lookup::MethodNotAllowed(allowed) => return Err(GatewayError::MethodNotAllowed(allowed)),
            routing::Lookup::NotFound => return Err(GatewayError::NotFound(path.to_owned())),
        };
        let streaming = route.method.is_server_streaming();
        let extras = streaming.then(|| streaming::extras(parts.uri.query(), &parts.headers));
        let mut metadata = inbound.metadata;
        if let Some(token) = extras.as_ref().and_then(|e| e.access_token.as_deref())
            && !parts.headers.contains_key(header::AUTHORIZATION)
            && let Ok(value) = format!("Bearer {token}").parse()
        {
            metadata.insert("authorization", value);
        }
        // Every operation needs a token; say so before judging the body (a caller without one learns that
        // first, as over gRPC, where authentication runs before decoding). The service verifies the token.
        if !metadata.contains_key("authorization") {
            return Err(GatewayError::TokenMissing);
        }
        let body =
            read_body(&parts, body, self.inner.args.max_body_bytes, route.body != routing::BodyRule::None).await?;
        let query = match &extras {
            Some(e) => e.query.as_deref(),
            None => parts.uri.query(),
        };
        let mut message = json::request_message(route, &values, query, &body)?;
        if let Some(extras) = &extras {
            streaming::resume_from(&mut message, extras.last_event_id.as_deref());
            let framing = streaming::Framing::of(&parts.headers);
            // Refused at once at the cap, never queued; the place is held until the stream ends.
            let slot = self
                .inner
                .streams
                .clone()
                .try_acquire_owned()
                .map_err(|_| GatewayError::TooManyStreams { limit: self.inner.args.max_streams })?;
            let (metadata, messages) = upstream::server_streaming(
                &self.inner.upstreams.streams,
                route.grpc_path.clone(),
                metadata,
                inbound.timeout,
                Bytes::from(message.encode_to_vec()),
            )
            .await?;
            let gateway = self.clone();
            let limits = streaming::StreamLimits {
                closing: self.inner.closing.subscribe(),
                send_timeout: self.inner.args.send_timeout,
                slot: Some(slot),
            };
            let mut response = streaming::respond(
                route,
                framing,
                messages,
                self.inner.pool.clone(),
                move |route, bytes| gateway.response_json(route, bytes),
                limits,
            );
            headers::outbound(&metadata, response.headers_mut());
            return Ok(response);
        }
        let answer = upstream::unary(
            &self.inner.upstreams.unary,
            route.grpc_path.clone(),
            metadata,
            inbound.timeout,
            Bytes::from(message.encode_to_vec()),
        )
        .await?;
        let json = self.response_json(route, answer.message)?;
        let mut response = (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], json).into_response();
        headers::outbound(&answer.metadata, response.headers_mut());
        Ok(response)
    }

    /// The response as JSON: straight from the wire bytes when the output type has a plan (see [`transcode`]),
    /// otherwise (or for bytes the plan does not handle) through `prost-reflect`.
    fn response_json(&self, route: &routing::Route, message: Bytes) -> Result<Bytes, GatewayError> {
        let output = route.method.output();
        if route.response_body.is_none()
            && let Some(plan) = self.inner.transcoder.plan_for(output.full_name())
        {
            let mut out = Vec::with_capacity(message.len() * 2 + 64);
            if self.inner.transcoder.write_json(plan, &message, &mut out).is_ok() {
                return Ok(Bytes::from(out));
            }
        }
        let decoded = DynamicMessage::decode(output, message)
            .map_err(|e| GatewayError::Internal(format!("undecodable upstream response: {e}")))?;
        json::response_json(route, &decoded)
    }
}

async fn api(State(gateway): State<Gateway>, request: Request) -> Response {
    gateway.call(request).await
}

async fn openapi_handler(State(gateway): State<Gateway>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], gateway.openapi_json()).into_response()
}

/// 200 `{"status":"SERVING"}` when the upstream's gRPC health service says SERVING, otherwise 503.
async fn healthz(State(gateway): State<Gateway>) -> Response {
    let (code, status) =
        match upstream::healthy(&gateway.inner.upstreams.unary, gateway.inner.args.health_timeout).await {
            Ok(true) => (StatusCode::OK, "SERVING"),
            Ok(false) => (StatusCode::SERVICE_UNAVAILABLE, "NOT_SERVING"),
            Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "UNREACHABLE"),
        };
    (code, [(header::CONTENT_TYPE, "application/json")], format!("{{\"status\":\"{status}\"}}")).into_response()
}

/// Reads the body within the limit; a POST body must be JSON (or have no Content-Type).
async fn read_body(
    parts: &http::request::Parts,
    body: Body,
    limit: usize,
    expects_body: bool,
) -> Result<Bytes, GatewayError> {
    if expects_body && let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default();
        let essence = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(GatewayError::UnsupportedMediaType(ct.to_owned()));
        }
    }
    if let Some(length) = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && length > limit as u64
    {
        return Err(GatewayError::PayloadTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(GatewayError::PayloadTooLarge { limit }),
        Err(e) => Err(GatewayError::BadRequest { field: None, message: format!("cannot read the request body: {e}") }),
    }
}

fn cors(args: &HttpArgs) -> Result<CorsLayer, StartError> {
    let origins = args
        .cors_allow_origins
        .iter()
        .filter(|o| !o.trim().is_empty())
        .map(|o| {
            let o = o.trim().trim_end_matches('/');
            if !(o.starts_with("http://") || o.starts_with("https://")) {
                return Err(StartError::Origin(o.to_owned()));
            }
            HeaderValue::from_str(o).map_err(|_| StartError::Origin(o.to_owned()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::HEAD])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            http::HeaderName::from_static("x-request-id"),
            http::HeaderName::from_static("x-request-timeout"),
            http::HeaderName::from_static("grpc-timeout"),
            http::HeaderName::from_static("traceparent"),
            http::HeaderName::from_static("tracestate"),
        ])
        .expose_headers([
            http::HeaderName::from_static("x-request-id"),
            http::HeaderName::from_static("x-cache"),
            header::RETRY_AFTER,
            header::WWW_AUTHENTICATE,
        ])
        .allow_credentials(args.cors_allow_credentials)
        .max_age(Duration::from_secs(600)))
}
