//! IPv4 packet surgery the engine needs on the way between a 1500-byte LAN
//! and a smaller tunnel MTU: TCP MSS clamping, fragmentation and ICMP
//! "fragmentation needed". All functions take untrusted bytes and never panic.

use etherparse::{
    icmpv4::DestUnreachableHeader, Icmpv4Type, IpFragOffset, IpNumber, Ipv4Header, PacketBuilder,
};
use std::net::Ipv4Addr;

/// The fields of an IPv4 packet the forwarding decision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Info {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Whether DF is set.
    pub dont_fragment: bool,
    /// Total length from the header.
    pub total_len: usize,
}

/// Read the addresses of an IPv4 packet; `None` if it is not a well-formed
/// IPv4 packet whose total length fits the buffer.
pub fn ipv4_info(packet: &[u8]) -> Option<Ipv4Info> {
    let (h, _) = Ipv4Header::from_slice(packet).ok()?;
    let total_len = usize::from(h.total_len);
    if total_len > packet.len() || total_len < h.header_len() {
        return None;
    }
    Some(Ipv4Info {
        src: Ipv4Addr::from(h.source),
        dst: Ipv4Addr::from(h.destination),
        dont_fragment: h.dont_fragment,
        total_len,
    })
}

/// Source, destination and total length of an IPv6 packet, if well formed.
pub fn ipv6_info(packet: &[u8]) -> Option<(std::net::Ipv6Addr, std::net::Ipv6Addr, usize)> {
    let (h, _) = etherparse::Ipv6Header::from_slice(packet).ok()?;
    let total = 40 + usize::from(h.payload_length);
    (total <= packet.len()).then(|| (h.source_addr(), h.destination_addr(), total))
}

/// Fold a 32-bit one's complement sum to 16 bits.
fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Clamp the MSS option of a TCP SYN (or SYN-ACK) inside an IPv4 packet to
/// `max_mss`, fixing the TCP checksum incrementally (RFC 1624). Returns
/// whether the packet was changed.
pub fn clamp_mss(packet: &mut [u8], max_mss: u16) -> bool {
    let Some(info) = ipv4_info(packet) else {
        return false;
    };
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    // Only unfragmented (or first-fragment) TCP.
    if packet[9] != 6 || (u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff) != 0 {
        return false;
    }
    let tcp = &mut packet[ihl..info.total_len];
    if tcp.len() < 20 || tcp[13] & 0x02 == 0 {
        return false;
    }
    let data_off = usize::from(tcp[12] >> 4) * 4;
    if data_off < 20 || data_off > tcp.len() {
        return false;
    }
    let mut i = 20;
    while i < data_off {
        match tcp[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let Some(&len) = tcp.get(i + 1) else { break };
                let len = usize::from(len);
                if len < 2 || i + len > data_off {
                    break;
                }
                if kind == 2 && len == 4 {
                    let old = u16::from_be_bytes([tcp[i + 2], tcp[i + 3]]);
                    if old <= max_mss {
                        return false;
                    }
                    tcp[i + 2..i + 4].copy_from_slice(&max_mss.to_be_bytes());
                    let hc = u16::from_be_bytes([tcp[16], tcp[17]]);
                    let sum = u32::from(!hc) + u32::from(!old) + u32::from(max_mss);
                    let new = !fold(sum);
                    tcp[16..18].copy_from_slice(&new.to_be_bytes());
                    return true;
                }
                i += len;
            }
        }
    }
    false
}

