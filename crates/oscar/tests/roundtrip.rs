//! Property tests: decode(encode(x)) == x for FLAP, SNAC, TLVs and the main SNAC bodies.

use std::fmt::Debug;

use bytes::{Bytes, BytesMut};
use entente_oscar::family::{bucp, buddy, feedbag, icbm, locate, oservice};
use entente_oscar::wire::Reader;
use entente_oscar::{
    Channel, Flap, SignOnFrame, Snac, SnacBody, SnacHeader, Tlv, TlvList, UserInfo,
};
use proptest::collection::vec;
use proptest::prelude::*;

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 @._-]{0,24}"
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,40}"
}

fn tlv() -> impl Strategy<Value = Tlv> {
    (any::<u16>(), bytes(24)).prop_map(|(kind, value)| Tlv { kind, value })
}

fn tlvs() -> impl Strategy<Value = TlvList> {
    vec(tlv(), 0..6).prop_map(TlvList)
}

fn user_info() -> impl Strategy<Value = UserInfo> {
    (name(), any::<u16>(), tlvs()).prop_map(|(screen_name, warning_level, tlvs)| UserInfo {
        screen_name,
        warning_level,
        tlvs,
    })
}

fn item() -> impl Strategy<Value = feedbag::FeedbagItem> {
    (name(), any::<u16>(), any::<u16>(), any::<u16>(), tlvs()).prop_map(|(name, g, i, c, attrs)| {
        feedbag::FeedbagItem {
            name,
            group_id: g,
            item_id: i,
            class: c,
            attrs,
        }
    })
}

fn channel() -> impl Strategy<Value = Channel> {
    (1u8..=5).prop_map(|c| Channel::from_u8(c).unwrap())
}

fn rate_params() -> impl Strategy<Value = oservice::RateClassParams> {
    (any::<u16>(), any::<[u32; 8]>(), any::<u8>()).prop_map(|(id, v, dropping)| {
        oservice::RateClassParams {
            id,
            window: v[0],
            clear: v[1],
            alert: v[2],
            limit: v[3],
            disconnect: v[4],
            current: v[5],
            max: v[6],
            last_time: v[7],
            dropping,
        }
    })
}

fn rt<T: SnacBody + PartialEq + Debug>(x: &T) -> Result<(), TestCaseError> {
    let snac = x.to_snac(42);
    let again = Snac::decode(&snac.to_bytes()).unwrap();
    prop_assert_eq!(&again, &snac);
    prop_assert_eq!(&again.body_as::<T>().unwrap(), x);
    Ok(())
}

