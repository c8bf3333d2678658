//! The box's own mDNS name on its links: on the bridge through the engine
//! (frames on the TAP), on the uplink through a multicast UDP socket joined
//! on the uplink only. The protocol is [`meshbridge_mdns::Responder`].

use anyhow::{Context, Result};
use ipnet::Ipv4Net;
use meshbridge_mdns::cache::{MDNS_PORT, MDNS_V4};
use std::net::{Ipv4Addr, SocketAddr};
use tokio::net::UdpSocket;

/// A socket for mDNS on the uplink: port 5353 shared with any other mDNS
/// daemon on the box, the group joined on the uplink address only, and no
/// multicast from other interfaces.
pub fn uplink_socket(addr: Ipv4Addr) -> Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .context("creating the mDNS socket")?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&SocketAddr::from(([0, 0, 0, 0], MDNS_PORT)).into())
        .context("binding UDP 5353 for mDNS on the uplink")?;
    s.set_multicast_all_v4(false)?;
    s.join_multicast_v4(&MDNS_V4, &addr)
        .context("joining the mDNS group on the uplink")?;
    s.set_multicast_if_v4(&addr)?;
    s.set_multicast_ttl_v4(255)?;
    s.set_multicast_loop_v4(false)?;
    s.set_nonblocking(true)?;
    Ok(UdpSocket::from_std(s.into())?)
}

/// Whether a packet from `from` belongs to the uplink's segment.
pub fn on_segment(net: Ipv4Net, from: Ipv4Addr) -> bool {
    net.contains(&from)
}

/// Where mDNS goes.
pub fn group() -> SocketAddr {
    SocketAddr::from((MDNS_V4, MDNS_PORT))
}
