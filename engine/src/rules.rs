//! The box's address rules as data and small pure functions, in one place:
//!
//! * which ranges are not "the internet" ([`SPECIAL4`], [`SPECIAL6`]): the
//!   forwarding decision reads them ([`is_special`], [`is_special6`]) and the
//!   daemon renders the very same tables into its nftables sets;
//! * which addresses the box answers ARP for on the bridge ([`arp_routes`],
//!   [`arp_local`]);
//! * which packets on the bridge are for the box's own services rather than
//!   for forwarding (the local demux, [`local_service`]).
//!
//! The where-does-it-go decision itself is [`crate::forward`].

use crate::forward::{Mac, Topology};
use ipnet::{Ipv4Net, Ipv6Net};
use std::net::{Ipv4Addr, Ipv6Addr};

/// IPv4 ranges that are not "the internet": "this network", private
/// (RFC 1918), shared/CGNAT (RFC 6598), loopback, link-local, multicast,
/// reserved and the limited broadcast. The exit node keeps these out unless
/// told otherwise ("guest Wi-Fi" default); bridged devices never reach them
/// through the box's uplink.
pub const SPECIAL4: [Ipv4Net; 9] = [
    Ipv4Net::new_assert(Ipv4Addr::new(0, 0, 0, 0), 8),
    Ipv4Net::new_assert(Ipv4Addr::new(10, 0, 0, 0), 8),
    Ipv4Net::new_assert(Ipv4Addr::new(100, 64, 0, 0), 10),
    Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8),
    Ipv4Net::new_assert(Ipv4Addr::new(169, 254, 0, 0), 16),
    Ipv4Net::new_assert(Ipv4Addr::new(172, 16, 0, 0), 12),
    Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 0, 0), 16),
    Ipv4Net::new_assert(Ipv4Addr::new(224, 0, 0, 0), 4),
    Ipv4Net::new_assert(Ipv4Addr::new(240, 0, 0, 0), 4),
];

/// IPv6 ranges that are not "the internet": unspecified and loopback
/// (`::/127`), IPv4-mapped, unique-local, link-local and multicast.
pub const SPECIAL6: [Ipv6Net; 5] = [
    Ipv6Net::new_assert(Ipv6Addr::UNSPECIFIED, 127),
    Ipv6Net::new_assert(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96),
    Ipv6Net::new_assert(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),
    Ipv6Net::new_assert(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
    Ipv6Net::new_assert(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),
];

/// Whether `ip` is in one of the [`SPECIAL4`] ranges.
pub fn is_special(ip: Ipv4Addr) -> bool {
    SPECIAL4.iter().any(|n| n.contains(&ip))
}

/// Whether `ip` is in one of the [`SPECIAL6`] ranges.
pub fn is_special6(ip: Ipv6Addr) -> bool {
    SPECIAL6.iter().any(|n| n.contains(&ip))
}

/// Whether the box answers a bridged device's ARP request for `ip` with its
/// own MAC, as the router towards it: an address off the bridge that is the
/// box's own or routed into the mesh. (The gateway address is always
/// answered by the responder itself.)
pub fn arp_routes(topo: &impl Topology, ip: Ipv4Addr) -> bool {
    !topo.on_bridge(ip)
        && (topo.is_host(ip) || topo.mesh_route(ip).is_some() || topo.node_routes(ip))
}

/// The tailnet's address range (RFC 6598 shared space, where Tailscale and
/// Headscale number their nodes): devices that are nodes of their own get
/// an address in it, with the box as the router for the rest of it.
pub const TAILNET4: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(100, 64, 0, 0), 10);

/// Whether `ip` belongs to the bridge segment's own devices (inside the
/// bridge subnet, not the `gateway`): the box never answers for it, it only
/// learns who holds it.
pub fn arp_local(topo: &impl Topology, gateway: Ipv4Addr, ip: Ipv4Addr) -> bool {
    topo.on_bridge(ip) && ip != gateway
}

/// The mDNS group (RFC 6762).
pub const MDNS_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);

/// The mDNS group's Ethernet address (RFC 1112 mapping of 224.0.0.251).
pub const MDNS_MAC: Mac = Mac([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]);

/// The mDNS port.
pub const MDNS_PORT: u16 = 5353;

/// One of the box's own services on the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalService {
    /// The DHCP server: a client's request, or another server's reply
    /// (looked at to notice a second DHCP server on the segment).
    Dhcp,
    /// mDNS to the group: listened to (discovery cache), never forwarded.
    Mdns,
}

