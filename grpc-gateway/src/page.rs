//! The status page: three static files embedded in the binary (no CDN, no JavaScript build step). It reads only
//! the public REST API with a pasted bearer token, so it also proves the browser path. In the demo the page
//! can also list demo users with ready-made tokens (`/page/demo-users.json`, served only when configured).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};

use crate::Gateway;
use crate::errors;

const INDEX: &str = include_str!("../static/index.html");
const APP_JS: &str = include_str!("../static/app.js");
const STYLE_CSS: &str = include_str!("../static/style.css");

/// A demo user the page offers in its picker.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DemoUser {
    /// What the picker shows, e.g. `alice`.
    pub label: String,
    /// The user's bearer token.
    pub token: String,
}

/// `GET /`.
pub async fn index() -> Response {
    static_file("text/html; charset=utf-8", INDEX)
}

/// `GET /page/{file}`.
pub async fn asset(State(gateway): State<Gateway>, Path(file): Path<String>) -> Response {
    match file.as_str() {
        "app.js" => static_file("text/javascript; charset=utf-8", APP_JS),
        "style.css" => static_file("text/css; charset=utf-8", STYLE_CSS),
        "demo-users.json" if !gateway.demo_users().is_empty() => (
            [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")],
            serde_json::to_string(gateway.demo_users()).unwrap_or_else(|_| "[]".into()),
        )
            .into_response(),
        _ => errors::plain(StatusCode::NOT_FOUND, tonic::Code::NotFound, "ROUTE_NOT_FOUND", "no such page file"),
    }
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-content-type-options"), "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
}
