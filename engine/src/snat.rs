//! Source NAT from the mesh into the bridge (`[bridge] snat_from_mesh`).
//!
//! Chromecasts (and other devices) refuse connections whose source is not on
//! their own subnet. Packets from the mesh reach the bridge through the
//! engine, which writes them to the TAP itself, so the kernel's nftables
//! never sees them as routed traffic: the translation is done here, with a
//! small connection table like conntrack's. A flow that a mesh peer starts
//! towards a bridged device (a TCP SYN, a UDP datagram, an ICMP echo
//! request) leaves with the box's bridge address and a port of its own
//! ([`PORTS`]); the device's replies to that address and port are turned
//! back into the peer's address and port. Flows that a bridged device
//! started (its replies from the mesh) are left alone, as are fragments and
//! other protocols. Checksums are fixed incrementally (RFC 1624).
//!
//! The ports are above Linux's default ephemeral range (32768–60999), so
//! they never clash with the box's own connections from the same address.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

/// The ports (and ICMP identifiers) the box uses for translated flows.
pub const PORTS: RangeInclusive<u16> = 61001..=65535;
/// Idle TCP flows are forgotten after this long.
pub const TCP_IDLE: Duration = Duration::from_secs(2 * 3600);
/// Idle UDP and ICMP flows are forgotten after this long.
pub const UDP_IDLE: Duration = Duration::from_secs(180);
/// Flows started by bridged devices remembered at most.
const MAX_DEVICE_FLOWS: usize = 4096;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;

/// What happened to a packet on its way to the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToBridge {
    /// Left as it was (not translatable, or a reply to a device's flow).
    Unchanged,
    /// The source is now the box's bridge address.
    Translated,
    /// No port free for a new flow: drop it.
    Full,
}

/// Counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SnatStats {
    /// Packets translated towards the bridge.
    pub to_bridge: u64,
    /// Replies translated back towards the mesh.
    pub replies: u64,
    /// New flows dropped because every port was in use.
    pub full: u64,
    /// Flows created.
    pub flows: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    proto: u8,
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
}

#[derive(Debug, Clone, Copy)]
struct Flow {
    key: Key,
    last: Instant,
}

/// The connection table.
#[derive(Debug)]
pub struct Snat {
    addr: Ipv4Addr,
    by_key: HashMap<Key, u16>,
    by_port: HashMap<(u8, u16), Flow>,
    /// Flows a bridged device started, keyed as their replies from the mesh look.
    device_flows: HashMap<Key, Instant>,
    next: u16,
    stats: SnatStats,
}

/// The fields of a translatable packet.
struct L4 {
    ihl: usize,
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    /// TCP SYN without ACK, UDP, ICMP echo request: may start a flow.
    starts: bool,
}

fn parse(p: &[u8]) -> Option<L4> {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    if ihl < 20 || total > p.len() || total < ihl {
        return None;
    }
    // Fragments carry no (or partial) ports: not translated.
    let frag = u16::from_be_bytes([p[6], p[7]]);
    if frag & 0x3fff != 0 {
        return None;
    }
    let proto = p[9];
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    let l4 = &p[ihl..total];
    let be = |i: usize| u16::from_be_bytes([l4[i], l4[i + 1]]);
    match proto {
        TCP if l4.len() >= 20 => Some(L4 {
            ihl,
            proto,
            src,
            dst,
            sport: be(0),
            dport: be(2),
            starts: l4[13] & 0x12 == 0x02,
        }),
        UDP if l4.len() >= 8 => Some(L4 {
            ihl,
            proto,
            src,
            dst,
            sport: be(0),
            dport: be(2),
            starts: true,
        }),
        // Echo request (8) and reply (0): the identifier is the "port".
        ICMP if l4.len() >= 8 && (l4[0] == 8 || l4[0] == 0) => Some(L4 {
            ihl,
            proto,
            src,
            dst,
            sport: be(4),
            dport: be(4),
            starts: l4[0] == 8,
        }),
        _ => None,
    }
}

