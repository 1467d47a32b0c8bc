//! The SIP/SIMPLE federation edge: the `sip` (UDP and TCP on one address) and `sips` (mutual
//! TLS) listeners, outbound links to each partner (pinned address or DNS), and the hand-over
//! between `entente-sip`'s sans-IO [`Endpoint`](entente_sip::Endpoint) and the router.
//!
//! Two endpoints run, each in its own driver task: one for UDP/TCP (partners with
//! `auth = "none"`) and one for TLS (partners with `auth = "certificate"`), so that each writes
//! its own listener's port in Via and Contact. A partner is reached at its configured
//! `address` when it has one; otherwise by RFC 3263 through the configured resolver
//! ([`crate::dns::Dns::sip_targets`]: SRV `_sips._tcp`, `_sip._tcp`, `_sip._udp`, then A/AAAA;
//! NAPTR is not used), trying the next target when a TCP or TLS connection fails.
//!
//! - A request reaches an endpoint only when its From domain is a configured SIP partner and,
//!   for a certificate partner, it came over TLS with a certificate valid for that domain
//!   (RFC 5922, [`TlsContext::verified_domains`](crate::tls::TlsContext::verified_domains));
//!   otherwise the driver answers 403 itself. Bytes the parser refuses get a 400 (513 for a
//!   size limit) when their header section is still readable.
//! - Events go to the router with `Origin::Partner { domain }` of their sender. An incoming
//!   MESSAGE is answered 200 only once `Router::submit` returned `Ok` (the hub committed it);
//!   a refusal is answered with the status `entente_sip::status` maps its error code to, and a
//!   hub that takes longer than [`ANSWER_DEADLINE`] gets the sender a 500 (never a 200).
//! - Requests to a UDP partner larger than 1300 bytes go over TCP (RFC 3261 §18.1.1).

mod driver;
mod reply;

use crate::anyhow_lite::{msg, Result};
use crate::config::{Listen, PartnerAuth, PartnerProtocol};
use crate::router::{Edge, LinkState, Router};
use crate::{AppState, Tasks};
use async_trait::async_trait;
use entente_model::{DomainKind, ErrorCode, Event};
use entente_policy::{Origin, Refusal};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

pub use driver::ANSWER_DEADLINE;

/// How a SIP partner proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipAuth {
    /// Mutual TLS with a certificate valid for the partner's domain (RFC 5922).
    Certificate,
    /// Trusted as configured: UDP or TCP, the From domain taken as given.
    None,
}

/// A configured SIP partner.
#[derive(Debug, Clone)]
pub struct SipPartner {
    pub domain: String,
    /// The pinned address every request to the partner goes to; `None` when none is
    /// configured (then DNS finds it) or it did not resolve at start-up.
    pub address: Option<SocketAddr>,
    /// Whether an address is configured: a pinned partner is never looked up in DNS.
    pub pinned: bool,
    pub auth: SipAuth,
}

/// What every driver and the edge share.
pub(crate) struct Shared {
    pub router: Weak<Router>,
    /// SIP partners by lower-case domain.
    pub partners: HashMap<String, SipPartner>,
    pub tls: Arc<crate::tls::TlsContext>,
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Domains that certificate partners hold, candidates for `verified_domains`.
    pub certificate_domains: Vec<String>,
    /// The configured resolver (`[dns] servers`) for partners without a pinned address;
    /// `None` when it could not be set up.
    pub dns: Option<Arc<crate::dns::Dns>>,
    /// The partner links the drivers report, for the admin API.
    pub links: Mutex<LinkTable>,
}

impl Shared {
    pub fn partner(&self, domain: &str) -> Option<&SipPartner> {
        self.partners.get(&domain.to_ascii_lowercase())
    }

    fn table(&self) -> std::sync::MutexGuard<'_, LinkTable> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A stream connection now speaks for a partner domain (`tls`: which driver owns `id`).
    pub fn link_opened(&self, tls: bool, id: u64, state: LinkState) {
        self.table().streams.insert((tls, id), state);
    }

    pub fn link_closed(&self, tls: bool, id: u64) {
        self.table().streams.remove(&(tls, id));
    }

    /// A datagram came from a partner: a request (`inbound`) or an answer to ours.
    pub fn heard_over_udp(&self, domain: &str, peer: SocketAddr, inbound: bool) {
        let now = Instant::now();
        let mut table = self.table();
        let seen = table.udp.entry(domain.to_string()).or_insert(UdpSeen {
            peer,
            since: epoch_secs(),
            last: now,
            inbound,
        });
        if now.duration_since(seen.last) > UDP_RECENT {
            seen.since = epoch_secs();
        }
        seen.last = now;
        seen.peer = peer;
        seen.inbound = inbound;
    }

    /// A partner answered one of our requests: its last error is over.
    pub fn answered_by(&self, domain: &str) {
        self.table().errors.remove(domain);
    }

