//! The desired state of the mesh: a set of peers keyed by public key.
//!
//! A [`PeerSet`] is what a *producer* wants the mesh to run: the static peers
//! of the config file are one producer, a tailnet control client will be
//! another. [`crate::Mesh::apply`] makes the running mesh match a set,
//! idempotently. Several producers are combined with [`PeerSet::merge`].

use crate::wg::PeerConfig;
use crate::PublicKey;

/// Peers keyed by public key, in a stable order (the order they were
/// inserted). The order matters in one place only: when two peers list the
/// same allowed IP, the later one in the set owns it, as with `wg set`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerSet {
    peers: Vec<PeerConfig>,
}

impl PeerSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `peer`, or replace the peer with the same public key (keeping its
    /// position). Returns the replaced peer.
    pub fn insert(&mut self, peer: PeerConfig) -> Option<PeerConfig> {
        match self
            .peers
            .iter_mut()
            .find(|p| p.public_key == peer.public_key)
        {
            Some(old) => Some(std::mem::replace(old, peer)),
            None => {
                self.peers.push(peer);
                None
            }
        }
    }

    /// Remove the peer with this key.
    pub fn remove(&mut self, key: &PublicKey) -> Option<PeerConfig> {
        let i = self.peers.iter().position(|p| p.public_key == *key)?;
        Some(self.peers.remove(i))
    }

    /// The peer with this key.
    pub fn get(&self, key: &PublicKey) -> Option<&PeerConfig> {
        self.peers.iter().find(|p| p.public_key == *key)
    }

    /// Mutable access to the peer with this key (e.g. to fill in a resolved endpoint).
    pub fn get_mut(&mut self, key: &PublicKey) -> Option<&mut PeerConfig> {
        self.peers.iter_mut().find(|p| p.public_key == *key)
    }

    /// The peers, in order.
    pub fn iter(&self) -> impl Iterator<Item = &PeerConfig> {
        self.peers.iter()
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// No peers.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Add the peers of another producer's set.
    ///
    /// **Rule for a key in both sets: the set merged into (the earlier
    /// producer) wins, whole** — its peer is kept as it is, fields are never
    /// mixed — and the key is returned so the caller can log the conflict.
    /// Merge producers in priority order: the daemon merges the static
    /// peers of the config first, so a peer the operator wrote down
    /// overrides whatever a tailnet control server says about the same key.
    /// The result does not depend on anything but the two sets and the order
    /// of the calls.
    pub fn merge(&mut self, other: &PeerSet) -> Vec<PublicKey> {
        let mut conflicts = Vec::new();
        for p in &other.peers {
            if self.get(&p.public_key).is_some() {
                conflicts.push(p.public_key);
            } else {
                self.peers.push(p.clone());
            }
        }
        conflicts
    }
}

impl FromIterator<PeerConfig> for PeerSet {
    /// Like [`PeerSet::insert`] for each: a repeated key replaces the earlier one.
    fn from_iter<I: IntoIterator<Item = PeerConfig>>(iter: I) -> Self {
        let mut set = PeerSet::new();
        for p in iter {
            set.insert(p);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(key: u8, name: &str) -> PeerConfig {
        PeerConfig {
            name: name.into(),
            public_key: PublicKey([key; 32]),
            preshared_key: None,
            endpoint: None,
            allowed_ips: vec![],
            persistent_keepalive: None,
        }
    }

    #[test]
    fn merge_keeps_the_earlier_producer_and_reports_the_conflict() {
        let config: PeerSet = [peer(1, "laptop"), peer(2, "phone")].into_iter().collect();
        let tailnet: PeerSet = [peer(2, "phone-from-control"), peer(3, "tv")]
            .into_iter()
            .collect();
        let mut merged = config.clone();
        assert_eq!(merged.merge(&tailnet), vec![PublicKey([2; 32])]);
        let names: Vec<_> = merged.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["laptop", "phone", "tv"]);
        // The other order gives the other producer's peer: the rule is the order.
        let mut other = tailnet.clone();
        assert_eq!(other.merge(&config), vec![PublicKey([2; 32])]);
        assert_eq!(
            other.get(&PublicKey([2; 32])).unwrap().name,
            "phone-from-control"
        );
    }

    #[test]
    fn insert_replaces_in_place_and_remove_forgets() {
        let mut set: PeerSet = [peer(1, "a"), peer(2, "b")].into_iter().collect();
        assert_eq!(set.insert(peer(1, "a2")).unwrap().name, "a");
        let names: Vec<_> = set.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a2", "b"]);
        assert_eq!(set.remove(&PublicKey([1; 32])).unwrap().name, "a2");
        assert_eq!(set.len(), 1);
        assert!(set.remove(&PublicKey([1; 32])).is_none());
    }
}
