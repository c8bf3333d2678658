//! The network map: the state a map stream builds up, and the peer list
//! derived from it.
//!
//! Facts (tailscale.com `control/controlclient/map.go`,
//! `updateStateFromResponse` and `updatePeersStateFromResponse`):
//!
//! * The first message that is not a keep-alive must carry `Node` (self).
//! * A non-empty `Peers` replaces the whole peer set. Otherwise
//!   `PeersRemoved` deletes by ID, `PeersChanged` inserts or replaces whole
//!   nodes, `PeerSeenChange` / `OnlineChange` / `PeersChangedPatch` update
//!   fields of known peers (patches for unknown peers are ignored).
//! * `DERPMap` with `Regions` absent keeps the old regions; a `null` region
//!   is dropped. `PacketFilter` non-null replaces the "base" filter part;
//!   `PacketFilters` edits named parts (`"*": null` clears all); the rules
//!   in force are all parts concatenated in name order. `DNSConfig`,
//!   `Domain`, `Health` replace when present; `UserProfiles` accumulate.
//! * A peer's home DERP region is `HomeDERP`, or in the old form the port of
//!   `DERP: "127.3.3.40:<region>"`. `AllowedIPs` null means `Addresses`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::IpNet;

use crate::keys::{DiscoPublic, NodePublic};
use crate::tailcfg::{
    DerpMap, DerpRegion, DnsConfig, FilterRule, MapResponse, Node, Service, UserProfile,
};

/// The magic IP of the old DERP address form.
pub const LEGACY_DERP_MAGIC_IP: &str = "127.3.3.40";

/// A message could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetmapError {
    /// The first real message did not describe this node.
    #[error("first map message lacks the self node")]
    FirstLacksNode,
}

/// What a message changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A keep-alive: nothing.
    KeepAlive,
    /// The map changed (maybe only in parts the peer list does not show).
    Updated,
}

/// Counters of odd but harmless input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetmapStats {
    /// Messages applied, keep-alives included.
    pub messages: u64,
    /// Keep-alives.
    pub keep_alives: u64,
    /// Field patches for peers not in the map (ignored).
    pub patches_for_unknown_peers: u64,
}

/// The state built from a map stream.
#[derive(Debug, Clone, Default)]
pub struct Netmap {
    self_node: Option<Node>,
    peers: BTreeMap<i64, Node>,
    derp_regions: BTreeMap<i32, DerpRegion>,
    derp_omit_default_regions: bool,
    derp_home_params: Option<serde_json::Value>,
    derp_seen: bool,
    named_filters: BTreeMap<String, Vec<FilterRule>>,
    packet_filter: Option<Vec<FilterRule>>,
    dns_config: Option<DnsConfig>,
    domain: String,
    health: Vec<String>,
    user_profiles: BTreeMap<i64, UserProfile>,
    stats: NetmapStats,
}

impl Netmap {
    /// An empty map, before the first message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one message of the stream.
    pub fn apply(&mut self, resp: MapResponse) -> Result<Applied, NetmapError> {
        self.stats.messages += 1;
        if resp.keep_alive {
            self.stats.keep_alives += 1;
            return Ok(Applied::KeepAlive);
        }
        if self.self_node.is_none() && resp.node.is_none() {
            return Err(NetmapError::FirstLacksNode);
        }
        self.apply_peers(&resp);
        if let Some(node) = resp.node {
            self.self_node = Some(node);
        }
        for up in resp.user_profiles {
            self.user_profiles.insert(up.id, up);
        }
        if let Some(dm) = resp.derp_map {
            self.apply_derp(dm);
        }
        let mut filter_changed = false;
        if let Some(pf) = resp.packet_filter {
            self.named_filters.insert("base".to_string(), pf);
            filter_changed = true;
        }
        if let Some(parts) = resp.packet_filters {
            if matches!(parts.get("*"), Some(None)) {
                self.named_filters.clear();
            }
            for (name, part) in parts {
                if name == "*" {
                    continue;
                }
                match part {
                    Some(rules) => {
                        self.named_filters.insert(name, rules);
                    }
                    None => {
                        self.named_filters.remove(&name);
                    }
                }
            }
            filter_changed = true;
        }
        if filter_changed {
            self.packet_filter = Some(self.named_filters.values().flatten().cloned().collect());
        }
        if let Some(dns) = resp.dns_config {
            self.dns_config = Some(dns);
        }
        if !resp.domain.is_empty() {
            self.domain = resp.domain;
        }
        if let Some(h) = resp.health {
            self.health = h;
        }
        Ok(Applied::Updated)
    }

