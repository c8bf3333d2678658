//! Factory reset: erase meshbridge's configuration, keys and state.

use crate::Paths;
use std::io;
use std::path::{Component, Path, PathBuf};

/// A factory reset was refused or failed part-way.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResetError {
    /// A directory is not one this crate will empty; nothing was removed.
    #[error("refusing to factory-reset {path}: {reason}")]
    Refused {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// Removing something failed; what came before it is gone.
    #[error("factory reset: removing {path}: {source}")]
    Remove {
        /// What could not be listed or removed.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Erase everything inside the state directory and the config directory:
/// the config file, keys, leases, what the daemon recorded as installed.
/// The directories themselves stay (so do [`Paths::runtime_dir`], a tmpfs,
/// and anything outside these directories). Returns every path removed
/// (files, links and directories), in the order they were removed, for the
/// daemon's log line.
///
/// Symbolic links are never followed: a link inside the directories is
/// removed, its target is not touched. Before removing anything, each
/// directory is checked, and the reset refused if one is a symbolic link,
/// not a directory, not absolute, `/`, or has no path component that
/// mentions meshbridge (a guard against a `state_dir` mistakenly set to
/// `/var/lib`). A missing directory has nothing to remove.
///
/// The daemon should first undo what it installed in the OS (routes,
/// nftables rules: `--cleanup`, which reads `<state_dir>/installed.json`),
/// then reset, then restart unconfigured.
pub fn factory_reset(paths: &Paths) -> Result<Vec<PathBuf>, ResetError> {
    let dirs = [paths.state_dir.as_path(), paths.config_dir.as_path()];
    let mut present = Vec::new();
    for dir in dirs {
        if check(dir)? {
            present.push(dir);
        }
    }
    let mut removed = Vec::new();
    for dir in present {
        empty(dir, &dirs, &mut removed)?;
    }
    Ok(removed)
}

/// Whether `dir` exists, or why it must not be emptied.
fn check(dir: &Path) -> Result<bool, ResetError> {
    let refuse = |reason| {
        Err(ResetError::Refused {
            path: dir.to_owned(),
            reason,
        })
    };
    if !dir.is_absolute() {
        return refuse("not an absolute path");
    }
    let names: Vec<String> = dir
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().to_lowercase()),
            _ => None,
        })
        .collect();
    if names.is_empty() || dir.components().any(|c| c == Component::ParentDir) {
        return refuse("not a directory of meshbridge's own");
    }
    if !names.iter().any(|n| n.contains("meshbridge")) {
        return refuse(
            "no path component mentions meshbridge, so it may not be meshbridge's own directory",
        );
    }
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => {
            refuse("it is a symbolic link, and factory reset does not follow links")
        }
        Ok(m) if !m.is_dir() => refuse("not a directory"),
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(ResetError::Remove {
            path: dir.to_owned(),
            source,
        }),
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ResetError + '_ {
    move |source| ResetError::Remove {
        path: path.to_owned(),
        source,
    }
}

/// Entries of `dir`, sorted, without following links.
fn entries(dir: &Path) -> Result<Vec<(PathBuf, bool)>, ResetError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        // symlink_metadata: a link to a directory is not a directory here.
        let is_dir = std::fs::symlink_metadata(&path)
            .map_err(io_err(&path))?
            .is_dir();
        out.push((path, is_dir));
    }
    out.sort();
    Ok(out)
}

/// Remove everything in `dir`; a subdirectory that is one of `keep` is
/// emptied instead of removed.
fn empty(dir: &Path, keep: &[&Path], removed: &mut Vec<PathBuf>) -> Result<(), ResetError> {
    for (path, is_dir) in entries(dir)? {
        if !is_dir {
            std::fs::remove_file(&path).map_err(io_err(&path))?;
            removed.push(path);
        } else if keep.contains(&path.as_path()) {
            empty(&path, keep, removed)?;
        } else {
            let mut inside = Vec::new();
            list(&path, &mut inside)?;
            // remove_dir_all does not follow links (and is safe against a
            // directory swapped for a link while it runs).
            std::fs::remove_dir_all(&path).map_err(io_err(&path))?;
            removed.extend(inside);
            removed.push(path);
        }
    }
    Ok(())
}

