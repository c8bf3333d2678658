//! meshbridge's engine: the box's sans-IO core. It joins the three sides of
//! the box — the bridge (Ethernet frames on a TAP port of the LAN bridge),
//! the host (IP packets on a TUN, the box's own kernel) and the mesh
//! (WireGuard datagrams on one UDP socket) — with the DHCP server
//! ([`meshbridge_dhcp`]), the ARP responder ([`meshbridge_arp`]) and the
//! WireGuard peers ([`meshbridge_mesh`]), and decides where every packet goes.
//!
//! This crate has no sockets, no file descriptors, no async runtime and no
//! clock: its Cargo.toml has no tokio, netlink or nftables, so the compiler
//! keeps it that way. The daemon (`bridge/`) is the I/O shell around it.
//!
//! # Run loop (the daemon's job)
//!
//! 1. Read the clocks once into a [`Now`] and feed each input to
//!    [`Engine::handle_tap_frame`], [`Engine::handle_tun_packet`] or
//!    [`Engine::handle_datagram`].
//! 2. Drain [`Engine::poll_transmit`] (write each [`Transmit`] to the TAP,
//!    the TUN or the UDP socket) and [`Engine::poll_event`] (leases to
//!    persist, mDNS for discovery, things to log).
//! 3. Sleep until [`Engine::poll_timeout`], then call
//!    [`Engine::handle_timeout`]. The engine never reads a clock: every
//!    input carries a [`Now`], so tests run it on virtual time.
//!
//! # A frame from the bridge to a peer
//!
//! A bridged printer sends an Ethernet frame to the box's MAC; the daemon
//! reads it from the TAP and calls [`Engine::handle_tap_frame`]. ARP goes to
//! the responder (which answers for the gateway and, as a router, for the
//! addresses in [`rules::arp_routes`]). For IPv4, the local demux
//! ([`rules::local_service`]) takes DHCP and mDNS for the box's own
//! services; anything else addressed to the box's MAC goes to
//! [`forward::decide`], which checks the source against the device's DHCP
//! lease (anti-spoofing) and looks the destination up: the box itself
//! ([`forward::Forward::ToHost`]), another bridged device
//! ([`forward::Forward::ToBridge`]), a peer by cryptokey routing
//! ([`forward::Forward::ToMesh`]), or the routing policy (subnet router, exit
//! node, with the ranges of [`rules::SPECIAL4`]). On the way to a peer the
//! engine clamps TCP MSS and fragments or answers "fragmentation needed"
//! ([`packet`]) to fit the mesh MTU, hands the packet to the peer's
//! WireGuard session, and the ciphertext comes out of
//! [`Engine::poll_transmit`] as [`Transmit::Udp`] for the daemon to send.
//! The way back is [`Engine::handle_datagram`] → decrypt → the same
//! decision → [`Transmit::Tap`] to the device's MAC.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod filter;
pub mod forward;
pub mod packet;
pub mod rules;
pub mod snat;

use etherparse::{EtherType, Ethernet2Header, IpNumber, Ipv4Header, PacketBuilder, UdpHeader};
use forward::{decide, decide6, Forward, Mac, Policy, Reason, Source, Topology};
use ipnet::Ipv4Net;
use meshbridge_arp as arp;
use meshbridge_dhcp as dhcp;
use meshbridge_mesh::{Mesh, Output, Path, PeerId, PublicKey};
use rules::{LocalService, MDNS_GROUP, MDNS_MAC};
use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

/// The time, twice: monotonic for protocol timers, wall clock for leases.
/// The daemon reads both clocks once per input; simulations make it up.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic time.
    pub mono: Instant,
    /// Wall-clock time.
    pub wall: SystemTime,
}

/// What the engine needs to know about the box.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The MAC the box uses on the bridge (not the TAP interface's own MAC).
    pub mac: Mac,
    /// The box's gateway address on the bridge, with the bridge subnet.
    pub bridge_address: Ipv4Net,
    /// The box's own mesh address, with the mesh prefix.
    pub mesh_address: Ipv4Net,
    /// Mesh MTU: the largest inner packet.
    pub mtu: u16,
    /// The DHCP server's configuration.
    pub dhcp: dhcp::ServerConfig,
    /// Subnet router / exit node policy.
    pub policy: Policy,
}

