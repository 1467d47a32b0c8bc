//! ICBM (0x0004): parameters, instant messages in both directions (channel 1), host acks and
//! typing notifications. Message text is carried in fragments with a charset.

use bytes::{BufMut, Bytes, BytesMut};

use super::ICBM;
use crate::snac::{empty_snac, SnacBody};
use crate::wire::{put_bytes16, put_str8, Reader};
use crate::{DecodeError, Tlv, TlvList, UserInfo};

/// 04,02 and 04,05: ICBM parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcbmParams {
    pub channel: u16,
    pub flags: u32,
    pub max_message_len: u16,
    pub max_sender_warning: u16,
    pub max_receiver_warning: u16,
    pub min_interval_ms: u32,
}

impl IcbmParams {
    fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.channel);
        out.put_u32(self.flags);
        out.put_u16(self.max_message_len);
        out.put_u16(self.max_sender_warning);
        out.put_u16(self.max_receiver_warning);
        out.put_u32(self.min_interval_ms);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(IcbmParams {
            channel: r.u16("ICBM params")?,
            flags: r.u32("ICBM params")?,
            max_message_len: r.u16("ICBM params")?,
            max_sender_warning: r.u16("ICBM params")?,
            max_receiver_warning: r.u16("ICBM params")?,
            min_interval_ms: r.u32("ICBM params")?,
        })
    }
}

/// 04,02: the client sets its ICBM parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetParams(pub IcbmParams);

impl SnacBody for SetParams {
    const FAMILY: u16 = ICBM;
    const SUBTYPE: u16 = 0x02;
    fn encode_body(&self, out: &mut BytesMut) {
        self.0.encode(out)
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        IcbmParams::decode(r).map(SetParams)
    }
}

empty_snac!(
    /// 04,04: the client asks for the ICBM parameters.
    ParamsQuery,
    ICBM,
    0x04
);

/// 04,05: the ICBM parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params(pub IcbmParams);

impl SnacBody for Params {
    const FAMILY: u16 = ICBM;
    const SUBTYPE: u16 = 0x05;
    fn encode_body(&self, out: &mut BytesMut) {
        self.0.encode(out)
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        IcbmParams::decode(r).map(Params)
    }
}

/// TLV types of 04,06 and 04,07.
pub mod msg_tlv {
    /// The message fragments (channel 1).
    pub const MESSAGE: u16 = 0x02;
    /// The sender wants a host ack (04,0C).
    pub const REQUEST_HOST_ACK: u16 = 0x03;
    /// This is an automatic (away) response.
    pub const AUTO_RESPONSE: u16 = 0x04;
    /// Store the message if the recipient is offline.
    pub const STORE_OFFLINE: u16 = 0x06;
}

/// Fragment ids inside TLV 0x02.
pub mod fragment {
    pub const CAPABILITIES: u8 = 0x05;
    pub const TEXT: u8 = 0x01;
}

/// Text charsets of a text fragment.
pub mod charset {
    pub const ASCII: u16 = 0x0000;
    pub const UCS2BE: u16 = 0x0002;
    pub const LATIN1: u16 = 0x0003;
}

/// Most fragments accepted in one message.
pub const MAX_FRAGMENTS: usize = 64;

/// One fragment of a channel-1 message: id, version, data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    pub id: u8,
    pub version: u8,
    pub data: Bytes,
}

/// The fragments of a channel-1 message (the value of TLV 0x02).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImMessage {
    pub fragments: Vec<Fragment>,
}

/// A text fragment's charset and raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextPart {
    pub charset: u16,
    pub subset: u16,
    pub data: Bytes,
}

