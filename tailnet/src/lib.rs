//! Sans-IO tailnet control protocol for meshbridge: the box as a node of a
//! Tailscale or Headscale tailnet.
//!
//! # Layer
//!
//! This crate holds the *control plane* of a tailnet node, as Tailscale's
//! open-source client speaks it to a control server (Headscale or
//! Tailscale's service). It opens no sockets, reads no clock and draws no
//! randomness of its own (keys and ephemerals are passed in):
//!
//! * [`keys`]: machine, node and disco keys and their text forms; the key
//!   file the daemon keeps in its state directory.
//! * [`ts2021`]: `GET /key` and the HTTP/1.1 `/ts2021` upgrade that carries
//!   the Noise handshake, and the early payload after it.
//! * [`noise`]: the Noise IK handshake and the encrypted record layer.
//! * [`tailcfg`]: the JSON control messages (register, map request, map
//!   response with nodes, DERP map, packet filter, DNS).
//! * [`control`]: building requests and deciding what a registration
//!   answer means.
//! * [`mapstream`]: the length-prefixed messages of the map stream.
//! * [`netmap`]: the network map the stream builds, and the peer list
//!   ([`netmap::TailnetPeer`]) that feeds the mesh's peer set.
//! * [`derp`]: the DERP relay client (framing, login, packets), sans-IO.
//! * [`stun`]: STUN binding requests and responses (our public endpoint).
//! * [`disco`]: the disco messages (ping, pong, call-me-maybe in NaCl
//!   boxes) and the state that confirms a direct UDP path to each peer.
//!
//! Buffers that a burst grew (a full map, a batch of records) are given
//! back once drained ([`trim_buffer`]): the daemon runs one node per
//! bridged device, each with its own connections.
//!
//! HTTP/2 runs inside the Noise stream (requests `POST /machine/register`
//! and `POST /machine/map`); this crate does not implement HTTP/2 — the
//! optional async shell ([`client`], feature `client`) uses the `h2` crate
//! over the record layer, and TLS ([`tls`], rustls) for `https://` control
//! URLs and DERP.
//!
//! # Run loop (the shell's, in order)
//!
//! 1. TCP to the control URL; send [`ts2021::key_request`], read until
//!    [`ts2021::parse_key_response`] gives the control key.
//! 2. New TCP; [`noise::ClientHandshake::new`] gives the initiation; send
//!    [`ts2021::upgrade_request`]; feed what arrives to
//!    [`ts2021::parse_upgrade_response`], the rest to
//!    [`noise::ClientHandshake::read_response`].
//! 3. From then on all bytes go through [`noise::Transport::decrypt`] /
//!    [`noise::Transport::encrypt`]; the first plaintext goes through
//!    [`ts2021::EarlyPayloadFilter`]; the rest is HTTP/2.
//! 4. Register ([`control::register_request`], [`control::after_register`]),
//!    then stream the map ([`control::map_request`]): body bytes into
//!    [`mapstream::FrameDecoder`], messages through
//!    [`mapstream::decode_message`] into [`netmap::Netmap::apply`]; after
//!    each update, [`netmap::Netmap::peers`] is the peer list. A stream
//!    silent for [`mapstream::MAP_WATCHDOG`] is dead: reconnect.
//!
//! `docs/tailnet-protocol.md` records the protocol facts with their sources.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod control;
pub mod derp;
pub mod disco;
pub mod keys;
pub mod mapstream;
pub mod netcheck;
pub mod netmap;
pub mod noise;
pub mod stun;
pub mod tailcfg;
pub mod ts2021;

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "client")]
pub mod tls;

/// Bytes a drained connection buffer keeps ([`trim_buffer`]).
pub const BUFFER_KEEP: usize = 4096;

/// Gives back the memory of a buffer that a burst grew, once it holds
/// little again (at most [`BUFFER_KEEP`] bytes are kept).
pub fn trim_buffer(v: &mut Vec<u8>) {
    if v.capacity() > 2 * BUFFER_KEEP && v.len() <= BUFFER_KEEP {
        v.shrink_to(BUFFER_KEEP);
    }
}
