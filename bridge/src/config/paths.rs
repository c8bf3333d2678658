//! The files a config names, and where a config that arrives from the page,
//! the API or a restore may point them.
//!
//! * Every file the config names is read with a size limit ([`MAX_FILE`])
//!   and only if it is a regular file (never a FIFO or a device).
//! * A config written by the daemon on someone's behalf (a restore, an edit
//!   from the page, the API or `meshbridge` CLI commands) may name files only
//!   inside the box's own folders: the running config file's folder, the
//!   running `state_dir`, and `/etc/meshbridge`, `/var/lib/meshbridge`,
//!   `/run/meshbridge`; or keep exactly the path the running config already
//!   has. The admin who edits the file by hand as root keeps full freedom
//!   (`--check-config` and the daemon's own start do not apply the fence).

use super::values::resolve_path;
use super::{bad, raw, ConfigError};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// The largest file the config may name (wg-quick file, key file) or be.
pub const MAX_FILE: u64 = 1 << 20;

/// The box's own folders on a packaged install.
pub const BOX_DIRS: &[&str] = &["/etc/meshbridge", "/var/lib/meshbridge", "/run/meshbridge"];

/// Read a text file of at most [`MAX_FILE`] bytes. Errors never quote the
/// file's contents.
pub fn read_limited(path: &Path) -> std::io::Result<String> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > MAX_FILE {
        return Err(std::io::Error::other(format!(
            "larger than {} KiB",
            MAX_FILE / 1024
        )));
    }
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE + 1)
        .read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_FILE {
        return Err(std::io::Error::other(format!(
            "larger than {} KiB",
            MAX_FILE / 1024
        )));
    }
    String::from_utf8(buf)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// The path-valued keys of a raw config, resolved as the daemon uses them
/// (`state_dir` as written; the others against the config's folder).
fn path_keys(raw: &raw::File, base: Option<&Path>) -> Vec<(&'static str, PathBuf)> {
    let mut out = Vec::new();
    if let Some(s) = &raw.state_dir {
        out.push(("state_dir", PathBuf::from(s)));
    }
    if let Some(s) = &raw.mesh.wireguard_config {
        out.push(("mesh.wireguard_config", resolve_path(base, s)));
    }
    if let Some(s) = &raw.mesh.private_key_file {
        out.push(("mesh.private_key_file", resolve_path(base, s)));
    }
    if let Some(s) = &raw.api.socket {
        out.push(("api.socket", resolve_path(base, s)));
    }
    if let Some(s) = &raw.board.root {
        out.push(("board.root", PathBuf::from(s)));
    }
    if let Some(t) = &raw.tailnet {
        if let Some(s) = &t.auth_key_file {
            out.push(("tailnet.auth_key_file", resolve_path(base, s.trim())));
        }
        if let Some(s) = &t.ca_file {
            out.push(("tailnet.ca_file", resolve_path(base, s.trim())));
        }
    }
    if let Some((chip, _)) = raw
        .board
        .reset_button
        .as_deref()
        .and_then(|s| s.rsplit_once(':'))
    {
        if chip.starts_with('/') {
            out.push(("board.reset_button", PathBuf::from(chip)));
        }
    }
    out
}

/// Where a config from the page, the API or a restore may point its files.
#[derive(Debug, Clone, Default)]
pub struct Fence {
    /// Folders (and everything below them) a path may be in.
    roots: Vec<PathBuf>,
    /// The running config's own paths: keeping one is always allowed.
    current: Vec<(&'static str, PathBuf)>,
}

impl Fence {
    /// The fence for a daemon running `config_file` (its folder is a root)
    /// with `state_dir`; `current_text` is that file's text, if readable.
    pub fn new(config_file: &Path, state_dir: &Path, current_text: Option<&str>) -> Fence {
        let base = config_file.parent();
        let mut roots: Vec<PathBuf> = BOX_DIRS.iter().map(PathBuf::from).collect();
        roots.extend(base.map(Path::to_path_buf));
        roots.push(state_dir.to_path_buf());
        roots.retain(|r| r.is_absolute() && clean(r));
        let current = current_text
            .and_then(|t| toml::from_str::<raw::File>(t).ok())
            .map(|r| path_keys(&r, base))
            .unwrap_or_default();
        Fence { roots, current }
    }

