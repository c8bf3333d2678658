//! The tailnet's packet filter: which packets from tailnet peers may enter
//! the box and its bridged devices. Sans-IO, time passed in.
//!
//! The control server sends the tailnet's ACLs/grants compiled into
//! `tailcfg.FilterRule`s (the daemon reads them from the netmap and builds
//! [`Rule`]s with [`Rule::parse`]). Facts, from tailscale.com
//! `wgengine/filter/tailcfg.go` (`MatchesFromFilterRules`, `parseIPSet`)
//! and `wgengine/filter/filter.go` (`runIn4`, `runIn6`, `runOut`):
//!
//! * An address spec is `*` (every IPv4 and IPv6 address), an address, a
//!   CIDR prefix (host bits set: invalid), or a range `a-b` (same family,
//!   `a <= b`). `cap:<name>` entries name peer capabilities, not addresses:
//!   they match no address here. A spec that does not parse is skipped
//!   (counted), the rest of the rule stays.
//! * `IPProto` empty means TCP, UDP, ICMPv4 and ICMPv6; numbers outside
//!   0..=255 are ignored.
//! * A rule matches a packet when its protocol is listed, its source is in
//!   `SrcIPs` and one `DstPorts` entry holds its destination address and
//!   port. ICMP needs only the addresses (any port range); other protocols
//!   without ports need a destination entry covering all ports.
//! * ICMP errors are let in. `CapGrant` (application capabilities) is
//!   ignored: it grants nothing at the IP layer.
//!
//! Where we differ: Tailscale lets every TCP segment that is not a bare
//! SYN in, and every ICMP echo reply. This filter is stateful for all of
//! them ([`ConnTrack`]): a packet from a tailnet peer enters when a rule
//! matches it, or when it belongs to a flow the box or a bridged device
//! started toward that peer (any packet going out creates or refreshes the
//! flow, so state lost to a restart or to eviction comes back with the next
//! packet out). Fragments after the first are let in, as Tailscale does:
//! without their first fragment they are never reassembled.

use etherparse::{
    IpNumber, Ipv6ExtensionSlice, NetSlice, SlicedPacket, TcpHeaderSlice, TransportSlice,
    UdpHeaderSlice,
};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

/// ICMPv4's protocol number.
pub const ICMPV4: u8 = 1;
/// TCP's protocol number.
pub const TCP: u8 = 6;
/// UDP's protocol number.
pub const UDP: u8 = 17;
/// ICMPv6's protocol number.
pub const ICMPV6: u8 = 58;
/// The protocols of a rule with an empty `IPProto`.
pub const DEFAULT_PROTOS: [u8; 4] = [TCP, UDP, ICMPV4, ICMPV6];

/// An inclusive range of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpRange {
    /// IPv4, first and last as numbers.
    V4(u32, u32),
    /// IPv6, first and last as numbers.
    V6(u128, u128),
}

impl IpRange {
    /// Whether `ip` is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (IpRange::V4(a, b), IpAddr::V4(ip)) => (*a..=*b).contains(&u32::from(ip)),
            (IpRange::V6(a, b), IpAddr::V6(ip)) => (*a..=*b).contains(&u128::from(ip)),
            _ => false,
        }
    }
}

/// An address spec that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    /// Not `*`, an address, a prefix or a range.
    #[error("{0:?} is not an address, prefix, range or *")]
    BadSpec(String),
    /// A prefix with bits set past its length (`10.0.0.1/24`).
    #[error("{0:?} has host bits set")]
    HostBits(String),
    /// A range whose end is before its start, or mixes families.
    #[error("{0:?} is not a valid range")]
    BadRange(String),
}

