//! Behaviour of the ARP responder on a simulated bridge segment, driven on
//! virtual time. Frames are built and checked with etherparse.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use etherparse::{
    ArpEthIpv4Packet, ArpHardwareId, ArpOperation, ArpPacket, EtherType, Ethernet2Header,
};
use meshbridge_arp::{
    ArpError, Config, Event, Mac, Responder, ANNOUNCE_INTERVAL, DEFEND_INTERVAL, MAX_NEIGHBOURS,
    QUEUE_LIMIT,
};

const OURS: Mac = Mac([0x02, 0x4d, 0x42, 0x00, 0x00, 0x01]);
const PRINTER: Mac = Mac([0x00, 0x1b, 0xa9, 0x11, 0x22, 0x33]);
const LAPTOP: Mac = Mac([0x3c, 0x22, 0xfb, 0x44, 0x55, 0x66]);
const IMPOSTOR: Mac = Mac([0x00, 0x11, 0x32, 0x77, 0x88, 0x99]);
const BROADCAST: Mac = Mac([0xff; 6]);
const ZERO_MAC: Mac = Mac([0; 6]);

const GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
const PRINTER_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 20);
const LAPTOP_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 30);
/// In the segment's DHCP pool.
const LEASED_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 150);
/// A mesh destination the box routes.
const MESH_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 5);
/// Neither routed nor in the pool.
const OTHER_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 40);

fn routes(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[..3] == [10, 77, 0] || ip == LEASED_IP
}

fn local(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[..3] == [192, 168, 1] && (100..200).contains(&o[3])
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[allow(clippy::too_many_arguments)]
fn arp_frame(
    eth_destination: Mac,
    eth_source: Mac,
    operation: ArpOperation,
    sender_mac: Mac,
    sender_ip: Ipv4Addr,
    target_mac: Mac,
    target_ip: Ipv4Addr,
) -> Vec<u8> {
    let eth = Ethernet2Header {
        source: eth_source.0,
        destination: eth_destination.0,
        ether_type: EtherType::ARP,
    };
    let arp = ArpEthIpv4Packet {
        operation,
        sender_mac: sender_mac.0,
        sender_ipv4: sender_ip.octets(),
        target_mac: target_mac.0,
        target_ipv4: target_ip.octets(),
    };
    let mut frame = eth.to_bytes().to_vec();
    frame.extend_from_slice(&arp.to_bytes());
    frame
}

/// A broadcast who-has from `mac`/`ip` for `target`.
fn who_has(mac: Mac, ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    arp_frame(
        BROADCAST,
        mac,
        ArpOperation::REQUEST,
        mac,
        ip,
        ZERO_MAC,
        target,
    )
}

/// An RFC 5227 §2.1.1 probe: sender IP 0.0.0.0.
fn probe(mac: Mac, target: Ipv4Addr) -> Vec<u8> {
    who_has(mac, Ipv4Addr::UNSPECIFIED, target)
}

/// An ARP reply from `mac`/`ip` to us.
fn is_at(mac: Mac, ip: Ipv4Addr) -> Vec<u8> {
    arp_frame(OURS, mac, ArpOperation::REPLY, mac, ip, OURS, GATEWAY)
}

fn parse(frame: &[u8]) -> (Ethernet2Header, ArpEthIpv4Packet) {
    let (eth, rest) = Ethernet2Header::from_slice(frame).expect("ethernet header");
    assert_eq!(eth.ether_type, EtherType::ARP);
    let arp = ArpPacket::from_slice(rest)
        .expect("arp packet")
        .try_eth_ipv4()
        .expect("ethernet/ipv4 arp");
    (eth, arp)
}

/// A responder on virtual time.
struct Segment {
    arp: Responder,
    now: Instant,
}

impl Segment {
    fn new() -> Self {
        Self::with_config(Config::new(OURS, GATEWAY))
    }

    fn with_config(config: Config) -> Self {
        Self {
            arp: Responder::new(config),
            now: Instant::now(),
        }
    }

    fn feed(&mut self, frame: &[u8]) -> Result<(), ArpError> {
        self.arp.handle_frame(self.now, frame, &routes, &local)
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    fn transmitted(&mut self) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| self.arp.poll_transmit()).collect()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.arp.poll_event()).collect()
    }

    /// Feeds a request and returns the only reply, or `None` when the
    /// responder stayed silent.
    fn ask(&mut self, frame: &[u8]) -> Option<(Ethernet2Header, ArpEthIpv4Packet)> {
        self.feed(frame).expect("well-formed request");
        let mut out = self.transmitted();
        assert!(out.len() <= 1, "at most one reply per request");
        out.pop().map(|f| parse(&f))
    }
}

