//! The BOS connection of one signed-on user: cookie redemption, the OSERVICE set-up exchange,
//! then LOCATE, BUDDY, ICBM, PD and FEEDBAG traffic turned into canonical events and back.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use entente_model::{
    Address, ChatState, ErrorCode, Event, Message, Presence, PresenceKind, Receipt, Show,
    Subscription, SubscriptionKind, Typing, DEFAULT_MAX_BODY_BYTES,
};
use time::OffsetDateTime;

use crate::family::feedbag::{self, FeedbagItem};
use crate::family::{buddy, icbm, locate, oservice, pd};
use crate::family::{BUDDY, FEEDBAG, ICBM, LOCATE, OSERVICE, PD};
use crate::html::{html_to_text, text_to_html};
use crate::login::CloseReason;
use crate::names::{address_to_screen_name, screen_name_to_address};
use crate::rate::{RateClass, RateLimiter, RateVerdict};
use crate::snac::SnacBody;
use crate::userinfo::status;
use crate::{
    Channel, FlapReader, FlapWriter, SignOnFrame, Snac, SnacError, SnacErrorCode, UserInfo,
};

/// The families this host serves on a BOS connection (announced in 01,03) with their versions.
pub const SERVED: [(u16, u16); 6] = [
    (OSERVICE, 4),
    (LOCATE, 1),
    (BUDDY, 1),
    (ICBM, 1),
    (PD, 1),
    (FEEDBAG, 4),
];

/// Settings of the BOS machine.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The hub's domain: plain screen names are `name@hub_domain`.
    pub hub_domain: String,
    /// Largest inbound FLAP payload (8 KiB).
    pub max_payload: usize,
    pub rate_classes: Vec<RateClass>,
    /// Time allowed from connecting to 01,02 client ready.
    pub signon_timeout: Duration,
    /// Time without any frame (clients send keepalives) before the connection is closed.
    pub idle_timeout: Duration,
    pub max_feedbag_items: usize,
    /// Largest attribute block of one feedbag item, in bytes.
    pub max_item_attrs: usize,
    pub max_profile_len: u16,
    /// Events delivered before the client is ready are held, at most this many.
    pub max_pending_deliveries: usize,
    /// Most distinct contacts whose presence is remembered (for arrivals and user info).
    pub max_presence_cache: usize,
    /// Emit a [`Receipt`] when a message was handed to the client's connection.
    pub delivery_receipts: bool,
}

impl SessionConfig {
    pub fn new(hub_domain: &str) -> SessionConfig {
        SessionConfig {
            hub_domain: hub_domain.trim_end_matches('.').to_lowercase(),
            max_payload: crate::flap::DEFAULT_MAX_INBOUND_PAYLOAD,
            rate_classes: RateClass::defaults(),
            signon_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(300),
            max_feedbag_items: 1000,
            max_item_attrs: 2048,
            max_profile_len: 4096,
            max_pending_deliveries: 256,
            max_presence_cache: 4096,
            delivery_receipts: true,
        }
    }
}

/// What the driver found for a redeemed cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub address: Address,
    /// The screen name as the user formatted it.
    pub display_name: String,
    /// The stored feedbag (buddy list, permit/deny, PD mode).
    pub feedbag: Vec<FeedbagItem>,
    /// When the feedbag last changed (seconds since the epoch).
    pub feedbag_modified: u32,
}

/// An edit of the stored feedbag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedbagOp {
    Insert,
    Update,
    Delete,
}

/// Requests to the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionRequest {
    /// Look the cookie up (and forget it); answer with [`Session::answer_cookie`].
    RedeemCookie { cookie: Bytes },
    /// Persist these (already applied and acknowledged) feedbag edits. No answer.
    StoreFeedbag {
        op: FeedbagOp,
        items: Vec<FeedbagItem>,
    },
    /// Persist the user's profile (plain text). No answer.
    StoreProfile { profile: String },
    /// Look up another user's profile; answer with [`Session::answer_user_info`].
    UserInfo { id: u64, who: Address },
}

/// The driver's answer to [`SessionRequest::UserInfo`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserDetails {
    pub profile: Option<String>,
    pub away: Option<String>,
}

/// Outputs of the BOS machine, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOutput {
    /// A canonical event from this user, for the router.
    Event(Event),
    Request(SessionRequest),
    /// The client sent 01,02: it is signed on.
    SignedOn {
        address: Address,
    },
    /// Flush `poll_transmit` and close the socket.
    Closed(CloseReason),
}

/// The outcome of handing the session an event addressed to its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Written to the client (or held until it is ready).
    Delivered,
    /// Not delivered; the router reports `ErrorCode` to the sender or queues the message.
    Refused(ErrorCode),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitCookie,
    Redeeming,
    Negotiating,
    SignedOn,
    Closed,
}

#[derive(Debug, Clone)]
struct PendingQuery {
    request_id: u32,
    screen_name: String,
    who: Address,
    want_profile: bool,
    want_away: bool,
}

/// The BOS connection. See the crate docs for the call order.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    start: Instant,
    wall: OffsetDateTime,
    reader: FlapReader,
    writer: FlapWriter,
    transmit: VecDeque<Bytes>,
    outputs: VecDeque<SessionOutput>,
    phase: Phase,
    account: Option<Account>,
    feedbag_modified: u32,
    rates: RateLimiter,
    status: u32,
    away: Option<String>,
    idle_seconds: u32,
    signon_unix: u32,
    presence: HashMap<Address, (Show, Option<String>)>,
    last_input: Instant,
    next_cookie: u64,
    next_rid: u32,
    sent: VecDeque<(String, u32)>,
    queries: HashMap<u64, PendingQuery>,
    next_query: u64,
    held: VecDeque<Event>,
}

