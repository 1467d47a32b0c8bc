//! RFC 3263 for SIP partners without a pinned address: the hub asks the name servers of
//! `[dns] servers` (here a loopback responder of the test) for `_sips._tcp`, `_sip._tcp` and
//! `_sip._udp` SRV records, then A records on port 5060, and a hub user's MESSAGE reaches a sipp
//! UAS wherever the records say it is.

mod common;
mod sip;

use common::dns::{Record, TestDns};
use common::Server;
use sip::{partner_toml, Sipp, PARTNER};
use std::net::Ipv4Addr;

const LOOPBACK: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

/// A hub with the SIP partner `corp-b.test` (no address) and `dns` as its name server.
fn hub(dns: &TestDns) -> Server {
    let extra = format!("{}{}", dns.toml(), partner_toml(PARTNER, None, "none"));
    Server::start_listening(&extra, "sip = \"127.0.0.1:0\"\n")
}

/// A sipp UAS on `ip:port` expecting one MESSAGE from alice with `body`.
fn uas(ip: &str, port: u16, transport: &str, body: &str) -> Sipp {
    let dir = tempfile::tempdir().unwrap();
    let path = sip::scenario(
        dir.path(),
        "uas_message.xml",
        &[("FROM_USER", "alice@hub.test"), ("BODY", body)],
    );
    let port = port.to_string();
    Sipp::start(dir, &path, &["-t", transport, "-i", ip, "-p", &port])
}

/// alice sends `body` to carol and hears no failure once the UAS has it.
async fn alice_sends(server: &Server, id: &str, body: &str, uas: Sipp) {
    let mut alice = server.login("alice").await;
    let ack = alice.message(id, "carol@corp-b.test", body).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    uas.passes().await;
    assert!(alice
        .try_recv(std::time::Duration::from_millis(500))
        .await
        .is_none_or(|v| v["type"] != "error"));
}

#[tokio::test]
async fn a_message_finds_a_udp_partner_by_its_sip_udp_srv_record() {
    let port = sip::free_port();
    let dns = TestDns::start(vec![
        Record::srv("_sip._udp.corp-b.test", 0, 5, port, "sip.corp-b.test"),
        Record::a("sip.corp-b.test", LOOPBACK),
    ]);
    let uas = uas("127.0.0.1", port, "u1", "found you over udp");
    let server = hub(&dns);
    alice_sends(&server, "d1", "found you over udp", uas).await;
    let queries = dns.queries();
    for asked in [
        "_sips._tcp.corp-b.test type=33",
        "_sip._tcp.corp-b.test type=33",
        "_sip._udp.corp-b.test type=33",
        "sip.corp-b.test type=1",
    ] {
        assert!(
            queries.iter().any(|q| q.starts_with(asked)),
            "{asked} was not asked: {queries:?}"
        );
    }
}

#[tokio::test]
async fn tcp_comes_before_udp_and_a_refused_target_gives_way_to_the_next() {
    // `_sip._tcp`: priority 0 points at a port nobody listens on, priority 10 at the UAS, which
    // listens on TCP only. `_sip._udp` names a port nobody listens on either: the message can
    // only arrive over TCP, after the first target refused the connection.
    let dead = sip::free_port();
    let port = sip::free_port();
    let nobody_udp = sip::free_port();
    let dns = TestDns::start(vec![
        Record::srv("_sip._tcp.corp-b.test", 0, 5, dead, "down.corp-b.test"),
        Record::srv("_sip._tcp.corp-b.test", 10, 5, port, "up.corp-b.test"),
        Record::srv("_sip._udp.corp-b.test", 0, 5, nobody_udp, "up.corp-b.test"),
        Record::a("down.corp-b.test", LOOPBACK),
        Record::a("up.corp-b.test", LOOPBACK),
    ]);
    let uas = uas("127.0.0.1", port, "t1", "over tcp after a refusal");
    let server = hub(&dns);
    alice_sends(&server, "d2", "over tcp after a refusal", uas).await;
}

#[tokio::test]
async fn without_srv_records_the_domain_itself_is_tried_on_port_5060() {
    // Another loopback address, so that port 5060 is free for the UAS.
    let ip = "127.0.0.61";
    let dns = TestDns::start(vec![Record::a(PARTNER, Ipv4Addr::new(127, 0, 0, 61))]);
    let uas = uas(ip, 5060, "u1", "by the A record");
    let server = hub(&dns);
    alice_sends(&server, "d3", "by the A record", uas).await;
}

#[tokio::test]
async fn a_domain_with_no_records_fails_the_message_back_to_its_sender() {
    let dns = TestDns::start(vec![Record::a("elsewhere.test", LOOPBACK)]);
    let server = hub(&dns);
    let mut alice = server.login("alice").await;
    let ack = alice.message("d4", "carol@corp-b.test", "anyone?").await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let err = alice
        .expect("a failure for d4", |v| {
            v["type"] == "error" && v["id"] == "d4"
        })
        .await;
    assert_eq!(err["code"], "remote_server_not_found", "{err}");
    assert!(
        dns.queries()
            .iter()
            .any(|q| q.starts_with("corp-b.test type=1 -> NXDOMAIN")),
        "{:?}",
        dns.queries()
    );
}