fn assert_reply_from_us(
    reply: &(Ethernet2Header, ArpEthIpv4Packet),
    for_ip: Ipv4Addr,
    to_mac: Mac,
    to_ip: Ipv4Addr,
) {
    let (eth, arp) = reply;
    assert_eq!(eth.destination, to_mac, "unicast to the requester");
    assert_eq!(eth.source, OURS);
    assert_eq!(arp.operation, ArpOperation::REPLY);
    assert_eq!(arp.sender_mac, OURS);
    assert_eq!(arp.sender_ipv4_addr(), for_ip);
    assert_eq!(arp.target_mac, to_mac);
    assert_eq!(arp.target_ipv4_addr(), to_ip);
}

#[test]
fn rfc826_request_for_gateway_is_answered_unicast_with_our_mac() {
    let mut seg = Segment::new();
    let reply = seg
        .ask(&who_has(PRINTER, PRINTER_IP, GATEWAY))
        .expect("gateway request answered");
    assert_reply_from_us(&reply, GATEWAY, PRINTER, PRINTER_IP);

    // The emitted frame is a plain, padded Ethernet II ARP frame.
    seg.feed(&who_has(PRINTER, PRINTER_IP, GATEWAY)).unwrap();
    let raw = seg.transmitted().pop().unwrap();
    assert_eq!(raw.len(), 60);
    let stats = seg.arp.stats();
    assert_eq!((stats.received, stats.replies, stats.refused), (2, 2, 0));
}

#[test]
fn gateway_is_answered_even_when_unicast_to_a_stale_mac() {
    let mut seg = Segment::new();
    let stale = Mac([0x02, 0, 0, 0, 0, 0x99]);
    let request = arp_frame(
        stale,
        LAPTOP,
        ArpOperation::REQUEST,
        LAPTOP,
        LAPTOP_IP,
        stale,
        GATEWAY,
    );
    let reply = seg.ask(&request).expect("answered");
    assert_reply_from_us(&reply, GATEWAY, LAPTOP, LAPTOP_IP);
}

#[test]
fn proxy_arp_answers_routed_mesh_address() {
    let mut seg = Segment::new();
    let reply = seg
        .ask(&who_has(PRINTER, PRINTER_IP, MESH_IP))
        .expect("mesh address answered");
    assert_reply_from_us(&reply, MESH_IP, PRINTER, PRINTER_IP);

    // Also when the request is unicast to us (cache refresh).
    let unicast = arp_frame(
        OURS,
        PRINTER,
        ArpOperation::REQUEST,
        PRINTER,
        PRINTER_IP,
        OURS,
        MESH_IP,
    );
    let reply = seg.ask(&unicast).expect("answered");
    assert_reply_from_us(&reply, MESH_IP, PRINTER, PRINTER_IP);
    assert_eq!(seg.arp.stats().replies, 2);
}

#[test]
fn proxy_arp_never_answers_unrouted_address() {
    let mut seg = Segment::new();
    assert!(seg.ask(&who_has(PRINTER, PRINTER_IP, OTHER_IP)).is_none());
    assert_eq!(seg.arp.stats().refused, 1);
    assert_eq!(seg.arp.stats().replies, 0);
}

#[test]
fn proxy_arp_never_answers_local_pool_address_even_if_routed() {
    let mut seg = Segment::new();
    assert!(routes(LEASED_IP) && local(LEASED_IP));
    assert!(seg.ask(&who_has(LAPTOP, LAPTOP_IP, LEASED_IP)).is_none());
    assert_eq!(seg.arp.stats().refused, 1);
}

