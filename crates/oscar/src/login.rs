//! The login (authorizer) connection: BUCP MD5 challenge login and the older FLAP channel-1
//! roasted-password login. The account store is outside: the machine asks, the driver answers.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use crate::family::bucp::{self, Challenge, ChallengeRequest, LoginReply, LoginRequest};
use crate::family::BUCP;
use crate::flap::{SignOnFrame, FLAP_VERSION};
use crate::snac::SnacBody;
use crate::{
    Channel, DecodeError, FlapReader, FlapWriter, LoginErrorCode, Snac, SnacError, SnacErrorCode,
    TlvList,
};

/// Settings of the login machine.
#[derive(Debug, Clone)]
pub struct LoginConfig {
    /// The hub's domain: screen names are accounts `name@hub_domain`.
    pub hub_domain: String,
    /// The BOS address handed to clients (`host:port`; an IP literal spares the client a lookup).
    pub bos_address: String,
    /// Largest inbound FLAP payload.
    pub max_payload: usize,
    /// Failed attempts on one connection before it gets the rate-limit code and is closed.
    pub max_attempts: u32,
    /// The whole login must finish within this time.
    pub timeout: Duration,
}

impl LoginConfig {
    pub fn new(hub_domain: &str, bos_address: &str) -> LoginConfig {
        LoginConfig {
            hub_domain: hub_domain.to_string(),
            bos_address: bos_address.to_string(),
            max_payload: 2048,
            max_attempts: 3,
            timeout: Duration::from_secs(60),
        }
    }
}

/// What the machine needs from the account store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountRequest {
    /// A strong-hash BUCP login: answer with [`Credential::Md5Password`].
    Md5Password {
        /// As the client typed it.
        screen_name: String,
        /// The hub account it names (normalised).
        account: entente_model::Address,
    },
    /// A weak-hash BUCP login: checking it needs the password itself. Answer with
    /// [`Credential::Password`] if the store has it; a store that keeps only hashes answers with
    /// [`Credential::Md5Password`] and the client is told to upgrade.
    Password {
        screen_name: String,
        account: entente_model::Address,
    },
    /// A roasted channel-1 login: the machine recovered the password; verify it (argon2) and
    /// answer with [`Credential::Verified`] or [`AccountAnswer::WrongPassword`].
    VerifyPassword {
        screen_name: String,
        account: entente_model::Address,
        password: String,
    },
}

/// What the driver knows about the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// MD5 of the password, as stored for strong-hash logins.
    Md5Password([u8; 16]),
    /// The password itself (only stores that keep it).
    Password(String),
    /// The driver verified the password itself.
    Verified,
}

/// The driver's answer to an [`AccountRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountAnswer {
    Found {
        /// The screen name as the user formatted it ("Alice Smith").
        display_name: String,
        credential: Credential,
    },
    NoSuchAccount,
    WrongPassword,
    Suspended,
    /// Too many attempts for this account or address.
    RateLimited,
    Unavailable,
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The exchange finished normally.
    Done,
    /// The peer signed off (channel 4).
    PeerSignedOff,
    /// The peer sent bytes that are not OSCAR.
    Protocol(DecodeError),
    /// A rule of the exchange was broken (out-of-order or unexpected frames).
    Unexpected(&'static str),
    /// Too many failed attempts.
    TooManyAttempts,
    /// Past the rate class's disconnect level.
    RateLimited,
    /// The cookie was not valid.
    BadCookie,
    Timeout,
    /// The driver ended the session ([`crate::Session::sign_off`]).
    Local(SignOffReason),
}

/// Why the host ends a signed-on session; the client is told on channel 4 (TLV 0x09).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignOffReason {
    /// The same account signed on elsewhere (code 1: "signed on from another location").
    SignedOnElsewhere,
    /// The host is shutting down or the account was disabled.
    Shutdown,
}

/// Outputs of the login machine, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutput {
    Request(AccountRequest),
    /// The user signed on: store `cookie` for the BOS connection to redeem (once, soon).
    Authenticated {
        /// Account name as the client typed it.
        screen_name: String,
        display_name: String,
        account: entente_model::Address,
        cookie: Bytes,
    },
    /// A login attempt failed (for audit and for per-account rate limiting).
    Failed {
        screen_name: String,
        code: LoginErrorCode,
    },
    /// Flush `poll_transmit` and close the socket.
    Closed(CloseReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Strong,
    Weak,
    Roasted,
}

