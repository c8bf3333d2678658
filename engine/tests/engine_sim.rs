//! Deterministic simulation of the engine: a virtual bridged device speaks
//! DHCP and IPv4 in Ethernet frames, a virtual WireGuard peer (the mesh
//! crate's own `Mesh`, another boringtun) sits on the other side of a
//! virtual UDP link. No sockets, no root.
//!
//! Everything comes from one seed (`MB_SIM_SEED` overrides it; a failing
//! test prints it; `MB_SIM_TRACE=1` prints the lossy run's trace): both
//! WireGuard keys, the virtual clock's start, and a
//! small PRNG that loses and reorders frames on the bridge and datagrams on
//! the UDP link. Each run records a trace — what the device sent, what the
//! engine decided and wrote, what the link lost, what the peer decrypted —
//! as text, and the same seed gives the same trace.
//!
//! The trace is about decisions and plaintext, not ciphertext bytes:
//! boringtun picks random ephemeral keys and reads the real clock for its
//! own timers. For the same reason handshake messages are never lost on the
//! virtual link (a lost handshake is retried on boringtun's *real* 5 s
//! timer); data messages, DHCP and everything on the bridge are.

use dhcproto::v4::{DhcpOption, Message, MessageType};
use dhcproto::{Decodable, Decoder, Encodable};
use etherparse::{Icmpv4Type, PacketBuilder, SlicedPacket, TransportSlice};
use meshbridge_dhcp::{LeaseDb, ServerConfig};
use meshbridge_engine::{Engine, EngineConfig, Now, Transmit};
use meshbridge_mesh::{Mesh, Output, Path, PeerConfig, PrivateKey};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, UNIX_EPOCH};

const BOX_MAC: [u8; 6] = [2, 0x6d, 0x62, 1, 2, 3];
const DEV_MAC: [u8; 6] = [2, 0xde, 0xad, 0, 0, 1];
const GW: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 1);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

/// The seed when `MB_SIM_SEED` is not set.
const DEFAULT_SEED: u64 = 0x6d62_5eed;

fn seed() -> u64 {
    std::env::var("MB_SIM_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

/// Prints the seed if the test fails, so the run can be repeated.
struct SeedOnFailure(u64);

impl Drop for SeedOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "engine_sim failed with seed {0}: rerun with MB_SIM_SEED={0}",
                self.0
            );
        }
    }
}

/// Loss and reordering, in per-mille.
#[derive(Debug, Clone, Copy, Default)]
struct Netem {
    loss: u32,
    reorder: u32,
}

/// Who a datagram on the UDP link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Box,
    Peer,
}

struct Sim {
    engine: Engine,
    peer: Mesh,
    peer_id: meshbridge_mesh::PeerId,
    box_addr: SocketAddr,
    peer_addr: SocketAddr,
    now: Now,
    start: Instant,
    rng: StdRng,
    netem: Netem,
    /// The peer answers ICMP echo requests (a host behind the peer).
    peer_pings_back: bool,
    /// Datagrams in flight on the UDP link.
    link: VecDeque<(Side, Vec<u8>)>,
    /// Frames the engine wrote to the bridge (and the bridge delivered).
    tap: Vec<Vec<u8>>,
    /// Packets the engine handed to the host.
    tun: Vec<Vec<u8>>,
    /// Packets the peer decrypted.
    at_peer: Vec<Vec<u8>>,
    /// Packets handed to a device's own tailnet node.
    to_node: Vec<(meshbridge_types::Mac, Vec<u8>)>,
    /// What happened, in order, as text.
    trace: Vec<String>,
}

/// A WireGuard message's kind, from its first byte.
fn wg_kind(d: &[u8]) -> &'static str {
    match d.first() {
        Some(1) => "handshake-initiation",
        Some(2) => "handshake-response",
        Some(3) => "cookie",
        Some(4) => "data",
        _ => "junk",
    }
}