#[test]
fn proxy_arp_never_answers_address_used_by_a_learned_neighbour() {
    let mut seg = Segment::new();
    // A device on the segment turns out to use a mesh address itself.
    seg.feed(&who_has(PRINTER, MESH_IP, GATEWAY)).unwrap();
    seg.transmitted();
    assert!(seg.ask(&who_has(LAPTOP, LAPTOP_IP, MESH_IP)).is_none());
    assert_eq!(seg.arp.stats().refused, 1);

    // Once that neighbour has expired, the address is ours to answer again.
    seg.advance(Config::new(OURS, GATEWAY).neighbour_ttl);
    seg.arp.handle_timeout(seg.now);
    assert!(seg.ask(&who_has(LAPTOP, LAPTOP_IP, MESH_IP)).is_some());
}

#[test]
fn gratuitous_announcement_of_routed_address_by_a_device_is_not_contradicted() {
    let mut seg = Segment::new();
    // RFC 5227 §2.3 announcement by a device: sender = target.
    assert!(seg.ask(&who_has(PRINTER, MESH_IP, MESH_IP)).is_none());
    assert_eq!(seg.arp.lookup(MESH_IP), Some(PRINTER));
}

#[test]
fn unicast_request_for_another_host_flooded_to_us_is_not_answered() {
    let mut seg = Segment::new();
    let request = arp_frame(
        PRINTER,
        LAPTOP,
        ArpOperation::REQUEST,
        LAPTOP,
        LAPTOP_IP,
        PRINTER,
        MESH_IP,
    );
    assert!(seg.ask(&request).is_none());
    assert_eq!(seg.arp.stats().refused, 1);
}

#[test]
fn requests_for_non_host_targets_are_never_answered() {
    let mut seg = Segment::new();
    let everything = |_: Ipv4Addr| true;
    let nothing = |_: Ipv4Addr| false;
    for target in [
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(224, 0, 0, 251),
        Ipv4Addr::LOCALHOST,
    ] {
        seg.arp
            .handle_frame(
                seg.now,
                &who_has(PRINTER, PRINTER_IP, target),
                &everything,
                &nothing,
            )
            .unwrap();
    }
    assert!(seg.transmitted().is_empty());
    assert_eq!(seg.arp.stats().refused, 4);
}

#[test]
fn rfc5227_probe_for_leased_address_is_ignored() {
    let mut seg = Segment::new();
    // A DHCP client probes the address it was offered (RFC 2131 §4.4.1);
    // an answer would make it decline the lease.
    assert!(seg.ask(&probe(LAPTOP, LEASED_IP)).is_none());
    // Probes are never answered for routed addresses either.
    assert!(seg.ask(&probe(LAPTOP, MESH_IP)).is_none());
    assert_eq!(seg.arp.stats().ignored_probes, 2);
    assert_eq!(seg.arp.stats().replies, 0);
    // Nothing is learned from a probe.
    assert_eq!(seg.arp.neighbours().count(), 0);
    assert!(seg.events().is_empty());
}

#[test]
fn rfc5227_probe_for_gateway_is_answered_to_defend_it() {
    let mut seg = Segment::new();
    let reply = seg.ask(&probe(LAPTOP, GATEWAY)).expect("gateway defended");
    assert_reply_from_us(&reply, GATEWAY, LAPTOP, Ipv4Addr::UNSPECIFIED);
    assert_eq!(seg.arp.stats().ignored_probes, 0);
    assert_eq!(seg.arp.stats().replies, 1);
}

