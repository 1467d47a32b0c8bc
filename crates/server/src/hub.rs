//! Hub client protocol v1 sessions over WebSocket (`/api/v1/ws`): sign-in, frames to canonical
//! events and back, per-connection rate limits, and delivery of queued messages.

use crate::router::{Delivery, Router, SessionHandle};
use crate::AppState;
use axum::extract::ws::{Message as WsMessage, WebSocket};
use entente_model::{
    Address, ChatState, ErrorCode, Event, Message, PresenceKind, Show, Subscription,
    SubscriptionKind, Typing,
};
use entente_policy::{ConnectionLimiter, LoginVerdict, Origin, Refusal};
use entente_store::QueuedMessage;
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use time::format_description::well_known::Rfc3339;

/// How long a new connection may take to sign in.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientFrame {
    Login {
        user: String,
        password: String,
    },
    Message {
        to: String,
        body: String,
        #[serde(default)]
        thread: Option<String>,
    },
    Presence {
        show: String,
        #[serde(default)]
        status: Option<String>,
    },
    Subscribe {
        to: String,
    },
    Approve {
        to: String,
    },
    Deny {
        to: String,
    },
    Unsubscribe {
        to: String,
    },
    Typing {
        to: String,
        state: String,
    },
    Roster,
    Block {
        address: String,
    },
    Unblock {
        address: String,
    },
    Blocklist,
}

const FRAME_TYPES: &[&str] = &[
    "login",
    "message",
    "presence",
    "subscribe",
    "approve",
    "deny",
    "unsubscribe",
    "typing",
    "roster",
    "block",
    "unblock",
    "blocklist",
];

/// A frame the client sent that could not be understood: the error to answer with.
struct BadFrame {
    id: Option<String>,
    code: ErrorCode,
    text: String,
}

fn error_frame(id: Option<&str>, code: ErrorCode, text: &str) -> Value {
    let mut v = json!({"type": "error", "code": code.as_str(), "text": text});
    if let Some(id) = id {
        v["id"] = json!(id);
    }
    v
}

/// Reads one text frame into (client id, frame).
fn parse_frame(text: &str, max_bytes: usize) -> Result<(Option<String>, ClientFrame), BadFrame> {
    if text.len() > max_bytes {
        return Err(BadFrame {
            id: None,
            code: ErrorCode::TooLarge,
            text: format!("frames are limited to {max_bytes} bytes"),
        });
    }
    let value: Value = serde_json::from_str(text).map_err(|e| BadFrame {
        id: None,
        code: ErrorCode::BadRequest,
        text: format!("not a JSON object: {e}"),
    })?;
    let id = value.get("id").and_then(Value::as_str).map(str::to_owned);
    let bad = |text: String| BadFrame {
        id: id.clone(),
        code: ErrorCode::BadRequest,
        text,
    };
    let Some(kind) = value.get("type").and_then(Value::as_str) else {
        return Err(bad("a frame needs a string field \"type\"".into()));
    };
    if !FRAME_TYPES.contains(&kind) {
        return Err(bad(format!("unknown frame type {kind:?}")));
    }
    let frame = serde_json::from_value(value.clone())
        .map_err(|e| bad(format!("invalid {kind} frame: {e}")))?;
    Ok((id, frame))
}

fn show_name(kind: &PresenceKind) -> (&'static str, Option<&str>) {
    match kind {
        PresenceKind::Available { show, status } => (
            match show {
                Show::Available => "available",
                Show::Away | Show::ExtendedAway => "away",
                Show::Dnd => "dnd",
            },
            status.as_deref(),
        ),
        PresenceKind::Unavailable { status } => ("offline", status.as_deref()),
        PresenceKind::Probe => ("offline", None),
    }
}

fn presence_frame(from: &Address, kind: &PresenceKind) -> Value {
    let (show, status) = show_name(kind);
    json!({"type": "presence", "from": from, "show": show, "status": status.unwrap_or("")})
}

