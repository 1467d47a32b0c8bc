//! Outbreak containment: a sender who sends the same link or the same message to many distinct
//! recipients in a short time (the way an IM worm spreads) is quarantined, and what it sent is
//! blocked network-wide for a while. Pure: the caller passes the current time; memory is bounded
//! by [`OutbreakSettings::max_tracked`].
//!
//! The router computes the fingerprints of a message with [`Fingerprint::of_message`] (the body
//! and each link in it), and for each one calls [`Outbreak::observe`]; before delivering, it asks
//! [`Outbreak::is_quarantined`] for the sender and [`Outbreak::is_blocked`] for each fingerprint.

use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use crate::inspect::{extract_links, Link};

/// A stable digest of a normalised link or message body (the first 16 bytes of SHA-256, so the
/// same value on every node and not forgeable by a sender).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 16]);

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl Fingerprint {
    /// Reads the hex form [`Display`](fmt::Display) writes.
    pub fn from_hex(text: &str) -> Option<Fingerprint> {
        if text.len() != 32 || !text.is_ascii() {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Fingerprint(out))
    }

    fn digest(domain: &[u8], data: &[u8]) -> Fingerprint {
        let mut h = Sha256::new();
        h.update(domain);
        h.update([0]);
        h.update(data);
        let full = h.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        Fingerprint(out)
    }

    /// A link, scheme-less, host lower-cased: `HTTP://X.example/a` and `x.example/a` are one.
    pub fn of_link(link: &Link) -> Fingerprint {
        Fingerprint::digest(b"link", link.normalized().as_bytes())
    }

    /// A body, lower-cased with runs of white space collapsed.
    pub fn of_body(body: &str) -> Fingerprint {
        let mut norm = String::with_capacity(body.len());
        for word in body.split_whitespace() {
            if !norm.is_empty() {
                norm.push(' ');
            }
            norm.push_str(&word.to_lowercase());
        }
        Fingerprint::digest(b"body", norm.as_bytes())
    }

    /// The body's fingerprint, then one per distinct link (at most `max_links` links).
    pub fn of_message(body: &str, max_links: usize) -> Vec<Fingerprint> {
        let mut out = vec![Fingerprint::of_body(body)];
        for link in extract_links(body, max_links) {
            let fp = Fingerprint::of_link(&link);
            if !out.contains(&fp) {
                out.push(fp);
            }
        }
        out
    }
}

/// Thresholds and periods of the outbreak detector.
#[derive(Debug, Clone)]
pub struct OutbreakSettings {
    /// Distinct recipients (N) of one fingerprint from one sender that trip the detector.
    pub recipients: usize,
    /// Within this window (T).
    pub window: Duration,
    /// How long a tripped sender stays quarantined (until [`Outbreak::release`]).
    pub quarantine: Duration,
    /// How long a tripped fingerprint stays blocked for everyone.
    pub block: Duration,
    /// Most (sender, fingerprint) pairs tracked at once; the oldest are forgotten first.
    pub max_tracked: usize,
    /// Most quarantined senders and most blocked fingerprints kept (each).
    pub max_contained: usize,
}

impl Default for OutbreakSettings {
    fn default() -> OutbreakSettings {
        OutbreakSettings {
            recipients: 10,
            window: Duration::from_secs(60),
            quarantine: Duration::from_secs(3600),
            block: Duration::from_secs(24 * 3600),
            max_tracked: 100_000,
            max_contained: 100_000,
        }
    }
}

/// The record produced when the detector trips.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub sender: String,
    pub fingerprint: Fingerprint,
    /// The distinct recipients seen within the window, in order.
    pub recipients: Vec<String>,
    pub at: Instant,
    pub quarantined_until: Instant,
    pub blocked_until: Instant,
}

struct Track {
    generation: u64,
    /// Distinct recipients and when each was first seen; fewer than `recipients`.
    seen: VecDeque<(String, Instant)>,
}

type Key = (String, Fingerprint);

/// The detector's state. Not shared: wrap it in a `Mutex` in the router.
pub struct Outbreak {
    settings: OutbreakSettings,
    tracks: HashMap<Key, Track>,
    /// Creation order of tracks, for eviction; stale entries are skipped by generation.
    order: VecDeque<(Key, u64)>,
    next_generation: u64,
    quarantined: HashMap<String, Instant>,
    blocked: HashMap<Fingerprint, Instant>,
}