/// Split an IPv4 packet (without DF) into fragments of at most `mtu` bytes
/// (RFC 791). Returns `None` if the packet does not parse or cannot be split.
pub fn fragment(packet: &[u8], mtu: usize) -> Option<Vec<Vec<u8>>> {
    let (header, rest) = Ipv4Header::from_slice(packet).ok()?;
    let payload = rest.get(..usize::from(header.total_len).checked_sub(header.header_len())?)?;
    let hlen = header.header_len();
    let chunk = (mtu.checked_sub(hlen)? / 8) * 8;
    if chunk == 0 {
        return None;
    }
    let base = usize::from(header.fragment_offset.value()) * 8;
    let mut out = Vec::new();
    let mut off = 0;
    while off < payload.len() {
        let end = (off + chunk).min(payload.len());
        let last = end == payload.len();
        let mut h = header.clone();
        h.fragment_offset = IpFragOffset::try_new(((base + off) / 8) as u16).ok()?;
        h.more_fragments = !last || header.more_fragments;
        h.set_payload_len(end - off).ok()?;
        h.header_checksum = h.calc_header_checksum();
        let mut frag = Vec::with_capacity(hlen + end - off);
        frag.extend_from_slice(&h.to_bytes());
        frag.extend_from_slice(&payload[off..end]);
        out.push(frag);
        off = end;
    }
    Some(out)
}

/// Build the ICMP "fragmentation needed" (type 3 code 4, RFC 1191) that a
/// router sends back to `original`'s source, from `from`.
pub fn icmp_frag_needed(original: &[u8], from: Ipv4Addr, mtu: u16) -> Option<Vec<u8>> {
    icmp_unreachable(
        original,
        from,
        DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu },
    )
}

