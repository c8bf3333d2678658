//! The kernel's rtnetlink replies as the daemon reads them (`host::rtnl`):
//! arbitrary datagrams through the reply parser, then every message through
//! the link and address readers. Never a panic; an error ends the request
//! and is a positive errno; a bridge index of 0 (none) reads as none.
//!
//! Input: 4 bytes of sequence number, then datagrams separated by 0xff.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshbridge::host::rtnl::{parse_addr_v4, parse_link, parse_replies, Replies};

fuzz_target!(|data: &[u8]| {
    let Some((seq, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let seq = u32::from_ne_bytes(*seq);
    let mut out = Replies::default();
    for datagram in rest.split(|b| *b == 0xff).filter(|d| !d.is_empty()) {
        if out.done {
            break;
        }
        parse_replies(datagram, seq, &mut out);
    }
    if let Some(e) = out.error {
        assert!(e > 0, "errno {e}");
        assert!(out.done);
    }
    for (_, body) in &out.messages {
        if let Some(l) = parse_link(body) {
            assert_ne!(l.master, Some(0));
        }
        let _ = parse_addr_v4(body, 1);
    }
});
