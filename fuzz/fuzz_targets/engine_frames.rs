//! Arbitrary frames, packets and datagrams into the engine from all three
//! sides: counted and dropped or forwarded, never a panic.
//!
//! Input: records `[kind, len_hi, len_lo, bytes...]`; kind % 4 picks TAP
//! frame, TUN packet, UDP datagram or a timer tick.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshbridge_engine::{Engine, EngineConfig, Now};
use meshbridge_dhcp::{LeaseDb, Mac, ServerConfig};
use meshbridge_mesh::{Mesh, PeerConfig, PrivateKey};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant, UNIX_EPOCH};

fuzz_target!(|data: &[u8]| {
    let key: PrivateKey = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=".parse().unwrap();
    // Fixed keys: a crash reproduces from its input alone.
    let peer = PrivateKey::from_bytes([0x42; 32]).public_key();
    let mono = Instant::now();
    let mut now = Now { mono, wall: UNIX_EPOCH + Duration::from_secs(1_800_000_000) };
    let mut mesh = Mesh::new(&key);
    mesh.add_peer(now.mono, PeerConfig {
        name: "p".into(),
        public_key: peer,
        preshared_key: None,
        endpoint: Some("198.51.100.2:51820".parse().unwrap()),
        allowed_ips: vec!["10.77.0.2/32".parse().unwrap()],
        persistent_keepalive: None,
    });
    let gw = Ipv4Addr::new(10, 77, 1, 1);
    let config = EngineConfig {
        mac: Mac([2, 0x6d, 0x62, 1, 2, 3]),
        bridge_address: "10.77.1.1/24".parse().unwrap(),
        mesh_address: "10.77.0.1/24".parse().unwrap(),
        policy: Default::default(),
        mtu: 1420,
        dhcp: ServerConfig {
            server_ip: gw,
            server_mac: Mac([2, 0x6d, 0x62, 1, 2, 3]),
            subnet_mask: Ipv4Addr::new(255, 255, 255, 0),
            range_start: Ipv4Addr::new(10, 77, 1, 100),
            range_end: Ipv4Addr::new(10, 77, 1, 200),
            router: Some(gw),
            dns: vec![gw],
            domain: Some("mesh.home.arpa".into()),
            mtu: Some(1420),
            lease_time: Duration::from_secs(3600),
            reservations: vec![],
            probe_interval: Some(Duration::from_secs(60)),
            node_leases: Vec::new(),
            hold_new: None,
            no_node: Vec::new(),
            serve: true,
        },
    };
    let mut engine = Engine::new(config, mesh, LeaseDb::empty(), now).unwrap();
    engine.start(now);
    let mut rest = data;
    while rest.len() >= 3 {
        let kind = rest[0] % 4;
        let len = (usize::from(rest[1]) << 8 | usize::from(rest[2])).min(rest.len() - 3);
        let body = &rest[3..3 + len];
        rest = &rest[3 + len..];
        match kind {
            0 => engine.handle_tap_frame(now, body),
            1 => engine.handle_tun_packet(now, body),
            2 => engine.handle_datagram(now, "198.51.100.2:51820".parse().unwrap(), body),
            _ => {
                now.mono += Duration::from_millis(300);
                now.wall += Duration::from_millis(300);
                engine.handle_timeout(now);
            }
        }
        while engine.poll_transmit().is_some() {}
        while engine.poll_event().is_some() {}
    }
});
