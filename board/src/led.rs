//! The status LED: four states, shown through the kernel's LED class
//! (`/sys/class/leds/<name>`), with a fake that records what was shown.

use crate::sysfs::write_attr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the status LED tells a person looking at the box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LedState {
    /// The daemon is starting: fast blink (100 ms on, 100 ms off).
    Starting,
    /// Running, but no mesh peer is reachable: slow blink (1 s on, 1 s off).
    NoMesh,
    /// Running with at least one mesh peer online: solid on.
    Online,
    /// A health check fails and needs a person: very fast flicker
    /// (50 ms on, 50 ms off), unlike anything the other states show.
    Error,
}

/// How an LED shows a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedPattern {
    /// Steady off.
    Off,
    /// Steady on at full brightness.
    On,
    /// Blinking by the kernel's `timer` trigger.
    Blink {
        /// Time on in each period.
        on: Duration,
        /// Time off in each period.
        off: Duration,
    },
}

impl LedState {
    /// The pattern that shows this state.
    pub fn pattern(self) -> LedPattern {
        let blink = |on, off| LedPattern::Blink {
            on: Duration::from_millis(on),
            off: Duration::from_millis(off),
        };
        match self {
            LedState::Starting => blink(100, 100),
            LedState::NoMesh => blink(1000, 1000),
            LedState::Online => LedPattern::On,
            LedState::Error => blink(50, 50),
        }
    }
}

/// A status LED.
pub trait Leds {
    /// Show `state`. Showing the state already shown does nothing (so the
    /// daemon may call this every iteration without restarting a blink).
    fn set(&mut self, state: LedState) -> Result<(), LedError>;

    /// Give the LED back to the system (restore what it showed before).
    fn release(&mut self) -> Result<(), LedError>;
}

/// Setting an LED failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedError {
    /// An LED attribute could not be read.
    #[error("reading {path}: {source} (is this an LED class device under /sys/class/leds?)")]
    Read {
        /// The attribute.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// An LED attribute could not be written.
    #[error("writing {value:?} to {path}: {source}")]
    Write {
        /// The attribute.
        path: PathBuf,
        /// What we tried to write.
        value: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// `max_brightness` does not hold a number.
    #[error("{path} holds {value:?}, not a brightness")]
    BadMaxBrightness {
        /// The attribute.
        path: PathBuf,
        /// What it holds.
        value: String,
    },
    /// The kernel offers no `timer` trigger for this LED, so it cannot blink.
    #[error(
        "LED {dir} cannot blink: the kernel offers no \"timer\" trigger for it \
         (load the ledtrig-timer module; kmod-ledtrig-timer on OpenWrt)"
    )]
    NoTimerTrigger {
        /// The LED's sysfs directory.
        dir: PathBuf,
    },
}

/// An LED of the kernel's LED class, e.g. `/sys/class/leds/ACT`.
///
/// For each state the trigger is written first, then the rest: changing the
/// trigger makes the kernel switch the LED off, so a brightness written
/// before it would be lost. Blinking uses the `timer` trigger and its
/// `delay_on`/`delay_off` attributes (which the kernel creates when the
/// trigger is set); steady states use the `none` trigger and `brightness`.
#[derive(Debug)]
pub struct SysfsLed {
    dir: PathBuf,
    max_brightness: u32,
    has_timer: bool,
    original_trigger: Option<String>,
    original_brightness: String,
    shown: Option<LedState>,
}

impl SysfsLed {
    /// Take the LED whose sysfs directory is `dir`. Reads its triggers,
    /// current trigger and brightness (restored by [`Leds::release`]) and
    /// `max_brightness`; changes nothing yet.
    pub fn open(dir: &Path) -> Result<Self, LedError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| LedError::Read { path, source })
        };
        let triggers = read("trigger")?;
        let max = read("max_brightness")?;
        let max_brightness = max.trim().parse().map_err(|_| LedError::BadMaxBrightness {
            path: dir.join("max_brightness"),
            value: max.trim().to_owned(),
        })?;
        let original_brightness = read("brightness")?.trim().to_owned();
        let mut has_timer = false;
        let mut original_trigger = None;
        for word in triggers.split_whitespace() {
            let name = word.trim_start_matches('[').trim_end_matches(']');
            has_timer |= name == "timer";
            if word.starts_with('[') {
                original_trigger = Some(name.to_owned());
            }
        }
        Ok(SysfsLed {
            dir: dir.to_owned(),
            max_brightness,
            has_timer,
            original_trigger,
            original_brightness,
            shown: None,
        })
    }

    /// The LED's sysfs directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn write(&self, attr: &str, value: &str) -> Result<(), LedError> {
        let path = self.dir.join(attr);
        write_attr(&path, value).map_err(|source| LedError::Write {
            path,
            value: value.to_owned(),
            source,
        })
    }

    fn show(&self, pattern: LedPattern) -> Result<(), LedError> {
        match pattern {
            LedPattern::Off => {
                self.write("trigger", "none")?;
                self.write("brightness", "0")
            }
            LedPattern::On => {
                self.write("trigger", "none")?;
                self.write("brightness", &self.max_brightness.to_string())
            }
            LedPattern::Blink { on, off } => {
                if !self.has_timer {
                    return Err(LedError::NoTimerTrigger {
                        dir: self.dir.clone(),
                    });
                }
                self.write("trigger", "timer")?;
                self.write("delay_on", &on.as_millis().to_string())?;
                self.write("delay_off", &off.as_millis().to_string())
            }
        }
    }
}

