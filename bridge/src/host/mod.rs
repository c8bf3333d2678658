//! Host effects: everything the daemon changes in (or reads from) the kernel,
//! one module per mechanism.
//!
//! * [`netlink`] links, bridge ports, routes and the record of what we installed;
//! * [`rtnl`] the rtnetlink requests themselves, on a plain netlink socket;
//! * [`nft`] the nftables table of the subnet router and exit node;
//! * [`sysctl`] forwarding, `arp_ignore`, `disable_ipv6`, `accept_ra`;
//! * [`udp_offload`] many datagrams per call on the WireGuard socket (UDP GSO/GRO);
//! * [`vnet`] the TAP's and TUN's offloads: TSO segments cut into frames, checksums;
//! * [`proc`] read-only facts from /proc and /etc (default route, hostname,
//!   forwarding), gathered off the event loop into [`proc::HostFacts`].
//!
//! Layering: this module may use `config` and `persist` only, never the
//! control plane or the daemon.

pub mod netlink;
pub mod nft;
pub mod proc;
pub mod rtnl;
pub mod sysctl;
pub mod udp_offload;
pub mod vnet;
