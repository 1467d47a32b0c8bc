//! Replays the sign-on of a real libpurple client (Pidgin's AIM plugin, as captured in
//! shared/design/OSCAR-NOTES.md) through the login and BOS machines until it is signed on, then
//! exercises messages, typing, presence, buddy-list edits and sign-off.

mod common;

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use common::{snac_of, tlv_str, u16s, Client};
use entente_model::{
    Address, ChatState, ErrorCode, Event, Failure, Message, Presence, PresenceKind, Show,
    Subscription, SubscriptionKind, Typing,
};
use entente_oscar::family::bucp::{self, tlv};
use entente_oscar::family::feedbag::{self, FeedbagItem};
use entente_oscar::family::{buddy, icbm, locate, oservice};
use entente_oscar::{
    Account, AccountAnswer, AccountRequest, Channel, CloseReason, Credential, Delivery, Login,
    LoginConfig, LoginErrorCode, LoginOutput, Session, SessionConfig, SessionOutput,
    SessionRequest, Snac, SnacBody, Tlv, TlvList,
};
use time::OffsetDateTime;

const HUB: &str = "hub.example";
const BOS: &str = "127.0.0.2:5190";

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

fn drain_login(l: &mut Login) -> (Vec<Snac>, Vec<Bytes>, Vec<LoginOutput>) {
    let mut raw = Vec::new();
    while let Some(b) = l.poll_transmit() {
        raw.push(b);
    }
    let snacs = raw
        .iter()
        .filter(|b| b[1] == Channel::Snac as u8)
        .map(|b| snac_of(b))
        .collect();
    let mut outs = Vec::new();
    while let Some(o) = l.poll_event() {
        outs.push(o);
    }
    (snacs, raw, outs)
}

/// The 17,02 libpurple sends (TLVs in its order).
fn purple_login_request(screen_name: &str, key: &[u8], password: &str) -> bucp::LoginRequest {
    let hash = bucp::strong_hash(key, &bucp::md5_password(password.as_bytes()));
    let tlvs = TlvList::new()
        .with(tlv_str(tlv::SCREEN_NAME, screen_name))
        .with(Tlv::new(tlv::PASSWORD_HASH, hash.to_vec()))
        .with(Tlv::new(tlv::STRONG_HASH, vec![]))
        .with(tlv_str(
            tlv::CLIENT_ID_STRING,
            "AOL Instant Messenger, version 5.1.3036/WIN32",
        ))
        .with(Tlv::u16(0x16, 0x0109))
        .with(Tlv::u16(0x17, 5))
        .with(Tlv::u16(0x18, 1))
        .with(Tlv::u16(0x19, 0))
        .with(Tlv::u16(0x1A, 3036))
        .with(Tlv::u32(0x14, 0x611))
        .with(tlv_str(0x0F, "en"))
        .with(tlv_str(0x0E, "us"))
        .with(Tlv::u8(0x4A, 1));
    bucp::LoginRequest { tlvs }
}

/// Runs the BUCP login; returns the cookie on success, or the error code.
fn bucp_login(
    screen_name: &str,
    password: &str,
    answer: impl Fn(&AccountRequest) -> AccountAnswer,
) -> Result<Bytes, u16> {
    let now = Instant::now();
    let mut login = Login::new(LoginConfig::new(HUB, BOS), now, [7; 32]);
    let mut c = Client::new(0x1234);
    // The client sends its hello and 17,06 at once, without waiting for the host's hello.
    let mut first = c.hello();
    let key_req = bucp::ChallengeRequest {
        tlvs: TlvList::new()
            .with(tlv_str(tlv::SCREEN_NAME, screen_name))
            .with(Tlv::new(0x4B, vec![]))
            .with(Tlv::new(0x5A, vec![])),
    };
    first.extend(c.snac(&key_req).0);
    login.handle_input(&first, now);
    let (snacs, raw, _) = drain_login(&mut login);
    assert_eq!(raw[0].as_ref()[..2], [0x2A, 0x01], "host hello first");
    assert_eq!(&raw[0][6..], &[0, 0, 0, 1]);
    let key = snacs[0].body_as::<bucp::Challenge>().unwrap().key;
    assert!(!key.is_empty());

    let (bytes, rid) = c.snac(&purple_login_request(screen_name, &key, password));
    login.handle_input(&bytes, now);
    let (_, _, outs) = drain_login(&mut login);
    let LoginOutput::Request(req) = &outs[0] else {
        panic!("expected a request, got {outs:?}")
    };
    assert!(matches!(req, AccountRequest::Md5Password { .. }));
    login.answer(answer(req), now);
    let (snacs, _, outs) = drain_login(&mut login);
    assert_eq!(snacs.len(), 1);
    assert_eq!(snacs[0].header.request_id, rid);
    let reply: bucp::LoginReply = snacs[0].body_as().unwrap();
    if let Some(code) = reply.tlvs.get_u16(tlv::ERROR_CODE) {
        assert!(matches!(outs[0], LoginOutput::Failed { .. }));
        return Err(code);
    }
    assert_eq!(reply.tlvs.get_string(tlv::BOS_ADDRESS).unwrap(), BOS);
    assert_eq!(
        reply.tlvs.get_string(tlv::SCREEN_NAME).unwrap(),
        "Alice Smith"
    );
    let cookie = reply.tlvs.get_bytes(tlv::COOKIE).unwrap().clone();
    let LoginOutput::Authenticated {
        account,
        cookie: c2,
        ..
    } = &outs[0]
    else {
        panic!("expected Authenticated, got {outs:?}")
    };
    assert_eq!(account, &addr("alicesmith@hub.example"));
    assert_eq!(c2, &cookie);
    assert_eq!(outs[1], LoginOutput::Closed(CloseReason::Done));
    Ok(cookie)
}

