//! Name resolution for federation links: the configured name servers (`[dns] servers`), or the
//! system's when none are given. Tests and careful operators point it at their own server, so no
//! lookup leaves the machine unintentionally; a partner's pinned `address` skips DNS entirely.

use crate::anyhow_lite::{msg, Result};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use std::net::SocketAddr;

pub struct Dns {
    resolver: TokioResolver,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dns")
    }
}

/// One SRV target, in the order RFC 2782 asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvTarget {
    pub priority: u16,
    pub weight: u16,
    pub host: String,
    pub port: u16,
}

impl Dns {
    pub fn new(servers: &[SocketAddr]) -> Result<Dns> {
        let resolver = if servers.is_empty() {
            TokioResolver::builder_tokio()
                .map_err(|e| msg(format!("system resolver: {e}")))?
                .build()
        } else {
            let name_servers = servers
                .iter()
                .map(|s| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = s.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = s.port();
                    NameServerConfig::new(s.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(name_servers),
                TokioRuntimeProvider::default(),
            )
            .build()
        };
        Ok(Dns {
            resolver: resolver.map_err(|e| msg(format!("resolver: {e}")))?,
        })
    }

    /// SRV targets of `service` (e.g. `_xmpp-server._tcp`) at `domain`, by priority then weight;
    /// empty when there are none. A single "." target means the service is not offered.
    pub async fn srv(&self, service: &str, domain: &str) -> Vec<SrvTarget> {
        let name = format!("{service}.{domain}.");
        let Ok(lookup) = self.resolver.srv_lookup(name.as_str()).await else {
            return Vec::new();
        };
        let mut targets: Vec<SrvTarget> = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::SRV(srv) => Some(SrvTarget {
                    priority: srv.priority,
                    weight: srv.weight,
                    host: srv.target.to_ascii().trim_end_matches('.').to_string(),
                    port: srv.port,
                }),
                _ => None,
            })
            .collect();
        targets.sort_by(|a, b| a.priority.cmp(&b.priority).then(b.weight.cmp(&a.weight)));
        targets
    }

    /// The addresses of `host` (A and AAAA), each with `port`.
    pub async fn addresses(&self, host: &str, port: u16) -> Vec<SocketAddr> {
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return vec![SocketAddr::new(ip, port)];
        }
        match self.resolver.lookup_ip(format!("{host}.").as_str()).await {
            Ok(ips) => ips.iter().map(|ip| SocketAddr::new(ip, port)).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Where `domain`'s XMPP server-to-server service is, each address with whether it speaks
    /// TLS at once: the SRV targets of `_xmpps-server._tcp` (XEP-0368, direct TLS), else those of
    /// `_xmpp-server._tcp` (RFC 6120 §3.2, STARTTLS), else the domain itself on port 5269.
    pub async fn xmpp_server(&self, domain: &str) -> Vec<(SocketAddr, bool)> {
        for (service, direct_tls) in [("_xmpps-server._tcp", true), ("_xmpp-server._tcp", false)] {
            let targets = self.srv(service, domain).await;
            // A single "." target: the service is decidedly not offered.
            if targets.len() == 1 && targets[0].host.is_empty() {
                continue;
            }
            let mut out = Vec::new();
            for t in targets {
                out.extend(
                    self.addresses(&t.host, t.port)
                        .await
                        .into_iter()
                        .map(|a| (a, direct_tls)),
                );
            }
            if !out.is_empty() {
                return out;
            }
        }
        self.addresses(domain, 5269)
            .await
            .into_iter()
            .map(|a| (a, false))
            .collect()
    }
}
