//! Codec tests against byte dumps published in the OSCAR documentation. Each fixture names its
//! source; the dumps are reproduced byte for byte, headers included.

mod common;

use bytes::BytesMut;
use common::hex;
use entente_oscar::family::{bucp, feedbag, icbm, oservice, pd};
use entente_oscar::{Channel, DecodeError, Flap, Snac, SnacBody, Tlv, TlvList};

/// Decodes a dump holding exactly one FLAP frame carrying a SNAC.
fn snac_dump(dump: &str) -> (Flap, Snac) {
    let bytes = hex(dump);
    let mut buf = BytesMut::from(&bytes[..]);
    let flap = Flap::decode(&mut buf, 65535).unwrap().unwrap();
    assert!(buf.is_empty(), "dump is exactly one frame");
    assert_eq!(flap.channel, Channel::Snac);
    // Re-encoding gives the dump back.
    assert_eq!(flap.to_bytes().as_ref(), &bytes[..]);
    let snac = Snac::decode(&flap.payload).unwrap();
    assert_eq!(snac.to_bytes(), flap.payload);
    (flap, snac)
}

// Shutko's OSCAR docs (micq copy; also icqinfo.ru/protocol/v8/36.txt), "FLAP" example:
// "2A 01 23 31 00 04  Flap: Channel 1, Sequence 9009, Length 4".
#[test]
fn flap_header_example() {
    let mut buf = BytesMut::from(&hex("2A 01 23 31 00 04 00 00 00 01")[..]);
    let f = Flap::decode(&mut buf, 8192).unwrap().unwrap();
    assert_eq!(f.channel, Channel::SignOn);
    assert_eq!(f.seq, 9009);
    assert_eq!(f.payload.as_ref(), &[0, 0, 0, 1]);
    // Incomplete input is not an error.
    let mut part = BytesMut::from(&hex("2A 01 23 31 00 04 00 00")[..]);
    assert_eq!(Flap::decode(&mut part, 8192), Ok(None));
    assert_eq!(part.len(), 8, "nothing consumed");
}

// icqinfo.ru/protocol/v8/37.txt, "SNAC" example: "00 01 00 03 00 00 A8 6B 3E B2
// Snac: Type x01/x03, ID xA86B3EB2, Flags 0".
#[test]
fn snac_header_example() {
    let s = Snac::decode(&hex("00 01 00 03 00 00 A8 6B 3E B2")).unwrap();
    assert_eq!(s.kind(), (1, 3));
    assert_eq!(s.header.flags, 0);
    assert_eq!(s.header.request_id, 0xA86B_3EB2);
    assert!(s.body.is_empty());
}

// Shutko, "OSCAR ICQ v7/v8/v9 protocol documentation", snac_01_03.html (SRV_FAMILIES).
#[test]
fn host_online_example() {
    let (f, s) = snac_dump(
        "2A 02 3D FE 00 22 00 01 00 03 00 00 82 95 E5 7A
         00 01 00 02 00 03 00 04 00 06 00 08 00 09 00 0A
         00 0B 00 0C 00 13 00 15",
    );
    assert_eq!(f.seq, 0x3DFE);
    let h: oservice::HostOnline = s.body_as().unwrap();
    assert_eq!(
        h.families,
        vec![1, 2, 3, 4, 6, 8, 9, 0x0A, 0x0B, 0x0C, 0x13, 0x15]
    );
    assert_eq!(h.to_snac(0x8295_E57A), s);
}

// Shutko (iserverd mirror), snac_01_04.html: a service request for family 0x0D (CHAT_NAV).
#[test]
fn service_request_example() {
    let (_, s) = snac_dump("2A 02 3E 02 00 0C 00 01 00 04 00 00 00 00 00 05 00 0D");
    let r: oservice::ServiceRequest = s.body_as().unwrap();
    assert_eq!(r.family, 0x0D);
    assert_eq!(s.header.request_id, 5);
}