fn alice_store(req: &AccountRequest) -> AccountAnswer {
    match req {
        AccountRequest::Md5Password { account, .. }
            if account.to_string() == "alicesmith@hub.example" =>
        {
            AccountAnswer::Found {
                display_name: "Alice Smith".into(),
                credential: Credential::Md5Password(bucp::md5_password(b"s3cret")),
            }
        }
        _ => AccountAnswer::NoSuchAccount,
    }
}

#[test]
fn bucp_login_succeeds_and_refuses_as_libpurple_expects() {
    assert!(bucp_login("alice smith", "s3cret", alice_store).is_ok());
    assert_eq!(
        bucp_login("alice smith", "wrong", alice_store),
        Err(LoginErrorCode::WrongPassword.as_u16())
    );
    assert_eq!(
        bucp_login("alice smith", "wrong", alice_store).unwrap_err(),
        5
    );
    assert_eq!(bucp_login("nobody", "x", alice_store).unwrap_err(), 1);
    assert_eq!(
        bucp_login("alice smith", "s3cret", |_| AccountAnswer::RateLimited).unwrap_err(),
        0x18
    );
}

#[test]
fn repeated_failures_get_the_rate_limit_code_and_close() {
    let now = Instant::now();
    let mut login = Login::new(LoginConfig::new(HUB, BOS), now, [9; 32]);
    let mut c = Client::new(1);
    login.handle_input(&c.hello(), now);
    drain_login(&mut login);
    let mut codes = Vec::new();
    for _ in 0..4 {
        let key_req = bucp::ChallengeRequest {
            tlvs: TlvList::new().with(tlv_str(tlv::SCREEN_NAME, "alicesmith")),
        };
        login.handle_input(&c.snac(&key_req).0, now);
        let (snacs, _, _) = drain_login(&mut login);
        let Ok(ch) = snacs[0].body_as::<bucp::Challenge>() else {
            let r: bucp::LoginReply = snacs[0].body_as().unwrap();
            codes.push(r.tlvs.get_u16(tlv::ERROR_CODE).unwrap());
            break;
        };
        login.handle_input(
            &c.snac(&purple_login_request("alicesmith", &ch.key, "bad"))
                .0,
            now,
        );
        drain_login(&mut login);
        login.answer(
            alice_store(&AccountRequest::Md5Password {
                screen_name: "alicesmith".into(),
                account: addr("alicesmith@hub.example"),
            }),
            now,
        );
        let (snacs, _, _) = drain_login(&mut login);
        let r: bucp::LoginReply = snacs[0].body_as().unwrap();
        codes.push(r.tlvs.get_u16(tlv::ERROR_CODE).unwrap());
    }
    assert_eq!(codes, vec![5, 5, 5, 0x18]);
    assert!(login.is_closed());
}

#[test]
fn roasted_channel_one_login() {
    let now = Instant::now();
    let mut login = Login::new(LoginConfig::new(HUB, BOS), now, [3; 32]);
    let mut c = Client::new(77);
    let tlvs = TlvList::new()
        .with(tlv_str(tlv::SCREEN_NAME, "Alice Smith"))
        .with(Tlv::new(tlv::ROASTED_PASSWORD, bucp::roast(b"s3cret")))
        .with(tlv_str(
            tlv::CLIENT_ID_STRING,
            "AOL Instant Messenger (SM), version 3.0",
        ));
    login.handle_input(&c.signon(tlvs), now);
    let (_, _, outs) = drain_login(&mut login);
    assert_eq!(
        outs,
        vec![LoginOutput::Request(AccountRequest::VerifyPassword {
            screen_name: "Alice Smith".into(),
            account: addr("alicesmith@hub.example"),
            password: "s3cret".into()
        })]
    );
    login.answer(
        AccountAnswer::Found {
            display_name: "Alice Smith".into(),
            credential: Credential::Verified,
        },
        now,
    );
    let (_, raw, outs) = drain_login(&mut login);
    // The answer to a roasted login comes on channel 4 (sign-off) with the BOS address and cookie.
    let f = common::frame(&raw[0]);
    assert_eq!(f.channel, Channel::SignOff);
    let mut r = entente_oscar::wire::Reader::new(&f.payload);
    let t = TlvList::decode_rest(&mut r).unwrap();
    assert_eq!(t.get_string(tlv::BOS_ADDRESS).unwrap(), BOS);
    assert_eq!(t.get_bytes(tlv::COOKIE).unwrap().len(), 32);
    assert!(matches!(outs[0], LoginOutput::Authenticated { .. }));

    // A wrong roasted password is answered on channel 4 with code 5.
    let mut login = Login::new(LoginConfig::new(HUB, BOS), now, [4; 32]);
    let tlvs = TlvList::new()
        .with(tlv_str(tlv::SCREEN_NAME, "alicesmith"))
        .with(Tlv::new(tlv::ROASTED_PASSWORD, bucp::roast(b"nope")));
    login.handle_input(&c.signon(tlvs), now);
    drain_login(&mut login);
    login.answer(AccountAnswer::WrongPassword, now);
    let (_, raw, _) = drain_login(&mut login);
    let f = common::frame(&raw[0]);
    let mut r = entente_oscar::wire::Reader::new(&f.payload);
    let t = TlvList::decode_rest(&mut r).unwrap();
    assert_eq!(t.get_u16(tlv::ERROR_CODE), Some(5));
    assert!(login.is_closed());
}

// ---- BOS ---------------------------------------------------------------------------------

struct Bos {
    s: Session,
    c: Client,
    now: Instant,
}

impl Bos {
    fn send(&mut self, bytes: &[u8]) {
        self.s.handle_input(bytes, self.now);
    }

    fn snac<T: SnacBody>(&mut self, body: &T) -> u32 {
        let (b, rid) = self.c.snac(body);
        self.send(&b);
        rid
    }