/// An IPv4 packet in a few words (addresses, protocol, payload or DHCP type).
fn describe_ip(p: &[u8]) -> String {
    let Ok(s) = SlicedPacket::from_ip(p) else {
        return format!("{} bytes of non-IP", p.len());
    };
    let (src, dst) = match &s.net {
        Some(etherparse::NetSlice::Ipv4(v4)) => (
            v4.header().source_addr().to_string(),
            v4.header().destination_addr().to_string(),
        ),
        _ => return format!("{} bytes of non-IPv4", p.len()),
    };
    let what = match s.transport {
        Some(TransportSlice::Udp(u)) => {
            let dhcp = (u.source_port() == 67 || u.destination_port() == 67)
                .then(|| Message::decode(&mut Decoder::new(u.payload())).ok())
                .flatten();
            match dhcp {
                Some(m) => format!("DHCP {:?} yiaddr {}", m.opts().msg_type(), m.yiaddr()),
                None => format!(
                    "UDP {}>{} {:?}",
                    u.source_port(),
                    u.destination_port(),
                    String::from_utf8_lossy(u.payload())
                ),
            }
        }
        Some(TransportSlice::Icmpv4(i)) => format!("ICMP {:?}", i.icmp_type()),
        Some(TransportSlice::Tcp(_)) => "TCP".to_string(),
        _ => format!("{} bytes", p.len()),
    };
    format!("{src}>{dst} {what}")
}

fn describe_frame(f: &[u8]) -> String {
    if f.len() < 14 {
        return format!("{} bytes of junk", f.len());
    }
    match u16::from_be_bytes([f[12], f[13]]) {
        0x0806 => "ARP".to_string(),
        0x0800 => describe_ip(&f[14..]),
        t => format!("ethertype {t:#06x}"),
    }
}

/// An ICMP echo request or reply, as an IPv4 packet.
fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, reply: bool, seq: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv4(src.octets(), dst.octets(), 64);
    let b = if reply {
        b.icmpv4_echo_reply(0x4d42, seq)
    } else {
        b.icmpv4_echo_request(0x4d42, seq)
    };
    let mut p = Vec::new();
    b.write(&mut p, payload).unwrap();
    p
}

/// The echo reply sequence number in a frame, if it is one.
fn echo_reply_seq(frame: &[u8]) -> Option<u16> {
    let s = SlicedPacket::from_ethernet(frame).ok()?;
    match s.transport? {
        TransportSlice::Icmpv4(i) => match i.icmp_type() {
            Icmpv4Type::EchoReply(e) => Some(e.seq),
            _ => None,
        },
        _ => None,
    }
}

impl Sim {
    fn new() -> Sim {
        Sim::with(seed(), Netem::default())
    }

