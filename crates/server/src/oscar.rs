//! The OSCAR listener: AIM-style clients sign on (BUCP or the old roasted login) and run their BOS
//! session on the same port. This driver only moves bytes and timers between the socket and the
//! sans-IO machines of `entente-oscar`, answers their requests from the store, and connects a
//! signed-on session to the router as a hub session of the same account.

use crate::router::{Delivery, SessionHandle};
use crate::AppState;
use bytes::Bytes;
use entente_model::{Address, Event, Failure, Message, Presence, PresenceKind};
use entente_oscar::family::feedbag::{class as feedbag_class, FeedbagItem};
use entente_oscar::session::{
    self as bos, Account, FeedbagOp, SessionOutput, SessionRequest, UserDetails,
};
use entente_oscar::{
    AccountAnswer, AccountRequest, Channel, Credential, Flap, Login, LoginConfig, LoginOutput,
    Session, SessionConfig, SignOnFrame, TlvList,
};
use entente_policy::{LoginVerdict, Origin};
use entente_store::FeedbagRow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a login cookie stays redeemable.
const COOKIE_LIFETIME: Duration = Duration::from_secs(120);
/// How long a new connection may stay silent before its first frame.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_COOKIES: usize = 100_000;

/// Cookies handed out by logins, redeemed once by BOS connections.
#[derive(Default)]
pub struct Cookies {
    map: Mutex<HashMap<Bytes, (Address, String, Instant)>>,
}

impl Cookies {
    fn insert(&self, cookie: Bytes, account: Address, display: String, now: Instant) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_COOKIES {
            map.retain(|_, (_, _, expires)| *expires > now);
        }
        map.insert(cookie, (account, display, now + COOKIE_LIFETIME));
    }

    /// Single use: a redeemed cookie is forgotten.
    fn redeem(&self, cookie: &[u8], now: Instant) -> Option<(Address, String)> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let (account, display, expires) = map.remove(cookie)?;
        (expires > now).then_some((account, display))
    }
}