/// Parse one address spec of a filter rule (see the module docs). A
/// `cap:` spec is no address: an empty list.
pub fn parse_spec(spec: &str) -> Result<Vec<IpRange>, FilterError> {
    let s = spec.trim();
    if s == "*" {
        return Ok(vec![IpRange::V4(0, u32::MAX), IpRange::V6(0, u128::MAX)]);
    }
    if s.starts_with("cap:") {
        return Ok(Vec::new());
    }
    if let Some((addr, len)) = s.split_once('/') {
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| FilterError::BadSpec(spec.to_string()))?;
        let len: u8 = len
            .parse()
            .map_err(|_| FilterError::BadSpec(spec.to_string()))?;
        let net = ipnet::IpNet::new(ip, len).map_err(|_| FilterError::BadSpec(spec.to_string()))?;
        if net.network() != ip {
            return Err(FilterError::HostBits(spec.to_string()));
        }
        return Ok(vec![match (net.network(), net.broadcast()) {
            (IpAddr::V4(a), IpAddr::V4(b)) => IpRange::V4(a.into(), b.into()),
            (IpAddr::V6(a), IpAddr::V6(b)) => IpRange::V6(a.into(), b.into()),
            _ => return Err(FilterError::BadSpec(spec.to_string())),
        }]);
    }
    if s.matches('-').count() == 1 {
        let (a, b) = s.split_once('-').unwrap_or_default();
        let bad = || FilterError::BadSpec(spec.to_string());
        let a: IpAddr = a.trim().parse().map_err(|_| bad())?;
        let b: IpAddr = b.trim().parse().map_err(|_| bad())?;
        return match (a, b) {
            (IpAddr::V4(a), IpAddr::V4(b)) if a <= b => Ok(vec![IpRange::V4(a.into(), b.into())]),
            (IpAddr::V6(a), IpAddr::V6(b)) if a <= b => Ok(vec![IpRange::V6(a.into(), b.into())]),
            _ => Err(FilterError::BadRange(spec.to_string())),
        };
    }
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => Ok(vec![IpRange::V4(a.into(), a.into())]),
        Ok(IpAddr::V6(a)) => Ok(vec![IpRange::V6(a.into(), a.into())]),
        Err(_) => Err(FilterError::BadSpec(spec.to_string())),
    }
}

/// A destination of a rule: addresses and an inclusive port range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DstRange {
    /// The addresses.
    pub ip: IpRange,
    /// First port.
    pub first: u16,
    /// Last port.
    pub last: u16,
}

/// One rule, compiled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// Sources.
    pub srcs: Vec<IpRange>,
    /// Destinations with their ports.
    pub dsts: Vec<DstRange>,
    /// IP protocol numbers.
    pub protos: Vec<u8>,
}

impl Rule {
    /// Compile a rule from its tailcfg parts: source specs, destination
    /// specs with port ranges, protocol numbers (empty: the defaults).
    /// Specs that do not parse are left out and counted in the second
    /// value.
    pub fn parse<'a>(
        src_ips: impl IntoIterator<Item = &'a str>,
        dst_ports: impl IntoIterator<Item = (&'a str, u16, u16)>,
        ip_proto: &[i32],
    ) -> (Rule, usize) {
        let mut bad = 0;
        let mut rule = Rule::default();
        for s in src_ips {
            match parse_spec(s) {
                Ok(r) => rule.srcs.extend(r),
                Err(_) => bad += 1,
            }
        }
        for (s, first, last) in dst_ports {
            match parse_spec(s) {
                Ok(r) => rule
                    .dsts
                    .extend(r.into_iter().map(|ip| DstRange { ip, first, last })),
                Err(_) => bad += 1,
            }
        }
        rule.protos = if ip_proto.is_empty() {
            DEFAULT_PROTOS.to_vec()
        } else {
            ip_proto
                .iter()
                .filter_map(|p| u8::try_from(*p).ok())
                .collect()
        };
        (rule, bad)
    }

    fn matches(&self, f: &Flow, ports: PortMatch) -> bool {
        self.protos.contains(&f.proto)
            && self.srcs.iter().any(|r| r.contains(f.src))
            && self.dsts.iter().any(|d| {
                d.ip.contains(f.dst)
                    && match ports {
                        PortMatch::Port(p) => (d.first..=d.last).contains(&p),
                        PortMatch::Any => true,
                        PortMatch::All => d.first == 0 && d.last == u16::MAX,
                    }
            })
    }
}

#[derive(Clone, Copy)]
enum PortMatch {
    /// The destination port must be in the range (TCP, UDP).
    Port(u16),
    /// Any range will do (ICMP).
    Any,
    /// Only a rule for every port (protocols without ports).
    All,
}

/// The rules in force. The default allows nothing (Tailscale's filter
/// before the first netmap).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    rules: Vec<Rule>,
}

