//! Arbitrary replies from a remote box's DNS server into the site-to-site
//! browser (with the id of the query outstanding, so they are parsed for
//! real), what it learned into the reannouncer, and the same bytes as an
//! mDNS packet on the link: counted and dropped or used, never a panic, and
//! every packet the reannouncer sends parses again.
#![no_main]

use hickory_proto::op::Message;
use hickory_proto::rr::Name;
use libfuzzer_sys::fuzz_target;
use meshbridge_mdns::{Reannouncer, RemoteBrowser, DEFAULT_SERVICES};
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let allow: Vec<String> = DEFAULT_SERVICES.iter().map(|s| s.to_string()).collect();
    let domain = Name::from_ascii("mesh.home.arpa.").unwrap();
    let mut b = RemoteBrowser::new(now, &domain, &allow, 1);
    b.handle_timeout(now);
    let mut sent = 0u16;
    while b.poll_transmit().is_some() {
        sent += 1;
    }
    // Each id in turn gets the fuzzed reply.
    for id in 1..=sent.min(4) {
        let mut reply = data.to_vec();
        if reply.len() >= 2 {
            reply[..2].copy_from_slice(&id.to_be_bytes());
        }
        b.handle_response(now, &reply);
        while b.poll_transmit().is_some() {}
    }
    let mut r = Reannouncer::new(&["meshbridge".to_string()]);
    r.set_offers(now, "home", &b.services(now));
    let _ = r.handle_packet(now, data);
    for s in 0..6 {
        r.handle_timeout(now + Duration::from_millis(300 * s));
        while let Some(p) = r.poll_transmit() {
            assert!(Message::from_vec(&p).is_ok());
            assert!(p.len() <= 9000);
        }
    }
    let _ = r.handle_packet(now, data);
    r.set_offers(now, "home", &[]);
    while r.poll_transmit().is_some() {}
    b.handle_timeout(now + Duration::from_secs(5000));
    assert!(b.services(now + Duration::from_secs(5000)).is_empty());
});