    fn raw(&mut self, family: u16, subtype: u16, body: impl Into<Bytes>) -> u32 {
        let (b, rid) = self.c.raw_snac(family, subtype, body);
        self.send(&b);
        rid
    }

    fn out(&mut self) -> Vec<Snac> {
        let mut v = Vec::new();
        while let Some(b) = self.s.poll_transmit() {
            v.push(snac_of(&b));
        }
        v
    }

    fn events(&mut self) -> Vec<SessionOutput> {
        let mut v = Vec::new();
        while let Some(o) = self.s.poll_event() {
            v.push(o);
        }
        v
    }
}

fn item(name: &str, gid: u16, iid: u16, class: u16, attrs: TlvList) -> FeedbagItem {
    FeedbagItem {
        name: name.into(),
        group_id: gid,
        item_id: iid,
        class,
        attrs,
    }
}

/// Drives a BOS connection through libpurple's sign-on, checking every answer on the way.
fn signed_on_alice(cookie: Bytes) -> Bos {
    let now = Instant::now();
    let wall = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
    let mut bos = Bos {
        s: Session::new(SessionConfig::new(HUB), now, wall),
        c: Client::new(0x5000),
        now,
    };
    let hello = bos.s.poll_transmit().unwrap();
    assert_eq!(hello.as_ref()[..2], [0x2A, 0x01]);

    // Channel 1 carries only the cookie TLV.
    let b = bos
        .c
        .signon(TlvList::new().with(Tlv::new(tlv::COOKIE, cookie.clone())));
    bos.send(&b);
    assert_eq!(
        bos.events(),
        vec![SessionOutput::Request(SessionRequest::RedeemCookie {
            cookie
        })]
    );
    assert!(
        bos.out().is_empty(),
        "nothing before the cookie is redeemed"
    );
    bos.s.answer_cookie(
        Some(Account {
            address: addr("alicesmith@hub.example"),
            display_name: "Alice Smith".into(),
            feedbag: vec![item("", 0, 0, feedbag::class::GROUP, TlvList::new())],
            feedbag_modified: 1_600_000_000,
        }),
        now,
    );
    let out = bos.out();
    let online: oservice::HostOnline = out[0].body_as().unwrap();
    for f in [0x01, 0x02, 0x03, 0x04, 0x09, 0x13] {
        assert!(online.families.contains(&f));
    }
    assert!(
        !online.families.contains(&0x15),
        "no ICQ family: no ICQ requests"
    );

    // 01,17 → 01,18 → 01,06 → 01,07 → 01,08.
    let versions = oservice::ClientVersions(oservice::Versions {
        versions: vec![
            (0x13, 4),
            (0x09, 1),
            (0x04, 1),
            (0x03, 1),
            (0x02, 1),
            (0x01, 3),
        ],
    });
    let rid = bos.snac(&versions);
    let out = bos.out();
    assert_eq!((out[0].kind(), out[0].header.request_id), ((1, 0x18), rid));
    assert_eq!(
        out[0]
            .body_as::<oservice::HostVersions>()
            .unwrap()
            .0
            .versions
            .len(),
        6
    );
    let rid = bos.snac(&oservice::RateParamsQuery);
    let out = bos.out();
    assert_eq!(out[0].header.request_id, rid);
    let rates: oservice::RateParamsReply = out[0].body_as().unwrap();
    assert_eq!(rates.classes.len(), 2);
    bos.snac(&oservice::RateParamsAck {
        classes: vec![1, 2],
    });
    assert!(bos.out().is_empty());

    // The burst: 01,0E, 13,02, 13,04, 02,02, 03,02, 04,04, 09,02.
    let mut rids = Vec::new();
    rids.push(bos.snac(&oservice::SelfInfoQuery));
    rids.push(bos.raw(0x13, 0x02, u16s(&[0x000B, 0x0002, 0x003F])));
    rids.push(bos.snac(&feedbag::Query));
    rids.push(bos.snac(&locate::RightsQuery::default()));
    rids.push(bos.raw(0x03, 0x02, u16s(&[0x0005, 0x0002, 0x0003])));
    rids.push(bos.snac(&icbm::ParamsQuery));
    rids.push(bos.snac(&entente_oscar::family::pd::RightsQuery::default()));
    let out = bos.out();
    let kinds: Vec<_> = out.iter().map(|s| s.kind()).collect();
    assert_eq!(
        kinds,
        vec![
            (1, 0x0F),
            (0x13, 0x03),
            (0x13, 0x06),
            (2, 3),
            (3, 3),
            (4, 5),
            (9, 3)
        ]
    );
    for (s, rid) in out.iter().zip(&rids) {
        assert_eq!(
            s.header.request_id,
            *rid,
            "{:?} answers its request",
            s.kind()
        );
    }
    let me: oservice::SelfInfo = out[0].body_as().unwrap();
    assert_eq!(me.info.screen_name, "Alice Smith");
    let bag: feedbag::Reply = out[2].body_as().unwrap();
    assert_eq!(bag.items.len(), 1);
    assert_eq!(bag.last_modified, 1_600_000_000);
    let rights: feedbag::Rights = out[1].body_as().unwrap();
    assert!(rights.max_items_by_class[0] >= 100);

    // 13,11, 13,08 (root group and PD info), 13,07, 04,02, 01,1E ×2, 01,11, 01,04 ×2, 01,02.
    bos.snac(&feedbag::StartCluster);
    let pd_info = item(
        "",
        0,
        0x1234,
        feedbag::class::PD_INFO,
        TlvList::new()
            .with(Tlv::u8(feedbag::attr::PD_MODE, 1))
            .with(Tlv::u32(feedbag::attr::PD_MASK, 0xFFFF_FFFF)),
    );
    let rid = bos.snac(&feedbag::InsertItems {
        items: vec![
            item("", 0, 0, feedbag::class::GROUP, TlvList::new()),
            pd_info,
        ],
    });
    let out = bos.out();
    assert_eq!(out[0].header.request_id, rid);
    // The root group exists already; the PD item is new.
    assert_eq!(
        out[0].body_as::<feedbag::Status>().unwrap().codes,
        vec![feedbag::status::ALREADY_EXISTS, feedbag::status::OK]
    );
    bos.snac(&feedbag::Use);
    bos.snac(&icbm::SetParams(icbm::IcbmParams {
        channel: 0,
        flags: 0x0B,
        max_message_len: 8000,
        max_sender_warning: 999,
        max_receiver_warning: 999,
        min_interval_ms: 0,
    }));
    bos.snac(&oservice::SetUserInfoFields {
        tlvs: TlvList::new().with(Tlv::u32(0x06, 0x0000_0000)),
    });
    bos.snac(&oservice::SetUserInfoFields {
        tlvs: TlvList::new().with(Tlv::new(0x1D, vec![0, 2, 4, 0, 0, 0, 0])),
    });
    bos.snac(&oservice::IdleNotification { idle_seconds: 0 });
    let r18 = bos.snac(&oservice::ServiceRequest {
        family: 0x18,
        tlvs: TlvList::new(),
    });
    let r0d = bos.snac(&oservice::ServiceRequest {
        family: 0x0D,
        tlvs: TlvList::new(),
    });
    let out = bos.out();
    // Service requests are answered with errors, which do not block sign-on.
    assert_eq!(out.len(), 2);
    for (s, rid) in out.iter().zip([r18, r0d]) {
        assert_eq!((s.kind(), s.header.request_id), ((1, 1), rid));
    }
    assert!(!bos.s.is_signed_on());
    let ready = oservice::ClientReady {
        families: [
            (0x13, 4),
            (0x09, 1),
            (0x04, 1),
            (0x03, 1),
            (0x02, 1),
            (0x01, 3),
        ]
        .iter()
        .map(|&(family, version)| oservice::FamilyTool {
            family,
            version,
            tool_id: 0x0110,
            tool_version: 0x164F,
        })
        .collect(),
    };
    bos.snac(&ready);
    assert!(bos.s.is_signed_on());
    let ev = bos.events();
    let me = addr("alicesmith@hub.example");
    assert!(ev.contains(&SessionOutput::SignedOn {
        address: me.clone()
    }));
    assert!(ev.contains(&SessionOutput::Event(Event::Presence(Presence {
        from: me.clone(),
        to: None,
        kind: PresenceKind::Available {
            show: Show::Available,
            status: None
        }
    }))));
    // 04,10 (offline messages), then the buddy icon item in its own edit.
    let rid = bos.snac(&icbm::OfflineRetrieve);
    let out = bos.out();
    assert_eq!((out[0].kind(), out[0].header.request_id), ((4, 0x17), rid));
    bos.snac(&feedbag::StartCluster);
    bos.snac(&feedbag::InsertItems {
        items: vec![item(
            "1",
            0,
            0x5151,
            feedbag::class::BART,
            TlvList::new().with(Tlv::new(0xD5, vec![1, 16, 0xAB, 0xCD])),
        )],
    });
    bos.snac(&feedbag::EndCluster);
    let out = bos.out();
    assert_eq!(out[0].body_as::<feedbag::Status>().unwrap().codes, vec![0]);
    bos.events();
    assert_eq!(bos.s.seq_gaps(), 0);
    bos
}