    fn with(seed: u64, netem: Netem) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        let box_key = PrivateKey::from_bytes(bytes);
        rng.fill_bytes(&mut bytes);
        let peer_key = PrivateKey::from_bytes(bytes);
        let box_addr: SocketAddr = "198.51.100.1:51820".parse().unwrap();
        let peer_addr: SocketAddr = "198.51.100.2:51820".parse().unwrap();
        let start = Instant::now();
        let now = Now {
            mono: start,
            wall: UNIX_EPOCH + Duration::from_secs(1_800_000_000 + rng.gen_range(0..86_400)),
        };
        let mut mesh = Mesh::new(&box_key);
        mesh.add_peer(
            now.mono,
            PeerConfig {
                name: "laptop".into(),
                public_key: peer_key.public_key(),
                preshared_key: None,
                endpoint: Some(peer_addr),
                allowed_ips: vec!["10.77.0.2/32".parse().unwrap()],
                persistent_keepalive: None,
            },
        );
        let mut peer = Mesh::new(&peer_key);
        let peer_id = peer.add_peer(
            now.mono,
            PeerConfig {
                name: "box".into(),
                public_key: box_key.public_key(),
                preshared_key: None,
                endpoint: Some(box_addr),
                allowed_ips: vec!["10.77.0.0/16".parse().unwrap()],
                persistent_keepalive: None,
            },
        );
        let config = EngineConfig {
            mac: meshbridge_types::Mac(BOX_MAC),
            bridge_address: "10.77.1.1/24".parse().unwrap(),
            mesh_address: "10.77.0.1/24".parse().unwrap(),
            policy: Default::default(),
            mtu: 1420,
            dhcp: ServerConfig {
                server_ip: GW,
                server_mac: meshbridge_types::Mac(BOX_MAC),
                subnet_mask: Ipv4Addr::new(255, 255, 255, 0),
                range_start: Ipv4Addr::new(10, 77, 1, 100),
                range_end: Ipv4Addr::new(10, 77, 1, 200),
                router: Some(GW),
                dns: vec![GW],
                domain: Some("mesh.home.arpa".into()),
                mtu: Some(1420),
                lease_time: Duration::from_secs(3600),
                reservations: vec![],
                probe_interval: None,
                node_leases: Vec::new(),
                hold_new: None,
                no_node: Vec::new(),
                serve: true,
            },
        };
        let mut engine = Engine::new(config, mesh, LeaseDb::empty(), now).unwrap();
        engine.start(now);
        let mut sim = Sim {
            engine,
            peer,
            peer_id,
            box_addr,
            peer_addr,
            now,
            start,
            rng,
            netem,
            peer_pings_back: false,
            link: VecDeque::new(),
            tap: vec![],
            tun: vec![],
            at_peer: vec![],
            to_node: vec![],
            trace: vec![],
        };
        sim.settle();
        sim.tap.clear(); // gratuitous ARP
        sim
    }

    fn log(&mut self, what: String) {
        let t = self.now.mono - self.start;
        self.trace.push(format!(
            "{:>6}.{:03} {what}",
            t.as_secs(),
            t.subsec_millis()
        ));
    }

    fn lost(&mut self) -> bool {
        self.netem.loss > 0 && self.rng.gen_ratio(self.netem.loss, 1000)
    }

    /// Let `d` go by.
    fn advance(&mut self, d: Duration) {
        self.now.mono += d;
        self.now.wall += d;
        if self
            .engine
            .poll_timeout()
            .is_some_and(|t| t <= self.now.mono)
        {
            self.engine.handle_timeout(self.now);
        }
        self.settle();
    }

    /// A frame from the device onto the bridge (lost at the link's rate).
    fn device_sends(&mut self, frame: &[u8]) {
        let what = describe_frame(frame);
        if self.lost() {
            self.log(format!("bridge lost dev> {what}"));
            return;
        }
        self.log(format!("dev> {what}"));
        self.engine.handle_tap_frame(self.now, frame);
        self.settle();
    }

    /// Put a datagram on the UDP link, or lose it.
    fn send_udp(&mut self, to: Side, d: Vec<u8>) {
        let kind = wg_kind(&d);
        // Handshakes are not lost (see the module docs).
        if kind == "data" && self.lost() {
            self.log(format!("udp lost >{to:?} {kind}"));
            return;
        }
        self.link.push_back((to, d));
    }

    /// The next datagram the link delivers (sometimes not the oldest).
    fn next_udp(&mut self) -> Option<(Side, Vec<u8>)> {
        if self.link.len() > 1
            && self.netem.reorder > 0
            && self.rng.gen_ratio(self.netem.reorder, 1000)
        {
            let i = self.rng.gen_range(1..self.link.len());
            self.log(format!("udp reordered: #{i} first"));
            return self.link.remove(i);
        }
        self.link.pop_front()
    }

    /// Run both sides and the link until everything is quiet.
    fn settle(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            while let Some(t) = self.engine.poll_transmit() {
                moved = true;
                match t {
                    Transmit::Tap(f) => {
                        let what = describe_frame(&f);
                        if self.lost() {
                            self.log(format!("bridge lost >dev {what}"));
                        } else {
                            self.log(format!(">dev {what}"));
                            self.tap.push(f);
                        }
                    }
                    Transmit::Tun(p) => {
                        self.log(format!(">host {}", describe_ip(&p)));
                        self.tun.push(p);
                    }
                    Transmit::Udp(to, d) => {
                        assert_eq!(to, self.peer_addr);
                        self.send_udp(Side::Peer, d);
                    }
                    Transmit::Node(mac, p) => {
                        self.log(format!(">node {}", describe_ip(&p)));
                        self.to_node.push((mac, p));
                    }
                }
            }
            while self.engine.poll_event().is_some() {}
            while let Some(o) = self.peer.poll_output() {
                moved = true;
                match o {
                    Output::Datagram(to, d) => {
                        assert_eq!(to, Path::Udp(self.box_addr));
                        self.send_udp(Side::Box, d);
                    }
                    Output::Packet(_, p) => self.at_peer(p),
                }
            }
            if let Some((to, d)) = self.next_udp() {
                moved = true;
                match to {
                    Side::Box => self.engine.handle_datagram(self.now, self.peer_addr, &d),
                    Side::Peer => {
                        let _ = self.peer.handle_datagram(self.box_addr, &d);
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the simulation did not settle");
    }

    /// The peer decrypted `p`: record it, and answer pings if asked to.
    fn at_peer(&mut self, p: Vec<u8>) {
        self.log(format!("peer< {}", describe_ip(&p)));
        if self.peer_pings_back {
            if let Ok(s) = SlicedPacket::from_ip(&p) {
                if let (Some(etherparse::NetSlice::Ipv4(v4)), Some(TransportSlice::Icmpv4(i))) =
                    (&s.net, &s.transport)
                {
                    if let Icmpv4Type::EchoRequest(e) = i.icmp_type() {
                        let reply = icmp_echo(
                            v4.header().destination_addr(),
                            v4.header().source_addr(),
                            true,
                            e.seq,
                            i.payload(),
                        );
                        let _ = self.peer.send(self.peer_id, &reply);
                    }
                }
            }
        }
        self.at_peer.push(p);
    }

    /// One DHCP exchange from the device; `None` if nothing came back.
    fn try_dhcp(&mut self, m: &Message) -> Option<Message> {
        let payload = m.to_vec().unwrap();
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(DEV_MAC, [0xff; 6])
            .ipv4([0, 0, 0, 0], [255, 255, 255, 255], 64)
            .udp(68, 67)
            .write(&mut frame, &payload)
            .unwrap();
        self.tap.clear();
        self.device_sends(&frame);
        let reply = self.tap.pop()?;
        let s = SlicedPacket::from_ethernet(&reply).unwrap();
        let Some(TransportSlice::Udp(u)) = s.transport else {
            panic!("not UDP")
        };
        assert_eq!((u.source_port(), u.destination_port()), (67, 68));
        Some(Message::decode(&mut Decoder::new(u.payload())).unwrap())
    }

    /// A DHCP exchange, retried every few seconds like a real client.
    fn dhcp_from_device(&mut self, m: &Message) -> Message {
        for _ in 0..20 {
            if let Some(reply) = self.try_dhcp(m) {
                return reply;
            }
            self.advance(Duration::from_secs(4));
        }
        panic!("no DHCP reply after 20 tries");
    }

    fn lease(&mut self) -> Ipv4Addr {
        let mut d = Message::new_with_id(
            7,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &DEV_MAC,
        );
        d.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Discover));
        let offer = self.dhcp_from_device(&d);
        assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
        let ip = offer.yiaddr();
        let mut r = Message::new_with_id(
            8,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &DEV_MAC,
        );
        r.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Request));
        r.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
        r.opts_mut().insert(DhcpOption::ServerIdentifier(GW));
        let ack = self.dhcp_from_device(&r);
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        ip
    }

    fn ip_frame_from_device(&mut self, src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(DEV_MAC, BOX_MAC)
            .ipv4(src.octets(), dst.octets(), 64)
            .udp(5000, 6000)
            .write(&mut frame, payload)
            .unwrap();
        self.device_sends(&frame);
    }

    /// Ping the peer from the device until a reply comes back; returns the
    /// number of tries it took.
    fn ping(&mut self, src: Ipv4Addr, first_seq: u16) -> u16 {
        for tries in 0..20u16 {
            let seq = first_seq + tries;
            let p = icmp_echo(src, PEER_IP, false, seq, b"ping");
            let mut frame = Vec::with_capacity(14 + p.len());
            frame.extend_from_slice(&BOX_MAC);
            frame.extend_from_slice(&DEV_MAC);
            frame.extend_from_slice(&[0x08, 0x00]);
            frame.extend_from_slice(&p);
            self.tap.clear();
            self.device_sends(&frame);
            if self.tap.iter().any(|f| echo_reply_seq(f) == Some(seq)) {
                return tries + 1;
            }
            self.advance(Duration::from_secs(1));
        }
        panic!("no ping reply after 20 tries");
    }
}

