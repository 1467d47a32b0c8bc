//! FLAP framing: the 6-byte header (0x2A, channel, sequence, length) around every OSCAR payload,
//! and the per-direction sequence numbers.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::DecodeError;

/// Every FLAP frame starts with this byte.
pub const FLAP_MARKER: u8 = 0x2A;
/// Header length: marker, channel, sequence (u16), payload length (u16).
pub const FLAP_HEADER_LEN: usize = 6;
/// Largest inbound payload accepted unless configured otherwise.
pub const DEFAULT_MAX_INBOUND_PAYLOAD: usize = 8 * 1024;
/// The protocol version carried at the start of every channel-1 frame.
pub const FLAP_VERSION: u32 = 1;

/// FLAP channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Channel {
    /// Sign-on: the version, then a cookie or roasted-password TLVs.
    SignOn = 1,
    /// A SNAC.
    Snac = 2,
    /// A FLAP-level error.
    Error = 3,
    /// Sign-off, possibly with TLVs (error code, BOS address).
    SignOff = 4,
    /// Keepalive.
    KeepAlive = 5,
}

impl Channel {
    pub fn from_u8(b: u8) -> Option<Channel> {
        Some(match b {
            1 => Channel::SignOn,
            2 => Channel::Snac,
            3 => Channel::Error,
            4 => Channel::SignOff,
            5 => Channel::KeepAlive,
            _ => return None,
        })
    }
}

/// One FLAP frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flap {
    pub channel: Channel,
    pub seq: u16,
    pub payload: Bytes,
}

impl Flap {
    /// Decodes one frame from the front of `buf`, removing it. `Ok(None)` means more bytes are
    /// needed. The marker, the channel and the length are checked as soon as their bytes arrive,
    /// so a lying length is refused before any payload is buffered.
    pub fn decode(buf: &mut BytesMut, max_payload: usize) -> Result<Option<Flap>, DecodeError> {
        let (flap, used) = match Flap::peek(buf, max_payload)? {
            Some(x) => x,
            None => return Ok(None),
        };
        buf.advance(used);
        Ok(Some(flap))
    }

    /// Decodes one frame from the front of `buf` without consuming; returns it and its size.
    pub fn peek(buf: &[u8], max_payload: usize) -> Result<Option<(Flap, usize)>, DecodeError> {
        let Some(&marker) = buf.first() else {
            return Ok(None);
        };
        if marker != FLAP_MARKER {
            return Err(DecodeError::BadMarker(marker));
        }
        let Some(&ch) = buf.get(1) else {
            return Ok(None);
        };
        let channel = Channel::from_u8(ch).ok_or(DecodeError::UnknownChannel(ch))?;
        let Some(header) = buf.get(..FLAP_HEADER_LEN) else {
            return Ok(None);
        };
        let seq = u16::from_be_bytes([header[2], header[3]]);
        let len = u16::from_be_bytes([header[4], header[5]]) as usize;
        if len > max_payload {
            return Err(DecodeError::FrameTooLarge {
                len,
                max: max_payload,
            });
        }
        let Some(payload) = buf.get(FLAP_HEADER_LEN..FLAP_HEADER_LEN + len) else {
            return Ok(None);
        };
        Ok(Some((
            Flap {
                channel,
                seq,
                payload: Bytes::copy_from_slice(payload),
            },
            FLAP_HEADER_LEN + len,
        )))
    }

    /// Appends the frame; a payload longer than 65535 bytes is clamped (callers build smaller).
    pub fn encode(&self, out: &mut BytesMut) {
        let len = self.payload.len().min(u16::MAX as usize);
        out.reserve(FLAP_HEADER_LEN + len);
        out.put_u8(FLAP_MARKER);
        out.put_u8(self.channel as u8);
        out.put_u16(self.seq);
        out.put_u16(len as u16);
        out.put_slice(&self.payload[..len]);
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }
}

/// The outbound half of a FLAP connection: numbers frames in sequence and serialises them.
#[derive(Debug, Clone)]
pub struct FlapWriter {
    next_seq: u16,
}

impl FlapWriter {
    /// Starts numbering at `first_seq` (servers traditionally pick it at random).
    pub fn new(first_seq: u16) -> Self {
        FlapWriter {
            next_seq: first_seq & 0x7FFF,
        }
    }

    pub fn frame(&mut self, channel: Channel, payload: Bytes) -> Bytes {
        let seq = self.next_seq;
        // Sequence numbers stay positive as signed 16-bit values: 0x7FFF wraps to 0.
        self.next_seq = self.next_seq.wrapping_add(1) & 0x7FFF;
        Flap {
            channel,
            seq,
            payload,
        }
        .to_bytes()
    }
}

/// The inbound half: buffers partial frames (never more than one frame's worth) and tracks the
/// peer's sequence numbers.
#[derive(Debug)]
pub struct FlapReader {
    buf: BytesMut,
    max_payload: usize,
    expected_seq: Option<u16>,
    seq_gaps: u64,
}

impl FlapReader {
    pub fn new(max_payload: usize) -> Self {
        FlapReader {
            buf: BytesMut::new(),
            max_payload,
            expected_seq: None,
            seq_gaps: 0,
        }
    }

    /// Appends received bytes. Call [`FlapReader::next_frame`] until it returns `Ok(None)` after
    /// each push, so the buffer never holds more than one incomplete frame.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    pub fn next_frame(&mut self) -> Result<Option<Flap>, DecodeError> {
        let flap = Flap::decode(&mut self.buf, self.max_payload)?;
        if let Some(f) = &flap {
            if let Some(expected) = self.expected_seq {
                if expected != f.seq {
                    self.seq_gaps += 1;
                }
            }
            self.expected_seq = Some(f.seq.wrapping_add(1));
        }
        Ok(flap)
    }

    /// Frames whose sequence number was not the previous one plus one. Counted, not fatal:
    /// clients disagree about wrap-around, and TCP already orders the stream.
    pub fn seq_gaps(&self) -> u64 {
        self.seq_gaps
    }

    /// Bytes buffered of a frame not yet complete.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// The body of a channel-1 frame: the FLAP version, then TLVs (cookie or credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignOnFrame {
    pub version: u32,
    pub tlvs: crate::TlvList,
}

impl SignOnFrame {
    pub fn decode(payload: &[u8]) -> Result<SignOnFrame, DecodeError> {
        let mut r = crate::wire::Reader::new(payload);
        let version = r.u32("FLAP version")?;
        let tlvs = crate::TlvList::decode_rest(&mut r)?;
        Ok(SignOnFrame { version, tlvs })
    }

    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u32(self.version);
        self.tlvs.encode(&mut out);
        out.freeze()
    }
}
