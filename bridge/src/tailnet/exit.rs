//! `[routing] use_exit_node` naming a tailnet node: the bridged devices'
//! internet goes through that node (which must offer an exit node the
//! control server approved), with the kill switch of the static case.
//!
//! The node is looked up in every map update ([`ExitNode::update`]): by host
//! name (`laptop`), MagicDNS name (`laptop.tailnet.example`) or tailnet
//! address. Its mesh peer then also owns `0.0.0.0/0`
//! ([`add_default_route`]), so replies from the internet pass cryptokey
//! routing, and the engine's `use_exit` is that peer ([`sync_engine`]).
//! While the node is unknown, offline from the map, or offers no exit node,
//! the engine has no exit peer and, with `bridge_internet` kept off by the
//! daemon, drops that traffic: it never leaves through the box's uplink.

use ipnet::IpNet;
use meshbridge_engine::Engine;
use meshbridge_mesh::{PeerSet, PublicKey};
use meshbridge_tailnet::keys::NodePublic;
use meshbridge_tailnet::netmap::TailnetPeer;
use std::net::IpAddr;

/// What the netmap says about the wanted exit node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitChoice {
    /// This node, which offers an approved exit node.
    Node(NodePublic),
    /// A node by that name is in the map but offers no approved exit node.
    NotOffered,
    /// No node of the map has that name or address.
    Unknown,
}

fn default4() -> IpNet {
    IpNet::V4(ipnet::Ipv4Net::default())
}

/// Whether `peer` is the node `wanted` names (case-insensitive).
pub fn names(peer: &TailnetPeer, wanted: &str) -> bool {
    if let Ok(ip) = wanted.parse::<IpAddr>() {
        return peer.addresses.iter().any(|a| a.addr() == ip);
    }
    let wanted = wanted.trim_end_matches('.');
    let name = peer.name.trim_end_matches('.');
    name.eq_ignore_ascii_case(wanted)
        || (!wanted.contains('.')
            && name
                .split('.')
                .next()
                .is_some_and(|h| h.eq_ignore_ascii_case(wanted)))
}

/// Whether `peer` offers an exit node the control server approved (its
/// allowed IPs hold the IPv4 default route).
pub fn offers_exit(peer: &TailnetPeer) -> bool {
    peer.allowed_ips.contains(&default4())
}

/// The node `wanted` names among `peers`; one that offers an exit node wins
/// over others of the same short name.
pub fn choose(peers: &[TailnetPeer], wanted: &str) -> ExitChoice {
    let mut named = peers.iter().filter(|p| names(p, wanted)).peekable();
    if named.peek().is_none() {
        return ExitChoice::Unknown;
    }
    named
        .find(|p| offers_exit(p))
        .map_or(ExitChoice::NotOffered, |p| ExitChoice::Node(p.node_key))
}

/// The exit node's mesh peer also owns `0.0.0.0/0` (the tailnet's peer set
/// leaves default routes out).
pub fn add_default_route(set: &mut PeerSet, key: &NodePublic) {
    if let Some(p) = set.get_mut(&PublicKey(*key.as_bytes())) {
        if !p.allowed_ips.contains(&default4()) {
            p.allowed_ips.push(default4());
        }
    }
}

/// The configured tailnet exit node and what the last map said about it.
#[derive(Debug, Clone)]
pub struct ExitNode {
    wanted: String,
    last: Option<ExitChoice>,
}

impl ExitNode {
    /// `use_exit_node` names a tailnet node (not a `[[mesh.peers]]` entry).
    pub fn new(wanted: String) -> Self {
        ExitNode { wanted, last: None }
    }

    /// Look the node up in a new map; says so in the log when the answer changes.
    pub fn update(&mut self, peers: &[TailnetPeer]) {
        let now = choose(peers, &self.wanted);
        if self.last == Some(now) {
            return;
        }
        match now {
            ExitChoice::Node(k) => tracing::info!(
                "tailnet: the bridged devices' internet goes via the exit node {}",
                k.short()
            ),
            ExitChoice::NotOffered => tracing::warn!(
                "tailnet: routing.use_exit_node names a node that offers no approved exit node: the bridged devices' internet is blocked (kill switch) until it does"
            ),
            ExitChoice::Unknown => tracing::warn!(
                "tailnet: routing.use_exit_node names no node of the tailnet (yet): the bridged devices' internet is blocked (kill switch) until it appears"
            ),
        }
        tracing::debug!(
            "tailnet: routing.use_exit_node = {:?}: {now:?}",
            self.wanted
        );
        self.last = Some(now);
    }

