//! Arbitrary mDNS packets into the discovery cache and the box's own
//! responder, then DNS-SD questions through the proxy: counted and dropped
//! or cached, never a panic.
#![no_main]

use hickory_proto::rr::{Name, RecordType};
use libfuzzer_sys::fuzz_target;
use meshbridge_mdns::{Cache, Proxy, DEFAULT_SERVICES};
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut cache = Cache::new();
    let src = std::net::IpAddr::from([10, 77, 1, 100]);
    let _ = cache.handle_packet(now, src, data);
    let allow: Vec<String> = DEFAULT_SERVICES.iter().map(|s| s.to_string()).collect();
    let domain = Name::from_ascii("mesh.home.arpa.").unwrap();
    let proxy = Proxy::new(&domain, &allow, vec![src]);
    for q in ["_ipp._tcp.mesh.home.arpa.", "_services._dns-sd._udp.mesh.home.arpa.", "printer.mesh.home.arpa."] {
        let name = Name::from_ascii(q).unwrap();
        for t in [RecordType::PTR, RecordType::SRV, RecordType::TXT, RecordType::A] {
            let _ = proxy.answer(&cache, now, &name, t);
        }
    }
    // Names taken from the packet itself, translated back.
    let text = String::from_utf8_lossy(data);
    if let Ok(name) = Name::from_ascii(format!("{}.mesh.home.arpa.", text.trim_matches('.'))) {
        let _ = proxy.answer(&cache, now, &name, RecordType::ANY);
    }
    // The box's own responder sees the same packet.
    let mut r = meshbridge_mdns::Responder::new(now, "meshbridge", std::net::Ipv4Addr::new(10, 77, 1, 1));
    r.handle_timeout(now);
    let _ = r.handle_packet(now, std::net::Ipv4Addr::new(10, 77, 1, 100), data);
    r.handle_timeout(now + Duration::from_secs(2));
    while r.poll_transmit().is_some() {}
    cache.handle_timeout(now + Duration::from_secs(5000));
    assert!(cache.is_empty());
});
