//! ARP for the box's side of the bridge segment.
//!
//! # The layer
//!
//! The box owns a TAP device that sits in the kernel bridge next to the LAN
//! ports. Devices on the segment (printers, laptops) reach the mesh through
//! it, and they find the box the only way they know: ARP. This crate is the
//! box's ARP on that TAP. It
//!
//! * answers requests for the **gateway address**, the box's own address on
//!   the segment, and defends it against probes and conflicting hosts
//!   (RFC 5227 §2.4 (c));
//! * answers, as a proxy, requests for addresses the box **routes** (mesh
//!   destinations), but only when the address is not in the segment's own
//!   device pool and no device on the segment has been seen using it;
//! * never answers an RFC 5227 probe (sender `0.0.0.0`) for anything but the
//!   gateway: a DHCP client probes the address it was just offered and
//!   declines the lease if anybody answers;
//! * keeps a **neighbour table** learned from the senders of every ARP
//!   packet on the segment, and resolves addresses on request;
//! * announces the gateway address with gratuitous ARP (RFC 5227 §2.3).
//!
//! The rule behind all of it: the box must never break the network it sits
//! in. When in doubt it stays silent (and counts the request in
//! [`Stats::refused`]). Malformed input is counted and dropped, never a
//! panic.
//!
//! [`Responder`] is sans-IO: it never touches the TAP, a clock or a timer.
//! Frames and time go in as arguments; frames to write, events and the next
//! deadline come out of `poll_*` methods. Parsing and emitting use
//! etherparse (`Ethernet2Header`, `ArpPacketSlice`, `ArpEthIpv4Packet`).
//!
//! # Run loop
//!
//! The daemon hands every ARP frame (`EtherType` 0x0806) read from the TAP to
//! [`Responder::handle_frame`], calls [`Responder::handle_timeout`] when the
//! deadline from [`Responder::poll_timeout`] passes, and after every input
//! drains [`Responder::poll_transmit`] (whole Ethernet frames for the TAP)
//! and [`Responder::poll_event`]:
//!
//! ```
//! use std::net::Ipv4Addr;
//! use std::time::{Duration, Instant};
//! use meshbridge_arp::{Config, Event, Mac, Responder};
//!
//! /// What woke the daemon up.
//! enum Input<'a> {
//!     Frame(&'a [u8]),
//!     Timeout,
//! }
//!
//! fn step(arp: &mut Responder, now: Instant, input: Input, tap: &mut Vec<Vec<u8>>) {
//!     let mesh = |ip: Ipv4Addr| ip.octets()[..2] == [10, 77];
//!     let pool = |ip: Ipv4Addr| ip.octets()[..3] == [192, 168, 1] && ip.octets()[3] >= 100;
//!     match input {
//!         Input::Frame(frame) => {
//!             if let Err(e) = arp.handle_frame(now, frame, &mesh, &pool) {
//!                 eprintln!("dropped ARP frame: {e}"); // debug level in the daemon
//!             }
//!         }
//!         Input::Timeout => arp.handle_timeout(now),
//!     }
//!     // After every input, drain.
//!     while let Some(frame) = arp.poll_transmit() {
//!         tap.push(frame); // write(tap_fd, &frame)
//!     }
//!     while let Some(event) = arp.poll_event() {
//!         match event {
//!             Event::Conflict { .. } => eprintln!("another host uses our gateway address"),
//!             _ => {} // Learned, Expired: log at debug level
//!         }
//!     }
//!     // ...then sleep until the next frame or `arp.poll_timeout()`.
//! }
//!
//! let gateway = Ipv4Addr::new(192, 168, 1, 1);
//! let mut arp = Responder::new(Config::new(Mac([0x02, 0, 0, 0, 0, 1]), gateway));
//! let mut tap = Vec::new();
//! let start = Instant::now(); // only the daemon reads the clock
//!
//! arp.announce(start);
//! while let Some(deadline) = arp.poll_timeout() {
//!     step(&mut arp, deadline, Input::Timeout, &mut tap);
//! }
//! assert_eq!(tap.len(), 2); // two gratuitous ARPs, 2 s apart
//!
//! // A printer asks for a mesh address: who-has 10.77.0.5 tell 192.168.1.20.
//! let request: [u8; 42] = [
//!     0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x1b, 0xa9, 0x11, 0x22, 0x33, 0x08, 0x06,
//!     0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01,
//!     0x00, 0x1b, 0xa9, 0x11, 0x22, 0x33, 192, 168, 1, 20,
//!     0, 0, 0, 0, 0, 0, 10, 77, 0, 5,
//! ];
//! step(&mut arp, start + Duration::from_secs(3), Input::Frame(&request), &mut tap);
//! assert_eq!(tap.len(), 3); // answered with our MAC
//! assert_eq!(arp.lookup(Ipv4Addr::new(192, 168, 1, 20)), Some(Mac([0x00, 0x1b, 0xa9, 0x11, 0x22, 0x33])));
//! ```
//!
//! Time only moves forward through the `now` arguments, so tests and
//! simulations drive the responder on virtual time.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod responder;
mod table;
mod wire;

pub use error::ArpError;
pub use responder::{
    Config, Event, Responder, Stats, ANNOUNCE_INTERVAL, ANNOUNCE_NUM, DEFAULT_NEIGHBOUR_TTL,
    DEFEND_INTERVAL, MAX_NEIGHBOURS, MAX_REQUESTS_PER_INTERVAL, QUEUE_LIMIT, REQUEST_INTERVAL,
};

pub use meshbridge_types::Mac;
