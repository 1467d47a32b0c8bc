//! FEEDBAG (0x0013): the server-stored buddy list — groups, buddies, permit/deny entries, PD mode —
//! its queries, edits with per-item status results, and authorisation requests.

use bytes::{BufMut, BytesMut};

use super::FEEDBAG;
use crate::snac::{empty_snac, tlv_snac, SnacBody};
use crate::wire::{put_bytes16, put_str8, Reader};
use crate::{DecodeError, Tlv, TlvList};

/// Item classes.
pub mod class {
    pub const BUDDY: u16 = 0x0000;
    pub const GROUP: u16 = 0x0001;
    pub const PERMIT: u16 = 0x0002;
    pub const DENY: u16 = 0x0003;
    /// PD mode and visibility (TLV 0xCA mode, 0xCB mask).
    pub const PD_INFO: u16 = 0x0004;
    pub const PRESENCE_PREFS: u16 = 0x0005;
    pub const BART: u16 = 0x0014;
}

/// Item attribute TLVs.
pub mod attr {
    /// In a group: the ids of its members (u16 each); in the root group: the group ids.
    pub const ORDER: u16 = 0xC8;
    pub const PD_MODE: u16 = 0xCA;
    pub const PD_MASK: u16 = 0xCB;
    /// A buddy awaiting authorisation.
    pub const PENDING_AUTH: u16 = 0x66;
    pub const ALIAS: u16 = 0x131;
}

/// Status codes of 13,0E.
pub mod status {
    pub const OK: u16 = 0x0000;
    pub const NOT_FOUND: u16 = 0x0002;
    pub const ALREADY_EXISTS: u16 = 0x0003;
    pub const INVALID: u16 = 0x000A;
    pub const LIMIT: u16 = 0x000C;
    pub const NEEDS_AUTH: u16 = 0x000E;
}

/// Most items accepted in one SNAC (an 8 KiB payload holds at most ~800).
pub const MAX_ITEMS: usize = 1024;
const MIN_ITEM_LEN: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbagItem {
    pub name: String,
    pub group_id: u16,
    pub item_id: u16,
    pub class: u16,
    pub attrs: TlvList,
}

impl FeedbagItem {
    pub fn decode(r: &mut Reader<'_>) -> Result<FeedbagItem, DecodeError> {
        Ok(FeedbagItem {
            name: r.str16("item name")?,
            group_id: r.u16("group id")?,
            item_id: r.u16("item id")?,
            class: r.u16("item class")?,
            attrs: TlvList::decode_lblock(r)?,
        })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        put_bytes16(out, self.name.as_bytes());
        out.put_u16(self.group_id);
        out.put_u16(self.item_id);
        out.put_u16(self.class);
        self.attrs.encode_lblock(out);
    }

    /// The member ids of a group (TLV 0xC8).
    pub fn order(&self) -> Vec<u16> {
        self.attrs
            .get_bytes(attr::ORDER)
            .map(|b| {
                b.chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn decode_items(r: &mut Reader<'_>) -> Result<Vec<FeedbagItem>, DecodeError> {
    let mut items = Vec::new();
    while !r.is_empty() {
        if items.len() >= MAX_ITEMS {
            return Err(DecodeError::TooMany("feedbag items"));
        }
        items.push(FeedbagItem::decode(r)?);
    }
    Ok(items)
}

tlv_snac!(
    /// 13,02: the client asks for its FEEDBAG limits.
    RightsQuery,
    FEEDBAG,
    0x02
);

/// 13,03: FEEDBAG limits; `max_items_by_class[i]` limits items of class `i`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rights {
    pub max_items_by_class: Vec<u16>,
    pub max_attr_len: u16,
}

impl SnacBody for Rights {
    const FAMILY: u16 = FEEDBAG;
    const SUBTYPE: u16 = 0x03;
    fn encode_body(&self, out: &mut BytesMut) {
        let mut v = Vec::with_capacity(self.max_items_by_class.len() * 2);
        for m in &self.max_items_by_class {
            v.extend_from_slice(&m.to_be_bytes());
        }
        TlvList::new()
            .with(Tlv::u16(0x02, self.max_attr_len))
            .with(Tlv::new(0x04, v))
            .encode(out);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let t = TlvList::decode_rest(r)?;
        let max_items_by_class = t
            .get_bytes(0x04)
            .map(|b| {
                b.chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Rights {
            max_items_by_class,
            max_attr_len: t.get_u16(0x02).unwrap_or(0),
        })
    }
}

empty_snac!(
    /// 13,04: the client asks for its whole feedbag.
    Query,
    FEEDBAG,
    0x04
);

/// 13,05: the client asks for the feedbag unless it still has this version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryIfModified {
    pub last_modified: u32,
    pub item_count: u16,
}

impl SnacBody for QueryIfModified {
    const FAMILY: u16 = FEEDBAG;
    const SUBTYPE: u16 = 0x05;
    fn encode_body(&self, out: &mut BytesMut) {
        out.put_u32(self.last_modified);
        out.put_u16(self.item_count);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(QueryIfModified {
            last_modified: r.u32("last modified")?,
            item_count: r.u16("item count")?,
        })
    }
}

/// 13,06: the whole feedbag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub version: u8,
    pub items: Vec<FeedbagItem>,
    pub last_modified: u32,
}

impl SnacBody for Reply {
    const FAMILY: u16 = FEEDBAG;
    const SUBTYPE: u16 = 0x06;
    fn encode_body(&self, out: &mut BytesMut) {
        out.put_u8(self.version);
        out.put_u16(self.items.len().min(u16::MAX as usize) as u16);
        for i in &self.items {
            i.encode(out);
        }
        out.put_u32(self.last_modified);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u8("feedbag version")?;
        let n = r.u16("item count")? as usize;
        r.check_count(n, MIN_ITEM_LEN, MAX_ITEMS, "feedbag items")?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(FeedbagItem::decode(r)?);
        }
        Ok(Reply {
            version,
            items,
            last_modified: r.u32("last modified")?,
        })
    }
}

empty_snac!(
    /// 13,07: the client starts using its feedbag (presence flows from now on).
    Use,
    FEEDBAG,
    0x07
);

macro_rules! items_snac {
    ($(#[$m:meta])* $name:ident, $subtype:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $name {
            pub items: Vec<FeedbagItem>,
        }

        impl SnacBody for $name {
            const FAMILY: u16 = FEEDBAG;
            const SUBTYPE: u16 = $subtype;
            fn encode_body(&self, out: &mut BytesMut) {
                for i in &self.items {
                    i.encode(out);
                }
            }
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok($name {
                    items: decode_items(r)?,
                })
            }
        }
    };
}