pub async fn serve(state: AppState, listener: TcpListener) {
    let cookies = Arc::new(Cookies::default());
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = state.shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(state.clone(), cookies.clone(), stream, peer));
            }
            Err(e) => {
                tracing::warn!(error = %e, "oscar accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads until the client's first FLAP frame is complete: a channel-1 frame with a cookie opens
/// a BOS session, anything else a login.
async fn connection(
    state: AppState,
    cookies: Arc<Cookies>,
    mut stream: TcpStream,
    peer: SocketAddr,
) {
    let now = Instant::now();
    let wall = time::OffsetDateTime::now_utc();
    let hub = state.router.hub_domain().to_string();
    // Both kinds of connection start with the server's hello; the BOS machine's is sent at once
    // (clients differ in whether they wait for it).
    let mut session = Session::new(SessionConfig::new(&hub), now, wall);
    if let Some(hello) = session.poll_transmit() {
        if stream.write_all(&hello).await.is_err() {
            return;
        }
    }
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    let first = loop {
        match Flap::peek(&buf, entente_oscar::flap::DEFAULT_MAX_INBOUND_PAYLOAD) {
            Ok(Some((flap, _))) => break flap,
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(%peer, error = %e, "not OSCAR");
                return;
            }
        }
        let read = tokio::select! {
            r = tokio::time::timeout(FIRST_FRAME_TIMEOUT, stream.read(&mut chunk)) => r,
            _ = state.shutdown.cancelled() => return,
        };
        match read {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    };
    let is_bos = first.channel == Channel::SignOn
        && SignOnFrame::decode(&first.payload)
            .is_ok_and(|f| f.tlvs.has(entente_oscar::family::bucp::tlv::COOKIE));
    if is_bos {
        session.handle_input(&buf, Instant::now());
        run_session(state, cookies, stream, peer, session).await;
    } else {
        let bos_address = stream
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "127.0.0.1:5190".into());
        let mut login = Login::new(LoginConfig::new(&hub, &bos_address), now, rand::random());
        // Its hello duplicates the one already sent.
        let _ = login.poll_transmit();
        login.handle_input(&buf, Instant::now());
        run_login(state, cookies, stream, peer, login).await;
    }
}

// ----- login ------------------------------------------------------------------------------

fn account_name(screen_name: &str, hub: &str) -> Option<String> {
    let name = match screen_name.rsplit_once('@') {
        Some((name, domain)) if domain.eq_ignore_ascii_case(hub) => name,
        Some(_) => return None,
        None => screen_name,
    };
    entente_model::address_rules::normalize_hub_name(name).ok()
}

async fn answer_login(
    state: &AppState,
    request: &AccountRequest,
    peer: SocketAddr,
) -> AccountAnswer {
    let hub = state.router.hub_domain();
    let (screen_name, verify) = match request {
        AccountRequest::Md5Password { screen_name, .. }
        | AccountRequest::Password { screen_name, .. } => (screen_name, None),
        AccountRequest::VerifyPassword {
            screen_name,
            password,
            ..
        } => (screen_name, Some(password)),
    };
    let Some(name) = account_name(screen_name, hub) else {
        return AccountAnswer::NoSuchAccount;
    };
    match state
        .logins
        .check(&name, &peer.ip().to_string(), Instant::now())
    {
        LoginVerdict::Refuse => return AccountAnswer::RateLimited,
        LoginVerdict::Proceed { delay } => tokio::time::sleep(delay).await,
    }
    let store = state.router.store();
    let display_name = screen_name
        .split('@')
        .next()
        .unwrap_or(screen_name)
        .to_string();
    if let Some(password) = verify {
        return match store.check_password(&name, password).await {
            Ok(Some(true)) => AccountAnswer::Found {
                display_name,
                credential: Credential::Verified,
            },
            Ok(Some(false)) => AccountAnswer::WrongPassword,
            Ok(None) => AccountAnswer::NoSuchAccount,
            Err(_) => AccountAnswer::Unavailable,
        };
    }
    match store.oscar_md5(&name).await {
        Ok(Some(md5)) => AccountAnswer::Found {
            display_name,
            credential: Credential::Md5Password(md5),
        },
        Ok(None) => match store.account_exists(&name).await {
            // An account from before MD5 credentials were kept: a password change enables OSCAR.
            Ok(true) => AccountAnswer::Unavailable,
            Ok(false) => AccountAnswer::NoSuchAccount,
            Err(_) => AccountAnswer::Unavailable,
        },
        Err(_) => AccountAnswer::Unavailable,
    }
}

async fn run_login(
    state: AppState,
    cookies: Arc<Cookies>,
    mut stream: TcpStream,
    peer: SocketAddr,
    mut login: Login,
) {
    let hub = state.router.hub_domain().to_string();
    let mut chunk = vec![0u8; 8192];
    loop {
        while let Some(out) = login.poll_event() {
            match out {
                LoginOutput::Request(request) => {
                    let answer = answer_login(&state, &request, peer).await;
                    login.answer(answer, Instant::now());
                }
                LoginOutput::Authenticated {
                    account,
                    display_name,
                    cookie,
                    ..
                } => {
                    state.logins.succeeded(account.local());
                    cookies.insert(cookie, account, display_name, Instant::now());
                }
                LoginOutput::Failed { screen_name, code } => {
                    tracing::info!(%peer, screen_name, ?code, "oscar login failed");
                    if let Some(name) = account_name(&screen_name, &hub) {
                        state
                            .logins
                            .failed(&name, &peer.ip().to_string(), Instant::now());
                    }
                }
                LoginOutput::Closed(_) => {
                    flush_login(&mut login, &mut stream).await;
                    let _ = stream.shutdown().await;
                    return;
                }
            }
        }
        if !flush_login(&mut login, &mut stream).await {
            return;
        }
        let deadline = login.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            r = stream.read(&mut chunk) => match r {
                Ok(n) if n > 0 => login.handle_input(&chunk[..n], Instant::now()),
                _ => return,
            },
            _ = sleep_until(deadline) => login.handle_timeout(Instant::now()),
            _ = state.shutdown.cancelled() => return,
        }
    }
}

