//! Which board this is: a Raspberry Pi (from the device-tree model), an
//! OpenWrt system (from `/etc/openwrt_release`), or generic Linux.

use crate::sysfs::read_optional;
use crate::{Paths, Root};
use std::fmt;
use std::path::{Path, PathBuf};

/// What kind of system meshbridge runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BoardKind {
    /// A Raspberry Pi running a Debian-like OS (Raspberry Pi OS, Debian).
    RaspberryPi {
        /// The device-tree model, e.g. `Raspberry Pi 4 Model B Rev 1.4`.
        model: String,
    },
    /// OpenWrt (or a fork that keeps `/etc/openwrt_release`), on any
    /// hardware, a Raspberry Pi included.
    OpenWrt {
        /// `DISTRIB_RELEASE`, e.g. `23.05.3`.
        release: Option<String>,
        /// `DISTRIB_TARGET`, e.g. `ramips/mt7621`.
        target: Option<String>,
    },
    /// Any other Linux system.
    Generic,
}

impl fmt::Display for BoardKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BoardKind::RaspberryPi { model } => f.write_str(model),
            BoardKind::OpenWrt { release, target } => {
                f.write_str("OpenWrt")?;
                if let Some(r) = release {
                    write!(f, " {r}")?;
                }
                if let Some(t) = target {
                    write!(f, " ({t})")?;
                }
                Ok(())
            }
            BoardKind::Generic => f.write_str("generic Linux"),
        }
    }
}

/// The detected board and what the daemon needs to know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Board {
    /// What kind of system this is.
    pub kind: BoardKind,
    /// The device-tree model, when the system has a device tree (Pis and
    /// most routers do; PCs do not).
    pub model: Option<String>,
    /// Where meshbridge keeps its files here.
    pub paths: Paths,
    /// The sysfs directory of the LED that shows meshbridge's status, if
    /// this board has a suitable one: `ACT` (or `led0` on older kernels) on
    /// a Pi, the first `*:status` (else `*:power`) LED on OpenWrt.
    pub status_led: Option<PathBuf>,
    /// The hardware watchdog device, when meshbridge may use it: present,
    /// and not OpenWrt, where procd already holds `/dev/watchdog` (to hand
    /// it over: `ubus call system watchdog '{"magicclose":true,"stop":true}'`).
    pub watchdog: Option<PathBuf>,
}

/// Detection could not read a file that exists.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DetectError {
    /// A board-identification file exists but could not be read.
    #[error("reading {path} to detect the board: {source} (is meshbridge running as root?)")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// Detect the board under `root` (`Root::system()` in production).
///
/// Missing files are not errors (they just rule a kind out); a file that
/// exists but cannot be read is, because guessing wrong would put state on
/// a tmpfs or in the wrong place.
pub fn detect(root: &Root) -> Result<Board, DetectError> {
    let model = device_tree_model(root)?;
    let release = read(&root.openwrt_release())?;
    let is_pi = model
        .as_deref()
        .is_some_and(|m| m.starts_with("Raspberry Pi"));

    let kind = match (&release, &model) {
        (Some(text), _) => {
            let text = String::from_utf8_lossy(text);
            BoardKind::OpenWrt {
                release: shell_var(&text, "DISTRIB_RELEASE"),
                target: shell_var(&text, "DISTRIB_TARGET"),
            }
        }
        (None, Some(m)) if is_pi => BoardKind::RaspberryPi { model: m.clone() },
        _ => BoardKind::Generic,
    };
    let is_openwrt = matches!(kind, BoardKind::OpenWrt { .. });

    let paths = if is_openwrt {
        Paths::openwrt(root)
    } else {
        Paths::debian(root)
    };
    let status_led = status_led(root, is_pi, is_openwrt)?;
    let watchdog = Some(root.watchdog()).filter(|p| !is_openwrt && p.exists());

    Ok(Board {
        kind,
        model,
        paths,
        status_led,
        watchdog,
    })
}

