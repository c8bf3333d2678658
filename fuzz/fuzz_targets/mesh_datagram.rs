//! Arbitrary datagrams from arbitrary addresses into a `Mesh` with several
//! peers (fixed keys, so a crash reproduces), interleaved with peer-set
//! applies, sends and timer ticks: counted and dropped, never a panic.
//!
//! Input: records `[kind, a, b, len, bytes...]`; kind % 4 picks a datagram
//! (from 198.51.100.a:(b*257)), an apply of the peer subset `a` (bit i:
//! peer i, `b` varies endpoint/keepalive/psk), a packet sent to peer a % 4,
//! or a timer tick of `b` * 100 ms.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshbridge_mesh::{Mesh, PeerConfig, PeerSet, PresharedKey, PrivateKey};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

const PEERS: u8 = 4;

fn peer(i: u8, variant: u8) -> PeerConfig {
    PeerConfig {
        name: format!("p{i}"),
        public_key: PrivateKey::from_bytes([10 + i; 32]).public_key(),
        preshared_key: (variant & 1 == 1).then_some(PresharedKey([i; 32])),
        endpoint: (variant & 2 == 2).then(|| {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10 + i + (variant & 4))), 51820)
        }),
        allowed_ips: vec![
            format!("10.77.0.{}/32", 2 + i).parse().unwrap(),
            if variant & 8 == 8 { "0.0.0.0/0" } else { "10.77.9.0/24" }.parse().unwrap(),
        ],
        persistent_keepalive: (variant & 16 == 16).then_some(25),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let mut mesh = Mesh::new(&PrivateKey::from_bytes([1; 32]));
    mesh.apply(now, &(0..PEERS).map(|i| peer(i, 2)).collect::<PeerSet>());
    let mut rest = data;
    while rest.len() >= 4 {
        let (kind, a, b, len) = (rest[0], rest[1], rest[2], rest[3] as usize);
        rest = &rest[4..];
        let body = &rest[..len.min(rest.len())];
        rest = &rest[body.len()..];
        match kind % 4 {
            0 => {
                let src = SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::new(198, 51, 100, a)),
                    u16::from(b).wrapping_mul(257),
                );
                let _ = mesh.handle_datagram(src, body);
            }
            1 => {
                let set: PeerSet = (0..PEERS)
                    .filter(|i| a & (1 << i) != 0)
                    .map(|i| peer(i, b.rotate_left(u32::from(i))))
                    .collect();
                mesh.apply(now, &set);
                // Applying the same set again changes nothing.
                assert!(mesh.apply(now, &set).is_empty());
            }
            2 => {
                if let Some(id) = mesh.peer_status().get(usize::from(a % PEERS)).map(|p| p.id) {
                    let _ = mesh.send(id, body);
                }
            }
            _ => {
                now += Duration::from_millis(100 * u64::from(b));
                mesh.handle_timeout(now);
            }
        }
        while mesh.poll_output().is_some() {}
    }
});
