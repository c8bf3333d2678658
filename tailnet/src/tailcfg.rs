//! The subset of Tailscale's control messages (`tailcfg`) this crate speaks,
//! as serde types.
//!
//! Facts (tailscale.com `tailcfg/tailcfg.go`, `tailcfg/derpmap.go`,
//! `types/dnstype/dnstype.go`): JSON field names are the Go field names
//! (`NodeKey`, `DERPMap`, `AllowedIPs`, …) unless noted; Go writes a nil
//! slice or map as `null`, so every list and map here reads `null` as empty;
//! unknown fields are ignored (the server sends many more). Times are
//! RFC 3339 text and kept as text. Keys use their text forms
//! ([`crate::keys`]). Prefixes are `addr/len` text, endpoints `ip:port`
//! (`[ip]:port` for IPv6) and are kept as text in [`Node::endpoints`]
//! because Go may add an IPv6 zone that Rust's `SocketAddr` does not parse;
//! [`crate::netmap`] converts them and skips what does not parse.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

use crate::keys::{DiscoPublic, MachinePublic, NodePublic};

/// The capability version this client claims, which is also the ts2021
/// protocol version in the Noise prologue and initiation header.
///
/// 119 (Tailscale v1.84-era, 2025-07): within Headscale v0.29.2's supported
/// window (it refuses below 113, `hscontrol/capver`), and every capability
/// up to it is either implemented here or an optional node attribute a
/// client may ignore. Versions 120–121 claim peer-relay disco messages,
/// which this client does not speak. Raise it when those land.
pub const CAPABILITY_VERSION: u16 = 119;

/// The `Ts-Lb` header a client adds with its node key (a load-balancer hint
/// for Tailscale's service; Headscale ignores it).
pub const LB_HEADER: &str = "Ts-Lb";

fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

/// What a node says about itself (`tailcfg.Hostinfo`, subset).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Hostinfo {
    /// Client version text.
    #[serde(
        rename = "IPNVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub ipn_version: String,
    /// Operating system ("linux").
    #[serde(rename = "OS", default, skip_serializing_if = "String::is_empty")]
    pub os: String,
    /// Operating system version.
    #[serde(
        rename = "OSVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub os_version: String,
    /// The application ("meshbridge").
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub app: String,
    /// The host name; Headscale names the node after it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// Subnet routes this node offers (advertised routes, exit node
    /// `0.0.0.0/0` + `::/0`).
    #[serde(
        rename = "RoutableIPs",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub routable_ips: Vec<IpNet>,
    /// ACL tags this node asks for.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub request_tags: Vec<String>,
    /// Network facts (home DERP region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_info: Option<NetInfo>,
    /// Services the node offers (`tailcfg.Service`); a meshbridge box
    /// lists its DNS-SD proxy here ([`crate::netmap::DNS_SD_SERVICE`]).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub services: Vec<Service>,
}

/// A service a node offers (`tailcfg.Service`): `Proto` is usually "tcp" or
/// "udp", `Description` free text (Tailscale puts the process name there).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Service {
    /// "tcp", "udp", or a meta value like "peerapi4".
    #[serde(default)]
    pub proto: String,
    /// The port.
    #[serde(default)]
    pub port: u16,
    /// What it is.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// Network facts a node reports (`tailcfg.NetInfo`, subset).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetInfo {
    /// The DERP region this node prefers (its home), 0 for none.
    #[serde(rename = "PreferredDERP", default, skip_serializing_if = "is_zero_i32")]
    pub preferred_derp: i32,
}

/// The auth part of a registration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegisterAuth {
    /// A pre-auth key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth_key: String,
}

/// `POST /machine/register` body (`tailcfg.RegisterRequest`, subset).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegisterRequest {
    /// The capability version.
    pub version: u16,
    /// The node key to register.
    pub node_key: NodePublic,
    /// The previous node key, when rotating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_node_key: Option<NodePublic>,
    /// The pre-auth key, if any. Without it a known node key refreshes its
    /// registration and an unknown one gets an interactive login URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<RegisterAuth>,
    /// Requested key expiry (RFC 3339); a time in the past logs out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<String>,
    /// The login URL of a pending interactive login, to wait on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub followup: String,
    /// What we say about ourselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostinfo: Option<Hostinfo>,
    /// An ephemeral node is removed when it goes offline.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ephemeral: bool,
}

