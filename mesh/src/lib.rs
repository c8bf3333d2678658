//! WireGuard peers, keys and cryptokey routing for meshbridge.
//!
//! This crate is the mesh side of the box (see DESIGN.md): [`wg::Mesh`] runs
//! userspace WireGuard (boringtun's noise core) for every peer over one UDP
//! socket owned by the daemon. The daemon's loop is:
//!
//! 1. a datagram arrives: [`wg::Mesh::handle_datagram`];
//! 2. a packet must go to the mesh: [`wg::Mesh::route`] then [`wg::Mesh::send`];
//! 3. after each input drain [`wg::Mesh::poll_output`] (datagrams to send,
//!    decrypted packets that passed cryptokey routing);
//! 4. when [`wg::Mesh::poll_timeout`] is due call [`wg::Mesh::handle_timeout`].
//!
//! Peers are a desired state, a [`PeerSet`] keyed by public key, that
//! [`wg::Mesh::apply`] makes true idempotently: a peer whose key and
//! preshared key stay keeps its session when its endpoint, allowed IPs,
//! keepalive or name change. Producers of peer sets: the static peers of
//! the config file or a wg-quick file ([`wgquick`]) today, a tailnet control
//! client later; [`PeerSet::merge`] combines them (the earlier set wins a
//! key both have). A datagram goes to a peer over a [`Path`]: UDP, or
//! (later, for the tailnet) a DERP relay.
//!
//! # Time
//!
//! Everything the mesh decides itself runs on the `now` it is given: when
//! to tick the timers and when a persistent keepalive is due. boringtun's
//! noise core reads its own clock for the rest — handshake retransmission
//! (`REKEY_TIMEOUT`, 5 s), rekeying (`REKEY_AFTER_TIME`, 120 s), session
//! expiry (`REJECT_AFTER_TIME`, 180 s) and so the age of the last handshake
//! that [`wg::Mesh::is_up`] and the daemon's exit-node kill switch use. In
//! this crate's tests boringtun reads a fake clock ([`clock`], boringtun's
//! `mock-instant`), moved together with `now`, so all of those are
//! simulated: tests show that a session expires after `REJECT_AFTER_TIME`
//! without traffic, that `is_up` then turns false, and that an unanswered
//! handshake is retried after `REKEY_TIMEOUT`. Another crate's tests (the
//! engine's kill switch) get the same by enabling the `fake-clock` feature
//! in their dev-dependencies. The handshake rate limiter runs on the same
//! fake clock.
//!
//! Not simulated: the TAI64N timestamp in handshake initiations starts from
//! the real wall clock when a peer's `Tunn` is created (then moves with
//! boringtun's clock), and boringtun's clock may differ from the daemon's
//! `now` across a suspend (boringtun counts suspended time, `Instant` does
//! not) — outside tests both are the real clock, read a few microseconds
//! apart.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod allowed_ips;
pub mod clock;
pub mod keys;
pub mod peerset;
pub mod source_limit;
pub mod wg;
pub mod wgquick;

#[cfg(test)]
mod tests;

pub use keys::{KeyError, PresharedKey, PrivateKey, PublicKey};

/// WireGuard's `REJECT_AFTER_TIME`: a session whose last handshake is this
/// old can no longer carry data. The one rule for "up": the engine's
/// exit-node kill switch ([`Mesh::is_up`]) and the daemon's "online" both
/// use it (a peer with traffic re-handshakes every 2 minutes).
pub const REJECT_AFTER_TIME: std::time::Duration = std::time::Duration::from_secs(180);
pub use peerset::PeerSet;
pub use wg::{Applied, Mesh, MeshDrop, Output, Path, PeerConfig, PeerId, PeerStatus};