#[test]
fn neighbours_are_learned_from_requests_and_replies() {
    let mut seg = Segment::new();
    seg.feed(&who_has(PRINTER, PRINTER_IP, OTHER_IP)).unwrap();
    seg.feed(&is_at(LAPTOP, LAPTOP_IP)).unwrap();
    assert_eq!(
        seg.events(),
        vec![
            Event::Learned {
                ip: PRINTER_IP,
                mac: PRINTER
            },
            Event::Learned {
                ip: LAPTOP_IP,
                mac: LAPTOP
            },
        ]
    );
    assert_eq!(seg.arp.lookup(PRINTER_IP), Some(PRINTER));
    assert_eq!(seg.arp.lookup(LAPTOP_IP), Some(LAPTOP));
    assert_eq!(seg.arp.lookup(OTHER_IP), None);
    // Replies are learned from, never answered.
    assert!(seg.transmitted().is_empty());

    // Seen again: no event, timestamp refreshed.
    seg.advance(secs(5));
    seg.feed(&who_has(PRINTER, PRINTER_IP, OTHER_IP)).unwrap();
    assert!(seg.events().is_empty());
    let printer = seg.arp.neighbours().find(|n| n.0 == PRINTER_IP).unwrap();
    assert_eq!(printer, (PRINTER_IP, PRINTER, seg.now));

    // The address moves to another MAC: learned again.
    seg.feed(&who_has(IMPOSTOR, PRINTER_IP, OTHER_IP)).unwrap();
    assert_eq!(
        seg.events(),
        vec![Event::Learned {
            ip: PRINTER_IP,
            mac: IMPOSTOR
        }]
    );
    assert_eq!(seg.arp.lookup(PRINTER_IP), Some(IMPOSTOR));
    assert_eq!(seg.arp.neighbours().count(), 2);
}

#[test]
fn conflict_on_gateway_address_is_reported_and_defended_once_per_interval() {
    let mut seg = Segment::new();
    // Another host announces our gateway address.
    seg.feed(&who_has(IMPOSTOR, GATEWAY, GATEWAY)).unwrap();
    assert_eq!(
        seg.events(),
        vec![Event::Conflict {
            ip: GATEWAY,
            mac: IMPOSTOR
        }]
    );
    assert_eq!(
        seg.arp.lookup(GATEWAY),
        None,
        "the conflicting host is not learned"
    );
    // RFC 5227 §2.4 (c): one broadcast announcement to defend the address.
    let out = seg.transmitted();
    assert_eq!(out.len(), 1);
    let (eth, arp) = parse(&out[0]);
    assert_eq!(eth.destination, BROADCAST);
    assert_eq!(arp.sender_ipv4_addr(), GATEWAY);
    assert_eq!(arp.target_ipv4_addr(), GATEWAY);

    // Within DEFEND_INTERVAL a second conflict is reported, not defended.
    seg.advance(secs(1));
    seg.feed(&is_at(IMPOSTOR, GATEWAY)).unwrap();
    assert_eq!(seg.events().len(), 1);
    assert!(seg.transmitted().is_empty());

    seg.advance(DEFEND_INTERVAL);
    seg.feed(&is_at(IMPOSTOR, GATEWAY)).unwrap();
    assert_eq!(seg.transmitted().len(), 1);
    let stats = seg.arp.stats();
    assert_eq!(
        (stats.conflicts, stats.announcements, stats.replies),
        (3, 2, 0)
    );
}

#[test]
fn rfc5227_announcements_are_two_gratuitous_requests_two_seconds_apart() {
    let mut seg = Segment::new();
    assert_eq!(seg.arp.poll_timeout(), None);
    let start = seg.now;
    seg.arp.announce(start);
    assert!(seg.transmitted().is_empty(), "driven by timeouts");

    let mut sent = Vec::new();
    // Step virtual time by 100 ms, honouring poll_timeout.
    for _ in 0..100 {
        if seg.arp.poll_timeout().is_some_and(|t| seg.now >= t) {
            seg.arp.handle_timeout(seg.now);
        }
        for frame in seg.transmitted() {
            sent.push((seg.now, frame));
        }
        seg.advance(Duration::from_millis(100));
    }
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].0, start);
    assert_eq!(sent[1].0 - sent[0].0, ANNOUNCE_INTERVAL);
    for (_, frame) in &sent {
        let (eth, arp) = parse(frame);
        assert_eq!(eth.destination, BROADCAST);
        assert_eq!(eth.source, OURS);
        assert_eq!(arp.operation, ArpOperation::REQUEST);
        assert_eq!(arp.sender_mac, OURS);
        assert_eq!(arp.sender_ipv4_addr(), GATEWAY);
        assert_eq!(arp.target_mac, ZERO_MAC);
        assert_eq!(arp.target_ipv4_addr(), GATEWAY);
    }
    assert_eq!(seg.arp.poll_timeout(), None);
    assert_eq!(seg.arp.stats().announcements, 2);
}