    fn apply_peers(&mut self, resp: &MapResponse) {
        if !resp.peers.is_empty() {
            self.peers = resp.peers.iter().map(|n| (n.id, n.clone())).collect();
            return;
        }
        for id in &resp.peers_removed {
            self.peers.remove(id);
        }
        for n in &resp.peers_changed {
            self.peers.insert(n.id, n.clone());
        }
        for (id, seen) in &resp.peer_seen_change {
            if let Some(p) = self.peers.get_mut(id) {
                // Go stores "now"; the core keeps no clock, so it records
                // that the server saw it, or clears the time.
                p.last_seen = if *seen {
                    Some(String::from("now"))
                } else {
                    None
                };
            }
        }
        for (id, online) in &resp.online_change {
            if let Some(p) = self.peers.get_mut(id) {
                p.online = Some(*online);
            }
        }
        for pc in &resp.peers_changed_patch {
            let Some(p) = self.peers.get_mut(&pc.node_id) else {
                self.stats.patches_for_unknown_peers += 1;
                continue;
            };
            if pc.derp_region != 0 {
                p.home_derp = pc.derp_region;
            }
            if pc.cap != 0 {
                p.cap = pc.cap;
            }
            if let Some(eps) = &pc.endpoints {
                p.endpoints = eps.clone();
            }
            if let Some(k) = pc.key {
                p.key = Some(k);
            }
            if let Some(k) = pc.disco_key {
                p.disco_key = Some(k);
            }
            if let Some(o) = pc.online {
                p.online = Some(o);
            }
            if let Some(t) = &pc.last_seen {
                p.last_seen = Some(t.clone());
            }
            if let Some(t) = &pc.key_expiry {
                p.key_expiry = Some(t.clone());
            }
        }
    }

    fn apply_derp(&mut self, dm: DerpMap) {
        self.derp_seen = true;
        if let Some(regions) = dm.regions {
            self.derp_regions = regions
                .into_iter()
                .filter_map(|(id, r)| r.map(|r| (id, r)))
                .collect();
            self.derp_omit_default_regions = dm.omit_default_regions;
        }
        if dm.home_params.is_some() {
            self.derp_home_params = dm.home_params;
        }
    }

    /// This node as the server sees it (after the first message).
    pub fn self_node(&self) -> Option<&Node> {
        self.self_node.as_ref()
    }

    /// The peers by ID, as the server sent them.
    pub fn peer_nodes(&self) -> impl Iterator<Item = &Node> {
        self.peers.values()
    }

    /// The DERP regions by ID (None before any DERP map arrived).
    pub fn derp_regions(&self) -> Option<&BTreeMap<i32, DerpRegion>> {
        self.derp_seen.then_some(&self.derp_regions)
    }

    /// The packet filter rules in force (None: none received yet).
    pub fn packet_filter(&self) -> Option<&[FilterRule]> {
        self.packet_filter.as_deref()
    }

    /// The DNS settings.
    pub fn dns_config(&self) -> Option<&DnsConfig> {
        self.dns_config.as_ref()
    }

    /// The tailnet's name.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The server's health warnings.
    pub fn health(&self) -> &[String] {
        &self.health
    }

    /// Known user profiles by ID.
    pub fn user_profiles(&self) -> &BTreeMap<i64, UserProfile> {
        &self.user_profiles
    }

    /// Counters.
    pub fn stats(&self) -> NetmapStats {
        self.stats
    }

    /// The peers to configure, see [`peers`].
    pub fn peers(&self) -> Vec<TailnetPeer> {
        peers(self)
    }
}

