//! meshbridge's web config page and JSON API (`server`), the login and
//! session rules (`auth`), generated peer configs and their QR codes
//! (`peerconf`), the in-memory log for the System page (`logbuf`), and the
//! requests the page and the CLI send to the daemon (`proto`).

#![warn(missing_docs)]

pub mod airprint;
pub mod auth;
pub mod logbuf;
pub mod peerconf;
pub mod proto;
#[cfg(feature = "server")]
pub mod server;