impl Filter {
    /// A filter of these rules.
    pub fn new(rules: Vec<Rule>) -> Self {
        Filter { rules }
    }

    /// Allows nothing.
    pub fn deny_all() -> Self {
        Filter::default()
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether a rule lets this flow in as a new connection.
    pub fn allows(&self, f: &Flow) -> bool {
        let ports = match f.kind {
            Kind::Tcp { .. } | Kind::Udp => PortMatch::Port(f.dport),
            Kind::IcmpEcho { .. } | Kind::IcmpOther => PortMatch::Any,
            Kind::IcmpError => return true,
            Kind::Other => PortMatch::All,
        };
        self.rules.iter().any(|r| r.matches(f, ports))
    }
}

/// What kind of packet, as far as the filter cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// TCP; `syn`: a SYN without ACK (a new connection).
    Tcp {
        /// SYN set, ACK clear.
        syn: bool,
    },
    /// UDP.
    Udp,
    /// ICMP echo request or reply (ports are the identifier).
    IcmpEcho {
        /// A reply.
        reply: bool,
    },
    /// ICMP error (unreachable, time exceeded, parameter problem, too big).
    IcmpError,
    /// Other ICMP.
    IcmpOther,
    /// Another protocol (ports 0).
    Other,
}

/// A packet's flow: what the filter and the connection table look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// IP protocol number.
    pub proto: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (the echo identifier for ICMP echo; else 0).
    pub sport: u16,
    /// Destination port (the echo identifier for ICMP echo; else 0).
    pub dport: u16,
    /// What kind of packet.
    pub kind: Kind,
}

/// What [`flow_of`] makes of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A packet with its flow.
    Flow(Flow),
    /// A fragment after the first (no transport header).
    LaterFragment,
    /// Not a packet we can read.
    Malformed,
}

/// The flow of an IPv4 or IPv6 packet.
pub fn flow_of(packet: &[u8]) -> Parsed {
    let Ok(sliced) = SlicedPacket::from_ip(packet) else {
        return Parsed::Malformed;
    };
    let (src, dst, payload) = match &sliced.net {
        Some(NetSlice::Ipv4(v4)) => {
            let h = v4.header();
            if v4.is_payload_fragmented() && h.fragments_offset().value() != 0 {
                return Parsed::LaterFragment;
            }
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                v4.payload(),
            )
        }
        Some(NetSlice::Ipv6(v6)) => {
            if v6.is_payload_fragmented() {
                let later = v6.extensions().clone().into_iter().any(|e| {
                    matches!(e, Ipv6ExtensionSlice::Fragment(f) if f.fragment_offset().value() != 0)
                });
                if later {
                    return Parsed::LaterFragment;
                }
            }
            let h = v6.header();
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                v6.payload(),
            )
        }
        _ => return Parsed::Malformed,
    };
    let proto = payload.ip_number.0;
    let mut flow = Flow {
        proto,
        src,
        dst,
        sport: 0,
        dport: 0,
        kind: Kind::Other,
    };
    match &sliced.transport {
        Some(TransportSlice::Tcp(t)) => {
            (flow.sport, flow.dport) = (t.source_port(), t.destination_port());
            flow.kind = Kind::Tcp {
                syn: t.syn() && !t.ack(),
            };
        }
        Some(TransportSlice::Udp(u)) => {
            (flow.sport, flow.dport) = (u.source_port(), u.destination_port());
            flow.kind = Kind::Udp;
        }
        Some(TransportSlice::Icmpv4(i)) => {
            use etherparse::Icmpv4Type as T;
            flow.kind = match i.icmp_type() {
                T::EchoRequest(e) | T::EchoReply(e) => {
                    (flow.sport, flow.dport) = (e.id, e.id);
                    Kind::IcmpEcho {
                        reply: matches!(i.icmp_type(), T::EchoReply(_)),
                    }
                }
                T::DestinationUnreachable(_) | T::TimeExceeded(_) | T::ParameterProblem(_) => {
                    Kind::IcmpError
                }
                _ => Kind::IcmpOther,
            };
        }
        Some(TransportSlice::Icmpv6(i)) => {
            use etherparse::Icmpv6Type as T;
            flow.kind = match i.icmp_type() {
                T::EchoRequest(e) | T::EchoReply(e) => {
                    (flow.sport, flow.dport) = (e.id, e.id);
                    Kind::IcmpEcho {
                        reply: matches!(i.icmp_type(), T::EchoReply(_)),
                    }
                }
                T::DestinationUnreachable(_)
                | T::PacketTooBig { .. }
                | T::TimeExceeded(_)
                | T::ParameterProblem(_) => Kind::IcmpError,
                _ => Kind::IcmpOther,
            };
        }
        Some(_) => {}
        None => {
            // The first fragment: etherparse leaves its transport header
            // unread; read the ports from it (a too short one is malformed).
            let data = payload.payload;
            if payload.ip_number == IpNumber::TCP {
                let Ok(t) = TcpHeaderSlice::from_slice(data) else {
                    return Parsed::Malformed;
                };
                (flow.sport, flow.dport) = (t.source_port(), t.destination_port());
                flow.kind = Kind::Tcp {
                    syn: t.syn() && !t.ack(),
                };
            } else if payload.ip_number == IpNumber::UDP {
                let Ok(u) = UdpHeaderSlice::from_slice(data) else {
                    return Parsed::Malformed;
                };
                (flow.sport, flow.dport) = (u.source_port(), u.destination_port());
                flow.kind = Kind::Udp;
            } else if proto == ICMPV4 || proto == ICMPV6 {
                // A fragmented ICMP message: treat it as an echo-less ICMP.
                flow.kind = Kind::IcmpOther;
            }
        }
    }
    Parsed::Flow(flow)
}

