//! Sans-IO DHCPv4 server for the meshbridge box (RFC 2131 / RFC 2132).
//!
//! # Layer
//!
//! The box runs its own DHCP server for the devices on its bridge (printers
//! and the like). This crate is the protocol core only: it owns the address
//! pool, the leases, their persistence format and the rogue-server guard. It
//! opens no sockets and reads no clock. The daemon captures UDP datagrams
//! with port 67 or 68 on the bridge, hands them in, and sends what comes
//! out; all encoding and decoding of DHCP messages is done by `dhcproto`.
//!
//! Time is the wall clock ([`std::time::SystemTime`]) passed as an argument,
//! because leases are persisted and must mean the same after a restart.
//!
//! # Run loop
//!
//! ```no_run
//! # use std::time::SystemTime;
//! # use meshbridge_dhcp::{Event, Input, LeaseDb, Server, ServerConfig};
//! # fn run(config: ServerConfig, stored: Option<String>) -> Result<(), Box<dyn std::error::Error>> {
//! # let recv = || -> Option<(meshbridge_dhcp::Mac, std::net::Ipv4Addr, u16, u16, Vec<u8>)> { None };
//! # let send = |_t: meshbridge_dhcp::Transmit| {};
//! # let persist = |_s: String| {};
//! # let sleep_until = |_t: Option<SystemTime>| {};
//! let restored = match stored {
//!     Some(text) => LeaseDb::from_json(&text)?,
//!     None => LeaseDb::empty(),
//! };
//! let mut server = Server::new(config, restored, SystemTime::now())?;
//! loop {
//!     // 1. Feed every UDP datagram with port 67 or 68 seen on the bridge.
//!     if let Some((src_mac, src_ip, src_port, dst_port, payload)) = recv() {
//!         let input = Input { src_mac, src_ip, src_port, dst_port, payload: &payload };
//!         // An error only says why the datagram was dropped (and is counted).
//!         let _ = server.handle_input(SystemTime::now(), input);
//!     }
//!     // 2. Run timers when due (probes, end of suspension, lease expiry).
//!     if server.poll_timeout().is_some_and(|t| t <= SystemTime::now()) {
//!         server.handle_timeout(SystemTime::now());
//!     }
//!     // 3. After every call into the server, drain both queues.
//!     while let Some(transmit) = server.poll_transmit() {
//!         send(transmit); // wrap into UDP/IPv4/Ethernet exactly as given
//!     }
//!     while let Some(event) = server.poll_event() {
//!         if event == Event::LeasesChanged {
//!             persist(server.snapshot().to_json());
//!         }
//!     }
//!     // 4. Sleep until the next datagram or `poll_timeout()`.
//!     sleep_until(server.poll_timeout());
//! }
//! # }
//! ```
//!
//! # Behaviour in brief
//!
//! * A MAC gets its reservation, else the address it had before (even long
//!   expired, as long as nobody else took it), else the address it asks for,
//!   else a free pool address. Addresses nobody ever held are handed out
//!   before remembered ones, so offline devices keep theirs.
//! * Declined addresses are quarantined for ten minutes; addresses ARP saw in
//!   use ([`Server::note_in_use`]) are not offered to other MACs for ten
//!   minutes.
//! * Relayed requests (giaddr set) are not supported and are dropped.
//! * Another DHCP server on the segment suspends new offers
//!   ([`Event::ForeignServer`]): we never fight the home router. One forged
//!   reply is not enough: with `probe_interval` set, one MAC must answer
//!   [`PROBE_ANSWERS_TO_SUSPEND`] of our probes; without, it must keep
//!   replying for [`PASSIVE_EVIDENCE_SPAN`]. Renewals of existing leases are
//!   answered even then. We resume ([`Event::ForeignServerGone`]) after three
//!   quiet probe intervals.
//! * A device speaks only for itself: a client message whose `chaddr` is
//!   not the frame's Ethernet source is dropped ([`Stats::chaddr_mismatch`]).
//!   Each MAC is rate limited ([`PER_MAC_RATE`]), and MACs the server does
//!   not know share one budget ([`NEWCOMER_RATE`]), so a flood from random
//!   MACs cannot crowd out known devices ([`Stats::rate_limited`]).
//! * Starvation: offers are capped at [`MAX_OFFERS`] (the oldest is dropped)
//!   and an address remembered for a device is never given to another
//!   until `lease_time × REMEMBER_LEASES` after its lease ended.
//!
//! Hostnames and MACs are personal data: log them at debug level only.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod guard;
mod lease;
mod limit;
mod persist;
mod server;
mod wire;

use std::time::{Duration, SystemTime};

pub use config::{
    ConfigError, NodeLease, ServerConfig, MAX_DNS_SERVERS, MAX_DOMAIN_LEN, MAX_LEASE_TIME,
    MIN_LEASE_TIME, MIN_MTU, MIN_PROBE_INTERVAL, WAITING_LEASE_TIME,
};
pub use guard::{
    MAX_SUSPECTS, PASSIVE_EVIDENCE_SPAN, PASSIVE_REPLIES_TO_SUSPEND, PASSIVE_RESUME_AFTER,
    PROBE_ANSWERS_TO_SUSPEND, QUIET_PROBES_TO_RESUME,
};
pub use lease::{
    Lease, LeaseState, DECLINE_QUARANTINE, IN_USE_HOLD, MAX_OFFERS, OFFER_HOLD, OFFER_MIN_HOLD,
    REMEMBER_LEASES,
};
pub use limit::{MAX_TRACKED_MACS, NEWCOMER_BURST, NEWCOMER_RATE, PER_MAC_BURST, PER_MAC_RATE};
pub use persist::{LeaseDb, LeaseRecord, PersistError, LEASE_DB_VERSION};
pub use server::{Event, Input, InputError, Server, Stats, Transmit};
pub use wire::{probe_mac, BROADCAST_MAC, CLIENT_PORT, SERVER_PORT};

pub use meshbridge_types::Mac;

/// `t + d`, or `t` itself if that is beyond what `SystemTime` can hold
/// (never panics on absurd clocks).
pub(crate) fn after(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_add(d).unwrap_or(t)
}