/// RFC 1624 eq. 3: the checksum after one 16-bit word changed.
fn adjust(sum: u16, old: u16, new: u16) -> u16 {
    let mut s = u32::from(!sum) + u32::from(!old) + u32::from(new);
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn words(a: Ipv4Addr) -> [u16; 2] {
    let o = a.octets();
    [
        u16::from_be_bytes([o[0], o[1]]),
        u16::from_be_bytes([o[2], o[3]]),
    ]
}

/// Rewrite the source (`src == true`) or destination address and port of a
/// parsed packet, fixing the IP and transport checksums.
fn rewrite(p: &mut [u8], l: &L4, src: bool, addr: Ipv4Addr, port: u16) {
    let (aoff, old_addr) = if src { (12, l.src) } else { (16, l.dst) };
    let old_port = if src { l.sport } else { l.dport };
    p[aoff..aoff + 4].copy_from_slice(&addr.octets());
    let mut ip_sum = u16::from_be_bytes([p[10], p[11]]);
    for (o, n) in words(old_addr).into_iter().zip(words(addr)) {
        ip_sum = adjust(ip_sum, o, n);
    }
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    let t = l.ihl;
    let (csum_off, port_off, pseudo) = match l.proto {
        TCP => (16, if src { 0 } else { 2 }, true),
        UDP => (6, if src { 0 } else { 2 }, true),
        _ => (2, 4, false),
    };
    p[t + port_off..t + port_off + 2].copy_from_slice(&port.to_be_bytes());
    let mut sum = u16::from_be_bytes([p[t + csum_off], p[t + csum_off + 1]]);
    if l.proto == UDP && sum == 0 {
        return; // no UDP checksum
    }
    if pseudo {
        for (o, n) in words(old_addr).into_iter().zip(words(addr)) {
            sum = adjust(sum, o, n);
        }
    }
    sum = adjust(sum, old_port, port);
    if l.proto == UDP && sum == 0 {
        sum = 0xffff;
    }
    p[t + csum_off..t + csum_off + 2].copy_from_slice(&sum.to_be_bytes());
}

impl Snat {
    /// Translate to `addr`, the box's bridge address.
    pub fn new(addr: Ipv4Addr) -> Self {
        Snat {
            addr,
            by_key: HashMap::new(),
            by_port: HashMap::new(),
            device_flows: HashMap::new(),
            next: *PORTS.start(),
            stats: SnatStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> SnatStats {
        self.stats
    }

    /// Flows in the table.
    pub fn len(&self) -> usize {
        self.by_port.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.by_port.is_empty()
    }

    fn idle(proto: u8) -> Duration {
        if proto == TCP {
            TCP_IDLE
        } else {
            UDP_IDLE
        }
    }

    /// Forget idle flows.
    pub fn expire(&mut self, now: Instant) {
        let by_key = &mut self.by_key;
        self.by_port.retain(|_, f| {
            let keep = now.saturating_duration_since(f.last) < Self::idle(f.key.proto);
            if !keep {
                by_key.remove(&f.key);
            }
            keep
        });
        self.device_flows
            .retain(|_, t| now.saturating_duration_since(*t) < UDP_IDLE);
    }

    fn allocate(&mut self, now: Instant, key: Key) -> Option<u16> {
        let n = usize::from(PORTS.end() - PORTS.start()) + 1;
        for round in 0..2 {
            for _ in 0..n {
                let port = self.next;
                self.next = if self.next == *PORTS.end() {
                    *PORTS.start()
                } else {
                    self.next + 1
                };
                if let std::collections::hash_map::Entry::Vacant(e) =
                    self.by_port.entry((key.proto, port))
                {
                    e.insert(Flow { key, last: now });
                    self.by_key.insert(key, port);
                    self.stats.flows += 1;
                    return Some(port);
                }
            }
            if round == 0 {
                self.expire(now);
            }
        }
        None
    }

    /// A packet from the mesh on its way to a bridged device: translate
    /// the source if it belongs to (or starts) a flow from the mesh.
    pub fn to_bridge(&mut self, now: Instant, packet: &mut [u8]) -> ToBridge {
        let Some(l) = parse(packet) else {
            return ToBridge::Unchanged;
        };
        let key = Key {
            proto: l.proto,
            src: l.src,
            sport: l.sport,
            dst: l.dst,
            dport: l.dport,
        };
        let port = match self.by_key.get(&key) {
            Some(p) => *p,
            None => {
                if !l.starts || l.src == self.addr {
                    return ToBridge::Unchanged;
                }
                // A reply to a flow the device started.
                if l.proto != TCP && self.device_flows.contains_key(&key) {
                    return ToBridge::Unchanged;
                }
                match self.allocate(now, key) {
                    Some(p) => p,
                    None => {
                        self.stats.full += 1;
                        return ToBridge::Full;
                    }
                }
            }
        };
        if let Some(f) = self.by_port.get_mut(&(l.proto, port)) {
            f.last = now;
        }
        rewrite(packet, &l, true, self.addr, port);
        self.stats.to_bridge += 1;
        ToBridge::Translated
    }

    /// A packet from a bridged device. Addressed to the box's bridge
    /// address and a translated port: turned back to the mesh peer's
    /// address and port (returns true). Anything else going to the mesh is
    /// remembered as a flow the device started, so its replies are left alone.
    pub fn from_bridge(&mut self, now: Instant, packet: &mut [u8]) -> bool {
        let Some(l) = parse(packet) else {
            return false;
        };
        if l.dst != self.addr {
            if l.proto != TCP && l.starts {
                let key = Key {
                    proto: l.proto,
                    src: l.dst,
                    sport: l.dport,
                    dst: l.src,
                    dport: l.sport,
                };
                if self.device_flows.len() >= MAX_DEVICE_FLOWS {
                    self.device_flows
                        .retain(|_, t| now.saturating_duration_since(*t) < UDP_IDLE);
                }
                if self.device_flows.len() < MAX_DEVICE_FLOWS
                    || self.device_flows.contains_key(&key)
                {
                    self.device_flows.insert(key, now);
                }
            }
            return false;
        }
        let Some(f) = self.by_port.get_mut(&(l.proto, l.dport)) else {
            return false;
        };
        // Only the device the flow went to may use it.
        if f.key.dst != l.src || (l.proto != ICMP && f.key.dport != l.sport) {
            return false;
        }
        f.last = now;
        let key = f.key;
        rewrite(packet, &l, false, key.src, key.sport);
        self.stats.replies += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    const PEER: Ipv4Addr = Ipv4Addr::new(10, 78, 1, 50);
    const DEV: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 20);
    const BOX: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 1);

    fn tcp(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16, syn: bool, ack: bool) -> Vec<u8> {
        let mut b = PacketBuilder::ipv4(src.octets(), dst.octets(), 64).tcp(sp, dp, 1, 1000);
        if syn {
            b = b.syn();
        }
        if ack {
            b = b.ack(1);
        }
        let mut v = Vec::new();
        b.write(&mut v, b"hello").unwrap();
        v
    }

    fn udp(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
            .udp(sp, dp)
            .write(&mut v, b"cast")
            .unwrap();
        v
    }

    /// The packet's checksums are right (parsed and recomputed by etherparse).
    fn checksums_ok(p: &[u8]) -> bool {
        let s = etherparse::SlicedPacket::from_ip(p).unwrap();
        let etherparse::NetSlice::Ipv4(ip) = s.net.unwrap() else {
            return false;
        };
        let h = ip.header().to_header();
        if h.calc_header_checksum() != h.header_checksum {
            return false;
        }
        match s.transport.unwrap() {
            etherparse::TransportSlice::Tcp(t) => {
                t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap() == t.checksum()
            }
            etherparse::TransportSlice::Udp(u) => {
                u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap() == u.checksum()
            }
            _ => true,
        }
    }

    #[test]
    fn a_connection_from_the_mesh_comes_from_the_box_and_its_replies_go_back() {
        let t = Instant::now();
        let mut s = Snat::new(BOX);
        let mut syn = tcp(PEER, 40000, DEV, 8009, true, false);
        assert_eq!(s.to_bridge(t, &mut syn), ToBridge::Translated);
        let l = parse(&syn).unwrap();
        assert_eq!(l.src, BOX);
        assert!(PORTS.contains(&l.sport));
        assert_eq!((l.dst, l.dport), (DEV, 8009));
        assert!(checksums_ok(&syn));
        // The device answers the box.
        let mut synack = tcp(DEV, 8009, BOX, l.sport, true, true);
        assert!(s.from_bridge(t, &mut synack));
        let r = parse(&synack).unwrap();
        assert_eq!((r.src, r.sport, r.dst, r.dport), (DEV, 8009, PEER, 40000));
        assert!(checksums_ok(&synack));
        // The rest of the flow uses the same port.
        let mut data = tcp(PEER, 40000, DEV, 8009, false, true);
        assert_eq!(s.to_bridge(t, &mut data), ToBridge::Translated);
        assert_eq!(parse(&data).unwrap().sport, l.sport);
        // Another device may not use the flow's port.
        let mut other = tcp(
            Ipv4Addr::new(10, 77, 1, 21),
            8009,
            BOX,
            l.sport,
            false,
            true,
        );
        assert!(!s.from_bridge(t, &mut other));
        assert_eq!(s.stats().flows, 1);
    }

    #[test]
    fn replies_to_flows_the_device_started_are_left_alone() {
        let t = Instant::now();
        let mut s = Snat::new(BOX);
        // TCP: a SYN-ACK from the mesh is no new flow.
        let mut synack = tcp(PEER, 80, DEV, 50000, true, true);
        assert_eq!(s.to_bridge(t, &mut synack), ToBridge::Unchanged);
        // UDP: the device asked first.
        let mut q = udp(DEV, 5000, PEER, 53);
        assert!(!s.from_bridge(t, &mut q));
        let mut a = udp(PEER, 53, DEV, 5000);
        assert_eq!(s.to_bridge(t, &mut a), ToBridge::Unchanged);
        assert_eq!(parse(&a).unwrap().src, PEER);
        // A UDP flow from the mesh is translated.
        let mut m = udp(PEER, 40001, DEV, 32768);
        assert_eq!(s.to_bridge(t, &mut m), ToBridge::Translated);
        assert!(checksums_ok(&m));
        assert!(!s.is_empty());
    }

    #[test]
    fn ping_is_translated_by_identifier() {
        let t = Instant::now();
        let mut s = Snat::new(BOX);
        let mut req = Vec::new();
        PacketBuilder::ipv4(PEER.octets(), DEV.octets(), 64)
            .icmpv4_echo_request(77, 1)
            .write(&mut req, b"ping")
            .unwrap();
        assert_eq!(s.to_bridge(t, &mut req), ToBridge::Translated);
        let l = parse(&req).unwrap();
        let icmp = etherparse::Icmpv4Slice::from_slice(&req[20..]).unwrap();
        let mut h = icmp.header();
        h.update_checksum(icmp.payload());
        assert_eq!(h.checksum, icmp.checksum());
        let mut reply = Vec::new();
        PacketBuilder::ipv4(DEV.octets(), BOX.octets(), 64)
            .icmpv4_echo_reply(l.sport, 1)
            .write(&mut reply, b"ping")
            .unwrap();
        assert!(s.from_bridge(t, &mut reply));
        let r = parse(&reply).unwrap();
        assert_eq!((r.dst, r.dport), (PEER, 77));
    }

    #[test]
    fn the_table_is_bounded_and_idle_flows_go() {
        let t = Instant::now();
        let mut s = Snat::new(BOX);
        let n = usize::from(PORTS.end() - PORTS.start()) + 1;
        for i in 0..n {
            let mut p = udp(PEER, 1 + i as u16, DEV, 9);
            assert_eq!(s.to_bridge(t, &mut p), ToBridge::Translated);
        }
        let mut p = udp(PEER, 1 + n as u16, DEV, 9);
        assert_eq!(s.to_bridge(t, &mut p), ToBridge::Full);
        assert_eq!(s.stats().full, 1);
        // After the idle time, ports are reused.
        let later = t + UDP_IDLE;
        assert_eq!(s.to_bridge(later, &mut p), ToBridge::Translated);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn garbage_and_fragments_pass_untouched() {
        let t = Instant::now();
        let mut s = Snat::new(BOX);
        let mut junk = vec![0x45, 0, 0, 10];
        assert_eq!(s.to_bridge(t, &mut junk), ToBridge::Unchanged);
        let mut frag = udp(PEER, 1, DEV, 2);
        frag[6] = 0x20; // more fragments
        assert_eq!(s.to_bridge(t, &mut frag), ToBridge::Unchanged);
        assert!(!s.from_bridge(t, &mut junk));
    }
}
