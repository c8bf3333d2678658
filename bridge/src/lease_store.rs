//! The lease file on flash: `leases.json` (the whole database, replaced
//! atomically) plus `leases.journal` (one line per group of changes,
//! appended and synced), so that a busy DHCP server does not rewrite the
//! whole database for every new device.
//!
//! Group commit: the daemon saves once per turn of its loop, after it
//! handled a batch of frames and before it sends the replies, so every
//! DHCPACK it sends is already on flash, and one sync covers the batch.
//! When the server is quiet (the last write over [`QUIET`] ago, nothing in
//! the journal) a change rewrites `leases.json` itself; under load changes
//! go to the journal, which is folded into `leases.json` once the load
//! stops or [`MAX_JOURNAL_AGE`] after its first line ([`LeaseStore::tick`]),
//! or after [`COMPACT_LINES`] lines. Order of
//! writes: a change is in the journal (synced) before the database that
//! contains it replaces the old one, and the journal is emptied only after
//! that, so replaying the journal over either version of the database gives
//! the latest state.

use crate::persist::write_atomic;
use meshbridge_dhcp as dhcp;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A write this long after the last one goes straight to `leases.json`.
pub const QUIET: Duration = Duration::from_secs(1);
/// Journal lines after which the journal is folded into `leases.json`.
pub const COMPACT_LINES: usize = 2000;
/// The journal is folded into `leases.json` at the latest this long after
/// its first line, so the file is never far behind under steady load.
pub const MAX_JOURNAL_AGE: Duration = Duration::from_secs(5);

/// Where the leases live, and what they hold now.
pub struct LeaseStore {
    dir: PathBuf,
    /// What `leases.json` plus the journal hold.
    on_disk: dhcp::LeaseDb,
    journal: Option<File>,
    journal_lines: usize,
    /// When the journal's first line was written.
    journal_since: Option<Instant>,
    last_write: Option<Instant>,
}

fn db_path(dir: &Path) -> PathBuf {
    dir.join("leases.json")
}

fn journal_path(dir: &Path) -> PathBuf {
    dir.join("leases.journal")
}

