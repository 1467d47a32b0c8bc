//! The HTTP listener: the web client, the hub client protocol (`/api/v1`), health and metrics.

use crate::config::Registration;
use crate::AppState;
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use entente_store::StoreError;
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;

const INDEX_HTML: &str = include_str!("../../../web/index.html");
const APP_JS: &str = include_str!("../../../web/app.js");
const STYLE_CSS: &str = include_str!("../../../web/style.css");

const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

pub fn app(state: AppState) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route("/api/v1/ws", get(websocket))
        .route("/api/v1/register", post(register))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .with_state(state)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn websocket(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    // Frames up to four times the protocol limit are read and answered with `too_large`;
    // anything larger closes the connection.
    let cap = state.config.limits.max_frame_bytes * 4;
    ws.max_message_size(cap)
        .max_frame_size(cap)
        // The default 128 KiB read buffer per connection is most of a session's memory.
        .read_buffer_size(8 * 1024)
        .on_upgrade(move |socket| crate::hub::run(state, socket, peer))
}

#[derive(Deserialize)]
struct Registration_ {
    user: String,
    password: String,
}

fn error(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({"error": text}))).into_response()
}

async fn register(State(state): State<AppState>, body: Option<Json<Registration_>>) -> Response {
    if state.config.hub.registration == Registration::Closed {
        return error(StatusCode::FORBIDDEN, "registration is closed on this hub");
    }
    let Some(Json(req)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected a JSON body {\"user\":…,\"password\":…}",
        );
    };
    let name = match crate::accounts::validate_name(&req.user) {
        Ok(n) => n,
        Err(text) => return error(StatusCode::BAD_REQUEST, &text),
    };
    if let Err(text) = crate::accounts::validate_password(&req.password) {
        return error(StatusCode::BAD_REQUEST, &text);
    }
    match state
        .router
        .store()
        .create_account(&name, &req.password)
        .await
    {
        Ok(()) => {
            let address = format!("{name}@{}", state.router.hub_domain());
            tracing::info!(%address, "account registered");
            (StatusCode::CREATED, Json(json!({"address": address}))).into_response()
        }
        Err(StoreError::AlreadyExists) => error(StatusCode::CONFLICT, "that name is taken"),
        Err(e) => {
            tracing::error!(error = %e, "registration failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the hub could not create the account",
            )
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    if let Ok(depth) = state.router.store().queue_depth().await {
        metrics::gauge!("entente_offline_queue_depth").set(depth as f64);
    }
    metrics::gauge!("entente_sessions").set(state.router.session_count() as f64);
    let mut r = state.metrics.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}