/// Something to write.
#[derive(Debug, PartialEq, Eq)]
pub enum Transmit {
    /// An Ethernet frame for the TAP.
    Tap(Vec<u8>),
    /// An IP packet for the TUN.
    Tun(Vec<u8>),
    /// A UDP datagram for the WireGuard socket.
    Udp(SocketAddr, Vec<u8>),
    /// An IP packet from a bridged device that is a tailnet node of its
    /// own ([`Engine::set_node_leases`]), for that node (its own keys and
    /// peers) to route and encrypt.
    Node(Mac, Vec<u8>),
}

/// Something the daemon should log or act on.
#[derive(Debug)]
pub enum Event {
    /// From the DHCP server (persist leases on `LeasesChanged`).
    Dhcp(dhcp::Event),
    /// From the ARP responder.
    Arp(arp::Event),
    /// An mDNS packet a bridged device sent to the group (for the discovery cache).
    Mdns {
        /// The sender's address.
        src: Ipv4Addr,
        /// The UDP payload.
        payload: Vec<u8>,
    },
}

/// Counters: every dropped input is counted here.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Frames read from the TAP.
    pub tap_frames: u64,
    /// Frames or packets that did not parse.
    pub malformed: u64,
    /// IPv6 packets not forwarded (IPv4 only for now).
    pub ipv6_dropped: u64,
    /// Unicast frames for other MACs (flooded by the bridge).
    pub not_for_us: u64,
    /// DHCP messages that the server rejected.
    pub dhcp_errors: u64,
    /// ARP frames that the responder rejected.
    pub arp_errors: u64,
    /// Dropped by the forwarding decision, by reason.
    pub spoofed: u64,
    /// Multicast/broadcast not forwarded.
    pub multicast: u64,
    /// No route.
    pub no_route: u64,
    /// No lease for a bridge destination.
    pub no_neighbour: u64,
    /// Would loop back to its peer.
    pub looped: u64,
    /// Not allowed by the routing policy.
    pub not_allowed: u64,
    /// Bridged devices' internet traffic dropped because the exit node is down.
    pub exit_down: u64,
    /// Dropped by the mesh (no endpoint, crypto error).
    pub mesh_errors: u64,
    /// mDNS packets heard on the bridge.
    pub mdns: u64,
    /// TCP SYNs whose MSS was clamped.
    pub mss_clamped: u64,
    /// Packets fragmented to fit the mesh MTU.
    pub fragmented: u64,
    /// ICMP "fragmentation needed" sent.
    pub frag_needed_sent: u64,
    /// Packets forwarded to the mesh.
    pub to_mesh: u64,
    /// Packets forwarded to the bridge.
    pub to_bridge: u64,
    /// Packets handed to the host.
    pub to_host: u64,
    /// Packets from tailnet peers the tailnet's packet filter dropped.
    pub tailnet_denied: u64,
    /// Packets of devices that are nodes of their own, handed to their node.
    pub to_node: u64,
    /// Packets from a device's node for an address that is not the device's.
    pub node_misrouted: u64,
}

/// The engine. See the module docs for the run loop.
pub struct Engine {
    config: EngineConfig,
    mesh: Mesh,
    dhcp: dhcp::Server,
    arp: arp::Responder,
    out: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
    last: Now,
    last_seen: std::collections::HashMap<Mac, Instant>,
    /// More addresses of the box besides the mesh and bridge ones (its
    /// tailnet address): packets to them go to the host.
    host_addresses: Vec<Ipv4Addr>,
    /// The tailnet's packet filter and the peers it applies to (None: no
    /// tailnet, nothing filtered).
    tailnet: Option<TailnetGuard>,
    /// Source NAT of mesh flows into the bridge (None: off).
    snat: Option<snat::Snat>,
    /// Devices that are tailnet nodes of their own: node address -> MAC.
    nodes: std::collections::HashMap<Ipv4Addr, Mac>,
}

/// The tailnet's packet filter, applied to packets from its peers.
struct TailnetGuard {
    /// The tailnet's peers (static `[mesh]` peers are never filtered).
    peers: HashSet<PublicKey>,
    firewall: filter::Firewall,
}

/// Node address -> device, from the DHCP server's node leases.
fn config_nodes(leases: &[dhcp::NodeLease]) -> std::collections::HashMap<Ipv4Addr, Mac> {
    leases.iter().map(|n| (n.ip, n.mac)).collect()
}

