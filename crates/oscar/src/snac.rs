//! SNACs: the 10-byte header (family, subtype, flags, request id), the optional leading block that
//! flag 0x8000 announces, and the typed-body trait every food-group module implements.

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::Reader;
use crate::{DecodeError, SnacErrorCode, TlvList};

pub const SNAC_HEADER_LEN: usize = 10;
/// Flag: a u16-length-prefixed block (TLVs) precedes the body.
pub const FLAG_OPTIONAL_BLOCK: u16 = 0x8000;
/// Flag: more replies to the same request follow.
pub const FLAG_MORE_REPLIES: u16 = 0x0001;
/// Every family's subtype 0x01 is its error SNAC.
pub const SUBTYPE_ERROR: u16 = 0x0001;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SnacHeader {
    pub family: u16,
    pub subtype: u16,
    pub flags: u16,
    pub request_id: u32,
}

/// A SNAC with its body still undecoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snac {
    pub header: SnacHeader,
    /// The block announced by flag 0x8000. Encoding sets that flag exactly when this is `Some`.
    pub optional: Option<Bytes>,
    pub body: Bytes,
}

impl Snac {
    pub fn new(family: u16, subtype: u16, request_id: u32, body: Bytes) -> Snac {
        Snac {
            header: SnacHeader {
                family,
                subtype,
                flags: 0,
                request_id,
            },
            optional: None,
            body,
        }
    }

    /// Decodes a whole FLAP channel-2 payload.
    pub fn decode(payload: &[u8]) -> Result<Snac, DecodeError> {
        let mut r = Reader::new(payload);
        let header = SnacHeader {
            family: r.u16("SNAC header")?,
            subtype: r.u16("SNAC header")?,
            flags: r.u16("SNAC header")?,
            request_id: r.u32("SNAC header")?,
        };
        let optional = if header.flags & FLAG_OPTIONAL_BLOCK != 0 {
            Some(Bytes::copy_from_slice(r.bytes16("SNAC optional block")?))
        } else {
            None
        };
        Ok(Snac {
            header,
            optional,
            body: Bytes::copy_from_slice(r.rest()),
        })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.header.family);
        out.put_u16(self.header.subtype);
        let mut flags = self.header.flags & !FLAG_OPTIONAL_BLOCK;
        if self.optional.is_some() {
            flags |= FLAG_OPTIONAL_BLOCK;
        }
        out.put_u16(flags);
        out.put_u32(self.header.request_id);
        if let Some(opt) = &self.optional {
            crate::wire::put_bytes16(out, opt);
        }
        out.put_slice(&self.body);
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(SNAC_HEADER_LEN + self.body.len());
        self.encode(&mut out);
        out.freeze()
    }

    /// `(family, subtype)`.
    pub fn kind(&self) -> (u16, u16) {
        (self.header.family, self.header.subtype)
    }

    /// Decodes the body as `T`, checking that family and subtype match.
    pub fn body_as<T: SnacBody>(&self) -> Result<T, DecodeError> {
        if self.kind() != (T::FAMILY, T::SUBTYPE) {
            return Err(DecodeError::Invalid("SNAC family or subtype"));
        }
        T::decode_body(&self.body)
    }
}

/// A typed SNAC body of one family and subtype.
pub trait SnacBody: Sized {
    const FAMILY: u16;
    const SUBTYPE: u16;

    fn encode_body(&self, out: &mut BytesMut);

    /// Decodes from a reader over exactly the body.
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError>;

    fn decode_body(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        Self::decode(&mut r)
    }

    fn to_snac(&self, request_id: u32) -> Snac {
        let mut out = BytesMut::new();
        self.encode_body(&mut out);
        Snac::new(Self::FAMILY, Self::SUBTYPE, request_id, out.freeze())
    }
}

/// The body of an `xx,01` error SNAC: a code and optional TLVs (0x08 carries a subcode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnacError {
    pub code: u16,
    pub tlvs: TlvList,
}

impl SnacError {
    pub fn new(code: SnacErrorCode) -> SnacError {
        SnacError {
            code: code.as_u16(),
            tlvs: TlvList::new(),
        }
    }

    pub fn decode_body(body: &[u8]) -> Result<SnacError, DecodeError> {
        let mut r = Reader::new(body);
        let code = r.u16("SNAC error code")?;
        let tlvs = TlvList::decode_rest(&mut r)?;
        Ok(SnacError { code, tlvs })
    }

    /// The error SNAC of `family`, answering request `request_id`.
    pub fn to_snac(&self, family: u16, request_id: u32) -> Snac {
        let mut out = BytesMut::new();
        out.put_u16(self.code);
        self.tlvs.encode(&mut out);
        Snac::new(family, SUBTYPE_ERROR, request_id, out.freeze())
    }
}

/// Declares an empty-bodied SNAC (a bare request).
macro_rules! empty_snac {
    ($(#[$m:meta])* $name:ident, $family:expr, $subtype:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $name;

        impl $crate::snac::SnacBody for $name {
            const FAMILY: u16 = $family;
            const SUBTYPE: u16 = $subtype;
            fn encode_body(&self, _out: &mut bytes::BytesMut) {}
            fn decode(r: &mut $crate::wire::Reader<'_>) -> Result<Self, $crate::DecodeError> {
                // Clients may append TLVs to bare requests; they carry nothing we use.
                let _ = r.rest();
                Ok($name)
            }
        }
    };
}

/// Declares a SNAC whose body is a plain TLV list.
macro_rules! tlv_snac {
    ($(#[$m:meta])* $name:ident, $family:expr, $subtype:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $name {
            pub tlvs: $crate::TlvList,
        }

        impl $crate::snac::SnacBody for $name {
            const FAMILY: u16 = $family;
            const SUBTYPE: u16 = $subtype;
            fn encode_body(&self, out: &mut bytes::BytesMut) {
                self.tlvs.encode(out);
            }
            fn decode(r: &mut $crate::wire::Reader<'_>) -> Result<Self, $crate::DecodeError> {
                Ok($name {
                    tlvs: $crate::TlvList::decode_rest(r)?,
                })
            }
        }
    };
}

pub(crate) use empty_snac;
pub(crate) use tlv_snac;