impl LeaseStore {
    /// Read the persisted leases: the database, then the journal replayed
    /// over it (folded in at once). A bad entry or journal line is dropped
    /// (and logged), not the file; a database that does not parse at all is
    /// kept aside (never deleted) and the server starts with the journal's
    /// leases only.
    pub fn open(dir: &Path) -> (LeaseStore, dhcp::LeaseDb) {
        let mut db = read_db(dir);
        let journal = journal_path(dir);
        let mut store = LeaseStore {
            dir: dir.to_path_buf(),
            on_disk: db.clone(),
            journal: None,
            journal_lines: 0,
            journal_since: None,
            last_write: None,
        };
        match std::fs::read_to_string(&journal) {
            Ok(text) if !text.is_empty() => {
                let skipped = db.apply_journal(&text);
                if skipped > 0 {
                    tracing::warn!(
                        "{}: {skipped} line(s) or entries unreadable (a write cut short?) and dropped; the others are kept",
                        journal.display()
                    );
                }
                // Fold it in now: the journal starts empty.
                if let Err(e) = store.compact(&db) {
                    tracing::error!("saving leases: {e:#}");
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::error!(
                "cannot read {}: {e}; its leases are not restored",
                journal.display()
            ),
        }
        store.on_disk = db.clone();
        (store, db)
    }

    /// Persist `db` (the server's snapshot) if it differs from what is on
    /// flash: durable when this returns.
    pub fn save(&mut self, db: dhcp::LeaseDb) {
        if let Err(e) = self.try_save(db) {
            tracing::error!("saving leases: {e:#}");
        }
    }

    fn try_save(&mut self, db: dhcp::LeaseDb) -> anyhow::Result<()> {
        let Some(line) = db.journal_line(&self.on_disk) else {
            return Ok(());
        };
        let quiet = self.last_write.is_none_or(|t| t.elapsed() >= QUIET);
        if quiet && self.journal_lines == 0 {
            return self.compact(&db);
        }
        self.append(&line)?;
        self.on_disk = db;
        if self.journal_lines >= COMPACT_LINES {
            let db = self.on_disk.clone();
            self.compact(&db)?;
        }
        Ok(())
    }

    /// At exit: persist `db` and fold the journal in.
    pub fn close(&mut self, db: dhcp::LeaseDb) {
        self.save(db);
        if self.journal_lines > 0 {
            let db = self.on_disk.clone();
            if let Err(e) = self.compact(&db) {
                tracing::error!("saving leases: {e:#}");
            }
        }
    }

    /// Fold the journal into `leases.json` once writes have stopped for
    /// [`QUIET`], or its first line is [`MAX_JOURNAL_AGE`] old. Call now and
    /// then (every few seconds).
    pub fn tick(&mut self) {
        let quiet = self.last_write.is_none_or(|t| t.elapsed() >= QUIET);
        let old = self
            .journal_since
            .is_some_and(|t| t.elapsed() >= MAX_JOURNAL_AGE);
        if self.journal_lines > 0 && (quiet || old) {
            let db = self.on_disk.clone();
            if let Err(e) = self.compact(&db) {
                tracing::error!("saving leases: {e:#}");
            }
        }
    }

    fn append(&mut self, line: &str) -> anyhow::Result<()> {
        use anyhow::Context;
        let path = journal_path(&self.dir);
        if self.journal.is_none() {
            use std::os::unix::fs::OpenOptionsExt;
            let f = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            self.journal = Some(f);
        }
        let Some(f) = self.journal.as_mut() else {
            return Ok(());
        };
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        f.write_all(&buf)
            .and_then(|()| f.sync_data())
            .with_context(|| format!("appending to {}", path.display()))?;
        self.journal_lines += 1;
        self.last_write = Some(Instant::now());
        self.journal_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Replace `leases.json` with `db`, then empty the journal.
    fn compact(&mut self, db: &dhcp::LeaseDb) -> anyhow::Result<()> {
        write_atomic(&db_path(&self.dir), db.to_json().as_bytes())?;
        self.on_disk = db.clone();
        self.last_write = Some(Instant::now());
        if self.journal_lines > 0 || journal_path(&self.dir).exists() {
            self.journal = None;
            let path = journal_path(&self.dir);
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(anyhow::anyhow!("removing {}: {e}", path.display()));
                }
            }
            if let Ok(d) = File::open(&self.dir) {
                let _ = d.sync_all();
            }
            self.journal_lines = 0;
            self.journal_since = None;
        }
        Ok(())
    }
}

fn read_db(dir: &Path) -> dhcp::LeaseDb {
    let path = db_path(dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => match dhcp::LeaseDb::from_json_lossy(&text) {
            Ok((db, skipped)) => {
                for e in &skipped {
                    tracing::warn!(
                        "{}: {e}; that lease is dropped, the others are kept",
                        path.display()
                    );
                }
                db
            }
            Err(e) => {
                let aside = dir.join("leases.json.unreadable");
                let _ = std::fs::rename(&path, &aside);
                tracing::error!(
                    "{} is unreadable ({e}); kept it as {} and starting with no leases",
                    path.display(),
                    aside.display()
                );
                dhcp::LeaseDb::empty()
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => dhcp::LeaseDb::empty(),
        Err(e) => {
            tracing::error!(
                "cannot read {}: {e}; starting with no leases",
                path.display()
            );
            dhcp::LeaseDb::empty()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcp::{LeaseDb, LeaseRecord, Mac};
    use std::net::Ipv4Addr;
    use std::time::UNIX_EPOCH;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("mb-leases-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn db(n: u8) -> LeaseDb {
        LeaseDb::from_records(
            (1..=n)
                .map(|i| LeaseRecord {
                    mac: Mac([2, 0, 0, 0, 0, i]),
                    ip: Ipv4Addr::new(10, 0, 0, i),
                    hostname: None,
                    expires: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
                })
                .collect(),
        )
    }

    fn sorted(db: &LeaseDb) -> Vec<LeaseRecord> {
        let mut r = db.records().to_vec();
        r.sort_by_key(|r| r.mac);
        r
    }

    #[test]
    fn quiet_changes_rewrite_the_file_busy_ones_go_to_the_journal() {
        let d = dir();
        let (mut s, start) = LeaseStore::open(&d);
        assert!(start.is_empty());
        s.save(db(1));
        assert_eq!(
            LeaseDb::from_json(&std::fs::read_to_string(d.join("leases.json")).unwrap()).unwrap(),
            db(1)
        );
        // Within QUIET of that write: the journal, one line per save.
        s.save(db(2));
        s.save(db(3));
        s.save(db(3));
        let journal = std::fs::read_to_string(d.join("leases.journal")).unwrap();
        assert_eq!(journal.lines().count(), 2, "{journal}");
        // A crash now (no close): the next start has every saved lease, and
        // folds the journal in.
        drop(s);
        let (mut s, got) = LeaseStore::open(&d);
        assert_eq!(sorted(&got), sorted(&db(3)));
        assert!(!d.join("leases.journal").exists());
        assert_eq!(
            sorted(
                &LeaseDb::from_json(&std::fs::read_to_string(d.join("leases.json")).unwrap())
                    .unwrap()
            ),
            sorted(&db(3))
        );
        // Fewer leases (records dropped) survive the same way.
        s.save(db(3));
        s.save(db(1));
        drop(s);
        assert_eq!(sorted(&LeaseStore::open(&d).1), sorted(&db(1)));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_crash_between_the_new_file_and_the_emptied_journal_loses_nothing() {
        let d = dir();
        let (mut s, _) = LeaseStore::open(&d);
        s.save(db(1));
        s.save(db(2));
        s.save(db(4));
        let journal = std::fs::read_to_string(d.join("leases.journal")).unwrap();
        s.close(db(4));
        assert!(!d.join("leases.journal").exists());
        // As if the journal's removal had not happened: replaying it over
        // the newer file gives the same leases.
        std::fs::write(d.join("leases.journal"), &journal).unwrap();
        assert_eq!(sorted(&LeaseStore::open(&d).1), sorted(&db(4)));
        // A last line cut short by the crash costs only that line.
        let (mut s, _) = LeaseStore::open(&d);
        s.save(db(5));
        s.save(db(6));
        drop(s);
        let text = std::fs::read_to_string(d.join("leases.journal")).unwrap();
        std::fs::write(d.join("leases.journal"), &text[..text.len() - 10]).unwrap();
        assert_eq!(sorted(&LeaseStore::open(&d).1), sorted(&db(5)));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