/// How long a flow is remembered after its last packet out: TCP.
pub const TCP_IDLE: Duration = Duration::from_secs(2 * 60 * 60);
/// How long a flow is remembered after its last packet out: UDP and others.
pub const UDP_IDLE: Duration = Duration::from_secs(5 * 60);
/// How long a flow is remembered after its last packet out: ICMP echo.
pub const ICMP_IDLE: Duration = Duration::from_secs(30);
/// Default capacity of the connection table.
pub const CONNTRACK_CAPACITY: usize = 4096;

/// A flow as the box (or a bridged device) started it: local side first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    proto: u8,
    local: (IpAddr, u16),
    remote: (IpAddr, u16),
}

/// The flows the box and its bridged devices started toward tailnet peers,
/// keyed by 5-tuple, each until an idle time after its last packet out.
/// Bounded: when full, expired entries go, then the one closest to expiry.
#[derive(Debug, Clone)]
pub struct ConnTrack {
    flows: HashMap<Key, Instant>,
    capacity: usize,
    evicted: u64,
}

impl Default for ConnTrack {
    fn default() -> Self {
        ConnTrack::new(CONNTRACK_CAPACITY)
    }
}

fn idle_time(f: &Flow) -> Duration {
    match f.kind {
        Kind::Tcp { .. } => TCP_IDLE,
        Kind::IcmpEcho { .. } | Kind::IcmpError | Kind::IcmpOther => ICMP_IDLE,
        Kind::Udp | Kind::Other => UDP_IDLE,
    }
}

impl ConnTrack {
    /// A table for at most `capacity` flows (at least one).
    pub fn new(capacity: usize) -> Self {
        ConnTrack {
            flows: HashMap::new(),
            capacity: capacity.max(1),
            evicted: 0,
        }
    }

    /// Flows in the table (expired ones included until they are swept).
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Live flows pushed out because the table was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// A packet going out to a tailnet peer: its flow is (again) live.
    /// ICMP errors and echo replies start nothing.
    pub fn note_outbound(&mut self, now: Instant, f: &Flow) {
        if matches!(
            f.kind,
            Kind::IcmpError | Kind::IcmpOther | Kind::IcmpEcho { reply: true }
        ) {
            return;
        }
        let key = Key {
            proto: f.proto,
            local: (f.src, f.sport),
            remote: (f.dst, f.dport),
        };
        let until = now + idle_time(f);
        if let Some(t) = self.flows.get_mut(&key) {
            *t = until;
            return;
        }
        if self.flows.len() >= self.capacity {
            self.flows.retain(|_, t| *t > now);
        }
        if self.flows.len() >= self.capacity {
            if let Some(oldest) = self.flows.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k) {
                self.flows.remove(&oldest);
                self.evicted += 1;
            }
        }
        self.flows.insert(key, until);
    }

    /// Whether a packet coming in belongs to a live flow started from here.
    pub fn is_return(&self, now: Instant, f: &Flow) -> bool {
        if matches!(f.kind, Kind::IcmpEcho { reply: false }) {
            return false;
        }
        let key = Key {
            proto: f.proto,
            local: (f.dst, f.dport),
            remote: (f.src, f.sport),
        };
        self.flows.get(&key).is_some_and(|t| *t > now)
    }
}