impl Leds for SysfsLed {
    fn set(&mut self, state: LedState) -> Result<(), LedError> {
        if self.shown == Some(state) {
            return Ok(());
        }
        // Forget what is shown until the writes succeed, so a failed set is
        // retried by the next call.
        self.shown = None;
        self.show(state.pattern())?;
        self.shown = Some(state);
        Ok(())
    }

    fn release(&mut self) -> Result<(), LedError> {
        self.shown = None;
        match self.original_trigger.as_deref() {
            Some("none") | None => {
                self.write("trigger", "none")?;
                self.write("brightness", &self.original_brightness)
            }
            Some(trigger) => self.write("trigger", trigger),
        }
    }
}

/// A fake LED for tests: records each state change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeLeds {
    /// The states shown, in order; setting the state already shown is not
    /// recorded again (as on [`SysfsLed`], it changes nothing).
    pub history: Vec<LedState>,
    /// Whether [`Leds::release`] was called since the last state change.
    pub released: bool,
}

impl FakeLeds {
    /// The state shown now, if any.
    pub fn current(&self) -> Option<LedState> {
        if self.released {
            None
        } else {
            self.history.last().copied()
        }
    }
}

impl Leds for FakeLeds {
    fn set(&mut self, state: LedState) -> Result<(), LedError> {
        if self.current() != Some(state) {
            self.history.push(state);
        }
        self.released = false;
        Ok(())
    }