fn message_frame(m: &QueuedMessage, offline: bool) -> Value {
    let ts = m.ts.format(&Rfc3339).unwrap_or_default();
    let mut v = json!({"type": "message", "id": format!("s{}", m.seq), "from": m.from, "body": m.body, "ts": ts, "offline": offline});
    if let Some(thread) = &m.thread {
        v["thread"] = json!(thread);
    }
    v
}

/// The frame for an event delivered to the user, if the protocol has one.
fn event_frame(event: &Event) -> Option<Value> {
    Some(match event {
        Event::Presence(p) => presence_frame(&p.from, &p.kind),
        Event::Subscription(s) => match s.kind {
            SubscriptionKind::Subscribe => json!({"type": "subscription_request", "from": s.from}),
            SubscriptionKind::Subscribed => json!({"type": "subscribed", "from": s.from}),
            SubscriptionKind::Unsubscribed => json!({"type": "unsubscribed", "from": s.from}),
            SubscriptionKind::Unsubscribe => return None,
        },
        Event::Typing(t) => {
            let state = match t.state {
                ChatState::Composing => "composing",
                ChatState::Paused | ChatState::Inactive => "paused",
                ChatState::Active | ChatState::Gone => "active",
            };
            json!({"type": "typing", "from": t.from, "state": state})
        }
        Event::Receipt(r) => json!({"type": "receipt", "from": r.from, "id": r.id}),
        Event::Failure(f) => {
            let mut v = error_frame(Some(&f.id), f.code, &f.text);
            v["from"] = json!(f.from);
            v
        }
        Event::Message(_) => return None,
    })
}

struct Conn {
    socket: WebSocket,
}

impl Conn {
    async fn send(&mut self, v: &Value) -> bool {
        self.socket
            .send(WsMessage::Text(v.to_string().into()))
            .await
            .is_ok()
    }

    async fn close(mut self) {
        let _ = self.socket.send(WsMessage::Close(None)).await;
    }
}

pub async fn run(state: AppState, socket: WebSocket, peer: SocketAddr) {
    let mut conn = Conn { socket };
    let Some(address) = sign_in(&state, &mut conn, peer).await else {
        conn.close().await;
        return;
    };
    let session = state.router.open_session(address.clone()).await;
    let id = session.id;
    tracing::info!(user = %address, session = id, %peer, "signed in");
    serve(&state, &mut conn, session).await;
    state.router.close_session(&address, id).await;
    tracing::info!(user = %address, session = id, "signed out");
    conn.close().await;
}

/// Waits for a valid `login` frame; answers anything else with `not_authorized`.
async fn sign_in(state: &AppState, conn: &mut Conn, peer: SocketAddr) -> Option<Address> {
    let limits = &state.config.limits;
    let first = tokio::select! {
        m = tokio::time::timeout(LOGIN_TIMEOUT, conn.socket.recv()) => m.ok().flatten()?.ok()?,
        _ = state.shutdown.cancelled() => return None,
    };
    let text = match first {
        WsMessage::Text(t) => t,
        _ => {
            conn.send(&error_frame(
                None,
                ErrorCode::NotAuthorized,
                "sign in first",
            ))
            .await;
            return None;
        }
    };
    let (user, password) = match parse_frame(&text, limits.max_frame_bytes) {
        Ok((_, ClientFrame::Login { user, password })) => (user, password),
        Ok(_) => {
            conn.send(&error_frame(
                None,
                ErrorCode::NotAuthorized,
                "sign in first",
            ))
            .await;
            return None;
        }
        Err(bad) => {
            conn.send(&error_frame(
                bad.id.as_deref(),
                ErrorCode::NotAuthorized,
                &format!("sign in first: {}", bad.text),
            ))
            .await;
            return None;
        }
    };
    let refuse = "wrong name or password";
    let hub = state.router.hub_domain();
    let name = match user.rsplit_once('@') {
        Some((name, domain)) if domain.eq_ignore_ascii_case(hub) => name.to_string(),
        Some(_) => {
            conn.send(&error_frame(
                None,
                ErrorCode::NotAuthorized,
                "that account is not on this hub",
            ))
            .await;
            return None;
        }
        None => user,
    };
    let Ok(address) = Address::new(&name, hub, entente_model::DomainKind::Hub) else {
        conn.send(&error_frame(None, ErrorCode::NotAuthorized, refuse))
            .await;
        return None;
    };
    let peer_ip = peer.ip().to_string();
    match state
        .logins
        .check(address.local(), &peer_ip, Instant::now())
    {
        LoginVerdict::Refuse => {
            metrics::counter!("entente_errors_total", "code" => "rate_limited").increment(1);
            conn.send(&error_frame(
                None,
                ErrorCode::RateLimited,
                "too many failed sign-ins; try again later",
            ))
            .await;
            return None;
        }
        LoginVerdict::Proceed { delay } => tokio::time::sleep(delay).await,
    }
    match state
        .router
        .store()
        .check_password(address.local(), &password)
        .await
    {
        Ok(Some(true)) => {
            state.logins.succeeded(address.local());
            conn.send(&json!({"type": "welcome", "address": address}))
                .await
                .then_some(address)
        }
        Ok(_) => {
            state
                .logins
                .failed(address.local(), &peer_ip, Instant::now());
            metrics::counter!("entente_errors_total", "code" => "not_authorized").increment(1);
            conn.send(&error_frame(None, ErrorCode::NotAuthorized, refuse))
                .await;
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "sign-in failed in the store");
            conn.send(&error_frame(
                None,
                ErrorCode::Internal,
                "the hub cannot check passwords right now",
            ))
            .await;
            None
        }
    }
}