#[derive(Debug)]
enum State {
    AwaitHello,
    Ready,
    Pending {
        method: Method,
        screen_name: String,
        key: Bytes,
        hash: Bytes,
        request_id: u32,
    },
    Closed,
}

/// The login connection. See the crate docs for the call order.
#[derive(Debug)]
pub struct Login {
    cfg: LoginConfig,
    rng: ChaCha20Rng,
    reader: FlapReader,
    writer: FlapWriter,
    transmit: VecDeque<Bytes>,
    outputs: VecDeque<LoginOutput>,
    state: State,
    /// The key handed out by 17,07 and the name it was for.
    key: Option<(String, Bytes)>,
    failures: u32,
    deadline: Instant,
}

impl Login {
    /// A new connection; `seed` must be fresh randomness (keys and cookies come from it).
    pub fn new(cfg: LoginConfig, now: Instant, seed: [u8; 32]) -> Login {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let mut writer = FlapWriter::new(rng.next_u32() as u16 & 0x7FFF);
        let hello = writer.frame(Channel::SignOn, Bytes::from_static(&[0, 0, 0, 1]));
        Login {
            reader: FlapReader::new(cfg.max_payload),
            deadline: now + cfg.timeout,
            cfg,
            rng,
            writer,
            transmit: VecDeque::from([hello]),
            outputs: VecDeque::new(),
            state: State::AwaitHello,
            key: None,
            failures: 0,
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Feeds received bytes.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        if self.is_closed() {
            return;
        }
        self.reader.push(bytes);
        loop {
            if self.is_closed() {
                return;
            }
            match self.reader.next_frame() {
                Ok(Some(f)) => self.on_frame(f.channel, &f.payload, now),
                Ok(None) => return,
                Err(e) => return self.close_with_signoff(CloseReason::Protocol(e)),
            }
        }
    }

    /// The next frame to send.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmit.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<LoginOutput> {
        self.outputs.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.is_closed()).then_some(self.deadline)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.is_closed() && now >= self.deadline {
            self.close_with_signoff(CloseReason::Timeout);
        }
    }

    fn close_with_signoff(&mut self, reason: CloseReason) {
        let f = self.writer.frame(Channel::SignOff, Bytes::new());
        self.transmit.push_back(f);
        self.close(reason);
    }

    fn close(&mut self, reason: CloseReason) {
        self.state = State::Closed;
        self.outputs.push_back(LoginOutput::Closed(reason));
    }

    fn on_frame(&mut self, channel: Channel, payload: &[u8], _now: Instant) {
        match (channel, &self.state) {
            (Channel::SignOn, State::AwaitHello) => {
                let frame = match SignOnFrame::decode(payload) {
                    Ok(f) if f.version == FLAP_VERSION => f,
                    Ok(_) => {
                        return self.close_with_signoff(CloseReason::Unexpected("FLAP version"))
                    }
                    Err(e) => return self.close_with_signoff(CloseReason::Protocol(e)),
                };
                self.state = State::Ready;
                if frame.tlvs.has(bucp::tlv::ROASTED_PASSWORD) {
                    self.on_roasted(&frame.tlvs);
                }
            }
            (Channel::Snac, State::Ready) => match Snac::decode(payload) {
                Ok(snac) => self.on_snac(snac),
                Err(e) => self.close_with_signoff(CloseReason::Protocol(e)),
            },
            (Channel::Snac, State::Pending { .. }) => {
                // One attempt at a time: the client waits for 17,03.
                self.close_with_signoff(CloseReason::Unexpected("SNAC during a pending login"))
            }
            (Channel::KeepAlive, _) | (Channel::Error, _) => {}
            (Channel::SignOff, _) => self.close(CloseReason::PeerSignedOff),
            _ => self.close_with_signoff(CloseReason::Unexpected("frame out of order")),
        }
    }

    fn on_roasted(&mut self, tlvs: &TlvList) {
        let screen_name = tlvs.get_string(bucp::tlv::SCREEN_NAME).unwrap_or_default();
        let roasted = tlvs
            .get_bytes(bucp::tlv::ROASTED_PASSWORD)
            .cloned()
            .unwrap_or_default();
        let password = String::from_utf8_lossy(&bucp::roast(&roasted)).into_owned();
        let Some(account) = self.account_of(&screen_name) else {
            return self.fail(
                Method::Roasted,
                &screen_name,
                0,
                LoginErrorCode::UnknownName,
            );
        };
        self.state = State::Pending {
            method: Method::Roasted,
            screen_name: screen_name.clone(),
            key: Bytes::new(),
            hash: Bytes::new(),
            request_id: 0,
        };
        self.outputs
            .push_back(LoginOutput::Request(AccountRequest::VerifyPassword {
                screen_name,
                account,
                password,
            }));
    }

    fn account_of(&self, screen_name: &str) -> Option<entente_model::Address> {
        let a = crate::names::screen_name_to_address(screen_name, &self.cfg.hub_domain).ok()?;
        (a.domain() == self.cfg.hub_domain.to_lowercase()).then_some(a)
    }

    fn on_snac(&mut self, snac: Snac) {
        let rid = snac.header.request_id;
        match snac.kind() {
            (BUCP, 0x06) => {
                let Ok(req) = snac.body_as::<ChallengeRequest>() else {
                    return self.snac_error(BUCP, rid, SnacErrorCode::BadSnacFormat);
                };
                let screen_name = req
                    .tlvs
                    .get_string(bucp::tlv::SCREEN_NAME)
                    .unwrap_or_default();
                if self.failures >= self.cfg.max_attempts {
                    return self.fail(
                        Method::Strong,
                        &screen_name,
                        rid,
                        LoginErrorCode::RateLimited,
                    );
                }
                // AOL's keys were decimal strings; any bytes work, digits are safe everywhere.
                let key = Bytes::from(format!("{}", self.rng.next_u64() % 10_000_000_000));
                self.key = Some((
                    crate::names::normalize_screen_name(&screen_name),
                    key.clone(),
                ));
                let reply = Challenge { key }.to_snac(rid);
                self.send_snac(&reply);
            }
            (BUCP, 0x02) => {
                let Ok(req) = snac.body_as::<LoginRequest>() else {
                    return self.snac_error(BUCP, rid, SnacErrorCode::BadSnacFormat);
                };
                self.on_login_request(req.tlvs, rid);
            }
            (BUCP, _) => self.snac_error(BUCP, rid, SnacErrorCode::NotSupportedByHost),
            (family, _) => self.snac_error(family, rid, SnacErrorCode::ServiceNotDefined),
        }
    }

    fn on_login_request(&mut self, tlvs: TlvList, rid: u32) {
        let screen_name = tlvs.get_string(bucp::tlv::SCREEN_NAME).unwrap_or_default();
        let strong = tlvs.has(bucp::tlv::STRONG_HASH);
        let method = if strong { Method::Strong } else { Method::Weak };
        if self.failures >= self.cfg.max_attempts {
            return self.fail(method, &screen_name, rid, LoginErrorCode::RateLimited);
        }
        let Some(hash) = tlvs.get_bytes(bucp::tlv::PASSWORD_HASH).cloned() else {
            return self.fail(method, &screen_name, rid, LoginErrorCode::WrongPassword);
        };
        // The key must be the one handed out for this very name.
        let key = match self.key.take() {
            Some((name, key)) if name == crate::names::normalize_screen_name(&screen_name) => key,
            _ => return self.fail(method, &screen_name, rid, LoginErrorCode::WrongPassword),
        };
        let Some(account) = self.account_of(&screen_name) else {
            return self.fail(method, &screen_name, rid, LoginErrorCode::UnknownName);
        };
        let request = if strong {
            AccountRequest::Md5Password {
                screen_name: screen_name.clone(),
                account,
            }
        } else {
            AccountRequest::Password {
                screen_name: screen_name.clone(),
                account,
            }
        };
        self.state = State::Pending {
            method,
            screen_name,
            key,
            hash,
            request_id: rid,
        };
        self.outputs.push_back(LoginOutput::Request(request));
    }

    /// Answers the pending [`AccountRequest`]. Ignored when none is pending.
    pub fn answer(&mut self, answer: AccountAnswer, _now: Instant) {
        let State::Pending {
            method,
            screen_name,
            key,
            hash,
            request_id,
        } = std::mem::replace(&mut self.state, State::Ready)
        else {
            return;
        };
        let outcome = match answer {
            AccountAnswer::Found {
                display_name,
                credential,
            } => match (method, credential) {
                (Method::Strong, Credential::Md5Password(md5)) => {
                    let ok = bucp::constant_time_eq(&bucp::strong_hash(&key, &md5), &hash);
                    ok.then_some(display_name)
                        .ok_or(LoginErrorCode::WrongPassword)
                }
                (Method::Strong, Credential::Password(p)) => {
                    let md5 = bucp::md5_password(p.as_bytes());
                    let ok = bucp::constant_time_eq(&bucp::strong_hash(&key, &md5), &hash);
                    ok.then_some(display_name)
                        .ok_or(LoginErrorCode::WrongPassword)
                }
                (Method::Weak, Credential::Password(p)) => {
                    let ok = bucp::constant_time_eq(&bucp::weak_hash(&key, p.as_bytes()), &hash);
                    ok.then_some(display_name)
                        .ok_or(LoginErrorCode::WrongPassword)
                }
                (Method::Weak, Credential::Md5Password(_)) => Err(LoginErrorCode::ClientTooOld),
                (Method::Roasted, Credential::Verified) => Ok(display_name),
                _ => Err(LoginErrorCode::ServiceUnavailable),
            },
            AccountAnswer::NoSuchAccount => Err(LoginErrorCode::UnknownName),
            AccountAnswer::WrongPassword => Err(LoginErrorCode::WrongPassword),
            AccountAnswer::Suspended => Err(LoginErrorCode::Suspended),
            AccountAnswer::RateLimited => Err(LoginErrorCode::RateLimited),
            AccountAnswer::Unavailable => Err(LoginErrorCode::ServiceUnavailable),
        };
        match outcome {
            Ok(display_name) => self.succeed(method, &screen_name, display_name, request_id),
            Err(code) => self.fail(method, &screen_name, request_id, code),
        }
    }

    fn succeed(&mut self, method: Method, screen_name: &str, display_name: String, rid: u32) {
        let Some(account) = self.account_of(screen_name) else {
            return self.fail(method, screen_name, rid, LoginErrorCode::UnknownName);
        };
        let mut cookie = vec![0u8; 32];
        self.rng.fill_bytes(&mut cookie);
        let tlvs = bucp::success_tlvs(&display_name, &self.cfg.bos_address, &cookie);
        self.reply(method, tlvs, rid);
        self.outputs.push_back(LoginOutput::Authenticated {
            screen_name: screen_name.to_string(),
            display_name,
            account,
            cookie: cookie.into(),
        });
        self.close(CloseReason::Done);
    }

    fn fail(&mut self, method: Method, screen_name: &str, rid: u32, code: LoginErrorCode) {
        self.failures += 1;
        self.reply(method, bucp::failure_tlvs(screen_name, code), rid);
        self.outputs.push_back(LoginOutput::Failed {
            screen_name: screen_name.to_string(),
            code,
        });
        self.state = State::Ready;
        if method == Method::Roasted {
            // The channel-4 answer ends a roasted login whatever it says.
            self.close(CloseReason::Done);
        } else if code == LoginErrorCode::RateLimited {
            self.close(CloseReason::TooManyAttempts);
        }
    }

    fn reply(&mut self, method: Method, tlvs: TlvList, rid: u32) {
        if method == Method::Roasted {
            let mut out = bytes::BytesMut::new();
            tlvs.encode(&mut out);
            let f = self.writer.frame(Channel::SignOff, out.freeze());
            self.transmit.push_back(f);
        } else {
            self.send_snac(&LoginReply { tlvs }.to_snac(rid));
        }
    }

    fn snac_error(&mut self, family: u16, rid: u32, code: SnacErrorCode) {
        self.send_snac(&SnacError::new(code).to_snac(family, rid));
    }

    fn send_snac(&mut self, snac: &Snac) {
        let f = self.writer.frame(Channel::Snac, snac.to_bytes());
        self.transmit.push_back(f);
    }
}
