//! The hardware watchdog: reboots the box unless it is fed. [`WatchdogGate`]
//! decides (sans-IO) whether the main loop is healthy enough to feed it;
//! [`DevWatchdog`] feeds `/dev/watchdog`; [`FakeWatchdog`] counts feeds.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A watchdog that reboots the box when it is not fed in time.
pub trait Watchdog {
    /// Reset the watchdog's countdown.
    fn feed(&mut self) -> Result<(), WatchdogError>;

    /// Disarm the watchdog and let go of it, for a clean shutdown. Stopping
    /// twice is not an error; feeding after a stop is.
    fn stop(&mut self) -> Result<(), WatchdogError>;
}

/// Using the watchdog failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchdogError {
    /// Someone else holds the watchdog device (it allows one opener).
    #[error(
        "{path} is in use by another process (systemd's RuntimeWatchdogSec, \
         procd on OpenWrt, or a watchdog daemon): stop that user or turn off \
         meshbridge's watchdog"
    )]
    Busy {
        /// The device.
        path: PathBuf,
    },
    /// The device could not be opened.
    #[error(
        "opening {path}: {source} (does the board have a hardware watchdog? \
         on a Raspberry Pi it is bcm2835_wdt, enabled by dtparam=watchdog=on)"
    )]
    Open {
        /// The device.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// Writing to the device failed.
    #[error("writing to {path}: {source}")]
    Write {
        /// The device.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The watchdog was fed after it was stopped.
    #[error("{path} was fed after it was stopped")]
    Stopped {
        /// The device.
        path: PathBuf,
    },
}

/// The kernel's watchdog device (`/dev/watchdog`).
///
/// Opening it starts the hardware countdown (the driver's timeout, often
/// 10–15 s; setting another one needs an ioctl, which this crate does not
/// make). Every write feeds it. [`Watchdog::stop`] writes the magic
/// character `V` before closing, which tells drivers that support "magic
/// close" to disarm. Dropping a `DevWatchdog` without stopping it closes the
/// device without the magic character, so the box reboots unless someone
/// reopens it in time: that is what a crash should do. (A kernel built with
/// `CONFIG_WATCHDOG_NOWAYOUT` cannot be disarmed at all.)
#[derive(Debug)]
pub struct DevWatchdog {
    path: PathBuf,
    file: Option<File>,
}

impl DevWatchdog {
    /// Open the watchdog device at `path` (from [`crate::Board::watchdog`]).
    /// This arms the watchdog: open it only once the daemon is running.
    pub fn open(path: &Path) -> Result<Self, WatchdogError> {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| open_error(path, e))?;
        Ok(DevWatchdog {
            path: path.to_owned(),
            file: Some(file),
        })
    }

    /// The device's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, byte: &[u8]) -> Result<(), WatchdogError> {
        let Some(file) = self.file.as_mut() else {
            return Err(WatchdogError::Stopped {
                path: self.path.clone(),
            });
        };
        file.write_all(byte).map_err(|source| WatchdogError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

fn open_error(path: &Path, e: io::Error) -> WatchdogError {
    let path = path.to_owned();
    if e.kind() == io::ErrorKind::ResourceBusy {
        WatchdogError::Busy { path }
    } else {
        WatchdogError::Open { path, source: e }
    }
}

impl Watchdog for DevWatchdog {
    fn feed(&mut self) -> Result<(), WatchdogError> {
        // Any character but 'V' (which would arm the magic close) feeds it.
        self.write(b"\0")
    }

    fn stop(&mut self) -> Result<(), WatchdogError> {
        if self.file.is_none() {
            return Ok(());
        }
        let result = self.write(b"V");
        self.file = None;
        result
    }
}

/// A fake watchdog for tests: counts feeds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeWatchdog {
    /// How often it was fed.
    pub feeds: usize,
    /// Whether it was stopped.
    pub stopped: bool,
}

impl Watchdog for FakeWatchdog {
    fn feed(&mut self) -> Result<(), WatchdogError> {
        if self.stopped {
            return Err(WatchdogError::Stopped {
                path: PathBuf::from("fake watchdog"),
            });
        }
        self.feeds += 1;
        Ok(())
    }

    fn stop(&mut self) -> Result<(), WatchdogError> {
        self.stopped = true;
        Ok(())
    }
}

/// Decides when the watchdog may be fed: only while the main loop has
/// reported itself healthy recently, and at most once per feed interval.
///
/// The main loop calls [`mark_healthy`](Self::mark_healthy) on every
/// iteration in which it is healthy. The feeder (a timer that does not
/// depend on the main loop, e.g. a thread sharing the gate through a mutex)
/// calls [`poll_feed`](Self::poll_feed) and feeds when it returns `true`.
/// If the loop stalls or stops marking, feeding stops `health_timeout`
/// after the last mark, and the hardware reboots the box once its own
/// timeout runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogGate {
    feed_interval: Duration,
    health_timeout: Duration,
    last_healthy: Option<Instant>,
    last_feed: Option<Instant>,
}