fn read(path: &Path) -> Result<Option<Vec<u8>>, DetectError> {
    read_optional(path).map_err(|source| DetectError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The model string without its NUL terminator; `None` if absent or empty.
fn device_tree_model(root: &Root) -> Result<Option<String>, DetectError> {
    for path in [root.device_tree_model(), root.firmware_model()] {
        if let Some(bytes) = read(&path)? {
            let text = String::from_utf8_lossy(&bytes);
            let model = text.trim_end_matches('\0').trim();
            return Ok(Some(model.to_owned()).filter(|m| !m.is_empty()));
        }
    }
    Ok(None)
}

/// The value of `KEY='value'` in a shell-style file like `openwrt_release`.
fn shell_var(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.trim().split_once('=')?;
        if k.trim() != key {
            return None;
        }
        let v = v.trim();
        let unquoted = ['\'', '"']
            .iter()
            .find_map(|&q| v.strip_prefix(q).and_then(|s| s.strip_suffix(q)))
            .unwrap_or(v);
        Some(unquoted.to_owned()).filter(|s| !s.is_empty())
    })
}

/// Pick the status LED. On a Pi the activity LED is `ACT` on current kernels
/// and `led0` on older ones. OpenWrt names LEDs `color:function` (or
/// `vendor:color:function`); `status` is the LED its own scripts blink at
/// boot, `power` the usual fallback. Generic Linux has no LED we may take
/// (keyboard LEDs are not ours).
fn status_led(root: &Root, is_pi: bool, is_openwrt: bool) -> Result<Option<PathBuf>, DetectError> {
    let leds = root.leds();
    let names = match std::fs::read_dir(&leds) {
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(DetectError::Read { path: leds, source }),
    };
    let has = |n: &str| names.iter().any(|x| x == n);
    let by_function = |function: &str| {
        names
            .iter()
            .find(|n| n.rsplit(':').next() == Some(function) && n.contains(':'))
            .cloned()
    };

    let mut pick = None;
    if is_pi {
        pick = ["ACT", "led0"]
            .into_iter()
            .find(|n| has(n))
            .map(str::to_owned);
    }
    if pick.is_none() && is_openwrt {
        pick = by_function("status").or_else(|| by_function("power"));
    }
    Ok(pick.map(|n| leds.join(n)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::FakeTree;

    const OPENWRT_RELEASE: &str = "DISTRIB_ID='OpenWrt'\n\
        DISTRIB_RELEASE='23.05.3'\n\
        DISTRIB_REVISION='r23809-234f1a2efa'\n\
        DISTRIB_TARGET='ramips/mt7621'\n\
        DISTRIB_ARCH='mipsel_24kc'\n\
        DISTRIB_DESCRIPTION='OpenWrt 23.05.3 r23809-234f1a2efa'\n\
        DISTRIB_TAINTS=''\n";

    #[test]
    fn raspberry_pi_from_device_tree_model_with_act_led() {
        let t = FakeTree::new("pi");
        t.file(
            "/proc/device-tree/model",
            "Raspberry Pi 4 Model B Rev 1.4\0",
        );
        t.led("ACT", "none [mmc0] timer heartbeat", 255);
        t.led("PWR", "none [default-on] timer", 255);
        t.file("/dev/watchdog", "");
        let b = detect(&t.root()).unwrap();
        assert_eq!(
            b.kind,
            BoardKind::RaspberryPi {
                model: "Raspberry Pi 4 Model B Rev 1.4".into()
            }
        );
        assert_eq!(b.kind.to_string(), "Raspberry Pi 4 Model B Rev 1.4");
        assert_eq!(b.paths, Paths::debian(&t.root()));
        assert_eq!(b.status_led, Some(t.path("/sys/class/leds/ACT")));
        assert_eq!(b.watchdog, Some(t.path("/dev/watchdog")));
    }

    #[test]
    fn older_pi_kernels_call_the_activity_led_led0() {
        let t = FakeTree::new("pi-led0");
        t.file(
            "/sys/firmware/devicetree/base/model",
            "Raspberry Pi 3 Model B Plus Rev 1.3\0",
        );
        t.led("led0", "none [mmc0] timer", 255);
        t.led("led1", "none [input] timer", 255);
        let b = detect(&t.root()).unwrap();
        assert!(matches!(b.kind, BoardKind::RaspberryPi { .. }));
        assert_eq!(b.status_led, Some(t.path("/sys/class/leds/led0")));
        assert_eq!(b.watchdog, None, "no /dev/watchdog in this tree");
    }

    #[test]
    fn openwrt_release_fields_and_status_led() {
        let t = FakeTree::new("openwrt");
        t.file("/etc/openwrt_release", OPENWRT_RELEASE);
        t.file(
            "/proc/device-tree/model",
            "Xiaomi Mi Router 4A Gigabit Edition\0",
        );
        t.led("blue:status", "[none] timer default-on", 1);
        t.led("yellow:power", "[none] timer default-on", 1);
        t.led("green:lan", "[none] netdev", 1);
        t.file("/dev/watchdog", "");
        let b = detect(&t.root()).unwrap();
        assert_eq!(
            b.kind,
            BoardKind::OpenWrt {
                release: Some("23.05.3".into()),
                target: Some("ramips/mt7621".into())
            }
        );
        assert_eq!(b.kind.to_string(), "OpenWrt 23.05.3 (ramips/mt7621)");
        assert_eq!(
            b.model.as_deref(),
            Some("Xiaomi Mi Router 4A Gigabit Edition")
        );
        assert_eq!(b.paths, Paths::openwrt(&t.root()));
        assert_eq!(b.status_led, Some(t.path("/sys/class/leds/blue:status")));
        assert_eq!(b.watchdog, None, "procd owns the watchdog on OpenWrt");
    }

    #[test]
    fn openwrt_falls_back_to_a_power_led() {
        let t = FakeTree::new("openwrt-power");
        t.file(
            "/etc/openwrt_release",
            "DISTRIB_ID=\"OpenWrt\"\nDISTRIB_RELEASE=\"SNAPSHOT\"\n",
        );
        t.led("tp-link:green:power", "[none] timer", 1);
        t.led("tp-link:green:wlan", "[none] timer", 1);
        let b = detect(&t.root()).unwrap();
        assert_eq!(
            b.kind,
            BoardKind::OpenWrt {
                release: Some("SNAPSHOT".into()),
                target: None
            }
        );
        assert_eq!(
            b.status_led,
            Some(t.path("/sys/class/leds/tp-link:green:power"))
        );
    }

    #[test]
    fn openwrt_on_a_pi_uses_openwrt_paths_and_the_act_led() {
        let t = FakeTree::new("openwrt-pi");
        t.file(
            "/etc/openwrt_release",
            OPENWRT_RELEASE.replace("ramips/mt7621", "bcm27xx/bcm2711"),
        );
        t.file(
            "/proc/device-tree/model",
            "Raspberry Pi 4 Model B Rev 1.5\0",
        );
        t.led("ACT", "none [mmc0] timer", 255);
        let b = detect(&t.root()).unwrap();
        assert!(matches!(b.kind, BoardKind::OpenWrt { .. }));
        assert_eq!(b.paths, Paths::openwrt(&t.root()));
        assert_eq!(b.status_led, Some(t.path("/sys/class/leds/ACT")));
    }

    #[test]
    fn generic_linux_takes_no_led() {
        let t = FakeTree::new("generic");
        t.led("input3::capslock", "none [kbd-capslock]", 1);
        let b = detect(&t.root()).unwrap();
        assert_eq!(b.kind, BoardKind::Generic);
        assert_eq!(b.kind.to_string(), "generic Linux");
        assert_eq!(b.model, None);
        assert_eq!(b.paths, Paths::debian(&t.root()));
        assert_eq!(b.status_led, None);
    }

    #[test]
    fn a_non_pi_device_tree_is_generic() {
        let t = FakeTree::new("other-dt");
        t.file("/proc/device-tree/model", "Radxa ROCK Pi 4B\0");
        let b = detect(&t.root()).unwrap();
        assert_eq!(b.kind, BoardKind::Generic);
        assert_eq!(b.model.as_deref(), Some("Radxa ROCK Pi 4B"));
    }

    #[test]
    fn an_empty_tree_is_generic_without_led_or_watchdog() {
        let t = FakeTree::new("empty");
        let b = detect(&t.root()).unwrap();
        assert_eq!(b.kind, BoardKind::Generic);
        assert_eq!((b.status_led, b.watchdog), (None, None));
    }

    #[test]
    fn shell_var_strips_quotes_and_ignores_other_keys() {
        let text = "A='x y'\nB=\"z\"\nC=plain\nD=''\n# comment\n";
        assert_eq!(shell_var(text, "A").as_deref(), Some("x y"));
        assert_eq!(shell_var(text, "B").as_deref(), Some("z"));
        assert_eq!(shell_var(text, "C").as_deref(), Some("plain"));
        assert_eq!(shell_var(text, "D"), None);
        assert_eq!(shell_var(text, "E"), None);
    }
}