impl TextPart {
    /// Decodes the text by its charset. ASCII that is not ASCII is read as UTF-8 when valid (some
    /// clients send it so), else as Latin-1. Invalid UCS-2 becomes U+FFFD.
    pub fn text(&self) -> Result<String, DecodeError> {
        match self.charset {
            charset::UCS2BE => {
                if self.data.len() % 2 != 0 {
                    return Err(DecodeError::Invalid("UCS-2 text of odd length"));
                }
                let units = self
                    .data
                    .chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]));
                Ok(char::decode_utf16(units)
                    .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                    .collect())
            }
            charset::LATIN1 => Ok(self.data.iter().map(|&b| b as char).collect()),
            _ => match std::str::from_utf8(&self.data) {
                Ok(s) => Ok(s.to_string()),
                Err(_) => Ok(self.data.iter().map(|&b| b as char).collect()),
            },
        }
    }

    /// Encodes `text` as ASCII when it is, else as UCS-2BE (UTF-16 for characters past the BMP).
    pub fn from_text(text: &str) -> TextPart {
        if text.is_ascii() {
            TextPart {
                charset: charset::ASCII,
                subset: 0,
                data: Bytes::copy_from_slice(text.as_bytes()),
            }
        } else {
            let mut data = Vec::with_capacity(text.len() * 2);
            for u in text.encode_utf16() {
                data.extend_from_slice(&u.to_be_bytes());
            }
            TextPart {
                charset: charset::UCS2BE,
                subset: 0,
                data: data.into(),
            }
        }
    }
}

impl ImMessage {
    /// A message with the usual capabilities fragment and one text fragment.
    pub fn from_text(text: &str) -> ImMessage {
        let part = TextPart::from_text(text);
        let mut data = BytesMut::with_capacity(4 + part.data.len());
        data.put_u16(part.charset);
        data.put_u16(part.subset);
        data.put_slice(&part.data);
        ImMessage {
            fragments: vec![
                Fragment {
                    id: fragment::CAPABILITIES,
                    version: 1,
                    data: Bytes::from_static(&[0x01, 0x01, 0x01, 0x02]),
                },
                Fragment {
                    id: fragment::TEXT,
                    version: 1,
                    data: data.freeze(),
                },
            ],
        }
    }

    pub fn decode(value: &[u8]) -> Result<ImMessage, DecodeError> {
        let mut r = Reader::new(value);
        let mut fragments = Vec::new();
        while !r.is_empty() {
            if fragments.len() >= MAX_FRAGMENTS {
                return Err(DecodeError::TooMany("message fragments"));
            }
            let id = r.u8("fragment id")?;
            let version = r.u8("fragment version")?;
            let data = Bytes::copy_from_slice(r.bytes16("fragment data")?);
            fragments.push(Fragment { id, version, data });
        }
        Ok(ImMessage { fragments })
    }

    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        for f in &self.fragments {
            out.put_u8(f.id);
            out.put_u8(f.version);
            put_bytes16(&mut out, &f.data);
        }
        out.freeze()
    }

    /// The text fragments in order.
    pub fn text_parts(&self) -> Result<Vec<TextPart>, DecodeError> {
        self.fragments
            .iter()
            .filter(|f| f.id == fragment::TEXT)
            .map(|f| {
                let mut r = Reader::new(&f.data);
                Ok(TextPart {
                    charset: r.u16("text charset")?,
                    subset: r.u16("text subset")?,
                    data: Bytes::copy_from_slice(r.rest()),
                })
            })
            .collect()
    }

    /// The whole text, every text fragment decoded by its own charset and joined.
    pub fn text(&self) -> Result<String, DecodeError> {
        let mut s = String::new();
        for p in self.text_parts()? {
            s.push_str(&p.text()?);
        }
        Ok(s)
    }
}

/// 04,06: the client sends a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelMsgToHost {
    pub cookie: [u8; 8],
    pub channel: u16,
    pub screen_name: String,
    pub tlvs: TlvList,
}

impl ChannelMsgToHost {
    pub fn message(&self) -> Result<ImMessage, DecodeError> {
        let v = self
            .tlvs
            .get_bytes(msg_tlv::MESSAGE)
            .ok_or(DecodeError::Invalid("message without TLV 0x02"))?;
        ImMessage::decode(v)
    }

    pub fn wants_host_ack(&self) -> bool {
        self.tlvs.has(msg_tlv::REQUEST_HOST_ACK)
    }

    pub fn is_auto_response(&self) -> bool {
        self.tlvs.has(msg_tlv::AUTO_RESPONSE)
    }
}

