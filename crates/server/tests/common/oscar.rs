//! A scripted AIM-style OSCAR client for the tests: BUCP login with the strong MD5 hash, then the
//! BOS sign-on libpurple performs.

use super::{Server, PATIENCE};
use bytes::{BufMut, Bytes, BytesMut};
use entente_oscar::family::bucp::{self, tlv};
use entente_oscar::family::feedbag::{self, FeedbagItem};
use entente_oscar::family::{icbm, oservice};
use entente_oscar::{Channel, Flap, Snac, SnacBody, Tlv, TlvList};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Oscar {
    pub stream: TcpStream,
    buf: Vec<u8>,
    seq: u16,
    rid: u32,
}

impl Oscar {
    pub async fn connect(addr: SocketAddr) -> Oscar {
        Oscar {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
            seq: 0x1000,
            rid: 0,
        }
    }

    pub async fn flap(&mut self, channel: Channel, payload: impl Into<Bytes>) {
        let f = Flap {
            channel,
            seq: self.seq,
            payload: payload.into(),
        };
        self.seq = self.seq.wrapping_add(1);
        self.stream.write_all(&f.to_bytes()).await.unwrap();
    }

    pub async fn signon_frame(&mut self, tlvs: TlvList) {
        let mut out = BytesMut::new();
        out.put_u32(1);
        tlvs.encode(&mut out);
        self.flap(Channel::SignOn, out.freeze()).await;
    }

    pub async fn snac<T: SnacBody>(&mut self, body: &T) -> u32 {
        self.rid += 1;
        let bytes = body.to_snac(self.rid).to_bytes();
        self.flap(Channel::Snac, bytes).await;
        self.rid
    }

    /// The next frame, or `None` when the server closes the connection or is silent for `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Flap> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some((flap, used)) = Flap::peek(&self.buf, 65535).unwrap() {
                self.buf.drain(..used);
                return Some(flap);
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Skips frames until a SNAC of this kind arrives.
    pub async fn expect(&mut self, family: u16, subtype: u16) -> Snac {
        let mut seen = Vec::new();
        loop {
            let Some(f) = self.next(PATIENCE).await else {
                panic!("no SNAC {family:02x},{subtype:02x}; saw {seen:x?}");
            };
            if f.channel != Channel::Snac {
                seen.push((0xFFFF, f.channel as u16));
                continue;
            }
            let snac = Snac::decode(&f.payload).unwrap();
            if snac.kind() == (family, subtype) {
                return snac;
            }
            seen.push(snac.kind());
        }
    }

    pub async fn im(&mut self, to: &str, html: &str) -> u32 {
        let mut data = BytesMut::new();
        data.put_u16(0);
        data.put_u16(0);
        data.put_slice(html.as_bytes());
        let msg = icbm::ImMessage {
            fragments: vec![
                icbm::Fragment {
                    id: 5,
                    version: 1,
                    data: Bytes::from_static(&[1, 1, 1, 2]),
                },
                icbm::Fragment {
                    id: 1,
                    version: 1,
                    data: data.freeze(),
                },
            ],
        };
        // Clients pick a fresh cookie per message.
        let cookie = (0x0100_0000_0000_0000u64 + self.rid as u64).to_be_bytes();
        let body = icbm::ChannelMsgToHost {
            cookie,
            channel: 1,
            screen_name: to.into(),
            tlvs: TlvList::new()
                .with(Tlv::new(2, msg.encode()))
                .with(Tlv::new(3, vec![])),
        };
        self.snac(&body).await
    }

    pub async fn incoming_im(&mut self) -> (String, String) {
        let snac = self.expect(4, 7).await;
        let m: icbm::ChannelMsgToClient = snac.body_as().unwrap();
        (
            m.sender.screen_name.clone(),
            m.message().unwrap().text().unwrap(),
        )
    }
}

/// BUCP login then BOS sign-on; `Err(code)` when the login is refused.
pub async fn sign_on(server: &Server, screen_name: &str, password: &str) -> Result<Oscar, u16> {
    let mut login = Oscar::connect(server.listeners["oscar"]).await;
    login.flap(Channel::SignOn, vec![0, 0, 0, 1]).await;
    let key_req = bucp::ChallengeRequest {
        tlvs: TlvList::new().with(Tlv::new(tlv::SCREEN_NAME, screen_name.as_bytes().to_vec())),
    };
    login.snac(&key_req).await;
    let key = login
        .expect(0x17, 0x07)
        .await
        .body_as::<bucp::Challenge>()
        .unwrap()
        .key;
    let hash = bucp::strong_hash(&key, &bucp::md5_password(password.as_bytes()));
    let req = bucp::LoginRequest {
        tlvs: TlvList::new()
            .with(Tlv::new(tlv::SCREEN_NAME, screen_name.as_bytes().to_vec()))
            .with(Tlv::new(tlv::PASSWORD_HASH, hash.to_vec()))
            .with(Tlv::new(tlv::STRONG_HASH, vec![]))
            .with(Tlv::new(
                tlv::CLIENT_ID_STRING,
                b"AOL Instant Messenger, version 5.1.3036/WIN32".to_vec(),
            )),
    };
    login.snac(&req).await;
    let reply: bucp::LoginReply = login.expect(0x17, 0x03).await.body_as().unwrap();
    if let Some(code) = reply.tlvs.get_u16(tlv::ERROR_CODE) {
        return Err(code);
    }
    let bos: SocketAddr = reply
        .tlvs
        .get_string(tlv::BOS_ADDRESS)
        .unwrap()
        .parse()
        .unwrap();
    let cookie = reply.tlvs.get_bytes(tlv::COOKIE).unwrap().clone();

    let mut c = Oscar::connect(bos).await;
    c.signon_frame(TlvList::new().with(Tlv::new(tlv::COOKIE, cookie)))
        .await;
    c.expect(1, 3).await;
    let versions = [
        (0x13, 4),
        (0x09, 1),
        (0x04, 1),
        (0x03, 1),
        (0x02, 1),
        (0x01, 3),
    ];
    c.snac(&oservice::ClientVersions(oservice::Versions {
        versions: versions.to_vec(),
    }))
    .await;
    c.expect(1, 0x18).await;
    c.snac(&oservice::RateParamsQuery).await;
    let rates: oservice::RateParamsReply = c.expect(1, 7).await.body_as().unwrap();
    c.snac(&oservice::RateParamsAck {
        classes: rates.classes.iter().map(|r| r.id).collect(),
    })
    .await;
    c.snac(&feedbag::Query).await;
    c.expect(0x13, 0x06).await;
    c.snac(&feedbag::Use).await;
    let ready = oservice::ClientReady {
        families: versions
            .iter()
            .map(|&(family, version)| oservice::FamilyTool {
                family,
                version,
                tool_id: 0x0110,
                tool_version: 0x164F,
            })
            .collect(),
    };
    c.snac(&ready).await;
    Ok(c)
}

pub fn buddy_items(names: &[&str]) -> Vec<FeedbagItem> {
    let mut items = vec![FeedbagItem {
        name: "Buddies".into(),
        group_id: 1,
        item_id: 0,
        class: feedbag::class::GROUP,
        attrs: TlvList::new(),
    }];
    for (i, n) in names.iter().enumerate() {
        items.push(FeedbagItem {
            name: n.to_string(),
            group_id: 1,
            item_id: 10 + i as u16,
            class: feedbag::class::BUDDY,
            attrs: TlvList::new(),
        });
    }
    items
}