/// Extension: the user's block list.
fn blocklist_frame(router: &Router, user: &Address) -> Value {
    json!({"type": "blocklist", "items": router.blocklist(user)})
}

async fn roster_frame(router: &Router, user: &Address) -> Option<Value> {
    let items = router.store().roster(user).await.ok()?;
    let items: Vec<Value> = items
        .iter()
        .filter(|i| i.subscription != entente_store::SubState::None || i.pending_out)
        .map(|i| json!({"address": i.contact, "subscription": i.subscription.as_str(), "pending": i.pending_out}))
        .collect();
    Some(json!({"type": "roster", "items": items}))
}

/// Sends what a new session needs: roster, contacts' presence, pending requests, queued messages.
/// Returns the last queue position sent, so live deliveries already sent are skipped.
async fn initial_state(router: &Router, conn: &mut Conn, user: &Address) -> Option<i64> {
    let roster = router.store().roster(user).await.ok()?;
    if !conn.send(&roster_frame(router, user).await?).await {
        return None;
    }
    for item in &roster {
        if item.subscription.has_to()
            && !conn
                .send(&presence_frame(
                    &item.contact,
                    &router.presence_for(user, &item.contact),
                ))
                .await
        {
            return None;
        }
        if item.pending_in
            && !conn
                .send(&json!({"type": "subscription_request", "from": item.contact}))
                .await
        {
            return None;
        }
    }
    let mut last = 0;
    loop {
        let batch = router.store().queued(user, last, 256).await.ok()?;
        if batch.is_empty() {
            return Some(last);
        }
        for m in batch {
            if !conn.send(&message_frame(&m, true)).await {
                return None;
            }
            router.delivered(&m).await;
            last = m.seq;
        }
    }
}

