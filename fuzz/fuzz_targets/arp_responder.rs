//! Arbitrary bytes as ARP frames from the TAP: the responder must never
//! panic, and whatever it emits must be a well-formed frame from our MAC.
//!
//! The first three input bytes set the neighbour TTL, the virtual time
//! between frames and which calls to mix in; the rest is a sequence of
//! frames, each preceded by its length byte, so that one input exercises
//! learning, expiry, announcements and rate limiting across several frames.

#![no_main]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use meshbridge_arp::{Config, Responder};

const OURS: [u8; 6] = [0x02, 0x4d, 0x42, 0x00, 0x00, 0x01];

fn routes(ip: Ipv4Addr) -> bool {
    ip.octets()[0] == 10 || ip.octets()[3] % 2 == 0
}

fn local(ip: Ipv4Addr) -> bool {
    ip.octets()[..3] == [192, 168, 1] && ip.octets()[3] >= 100
}

fn drain(arp: &mut Responder) {
    while let Some(frame) = arp.poll_transmit() {
        assert!(frame.len() >= 42, "short frame emitted");
        assert_eq!(frame[6..12], OURS, "frame not from our MAC");
        assert_eq!(frame[12..14], [0x08, 0x06], "frame is not ARP");
    }
    while arp.poll_event().is_some() {}
}

fuzz_target!(|data: &[u8]| {
    let (control, mut rest) = data.split_at(data.len().min(3));
    let ttl = Duration::from_secs(u64::from(control.first().copied().unwrap_or(0)) + 1);
    let mut arp = Responder::new(Config {
        mac: OURS.into(),
        gateway: Ipv4Addr::new(192, 168, 1, 1),
        neighbour_ttl: ttl,
    });
    let mut now = Instant::now();
    let step = Duration::from_millis(u64::from(control.get(1).copied().unwrap_or(0)) * 20);
    let ops = control.get(2).copied().unwrap_or(0);

    if ops & 1 != 0 {
        arp.announce(now);
    }
    let mut i = 0usize;
    while let Some((&len, tail)) = rest.split_first() {
        let (frame, tail) = tail.split_at(tail.len().min(usize::from(len)));
        rest = tail;
        i += 1;
        let _ = arp.handle_frame(now, frame, &routes, &local);
        drain(&mut arp);
        if ops & 2 != 0 {
            if let [a, b, c, d, ..] = *frame {
                arp.request(now, Ipv4Addr::new(a, b, c, d));
                drain(&mut arp);
            }
        }
        if ops & 4 != 0 && i % 3 == 0 {
            arp.announce(now);
        }
        now += step;
        if arp.poll_timeout().is_some_and(|t| t <= now) {
            arp.handle_timeout(now);
            drain(&mut arp);
        }
        let _ = arp.neighbours().count();
    }
    // Run every timer out.
    while let Some(deadline) = arp.poll_timeout() {
        arp.handle_timeout(deadline);
        drain(&mut arp);
    }
    assert_eq!(arp.neighbours().count(), 0);
});
