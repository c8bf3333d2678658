//! The offloads of the TAP and the TUN (`IFF_VNET_HDR` + `TUNSETOFFLOAD`):
//! the kernel hands the box a TCP stream's frames (TAP) or packets (TUN) as
//! one segment of up to 64 KB (TSO) and leaves checksums to it (checksum
//! offload); the box cuts the segment into the frames the sender's stack
//! would have sent (TCP segmentation; UDP segmentation for USO) and fills
//! in the checksums, before the engine sees them. One read per 64 KB
//! instead of one per 1,500 bytes. The other way, [`Coalescer`] joins a
//! stream's packets into one write.
//!
//! Every read and write carries a 10-byte `virtio_net_hdr` in front of the
//! frame or packet. What the box writes as it is carries an empty one (no
//! offload asked: whole frames with their checksums).
//!
//! Pure functions, no I/O: [`split`] takes what one read returned and hands
//! out the frames.

/// Length of the `virtio_net_hdr` in front of every frame.
pub const HDR_LEN: usize = 10;
/// The header in front of every frame the box writes: no offload.
pub const PLAIN_HDR: [u8; HDR_LEN] = [0; HDR_LEN];

const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_UDP: u8 = 3;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;
const GSO_ECN: u8 = 0x80;

/// What a device carries: Ethernet frames (the TAP) or IP packets (the TUN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Ethernet,
    Ip,
}

/// Why a read was dropped.
#[derive(Debug, PartialEq, Eq)]
pub enum VnetDrop {
    /// Shorter than its headers say, or headers this code does not know.
    Malformed,
    /// A segmentation type the TAP was not offered (UFO).
    UnknownGso,
}

/// Hands out the frames in one read (`virtio_net_hdr` + frame or packet):
/// the frame itself, with its checksum completed if the kernel left it to
/// the box, or the frames of a TSO/USO segment. `buf` is rewritten in place
/// for the checksum; `scratch` holds one segmented frame at a time.
pub fn split(
    buf: &mut [u8],
    link: Link,
    scratch: &mut Vec<u8>,
    mut each: impl FnMut(&[u8]),
) -> Result<(), VnetDrop> {
    let (hdr, frame) = buf
        .split_at_mut_checked(HDR_LEN)
        .ok_or(VnetDrop::Malformed)?;
    let flags = hdr[0];
    let gso_type = hdr[1] & !GSO_ECN;
    let gso_size = u16::from_le_bytes([hdr[4], hdr[5]]) as usize;
    let csum_start = u16::from_le_bytes([hdr[6], hdr[7]]) as usize;
    let csum_offset = u16::from_le_bytes([hdr[8], hdr[9]]) as usize;
    match gso_type {
        GSO_NONE => {
            if flags & F_NEEDS_CSUM != 0 {
                complete_checksum(frame, csum_start, csum_offset)?;
            }
            each(frame);
            Ok(())
        }
        GSO_TCPV4 | GSO_TCPV6 | GSO_UDP_L4 if gso_size > 0 => {
            segment(frame, link, gso_size, scratch, each)
        }
        GSO_UDP => Err(VnetDrop::UnknownGso),
        _ => Err(VnetDrop::Malformed),
    }
}

/// Checksum offload: the ones' complement sum from `start` to the end of the
/// frame goes to `start + offset` (the field holds the pseudo-header's sum).
fn complete_checksum(frame: &mut [u8], start: usize, offset: usize) -> Result<(), VnetDrop> {
    let at = start.checked_add(offset).ok_or(VnetDrop::Malformed)?;
    if start >= frame.len() || at + 2 > frame.len() {
        return Err(VnetDrop::Malformed);
    }
    let sum = fold(sum(&frame[start..], 0));
    frame[at..at + 2].copy_from_slice(&(!sum).to_be_bytes());
    Ok(())
}

