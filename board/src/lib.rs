//! Board support for meshbridge: which box we run on, where its files live,
//! its status LED, its reset button and its hardware watchdog.
//!
//! # The layer
//!
//! This crate is a leaf of the architecture: it is the only place that knows
//! about `/proc/device-tree`, `/etc/openwrt_release`, `/sys/class/leds`,
//! `/dev/watchdog` and the GPIO character device. Each piece of hardware is a
//! small trait with a real implementation and a fake next to it:
//!
//! | trait | real | fake |
//! | --- | --- | --- |
//! | [`Leds`] | [`SysfsLed`] (`/sys/class/leds/<name>`) | [`FakeLeds`] |
//! | [`Watchdog`] | [`DevWatchdog`] (`/dev/watchdog`) | [`FakeWatchdog`] |
//! | [`Button`] | `GpioButton` (GPIO character device, feature `gpio`) | [`FakeButton`] |
//!
//! The decisions are sans-IO and take time as an argument: [`ButtonLogic`]
//! turns press/release edges into a [`ButtonAction`], and [`WatchdogGate`]
//! decides when the watchdog may be fed. Nothing here reads the clock.
//!
//! Every function that touches the file system takes a [`Root`]: `/` in
//! production ([`Root::system`]), a temporary directory in tests, where the
//! tests build a fake sysfs/devfs tree. No test touches a real LED, watchdog
//! or GPIO line.
//!
//! # How the daemon uses it
//!
//! 1. **At start**, [`detect`] the board and log it (`board: Raspberry Pi 4
//!    Model B Rev 1.4`). Its [`Paths`] give the default config file, state
//!    directory (leases, keys written by the daemon) and runtime directory for
//!    this platform; the config file may still override them.
//! 2. **Status LED.** Open [`SysfsLed`] on [`Board::status_led`] (when there
//!    is one) and set it from the daemon's health: [`LedState::Starting`] until
//!    the first loop iteration, [`LedState::NoMesh`] while no peer has a recent
//!    handshake, [`LedState::Online`] when one has, [`LedState::Error`] when a
//!    health check fails. Setting the same state again is free, so it can be
//!    done every iteration. On shutdown, [`Leds::release`] gives the LED back
//!    to the system.
//! 3. **Watchdog.** Once the daemon is up, open [`DevWatchdog`] on
//!    [`Board::watchdog`] (opening starts the hardware timer). The main loop
//!    calls [`WatchdogGate::mark_healthy`] on every iteration; a separate timer
//!    (a thread or a task that does not depend on the main loop) asks
//!    [`WatchdogGate::poll_feed`] and feeds only when it says so. A stalled or
//!    unhealthy loop therefore stops the feeding and the hardware reboots the
//!    box. On a clean shutdown call [`Watchdog::stop`] (magic close).
//! 4. **Reset button.** A blocking thread runs [`next_action`] on a
//!    `GpioButton` with a [`ButtonLogic`]; a long press (10 s by default)
//!    returns [`ButtonAction::FactoryReset`], a short press does nothing. The
//!    daemon then tears down what it installed, calls [`factory_reset`] and
//!    logs `factory reset: removed ...` before restarting unconfigured.
//!
//! ```no_run
//! use meshbridge_board::{detect, LedState, Leds, Root, SysfsLed, WatchdogGate};
//! use std::time::{Duration, Instant};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let board = detect(&Root::system())?;
//! println!("board: {}", board.kind);
//! let mut led = board.status_led.as_deref().map(SysfsLed::open).transpose()?;
//! if let Some(led) = led.as_mut() {
//!     led.set(LedState::Starting)?;
//! }
//! let mut gate = WatchdogGate::new(Duration::from_secs(5), Duration::from_secs(30));
//! gate.mark_healthy(Instant::now()); // from the main loop
//! if gate.poll_feed(Instant::now()) { /* watchdog.feed()? */ }
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! * `gpio` (default): `GpioButton`, the real button reader, on the `gpiocdev`
//!   crate (GPIO character device uAPI v2, Linux 5.10 or newer). Without it
//!   the button logic, trait and fake remain.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod button;
mod detect;
#[cfg(feature = "gpio")]
mod gpio;
mod led;
mod paths;
mod reset;
mod sysfs;
#[cfg(test)]
mod testutil;
mod watchdog;

pub use button::{next_action, Button, ButtonAction, ButtonError, ButtonLogic, Edge, FakeButton};
pub use detect::{detect, Board, BoardKind, DetectError};
#[cfg(feature = "gpio")]
pub use gpio::GpioButton;
pub use led::{FakeLeds, LedError, LedPattern, LedState, Leds, SysfsLed};
pub use paths::{Paths, Root};
pub use reset::{factory_reset, ResetError};
pub use watchdog::{DevWatchdog, FakeWatchdog, Watchdog, WatchdogError, WatchdogGate};
