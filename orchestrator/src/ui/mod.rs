//! The dashboard's page, compiled into fleetd: nothing is fetched from anywhere else at run time,
//! which the content security policy sent with it enforces (scripts, styles and API calls from
//! fleetd only). The page holds no data and needs no token to load; it asks for the token and
//! then calls the API with it ([`crate::dashboard`] lists what it reads).

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// Only fleetd's own files and API; no inline script, no frames, no forms posted elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                       img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// `GET /ui`: the page.
pub async fn page() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

/// `GET /ui/{file}`: its script, styles and charts.
pub async fn asset(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "app.js" => file("text/javascript; charset=utf-8", APP_JS),
        "charts.js" => file("text/javascript; charset=utf-8", fleet_core::charts::SCRIPT),
        "app.css" => file("text/css; charset=utf-8", APP_CSS),
        _ => (StatusCode::NOT_FOUND, "no such file in the dashboard\n").into_response(),
    }
}