/// A peer as the data plane needs it: the input for one entry of the
/// mesh's peer set (keyed by `node_key`, the WireGuard public key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailnetPeer {
    /// The control server's ID of the node.
    pub id: i64,
    /// The MagicDNS name without the trailing dot (`laptop.tailnet.test`).
    pub name: String,
    /// The WireGuard public key.
    pub node_key: NodePublic,
    /// The disco key, if the node speaks disco.
    pub disco_key: Option<DiscoPublic>,
    /// The node's own tailnet addresses.
    pub addresses: Vec<IpNet>,
    /// What to route to this peer and accept from it (its addresses and
    /// the subnet routes the server made primary for it).
    pub allowed_ips: Vec<IpNet>,
    /// Direct endpoints to try.
    pub endpoints: Vec<SocketAddr>,
    /// The home DERP region, if any.
    pub derp_region: Option<u32>,
    /// Whether the node is connected to the server (None: not said).
    pub online: Option<bool>,
}

/// The peer list of a netmap, by ID order. Leaves out peers without a node
/// key, with an expired key, and repeats of a node key already listed.
pub fn peers(netmap: &Netmap) -> Vec<TailnetPeer> {
    let mut seen = std::collections::BTreeSet::new();
    netmap
        .peers
        .values()
        .filter_map(peer_from_node)
        .filter(|p| seen.insert(p.node_key))
        .collect()
}

/// One node as a peer; None if it has no usable key or has expired.
pub fn peer_from_node(node: &Node) -> Option<TailnetPeer> {
    let key = node.key.filter(|k| !k.is_zero())?;
    if node.expired {
        return None;
    }
    Some(TailnetPeer {
        id: node.id,
        name: node.name.trim_end_matches('.').to_string(),
        node_key: key,
        disco_key: node.disco_key.filter(|k| !k.is_zero()),
        addresses: node.addresses.clone(),
        allowed_ips: node
            .allowed_ips
            .clone()
            .unwrap_or_else(|| node.addresses.clone()),
        endpoints: node
            .endpoints
            .iter()
            .filter_map(|e| e.parse().ok())
            .collect(),
        derp_region: derp_region(node),
        online: node.online,
    })
}

/// A node's home DERP region.
pub fn derp_region(node: &Node) -> Option<u32> {
    if node.home_derp > 0 {
        return u32::try_from(node.home_derp).ok();
    }
    let (ip, port) = node.legacy_derp.rsplit_once(':')?;
    if ip != LEGACY_DERP_MAGIC_IP {
        return None;
    }
    port.parse::<u32>().ok().filter(|r| *r > 0)
}

/// The `Hostinfo.App` of a meshbridge box (and of its device nodes).
pub const APP: &str = "meshbridge";

/// The start of the `Description` of the `Hostinfo.Services` entry with
/// which a meshbridge box says that its DNS server answers DNS-SD (RFC 8766
/// discovery proxy) on its tailnet address: `"meshbridge-dns-sd <domain>"`.
/// Device nodes (also `App = "meshbridge"`) do not list it.
pub const DNS_SD_SERVICE: &str = "meshbridge-dns-sd";

/// The longest browse domain taken from a peer.
const MAX_DOMAIN: usize = 200;

/// The `Hostinfo.Services` entry a box with a DNS-SD proxy for `domain`
/// (its `dhcp.domain`) advertises: UDP port 53.
pub fn dns_sd_service(domain: &str) -> Service {
    Service {
        proto: "udp".to_string(),
        port: 53,
        description: format!("{DNS_SD_SERVICE} {}", domain.trim_end_matches('.')),
    }
}

/// A tailnet peer that is a meshbridge box with a DNS-SD proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSdBox {
    /// Its MagicDNS name without the trailing dot.
    pub name: String,
    /// Its WireGuard key.
    pub node_key: NodePublic,
    /// Its DNS server: its tailnet IPv4 address and the advertised port.
    pub server: SocketAddr,
    /// The domain its proxy answers DNS-SD under (lowercase, no trailing dot).
    pub domain: String,
}

/// The DNS-SD proxy a node advertises, as (port, domain): `Hostinfo.App`
/// must be [`APP`] and a UDP service's description `"meshbridge-dns-sd
/// <domain>"` with a domain of plain labels (letters, digits, '-').
/// Anything else (another app, a bad domain, port 0): `None`.
pub fn dns_sd_of(node: &Node) -> Option<(u16, String)> {
    let hi = node.hostinfo.as_ref().filter(|h| h.app == APP)?;
    hi.services.iter().find_map(|s| {
        let domain = s
            .description
            .strip_prefix(DNS_SD_SERVICE)?
            .strip_prefix(' ')?
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        };
        (s.proto == "udp"
            && s.port != 0
            && domain.len() <= MAX_DOMAIN
            && domain.split('.').all(label_ok))
        .then_some((s.port, domain))
    })
}

