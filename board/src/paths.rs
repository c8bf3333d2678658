//! Where things are: the file-system root the crate looks under, and the
//! per-platform directories of meshbridge itself.

use std::path::{Path, PathBuf};

/// The directory that stands for `/`: `/` in production, a temporary
/// directory holding a fake tree in tests. Every well-known path of the
/// system is built from it, so no function in this crate hard-codes `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root(PathBuf);

impl Root {
    /// The real root, `/`.
    pub fn system() -> Self {
        Root(PathBuf::from("/"))
    }

    /// A root at `dir` (a fake tree in tests, a chroot or image in tools).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Root(dir.into())
    }

    /// The root directory itself.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `abs` (an absolute path such as `/etc/openwrt_release`) under this root.
    pub fn join(&self, abs: impl AsRef<Path>) -> PathBuf {
        let abs = abs.as_ref();
        self.0.join(abs.strip_prefix("/").unwrap_or(abs))
    }

    /// The device-tree model string (`/proc/device-tree/model`).
    pub fn device_tree_model(&self) -> PathBuf {
        self.join("/proc/device-tree/model")
    }

    /// The same file through sysfs, for systems without `/proc/device-tree`.
    pub fn firmware_model(&self) -> PathBuf {
        self.join("/sys/firmware/devicetree/base/model")
    }

    /// OpenWrt's release file (`/etc/openwrt_release`).
    pub fn openwrt_release(&self) -> PathBuf {
        self.join("/etc/openwrt_release")
    }

    /// The LED class directory (`/sys/class/leds`).
    pub fn leds(&self) -> PathBuf {
        self.join("/sys/class/leds")
    }

    /// The hardware watchdog device (`/dev/watchdog`).
    pub fn watchdog(&self) -> PathBuf {
        self.join("/dev/watchdog")
    }

    /// A GPIO character device (`/dev/gpiochipN`).
    pub fn gpiochip(&self, n: u32) -> PathBuf {
        self.join(format!("/dev/gpiochip{n}"))
    }
}

/// Where meshbridge keeps its files on this platform.
///
/// | | Raspberry Pi OS, Debian, generic Linux | OpenWrt |
/// | --- | --- | --- |
/// | `config_dir` | `/etc/meshbridge` | `/etc/meshbridge` |
/// | `state_dir` | `/var/lib/meshbridge` | `/etc/meshbridge/state` |
/// | `runtime_dir` | `/run/meshbridge` | `/var/run/meshbridge` |
///
/// On OpenWrt `/var` is a tmpfs, so anything that must survive a reboot
/// (leases, keys the daemon generated) lives on flash under `/etc/meshbridge`,
/// which the package lists in its conffiles so that sysupgrade keeps it. The
/// flash is small and wears: the daemon coalesces its writes there (one
/// write of the lease file per change burst, not per DHCP packet). Runtime
/// files (socket, pid) go to the tmpfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Configuration and keys written by the user (`meshbridge.toml`,
    /// `private.key`).
    pub config_dir: PathBuf,
    /// Persistent state the daemon writes: leases, what it installed.
    pub state_dir: PathBuf,
    /// Files that only live while the daemon runs; emptied at boot.
    pub runtime_dir: PathBuf,
}

impl Paths {
    /// The layout of a Debian-like system (Raspberry Pi OS, generic Linux).
    pub fn debian(root: &Root) -> Self {
        Paths {
            config_dir: root.join("/etc/meshbridge"),
            state_dir: root.join("/var/lib/meshbridge"),
            runtime_dir: root.join("/run/meshbridge"),
        }
    }

    /// The layout on OpenWrt: persistent state on flash under the config
    /// directory, runtime files on tmpfs.
    pub fn openwrt(root: &Root) -> Self {
        Paths {
            config_dir: root.join("/etc/meshbridge"),
            state_dir: root.join("/etc/meshbridge/state"),
            runtime_dir: root.join("/var/run/meshbridge"),
        }
    }

    /// The default config file, `<config_dir>/meshbridge.toml`.
    pub fn config_file(&self) -> PathBuf {
        self.config_dir.join("meshbridge.toml")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_joins_absolute_paths_below_itself() {
        let root = Root::new("/tmp/fake");
        assert_eq!(root.watchdog(), PathBuf::from("/tmp/fake/dev/watchdog"));
        assert_eq!(root.gpiochip(4), PathBuf::from("/tmp/fake/dev/gpiochip4"));
        assert_eq!(Root::system().leds(), PathBuf::from("/sys/class/leds"));
        assert_eq!(Root::system().join("etc"), PathBuf::from("/etc"));
    }

    #[test]
    fn per_platform_layouts() {
        let sys = Root::system();
        let deb = Paths::debian(&sys);
        assert_eq!(deb.state_dir, PathBuf::from("/var/lib/meshbridge"));
        assert_eq!(deb.runtime_dir, PathBuf::from("/run/meshbridge"));
        assert_eq!(
            deb.config_file(),
            PathBuf::from("/etc/meshbridge/meshbridge.toml")
        );
        let owrt = Paths::openwrt(&sys);
        assert_eq!(owrt.state_dir, PathBuf::from("/etc/meshbridge/state"));
        assert!(
            owrt.state_dir.starts_with(&owrt.config_dir),
            "state must be on flash"
        );
        assert_eq!(owrt.runtime_dir, PathBuf::from("/var/run/meshbridge"));
    }
}