#[test]
fn leased_device_reaches_peer_and_peer_reaches_device() {
    let _seed = SeedOnFailure(seed());
    let mut sim = Sim::new();
    let ip = sim.lease();
    assert!(sim.tap.is_empty());

    // Device -> peer: queued during the handshake, then delivered.
    sim.ip_frame_from_device(ip, PEER_IP, b"hello peer");
    assert_eq!(sim.at_peer.len(), 1);
    {
        let s = SlicedPacket::from_ip(&sim.at_peer[0]).unwrap();
        let Some(TransportSlice::Udp(u)) = s.transport else {
            panic!("not UDP")
        };
        assert_eq!(u.payload(), b"hello peer");
    }

    // Peer -> device: comes out on the bridge addressed to the device's MAC.
    let mut p = Vec::new();
    PacketBuilder::ipv4(PEER_IP.octets(), ip.octets(), 64)
        .udp(6000, 5000)
        .write(&mut p, b"hello device")
        .unwrap();
    sim.peer.send(sim.peer_id, &p).unwrap();
    sim.settle();
    let frame = sim.tap.pop().expect("a frame to the device");
    assert_eq!(&frame[0..6], &DEV_MAC);
    assert_eq!(&frame[6..12], &BOX_MAC);
    assert_eq!(&frame[14..], &p[..]);

    // Peer -> the box itself: handed to the host.
    let mut p = Vec::new();
    PacketBuilder::ipv4(PEER_IP.octets(), [10, 77, 0, 1], 64)
        .udp(6000, 5000)
        .write(&mut p, b"box")
        .unwrap();
    sim.peer.send(sim.peer_id, &p).unwrap();
    sim.settle();
    assert_eq!(sim.tun.pop().as_deref(), Some(&p[..]));
}

