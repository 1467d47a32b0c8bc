//! The router: every canonical event from every edge and hub session passes the policy pipeline,
//! then goes to a live hub session, the offline queue, or the edge that owns the destination
//! domain. It also keeps presence (fanned out to subscribers) and applies RFC 6121 subscription
//! semantics to the hub users' side of every subscription.

use async_trait::async_trait;
use entente_model::{
    Address, DomainKind, ErrorCode, Event, Failure, Message, Presence, PresenceKind, Show,
    Subscription, SubscriptionKind,
};
use entente_policy::{
    Boundary, Fingerprint, Inspector, Origin, Outbreak, OutbreakSettings, Policy, Refusal, Verdict,
};
use entente_store::{QueuedMessage, RosterItem, Store, StoreError};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::mpsc;

/// A federation edge: owns some domains and carries events to them.
#[async_trait]
pub trait Edge: Send + Sync + 'static {
    /// Short name for logs and metrics (`xmpp`, `sip`).
    fn name(&self) -> &'static str;
    /// How the local parts of the edge's domains normalise.
    fn kind(&self) -> DomainKind;
    /// Accepts an event for one of the edge's domains. `Ok` means the edge has taken
    /// responsibility for it; a later failure comes back through [`Router::submit`] as a
    /// [`Event::Failure`] addressed to the original sender.
    async fn deliver(&self, event: Event) -> Result<(), Refusal>;
    /// The state of the edge's links to partner domains, for the admin API.
    fn links(&self) -> Vec<LinkState> {
        Vec::new()
    }
}

/// One partner link (a stream or connection) as an edge sees it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LinkState {
    /// The partner domain at the other end.
    pub domain: String,
    /// `inbound` (the partner connected to us) or `outbound`.
    pub direction: &'static str,
    /// `xmpp`, `sip-udp`, `sip-tcp`, `sip-tls`.
    pub transport: &'static str,
    /// How the partner was authenticated: `certificate`, `dialback`, `address` or `none`.
    pub auth: &'static str,
    /// The remote socket address.
    pub peer: Option<String>,
    /// When the link was established, seconds since the epoch.
    pub since: Option<i64>,
    /// The last error seen on links to this domain, if any.
    pub last_error: Option<String>,
}

/// What the router hands to a hub session.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// A message committed to the recipient's queue: the session writes it, then calls
    /// [`Router::delivered`].
    Message(QueuedMessage),
    /// Anything else addressed to the user (presence, typing, subscription notices, failures).
    Event(Event),
    /// The user's roster changed; the session may send it again.
    RosterChanged,
    /// The user's block list changed.
    BlocklistChanged,
}

/// A hub session's presence as the user set it; `None` is invisible.
pub type SessionPresence = Option<(Show, Option<String>)>;

struct Slot {
    id: u64,
    tx: mpsc::Sender<Delivery>,
    /// Set when a message could not be queued to the session: it reads the store to catch up.
    lagged: Arc<AtomicBool>,
    presence: SessionPresence,
    /// When the presence was last set: the newest visible session speaks for the user.
    stamp: u64,
}

#[derive(Default)]
struct State {
    sessions: HashMap<Address, Vec<Slot>>,
    next: u64,
    /// Last presence seen from federated contacts.
    remote_presence: HashMap<Address, PresenceKind>,
}

impl State {
    fn presence_of(&self, user: &Address) -> PresenceKind {
        self.sessions
            .get(user)
            .and_then(|slots| {
                slots
                    .iter()
                    .filter_map(|s| s.presence.as_ref().map(|p| (s.stamp, p)))
                    .max_by_key(|(stamp, _)| *stamp)
                    .map(|(_, (show, status))| PresenceKind::Available {
                        show: *show,
                        status: status.clone(),
                    })
            })
            .unwrap_or(PresenceKind::Unavailable { status: None })
    }
}

/// A live hub session of one user, as the router knows it.
pub struct SessionHandle {
    pub id: u64,
    pub address: Address,
    pub rx: mpsc::Receiver<Delivery>,
    /// True when messages were committed for the user but not announced on `rx` (the session
    /// was behind): read the queue past the last message written. See [`SessionHandle::take_lag`].
    lagged: Arc<AtomicBool>,
}

impl SessionHandle {
    /// Whether the session fell behind since the last call; it then reads the queue itself.
    pub fn take_lag(&self) -> bool {
        self.lagged.swap(false, Ordering::AcqRel)
    }
}

/// How many deliveries may wait for a slow session before it is cut off (its messages stay queued).
const SESSION_BACKLOG: usize = 1024;

/// The rules in force when no rules file is configured.
pub const DEFAULT_RULES: &str = "reject executable\nreject eicar\n";

fn default_inspector() -> Inspector {
    Inspector::from_rules(DEFAULT_RULES).unwrap_or_else(|e| unreachable!("default rules: {e}"))
}

pub struct Router {
    /// Content rules, replaced whole on reload.
    inspector: RwLock<Arc<Inspector>>,
    /// Outbreak containment state; survives rule reloads.
    outbreak: Mutex<Outbreak>,
    audit_bodies: AtomicBool,
    hub_domain: String,
    store: Arc<dyn Store>,
    policy: Policy,
    edges: RwLock<HashMap<String, Arc<dyn Edge>>>,
    /// Where domains nobody owns go, in open federation (XMPP, which can find any server).
    default_edge: RwLock<Option<Arc<dyn Edge>>>,
    state: Mutex<State>,
    /// Hub users' block lists (owner → blocked addresses), mirrored from the store.
    blocks: RwLock<HashMap<Address, HashSet<Address>>>,
}

fn internal(e: StoreError) -> Refusal {
    tracing::error!(error = %e, "store failure");
    Refusal::new(
        ErrorCode::Internal,
        "the hub could not store this; try again",
    )
}

/// Milliseconds since the epoch, as the audit archive and the containment table keep time.
fn millis(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn now_millis() -> i64 {
    millis(time::OffsetDateTime::now_utc())
}

fn verdict_action(v: &Verdict) -> &'static str {
    match v {
        Verdict::Allow => "allow",
        Verdict::Tag(_) => "tag",
        Verdict::Quarantine(_) => "quarantine",
        Verdict::Reject(_) => "reject",
    }
}

fn origin_label(origin: &Origin) -> &'static str {
    match origin {
        Origin::Hub => "hub",
        Origin::Partner { .. } => "partner",
    }
}

impl Router {
    pub fn new(hub_domain: String, store: Arc<dyn Store>, policy: Policy) -> Router {
        Router {
            inspector: RwLock::new(Arc::new(default_inspector())),
            outbreak: Mutex::new(Outbreak::new(OutbreakSettings::default())),
            audit_bodies: AtomicBool::new(true),
            hub_domain,
            store,
            policy,
            edges: RwLock::new(HashMap::new()),
            default_edge: RwLock::new(None),
            state: Mutex::new(State::default()),
            blocks: RwLock::new(HashMap::new()),
        }
    }