    fn release(&mut self) -> Result<(), LedError> {
        self.released = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{read, write, FakeTree};

    /// A fake LED that also has the timer's attributes, which the kernel
    /// would create when the trigger becomes `timer`.
    fn act(t: &FakeTree) -> PathBuf {
        let dir = t.led("ACT", "none [mmc0] timer heartbeat", 255);
        write(&dir.join("delay_on"), "500\n");
        write(&dir.join("delay_off"), "500\n");
        dir
    }

    #[test]
    fn online_is_solid_on_at_max_brightness_with_trigger_none() {
        let t = FakeTree::new("led-online");
        let dir = act(&t);
        let mut led = SysfsLed::open(&dir).unwrap();
        led.set(LedState::Online).unwrap();
        assert_eq!(read(&dir.join("trigger")), "none");
        assert_eq!(read(&dir.join("brightness")), "255");
    }

    #[test]
    fn blinking_states_use_the_timer_trigger_and_delays() {
        let t = FakeTree::new("led-blink");
        let dir = act(&t);
        let mut led = SysfsLed::open(&dir).unwrap();
        for (state, on, off) in [
            (LedState::Starting, "100", "100"),
            (LedState::NoMesh, "1000", "1000"),
            (LedState::Error, "50", "50"),
        ] {
            led.set(state).unwrap();
            assert_eq!(read(&dir.join("trigger")), "timer", "{state:?}");
            assert_eq!(read(&dir.join("delay_on")), on, "{state:?}");
            assert_eq!(read(&dir.join("delay_off")), off, "{state:?}");
        }
    }

    #[test]
    fn the_trigger_is_written_before_anything_else() {
        // With the trigger file missing, nothing else may have been written:
        // the kernel would have reset a brightness written before it.
        let t = FakeTree::new("led-order");
        let dir = act(&t);
        let mut led = SysfsLed::open(&dir).unwrap();
        std::fs::remove_file(dir.join("trigger")).unwrap();
        let err = led.set(LedState::Online).unwrap_err();
        assert!(
            matches!(&err, LedError::Write { path, .. } if path.ends_with("trigger")),
            "{err}"
        );
        assert_eq!(
            read(&dir.join("brightness")),
            "0\n",
            "brightness written before the trigger"
        );
        let err = led.set(LedState::NoMesh).unwrap_err();
        assert!(
            matches!(&err, LedError::Write { path, .. } if path.ends_with("trigger")),
            "{err}"
        );
        assert_eq!(
            read(&dir.join("delay_on")),
            "500\n",
            "delay written before the trigger"
        );
    }

    #[test]
    fn setting_the_same_state_again_writes_nothing() {
        let t = FakeTree::new("led-same");
        let dir = act(&t);
        let mut led = SysfsLed::open(&dir).unwrap();
        led.set(LedState::NoMesh).unwrap();
        write(&dir.join("trigger"), "sentinel");
        led.set(LedState::NoMesh).unwrap();
        assert_eq!(
            read(&dir.join("trigger")),
            "sentinel",
            "restarted the blink"
        );
        led.set(LedState::Online).unwrap();
        assert_eq!(read(&dir.join("trigger")), "none");
    }

    #[test]
    fn a_failed_set_is_retried_by_the_next_call() {
        let t = FakeTree::new("led-retry");
        let dir = act(&t);
        let mut led = SysfsLed::open(&dir).unwrap();
        std::fs::remove_file(dir.join("delay_off")).unwrap();
        assert!(led.set(LedState::Starting).is_err());
        write(&dir.join("delay_off"), "500\n");
        led.set(LedState::Starting).unwrap();
        assert_eq!(read(&dir.join("delay_off")), "100");
    }

    #[test]
    fn without_a_timer_trigger_blinking_is_an_error_that_says_what_to_do() {
        let t = FakeTree::new("led-notimer");
        let dir = t.led("green:status", "[none] default-on", 1);
        let mut led = SysfsLed::open(&dir).unwrap();
        let err = led.set(LedState::Starting).unwrap_err();
        assert!(matches!(err, LedError::NoTimerTrigger { .. }));
        assert!(err.to_string().contains("ledtrig-timer"), "{err}");
        assert_eq!(
            read(&dir.join("trigger")),
            "[none] default-on",
            "touched the LED"
        );
        led.set(LedState::Online).unwrap();
        assert_eq!(read(&dir.join("brightness")), "1");
    }

    #[test]
    fn release_restores_the_original_trigger() {
        let t = FakeTree::new("led-release");
        let dir = act(&t);
        let mut led = SysfsLed::open(&dir).unwrap();
        led.set(LedState::Online).unwrap();
        led.release().unwrap();
        assert_eq!(read(&dir.join("trigger")), "mmc0");
        // After a release, setting a state writes again.
        led.set(LedState::Online).unwrap();
        assert_eq!(read(&dir.join("trigger")), "none");
    }

    #[test]
    fn release_of_an_untriggered_led_restores_its_brightness() {
        let t = FakeTree::new("led-release-none");
        let dir = t.led("blue:status", "[none] timer", 1);
        write(&dir.join("brightness"), "1\n");
        let mut led = SysfsLed::open(&dir).unwrap();
        write(&dir.join("brightness"), "0");
        led.release().unwrap();
        assert_eq!(read(&dir.join("trigger")), "none");
        assert_eq!(read(&dir.join("brightness")), "1");
    }

    #[test]
    fn open_reports_what_is_wrong_with_the_led() {
        let t = FakeTree::new("led-open");
        let missing = t.path("/sys/class/leds/nope");
        let err = SysfsLed::open(&missing).unwrap_err();
        assert!(
            matches!(&err, LedError::Read { path, .. } if path.ends_with("trigger")),
            "{err}"
        );
        let dir = t.led("ACT", "none [mmc0] timer", 255);
        write(&dir.join("max_brightness"), "lots\n");
        let err = SysfsLed::open(&dir).unwrap_err();
        assert!(matches!(err, LedError::BadMaxBrightness { ref value, .. } if value == "lots"));
    }

    #[test]
    fn fake_leds_record_state_changes() {
        let mut led = FakeLeds::default();
        assert_eq!(led.current(), None);
        for s in [
            LedState::Starting,
            LedState::Starting,
            LedState::NoMesh,
            LedState::Online,
        ] {
            led.set(s).unwrap();
        }
        assert_eq!(
            led.history,
            [LedState::Starting, LedState::NoMesh, LedState::Online]
        );
        assert_eq!(led.current(), Some(LedState::Online));
        led.release().unwrap();
        assert_eq!(led.current(), None);
        led.set(LedState::Online).unwrap();
        assert_eq!(
            led.history.len(),
            4,
            "a set after release shows the state again"
        );
    }

    #[test]
    fn every_state_has_a_distinct_pattern() {
        let all = [
            LedState::Starting,
            LedState::NoMesh,
            LedState::Online,
            LedState::Error,
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a.pattern(), b.pattern(), "{a:?} looks like {b:?}");
            }
        }
    }
}