/// At most this many MACs have a "last seen" time.
const MAX_SEEN: usize = 1024;

/// The tables [`decide`] reads, borrowed from the engine for one decision.
struct View<'a> {
    config: &'a EngineConfig,
    host_addresses: &'a [Ipv4Addr],
    dhcp: &'a dhcp::Server,
    mesh: &'a Mesh,
    wall: SystemTime,
    nodes: &'a std::collections::HashMap<Ipv4Addr, Mac>,
}

impl Topology for View<'_> {
    fn leased_ip(&self, mac: &Mac) -> Option<Ipv4Addr> {
        self.dhcp.active_ip_for(mac, self.wall)
    }
    fn leased_mac(&self, ip: Ipv4Addr) -> Option<Mac> {
        self.dhcp.active_mac_for(ip, self.wall)
    }
    fn mesh_route(&self, ip: Ipv4Addr) -> Option<PeerId> {
        self.mesh.route_specific(IpAddr::V4(ip))
    }
    fn is_host(&self, ip: Ipv4Addr) -> bool {
        ip == self.config.mesh_address.addr()
            || ip == self.config.bridge_address.addr()
            || self.host_addresses.contains(&ip)
    }
    fn on_bridge(&self, ip: Ipv4Addr) -> bool {
        // A device's node address is on the bridge too, outside its subnet.
        self.config.bridge_address.contains(&ip) || self.nodes.contains_key(&ip)
    }
    fn node_routes(&self, ip: Ipv4Addr) -> bool {
        !self.nodes.is_empty() && rules::TAILNET4.contains(&ip)
    }
    fn bridge_broadcast(&self) -> Ipv4Addr {
        self.config.bridge_address.broadcast()
    }
    fn policy(&self) -> &Policy {
        &self.config.policy
    }
    fn exit_up(&self, peer: PeerId) -> bool {
        self.mesh.is_up(peer, meshbridge_mesh::REJECT_AFTER_TIME)
    }
    fn mesh_route6(&self, ip: std::net::Ipv6Addr) -> Option<PeerId> {
        self.mesh.route_specific(IpAddr::V6(ip))
    }
}

impl Engine {
    /// Build the engine from its parts; `leases` is what was persisted last.
    pub fn new(
        config: EngineConfig,
        mesh: Mesh,
        leases: dhcp::LeaseDb,
        now: Now,
    ) -> Result<Self, dhcp::ConfigError> {
        let dhcp = dhcp::Server::new(config.dhcp.clone(), leases, now.wall)?;
        let dhcp_nodes = config.dhcp.node_leases.clone();
        let arp = arp::Responder::new(arp::Config {
            mac: config.mac,
            gateway: config.bridge_address.addr(),
            neighbour_ttl: Duration::from_secs(20 * 60),
        });
        Ok(Engine {
            config,
            mesh,
            dhcp,
            arp,
            out: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            last: now,
            last_seen: std::collections::HashMap::new(),
            host_addresses: Vec::new(),
            tailnet: None,
            snat: None,
            nodes: config_nodes(&dhcp_nodes),
        })
    }

    /// The bridged devices that are tailnet nodes of their own, with their
    /// node addresses (handed out by DHCP with the node network's mask,
    /// router and DNS), and how long a new device's first DISCOVER waits
    /// for its node (`None`: no nodes for new devices). Their traffic to
    /// the tailnet leaves as [`Transmit::Node`]; their nodes' traffic comes
    /// back through [`Engine::handle_node_packet`].
    ///
    /// # Errors
    ///
    /// The DHCP server refused the leases (one inside the bridge subnet, or
    /// twice); nothing changed.
    pub fn set_node_leases(
        &mut self,
        leases: Vec<dhcp::NodeLease>,
        hold_new: Option<Duration>,
    ) -> Result<(), dhcp::ConfigError> {
        let mut cfg = self.config.dhcp.clone();
        cfg.node_leases = leases;
        cfg.hold_new = hold_new;
        self.dhcp.set_config(cfg.clone())?;
        self.nodes = config_nodes(&cfg.node_leases);
        self.config.dhcp = cfg;
        Ok(())
    }