/// Build an ICMP destination unreachable for `original`, from `from`.
pub fn icmp_unreachable(
    original: &[u8],
    from: Ipv4Addr,
    kind: DestUnreachableHeader,
) -> Option<Vec<u8>> {
    let (h, rest) = Ipv4Header::from_slice(original).ok()?;
    // Never answer an ICMP error with another one (RFC 1122 §3.2.2).
    if h.protocol == IpNumber::ICMP
        && rest
            .first()
            .is_some_and(|t| matches!(t, 3 | 4 | 5 | 11 | 12))
    {
        return None;
    }
    // The original header plus 8 bytes of its payload.
    let quote = &original[..(h.header_len() + 8).min(original.len())];
    let builder = PacketBuilder::ipv4(from.octets(), h.source, 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(kind));
    let mut out = Vec::with_capacity(builder.size(quote.len()));
    builder.write(&mut out, quote).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{SlicedPacket, TransportSlice};

    fn syn_with_mss(mss: u16) -> Vec<u8> {
        let mut b = PacketBuilder::ipv4([10, 77, 1, 100], [10, 77, 0, 2], 64)
            .tcp(40000, 80, 1, 65535)
            .syn();
        b = b
            .options(&[
                etherparse::TcpOptionElement::MaximumSegmentSize(mss),
                etherparse::TcpOptionElement::Noop,
                etherparse::TcpOptionElement::Noop,
            ])
            .unwrap();
        let mut v = Vec::new();
        b.write(&mut v, &[]).unwrap();
        v
    }

    fn tcp_checksum_ok(p: &[u8]) -> bool {
        let s = SlicedPacket::from_ip(p).unwrap();
        let Some(TransportSlice::Tcp(t)) = s.transport else {
            return false;
        };
        let (h, _) = Ipv4Header::from_slice(p).unwrap();
        let expect = t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap();
        t.checksum() == expect
    }

    #[test]
    fn mss_is_clamped_with_valid_checksum() {
        let mut p = syn_with_mss(1460);
        assert!(clamp_mss(&mut p, 1380));
        assert!(tcp_checksum_ok(&p));
        let s = SlicedPacket::from_ip(&p).unwrap();
        let Some(TransportSlice::Tcp(t)) = s.transport else {
            panic!()
        };
        assert!(t.options_iterator().any(|o| matches!(
            o,
            Ok(etherparse::TcpOptionElement::MaximumSegmentSize(1380))
        )));
        // Already small enough: untouched.
        let mut q = syn_with_mss(1200);
        assert!(!clamp_mss(&mut q, 1380));
        assert_eq!(q, syn_with_mss(1200));
    }

    #[test]
    fn fragments_reassemble_to_the_original() {
        let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let mut p = Vec::new();
        PacketBuilder::ipv4([10, 77, 1, 100], [10, 77, 0, 2], 64)
            .udp(1, 2)
            .write(&mut p, &payload)
            .unwrap();
        let frags = fragment(&p, 1420).unwrap();
        assert_eq!(frags.len(), 3);
        let mut joined = Vec::new();
        for (i, f) in frags.iter().enumerate() {
            assert!(f.len() <= 1420);
            let (h, body) = Ipv4Header::from_slice(f).unwrap();
            assert_eq!(h.header_checksum, h.calc_header_checksum());
            assert_eq!(h.more_fragments, i + 1 < frags.len());
            assert_eq!(usize::from(h.fragment_offset.value()) * 8, joined.len());
            joined.extend_from_slice(body);
        }
        assert_eq!(joined, p[20..]);
    }

    #[test]
    fn frag_needed_quotes_the_original_and_is_not_sent_for_icmp_errors() {
        let mut p = Vec::new();
        PacketBuilder::ipv4([10, 77, 1, 100], [10, 77, 0, 2], 64)
            .udp(1, 2)
            .write(&mut p, &[0; 1600])
            .unwrap();
        let icmp = icmp_frag_needed(&p, Ipv4Addr::new(10, 77, 1, 1), 1420).unwrap();
        let s = SlicedPacket::from_ip(&icmp).unwrap();
        let Some(TransportSlice::Icmpv4(i)) = s.transport else {
            panic!()
        };
        assert_eq!(
            i.icmp_type(),
            Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
                next_hop_mtu: 1420
            })
        );
        assert_eq!(i.payload(), &p[..28]);
        assert!(icmp_frag_needed(&icmp, Ipv4Addr::new(10, 77, 0, 1), 1420).is_none());
    }

    /// Untrusted bytes: every truncation of a valid packet and pseudo-random
    /// garbage are refused (`None`, `false`, the buffer untouched), never a
    /// panic, while the whole packets they came from are accepted.
    #[test]
    fn truncated_and_garbage_packets_are_refused() {
        let mut udp = Vec::new();
        PacketBuilder::ipv4([10, 77, 1, 100], [10, 77, 0, 2], 64)
            .udp(1, 2)
            .write(&mut udp, &[7; 200])
            .unwrap();
        let syn = syn_with_mss(1460);
        for seed in [&udp, &syn] {
            assert_eq!(ipv4_info(seed).map(|i| i.total_len), Some(seed.len()));
            assert!(fragment(seed, 100).is_some());
            assert!(icmp_frag_needed(seed, Ipv4Addr::LOCALHOST, 1000).is_some());
            for len in 0..seed.len() {
                let cut = &seed[..len];
                assert_eq!(ipv4_info(cut), None, "length {len}");
                assert_eq!(fragment(cut, 100), None, "length {len}");
                let mut c = cut.to_vec();
                assert!(!clamp_mss(&mut c, 1000), "length {len}");
                assert_eq!(c, cut, "length {len}");
            }
        }
        assert!(clamp_mss(&mut syn.clone(), 1000));

        for len in 0..64 {
            let mut g: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37) ^ 0x45).collect();
            let orig = g.clone();
            assert_eq!(ipv4_info(&g), None, "length {len}");
            assert!(!clamp_mss(&mut g, 1000), "length {len}");
            assert_eq!(g, orig, "length {len}");
            assert_eq!(fragment(&g, 100), None, "length {len}");
            // Quoting a header-shaped packet is allowed, but the answer
            // is itself well formed and comes from us.
            match icmp_frag_needed(&g, Ipv4Addr::LOCALHOST, 1000) {
                Some(icmp) => {
                    assert!(len >= 20, "length {len}");
                    let info = ipv4_info(&icmp).expect("well-formed ICMP");
                    assert_eq!(info.src, Ipv4Addr::LOCALHOST);
                }
                None => assert!(len < 20, "length {len}"),
            }
        }
    }
}
