//! SIMPLE through the gateway with a scripted partner on a UDP socket of the test (the partner's
//! pinned address): a hub user subscribes to a SIP user's presence (SUBSCRIBE out, NOTIFY in),
//! the partner PUBLISHes a change, isComposing both ways, OPTIONS.

mod common;
mod sip;

use common::Server;
use entente_sip::SipMessage;
use serde_json::json;
use sip::{partner_toml, request, UdpPeer, HUB, PARTNER};
use std::time::Duration;

const ANSWER: Duration = Duration::from_secs(10);

fn pidf(note: &str, away: bool) -> String {
    let activity = if away {
        "<dm:person id=\"p1\"><rpid:activities><rpid:away/></rpid:activities></dm:person>"
    } else {
        ""
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\" xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\" entity=\"sip:carol@{PARTNER}\"><tuple id=\"t1\"><status><basic>open</basic></status><note>{note}</note></tuple>{activity}</presence>"
    )
}

/// The partner's answer to a request of the gateway.
fn response(req: &SipMessage, code: u16, to_tag: &str, extra: &[(&str, String)]) -> Vec<u8> {
    let mut resp = SipMessage::response(code, entente_sip::status::reason(code)).unwrap();
    for h in req.headers() {
        if h.is("Via") || h.is("From") || h.is("Call-ID") || h.is("CSeq") {
            resp.push_header(h.clone());
        }
    }
    resp.push("To", format!("{};tag={to_tag}", req.header("To").unwrap()))
        .unwrap();
    for (k, v) in extra {
        resp.push(k, v.clone()).unwrap();
    }
    resp.to_bytes().to_vec()
}

/// The next request the gateway sends to the partner (responses to the partner's own
/// requests are returned too, in order).
async fn next(peer: &UdpPeer) -> SipMessage {
    peer.recv(ANSWER).await.expect("the gateway sent something")
}

async fn next_request(peer: &UdpPeer, method: &str) -> SipMessage {
    loop {
        let m = next(peer).await;
        if m.method().is_some_and(|x| x.as_str() == method) {
            return m;
        }
    }
}

