//! Two BOS sessions wired together by a tiny in-memory router on a virtual clock: what one
//! client sends reaches the other as OSCAR, through canonical events only.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{snac_of, Client};
use entente_model::{Address, ErrorCode, Event, Failure};
use entente_oscar::family::{buddy, feedbag, icbm, locate, oservice};
use entente_oscar::{
    Account, Channel, Delivery, Session, SessionConfig, SessionOutput, SessionRequest, Snac,
    SnacBody, Tlv, TlvList,
};
use time::OffsetDateTime;

struct Peer {
    s: Session,
    c: Client,
    inbox: Vec<Snac>,
}

struct Net {
    peers: Vec<Peer>,
    now: Instant,
}

impl Net {
    fn new() -> Net {
        Net {
            peers: Vec::new(),
            now: Instant::now(),
        }
    }

    fn sign_on(&mut self, name: &str) -> usize {
        let wall = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let mut s = Session::new(SessionConfig::new("hub.example"), self.now, wall);
        let mut c = Client::new(10);
        s.handle_input(
            &c.signon(TlvList::new().with(Tlv::new(6, name.as_bytes().to_vec()))),
            self.now,
        );
        let Some(SessionOutput::Request(SessionRequest::RedeemCookie { cookie })) = s.poll_event()
        else {
            panic!("no cookie request")
        };
        s.answer_cookie(
            Some(Account {
                address: Address::parse(&format!(
                    "{}@hub.example",
                    String::from_utf8_lossy(&cookie)
                ))
                .unwrap(),
                display_name: name.into(),
                feedbag: vec![],
                feedbag_modified: 0,
            }),
            self.now,
        );
        self.peers.push(Peer {
            s,
            c,
            inbox: Vec::new(),
        });
        let i = self.peers.len() - 1;
        self.send(
            i,
            &oservice::ClientVersions(oservice::Versions {
                versions: vec![(1, 3)],
            }),
        );
        self.send(i, &oservice::RateParamsQuery);
        self.send(
            i,
            &oservice::RateParamsAck {
                classes: vec![1, 2],
            },
        );
        self.send(i, &feedbag::Query);
        self.send(i, &feedbag::Use);
        self.send(i, &oservice::ClientReady { families: vec![] });
        assert!(self.peers[i].s.is_signed_on());
        self.peers[i].inbox.clear();
        i
    }

    fn send<T: SnacBody>(&mut self, i: usize, body: &T) -> u32 {
        self.now += Duration::from_millis(500);
        let (b, rid) = self.peers[i].c.snac(body);
        self.peers[i].s.handle_input(&b, self.now);
        self.route();
        rid
    }

    fn sign_off(&mut self, i: usize) {
        let b = self.peers[i].c.flap(Channel::SignOff, Bytes::new());
        self.peers[i].s.handle_input(&b, self.now);
        self.route();
    }

    /// Moves events between sessions until none is left; undeliverable messages fail back.
    fn route(&mut self) {
        loop {
            let mut pending = Vec::new();
            for (i, p) in self.peers.iter_mut().enumerate() {
                while let Some(b) = p.s.poll_transmit() {
                    if b[1] == Channel::Snac as u8 {
                        p.inbox.push(snac_of(&b));
                    }
                }
                while let Some(o) = p.s.poll_event() {
                    if let SessionOutput::Event(e) = o {
                        pending.push((i, e));
                    }
                }
            }
            if pending.is_empty() {
                return;
            }
            for (from, e) in pending {
                let targets: Vec<usize> = match e.to() {
                    Some(to) => self
                        .peers
                        .iter()
                        .position(|p| p.s.address() == Some(to) && !p.s.is_closed())
                        .into_iter()
                        .collect(),
                    None => (0..self.peers.len()).filter(|&j| j != from).collect(),
                };
                if targets.is_empty() {
                    if let Event::Message(m) = &e {
                        let f = Event::Failure(Failure {
                            from: m.to.clone(),
                            to: m.from.clone(),
                            id: m.id.clone(),
                            code: ErrorCode::RecipientUnavailable,
                            text: "offline".into(),
                        });
                        self.peers[from].s.handle_event(f, self.now);
                    }
                }
                for t in targets {
                    let d = self.peers[t].s.handle_event(e.clone(), self.now);
                    if e.to().is_some() {
                        assert_eq!(d, Delivery::Delivered);
                    }
                }
            }
        }
    }

    fn take(&mut self, i: usize) -> Vec<Snac> {
        std::mem::take(&mut self.peers[i].inbox)
    }
}