/// Everything below `dir`, deepest first, without following links.
fn list(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ResetError> {
    for (path, is_dir) in entries(dir)? {
        if is_dir {
            list(&path, out)?;
        }
        out.push(path);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::FakeTree;
    use std::os::unix::fs::symlink;

    fn debian_box(t: &FakeTree) -> Paths {
        t.file(
            "/etc/meshbridge/meshbridge.toml",
            "state_dir = \"/var/lib/meshbridge\"\n",
        );
        t.file("/etc/meshbridge/private.key", "secret\n");
        t.file("/etc/meshbridge/peers/laptop.pub", "public\n");
        t.file("/var/lib/meshbridge/leases.json", "{}");
        t.file("/var/lib/meshbridge/installed.json", "{}");
        t.file("/run/meshbridge/meshbridge.pid", "1234\n");
        Paths::debian(&t.root())
    }

    #[test]
    fn removes_config_keys_and_state_but_keeps_the_directories() {
        let t = FakeTree::new("reset");
        let paths = debian_box(&t);
        let removed = factory_reset(&paths).unwrap();
        let expected: Vec<PathBuf> = [
            "/var/lib/meshbridge/installed.json",
            "/var/lib/meshbridge/leases.json",
            "/etc/meshbridge/meshbridge.toml",
            "/etc/meshbridge/peers/laptop.pub",
            "/etc/meshbridge/peers",
            "/etc/meshbridge/private.key",
        ]
        .iter()
        .map(|p| t.path(p))
        .collect();
        assert_eq!(removed, expected);
        assert_eq!(std::fs::read_dir(&paths.config_dir).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(&paths.state_dir).unwrap().count(), 0);
        assert!(
            t.path("/run/meshbridge/meshbridge.pid").exists(),
            "runtime dir touched"
        );
        assert_eq!(
            factory_reset(&paths).unwrap(),
            Vec::<PathBuf>::new(),
            "second reset"
        );
    }

    #[test]
    fn links_inside_are_removed_and_their_targets_kept() {
        let t = FakeTree::new("reset-links");
        let paths = debian_box(&t);
        let outside_file = t.file("/home/user/important.key", "keep me");
        let outside_dir = t.dir("/srv/data");
        t.file("/srv/data/keep.txt", "keep me too");
        symlink(&outside_file, t.path("/etc/meshbridge/linked.key")).unwrap();
        symlink(&outside_dir, t.path("/var/lib/meshbridge/data")).unwrap();
        t.dir("/etc/meshbridge/sub");
        symlink(&outside_dir, t.path("/etc/meshbridge/sub/deep")).unwrap();
        let removed = factory_reset(&paths).unwrap();
        assert!(removed.contains(&t.path("/etc/meshbridge/linked.key")));
        assert!(removed.contains(&t.path("/var/lib/meshbridge/data")));
        assert!(removed.contains(&t.path("/etc/meshbridge/sub/deep")));
        assert!(!removed
            .iter()
            .any(|p| p.starts_with(t.path("/srv")) || p.starts_with(t.path("/home"))));
        assert_eq!(std::fs::read_to_string(&outside_file).unwrap(), "keep me");
        assert!(t.path("/srv/data/keep.txt").exists());
    }

    #[test]
    fn a_symlinked_directory_is_refused_before_anything_is_removed() {
        let t = FakeTree::new("reset-dirlink");
        t.file("/var/lib/meshbridge/leases.json", "{}");
        t.file("/data/meshbridge-config/meshbridge.toml", "");
        t.dir("/etc");
        symlink(t.path("/data/meshbridge-config"), t.path("/etc/meshbridge")).unwrap();
        let err = factory_reset(&Paths::debian(&t.root())).unwrap_err();
        assert!(
            matches!(&err, ResetError::Refused { path, .. } if path.ends_with("etc/meshbridge")),
            "{err}"
        );
        assert!(
            t.path("/var/lib/meshbridge/leases.json").exists(),
            "state removed before refusing"
        );
        assert!(t.path("/data/meshbridge-config/meshbridge.toml").exists());
    }

    #[test]
    fn openwrt_state_inside_the_config_dir_is_emptied_not_removed() {
        let t = FakeTree::new("reset-openwrt");
        t.file("/etc/meshbridge/meshbridge.toml", "");
        t.file("/etc/meshbridge/state/leases.json", "{}");
        let paths = Paths::openwrt(&t.root());
        let removed = factory_reset(&paths).unwrap();
        assert_eq!(
            removed,
            [
                t.path("/etc/meshbridge/state/leases.json"),
                t.path("/etc/meshbridge/meshbridge.toml")
            ]
        );
        assert!(paths.state_dir.is_dir());
    }

    #[test]
    fn missing_directories_have_nothing_to_remove() {
        let t = FakeTree::new("reset-missing");
        assert_eq!(
            factory_reset(&Paths::debian(&t.root())).unwrap(),
            Vec::<PathBuf>::new()
        );
    }

    #[test]
    fn directories_that_are_not_meshbridges_are_refused() {
        let t = FakeTree::new("reset-refuse");
        let file = t.file("/etc/meshbridge-file", "");
        let ok = Paths::debian(&t.root());
        for (config_dir, why) in [
            (PathBuf::from("/"), "root"),
            (PathBuf::from("/var/lib"), "not ours"),
            (PathBuf::from("etc/meshbridge"), "relative"),
            (PathBuf::from("/etc/meshbridge/.."), "escapes"),
            (file, "a file"),
        ] {
            let paths = Paths {
                config_dir,
                ..ok.clone()
            };
            let err = factory_reset(&paths).unwrap_err();
            assert!(matches!(err, ResetError::Refused { .. }), "{why}: {err}");
        }
    }
}
