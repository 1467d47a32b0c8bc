//! TLVs (type, length, value): plain lists that run to the end of their container, blocks
//! preceded by a count, and blocks preceded by a byte length.

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::Reader;
use crate::DecodeError;

/// Most TLVs accepted in one list; a FLAP payload of 8 KiB holds at most 2048 empty ones.
pub const MAX_TLVS: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlv {
    pub kind: u16,
    pub value: Bytes,
}

impl Tlv {
    pub fn new(kind: u16, value: impl Into<Bytes>) -> Tlv {
        Tlv {
            kind,
            value: value.into(),
        }
    }

    pub fn u8(kind: u16, v: u8) -> Tlv {
        Tlv::new(kind, vec![v])
    }

    pub fn u16(kind: u16, v: u16) -> Tlv {
        Tlv::new(kind, v.to_be_bytes().to_vec())
    }

    pub fn u32(kind: u16, v: u32) -> Tlv {
        Tlv::new(kind, v.to_be_bytes().to_vec())
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<Tlv, DecodeError> {
        let kind = r.u16("TLV type")?;
        let value = r.bytes16("TLV value")?;
        Ok(Tlv {
            kind,
            value: Bytes::copy_from_slice(value),
        })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.kind);
        crate::wire::put_bytes16(out, &self.value);
    }

    pub fn as_u16(&self) -> Option<u16> {
        let b: [u8; 2] = self.value.as_ref().try_into().ok()?;
        Some(u16::from_be_bytes(b))
    }

    pub fn as_u32(&self) -> Option<u32> {
        let b: [u8; 4] = self.value.as_ref().try_into().ok()?;
        Some(u32::from_be_bytes(b))
    }

    pub fn as_string(&self) -> String {
        String::from_utf8_lossy(&self.value).into_owned()
    }
}

/// An ordered list of TLVs; a type may repeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlvList(pub Vec<Tlv>);

impl TlvList {
    pub fn new() -> TlvList {
        TlvList(Vec::new())
    }

    /// Reads TLVs until the input ends.
    pub fn decode_rest(r: &mut Reader<'_>) -> Result<TlvList, DecodeError> {
        let mut v = Vec::new();
        while !r.is_empty() {
            if v.len() >= MAX_TLVS {
                return Err(DecodeError::TooMany("TLVs"));
            }
            v.push(Tlv::decode(r)?);
        }
        Ok(TlvList(v))
    }

    /// Reads a TLV block preceded by a u16 count. A count larger than the bytes left could hold
    /// is refused before anything is allocated.
    pub fn decode_counted(r: &mut Reader<'_>) -> Result<TlvList, DecodeError> {
        let count = r.u16("TLV count")? as usize;
        r.check_count(count, 4, MAX_TLVS, "TLVs")?;
        let mut v = Vec::with_capacity(count);
        for _ in 0..count {
            v.push(Tlv::decode(r)?);
        }
        Ok(TlvList(v))
    }

    /// Reads a TLV block preceded by its u16 length in bytes.
    pub fn decode_lblock(r: &mut Reader<'_>) -> Result<TlvList, DecodeError> {
        let body = r.bytes16("TLV block")?;
        let mut inner = Reader::new(body);
        TlvList::decode_rest(&mut inner)
    }

    pub fn encode(&self, out: &mut BytesMut) {
        for t in &self.0 {
            t.encode(out);
        }
    }

    pub fn encode_counted(&self, out: &mut BytesMut) {
        let n = self.0.len().min(u16::MAX as usize);
        out.put_u16(n as u16);
        for t in self.0.iter().take(n) {
            t.encode(out);
        }
    }

    pub fn encode_lblock(&self, out: &mut BytesMut) {
        let mut inner = BytesMut::new();
        self.encode(&mut inner);
        crate::wire::put_bytes16(out, &inner);
    }

    pub fn encoded_len(&self) -> usize {
        self.0.iter().map(|t| 4 + t.value.len()).sum()
    }

    pub fn push(&mut self, tlv: Tlv) -> &mut Self {
        self.0.push(tlv);
        self
    }

    pub fn with(mut self, tlv: Tlv) -> Self {
        self.0.push(tlv);
        self
    }

    /// The first TLV of `kind`.
    pub fn get(&self, kind: u16) -> Option<&Tlv> {
        self.0.iter().find(|t| t.kind == kind)
    }

    pub fn has(&self, kind: u16) -> bool {
        self.get(kind).is_some()
    }

    pub fn get_u16(&self, kind: u16) -> Option<u16> {
        self.get(kind).and_then(Tlv::as_u16)
    }

    pub fn get_u32(&self, kind: u16) -> Option<u32> {
        self.get(kind).and_then(Tlv::as_u32)
    }

    pub fn get_bytes(&self, kind: u16) -> Option<&Bytes> {
        self.get(kind).map(|t| &t.value)
    }

    pub fn get_string(&self, kind: u16) -> Option<String> {
        self.get(kind).map(Tlv::as_string)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Tlv> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<Tlv> for TlvList {
    fn from_iter<I: IntoIterator<Item = Tlv>>(iter: I) -> Self {
        TlvList(iter.into_iter().collect())
    }
}