// Shutko, snac_01_07.html (SRV_RATE_LIMIT_INFO): the first rate class of the dump, as AOL sent
// it (window 80, clear 2500, alert 2000, limit 1500, disconnect 800, current 3433, max 6000).
#[test]
fn rate_class_example() {
    let bytes = hex("00 01 00 00 00 50 00 00 09 C4 00 00 07 D0
         00 00 05 DC 00 00 03 20 00 00 0D 69 00 00 17 70
         00 00 00 00 00");
    let mut r = entente_oscar::wire::Reader::new(&bytes);
    let c = oservice::RateClassParams::decode(&mut r).unwrap();
    assert!(r.is_empty());
    assert_eq!(
        (
            c.id,
            c.window,
            c.clear,
            c.alert,
            c.limit,
            c.disconnect,
            c.current,
            c.max
        ),
        (1, 80, 2500, 2000, 1500, 800, 3433, 6000)
    );
    let mut out = BytesMut::new();
    c.encode(&mut out);
    assert_eq!(out.as_ref(), &bytes[..]);
    // The host's defaults are AOL's class 1.
    let d = &entente_oscar::rate::RateClass::defaults()[0];
    assert_eq!(
        (d.window, d.clear, d.alert, d.limit, d.disconnect, d.max),
        (80, 2500, 2000, 1500, 800, 6000)
    );
}

// Shutko, snac_02_03.html (SRV_LOCATION_RIGHTS_REPLY).
#[test]
fn locate_rights_example() {
    let (_, s) = snac_dump(
        "2A 02 3E 03 00 22 00 02 00 03 00 00 00 00 00 02
         00 01 00 02 04 00 00 02 00 02 00 10 00 03 00 02
         00 0A 00 04 00 02 10 00",
    );
    let r: entente_oscar::family::locate::Rights = s.body_as().unwrap();
    assert_eq!(r.max_profile_len, 0x400);
    assert_eq!(r.max_capabilities, 0x10);
}

// Shutko, snac_09_03.html (SRV_PRIVACY_RIGHTS_REPLY).
#[test]
fn pd_rights_example() {
    let (_, s) = snac_dump(
        "2A 02 3E 06 00 16 00 09 00 03 00 00 00 00 00 02
         00 02 00 02 00 C8 00 01 00 02 00 C8",
    );
    let r: pd::Rights = s.body_as().unwrap();
    assert_eq!((r.max_permits, r.max_denies), (200, 200));
}

// Shutko, snac_04_06_ch1.html (CLI_SEND_ICBM_CH1): "test channel 1 message" to UIN 1000000,
// capabilities fragment, charset 0 subset 0xFFFF, and TLV 0x06 (store offline).
#[test]
fn im_to_host_example() {
    let (_, s) = snac_dump(
        "2a 02 23 6c 00 47 00 04 00 06 00 00 00 01 00 06
         67 c3 15 01 3d 3a 00 00 00 01 07 31 30 30 30 30
         30 30 00 02 00 23 05 01 00 01 01 01 01 00 1a 00
         00 ff ff 74 65 73 74 20 63 68 61 6e 6e 65 6c 20
         31 20 6d 65 73 73 61 67 65 00 06 00 00",
    );
    let m: icbm::ChannelMsgToHost = s.body_as().unwrap();
    assert_eq!(m.cookie, [0x67, 0xc3, 0x15, 0x01, 0x3d, 0x3a, 0, 0]);
    assert_eq!(m.channel, 1);
    assert_eq!(m.screen_name, "1000000");
    assert!(!m.wants_host_ack());
    assert!(m.tlvs.has(icbm::msg_tlv::STORE_OFFLINE));
    let msg = m.message().unwrap();
    assert_eq!(msg.fragments[0].id, icbm::fragment::CAPABILITIES);
    assert_eq!(msg.fragments[0].data.as_ref(), &[1]);
    let parts = msg.text_parts().unwrap();
    assert_eq!((parts[0].charset, parts[0].subset), (0, 0xFFFF));
    assert_eq!(msg.text().unwrap(), "test channel 1 message");
    assert_eq!(m.to_snac(0x0001_0006), s);
}

// Shutko, snac_04_14.html (TYPING_NOTIFICATION): "typing begun" to 6218895.
#[test]
fn typing_example() {
    let (_, s) = snac_dump(
        "2A 02 38 C2 00 1E 00 04 00 14 00 00 00 00 00 14
         00 00 00 00 00 00 00 00 00 01 07 36 32 31 38 38
         39 35 00 02",
    );
    let e: icbm::ClientEvent = s.body_as().unwrap();
    assert_eq!(e.screen_name, "6218895");
    assert_eq!(e.event, icbm::typing::BEGUN);
    assert_eq!(e.to_snac(0x14), s);
}

// iserverd mirror, snac_13_08.html (CLI_SSIxADD): three groups with their 0xC8 order lists.
#[test]
fn feedbag_insert_example() {
    let (_, s) = snac_dump(
        "2A 02 2C AA 00 56 00 13 00 08 00 00 00 03 00 08
         00 06 46 61 6D 69 6C 79 0A 1E 00 00 00 01 00 06
         00 C8 00 02 43 18 00 09 74 65 73 74 67 72 6F 75
         70 17 B7 00 00 00 01 00 06 00 C8 00 02 2A 18 00
         07 47 65 6E 65 72 61 6C 23 8C 00 00 00 01 00 0C
         00 C8 00 08 26 9A 08 80 12 A1 05 83",
    );
    let ins: feedbag::InsertItems = s.body_as().unwrap();
    let names: Vec<_> = ins.items.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["Family", "testgroup", "General"]);
    assert!(ins.items.iter().all(|i| i.class == feedbag::class::GROUP));
    assert_eq!(ins.items[0].group_id, 0x0A1E);
    assert_eq!(ins.items[2].order(), vec![0x269A, 0x0880, 0x12A1, 0x0583]);
    assert_eq!(ins.to_snac(0x0003_0008), s);
}