fn cookie() -> Bytes {
    bucp_login("alice smith", "s3cret", alice_store).unwrap()
}

#[test]
fn libpurple_signs_on() {
    let bos = signed_on_alice(cookie());
    assert_eq!(bos.s.feedbag().len(), 3);
}

#[test]
fn a_bad_cookie_is_signed_off() {
    let now = Instant::now();
    let mut s = Session::new(SessionConfig::new(HUB), now, OffsetDateTime::UNIX_EPOCH);
    let mut c = Client::new(1);
    s.handle_input(
        &c.signon(TlvList::new().with(Tlv::new(6, vec![1, 2, 3]))),
        now,
    );
    assert!(matches!(s.poll_event(), Some(SessionOutput::Request(_))));
    s.answer_cookie(None, now);
    assert_eq!(
        s.poll_event(),
        Some(SessionOutput::Closed(CloseReason::BadCookie))
    );
    s.poll_transmit();
    assert_eq!(
        common::frame(&s.poll_transmit().unwrap()).channel,
        Channel::SignOff
    );
}

fn im(cookie: [u8; 8], to: &str, part: icbm::TextPart, ack: bool) -> icbm::ChannelMsgToHost {
    let mut data = BytesMut::new();
    data.put_u16(part.charset);
    data.put_u16(part.subset);
    data.put_slice(&part.data);
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
    let mut tlvs = TlvList::new().with(Tlv::new(2, msg.encode()));
    if ack {
        tlvs.push(Tlv::new(3, vec![]));
    }
    icbm::ChannelMsgToHost {
        cookie,
        channel: 1,
        screen_name: to.into(),
        tlvs,
    }
}

