//! The forwarding decision: one pure function from (where a packet came
//! from, its addresses) to where it goes. No I/O, no state of its own: the
//! tables it consults come in through [`Topology`]; the address ranges it
//! treats as "not the internet" are [`crate::rules`].

use crate::rules::{is_special, is_special6};
use meshbridge_mesh::PeerId;
use std::net::{Ipv4Addr, Ipv6Addr};

pub use meshbridge_types::Mac;

/// Where a packet came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A frame from a bridged device with this source MAC.
    Bridge(Mac),
    /// A decrypted packet from a peer (cryptokey routing already checked its source).
    Mesh(PeerId),
    /// A packet from the box's own kernel (the TUN device).
    Host,
}

/// Where a packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// Encrypt to this peer.
    ToMesh(PeerId),
    /// Write to the bridge, to this device.
    ToBridge(Mac),
    /// Hand to the box's kernel.
    ToHost,
    /// Drop, and count why.
    Drop(Reason),
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A bridged device sent from an address not leased to its MAC.
    Spoofed,
    /// Multicast or broadcast: never forwarded raw.
    Multicast,
    /// No route for the destination.
    NoRoute,
    /// A bridge address with no active lease.
    NoNeighbour,
    /// The packet would go back to the peer it came from.
    Loop,
    /// A destination the policy does not allow from this source (the LAN
    /// from a bridged device, private ranges through the exit node).
    NotAllowed,
    /// Internet traffic of bridged devices goes to an exit node that has no
    /// recent handshake: dropped, never sent out of the box's own uplink.
    ExitDown,
}

/// The tables the decision reads. The engine implements it over its DHCP
/// leases and mesh routes; tests implement it with fixed tables.
pub trait Topology {
    /// The address leased to `mac`, if its lease is active.
    fn leased_ip(&self, mac: &Mac) -> Option<Ipv4Addr>;
    /// The device holding an active lease for `ip`.
    fn leased_mac(&self, ip: Ipv4Addr) -> Option<Mac>;
    /// The peer `ip` is routed to.
    fn mesh_route(&self, ip: Ipv4Addr) -> Option<PeerId>;
    /// Whether `ip` is one of the box's own addresses.
    fn is_host(&self, ip: Ipv4Addr) -> bool;
    /// Whether `ip` is inside the bridge subnet.
    fn on_bridge(&self, ip: Ipv4Addr) -> bool;
    /// The bridge subnet's broadcast address.
    fn bridge_broadcast(&self) -> Ipv4Addr;
    /// The routing policy (subnet router, exit node).
    fn policy(&self) -> &Policy;
    /// Whether the exit node `peer` had a handshake recently enough to use.
    fn exit_up(&self, peer: PeerId) -> bool;
    /// Whether the box routes `ip` for devices that are tailnet nodes of
    /// their own (their node's network, off the bridge).
    fn node_routes(&self, _ip: Ipv4Addr) -> bool {
        false
    }
    /// The peer owning a specific IPv6 network holding `ip`.
    fn mesh_route6(&self, _ip: Ipv6Addr) -> Option<PeerId> {
        None
    }
}

/// What the box routes besides the mesh and the bridge: `[routing]` in the config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Home-LAN prefixes served to the mesh (subnet router).
    pub advertised: Vec<ipnet::Ipv4Net>,
    /// Serve the internet to peers (exit node).
    pub exit_node: bool,
    /// Exit traffic may reach private ranges too.
    pub exit_allow_lan: bool,
    /// Bridged devices' internet goes to this peer (and nowhere else).
    pub use_exit: Option<PeerId>,
    /// Without `use_exit`, bridged devices reach the internet through the box's uplink.
    pub bridge_internet: bool,
    /// Bridged devices may reach the advertised LAN prefixes.
    pub bridge_allow_lan: bool,
    /// The exit node also serves IPv6 (`::/0`): the uplink has IPv6.
    pub exit_v6: bool,
    /// Bridged devices kept off the mesh (a device's "not in the tailnet"
    /// switch): nothing of theirs goes to a peer, nothing from a peer
    /// reaches them.
    pub off_mesh: Vec<Mac>,
}

impl Policy {
    fn advertises(&self, ip: Ipv4Addr) -> bool {
        self.advertised.iter().any(|n| n.contains(&ip))
    }
}

