//! A token bucket per source address for handshake messages under load.
//!
//! boringtun's rate limiter is box-wide: over the limit it demands a cookie
//! (MAC2) and lets every message that carries one through to the X25519. A
//! cookie is tied to the address it was sent to, so an attacker who can
//! receive at its own address gets cookies and then the full rate of key
//! exchanges. WireGuard in the kernel closes this with a bucket per source
//! address (IPv4 address, IPv6 /64); this is the same idea, sans-IO: time
//! comes in as `now`, the table is bounded, and an address that has been
//! quiet long enough to refill is forgotten.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// Handshake messages per second one source may cost us under load.
pub const PER_SOURCE_RATE: u32 = 20;
/// How many it may send at once.
pub const PER_SOURCE_BURST: u32 = 5;
/// Sources remembered at most; over that, new sources are refused until
/// quiet ones are forgotten (at most one second later).
pub const MAX_SOURCES: usize = 4096;

/// One token, in nanoseconds of refill time.
const TOKEN: u64 = 1_000_000_000 / PER_SOURCE_RATE as u64;
const FULL: u64 = TOKEN * PER_SOURCE_BURST as u64;

/// Buckets keyed by source (IPv6 by its /64).
#[derive(Debug, Default)]
pub struct SourceLimiter {
    buckets: HashMap<IpAddr, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Refill time left in the bucket, in nanoseconds (`FULL` = full).
    credit: u64,
    at: Instant,
}

fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Bucket {
    fn refilled(self, now: Instant) -> u64 {
        let gained = now.saturating_duration_since(self.at).as_nanos();
        (u128::from(self.credit) + gained).min(u128::from(FULL)) as u64
    }
}

impl SourceLimiter {
    /// Takes a token for a message from `ip` at `now`; false: drop it.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let k = key(ip);
        if let Some(b) = self.buckets.get_mut(&k) {
            let credit = b.refilled(now);
            *b = Bucket { credit, at: now };
            if credit < TOKEN {
                return false;
            }
            b.credit -= TOKEN;
            return true;
        }
        if self.buckets.len() >= MAX_SOURCES {
            self.forget_quiet(now);
            if self.buckets.len() >= MAX_SOURCES {
                return false;
            }
        }
        self.buckets.insert(
            k,
            Bucket {
                credit: FULL - TOKEN,
                at: now,
            },
        );
        true
    }

    /// Forgets sources whose bucket has refilled (they cost nothing to
    /// re-create).
    pub fn forget_quiet(&mut self, now: Instant) {
        self.buckets.retain(|_, b| b.refilled(now) < FULL);
    }

    /// Sources remembered now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// No source remembered.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// How long a bucket takes to refill from empty.
pub const REFILL: Duration = Duration::from_nanos(FULL);

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut l = SourceLimiter::default();
        let a = ip("203.0.113.7");
        let burst = (0..100).filter(|_| l.allow(a, t0)).count();
        assert_eq!(burst, PER_SOURCE_BURST as usize);
        // Over one second at 1 ms steps, PER_SOURCE_RATE more get through.
        let more = (1..=1000)
            .filter(|ms| l.allow(a, t0 + Duration::from_millis(*ms)))
            .count();
        assert_eq!(more, PER_SOURCE_RATE as usize);
        // Another address is not affected.
        assert!(l.allow(ip("203.0.113.8"), t0 + Duration::from_secs(1)));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let t0 = Instant::now();
        let mut l = SourceLimiter::default();
        for i in 0..PER_SOURCE_BURST {
            assert!(l.allow(ip(&format!("2001:db8:1:2::{}", i + 1)), t0));
        }
        assert!(!l.allow(ip("2001:db8:1:2:ffff::9"), t0));
        assert!(l.allow(ip("2001:db8:1:3::1"), t0));
        for _ in 0..PER_SOURCE_BURST {
            assert!(l.allow(ip("192.0.2.1"), t0));
        }
        assert!(!l.allow(ip("::ffff:192.0.2.1"), t0));
    }

    #[test]
    fn the_table_is_bounded_and_quiet_sources_are_forgotten() {
        let t0 = Instant::now();
        let mut l = SourceLimiter::default();
        for i in 0..MAX_SOURCES as u32 {
            assert!(l.allow(IpAddr::V4((0x0a00_0000 + i).into()), t0));
        }
        assert_eq!(l.len(), MAX_SOURCES);
        // Full, none quiet yet: a new source is refused, the table stays.
        assert!(!l.allow(ip("198.51.100.1"), t0));
        assert_eq!(l.len(), MAX_SOURCES);
        // Once they refilled they are forgotten and room is made.
        assert!(l.allow(ip("198.51.100.1"), t0 + REFILL));
        assert_eq!(l.len(), 1);
        l.forget_quiet(t0 + REFILL * 2);
        assert!(l.is_empty());
    }
}
