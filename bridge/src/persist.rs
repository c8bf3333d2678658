//! Crash-safe files: write to a temporary file, fsync it, rename it over the
//! old one and fsync the folder. After a power cut the file is either the old
//! or the new version, never a torn mix.

use anyhow::{Context, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// Replace `path` with `data` atomically and durably.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    write_with_mode(path, data, None)
}

/// Like [`write_atomic`], but the file ends up readable by its owner only
/// (0600) whatever its mode was: the config file, which holds keys.
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    write_with_mode(path, data, Some(0o600))
}

fn write_with_mode(path: &Path, data: &[u8], mode: Option<u32>) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        // Never readable by others, not even for a moment.
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    match mode {
        Some(m) => fs::set_permissions(&tmp, fs::Permissions::from_mode(m))
            .with_context(|| format!("setting the mode of {}", tmp.display()))?,
        // Keep the old file's mode (a config with a key in it stays private).
        None => {
            if let Ok(m) = fs::metadata(path) {
                let _ = fs::set_permissions(&tmp, m.permissions());
            }
        }
    }
    f.write_all(data)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    drop(f);
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_contents_and_leaves_no_temp_file() {
        let dir = std::env::temp_dir().join(format!("mb-persist-{}", std::process::id()));
        let p = dir.join("leases.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn private_files_end_up_0600_whatever_they_were() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("mb-persist-priv-{}", std::process::id()));
        let p = dir.join("meshbridge.toml");
        fs::create_dir_all(&dir).unwrap();
        fs::write(&p, "old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&p, b"new").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
