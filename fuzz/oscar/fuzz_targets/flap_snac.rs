//! The FLAP/SNAC/TLV decoders on arbitrary bytes: no panic, and whatever decodes re-encodes to
//! the same value.
#![no_main]

use bytes::BytesMut;
use entente_oscar::family::{bucp, buddy, feedbag, icbm, locate, oservice, pd};
use entente_oscar::{Flap, FlapReader, SignOnFrame, Snac, SnacBody, TlvList, UserInfo};
use libfuzzer_sys::fuzz_target;

/// Whatever decodes must re-encode and decode again. Strings that were not UTF-8 come back with
/// U+FFFD (and clamped to their length field), so the value is stable after one such pass.
fn check<T: SnacBody + PartialEq + std::fmt::Debug>(snac: &Snac) {
    if let Ok(v1) = snac.body_as::<T>() {
        let v2: T = v1.to_snac(snac.header.request_id).body_as().unwrap();
        let v3: T = v2.to_snac(snac.header.request_id).body_as().unwrap();
        assert_eq!(v3, v2);
    }
}

fuzz_target!(|data: &[u8]| {
    // Whole-buffer decoding, with a re-encode check.
    let mut buf = BytesMut::from(data);
    while let Ok(Some(f)) = Flap::decode(&mut buf, 8192) {
        let again = Flap::decode(&mut BytesMut::from(f.to_bytes().as_ref()), 8192);
        assert_eq!(again, Ok(Some(f.clone())));
        let _ = SignOnFrame::decode(&f.payload);
        let Ok(snac) = Snac::decode(&f.payload) else {
            continue;
        };
        assert_eq!(Snac::decode(&snac.to_bytes()).as_ref(), Ok(&snac));
        match snac.kind() {
            (1, 0x02) => check::<oservice::ClientReady>(&snac),
            (1, 0x03) => check::<oservice::HostOnline>(&snac),
            (1, 0x04) => check::<oservice::ServiceRequest>(&snac),
            (1, 0x07) => check::<oservice::RateParamsReply>(&snac),
            (1, 0x08) => check::<oservice::RateParamsAck>(&snac),
            (1, 0x0A) => check::<oservice::RateChange>(&snac),
            (1, 0x0F) => check::<oservice::SelfInfo>(&snac),
            (1, 0x17) => check::<oservice::ClientVersions>(&snac),
            (1, 0x1E) => check::<oservice::SetUserInfoFields>(&snac),
            (2, 0x04) => check::<locate::SetInfo>(&snac),
            (2, 0x05) => check::<locate::UserInfoQuery>(&snac),
            (2, 0x06) => check::<locate::UserInfoReply>(&snac),
            (2, 0x15) => check::<locate::UserInfoQuery2>(&snac),
            (3, 0x0B) => check::<buddy::Arrived>(&snac),
            (3, 0x0C) => check::<buddy::Departed>(&snac),
            (4, 0x02) => check::<icbm::SetParams>(&snac),
            (4, 0x06) => {
                check::<icbm::ChannelMsgToHost>(&snac);
                if let Ok(m) = snac.body_as::<icbm::ChannelMsgToHost>() {
                    if let Ok(msg) = m.message() {
                        let _ = msg.text().map(|t| entente_oscar::html::html_to_text(&t));
                    }
                }
            }
            (4, 0x07) => check::<icbm::ChannelMsgToClient>(&snac),
            (4, 0x0C) => check::<icbm::HostAck>(&snac),
            (4, 0x14) => check::<icbm::ClientEvent>(&snac),
            (9, 0x03) => check::<pd::Rights>(&snac),
            (0x13, 0x03) => check::<feedbag::Rights>(&snac),
            (0x13, 0x06) => check::<feedbag::Reply>(&snac),
            (0x13, 0x08) => check::<feedbag::InsertItems>(&snac),
            (0x13, 0x0E) => check::<feedbag::Status>(&snac),
            (0x13, 0x18) => check::<feedbag::AuthRequestToHost>(&snac),
            (0x13, 0x1A) => check::<feedbag::AuthReplyToHost>(&snac),
            (0x17, 0x02) => check::<bucp::LoginRequest>(&snac),
            (0x17, 0x07) => check::<bucp::Challenge>(&snac),
            _ => {
                let mut r = entente_oscar::wire::Reader::new(&snac.body);
                let _ = UserInfo::decode(&mut r);
                let mut r = entente_oscar::wire::Reader::new(&snac.body);
                let _ = TlvList::decode_counted(&mut r);
            }
        }
    }
    // Byte-at-a-time streaming must agree with whole-buffer decoding.
    let mut reader = FlapReader::new(8192);
    for b in data.iter().take(512) {
        reader.push(std::slice::from_ref(b));
        loop {
            match reader.next_frame() {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(reader.buffered() <= 8192 + 6);
    }
});