#[test]
fn spoofed_and_unleased_sources_are_dropped() {
    let _seed = SeedOnFailure(seed());
    let mut sim = Sim::new();
    let ip = sim.lease();
    sim.ip_frame_from_device(Ipv4Addr::new(10, 77, 1, 150), PEER_IP, b"forged");
    assert!(sim.at_peer.is_empty());
    assert_eq!(sim.engine.stats().spoofed, 1);
    sim.ip_frame_from_device(ip, PEER_IP, b"real");
    assert_eq!(sim.at_peer.len(), 1);
}

#[test]
fn oversize_df_packet_gets_frag_needed_and_others_are_fragmented() {
    let _seed = SeedOnFailure(seed());
    let mut sim = Sim::new();
    let ip = sim.lease();
    sim.ip_frame_from_device(ip, PEER_IP, b"warm up the session");
    sim.at_peer.clear();
    // 1472 bytes of UDP payload: a 1500-byte packet, DF set by the builder.
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(DEV_MAC, BOX_MAC)
        .ipv4(ip.octets(), PEER_IP.octets(), 64)
        .udp(5000, 6000)
        .write(&mut frame, &[0u8; 1472])
        .unwrap();
    sim.engine.handle_tap_frame(sim.now, &frame);
    sim.settle();
    assert!(sim.at_peer.is_empty());
    let icmp = sim.tap.pop().expect("ICMP back to the device");
    let s = SlicedPacket::from_ethernet(&icmp).unwrap();
    let Some(TransportSlice::Icmpv4(i)) = s.transport else {
        panic!("not ICMP")
    };
    assert_eq!(
        i.icmp_type(),
        etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1420 }
        )
    );
    // Clear DF: the engine fragments instead.
    let df_at = 14 + 6;
    frame[df_at] &= !0x40;
    // Fix the IPv4 header checksum after flipping DF.
    let (mut h, _) = etherparse::Ipv4Header::from_slice(&frame[14..]).unwrap();
    h.header_checksum = h.calc_header_checksum();
    frame[14..34].copy_from_slice(&h.to_bytes());
    sim.engine.handle_tap_frame(sim.now, &frame);
    sim.settle();
    assert_eq!(sim.at_peer.len(), 2);
    assert!(sim.at_peer.iter().all(|p| p.len() <= 1420));
    assert_eq!(sim.engine.stats().fragmented, 1);
}

