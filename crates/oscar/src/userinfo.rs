//! The user-info block shared by buddy arrivals, self info, locate replies and incoming IMs:
//! screen name, warning level, then a counted TLV block (class, sign-on time, idle, status).

use bytes::{BufMut, BytesMut};

use crate::wire::{clamp_str, put_str8, Reader};
use crate::{DecodeError, Tlv, TlvList};

/// TLV types inside a user-info block.
pub mod tlv {
    pub const USER_CLASS: u16 = 0x01;
    pub const SIGNON_TIME: u16 = 0x03;
    pub const IDLE_MINUTES: u16 = 0x04;
    pub const MEMBER_SINCE: u16 = 0x05;
    pub const STATUS: u16 = 0x06;
    pub const ONLINE_SECONDS: u16 = 0x0F;
}

/// User class flags (TLV 0x01).
pub mod class {
    pub const UNCONFIRMED: u16 = 0x0008;
    /// An ordinary AIM user ("free").
    pub const FREE: u16 = 0x0010;
    pub const AWAY: u16 = 0x0020;
    pub const ICQ: u16 = 0x0040;
}

/// Status values (TLV 0x06, low 16 bits), as ICQ and later AIM clients set them with 01,1E.
pub mod status {
    pub const ONLINE: u32 = 0x0000;
    pub const AWAY: u32 = 0x0001;
    pub const DND: u32 = 0x0002;
    pub const NA: u32 = 0x0004;
    pub const OCCUPIED: u32 = 0x0010;
    pub const FREE_FOR_CHAT: u32 = 0x0020;
    pub const INVISIBLE: u32 = 0x0100;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub screen_name: String,
    pub warning_level: u16,
    pub tlvs: TlvList,
}

impl UserInfo {
    /// A user-info block with the name only (departures need no more).
    pub fn name_only(screen_name: &str) -> UserInfo {
        UserInfo {
            screen_name: clamp_str(screen_name, 255).to_string(),
            warning_level: 0,
            tlvs: TlvList::new(),
        }
    }

    /// An online user: class (with the away bit), status, sign-on time and idle minutes.
    pub fn online(screen_name: &str, away: bool, status: u32, signon: u32, idle_min: u16) -> Self {
        let mut info = UserInfo::name_only(screen_name);
        let class = class::FREE | if away { class::AWAY } else { 0 };
        info.tlvs.push(Tlv::u16(tlv::USER_CLASS, class));
        info.tlvs.push(Tlv::u32(tlv::STATUS, status));
        info.tlvs.push(Tlv::u32(tlv::SIGNON_TIME, signon));
        if idle_min > 0 {
            info.tlvs.push(Tlv::u16(tlv::IDLE_MINUTES, idle_min));
        }
        info
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<UserInfo, DecodeError> {
        let screen_name = r.str8("user info screen name")?;
        let warning_level = r.u16("user info warning level")?;
        let tlvs = TlvList::decode_counted(r)?;
        Ok(UserInfo {
            screen_name,
            warning_level,
            tlvs,
        })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        put_str8(out, self.screen_name.as_bytes());
        out.put_u16(self.warning_level);
        self.tlvs.encode_counted(out);
    }

    pub fn class(&self) -> Option<u16> {
        self.tlvs.get_u16(tlv::USER_CLASS)
    }

    pub fn is_away(&self) -> bool {
        self.class().is_some_and(|c| c & class::AWAY != 0)
    }

    pub fn idle_minutes(&self) -> u16 {
        self.tlvs.get_u16(tlv::IDLE_MINUTES).unwrap_or(0)
    }
}