/// The verdict on a packet from a tailnet peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A rule allows it.
    Allowed,
    /// It answers a flow started from here.
    Return,
    /// A fragment after the first.
    Fragment,
    /// An ICMP error.
    IcmpError,
    /// No rule allows it and it answers nothing: dropped.
    Denied,
    /// It did not parse: dropped.
    Malformed,
}

impl Verdict {
    /// Whether the packet goes on.
    pub fn accepts(self) -> bool {
        !matches!(self, Verdict::Denied | Verdict::Malformed)
    }
}

/// The filter and the connection table together: what the engine keeps
/// for the tailnet.
#[derive(Debug, Clone, Default)]
pub struct Firewall {
    /// The rules.
    pub filter: Filter,
    /// The flows started from here.
    pub conntrack: ConnTrack,
}

impl Firewall {
    /// A packet from a tailnet peer, about to be forwarded.
    pub fn check_inbound(&self, now: Instant, packet: &[u8]) -> Verdict {
        let f = match flow_of(packet) {
            Parsed::Flow(f) => f,
            Parsed::LaterFragment => return Verdict::Fragment,
            Parsed::Malformed => return Verdict::Malformed,
        };
        if f.kind == Kind::IcmpError {
            return Verdict::IcmpError;
        }
        if self.conntrack.is_return(now, &f) {
            return Verdict::Return;
        }
        if self.filter.allows(&f) {
            return Verdict::Allowed;
        }
        Verdict::Denied
    }

    /// A packet forwarded to a tailnet peer.
    pub fn note_outbound(&mut self, now: Instant, packet: &[u8]) {
        if let Parsed::Flow(f) = flow_of(packet) {
            self.conntrack.note_outbound(now, &f);
        }
    }
}

/// Shorthand for tests and callers: an IPv4 host range.
pub fn host4(ip: Ipv4Addr) -> IpRange {
    IpRange::V4(ip.into(), ip.into())
}

