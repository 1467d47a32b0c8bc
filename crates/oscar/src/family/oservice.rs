//! OSERVICE (0x0001): connection setup, versions, rate classes, self info, idle and status.

use bytes::{BufMut, BytesMut};

use super::{decode_until_end, OSERVICE};
use crate::snac::{empty_snac, tlv_snac, SnacBody};
use crate::wire::Reader;
use crate::{DecodeError, TlvList, UserInfo};

/// Most families or rate classes accepted in one list.
pub const MAX_LIST: usize = 256;

/// 01,02: the client is ready; one entry per family it uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientReady {
    pub families: Vec<FamilyTool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyTool {
    pub family: u16,
    pub version: u16,
    pub tool_id: u16,
    pub tool_version: u16,
}

impl SnacBody for ClientReady {
    const FAMILY: u16 = OSERVICE;
    const SUBTYPE: u16 = 0x02;
    fn encode_body(&self, out: &mut BytesMut) {
        for f in &self.families {
            out.put_u16(f.family);
            out.put_u16(f.version);
            out.put_u16(f.tool_id);
            out.put_u16(f.tool_version);
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let families = decode_until_end(r, 8, MAX_LIST, "client ready entries", |r| {
            Ok(FamilyTool {
                family: r.u16("family")?,
                version: r.u16("version")?,
                tool_id: r.u16("tool id")?,
                tool_version: r.u16("tool version")?,
            })
        })?;
        Ok(ClientReady { families })
    }
}

/// 01,03: the host is online and serves these families.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostOnline {
    pub families: Vec<u16>,
}

impl SnacBody for HostOnline {
    const FAMILY: u16 = OSERVICE;
    const SUBTYPE: u16 = 0x03;
    fn encode_body(&self, out: &mut BytesMut) {
        for f in &self.families {
            out.put_u16(*f);
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let families = decode_until_end(r, 2, MAX_LIST, "families", |r| r.u16("family"))?;
        Ok(HostOnline { families })
    }
}

/// 01,04: the client asks for a connection to another service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceRequest {
    pub family: u16,
    pub tlvs: TlvList,
}

impl SnacBody for ServiceRequest {
    const FAMILY: u16 = OSERVICE;
    const SUBTYPE: u16 = 0x04;
    fn encode_body(&self, out: &mut BytesMut) {
        out.put_u16(self.family);
        self.tlvs.encode(out);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ServiceRequest {
            family: r.u16("service family")?,
            tlvs: TlvList::decode_rest(r)?,
        })
    }
}

empty_snac!(
    /// 01,06: the client asks for the rate classes.
    RateParamsQuery,
    OSERVICE,
    0x06
);

/// The parameters of one rate class (the v3+ layout with `last_time` and `dropping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateClassParams {
    pub id: u16,
    pub window: u32,
    pub clear: u32,
    pub alert: u32,
    pub limit: u32,
    pub disconnect: u32,
    pub current: u32,
    pub max: u32,
    /// Milliseconds since the last counted SNAC.
    pub last_time: u32,
    /// 1 when the host is currently dropping this class's SNACs.
    pub dropping: u8,
}

impl RateClassParams {
    const LEN: usize = 2 + 4 * 8 + 1;

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.id);
        for v in [
            self.window,
            self.clear,
            self.alert,
            self.limit,
            self.disconnect,
            self.current,
            self.max,
            self.last_time,
        ] {
            out.put_u32(v);
        }
        out.put_u8(self.dropping);
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(RateClassParams {
            id: r.u16("rate class")?,
            window: r.u32("rate class")?,
            clear: r.u32("rate class")?,
            alert: r.u32("rate class")?,
            limit: r.u32("rate class")?,
            disconnect: r.u32("rate class")?,
            current: r.u32("rate class")?,
            max: r.u32("rate class")?,
            last_time: r.u32("rate class")?,
            dropping: r.u8("rate class")?,
        })
    }
}

/// 01,07: the rate classes and which SNACs belong to each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateParamsReply {
    pub classes: Vec<RateClassParams>,
    /// Per class (same order): its id and its `(family, subtype)` members.
    pub members: Vec<(u16, Vec<(u16, u16)>)>,
}