#[test]
fn instant_messages_both_ways() {
    let mut bos = signed_on_alice(cookie());
    let me = addr("alicesmith@hub.example");

    // ASCII, wrapped in HTML with a bare `&`, asking for a host ack.
    let html = "<HTML><BODY>Tom & Jerry &lt;3</BODY></HTML>";
    let part = icbm::TextPart {
        charset: 0,
        subset: 0,
        data: Bytes::copy_from_slice(html.as_bytes()),
    };
    let rid = bos.snac(&im([1, 2, 3, 4, 5, 6, 7, 8], "Bob", part, true));
    let out = bos.out();
    let ack: icbm::HostAck = out[0].body_as().unwrap();
    assert_eq!(out[0].header.request_id, rid);
    assert_eq!(
        (ack.cookie, ack.screen_name.as_str()),
        ([1, 2, 3, 4, 5, 6, 7, 8], "Bob")
    );
    let ev = bos.events();
    let SessionOutput::Event(Event::Message(m)) = &ev[0] else {
        panic!("{ev:?}")
    };
    assert_eq!((&m.from, &m.to), (&me, &addr("bob@hub.example")));
    assert_eq!(m.body, "Tom & Jerry <3");
    assert_eq!(m.id, "0102030405060708");
    assert_eq!(m.ts.unix_timestamp(), 1_700_000_000);

    // UCS-2BE to a federated address, no ack asked.
    let part = icbm::TextPart::from_text("<HTML><BODY>Grüße, Zoë 😀</BODY></HTML>");
    assert_eq!(part.charset, icbm::charset::UCS2BE);
    bos.snac(&im([9; 8], "carol@corp-a.example", part, false));
    assert!(bos.out().is_empty());
    let ev = bos.events();
    let SessionOutput::Event(Event::Message(m)) = &ev[0] else {
        panic!("{ev:?}")
    };
    assert_eq!(m.to, addr("carol@corp-a.example"));
    assert_eq!(m.body, "Grüße, Zoë 😀");

    // Latin-1.
    let part = icbm::TextPart {
        charset: icbm::charset::LATIN1,
        subset: 0,
        data: Bytes::from_static(b"caf\xe9"),
    };
    bos.snac(&im([10; 8], "bob", part, false));
    let ev = bos.events();
    assert!(matches!(&ev[0], SessionOutput::Event(Event::Message(m)) if m.body == "café"));

    // A bad recipient name is an ICBM error for that request.
    let part = icbm::TextPart::from_text("hi");
    let rid = bos.snac(&im([11; 8], "a<b", part, true));
    let out = bos.out();
    assert_eq!((out[0].kind(), out[0].header.request_id), ((4, 1), rid));
    assert_eq!(&out[0].body[..2], &[0, 4]);

    // The router reports that bob is offline: 04,01 for the original request.
    let rid = bos.snac(&im(
        [12; 8],
        "bob",
        icbm::TextPart::from_text("there?"),
        false,
    ));
    bos.events();
    let d = bos.s.handle_event(
        Event::Failure(Failure {
            from: addr("bob@hub.example"),
            to: me.clone(),
            id: "0c0c0c0c0c0c0c0c".into(),
            code: ErrorCode::RecipientUnavailable,
            text: "offline".into(),
        }),
        bos.now,
    );
    assert_eq!(d, Delivery::Delivered);
    let out = bos.out();
    assert_eq!((out[0].kind(), out[0].header.request_id), ((4, 1), rid));
    assert_eq!(&out[0].body[..2], &[0, 4]);

    // Inbound: HTML-escaped text from a federated sender, shown by full address.
    let d = bos.s.handle_event(
        Event::Message(Message {
            id: "x1".into(),
            from: addr("carol@corp-a.example"),
            to: me.clone(),
            body: "1 < 2 & \"so\"\nbye".into(),
            thread: None,
            ts: OffsetDateTime::UNIX_EPOCH,
        }),
        bos.now,
    );
    assert_eq!(d, Delivery::Delivered);
    let out = bos.out();
    let m: icbm::ChannelMsgToClient = out[0].body_as().unwrap();
    assert_eq!(m.sender.screen_name, "carol@corp-a.example");
    assert_eq!(
        m.message().unwrap().text().unwrap(),
        "1 &lt; 2 &amp; &quot;so&quot;<BR>bye"
    );
    // A delivery receipt goes back to the sender.
    let ev = bos.events();
    assert!(matches!(&ev[0], SessionOutput::Event(Event::Receipt(r)) if r.id == "x1"));

    // Not for this user.
    let d = bos.s.handle_event(
        Event::Message(Message {
            id: "x2".into(),
            from: addr("carol@corp-a.example"),
            to: addr("someoneelse@hub.example"),
            body: "hi".into(),
            thread: None,
            ts: OffsetDateTime::UNIX_EPOCH,
        }),
        bos.now,
    );
    assert_eq!(d, Delivery::Refused(ErrorCode::ItemNotFound));
}