/// The `/machine/register` answer (`tailcfg.RegisterResponse`, subset).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegisterResponse {
    /// The node key has expired; a new one (or a login) is needed.
    #[serde(default)]
    pub node_key_expired: bool,
    /// The node is authorized.
    #[serde(default)]
    pub machine_authorized: bool,
    /// Set while an interactive login is pending: the URL to visit.
    #[serde(rename = "AuthURL", default)]
    pub auth_url: String,
    /// An error text from the server.
    #[serde(default)]
    pub error: String,
    /// The user the node belongs to.
    #[serde(default)]
    pub user: Option<User>,
    /// The login of that user.
    #[serde(default)]
    pub login: Option<Login>,
}

/// A user (`tailcfg.User`, subset).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct User {
    /// The user ID.
    #[serde(rename = "ID", default)]
    pub id: i64,
    /// The display name.
    #[serde(default)]
    pub display_name: String,
}

/// A login (`tailcfg.Login`, subset).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Login {
    /// The login name ("alice@example.com").
    #[serde(default)]
    pub login_name: String,
    /// The display name.
    #[serde(default)]
    pub display_name: String,
}

/// `POST /machine/map` body (`tailcfg.MapRequest`, subset).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MapRequest {
    /// The capability version.
    pub version: u16,
    /// `""` (no compression) or `"zstd"`. This client never asks for zstd.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub compress: String,
    /// Ask the server for keep-alive messages on a stream.
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_alive: bool,
    /// Our node key.
    pub node_key: NodePublic,
    /// Our disco key.
    pub disco_key: DiscoPublic,
    /// Keep the response open and stream updates.
    #[serde(default, skip_serializing_if = "is_false")]
    pub stream: bool,
    /// What we say about ourselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostinfo: Option<Hostinfo>,
    /// Our endpoints (`ip:port`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// The kind of each endpoint (1 local, 2 STUN, 3 port-mapped, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoint_types: Vec<i32>,
    /// Send no peers (endpoint/hostinfo update only, when not streaming).
    #[serde(default, skip_serializing_if = "is_false")]
    pub omit_peers: bool,
    /// Do not update the server's view of this node.
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
}

/// One message of the map stream (`tailcfg.MapResponse`, subset).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MapResponse {
    /// A keep-alive: nothing else is set.
    #[serde(default)]
    pub keep_alive: bool,
    /// The session handle (for resuming; unused yet).
    #[serde(default)]
    pub map_session_handle: String,
    /// The sequence number in the session.
    #[serde(default)]
    pub seq: i64,
    /// This node, when changed (always in the first message).
    #[serde(default)]
    pub node: Option<Node>,
    /// The DERP map, when changed. `Regions` absent: keep the old regions.
    #[serde(rename = "DERPMap", default)]
    pub derp_map: Option<DerpMap>,
    /// The full peer list; non-empty replaces all peers.
    #[serde(default, deserialize_with = "null_default")]
    pub peers: Vec<Node>,
    /// Peers added or replaced.
    #[serde(default, deserialize_with = "null_default")]
    pub peers_changed: Vec<Node>,
    /// IDs of peers gone.
    #[serde(default, deserialize_with = "null_default")]
    pub peers_removed: Vec<i64>,
    /// Field updates of known peers.
    #[serde(default, deserialize_with = "null_default")]
    pub peers_changed_patch: Vec<PeerChange>,
    /// Peer ID → seen recently (last-seen time is "now") or not.
    #[serde(default, deserialize_with = "null_default")]
    pub peer_seen_change: BTreeMap<i64, bool>,
    /// Peer ID → online.
    #[serde(default, deserialize_with = "null_default")]
    pub online_change: BTreeMap<i64, bool>,
    /// DNS settings, when changed.
    #[serde(rename = "DNSConfig", default)]
    pub dns_config: Option<DnsConfig>,
    /// The tailnet's name, when changed.
    #[serde(default)]
    pub domain: String,
    /// The packet filter, when changed. `null`/absent: unchanged; `[]`:
    /// allow nothing.
    #[serde(default)]
    pub packet_filter: Option<Vec<FilterRule>>,
    /// Named packet filter parts (incremental form); a `null` value deletes
    /// a part, key `*` with `null` clears all.
    #[serde(default)]
    pub packet_filters: Option<BTreeMap<String, Option<Vec<FilterRule>>>>,
    /// User profiles (added to those known).
    #[serde(default, deserialize_with = "null_default")]
    pub user_profiles: Vec<UserProfile>,
    /// Health warnings from the server, when changed.
    #[serde(default)]
    pub health: Option<Vec<String>>,
    /// A URL the server wants the user to open.
    #[serde(rename = "PopBrowserURL", default)]
    pub pop_browser_url: String,
    /// The server's clock (RFC 3339).
    #[serde(default)]
    pub control_time: Option<String>,
    /// A ping the server asks for (not answered yet; kept as JSON).
    #[serde(default)]
    pub ping_request: Option<serde_json::Value>,
}