#[test]
fn garbage_frames_are_counted_not_fatal() {
    let _seed = SeedOnFailure(seed());
    let mut sim = Sim::new();
    for len in [0usize, 1, 13, 14, 20, 42, 60] {
        let junk: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
        sim.engine.handle_tap_frame(sim.now, &junk);
        sim.engine.handle_tun_packet(sim.now, &junk);
        sim.engine.handle_datagram(sim.now, sim.peer_addr, &junk);
    }
    sim.settle();
    assert!(sim.engine.stats().malformed > 0);
    assert!(sim.engine.mesh().stats().invalid > 0);
    // Still works afterwards.
    let ip = sim.lease();
    sim.ip_frame_from_device(ip, PEER_IP, b"still alive");
    assert_eq!(sim.at_peer.len(), 1);
}

/// 10% loss on the bridge and on the link, 20% reordering on the link.
const LOSSY: Netem = Netem {
    loss: 100,
    reorder: 200,
};

/// DHCP, then ten pings and a burst of datagrams, on a lossy link.
fn lossy_run(seed: u64) -> (Sim, u32) {
    let mut sim = Sim::with(seed, LOSSY);
    sim.peer_pings_back = true;
    let ip = sim.lease();
    let mut tries = 0;
    for n in 0..10u16 {
        tries += u32::from(sim.ping(ip, n * 100));
        sim.advance(Duration::from_millis(250));
    }
    for n in 0..20 {
        sim.ip_frame_from_device(ip, PEER_IP, format!("burst {n}").as_bytes());
    }
    let stats = sim.engine.stats().clone();
    sim.log(format!(
        "stats: to_mesh {} to_bridge {} spoofed {} malformed {}",
        stats.to_mesh, stats.to_bridge, stats.spoofed, stats.malformed
    ));
    if std::env::var_os("MB_SIM_TRACE").is_some() {
        eprintln!("trace for seed {seed}:\n{}", sim.trace.join("\n"));
    }
    (sim, tries)
}

#[test]
fn dhcp_and_pings_get_through_a_lossy_reordering_link_after_retries() {
    let seed = seed();
    let _seed = SeedOnFailure(seed);
    let (sim, tries) = lossy_run(seed);
    // Every ping was answered, some only after a retry.
    assert!(tries >= 10);
    assert!(
        sim.trace.iter().any(|l| l.contains("lost")),
        "10% loss lost nothing:\n{}",
        sim.trace.join("\n")
    );
    // The burst crossed with at most the link's losses, each at most once.
    let burst: Vec<&Vec<u8>> = sim
        .at_peer
        .iter()
        .filter(|p| describe_ip(p).contains("burst"))
        .collect();
    assert!(burst.len() >= 10, "{} of 20 arrived", burst.len());
    assert!(burst.len() <= 20);
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let seed = seed();
    let _seed = SeedOnFailure(seed);
    let (a, tries_a) = lossy_run(seed);
    let (b, tries_b) = lossy_run(seed);
    assert_eq!(tries_a, tries_b);
    if a.trace != b.trace {
        let mut diff = String::new();
        for (i, (x, y)) in a.trace.iter().zip(&b.trace).enumerate() {
            if x != y {
                let _ = writeln!(diff, "line {i}:\n  {x}\n  {y}");
                break;
            }
        }
        panic!(
            "traces differ ({} vs {} lines)\n{diff}",
            a.trace.len(),
            b.trace.len()
        );
    }
    // A different seed takes a different path (the trace is not constant).
    let (c, _) = lossy_run(seed ^ 0x9e37_79b9_7f4a_7c15);
    assert_ne!(a.trace, c.trace);
}