#[test]
fn typing_presence_and_profile() {
    let mut bos = signed_on_alice(cookie());
    let me = addr("alicesmith@hub.example");
    let bob = addr("bob@hub.example");

    bos.snac(&icbm::ClientEvent {
        cookie: [0; 8],
        channel: 1,
        screen_name: "Bob".into(),
        event: icbm::typing::BEGUN,
    });
    assert_eq!(
        bos.events(),
        vec![SessionOutput::Event(Event::Typing(Typing {
            from: me.clone(),
            to: bob.clone(),
            state: ChatState::Composing
        }))]
    );
    bos.s.handle_event(
        Event::Typing(Typing {
            from: bob.clone(),
            to: me.clone(),
            state: ChatState::Paused,
        }),
        bos.now,
    );
    let out = bos.out();
    let e: icbm::ClientEvent = out[0].body_as().unwrap();
    assert_eq!(
        (e.screen_name.as_str(), e.event),
        ("bob", icbm::typing::PAUSED)
    );

    // Bob arrives away, then leaves.
    bos.s.handle_event(
        Event::Presence(Presence {
            from: bob.clone(),
            to: None,
            kind: PresenceKind::Available {
                show: Show::Away,
                status: Some("lunch".into()),
            },
        }),
        bos.now,
    );
    let out = bos.out();
    let a: buddy::Arrived = out[0].body_as().unwrap();
    assert_eq!(a.users[0].screen_name, "bob");
    assert!(a.users[0].is_away());
    bos.s.handle_event(
        Event::Presence(Presence {
            from: bob.clone(),
            to: None,
            kind: PresenceKind::Unavailable { status: None },
        }),
        bos.now,
    );
    let out = bos.out();
    assert_eq!(out[0].kind(), (3, 0x0C));

    // Away message via 02,04: presence broadcast; back again: available.
    bos.snac(&locate::SetInfo(locate::InfoFields {
        away_mime: Some("text/aolrtf; charset=\"us-ascii\"".into()),
        away: Some(Bytes::from_static(b"<HTML>Gone <B>fishing</B></HTML>")),
        profile: Some(Bytes::from_static(b"<HTML>Hi &amp; welcome</HTML>")),
        ..Default::default()
    }));
    let ev = bos.events();
    assert!(
        ev.contains(&SessionOutput::Request(SessionRequest::StoreProfile {
            profile: "Hi & welcome".into()
        }))
    );
    assert!(ev.contains(&SessionOutput::Event(Event::Presence(Presence {
        from: me.clone(),
        to: None,
        kind: PresenceKind::Available {
            show: Show::Away,
            status: Some("Gone fishing".into())
        }
    }))));
    let rid = bos.snac(&oservice::SelfInfoQuery);
    let out = bos.out();
    assert_eq!(out[0].header.request_id, rid);
    assert!(out[0]
        .body_as::<oservice::SelfInfo>()
        .unwrap()
        .info
        .is_away());

    // A probe is answered with the current presence.
    bos.s.handle_event(
        Event::Presence(Presence {
            from: bob.clone(),
            to: Some(me.clone()),
            kind: PresenceKind::Probe,
        }),
        bos.now,
    );
    let ev = bos.events();
    assert!(
        matches!(&ev[0], SessionOutput::Event(Event::Presence(p)) if p.to == Some(bob.clone()))
    );

    // User info: the driver answers the lookup.
    let rid = bos.snac(&locate::UserInfoQuery2 {
        flags: locate::query_flags::PROFILE,
        screen_name: "Bob".into(),
    });
    let ev = bos.events();
    let SessionOutput::Request(SessionRequest::UserInfo { id, who }) = &ev[0] else {
        panic!("{ev:?}")
    };
    assert_eq!(who, &bob);
    bos.s.answer_user_info(
        *id,
        Some(entente_oscar::UserDetails {
            profile: Some("I <3 fish".into()),
            away: None,
        }),
        bos.now,
    );
    let out = bos.out();
    assert_eq!(out[0].header.request_id, rid);
    let r: locate::UserInfoReply = out[0].body_as().unwrap();
    assert_eq!(r.fields.profile.unwrap().as_ref(), b"I &lt;3 fish");
    let rid = bos.snac(&locate::UserInfoQuery {
        kind: locate::query_kind::AWAY,
        screen_name: "nobody".into(),
    });
    let ev = bos.events();
    let SessionOutput::Request(SessionRequest::UserInfo { id, .. }) = &ev[0] else {
        panic!("{ev:?}")
    };
    bos.s.answer_user_info(*id, None, bos.now);
    let out = bos.out();
    assert_eq!((out[0].kind(), out[0].header.request_id), ((2, 1), rid));
}

