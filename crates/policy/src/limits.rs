//! Rate limits: a token bucket per connection, and the slow-down of repeated failed logins.

use governor::{Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket for one client connection: `rate` frames per second, bursts of `burst`.
pub struct ConnectionLimiter {
    inner: governor::DefaultDirectRateLimiter,
}

impl ConnectionLimiter {
    pub fn new(rate_per_second: f64, burst: u32) -> ConnectionLimiter {
        let quota = Rate {
            per_second: rate_per_second,
            burst,
        }
        .quota();
        ConnectionLimiter {
            inner: RateLimiter::direct(quota),
        }
    }

    /// Takes one token; false when the connection is over its rate.
    pub fn allow(&self) -> bool {
        self.inner.check().is_ok()
    }
}

/// A rate: `per_second` on average, bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

impl Rate {
    fn quota(self) -> Quota {
        let burst = NonZeroU32::new(self.burst.max(1)).expect("burst is at least 1");
        let period = Duration::from_secs_f64(1.0 / self.per_second.max(0.001));
        Quota::with_period(period)
            .expect("period is positive")
            .allow_burst(burst)
    }
}

/// One token bucket per key (a sender, a domain), all with the same rate. Buckets that have
/// refilled are forgotten now and then, so the map stays as large as the set of active keys.
pub struct KeyedLimiter {
    inner: governor::DefaultKeyedRateLimiter<String>,
    checks: std::sync::atomic::AtomicU64,
}

impl KeyedLimiter {
    pub fn new(rate: Rate) -> KeyedLimiter {
        KeyedLimiter {
            inner: RateLimiter::keyed(rate.quota()),
            checks: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Takes one token from `key`'s bucket; false when the key is over its rate.
    pub fn allow(&self, key: &str) -> bool {
        let n = self
            .checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n % 4096 == 4095 && self.inner.len() > 10_000 {
            self.inner.retain_recent();
            self.inner.shrink_to_fit();
        }
        self.inner.check_key(&key.to_string()).is_ok()
    }

    /// How many buckets are held.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

/// What to do with a login attempt, decided before the password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginVerdict {
    /// Go ahead, after waiting this long (zero for the first few attempts).
    Proceed { delay: Duration },
    /// Too many failures: refuse without checking.
    Refuse,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// Counts failed logins per account and per client address within a window. After
/// `free_attempts` failures each attempt waits twice as long as the one before (capped), and after
/// `max_attempts` attempts are refused until the window has passed since the last failure.
pub struct LoginThrottle {
    free_attempts: u32,
    max_attempts: u32,
    window: Duration,
    failures: Mutex<HashMap<String, Failures>>,
}

impl LoginThrottle {
    pub fn new(free_attempts: u32, max_attempts: u32, window: Duration) -> LoginThrottle {
        LoginThrottle {
            free_attempts,
            max_attempts,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn count(&self, map: &HashMap<String, Failures>, key: &str, now: Instant) -> u32 {
        match map.get(key) {
            Some(f) if now.duration_since(f.last) < self.window => f.count,
            _ => 0,
        }
    }

    /// Decides for an attempt on `account` from `peer`.
    pub fn check(&self, account: &str, peer: &str, now: Instant) -> LoginVerdict {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = self
            .count(&map, &format!("a:{account}"), now)
            .max(self.count(&map, &format!("p:{peer}"), now));
        if n >= self.max_attempts {
            return LoginVerdict::Refuse;
        }
        let excess = n.saturating_sub(self.free_attempts);
        let delay = if n < self.free_attempts {
            Duration::ZERO
        } else {
            Duration::from_millis(250u64 << excess.min(5))
        };
        LoginVerdict::Proceed { delay }
    }

    pub fn failed(&self, account: &str, peer: &str, now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 100_000 {
            let window = self.window;
            map.retain(|_, f| now.duration_since(f.last) < window);
        }
        for key in [format!("a:{account}"), format!("p:{peer}")] {
            let current = self.count(&map, &key, now);
            map.insert(
                key,
                Failures {
                    count: current + 1,
                    last: now,
                },
            );
        }
    }

    /// A successful login clears the account's count (the address's count stays).
    pub fn succeeded(&self, account: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&format!("a:{account}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_refuses() {
        let l = ConnectionLimiter::new(1.0, 5);
        let allowed = (0..20).filter(|_| l.allow()).count();
        assert!((5..=6).contains(&allowed), "allowed {allowed}");
    }

    #[test]
    fn keyed_buckets_are_independent() {
        let l = KeyedLimiter::new(Rate {
            per_second: 0.5,
            burst: 3,
        });
        assert_eq!((0..10).filter(|_| l.allow("a")).count(), 3);
        assert_eq!((0..10).filter(|_| l.allow("b")).count(), 3);
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn failures_slow_down_then_refuse_and_expire() {
        let t = LoginThrottle::new(2, 5, Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(
            t.check("alice", "1.2.3.4", t0),
            LoginVerdict::Proceed {
                delay: Duration::ZERO
            }
        );
        t.failed("alice", "1.2.3.4", t0);
        t.failed("alice", "1.2.3.4", t0);
        assert_eq!(
            t.check("alice", "9.9.9.9", t0),
            LoginVerdict::Proceed {
                delay: Duration::from_millis(250)
            }
        );
        t.failed("alice", "1.2.3.4", t0);
        assert_eq!(
            t.check("bob", "1.2.3.4", t0),
            LoginVerdict::Proceed {
                delay: Duration::from_millis(500)
            }
        );
        t.failed("alice", "1.2.3.4", t0);
        t.failed("alice", "1.2.3.4", t0);
        assert_eq!(t.check("alice", "5.5.5.5", t0), LoginVerdict::Refuse);
        assert_eq!(t.check("carol", "1.2.3.4", t0), LoginVerdict::Refuse);
        let later = t0 + Duration::from_secs(61);
        assert_eq!(
            t.check("alice", "1.2.3.4", later),
            LoginVerdict::Proceed {
                delay: Duration::ZERO
            }
        );
    }

    #[test]
    fn success_clears_the_account() {
        let t = LoginThrottle::new(1, 3, Duration::from_secs(60));
        let t0 = Instant::now();
        t.failed("alice", "a", t0);
        t.failed("alice", "b", t0);
        t.succeeded("alice");
        assert_eq!(
            t.check("alice", "c", t0),
            LoginVerdict::Proceed {
                delay: Duration::ZERO
            }
        );
    }
}
