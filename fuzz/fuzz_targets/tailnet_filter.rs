//! The tailnet's packet filter: arbitrary address specs (the text a control
//! server sends in `SrcIPs` / `DstPorts`) and arbitrary packets through the
//! firewall both ways. Never a panic; a spec that parses contains what its
//! text names; the connection table never grows past its capacity.
//!
//! Input: spec lines up to the first NUL byte, then packet records
//! `[dir, len, bytes...]` (dir & 1: outbound; dir >> 1: seconds to advance).
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshbridge_engine::filter::{parse_spec, ConnTrack, Filter, Firewall, Rule};
use std::net::IpAddr;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let (text, packets) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let text = String::from_utf8_lossy(text);
    let specs: Vec<&str> = text.lines().collect();
    for s in &specs {
        if let (Ok(ranges), Ok(ip)) = (parse_spec(s), s.trim().parse::<IpAddr>()) {
            assert!(ranges.iter().any(|r| r.contains(ip)), "{s:?} parsed but does not hold itself");
        }
    }
    let (rule, _) = Rule::parse(
        specs.iter().copied(),
        specs.iter().enumerate().map(|(i, s)| (*s, i as u16, (i as u16).wrapping_mul(977))),
        &[],
    );
    let mut fw = Firewall { filter: Filter::new(vec![rule]), conntrack: ConnTrack::new(8) };
    let mut now = Instant::now();
    let mut rest = packets;
    while rest.len() >= 2 {
        let (dir, len) = (rest[0], usize::from(rest[1]));
        let body = &rest[2..];
        let p = &body[..len.min(body.len())];
        rest = &body[p.len()..];
        now += Duration::from_secs(u64::from(dir >> 1));
        if dir & 1 == 1 {
            fw.note_outbound(now, p);
        } else {
            let _ = fw.check_inbound(now, p).accepts();
        }
        assert!(fw.conntrack.len() <= 8);
    }
});