/// Decide where an IPv6 packet goes. IPv6 is not forwarded on the bridge
/// yet; it crosses the box only between the mesh and the exit node's uplink.
pub fn decide6(topo: &impl Topology, source: Source, dst: Ipv6Addr) -> Forward {
    if dst.is_multicast() {
        return Forward::Drop(Reason::Multicast);
    }
    match (source, topo.mesh_route6(dst)) {
        (Source::Bridge(_), _) => Forward::Drop(Reason::NoRoute),
        (Source::Mesh(from), Some(to)) if from == to => Forward::Drop(Reason::Loop),
        (_, Some(to)) => Forward::ToMesh(to),
        (Source::Host, None) => Forward::Drop(Reason::NoRoute),
        (Source::Mesh(_), None) => {
            let p = topo.policy();
            if !(p.exit_node && p.exit_v6) {
                Forward::Drop(Reason::NoRoute)
            } else if p.exit_allow_lan || !is_special6(dst) {
                Forward::ToHost
            } else {
                Forward::Drop(Reason::NotAllowed)
            }
        }
    }
}

/// Decide where a packet from `source` with these addresses goes.
pub fn decide(topo: &impl Topology, source: Source, src: Ipv4Addr, dst: Ipv4Addr) -> Forward {
    let d = decide_route(topo, source, src, dst);
    let off = &topo.policy().off_mesh;
    match (source, d) {
        (Source::Bridge(mac), Forward::ToMesh(_)) | (Source::Mesh(_), Forward::ToBridge(mac))
            if off.contains(&mac) =>
        {
            Forward::Drop(Reason::NotAllowed)
        }
        _ => d,
    }
}