async fn flush_login(login: &mut Login, stream: &mut TcpStream) -> bool {
    while let Some(bytes) = login.poll_transmit() {
        if stream.write_all(&bytes).await.is_err() {
            return false;
        }
    }
    true
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

// ----- BOS session ------------------------------------------------------------------------

fn to_row(item: &FeedbagItem) -> FeedbagRow {
    let mut attrs = bytes::BytesMut::new();
    item.attrs.encode(&mut attrs);
    FeedbagRow {
        group_id: item.group_id,
        item_id: item.item_id,
        class: item.class,
        name: item.name.clone(),
        attrs: attrs.to_vec(),
    }
}

fn from_row(row: FeedbagRow) -> Option<FeedbagItem> {
    let mut r = entente_oscar::wire::Reader::new(&row.attrs);
    let attrs = TlvList::decode_rest(&mut r).ok()?;
    Some(FeedbagItem {
        name: row.name,
        group_id: row.group_id,
        item_id: row.item_id,
        class: row.class,
        attrs,
    })
}

struct BosConn {
    state: AppState,
    cookies: Arc<Cookies>,
    stream: TcpStream,
    session: Session,
    /// The router's view of this session, once signed on.
    hub: Option<SessionHandle>,
    /// Queued messages written to the client and waiting to leave the queue.
    written: Vec<entente_store::QueuedMessage>,
    last_seq: i64,
}

impl BosConn {
    async fn flush(&mut self) -> bool {
        while let Some(bytes) = self.session.poll_transmit() {
            if self.stream.write_all(&bytes).await.is_err() {
                return false;
            }
        }
        let written = std::mem::take(&mut self.written);
        if let Some(first) = written.first() {
            let seqs: Vec<i64> = written.iter().map(|m| m.seq).collect();
            self.state.router.delivered_many(&first.to, &seqs).await;
        }
        true
    }

    /// Hands an event to the machine; a refused queued message goes back to its sender.
    async fn deliver_queued(&mut self, q: entente_store::QueuedMessage) {
        if q.seq <= self.last_seq {
            return;
        }
        self.last_seq = q.seq;
        let message = Message {
            id: q.id.clone(),
            from: q.from.clone(),
            to: q.to.clone(),
            body: q.body.clone(),
            thread: q.thread.clone(),
            ts: q.ts,
        };
        match self
            .session
            .handle_event(Event::Message(message), Instant::now())
        {
            bos::Delivery::Delivered => self.written.push(q),
            bos::Delivery::Refused(code) => {
                self.state.router.delivered(&q).await;
                let failure = Failure {
                    from: q.to,
                    to: q.from,
                    id: q.id,
                    code,
                    text: "the recipient does not accept messages from you".into(),
                };
                self.state.router.bounce(failure).await;
            }
        }
    }

    async fn signed_on(&mut self, address: Address) {
        let handle = self.state.router.open_session(address.clone()).await;
        self.hub = Some(handle);
        let router = self.state.router.clone();
        let Ok(roster) = router.store().roster(&address).await else {
            return;
        };
        let now = Instant::now();
        for item in &roster {
            if item.subscription.has_to() {
                let kind = router.presence_for(&address, &item.contact);
                if !matches!(kind, PresenceKind::Unavailable { .. }) {
                    let p = Presence {
                        from: item.contact.clone(),
                        to: Some(address.clone()),
                        kind,
                    };
                    self.session.handle_event(Event::Presence(p), now);
                }
            }
            if item.pending_in {
                let s = entente_model::Subscription {
                    from: item.contact.clone(),
                    to: address.clone(),
                    kind: entente_model::SubscriptionKind::Subscribe,
                };
                self.session.handle_event(Event::Subscription(s), now);
            }
        }
        let mut after = 0;
        while let Ok(batch) = router.store().queued(&address, after, 256).await {
            if batch.is_empty() {
                break;
            }
            for q in batch {
                after = q.seq;
                self.deliver_queued(q).await;
            }
        }
    }

    async fn on_event(&mut self, event: Event) {
        let router = self.state.router.clone();
        let Some(me) = self.session.address().cloned() else {
            return;
        };
        match event {
            Event::Presence(p) if p.to.is_none() => {
                let Some(hub) = &self.hub else { return };
                match p.kind {
                    PresenceKind::Available { show, status } => {
                        router.set_presence(&me, hub.id, Some((show, status))).await
                    }
                    PresenceKind::Unavailable { .. } => {
                        router.set_presence(&me, hub.id, None).await
                    }
                    PresenceKind::Probe => {}
                }
            }
            Event::Presence(Presence {
                to: Some(contact),
                kind: PresenceKind::Probe,
                ..
            }) => {
                // Answer from what the hub knows, for contacts this user may see.
                let Ok(contact) = router.normalize(contact) else {
                    return;
                };
                let allowed = router
                    .store()
                    .roster_item(&me, &contact)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|i| i.subscription.has_to());
                if allowed {
                    let kind = router.presence_for(&me, &contact);
                    let p = Presence {
                        from: contact,
                        to: Some(me),
                        kind,
                    };
                    self.session
                        .handle_event(Event::Presence(p), Instant::now());
                }
            }
            event => {
                let id = match &event {
                    Event::Message(m) => Some((m.id.clone(), m.to.clone())),
                    _ => None,
                };
                if let Err(refusal) = router.submit(Origin::Hub, event).await {
                    if let Some((id, to)) = id {
                        let failure = Failure {
                            from: to,
                            to: me,
                            id,
                            code: refusal.code,
                            text: refusal.text,
                        };
                        self.session
                            .handle_event(Event::Failure(failure), Instant::now());
                    }
                }
            }
        }
    }

    async fn on_request(&mut self, request: SessionRequest) {
        let router = self.state.router.clone();
        let store = router.store();
        let me = self.session.address().cloned();
        match request {
            SessionRequest::RedeemCookie { cookie } => {
                let account = match self.cookies.redeem(&cookie, Instant::now()) {
                    Some((address, display_name)) => {
                        let rows = store.feedbag(&address).await.unwrap_or_default();
                        let feedbag = rows.into_iter().filter_map(from_row).collect();
                        let modified = time::OffsetDateTime::now_utc().unix_timestamp() as u32;
                        Some(Account {
                            address,
                            display_name,
                            feedbag,
                            feedbag_modified: modified,
                        })
                    }
                    None => None,
                };
                self.session.answer_cookie(account, Instant::now());
            }
            SessionRequest::StoreFeedbag { op, items } => {
                let Some(me) = me else { return };
                let rows: Vec<FeedbagRow> = items.iter().map(to_row).collect();
                let result = match op {
                    FeedbagOp::Insert | FeedbagOp::Update => store.feedbag_put(&me, &rows).await,
                    FeedbagOp::Delete => store.feedbag_delete(&me, &rows).await,
                };
                if let Err(e) = result {
                    tracing::error!(error = %e, "cannot store a feedbag change");
                }
                // Deny items are the user's block list (PD mode "deny some", what AIM clients
                // set when the user blocks someone): the router enforces it for every protocol.
                for item in items.iter().filter(|i| i.class == feedbag_class::DENY) {
                    let Ok(who) = entente_oscar::names::screen_name_to_address(
                        &item.name,
                        router.hub_domain(),
                    )
                    .map_err(|e| e.to_string())
                    .and_then(|a| router.normalize(a).map_err(|r| r.text)) else {
                        continue;
                    };
                    let result = match op {
                        FeedbagOp::Insert | FeedbagOp::Update => router.block(&me, &who).await,
                        FeedbagOp::Delete => router.unblock(&me, &who).await,
                    };
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "deny list change not applied");
                    }
                }
            }
            SessionRequest::StoreProfile { profile } => {
                if let Some(me) = me {
                    if let Err(e) = store.set_profile(&me, &profile).await {
                        tracing::error!(error = %e, "cannot store a profile");
                    }
                }
            }
            SessionRequest::UserInfo { id, who } => {
                let details = match router.normalize(who) {
                    Ok(who) if router.is_local(&who) => {
                        match store.account_exists(who.local()).await {
                            Ok(true) => {
                                let away = match router.presence_of(&who) {
                                    PresenceKind::Available { show, status }
                                        if show != entente_model::Show::Available =>
                                    {
                                        status
                                    }
                                    _ => None,
                                };
                                Some(UserDetails {
                                    profile: store.profile(&who).await.ok().flatten(),
                                    away,
                                })
                            }
                            _ => None,
                        }
                    }
                    Ok(_) => Some(UserDetails::default()),
                    Err(_) => None,
                };
                self.session.answer_user_info(id, details, Instant::now());
            }
        }
    }
}