proptest! {
    #[test]
    fn flap(channel in channel(), seq in any::<u16>(), payload in bytes(300)) {
        let f = Flap { channel, seq, payload };
        let mut buf = BytesMut::from(f.to_bytes().as_ref());
        prop_assert_eq!(Flap::decode(&mut buf, 8192).unwrap(), Some(f));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn flap_split_anywhere(payload in bytes(100), cut in 0usize..120) {
        let f = Flap { channel: Channel::Snac, seq: 7, payload };
        let all = f.to_bytes();
        let cut = cut.min(all.len());
        let mut r = entente_oscar::FlapReader::new(8192);
        r.push(&all[..cut]);
        if cut < all.len() {
            prop_assert_eq!(r.next_frame().unwrap(), None);
        }
        r.push(&all[cut..]);
        prop_assert_eq!(r.next_frame().unwrap(), Some(f));
    }

    #[test]
    fn snac(family in any::<u16>(), subtype in any::<u16>(), flags in any::<u16>(),
            request_id in any::<u32>(), optional in proptest::option::of(bytes(16)), body in bytes(64)) {
        let mut flags = flags & !0x8000;
        if optional.is_some() {
            flags |= 0x8000;
        }
        let s = Snac { header: SnacHeader { family, subtype, flags, request_id }, optional, body };
        prop_assert_eq!(Snac::decode(&s.to_bytes()).unwrap(), s);
    }

    #[test]
    fn tlv_lists(list in tlvs()) {
        let mut out = BytesMut::new();
        list.encode(&mut out);
        prop_assert_eq!(TlvList::decode_rest(&mut Reader::new(&out)).unwrap(), list.clone());
        let mut out = BytesMut::new();
        list.encode_counted(&mut out);
        let mut r = Reader::new(&out);
        prop_assert_eq!(TlvList::decode_counted(&mut r).unwrap(), list.clone());
        prop_assert!(r.is_empty());
        let mut out = BytesMut::new();
        list.encode_lblock(&mut out);
        prop_assert_eq!(TlvList::decode_lblock(&mut Reader::new(&out)).unwrap(), list);
    }

    #[test]
    fn user_info_blocks(u in user_info()) {
        let mut out = BytesMut::new();
        u.encode(&mut out);
        let mut r = Reader::new(&out);
        prop_assert_eq!(UserInfo::decode(&mut r).unwrap(), u);
        prop_assert!(r.is_empty());
    }

    #[test]
    fn signon_frames(version in any::<u32>(), tlvs in tlvs()) {
        let f = SignOnFrame { version, tlvs };
        prop_assert_eq!(SignOnFrame::decode(&f.encode()).unwrap(), f);
    }

    #[test]
    fn oservice_bodies(families in vec(any::<u16>(), 0..20), versions in vec(any::<(u16, u16)>(), 0..20),
                       tools in vec(any::<[u16; 4]>(), 0..10), classes in vec(rate_params(), 0..4),
                       members in vec(vec(any::<(u16, u16)>(), 0..6), 4), u in user_info(),
                       idle in any::<u32>(), code in any::<u16>(), t in tlvs()) {
        rt(&oservice::HostOnline { families: families.clone() })?;
        rt(&oservice::ClientVersions(oservice::Versions { versions: versions.clone() }))?;
        rt(&oservice::HostVersions(oservice::Versions { versions }))?;
        rt(&oservice::RateParamsAck { classes: families })?;
        rt(&oservice::ClientReady { families: tools.iter().map(|t| oservice::FamilyTool {
            family: t[0], version: t[1], tool_id: t[2], tool_version: t[3] }).collect() })?;
        let members = classes.iter().zip(members).map(|(c, m)| (c.id, m)).collect();
        rt(&oservice::RateParamsReply { classes: classes.clone(), members })?;
        if let Some(p) = classes.first() {
            rt(&oservice::RateChange { code, params: *p })?;
        }
        rt(&oservice::SelfInfo { info: u })?;
        rt(&oservice::IdleNotification { idle_seconds: idle })?;
        rt(&oservice::SetUserInfoFields { tlvs: t.clone() })?;
        rt(&oservice::ServiceRequest { family: code, tlvs: t })?;
    }

    #[test]
    fn icbm_bodies(cookie in any::<[u8; 8]>(), channel in any::<u16>(), sn in name(), t in tlvs(),
                   u in user_info(), event in any::<u16>(), p in any::<(u16, u32, u16, u16, u16, u32)>(),
                   frags in vec((any::<u8>(), any::<u8>(), bytes(20)), 0..5), s in text()) {
        rt(&icbm::ChannelMsgToHost { cookie, channel, screen_name: sn.clone(), tlvs: t.clone() })?;
        rt(&icbm::ChannelMsgToClient { cookie, channel, sender: u, tlvs: t })?;
        rt(&icbm::HostAck { cookie, channel, screen_name: sn.clone() })?;
        rt(&icbm::ClientEvent { cookie, channel, screen_name: sn, event })?;
        let params = icbm::IcbmParams { channel: p.0, flags: p.1, max_message_len: p.2,
            max_sender_warning: p.3, max_receiver_warning: p.4, min_interval_ms: p.5 };
        rt(&icbm::Params(params))?;
        rt(&icbm::SetParams(params))?;
        let m = icbm::ImMessage { fragments: frags.into_iter().map(|(id, version, data)|
            icbm::Fragment { id, version, data }).collect() };
        prop_assert_eq!(icbm::ImMessage::decode(&m.encode()).unwrap(), m);
        // Text survives the charset choice (ASCII or UCS-2BE).
        let m = icbm::ImMessage::from_text(&s);
        prop_assert_eq!(icbm::ImMessage::decode(&m.encode()).unwrap().text().unwrap(), s);
    }

    #[test]
    fn feedbag_bodies(items in vec(item(), 0..6), modified in any::<u32>(), codes in vec(any::<u16>(), 0..10),
                      sn in name(), reason in text(), accepted in any::<bool>(), version in any::<u8>()) {
        rt(&feedbag::InsertItems { items: items.clone() })?;
        rt(&feedbag::UpdateItems { items: items.clone() })?;
        rt(&feedbag::DeleteItems { items: items.clone() })?;
        rt(&feedbag::Reply { version, items, last_modified: modified })?;
        rt(&feedbag::Status { codes: codes.clone() })?;
        rt(&feedbag::Rights { max_items_by_class: codes, max_attr_len: 7 })?;
        rt(&feedbag::QueryIfModified { last_modified: modified, item_count: 3 })?;
        rt(&feedbag::AuthRequestToHost(feedbag::AuthRequest { screen_name: sn.clone(), reason: reason.clone() }))?;
        rt(&feedbag::AuthRequestToClient(feedbag::AuthRequest { screen_name: sn.clone(), reason: reason.clone() }))?;
        rt(&feedbag::AuthReplyToHost(feedbag::AuthReply { screen_name: sn.clone(), accepted, reason: reason.clone() }))?;
        rt(&feedbag::AuthReplyToClient(feedbag::AuthReply { screen_name: sn, accepted, reason }))?;
    }

    #[test]
    fn locate_buddy_bucp_bodies(users in vec(user_info(), 0..4), u in user_info(), sn in name(),
                                kind in any::<u16>(), flags in any::<u32>(),
                                fields in (proptest::option::of(text()), proptest::option::of(bytes(30)),
                                           proptest::option::of(text()), proptest::option::of(bytes(30)),
                                           proptest::option::of(bytes(30))),
                                key in bytes(40), t in tlvs(), r in any::<(u16, u16, u16)>()) {
        let fields = locate::InfoFields { profile_mime: fields.0, profile: fields.1, away_mime: fields.2,
            away: fields.3, capabilities: fields.4 };
        rt(&locate::SetInfo(fields.clone()))?;
        rt(&locate::UserInfoReply { info: u, fields })?;
        rt(&locate::UserInfoQuery { kind, screen_name: sn.clone() })?;
        rt(&locate::UserInfoQuery2 { flags, screen_name: sn })?;
        rt(&locate::Rights { max_profile_len: r.0, max_capabilities: r.1 })?;
        rt(&buddy::Arrived { users: users.clone() })?;
        rt(&buddy::Departed { users })?;
        rt(&buddy::Rights { max_buddies: r.0, max_watchers: r.1, max_temp_buddies: r.2 })?;
        rt(&bucp::Challenge { key })?;
        rt(&bucp::LoginReply { tlvs: t.clone() })?;
        rt(&bucp::LoginRequest { tlvs: t.clone() })?;
        rt(&bucp::ChallengeRequest { tlvs: t })?;
    }
}

proptest! {
    /// Arbitrary bodies: decoding is lossy only for strings that are not UTF-8 (U+FFFD, clamped
    /// to the length field); after one pass encode/decode is the identity.
    #[test]
    fn decoding_arbitrary_bodies_is_stable(body in vec(any::<u8>(), 0..600)) {
        fn stable<T: SnacBody + PartialEq + Debug>(body: &[u8]) -> Result<(), TestCaseError> {
            if let Ok(v1) = T::decode_body(body) {
                let v2: T = v1.to_snac(1).body_as().unwrap();
                let v3: T = v2.to_snac(1).body_as().unwrap();
                prop_assert_eq!(&v3, &v2);
            }
            Ok(())
        }
        stable::<locate::UserInfoQuery>(&body)?;
        stable::<icbm::ChannelMsgToHost>(&body)?;
        stable::<icbm::ChannelMsgToClient>(&body)?;
        stable::<icbm::ClientEvent>(&body)?;
        stable::<feedbag::InsertItems>(&body)?;
        stable::<feedbag::AuthReplyToHost>(&body)?;
        stable::<buddy::Arrived>(&body)?;
        stable::<oservice::RateParamsReply>(&body)?;
    }
}