#[tokio::test]
async fn presence_typing_and_options_with_a_scripted_partner() {
    let peer_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer_addr = peer_socket.local_addr().unwrap();
    drop(peer_socket);
    let server = Server::start_listening(
        &partner_toml(PARTNER, Some(peer_addr), "none"),
        "sip = \"127.0.0.1:0\"\n",
    );
    let gateway = server.listeners["sip"];
    let socket = tokio::net::UdpSocket::bind(peer_addr).await.unwrap();
    let peer = UdpPeer { socket, gateway };
    let via = peer.via();
    let mut bob = server.login("bob").await;

    // OPTIONS: the gateway says what it speaks.
    peer.send(&request("OPTIONS", HUB, "carol@corp-b.test", &via, "", ""))
        .await;
    let r = peer.final_response(ANSWER).await.expect("an answer");
    assert_eq!(r.status(), Some(200), "{r}");
    assert!(
        r.header("Allow").is_some_and(|a| a.contains("MESSAGE")),
        "{r}"
    );

    // bob subscribes to carol: a SUBSCRIBE comes to the partner, which accepts and notifies.
    bob.send(json!({"type": "subscribe", "to": "carol@corp-b.test"}))
        .await;
    let sub = next_request(&peer, "SUBSCRIBE").await;
    assert_eq!(sub.header("Event"), Some("presence"), "{sub}");
    assert!(
        sub.header("From").unwrap().contains("sip:bob@hub.test"),
        "{sub}"
    );
    let contact = format!("<sip:carol@{peer_addr}>");
    peer.send(&response(
        &sub,
        200,
        "p1",
        &[("Expires", "3600".into()), ("Contact", contact.clone())],
    ))
    .await;
    let target = sub
        .header("Contact")
        .and_then(|c| entente_sip::headers::NameAddr::parse(c).ok())
        .map(|n| n.uri)
        .expect("a Contact in the SUBSCRIBE");
    let from_tag = entente_sip::headers::NameAddr::parse(sub.header("From").unwrap())
        .unwrap()
        .tag()
        .unwrap()
        .to_string();
    let body = pidf("in a meeting", false);
    let notify = format!(
        "NOTIFY {target} SIP/2.0\r\nVia: SIP/2.0/{via};branch=z9hG4bKn1\r\nMax-Forwards: 70\r\nFrom: <sip:carol@{PARTNER}>;tag=p1\r\nTo: <sip:bob@{HUB}>;tag={from_tag}\r\nCall-ID: {}\r\nCSeq: 1 NOTIFY\r\nContact: {contact}\r\nEvent: presence\r\nSubscription-State: active;expires=3600\r\nContent-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{body}",
        sub.header("Call-ID").unwrap(),
        body.len()
    );
    peer.send(notify.as_bytes()).await;
    let r = peer.final_response(ANSWER).await.expect("an answer");
    assert_eq!(r.status(), Some(200), "{r}");
    bob.expect("subscribed", |v| {
        v["type"] == "subscribed" && v["from"] == "carol@corp-b.test"
    })
    .await;
    let p = bob
        .expect("carol's presence", |v| {
            v["type"] == "presence" && v["from"] == "carol@corp-b.test"
        })
        .await;
    assert_eq!(p["show"], "available", "{p}");
    assert_eq!(p["status"], "in a meeting", "{p}");

    // The partner's presence agent publishes a change (RFC 3903): bob, a watcher, sees it.
    let body = pidf("out for lunch", true);
    let publish = request(
        "PUBLISH",
        &format!("carol@{PARTNER}"),
        "carol@corp-b.test",
        &via,
        "Event: presence\r\nExpires: 3600\r\nContent-Type: application/pidf+xml\r\n",
        &body,
    );
    peer.send(&publish).await;
    let r = peer.final_response(ANSWER).await.expect("an answer");
    assert_eq!(r.status(), Some(200), "{r}");
    assert!(r.header("SIP-ETag").is_some(), "{r}");
    let p = bob
        .expect("carol away", |v| {
            v["type"] == "presence" && v["from"] == "carol@corp-b.test" && v["show"] == "away"
        })
        .await;
    assert_eq!(p["status"], "out for lunch", "{p}");

    // isComposing from carol: bob sees her typing.
    let composing = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<isComposing xmlns=\"urn:ietf:params:xml:ns:im-iscomposing\"><state>active</state><contenttype>text/plain</contenttype></isComposing>";
    peer.send(&request(
        "MESSAGE",
        &format!("bob@{HUB}"),
        "carol@corp-b.test",
        &via,
        "Content-Type: application/im-iscomposing+xml\r\n",
        composing,
    ))
    .await;
    let r = peer.final_response(ANSWER).await.expect("an answer");
    assert_eq!(r.status(), Some(200), "{r}");
    bob.expect("carol typing", |v| {
        v["type"] == "typing" && v["from"] == "carol@corp-b.test" && v["state"] == "composing"
    })
    .await;

    // bob types to carol: an isComposing MESSAGE reaches the partner.
    bob.send(json!({"type": "typing", "to": "carol@corp-b.test", "state": "composing"}))
        .await;
    let m = next_request(&peer, "MESSAGE").await;
    assert_eq!(
        m.header("Content-Type"),
        Some("application/im-iscomposing+xml"),
        "{m}"
    );
    assert!(
        String::from_utf8_lossy(m.body()).contains("<state>active</state>"),
        "{m}"
    );
    peer.send(&response(&m, 200, "p2", &[])).await;

    // And a real message, answered 404 by the partner: bob hears it failed.
    let ack = bob
        .message("x1", "nobody@corp-b.test", "are you there?")
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let m = next_request(&peer, "MESSAGE").await;
    assert_eq!(m.body().as_ref(), b"are you there?");
    peer.send(&response(&m, 404, "p3", &[])).await;
    let err = bob
        .expect("the failure", |v| v["type"] == "error" && v["id"] == "x1")
        .await;
    assert_eq!(err["code"], "item_not_found", "{err}");
    assert_eq!(err["from"], "nobody@corp-b.test", "{err}");
}
