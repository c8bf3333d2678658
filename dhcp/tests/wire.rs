//! Reply addressing (RFC 2131 §4.1) and robustness against hostile input.

mod common;

use std::net::Ipv4Addr;

use common::*;
use dhcproto::v4::{DhcpOption, Flags, HType, MessageType};
use meshbridge_dhcp::{Input, InputError, Mac};

fn input(payload: &[u8], src_port: u16, dst_port: u16) -> Input<'_> {
    Input {
        src_mac: mac(1),
        src_ip: Ipv4Addr::UNSPECIFIED,
        src_port,
        dst_port,
        payload,
    }
}

#[test]
fn offer_is_unicast_to_yiaddr_without_broadcast_flag() {
    let mut s = server();
    send(&mut s, t0(), &discover(mac(1))).unwrap();
    let (t, m) = one_reply(&mut s);
    assert_eq!((t.dst_ip, t.dst_mac), (m.yiaddr(), mac(1)));
    assert_eq!(
        (t.src_ip, t.src_mac, t.src_port, t.dst_port),
        (SERVER_IP, SERVER_MAC, 67, 68)
    );
}

#[test]
fn offer_and_ack_are_broadcast_when_the_client_asks() {
    let mut s = server();
    let mut d = discover(mac(1));
    d.set_flags(Flags::default().set_broadcast());
    send(&mut s, t0(), &d).unwrap();
    let (t, offer) = one_reply(&mut s);
    assert_eq!((t.dst_ip, t.dst_mac), (Ipv4Addr::BROADCAST, Mac([0xff; 6])));
    assert!(offer.flags().broadcast(), "flags echoed");
    let mut r = request_selecting(mac(1), offer.yiaddr(), SERVER_IP);
    r.set_flags(Flags::default().set_broadcast());
    send(&mut s, t0(), &r).unwrap();
    let (t, _) = one_reply(&mut s);
    assert_eq!((t.dst_ip, t.dst_mac), (Ipv4Addr::BROADCAST, Mac([0xff; 6])));
}

#[test]
fn nak_is_always_broadcast_and_renewal_ack_goes_to_ciaddr() {
    let mut s = server();
    let a = dora(&mut s, mac(1), t0());
    // Renewal from the bound client, even with the broadcast flag: ciaddr wins.
    let mut r = request_renew(mac(1), a);
    r.set_flags(Flags::default().set_broadcast());
    send(&mut s, t0(), &r).unwrap();
    let (t, _) = one_reply(&mut s);
    assert_eq!((t.dst_ip, t.dst_mac), (a, mac(1)));
    // A stranger renewing that address is NAKed by broadcast.
    send(&mut s, t0(), &request_renew(mac(2), a)).unwrap();
    let (t, m) = one_reply(&mut s);
    assert_eq!(msg_type(&m), Some(MessageType::Nak));
    assert_eq!((t.dst_ip, t.dst_mac), (Ipv4Addr::BROADCAST, Mac([0xff; 6])));
}

#[test]
fn relayed_requests_are_ignored_and_counted() {
    let mut s = server();
    let mut d = discover(mac(1));
    d.set_giaddr(Ipv4Addr::new(10, 9, 9, 1));
    let err = send(&mut s, t0(), &d).unwrap_err();
    assert!(matches!(err, InputError::Relayed { .. }));
    no_reply(&mut s);
    assert_eq!(s.stats().relayed, 1);
}

#[test]
fn non_ethernet_and_server_messages_are_refused() {
    let mut s = server();
    let mut d = discover(mac(1));
    d.set_htype(HType::IEEE802);
    assert!(matches!(
        send(&mut s, t0(), &d),
        Err(InputError::UnsupportedHardware { htype: 6, hlen: 6 })
    ));
    let m = client_msg(mac(1), MessageType::Offer, 1);
    assert!(matches!(
        send(&mut s, t0(), &m),
        Err(InputError::UnexpectedMessageType { msg_type: 2 })
    ));
    let mut bootp = discover(mac(1));
    bootp.opts_mut().clear();
    assert!(matches!(
        send(&mut s, t0(), &bootp),
        Err(InputError::MissingMessageType)
    ));
    assert_eq!(s.stats().unsupported, 2);
    no_reply(&mut s);
}

#[test]
fn group_or_zero_client_macs_are_refused() {
    let mut s = server();
    for bad in [[0xff; 6], [0x01, 0x00, 0x5e, 0, 0, 1], [0; 6]] {
        assert!(matches!(
            send(&mut s, t0(), &discover(Mac(bad))),
            Err(InputError::InvalidClientMac { .. })
        ));
    }
    no_reply(&mut s);
    assert_eq!(s.stats().malformed, 3);
}