/// The box's tailnet address (assigned by the control server at run time)
/// is the host's once the daemon adds it; before, nothing routes it.
#[test]
fn an_added_host_address_is_the_hosts() {
    let _seed = SeedOnFailure(seed());
    let mut sim = Sim::new();
    let ip = sim.lease();
    let tailnet_ip = Ipv4Addr::new(100, 64, 0, 1);
    sim.ip_frame_from_device(ip, tailnet_ip, b"before");
    assert!(sim.tun.is_empty() && sim.at_peer.is_empty());
    sim.engine.set_host_addresses(vec![tailnet_ip]);
    sim.ip_frame_from_device(ip, tailnet_ip, b"after");
    assert_eq!(sim.tun.len(), 1);
    assert!(sim.at_peer.is_empty());
}

/// The tailnet's packet filter: a tailnet peer reaches the device only
/// where a rule allows it, answers to the device's own flows come back, a
/// static peer (not in the tailnet's set) is never filtered.
#[test]
fn the_tailnet_filter_applies_to_tailnet_peers_only() {
    use meshbridge_engine::filter::{Filter, Rule};
    let _seed = SeedOnFailure(seed());
    let mut sim = Sim::new();
    let ip = sim.lease();
    let (rule, bad) = Rule::parse(["10.77.0.2"], [("10.77.1.0/24", 80, 80)], &[]);
    assert_eq!(bad, 0);
    let tailnet: std::collections::HashSet<_> = [sim.peer.public_key()].into_iter().collect();
    sim.engine
        .set_tailnet_filter(tailnet.clone(), Filter::new(vec![rule]));
    let from_peer = |sim: &mut Sim, dst: Ipv4Addr, sp: u16, dp: u16| {
        let mut p = Vec::new();
        PacketBuilder::ipv4(PEER_IP.octets(), dst.octets(), 64)
            .udp(sp, dp)
            .write(&mut p, b"x")
            .unwrap();
        sim.tap.clear();
        sim.tun.clear();
        sim.peer.send(sim.peer_id, &p).unwrap();
        sim.settle();
        !sim.tap.is_empty() || !sim.tun.is_empty()
    };
    // Not allowed: to the device on another port, to the box itself.
    assert!(!from_peer(&mut sim, ip, 6000, 5000));
    assert!(!from_peer(&mut sim, Ipv4Addr::new(10, 77, 0, 1), 6000, 53));
    assert_eq!(sim.engine.stats().tailnet_denied, 2);
    // Allowed by the rule.
    assert!(from_peer(&mut sim, ip, 6000, 80));
    // The device's own flow: the answer comes back, once it went out.
    sim.ip_frame_from_device(ip, PEER_IP, b"hello");
    assert_eq!(sim.at_peer.len(), 1);
    assert!(from_peer(&mut sim, ip, 6000, 5000));
    assert_eq!(sim.engine.tailnet_flows(), Some(1));
    // Another port is still denied.
    assert!(!from_peer(&mut sim, ip, 6001, 5000));
    assert_eq!(sim.engine.stats().tailnet_denied, 3);
    // The same peer as a static peer (not in the tailnet's set): unfiltered.
    sim.engine
        .set_tailnet_filter(Default::default(), Filter::deny_all());
    assert!(from_peer(&mut sim, ip, 6001, 5000));
    // Back in the tailnet with a filter that allows nothing.
    sim.engine.set_tailnet_filter(tailnet, Filter::deny_all());
    assert!(!from_peer(&mut sim, ip, 6001, 5000));
}

