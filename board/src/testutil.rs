//! Fake trees for tests: a unique temporary directory, removed on drop.

use crate::Root;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A temporary directory standing for `/`.
pub(crate) struct FakeTree {
    dir: PathBuf,
}

impl FakeTree {
    pub(crate) fn new(name: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("mb-board-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        FakeTree { dir }
    }

    pub(crate) fn root(&self) -> Root {
        Root::new(&self.dir)
    }

    /// The path of `abs` (e.g. `/sys/class/leds/ACT/trigger`) in the tree.
    pub(crate) fn path(&self, abs: &str) -> PathBuf {
        self.root().join(abs)
    }

    /// Create `abs` with `contents`, and its parent directories.
    pub(crate) fn file(&self, abs: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(abs);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, contents).unwrap();
        p
    }

    /// Create the directory `abs`.
    pub(crate) fn dir(&self, abs: &str) -> PathBuf {
        let p = self.path(abs);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// A fake LED class device as the kernel shows it before we touch it.
    pub(crate) fn led(&self, name: &str, triggers: &str, max_brightness: u32) -> PathBuf {
        let dir = self.dir(&format!("/sys/class/leds/{name}"));
        write(&dir.join("trigger"), triggers);
        write(&dir.join("brightness"), "0\n");
        write(&dir.join("max_brightness"), format!("{max_brightness}\n"));
        dir
    }
}

impl Drop for FakeTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn write(path: &Path, contents: impl AsRef<[u8]>) {
    std::fs::write(path, contents).unwrap();
}

pub(crate) fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}
