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
//! Peers come from a mesh *backend*; today that is the static list in the
//! config file or a wg-quick file ([`wgquick`]).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod allowed_ips;
pub mod keys;
pub mod wg;
pub mod wgquick;

pub use keys::{KeyError, PresharedKey, PrivateKey, PublicKey};
pub use wg::{Mesh, MeshDrop, Output, PeerConfig, PeerId, PeerStatus};