/// A node in the tailnet (`tailcfg.Node`, subset).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    /// The control server's ID.
    #[serde(rename = "ID", default)]
    pub id: i64,
    /// The stable ID (text).
    #[serde(rename = "StableID", default)]
    pub stable_id: String,
    /// The MagicDNS name, with a trailing dot (`box.tailnet.test.`).
    #[serde(default)]
    pub name: String,
    /// The owning user's ID.
    #[serde(default)]
    pub user: i64,
    /// The node key (WireGuard public key).
    #[serde(default)]
    pub key: Option<NodePublic>,
    /// When the node key expires (RFC 3339); absent: never.
    #[serde(default)]
    pub key_expiry: Option<String>,
    /// The machine key.
    #[serde(default)]
    pub machine: Option<MachinePublic>,
    /// The disco key; absent for nodes without disco.
    #[serde(default)]
    pub disco_key: Option<DiscoPublic>,
    /// The node's own tailnet addresses (`100.x.y.z/32`, `fd7a:…/128`).
    #[serde(default, deserialize_with = "null_default")]
    pub addresses: Vec<IpNet>,
    /// What the node may send from / be routed to. `None` (null or absent)
    /// means the same as `addresses` (capability 112).
    #[serde(rename = "AllowedIPs", default)]
    pub allowed_ips: Option<Vec<IpNet>>,
    /// Where the node can be reached directly (`ip:port` text).
    #[serde(default, deserialize_with = "null_default")]
    pub endpoints: Vec<String>,
    /// The old form of the home DERP region: `127.3.3.40:<region>`.
    #[serde(rename = "DERP", default)]
    pub legacy_derp: String,
    /// The home DERP region, 0 for none.
    #[serde(rename = "HomeDERP", default)]
    pub home_derp: i32,
    /// What the node says about itself.
    #[serde(default)]
    pub hostinfo: Option<Hostinfo>,
    /// ACL tags.
    #[serde(default, deserialize_with = "null_default")]
    pub tags: Vec<String>,
    /// Subnet routes the server made primary for this node.
    #[serde(default, deserialize_with = "null_default")]
    pub primary_routes: Vec<IpNet>,
    /// Whether the node is connected to the server (unknown if absent).
    #[serde(default)]
    pub online: Option<bool>,
    /// Last seen (RFC 3339).
    #[serde(default)]
    pub last_seen: Option<String>,
    /// The node's capability version.
    #[serde(default)]
    pub cap: i32,
    /// The node is authorized.
    #[serde(default)]
    pub machine_authorized: bool,
    /// The node's key has expired: do not talk to it.
    #[serde(default)]
    pub expired: bool,
    /// A plain WireGuard peer without disco/DERP.
    #[serde(default)]
    pub is_wire_guard_only: bool,
}

/// A field update of one peer (`tailcfg.PeerChange`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PeerChange {
    /// The peer.
    #[serde(rename = "NodeID", default)]
    pub node_id: i64,
    /// New home DERP region (0: unchanged).
    #[serde(rename = "DERPRegion", default)]
    pub derp_region: i32,
    /// New capability version (0: unchanged).
    #[serde(default)]
    pub cap: i32,
    /// New endpoints (absent: unchanged).
    #[serde(default)]
    pub endpoints: Option<Vec<String>>,
    /// New node key.
    #[serde(default)]
    pub key: Option<NodePublic>,
    /// New disco key.
    #[serde(default)]
    pub disco_key: Option<DiscoPublic>,
    /// New online state.
    #[serde(default)]
    pub online: Option<bool>,
    /// New last-seen time.
    #[serde(default)]
    pub last_seen: Option<String>,
    /// New key expiry.
    #[serde(default)]
    pub key_expiry: Option<String>,
}

/// The DERP relay map (`tailcfg.DERPMap`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct DerpMap {
    /// Region ID → region; a `null` region is deleted. Absent: unchanged.
    #[serde(rename = "Regions", default)]
    pub regions: Option<BTreeMap<i32, Option<DerpRegion>>>,
    /// Do not add Tailscale's default regions.
    #[serde(rename = "omitDefaultRegions", default)]
    pub omit_default_regions: bool,
    /// Home-region scoring (kept as JSON).
    #[serde(rename = "HomeParams", default)]
    pub home_params: Option<serde_json::Value>,
}

