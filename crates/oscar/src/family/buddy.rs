//! BUDDY (0x0003): rights, and the arrival and departure of buddies.

use bytes::BytesMut;

use super::BUDDY;
use crate::snac::{tlv_snac, SnacBody};
use crate::wire::Reader;
use crate::{DecodeError, Tlv, TlvList, UserInfo};

tlv_snac!(
    /// 03,02: the client asks for its BUDDY limits.
    RightsQuery,
    BUDDY,
    0x02
);

/// 03,03: BUDDY limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rights {
    pub max_buddies: u16,
    pub max_watchers: u16,
    pub max_temp_buddies: u16,
}

impl SnacBody for Rights {
    const FAMILY: u16 = BUDDY;
    const SUBTYPE: u16 = 0x03;
    fn encode_body(&self, out: &mut BytesMut) {
        TlvList::new()
            .with(Tlv::u16(0x01, self.max_buddies))
            .with(Tlv::u16(0x02, self.max_watchers))
            .with(Tlv::u16(0x04, self.max_temp_buddies))
            .encode(out);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let t = TlvList::decode_rest(r)?;
        Ok(Rights {
            max_buddies: t.get_u16(0x01).unwrap_or(0),
            max_watchers: t.get_u16(0x02).unwrap_or(0),
            max_temp_buddies: t.get_u16(0x04).unwrap_or(0),
        })
    }
}

/// Most user-info blocks accepted in one arrival or departure.
pub const MAX_USERS: usize = 256;

fn decode_users(r: &mut Reader<'_>) -> Result<Vec<UserInfo>, DecodeError> {
    let mut users = Vec::new();
    while !r.is_empty() {
        if users.len() >= MAX_USERS {
            return Err(DecodeError::TooMany("user info blocks"));
        }
        users.push(UserInfo::decode(r)?);
    }
    Ok(users)
}

/// 03,0B: buddies came online or changed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrived {
    pub users: Vec<UserInfo>,
}

impl SnacBody for Arrived {
    const FAMILY: u16 = BUDDY;
    const SUBTYPE: u16 = 0x0B;
    fn encode_body(&self, out: &mut BytesMut) {
        for u in &self.users {
            u.encode(out);
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Arrived {
            users: decode_users(r)?,
        })
    }
}

/// 03,0C: buddies went offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Departed {
    pub users: Vec<UserInfo>,
}

impl SnacBody for Departed {
    const FAMILY: u16 = BUDDY;
    const SUBTYPE: u16 = 0x0C;
    fn encode_body(&self, out: &mut BytesMut) {
        for u in &self.users {
            u.encode(out);
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Departed {
            users: decode_users(r)?,
        })
    }
}
