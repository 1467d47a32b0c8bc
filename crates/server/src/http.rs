//! The HTTP listener: the web client, the hub client protocol (`/api/v1`), health and metrics.

use crate::config::Registration;
use crate::AppState;
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
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
        .route("/api/v1/admin/quarantines", get(admin_quarantines))
        .route("/api/v1/admin/quarantines/release", post(admin_release))
        .route("/api/v1/admin/policy/reload", post(admin_reload))
        .route("/api/v1/admin/partners", get(admin_partners))
        .route("/api/v1/admin/held", get(admin_held))
        .route("/api/v1/admin/audit", get(admin_audit))
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

/// The admin API answers only a request with `Authorization: Bearer <[admin] token>`.
fn admin_allowed(state: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    let Some(token) = state
        .config
        .admin
        .token
        .as_deref()
        .filter(|t| !t.is_empty())
    else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "the admin API is disabled: set [admin] token",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compare without stopping at the first difference.
    let same = given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(error(
            StatusCode::UNAUTHORIZED,
            "a valid admin token is required",
        ))
    }
}

async fn admin_quarantines(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = admin_allowed(&state, &headers) {
        return r;
    }
    let items: Vec<_> = state
        .router
        .quarantined()
        .into_iter()
        .map(|(sender, left)| json!({"sender": sender, "seconds_left": left}))
        .collect();
    Json(json!({"quarantined": items})).into_response()
}

#[derive(Deserialize)]
struct Release {
    sender: String,
    /// Deliver the sender's held messages (true) or discard them (false, the default).
    #[serde(default)]
    deliver: bool,
}

#[derive(Deserialize)]
struct HeldQuery {
    sender: Option<String>,
    limit: Option<u32>,
}

/// Messages held by quarantine, oldest first.
async fn admin_held(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<HeldQuery>,
) -> Response {
    if let Err(r) = admin_allowed(&state, &headers) {
        return r;
    }
    let sender = match q.sender.as_deref().map(|s| state.router.parse_address(s)) {
        Some(Err(r)) => return error(StatusCode::BAD_REQUEST, &r.text),
        Some(Ok(a)) => Some(a),
        None => None,
    };
    let limit = q.limit.unwrap_or(1000).min(100_000);
    match state.router.store().held(sender.as_ref(), limit).await {
        Ok(held) => {
            let items: Vec<_> = held
                .iter()
                .map(|m| {
                    json!({
                        "hold": m.seq,
                        "sender": m.from,
                        "recipient": m.to,
                        "id": m.id,
                        "body": m.body,
                        "ts": (m.ts.unix_timestamp_nanos() / 1_000_000) as i64,
                    })
                })
                .collect();
            Json(json!({"held": items})).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn admin_release(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Option<Json<Release>>,
) -> Response {
    if let Err(r) = admin_allowed(&state, &headers) {
        return r;
    }
    let Some(Json(req)) = body else {
        return error(StatusCode::BAD_REQUEST, "expected {\"sender\": ADDRESS}");
    };
    let address = match state.router.parse_address(&req.sender) {
        Ok(a) => a,
        Err(r) => return error(StatusCode::BAD_REQUEST, &r.text),
    };
    let sender = address.to_string();
    let was_quarantined = state.router.release(&sender);
    let (delivered, refused, discarded) =
        match state.router.release_held(&address, req.deliver).await {
            Ok(counts) => counts,
            Err(r) => return error(StatusCode::INTERNAL_SERVER_ERROR, &r.text),
        };
    if !was_quarantined && delivered + refused + discarded == 0 {
        return error(
            StatusCode::NOT_FOUND,
            "that sender is not quarantined and has no held messages",
        );
    }
    tracing::info!(%sender, delivered, discarded, "quarantine released by an administrator");
    Json(json!({
        "released": sender,
        "was_quarantined": was_quarantined,
        "delivered": delivered,
        "refused": refused,
        "discarded": discarded,
    }))
    .into_response()
}

async fn admin_reload(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = admin_allowed(&state, &headers) {
        return r;
    }
    match crate::reload(&state) {
        Ok(report) => Json(json!({
            "reloaded": true,
            "file": report.file,
            "partners": report.partners,
            "restart_needed": report.restart_needed,
        }))
        .into_response(),
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
    }
}

async fn admin_partners(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = admin_allowed(&state, &headers) {
        return r;
    }
    let links = state.router.links();
    let current = state.current();
    let partners: Vec<_> = current
        .partners
        .iter()
        .map(|p| {
            let domain = p.domain.to_lowercase();
            let mine: Vec<_> = links.iter().filter(|l| l.domain == domain).collect();
            let connected = mine.iter().any(|l| l.since.is_some());
            let last_error = mine.iter().find_map(|l| l.last_error.clone());
            json!({
                "domain": p.domain,
                "protocol": p.protocol,
                "auth": p.auth,
                "address": p.address,
                "allow": p.allow,
                "strangers": p.strangers,
                "max_body_bytes": p.max_body_bytes,
                "rate": p.rate,
                "connected": connected,
                "links": mine,
                "last_error": last_error,
            })
        })
        .collect();
    // Links of domains that are not configured partners (open federation).
    let others: Vec<_> = links
        .iter()
        .filter(|l| {
            !current
                .partners
                .iter()
                .any(|p| p.domain.eq_ignore_ascii_case(&l.domain))
        })
        .collect();
    Json(json!({"partners": partners, "other_links": others})).into_response()
}

#[derive(Deserialize)]
struct AuditQuery {
    /// Milliseconds since the epoch.
    #[serde(default)]
    since: i64,
    sender: Option<String>,
    limit: Option<u32>,
}

/// The audit archive as JSON lines, oldest first.
async fn admin_audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<AuditQuery>,
) -> Response {
    if let Err(r) = admin_allowed(&state, &headers) {
        return r;
    }
    let limit = q.limit.unwrap_or(1000).min(100_000);
    match state
        .router
        .store()
        .audit_since(q.since, q.sender.as_deref(), limit)
        .await
    {
        Ok(entries) => {
            let mut out = String::new();
            for e in entries {
                out.push_str(&serde_json::to_string(&e).unwrap_or_default());
                out.push('\n');
            }
            let mut r = out.into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            );
            r
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
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
