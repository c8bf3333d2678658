//! Names and discovery for meshbridge.
//!
//! * [`cache::Cache`]: what bridged devices announce over mDNS (RFC 6762).
//! * [`proxy::Proxy`]: the DNS-SD Discovery Proxy (RFC 8766) that answers
//!   unicast DNS-SD questions in the box's domain from that cache.
//! * [`responder::Responder`]: the box's own name (`meshbridge.local`),
//!   probed, announced and defended per link (RFC 6762 §8–9).
//! * [`remote::RemoteBrowser`] and [`reannounce::Reannouncer`]: site-to-site
//!   discovery. The first browses another box's discovery proxy over unicast
//!   DNS; the second announces what it found by mDNS on this box's link,
//!   probing each name first and saying goodbye when a service vanishes.
//! * [`names::Names`]: the box's unicast DNS zone: bridged devices by their
//!   DHCP hostname, mesh peers by name, the box itself, and reverse lookups
//!   for all of them. The daemon serves it with hickory-server on the box's
//!   bridge and mesh addresses and forwards every other question to the
//!   uplink's resolvers.
//!
//!   Every name has an [`names::Owner`]; [`names::Names::claim`] never lets
//!   a device take the box's, a reserved (`wpad`, ...), a peer's or another
//!   device's name: a clash is suffixed (`printer-2`) or refused.
//!
//! Sans-IO: the daemon calls [`names::Names::claim`] / [`names::Names::remove_addr`]
//! when leases and peers change and [`names::Names::lookup`] for each
//! question, and [`cache::Cache::handle_packet`] for every mDNS packet seen
//! on the bridge; no sockets, and time is an argument.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cache;
pub mod names;
mod probing;
pub mod proxy;
pub mod reannounce;
pub mod remote;
pub mod responder;

pub use cache::{browse_query, Cache, MdnsError};
pub use names::{to_label, Claim, Lookup, Names, NamesError, Owner, Taken, RESERVED};
pub use proxy::{Proxy, DEFAULT_SERVICES, TTL_CAP};
pub use reannounce::{Announced, Reannouncer};
pub use remote::{RemoteBrowser, RemoteService};
pub use responder::{Responder, ResponderEvent};
