//! Arbitrary bytes as what a DERP server sends: the HTTP upgrade answer,
//! the frame decoder and the login state machine must never panic, and
//! nothing may come out that the input did not carry.
//!
//! The first byte sets the size of the pieces the rest is fed in and the
//! mode: from the start of the connection (HTTP, greeting, info box), or
//! after a real login with a fixed server key, so that the steady-state
//! frames (packets, ping, peer gone, health, restarting) are reached.

#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use meshbridge_tailnet::derp::{
    encode_frame, frame, parse_server_frame, seal_to, DerpConn, DerpEvent, FrameDecoder, MAGIC,
    MAX_PACKET_SIZE,
};
use meshbridge_tailnet::keys::NodePrivate;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(first % 64) + 1;
    let now = Instant::now();
    let ours = NodePrivate::from_bytes([1; 32]);
    let mut conn = DerpConn::new(now, ours.clone(), "derp.test", true, [2; 24]);
    while conn.poll_transmit().is_some() {}
    if first & 0x80 != 0 {
        let server = NodePrivate::from_bytes([3; 32]);
        let mut login = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
        let mut greet = MAGIC.to_vec();
        greet.extend_from_slice(server.public().as_bytes());
        login.extend(encode_frame(frame::SERVER_KEY, &greet));
        login.extend(encode_frame(
            frame::SERVER_INFO,
            &seal_to(&server, &ours.public(), [4; 24], b"{}"),
        ));
        conn.handle_input(now, &login).expect("a valid login");
        assert!(conn.is_up());
        while conn.poll_event().is_some() {}
        while conn.poll_transmit().is_some() {}
    }
    for piece in rest.chunks(step) {
        if conn.handle_input(now, piece).is_err() {
            break;
        }
    }
    while let Some(ev) = conn.poll_event() {
        if let DerpEvent::Packet { data, .. } = ev {
            assert!(data.len() <= rest.len(), "a packet longer than the input");
        }
    }
    while let Some(t) = conn.poll_transmit() {
        assert!(t.len() <= rest.len() + 64 + MAX_PACKET_SIZE);
    }

    let mut d = FrameDecoder::default();
    d.push(rest);
    while let Ok(Some((kind, payload))) = d.next_frame() {
        let _ = parse_server_frame(kind, &payload);
    }
});