fn decide_route(topo: &impl Topology, source: Source, src: Ipv4Addr, dst: Ipv4Addr) -> Forward {
    if dst.is_multicast() || dst.is_broadcast() || dst == topo.bridge_broadcast() {
        return Forward::Drop(Reason::Multicast);
    }
    if let Source::Bridge(mac) = source {
        // Anti-spoofing: a device may only send from the address leased to it.
        if topo.leased_ip(&mac) != Some(src) {
            return Forward::Drop(Reason::Spoofed);
        }
    }
    if topo.is_host(dst) {
        return Forward::ToHost;
    }
    if topo.on_bridge(dst) {
        return match topo.leased_mac(dst) {
            Some(mac) => Forward::ToBridge(mac),
            None => Forward::Drop(Reason::NoNeighbour),
        };
    }
    match (topo.mesh_route(dst), source) {
        (Some(to), Source::Mesh(from)) if to == from => return Forward::Drop(Reason::Loop),
        (Some(to), _) => return Forward::ToMesh(to),
        (None, _) => {}
    }
    // Beyond the mesh and the bridge: the routing policy.
    let policy = topo.policy();
    match source {
        Source::Mesh(_) => {
            if policy.advertises(dst) {
                // Subnet router: the kernel forwards it to the home LAN.
                Forward::ToHost
            } else if policy.exit_node && (policy.exit_allow_lan || !is_special(dst)) {
                Forward::ToHost
            } else if policy.exit_node {
                Forward::Drop(Reason::NotAllowed)
            } else {
                Forward::Drop(Reason::NoRoute)
            }
        }
        Source::Bridge(_) => {
            if policy.advertises(dst) {
                if policy.bridge_allow_lan {
                    Forward::ToHost
                } else {
                    Forward::Drop(Reason::NotAllowed)
                }
            } else if let Some(exit) = policy.use_exit {
                if is_special(dst) {
                    Forward::Drop(Reason::NoRoute)
                } else if topo.exit_up(exit) {
                    Forward::ToMesh(exit)
                } else {
                    Forward::Drop(Reason::ExitDown)
                }
            } else if policy.bridge_internet && !is_special(dst) {
                Forward::ToHost
            } else {
                Forward::Drop(Reason::NoRoute)
            }
        }
        Source::Host => Forward::Drop(Reason::NoRoute),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;

    struct WithPolicy(Policy, bool);

    impl Topology for WithPolicy {
        fn leased_ip(&self, mac: &Mac) -> Option<Ipv4Addr> {
            Fixed.leased_ip(mac)
        }
        fn leased_mac(&self, ip: Ipv4Addr) -> Option<Mac> {
            Fixed.leased_mac(ip)
        }
        fn mesh_route(&self, ip: Ipv4Addr) -> Option<PeerId> {
            Fixed.mesh_route(ip)
        }
        fn is_host(&self, ip: Ipv4Addr) -> bool {
            Fixed.is_host(ip)
        }
        fn on_bridge(&self, ip: Ipv4Addr) -> bool {
            Fixed.on_bridge(ip)
        }
        fn bridge_broadcast(&self) -> Ipv4Addr {
            Fixed.bridge_broadcast()
        }
        fn policy(&self) -> &Policy {
            &self.0
        }
        fn exit_up(&self, _: PeerId) -> bool {
            self.1
        }
    }

    const NO_POLICY: Policy = Policy {
        exit_v6: false,
        advertised: Vec::new(),
        exit_node: false,
        exit_allow_lan: false,
        use_exit: None,
        bridge_internet: false,
        bridge_allow_lan: false,
        off_mesh: Vec::new(),
    };
    const DEV: Mac = Mac([2, 0, 0, 0, 0, 1]);
    const DEV_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 100);
    const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
    const BOX_MESH: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
    const GW: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 1);

    impl Topology for Fixed {
        fn leased_ip(&self, mac: &Mac) -> Option<Ipv4Addr> {
            (*mac == DEV).then_some(DEV_IP)
        }
        fn leased_mac(&self, ip: Ipv4Addr) -> Option<Mac> {
            (ip == DEV_IP).then_some(DEV)
        }
        fn mesh_route(&self, ip: Ipv4Addr) -> Option<PeerId> {
            match ip.octets() {
                [10, 77, 0, 2] => Some(PeerId(0)),
                [10, 77, 0, 3] => Some(PeerId(1)),
                _ => None,
            }
        }
        fn is_host(&self, ip: Ipv4Addr) -> bool {
            ip == BOX_MESH || ip == GW
        }
        fn on_bridge(&self, ip: Ipv4Addr) -> bool {
            ip.octets()[..3] == [10, 77, 1]
        }
        fn bridge_broadcast(&self) -> Ipv4Addr {
            Ipv4Addr::new(10, 77, 1, 255)
        }
        fn policy(&self) -> &Policy {
            static EMPTY: Policy = NO_POLICY;
            &EMPTY
        }
        fn exit_up(&self, _: PeerId) -> bool {
            false
        }
    }

    #[test]
    fn device_to_peer_goes_to_the_peers_tunnel() {
        assert_eq!(
            decide(&Fixed, Source::Bridge(DEV), DEV_IP, PEER_IP),
            Forward::ToMesh(PeerId(0))
        );
    }

    #[test]
    fn forged_source_or_unknown_device_is_dropped() {
        assert_eq!(
            decide(
                &Fixed,
                Source::Bridge(DEV),
                Ipv4Addr::new(10, 77, 1, 101),
                PEER_IP
            ),
            Forward::Drop(Reason::Spoofed)
        );
        assert_eq!(
            decide(
                &Fixed,
                Source::Bridge(Mac([2, 0, 0, 0, 0, 9])),
                DEV_IP,
                PEER_IP
            ),
            Forward::Drop(Reason::Spoofed)
        );
    }

    #[test]
    fn peer_to_device_uses_the_lease_table() {
        assert_eq!(
            decide(&Fixed, Source::Mesh(PeerId(0)), PEER_IP, DEV_IP),
            Forward::ToBridge(DEV)
        );
        assert_eq!(
            decide(
                &Fixed,
                Source::Mesh(PeerId(0)),
                PEER_IP,
                Ipv4Addr::new(10, 77, 1, 150)
            ),
            Forward::Drop(Reason::NoNeighbour)
        );
    }

    #[test]
    fn box_addresses_go_to_the_host_and_host_reaches_both_sides() {
        assert_eq!(
            decide(&Fixed, Source::Mesh(PeerId(0)), PEER_IP, BOX_MESH),
            Forward::ToHost
        );
        assert_eq!(
            decide(&Fixed, Source::Bridge(DEV), DEV_IP, GW),
            Forward::ToHost
        );
        assert_eq!(
            decide(&Fixed, Source::Host, BOX_MESH, PEER_IP),
            Forward::ToMesh(PeerId(0))
        );
        assert_eq!(
            decide(&Fixed, Source::Host, GW, DEV_IP),
            Forward::ToBridge(DEV)
        );
    }

    #[test]
    fn multicast_never_crosses_and_relay_never_loops() {
        assert_eq!(
            decide(
                &Fixed,
                Source::Bridge(DEV),
                DEV_IP,
                Ipv4Addr::new(224, 0, 0, 251)
            ),
            Forward::Drop(Reason::Multicast)
        );
        assert_eq!(
            decide(
                &Fixed,
                Source::Bridge(DEV),
                DEV_IP,
                Ipv4Addr::new(10, 77, 1, 255)
            ),
            Forward::Drop(Reason::Multicast)
        );
        assert_eq!(
            decide(&Fixed, Source::Mesh(PeerId(0)), PEER_IP, PEER_IP),
            Forward::Drop(Reason::Loop)
        );
        assert_eq!(
            decide(
                &Fixed,
                Source::Mesh(PeerId(0)),
                PEER_IP,
                Ipv4Addr::new(10, 77, 0, 3)
            ),
            Forward::ToMesh(PeerId(1))
        );
        assert_eq!(
            decide(
                &Fixed,
                Source::Bridge(DEV),
                DEV_IP,
                Ipv4Addr::new(192, 0, 2, 1)
            ),
            Forward::Drop(Reason::NoRoute)
        );
    }

    const LAN_HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 50);
    const INET: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

    fn policy() -> Policy {
        Policy {
            advertised: vec!["192.168.1.0/24".parse().unwrap()],
            ..NO_POLICY
        }
    }

    /// A device switched "not in the tailnet": nothing to or from a peer,
    /// even through the exit node; the box, the bridge and the uplink's
    /// internet stay.
    #[test]
    fn a_device_off_the_mesh_neither_reaches_peers_nor_is_reached() {
        let off = WithPolicy(
            Policy {
                off_mesh: vec![DEV],
                bridge_internet: true,
                ..NO_POLICY
            },
            true,
        );
        assert_eq!(
            decide(&off, Source::Bridge(DEV), DEV_IP, PEER_IP),
            Forward::Drop(Reason::NotAllowed)
        );
        assert_eq!(
            decide(&off, Source::Mesh(PeerId(0)), PEER_IP, DEV_IP),
            Forward::Drop(Reason::NotAllowed)
        );
        assert_eq!(
            decide(&off, Source::Bridge(DEV), DEV_IP, GW),
            Forward::ToHost
        );
        assert_eq!(
            decide(&off, Source::Host, GW, DEV_IP),
            Forward::ToBridge(DEV)
        );
        assert_eq!(
            decide(&off, Source::Bridge(DEV), DEV_IP, INET),
            Forward::ToHost
        );
        let exit = WithPolicy(
            Policy {
                off_mesh: vec![DEV],
                use_exit: Some(PeerId(1)),
                ..NO_POLICY
            },
            true,
        );
        assert_eq!(
            decide(&exit, Source::Bridge(DEV), DEV_IP, INET),
            Forward::Drop(Reason::NotAllowed)
        );
        // Another device is not affected.
        let other = WithPolicy(
            Policy {
                off_mesh: vec![Mac([2, 0, 0, 0, 0, 7])],
                ..NO_POLICY
            },
            true,
        );
        assert_eq!(
            decide(&other, Source::Bridge(DEV), DEV_IP, PEER_IP),
            Forward::ToMesh(PeerId(0))
        );
    }

    #[test]
    fn subnet_router_serves_advertised_prefixes_to_peers_only() {
        let t = WithPolicy(policy(), false);
        assert_eq!(
            decide(&t, Source::Mesh(PeerId(0)), PEER_IP, LAN_HOST),
            Forward::ToHost
        );
        assert_eq!(
            decide(
                &t,
                Source::Mesh(PeerId(0)),
                PEER_IP,
                Ipv4Addr::new(192, 168, 2, 1)
            ),
            Forward::Drop(Reason::NoRoute)
        );
        assert_eq!(
            decide(&t, Source::Mesh(PeerId(0)), PEER_IP, INET),
            Forward::Drop(Reason::NoRoute)
        );
        // A bridged device never reaches the LAN unless a rule allows it.
        assert_eq!(
            decide(&t, Source::Bridge(DEV), DEV_IP, LAN_HOST),
            Forward::Drop(Reason::NotAllowed)
        );
        let t = WithPolicy(
            Policy {
                bridge_allow_lan: true,
                ..policy()
            },
            false,
        );
        assert_eq!(
            decide(&t, Source::Bridge(DEV), DEV_IP, LAN_HOST),
            Forward::ToHost
        );
    }

    #[test]
    fn exit_node_is_guest_wifi_by_default() {
        let t = WithPolicy(
            Policy {
                exit_node: true,
                ..NO_POLICY
            },
            false,
        );
        assert_eq!(
            decide(&t, Source::Mesh(PeerId(0)), PEER_IP, INET),
            Forward::ToHost
        );
        for private in [
            "192.168.1.50",
            "10.1.2.3",
            "172.20.0.1",
            "169.254.1.1",
            "100.100.1.1",
            "224.0.0.1",
            "127.0.0.1",
        ] {
            let ip: Ipv4Addr = private.parse().unwrap();
            assert!(
                matches!(
                    decide(&t, Source::Mesh(PeerId(0)), PEER_IP, ip),
                    Forward::Drop(_)
                ),
                "{ip}"
            );
        }
        let t = WithPolicy(
            Policy {
                exit_node: true,
                exit_allow_lan: true,
                ..NO_POLICY
            },
            false,
        );
        assert_eq!(
            decide(&t, Source::Mesh(PeerId(0)), PEER_IP, LAN_HOST),
            Forward::ToHost
        );
    }

    #[test]
    fn use_exit_node_sends_device_internet_to_the_peer_and_kill_switch_drops() {
        let up = WithPolicy(
            Policy {
                use_exit: Some(PeerId(1)),
                bridge_internet: true,
                ..NO_POLICY
            },
            true,
        );
        assert_eq!(
            decide(&up, Source::Bridge(DEV), DEV_IP, INET),
            Forward::ToMesh(PeerId(1))
        );
        // Mesh and bridge traffic is unaffected.
        assert_eq!(
            decide(&up, Source::Bridge(DEV), DEV_IP, PEER_IP),
            Forward::ToMesh(PeerId(0))
        );
        assert_eq!(
            decide(&up, Source::Bridge(DEV), DEV_IP, GW),
            Forward::ToHost
        );
        let down = WithPolicy(
            Policy {
                use_exit: Some(PeerId(1)),
                bridge_internet: true,
                ..NO_POLICY
            },
            false,
        );
        assert_eq!(
            decide(&down, Source::Bridge(DEV), DEV_IP, INET),
            Forward::Drop(Reason::ExitDown)
        );
        // Without an exit node, bridged devices use the box's uplink.
        let own = WithPolicy(
            Policy {
                bridge_internet: true,
                ..NO_POLICY
            },
            false,
        );
        assert_eq!(
            decide(&own, Source::Bridge(DEV), DEV_IP, INET),
            Forward::ToHost
        );
        assert_eq!(
            decide(&own, Source::Bridge(DEV), DEV_IP, LAN_HOST),
            Forward::Drop(Reason::NoRoute)
        );
    }

    #[test]
    fn ipv6_exit_only_when_the_uplink_has_ipv6_and_never_to_private_ranges() {
        let inet6: Ipv6Addr = "2001:db8:3::10".parse().unwrap();
        let t = WithPolicy(
            Policy {
                exit_node: true,
                ..NO_POLICY
            },
            false,
        );
        assert_eq!(
            decide6(&t, Source::Mesh(PeerId(0)), inet6),
            Forward::Drop(Reason::NoRoute)
        );
        let t = WithPolicy(
            Policy {
                exit_node: true,
                exit_v6: true,
                ..NO_POLICY
            },
            false,
        );
        assert_eq!(decide6(&t, Source::Mesh(PeerId(0)), inet6), Forward::ToHost);
        for special in ["fd00::1", "fe80::1", "ff02::1", "::1", "::ffff:192.168.1.1"] {
            let ip: Ipv6Addr = special.parse().unwrap();
            assert!(
                matches!(decide6(&t, Source::Mesh(PeerId(0)), ip), Forward::Drop(_)),
                "{ip}"
            );
        }
        assert_eq!(
            decide6(&t, Source::Bridge(DEV), inet6),
            Forward::Drop(Reason::NoRoute)
        );
        assert_eq!(
            decide6(&t, Source::Host, inet6),
            Forward::Drop(Reason::NoRoute)
        );
    }
}