#[test]
fn announcement_timeouts_are_exact_and_early_calls_send_nothing() {
    let mut seg = Segment::new();
    let start = seg.now;
    seg.arp.announce(start);
    assert_eq!(seg.arp.poll_timeout(), Some(start));
    seg.arp.handle_timeout(start);
    assert_eq!(seg.transmitted().len(), 1);
    assert_eq!(seg.arp.poll_timeout(), Some(start + secs(2)));
    seg.arp.handle_timeout(start + secs(1));
    assert!(seg.transmitted().is_empty());
    seg.arp.handle_timeout(start + secs(2));
    assert_eq!(seg.transmitted().len(), 1);
    assert_eq!(seg.arp.poll_timeout(), None);
}

#[test]
fn neighbours_expire_after_ttl() {
    let ttl = secs(60);
    let mut seg = Segment::with_config(Config {
        mac: OURS,
        gateway: GATEWAY,
        neighbour_ttl: ttl,
    });
    let t0 = seg.now;
    seg.feed(&who_has(PRINTER, PRINTER_IP, GATEWAY)).unwrap();
    seg.advance(secs(10));
    seg.feed(&who_has(LAPTOP, LAPTOP_IP, GATEWAY)).unwrap();
    seg.transmitted();
    seg.events();
    assert_eq!(seg.arp.poll_timeout(), Some(t0 + ttl));

    seg.arp.handle_timeout(t0 + ttl - Duration::from_millis(1));
    assert_eq!(seg.arp.lookup(PRINTER_IP), Some(PRINTER));
    assert!(seg.events().is_empty());

    seg.arp.handle_timeout(t0 + ttl);
    assert_eq!(seg.arp.lookup(PRINTER_IP), None);
    assert_eq!(
        seg.events(),
        vec![Event::Expired {
            ip: PRINTER_IP,
            mac: PRINTER
        }]
    );
    assert_eq!(seg.arp.poll_timeout(), Some(t0 + secs(10) + ttl));
    seg.arp.handle_timeout(t0 + secs(10) + ttl);
    assert_eq!(seg.arp.neighbours().count(), 0);
    assert_eq!(seg.arp.poll_timeout(), None);
}

#[test]
fn traffic_keeps_a_neighbour_alive() {
    let mut seg = Segment::with_config(Config {
        neighbour_ttl: secs(60),
        ..Config::new(OURS, GATEWAY)
    });
    for _ in 0..5 {
        seg.feed(&is_at(PRINTER, PRINTER_IP)).unwrap();
        seg.advance(secs(50));
        seg.arp.handle_timeout(seg.now);
    }
    assert_eq!(seg.arp.lookup(PRINTER_IP), Some(PRINTER));
}

#[test]
fn full_neighbour_table_forgets_the_least_recently_seen() {
    let mut seg = Segment::new();
    for i in 0..MAX_NEIGHBOURS as u32 {
        let ip = Ipv4Addr::from(0x0a01_0000 + i);
        let mut mac = PRINTER;
        mac.0[2..].copy_from_slice(&i.to_be_bytes());
        seg.feed(&is_at(mac, ip)).unwrap();
        seg.events();
        seg.advance(Duration::from_millis(1));
    }
    seg.feed(&is_at(LAPTOP, LAPTOP_IP)).unwrap();
    let events = seg.events();
    assert!(matches!(
        events[0],
        Event::Expired { ip, .. } if ip == Ipv4Addr::new(10, 1, 0, 0)
    ));
    assert_eq!(
        events[1],
        Event::Learned {
            ip: LAPTOP_IP,
            mac: LAPTOP
        }
    );
    assert_eq!(seg.arp.neighbours().count(), MAX_NEIGHBOURS);
}

#[test]
fn frames_from_our_own_mac_are_ignored() {
    let mut seg = Segment::new();
    seg.arp.announce(seg.now);
    seg.arp.handle_timeout(seg.now);
    let own = seg.transmitted().pop().unwrap();
    assert_eq!(seg.feed(&own), Ok(()));
    // Our MAC inside the ARP packet of a frame from elsewhere.
    let spoofed = arp_frame(
        BROADCAST,
        LAPTOP,
        ArpOperation::REQUEST,
        OURS,
        LAPTOP_IP,
        ZERO_MAC,
        GATEWAY,
    );
    assert_eq!(seg.feed(&spoofed), Ok(()));
    assert!(seg.transmitted().is_empty());
    assert!(seg.events().is_empty());
    assert_eq!(seg.arp.stats().looped, 2);
    assert_eq!(seg.arp.stats().conflicts, 0);
}