impl Default for WatchdogGate {
    /// Feed every 5 s (well inside the Pi's 15 s hardware timeout); stop
    /// feeding 30 s after the loop's last healthy mark.
    fn default() -> Self {
        WatchdogGate::new(Duration::from_secs(5), Duration::from_secs(30))
    }
}

impl WatchdogGate {
    /// A gate that feeds every `feed_interval` while the last healthy mark
    /// is younger than `health_timeout`. Nothing is fed before the first mark.
    pub fn new(feed_interval: Duration, health_timeout: Duration) -> Self {
        WatchdogGate {
            feed_interval,
            health_timeout,
            last_healthy: None,
            last_feed: None,
        }
    }

    /// The main loop is healthy at `now`.
    pub fn mark_healthy(&mut self, now: Instant) {
        if self.last_healthy.is_none_or(|t| now > t) {
            self.last_healthy = Some(now);
        }
    }

    /// Whether the last healthy mark is younger than the health timeout.
    pub fn is_healthy(&self, now: Instant) -> bool {
        self.last_healthy
            .is_some_and(|t| now.saturating_duration_since(t) < self.health_timeout)
    }

    /// Whether to feed the watchdog at `now`; `true` counts as fed.
    pub fn poll_feed(&mut self, now: Instant) -> bool {
        let due = self
            .last_feed
            .is_none_or(|t| now.saturating_duration_since(t) >= self.feed_interval);
        if due && self.is_healthy(now) {
            self.last_feed = Some(now);
            true
        } else {
            false
        }
    }

    /// When [`poll_feed`](Self::poll_feed) will next say `true` if no
    /// further healthy mark arrives; `None` if it never will. A feeder that
    /// gets `None` waits for a mark (or simply polls again a feed interval
    /// later).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let healthy = self.last_healthy?;
        let next = match self.last_feed {
            Some(fed) => (fed + self.feed_interval).max(healthy),
            None => healthy,
        };
        (next < healthy + self.health_timeout).then_some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::FakeTree;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn dev_watchdog_feeds_with_writes_and_stops_with_magic_close() {
        let t = FakeTree::new("wdt");
        let dev = t.file("/dev/watchdog", "");
        let mut wd = DevWatchdog::open(&dev).unwrap();
        assert_eq!(wd.path(), dev);
        wd.feed().unwrap();
        wd.feed().unwrap();
        wd.stop().unwrap();
        assert_eq!(std::fs::read(&dev).unwrap(), b"\0\0V");
        wd.stop().unwrap();
        assert!(matches!(wd.feed(), Err(WatchdogError::Stopped { .. })));
        assert_eq!(std::fs::read(&dev).unwrap(), b"\0\0V", "wrote after stop");
    }

    #[test]
    fn dropping_without_stop_does_not_disarm() {
        let t = FakeTree::new("wdt-drop");
        let dev = t.file("/dev/watchdog", "");
        let mut wd = DevWatchdog::open(&dev).unwrap();
        wd.feed().unwrap();
        drop(wd);
        assert_eq!(
            std::fs::read(&dev).unwrap(),
            b"\0",
            "a crash must not write the magic V"
        );
    }

