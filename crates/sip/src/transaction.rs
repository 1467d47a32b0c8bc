//! Non-INVITE client and server transactions (RFC 3261 §17.1.2, §17.2.2): timers E, F, J, K.
//! Pure state machines: the caller passes the time in and sends the bytes they return.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::message::{Method, SipMessage};

/// RFC 3261 timer base values (§17.1.1.1, table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// Round-trip estimate, default 500 ms.
    pub t1: Duration,
    /// Longest retransmit interval for non-INVITE requests, default 4 s.
    pub t2: Duration,
    /// Longest time a message stays in the network, default 5 s.
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    /// Timer F and timer J: 64·T1.
    pub fn transaction_timeout(&self) -> Duration {
        self.t1.saturating_mul(64)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// What a client transaction asks of its owner when a timer fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAction {
    /// Timer E: send the request bytes again.
    Retransmit(Bytes),
    /// Timer F: no final response in time; tell the transaction user.
    TimedOut,
}

/// A non-INVITE client transaction.
#[derive(Debug, Clone)]
pub struct ClientTransaction {
    request: Bytes,
    method: Option<Method>,
    reliable: bool,
    timers: Timers,
    state: ClientState,
    interval: Duration,
    timer_e: Option<Instant>,
    timer_f: Option<Instant>,
    timer_k: Option<Instant>,
}

impl ClientTransaction {
    /// Starts the transaction; the caller sends `request` once now (see [`Self::request`]).
    /// Over a reliable transport (TCP/TLS) timer E is never set: no retransmissions.
    pub fn new(request: Bytes, reliable: bool, timers: Timers, now: Instant) -> Self {
        ClientTransaction {
            request,
            method: None,
            reliable,
            timers,
            state: ClientState::Trying,
            interval: timers.t1,
            timer_e: (!reliable).then(|| now + timers.t1),
            timer_f: Some(now + timers.transaction_timeout()),
            timer_k: None,
        }
    }

    /// Records the request method, so responses are matched on branch and CSeq method
    /// (RFC 3261 §17.1.3).
    pub fn with_method(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }

    /// True if a response whose CSeq names `method` may belong to this transaction.
    pub fn request_method_is(&self, method: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m.as_str() == method)
    }

    pub fn request(&self) -> &Bytes {
        &self.request
    }

    pub fn state(&self) -> ClientState {
        self.state
    }

    pub fn is_terminated(&self) -> bool {
        self.state == ClientState::Terminated
    }

    /// A response matched to this transaction. Returns it if the transaction user must see it;
    /// `None` if absorbed (a retransmitted final response, or anything after completion).
    pub fn on_response(&mut self, response: SipMessage, now: Instant) -> Option<SipMessage> {
        let code = response.status()?;
        match self.state {
            ClientState::Trying | ClientState::Proceeding => {
                if code < 200 {
                    if self.state == ClientState::Trying {
                        self.state = ClientState::Proceeding;
                    }
                    Some(response)
                } else {
                    self.state = ClientState::Completed;
                    self.timer_e = None;
                    self.timer_f = None;
                    if self.reliable {
                        self.state = ClientState::Terminated;
                    } else {
                        self.timer_k = Some(now + self.timers.t4);
                    }
                    Some(response)
                }
            }
            ClientState::Completed | ClientState::Terminated => None,
        }
    }

    /// Fires every timer due at `now`.
    pub fn on_timeout(&mut self, now: Instant) -> Vec<ClientAction> {
        let mut out = Vec::new();
        if self.timer_f.is_some_and(|t| t <= now) {
            self.timer_f = None;
            self.timer_e = None;
            self.state = ClientState::Terminated;
            out.push(ClientAction::TimedOut);
            return out;
        }
        if let Some(t) = self.timer_e {
            if t <= now {
                out.push(ClientAction::Retransmit(self.request.clone()));
                self.interval = match self.state {
                    ClientState::Trying => self.interval.saturating_mul(2).min(self.timers.t2),
                    _ => self.timers.t2,
                };
                self.timer_e = Some(now + self.interval);
            }
        }
        if self.timer_k.is_some_and(|t| t <= now) {
            self.timer_k = None;
            self.state = ClientState::Terminated;
        }
        out
    }

    pub fn deadline(&self) -> Option<Instant> {
        [self.timer_e, self.timer_f, self.timer_k]
            .into_iter()
            .flatten()
            .min()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransactionError {
    #[error("the transaction already sent its final response")]
    AlreadyFinal,
    #[error("a response must carry a status code")]
    NotAResponse,
}

/// A non-INVITE server transaction.
#[derive(Debug, Clone)]
pub struct ServerTransaction {
    reliable: bool,
    timers: Timers,
    state: ServerState,
    last_response: Option<Bytes>,
    timer_j: Option<Instant>,
}

impl ServerTransaction {
    pub fn new(reliable: bool, timers: Timers) -> Self {
        ServerTransaction {
            reliable,
            timers,
            state: ServerState::Trying,
            last_response: None,
            timer_j: None,
        }
    }

    pub fn state(&self) -> ServerState {
        self.state
    }

    pub fn is_terminated(&self) -> bool {
        self.state == ServerState::Terminated
    }

    /// The request arrived again: the bytes to resend, if any (none while Trying).
    pub fn on_retransmission(&self) -> Option<Bytes> {
        match self.state {
            ServerState::Proceeding | ServerState::Completed => self.last_response.clone(),
            _ => None,
        }
    }

    /// The transaction user answers; returns the bytes to send.
    pub fn respond(
        &mut self,
        response: &SipMessage,
        now: Instant,
    ) -> Result<Bytes, TransactionError> {
        let code = response.status().ok_or(TransactionError::NotAResponse)?;
        if matches!(self.state, ServerState::Completed | ServerState::Terminated) {
            return Err(TransactionError::AlreadyFinal);
        }
        let bytes = response.to_bytes();
        self.last_response = Some(bytes.clone());
        if code < 200 {
            self.state = ServerState::Proceeding;
        } else if self.reliable {
            self.state = ServerState::Terminated;
        } else {
            self.state = ServerState::Completed;
            self.timer_j = Some(now + self.timers.transaction_timeout());
        }
        Ok(bytes)
    }

    pub fn on_timeout(&mut self, now: Instant) {
        if self.timer_j.is_some_and(|t| t <= now) {
            self.timer_j = None;
            self.state = ServerState::Terminated;
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.timer_j
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> SipMessage {
        SipMessage::response(200, "OK").unwrap()
    }

    #[test]
    fn udp_client_retransmits_doubling_up_to_t2_then_times_out() {
        let t0 = Instant::now();
        let timers = Timers::default();
        let mut tx = ClientTransaction::new(Bytes::from_static(b"req"), false, timers, t0);
        let mut now = t0;
        let mut sent_at = Vec::new();
        while let Some(d) = tx.deadline() {
            now = d;
            for a in tx.on_timeout(now) {
                match a {
                    ClientAction::Retransmit(_) => sent_at.push((now - t0).as_millis()),
                    ClientAction::TimedOut => sent_at.push(u128::MAX),
                }
            }
            if tx.is_terminated() {
                break;
            }
        }
        // E: 0.5, 1.5, 3.5, 7.5, then every 4 s; F at 32 s.
        assert_eq!(&sent_at[..5], &[500, 1500, 3500, 7500, 11500]);
        assert_eq!(sent_at.last(), Some(&u128::MAX));
        assert_eq!(now - t0, Duration::from_secs(32));
    }

    #[test]
    fn tcp_client_never_retransmits() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::new(Bytes::new(), true, Timers::default(), t0);
        assert_eq!(tx.deadline(), Some(t0 + Duration::from_secs(32)));
        assert_eq!(
            tx.on_timeout(t0 + Duration::from_secs(32)),
            vec![ClientAction::TimedOut]
        );
    }

    #[test]
    fn final_response_is_delivered_once_and_k_absorbs_the_rest() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::new(Bytes::new(), false, Timers::default(), t0);
        assert!(tx
            .on_response(SipMessage::response(100, "Trying").unwrap(), t0)
            .is_some());
        assert_eq!(tx.state(), ClientState::Proceeding);
        assert!(tx.on_response(ok(), t0).is_some());
        assert!(tx.on_response(ok(), t0).is_none());
        assert_eq!(tx.deadline(), Some(t0 + Duration::from_secs(5)));
        assert!(tx.on_timeout(t0 + Duration::from_secs(5)).is_empty());
        assert!(tx.is_terminated());
    }

    #[test]
    fn server_absorbs_retransmissions_and_replays_the_final() {
        let t0 = Instant::now();
        let mut tx = ServerTransaction::new(false, Timers::default());
        assert_eq!(tx.on_retransmission(), None);
        let bytes = tx.respond(&ok(), t0).unwrap();
        assert_eq!(tx.on_retransmission(), Some(bytes));
        assert_eq!(tx.respond(&ok(), t0), Err(TransactionError::AlreadyFinal));
        tx.on_timeout(t0 + Duration::from_secs(31));
        assert_eq!(tx.state(), ServerState::Completed);
        tx.on_timeout(t0 + Duration::from_secs(32));
        assert!(tx.is_terminated());
        let mut tcp = ServerTransaction::new(true, Timers::default());
        tcp.respond(&ok(), t0).unwrap();
        assert!(tcp.is_terminated());
    }
}
