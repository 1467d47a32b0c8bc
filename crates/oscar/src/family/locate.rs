//! LOCATE (0x0002): rights, the client's profile and away message, and user-info queries.

use bytes::{BufMut, Bytes, BytesMut};

use super::LOCATE;
use crate::snac::{tlv_snac, SnacBody};
use crate::wire::{put_str8, Reader};
use crate::{DecodeError, Tlv, TlvList, UserInfo};

tlv_snac!(
    /// 02,02: the client asks for its LOCATE limits.
    RightsQuery,
    LOCATE,
    0x02
);

/// 02,03: LOCATE limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rights {
    pub max_profile_len: u16,
    pub max_capabilities: u16,
}

impl SnacBody for Rights {
    const FAMILY: u16 = LOCATE;
    const SUBTYPE: u16 = 0x03;
    fn encode_body(&self, out: &mut BytesMut) {
        TlvList::new()
            .with(Tlv::u16(0x01, self.max_profile_len))
            .with(Tlv::u16(0x02, self.max_capabilities))
            .encode(out);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let t = TlvList::decode_rest(r)?;
        Ok(Rights {
            max_profile_len: t.get_u16(0x01).unwrap_or(0),
            max_capabilities: t.get_u16(0x02).unwrap_or(0),
        })
    }
}

/// TLV types of 02,04 and 02,06.
pub mod info_tlv {
    pub const PROFILE_MIME: u16 = 0x01;
    pub const PROFILE: u16 = 0x02;
    pub const AWAY_MIME: u16 = 0x03;
    pub const AWAY: u16 = 0x04;
    pub const CAPABILITIES: u16 = 0x05;
}

/// Profile and away message, each with its MIME type (`text/aolrtf; charset="us-ascii"`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InfoFields {
    pub profile_mime: Option<String>,
    pub profile: Option<Bytes>,
    pub away_mime: Option<String>,
    /// Empty means "back from away".
    pub away: Option<Bytes>,
    pub capabilities: Option<Bytes>,
}

impl InfoFields {
    fn encode(&self, out: &mut BytesMut) {
        use info_tlv::*;
        let mut t = TlvList::new();
        if let Some(m) = &self.profile_mime {
            t.push(Tlv::new(PROFILE_MIME, m.clone().into_bytes()));
        }
        if let Some(p) = &self.profile {
            t.push(Tlv::new(PROFILE, p.clone()));
        }
        if let Some(m) = &self.away_mime {
            t.push(Tlv::new(AWAY_MIME, m.clone().into_bytes()));
        }
        if let Some(a) = &self.away {
            t.push(Tlv::new(AWAY, a.clone()));
        }
        if let Some(c) = &self.capabilities {
            t.push(Tlv::new(CAPABILITIES, c.clone()));
        }
        t.encode(out);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        use info_tlv::*;
        let t = TlvList::decode_rest(r)?;
        Ok(InfoFields {
            profile_mime: t.get_string(PROFILE_MIME),
            profile: t.get_bytes(PROFILE).cloned(),
            away_mime: t.get_string(AWAY_MIME),
            away: t.get_bytes(AWAY).cloned(),
            capabilities: t.get_bytes(CAPABILITIES).cloned(),
        })
    }
}

/// 02,04: the client sets its profile, away message or capabilities.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetInfo(pub InfoFields);

impl SnacBody for SetInfo {
    const FAMILY: u16 = LOCATE;
    const SUBTYPE: u16 = 0x04;
    fn encode_body(&self, out: &mut BytesMut) {
        self.0.encode(out)
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        InfoFields::decode(r).map(SetInfo)
    }
}

/// Query kinds of 02,05.
pub mod query_kind {
    pub const PROFILE: u16 = 0x0001;
    pub const ONLINE: u16 = 0x0002;
    pub const AWAY: u16 = 0x0003;
    pub const CAPABILITIES: u16 = 0x0004;
}

/// 02,05: the client asks about another user (old form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfoQuery {
    pub kind: u16,
    pub screen_name: String,
}

impl SnacBody for UserInfoQuery {
    const FAMILY: u16 = LOCATE;
    const SUBTYPE: u16 = 0x05;
    fn encode_body(&self, out: &mut BytesMut) {
        out.put_u16(self.kind);
        put_str8(out, self.screen_name.as_bytes());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(UserInfoQuery {
            kind: r.u16("query kind")?,
            screen_name: r.str8("screen name")?,
        })
    }
}

/// 02,06: what the host knows about a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfoReply {
    pub info: UserInfo,
    pub fields: InfoFields,
}

impl SnacBody for UserInfoReply {
    const FAMILY: u16 = LOCATE;
    const SUBTYPE: u16 = 0x06;
    fn encode_body(&self, out: &mut BytesMut) {
        self.info.encode(out);
        self.fields.encode(out);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(UserInfoReply {
            info: UserInfo::decode(r)?,
            fields: InfoFields::decode(r)?,
        })
    }
}

/// Flags of 02,15.
pub mod query_flags {
    pub const PROFILE: u32 = 0x0001;
    pub const AWAY: u32 = 0x0002;
    pub const CAPABILITIES: u32 = 0x0004;
}

/// 02,15: the client asks about another user (flags say what it wants).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfoQuery2 {
    pub flags: u32,
    pub screen_name: String,
}

impl SnacBody for UserInfoQuery2 {
    const FAMILY: u16 = LOCATE;
    const SUBTYPE: u16 = 0x15;
    fn encode_body(&self, out: &mut BytesMut) {
        out.put_u32(self.flags);
        put_str8(out, self.screen_name.as_bytes());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(UserInfoQuery2 {
            flags: r.u32("query flags")?,
            screen_name: r.str8("screen name")?,
        })
    }
}
