//! The neighbour table: which hosts on the bridge segment use which IPv4
//! address, as learned from the senders of their own ARP packets.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::Mac;

/// One learned neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub mac: Mac,
    /// When the neighbour's last ARP packet was seen.
    pub seen: Instant,
}

/// What [`NeighbourTable::learn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Learn {
    /// The address was unknown. To make room, the least recently seen
    /// neighbour may have been dropped.
    New { evicted: Option<(Ipv4Addr, Mac)> },
    /// The address was known with another MAC.
    Changed,
    /// Same address, same MAC: only the timestamp moved.
    Refreshed,
}

/// Neighbours keyed by address. A `BTreeMap` keeps iteration and eviction
/// order deterministic, which simulation tests rely on.
#[derive(Debug, Clone)]
pub(crate) struct NeighbourTable {
    entries: BTreeMap<Ipv4Addr, Entry>,
    ttl: Duration,
    capacity: usize,
}

impl NeighbourTable {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            entries: BTreeMap::new(),
            ttl,
            capacity: capacity.max(1),
        }
    }

    /// When an entry last seen at `seen` expires; `None` if the TTL is so
    /// large that the deadline is not representable (never expires).
    fn deadline(&self, seen: Instant) -> Option<Instant> {
        seen.checked_add(self.ttl)
    }

    fn is_expired(&self, entry: &Entry, now: Instant) -> bool {
        self.deadline(entry.seen).is_some_and(|d| now >= d)
    }

    /// Records that `ip` was used by `mac` at `now`.
    pub fn learn(&mut self, now: Instant, ip: Ipv4Addr, mac: Mac) -> Learn {
        if let Some(entry) = self.entries.get_mut(&ip) {
            let changed = entry.mac != mac;
            *entry = Entry { mac, seen: now };
            return if changed {
                Learn::Changed
            } else {
                Learn::Refreshed
            };
        }
        let mut evicted = None;
        if self.entries.len() >= self.capacity {
            // `min_by_key` returns the first of equal minima: with the
            // BTreeMap's order that is the lowest address, deterministically.
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.seen)
                .map(|(ip, e)| (*ip, e.mac));
            if let Some((old_ip, old_mac)) = oldest {
                self.entries.remove(&old_ip);
                evicted = Some((old_ip, old_mac));
            }
        }
        self.entries.insert(ip, Entry { mac, seen: now });
        Learn::New { evicted }
    }

    /// The entry for `ip`, whether or not it has expired yet.
    pub fn get(&self, ip: Ipv4Addr) -> Option<&Entry> {
        self.entries.get(&ip)
    }

    /// True if a neighbour was seen using `ip` within the TTL before `now`.
    /// Entries past their deadline count as gone even before
    /// [`expire`](Self::expire) removes them.
    pub fn in_use(&self, ip: Ipv4Addr, now: Instant) -> bool {
        self.entries
            .get(&ip)
            .is_some_and(|e| !self.is_expired(e, now))
    }

    /// Removes every entry whose TTL has run out at `now`, calling `removed`
    /// for each in address order.
    pub fn expire(&mut self, now: Instant, mut removed: impl FnMut(Ipv4Addr, Mac)) {
        let ttl = self.ttl;
        self.entries.retain(|ip, e| {
            let expired = e.seen.checked_add(ttl).is_some_and(|d| now >= d);
            if expired {
                removed(*ip, e.mac);
            }
            !expired
        });
    }

    /// The earliest deadline of any entry.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|e| self.deadline(e.seen))
            .min()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Ipv4Addr, &Entry)> + '_ {
        self.entries.iter().map(|(ip, e)| (*ip, e))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M1: Mac = Mac([2, 0, 0, 0, 0, 1]);
    const M2: Mac = Mac([2, 0, 0, 0, 0, 2]);

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, last)
    }

    #[test]
    fn learn_new_changed_refreshed() {
        let t0 = Instant::now();
        let mut table = NeighbourTable::new(Duration::from_secs(60), 8);
        assert_eq!(table.learn(t0, ip(1), M1), Learn::New { evicted: None });
        assert_eq!(table.learn(t0, ip(1), M1), Learn::Refreshed);
        assert_eq!(table.learn(t0, ip(1), M2), Learn::Changed);
        assert_eq!(table.get(ip(1)).map(|e| e.mac), Some(M2));
    }

    #[test]
    fn full_table_evicts_least_recently_seen() {
        let t0 = Instant::now();
        let mut table = NeighbourTable::new(Duration::from_secs(60), 2);
        table.learn(t0 + Duration::from_secs(1), ip(1), M1);
        table.learn(t0, ip(2), M2);
        assert_eq!(
            table.learn(t0 + Duration::from_secs(2), ip(3), M1),
            Learn::New {
                evicted: Some((ip(2), M2))
            }
        );
        assert_eq!(table.len(), 2);
        assert!(table.get(ip(2)).is_none());
    }

    #[test]
    fn unrepresentable_deadline_never_expires() {
        let t0 = Instant::now();
        let mut table = NeighbourTable::new(Duration::MAX, 2);
        table.learn(t0, ip(1), M1);
        assert_eq!(table.next_expiry(), None);
        assert!(table.in_use(ip(1), t0 + Duration::from_secs(1 << 30)));
        table.expire(t0 + Duration::from_secs(1 << 30), |_, _| panic!("expired"));
        assert_eq!(table.len(), 1);
    }
}