/// The peers that are meshbridge boxes with a DNS-SD proxy (see
/// [`dns_sd_of`]) and an IPv4 tailnet address, by name. Expired peers and
/// those without a key are left out, as in [`peers`].
pub fn dns_sd_boxes(netmap: &Netmap) -> Vec<DnsSdBox> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out: Vec<DnsSdBox> = netmap
        .peers
        .values()
        .filter_map(|node| {
            let peer = peer_from_node(node)?;
            let (port, domain) = dns_sd_of(node)?;
            let v4: Ipv4Addr = peer.addresses.iter().find_map(|a| match a.addr() {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            })?;
            seen.insert(peer.node_key).then(|| DnsSdBox {
                name: peer.name,
                node_key: peer.node_key,
                server: SocketAddr::from((v4, port)),
                domain,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapstream::decode_message;

    fn k(prefix: &str, b: u8) -> String {
        format!("{prefix}{}", hex::encode([b; 32]))
    }

    /// A first message shaped like Headscale's (field names and nesting as
    /// `hscontrol/types/node.go` `TailNode` and `mapper` emit them).
    fn first_message() -> String {
        format!(
            r#"{{
  "Node": {{"ID": 1, "StableID": "1", "Name": "box.tailnet.test.", "User": 1,
            "Key": "{self_key}", "KeyExpiry": "0001-01-01T00:00:00Z",
            "Machine": "{mkey}", "DiscoKey": "{self_disco}",
            "Addresses": ["100.64.0.1/32", "fd7a:115c:a1e0::1/128"],
            "AllowedIPs": ["100.64.0.1/32", "fd7a:115c:a1e0::1/128"],
            "Endpoints": null, "HomeDERP": 0, "Hostinfo": {{"Hostname": "box", "OS": "linux"}},
            "Created": "2026-12-01T04:00:00Z", "Cap": 119, "CapMap": {{"admin": [], "default-auto-update": [false]}},
            "MachineAuthorized": true, "Online": true}},
  "DERPMap": {{"Regions": {{"900": {{"RegionID": 900, "RegionCode": "tb", "RegionName": "testbed",
      "Nodes": [{{"Name": "900a", "RegionID": 900, "HostName": "10.99.0.1", "IPv4": "10.99.0.1",
                 "IPv6": "none", "STUNPort": 3478, "DERPPort": 8443, "InsecureForTests": true}}]}}}},
      "omitDefaultRegions": true}},
  "Peers": [
    {{"ID": 2, "StableID": "2", "Name": "laptop.tailnet.test.", "User": 1, "Key": "{peer_key}",
      "DiscoKey": "{peer_disco}", "Addresses": ["100.64.0.2/32", "fd7a:115c:a1e0::2/128"],
      "AllowedIPs": ["10.77.1.0/24", "100.64.0.2/32", "fd7a:115c:a1e0::2/128"],
      "PrimaryRoutes": ["10.77.1.0/24"],
      "Endpoints": ["10.99.0.20:41641", "[fd00::20]:41641", "[fe80::1%eth0]:41641"],
      "HomeDERP": 900, "Online": true, "MachineAuthorized": true, "Tags": null}},
    {{"ID": 3, "Name": "old.tailnet.test.", "Key": "{old_key}", "Addresses": ["100.64.0.3/32"],
      "AllowedIPs": null, "DERP": "127.3.3.40:900", "Online": false}},
    {{"ID": 4, "Name": "gone.tailnet.test.", "Key": "{gone_key}", "Addresses": ["100.64.0.4/32"], "Expired": true}}
  ],
  "DNSConfig": {{"Resolvers": [{{"Addr": "1.1.1.1"}}], "Routes": {{"tailnet.test": null}},
                "Domains": ["tailnet.test"], "Proxied": true,
                "ExtraRecords": [{{"Name": "printer.tailnet.test", "Value": "100.64.0.1"}}]}},
  "Domain": "tailnet.test",
  "PacketFilter": [{{"SrcIPs": ["100.64.0.2/32"], "DstPorts": [{{"IP": "*", "Ports": {{"First": 0, "Last": 65535}}}}]}}],
  "UserProfiles": [{{"ID": 1, "LoginName": "alice", "DisplayName": "alice"}}],
  "ControlTime": "2026-12-01T04:00:01Z"
}}"#,
            self_key = k("nodekey:", 1),
            mkey = k("mkey:", 9),
            self_disco = k("discokey:", 11),
            peer_key = k("nodekey:", 2),
            peer_disco = k("discokey:", 12),
            old_key = k("nodekey:", 3),
            gone_key = k("nodekey:", 4),
        )
    }

    fn netmap() -> Netmap {
        let mut nm = Netmap::new();
        assert_eq!(
            nm.apply(decode_message(first_message().as_bytes()).unwrap()),
            Ok(Applied::Updated)
        );
        nm
    }

    #[test]
    fn first_message_builds_the_map() {
        let nm = netmap();
        let me = nm.self_node().unwrap();
        assert_eq!(me.name, "box.tailnet.test.");
        assert_eq!(me.addresses[0].to_string(), "100.64.0.1/32");
        let regions = nm.derp_regions().unwrap();
        let node = &regions[&900].nodes[0];
        assert_eq!(
            (node.derp_port, node.stun_port, node.insecure_for_tests),
            (8443, 3478, true)
        );
        assert_eq!(
            nm.packet_filter().unwrap()[0].src_ips,
            vec!["100.64.0.2/32"]
        );
        assert!(nm.dns_config().unwrap().proxied);
        assert_eq!(
            nm.dns_config().unwrap().extra_records[0].value,
            "100.64.0.1"
        );
        assert_eq!(nm.domain(), "tailnet.test");
        assert_eq!(nm.user_profiles()[&1].login_name, "alice");

        let peers = nm.peers();
        assert_eq!(peers.len(), 2, "expired peer left out: {peers:?}");
        let laptop = &peers[0];
        assert_eq!(laptop.name, "laptop.tailnet.test");
        assert_eq!(laptop.node_key, NodePublic::from_bytes([2; 32]));
        assert_eq!(laptop.disco_key, Some(DiscoPublic::from_bytes([12; 32])));
        assert_eq!(laptop.allowed_ips.len(), 3);
        assert_eq!(laptop.allowed_ips[0].to_string(), "10.77.1.0/24");
        assert_eq!(
            laptop.endpoints,
            vec![
                "10.99.0.20:41641".parse::<SocketAddr>().unwrap(),
                "[fd00::20]:41641".parse().unwrap()
            ],
            "the zoned endpoint is skipped"
        );
        assert_eq!(laptop.derp_region, Some(900));
        assert_eq!(laptop.online, Some(true));
        let old = &peers[1];
        assert_eq!(old.derp_region, Some(900), "legacy DERP form");
        assert_eq!(
            old.allowed_ips, old.addresses,
            "null AllowedIPs means Addresses"
        );
        assert_eq!(old.disco_key, None);
    }

    #[test]
    fn first_message_must_carry_self() {
        let mut nm = Netmap::new();
        assert_eq!(
            nm.apply(decode_message(br#"{"KeepAlive":true}"#).unwrap()),
            Ok(Applied::KeepAlive)
        );
        assert_eq!(
            nm.apply(decode_message(br#"{"Domain":"x"}"#).unwrap()),
            Err(NetmapError::FirstLacksNode)
        );
        assert_eq!(nm.stats().keep_alives, 1);
    }

    #[test]
    fn deltas_change_remove_and_patch() {
        let mut nm = netmap();
        let msg = format!(
            r#"{{"PeersRemoved": [3, 99],
                "PeersChanged": [{{"ID": 5, "Name": "tv.tailnet.test.", "Key": "{}", "Addresses": ["100.64.0.5/32"]}}],
                "PeersChangedPatch": [{{"NodeID": 2, "DERPRegion": 901, "Endpoints": ["192.0.2.1:1234"], "Online": false}},
                                      {{"NodeID": 77, "DERPRegion": 1}}],
                "OnlineChange": {{"5": true}}}}"#,
            k("nodekey:", 5)
        );
        nm.apply(decode_message(msg.as_bytes()).unwrap()).unwrap();
        let peers = nm.peers();
        let ids: Vec<i64> = peers.iter().map(|p| p.id).collect();
        assert_eq!(ids, vec![2, 5]);
        assert_eq!(peers[0].derp_region, Some(901));
        assert_eq!(
            peers[0].endpoints,
            vec!["192.0.2.1:1234".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(peers[0].online, Some(false));
        assert_eq!(
            peers[0].disco_key,
            Some(DiscoPublic::from_bytes([12; 32])),
            "unpatched fields stay"
        );
        assert_eq!(peers[1].online, Some(true));
        assert_eq!(nm.stats().patches_for_unknown_peers, 1);
        // unchanged parts stay
        assert!(nm.derp_regions().unwrap().contains_key(&900));
        assert_eq!(nm.packet_filter().unwrap().len(), 1);
        assert_eq!(nm.self_node().unwrap().id, 1);
    }

    #[test]
    fn full_peers_replace_and_derp_filter_updates() {
        let mut nm = netmap();
        let msg = format!(
            r#"{{"Peers": [{{"ID": 9, "Key": "{}", "Addresses": ["100.64.0.9/32"]}}],
                "DERPMap": {{"HomeParams": {{"RegionScore": {{"900": 1.5}}}}}},
                "PacketFilter": []}}"#,
            k("nodekey:", 9)
        );
        nm.apply(decode_message(msg.as_bytes()).unwrap()).unwrap();
        assert_eq!(nm.peers().iter().map(|p| p.id).collect::<Vec<_>>(), vec![9]);
        assert!(
            nm.derp_regions().unwrap().contains_key(&900),
            "regions absent: kept"
        );
        assert_eq!(
            nm.packet_filter(),
            Some(&[][..]),
            "empty filter: allow nothing"
        );
        let msg = r#"{"DERPMap": {"Regions": {"900": null, "901": {"RegionID": 901, "Nodes": null}}},
                      "PacketFilters": {"*": null, "extra": [{"SrcIPs": ["*"]}]}}"#;
        nm.apply(decode_message(msg.as_bytes()).unwrap()).unwrap();
        assert_eq!(
            nm.derp_regions()
                .unwrap()
                .keys()
                .copied()
                .collect::<Vec<_>>(),
            vec![901]
        );
        assert_eq!(nm.packet_filter().unwrap()[0].src_ips, vec!["*"]);
        let msg =
            r#"{"PacketFilter": [{"SrcIPs": ["100.64.0.2"]}], "PacketFilters": {"extra": null}}"#;
        nm.apply(decode_message(msg.as_bytes()).unwrap()).unwrap();
        assert_eq!(nm.packet_filter().unwrap().len(), 1);
        assert_eq!(nm.packet_filter().unwrap()[0].src_ips, vec!["100.64.0.2"]);
    }

    #[test]
    fn duplicate_node_keys_are_listed_once() {
        let mut nm = netmap();
        let msg = format!(
            r#"{{"PeersChanged": [{{"ID": 10, "Key": "{k}"}}, {{"ID": 11, "Key": "{k}"}}, {{"ID": 12, "Key": "nodekey:{z}"}}]}}"#,
            k = k("nodekey:", 2),
            z = "00".repeat(32)
        );
        nm.apply(decode_message(msg.as_bytes()).unwrap()).unwrap();
        let ids: Vec<i64> = nm.peers().iter().map(|p| p.id).collect();
        assert_eq!(
            ids,
            vec![2, 3],
            "repeats of key 2 and the zero key are left out"
        );
    }

    #[test]
    fn legacy_derp_forms() {
        let mut n = Node {
            legacy_derp: "127.3.3.40:7".into(),
            ..Default::default()
        };
        assert_eq!(derp_region(&n), Some(7));
        n.legacy_derp = "1.2.3.4:7".into();
        assert_eq!(derp_region(&n), None);
        n.legacy_derp = "127.3.3.40:x".into();
        assert_eq!(derp_region(&n), None);
        n.home_derp = 3;
        assert_eq!(derp_region(&n), Some(3));
    }

    #[test]
    fn a_box_is_a_peer_advertising_its_dns_sd_proxy_device_nodes_and_others_are_not() {
        let node = |id: i64, hostinfo: &str| -> Node {
            serde_json::from_str(&format!(
                r#"{{"ID": {id}, "Name": "n{id}.tailnet.test.", "Key": "{key}",
                   "Addresses": ["fd7a:115c:a1e0::{id}/128", "100.64.0.{id}/32"], "Hostinfo": {hostinfo}}}"#,
                key = k("nodekey:", id as u8)
            ))
            .unwrap()
        };
        let svc = serde_json::to_string(&dns_sd_service("Site-A.arpa.")).unwrap();
        assert!(
            svc.contains(r#""Description":"meshbridge-dns-sd Site-A.arpa""#),
            "{svc}"
        );
        let boxa = node(
            2,
            &format!(
                r#"{{"App": "meshbridge", "Services": [{{"Proto": "tcp", "Port": 80}}, {svc}]}}"#
            ),
        );
        assert_eq!(dns_sd_of(&boxa), Some((53, "site-a.arpa".to_string())));
        // A device node: meshbridge, but no DNS-SD service.
        let device = node(3, r#"{"App": "meshbridge", "Services": null}"#);
        // Another app listing the same service; a bad domain; TCP; port 0.
        let other = node(
            4,
            &format!(r#"{{"App": "tailscale", "Services": [{svc}]}}"#),
        );
        let bad = |desc: &str, proto: &str, port: u16| {
            node(
                5,
                &format!(
                    r#"{{"App": "meshbridge", "Services": [{{"Proto": "{proto}", "Port": {port}, "Description": "{desc}"}}]}}"#
                ),
            )
        };
        for n in [
            &device,
            &other,
            &bad("meshbridge-dns-sd evil domain", "udp", 53),
            &bad("meshbridge-dns-sd a..b", "udp", 53),
            &bad("meshbridge-dns-sdx.arpa", "udp", 53),
            &bad("meshbridge-dns-sd x.arpa", "tcp", 53),
            &bad("meshbridge-dns-sd x.arpa", "udp", 0),
            &bad(
                &format!("meshbridge-dns-sd {}", "a.".repeat(120)),
                "udp",
                53,
            ),
        ] {
            assert_eq!(dns_sd_of(n), None, "{:?}", n.hostinfo);
        }
        let mut nm = Netmap::new();
        let msg = format!(
            r#"{{"Node": {{"ID": 1, "Name": "self.tailnet.test.", "Key": "{}", "Addresses": ["100.64.0.1/32"]}},
               "Peers": [{}, {}, {}]}}"#,
            k("nodekey:", 1),
            serde_json::to_string(&serde_json::json!({"ID": 2, "Name": "n2.tailnet.test.", "Key": k("nodekey:", 2),
                "Addresses": ["fd7a:115c:a1e0::2/128", "100.64.0.2/32"],
                "Hostinfo": {"App": "meshbridge", "Services": [serde_json::to_value(dns_sd_service("mesh.home.arpa")).unwrap()]}})).unwrap(),
            serde_json::to_string(&serde_json::json!({"ID": 3, "Name": "n3.tailnet.test.", "Key": k("nodekey:", 3),
                "Addresses": ["100.64.0.3/32"], "Hostinfo": {"App": "meshbridge"}})).unwrap(),
            serde_json::to_string(&serde_json::json!({"ID": 6, "Name": "old.tailnet.test.", "Key": k("nodekey:", 6),
                "Addresses": ["100.64.0.6/32"], "Expired": true,
                "Hostinfo": {"App": "meshbridge", "Services": [serde_json::to_value(dns_sd_service("x.arpa")).unwrap()]}})).unwrap(),
        );
        let m: MapResponse = serde_json::from_str(&msg).unwrap();
        nm.apply(m).unwrap();
        assert_eq!(
            dns_sd_boxes(&nm),
            vec![DnsSdBox {
                name: "n2.tailnet.test".to_string(),
                node_key: NodePublic::from_bytes([2; 32]),
                server: "100.64.0.2:53".parse().unwrap(),
                domain: "mesh.home.arpa".to_string(),
            }]
        );
    }
}