#[test]
fn two_clients_talk_through_canonical_events() {
    let mut net = Net::new();
    let alice = net.sign_on("alice");
    let bob = net.sign_on("bob");
    // Alice saw Bob's sign-on presence.
    let a = net.take(alice);
    assert!(a.iter().any(|s| s.kind() == (3, 0x0B)));
    net.take(bob);

    // Alice adds Bob and asks for authorisation; Bob grants it.
    net.send(
        alice,
        &feedbag::InsertItems {
            items: vec![feedbag::FeedbagItem {
                name: "Bob".into(),
                group_id: 1,
                item_id: 2,
                class: feedbag::class::BUDDY,
                attrs: TlvList::new(),
            }],
        },
    );
    net.send(
        alice,
        &feedbag::AuthRequestToHost(feedbag::AuthRequest {
            screen_name: "bob".into(),
            reason: "hi".into(),
        }),
    );
    let b = net.take(bob);
    let req: Vec<_> = b.iter().filter(|s| s.kind() == (0x13, 0x19)).collect();
    assert_eq!(
        req.len(),
        2,
        "one for the new buddy item, one for the explicit request"
    );
    assert_eq!(
        req[0]
            .body_as::<feedbag::AuthRequestToClient>()
            .unwrap()
            .0
            .screen_name,
        "alice"
    );
    net.send(
        bob,
        &feedbag::AuthReplyToHost(feedbag::AuthReply {
            screen_name: "alice".into(),
            accepted: true,
            reason: String::new(),
        }),
    );
    let a = net.take(alice);
    let reply = a.iter().find(|s| s.kind() == (0x13, 0x1B)).unwrap();
    let reply: feedbag::AuthReplyToClient = reply.body_as().unwrap();
    assert!(reply.0.accepted);
    assert_eq!(reply.0.screen_name, "bob");

    // An IM from Alice arrives at Bob as HTML-escaped text.
    let part = icbm::TextPart::from_text("<HTML><BODY>fish &amp; chips?</BODY></HTML>");
    let mut data = bytes::BytesMut::new();
    bytes::BufMut::put_u16(&mut data, part.charset);
    bytes::BufMut::put_u16(&mut data, 0);
    bytes::BufMut::put_slice(&mut data, &part.data);
    let msg = icbm::ImMessage {
        fragments: vec![
            icbm::Fragment {
                id: 5,
                version: 1,
                data: Bytes::from_static(&[1, 1, 1, 2]),
            },
            icbm::Fragment {
                id: 1,
                version: 1,
                data: data.freeze(),
            },
        ],
    };
    net.send(
        alice,
        &icbm::ChannelMsgToHost {
            cookie: [7; 8],
            channel: 1,
            screen_name: "Bob".into(),
            tlvs: TlvList::new().with(Tlv::new(2, msg.encode())),
        },
    );
    let b = net.take(bob);
    let im: icbm::ChannelMsgToClient = b
        .iter()
        .find(|s| s.kind() == (4, 7))
        .unwrap()
        .body_as()
        .unwrap();
    assert_eq!(im.sender.screen_name, "alice");
    assert_eq!(im.message().unwrap().text().unwrap(), "fish &amp; chips?");

    // Bob types; Alice sees it.
    net.send(
        bob,
        &icbm::ClientEvent {
            cookie: [0; 8],
            channel: 1,
            screen_name: "alice".into(),
            event: 2,
        },
    );
    let a = net.take(alice);
    let t: icbm::ClientEvent = a
        .iter()
        .find(|s| s.kind() == (4, 0x14))
        .unwrap()
        .body_as()
        .unwrap();
    assert_eq!((t.screen_name.as_str(), t.event), ("bob", 2));

    // Bob goes away; Alice sees the away flag.
    net.send(
        bob,
        &locate::SetInfo(locate::InfoFields {
            away: Some(Bytes::from_static(b"back soon")),
            ..Default::default()
        }),
    );
    let a = net.take(alice);
    let arr: buddy::Arrived = a
        .iter()
        .find(|s| s.kind() == (3, 0x0B))
        .unwrap()
        .body_as()
        .unwrap();
    assert!(arr.users[0].is_away());

    // Bob signs off; Alice sees him depart, and her next IM fails back as 04,01.
    net.sign_off(bob);
    let a = net.take(alice);
    assert!(a.iter().any(|s| s.kind() == (3, 0x0C)));
    let rid = net.send(
        alice,
        &icbm::ChannelMsgToHost {
            cookie: [8; 8],
            channel: 1,
            screen_name: "bob".into(),
            tlvs: TlvList::new().with(Tlv::new(
                2,
                icbm::ImMessage::from_text("still there?").encode(),
            )),
        },
    );
    let a = net.take(alice);
    let err = a.iter().find(|s| s.kind() == (4, 1)).unwrap();
    assert_eq!(err.header.request_id, rid);
    assert_eq!(&err.body[..2], &[0, 4]);
}