async fn serve(state: &AppState, conn: &mut Conn, mut session: SessionHandle) {
    let router = &state.router;
    let user = session.address.clone();
    let Some(mut last_seq) = initial_state(router, conn, &user).await else {
        return;
    };
    let limits = &state.config.limits;
    let limiter = ConnectionLimiter::new(limits.connection_rate, limits.connection_burst);
    loop {
        tokio::select! {
            incoming = conn.socket.recv() => {
                let text = match incoming {
                    Some(Ok(WsMessage::Text(t))) => t,
                    Some(Ok(WsMessage::Binary(_))) => {
                        if !conn.send(&error_frame(None, ErrorCode::BadRequest, "binary frames are not part of the protocol")).await { return; }
                        continue;
                    }
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                if !limiter.allow() {
                    metrics::counter!("entente_errors_total", "code" => "rate_limited").increment(1);
                    let id = serde_json::from_str::<Value>(&text).ok().and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned));
                    if !conn.send(&error_frame(id.as_deref(), ErrorCode::RateLimited, "slow down: too many frames")).await { return; }
                    continue;
                }
                let reply = match parse_frame(&text, limits.max_frame_bytes) {
                    Ok((id, frame)) => handle(state, &session, id, frame).await,
                    Err(bad) => {
                        metrics::counter!("entente_errors_total", "code" => bad.code.as_str()).increment(1);
                        Some(error_frame(bad.id.as_deref(), bad.code, &bad.text))
                    }
                };
                if let Some(reply) = reply {
                    if !conn.send(&reply).await { return; }
                }
            }
            delivery = session.rx.recv() => {
                let Some(first) = delivery else { return };
                // Everything already waiting is written in one go, and the messages written
                // leave the queue in one transaction.
                let mut written = Vec::new();
                let mut next = Some(first);
                let mut ok = true;
                while let Some(d) = next.take() {
                    ok = match d {
                        Delivery::Message(m) if m.seq <= last_seq => true,
                        Delivery::Message(m) => {
                            last_seq = m.seq;
                            let sent = conn.send(&message_frame(&m, false)).await;
                            if sent { written.push(m.seq); }
                            sent
                        }
                        Delivery::Event(e) => match event_frame(&e) {
                            Some(v) => conn.send(&v).await,
                            None => true,
                        },
                        Delivery::RosterChanged => match roster_frame(router, &user).await {
                            Some(v) => conn.send(&v).await,
                            None => true,
                        },
                        Delivery::BlocklistChanged => conn.send(&blocklist_frame(router, &user)).await,
                    };
                    if !ok || written.len() >= 256 { break; }
                    next = session.rx.try_recv().ok();
                }
                // Messages committed while this session was behind are read from the queue.
                let mut catching_up = ok && session.take_lag();
                if catching_up {
                    metrics::counter!("entente_session_catchups_total").increment(1);
                }
                while catching_up {
                    let Ok(batch) = router.store().queued(&user, last_seq, 256).await else { break };
                    catching_up = !batch.is_empty();
                    for m in batch {
                        last_seq = m.seq;
                        ok = conn.send(&message_frame(&m, false)).await;
                        if !ok { break; }
                        written.push(m.seq);
                    }
                    catching_up &= ok;
                }
                router.delivered_many(&user, &written).await;
                if !ok { return; }
            }
            _ = state.shutdown.cancelled() => {
                conn.send(&error_frame(None, ErrorCode::RecipientUnavailable, "the hub is shutting down")).await;
                return;
            }
        }
    }
}

fn refusal(id: Option<&str>, r: Refusal) -> Value {
    error_frame(id, r.code, &r.text)
}