/// A DERP region (`tailcfg.DERPRegion`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DerpRegion {
    /// The region ID.
    #[serde(rename = "RegionID", default)]
    pub region_id: i32,
    /// A short code ("fra").
    #[serde(default)]
    pub region_code: String,
    /// A long name.
    #[serde(default)]
    pub region_name: String,
    /// Latitude.
    #[serde(default)]
    pub latitude: f64,
    /// Longitude.
    #[serde(default)]
    pub longitude: f64,
    /// Do not pick this region as home.
    #[serde(default)]
    pub avoid: bool,
    /// Neither measure nor pick as home.
    #[serde(default)]
    pub no_measure_no_home: bool,
    /// The servers.
    #[serde(default, deserialize_with = "null_default")]
    pub nodes: Vec<DerpNode>,
}

/// A DERP server (`tailcfg.DERPNode`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DerpNode {
    /// The server's name.
    #[serde(default)]
    pub name: String,
    /// Its region.
    #[serde(rename = "RegionID", default)]
    pub region_id: i32,
    /// The TLS host name.
    #[serde(default)]
    pub host_name: String,
    /// The certificate name, if not the host name.
    #[serde(default)]
    pub cert_name: String,
    /// An IPv4 address to use instead of DNS ("none": no IPv4).
    #[serde(rename = "IPv4", default)]
    pub ipv4: String,
    /// An IPv6 address ("none": no IPv6).
    #[serde(rename = "IPv6", default)]
    pub ipv6: String,
    /// STUN port (0: 3478, -1: none).
    #[serde(rename = "STUNPort", default)]
    pub stun_port: i32,
    /// STUN only, no DERP.
    #[serde(rename = "STUNOnly", default)]
    pub stun_only: bool,
    /// DERP (HTTPS) port (0: 443).
    #[serde(rename = "DERPPort", default)]
    pub derp_port: i32,
    /// Skip certificate checks (test setups only).
    #[serde(default)]
    pub insecure_for_tests: bool,
    /// Use this IP for STUN probes.
    #[serde(rename = "STUNTestIP", default)]
    pub stun_test_ip: String,
    /// Also reachable on port 80.
    #[serde(default)]
    pub can_port80: bool,
}

/// A packet filter rule (`tailcfg.FilterRule`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FilterRule {
    /// Sources: IP, CIDR, range `a-b`, or `*`.
    #[serde(rename = "SrcIPs", default, deserialize_with = "null_default")]
    pub src_ips: Vec<String>,
    /// Deprecated prefix lengths for `src_ips`.
    #[serde(default, deserialize_with = "null_default")]
    pub src_bits: Vec<i32>,
    /// Destinations with port ranges.
    #[serde(default, deserialize_with = "null_default")]
    pub dst_ports: Vec<NetPortRange>,
    /// IP protocol numbers; empty means TCP, UDP, ICMP.
    #[serde(rename = "IPProto", default, deserialize_with = "null_default")]
    pub ip_proto: Vec<i32>,
}

/// A destination of a filter rule (`tailcfg.NetPortRange`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetPortRange {
    /// IP, CIDR, range or `*`.
    #[serde(rename = "IP", default)]
    pub ip: String,
    /// Deprecated prefix length.
    #[serde(default)]
    pub bits: Option<i32>,
    /// The ports.
    #[serde(default)]
    pub ports: PortRange,
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortRange {
    /// First port.
    #[serde(default)]
    pub first: u16,
    /// Last port.
    #[serde(default)]
    pub last: u16,
}

/// DNS settings (`tailcfg.DNSConfig`, subset).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DnsConfig {
    /// Upstream resolvers.
    #[serde(default, deserialize_with = "null_default")]
    pub resolvers: Vec<Resolver>,
    /// Split DNS: suffix → resolvers (empty: answered from `extra_records`).
    #[serde(default, deserialize_with = "null_default")]
    pub routes: BTreeMap<String, Option<Vec<Resolver>>>,
    /// Resolvers to use when no others are known.
    #[serde(default, deserialize_with = "null_default")]
    pub fallback_resolvers: Vec<Resolver>,
    /// Search domains.
    #[serde(default, deserialize_with = "null_default")]
    pub domains: Vec<String>,
    /// MagicDNS is on.
    #[serde(default)]
    pub proxied: bool,
    /// Old form of `resolvers`.
    #[serde(default, deserialize_with = "null_default")]
    pub nameservers: Vec<IpAddr>,
    /// Names the node may get certificates for.
    #[serde(default, deserialize_with = "null_default")]
    pub cert_domains: Vec<String>,
    /// Extra name → value records.
    #[serde(default, deserialize_with = "null_default")]
    pub extra_records: Vec<DnsRecord>,
}