    #[test]
    fn open_errors_say_what_to_check() {
        let t = FakeTree::new("wdt-missing");
        let err = DevWatchdog::open(&t.path("/dev/watchdog")).unwrap_err();
        assert!(matches!(err, WatchdogError::Open { .. }));
        assert!(err.to_string().contains("dtparam=watchdog=on"), "{err}");
        // EBUSY: another process holds the device.
        let busy = open_error(Path::new("/dev/watchdog"), io::Error::from_raw_os_error(16));
        assert!(matches!(busy, WatchdogError::Busy { .. }));
        assert!(busy.to_string().contains("procd"), "{busy}");
    }

    #[test]
    fn fake_watchdog_counts_feeds_and_refuses_after_stop() {
        let mut wd = FakeWatchdog::default();
        wd.feed().unwrap();
        wd.feed().unwrap();
        wd.stop().unwrap();
        assert_eq!(wd.feeds, 2);
        assert!(wd.feed().is_err());
    }

    #[test]
    fn nothing_is_fed_before_the_loop_reports_healthy() {
        let t0 = Instant::now();
        let mut gate = WatchdogGate::new(5 * S, 30 * S);
        assert!(!gate.poll_feed(t0));
        assert_eq!(gate.poll_timeout(), None);
        gate.mark_healthy(t0 + S);
        assert!(gate.poll_feed(t0 + S));
    }

    #[test]
    fn a_healthy_loop_feeds_once_per_interval() {
        let t0 = Instant::now();
        let mut gate = WatchdogGate::new(5 * S, 30 * S);
        let mut wd = FakeWatchdog::default();
        for sec in 0..60 {
            let now = t0 + sec * S;
            gate.mark_healthy(now);
            if gate.poll_feed(now) {
                wd.feed().unwrap();
            }
        }
        assert_eq!(wd.feeds, 12, "at 0, 5, ..., 55 s");
        assert_eq!(gate.poll_timeout(), Some(t0 + 60 * S));
    }

    #[test]
    fn a_stalled_loop_stops_the_feeding() {
        let t0 = Instant::now();
        let mut gate = WatchdogGate::new(5 * S, 30 * S);
        let mut wd = FakeWatchdog::default();
        gate.mark_healthy(t0); // the last iteration before the loop hangs
        let mut last_feed = None;
        for sec in 0..120 {
            let now = t0 + sec * S;
            if gate.poll_feed(now) {
                wd.feed().unwrap();
                last_feed = Some(sec);
            }
        }
        assert_eq!(last_feed, Some(25), "fed after the health timeout");
        assert_eq!(wd.feeds, 6);
        assert!(!gate.is_healthy(t0 + 30 * S));
        assert_eq!(gate.poll_timeout(), None, "the feeder would spin");
        // The loop recovers: feeding resumes at once.
        gate.mark_healthy(t0 + 200 * S);
        assert_eq!(gate.poll_timeout(), Some(t0 + 200 * S));
        assert!(gate.poll_feed(t0 + 200 * S));
    }

    #[test]
    fn poll_timeout_names_the_next_feed_and_never_a_past_one_twice() {
        let t0 = Instant::now();
        let mut gate = WatchdogGate::new(5 * S, 12 * S);
        gate.mark_healthy(t0);
        let mut now = t0;
        let mut feeds = vec![];
        while let Some(at) = gate.poll_timeout() {
            assert!(at >= now, "went back in time");
            now = at;
            assert!(gate.poll_feed(now), "woken at {:?} but not fed", now - t0);
            feeds.push((now - t0).as_secs());
        }
        assert_eq!(feeds, [0, 5, 10]);
    }

    #[test]
    fn an_older_mark_does_not_move_health_back() {
        let t0 = Instant::now();
        let mut gate = WatchdogGate::new(5 * S, 30 * S);
        gate.mark_healthy(t0 + 10 * S);
        gate.mark_healthy(t0);
        assert!(gate.is_healthy(t0 + 39 * S));
        assert!(!gate.is_healthy(t0 + 40 * S));
    }

    #[test]
    fn default_gate_feeds_well_inside_a_15_second_hardware_timeout() {
        let t0 = Instant::now();
        let mut gate = WatchdogGate::default();
        gate.mark_healthy(t0);
        assert!(gate.poll_feed(t0));
        assert_eq!(gate.poll_timeout(), Some(t0 + 5 * S));
    }
}
