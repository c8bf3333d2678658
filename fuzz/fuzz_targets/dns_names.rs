//! The box's DNS zone and resolv.conf reading: arbitrary names, hostnames
//! and files, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshbridge::dns::upstreams_from_resolv_conf;
use meshbridge_mdns::Names;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = upstreams_from_resolv_conf(&text, &[]);
    let mut zone = Names::new("mesh.home.arpa", vec!["10.77.1.0/24".parse().unwrap()]).unwrap();
    for (i, line) in text.lines().enumerate() {
        zone.set(line, vec![std::net::IpAddr::from([10, 77, 1, (i % 250) as u8])]);
        if let Ok(name) = hickory_proto::rr::Name::from_ascii(line) {
            for t in [hickory_proto::rr::RecordType::A, hickory_proto::rr::RecordType::PTR, hickory_proto::rr::RecordType::AAAA] {
                let _ = zone.lookup(&name, t);
            }
        }
    }
});
