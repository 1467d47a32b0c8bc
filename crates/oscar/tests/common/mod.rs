//! Shared helpers of the integration tests: hex fixtures and a scripted OSCAR client.
#![allow(dead_code)]

use bytes::{BufMut, Bytes, BytesMut};
use entente_oscar::{Channel, Flap, Snac, SnacBody, Tlv, TlvList};

/// Parses a hex dump ("2A 02 …", whitespace ignored).
pub fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| b.is_ascii_hexdigit())
        .map(|b| (b as char).to_digit(16).unwrap() as u8)
        .collect();
    assert!(digits.len() % 2 == 0, "odd number of hex digits");
    digits.chunks(2).map(|c| c[0] << 4 | c[1]).collect()
}

/// A scripted client: numbers its frames and decodes what the host sends.
pub struct Client {
    pub seq: u16,
    pub rid: u32,
}

impl Client {
    pub fn new(first_seq: u16) -> Client {
        Client {
            seq: first_seq,
            rid: 0,
        }
    }

    pub fn flap(&mut self, channel: Channel, payload: impl Into<Bytes>) -> Vec<u8> {
        let f = Flap {
            channel,
            seq: self.seq,
            payload: payload.into(),
        };
        self.seq = self.seq.wrapping_add(1);
        f.to_bytes().to_vec()
    }

    pub fn hello(&mut self) -> Vec<u8> {
        self.flap(Channel::SignOn, vec![0, 0, 0, 1])
    }

    pub fn signon(&mut self, tlvs: TlvList) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.put_u32(1);
        tlvs.encode(&mut out);
        self.flap(Channel::SignOn, out.freeze())
    }

    /// A SNAC with a fresh request id; returns the bytes and the id.
    pub fn raw_snac(
        &mut self,
        family: u16,
        subtype: u16,
        body: impl Into<Bytes>,
    ) -> (Vec<u8>, u32) {
        self.rid += 1;
        let snac = Snac::new(family, subtype, self.rid, body.into());
        (self.flap(Channel::Snac, snac.to_bytes()), self.rid)
    }

    pub fn snac<T: SnacBody>(&mut self, body: &T) -> (Vec<u8>, u32) {
        self.rid += 1;
        let snac = body.to_snac(self.rid);
        (self.flap(Channel::Snac, snac.to_bytes()), self.rid)
    }
}

/// Decodes a host frame.
pub fn frame(bytes: &[u8]) -> Flap {
    let (f, used) = Flap::peek(bytes, 65535).unwrap().unwrap();
    assert_eq!(used, bytes.len(), "one frame per transmit");
    f
}

/// Decodes a host frame that must carry a SNAC.
pub fn snac_of(bytes: &[u8]) -> Snac {
    let f = frame(bytes);
    assert_eq!(f.channel, Channel::Snac);
    Snac::decode(&f.payload).unwrap()
}

pub fn tlv_str(kind: u16, s: &str) -> Tlv {
    Tlv::new(kind, s.as_bytes().to_vec())
}

pub fn u16s(values: &[u16]) -> Bytes {
    let mut out = BytesMut::new();
    for v in values {
        out.put_u16(*v);
    }
    out.freeze()
}
