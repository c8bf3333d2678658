//! Cryptokey routing: which peer owns which address (longest prefix wins).

use ipnet::IpNet;
use std::net::IpAddr;

/// A longest-prefix-match table from networks to values (peer ids).
///
/// The box has tens of peers, not thousands: a sorted vector scanned linearly
/// is small and fast enough, and has no allocation per lookup.
#[derive(Debug, Clone)]
pub struct AllowedIps<T> {
    // Sorted by prefix length, longest first.
    entries: Vec<(IpNet, T)>,
}

impl<T> Default for AllowedIps<T> {
    fn default() -> Self {
        AllowedIps {
            entries: Vec::new(),
        }
    }
}

impl<T: Copy + PartialEq> AllowedIps<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `net` for `value`. A network already present is reassigned, as
    /// WireGuard does when two peers list the same allowed IP.
    pub fn insert(&mut self, net: IpNet, value: T) {
        let net = net.trunc();
        self.entries.retain(|(n, _)| *n != net);
        let pos = self
            .entries
            .iter()
            .position(|(n, _)| n.prefix_len() < net.prefix_len())
            .unwrap_or(self.entries.len());
        self.entries.insert(pos, (net, value));
    }

    /// Remove every network of `value`.
    pub fn remove_value(&mut self, value: T) {
        self.entries.retain(|(_, v)| *v != value);
    }

    /// The value whose network is the longest match for `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<T> {
        self.entries
            .iter()
            .find(|(n, _)| n.contains(&addr))
            .map(|(_, v)| *v)
    }

    /// Like [`AllowedIps::lookup`], but a default route (`/0`) does not
    /// count: only a peer that owns a specific network matches.
    pub fn lookup_specific(&self, addr: IpAddr) -> Option<T> {
        self.entries
            .iter()
            .find(|(n, _)| n.prefix_len() > 0 && n.contains(&addr))
            .map(|(_, v)| *v)
    }

    /// All entries, longest prefix first.
    pub fn iter(&self) -> impl Iterator<Item = &(IpNet, T)> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_and_reassign_moves_ownership() {
        let mut t = AllowedIps::new();
        t.insert("10.0.0.0/8".parse().unwrap(), 1);
        t.insert("10.77.0.2/32".parse().unwrap(), 2);
        t.insert("0.0.0.0/0".parse().unwrap(), 3);
        assert_eq!(t.lookup("10.77.0.2".parse().unwrap()), Some(2));
        assert_eq!(t.lookup("10.77.0.3".parse().unwrap()), Some(1));
        assert_eq!(t.lookup_specific("192.0.2.1".parse().unwrap()), None);
        assert_eq!(t.lookup_specific("10.77.0.2".parse().unwrap()), Some(2));
        assert_eq!(t.lookup("192.0.2.1".parse().unwrap()), Some(3));
        assert_eq!(t.lookup("::1".parse().unwrap()), None);
        t.insert("10.0.0.0/8".parse().unwrap(), 4);
        assert_eq!(t.lookup("10.1.1.1".parse().unwrap()), Some(4));
        t.remove_value(4);
        assert_eq!(t.lookup("10.1.1.1".parse().unwrap()), Some(3));
        // Host bits are ignored: 10.1.2.3/16 means 10.1.0.0/16.
        t.insert("10.1.2.3/16".parse().unwrap(), 5);
        assert_eq!(t.lookup("10.1.9.9".parse().unwrap()), Some(5));
    }
}
