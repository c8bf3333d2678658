//! The TAP's and the TUN's offloads (`host::vnet`): arbitrary reads with a
//! `virtio_net_hdr` in front, as the kernel hands them over. Never a panic;
//! every frame handed out fits the read; and the frames the coalescer takes
//! into one TSO write come back unchanged when that write is cut apart
//! again (what the kernel does for a device without TSO).
//!
//! Input: first byte's low bit picks the link (0: Ethernet/TAP, 1: IP/TUN);
//! with its second bit clear the rest is one read, with it set the rest
//! describes a well-formed TCP/IPv4 TSO segment (MSS, payload length, the
//! segment's sequence number and flags, the payload), so the fuzzer reaches
//! segmentation and coalescing from the first run.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshbridge::host::vnet::{split, Coalescer, Link};

fuzz_target!(|data: &[u8]| {
    let Some((first, read)) = data.split_first() else {
        return;
    };
    let link = if first & 1 == 0 { Link::Ethernet } else { Link::Ip };
    let built = first & 2 != 0;
    let read = if built { tso_segment(link, read) } else { read.to_vec() };
    let mut buf = read.clone();
    let mut frames = Vec::new();
    let r = split(&mut buf, link, &mut Vec::new(), |f| frames.push(f.to_vec()));
    if built && read.len() > 10 {
        assert!(r.is_ok(), "a well-formed segment was dropped: {r:?}");
    }
    let mut c = Coalescer::new(link);
    let mut held: Vec<Vec<u8>> = Vec::new();
    for f in &frames {
        assert!(f.len() <= read.len(), "a frame longer than the read");
        if !c.push(f) {
            check_run(&mut c, &mut held, link);
            if c.push(f) {
                held.push(f.clone());
            }
        } else {
            held.push(f.clone());
        }
    }
    check_run(&mut c, &mut held, link);
});

/// Cuts the coalescer's write apart and compares with the frames it took.
fn check_run(c: &mut Coalescer, held: &mut Vec<Vec<u8>>, link: Link) {
    let Some(w) = c.take() else {
        assert!(held.is_empty());
        return;
    };
    let mut w = w.to_vec();
    let mut back = Vec::new();
    split(&mut w, link, &mut Vec::new(), |f| back.push(f.to_vec()))
        .expect("the coalescer's own write splits");
    // A frame with a wrong checksum goes in as it is but comes back with
    // the right one: compare all but the IPv4 and TCP checksum fields.
    let ip = if link == Link::Ethernet { 14 } else { 0 };
    let mask = |f: &[u8]| {
        let mut f = f.to_vec();
        for at in [ip + 10, ip + 36] {
            if at + 2 <= f.len() {
                f[at..at + 2].copy_from_slice(&[0, 0]);
            }
        }
        f
    };
    let back: Vec<_> = back.iter().map(|f| mask(f)).collect();
    let held_masked: Vec<_> = held.iter().map(|f| mask(f)).collect();
    assert_eq!(back, held_masked, "a coalesced run does not cut back into its frames");
    held.clear();
}

/// vnet header (TSO, TCPv4) + [Ethernet] + IPv4 + TCP + payload, from
/// `[mss: 2, len: 2, seq: 4, flags: 1, payload...]`.
fn tso_segment(link: Link, d: &[u8]) -> Vec<u8> {
    if d.len() < 9 {
        return Vec::new();
    }
    let mss = usize::from(u16::from_le_bytes([d[0], d[1]]) % 1500).max(1);
    let len = usize::from(u16::from_le_bytes([d[2], d[3]])).clamp(1, 60_000);
    let l2 = if link == Link::Ethernet { 14 } else { 0 };
    let mut f = vec![0u8; 10 + l2 + 40];
    f[0] = 1; // needs checksum
    f[1] = 1; // TCPv4
    f[4..6].copy_from_slice(&(mss as u16).to_le_bytes());
    f[6..8].copy_from_slice(&((l2 + 20) as u16).to_le_bytes());
    f[8..10].copy_from_slice(&16u16.to_le_bytes());
    if l2 > 0 {
        f[10 + 12..10 + 14].copy_from_slice(&[0x08, 0x00]);
    }
    let ip = 10 + l2;
    f[ip] = 0x45;
    f[ip + 2..ip + 4].copy_from_slice(&((40 + len) as u16).to_be_bytes());
    f[ip + 8] = 64;
    f[ip + 9] = 6;
    f[ip + 12..ip + 20].copy_from_slice(&[10, 77, 0, 2, 203, 0, 113, 10]);
    let tcp = ip + 20;
    f[tcp..tcp + 4].copy_from_slice(&[0x9c, 0x40, 0x14, 0x51]);
    f[tcp + 4..tcp + 8].copy_from_slice(&d[4..8]);
    f[tcp + 12] = 0x50;
    f[tcp + 13] = 0x10 | (d[8] & 0x09); // ACK, maybe PSH and FIN
    f[tcp + 14] = 0xff;
    f.extend((0..len).map(|i| d.get(9 + i % (d.len() - 8).max(1)).copied().unwrap_or(0)));
    f
}