    /// Check every path-valued key of `raw` (resolved against `base`).
    pub fn check(&self, raw: &raw::File, base: Option<&Path>) -> Result<(), ConfigError> {
        for (key, path) in path_keys(raw, base) {
            if self.current.iter().any(|(k, p)| *k == key && *p == path) {
                continue;
            }
            let shown = path.to_string_lossy().escape_debug().to_string();
            let ok = match key {
                // The board's root and GPIO chips are hardware, not files.
                "board.root" => path == Path::new("/"),
                "board.reset_button" => clean(&path) && path.starts_with("/dev"),
                _ => {
                    path.is_absolute()
                        && clean(&path)
                        && self.roots.iter().any(|r| path.starts_with(r))
                }
            };
            if !ok {
                let places: Vec<String> =
                    self.roots.iter().map(|r| r.display().to_string()).collect();
                return Err(bad(
                    key,
                    format!(
                        "\"{shown}\" is outside the box's own folders ({}): a restore or a change from the page or the API may only name files there (an admin can still edit the config file by hand)",
                        places.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// No `..`, no `.`, nothing that breaks a line.
fn clean(p: &Path) -> bool {
    p.components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && !p.to_string_lossy().chars().any(super::values::breaks_lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_of(text: &str) -> raw::File {
        toml::from_str(text).unwrap()
    }

    fn fence() -> Fence {
        Fence::new(
            Path::new("/srv/box/meshbridge.toml"),
            Path::new("/srv/state"),
            Some("state_dir = \"/srv/state\"\n[mesh]\nwireguard_config = \"/opt/odd/wg0.conf\"\n"),
        )
    }

    #[test]
    fn paths_inside_the_box_folders_or_unchanged_pass() {
        let f = fence();
        let base = Some(Path::new("/srv/box"));
        for ok in [
            "[mesh]\nwireguard_config = \"wg0.conf\"\n",
            "[mesh]\nwireguard_config = \"/opt/odd/wg0.conf\"\n",
            "[mesh]\nprivate_key_file = \"/srv/state/key\"\n",
            "[mesh]\nprivate_key_file = \"/etc/meshbridge/private.key\"\n",
            "state_dir = \"/var/lib/meshbridge\"\n",
            "[api]\nsocket = \"/run/meshbridge/api.sock\"\n",
            "[board]\nroot = \"/\"\n",
            "[tailnet]\nca_file = \"/etc/meshbridge/hs-ca.pem\"\n",
        ] {
            f.check(&raw_of(ok), base)
                .unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn paths_elsewhere_are_refused_with_the_key_named() {
        let f = fence();
        let base = Some(Path::new("/srv/box"));
        for (bad_text, key) in [
            (
                "[mesh]\nwireguard_config = \"/etc/shadow\"\n",
                "mesh.wireguard_config",
            ),
            (
                "[mesh]\nwireguard_config = \"../../etc/shadow\"\n",
                "mesh.wireguard_config",
            ),
            (
                "[mesh]\nprivate_key_file = \"/srv/box/../../etc/shadow\"\n",
                "mesh.private_key_file",
            ),
            ("state_dir = \"/etc\"\n", "state_dir"),
            ("state_dir = \"relative\"\n", "state_dir"),
            ("[api]\nsocket = \"/tmp/x.sock\"\n", "api.socket"),
            ("[board]\nroot = \"/tmp/fake\"\n", "board.root"),
            (
                "[tailnet]\nauth_key_file = \"/etc/shadow\"\n",
                "tailnet.auth_key_file",
            ),
            ("[tailnet]\nca_file = \"/etc/shadow\"\n", "tailnet.ca_file"),
            (
                "[board]\nreset_button = \"/etc/passwd:1\"\n",
                "board.reset_button",
            ),
        ] {
            let e = f.check(&raw_of(bad_text), base).unwrap_err();
            assert_eq!(e.key, key, "{bad_text}");
        }
    }

    #[test]
    fn files_are_read_with_a_limit_and_only_if_regular() {
        let dir = std::env::temp_dir().join(format!("mb-paths-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let small = dir.join("small");
        std::fs::write(&small, "hello").unwrap();
        assert_eq!(read_limited(&small).unwrap(), "hello");
        let big = dir.join("big");
        std::fs::write(&big, vec![b'a'; MAX_FILE as usize + 1]).unwrap();
        assert!(read_limited(&big).unwrap_err().to_string().contains("KiB"));
        assert!(read_limited(&dir).is_err());
        let bin = dir.join("bin");
        std::fs::write(&bin, [0xff, 0xfe, b's', b'e', b'c']).unwrap();
        assert!(!read_limited(&bin).unwrap_err().to_string().contains("sec"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