/// The layout of a frame's headers: Ethernet (with an optional VLAN tag;
/// none on the TUN), IPv4 or IPv6 (no extension headers), TCP or UDP.
struct Layout {
    /// Start of the IP header.
    ip: usize,
    v4: bool,
    /// Start of the TCP/UDP header.
    l4: usize,
    tcp: bool,
    /// Start of the payload.
    payload: usize,
}

fn layout(frame: &[u8], link: Link) -> Option<Layout> {
    let (ip, ethertype) = match link {
        Link::Ethernet => {
            let t = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
            if t == 0x8100 {
                (18, u16::from_be_bytes([*frame.get(16)?, *frame.get(17)?]))
            } else {
                (14, t)
            }
        }
        Link::Ip => match *frame.first()? >> 4 {
            4 => (0, 0x0800),
            6 => (0, 0x86dd),
            _ => return None,
        },
    };
    let (v4, l4, proto) = match ethertype {
        0x0800 => {
            let ihl = (*frame.get(ip)? & 0x0f) as usize * 4;
            (ihl >= 20).then_some(())?;
            (true, ip + ihl, *frame.get(ip + 9)?)
        }
        0x86dd => (false, ip + 40, *frame.get(ip + 6)?),
        _ => return None,
    };
    // The IP length covers the rest of the read exactly: a segment cut
    // short (or padded) is not cut into frames with made-up checksums.
    let ip_len = if v4 {
        u16::from_be_bytes([*frame.get(ip + 2)?, *frame.get(ip + 3)?]) as usize
    } else {
        40 + u16::from_be_bytes([*frame.get(ip + 4)?, *frame.get(ip + 5)?]) as usize
    };
    (ip_len == frame.len() - ip).then_some(())?;
    let (tcp, payload) = match proto {
        6 => (
            true,
            l4 + ((*frame.get(l4 + 12)? >> 4) as usize * 4).max(20),
        ),
        17 => (false, l4 + 8),
        _ => return None,
    };
    (payload <= frame.len()).then_some(Layout {
        ip,
        v4,
        l4,
        tcp,
        payload,
    })
}