/// A DNS resolver (`dnstype.Resolver`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Resolver {
    /// `ip`, `ip:port`, `https://…` or `tls://…`.
    #[serde(default)]
    pub addr: String,
    /// Addresses for the DoH/DoT host name.
    #[serde(default, deserialize_with = "null_default")]
    pub bootstrap_resolution: Vec<IpAddr>,
}

/// An extra DNS record (`tailcfg.DNSRecord`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DnsRecord {
    /// Fully qualified name.
    #[serde(default)]
    pub name: String,
    /// "" (A/AAAA by value) or "AAAA".
    #[serde(rename = "Type", default)]
    pub kind: String,
    /// The value (an IP address).
    #[serde(default)]
    pub value: String,
}

/// A user profile (`tailcfg.UserProfile`, subset).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UserProfile {
    /// The user ID.
    #[serde(rename = "ID", default)]
    pub id: i64,
    /// The login name.
    #[serde(default)]
    pub login_name: String,
    /// The display name.
    #[serde(default)]
    pub display_name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_use_go_field_names_and_omit_empties() {
        let req = MapRequest {
            version: CAPABILITY_VERSION,
            compress: String::new(),
            keep_alive: true,
            node_key: NodePublic::from_bytes([1; 32]),
            disco_key: DiscoPublic::from_bytes([2; 32]),
            stream: true,
            hostinfo: Some(Hostinfo {
                hostname: "box".into(),
                os: "linux".into(),
                ..Default::default()
            }),
            endpoints: vec![],
            endpoint_types: vec![],
            omit_peers: false,
            read_only: false,
        };
        let v: serde_json::Value = serde_json::to_value(&req).unwrap();
        assert_eq!(v["Version"], 119);
        assert_eq!(v["KeepAlive"], true);
        assert_eq!(v["Stream"], true);
        assert_eq!(v["NodeKey"], format!("nodekey:{}", "01".repeat(32)));
        assert_eq!(v["DiscoKey"], format!("discokey:{}", "02".repeat(32)));
        assert_eq!(v["Hostinfo"]["Hostname"], "box");
        assert_eq!(v["Hostinfo"]["OS"], "linux");
        let obj = v.as_object().unwrap();
        for absent in ["Compress", "Endpoints", "OmitPeers", "ReadOnly"] {
            assert!(!obj.contains_key(absent), "{absent} should be omitted");
        }

        let reg = RegisterRequest {
            version: CAPABILITY_VERSION,
            node_key: NodePublic::from_bytes([1; 32]),
            old_node_key: None,
            auth: Some(RegisterAuth {
                auth_key: "k".into(),
            }),
            expiry: None,
            followup: String::new(),
            hostinfo: None,
            ephemeral: false,
        };
        let v: serde_json::Value = serde_json::to_value(&reg).unwrap();
        assert_eq!(v["Auth"]["AuthKey"], "k");
        assert_eq!(v.as_object().unwrap().len(), 3, "{v}");
    }

    #[test]
    fn nulls_read_as_empty_and_unknown_fields_are_ignored() {
        let json = r#"{"Node":{"ID":1,"Key":null,"Addresses":null,"AllowedIPs":null,"Endpoints":null,
            "Tags":null,"CapMap":{"x":[]},"Hostinfo":{"RoutableIPs":null,"Services":[{"Proto":"tcp"}]}},
            "Peers":null,"PeersRemoved":null,"OnlineChange":null,"PacketFilter":null,"SomethingNew":{"a":1}}"#;
        let r: MapResponse = serde_json::from_str(json).unwrap();
        let node = r.node.unwrap();
        assert!(node.addresses.is_empty() && node.endpoints.is_empty() && node.key.is_none());
        let services = &node.hostinfo.as_ref().unwrap().services;
        assert_eq!(services.len(), 1);
        assert_eq!((services[0].proto.as_str(), services[0].port), ("tcp", 0));
        assert_eq!(node.allowed_ips, None);
        assert!(r.peers.is_empty() && r.peers_removed.is_empty());
        assert_eq!(r.packet_filter, None);
        let r: MapResponse = serde_json::from_str(r#"{"PacketFilter":[]}"#).unwrap();
        assert_eq!(r.packet_filter, Some(vec![]));
    }
}