#[test]
fn requests_without_an_address_are_malformed() {
    let mut s = server();
    let m = client_msg(mac(1), MessageType::Request, 1);
    assert!(matches!(
        send(&mut s, t0(), &m),
        Err(InputError::MissingAddress { .. })
    ));
    let mut m = client_msg(mac(1), MessageType::Decline, 1);
    m.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER_IP));
    assert!(matches!(
        send(&mut s, t0(), &m),
        Err(InputError::MissingAddress { .. })
    ));
    assert_eq!(s.stats().malformed, 2);
}

#[test]
fn garbage_input_returns_err_and_counts_malformed() {
    let mut s = server();
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![1],
        vec![0xff; 100],
        vec![0; 239],
        vec![0; 600],                                  // no magic cookie
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), // wrong protocol
    ];
    for (i, c) in cases.iter().enumerate() {
        assert!(s.handle_input(t0(), input(c, 68, 67)).is_err(), "case {i}");
        assert!(
            s.handle_input(t0(), input(c, 67, 68)).is_err(),
            "reply case {i}"
        );
    }
    assert_eq!(s.stats().malformed, 2 * cases.len() as u64);
    assert_eq!(s.stats().received, 2 * cases.len() as u64);
    no_reply(&mut s);
    assert!(events(&mut s).is_empty());
    assert!(!s.is_suspended());
}

#[test]
fn hlen_larger_than_chaddr_does_not_panic() {
    let mut s = server();
    let mut bytes = encode(&discover(mac(1)));
    bytes[2] = 200; // hlen
    assert!(matches!(
        s.handle_input(t0(), input(&bytes, 68, 67)),
        Err(InputError::UnsupportedHardware { hlen: 200, .. })
    ));
}

#[test]
fn other_ports_are_ignored() {
    let mut s = server();
    let bytes = encode(&discover(mac(1)));
    assert_eq!(s.handle_input(t0(), input(&bytes, 68, 68)), Ok(()));
    assert_eq!(
        s.handle_input(t0(), input(&bytes, 67, 68)),
        Ok(()),
        "a request to port 68 is not for us"
    );
    no_reply(&mut s);
    assert_eq!(s.stats().ignored, 2);
}

/// Small deterministic generator so the test needs no extra crates.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn options_whose_decoders_assert_their_length_are_harmless() {
    // dhcproto 0.15 `debug_assert!`s the length of a few options (80, 94,
    // 152..155) when decoding a whole message; a client can send any length.
    let mut s = server();
    let mut bytes = encode(&discover(mac(1)));
    assert_eq!(bytes.pop(), Some(255), "options end with End");
    bytes.extend_from_slice(&[80, 1, 0, 94, 1, 0, 152, 1, 0, 81, 1, 0, 255]);
    s.handle_input(t0(), input(&bytes, 68, 67)).unwrap();
    assert_eq!(msg_type(&one_reply(&mut s).1), Some(MessageType::Offer));
}

#[test]
fn hostname_that_is_not_utf8_is_kept_readable() {
    let mut s = server();
    send(&mut s, t0(), &discover(mac(1))).unwrap();
    let offered = one_reply(&mut s).1.yiaddr();
    let mut bytes = encode(&request_selecting(mac(1), offered, SERVER_IP));
    bytes.pop();
    bytes.extend_from_slice(&[12, 5, b'p', 0xff, b'r', b'n', b't', 255]);
    s.handle_input(t0(), input(&bytes, 68, 67)).unwrap();
    assert_eq!(msg_type(&one_reply(&mut s).1), Some(MessageType::Ack));
    assert_eq!(s.leases().next().unwrap().hostname.as_deref(), Some("prnt"));
}

#[test]
fn mutated_messages_never_panic() {
    let mut s = server();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut base_req = request_selecting(mac(3), ip(100), SERVER_IP);
    base_req
        .opts_mut()
        .insert(DhcpOption::Hostname("printer".into()));
    let seeds = [
        encode(&discover(mac(1))),
        encode(&base_req),
        encode(&request_renew(mac(2), ip(101))),
        encode(&foreign_offer(mac(4))),
    ];
    for i in 0..20_000u32 {
        let mut bytes = seeds[i as usize % seeds.len()].clone();
        let flips = 1 + rng.next() % 8;
        for _ in 0..flips {
            let pos = (rng.next() as usize) % bytes.len();
            bytes[pos] = rng.next() as u8;
        }
        if rng.next() & 3 == 0 {
            let cut = (rng.next() as usize) % bytes.len();
            bytes.truncate(cut);
        }
        let (sp, dp) = if rng.next() & 1 == 0 {
            (68, 67)
        } else {
            (67, 68)
        };
        let now = t0() + std::time::Duration::from_secs(u64::from(i));
        let _ = s.handle_input(now, input(&bytes, sp, dp));
        while s.poll_transmit().is_some() {}
        while s.poll_event().is_some() {}
        if i % 1000 == 0 {
            s.handle_timeout(now);
        }
    }
    assert_eq!(s.stats().received, 20_000);
}
