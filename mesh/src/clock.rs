//! Which clock boringtun reads.
//!
//! boringtun's `Tunn` reads the monotonic clock itself (handshake
//! retransmission after `REKEY_TIMEOUT`, rekey after `REKEY_AFTER_TIME`,
//! session expiry after `REJECT_AFTER_TIME`, the age of the last
//! handshake). Its only way to fake that clock is its `mock-instant`
//! feature, which this crate turns on with its own `fake-clock` feature —
//! for tests only: the crate enables it on itself as a dev-dependency, so
//! `cargo build -p meshbridge` (and the release daemon) never has it.
//!
//! Cargo unifies features within one build, so a build of the whole
//! workspace's tests (`cargo test --workspace`) gives every crate in it the
//! fake clock, including the daemon binary built for integration tests.
//! That binary must not run for real: the daemon checks [`FAKE`] and refuses
//! to start.
//!
//! With the fake clock, boringtun's time starts at zero on each thread and
//! moves only by [`advance`]; callers move their own `now` by the same
//! amount.

use std::time::Duration;

/// boringtun reads a fake clock (tests only; see the module docs).
pub const FAKE: bool = cfg!(feature = "fake-clock");

/// Move boringtun's fake clock forward (this thread only).
#[cfg(feature = "fake-clock")]
pub fn advance(by: Duration) {
    mock_instant::MockClock::advance(by);
}

/// Without the fake clock there is nothing to move: real time passes by itself.
#[cfg(not(feature = "fake-clock"))]
pub fn advance(_by: Duration) {}