impl fmt::Debug for Outbreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbreak")
            .field("tracked", &self.tracks.len())
            .field("quarantined", &self.quarantined.len())
            .field("blocked", &self.blocked.len())
            .finish()
    }
}

impl Outbreak {
    pub fn new(settings: OutbreakSettings) -> Outbreak {
        let settings = OutbreakSettings {
            recipients: settings.recipients.max(1),
            max_tracked: settings.max_tracked.max(1),
            max_contained: settings.max_contained.max(1),
            ..settings
        };
        Outbreak {
            settings,
            tracks: HashMap::new(),
            order: VecDeque::new(),
            next_generation: 0,
            quarantined: HashMap::new(),
            blocked: HashMap::new(),
        }
    }

    pub fn settings(&self) -> &OutbreakSettings {
        &self.settings
    }

    /// Applies new settings (a policy reload). Quarantines and blocks in force keep their end
    /// times; what is being tracked is judged by the new window and recipient count from now on.
    pub fn set_settings(&mut self, settings: OutbreakSettings) {
        self.settings = OutbreakSettings {
            recipients: settings.recipients.max(1),
            max_tracked: settings.max_tracked.max(1),
            max_contained: settings.max_contained.max(1),
            ..settings
        };
    }

    /// Records that `sender` sent something with `fingerprint` to `recipient` at `now`. Returns
    /// an alert the moment the sender reaches N distinct recipients within the window: the
    /// sender is then quarantined and the fingerprint blocked. Observations of a sender already
    /// quarantined produce no further alert.
    pub fn observe(
        &mut self,
        sender: &str,
        recipient: &str,
        fingerprint: Fingerprint,
        now: Instant,
    ) -> Option<Alert> {
        if self.is_quarantined(sender, now) {
            return None;
        }
        let key = (sender.to_string(), fingerprint);
        let window = self.settings.window;
        if !self.tracks.contains_key(&key) {
            self.make_room(now);
            let generation = self.next_generation;
            self.next_generation += 1;
            self.tracks.insert(
                key.clone(),
                Track {
                    generation,
                    seen: VecDeque::new(),
                },
            );
            self.order.push_back((key.clone(), generation));
            self.compact_order();
        }
        let track = self.tracks.get_mut(&key)?;
        while let Some((_, first)) = track.seen.front() {
            if now.saturating_duration_since(*first) > window {
                track.seen.pop_front();
            } else {
                break;
            }
        }
        if !track.seen.iter().any(|(r, _)| r == recipient) {
            track.seen.push_back((recipient.to_string(), now));
        }
        if track.seen.len() < self.settings.recipients {
            return None;
        }
        let track = self.tracks.remove(&key)?;
        let quarantined_until = now + self.settings.quarantine;
        let blocked_until = now + self.settings.block;
        self.contain_sender(sender, quarantined_until, now);
        self.contain_fingerprint(fingerprint, blocked_until, now);
        Some(Alert {
            sender: sender.to_string(),
            fingerprint,
            recipients: track.seen.into_iter().map(|(r, _)| r).collect(),
            at: now,
            quarantined_until,
            blocked_until,
        })
    }

    /// Whether the sender is quarantined at `now`.
    pub fn is_quarantined(&self, sender: &str, now: Instant) -> bool {
        self.quarantined
            .get(sender)
            .is_some_and(|until| now < *until)
    }

    /// Whether the fingerprint is blocked for everyone at `now`.
    pub fn is_blocked(&self, fingerprint: &Fingerprint, now: Instant) -> bool {
        self.blocked
            .get(fingerprint)
            .is_some_and(|until| now < *until)
    }

    /// The first blocked fingerprint among these, if any.
    pub fn first_blocked(&self, fingerprints: &[Fingerprint], now: Instant) -> Option<Fingerprint> {
        fingerprints
            .iter()
            .find(|fp| self.is_blocked(fp, now))
            .copied()
    }

    /// Lifts a sender's quarantine (an operator's decision). True when it was quarantined.
    pub fn release(&mut self, sender: &str) -> bool {
        self.tracks.retain(|(s, _), _| s != sender);
        self.quarantined.remove(sender).is_some()
    }

