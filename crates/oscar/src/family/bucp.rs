//! BUCP (0x0017): the MD5 challenge login — key request, key, login with the hashed password,
//! and the reply with the BOS address and cookie or an error code. Also the password hashes and
//! the roasting of the older FLAP channel-1 login.

use bytes::{Bytes, BytesMut};
use md5::{Digest, Md5};

use super::BUCP;
use crate::snac::{tlv_snac, SnacBody};
use crate::wire::{put_bytes16, Reader};
use crate::{DecodeError, Tlv, TlvList};

/// The constant appended by both MD5 login hashes.
pub const AIM_MD5_STRING: &[u8] = b"AOL Instant Messenger (SM)";

/// The XOR table of roasted passwords (FLAP channel-1 login).
pub const ROAST_TABLE: [u8; 16] = [
    0xF3, 0x26, 0x81, 0xC4, 0x39, 0x86, 0xDB, 0x92, 0x71, 0xA3, 0xB9, 0xE6, 0x53, 0x7A, 0x95, 0x7C,
];

/// TLV types of the login SNACs and of the channel-1 login frames.
pub mod tlv {
    pub const SCREEN_NAME: u16 = 0x01;
    pub const ROASTED_PASSWORD: u16 = 0x02;
    pub const CLIENT_ID_STRING: u16 = 0x03;
    pub const ERROR_URL: u16 = 0x04;
    pub const BOS_ADDRESS: u16 = 0x05;
    pub const COOKIE: u16 = 0x06;
    pub const ERROR_CODE: u16 = 0x08;
    pub const EMAIL: u16 = 0x11;
    pub const CLIENT_ID: u16 = 0x16;
    pub const PASSWORD_HASH: u16 = 0x25;
    /// Present (empty) when the hash is the "strong" one over MD5(password).
    pub const STRONG_HASH: u16 = 0x4C;
}

/// MD5(password), what the hub keeps per account to check strong hashes.
pub fn md5_password(password: &[u8]) -> [u8; 16] {
    Md5::digest(password).into()
}

/// The strong hash: MD5(key ‖ MD5(password) ‖ "AOL Instant Messenger (SM)").
pub fn strong_hash(key: &[u8], md5_of_password: &[u8; 16]) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(key);
    h.update(md5_of_password);
    h.update(AIM_MD5_STRING);
    h.finalize().into()
}

/// The weak hash: MD5(key ‖ password ‖ "AOL Instant Messenger (SM)").
pub fn weak_hash(key: &[u8], password: &[u8]) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(key);
    h.update(password);
    h.update(AIM_MD5_STRING);
    h.finalize().into()
}

/// Roasting is its own inverse: XOR with the table, repeated.
pub fn roast(password: &[u8]) -> Vec<u8> {
    password
        .iter()
        .zip(ROAST_TABLE.iter().cycle())
        .map(|(p, k)| p ^ k)
        .collect()
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

tlv_snac!(
    /// 17,06: the client asks for a challenge key (TLV 0x01 screen name).
    ChallengeRequest,
    BUCP,
    0x06
);

/// 17,07: the challenge key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub key: Bytes,
}

impl SnacBody for Challenge {
    const FAMILY: u16 = BUCP;
    const SUBTYPE: u16 = 0x07;
    fn encode_body(&self, out: &mut BytesMut) {
        put_bytes16(out, &self.key);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Challenge {
            key: Bytes::copy_from_slice(r.bytes16("challenge key")?),
        })
    }
}

tlv_snac!(
    /// 17,02: the login request (screen name, hash, client identification).
    LoginRequest,
    BUCP,
    0x02
);

tlv_snac!(
    /// 17,03: the login reply: BOS address and cookie, or an error code.
    LoginReply,
    BUCP,
    0x03
);

impl LoginReply {
    pub fn success(screen_name: &str, bos_address: &str, cookie: &[u8]) -> LoginReply {
        LoginReply {
            tlvs: success_tlvs(screen_name, bos_address, cookie),
        }
    }

    pub fn failure(screen_name: &str, code: crate::LoginErrorCode) -> LoginReply {
        LoginReply {
            tlvs: failure_tlvs(screen_name, code),
        }
    }
}

/// TLVs of a successful login (17,03 or the channel-4 reply to a roasted login).
pub fn success_tlvs(screen_name: &str, bos_address: &str, cookie: &[u8]) -> TlvList {
    TlvList::new()
        .with(Tlv::new(tlv::SCREEN_NAME, screen_name.as_bytes().to_vec()))
        .with(Tlv::new(tlv::BOS_ADDRESS, bos_address.as_bytes().to_vec()))
        .with(Tlv::new(tlv::COOKIE, cookie.to_vec()))
}

/// TLVs of a failed login.
pub fn failure_tlvs(screen_name: &str, code: crate::LoginErrorCode) -> TlvList {
    let mut t = TlvList::new();
    if !screen_name.is_empty() {
        t.push(Tlv::new(tlv::SCREEN_NAME, screen_name.as_bytes().to_vec()));
    }
    t.push(Tlv::u16(tlv::ERROR_CODE, code.as_u16()));
    t
}