    /// Reads every block list from the store (at start-up).
    pub async fn load_blocks(&self) -> Result<(), StoreError> {
        let mut map: HashMap<Address, HashSet<Address>> = HashMap::new();
        for (owner, blocked) in self.store.all_blocks().await? {
            map.entry(owner).or_default().insert(blocked);
        }
        *self.blocks.write().unwrap_or_else(|e| e.into_inner()) = map;
        Ok(())
    }

    /// Whether hub user `owner` blocks `other`.
    pub fn blocks(&self, owner: &Address, other: &Address) -> bool {
        self.blocks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(owner)
            .is_some_and(|set| set.contains(other))
    }

    /// A hub user's block list, sorted.
    pub fn blocklist(&self, owner: &Address) -> Vec<Address> {
        let mut list: Vec<Address> = self
            .blocks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(owner)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default();
        list.sort_by_key(|a| a.to_string());
        list
    }

    /// Blocks `contact` for hub user `owner` (XEP-0191 semantics): nothing from the contact
    /// reaches the user, the user's presence is no longer sent to it, and a contact that could
    /// see the user is told the user went offline. Returns false when it was blocked already.
    pub async fn block(&self, owner: &Address, contact: &Address) -> Result<bool, Refusal> {
        if owner == contact {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "you cannot block yourself",
            ));
        }
        if !self.store.block(owner, contact).await.map_err(internal)? {
            return Ok(false);
        }
        self.blocks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(owner.clone())
            .or_default()
            .insert(contact.clone());
        let sees_us = self
            .store
            .roster_item(owner, contact)
            .await
            .map_err(internal)?
            .is_some_and(|i| i.subscription.has_from());
        if sees_us {
            self.send_presence_unchecked(
                owner,
                contact,
                PresenceKind::Unavailable { status: None },
            )
            .await;
        }
        self.push(owner, Delivery::BlocklistChanged);
        tracing::info!(user = %owner, blocked = %contact, "contact blocked");
        Ok(true)
    }

    /// Lifts a block; a contact allowed to see the user gets the user's presence again, and
    /// the user, who heard nothing from the contact while it was blocked, gets the contact's.
    pub async fn unblock(&self, owner: &Address, contact: &Address) -> Result<bool, Refusal> {
        if !self.store.unblock(owner, contact).await.map_err(internal)? {
            return Ok(false);
        }
        {
            let mut blocks = self.blocks.write().unwrap_or_else(|e| e.into_inner());
            if let Some(set) = blocks.get_mut(owner) {
                set.remove(contact);
                if set.is_empty() {
                    blocks.remove(owner);
                }
            }
        }
        let item = self
            .store
            .roster_item(owner, contact)
            .await
            .map_err(internal)?;
        if item.as_ref().is_some_and(|i| i.subscription.has_from()) {
            self.send_presence(owner, contact, self.presence_of(owner))
                .await;
        }
        self.push(owner, Delivery::BlocklistChanged);
        if item.is_some_and(|i| i.subscription.has_to()) {
            if self.is_local(contact) {
                let kind = self.presence_of(contact);
                self.push(
                    owner,
                    Delivery::Event(Event::Presence(Presence {
                        from: contact.clone(),
                        to: Some(owner.clone()),
                        kind,
                    })),
                );
            } else {
                let probe = Presence {
                    from: owner.clone(),
                    to: Some(contact.clone()),
                    kind: PresenceKind::Probe,
                };
                if let Err(e) = self.route_remote(Event::Presence(probe)).await {
                    tracing::debug!(error = %e, "probe not sent");
                }
            }
        }
        tracing::info!(user = %owner, unblocked = %contact, "contact unblocked");
        Ok(true)
    }

    /// A partner whose policy refuses strangers reaches only hub users who have a subscription
    /// with the sender, either way (or a request pending from them).
    async fn check_stranger(&self, event: &Event, domain: &str) -> Result<(), Refusal> {
        let (Event::Message(_) | Event::Typing(_)) = event else {
            return Ok(());
        };
        let Some(to) = event.to() else {
            return Ok(());
        };
        if !self.is_local(to) || self.policy.partner(domain).strangers {
            return Ok(());
        }
        let known = self
            .store
            .roster_item(to, event.from())
            .await
            .map_err(internal)?
            .is_some_and(|i| i.subscription != entente_store::SubState::None || i.pending_out);
        if known {
            Ok(())
        } else {
            Err(Refusal::new(
                ErrorCode::PolicyViolation,
                format!("partner policy: {to} accepts messages from {domain} only from contacts"),
            ))
        }
    }

    /// Block lists applied to an event between two parties: `Err` refuses it with the error
    /// the sender sees, `Ok(false)` drops it silently (presence and notices), `Ok(true)` lets
    /// it through.
    fn check_blocks(&self, event: &Event) -> Result<bool, Refusal> {
        let Some(to) = event.to() else {
            return Ok(true);
        };
        let from = event.from();
        if self.is_local(to) && self.blocks(to, from) {
            // The recipient blocks the sender: messages bounce as if the user were not there
            // (XEP-0191 §3.4: service-unavailable), everything else is dropped.
            return match event {
                Event::Message(_) => Err(Refusal::new(
                    ErrorCode::RecipientUnavailable,
                    format!("{to} is not available"),
                )),
                _ => Ok(false),
            };
        }
        if self.is_local(from) && self.blocks(from, to) {
            return match event {
                Event::Message(_)
                | Event::Subscription(Subscription {
                    kind: SubscriptionKind::Subscribe | SubscriptionKind::Subscribed,
                    ..
                }) => Err(Refusal::new(
                    ErrorCode::PolicyViolation,
                    format!("blocking: you have blocked {to}; unblock them first"),
                )),
                Event::Subscription(_) | Event::Failure(_) => Ok(true),
                _ => Ok(false),
            };
        }
        Ok(true)
    }

    pub fn hub_domain(&self) -> &str {
        &self.hub_domain
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Makes `edge` the owner of `domain`.
    pub fn add_edge(&self, domain: &str, edge: Arc<dyn Edge>) {
        self.edges
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(domain.to_lowercase(), edge);
    }

    /// Sets the content rules and the outbreak settings (at start-up).
    pub fn set_protection(&self, inspector: Inspector, settings: OutbreakSettings) {
        self.set_rules(inspector);
        *self.outbreak.lock().unwrap_or_else(|e| e.into_inner()) = Outbreak::new(settings);
    }

    /// Replaces the outbreak settings (reload); quarantines and blocks stay.
    pub fn set_outbreak_settings(&self, settings: OutbreakSettings) {
        self.outbreak
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_settings(settings);
    }

    /// Replaces the content rules (reload); quarantines and blocks stay.
    pub fn set_rules(&self, inspector: Inspector) {
        *self.inspector.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(inspector);
    }

    /// Senders quarantined now, with the seconds left.
    pub fn quarantined(&self) -> Vec<(String, u64)> {
        let now = std::time::Instant::now();
        let outbreak = self.outbreak.lock().unwrap_or_else(|e| e.into_inner());
        outbreak
            .quarantined(now)
            .into_iter()
            .map(|(s, until)| (s, until.saturating_duration_since(now).as_secs()))
            .collect()
    }

    /// Lifts a sender's quarantine; true when there was one.
    pub fn release(&self, sender: &str) -> bool {
        self.outbreak
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .release(sender)
    }

    /// Writes a tripped detector's quarantine and block to the store, so that they outlive a
    /// restart.
    async fn persist_containment(&self, alert: &entente_policy::Alert) {
        let now = std::time::Instant::now();
        let now_ms = now_millis();
        let until = |at: std::time::Instant| {
            now_ms
                + at.saturating_duration_since(now)
                    .as_millis()
                    .min(i64::MAX as u128) as i64
        };
        let writes = [
            (
                "sender",
                alert.sender.clone(),
                until(alert.quarantined_until),
            ),
            (
                "fingerprint",
                alert.fingerprint.to_string(),
                until(alert.blocked_until),
            ),
        ];
        for (kind, key, until) in writes {
            if let Err(e) = self.store.contain(kind, &key, until).await {
                tracing::error!(error = %e, "could not record an outbreak containment");
            }
        }
    }

    /// Re-instates the quarantines and blocks recorded before a restart.
    pub async fn load_containment(&self) -> Result<usize, StoreError> {
        let now = std::time::Instant::now();
        let now_ms = now_millis();
        let rows = self.store.containments(now_ms).await?;
        let mut outbreak = self.outbreak.lock().unwrap_or_else(|e| e.into_inner());
        for (kind, key, until) in &rows {
            let at = now + std::time::Duration::from_millis((until - now_ms).max(0) as u64);
            match kind.as_str() {
                "sender" => outbreak.restore_quarantine(key, at, now),
                "fingerprint" => match Fingerprint::from_hex(key) {
                    Some(fp) => outbreak.restore_block(fp, at, now),
                    None => tracing::warn!(key, "unreadable fingerprint in the store"),
                },
                other => tracing::warn!(kind = other, "unknown containment kind in the store"),
            }
        }
        Ok(rows.len())
    }

    async fn hold(&self, m: &Message, reason: &str) -> Result<(), Refusal> {
        let queued = QueuedMessage::from_message(m.clone());
        self.store.hold(&queued, reason).await.map_err(internal)?;
        metrics::counter!("entente_messages_held_total").increment(1);
        Ok(())
    }

    /// Ends the hold on `sender`'s messages: with `deliver`, each is routed as sent (content
    /// rules and outbreak containment are not applied again: an administrator decided), else
    /// they are discarded. Returns (delivered, refused on the way, discarded).
    pub async fn release_held(
        &self,
        sender: &Address,
        deliver: bool,
    ) -> Result<(usize, usize, usize), Refusal> {
        self.store
            .lift("sender", &sender.to_string())
            .await
            .map_err(internal)?;
        let held = self.store.take_held(sender).await.map_err(internal)?;
        if !deliver {
            let discarded = held.len();
            for q in held {
                let m = q.into_message();
                self.archive(&m, now_millis(), "discarded", Some("administrator".into()))
                    .await;
            }
            return Ok((0, 0, discarded));
        }
        let origin = if self.is_local(sender) {
            Origin::Hub
        } else {
            Origin::Partner {
                domain: sender.domain().to_string(),
            }
        };
        let (mut delivered, mut refused) = (0, 0);
        for q in held {
            let m = q.into_message();
            let action = match self
                .submit_inner(&origin, Event::Message(m.clone()), false)
                .await
            {
                Ok(()) => {
                    delivered += 1;
                    "released"
                }
                Err(e) => {
                    refused += 1;
                    tracing::info!(error = %e, "a released message could not be delivered");
                    "refused"
                }
            };
            self.archive(&m, now_millis(), action, Some("administrator".into()))
                .await;
        }
        Ok((delivered, refused, 0))
    }

    /// Writes one decision about a message to the audit archive (`ts` in ms since the epoch).
    async fn archive(&self, m: &Message, ts: i64, action: &str, rule: Option<String>) {
        let entry = entente_store::AuditEntry {
            ts,
            kind: "message".into(),
            sender: m.from.to_string(),
            recipient: m.to.to_string(),
            action: action.into(),
            rule,
            body: self
                .audit_bodies
                .load(Ordering::Relaxed)
                .then(|| m.body.clone()),
        };
        if let Err(e) = self.store.audit(&entry).await {
            tracing::error!(error = %e, "could not write the audit archive");
        }
    }

    /// Content rules, then outbreak containment: what a quarantined sender sends is held (as is
    /// the message that trips the detector, and what a `quarantine` rule catches), and content
    /// blocked network-wide is refused.
    /// `Ok(Some(rule))`: deliver, marked by a `tag` rule.
    fn protect(
        &self,
        m: &Message,
        alerts: &mut Vec<entente_policy::Alert>,
    ) -> Result<Option<String>, Refusal> {
        let inspector = self
            .inspector
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let boundary = if self.is_local(&m.from) && self.is_local(&m.to) {
            Boundary::Hub
        } else {
            Boundary::Federation
        };
        let verdict = inspector.inspect(m, boundary);
        if let Some(rule) = verdict.rule() {
            metrics::counter!("entente_policy_decisions_total", "rule" => rule.to_string(), "action" => verdict_action(&verdict)).increment(1);
            tracing::info!(from = %m.from, to = %m.to, rule, action = verdict_action(&verdict), "content rule fired");
        }
        if let Some(refusal) = verdict.refusal() {
            return Err(refusal);
        }
        let tag = match &verdict {
            Verdict::Tag(rule) => Some(rule.clone()),
            _ => None,
        };
        let now = std::time::Instant::now();
        let sender = m.from.to_string();
        let mut outbreak = self.outbreak.lock().unwrap_or_else(|e| e.into_inner());
        if outbreak.is_quarantined(&sender, now) {
            return Err(Refusal::held(
                ErrorCode::PolicyViolation,
                "outbreak containment: you are quarantined after a suspected worm outbreak; your messages are held until an administrator releases you",
            ));
        }
        let fingerprints = Fingerprint::of_message(&m.body, 32);
        if outbreak.first_blocked(&fingerprints, now).is_some() {
            return Err(Refusal::new(
                ErrorCode::PolicyViolation,
                "outbreak containment: this content is blocked network-wide",
            ));
        }
        let recipient = m.to.to_string();
        let mut tripped = false;
        for fp in fingerprints {
            if let Some(alert) = outbreak.observe(&sender, &recipient, fp, now) {
                tripped = true;
                alerts.push(alert.clone());
                metrics::counter!("entente_outbreak_alerts_total").increment(1);
                tracing::warn!(sender = %alert.sender, fingerprint = ?alert.fingerprint, recipients = alert.recipients.len(), "outbreak: sender quarantined, content blocked");
            }
        }
        if tripped {
            return Err(Refusal::held(
                ErrorCode::PolicyViolation,
                "outbreak containment: the same content went to too many recipients; you are quarantined and your messages are held",
            ));
        }
        Ok(tag)
    }

    /// Every edge's partner links, for the admin API.
    pub fn links(&self) -> Vec<LinkState> {
        let mut edges: Vec<Arc<dyn Edge>> = Vec::new();
        let owned = self.edges.read().unwrap_or_else(|e| e.into_inner());
        let default = self.default_edge.read().unwrap_or_else(|e| e.into_inner());
        for edge in owned.values().chain(default.iter()) {
            if !edges.iter().any(|e| Arc::ptr_eq(e, edge)) {
                edges.push(edge.clone());
            }
        }
        drop((owned, default));
        edges.iter().flat_map(|e| e.links()).collect()
    }

    /// Makes `edge` the route for every domain no one owns.
    pub fn set_default_edge(&self, edge: Arc<dyn Edge>) {
        *self.default_edge.write().unwrap_or_else(|e| e.into_inner()) = Some(edge);
    }

    fn edge(&self, domain: &str) -> Option<Arc<dyn Edge>> {
        let owned = self
            .edges
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(domain)
            .cloned();
        owned.or_else(|| {
            self.default_edge
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_local(&self, address: &Address) -> bool {
        address.domain() == self.hub_domain
    }

    /// Normalises an address by the rules of whoever owns its domain.
    pub fn normalize(&self, address: Address) -> Result<Address, Refusal> {
        let kind = if self.is_local(&address) {
            Some(DomainKind::Hub)
        } else {
            self.edge(address.domain()).map(|e| e.kind())
        };
        match kind {
            Some(kind) => address
                .normalize(kind)
                .map_err(|e| Refusal::new(ErrorCode::BadRequest, format!("invalid address: {e}"))),
            None => Ok(address),
        }
    }

    /// Parses and normalises an address typed by a user.
    pub fn parse_address(&self, text: &str) -> Result<Address, Refusal> {
        let address = Address::parse(text).map_err(|e| {
            Refusal::new(
                ErrorCode::BadRequest,
                format!("invalid address {text:?}: {e}"),
            )
        })?;
        self.normalize(address)
    }

    pub fn session_count(&self) -> usize {
        self.state().sessions.values().map(Vec::len).sum()
    }

    // ----- hub sessions -------------------------------------------------------------------

    /// Registers a signed-in session; signing on makes the user available.
    pub async fn open_session(&self, address: Address) -> SessionHandle {
        let (tx, rx) = mpsc::channel(SESSION_BACKLOG);
        let (id, lagged, before, after) = {
            let mut st = self.state();
            st.next += 1;
            let id = st.next;
            let before = st.presence_of(&address);
            let lagged = Arc::new(AtomicBool::new(false));
            let slot = Slot {
                id,
                tx,
                lagged: lagged.clone(),
                presence: Some((Show::Available, None)),
                stamp: id,
            };
            st.sessions.entry(address.clone()).or_default().push(slot);
            (id, lagged, before, st.presence_of(&address))
        };
        metrics::gauge!("entente_sessions").set(self.session_count() as f64);
        let first = matches!(before, PresenceKind::Unavailable { .. });
        if before != after {
            self.broadcast_presence(&address, after).await;
        }
        if first {
            self.probe_remote_contacts(&address).await;
        }
        SessionHandle {
            id,
            address,
            rx,
            lagged,
        }
    }

    pub async fn close_session(&self, address: &Address, id: u64) {
        let (before, after) = {
            let mut st = self.state();
            let before = st.presence_of(address);
            if let Some(slots) = st.sessions.get_mut(address) {
                slots.retain(|s| s.id != id);
                if slots.is_empty() {
                    st.sessions.remove(address);
                }
            }
            (before, st.presence_of(address))
        };
        metrics::gauge!("entente_sessions").set(self.session_count() as f64);
        if before != after {
            self.broadcast_presence(address, after).await;
        }
    }

    /// Sets one session's presence and tells every subscriber when the user's presence changes.
    pub async fn set_presence(&self, address: &Address, id: u64, presence: SessionPresence) {
        let (before, after) = {
            let mut st = self.state();
            let before = st.presence_of(address);
            st.next += 1;
            let stamp = st.next;
            if let Some(slot) = st
                .sessions
                .get_mut(address)
                .and_then(|v| v.iter_mut().find(|s| s.id == id))
            {
                slot.presence = presence;
                slot.stamp = stamp;
            }
            (before, st.presence_of(address))
        };
        if before != after {
            self.broadcast_presence(address, after).await;
        }
    }

    /// A contact's presence as `user` may see it: unavailable while the user blocks it.
    pub fn presence_for(&self, user: &Address, contact: &Address) -> PresenceKind {
        if self.blocks(user, contact) {
            PresenceKind::Unavailable { status: None }
        } else {
            self.presence_of(contact)
        }
    }

    /// Current presence of a contact as the hub knows it.
    pub fn presence_of(&self, contact: &Address) -> PresenceKind {
        let st = self.state();
        if self.is_local(contact) {
            st.presence_of(contact)
        } else {
            st.remote_presence
                .get(contact)
                .cloned()
                .unwrap_or(PresenceKind::Unavailable { status: None })
        }
    }

    /// Hands a delivery to every live session of a hub user; a session too slow to keep up is
    /// cut off (what it missed stays in the queue). Returns how many sessions took it.
    fn push(&self, user: &Address, delivery: Delivery) -> usize {
        let mut st = self.state();
        let Some(slots) = st.sessions.get_mut(user) else {
            return 0;
        };
        slots.retain(|s| match s.tx.try_send(delivery.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(Delivery::Message(_))) => {
                // The message is committed: the session reads it from the queue when it catches up.
                s.lagged.store(true, Ordering::Release);
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("entente_deliveries_dropped_total").increment(1);
                tracing::debug!(user = %user, session = s.id, "session behind; a notice was dropped");
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        slots.len()
    }

    /// Called by a session once it has written a queued message to its client.
    pub async fn delivered(&self, message: &QueuedMessage) {
        self.delivered_many(&message.to, &[message.seq]).await;
    }

    /// Removes several messages written to one user's session from the queue.
    pub async fn delivered_many(&self, to: &Address, seqs: &[i64]) {
        if seqs.is_empty() {
            return;
        }
        if let Err(e) = self.store.dequeue_many(to, seqs).await {
            tracing::error!(error = %e, "could not remove delivered messages from the queue");
        }
    }

    // ----- routing ------------------------------------------------------------------------

    /// Routes one event. `Ok` means it was committed or handed on and will not be lost.
    /// Addresses are normalised here by the rules of their domains' owners.
    pub async fn submit(&self, origin: Origin, event: Event) -> Result<(), Refusal> {
        let kind = event.kind();
        let edge = self.destination_label(&event);
        let audited = match &event {
            Event::Message(m) => Some(m.clone()),
            _ => None,
        };
        let result = self.submit_inner(&origin, event, true).await;
        if let Some(m) = audited {
            self.audit_message(&m, &result).await;
        }
        let outcome = match &result {
            Ok(()) => "ok",
            Err(r) => r.code.as_str(),
        };
        metrics::counter!("entente_events_routed_total", "kind" => kind.as_str(), "from" => origin_label(&origin), "edge" => edge, "outcome" => outcome)
            .increment(1);
        if let Err(r) = &result {
            metrics::counter!("entente_errors_total", "code" => r.code.as_str()).increment(1);
        }
        result
    }

    /// Where an event is headed, for metrics: `hub`, an edge's name, or `unrouted`.
    fn destination_label(&self, event: &Event) -> &'static str {
        match event.to() {
            Some(to) if self.is_local(to) => "hub",
            Some(to) => self
                .edge(to.domain())
                .map(|e| e.name())
                .unwrap_or("unrouted"),
            None => "hub",
        }
    }

    /// Archives a federated message, and any message a rule refused, with the decision.
    async fn audit_message(&self, m: &Message, result: &Result<(), Refusal>) {
        let federated = !self.is_local(&m.from) || !self.is_local(&m.to);
        let refused_by_rule = matches!(result, Err(r) if matches!(r.code, ErrorCode::PolicyViolation | ErrorCode::RateLimited));
        if !federated && !refused_by_rule {
            return;
        }
        let (action, rule) = match result {
            Ok(()) => ("accepted", None),
            Err(r) if r.held => ("held", Some(format!("{}: {}", r.code, r.text))),
            Err(r) => ("refused", Some(format!("{}: {}", r.code, r.text))),
        };
        self.archive(m, millis(m.ts), action, rule).await;
    }

    /// Whether the audit archive keeps message bodies.
    pub fn set_audit_bodies(&self, keep: bool) {
        self.audit_bodies.store(keep, Ordering::Relaxed);
    }

    async fn submit_inner(
        &self,
        origin: &Origin,
        mut event: Event,
        protect: bool,
    ) -> Result<(), Refusal> {
        let (from, to) = event.addresses_mut();
        *from = self.normalize(from.clone())?;
        if let Some(to) = to {
            *to = self.normalize(to.clone())?;
        }
        self.policy.check(&event, origin)?;
        self.policy.check_rate(&event, origin)?;
        if !self.check_blocks(&event)? {
            return Ok(());
        }
        if let Origin::Partner { domain } = origin {
            self.check_stranger(&event, domain).await?;
        }
        if let (Event::Message(m), true) = (&event, protect) {
            let mut alerts = Vec::new();
            let verdict = self.protect(m, &mut alerts);
            for alert in alerts {
                self.persist_containment(&alert).await;
            }
            match verdict {
                Err(refusal) => {
                    if refusal.held {
                        self.hold(m, &refusal.text).await?;
                    }
                    return Err(refusal);
                }
                Ok(Some(rule)) => {
                    // Delivered, marked for the recipient; the decision is archived.
                    self.archive(m, millis(m.ts), "tagged", Some(rule.clone()))
                        .await;
                    if let Event::Message(m) = &mut event {
                        m.body = format!("[flagged by content rule {rule}] {}", m.body);
                    }
                }
                Ok(None) => {}
            }
        }
        if let Origin::Partner { .. } = origin {
            if self.is_local(event.from()) {
                return Err(Refusal::new(
                    ErrorCode::NotAuthorized,
                    "a partner cannot speak for hub users",
                ));
            }
        }
        match event {
            Event::Presence(p @ Presence { to: None, .. }) => match origin {
                // A partner's presence agent publishing for one of its users (SIP PUBLISH):
                // every hub user allowed to see that user is told.
                Origin::Partner { .. } => {
                    for watcher in self.store.watchers(&p.from).await.map_err(internal)? {
                        if self.is_local(&watcher) {
                            let directed = Presence {
                                to: Some(watcher),
                                ..p.clone()
                            };
                            self.inbound_presence(directed).await?;
                        }
                    }
                    Ok(())
                }
                Origin::Hub => Err(Refusal::new(
                    ErrorCode::BadRequest,
                    "broadcast presence is set per session",
                )),
            },
            Event::Subscription(s) if matches!(origin, Origin::Hub) => {
                let before = self
                    .store
                    .roster_item(&s.from, &s.to)
                    .await
                    .map_err(internal)?;
                self.outbound_subscription(&s).await?;
                let result = self.route(Event::Subscription(s.clone())).await;
                if result.is_err() && s.kind == SubscriptionKind::Subscribe {
                    // A request that went nowhere leaves nothing pending.
                    let restored = match before {
                        Some(item) => self.store.put_roster_item(&s.from, &item).await,
                        None => self.store.remove_roster_item(&s.from, &s.to).await,
                    };
                    restored.map_err(internal)?;
                    self.push(&s.from, Delivery::RosterChanged);
                }
                if result.is_ok() && s.kind == SubscriptionKind::Subscribed && !self.is_local(&s.to)
                {
                    // A newly approved federated contact gets our presence (RFC 6121 §3.1.5).
                    self.send_presence(&s.from, &s.to, self.presence_of(&s.from))
                        .await;
                }
                result
            }
            event => self.route(event).await,
        }
    }

    async fn route(&self, event: Event) -> Result<(), Refusal> {
        let Some(to) = event.to().cloned() else {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "event without a recipient",
            ));
        };
        if self.is_local(&to) {
            return self.deliver_local(event, to).await;
        }
        self.route_remote(event).await
    }

    async fn route_remote(&self, event: Event) -> Result<(), Refusal> {
        let domain = event
            .to()
            .map(|a| a.domain().to_string())
            .unwrap_or_default();
        self.policy.check_outbound(&event, &domain)?;
        match self.edge(&domain) {
            Some(edge) => edge.deliver(event).await,
            None => Err(Refusal::new(
                ErrorCode::RemoteServerNotFound,
                format!("no route to domain {domain}"),
            )),
        }
    }

    async fn deliver_local(&self, event: Event, to: Address) -> Result<(), Refusal> {
        if !self
            .store
            .account_exists(to.local())
            .await
            .map_err(internal)?
        {
            return Err(Refusal::new(
                ErrorCode::ItemNotFound,
                format!("no such user: {to}"),
            ));
        }
        match event {
            Event::Message(m) => self.accept_message(m).await,
            Event::Subscription(s) => self.inbound_subscription(s).await,
            Event::Presence(p) => self.inbound_presence(p).await,
            event @ (Event::Typing(_) | Event::Receipt(_) | Event::Failure(_)) => {
                self.push(&to, Delivery::Event(event));
                Ok(())
            }
        }
    }

    async fn accept_message(&self, m: Message) -> Result<(), Refusal> {
        let queued = self
            .store
            .enqueue(QueuedMessage::from_message(m))
            .await
            .map_err(internal)?;
        let to = queued.to.clone();
        self.push(&to, Delivery::Message(queued));
        Ok(())
    }

    /// Tells a sender that an event it sent could not be delivered.
    pub async fn bounce(&self, failure: Failure) {
        let to = failure.to.clone();
        if self.is_local(&to) {
            self.push(&to, Delivery::Event(Event::Failure(failure)));
        } else if let Err(e) = self.route_remote(Event::Failure(failure)).await {
            tracing::debug!(error = %e, "a failure report could not be returned");
        }
    }

    // ----- presence -----------------------------------------------------------------------

    async fn inbound_presence(&self, p: Presence) -> Result<(), Refusal> {
        let Some(user) = p.to.clone() else {
            return Ok(());
        };
        if self.blocks(&user, &p.from) {
            // Neither a probe answer nor the contact's presence crosses a block.
            return Ok(());
        }
        let item = self
            .store
            .roster_item(&user, &p.from)
            .await
            .map_err(internal)?;
        match &p.kind {
            PresenceKind::Probe => {
                // Answer only contacts allowed to see us (RFC 6121 §4.3.2).
                if item.is_some_and(|i| i.subscription.has_from()) {
                    let kind = self.presence_of(&user);
                    let answer = Presence {
                        from: user,
                        to: Some(p.from),
                        kind,
                    };
                    if let Err(e) = self.route_remote(Event::Presence(answer)).await {
                        tracing::debug!(error = %e, "probe answer not sent");
                    }
                }
                Ok(())
            }
            kind => {
                if !self.is_local(&p.from) {
                    self.state()
                        .remote_presence
                        .insert(p.from.clone(), kind.clone());
                }
                if item.is_some_and(|i| i.subscription.has_to()) {
                    self.push(&user, Delivery::Event(Event::Presence(p)));
                }
                Ok(())
            }
        }
    }

    /// Sends a user's presence to every contact allowed to see it.
    async fn broadcast_presence(&self, user: &Address, kind: PresenceKind) {
        let roster = match self.store.roster(user).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read roster for presence");
                return;
            }
        };
        for item in roster.into_iter().filter(|i| i.subscription.has_from()) {
            self.send_presence(user, &item.contact, kind.clone()).await;
        }
    }

    async fn send_presence(&self, from: &Address, to: &Address, kind: PresenceKind) {
        if self.blocks(from, to) {
            return;
        }
        self.send_presence_unchecked(from, to, kind).await;
    }

    async fn send_presence_unchecked(&self, from: &Address, to: &Address, kind: PresenceKind) {
        let p = Presence {
            from: from.clone(),
            to: Some(to.clone()),
            kind,
        };
        let result = if self.is_local(to) {
            self.inbound_presence(p).await
        } else {
            self.route_remote(Event::Presence(p)).await
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, to = %to, "presence not delivered");
        }
    }

    async fn probe_remote_contacts(&self, user: &Address) {
        let Ok(roster) = self.store.roster(user).await else {
            return;
        };
        for item in roster.into_iter().filter(|i| {
            i.subscription.has_to() && !self.is_local(&i.contact) && !self.blocks(user, &i.contact)
        }) {
            let probe = Presence {
                from: user.clone(),
                to: Some(item.contact),
                kind: PresenceKind::Probe,
            };
            if let Err(e) = self.route_remote(Event::Presence(probe)).await {
                tracing::debug!(error = %e, "probe not sent");
            }
        }
    }

    // ----- subscriptions (RFC 6121 §3) ----------------------------------------------------

    async fn item(&self, owner: &Address, contact: &Address) -> Result<RosterItem, Refusal> {
        Ok(self
            .store
            .roster_item(owner, contact)
            .await
            .map_err(internal)?
            .unwrap_or_else(|| RosterItem::new(contact.clone())))
    }

    /// Stores the owner's side of a subscription; an item with no subscription and nothing
    /// pending either way is removed.
    async fn save(&self, owner: &Address, item: &RosterItem) -> Result<(), Refusal> {
        let empty = item.subscription == entente_store::SubState::None
            && !item.pending_in
            && !item.pending_out;
        if empty {
            self.store
                .remove_roster_item(owner, &item.contact)
                .await
                .map_err(internal)?;
        } else {
            self.store
                .put_roster_item(owner, item)
                .await
                .map_err(internal)?;
        }
        self.push(owner, Delivery::RosterChanged);
        Ok(())
    }

    /// The hub user's own side of a subscription event it sends.
    async fn outbound_subscription(&self, s: &Subscription) -> Result<(), Refusal> {
        if s.from == s.to {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "you cannot subscribe to yourself",
            ));
        }
        let mut item = self.item(&s.from, &s.to).await?;
        match s.kind {
            SubscriptionKind::Subscribe => item.pending_out = true,
            SubscriptionKind::Unsubscribe => {
                item.pending_out = false;
                item.subscription = item.subscription.with_to(false);
            }
            SubscriptionKind::Subscribed => {
                if !item.pending_in {
                    return Err(Refusal::new(
                        ErrorCode::BadRequest,
                        format!("no pending request from {}", s.to),
                    ));
                }
                item.pending_in = false;
                item.subscription = item.subscription.with_from(true);
            }
            SubscriptionKind::Unsubscribed => {
                item.pending_in = false;
                item.subscription = item.subscription.with_from(false);
            }
        }
        self.save(&s.from, &item).await
    }

    /// The hub user's side of a subscription event it receives.
    async fn inbound_subscription(&self, s: Subscription) -> Result<(), Refusal> {
        let user = s.to.clone();
        let contact = s.from.clone();
        let mut item = self.item(&user, &contact).await?;
        match s.kind {
            SubscriptionKind::Subscribe => {
                if item.subscription.has_from() {
                    // Already approved: answer for the user (RFC 6121 §3.1.3).
                    let answer = Subscription {
                        from: user.clone(),
                        to: contact.clone(),
                        kind: SubscriptionKind::Subscribed,
                    };
                    self.deliver_answer(answer).await;
                    self.send_presence(&user, &contact, self.presence_of(&user))
                        .await;
                    return Ok(());
                }
                item.pending_in = true;
                self.save(&user, &item).await?;
                self.push(&user, Delivery::Event(Event::Subscription(s)));
            }
            SubscriptionKind::Subscribed => {
                if !item.pending_out {
                    return Ok(());
                }
                item.pending_out = false;
                item.subscription = item.subscription.with_to(true);
                self.save(&user, &item).await?;
                self.push(&user, Delivery::Event(Event::Subscription(s)));
                if self.is_local(&contact) {
                    let kind = self.presence_of(&contact);
                    self.push(
                        &user,
                        Delivery::Event(Event::Presence(Presence {
                            from: contact,
                            to: Some(user.clone()),
                            kind,
                        })),
                    );
                }
            }
            SubscriptionKind::Unsubscribe => {
                if item.subscription.has_from() || item.pending_in {
                    item.pending_in = false;
                    item.subscription = item.subscription.with_from(false);
                    self.save(&user, &item).await?;
                    // The contact no longer sees us: it gets our unavailable presence.
                    if !self.is_local(&contact) {
                        self.send_presence(
                            &user,
                            &contact,
                            PresenceKind::Unavailable { status: None },
                        )
                        .await;
                    }
                }
            }
            SubscriptionKind::Unsubscribed => {
                if item.subscription.has_to() || item.pending_out {
                    item.pending_out = false;
                    item.subscription = item.subscription.with_to(false);
                    self.save(&user, &item).await?;
                    self.push(&user, Delivery::Event(Event::Subscription(s)));
                    let gone = Presence {
                        from: contact,
                        to: Some(user.clone()),
                        kind: PresenceKind::Unavailable { status: None },
                    };
                    self.push(&user, Delivery::Event(Event::Presence(gone)));
                }
            }
        }
        Ok(())
    }

    async fn deliver_answer(&self, answer: Subscription) {
        let result = if self.is_local(&answer.to) {
            Box::pin(self.inbound_subscription(answer)).await
        } else {
            self.route_remote(Event::Subscription(answer)).await
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "subscription answer not delivered");
        }
    }

    /// Removes a contact from a hub user's roster, ending the subscription both ways.
    pub async fn remove_contact(&self, user: &Address, contact: &Address) -> Result<(), Refusal> {
        let Some(item) = self
            .store
            .roster_item(user, contact)
            .await
            .map_err(internal)?
        else {
            return Err(Refusal::new(
                ErrorCode::ItemNotFound,
                format!("{contact} is not in your contacts"),
            ));
        };
        if item.subscription.has_to() || item.pending_out {
            let s = Subscription {
                from: user.clone(),
                to: contact.clone(),
                kind: SubscriptionKind::Unsubscribe,
            };
            self.submit(Origin::Hub, Event::Subscription(s)).await.ok();
        }
        if item.subscription.has_from() || item.pending_in {
            let s = Subscription {
                from: user.clone(),
                to: contact.clone(),
                kind: SubscriptionKind::Unsubscribed,
            };
            self.submit(Origin::Hub, Event::Subscription(s)).await.ok();
        }
        self.store
            .remove_roster_item(user, contact)
            .await
            .map_err(internal)?;
        self.push(user, Delivery::RosterChanged);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The router with a recording edge standing in for a federated domain.
    use super::*;
    use entente_policy::{FederationMode, PolicyConfig};
    use entente_store::SqliteStore;
    use time::OffsetDateTime;

    struct RecordingEdge {
        seen: Mutex<Vec<Event>>,
        refuse: bool,
    }

    #[async_trait]
    impl Edge for RecordingEdge {
        fn name(&self) -> &'static str {
            "test"
        }
        fn kind(&self) -> DomainKind {
            DomainKind::Xmpp
        }
        async fn deliver(&self, event: Event) -> Result<(), Refusal> {
            if self.refuse {
                return Err(Refusal::new(ErrorCode::RemoteServerTimeout, "link down"));
            }
            self.seen.lock().unwrap().push(event);
            Ok(())
        }
    }

    impl RecordingEdge {
        fn take(&self) -> Vec<Event> {
            std::mem::take(&mut *self.seen.lock().unwrap())
        }
    }

    fn a(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    fn partner() -> Origin {
        Origin::Partner {
            domain: "corp.example".into(),
        }
    }

    async fn setup(refuse: bool) -> (tempfile::TempDir, Arc<Router>, Arc<RecordingEdge>) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).await.unwrap();
        store.create_account("alice", "password1").await.unwrap();
        let policy = Policy::new(PolicyConfig {
            mode: FederationMode::Allowlist,
            partners: [(
                "corp.example".to_string(),
                entente_policy::PartnerPolicy::default(),
            )]
            .into_iter()
            .collect(),
            max_body_bytes: 1000,
            rates: entente_policy::Rates::default(),
        });
        let router = Arc::new(Router::new("hub.example".into(), Arc::new(store), policy));
        let edge = Arc::new(RecordingEdge {
            seen: Mutex::new(Vec::new()),
            refuse,
        });
        router.add_edge("corp.example", edge.clone());
        (dir, router, edge)
    }

    fn message(from: &str, to: &str) -> Event {
        Event::Message(Message {
            id: "m1".into(),
            from: a(from),
            to: a(to),
            body: "hello".into(),
            thread: None,
            ts: OffsetDateTime::now_utc(),
        })
    }

    #[tokio::test]
    async fn messages_to_a_partner_domain_go_to_its_edge() {
        let (_d, router, edge) = setup(false).await;
        router
            .submit(
                Origin::Hub,
                message("alice@hub.example", "Bob@Corp.Example"),
            )
            .await
            .unwrap();
        let seen = edge.take();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].to().unwrap().to_string(), "bob@corp.example");
        let e = router
            .submit(
                Origin::Hub,
                message("alice@hub.example", "x@unknown.example"),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::RemoteServerNotFound);
    }

    #[tokio::test]
    async fn an_edge_refusal_reaches_the_sender() {
        let (_d, router, _edge) = setup(true).await;
        let e = router
            .submit(
                Origin::Hub,
                message("alice@hub.example", "bob@corp.example"),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::RemoteServerTimeout);
    }

    #[tokio::test]
    async fn partner_traffic_is_queued_for_hub_users_and_checked() {
        let (_d, router, _edge) = setup(false).await;
        router
            .submit(partner(), message("bob@corp.example", "alice@hub.example"))
            .await
            .unwrap();
        let q = router
            .store()
            .queued(&a("alice@hub.example"), 0, 10)
            .await
            .unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].from.to_string(), "bob@corp.example");
        // A link authenticated for corp.example cannot speak for other domains or for hub users.
        let e = router
            .submit(partner(), message("eve@other.example", "alice@hub.example"))
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::NotAuthorized);
        let e = router
            .submit(partner(), message("alice@hub.example", "alice@hub.example"))
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::NotAuthorized);
        let e = router
            .submit(
                Origin::Partner {
                    domain: "evil.example".into(),
                },
                message("x@evil.example", "alice@hub.example"),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::PolicyViolation);
        let e = router
            .submit(partner(), message("bob@corp.example", "nobody@hub.example"))
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::ItemNotFound);
    }

    #[tokio::test]
    async fn subscriptions_with_a_federated_contact() {
        let (_d, router, edge) = setup(false).await;
        let alice = a("alice@hub.example");
        let bob = a("bob@corp.example");
        let mut session = router.open_session(alice.clone()).await;
        let sub = |from: &Address, to: &Address, kind| {
            Event::Subscription(Subscription {
                from: from.clone(),
                to: to.clone(),
                kind,
            })
        };

        // alice asks bob; the request goes out; bob's server approves; bob's presence arrives.
        router
            .submit(Origin::Hub, sub(&alice, &bob, SubscriptionKind::Subscribe))
            .await
            .unwrap();
        assert!(
            matches!(&edge.take()[..], [Event::Subscription(s)] if s.kind == SubscriptionKind::Subscribe)
        );
        let item = router
            .store()
            .roster_item(&alice, &bob)
            .await
            .unwrap()
            .unwrap();
        assert!(item.pending_out);
        router
            .submit(partner(), sub(&bob, &alice, SubscriptionKind::Subscribed))
            .await
            .unwrap();
        let item = router
            .store()
            .roster_item(&alice, &bob)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (item.subscription, item.pending_out),
            (entente_store::SubState::To, false)
        );
        let available = PresenceKind::Available {
            show: Show::Away,
            status: Some("out".into()),
        };
        let p = Presence {
            from: bob.clone(),
            to: Some(alice.clone()),
            kind: available.clone(),
        };
        router.submit(partner(), Event::Presence(p)).await.unwrap();
        assert_eq!(router.presence_of(&bob), available);
        let mut got_presence = false;
        while let Ok(d) = session.rx.try_recv() {
            if let Delivery::Event(Event::Presence(p)) = d {
                got_presence |= p.from == bob && p.kind == available;
            }
        }
        assert!(got_presence);

        // bob asks alice; alice approves; bob gets her presence, and her probes are answered.
        router
            .submit(partner(), sub(&bob, &alice, SubscriptionKind::Subscribe))
            .await
            .unwrap();
        assert!(
            router
                .store()
                .roster_item(&alice, &bob)
                .await
                .unwrap()
                .unwrap()
                .pending_in
        );
        router
            .submit(Origin::Hub, sub(&alice, &bob, SubscriptionKind::Subscribed))
            .await
            .unwrap();
        let out = edge.take();
        assert!(out.iter().any(
            |e| matches!(e, Event::Subscription(s) if s.kind == SubscriptionKind::Subscribed)
        ));
        let probe = Presence {
            from: bob.clone(),
            to: Some(alice.clone()),
            kind: PresenceKind::Probe,
        };
        router
            .submit(partner(), Event::Presence(probe))
            .await
            .unwrap();
        let out = edge.take();
        assert!(
            matches!(&out[..], [Event::Presence(p)] if p.from == alice && matches!(p.kind, PresenceKind::Available { .. })),
            "{out:?}"
        );

        // alice goes away: bob (who may see her) is told.
        router
            .set_presence(&alice, session.id, Some((Show::Dnd, None)))
            .await;
        assert!(edge
            .take()
            .iter()
            .any(|e| matches!(e, Event::Presence(p) if p.to.as_ref() == Some(&bob))));

        // bob's server revokes: alice no longer sees bob, and hears so.
        router
            .submit(partner(), sub(&bob, &alice, SubscriptionKind::Unsubscribed))
            .await
            .unwrap();
        let item = router
            .store()
            .roster_item(&alice, &bob)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(item.subscription, entente_store::SubState::From);

        // alice removes bob: both directions end and the item is gone.
        router.remove_contact(&alice, &bob).await.unwrap();
        assert!(edge.take().iter().any(
            |e| matches!(e, Event::Subscription(s) if s.kind == SubscriptionKind::Unsubscribed)
        ));
        assert!(router
            .store()
            .roster_item(&alice, &bob)
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn a_partners_published_presence_reaches_the_users_who_may_see_it() {
        let (_d, router, _edge) = setup(false).await;
        let alice = a("alice@hub.example");
        let bob = a("bob@corp.example");
        let mut item = RosterItem::new(bob.clone());
        item.subscription = entente_store::SubState::To;
        router.store().put_roster_item(&alice, &item).await.unwrap();
        let mut s = router.open_session(alice.clone()).await;
        let kind = PresenceKind::Available {
            show: Show::Away,
            status: Some("published".into()),
        };
        let p = Presence {
            from: bob.clone(),
            to: None,
            kind: kind.clone(),
        };
        router.submit(partner(), Event::Presence(p)).await.unwrap();
        let mut seen = false;
        while let Ok(d) = s.rx.try_recv() {
            if let Delivery::Event(Event::Presence(p)) = d {
                seen |= p.from == bob && p.to.as_ref() == Some(&alice) && p.kind == kind;
            }
        }
        assert!(seen);
        // A hub session cannot broadcast through submit (its presence is set per session).
        let p = Presence {
            from: alice.clone(),
            to: None,
            kind,
        };
        assert_eq!(
            router
                .submit(Origin::Hub, Event::Presence(p))
                .await
                .unwrap_err()
                .code,
            ErrorCode::BadRequest
        );
    }

    #[tokio::test]
    async fn probes_from_strangers_are_not_answered() {
        let (_d, router, edge) = setup(false).await;
        let _s = router.open_session(a("alice@hub.example")).await;
        let probe = Presence {
            from: a("bob@corp.example"),
            to: Some(a("alice@hub.example")),
            kind: PresenceKind::Probe,
        };
        router
            .submit(partner(), Event::Presence(probe))
            .await
            .unwrap();
        assert!(edge.take().is_empty());
    }

    #[tokio::test]
    async fn failures_reach_the_hub_sender() {
        let (_d, router, _edge) = setup(false).await;
        let mut s = router.open_session(a("alice@hub.example")).await;
        let f = Failure {
            from: a("bob@corp.example"),
            to: a("alice@hub.example"),
            id: "c7".into(),
            code: ErrorCode::RecipientUnavailable,
            text: "offline".into(),
        };
        router
            .submit(partner(), Event::Failure(f.clone()))
            .await
            .unwrap();
        let got = s.rx.recv().await.unwrap();
        assert!(matches!(got, Delivery::Event(Event::Failure(g)) if g == f));
    }
}