/// A device that is a tailnet node of its own: DHCP hands it its node's
/// address with the tailnet's mask and the box's tailnet address as router;
/// the box answers ARP for the tailnet's addresses, never for the device's
/// own; its tailnet traffic goes to its node (never to the box's peers), its
/// node's packets come to it; a spoofed source is dropped.
#[test]
fn a_device_node_gets_its_address_and_its_traffic_goes_through_its_node() {
    use meshbridge_dhcp::NodeLease;
    let _seed = SeedOnFailure(seed());
    let mut sim = Sim::new();
    let node_ip = Ipv4Addr::new(100, 64, 0, 7);
    let box_ip = Ipv4Addr::new(100, 64, 0, 1);
    let laptop = Ipv4Addr::new(100, 64, 0, 9);
    sim.engine.set_host_addresses(vec![box_ip]);
    sim.engine
        .set_node_leases(
            vec![NodeLease {
                mac: meshbridge_types::Mac(DEV_MAC),
                ip: node_ip,
                subnet_mask: Ipv4Addr::new(255, 192, 0, 0),
                router: box_ip,
                dns: vec![box_ip],
            }],
            Some(Duration::from_secs(8)),
        )
        .unwrap();
    assert_eq!(sim.lease(), node_ip);
    // ARP: the router and a peer's address are answered, the device's own
    // address is not.
    let arp = |target: Ipv4Addr| {
        let mut f = Vec::new();
        f.extend_from_slice(&[0xff; 6]);
        f.extend_from_slice(&DEV_MAC);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
        f.extend_from_slice(&DEV_MAC);
        f.extend_from_slice(&node_ip.octets());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target.octets());
        f
    };
    for (target, answered) in [(box_ip, true), (laptop, true), (node_ip, false)] {
        sim.tap.clear();
        sim.device_sends(&arp(target));
        let replied = sim
            .tap
            .iter()
            .any(|f| f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[28..32] == target.octets());
        assert_eq!(replied, answered, "ARP for {target}");
    }
    // To a tailnet peer: to the device's node, not to the box's peers.
    sim.ip_frame_from_device(node_ip, laptop, b"to the laptop");
    assert_eq!(sim.to_node.len(), 1);
    assert_eq!(sim.to_node[0].0, meshbridge_types::Mac(DEV_MAC));
    assert!(sim.at_peer.is_empty() && sim.tun.is_empty());
    // Even to an address the box's own mesh routes.
    sim.ip_frame_from_device(node_ip, PEER_IP, b"to the box's peer");
    assert_eq!(sim.to_node.len(), 2);
    assert!(sim.at_peer.is_empty());
    // DNS to the box's tailnet address goes to the host.
    sim.ip_frame_from_device(node_ip, box_ip, b"dns");
    assert_eq!(sim.tun.len(), 1);
    // The node's packet for the device reaches it; one for another address does not.
    let back = icmp_echo(laptop, node_ip, true, 1, b"pong");
    sim.tap.clear();
    sim.engine
        .handle_node_packet(sim.now, meshbridge_types::Mac(DEV_MAC), &back);
    sim.settle();
    assert!(
        sim.tap.iter().any(|f| echo_reply_seq(f) == Some(1)),
        "the node's packet reaches the device"
    );
    let stray = icmp_echo(laptop, Ipv4Addr::new(100, 64, 0, 8), true, 2, b"pong");
    sim.tap.clear();
    sim.engine
        .handle_node_packet(sim.now, meshbridge_types::Mac(DEV_MAC), &stray);
    sim.settle();
    assert!(sim.tap.is_empty());
    assert_eq!(sim.engine.stats().node_misrouted, 1);
    // Another source address from the device is spoofed.
    let spoofed = sim.engine.stats().spoofed;
    sim.ip_frame_from_device(Ipv4Addr::new(100, 64, 0, 8), laptop, b"spoofed");
    assert_eq!(sim.engine.stats().spoofed, spoofed + 1);
    assert_eq!(sim.to_node.len(), 2);
    // With an exit node (`use_exit_node`), the device's internet goes to its
    // node (which has its own session with the exit node), even while the
    // box's own session with it is down; never to the box's uplink.
    sim.engine.set_exit_peer(Some(sim.peer_id));
    let tun = sim.tun.len();
    sim.ip_frame_from_device(node_ip, Ipv4Addr::new(203, 0, 113, 5), b"internet");
    assert_eq!(sim.to_node.len(), 3);
    assert_eq!(sim.tun.len(), tun);
    assert!(sim.at_peer.is_empty());
}
