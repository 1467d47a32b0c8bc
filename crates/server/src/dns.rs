//! Name resolution for federation links (XMPP's SRV records, SIP's RFC 3263): the configured
//! name servers (`[dns] servers`), or the system's when none are given. Tests and careful
//! operators point it at their own server, so no lookup leaves the machine unintentionally; a
//! partner's pinned `address` skips DNS entirely.

use crate::anyhow_lite::{msg, Result};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use std::net::SocketAddr;

pub use entente_sip::Transport as SipTransport;

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
        targets = rfc2782_order(targets, &mut rand::thread_rng());
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

    /// Where to send SIP requests for `host`, in the order to try (RFC 3263 §4, without NAPTR):
    /// - an IP literal is used as it is, at `port` or the transport's default port;
    /// - a name with a port: its A/AAAA records at that port, over `transport`;
    /// - a name without a port: the SRV targets of `_sips._tcp` (TLS), then, unless `tls_only`,
    ///   those of `_sip._tcp` (TCP) and `_sip._udp` (UDP), each service in RFC 2782 order; only
    ///   when the domain publishes none of them, its A/AAAA records on port 5060 (UDP), or 5061
    ///   (TLS) when `tls_only`.
    ///
    /// With `tls_only`, every target is TLS.
    pub async fn sip_targets(
        &self,
        host: &str,
        port: Option<u16>,
        transport: SipTransport,
        tls_only: bool,
    ) -> Vec<(SocketAddr, SipTransport)> {
        let transport = if tls_only {
            SipTransport::Tls
        } else {
            transport
        };
        let default_port = |t: SipTransport| if t == SipTransport::Tls { 5061 } else { 5060 };
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return vec![(
                SocketAddr::new(ip, port.unwrap_or(default_port(transport))),
                transport,
            )];
        }
        if let Some(port) = port {
            return self
                .addresses(host, port)
                .await
                .into_iter()
                .map(|a| (a, transport))
                .collect();
        }
        let services: &[(&str, SipTransport)] = if tls_only {
            &[("_sips._tcp", SipTransport::Tls)]
        } else {
            &[
                ("_sips._tcp", SipTransport::Tls),
                ("_sip._tcp", SipTransport::Tcp),
                ("_sip._udp", SipTransport::Udp),
            ]
        };
        let mut out: Vec<(SocketAddr, SipTransport)> = Vec::new();
        let mut published = false;
        for (service, transport) in services {
            let targets = self.srv(service, host).await;
            if targets.is_empty() {
                continue;
            }
            published = true;
            // A single "." target: the service is decidedly not offered.
            if targets.len() == 1 && targets[0].host.is_empty() {
                continue;
            }
            for t in targets {
                for a in self.addresses(&t.host, t.port).await {
                    if !out.contains(&(a, *transport)) {
                        out.push((a, *transport));
                    }
                }
            }
        }
        if published {
            return out;
        }
        let fallback = if tls_only {
            SipTransport::Tls
        } else {
            SipTransport::Udp
        };
        self.addresses(host, default_port(fallback))
            .await
            .into_iter()
            .map(|a| (a, fallback))
            .collect()
    }
}

/// RFC 2782's order: by priority, lowest first; within one priority, a weighted random draw
/// (zero-weight targets first in the running sum, so they are rarely picked first).
pub fn rfc2782_order(mut targets: Vec<SrvTarget>, rng: &mut impl rand::Rng) -> Vec<SrvTarget> {
    targets.sort_by(|a, b| a.priority.cmp(&b.priority).then(a.weight.cmp(&b.weight)));
    let mut out = Vec::with_capacity(targets.len());
    let mut rest = targets.into_iter().peekable();
    while let Some(first) = rest.next() {
        let priority = first.priority;
        let mut group = vec![first];
        while let Some(t) = rest.next_if(|t| t.priority == priority) {
            group.push(t);
        }
        while !group.is_empty() {
            let total: u32 = group.iter().map(|t| u32::from(t.weight)).sum();
            let draw = rng.gen_range(0..=total);
            let mut sum = 0u32;
            let pick = group
                .iter()
                .position(|t| {
                    sum += u32::from(t.weight);
                    sum >= draw
                })
                .unwrap_or(0);
            out.push(group.remove(pick));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn t(priority: u16, weight: u16, host: &str) -> SrvTarget {
        SrvTarget {
            priority,
            weight,
            host: host.into(),
            port: 5060,
        }
    }

    #[test]
    fn lower_priorities_always_come_first() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let out = rfc2782_order(
                vec![t(20, 0, "d"), t(10, 5, "b"), t(10, 60, "c"), t(0, 1, "a")],
                &mut rng,
            );
            let hosts: Vec<&str> = out.iter().map(|t| t.host.as_str()).collect();
            assert_eq!(hosts[0], "a");
            assert!(hosts[1..3].contains(&"b") && hosts[1..3].contains(&"c"));
            assert_eq!(hosts[3], "d");
        }
    }

    #[test]
    fn weights_share_out_the_first_place() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut heavy_first = 0;
        for _ in 0..1000 {
            let out = rfc2782_order(vec![t(0, 10, "light"), t(0, 90, "heavy")], &mut rng);
            assert_eq!(out.len(), 2);
            if out[0].host == "heavy" {
                heavy_first += 1;
            }
        }
        // 90 % expected; a seeded draw, so the count is fixed, but any sane draw is far from 50 %.
        assert!((850..=950).contains(&heavy_first), "{heavy_first}");
        // A zero weight next to a positive one is almost never first.
        let zero_first = (0..1000)
            .filter(|_| {
                rfc2782_order(vec![t(0, 0, "zero"), t(0, 50, "w")], &mut rng)[0].host == "zero"
            })
            .count();
        assert!(zero_first < 50, "{zero_first}");
    }
}
