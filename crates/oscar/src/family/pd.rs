//! PD (0x0009), permit/deny: rights only; the permit and deny lists themselves live in the
//! feedbag as items of class 2 (permit), 3 (deny) and 4 (PD mode).

use bytes::BytesMut;

use super::PD;
use crate::snac::{tlv_snac, SnacBody};
use crate::wire::Reader;
use crate::{DecodeError, Tlv, TlvList};

tlv_snac!(
    /// 09,02: the client asks for its PD limits. Clients wait for the answer before signing on.
    RightsQuery,
    PD,
    0x02
);

/// 09,03: PD limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rights {
    pub max_permits: u16,
    pub max_denies: u16,
}

impl SnacBody for Rights {
    const FAMILY: u16 = PD;
    const SUBTYPE: u16 = 0x03;
    fn encode_body(&self, out: &mut BytesMut) {
        TlvList::new()
            .with(Tlv::u16(0x01, self.max_permits))
            .with(Tlv::u16(0x02, self.max_denies))
            .encode(out);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let t = TlvList::decode_rest(r)?;
        Ok(Rights {
            max_permits: t.get_u16(0x01).unwrap_or(0),
            max_denies: t.get_u16(0x02).unwrap_or(0),
        })
    }
}

/// PD modes (feedbag item class 4, TLV 0xCA).
pub mod mode {
    pub const PERMIT_ALL: u8 = 1;
    pub const DENY_ALL: u8 = 2;
    pub const PERMIT_SOME: u8 = 3;
    pub const DENY_SOME: u8 = 4;
    pub const PERMIT_ON_LIST: u8 = 5;
}