const MAX_SENT_IDS: usize = 256;
/// Largest SNAC body this host sends in one frame (clients allocate by the FLAP length).
pub const MAX_OUTBOUND_SNAC: usize = 8000;
const MAX_QUERIES: usize = 32;

impl Session {
    /// A new BOS connection at `now`; `wall` is the wall-clock time at `now` (timestamps of
    /// events are derived from it, so the machine never reads a clock).
    pub fn new(cfg: SessionConfig, now: Instant, wall: OffsetDateTime) -> Session {
        let mut writer = FlapWriter::new((wall.unix_timestamp() as u16) & 0x7FFF);
        let hello = writer.frame(Channel::SignOn, Bytes::from_static(&[0, 0, 0, 1]));
        Session {
            reader: FlapReader::new(cfg.max_payload),
            rates: RateLimiter::new(&cfg.rate_classes),
            cfg,
            start: now,
            wall,
            writer,
            transmit: VecDeque::from([hello]),
            outputs: VecDeque::new(),
            phase: Phase::AwaitCookie,
            account: None,
            feedbag_modified: 0,
            status: status::ONLINE,
            away: None,
            idle_seconds: 0,
            signon_unix: 0,
            presence: HashMap::new(),
            last_input: now,
            next_cookie: 1,
            next_rid: 1,
            sent: VecDeque::new(),
            queries: HashMap::new(),
            next_query: 1,
            held: VecDeque::new(),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    pub fn is_signed_on(&self) -> bool {
        self.phase == Phase::SignedOn
    }

    /// The signed-on user's address, once the cookie was redeemed.
    pub fn address(&self) -> Option<&Address> {
        self.account.as_ref().map(|a| &a.address)
    }

    /// The feedbag as the client has edited it.
    pub fn feedbag(&self) -> &[FeedbagItem] {
        self.account
            .as_ref()
            .map(|a| a.feedbag.as_slice())
            .unwrap_or(&[])
    }

    /// Sequence-number gaps seen from the client.
    pub fn seq_gaps(&self) -> u64 {
        self.reader.seq_gaps()
    }

    // ---- driver interface ----------------------------------------------------------------

    /// Feeds received bytes.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        if self.is_closed() {
            return;
        }
        self.last_input = now;
        self.reader.push(bytes);
        loop {
            if self.is_closed() {
                return;
            }
            match self.reader.next_frame() {
                Ok(Some(f)) => self.on_frame(f.channel, &f.payload, now),
                Ok(None) => return,
                Err(e) => return self.close_with_signoff(CloseReason::Protocol(e)),
            }
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmit.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<SessionOutput> {
        self.outputs.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_closed() {
            return None;
        }
        let idle = self.last_input + self.cfg.idle_timeout;
        Some(if self.is_signed_on() {
            idle
        } else {
            idle.min(self.start + self.cfg.signon_timeout)
        })
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(t) = self.poll_timeout() {
            if now >= t {
                self.close_with_signoff(CloseReason::Timeout);
            }
        }
    }

    /// Ends the session from the host side: a channel-4 frame tells the client why, then an
    /// unavailable presence broadcast (if it was signed on) and `Closed(Local(reason))`.
    pub fn sign_off(&mut self, reason: crate::login::SignOffReason, _now: Instant) {
        if self.is_closed() {
            return;
        }
        let code: u16 = match reason {
            crate::login::SignOffReason::SignedOnElsewhere => 0x0001,
            crate::login::SignOffReason::Shutdown => 0x0000,
        };
        let mut payload = bytes::BytesMut::new();
        crate::Tlv::u16(0x0009, code).encode(&mut payload);
        let f = self.writer.frame(Channel::SignOff, payload.freeze());
        self.transmit.push_back(f);
        self.close(CloseReason::Local(reason));
    }

    /// Answers [`SessionRequest::RedeemCookie`]: the account, or `None` for a bad cookie.
    pub fn answer_cookie(&mut self, account: Option<Account>, now: Instant) {
        if self.phase != Phase::Redeeming {
            return;
        }
        let Some(account) = account else {
            return self.close_with_signoff(CloseReason::BadCookie);
        };
        self.feedbag_modified = account.feedbag_modified;
        self.account = Some(account);
        self.signon_unix = self.unix(now);
        self.phase = Phase::Negotiating;
        let online = oservice::HostOnline {
            families: SERVED.iter().map(|(f, _)| *f).collect(),
        };
        let rid = self.server_rid();
        self.send(&online.to_snac(rid));
    }

    /// Answers [`SessionRequest::UserInfo`]; `None` when the user is unknown.
    pub fn answer_user_info(&mut self, id: u64, details: Option<UserDetails>, _now: Instant) {
        let Some(q) = self.queries.remove(&id) else {
            return;
        };
        if self.is_closed() {
            return;
        }
        let Some(mut details) = details else {
            return self.snac_error(LOCATE, q.request_id, SnacErrorCode::RecipientNotLoggedIn);
        };
        let max = self.cfg.max_profile_len as usize;
        for text in [&mut details.profile, &mut details.away]
            .into_iter()
            .flatten()
        {
            let clamped = crate::wire::clamp_str(text, max).to_string();
            *text = clamped;
        }
        let cached = self.presence.get(&q.who).cloned();
        let away_text = details.away.or_else(|| {
            cached
                .as_ref()
                .and_then(|(show, s)| (*show != Show::Available).then(|| s.clone()).flatten())
        });
        let info = match &cached {
            Some((show, _)) => UserInfo::online(
                &q.screen_name,
                *show != Show::Available,
                status_of(*show),
                0,
                0,
            ),
            None => UserInfo::name_only(&q.screen_name),
        };
        const MIME: &str = "text/aolrtf; charset=\"us-ascii\"";
        let mut fields = locate::InfoFields::default();
        if q.want_profile {
            fields.profile_mime = Some(MIME.into());
            fields.profile = Some(text_to_html(details.profile.as_deref().unwrap_or("")).into());
        }
        if q.want_away {
            if let Some(a) = away_text {
                let a = crate::wire::clamp_str(&a, max);
                fields.away_mime = Some(MIME.into());
                fields.away = Some(text_to_html(a).into());
            }
        }
        self.send(&locate::UserInfoReply { info, fields }.to_snac(q.request_id));
    }

    /// Delivers a canonical event addressed to this user (or a presence broadcast it receives).
    pub fn handle_event(&mut self, event: Event, _now: Instant) -> Delivery {
        match self.phase {
            Phase::Closed => return Delivery::Refused(ErrorCode::RecipientUnavailable),
            Phase::SignedOn => {}
            _ => {
                if self.held.len() >= self.cfg.max_pending_deliveries {
                    return Delivery::Refused(ErrorCode::RecipientUnavailable);
                }
                self.held.push_back(event);
                return Delivery::Delivered;
            }
        }
        let Some(me) = self.address().cloned() else {
            return Delivery::Refused(ErrorCode::RecipientUnavailable);
        };
        if let Some(to) = event.to() {
            if *to != me {
                return Delivery::Refused(ErrorCode::ItemNotFound);
            }
        }
        let from = event.from().clone();
        if from == me {
            return Delivery::Delivered;
        }
        let blocked = self.is_blocked(&from);
        let name = address_to_screen_name(&from, &self.cfg.hub_domain);
        match event {
            Event::Message(m) => {
                if blocked {
                    return Delivery::Refused(ErrorCode::RecipientUnavailable);
                }
                let cookie = self.next_cookie.to_be_bytes();
                self.next_cookie = self.next_cookie.wrapping_add(1);
                let sender = self.sender_info(&from, &name);
                let msg = icbm::ChannelMsgToClient::text(cookie, sender, &text_to_html(&m.body));
                let rid = self.server_rid();
                let snac = msg.to_snac(rid);
                if snac.body.len() > MAX_OUTBOUND_SNAC {
                    return Delivery::Refused(ErrorCode::TooLarge);
                }
                self.send(&snac);
                if self.cfg.delivery_receipts {
                    self.emit(Event::Receipt(Receipt {
                        from: me,
                        to: m.from,
                        id: m.id,
                    }));
                }
            }
            Event::Typing(t) => {
                if !blocked {
                    let event = match t.state {
                        ChatState::Composing => icbm::typing::BEGUN,
                        ChatState::Paused => icbm::typing::PAUSED,
                        _ => icbm::typing::FINISHED,
                    };
                    let ev = icbm::ClientEvent {
                        cookie: [0; 8],
                        channel: 1,
                        screen_name: name,
                        event,
                    };
                    let rid = self.server_rid();
                    self.send(&ev.to_snac(rid));
                }
            }
            Event::Presence(p) => match p.kind {
                PresenceKind::Available { show, status } => {
                    self.remember(&from, show, status.clone());
                    if !blocked {
                        let away = show != Show::Available;
                        let info = UserInfo::online(&name, away, status_of(show), 0, 0);
                        let rid = self.server_rid();
                        self.send(&buddy::Arrived { users: vec![info] }.to_snac(rid));
                    }
                }
                PresenceKind::Unavailable { .. } => {
                    self.presence.remove(&from);
                    let rid = self.server_rid();
                    let gone = buddy::Departed {
                        users: vec![UserInfo::name_only(&name)],
                    };
                    self.send(&gone.to_snac(rid));
                }
                PresenceKind::Probe => {
                    if !blocked {
                        if let Some(p) = self.own_presence(Some(from)) {
                            self.emit(Event::Presence(p));
                        }
                    }
                }
            },
            Event::Subscription(s) => {
                if blocked {
                    return Delivery::Delivered;
                }
                let rid = self.server_rid();
                match s.kind {
                    SubscriptionKind::Subscribe => {
                        let req = feedbag::AuthRequestToClient(feedbag::AuthRequest {
                            screen_name: name,
                            reason: String::new(),
                        });
                        self.send(&req.to_snac(rid));
                    }
                    SubscriptionKind::Subscribed | SubscriptionKind::Unsubscribed => {
                        let reply = feedbag::AuthReplyToClient(feedbag::AuthReply {
                            screen_name: name,
                            accepted: s.kind == SubscriptionKind::Subscribed,
                            reason: String::new(),
                        });
                        self.send(&reply.to_snac(rid));
                    }
                    SubscriptionKind::Unsubscribe => {}
                }
            }
            // OSCAR has no per-message receipts beyond the host ack given on acceptance.
            Event::Receipt(_) => {}
            Event::Failure(f) => {
                let rid = self
                    .sent
                    .iter()
                    .find(|(id, _)| *id == f.id)
                    .map(|(_, rid)| *rid)
                    .unwrap_or(0);
                self.snac_error(ICBM, rid, SnacErrorCode::from(f.code));
            }
        }
        Delivery::Delivered
    }

    // ---- frames -------------------------------------------------------------------------

    fn on_frame(&mut self, channel: Channel, payload: &[u8], now: Instant) {
        match (channel, self.phase) {
            (Channel::KeepAlive, _) | (Channel::Error, _) => {}
            (Channel::SignOff, _) => self.close(CloseReason::PeerSignedOff),
            (Channel::SignOn, Phase::AwaitCookie) => {
                let frame = match SignOnFrame::decode(payload) {
                    Ok(f) => f,
                    Err(e) => return self.close_with_signoff(CloseReason::Protocol(e)),
                };
                match frame.tlvs.get_bytes(crate::family::bucp::tlv::COOKIE) {
                    Some(c) if !c.is_empty() => {
                        self.phase = Phase::Redeeming;
                        let cookie = c.clone();
                        self.request(SessionRequest::RedeemCookie { cookie });
                    }
                    _ => self.close_with_signoff(CloseReason::BadCookie),
                }
            }
            (Channel::Snac, Phase::Negotiating | Phase::SignedOn) => match Snac::decode(payload) {
                Ok(snac) => self.on_snac(snac, now),
                Err(e) => self.close_with_signoff(CloseReason::Protocol(e)),
            },
            _ => self.close_with_signoff(CloseReason::Unexpected("frame out of order")),
        }
    }

    fn on_snac(&mut self, snac: Snac, now: Instant) {
        let (family, subtype) = snac.kind();
        match self.rates.check(family, subtype, now) {
            RateVerdict::Pass(change) => {
                if let Some(c) = change {
                    let rid = self.server_rid();
                    self.send(&c.to_snac(rid));
                }
            }
            RateVerdict::Drop(change) => {
                if let Some(c) = change {
                    let rid = self.server_rid();
                    self.send(&c.to_snac(rid));
                }
                // The dropped request is answered, so a client that ignores 01,0A still learns
                // that its IM (or other request) was not taken.
                self.snac_error(family, snac.header.request_id, SnacErrorCode::RateToHost);
                return;
            }
            RateVerdict::Disconnect => return self.close_with_signoff(CloseReason::RateLimited),
        }
        let rid = snac.header.request_id;
        let result = match family {
            OSERVICE => self.on_oservice(&snac, now),
            LOCATE => self.on_locate(&snac),
            BUDDY => self.on_buddy(&snac),
            ICBM => self.on_icbm(&snac, now),
            PD => self.on_pd(&snac),
            FEEDBAG => self.on_feedbag(&snac, now),
            _ => Err(SnacErrorCode::ServiceNotDefined),
        };
        if let Err(code) = result {
            self.snac_error(family, rid, code);
        }
    }

    fn on_oservice(&mut self, snac: &Snac, now: Instant) -> Result<(), SnacErrorCode> {
        let rid = snac.header.request_id;
        match snac.header.subtype {
            0x01 | 0x08 => {}
            0x02 => {
                decode::<oservice::ClientReady>(snac)?;
                if self.phase == Phase::Negotiating {
                    self.phase = Phase::SignedOn;
                    if let Some(a) = self.address().cloned() {
                        self.outputs
                            .push_back(SessionOutput::SignedOn { address: a });
                    }
                    if let Some(p) = self.own_presence(None) {
                        self.emit(Event::Presence(p));
                    }
                    while let Some(ev) = self.held.pop_front() {
                        self.handle_event(ev, now);
                    }
                }
            }
            // Other services (chat, icons, directory) are not offered.
            0x04 => {
                decode::<oservice::ServiceRequest>(snac)?;
                return Err(SnacErrorCode::ServiceUnavailable);
            }
            0x06 => {
                let (classes, members) = self.rates.announce();
                self.send(&oservice::RateParamsReply { classes, members }.to_snac(rid));
            }
            0x0E => {
                let info = self.self_info(now);
                self.send(&oservice::SelfInfo { info }.to_snac(rid));
            }
            0x11 => {
                self.idle_seconds = decode::<oservice::IdleNotification>(snac)?.idle_seconds;
            }
            0x17 => {
                let asked = decode::<oservice::ClientVersions>(snac)?;
                let versions = SERVED
                    .iter()
                    .filter(|(f, _)| asked.0.versions.iter().any(|(a, _)| a == f))
                    .copied()
                    .collect();
                let reply = oservice::HostVersions(oservice::Versions { versions });
                self.send(&reply.to_snac(rid));
            }
            0x1E => {
                let set = decode::<oservice::SetUserInfoFields>(snac)?;
                if let Some(s) = set.tlvs.get_u32(oservice::set_tlv::STATUS) {
                    self.set_status(s & 0xFFFF, self.away.clone());
                }
            }
            _ => return Err(SnacErrorCode::NotSupportedByHost),
        }
        Ok(())
    }

    fn on_locate(&mut self, snac: &Snac) -> Result<(), SnacErrorCode> {
        let rid = snac.header.request_id;
        match snac.header.subtype {
            0x01 => {}
            0x02 => {
                decode::<locate::RightsQuery>(snac)?;
                let rights = locate::Rights {
                    max_profile_len: self.cfg.max_profile_len,
                    max_capabilities: 32,
                };
                self.send(&rights.to_snac(rid));
            }
            0x04 => {
                let set = decode::<locate::SetInfo>(snac)?.0;
                if let Some(p) = set.profile {
                    let text = html_to_text(&String::from_utf8_lossy(&p));
                    let text = crate::wire::clamp_str(&text, self.cfg.max_profile_len as usize);
                    self.request(SessionRequest::StoreProfile {
                        profile: text.to_string(),
                    });
                }
                if let Some(a) = set.away {
                    let text = html_to_text(&String::from_utf8_lossy(&a));
                    let text = crate::wire::clamp_str(&text, self.cfg.max_profile_len as usize);
                    let away = (!text.is_empty()).then(|| text.to_string());
                    self.set_status(self.status, away);
                }
            }
            0x05 => {
                let q = decode::<locate::UserInfoQuery>(snac)?;
                let (p, a) = match q.kind {
                    locate::query_kind::AWAY => (false, true),
                    _ => (true, false),
                };
                self.query_user(rid, q.screen_name, p, a)?;
            }
            0x15 => {
                let q = decode::<locate::UserInfoQuery2>(snac)?;
                let p = q.flags & locate::query_flags::PROFILE != 0;
                let a = q.flags & locate::query_flags::AWAY != 0;
                self.query_user(rid, q.screen_name, p, a)?;
            }
            _ => return Err(SnacErrorCode::NotSupportedByHost),
        }
        Ok(())
    }

    fn query_user(
        &mut self,
        rid: u32,
        screen_name: String,
        p: bool,
        a: bool,
    ) -> Result<(), SnacErrorCode> {
        let who = screen_name_to_address(&screen_name, &self.cfg.hub_domain)
            .map_err(|_| SnacErrorCode::RecipientNotLoggedIn)?;
        if self.queries.len() >= MAX_QUERIES {
            return Err(SnacErrorCode::QueueFull);
        }
        let id = self.next_query;
        self.next_query += 1;
        self.queries.insert(
            id,
            PendingQuery {
                request_id: rid,
                screen_name,
                who: who.clone(),
                want_profile: p,
                want_away: a,
            },
        );
        self.request(SessionRequest::UserInfo { id, who });
        Ok(())
    }

    fn on_buddy(&mut self, snac: &Snac) -> Result<(), SnacErrorCode> {
        let rid = snac.header.request_id;
        match snac.header.subtype {
            0x01 => {}
            0x02 => {
                decode::<buddy::RightsQuery>(snac)?;
                let max = self.cfg.max_feedbag_items.min(u16::MAX as usize) as u16;
                let rights = buddy::Rights {
                    max_buddies: max,
                    max_watchers: max.saturating_mul(2),
                    max_temp_buddies: 160,
                };
                self.send(&rights.to_snac(rid));
            }
            // 03,04 / 03,05: the buddy list of clients without a feedbag; probe who is listed.
            0x04 => {
                let mut r = crate::wire::Reader::new(&snac.body);
                let mut n = 0;
                while !r.is_empty() && n < self.cfg.max_feedbag_items {
                    let name = r
                        .str8("buddy name")
                        .map_err(|_| SnacErrorCode::BadSnacFormat)?;
                    n += 1;
                    if let (Ok(to), Some(me)) = (
                        screen_name_to_address(&name, &self.cfg.hub_domain),
                        self.address().cloned(),
                    ) {
                        self.emit(Event::Presence(Presence {
                            from: me,
                            to: Some(to),
                            kind: PresenceKind::Probe,
                        }));
                    }
                }
            }
            0x05 => {}
            _ => return Err(SnacErrorCode::NotSupportedByHost),
        }
        Ok(())
    }

    fn on_pd(&mut self, snac: &Snac) -> Result<(), SnacErrorCode> {
        let rid = snac.header.request_id;
        match snac.header.subtype {
            0x01 => {}
            0x02 => {
                decode::<pd::RightsQuery>(snac)?;
                let max = self.cfg.max_feedbag_items.min(u16::MAX as usize) as u16;
                let rights = pd::Rights {
                    max_permits: max,
                    max_denies: max,
                };
                self.send(&rights.to_snac(rid));
            }
            _ => return Err(SnacErrorCode::NotSupportedByHost),
        }
        Ok(())
    }

    fn on_icbm(&mut self, snac: &Snac, now: Instant) -> Result<(), SnacErrorCode> {
        let rid = snac.header.request_id;
        match snac.header.subtype {
            0x01 => {}
            0x02 => {
                decode::<icbm::SetParams>(snac)?;
            }
            0x04 => {
                decode::<icbm::ParamsQuery>(snac)?;
                let params = icbm::IcbmParams {
                    channel: 0,
                    flags: 0x0000_000B,
                    max_message_len: 8000,
                    max_sender_warning: 999,
                    max_receiver_warning: 999,
                    min_interval_ms: 0,
                };
                self.send(&icbm::Params(params).to_snac(rid));
            }
            0x06 => {
                let m = decode::<icbm::ChannelMsgToHost>(snac)?;
                self.on_im(m, rid, now)?;
            }
            0x10 => {
                decode::<icbm::OfflineRetrieve>(snac)?;
                self.send(&icbm::OfflineDone.to_snac(rid));
            }
            0x14 => {
                let e = decode::<icbm::ClientEvent>(snac)?;
                let state = match e.event {
                    icbm::typing::BEGUN => ChatState::Composing,
                    icbm::typing::PAUSED => ChatState::Paused,
                    icbm::typing::FINISHED => ChatState::Active,
                    _ => return Ok(()),
                };
                let (Ok(to), Some(me)) = (
                    screen_name_to_address(&e.screen_name, &self.cfg.hub_domain),
                    self.address().cloned(),
                ) else {
                    return Ok(());
                };
                self.emit(Event::Typing(Typing {
                    from: me,
                    to,
                    state,
                }));
            }
            _ => return Err(SnacErrorCode::NotSupportedByHost),
        }
        Ok(())
    }

    fn on_im(
        &mut self,
        m: icbm::ChannelMsgToHost,
        rid: u32,
        now: Instant,
    ) -> Result<(), SnacErrorCode> {
        if m.channel != 1 {
            return Err(SnacErrorCode::NotSupportedByHost);
        }
        let to = screen_name_to_address(&m.screen_name, &self.cfg.hub_domain)
            .map_err(|_| SnacErrorCode::RecipientNotLoggedIn)?;
        if self.is_blocked(&to) {
            return Err(SnacErrorCode::InLocalPermitDeny);
        }
        let message = m.message().map_err(|e| SnacErrorCode::from(&e))?;
        let html = message.text().map_err(|e| SnacErrorCode::from(&e))?;
        let body = html_to_text(&html);
        if body.len() > DEFAULT_MAX_BODY_BYTES {
            return Err(SnacErrorCode::ReplyTooBig);
        }
        let Some(me) = self.address().cloned() else {
            return Err(SnacErrorCode::ServiceUnavailable);
        };
        let id: String = m.cookie.iter().map(|b| format!("{b:02x}")).collect();
        if self.sent.len() >= MAX_SENT_IDS {
            self.sent.pop_front();
        }
        self.sent.push_back((id.clone(), rid));
        if m.wants_host_ack() {
            let ack = icbm::HostAck {
                cookie: m.cookie,
                channel: m.channel,
                screen_name: m.screen_name.clone(),
            };
            self.send(&ack.to_snac(rid));
        }
        if !body.is_empty() {
            self.emit(Event::Message(Message {
                id,
                from: me,
                to,
                body,
                thread: None,
                ts: self.wall_at(now),
            }));
        }
        Ok(())
    }

    fn on_feedbag(&mut self, snac: &Snac, now: Instant) -> Result<(), SnacErrorCode> {
        let rid = snac.header.request_id;
        match snac.header.subtype {
            0x01 | 0x11 | 0x12 => {}
            0x02 => {
                decode::<feedbag::RightsQuery>(snac)?;
                let max = self.cfg.max_feedbag_items.min(u16::MAX as usize) as u16;
                let mut by_class = vec![max; 0x15];
                by_class[feedbag::class::PD_INFO as usize] = 1;
                let rights = feedbag::Rights {
                    max_items_by_class: by_class,
                    max_attr_len: self.cfg.max_item_attrs.min(u16::MAX as usize) as u16,
                };
                self.send(&rights.to_snac(rid));
            }
            0x04 => {
                decode::<feedbag::Query>(snac)?;
                self.send_feedbag(rid);
            }
            0x05 => {
                let q = decode::<feedbag::QueryIfModified>(snac)?;
                let count = self.feedbag().len();
                if q.last_modified == self.feedbag_modified && q.item_count as usize == count {
                    let reply = feedbag::ReplyNotModified {
                        last_modified: self.feedbag_modified,
                        item_count: count as u16,
                    };
                    self.send(&reply.to_snac(rid));
                } else {
                    self.send_feedbag(rid);
                }
            }
            0x07 => {
                decode::<feedbag::Use>(snac)?;
                self.probe_buddies();
            }
            0x08 => {
                let items = decode::<feedbag::InsertItems>(snac)?.items;
                self.edit_feedbag(FeedbagOp::Insert, items, rid, now);
            }
            0x09 => {
                let items = decode::<feedbag::UpdateItems>(snac)?.items;
                self.edit_feedbag(FeedbagOp::Update, items, rid, now);
            }
            0x0A => {
                let items = decode::<feedbag::DeleteItems>(snac)?.items;
                self.edit_feedbag(FeedbagOp::Delete, items, rid, now);
            }
            0x18 => {
                let req = decode::<feedbag::AuthRequestToHost>(snac)?.0;
                let to = screen_name_to_address(&req.screen_name, &self.cfg.hub_domain)
                    .map_err(|_| SnacErrorCode::RecipientNotLoggedIn)?;
                self.subscription(to, SubscriptionKind::Subscribe);
            }
            0x1A => {
                let rep = decode::<feedbag::AuthReplyToHost>(snac)?.0;
                let to = screen_name_to_address(&rep.screen_name, &self.cfg.hub_domain)
                    .map_err(|_| SnacErrorCode::RecipientNotLoggedIn)?;
                let kind = if rep.accepted {
                    SubscriptionKind::Subscribed
                } else {
                    SubscriptionKind::Unsubscribed
                };
                self.subscription(to, kind);
            }
            _ => return Err(SnacErrorCode::NotSupportedByHost),
        }
        Ok(())
    }

    /// Sends the feedbag as 13,06, split over several SNACs (flag 0x0001 on all but the last)
    /// so that no frame exceeds [`MAX_OUTBOUND_SNAC`].
    fn send_feedbag(&mut self, rid: u32) {
        let items = self.feedbag().to_vec();
        let mut parts: Vec<Vec<FeedbagItem>> = vec![Vec::new()];
        let mut size = 0;
        for item in items {
            let len = 10 + item.name.len() + item.attrs.encoded_len();
            if size + len > MAX_OUTBOUND_SNAC - 32 && parts.last().is_some_and(|p| !p.is_empty()) {
                parts.push(Vec::new());
                size = 0;
            }
            size += len;
            if let Some(p) = parts.last_mut() {
                p.push(item);
            }
        }
        let n = parts.len();
        for (i, items) in parts.into_iter().enumerate() {
            let reply = feedbag::Reply {
                version: 0,
                items,
                last_modified: self.feedbag_modified,
            };
            let mut snac = reply.to_snac(rid);
            if i + 1 < n {
                snac.header.flags |= crate::snac::FLAG_MORE_REPLIES;
            }
            self.send(&snac);
        }
    }

    fn edit_feedbag(&mut self, op: FeedbagOp, items: Vec<FeedbagItem>, rid: u32, now: Instant) {
        let hub = self.cfg.hub_domain.clone();
        let max_items = self.cfg.max_feedbag_items;
        let max_attrs = self.cfg.max_item_attrs;
        let mut codes = Vec::with_capacity(items.len());
        let mut applied = Vec::new();
        let mut subs = Vec::new();
        let Some(account) = self.account.as_mut() else {
            return;
        };
        let bag = &mut account.feedbag;
        for item in items {
            let pos = bag
                .iter()
                .position(|i| i.group_id == item.group_id && i.item_id == item.item_id);
            let is_buddy = item.class == feedbag::class::BUDDY;
            let addr = screen_name_to_address(&item.name, &hub).ok();
            let code = match op {
                FeedbagOp::Insert if pos.is_some() => feedbag::status::ALREADY_EXISTS,
                FeedbagOp::Insert if bag.len() >= max_items => feedbag::status::LIMIT,
                FeedbagOp::Update | FeedbagOp::Delete if pos.is_none() => {
                    feedbag::status::NOT_FOUND
                }
                FeedbagOp::Insert | FeedbagOp::Update
                    if item.attrs.encoded_len() > max_attrs
                        || (matches!(
                            item.class,
                            feedbag::class::BUDDY | feedbag::class::PERMIT | feedbag::class::DENY
                        ) && addr.is_none()) =>
                {
                    feedbag::status::INVALID
                }
                FeedbagOp::Insert => {
                    let listed = is_buddy && bag.iter().any(|i| same_buddy(i, &addr, &hub));
                    if is_buddy && !listed {
                        subs.extend(addr.clone().map(|a| (a, SubscriptionKind::Subscribe)));
                    }
                    bag.push(item.clone());
                    applied.push(item);
                    feedbag::status::OK
                }
                FeedbagOp::Update => {
                    if let Some(slot) = pos.and_then(|p| bag.get_mut(p)) {
                        *slot = item.clone();
                    }
                    applied.push(item);
                    feedbag::status::OK
                }
                FeedbagOp::Delete => {
                    if let Some(p) = pos {
                        let removed = bag.remove(p);
                        let raddr = screen_name_to_address(&removed.name, &hub).ok();
                        if removed.class == feedbag::class::BUDDY
                            && !bag.iter().any(|i| same_buddy(i, &raddr, &hub))
                        {
                            subs.extend(raddr.map(|a| (a, SubscriptionKind::Unsubscribe)));
                        }
                    }
                    applied.push(item);
                    feedbag::status::OK
                }
            };
            codes.push(code);
        }
        self.send(&feedbag::Status { codes }.to_snac(rid));
        if !applied.is_empty() {
            self.feedbag_modified = self.unix(now);
            if let Some(a) = self.account.as_mut() {
                a.feedbag_modified = self.feedbag_modified;
            }
            self.request(SessionRequest::StoreFeedbag { op, items: applied });
        }
        for (to, kind) in subs {
            self.subscription(to, kind);
        }
    }

    fn probe_buddies(&mut self) {
        let Some(me) = self.address().cloned() else {
            return;
        };
        let mut seen: Vec<Address> = Vec::new();
        for item in self.feedbag() {
            if item.class != feedbag::class::BUDDY {
                continue;
            }
            if let Ok(a) = screen_name_to_address(&item.name, &self.cfg.hub_domain) {
                if !seen.contains(&a) {
                    seen.push(a);
                }
            }
        }
        for to in seen {
            self.emit(Event::Presence(Presence {
                from: me.clone(),
                to: Some(to),
                kind: PresenceKind::Probe,
            }));
        }
    }

    fn subscription(&mut self, to: Address, kind: SubscriptionKind) {
        if let Some(me) = self.address().cloned() {
            self.emit(Event::Subscription(Subscription { from: me, to, kind }));
        }
    }

    // ---- presence and permit/deny ---------------------------------------------------------

    fn set_status(&mut self, status: u32, away: Option<String>) {
        let before = self.own_presence(None);
        self.status = status;
        self.away = away;
        let after = self.own_presence(None);
        if let (true, Some(p)) = (self.is_signed_on() && before != after, after) {
            self.emit(Event::Presence(p));
        }
    }

    fn own_presence(&self, to: Option<Address>) -> Option<Presence> {
        let from = self.address().cloned()?;
        let kind = if self.status & status::INVISIBLE != 0 {
            PresenceKind::Unavailable { status: None }
        } else {
            let show = if self.away.is_some() {
                Show::Away
            } else if self.status & status::DND != 0 {
                Show::Dnd
            } else if self.status & status::NA != 0 {
                Show::ExtendedAway
            } else if self.status & (status::AWAY | status::OCCUPIED) != 0 {
                Show::Away
            } else {
                Show::Available
            };
            PresenceKind::Available {
                show,
                status: self.away.clone(),
            }
        };
        Some(Presence { from, to, kind })
    }

    fn remember(&mut self, who: &Address, show: Show, status: Option<String>) {
        if self.presence.len() < self.cfg.max_presence_cache || self.presence.contains_key(who) {
            self.presence.insert(who.clone(), (show, status));
        }
    }

    fn sender_info(&self, from: &Address, name: &str) -> UserInfo {
        match self.presence.get(from) {
            Some((show, _)) => {
                UserInfo::online(name, *show != Show::Available, status_of(*show), 0, 0)
            }
            None => UserInfo::online(name, false, status::ONLINE, 0, 0),
        }
    }

    fn self_info(&self, now: Instant) -> UserInfo {
        let name = self
            .account
            .as_ref()
            .map(|a| a.display_name.clone())
            .unwrap_or_default();
        let idle_min = (self.idle_seconds / 60).min(u16::MAX as u32) as u16;
        let mut info = UserInfo::online(
            &name,
            self.away.is_some(),
            self.status,
            self.signon_unix,
            idle_min,
        );
        let online = self.unix(now).saturating_sub(self.signon_unix);
        info.tlvs.push(crate::Tlv::u32(
            crate::userinfo::tlv::ONLINE_SECONDS,
            online,
        ));
        info
    }

    /// Whether the permit/deny settings in the feedbag keep `who` away from this user.
    fn is_blocked(&self, who: &Address) -> bool {
        let hub = &self.cfg.hub_domain;
        let bag = self.feedbag();
        let on = |class: u16| {
            bag.iter().any(|i| {
                i.class == class && screen_name_to_address(&i.name, hub).ok().as_ref() == Some(who)
            })
        };
        let mode = bag
            .iter()
            .find(|i| i.class == feedbag::class::PD_INFO)
            .and_then(|i| i.attrs.get_bytes(feedbag::attr::PD_MODE))
            .and_then(|b| b.first().copied())
            .unwrap_or(pd::mode::PERMIT_ALL);
        match mode {
            pd::mode::DENY_ALL => true,
            pd::mode::PERMIT_SOME => !on(feedbag::class::PERMIT),
            pd::mode::DENY_SOME => on(feedbag::class::DENY),
            pd::mode::PERMIT_ON_LIST => !on(feedbag::class::BUDDY),
            _ => false,
        }
    }

    // ---- plumbing ----------------------------------------------------------------------------

    fn emit(&mut self, event: Event) {
        self.outputs.push_back(SessionOutput::Event(event));
    }

    fn request(&mut self, r: SessionRequest) {
        self.outputs.push_back(SessionOutput::Request(r));
    }

    fn send(&mut self, snac: &Snac) {
        let f = self.writer.frame(Channel::Snac, snac.to_bytes());
        self.transmit.push_back(f);
    }

    fn snac_error(&mut self, family: u16, rid: u32, code: SnacErrorCode) {
        self.send(&SnacError::new(code).to_snac(family, rid));
    }

    /// Request ids of host-initiated SNACs have the high bit set, apart from client ones.
    fn server_rid(&mut self) -> u32 {
        let rid = 0x8000_0000 | (self.next_rid & 0x7FFF_FFFF);
        self.next_rid = self.next_rid.wrapping_add(1);
        rid
    }

    fn close_with_signoff(&mut self, reason: CloseReason) {
        let f = self.writer.frame(Channel::SignOff, Bytes::new());
        self.transmit.push_back(f);
        self.close(reason);
    }

    fn close(&mut self, reason: CloseReason) {
        if self.is_closed() {
            return;
        }
        if self.is_signed_on() {
            if let Some(me) = self.address().cloned() {
                self.emit(Event::Presence(Presence {
                    from: me,
                    to: None,
                    kind: PresenceKind::Unavailable { status: None },
                }));
            }
        }
        self.phase = Phase::Closed;
        self.queries.clear();
        self.held.clear();
        self.outputs.push_back(SessionOutput::Closed(reason));
    }

    fn wall_at(&self, now: Instant) -> OffsetDateTime {
        let d = now.saturating_duration_since(self.start);
        self.wall + time::Duration::try_from(d).unwrap_or(time::Duration::ZERO)
    }

    fn unix(&self, now: Instant) -> u32 {
        self.wall_at(now).unix_timestamp().clamp(0, u32::MAX as i64) as u32
    }
}

fn same_buddy(item: &FeedbagItem, addr: &Option<Address>, hub: &str) -> bool {
    item.class == feedbag::class::BUDDY
        && addr.is_some()
        && screen_name_to_address(&item.name, hub).ok() == *addr
}

fn status_of(show: Show) -> u32 {
    match show {
        Show::Available => status::ONLINE,
        Show::Away => status::AWAY,
        Show::ExtendedAway => status::NA,
        Show::Dnd => status::DND,
    }
}

fn decode<T: SnacBody>(snac: &Snac) -> Result<T, SnacErrorCode> {
    snac.body_as::<T>().map_err(|e| SnacErrorCode::from(&e))
}
