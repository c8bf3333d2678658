//! Rate limits on client messages: what one device (one MAC), and all
//! devices the server does not know together, may cost the box.
//!
//! The box cannot see which bridge port a frame came in on, so the limits
//! are per MAC plus one shared budget for *newcomers* (MACs with no lease
//! record and no reservation). A device the server knows is only held to
//! its own per-MAC budget, so a flood from random MACs (which are all
//! newcomers) cannot crowd out the real devices.
//!
//! Token buckets on the wall clock passed in; a clock that goes backwards
//! refills nothing. Memory is bounded: at most [`MAX_TRACKED_MACS`] buckets.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crate::Mac;

/// Messages per second one MAC may send, sustained.
pub const PER_MAC_RATE: u32 = 4;
/// Messages one MAC may send in a burst.
pub const PER_MAC_BURST: u32 = 16;
/// Messages per second all newcomers together may send, sustained: far
/// above what a home network's devices need (a room of 1,000 phones
/// arriving in one second), far below what a flood can send.
pub const NEWCOMER_RATE: u32 = 2000;
/// Messages all newcomers together may send in a burst.
pub const NEWCOMER_BURST: u32 = 2000;
/// Most per-MAC buckets kept; idle (full) buckets are dropped to make room.
/// When none is idle, a MAC the server knows is let through untracked and a
/// newcomer is refused.
pub const MAX_TRACKED_MACS: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: SystemTime,
}

impl Bucket {
    fn full(burst: u32, now: SystemTime) -> Self {
        Self {
            tokens: f64::from(burst),
            at: now,
        }
    }

    fn refill(&mut self, rate: u32, burst: u32, now: SystemTime) {
        let dt = now.duration_since(self.at).unwrap_or(Duration::ZERO);
        self.tokens = (self.tokens + dt.as_secs_f64() * f64::from(rate)).min(f64::from(burst));
        self.at = self.at.max(now);
    }

    fn take(&mut self, rate: u32, burst: u32, now: SystemTime) -> bool {
        self.refill(rate, burst, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Per-MAC and newcomer token buckets.
#[derive(Debug, Clone)]
pub(crate) struct Limiter {
    per_mac: HashMap<Mac, Bucket>,
    newcomers: Bucket,
}

impl Limiter {
    pub(crate) fn new(now: SystemTime) -> Self {
        Self {
            per_mac: HashMap::new(),
            newcomers: Bucket::full(NEWCOMER_BURST, now),
        }
    }

    /// Charges one message from `mac`. `known`: the server has a record or
    /// a reservation for it. Returns whether the message may be handled.
    pub(crate) fn allow(&mut self, mac: Mac, known: bool, now: SystemTime) -> bool {
        let tracked = self.per_mac.contains_key(&mac);
        if !known && !tracked {
            // An untracked newcomer pays the shared budget before it may
            // cost a bucket: a flood from random MACs creates at most
            // NEWCOMER_RATE buckets a second.
            if !self.newcomers.take(NEWCOMER_RATE, NEWCOMER_BURST, now) {
                return false;
            }
        }
        if !tracked && self.per_mac.len() >= MAX_TRACKED_MACS {
            self.per_mac.retain(|_, b| {
                b.refill(PER_MAC_RATE, PER_MAC_BURST, now);
                b.tokens < f64::from(PER_MAC_BURST)
            });
            if self.per_mac.len() >= MAX_TRACKED_MACS {
                // No room to track one more MAC: a known MAC is let through
                // (its lease record already exists), a newcomer is refused.
                return known;
            }
        }
        let bucket = self
            .per_mac
            .entry(mac)
            .or_insert_with(|| Bucket::full(PER_MAC_BURST, now));
        if !bucket.take(PER_MAC_RATE, PER_MAC_BURST, now) {
            return false;
        }
        // A tracked newcomer pays its own budget first (so one noisy MAC
        // cannot use up the shared one), then the shared one.
        known || !tracked || self.newcomers.take(NEWCOMER_RATE, NEWCOMER_BURST, now)
    }

    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.per_mac.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn mac(n: u32) -> Mac {
        let b = n.to_be_bytes();
        Mac([2, 0, b[0], b[1], b[2], b[3]])
    }

    #[test]
    fn one_mac_gets_its_burst_then_its_rate() {
        let mut l = Limiter::new(t0());
        let allowed = (0..100).filter(|_| l.allow(mac(1), true, t0())).count();
        assert_eq!(allowed, PER_MAC_BURST as usize);
        let t1 = t0() + Duration::from_secs(1);
        let allowed = (0..100).filter(|_| l.allow(mac(1), true, t1)).count();
        assert_eq!(allowed, PER_MAC_RATE as usize);
        // Another MAC is not affected.
        assert!(l.allow(mac(2), true, t1));
    }

    #[test]
    fn newcomers_share_one_budget_known_macs_do_not_pay_it() {
        let mut l = Limiter::new(t0());
        let allowed = (0..10_000)
            .filter(|n| l.allow(mac(*n), false, t0()))
            .count();
        assert_eq!(allowed, NEWCOMER_BURST as usize);
        // Refused newcomers cost no bucket.
        assert_eq!(l.tracked(), NEWCOMER_BURST as usize);
        assert!(l.allow(mac(1_000_000), true, t0()));
        // One noisy newcomer is held to its own burst, not the shared one.
        let mut l = Limiter::new(t0());
        let allowed = (0..1000).filter(|_| l.allow(mac(7), false, t0())).count();
        assert_eq!(allowed, PER_MAC_BURST as usize);
        assert!(l.allow(mac(8), false, t0()));
    }

    #[test]
    fn tracked_macs_are_bounded_and_idle_ones_make_room() {
        let mut l = Limiter::new(t0());
        for n in 0..5_000 {
            l.allow(mac(n), true, t0());
        }
        assert!(l.tracked() <= MAX_TRACKED_MACS);
        let later = t0() + Duration::from_secs(60);
        assert!(l.allow(mac(9_999_999), true, later));
        assert!(l.tracked() <= MAX_TRACKED_MACS);
    }

    #[test]
    fn clock_going_backwards_refills_nothing() {
        let mut l = Limiter::new(t0());
        while l.allow(mac(1), true, t0()) {}
        assert!(!l.allow(mac(1), true, t0() - Duration::from_secs(3600)));
    }
}