/// TSO/USO: one frame per `mss` bytes of payload, each with its own headers
/// (IP length, IPv4 id and checksum, TCP sequence number and flags, UDP
/// length) and checksums.
fn segment(
    frame: &[u8],
    link: Link,
    mss: usize,
    scratch: &mut Vec<u8>,
    mut each: impl FnMut(&[u8]),
) -> Result<(), VnetDrop> {
    let l = layout(frame, link).ok_or(VnetDrop::Malformed)?;
    let payload = &frame[l.payload..];
    if payload.is_empty() {
        return Err(VnetDrop::Malformed);
    }
    let headers = &frame[..l.payload];
    let seq0 = if l.tcp {
        u32::from_be_bytes(frame[l.l4 + 4..l.l4 + 8].try_into().unwrap_or_default())
    } else {
        0
    };
    let id0 = if l.v4 {
        u16::from_be_bytes([frame[l.ip + 4], frame[l.ip + 5]])
    } else {
        0
    };
    let count = payload.len().div_ceil(mss);
    for (i, chunk) in payload.chunks(mss).enumerate() {
        scratch.clear();
        scratch.extend_from_slice(headers);
        scratch.extend_from_slice(chunk);
        let f = &mut scratch[..];
        let ip_len = f.len() - l.ip;
        let l4_len = f.len() - l.l4;
        if l.v4 {
            f[l.ip + 2..l.ip + 4].copy_from_slice(&(ip_len as u16).to_be_bytes());
            f[l.ip + 4..l.ip + 6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
            f[l.ip + 10..l.ip + 12].copy_from_slice(&[0, 0]);
            let c = !fold(sum(&f[l.ip..l.l4], 0));
            f[l.ip + 10..l.ip + 12].copy_from_slice(&c.to_be_bytes());
        } else {
            f[l.ip + 4..l.ip + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        }
        let csum_at = if l.tcp {
            let seq = seq0.wrapping_add((i * mss) as u32);
            f[l.l4 + 4..l.l4 + 8].copy_from_slice(&seq.to_be_bytes());
            // FIN and PSH only on the last segment, CWR only on the first.
            if i + 1 < count {
                f[l.l4 + 13] &= !0x09;
            }
            if i > 0 {
                f[l.l4 + 13] &= !0x80;
            }
            l.l4 + 16
        } else {
            f[l.l4 + 4..l.l4 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            l.l4 + 6
        };
        f[csum_at..csum_at + 2].copy_from_slice(&[0, 0]);
        let pseudo = if l.v4 {
            sum(&f[l.ip + 12..l.ip + 20], 0)
        } else {
            sum(&f[l.ip + 8..l.ip + 40], 0)
        } + u32::from(if l.tcp { 6u16 } else { 17 })
            + l4_len as u32;
        let mut c = !fold(sum(&f[l.l4..], pseudo));
        if !l.tcp && c == 0 {
            c = 0xffff;
        }
        f[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
        each(f);
    }
    Ok(())
}

/// The kernel's GRO, in the box: consecutive frames of one TCP/IPv4 stream
/// (same headers but for the sequence number, in order, full-sized but for
/// the last) leave as one TSO write with a `virtio_net_hdr`; the kernel
/// cuts them apart again where a device needs it (software segmentation
/// for a device without TSO, or for a route with a smaller MTU). Anything
/// else goes out as it is.
pub struct Coalescer {
    /// Start of the IP header: 14 on the TAP, 0 on the TUN.
    ip: usize,
    /// vnet header + frame being built (or last taken).
    buf: Vec<u8>,
    /// Frames held; 0 = none.
    count: usize,
    mss: usize,
    next_seq: u32,
    /// Start of the TCP header and of the payload in the frame.
    l4: usize,
    payload: usize,
    /// A shorter or PSH frame ended the run.
    closed: bool,
}

/// At most this much IP in one write (the IPv4 total length field).
const MAX_COALESCED: usize = 65_535;

impl Coalescer {
    pub fn new(link: Link) -> Self {
        Self {
            ip: if link == Link::Ethernet { 14 } else { 0 },
            buf: Vec::new(),
            count: 0,
            mss: 0,
            next_seq: 0,
            l4: 0,
            payload: 0,
            closed: false,
        }
    }

    /// Takes `frame` into the run held, or says no: the caller then writes
    /// what [`Self::take`] gives first, and offers the frame again.
    pub fn push(&mut self, frame: &[u8]) -> bool {
        let ip = self.ip;
        let Some((l4, payload, seq, flags)) = tcp4_data_frame(frame, ip) else {
            return false;
        };
        let len = frame.len() - payload;
        let psh = flags & 0x08 != 0;
        if self.count == 0 {
            self.buf.clear();
            self.buf.extend_from_slice(&[0; HDR_LEN]);
            self.buf.extend_from_slice(frame);
            (self.count, self.mss, self.l4, self.payload) = (1, len, l4, payload);
            self.next_seq = seq.wrapping_add(len as u32);
            self.closed = psh;
            return true;
        }
        let held = &self.buf[HDR_LEN..];
        let same_headers = l4 == self.l4
            && payload == self.payload
            // Ethernet, then IPv4 but for total length, id and checksum.
            && frame[..ip + 2] == held[..ip + 2]
            && frame[ip + 6..ip + 10] == held[ip + 6..ip + 10]
            && frame[ip + 12..l4] == held[ip + 12..l4]
            // TCP but for the sequence number, PSH and the checksum.
            && frame[l4..l4 + 4] == held[l4..l4 + 4]
            && frame[l4 + 8..l4 + 13] == held[l4 + 8..l4 + 13]
            && frame[l4 + 14..l4 + 16] == held[l4 + 14..l4 + 16]
            && frame[l4 + 18..payload] == held[l4 + 18..payload];
        let ip_len = self.buf.len() - HDR_LEN - ip + len;
        if self.closed
            || !same_headers
            || seq != self.next_seq
            || len > self.mss
            || ip_len > MAX_COALESCED
        {
            return false;
        }
        self.buf.extend_from_slice(&frame[payload..]);
        self.count += 1;
        self.next_seq = seq.wrapping_add(len as u32);
        self.closed = psh || len < self.mss;
        if psh {
            self.buf[HDR_LEN + l4 + 13] |= 0x08;
        }
        true
    }

    /// What to write (vnet header + frame) for the run held; empty if none.
    pub fn take(&mut self) -> Option<&[u8]> {
        if self.count == 0 {
            return None;
        }
        let (ip, l4, count) = (self.ip, self.l4, std::mem::take(&mut self.count));
        let f = &mut self.buf[HDR_LEN..];
        let ip_len = f.len() - ip;
        f[ip + 2..ip + 4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        f[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
        let c = !fold(sum(&f[ip..l4], 0));
        f[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
        if count == 1 {
            // One frame: as it came, with its own checksum; no offload.
            self.buf[..HDR_LEN].copy_from_slice(&PLAIN_HDR);
        } else {
            // The TCP checksum field holds the pseudo-header sum; the
            // kernel completes it per segment.
            let tcp_len = (f.len() - l4) as u32;
            let pseudo = fold(sum(&f[ip + 12..ip + 20], 0) + 6 + tcp_len);
            f[l4 + 16..l4 + 18].copy_from_slice(&pseudo.to_be_bytes());
            let mut h = [0u8; HDR_LEN];
            h[0] = F_NEEDS_CSUM;
            h[1] = GSO_TCPV4;
            h[2..4].copy_from_slice(&(self.payload as u16).to_le_bytes());
            h[4..6].copy_from_slice(&(self.mss as u16).to_le_bytes());
            h[6..8].copy_from_slice(&(l4 as u16).to_le_bytes());
            h[8..10].copy_from_slice(&16u16.to_le_bytes());
            self.buf[..HDR_LEN].copy_from_slice(&h);
        }
        Some(&self.buf)
    }
}

/// An untagged Ethernet frame (`ip` = 14) or a packet (`ip` = 0) of IPv4
/// (no options, not a fragment) + TCP with payload and only ACK (and PSH)
/// set: (TCP start, payload start, sequence number, flags).
fn tcp4_data_frame(frame: &[u8], ip: usize) -> Option<(usize, usize, u32, u8)> {
    let l4 = ip + 20;
    if frame.len() <= l4 + 20
        || (ip == 14 && frame[12..14] != [0x08, 0x00])
        || frame[ip] != 0x45
        || frame[ip + 9] != 6
    {
        return None;
    }
    // Not a fragment: MF clear and no offset (DF may be set).
    if u16::from_be_bytes([frame[ip + 6], frame[ip + 7]]) & 0x3fff != 0 {
        return None;
    }
    let ip_len = u16::from_be_bytes([frame[ip + 2], frame[ip + 3]]) as usize;
    if ip_len + ip != frame.len() {
        return None;
    }
    let payload = l4 + (frame[l4 + 12] >> 4) as usize * 4;
    let flags = frame[l4 + 13];
    if payload < l4 + 20 || payload >= frame.len() || flags & !0x08 != 0x10 {
        return None;
    }
    let seq = u32::from_be_bytes([frame[l4 + 4], frame[l4 + 5], frame[l4 + 6], frame[l4 + 7]]);
    Some((l4, payload, seq, flags))
}

/// Ones' complement sum of 16-bit big-endian words (odd byte padded), not
/// folded, starting from `acc`. Eight bytes at a time with the carry
/// added back in (2^64 and 2^16 are both 1 modulo 0xffff, so the folded
/// result is the 16-bit sum): a 64 KB segment's checksums are most of what
/// cutting it into packets costs.
fn sum(data: &[u8], acc: u32) -> u32 {
    let mut wide = u64::from(acc);
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let (s, carry) = wide.overflowing_add(u64::from_be_bytes(w.try_into().unwrap_or_default()));
        wide = s + u64::from(carry);
    }
    // Down to 33 bits, so the last few words cannot overflow.
    wide = (wide & 0xffff_ffff) + (wide >> 32);
    let mut rest = words.remainder().chunks_exact(2);
    for w in &mut rest {
        wide += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [b] = rest.remainder() {
        wide += u64::from(*b) << 8;
    }
    // Down to at most 17 bits, so callers may add a few words more.
    while wide > 0xffff {
        wide = (wide & 0xffff) + (wide >> 16);
    }
    wide as u32
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    const MSS: usize = 1448;

    fn vnet(flags: u8, gso: u8, gso_size: u16, csum_start: u16, csum_offset: u16) -> Vec<u8> {
        let mut h = vec![flags, gso];
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&gso_size.to_le_bytes());
        h.extend_from_slice(&csum_start.to_le_bytes());
        h.extend_from_slice(&csum_offset.to_le_bytes());
        h
    }

    fn tcp_v4(payload: &[u8], psh_fin: bool) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 77, 1, 100], [10, 77, 0, 2], 64)
            .tcp(40000, 5201, 1_000_000, 64240)
            .ack(77)
            .psh();
        let b = if psh_fin { b.fin() } else { b };
        let mut f = Vec::new();
        b.write(&mut f, payload).unwrap();
        f
    }

    /// Checks a frame with etherparse and its own checksum code: the IPv4
    /// header checksum and the TCP/UDP checksum over the pseudo-header.
    fn checksums_ok(f: &[u8]) -> bool {
        let p = SlicedPacket::from_ethernet(f).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
            panic!("ipv4")
        };
        let h = ip.header().to_header();
        let ip_ok = h.header_checksum == h.calc_header_checksum();
        let l4_ok = match &p.transport {
            Some(TransportSlice::Tcp(t)) => {
                t.checksum() == t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap()
            }
            Some(TransportSlice::Udp(u)) => {
                u.checksum() == u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap()
            }
            _ => false,
        };
        ip_ok && l4_ok
    }

    /// A 64 KB TSO segment from the device comes out as the frames the
    /// device would have sent without TSO: the payload in order, MSS-sized,
    /// sequence numbers, IP ids and lengths per frame, valid checksums,
    /// PSH and FIN only on the last.
    #[test]
    fn a_64k_tso_segment_becomes_mss_sized_frames() {
        let payload: Vec<u8> = (0..65_000u32).map(|i| (i % 251) as u8).collect();
        let mut read = vnet(F_NEEDS_CSUM, GSO_TCPV4, MSS as u16, 34, 16);
        read.extend(tcp_v4(&payload, true));
        let (mut frames, mut scratch) = (Vec::new(), Vec::new());
        split(&mut read, Link::Ethernet, &mut scratch, |f| {
            frames.push(f.to_vec())
        })
        .unwrap();
        assert_eq!(frames.len(), 65_000usize.div_ceil(MSS));
        let mut got = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            assert!(f.len() <= 14 + 20 + 20 + MSS);
            assert!(checksums_ok(f), "frame {i}");
            let p = SlicedPacket::from_ethernet(f).unwrap();
            let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
                panic!()
            };
            assert_eq!(ip.header().total_len() as usize, f.len() - 14);
            let Some(TransportSlice::Tcp(t)) = &p.transport else {
                panic!()
            };
            assert_eq!(t.sequence_number(), 1_000_000 + (i * MSS) as u32);
            let last = i + 1 == frames.len();
            assert_eq!((t.psh(), t.fin()), (last, last), "frame {i}");
            assert!(t.ack());
            got.extend_from_slice(t.payload());
        }
        assert_eq!(got, payload);
    }

    /// A UDP segment (USO): one datagram per gso_size bytes, each with its
    /// length and checksum.
    #[test]
    fn a_uso_segment_becomes_datagrams() {
        let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 77, 1, 100], [10, 77, 0, 2], 64)
            .udp(5000, 5001)
            .write(&mut f, &payload)
            .unwrap();
        let mut read = vnet(F_NEEDS_CSUM, GSO_UDP_L4, 1200, 34, 6);
        read.extend(f);
        let (mut frames, mut scratch) = (Vec::new(), Vec::new());
        split(&mut read, Link::Ethernet, &mut scratch, |f| {
            frames.push(f.to_vec())
        })
        .unwrap();
        let sizes: Vec<usize> = frames.iter().map(|f| f.len() - 42).collect();
        assert_eq!(sizes, vec![1200, 1200, 600]);
        assert!(frames.iter().all(|f| checksums_ok(f)));
    }

    /// Checksum offload without segmentation: the kernel leaves the
    /// pseudo-header sum in the field; the box completes it.
    #[test]
    fn a_partial_checksum_is_completed() {
        let mut frame = tcp_v4(b"hello, printer", false);
        assert!(checksums_ok(&frame));
        let good = frame.clone();
        // What the kernel hands over: the field holds the folded
        // pseudo-header sum (source, destination, protocol, TCP length).
        let tcp_len = (frame.len() - 34) as u32;
        let pseudo = fold(sum(&frame[26..34], 0) + 6 + tcp_len);
        frame[50..52].copy_from_slice(&pseudo.to_be_bytes());
        let mut read = vnet(F_NEEDS_CSUM, GSO_NONE, 0, 34, 16);
        read.extend(frame);
        let mut out = Vec::new();
        split(&mut read, Link::Ethernet, &mut Vec::new(), |f| {
            out.push(f.to_vec())
        })
        .unwrap();
        assert_eq!(out, vec![good]);
    }

    #[test]
    fn frames_without_offload_pass_unchanged_and_garbage_is_dropped() {
        let frame = tcp_v4(b"x", false);
        let mut read = vnet(0, GSO_NONE, 0, 0, 0);
        read.extend(&frame);
        let mut out = Vec::new();
        split(&mut read, Link::Ethernet, &mut Vec::new(), |f| {
            out.push(f.to_vec())
        })
        .unwrap();
        assert_eq!(out, vec![frame.clone()]);

        let mut s = Vec::new();
        assert_eq!(
            split(&mut [0u8; 4], Link::Ethernet, &mut s, |_| panic!()),
            Err(VnetDrop::Malformed)
        );
        let mut bad = vnet(F_NEEDS_CSUM, GSO_NONE, 0, 60_000, 16);
        bad.extend(&frame);
        assert_eq!(
            split(&mut bad, Link::Ethernet, &mut s, |_| panic!()),
            Err(VnetDrop::Malformed)
        );
        let mut ufo = vnet(0, GSO_UDP, 1000, 34, 6);
        ufo.extend(&frame);
        assert_eq!(
            split(&mut ufo, Link::Ethernet, &mut s, |_| panic!()),
            Err(VnetDrop::UnknownGso)
        );
        // A TSO read whose segment is shorter than its IP length says.
        let big = tcp_v4(&[7; 3000], false);
        let mut cut = vnet(F_NEEDS_CSUM, GSO_TCPV4, 1000, 34, 16);
        cut.extend(&big[..big.len() - 1]);
        assert_eq!(
            split(&mut cut, Link::Ethernet, &mut s, |_| panic!()),
            Err(VnetDrop::Malformed)
        );
        // A TSO read whose frame is cut short in its headers.
        let mut short = vnet(F_NEEDS_CSUM, GSO_TCPV4, 1000, 34, 16);
        short.extend(&frame[..40]);
        assert_eq!(
            split(&mut short, Link::Ethernet, &mut s, |_| panic!()),
            Err(VnetDrop::Malformed)
        );
    }

    fn data_frame(seq: u32, id: u16, payload: &[u8], psh: bool) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1])
            .ipv4([10, 77, 0, 2], [10, 77, 1, 100], 63)
            .tcp(5201, 40000, seq, 501)
            .ack(1234);
        let b = if psh { b.psh() } else { b };
        let mut f = Vec::new();
        b.write(&mut f, payload).unwrap();
        f[18..20].copy_from_slice(&id.to_be_bytes());
        let mut h = etherparse::Ipv4Header::from_slice(&f[14..]).unwrap().0;
        h.header_checksum = h.calc_header_checksum();
        f[24..26].copy_from_slice(&h.header_checksum.to_be_bytes());
        f
    }

    /// A run of one stream's frames (as decrypted from the peer) leaves as
    /// one TSO write; cut apart again (as the kernel does for a device
    /// without TSO) it gives back exactly the frames that went in.
    #[test]
    fn a_coalesced_run_segments_back_into_the_same_frames() {
        let sizes = [MSS, MSS, MSS, MSS, 500];
        let (mut frames, mut seq) = (Vec::new(), 7u32);
        for (i, n) in sizes.iter().enumerate() {
            let payload: Vec<u8> = (0..*n).map(|j| (i * 31 + j) as u8).collect();
            frames.push(data_frame(
                seq,
                100 + i as u16,
                &payload,
                i + 1 == sizes.len(),
            ));
            seq = seq.wrapping_add(*n as u32);
        }
        let mut c = Coalescer::new(Link::Ethernet);
        for f in &frames {
            assert!(c.push(f));
        }
        let mut write = c.take().unwrap().to_vec();
        assert!(c.take().is_none());
        assert_eq!((write[0], write[1]), (F_NEEDS_CSUM, GSO_TCPV4));
        assert_eq!(write.len(), HDR_LEN + 54 + 4 * MSS + 500);
        let mut back = Vec::new();
        split(&mut write, Link::Ethernet, &mut Vec::new(), |f| {
            back.push(f.to_vec())
        })
        .unwrap();
        assert_eq!(back, frames);
        assert!(back.iter().all(|f| checksums_ok(f)));
    }

    #[test]
    fn the_coalescer_takes_only_what_one_segment_can_carry() {
        let p = vec![1u8; MSS];
        let first = data_frame(1000, 1, &p, false);
        // A single frame is written as it came, without offload.
        let mut c = Coalescer::new(Link::Ethernet);
        assert!(c.push(&first));
        let one = c.take().unwrap().to_vec();
        assert_eq!(
            (&one[..HDR_LEN], &one[HDR_LEN..]),
            (&PLAIN_HDR[..], &first[..])
        );
        let refused = [
            (
                "a gap in the sequence",
                data_frame(1000 + 2 * MSS as u32, 2, &p, false),
            ),
            (
                "a longer frame",
                data_frame(1000 + MSS as u32, 2, &[1; MSS + 1], false),
            ),
            ("another stream", {
                let mut f = data_frame(1000 + MSS as u32, 2, &p, false);
                f[35] ^= 1;
                f
            }),
            ("a SYN", {
                let mut f = data_frame(1000 + MSS as u32, 2, &p, false);
                f[47] |= 0x02;
                f
            }),
            ("UDP", {
                let mut f = Vec::new();
                PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1])
                    .ipv4([10, 77, 0, 2], [10, 77, 1, 100], 63)
                    .udp(1, 2)
                    .write(&mut f, &p)
                    .unwrap();
                f
            }),
        ];
        for (what, f) in refused {
            let mut c = Coalescer::new(Link::Ethernet);
            assert!(c.push(&first));
            assert!(!c.push(&f), "{what}");
        }
        // Nothing after a shorter (last) frame.
        let mut c = Coalescer::new(Link::Ethernet);
        assert!(c.push(&first));
        assert!(c.push(&data_frame(1000 + MSS as u32, 2, &[1; 100], false)));
        assert!(!c.push(&data_frame(1100 + MSS as u32, 3, &[1; 100], false)));
        // At most 64 KB of IP.
        let mut c = Coalescer::new(Link::Ethernet);
        let mut n = 0;
        while c.push(&data_frame(1000 + (n * MSS) as u32, n as u16, &p, false)) {
            n += 1;
        }
        assert_eq!(n, (MAX_COALESCED - 40) / MSS);
    }

    /// The TUN carries IP packets: a TSO segment the kernel forwards to it
    /// (a download through the exit node) becomes MSS-sized packets, and a
    /// run of packets from the peer (an upload) leaves as one write that
    /// cuts back into the same packets.
    #[test]
    fn on_the_tun_segments_and_runs_are_ip_packets() {
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i % 241) as u8).collect();
        let mut read = vnet(F_NEEDS_CSUM, GSO_TCPV4, MSS as u16, 20, 16);
        read.extend(&tcp_v4(&payload, false)[14..]);
        let mut packets = Vec::new();
        split(&mut read, Link::Ip, &mut Vec::new(), |p| {
            packets.push(p.to_vec())
        })
        .unwrap();
        assert_eq!(packets.len(), 10_000usize.div_ceil(MSS));
        let mut got = Vec::new();
        for p in &packets {
            let mut framed = tcp_v4(b"", false)[..14].to_vec();
            framed.extend(p);
            assert!(checksums_ok(&framed));
            let s = SlicedPacket::from_ip(p).unwrap();
            let Some(TransportSlice::Tcp(t)) = &s.transport else {
                panic!()
            };
            got.extend_from_slice(t.payload());
        }
        assert_eq!(got, payload);

        let mut c = Coalescer::new(Link::Ip);
        for p in &packets {
            assert!(c.push(p));
        }
        let mut write = c.take().unwrap().to_vec();
        assert_eq!((write[0], write[1]), (F_NEEDS_CSUM, GSO_TCPV4));
        let mut back = Vec::new();
        split(&mut write, Link::Ip, &mut Vec::new(), |p| {
            back.push(p.to_vec())
        })
        .unwrap();
        assert_eq!(back, packets);
        // An Ethernet frame is not an IP packet.
        let mut c = Coalescer::new(Link::Ip);
        assert!(!c.push(&tcp_v4(&[1; 100], false)));
        // Neither IPv4 nor IPv6.
        let mut junk = vnet(F_NEEDS_CSUM, GSO_TCPV4, 100, 20, 16);
        junk.extend([0x15; 200]);
        assert_eq!(
            split(&mut junk, Link::Ip, &mut Vec::new(), |_| panic!()),
            Err(VnetDrop::Malformed)
        );
    }

    /// The eight-bytes-at-a-time sum folds to what the plain 16-bit word
    /// sum gives, for every length (odd ones too) and for data that
    /// carries on every add.
    #[test]
    fn the_wide_checksum_sum_matches_the_word_sum() {
        let plain = |d: &[u8], acc: u32| {
            let mut a = u64::from(acc);
            for w in d.chunks(2) {
                a += u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
            }
            while a > 0xffff {
                a = (a & 0xffff) + (a >> 16);
            }
            a as u16
        };
        let mixed: Vec<u8> = (0..70_000u32).map(|i| (i * 7919 % 256) as u8).collect();
        for data in [vec![0xff; 70_000], mixed] {
            for len in (0..80).chain([1499, 1500, 65_535, 70_000]) {
                for acc in [0, 0x1_2345] {
                    assert_eq!(
                        fold(sum(&data[..len], acc)),
                        plain(&data[..len], acc),
                        "{len}"
                    );
                }
            }
        }
    }
}