#[test]
fn buddy_list_edits_and_authorisation() {
    let mut bos = signed_on_alice(cookie());
    let me = addr("alicesmith@hub.example");
    // Adding a buddy: 13,11; 13,08 (group "Buddies" and the buddy); 13,09 (root order); 13,12.
    bos.snac(&feedbag::StartCluster);
    let rid = bos.snac(&feedbag::InsertItems {
        items: vec![
            item("Buddies", 7, 0, feedbag::class::GROUP, TlvList::new()),
            item(
                "carol@corp-a.example",
                7,
                0x0101,
                feedbag::class::BUDDY,
                TlvList::new(),
            ),
        ],
    });
    bos.snac(&feedbag::UpdateItems {
        items: vec![item(
            "",
            0,
            0,
            feedbag::class::GROUP,
            TlvList::new().with(Tlv::new(feedbag::attr::ORDER, u16s(&[7]))),
        )],
    });
    bos.snac(&feedbag::EndCluster);
    let out = bos.out();
    assert_eq!(out[0].header.request_id, rid);
    assert_eq!(
        out[0].body_as::<feedbag::Status>().unwrap().codes,
        vec![0, 0]
    );
    assert_eq!(out[1].body_as::<feedbag::Status>().unwrap().codes, vec![0]);
    let ev = bos.events();
    let carol = addr("carol@corp-a.example");
    assert!(
        ev.contains(&SessionOutput::Event(Event::Subscription(Subscription {
            from: me.clone(),
            to: carol.clone(),
            kind: SubscriptionKind::Subscribe
        })))
    );
    assert!(ev.iter().any(|o| matches!(
        o,
        SessionOutput::Request(SessionRequest::StoreFeedbag { items, .. }) if items.len() == 2
    )));

    // Deleting an item that is not there; updating one that is not there.
    bos.snac(&feedbag::DeleteItems {
        items: vec![item("zed", 7, 0x0999, 0, TlvList::new())],
    });
    let out = bos.out();
    assert_eq!(
        out[0].body_as::<feedbag::Status>().unwrap().codes,
        vec![feedbag::status::NOT_FOUND]
    );

    // Authorisation: the client asks; a request arrives; the client grants it.
    bos.snac(&feedbag::AuthRequestToHost(feedbag::AuthRequest {
        screen_name: "carol@corp-a.example".into(),
        reason: "please".into(),
    }));
    bos.s.handle_event(
        Event::Subscription(Subscription {
            from: addr("dave@hub.example"),
            to: me.clone(),
            kind: SubscriptionKind::Subscribe,
        }),
        bos.now,
    );
    let out = bos.out();
    let req: feedbag::AuthRequestToClient = out[0].body_as().unwrap();
    assert_eq!(req.0.screen_name, "dave");
    bos.snac(&feedbag::AuthReplyToHost(feedbag::AuthReply {
        screen_name: "dave".into(),
        accepted: true,
        reason: String::new(),
    }));
    let ev = bos.events();
    let subs: Vec<_> = ev
        .iter()
        .filter_map(|o| match o {
            SessionOutput::Event(Event::Subscription(s)) => Some((s.to.to_string(), s.kind)),
            _ => None,
        })
        .collect();
    assert_eq!(
        subs,
        vec![
            (
                "carol@corp-a.example".to_string(),
                SubscriptionKind::Subscribe
            ),
            ("dave@hub.example".to_string(), SubscriptionKind::Subscribed)
        ]
    );

    // 13,07 probes every buddy once.
    bos.snac(&feedbag::Use);
    let ev = bos.events();
    assert_eq!(
        ev,
        vec![SessionOutput::Event(Event::Presence(Presence {
            from: me.clone(),
            to: Some(carol.clone()),
            kind: PresenceKind::Probe
        }))]
    );

    // Deny some: a denied sender's messages are refused.
    bos.snac(&feedbag::InsertItems {
        items: vec![item(
            "spammer",
            0,
            0x0202,
            feedbag::class::DENY,
            TlvList::new(),
        )],
    });
    bos.snac(&feedbag::UpdateItems {
        items: vec![item(
            "",
            0,
            0x1234,
            feedbag::class::PD_INFO,
            TlvList::new().with(Tlv::u8(feedbag::attr::PD_MODE, 4)),
        )],
    });
    bos.out();
    let d = bos.s.handle_event(
        Event::Message(Message {
            id: "s".into(),
            from: addr("spammer@hub.example"),
            to: me.clone(),
            body: "buy".into(),
            thread: None,
            ts: OffsetDateTime::UNIX_EPOCH,
        }),
        bos.now,
    );
    assert_eq!(d, Delivery::Refused(ErrorCode::RecipientUnavailable));
    assert!(bos.out().is_empty());

    // Deleting the buddy unsubscribes.
    bos.snac(&feedbag::DeleteItems {
        items: vec![item("carol@corp-a.example", 7, 0x0101, 0, TlvList::new())],
    });
    let ev = bos.events();
    assert!(
        ev.contains(&SessionOutput::Event(Event::Subscription(Subscription {
            from: me.clone(),
            to: carol,
            kind: SubscriptionKind::Unsubscribe
        })))
    );
}

#[test]
fn sign_off_and_keepalive_timeout() {
    let mut bos = signed_on_alice(cookie());
    let me = addr("alicesmith@hub.example");
    // Keepalives hold the connection open past the idle timeout.
    let t0 = bos.now;
    for i in 1..=4 {
        bos.now = t0 + Duration::from_secs(120 * i);
        let b = bos.c.flap(Channel::KeepAlive, Bytes::new());
        bos.send(&b);
        bos.s.handle_timeout(bos.now);
        assert!(!bos.s.is_closed());
    }
    let deadline = bos.s.poll_timeout().unwrap();
    assert_eq!(deadline, bos.now + Duration::from_secs(300));
    // An empty channel-4 frame signs off.
    let b = bos.c.flap(Channel::SignOff, Bytes::new());
    bos.send(&b);
    assert_eq!(
        bos.events(),
        vec![
            SessionOutput::Event(Event::Presence(Presence {
                from: me,
                to: None,
                kind: PresenceKind::Unavailable { status: None }
            })),
            SessionOutput::Closed(CloseReason::PeerSignedOff)
        ]
    );
    assert!(bos.s.poll_timeout().is_none());

    let mut bos = signed_on_alice(cookie());
    bos.s.handle_timeout(bos.now + Duration::from_secs(301));
    assert!(bos.s.is_closed());
    let ev = bos.events();
    assert_eq!(
        ev.last(),
        Some(&SessionOutput::Closed(CloseReason::Timeout))
    );
}

#[test]
fn events_before_client_ready_are_held() {
    let now = Instant::now();
    let mut s = Session::new(SessionConfig::new(HUB), now, OffsetDateTime::UNIX_EPOCH);
    let mut c = Client::new(1);
    s.handle_input(&c.signon(TlvList::new().with(Tlv::new(6, vec![1]))), now);
    s.poll_event();
    s.answer_cookie(
        Some(Account {
            address: addr("alicesmith@hub.example"),
            display_name: "alicesmith".into(),
            feedbag: vec![],
            feedbag_modified: 0,
        }),
        now,
    );
    while s.poll_transmit().is_some() {}
    let d = s.handle_event(
        Event::Message(Message {
            id: "early".into(),
            from: addr("bob@hub.example"),
            to: addr("alicesmith@hub.example"),
            body: "hello".into(),
            thread: None,
            ts: OffsetDateTime::UNIX_EPOCH,
        }),
        now,
    );
    assert_eq!(d, Delivery::Delivered);
    assert!(s.poll_transmit().is_none());
    let ready = oservice::ClientReady { families: vec![] }.to_snac(5);
    s.handle_input(&c.flap(Channel::Snac, ready.to_bytes()), now);
    let m = snac_of(&s.poll_transmit().unwrap());
    assert_eq!(m.kind(), (4, 7));
}