impl SnacBody for ChannelMsgToHost {
    const FAMILY: u16 = ICBM;
    const SUBTYPE: u16 = 0x06;
    fn encode_body(&self, out: &mut BytesMut) {
        out.put_slice(&self.cookie);
        out.put_u16(self.channel);
        put_str8(out, self.screen_name.as_bytes());
        self.tlvs.encode(out);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ChannelMsgToHost {
            cookie: r.array("message cookie")?,
            channel: r.u16("message channel")?,
            screen_name: r.str8("recipient")?,
            tlvs: TlvList::decode_rest(r)?,
        })
    }
}

/// 04,07: the host delivers a message to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelMsgToClient {
    pub cookie: [u8; 8],
    pub channel: u16,
    pub sender: UserInfo,
    pub tlvs: TlvList,
}

impl ChannelMsgToClient {
    /// A channel-1 message with `text` (already HTML as the client expects it).
    pub fn text(cookie: [u8; 8], sender: UserInfo, text: &str) -> Self {
        ChannelMsgToClient {
            cookie,
            channel: 1,
            sender,
            tlvs: TlvList::new().with(Tlv::new(
                msg_tlv::MESSAGE,
                ImMessage::from_text(text).encode(),
            )),
        }
    }

    pub fn message(&self) -> Result<ImMessage, DecodeError> {
        let v = self
            .tlvs
            .get_bytes(msg_tlv::MESSAGE)
            .ok_or(DecodeError::Invalid("message without TLV 0x02"))?;
        ImMessage::decode(v)
    }
}

impl SnacBody for ChannelMsgToClient {
    const FAMILY: u16 = ICBM;
    const SUBTYPE: u16 = 0x07;
    fn encode_body(&self, out: &mut BytesMut) {
        out.put_slice(&self.cookie);
        out.put_u16(self.channel);
        self.sender.encode(out);
        self.tlvs.encode(out);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ChannelMsgToClient {
            cookie: r.array("message cookie")?,
            channel: r.u16("message channel")?,
            sender: UserInfo::decode(r)?,
            tlvs: TlvList::decode_rest(r)?,
        })
    }
}

/// 04,0C: the host accepted a message the client sent with TLV 0x03.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAck {
    pub cookie: [u8; 8],
    pub channel: u16,
    pub screen_name: String,
}

impl SnacBody for HostAck {
    const FAMILY: u16 = ICBM;
    const SUBTYPE: u16 = 0x0C;
    fn encode_body(&self, out: &mut BytesMut) {
        out.put_slice(&self.cookie);
        out.put_u16(self.channel);
        put_str8(out, self.screen_name.as_bytes());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(HostAck {
            cookie: r.array("message cookie")?,
            channel: r.u16("message channel")?,
            screen_name: r.str8("screen name")?,
        })
    }
}

empty_snac!(
    /// 04,10: the client asks for its offline messages.
    OfflineRetrieve,
    ICBM,
    0x10
);

empty_snac!(
    /// 04,17: no (more) offline messages.
    OfflineDone,
    ICBM,
    0x17
);

/// Typing events of 04,14.
pub mod typing {
    /// Typing finished (the text was sent or cleared).
    pub const FINISHED: u16 = 0x0000;
    /// Text typed, then paused.
    pub const PAUSED: u16 = 0x0001;
    /// Typing begun.
    pub const BEGUN: u16 = 0x0002;
}

/// 04,14: a typing notification, in either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientEvent {
    pub cookie: [u8; 8],
    pub channel: u16,
    pub screen_name: String,
    pub event: u16,
}

impl SnacBody for ClientEvent {
    const FAMILY: u16 = ICBM;
    const SUBTYPE: u16 = 0x14;
    fn encode_body(&self, out: &mut BytesMut) {
        out.put_slice(&self.cookie);
        out.put_u16(self.channel);
        put_str8(out, self.screen_name.as_bytes());
        out.put_u16(self.event);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ClientEvent {
            cookie: r.array("event cookie")?,
            channel: r.u16("event channel")?,
            screen_name: r.str8("screen name")?,
            event: r.u16("event")?,
        })
    }
}
