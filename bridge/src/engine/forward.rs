//! The forwarding decision: one pure function from (where a packet came
//! from, its addresses) to where it goes. No I/O, no state of its own: the
//! tables it consults come in through [`Topology`].

use meshbridge_mesh::PeerId;
use std::net::Ipv4Addr;

/// An Ethernet address.
pub type Mac = [u8; 6];

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
}

/// Decide where a packet from `source` with these addresses goes.
pub fn decide(topo: &impl Topology, source: Source, src: Ipv4Addr, dst: Ipv4Addr) -> Forward {
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
        (Some(to), Source::Mesh(from)) if to == from => Forward::Drop(Reason::Loop),
        (Some(to), _) => Forward::ToMesh(to),
        (None, _) => Forward::Drop(Reason::NoRoute),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    const DEV: Mac = [2, 0, 0, 0, 0, 1];
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
            decide(&Fixed, Source::Bridge([2, 0, 0, 0, 0, 9]), DEV_IP, PEER_IP),
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
}