    /// A packet a device's node decrypted and let through its filter: to
    /// the device, if it is addressed to the device's node address.
    pub fn handle_node_packet(&mut self, now: Now, mac: Mac, packet: &[u8]) {
        self.last = now;
        let Some(info) = packet::ipv4_info(packet) else {
            self.stats.malformed += 1;
            return;
        };
        if self.nodes.get(&info.dst) != Some(&mac) {
            self.stats.node_misrouted += 1;
            return;
        }
        let packet = packet[..info.total_len].to_vec();
        self.forward(now, Source::Host, packet, Forward::ToBridge(mac));
    }

    /// Source-NAT flows from the mesh into the bridge to the box's bridge
    /// address (`[bridge] snat_from_mesh`), see [`snat`]. Off by default.
    pub fn set_snat_from_mesh(&mut self, on: bool) {
        match (on, self.snat.is_some()) {
            (true, false) => self.snat = Some(snat::Snat::new(self.config.bridge_address.addr())),
            (false, true) => self.snat = None,
            _ => {}
        }
    }

    /// The source NAT's counters, if it is on.
    pub fn snat_stats(&self) -> Option<snat::SnatStats> {
        self.snat.as_ref().map(|s| s.stats())
    }

    /// The box's addresses besides the mesh and bridge ones (e.g. its
    /// tailnet address, which the control server assigns): packets to them
    /// are the host's ([`forward::Forward::ToHost`]).
    pub fn set_host_addresses(&mut self, addresses: Vec<Ipv4Addr>) {
        self.host_addresses = addresses;
    }

    /// The tailnet's packet filter and the mesh peers (by public key) it
    /// applies to: a packet from one of them is forwarded only when a rule
    /// allows it or it answers a flow started from here (see [`filter`]).
    /// Static peers are never filtered. The connection table is kept.
    pub fn set_tailnet_filter(&mut self, peers: HashSet<PublicKey>, filter: filter::Filter) {
        match &mut self.tailnet {
            Some(t) => {
                t.peers = peers;
                t.firewall.filter = filter;
            }
            None => {
                self.tailnet = Some(TailnetGuard {
                    peers,
                    firewall: filter::Firewall {
                        filter,
                        conntrack: filter::ConnTrack::default(),
                    },
                })
            }
        }
    }

    /// Flows in the tailnet's connection table (None: no tailnet filter).
    pub fn tailnet_flows(&self) -> Option<usize> {
        self.tailnet.as_ref().map(|t| t.firewall.conntrack.len())
    }

    fn is_tailnet_peer(&self, peer: PeerId) -> bool {
        self.tailnet.as_ref().is_some_and(|t| {
            self.mesh
                .peer_public_key(peer)
                .is_some_and(|k| t.peers.contains(&k))
        })
    }

    /// Whether a packet from `peer` may go on (always, unless `peer` is a
    /// tailnet peer and the filter denies it: counted).
    fn tailnet_admits(&mut self, now: Now, peer: PeerId, packet: &[u8]) -> bool {
        if !self.is_tailnet_peer(peer) {
            return true;
        }
        let Some(t) = &self.tailnet else { return true };
        if t.firewall.check_inbound(now.mono, packet).accepts() {
            return true;
        }
        self.stats.tailnet_denied += 1;
        false
    }

    /// A packet goes to `peer`: if that is a tailnet peer, its flow's
    /// answers may come back.
    fn tailnet_outbound(&mut self, now: Now, peer: PeerId, packet: &[u8]) {
        if self.is_tailnet_peer(peer) {
            if let Some(t) = &mut self.tailnet {
                t.firewall.note_outbound(now.mono, packet);
            }
        }
    }

    /// Announce the box on the bridge (gratuitous ARP). Call once at start.
    pub fn start(&mut self, now: Now) {
        self.last = now;
        self.arp.announce(now.mono);
        self.drain_arp(now);
    }

    /// The mesh, for status.
    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    /// The DHCP server, for status and persistence.
    pub fn dhcp(&self) -> &dhcp::Server {
        &self.dhcp
    }

    /// The mesh, to add and remove peers while running.
    pub fn mesh_mut(&mut self) -> &mut Mesh {
        &mut self.mesh
    }

