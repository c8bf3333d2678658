//! Names and discovery for meshbridge.
//!
//! Today this crate holds the box's unicast DNS zone ([`names::Names`]):
//! bridged devices by their DHCP hostname, mesh peers by name, the box
//! itself, and reverse lookups for all of them. The daemon serves it with
//! hickory-server on the box's bridge and mesh addresses and forwards every
//! other question to the uplink's resolvers.
//!
//! Sans-IO: the daemon calls [`names::Names::set`] / [`names::Names::remove_addr`]
//! when leases and peers change and [`names::Names::lookup`] for each
//! question; no sockets, no clock. (The mDNS cache and DNS-SD discovery
//! proxy of a later issue live here too.)
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod names;

pub use names::{to_label, Lookup, Names, NamesError};
