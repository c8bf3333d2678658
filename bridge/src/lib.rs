//! The meshbridge daemon: configuration, the engine that joins the bridge,
//! the host and the mesh, and the I/O shell around it.
//!
//! * [`config`] reads and validates the TOML file (and wg-quick files).
//! * the engine ([`meshbridge_engine`], its own crate) is sans-IO: frames,
//!   packets and datagrams in; frames, packets and datagrams out; it owns
//!   the DHCP server, the ARP responder and the WireGuard mesh.
//! * [`daemon`] owns the file descriptors (TAP, TUN, UDP socket), the clock
//!   and the signals, and drives the engine.
//! * [`os`] installs and removes kernel state (bridge, ports, routes);
//!   [`nft`] the nftables table of the subnet router and exit node.
#![deny(unsafe_code)]

pub mod api;
pub mod config;
pub mod config_edit;
pub mod control;
pub mod daemon;
#[cfg(feature = "dns")]
pub mod discovery;
#[cfg(not(feature = "dns"))]
#[path = "discovery_off.rs"]
pub mod discovery;
#[cfg(feature = "dns")]
pub mod dns;
pub mod hw;
#[cfg(feature = "dns")]
pub mod mdns_link;
pub mod nft;
pub mod os;
pub mod peers;
pub mod persist;