    /// New DHCP settings (range, lease time, reservations) while running.
    pub fn set_dhcp_config(
        &mut self,
        mut config: dhcp::ServerConfig,
    ) -> Result<(), dhcp::ConfigError> {
        config.node_leases = self.config.dhcp.node_leases.clone();
        config.hold_new = self.config.dhcp.hold_new;
        self.dhcp.set_config(config.clone())?;
        self.config.dhcp = config;
        Ok(())
    }

    /// The exit node the bridged devices' internet goes to
    /// (`use_exit_node`), when it is only found while running (a tailnet
    /// node from the control server's map). With `None`, that traffic goes
    /// where the policy's `bridge_internet` says: the daemon keeps that off
    /// while an exit node is configured, so it is dropped (the kill switch).
    pub fn set_exit_peer(&mut self, peer: Option<PeerId>) {
        self.config.policy.use_exit = peer;
    }

    /// The bridged devices kept off the mesh (their "not in the tailnet"
    /// switch), while running.
    pub fn set_off_mesh(&mut self, macs: Vec<Mac>) {
        self.config.policy.off_mesh = macs;
    }

    /// The exit node the bridged devices' internet goes to now.
    pub fn exit_peer(&self) -> Option<PeerId> {
        self.config.policy.use_exit
    }

    /// The routing policy in force.
    pub fn policy(&self) -> &Policy {
        &self.config.policy
    }

    /// Forget a bridged device's lease; returns whether it had one.
    pub fn forget_device(&mut self, mac: &Mac) -> bool {
        self.last_seen.remove(mac);
        let had = self.dhcp.forget(mac);
        self.drain_dhcp(self.last);
        had
    }

    /// When the box last saw a frame from `mac` on the bridge.
    pub fn last_seen(&self, mac: &Mac) -> Option<Instant> {
        self.last_seen.get(mac).copied()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn view(&self, wall: SystemTime) -> View<'_> {
        View {
            config: &self.config,
            host_addresses: &self.host_addresses,
            dhcp: &self.dhcp,
            mesh: &self.mesh,
            wall,
            nodes: &self.nodes,
        }
    }

    /// A frame from the bridge (TAP).
    pub fn handle_tap_frame(&mut self, now: Now, frame: &[u8]) {
        self.last = now;
        self.stats.tap_frames += 1;
        let Ok((eth, rest)) = Ethernet2Header::from_slice(frame) else {
            self.stats.malformed += 1;
            return;
        };
        if eth.source == self.config.mac {
            return;
        }
        if self.last_seen.len() < MAX_SEEN || self.last_seen.contains_key(&Mac(eth.source)) {
            self.last_seen.insert(Mac(eth.source), now.mono);
        }
        match eth.ether_type {
            EtherType::ARP => {
                let view = View {
                    config: &self.config,
                    host_addresses: &self.host_addresses,
                    dhcp: &self.dhcp,
                    mesh: &self.mesh,
                    wall: now.wall,
                    nodes: &self.nodes,
                };
                let gateway = view.config.bridge_address.addr();
                let routes = |ip: Ipv4Addr| rules::arp_routes(&view, ip);
                let local = |ip: Ipv4Addr| rules::arp_local(&view, gateway, ip);
                if self
                    .arp
                    .handle_frame(now.mono, frame, &routes, &local)
                    .is_err()
                {
                    self.stats.arp_errors += 1;
                }
                self.drain_arp(now);
            }
            EtherType::IPV4 => self.handle_bridge_ipv4(now, eth, rest),
            EtherType::IPV6 => self.stats.ipv6_dropped += 1,
            _ => {}
        }
    }