items_snac!(
    /// 13,08: insert items.
    InsertItems,
    0x08
);
items_snac!(
    /// 13,09: update items.
    UpdateItems,
    0x09
);
items_snac!(
    /// 13,0A: delete items.
    DeleteItems,
    0x0A
);

/// 13,0E: one status per item of the edit it answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub codes: Vec<u16>,
}

impl SnacBody for Status {
    const FAMILY: u16 = FEEDBAG;
    const SUBTYPE: u16 = 0x0E;
    fn encode_body(&self, out: &mut BytesMut) {
        for c in &self.codes {
            out.put_u16(*c);
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let codes = super::decode_until_end(r, 2, MAX_ITEMS, "status codes", |r| r.u16("status"))?;
        Ok(Status { codes })
    }
}

/// 13,0F: the client's copy is current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyNotModified {
    pub last_modified: u32,
    pub item_count: u16,
}

impl SnacBody for ReplyNotModified {
    const FAMILY: u16 = FEEDBAG;
    const SUBTYPE: u16 = 0x0F;
    fn encode_body(&self, out: &mut BytesMut) {
        out.put_u32(self.last_modified);
        out.put_u16(self.item_count);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ReplyNotModified {
            last_modified: r.u32("last modified")?,
            item_count: r.u16("item count")?,
        })
    }
}

empty_snac!(
    /// 13,11: an edit transaction starts.
    StartCluster,
    FEEDBAG,
    0x11
);
empty_snac!(
    /// 13,12: an edit transaction ends.
    EndCluster,
    FEEDBAG,
    0x12
);

/// 13,18 (client asks) and 13,19 (host relays): a request for authorisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    pub screen_name: String,
    pub reason: String,
}

fn encode_auth_request(a: &AuthRequest, out: &mut BytesMut) {
    put_str8(out, a.screen_name.as_bytes());
    put_bytes16(out, a.reason.as_bytes());
    out.put_u16(0);
}

fn decode_auth_request(r: &mut Reader<'_>) -> Result<AuthRequest, DecodeError> {
    let screen_name = r.str8("screen name")?;
    let reason = r.str16("reason")?;
    // A trailing u16 (unknown, zero) is optional in practice.
    let _ = r.rest();
    Ok(AuthRequest {
        screen_name,
        reason,
    })
}

/// 13,18: the client asks `screen_name` for authorisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequestToHost(pub AuthRequest);

impl SnacBody for AuthRequestToHost {
    const FAMILY: u16 = FEEDBAG;
    const SUBTYPE: u16 = 0x18;
    fn encode_body(&self, out: &mut BytesMut) {
        encode_auth_request(&self.0, out)
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        decode_auth_request(r).map(AuthRequestToHost)
    }
}

/// 13,19: `screen_name` asks the client for authorisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequestToClient(pub AuthRequest);

impl SnacBody for AuthRequestToClient {
    const FAMILY: u16 = FEEDBAG;
    const SUBTYPE: u16 = 0x19;
    fn encode_body(&self, out: &mut BytesMut) {
        encode_auth_request(&self.0, out)
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        decode_auth_request(r).map(AuthRequestToClient)
    }
}

/// 13,1A (client answers) and 13,1B (host relays): an authorisation answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthReply {
    pub screen_name: String,
    pub accepted: bool,
    pub reason: String,
}

fn encode_auth_reply(a: &AuthReply, out: &mut BytesMut) {
    put_str8(out, a.screen_name.as_bytes());
    out.put_u8(a.accepted as u8);
    put_bytes16(out, a.reason.as_bytes());
}

fn decode_auth_reply(r: &mut Reader<'_>) -> Result<AuthReply, DecodeError> {
    let screen_name = r.str8("screen name")?;
    let accepted = r.u8("auth flag")? != 0;
    let reason = if r.is_empty() {
        String::new()
    } else {
        r.str16("reason")?
    };
    let _ = r.rest();
    Ok(AuthReply {
        screen_name,
        accepted,
        reason,
    })
}

/// 13,1A: the client grants or denies `screen_name`'s request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthReplyToHost(pub AuthReply);

impl SnacBody for AuthReplyToHost {
    const FAMILY: u16 = FEEDBAG;
    const SUBTYPE: u16 = 0x1A;
    fn encode_body(&self, out: &mut BytesMut) {
        encode_auth_reply(&self.0, out)
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        decode_auth_reply(r).map(AuthReplyToHost)
    }
}

/// 13,1B: `screen_name` granted or denied the client's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthReplyToClient(pub AuthReply);

impl SnacBody for AuthReplyToClient {
    const FAMILY: u16 = FEEDBAG;
    const SUBTYPE: u16 = 0x1B;
    fn encode_body(&self, out: &mut BytesMut) {
        encode_auth_reply(&self.0, out)
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        decode_auth_reply(r).map(AuthReplyToClient)
    }
}