/// The ICQ variant of the same client: numeric name, PD mode 4, an extra 01,1E with
/// TLV 0x06 = 0x10020000, and an IM whose capability part is the single byte 0x01.
#[test]
fn icq_variant_signs_on_and_messages() {
    let mut bos = signed_on_alice(cookie());
    let me = addr("alicesmith@hub.example");
    bos.snac(&oservice::SetUserInfoFields {
        tlvs: TlvList::new().with(Tlv::u32(0x06, 0x1002_0000)),
    });
    assert!(bos.events().is_empty(), "still plainly available");
    bos.snac(&feedbag::UpdateItems {
        items: vec![item(
            "",
            0,
            0x1234,
            feedbag::class::PD_INFO,
            TlvList::new().with(Tlv::u8(feedbag::attr::PD_MODE, 4)),
        )],
    });
    let out = bos.out();
    assert_eq!(out[0].body_as::<feedbag::Status>().unwrap().codes, vec![0]);
    assert!(matches!(
        &bos.events()[..],
        [SessionOutput::Request(SessionRequest::StoreFeedbag {
            op: entente_oscar::FeedbagOp::Update,
            ..
        })]
    ));
    let mut data = BytesMut::new();
    data.put_u32(0x0000_0000);
    data.put_slice(b"hello 42");
    let msg = icbm::ImMessage {
        fragments: vec![
            icbm::Fragment {
                id: 5,
                version: 1,
                data: Bytes::from_static(&[1]),
            },
            icbm::Fragment {
                id: 1,
                version: 1,
                data: data.freeze(),
            },
        ],
    };
    bos.snac(&icbm::ChannelMsgToHost {
        cookie: [4; 8],
        channel: 1,
        screen_name: "123456789".into(),
        tlvs: TlvList::new().with(Tlv::new(2, msg.encode())),
    });
    let ev = bos.events();
    assert_eq!(
        ev,
        vec![SessionOutput::Event(Event::Message(Message {
            id: "0404040404040404".into(),
            from: me.clone(),
            to: addr("123456789@hub.example"),
            body: "hello 42".into(),
            thread: None,
            ts: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
        }))]
    );
    // Going away through 01,1E status bits.
    bos.snac(&oservice::SetUserInfoFields {
        tlvs: TlvList::new().with(Tlv::u32(0x06, 0x1002_0002)),
    });
    assert_eq!(
        bos.events(),
        vec![SessionOutput::Event(Event::Presence(Presence {
            from: me,
            to: None,
            kind: PresenceKind::Available {
                show: Show::Dnd,
                status: None
            }
        }))]
    );
}

#[test]
fn a_large_feedbag_is_split_over_several_replies() {
    let mut bos = signed_on_alice(cookie());
    let many: Vec<FeedbagItem> = (0..400u16)
        .map(|i| {
            item(
                &format!("buddy{i}"),
                9,
                100 + i,
                feedbag::class::BUDDY,
                TlvList::new().with(Tlv::new(feedbag::attr::ALIAS, vec![b'x'; 40])),
            )
        })
        .collect();
    for chunk in many.chunks(100) {
        bos.snac(&feedbag::InsertItems {
            items: chunk.to_vec(),
        });
    }
    bos.out();
    bos.events();
    let rid = bos.snac(&feedbag::Query);
    let out = bos.out();
    assert!(out.len() > 1);
    let mut total = 0;
    for (i, s) in out.iter().enumerate() {
        assert_eq!(s.header.request_id, rid);
        assert!(s.body.len() <= entente_oscar::session::MAX_OUTBOUND_SNAC);
        let more = s.header.flags & 1 != 0;
        assert_eq!(more, i + 1 < out.len(), "flag 0x0001 on all but the last");
        total += s.body_as::<feedbag::Reply>().unwrap().items.len();
    }
    assert_eq!(total, bos.s.feedbag().len());
}

#[test]
fn oversized_deliveries_are_refused() {
    let mut bos = signed_on_alice(cookie());
    let d = bos.s.handle_event(
        Event::Message(Message {
            id: "big".into(),
            from: addr("bob@hub.example"),
            to: addr("alicesmith@hub.example"),
            body: "\"".repeat(4000),
            thread: None,
            ts: OffsetDateTime::UNIX_EPOCH,
        }),
        bos.now,
    );
    assert_eq!(d, Delivery::Refused(ErrorCode::TooLarge));
    assert!(bos.out().is_empty());
}

#[test]
fn host_sequence_numbers_count_up_and_wrap_below_0x8000() {
    let mut w = entente_oscar::FlapWriter::new(0x7FFE);
    let seqs: Vec<u16> = (0..3)
        .map(|_| common::frame(&w.frame(Channel::KeepAlive, Bytes::new())).seq)
        .collect();
    assert_eq!(seqs, vec![0x7FFE, 0x7FFF, 0]);
}

#[test]
fn the_host_signs_a_session_off_when_the_account_signs_on_elsewhere() {
    let mut bos = signed_on_alice(cookie());
    bos.s
        .sign_off(entente_oscar::SignOffReason::SignedOnElsewhere, bos.now);
    let f = common::frame(&bos.s.poll_transmit().unwrap());
    assert_eq!(f.channel, Channel::SignOff);
    let t = TlvList::decode_rest(&mut entente_oscar::wire::Reader::new(&f.payload)).unwrap();
    assert_eq!(t.get_u16(0x09), Some(1));
    let ev = bos.events();
    assert!(matches!(
        &ev[..],
        [
            SessionOutput::Event(Event::Presence(Presence {
                kind: PresenceKind::Unavailable { .. },
                ..
            })),
            SessionOutput::Closed(CloseReason::Local(
                entente_oscar::SignOffReason::SignedOnElsewhere
            ))
        ]
    ));
    assert_eq!(
        bos.s.handle_event(
            Event::Typing(Typing {
                from: addr("bob@hub.example"),
                to: addr("alicesmith@hub.example"),
                state: ChatState::Composing
            }),
            bos.now
        ),
        Delivery::Refused(ErrorCode::RecipientUnavailable)
    );
}
