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
//! this crate's tests boringtun reads a fake clock ([`clock`]), moved with
//! `now`, so all of those are simulated: tests show that a session expires
//! without traffic, that `is_up` then turns false, and that an unanswered
//! handshake is retried. Not simulated: the cookie/rate-limiter's
//! one-second window and the TAI64N handshake timestamps, which stay on
//! boringtun's clock (the fake one in tests, which does not move by itself);
//! outside this crate's tests the daemon's `now` and boringtun's clock are
//! both the real monotonic clock.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod allowed_ips;
pub mod clock;
pub mod keys;
pub mod peerset;
pub mod wg;
pub mod wgquick;

#[cfg(test)]
mod tests;

pub use keys::{KeyError, PresharedKey, PrivateKey, PublicKey};
pub use peerset::PeerSet;
pub use wg::{Applied, Mesh, MeshDrop, Output, Path, PeerConfig, PeerId, PeerStatus};