    /// A request to a partner failed (no answer, connection refused, TLS, DNS).
    pub fn failed(
        &self,
        domain: &str,
        transport: entente_sip::Transport,
        peer: Option<SocketAddr>,
        text: String,
    ) {
        let mut table = self.table();
        if table.errors.len() >= MAX_LINK_ERRORS && !table.errors.contains_key(domain) {
            return;
        }
        table.errors.insert(
            domain.to_string(),
            LinkError {
                text,
                transport: transport_name(transport),
                peer,
            },
        );
    }
}

/// A partner heard over UDP within this long counts as linked.
pub(crate) const UDP_RECENT: Duration = Duration::from_secs(300);
/// Partner domains with a last error kept, at most (partners are configured, so few).
const MAX_LINK_ERRORS: usize = 10_000;

/// What the drivers know of their partner links, for [`Edge::links`].
#[derive(Default)]
pub(crate) struct LinkTable {
    /// Stream connections that speak for a partner domain, by (TLS driver?, connection id).
    streams: HashMap<(bool, u64), LinkState>,
    /// Partners heard over UDP, by domain.
    udp: HashMap<String, UdpSeen>,
    /// The last failure of a request to each partner domain, until it answers again.
    errors: HashMap<String, LinkError>,
}

struct UdpSeen {
    peer: SocketAddr,
    since: i64,
    last: Instant,
    inbound: bool,
}

struct LinkError {
    text: String,
    transport: &'static str,
    peer: Option<SocketAddr>,
}

pub(crate) fn transport_name(t: entente_sip::Transport) -> &'static str {
    match t {
        entente_sip::Transport::Udp => "sip-udp",
        entente_sip::Transport::Tcp => "sip-tcp",
        entente_sip::Transport::Tls => "sip-tls",
    }
}

pub(crate) fn epoch_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Starts the edge's listeners (sip, sips) and registers it as the owner of its partners' domains.
pub async fn start(state: &AppState, listeners: &Listen, tasks: &mut Tasks) -> Result<()> {
    let config = &state.config;
    let mut partners = HashMap::new();
    let mut local_domains = vec![state.router.hub_domain().to_string()];
    for p in &config.partners {
        let domain = p.domain.to_ascii_lowercase();
        match p.protocol {
            PartnerProtocol::Xmpp => local_domains.push(domain),
            PartnerProtocol::Sip => {
                let auth = match p.auth {
                    PartnerAuth::None => SipAuth::None,
                    _ => SipAuth::Certificate,
                };
                let address = match &p.address {
                    Some(a) => pinned_address(a).await,
                    None => None,
                };
                if p.address.is_some() && address.is_none() {
                    tracing::warn!(partner = %domain, address = ?p.address, "the pinned address does not resolve; requests to this partner will fail");
                }
                partners.insert(
                    domain.clone(),
                    SipPartner {
                        domain,
                        address,
                        pinned: p.address.is_some(),
                        auth,
                    },
                );
            }
        }
    }
    if partners.is_empty() && listeners.sip.is_none() && listeners.sips.is_none() {
        return Ok(());
    }
    let certificate_domains = partners
        .values()
        .filter(|p| p.auth == SipAuth::Certificate)
        .map(|p| p.domain.clone())
        .collect();
    let dns = if partners.values().any(|p| !p.pinned) {
        match crate::dns::Dns::new(&config.dns.servers) {
            Ok(d) => Some(Arc::new(d)),
            Err(e) => {
                tracing::warn!(error = %e, "no resolver: SIP partners without an address cannot be reached");
                None
            }
        }
    } else {
        None
    };
    let shared = Arc::new(Shared {
        router: Arc::downgrade(&state.router),
        partners,
        tls: state.tls.clone(),
        shutdown: state.shutdown.clone(),
        certificate_domains,
        dns,
        links: Mutex::new(LinkTable::default()),
    });
    let settings = driver::Settings {
        hub_domain: state.router.hub_domain().to_string(),
        local_domains,
        max_body_bytes: config.limits.max_body_bytes,
    };

    let plain = match listeners.sip {
        Some(addr) => {
            let (udp, tcp) = bind_udp_and_tcp(addr).await?;
            let local = udp.local_addr().map_err(|e| msg(e.to_string()))?;
            println!("listening sip {local}");
            Some(driver::spawn_plain(
                shared.clone(),
                &settings,
                udp,
                tcp,
                local,
                tasks,
            ))
        }
        None => None,
    };
    let secure = match listeners.sips {
        Some(addr) => {
            let tcp = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| msg(format!("cannot listen for sips on {addr}: {e}")))?;
            let local = tcp.local_addr().map_err(|e| msg(e.to_string()))?;
            println!("listening sips {local}");
            Some(driver::spawn_tls(
                shared.clone(),
                &settings,
                Some(tcp),
                local,
                tasks,
            ))
        }
        // Outbound TLS still works without a listener; our Via and Contact then name the hub
        // domain and the default port.
        None if !shared.certificate_domains.is_empty() => {
            let local = SocketAddr::from(([0, 0, 0, 0], 5061));
            Some(driver::spawn_tls(
                shared.clone(),
                &settings,
                None,
                local,
                tasks,
            ))
        }
        None => None,
    };
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let edge = Arc::new(SipEdge {
        shared: shared.clone(),
        plain,
        secure,
    });
    for (domain, partner) in &shared.partners {
        let ready = match partner.auth {
            SipAuth::None => edge.plain.is_some(),
            SipAuth::Certificate => edge.secure.is_some(),
        };
        if !ready {
            tracing::warn!(partner = %domain, "no `sip` listener: this partner cannot be reached over UDP/TCP");
        }
        state.router.add_edge(domain, edge.clone());
    }
    Ok(())
}