    /// Re-instates a quarantine read back from storage (after a restart).
    pub fn restore_quarantine(&mut self, sender: &str, until: Instant, now: Instant) {
        if now < until {
            self.contain_sender(sender, until, now);
        }
    }

    /// Re-instates a network-wide block read back from storage.
    pub fn restore_block(&mut self, fingerprint: Fingerprint, until: Instant, now: Instant) {
        if now < until {
            self.contain_fingerprint(fingerprint, until, now);
        }
    }

    /// Lifts a network-wide block. True when it was blocked.
    pub fn unblock(&mut self, fingerprint: &Fingerprint) -> bool {
        self.blocked.remove(fingerprint).is_some()
    }

    /// Senders quarantined at `now`, with when their quarantine ends.
    pub fn quarantined(&self, now: Instant) -> Vec<(String, Instant)> {
        let mut v: Vec<_> = self
            .quarantined
            .iter()
            .filter(|(_, until)| now < **until)
            .map(|(s, until)| (s.clone(), *until))
            .collect();
        v.sort();
        v
    }

    /// How many (sender, fingerprint) pairs are tracked now.
    pub fn tracked(&self) -> usize {
        self.tracks.len()
    }

    /// Forgets everything that expired by `now` (also done as needed by `observe`).
    pub fn sweep(&mut self, now: Instant) {
        let window = self.settings.window;
        self.tracks.retain(|_, t| {
            t.seen
                .back()
                .is_some_and(|(_, at)| now.saturating_duration_since(*at) <= window)
        });
        self.quarantined.retain(|_, until| now < *until);
        self.blocked.retain(|_, until| now < *until);
        self.compact_order();
    }

    fn make_room(&mut self, now: Instant) {
        if self.tracks.len() < self.settings.max_tracked {
            return;
        }
        self.sweep(now);
        while self.tracks.len() >= self.settings.max_tracked {
            let Some((key, generation)) = self.order.pop_front() else {
                break;
            };
            if self
                .tracks
                .get(&key)
                .is_some_and(|t| t.generation == generation)
            {
                self.tracks.remove(&key);
            }
        }
    }

    /// Keeps the eviction queue within twice the number of live tracks.
    fn compact_order(&mut self) {
        if self.order.len() > 2 * self.tracks.len() + 16 {
            let tracks = &self.tracks;
            self.order
                .retain(|(k, g)| tracks.get(k).is_some_and(|t| t.generation == *g));
        }
    }

    fn contain_sender(&mut self, sender: &str, until: Instant, now: Instant) {
        if !self.quarantined.contains_key(sender)
            && self.quarantined.len() >= self.settings.max_contained
        {
            self.quarantined.retain(|_, u| now < *u);
            evict_soonest(&mut self.quarantined, self.settings.max_contained);
        }
        let entry = self.quarantined.entry(sender.to_string()).or_insert(until);
        *entry = (*entry).max(until);
    }

    fn contain_fingerprint(&mut self, fp: Fingerprint, until: Instant, now: Instant) {
        if !self.blocked.contains_key(&fp) && self.blocked.len() >= self.settings.max_contained {
            self.blocked.retain(|_, u| now < *u);
            evict_soonest(&mut self.blocked, self.settings.max_contained);
        }
        let entry = self.blocked.entry(fp).or_insert(until);
        *entry = (*entry).max(until);
    }
}

/// Drops the entries that end soonest until there is room for one more.
fn evict_soonest<K: Clone + Eq + std::hash::Hash>(map: &mut HashMap<K, Instant>, cap: usize) {
    if map.len() < cap {
        return;
    }
    let mut ends: Vec<(Instant, K)> = map.iter().map(|(k, u)| (*u, k.clone())).collect();
    ends.sort_by_key(|(u, _)| *u);
    // Free a tenth at once so a flood does not pay this sort on every alert.
    let excess = map.len() + 1 - cap;
    let drop = excess.max(cap / 10).min(ends.len());
    let gone: HashSet<K> = ends.into_iter().take(drop).map(|(_, k)| k).collect();
    map.retain(|k, _| !gone.contains(k));
}