    /// The exit node's key, if the last map had it offering an exit node.
    pub fn node(&self) -> Option<NodePublic> {
        match self.last {
            Some(ExitChoice::Node(k)) => Some(k),
            _ => None,
        }
    }
}

/// Point the engine's exit peer at `node`'s mesh peer (none: kill switch).
/// Call after each apply of the peer set.
pub fn sync_engine(engine: &mut Engine, node: Option<NodePublic>) {
    let id = node.and_then(|k| engine.mesh().peer_by_key(&PublicKey(*k.as_bytes())));
    if engine.exit_peer() != id {
        engine.set_exit_peer(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshbridge_mesh::PeerConfig;

    fn peer(n: u8, name: &str, allowed: &[&str]) -> TailnetPeer {
        TailnetPeer {
            id: i64::from(n),
            name: name.to_string(),
            node_key: NodePublic::from_bytes([n; 32]),
            disco_key: None,
            addresses: vec![format!("100.64.0.{n}/32").parse().unwrap()],
            allowed_ips: allowed.iter().map(|a| a.parse().unwrap()).collect(),
            endpoints: vec![],
            derp_region: None,
            online: Some(true),
        }
    }

    fn map() -> Vec<TailnetPeer> {
        vec![
            peer(1, "laptop.tailnet.test", &["100.64.0.1/32"]),
            peer(
                2,
                "laptop-2.tailnet.test",
                &["100.64.0.2/32", "0.0.0.0/0", "::/0"],
            ),
            peer(
                3,
                "router.tailnet.test.",
                &["100.64.0.3/32", "192.168.9.0/24"],
            ),
        ]
    }

    #[test]
    fn the_node_is_found_by_host_name_magicdns_name_or_address() {
        let m = map();
        let two = ExitChoice::Node(NodePublic::from_bytes([2; 32]));
        assert_eq!(choose(&m, "laptop-2"), two);
        assert_eq!(choose(&m, "Laptop-2.tailnet.test."), two);
        assert_eq!(choose(&m, "100.64.0.2"), two);
        // Named, but no approved exit node (a subnet route is not one).
        assert_eq!(choose(&m, "laptop"), ExitChoice::NotOffered);
        assert_eq!(choose(&m, "router"), ExitChoice::NotOffered);
        // A short name matches the first label only, an FQDN all of it.
        assert_eq!(choose(&m, "tailnet"), ExitChoice::Unknown);
        assert_eq!(choose(&m, "laptop-2.other.test"), ExitChoice::Unknown);
        assert_eq!(choose(&m, "100.64.0.9"), ExitChoice::Unknown);
        assert_eq!(choose(&[], "laptop-2"), ExitChoice::Unknown);
    }

    #[test]
    fn the_exit_node_comes_and_goes_with_the_map() {
        let mut e = ExitNode::new("laptop-2".into());
        assert_eq!(e.node(), None);
        e.update(&map());
        assert_eq!(e.node(), Some(NodePublic::from_bytes([2; 32])));
        // The control server withdrew the exit route (or the node left).
        let mut m = map();
        m[1].allowed_ips.truncate(1);
        e.update(&m);
        assert_eq!(e.node(), None);
        e.update(&map());
        e.update(&[]);
        assert_eq!(e.node(), None);
    }

    #[test]
    fn the_exit_nodes_peer_owns_the_default_route() {
        let mut set = PeerSet::new();
        for n in [1u8, 2] {
            set.insert(PeerConfig {
                name: format!("p{n}"),
                public_key: PublicKey([n; 32]),
                preshared_key: None,
                endpoint: None,
                allowed_ips: vec![format!("100.64.0.{n}/32").parse().unwrap()],
                persistent_keepalive: None,
            });
        }
        add_default_route(&mut set, &NodePublic::from_bytes([2; 32]));
        add_default_route(&mut set, &NodePublic::from_bytes([2; 32]));
        add_default_route(&mut set, &NodePublic::from_bytes([9; 32]));
        let ips = |n: u8| {
            set.get(&PublicKey([n; 32]))
                .unwrap()
                .allowed_ips
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(ips(2), vec!["100.64.0.2/32", "0.0.0.0/0"]);
        assert_eq!(ips(1), vec!["100.64.0.1/32"]);
    }
}
