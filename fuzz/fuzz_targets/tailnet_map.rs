//! Arbitrary bytes as a tailnet map stream body (u32 LE length-prefixed
//! JSON MapResponses): the frame decoder, the JSON decoding and the netmap
//! must never panic, and the peer list (and the meshbridge boxes found in
//! it for site-to-site discovery) must stay well-formed.
//!
//! The first input byte sets the size of the pieces the rest is fed in, so
//! one input exercises messages split across reads. The same bytes also go,
//! whole, through the JSON decoder, the early-payload filter and the
//! HTTP/1.1 response parsers. No keys or crypto are involved.

#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use meshbridge_tailnet::mapstream::{decode_message, FrameDecoder};
use meshbridge_tailnet::netmap::Netmap;
use meshbridge_tailnet::ts2021::{parse_key_response, parse_upgrade_response, EarlyPayloadFilter};

fn check(nm: &Netmap) {
    let peers = nm.peers();
    let keys: BTreeSet<_> = peers.iter().map(|p| p.node_key).collect();
    assert_eq!(keys.len(), peers.len(), "node keys repeat in the peer list");
    for p in &peers {
        assert!(!p.node_key.is_zero(), "zero node key listed");
        assert!(p.derp_region != Some(0), "region 0 listed");
    }
    // Site-to-site discovery's boxes: peers, each once, with a usable
    // port and a domain of plain labels.
    let boxes = meshbridge_tailnet::netmap::dns_sd_boxes(nm);
    assert!(boxes.len() <= peers.len(), "more boxes than peers");
    for b in &boxes {
        assert!(keys.contains(&b.node_key), "a box that is not a peer");
        assert!(b.server.port() != 0 && b.server.is_ipv4(), "bad box server {}", b.server);
        assert!(b.domain.len() <= 200, "box domain too long");
        assert!(
            b.domain.split('.').all(|l| !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')),
            "bad box domain {:?}",
            b.domain
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 64) + 1;

    let mut decoder = FrameDecoder::new(1 << 16);
    let mut nm = Netmap::new();
    'feed: for piece in rest.chunks(step) {
        if decoder.push(piece).is_err() {
            break;
        }
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= 1 << 16, "frame above the limit");
                    if let Ok(msg) = decode_message(&frame) {
                        let _ = nm.apply(msg);
                        check(&nm);
                    }
                }
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
    let _ = decoder.finish();

    if let Ok(msg) = decode_message(rest) {
        let mut one = Netmap::new();
        let _ = one.apply(msg);
        check(&one);
    }

    let mut early = EarlyPayloadFilter::new();
    let mut out = Vec::new();
    for piece in rest.chunks(step) {
        if early.push(piece, &mut out).is_err() {
            break;
        }
    }
    assert!(out.len() <= rest.len(), "early filter made bytes up");

    let _ = parse_key_response(rest, true);
    if let Ok(Some(n)) = parse_upgrade_response(rest, false) {
        assert!(n <= rest.len());
    }
});