impl SnacBody for RateParamsReply {
    const FAMILY: u16 = OSERVICE;
    const SUBTYPE: u16 = 0x07;
    fn encode_body(&self, out: &mut BytesMut) {
        out.put_u16(self.classes.len() as u16);
        for c in &self.classes {
            c.encode(out);
        }
        for (id, members) in &self.members {
            out.put_u16(*id);
            out.put_u16(members.len() as u16);
            for (f, s) in members {
                out.put_u16(*f);
                out.put_u16(*s);
            }
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = r.u16("rate class count")? as usize;
        r.check_count(n, RateClassParams::LEN + 4, MAX_LIST, "rate classes")?;
        let mut classes = Vec::with_capacity(n);
        for _ in 0..n {
            classes.push(RateClassParams::decode(r)?);
        }
        let mut members = Vec::with_capacity(n);
        for _ in 0..n {
            let id = r.u16("rate members")?;
            let count = r.u16("rate members")? as usize;
            r.check_count(count, 4, 0xFFFF, "rate members")?;
            let mut m = Vec::with_capacity(count);
            for _ in 0..count {
                m.push((r.u16("rate member")?, r.u16("rate member")?));
            }
            members.push((id, m));
        }
        Ok(RateParamsReply { classes, members })
    }
}

/// 01,08: the client accepts (subscribes to changes of) these rate classes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateParamsAck {
    pub classes: Vec<u16>,
}

impl SnacBody for RateParamsAck {
    const FAMILY: u16 = OSERVICE;
    const SUBTYPE: u16 = 0x08;
    fn encode_body(&self, out: &mut BytesMut) {
        for c in &self.classes {
            out.put_u16(*c);
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let classes = decode_until_end(r, 2, MAX_LIST, "rate class ids", |r| r.u16("class"))?;
        Ok(RateParamsAck { classes })
    }
}

/// Rate change codes of 01,0A.
pub mod rate_code {
    pub const CHANGED: u16 = 1;
    pub const WARNING: u16 = 2;
    pub const LIMIT: u16 = 3;
    pub const CLEAR: u16 = 4;
}

/// 01,0A: a rate class changed state for this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateChange {
    pub code: u16,
    pub params: RateClassParams,
}

impl SnacBody for RateChange {
    const FAMILY: u16 = OSERVICE;
    const SUBTYPE: u16 = 0x0A;
    fn encode_body(&self, out: &mut BytesMut) {
        out.put_u16(self.code);
        self.params.encode(out);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(RateChange {
            code: r.u16("rate change code")?,
            params: RateClassParams::decode(r)?,
        })
    }
}

empty_snac!(
    /// 01,0E: the client asks for its own user info.
    SelfInfoQuery,
    OSERVICE,
    0x0E
);

/// 01,0F: the client's own user info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfInfo {
    pub info: UserInfo,
}

impl SnacBody for SelfInfo {
    const FAMILY: u16 = OSERVICE;
    const SUBTYPE: u16 = 0x0F;
    fn encode_body(&self, out: &mut BytesMut) {
        self.info.encode(out);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(SelfInfo {
            info: UserInfo::decode(r)?,
        })
    }
}

/// 01,11: the client has been idle this many seconds (0: back).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdleNotification {
    pub idle_seconds: u32,
}

impl SnacBody for IdleNotification {
    const FAMILY: u16 = OSERVICE;
    const SUBTYPE: u16 = 0x11;
    fn encode_body(&self, out: &mut BytesMut) {
        out.put_u32(self.idle_seconds);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(IdleNotification {
            idle_seconds: r.u32("idle seconds")?,
        })
    }
}

/// 01,17 (client) and 01,18 (host): `(family, version)` pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Versions {
    pub versions: Vec<(u16, u16)>,
}

fn decode_versions(r: &mut Reader<'_>) -> Result<Versions, DecodeError> {
    let versions = decode_until_end(r, 4, MAX_LIST, "family versions", |r| {
        Ok((r.u16("family")?, r.u16("version")?))
    })?;
    Ok(Versions { versions })
}

fn encode_versions(v: &Versions, out: &mut BytesMut) {
    for (f, ver) in &v.versions {
        out.put_u16(*f);
        out.put_u16(*ver);
    }
}

/// 01,17: the versions the client speaks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientVersions(pub Versions);

impl SnacBody for ClientVersions {
    const FAMILY: u16 = OSERVICE;
    const SUBTYPE: u16 = 0x17;
    fn encode_body(&self, out: &mut BytesMut) {
        encode_versions(&self.0, out)
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        decode_versions(r).map(ClientVersions)
    }
}

/// 01,18: the versions the host speaks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostVersions(pub Versions);

impl SnacBody for HostVersions {
    const FAMILY: u16 = OSERVICE;
    const SUBTYPE: u16 = 0x18;
    fn encode_body(&self, out: &mut BytesMut) {
        encode_versions(&self.0, out)
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        decode_versions(r).map(HostVersions)
    }
}

tlv_snac!(
    /// 01,1E: set status (TLV 0x06), status message (0x1D), direct-connect info (0x0C).
    SetUserInfoFields,
    OSERVICE,
    0x1E
);

/// TLV types of 01,1E.
pub mod set_tlv {
    pub const STATUS: u16 = 0x06;
    pub const DC_INFO: u16 = 0x0C;
    pub const BART_STATUS: u16 = 0x1D;
}