async fn recv_hub(hub: &mut Option<SessionHandle>) -> Option<Delivery> {
    match hub {
        Some(h) => h.rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn run_session(
    state: AppState,
    cookies: Arc<Cookies>,
    stream: TcpStream,
    peer: SocketAddr,
    session: Session,
) {
    let mut conn = BosConn {
        state,
        cookies,
        stream,
        session,
        hub: None,
        written: Vec::new(),
        last_seq: 0,
    };
    let mut chunk = vec![0u8; 8192];
    'run: loop {
        while let Some(out) = conn.session.poll_event() {
            match out {
                SessionOutput::Event(e) => conn.on_event(e).await,
                SessionOutput::Request(r) => conn.on_request(r).await,
                SessionOutput::SignedOn { address } => {
                    tracing::info!(user = %address, %peer, "oscar session signed on");
                    conn.signed_on(address).await;
                }
                SessionOutput::Closed(reason) => {
                    tracing::debug!(%peer, ?reason, "oscar session closed");
                    conn.flush().await;
                    let _ = conn.stream.shutdown().await;
                    break 'run;
                }
            }
        }
        if !conn.flush().await {
            break;
        }
        let deadline = conn
            .session
            .poll_timeout()
            .map(tokio::time::Instant::from_std);
        tokio::select! {
            r = conn.stream.read(&mut chunk) => match r {
                Ok(n) if n > 0 => conn.session.handle_input(&chunk[..n], Instant::now()),
                _ => break,
            },
            d = recv_hub(&mut conn.hub) => match d {
                Some(Delivery::Message(q)) => conn.deliver_queued(q).await,
                Some(Delivery::Event(e)) => {
                    conn.session.handle_event(e, Instant::now());
                }
                Some(Delivery::RosterChanged | Delivery::BlocklistChanged) => {}
                None => break,
            },
            _ = sleep_until(deadline) => conn.session.handle_timeout(Instant::now()),
            _ = conn.state.shutdown.cancelled() => {
                let signoff = entente_oscar::FlapWriter::new(0).frame(Channel::SignOff, Bytes::new());
                let _ = conn.stream.write_all(&signoff).await;
                break;
            }
        }
    }
    if let Some(h) = conn.hub.take() {
        conn.state.router.close_session(&h.address, h.id).await;
        tracing::info!(user = %h.address, "oscar session signed off");
    }
}
