//! Deterministic simulation of the engine: a virtual bridged device speaks
//! DHCP and IPv4 in Ethernet frames, a virtual WireGuard peer (the mesh
//! crate's own `Mesh`, another boringtun) sits on the other side of a
//! virtual UDP link. No sockets, no root; virtual wall time.

use dhcproto::v4::{DhcpOption, Message, MessageType};
use dhcproto::{Decodable, Decoder, Encodable};
use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use meshbridge::engine::{Engine, EngineConfig, Now, Transmit};
use meshbridge_dhcp::{LeaseDb, ServerConfig};
use meshbridge_mesh::{Mesh, Output, PeerConfig, PrivateKey};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, UNIX_EPOCH};

const BOX_MAC: [u8; 6] = [2, 0x6d, 0x62, 1, 2, 3];
const DEV_MAC: [u8; 6] = [2, 0xde, 0xad, 0, 0, 1];
const GW: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 1);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

struct Sim {
    engine: Engine,
    peer: Mesh,
    peer_id: meshbridge_mesh::PeerId,
    box_addr: SocketAddr,
    peer_addr: SocketAddr,
    now: Now,
    /// Frames the engine wrote to the bridge.
    tap: Vec<Vec<u8>>,
    /// Packets the engine handed to the host.
    tun: Vec<Vec<u8>>,
    /// Packets the peer decrypted.
    at_peer: Vec<Vec<u8>>,
}

impl Sim {
    fn new() -> Sim {
        let box_key = PrivateKey::generate();
        let peer_key = PrivateKey::generate();
        let box_addr: SocketAddr = "198.51.100.1:51820".parse().unwrap();
        let peer_addr: SocketAddr = "198.51.100.2:51820".parse().unwrap();
        let now = Now {
            mono: Instant::now(),
            wall: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
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
            mac: BOX_MAC,
            bridge_address: "10.77.1.1/24".parse().unwrap(),
            mesh_address: "10.77.0.1/24".parse().unwrap(),
            policy: Default::default(),
            mtu: 1420,
            dhcp: ServerConfig {
                server_ip: GW,
                server_mac: BOX_MAC,
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
            tap: vec![],
            tun: vec![],
            at_peer: vec![],
        };
        sim.settle();
        sim.tap.clear(); // gratuitous ARP
        sim
    }

    /// Move every datagram across the virtual link until both sides are quiet.
    fn settle(&mut self) {
        for _ in 0..50 {
            let mut moved = false;
            while let Some(t) = self.engine.poll_transmit() {
                moved = true;
                match t {
                    Transmit::Tap(f) => self.tap.push(f),
                    Transmit::Tun(p) => self.tun.push(p),
                    Transmit::Udp(to, d) => {
                        assert_eq!(to, self.peer_addr);
                        let _ = self.peer.handle_datagram(self.box_addr, &d);
                    }
                }
            }
            while self.engine.poll_event().is_some() {}
            while let Some(o) = self.peer.poll_output() {
                moved = true;
                match o {
                    Output::Datagram(to, d) => {
                        assert_eq!(to, self.box_addr);
                        self.engine.handle_datagram(self.now, self.peer_addr, &d);
                    }
                    Output::Packet(_, p) => self.at_peer.push(p),
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the simulation did not settle");
    }

    fn dhcp_from_device(&mut self, m: &Message) -> Message {
        let payload = m.to_vec().unwrap();
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(DEV_MAC, [0xff; 6])
            .ipv4([0, 0, 0, 0], [255, 255, 255, 255], 64)
            .udp(68, 67)
            .write(&mut frame, &payload)
            .unwrap();
        self.engine.handle_tap_frame(self.now, &frame);
        self.settle();
        let reply = self.tap.pop().expect("a DHCP reply");
        let s = SlicedPacket::from_ethernet(&reply).unwrap();
        let Some(TransportSlice::Udp(u)) = s.transport else {
            panic!("not UDP")
        };
        assert_eq!((u.source_port(), u.destination_port()), (67, 68));
        Message::decode(&mut Decoder::new(u.payload())).unwrap()
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
        self.engine.handle_tap_frame(self.now, &frame);
        self.settle();
    }
}

#[test]
fn leased_device_reaches_peer_and_peer_reaches_device() {
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