/// The local demux: whether an unfragmented UDP datagram seen on the bridge
/// is for one of the box's own services instead of the forwarding decision.
///
/// `to_box`: the frame was addressed to the box's MAC or broadcast. A client
/// request counts only then (a unicast renewal to another server, flooded by
/// the bridge, is not ours to answer); server replies are always looked at.
pub fn local_service(
    to_box: bool,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
) -> Option<LocalService> {
    use meshbridge_dhcp::{CLIENT_PORT, SERVER_PORT};
    if (dst_port == SERVER_PORT && to_box) || (src_port == SERVER_PORT && dst_port == CLIENT_PORT) {
        Some(LocalService::Dhcp)
    } else if dst_port == MDNS_PORT && dst == MDNS_GROUP {
        Some(LocalService::Mdns)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_ranges_match_the_address_classes_they_stand_for() {
        for ip in [
            "0.1.2.3",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "169.254.1.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "224.0.0.251",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(is_special(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "192.169.0.1",
            "203.0.113.10",
            "223.255.255.255",
        ] {
            assert!(!is_special(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "::",
            "::1",
            "::ffff:192.168.1.1",
            "fd00::1",
            "fe80::1",
            "ff02::1",
        ] {
            assert!(is_special6(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["2001:db8:3::10", "2a00::1", "::2", "fec0::1"] {
            assert!(!is_special6(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn the_table_agrees_with_the_standard_library_classes() {
        // Every address the standard library calls private, loopback,
        // link-local, multicast or broadcast is special (sampled).
        for a in (0..=255u8).step_by(3) {
            for b in (0..=255u8).step_by(5) {
                let ip = Ipv4Addr::new(a, b, 7, 9);
                if ip.is_private()
                    || ip.is_loopback()
                    || ip.is_link_local()
                    || ip.is_multicast()
                    || ip.is_broadcast()
                {
                    assert!(is_special(ip), "{ip}");
                }
            }
        }
    }

    /// The box: gateway 10.77.1.1/24 on the bridge, 10.77.0.1 on the mesh,
    /// one peer owning 10.77.0.2.
    #[derive(Default)]
    struct Box1 {
        policy: crate::forward::Policy,
    }

    impl Topology for Box1 {
        fn leased_ip(&self, _: &Mac) -> Option<Ipv4Addr> {
            None
        }
        fn leased_mac(&self, _: Ipv4Addr) -> Option<Mac> {
            None
        }
        fn mesh_route(&self, ip: Ipv4Addr) -> Option<meshbridge_mesh::PeerId> {
            (ip == Ipv4Addr::new(10, 77, 0, 2)).then_some(meshbridge_mesh::PeerId(0))
        }
        fn is_host(&self, ip: Ipv4Addr) -> bool {
            ip == Ipv4Addr::new(10, 77, 0, 1) || ip == Ipv4Addr::new(10, 77, 1, 1)
        }
        fn on_bridge(&self, ip: Ipv4Addr) -> bool {
            ip.octets()[..3] == [10, 77, 1]
        }
        fn bridge_broadcast(&self) -> Ipv4Addr {
            Ipv4Addr::new(10, 77, 1, 255)
        }
        fn policy(&self) -> &crate::forward::Policy {
            &self.policy
        }
        fn exit_up(&self, _: meshbridge_mesh::PeerId) -> bool {
            false
        }
    }

    #[test]
    fn arp_is_answered_for_the_box_and_mesh_routes_never_for_bridge_devices() {
        let gw = Ipv4Addr::new(10, 77, 1, 1);
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert!(arp_routes(&Box1::default(), ip("10.77.0.1")));
        assert!(arp_routes(&Box1::default(), ip("10.77.0.2")));
        assert!(!arp_routes(&Box1::default(), ip("10.77.0.3")));
        assert!(!arp_routes(&Box1::default(), ip("192.168.1.1")));
        // Bridge addresses are the devices' own, even the box's gateway is
        // not "routed" (the responder answers for it itself).
        assert!(!arp_routes(&Box1::default(), ip("10.77.1.100")));
        assert!(!arp_routes(&Box1::default(), gw));
        assert!(arp_local(&Box1::default(), gw, ip("10.77.1.100")));
        assert!(!arp_local(&Box1::default(), gw, gw));
        assert!(!arp_local(&Box1::default(), gw, ip("10.77.0.2")));
    }

    #[test]
    fn dhcp_requests_count_only_to_us_replies_always_mdns_only_to_the_group() {
        let bcast = Ipv4Addr::BROADCAST;
        assert_eq!(local_service(true, bcast, 68, 67), Some(LocalService::Dhcp));
        assert_eq!(local_service(false, bcast, 68, 67), None);
        assert_eq!(
            local_service(false, bcast, 67, 68),
            Some(LocalService::Dhcp)
        );
        assert_eq!(
            local_service(false, MDNS_GROUP, 5353, 5353),
            Some(LocalService::Mdns)
        );
        assert_eq!(
            local_service(true, Ipv4Addr::new(10, 77, 1, 1), 5353, 5353),
            None
        );
        assert_eq!(local_service(true, bcast, 5000, 6000), None);
    }
}
