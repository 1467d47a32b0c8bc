//! Bounds-checked big-endian reading and length-clamped writing: the only place that touches raw
//! offsets, so no decoder elsewhere can index past the end of untrusted input.

use bytes::{BufMut, BytesMut};

use crate::DecodeError;

/// A cursor over untrusted bytes. Every read checks the bytes that remain first.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated(what));
        }
        let start = self.pos;
        self.pos += n;
        self.buf
            .get(start..start + n)
            .ok_or(DecodeError::Truncated(what))
    }

    /// Everything not yet read.
    pub fn rest(&mut self) -> &'a [u8] {
        let start = self.pos.min(self.buf.len());
        self.pos = self.buf.len();
        self.buf.get(start..).unwrap_or(&[])
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let b = self.bytes(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    /// A string preceded by a one-byte length (screen names).
    pub fn str8(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let n = self.u8(what)? as usize;
        Ok(String::from_utf8_lossy(self.bytes(n, what)?).into_owned())
    }

    /// Bytes preceded by a two-byte length.
    pub fn bytes16(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.u16(what)? as usize;
        self.bytes(n, what)
    }

    /// A string preceded by a two-byte length.
    pub fn str16(&mut self, what: &'static str) -> Result<String, DecodeError> {
        Ok(String::from_utf8_lossy(self.bytes16(what)?).into_owned())
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(what))
        }
    }

    /// Caps a count read from the wire by the bytes left: each element needs at least `min_size`.
    pub fn check_count(
        &self,
        count: usize,
        min_size: usize,
        limit: usize,
        what: &'static str,
    ) -> Result<(), DecodeError> {
        if count > limit || count.saturating_mul(min_size.max(1)) > self.remaining() {
            return Err(DecodeError::TooMany(what));
        }
        Ok(())
    }
}

/// Writes `data` with a one-byte length, clamped to 255 bytes.
pub fn put_str8(out: &mut BytesMut, data: &[u8]) {
    let data = data.get(..data.len().min(u8::MAX as usize)).unwrap_or(&[]);
    out.put_u8(data.len() as u8);
    out.put_slice(data);
}

/// Writes `data` with a two-byte length, clamped to 65535 bytes.
pub fn put_bytes16(out: &mut BytesMut, data: &[u8]) {
    let data = data.get(..data.len().min(u16::MAX as usize)).unwrap_or(&[]);
    out.put_u16(data.len() as u16);
    out.put_slice(data);
}

/// Clamps a string so that it fits a one-byte length field without splitting a character.
pub fn clamp_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}