/// `host:port` as configured: an IP literal, or a name looked up once at start-up.
async fn pinned_address(text: &str) -> Option<SocketAddr> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Some(a);
    }
    tokio::net::lookup_host(text).await.ok()?.next()
}

/// UDP and TCP on the same address; with port 0, the TCP port follows the one UDP picked.
async fn bind_udp_and_tcp(
    addr: SocketAddr,
) -> Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
    let mut last = None;
    for _ in 0..20 {
        let udp = tokio::net::UdpSocket::bind(addr)
            .await
            .map_err(|e| msg(format!("cannot listen for sip (UDP) on {addr}: {e}")))?;
        let local = udp.local_addr().map_err(|e| msg(e.to_string()))?;
        match tokio::net::TcpListener::bind(local).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 => last = Some(e),
            Err(e) => return Err(msg(format!("cannot listen for sip (TCP) on {addr}: {e}"))),
        }
    }
    Err(msg(format!(
        "cannot listen for sip on {addr}: no port free for both UDP and TCP ({last:?})"
    )))
}

/// A request from the router to a driver.
pub(crate) type Delivery = (Event, oneshot::Sender<std::result::Result<(), Refusal>>);

/// The router's view of the edge: events for SIP partner domains go to the driver that serves
/// the partner's transport.
struct SipEdge {
    shared: Arc<Shared>,
    plain: Option<mpsc::Sender<driver::Input>>,
    secure: Option<mpsc::Sender<driver::Input>>,
}

#[async_trait]
impl Edge for SipEdge {
    fn name(&self) -> &'static str {
        "sip"
    }

    fn kind(&self) -> DomainKind {
        DomainKind::Sip
    }

    fn links(&self) -> Vec<LinkState> {
        let table = self.shared.table();
        let mut out: Vec<LinkState> = table.streams.values().cloned().collect();
        for (domain, seen) in &table.udp {
            if seen.last.elapsed() <= UDP_RECENT {
                out.push(LinkState {
                    domain: domain.clone(),
                    direction: if seen.inbound { "inbound" } else { "outbound" },
                    transport: "sip-udp",
                    auth: "address",
                    peer: Some(seen.peer.to_string()),
                    since: Some(seen.since),
                    last_error: None,
                });
            }
        }
        for (domain, e) in &table.errors {
            let auth = match self.shared.partner(domain).map(|p| p.auth) {
                Some(SipAuth::Certificate) => "certificate",
                _ => "address",
            };
            out.push(LinkState {
                domain: domain.clone(),
                direction: "outbound",
                transport: e.transport,
                auth,
                peer: e.peer.map(|p| p.to_string()),
                since: None,
                last_error: Some(e.text.clone()),
            });
        }
        out.sort_by(|a, b| a.domain.cmp(&b.domain).then(a.since.cmp(&b.since)));
        out
    }

    async fn deliver(&self, event: Event) -> std::result::Result<(), Refusal> {
        let unreachable = |text: &str| Refusal::new(ErrorCode::RemoteServerNotFound, text);
        let Some(to) = event.to() else {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "event without a recipient",
            ));
        };
        let Some(partner) = self.shared.partner(to.domain()) else {
            return Err(unreachable("not a SIP partner domain"));
        };
        let driver = match partner.auth {
            SipAuth::None => &self.plain,
            SipAuth::Certificate => &self.secure,
        };
        let Some(driver) = driver else {
            return Err(unreachable("no SIP listener serves this partner"));
        };
        let (tx, rx) = oneshot::channel();
        driver
            .send(driver::Input::Deliver((event, tx)))
            .await
            .map_err(|_| unreachable("the SIP edge is shutting down"))?;
        rx.await
            .unwrap_or_else(|_| Err(unreachable("the SIP edge is shutting down")))
    }
}

/// The origin a partner's event is submitted with: the domain its sender claims, which the
/// driver has already checked against the partner list and, for certificate partners, the
/// TLS peer's certificate.
pub(crate) fn origin_of(event: &Event) -> Origin {
    Origin::Partner {
        domain: event.from().domain().to_string(),
    }
}