#[test]
fn malformed_frames_are_counted_and_dropped() {
    let mut seg = Segment::new();
    let good = who_has(PRINTER, PRINTER_IP, GATEWAY);

    type Expect = fn(&ArpError) -> bool;
    let mut cases: Vec<(Vec<u8>, Expect)> = Vec::new();
    for len in [0, 5, 13, 14, 21, 41] {
        cases.push((good[..len].to_vec(), |e| {
            matches!(e, ArpError::Truncated { .. })
        }));
    }
    let mut ipv4 = good.clone();
    ipv4[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    cases.push((ipv4, |e| {
        matches!(e, ArpError::NotArp { ether_type: 0x0800 })
    }));
    let mut vlan = good.clone();
    vlan[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
    cases.push((vlan, |e| matches!(e, ArpError::NotArp { .. })));

    // Non-Ethernet hardware type and IPv6 protocol type, via etherparse.
    let ieee802 = ArpPacket::new(
        ArpHardwareId::IEEE802,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &PRINTER[..],
        &PRINTER_IP.octets(),
        &ZERO_MAC[..],
        &GATEWAY.octets(),
    )
    .unwrap();
    let ipv6 = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV6,
        ArpOperation::REQUEST,
        &PRINTER[..],
        &[0xfe; 16],
        &ZERO_MAC[..],
        &[0xfe; 16],
    )
    .unwrap();
    for packet in [ieee802, ipv6] {
        let mut frame = good[..14].to_vec();
        frame.extend_from_slice(&packet.to_bytes());
        cases.push((frame, |e| matches!(e, ArpError::NotEthernetIpv4 { .. })));
    }
    // Header announces longer addresses than the frame holds.
    let mut long_addrs = good.clone();
    long_addrs[14 + 4] = 200;
    cases.push((long_addrs, |e| matches!(e, ArpError::Truncated { .. })));

    let inarp = arp_frame(
        BROADCAST,
        PRINTER,
        ArpOperation(8),
        PRINTER,
        PRINTER_IP,
        ZERO_MAC,
        GATEWAY,
    );
    cases.push((inarp, |e| matches!(e, ArpError::UnknownOperation(8))));
    let group_sender = who_has(BROADCAST, PRINTER_IP, GATEWAY);
    cases.push((group_sender, |e| matches!(e, ArpError::InvalidSenderMac)));
    let zero_sender = who_has(ZERO_MAC, PRINTER_IP, GATEWAY);
    cases.push((zero_sender, |e| matches!(e, ArpError::InvalidSenderMac)));

    let n = cases.len() as u64;
    for (frame, expected) in cases {
        let err = seg.feed(&frame).expect_err("malformed frame rejected");
        assert!(expected(&err), "unexpected error {err:?} for {frame:02x?}");
        assert!(!err.to_string().is_empty());
    }
    assert!(seg.transmitted().is_empty());
    assert!(seg.events().is_empty());
    let stats = seg.arp.stats();
    assert_eq!((stats.received, stats.malformed), (n, n));

    // Trailing Ethernet padding is fine, and the responder still works.
    let mut padded = good.clone();
    padded.resize(60, 0);
    assert!(seg.ask(&padded).is_some());
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut seg = Segment::new();
    let everything = |_: Ipv4Addr| true;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        // xorshift64: deterministic, seedable.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let template = who_has(PRINTER, PRINTER_IP, MESH_IP);
    for round in 0..20_000 {
        let len = (next() % 80) as usize;
        let mut frame: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 2 == 0 {
            // Mostly-valid frames with a few flipped bytes reach deeper.
            frame = template.clone();
            for _ in 0..(next() % 4) {
                let i = (next() as usize) % frame.len();
                frame[i] = next() as u8;
            }
        }
        let _ = seg.arp.handle_frame(seg.now, &frame, &everything, &local);
        if round % 97 == 0 {
            seg.arp.announce(seg.now);
            seg.arp.request(seg.now, Ipv4Addr::from(next() as u32));
        }
        seg.advance(Duration::from_millis(next() % 500));
        seg.arp.handle_timeout(seg.now);
        seg.transmitted();
        seg.events();
    }
    assert_eq!(seg.arp.stats().received, 20_000);
}

#[test]
fn time_going_backwards_and_huge_ttl_do_not_panic() {
    let mut seg = Segment::with_config(Config {
        neighbour_ttl: Duration::MAX,
        ..Config::new(OURS, GATEWAY)
    });
    let later = seg.now + secs(100);
    seg.arp
        .handle_frame(later, &is_at(PRINTER, PRINTER_IP), &routes, &local)
        .unwrap();
    seg.feed(&is_at(PRINTER, PRINTER_IP)).unwrap();
    seg.arp.request(later, PRINTER_IP);
    seg.arp.request(seg.now, PRINTER_IP);
    seg.arp.handle_timeout(seg.now);
    assert_eq!(seg.arp.poll_timeout(), None, "never expires");
    assert_eq!(seg.arp.lookup(PRINTER_IP), Some(PRINTER));
    assert_eq!(seg.arp.stats().requests, 1);
}

#[test]
fn request_sends_who_has_from_gateway_at_most_once_per_second_per_address() {
    let mut seg = Segment::new();
    seg.arp.request(seg.now, PRINTER_IP);
    let out = seg.transmitted();
    assert_eq!(out.len(), 1);
    let (eth, arp) = parse(&out[0]);
    assert_eq!(eth.destination, BROADCAST);
    assert_eq!(eth.source, OURS);
    assert_eq!(arp.operation, ArpOperation::REQUEST);
    assert_eq!(arp.sender_mac, OURS);
    assert_eq!(arp.sender_ipv4_addr(), GATEWAY);
    assert_eq!(arp.target_mac, ZERO_MAC);
    assert_eq!(arp.target_ipv4_addr(), PRINTER_IP);

    // Again within the second: suppressed; another address is independent.
    seg.advance(Duration::from_millis(999));
    seg.arp.request(seg.now, PRINTER_IP);
    assert!(seg.transmitted().is_empty());
    seg.arp.request(seg.now, LAPTOP_IP);
    assert_eq!(seg.transmitted().len(), 1);

    seg.advance(Duration::from_millis(1));
    seg.arp.request(seg.now, PRINTER_IP);
    assert_eq!(seg.transmitted().len(), 1);

    // Never for ourselves or for non-host addresses.
    seg.arp.request(seg.now, GATEWAY);
    seg.arp.request(seg.now, Ipv4Addr::BROADCAST);
    seg.arp.request(seg.now, Ipv4Addr::UNSPECIFIED);
    assert!(seg.transmitted().is_empty());
    assert_eq!(seg.arp.stats().requests, 3);

    // The answer fills the table.
    seg.feed(&is_at(PRINTER, PRINTER_IP)).unwrap();
    assert_eq!(seg.arp.lookup(PRINTER_IP), Some(PRINTER));
}

#[test]
fn output_queues_are_bounded_when_not_drained() {
    let mut seg = Segment::new();
    for _ in 0..QUEUE_LIMIT + 10 {
        seg.feed(&who_has(PRINTER, PRINTER_IP, GATEWAY)).unwrap();
    }
    assert_eq!(seg.transmitted().len(), QUEUE_LIMIT);
    assert_eq!(seg.arp.stats().replies, QUEUE_LIMIT as u64);
    assert_eq!(seg.arp.stats().queue_overflows, 10);
}

#[test]
fn default_gateway_config_answers_nothing() {
    let mut seg = Segment::with_config(Config::default());
    seg.feed(&probe(LAPTOP, Ipv4Addr::UNSPECIFIED)).unwrap();
    seg.arp.announce(seg.now);
    seg.arp.handle_timeout(seg.now);
    seg.arp.request(seg.now, PRINTER_IP);
    assert!(seg.transmitted().is_empty());
    assert!(seg.events().is_empty());
}
