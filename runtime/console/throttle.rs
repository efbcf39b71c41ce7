//! Slows down password guessing: after five failed log-ins for one user
//! name or from one address, further attempts (right or wrong) are refused
//! for 30 seconds, doubling with each further failure up to 15 minutes.
//! Failures are forgotten 15 minutes after the last one. Memory is bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed before the lock-out starts.
pub const FREE_FAILURES: u32 = 5;
const FIRST_LOCKOUT: Duration = Duration::from_secs(30);
const MAX_LOCKOUT: Duration = Duration::from_secs(15 * 60);
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
const MAX_KEYS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

#[derive(Default)]
pub struct Throttle {
    keys: Mutex<HashMap<String, Failures>>,
}

impl Throttle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failures>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long the caller must wait before trying `user` from `address`,
    /// if locked out.
    pub fn wait(&self, user: &str, address: &str) -> Option<Duration> {
        let now = Instant::now();
        let keys = self.lock();
        [user_key(user), address_key(address)]
            .iter()
            .filter_map(|k| keys.get(k)?.locked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max()
    }

    pub fn failed(&self, user: &str, address: &str) {
        let now = Instant::now();
        let mut keys = self.lock();
        if keys.len() >= MAX_KEYS {
            keys.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
        }
        if keys.len() >= MAX_KEYS {
            // Still full: a flood of names or addresses. Forget the oldest
            // half rather than grow.
            let mut ages: Vec<Instant> = keys.values().map(|f| f.last).collect();
            ages.sort();
            let cut = ages[ages.len() / 2];
            keys.retain(|_, f| f.last > cut);
        }
        for key in [user_key(user), address_key(address)] {
            let entry = keys.entry(key).or_insert(Failures {
                count: 0,
                last: now,
                locked_until: None,
            });
            if now.duration_since(entry.last) >= FORGET_AFTER {
                entry.count = 0;
            }
            entry.count += 1;
            entry.last = now;
            if entry.count >= FREE_FAILURES {
                let doublings = (entry.count - FREE_FAILURES).min(8);
                let lockout = (FIRST_LOCKOUT * 2u32.pow(doublings)).min(MAX_LOCKOUT);
                entry.locked_until = Some(now + lockout);
            }
        }
    }

    /// A successful log-in clears the user's and the address's failures.
    pub fn succeeded(&self, user: &str, address: &str) {
        let mut keys = self.lock();
        keys.remove(&user_key(user));
        keys.remove(&address_key(address));
    }
}

fn user_key(user: &str) -> String {
    format!("user:{user}")
}

fn address_key(address: &str) -> String {
    format!("address:{address}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_lock_the_user_and_the_address() {
        let throttle = Throttle::default();
        for _ in 0..FREE_FAILURES - 1 {
            throttle.failed("ana", "10.0.0.1");
            assert!(throttle.wait("ana", "10.0.0.1").is_none());
        }
        throttle.failed("ana", "10.0.0.1");
        let wait = throttle.wait("ana", "10.0.0.2").expect("user locked");
        assert!(
            wait > Duration::from_secs(25) && wait <= FIRST_LOCKOUT,
            "{wait:?}"
        );
        assert!(throttle.wait("bob", "10.0.0.1").is_some(), "address locked");
        assert!(throttle.wait("bob", "10.0.0.2").is_none());
        throttle.failed("ana", "10.0.0.1");
        let longer = throttle.wait("ana", "10.0.0.2").expect("locked");
        assert!(longer > Duration::from_secs(55), "{longer:?}");
        throttle.succeeded("ana", "10.0.0.1");
        assert!(throttle.wait("ana", "10.0.0.1").is_none());
    }
}