    fn handle_bridge_ipv4(&mut self, now: Now, eth: Ethernet2Header, packet: &[u8]) {
        let Some(info) = packet::ipv4_info(packet) else {
            self.stats.malformed += 1;
            return;
        };
        let packet = &packet[..info.total_len];
        // The box's own services (DHCP, mDNS): the local demux.
        if let Ok((ip, l4)) = Ipv4Header::from_slice(packet) {
            if ip.protocol == IpNumber::UDP && !ip.is_fragmenting_payload() {
                if let Ok((udp, payload)) = UdpHeader::from_slice(l4) {
                    let (sp, dp) = (udp.source_port, udp.destination_port);
                    let to_box = eth.destination == self.config.mac || eth.destination == [0xff; 6];
                    let len = usize::from(udp.length).saturating_sub(8).min(payload.len());
                    match rules::local_service(to_box, info.dst, sp, dp) {
                        Some(LocalService::Dhcp) => {
                            let input = dhcp::Input {
                                src_mac: Mac(eth.source),
                                src_ip: info.src,
                                src_port: sp,
                                dst_port: dp,
                                payload: &payload[..len],
                            };
                            if self.dhcp.handle_input(now.wall, input).is_err() {
                                self.stats.dhcp_errors += 1;
                            }
                            self.drain_dhcp(now);
                            return;
                        }
                        Some(LocalService::Mdns) => {
                            self.stats.mdns += 1;
                            if self.events.len() < 256 {
                                self.events.push_back(Event::Mdns {
                                    src: info.src,
                                    payload: payload[..len].to_vec(),
                                });
                            }
                            return;
                        }
                        None => {}
                    }
                }
            }
        }
        if eth.destination != self.config.mac {
            if eth.destination[0] & 1 == 1 {
                self.stats.multicast += 1;
            } else {
                self.stats.not_for_us += 1;
            }
            return;
        }
        let mut packet = packet.to_vec();
        let mut dst = info.dst;
        if let Some(snat) = self.snat.as_mut() {
            // A device's reply to a translated flow goes back to its peer.
            if snat.from_bridge(now.mono, &mut packet) {
                dst = packet::ipv4_info(&packet).map_or(dst, |i| i.dst);
            }
        }
        let decision = decide(
            &self.view(now.wall),
            Source::Bridge(Mac(eth.source)),
            info.src,
            dst,
        );
        // A device that is a node of its own reaches the tailnet through
        // its node, never through the box's: what would go to the box's
        // peers, and the ranges off the internet nobody here routes.
        if self.nodes.get(&info.src) == Some(&Mac(eth.source)) {
            let to_node = match decision {
                // The exit node too: the device's node has its own session
                // with it (the box's may be down), and its own kill switch.
                Forward::ToMesh(_) | Forward::Drop(Reason::ExitDown) => true,
                Forward::Drop(Reason::NoRoute) => rules::is_special(dst),
                _ => false,
            };
            if to_node {
                self.stats.to_node += 1;
                self.out.push_back(Transmit::Node(Mac(eth.source), packet));
                return;
            }
        }
        self.forward(now, Source::Bridge(Mac(eth.source)), packet, decision);
    }

    /// A packet from the box's kernel (TUN).
    pub fn handle_tun_packet(&mut self, now: Now, packet: &[u8]) {
        self.last = now;
        match packet.first().map(|b| b >> 4) {
            Some(4) => {}
            Some(6) => {
                self.handle_ipv6(now, Source::Host, packet.to_vec());
                return;
            }
            _ => {
                self.stats.malformed += 1;
                return;
            }
        }
        let Some(info) = packet::ipv4_info(packet) else {
            self.stats.malformed += 1;
            return;
        };
        let decision = decide(&self.view(now.wall), Source::Host, info.src, info.dst);
        self.forward(
            now,
            Source::Host,
            packet[..info.total_len].to_vec(),
            decision,
        );
    }

    /// A datagram on the WireGuard socket.
    pub fn handle_datagram(&mut self, now: Now, src: SocketAddr, datagram: &[u8]) {
        self.last = now;
        if self.mesh.handle_datagram(src, datagram).is_err() {
            self.stats.mesh_errors += 1;
        }
        self.drain_mesh(now);
    }

    /// Run timers that are due.
    pub fn handle_timeout(&mut self, now: Now) {
        self.last = now;
        self.mesh.handle_timeout(now.mono);
        self.drain_mesh(now);
        self.arp.handle_timeout(now.mono);
        self.drain_arp(now);
        self.dhcp.handle_timeout(now.wall);
        self.drain_dhcp(now);
    }

