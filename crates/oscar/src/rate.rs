//! Rate classes: the moving average OSCAR hosts keep per class of SNACs, the levels at which a
//! client is warned (01,0A), limited (SNACs dropped) and disconnected.

use std::time::Instant;

use crate::family::oservice::{rate_code, RateChange, RateClassParams};

/// A class id and its `(family, subtype)` members, as 01,07 lists them.
pub type ClassMembers = (u16, Vec<(u16, u16)>);

/// One rate class: its parameters (levels in milliseconds of average gap) and its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateClass {
    pub id: u16,
    /// Number of SNACs the average runs over.
    pub window: u32,
    pub clear: u32,
    pub alert: u32,
    pub limit: u32,
    pub disconnect: u32,
    pub max: u32,
    /// `(family, subtype)` pairs of this class; the class with id 1 takes every SNAC not listed.
    pub members: Vec<(u16, u16)>,
}

impl RateClass {
    /// The classes served by default: class 1 for everything, class 2 for messages and typing.
    /// A client may send about 80 SNACs back to back before the first warning.
    pub fn defaults() -> Vec<RateClass> {
        let base = RateClass {
            id: 1,
            window: 80,
            clear: 2500,
            alert: 2000,
            limit: 1500,
            disconnect: 800,
            max: 6000,
            members: Vec::new(),
        };
        vec![
            base.clone(),
            RateClass {
                id: 2,
                members: vec![(0x04, 0x06), (0x04, 0x14)],
                ..base
            },
        ]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Clear,
    Alert,
    Limited,
}

#[derive(Debug, Clone)]
struct ClassState {
    class: RateClass,
    current: u32,
    last: Option<Instant>,
    level: Level,
}

/// What to do with a SNAC after counting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateVerdict {
    /// Process it; tell the client first if its state changed (warning or clear).
    Pass(Option<RateChange>),
    /// Drop it; tell the client if it has just become limited.
    Drop(Option<RateChange>),
    /// The client is past the disconnect level.
    Disconnect,
}

/// The rate state of one connection.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    classes: Vec<ClassState>,
}

impl RateLimiter {
    pub fn new(classes: &[RateClass]) -> RateLimiter {
        RateLimiter {
            classes: classes
                .iter()
                .map(|c| ClassState {
                    class: c.clone(),
                    current: c.max,
                    last: None,
                    level: Level::Clear,
                })
                .collect(),
        }
    }

    fn index_of(&self, family: u16, subtype: u16) -> Option<usize> {
        self.classes
            .iter()
            .position(|c| c.class.members.contains(&(family, subtype)))
            .or_else(|| self.classes.iter().position(|c| c.class.id == 1))
            .or(if self.classes.is_empty() {
                None
            } else {
                Some(0)
            })
    }

    /// Counts one SNAC of `(family, subtype)` received at `now`.
    pub fn check(&mut self, family: u16, subtype: u16, now: Instant) -> RateVerdict {
        let Some(i) = self.index_of(family, subtype) else {
            return RateVerdict::Pass(None);
        };
        let Some(st) = self.classes.get_mut(i) else {
            return RateVerdict::Pass(None);
        };
        let elapsed = st
            .last
            .map(|l| now.saturating_duration_since(l).as_millis())
            .unwrap_or(u128::from(st.class.max))
            .min(u128::from(u32::MAX)) as u64;
        let window = u64::from(st.class.window.max(1));
        let avg = ((window - 1) * u64::from(st.current) + elapsed) / window;
        let avg = avg.min(u64::from(st.class.max)) as u32;
        st.current = avg;
        st.last = Some(now);
        if avg < st.class.disconnect {
            return RateVerdict::Disconnect;
        }
        let (level, code) = match st.level {
            Level::Limited if avg > st.class.clear => (Level::Clear, Some(rate_code::CLEAR)),
            Level::Limited => (Level::Limited, None),
            _ if avg < st.class.limit => (Level::Limited, Some(rate_code::LIMIT)),
            Level::Clear if avg < st.class.alert => (Level::Alert, Some(rate_code::WARNING)),
            Level::Alert if avg > st.class.clear => (Level::Clear, Some(rate_code::CLEAR)),
            l => (l, None),
        };
        st.level = level;
        let change = code.map(|code| RateChange {
            code,
            params: params_of(st, elapsed as u32),
        });
        if level == Level::Limited {
            RateVerdict::Drop(change)
        } else {
            RateVerdict::Pass(change)
        }
    }

    /// The parameters announced in 01,07, with the members of each class.
    pub fn announce(&self) -> (Vec<RateClassParams>, Vec<ClassMembers>) {
        let params = self.classes.iter().map(|c| params_of(c, 0)).collect();
        let members = self
            .classes
            .iter()
            .map(|c| (c.class.id, c.class.members.clone()))
            .collect();
        (params, members)
    }
}

fn params_of(st: &ClassState, last_time: u32) -> RateClassParams {
    RateClassParams {
        id: st.class.id,
        window: st.class.window,
        clear: st.class.clear,
        alert: st.class.alert,
        limit: st.class.limit,
        disconnect: st.class.disconnect,
        current: st.current,
        max: st.class.max,
        last_time,
        dropping: u8::from(st.level == Level::Limited),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_flood_is_warned_then_limited_then_disconnected() {
        let mut r = RateLimiter::new(&RateClass::defaults());
        let t = Instant::now();
        let mut codes = Vec::new();
        let mut n = 0;
        loop {
            n += 1;
            match r.check(0x02, 0x05, t) {
                RateVerdict::Pass(Some(c)) | RateVerdict::Drop(Some(c)) => codes.push(c.code),
                RateVerdict::Disconnect => break,
                _ => {}
            }
            assert!(n < 10_000);
        }
        assert_eq!(codes, vec![rate_code::WARNING, rate_code::LIMIT]);
        assert!(n > 80, "a sign-on burst must fit: disconnected after {n}");
    }

    #[test]
    fn a_paced_client_is_never_limited() {
        let mut r = RateLimiter::new(&RateClass::defaults());
        let mut t = Instant::now();
        for _ in 0..1000 {
            t += Duration::from_millis(3000);
            assert_eq!(r.check(0x04, 0x06, t), RateVerdict::Pass(None));
        }
    }

    #[test]
    fn limited_clients_recover_after_a_pause() {
        let mut r = RateLimiter::new(&RateClass::defaults());
        let t = Instant::now();
        while !matches!(r.check(0x04, 0x06, t), RateVerdict::Drop(_)) {}
        // Another class is unaffected.
        assert_eq!(r.check(0x02, 0x05, t), RateVerdict::Pass(None));
        let mut later = t;
        let mut cleared = false;
        for _ in 0..200 {
            later += Duration::from_secs(6);
            if let RateVerdict::Pass(Some(c)) = r.check(0x04, 0x06, later) {
                assert_eq!(c.code, rate_code::CLEAR);
                cleared = true;
                break;
            }
        }
        assert!(cleared);
    }
}
