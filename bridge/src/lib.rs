//! The meshbridge daemon: configuration, the engine that joins the bridge,
//! the host and the mesh, and the I/O shell around it.
//!
//! * [`config`] reads and validates the TOML file (and wg-quick files).
//! * the engine ([`meshbridge_engine`], its own crate) is sans-IO: frames,
//!   packets and datagrams in; frames, packets and datagrams out; it owns
//!   the DHCP server, the ARP responder and the WireGuard mesh.
//! * [`daemon`] owns the file descriptors (TAP, TUN, UDP socket), the clock
//!   and the signals, and drives the engine.
//! * [`host`] installs and removes kernel state (bridge, ports, routes,
//!   nftables, sysctls) and reads host facts (/proc), one module each.
//! * [`health`] and [`api::status`] are plain functions over data (the
//!   engine, the config, [`host::proc::HostFacts`] read off the event loop).
//! * [`peers`] turns the config's peers into the static peer set the mesh
//!   applies, and resolves endpoint names off the event loop.
//! * [`faults`] keeps the last config that started and rolls a failed
//!   start back to it, reports missing bridge ports, and writes the config
//!   a factory reset leaves.
//! * [`control`] answers the requests of the CLI and the web page (their
//!   types are `meshbridge_web::proto`, one definition for both).
//!
//! Modules depend one way only, enforced by `tests/layers.rs`:
//! config ← host ← health ← api ← discovery ← control ← daemon.
#![deny(unsafe_code)]

pub mod api;
pub mod config;
pub mod config_edit;
pub mod control;
pub mod daemon;
pub mod device_nodes;
#[cfg(feature = "dns")]
pub mod discovery;
#[cfg(not(feature = "dns"))]
#[path = "discovery_off.rs"]
pub mod discovery;
#[cfg(feature = "dns")]
pub mod discovery_remote;
#[cfg(feature = "dns")]
pub mod dns;
pub mod faults;
pub mod health;
pub mod host;
pub mod hw;
pub mod lease_store;
#[cfg(feature = "dns")]
pub mod mdns_link;
pub mod peers;
pub mod persist;
pub mod tailnet;
pub mod tailnet_derp;
#[cfg(feature = "dns")]
pub mod tailnet_dns;
pub mod tailnet_rules;
pub mod wifi;
pub mod wifi_conf;