/// Shorthand for tests and callers: an IPv6 host range.
pub fn host6(ip: Ipv6Addr) -> IpRange {
    IpRange::V6(ip.into(), ip.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    const LAPTOP: [u8; 4] = [100, 64, 0, 2];
    const OTHER: [u8; 4] = [100, 64, 0, 3];
    const DEVICE: [u8; 4] = [10, 77, 1, 100];

    fn tcp(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, syn: bool, ack: bool) -> Vec<u8> {
        let mut b = PacketBuilder::ipv4(src, dst, 64).tcp(sp, dp, 1, 1000);
        if syn {
            b = b.syn();
        }
        if ack {
            b = b.ack(1);
        }
        let mut out = Vec::new();
        b.write(&mut out, &[]).unwrap();
        out
    }

    fn udp(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv4(src, dst, 64)
            .udp(sp, dp)
            .write(&mut out, b"x")
            .unwrap();
        out
    }

    fn echo(src: [u8; 4], dst: [u8; 4], id: u16, reply: bool) -> Vec<u8> {
        let b = PacketBuilder::ipv4(src, dst, 64);
        let b = if reply {
            b.icmpv4_echo_reply(id, 1)
        } else {
            b.icmpv4_echo_request(id, 1)
        };
        let mut out = Vec::new();
        b.write(&mut out, b"ping").unwrap();
        out
    }

    /// Headscale's rule for `laptop -> 10.77.1.0/24:80,443` and ICMP.
    fn laptop_to_bridge_web() -> Filter {
        let (r, bad) = Rule::parse(
            ["100.64.0.2", "fd7a:115c:a1e0::2"],
            [("10.77.1.0/24", 80, 80), ("10.77.1.0/24", 443, 443)],
            &[],
        );
        assert_eq!(bad, 0);
        Filter::new(vec![r])
    }

    #[test]
    fn specs_parse_like_tailscale() {
        assert_eq!(
            parse_spec("*").unwrap(),
            vec![IpRange::V4(0, u32::MAX), IpRange::V6(0, u128::MAX)]
        );
        assert_eq!(
            parse_spec("100.64.0.2").unwrap(),
            vec![host4(Ipv4Addr::new(100, 64, 0, 2))]
        );
        assert_eq!(
            parse_spec("10.77.1.0/24").unwrap(),
            vec![IpRange::V4(
                u32::from(Ipv4Addr::new(10, 77, 1, 0)),
                u32::from(Ipv4Addr::new(10, 77, 1, 255))
            )]
        );
        assert_eq!(
            parse_spec("100.64.0.2-100.64.0.9").unwrap(),
            vec![IpRange::V4(
                u32::from(Ipv4Addr::new(100, 64, 0, 2)),
                u32::from(Ipv4Addr::new(100, 64, 0, 9))
            )]
        );
        assert_eq!(
            parse_spec("fd7a:115c:a1e0::2").unwrap(),
            vec![host6("fd7a:115c:a1e0::2".parse().unwrap())]
        );
        assert!(parse_spec("cap:funnel").unwrap().is_empty());
        assert!(matches!(
            parse_spec("10.77.1.1/24"),
            Err(FilterError::HostBits(_))
        ));
        assert!(matches!(
            parse_spec("10.0.0.9-10.0.0.1"),
            Err(FilterError::BadRange(_))
        ));
        assert!(matches!(
            parse_spec("10.0.0.1-::1"),
            Err(FilterError::BadRange(_))
        ));
        for bad in ["", "laptop", "10.0.0.1/33", "1-2-3", "10.0.0.256"] {
            assert!(parse_spec(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_bad_spec_is_skipped_and_the_rest_of_the_rule_stays() {
        let (r, bad) = Rule::parse(
            ["garbage", "100.64.0.2"],
            [("10.77.1.0/24", 0, 65535), ("nope", 1, 2)],
            &[6, 300, -1],
        );
        assert_eq!(bad, 2);
        assert_eq!(r.srcs.len(), 1);
        assert_eq!(r.dsts.len(), 1);
        assert_eq!(r.protos, vec![6], "numbers outside 0..=255 are ignored");
    }

    #[test]
    fn rules_match_source_destination_port_and_protocol() {
        let fw = Firewall {
            filter: laptop_to_bridge_web(),
            ..Default::default()
        };
        let now = Instant::now();
        let ok = |p: &[u8]| fw.check_inbound(now, p);
        assert_eq!(
            ok(&tcp(LAPTOP, DEVICE, 5000, 80, true, false)),
            Verdict::Allowed
        );
        assert_eq!(
            ok(&tcp(LAPTOP, DEVICE, 5000, 443, true, false)),
            Verdict::Allowed
        );
        assert_eq!(
            ok(&tcp(LAPTOP, DEVICE, 5000, 22, true, false)),
            Verdict::Denied
        );
        assert_eq!(
            ok(&tcp(OTHER, DEVICE, 5000, 80, true, false)),
            Verdict::Denied
        );
        assert_eq!(
            ok(&tcp(LAPTOP, [10, 77, 2, 1], 5000, 80, true, false)),
            Verdict::Denied
        );
        // Later segments of an allowed connection still match the rule.
        assert_eq!(
            ok(&tcp(LAPTOP, DEVICE, 5000, 80, false, true)),
            Verdict::Allowed
        );
        // Default protocols: UDP and ICMP too (ICMP on addresses alone).
        assert_eq!(ok(&udp(LAPTOP, DEVICE, 5000, 443)), Verdict::Allowed);
        assert_eq!(ok(&echo(LAPTOP, DEVICE, 7, false)), Verdict::Allowed);
        assert_eq!(ok(&echo(OTHER, DEVICE, 7, false)), Verdict::Denied);
        // Unsolicited replies are not let in (stricter than Tailscale).
        assert_eq!(ok(&echo(OTHER, DEVICE, 7, true)), Verdict::Denied);
        assert_eq!(
            ok(&tcp(OTHER, DEVICE, 80, 5000, false, true)),
            Verdict::Denied
        );
        assert_eq!(ok(b"\x45garbage"), Verdict::Malformed);
        assert!(!Verdict::Malformed.accepts());
    }

    #[test]
    fn the_default_filter_allows_nothing_and_star_allows_everything() {
        let now = Instant::now();
        let deny = Firewall::default();
        assert_eq!(
            deny.check_inbound(now, &tcp(LAPTOP, DEVICE, 1, 80, true, false)),
            Verdict::Denied
        );
        let (r, _) = Rule::parse(["*"], [("*", 0, 65535)], &[]);
        let all = Firewall {
            filter: Filter::new(vec![r]),
            ..Default::default()
        };
        for p in [
            tcp(LAPTOP, DEVICE, 1, 80, true, false),
            udp(OTHER, DEVICE, 1, 53),
            echo(OTHER, DEVICE, 1, false),
        ] {
            assert_eq!(all.check_inbound(now, &p), Verdict::Allowed);
        }
        // A protocol not listed (GRE, 47) is not in the defaults.
        let mut gre = Vec::new();
        PacketBuilder::ipv4(LAPTOP, DEVICE, 64)
            .write(&mut gre, IpNumber(47), b"gre")
            .unwrap();
        assert_eq!(all.check_inbound(now, &gre), Verdict::Denied);
        // Listed, it needs a rule for all ports.
        let (r, _) = Rule::parse(["*"], [("*", 0, 65535)], &[47]);
        let (narrow, _) = Rule::parse(["*"], [("*", 0, 80)], &[47]);
        let gre_all = Firewall {
            filter: Filter::new(vec![r]),
            ..Default::default()
        };
        let gre_narrow = Firewall {
            filter: Filter::new(vec![narrow]),
            ..Default::default()
        };
        assert_eq!(gre_all.check_inbound(now, &gre), Verdict::Allowed);
        assert_eq!(gre_narrow.check_inbound(now, &gre), Verdict::Denied);
    }

    #[test]
    fn return_traffic_of_flows_started_here_is_let_in_until_it_expires() {
        let mut fw = Firewall::default();
        let now = Instant::now();
        // The device opens TCP, UDP and a ping toward the laptop.
        fw.note_outbound(now, &tcp(DEVICE, LAPTOP, 40000, 8000, true, false));
        fw.note_outbound(now, &udp(DEVICE, LAPTOP, 40001, 53));
        fw.note_outbound(now, &echo(DEVICE, LAPTOP, 9, false));
        assert_eq!(
            fw.check_inbound(now, &tcp(LAPTOP, DEVICE, 8000, 40000, true, true)),
            Verdict::Return,
            "SYN-ACK"
        );
        assert_eq!(
            fw.check_inbound(now, &udp(LAPTOP, DEVICE, 53, 40001)),
            Verdict::Return
        );
        assert_eq!(
            fw.check_inbound(now, &echo(LAPTOP, DEVICE, 9, true)),
            Verdict::Return
        );
        // Not the same 5-tuple: denied.
        assert_eq!(
            fw.check_inbound(now, &udp(LAPTOP, DEVICE, 53, 40002)),
            Verdict::Denied
        );
        assert_eq!(
            fw.check_inbound(now, &udp(OTHER, DEVICE, 53, 40001)),
            Verdict::Denied
        );
        assert_eq!(
            fw.check_inbound(now, &echo(LAPTOP, DEVICE, 10, true)),
            Verdict::Denied
        );
        // A request the other way is no return traffic.
        assert_eq!(
            fw.check_inbound(now, &echo(LAPTOP, DEVICE, 9, false)),
            Verdict::Denied
        );
        // Expiry: ICMP first, then UDP; TCP lives longest; a packet out refreshes.
        let later = now + ICMP_IDLE + Duration::from_secs(1);
        assert_eq!(
            fw.check_inbound(later, &echo(LAPTOP, DEVICE, 9, true)),
            Verdict::Denied
        );
        assert_eq!(
            fw.check_inbound(later, &udp(LAPTOP, DEVICE, 53, 40001)),
            Verdict::Return
        );
        fw.note_outbound(later, &udp(DEVICE, LAPTOP, 40001, 53));
        let much_later = now + UDP_IDLE + Duration::from_secs(10);
        assert_eq!(
            fw.check_inbound(much_later, &udp(LAPTOP, DEVICE, 53, 40001)),
            Verdict::Return,
            "refreshed by the packet out"
        );
        assert_eq!(
            fw.check_inbound(much_later, &tcp(LAPTOP, DEVICE, 8000, 40000, false, true)),
            Verdict::Return
        );
        let gone = now + TCP_IDLE + Duration::from_secs(1);
        assert_eq!(
            fw.check_inbound(gone, &tcp(LAPTOP, DEVICE, 8000, 40000, false, true)),
            Verdict::Denied
        );
        // ICMP errors always come in (path MTU discovery needs them).
        let mut unreach = Vec::new();
        PacketBuilder::ipv4(OTHER, DEVICE, 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::Port,
            ))
            .write(&mut unreach, &udp(DEVICE, OTHER, 1, 2))
            .unwrap();
        assert_eq!(fw.check_inbound(now, &unreach), Verdict::IcmpError);
    }

    #[test]
    fn the_table_is_bounded_and_evicts_the_flow_closest_to_expiry() {
        let mut ct = ConnTrack::new(3);
        let t0 = Instant::now();
        let flow = |sp: u16| match flow_of(&udp(DEVICE, LAPTOP, sp, 53)) {
            Parsed::Flow(f) => f,
            other => panic!("{other:?}"),
        };
        let back = |sp: u16| match flow_of(&udp(LAPTOP, DEVICE, 53, sp)) {
            Parsed::Flow(f) => f,
            other => panic!("{other:?}"),
        };
        for (i, sp) in [1u16, 2, 3].into_iter().enumerate() {
            ct.note_outbound(t0 + Duration::from_secs(i as u64), &flow(sp));
        }
        assert_eq!(ct.len(), 3);
        let t = t0 + Duration::from_secs(5);
        ct.note_outbound(t, &flow(4));
        assert_eq!(ct.len(), 3);
        assert_eq!(ct.evicted(), 1);
        assert!(!ct.is_return(t, &back(1)), "the oldest went");
        assert!(ct.is_return(t, &back(2)) && ct.is_return(t, &back(4)));
        // Expired entries go first, without counting as evictions.
        let late = t0 + UDP_IDLE + Duration::from_secs(3);
        ct.note_outbound(late, &flow(5));
        assert_eq!(ct.evicted(), 1);
        assert!(ct.len() <= 3);
        assert!(ct.is_return(late, &back(5)) && ct.is_return(late, &back(4)));
    }

    #[test]
    fn ipv6_and_fragments() {
        let lap6: [u8; 16] = "fd7a:115c:a1e0::2".parse::<Ipv6Addr>().unwrap().octets();
        let box6: [u8; 16] = "fd7a:115c:a1e0::1".parse::<Ipv6Addr>().unwrap().octets();
        let (r, _) = Rule::parse(["fd7a:115c:a1e0::2"], [("fd7a:115c:a1e0::1", 22, 22)], &[]);
        let fw = Firewall {
            filter: Filter::new(vec![r]),
            ..Default::default()
        };
        let now = Instant::now();
        let mut p = Vec::new();
        PacketBuilder::ipv6(lap6, box6, 64)
            .tcp(1000, 22, 1, 100)
            .syn()
            .write(&mut p, &[])
            .unwrap();
        assert_eq!(fw.check_inbound(now, &p), Verdict::Allowed);
        let mut p = Vec::new();
        PacketBuilder::ipv6(lap6, box6, 64)
            .tcp(1000, 23, 1, 100)
            .syn()
            .write(&mut p, &[])
            .unwrap();
        assert_eq!(fw.check_inbound(now, &p), Verdict::Denied);
        // IPv4 fragments: the first is judged by its ports, later ones pass.
        let whole = udp(LAPTOP, DEVICE, 1, 9999);
        let mut first = whole.clone();
        first[6] = 0x20; // MF, offset 0
        assert_eq!(fw.check_inbound(now, &first), Verdict::Denied);
        let mut later = whole;
        later[6] = 0x00;
        later[7] = 0x10; // offset 16 * 8
        assert_eq!(fw.check_inbound(now, &later), Verdict::Fragment);
    }
}