// iserverd mirror, snac_13_05.html and snac_13_0f.html: same modification time and count.
#[test]
fn feedbag_if_modified_examples() {
    let (_, q) = snac_dump("2A 02 33 6C 00 10 00 13 00 05 00 00 00 01 00 05 3D E7 48 17 00 BB");
    let q: feedbag::QueryIfModified = q.body_as().unwrap();
    assert_eq!((q.last_modified, q.item_count), (0x3DE7_4817, 0xBB));
    let (_, r) = snac_dump("2A 02 38 C5 00 10 00 13 00 0F 00 00 00 01 00 05 3D E7 48 17 00 BB");
    let r: feedbag::ReplyNotModified = r.body_as().unwrap();
    assert_eq!((r.last_modified, r.item_count), (0x3DE7_4817, 0xBB));
}

// Shutko (iserverd mirror), snac_13_02.html: the empty rights request.
#[test]
fn feedbag_rights_query_example() {
    let (_, s) = snac_dump("2A 02 22 96 00 0A 00 13 00 02 00 00 00 00 00 02");
    assert!(s.body_as::<feedbag::RightsQuery>().unwrap().tlvs.is_empty());
}

// Shutko, snac_17_06.html (CLI_AUTH_REQUEST): key request for 6218895 with empty 0x4B, 0x5A.
#[test]
fn key_request_example() {
    let (_, s) = snac_dump(
        "2A 02 0A 46 00 1D 00 17 00 06 00 00 00 00 00 00
         00 01 00 07 36 32 31 38 38 39 35 00 4B 00 00 00
         5A 00 00",
    );
    let r: bucp::ChallengeRequest = s.body_as().unwrap();
    assert_eq!(
        r.tlvs.get_string(bucp::tlv::SCREEN_NAME).unwrap(),
        "6218895"
    );
    assert!(r.tlvs.get(0x4B).unwrap().value.is_empty());
    assert!(r.tlvs.get(0x5A).unwrap().value.is_empty());
}

// iserverd mirror, cli_ident.html: the roasting table; roasting twice gives the password back.
#[test]
fn roasting_uses_the_documented_table() {
    assert_eq!(
        bucp::ROAST_TABLE,
        [
            0xF3, 0x26, 0x81, 0xC4, 0x39, 0x86, 0xDB, 0x92, 0x71, 0xA3, 0xB9, 0xE6, 0x53, 0x7A,
            0x95, 0x7C
        ]
    );
    // "a" ^ 0xF3 = 0x92; the 17th byte reuses the table's first.
    let p = b"aaaaaaaaaaaaaaaaa";
    let r = bucp::roast(p);
    assert_eq!(r[0], 0x61 ^ 0xF3);
    assert_eq!(r[16], 0x61 ^ 0xF3);
    assert_eq!(bucp::roast(&r), p);
}

// iserverd mirror, snac_17_02.html: hash = MD5(key ‖ password ‖ "AOL Instant Messenger (SM)");
// the strong form (TLV 0x4C) hashes MD5(password) instead. RFC 1321 gives MD5("") and MD5("a").
#[test]
fn login_hashes() {
    assert_eq!(
        bucp::md5_password(b""),
        hex("d41d8cd98f00b204e9800998ecf8427e")[..]
    );
    assert_eq!(
        bucp::md5_password(b"a"),
        hex("0cc175b9c0f1b6a831c399e269772661")[..]
    );
    let key = b"3495812705";
    let md5 = bucp::md5_password(b"secret");
    let mut cat = key.to_vec();
    cat.extend_from_slice(&md5);
    cat.extend_from_slice(b"AOL Instant Messenger (SM)");
    assert_eq!(bucp::strong_hash(key, &md5), bucp::md5_password(&cat));
    let mut cat = key.to_vec();
    cat.extend_from_slice(b"secret");
    cat.extend_from_slice(b"AOL Instant Messenger (SM)");
    assert_eq!(bucp::weak_hash(key, b"secret"), bucp::md5_password(&cat));
}

// iserverd mirror, basic.html: TLVs are type, length, value; a length past the end is refused.
#[test]
fn tlv_lengths_are_checked() {
    let ok = hex("00 01 00 03 61 62 63 00 4B 00 00");
    let mut r = entente_oscar::wire::Reader::new(&ok);
    let t = TlvList::decode_rest(&mut r).unwrap();
    assert_eq!(
        t.0,
        vec![Tlv::new(1, b"abc".to_vec()), Tlv::new(0x4B, vec![])]
    );
    let bad = hex("00 01 00 09 61 62 63");
    let mut r = entente_oscar::wire::Reader::new(&bad);
    assert_eq!(
        TlvList::decode_rest(&mut r),
        Err(DecodeError::Truncated("TLV value"))
    );
}