    /// The earliest time [`Engine::handle_timeout`] must run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let dhcp = self.dhcp.poll_timeout().map(|t| {
            let ahead = t.duration_since(self.last.wall).unwrap_or(Duration::ZERO);
            self.last.mono + ahead
        });
        [self.mesh.poll_timeout(), self.arp.poll_timeout(), dhcp]
            .into_iter()
            .flatten()
            .min()
    }

    /// Send an mDNS message (a browse query) to the group on the bridge,
    /// from the box's gateway address and port 5353.
    pub fn send_mdns(&mut self, payload: &[u8]) {
        let gw = self.config.bridge_address.addr();
        let builder = PacketBuilder::ethernet2(self.config.mac.0, MDNS_MAC.0)
            .ipv4(gw.octets(), MDNS_GROUP.octets(), 255)
            .udp(5353, 5353);
        let mut frame = Vec::with_capacity(builder.size(payload.len()));
        if builder.write(&mut frame, payload).is_ok() {
            self.out.push_back(Transmit::Tap(frame));
        }
    }

    /// The next thing to write.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn drain_mesh(&mut self, now: Now) {
        while let Some(o) = self.mesh.poll_output() {
            match o {
                Output::Datagram(Path::Udp(to), d) => self.out.push_back(Transmit::Udp(to, d)),
                // No DERP client in the daemon yet: counted with the mesh's drops.
                Output::Datagram(Path::Relay { .. }, _) => self.stats.mesh_errors += 1,
                Output::Packet(peer, p) => {
                    if !self.tailnet_admits(now, peer, &p) {
                        continue;
                    }
                    let Some(info) = packet::ipv4_info(&p) else {
                        if p.first().map(|b| b >> 4) == Some(6) {
                            self.handle_ipv6(now, Source::Mesh(peer), p);
                        } else {
                            self.stats.malformed += 1;
                        }
                        continue;
                    };
                    let decision =
                        decide(&self.view(now.wall), Source::Mesh(peer), info.src, info.dst);
                    let mut p = p;
                    p.truncate(info.total_len);
                    self.forward(now, Source::Mesh(peer), p, decision);
                }
            }
        }
    }

    /// IPv6 between the mesh and the host (exit node, peer to peer). Not
    /// on the bridge yet, so no MSS clamping or fragmentation is needed:
    /// the TUN's MTU is the mesh MTU and the kernel sends Packet Too Big.
    fn handle_ipv6(&mut self, now: Now, source: Source, mut p: Vec<u8>) {
        let Some((_, dst, total)) = packet::ipv6_info(&p) else {
            self.stats.malformed += 1;
            return;
        };
        p.truncate(total);
        match decide6(&self.view(now.wall), source, dst) {
            Forward::ToHost => {
                self.stats.to_host += 1;
                self.out.push_back(Transmit::Tun(p));
            }
            Forward::ToMesh(peer) => {
                self.tailnet_outbound(now, peer, &p);
                self.send_to_mesh(peer, &p);
                self.drain_mesh(now);
            }
            Forward::ToBridge(_) | Forward::Drop(_) => self.stats.ipv6_dropped += 1,
        }
    }

    fn drain_arp(&mut self, now: Now) {
        while let Some(f) = self.arp.poll_transmit() {
            self.out.push_back(Transmit::Tap(f));
        }
        while let Some(e) = self.arp.poll_event() {
            if let arp::Event::Learned { ip, mac } = &e {
                if self.dhcp.active_ip_for(mac, now.wall) != Some(*ip) {
                    self.dhcp.note_in_use(*ip, *mac, now.wall);
                }
            }
            self.events.push_back(Event::Arp(e));
        }
    }

    fn drain_dhcp(&mut self, _now: Now) {
        while let Some(t) = self.dhcp.poll_transmit() {
            let builder = PacketBuilder::ethernet2(t.src_mac.0, t.dst_mac.0)
                .ipv4(t.src_ip.octets(), t.dst_ip.octets(), 64)
                .udp(t.src_port, t.dst_port);
            let mut frame = Vec::with_capacity(builder.size(t.payload.len()));
            if builder.write(&mut frame, &t.payload).is_ok() {
                self.out.push_back(Transmit::Tap(frame));
            }
        }
        while let Some(e) = self.dhcp.poll_event() {
            self.events.push_back(Event::Dhcp(e));
        }
    }

    fn bridge_frame(&self, dst: Mac, packet: &[u8]) -> Vec<u8> {
        let mut frame = Vec::with_capacity(14 + packet.len());
        frame.extend_from_slice(&dst[..]);
        frame.extend_from_slice(&self.config.mac[..]);
        frame.extend_from_slice(&EtherType::IPV4.0.to_be_bytes());
        frame.extend_from_slice(packet);
        frame
    }

    /// Send an ICMP error back where `original` came from.
    fn send_back(&mut self, source: Source, icmp: Vec<u8>) {
        match source {
            Source::Bridge(mac) => {
                let f = self.bridge_frame(mac, &icmp);
                self.out.push_back(Transmit::Tap(f));
            }
            Source::Host => self.out.push_back(Transmit::Tun(icmp)),
            Source::Mesh(peer) => {
                if self.mesh.send(peer, &icmp).is_err() {
                    self.stats.mesh_errors += 1;
                }
            }
        }
    }

    fn forward(&mut self, now: Now, source: Source, mut packet: Vec<u8>, decision: Forward) {
        let max_mss = self.config.mtu.saturating_sub(40);
        match decision {
            Forward::ToMesh(peer) => {
                self.tailnet_outbound(now, peer, &packet);
                if packet::clamp_mss(&mut packet, max_mss) {
                    self.stats.mss_clamped += 1;
                }
                let mtu = usize::from(self.config.mtu);
                if packet.len() > mtu {
                    let df = packet::ipv4_info(&packet).is_some_and(|i| i.dont_fragment);
                    if df {
                        let from = match source {
                            Source::Bridge(_) => self.config.bridge_address.addr(),
                            _ => self.config.mesh_address.addr(),
                        };
                        if let Some(icmp) = packet::icmp_frag_needed(&packet, from, self.config.mtu)
                        {
                            self.stats.frag_needed_sent += 1;
                            self.send_back(source, icmp);
                        }
                        return;
                    }
                    match packet::fragment(&packet, mtu) {
                        Some(frags) => {
                            self.stats.fragmented += 1;
                            for f in frags {
                                self.send_to_mesh(peer, &f);
                            }
                        }
                        None => self.stats.malformed += 1,
                    }
                } else {
                    self.send_to_mesh(peer, &packet);
                }
                self.drain_mesh(now);
            }
            Forward::ToBridge(mac) => {
                if let (Some(snat), Source::Mesh(_)) = (self.snat.as_mut(), source) {
                    if snat.to_bridge(now.mono, &mut packet) == snat::ToBridge::Full {
                        self.stats.no_route += 1;
                        return;
                    }
                }
                if packet::clamp_mss(&mut packet, max_mss) {
                    self.stats.mss_clamped += 1;
                }
                self.stats.to_bridge += 1;
                let f = self.bridge_frame(mac, &packet);
                self.out.push_back(Transmit::Tap(f));
            }
            Forward::ToHost => {
                self.stats.to_host += 1;
                self.out.push_back(Transmit::Tun(packet));
            }
            Forward::Drop(reason) => {
                match reason {
                    Reason::Spoofed => self.stats.spoofed += 1,
                    Reason::Multicast => self.stats.multicast += 1,
                    Reason::NoRoute => self.stats.no_route += 1,
                    Reason::NoNeighbour => self.stats.no_neighbour += 1,
                    Reason::Loop => self.stats.looped += 1,
                    Reason::NotAllowed => self.stats.not_allowed += 1,
                    Reason::ExitDown => {
                        self.stats.exit_down += 1;
                        // Try to bring the exit node back; the packet itself is dropped.
                        if let Some(exit) = self.config.policy.use_exit {
                            self.mesh.poke(exit);
                            self.drain_mesh(now);
                        }
                    }
                }
                // Tell a bridged device quickly that there is no way there.
                if let (
                    Reason::NoRoute | Reason::NotAllowed | Reason::ExitDown,
                    Source::Bridge(_),
                ) = (reason, source)
                {
                    let kind = match reason {
                        Reason::NotAllowed => {
                            etherparse::icmpv4::DestUnreachableHeader::FilterProhibited
                        }
                        _ => etherparse::icmpv4::DestUnreachableHeader::Network,
                    };
                    if let Some(icmp) =
                        packet::icmp_unreachable(&packet, self.config.bridge_address.addr(), kind)
                    {
                        self.send_back(source, icmp);
                    }
                }
            }
        }
    }

    fn send_to_mesh(&mut self, peer: PeerId, packet: &[u8]) {
        match self.mesh.send(peer, packet) {
            Ok(()) => self.stats.to_mesh += 1,
            Err(_) => self.stats.mesh_errors += 1,
        }
    }
}