/// Handles one signed-in frame; returns the reply, if any.
async fn handle(
    state: &AppState,
    session: &SessionHandle,
    id: Option<String>,
    frame: ClientFrame,
) -> Option<Value> {
    let router = &state.router;
    let me = &session.address;
    let id = id.as_deref();
    let target = |to: &str| router.parse_address(to);
    let result: Result<Option<Value>, Refusal> = async {
        match frame {
            ClientFrame::Login { .. } => {
                Err(Refusal::new(ErrorCode::BadRequest, "already signed in"))
            }
            ClientFrame::Message { to, body, thread } => {
                let Some(client_id) = id else {
                    return Err(Refusal::new(
                        ErrorCode::BadRequest,
                        "a message frame needs an id",
                    ));
                };
                let m = Message {
                    id: client_id.to_string(),
                    from: me.clone(),
                    to: target(&to)?,
                    body,
                    thread,
                    ts: time::OffsetDateTime::now_utc(),
                };
                router.submit(Origin::Hub, Event::Message(m)).await?;
                Ok(Some(json!({"type": "ack", "id": client_id})))
            }
            ClientFrame::Presence { show, status } => {
                let status = status.filter(|s| !s.is_empty());
                if status.as_ref().is_some_and(|s| s.len() > 1024) {
                    return Err(Refusal::new(
                        ErrorCode::TooLarge,
                        "status messages are limited to 1024 bytes",
                    ));
                }
                let presence = match show.as_str() {
                    "available" => Some((Show::Available, status)),
                    "away" => Some((Show::Away, status)),
                    "dnd" => Some((Show::Dnd, status)),
                    "invisible" => None,
                    other => {
                        return Err(Refusal::new(
                            ErrorCode::BadRequest,
                            format!("unknown show {other:?}"),
                        ))
                    }
                };
                router.set_presence(me, session.id, presence).await;
                Ok(None)
            }
            ClientFrame::Subscribe { to } => {
                subscription(router, me, &to, SubscriptionKind::Subscribe).await
            }
            ClientFrame::Approve { to } => {
                subscription(router, me, &to, SubscriptionKind::Subscribed).await
            }
            ClientFrame::Deny { to } => {
                subscription(router, me, &to, SubscriptionKind::Unsubscribed).await
            }
            ClientFrame::Unsubscribe { to } => {
                router.remove_contact(me, &target(&to)?).await?;
                Ok(None)
            }
            ClientFrame::Typing { to, state } => {
                let state = match state.as_str() {
                    "composing" | "paused" | "active" => {
                        ChatState::parse(&state).unwrap_or(ChatState::Active)
                    }
                    other => {
                        return Err(Refusal::new(
                            ErrorCode::BadRequest,
                            format!("unknown typing state {other:?}"),
                        ))
                    }
                };
                let t = Typing {
                    from: me.clone(),
                    to: target(&to)?,
                    state,
                };
                router.submit(Origin::Hub, Event::Typing(t)).await?;
                Ok(None)
            }
            ClientFrame::Roster => Ok(roster_frame(router, me).await),
            // Every session of the user gets the new list (BlocklistChanged); blocking twice
            // or unblocking someone not blocked still answers with the list.
            ClientFrame::Block { address } => {
                if !router.block(me, &target(&address)?).await? {
                    return Ok(Some(blocklist_frame(router, me)));
                }
                Ok(None)
            }
            ClientFrame::Unblock { address } => {
                if !router.unblock(me, &target(&address)?).await? {
                    return Ok(Some(blocklist_frame(router, me)));
                }
                Ok(None)
            }
            ClientFrame::Blocklist => Ok(Some(blocklist_frame(router, me))),
        }
    }
    .await;
    match result {
        Ok(reply) => reply,
        Err(r) => Some(refusal(id, r)),
    }
}

async fn subscription(
    router: &Router,
    me: &Address,
    to: &str,
    kind: SubscriptionKind,
) -> Result<Option<Value>, Refusal> {
    let s = Subscription {
        from: me.clone(),
        to: router.parse_address(to)?,
        kind,
    };
    router.submit(Origin::Hub, Event::Subscription(s)).await?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_and_errors_keep_the_id() {
        let (id, f) = parse_frame(
            r#"{"type":"message","id":"c1","to":"bob@x","body":"hi","extra":1}"#,
            1000,
        )
        .ok()
        .unwrap();
        assert_eq!(id.as_deref(), Some("c1"));
        assert!(matches!(f, ClientFrame::Message { .. }));
        let bad = parse_frame(r#"{"type":"message","id":"c2","to":"bob@x"}"#, 1000)
            .err()
            .unwrap();
        assert_eq!(
            (bad.id.as_deref(), bad.code),
            (Some("c2"), ErrorCode::BadRequest)
        );
        let bad = parse_frame(r#"{"type":"dance","id":"c3"}"#, 1000)
            .err()
            .unwrap();
        assert_eq!(
            (bad.id.as_deref(), bad.code),
            (Some("c3"), ErrorCode::BadRequest)
        );
        assert_eq!(
            parse_frame("[1,2", 1000).err().unwrap().code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            parse_frame(&"x".repeat(2000), 1000).err().unwrap().code,
            ErrorCode::TooLarge
        );
        assert_eq!(
            parse_frame(r#"{"id":"c4"}"#, 1000)
                .err()
                .unwrap()
                .id
                .as_deref(),
            Some("c4")
        );
    }
}
