//! Arbitrary bytes as DHCP traffic on the bridge: the server must never
//! panic, must only emit well-addressed datagrams from its own (or its
//! probe's) MAC, must never give one address to two MACs, and its lease
//! snapshot must always read back.
//!
//! The first byte picks the configuration (probing on or off). The rest is
//! a sequence of records `[flags, len_hi, len_lo, payload...]`: bit 0 of
//! `flags` sends the payload as a server reply (67 -> 68) instead of a
//! client request (68 -> 67), bit 1 makes it come from a foreign MAC, bit 7
//! also runs timers and an ARP sighting, and bits 2..6 advance virtual time.
//! Finally the whole input is fed once more as a single payload in both
//! directions.

#![no_main]

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use meshbridge_dhcp::{probe_mac, Input, LeaseDb, Mac, Server, ServerConfig};

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
const SERVER_MAC: Mac = Mac([0x02, 0x4d, 0x42, 0x00, 0x00, 0x01]);
const FOREIGN_MAC: Mac = Mac([0x00, 0x1a, 0x2b, 0x3c, 0x4d, 0x5e]);

fn config(probing: bool) -> ServerConfig {
    ServerConfig {
        server_ip: SERVER_IP,
        server_mac: SERVER_MAC,
        subnet_mask: Ipv4Addr::new(255, 255, 255, 0),
        // A small pool so that exhaustion and reuse are reachable.
        range_start: Ipv4Addr::new(192, 168, 50, 100),
        range_end: Ipv4Addr::new(192, 168, 50, 103),
        router: Some(SERVER_IP),
        dns: vec![SERVER_IP],
        domain: Some("home.arpa".into()),
        mtu: Some(1420),
        lease_time: Duration::from_secs(600),
        reservations: vec![(
            Mac([0x00, 0x11, 0x22, 0x33, 0x44, 0x55]),
            Ipv4Addr::new(192, 168, 50, 20),
        )],
        probe_interval: probing.then_some(Duration::from_secs(60)),
        node_leases: Vec::new(),
        hold_new: None,
        no_node: Vec::new(),
        serve: true,
    }
}

fn drain(server: &mut Server, now: SystemTime) {
    let probe = probe_mac(SERVER_MAC);
    while let Some(t) = server.poll_transmit() {
        assert!(
            t.payload.len() >= 300,
            "reply shorter than the BOOTP minimum"
        );
        if t.src_mac == probe {
            assert_eq!((t.src_port, t.dst_port), (68, 67));
            assert_eq!(t.dst_ip, Ipv4Addr::BROADCAST);
        } else {
            assert_eq!(t.src_mac, SERVER_MAC, "datagram from a foreign MAC");
            assert_eq!((t.src_ip, t.src_port, t.dst_port), (SERVER_IP, 67, 68));
            assert!(t.dst_ip == Ipv4Addr::BROADCAST || t.dst_mac != [0xff; 6]);
        }
    }
    while server.poll_event().is_some() {}
    let mut active = BTreeSet::new();
    for lease in server.leases().filter(|l| l.is_active(now)) {
        assert!(active.insert(lease.ip), "{} leased twice", lease.ip);
        assert_eq!(server.active_mac_for(lease.ip, now), Some(lease.mac));
    }
}

fn feed(server: &mut Server, now: SystemTime, src_mac: Mac, reply: bool, payload: &[u8]) {
    let (src_port, dst_port) = if reply { (67, 68) } else { (68, 67) };
    let src_ip = if reply {
        Ipv4Addr::new(192, 168, 50, 254)
    } else {
        Ipv4Addr::UNSPECIFIED
    };
    let _ = server.handle_input(
        now,
        Input {
            src_mac,
            src_ip,
            src_port,
            dst_port,
            payload,
        },
    );
    drain(server, now);
}

fuzz_target!(|data: &[u8]| {
    let (control, mut rest) = data.split_at(data.len().min(1));
    let probing = control.first().is_some_and(|b| b & 1 == 1);
    let mut now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let Ok(mut server) = Server::new(config(probing), LeaseDb::empty(), now) else {
        panic!("fuzz config must be valid");
    };
    server.handle_timeout(now);
    drain(&mut server, now);

    while rest.len() >= 3 {
        let flags = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        let body = &rest[3..];
        let (payload, tail) = body.split_at(len.min(body.len()));
        rest = tail;
        now += Duration::from_secs(u64::from((flags >> 2) & 0x1f) * 7);
        // Client requests usually come from their chaddr.
        let src_mac = match (flags & 2 != 0, payload.get(28..34)) {
            (false, Some(chaddr)) => chaddr.try_into().unwrap_or(FOREIGN_MAC),
            _ => FOREIGN_MAC,
        };
        feed(&mut server, now, src_mac, flags & 1 != 0, payload);
        if flags & 0x80 != 0 {
            server.handle_timeout(now);
            let last = payload.first().copied().unwrap_or(100);
            server.note_in_use(Ipv4Addr::new(192, 168, 50, last), src_mac, now);
            drain(&mut server, now);
        }
    }

    feed(&mut server, now, FOREIGN_MAC, false, data);
    feed(&mut server, now, FOREIGN_MAC, true, data);

    let text = server.snapshot().to_json();
    let restored = LeaseDb::from_json(&text).expect("the server's own snapshot must read back");
    assert_eq!(restored.len(), server.leases().count());
    let _ = server.set_config(config(!probing));
    drain(&mut server, now);
});
