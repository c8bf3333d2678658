//! The lease database format: what the daemon writes to flash so that
//! devices keep their addresses across restarts.
//!
//! ```json
//! {"version":1,"leases":[
//!   {"mac":"aa:bb:cc:dd:ee:ff","ip":"192.168.50.100","hostname":"printer","expires_unix":1700003600}
//! ]}
//! ```
//!
//! `expires_unix` is whole seconds since the Unix epoch. Released and
//! expired leases are kept (with their end time) because they are what lets a
//! returning device get its old address.
//!
//! **Journal.** Rewriting the whole database for every lease costs a full
//! write per new device; under load the daemon instead appends one journal
//! line per group of changes ([`LeaseDb::journal_line`]): the changed
//! records in the same format, plus the MACs whose records are gone,
//!
//! ```json
//! {"version":1,"leases":[{"mac":"aa:bb:cc:dd:ee:01","ip":"192.168.50.101","hostname":null,"expires_unix":1700003600}],"removed":["aa:bb:cc:dd:ee:02"]}
//! ```
//!
//! and replays the journal over the database when it starts
//! ([`LeaseDb::apply_journal`]). A line cut short by a crash is skipped.

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::lease::sanitize_hostname;
use crate::Mac;

/// The only format version this crate reads and writes.
pub const LEASE_DB_VERSION: u64 = 1;

/// One persisted lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Client hardware address.
    pub mac: Mac,
    /// Address leased (or last leased) to `mac`.
    pub ip: Ipv4Addr,
    /// Host name the client sent, if any.
    pub hostname: Option<String>,
    /// When the lease ends or ended (whole seconds once persisted).
    pub expires: SystemTime,
}

/// A set of persisted leases: what [`crate::Server::snapshot`] produces and
/// [`crate::Server::new`] restores.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseDb {
    records: Vec<LeaseRecord>,
}

/// Why a lease database could not be read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PersistError {
    /// The text is not JSON at all (truncated write, corruption).
    #[error("lease database is not valid JSON: {0}; delete the file to start with no leases")]
    Json(#[source] serde_json::Error),
    /// The top level is not an object with a numeric `version`.
    #[error("lease database has no numeric \"version\" field; it was not written by meshbridge")]
    MissingVersion,
    /// A version this build does not understand.
    #[error("lease database version {found} is not supported (this build reads version 1); it was written by a newer meshbridge")]
    UnsupportedVersion {
        /// The version found in the file.
        found: u64,
    },
    /// `leases` is missing or not an array.
    #[error("lease database has no \"leases\" array")]
    MissingLeases,
    /// One entry of `leases` is unusable.
    #[error("lease entry #{index} is invalid: {reason}")]
    BadEntry {
        /// Position of the entry in the `leases` array.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// The file as written, fields in documented order.
#[derive(Serialize)]
struct FileOut<'a> {
    version: u64,
    leases: Vec<EntryOut<'a>>,
}

#[derive(Serialize)]
struct EntryOut<'a> {
    mac: String,
    ip: String,
    hostname: Option<&'a str>,
    expires_unix: u64,
}

#[derive(Deserialize)]
struct RawEntry {
    mac: String,
    ip: String,
    #[serde(default)]
    hostname: Option<String>,
    expires_unix: u64,
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn entry_from_value(index: usize, v: Value) -> Result<LeaseRecord, PersistError> {
    let bad = |reason: String| PersistError::BadEntry { index, reason };
    let raw: RawEntry = serde_json::from_value(v).map_err(|e| bad(e.to_string()))?;
    let mac = raw
        .mac
        .parse::<Mac>()
        .map_err(|_| bad(format!("{:?} is not a MAC address", raw.mac)))?;
    let ip: Ipv4Addr = raw
        .ip
        .parse()
        .map_err(|_| bad(format!("{:?} is not an IPv4 address", raw.ip)))?;
    let expires = UNIX_EPOCH
        .checked_add(Duration::from_secs(raw.expires_unix))
        .ok_or_else(|| bad(format!("expires_unix {} is out of range", raw.expires_unix)))?;
    Ok(LeaseRecord {
        mac,
        ip,
        hostname: raw.hostname.as_deref().and_then(sanitize_hostname),
        expires,
    })
}

impl LeaseDb {
    /// No leases: what a first boot restores.
    pub fn empty() -> Self {
        Self::default()
    }

    /// A database holding `records` as given.
    pub fn from_records(records: Vec<LeaseRecord>) -> Self {
        Self { records }
    }

    /// The records, in file order.
    pub fn records(&self) -> &[LeaseRecord] {
        &self.records
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The versioned JSON text (one line) to write to storage.
    pub fn to_json(&self) -> String {
        let file = FileOut {
            version: LEASE_DB_VERSION,
            leases: self
                .records
                .iter()
                .map(|r| EntryOut {
                    mac: r.mac.to_string(),
                    ip: r.ip.to_string(),
                    hostname: r.hostname.as_deref(),
                    expires_unix: unix_secs(r.expires),
                })
                .collect(),
        };
        // Serialising plain strings and integers cannot fail; the fallback
        // only keeps this function total.
        serde_json::to_string(&file).unwrap_or_default()
    }

    /// Reads a database written by [`LeaseDb::to_json`]. Strict: any bad
    /// entry fails the whole read (see [`LeaseDb::from_json_lossy`] to keep
    /// the good ones). Never panics.
    ///
    /// # Errors
    ///
    /// [`PersistError`] if the text is not JSON, has no or an unknown
    /// version, has no `leases` array, or any entry is invalid (the first
    /// such entry is reported).
    pub fn from_json(s: &str) -> Result<Self, PersistError> {
        let (db, mut skipped) = Self::from_json_lossy(s)?;
        if skipped.is_empty() {
            Ok(db)
        } else {
            Err(skipped.swap_remove(0))
        }
    }

    /// Reads a database, skipping bad entries and returning why each was
    /// skipped. Fails only when the file as a whole is unusable (not JSON,
    /// no or unknown version, no `leases` array). Never panics.
    ///
    /// # Errors
    ///
    /// [`PersistError`] if the text is not JSON, has no or an unknown
    /// version, or has no `leases` array.
    pub fn from_json_lossy(s: &str) -> Result<(Self, Vec<PersistError>), PersistError> {
        let top: Value = serde_json::from_str(s).map_err(PersistError::Json)?;
        let Value::Object(mut top) = top else {
            return Err(PersistError::MissingVersion);
        };
        let version = top
            .get("version")
            .and_then(Value::as_u64)
            .ok_or(PersistError::MissingVersion)?;
        if version != LEASE_DB_VERSION {
            return Err(PersistError::UnsupportedVersion { found: version });
        }
        let Some(Value::Array(entries)) = top.remove("leases") else {
            return Err(PersistError::MissingLeases);
        };
        let mut records = Vec::with_capacity(entries.len());
        let mut skipped = Vec::new();
        for (index, v) in entries.into_iter().enumerate() {
            match entry_from_value(index, v) {
                Ok(r) => records.push(r),
                Err(e) => skipped.push(e),
            }
        }
        Ok((Self { records }, skipped))
    }
}

/// One journal line, as written by [`LeaseDb::journal_line`].
#[derive(Serialize)]
struct JournalOut<'a> {
    version: u64,
    leases: Vec<EntryOut<'a>>,
    removed: Vec<String>,
}

fn entry_out(r: &LeaseRecord) -> EntryOut<'_> {
    EntryOut {
        mac: r.mac.to_string(),
        ip: r.ip.to_string(),
        hostname: r.hostname.as_deref(),
        expires_unix: unix_secs(r.expires),
    }
}

impl LeaseDb {
    /// What changed from `old` to `self`, as one journal line (no newline):
    /// the records that are new or differ (as persisted: whole seconds),
    /// and the MACs `old` has and `self` has not. `None` if nothing did.
    pub fn journal_line(&self, old: &LeaseDb) -> Option<String> {
        let persisted = |r: &LeaseRecord| (r.ip, r.hostname.clone(), unix_secs(r.expires));
        let before: std::collections::HashMap<Mac, _> =
            old.records.iter().map(|r| (r.mac, persisted(r))).collect();
        let now: std::collections::HashSet<Mac> = self.records.iter().map(|r| r.mac).collect();
        let changed: Vec<EntryOut<'_>> = self
            .records
            .iter()
            .filter(|r| before.get(&r.mac) != Some(&persisted(r)))
            .map(entry_out)
            .collect();
        let removed: Vec<String> = old
            .records
            .iter()
            .filter(|r| !now.contains(&r.mac))
            .map(|r| r.mac.to_string())
            .collect();
        if changed.is_empty() && removed.is_empty() {
            return None;
        }
        let line = JournalOut {
            version: LEASE_DB_VERSION,
            leases: changed,
            removed,
        };
        serde_json::to_string(&line).ok()
    }

    /// Replays journal lines (see [`LeaseDb::journal_line`]) in order:
    /// each line's records replace those of the same MAC, its `removed`
    /// MACs are dropped. A line that is not a journal line (cut short by a
    /// crash, damaged) is skipped whole; bad entries in a good line are
    /// skipped alone. Returns how many lines and entries were skipped.
    /// Never panics.
    pub fn apply_journal(&mut self, text: &str) -> usize {
        let mut index: std::collections::HashMap<Mac, usize> = self
            .records
            .iter()
            .enumerate()
            .map(|(i, r)| (r.mac, i))
            .collect();
        let mut slots: Vec<Option<LeaseRecord>> = self.records.drain(..).map(Some).collect();
        let mut skipped = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(Value::Object(mut top)) = serde_json::from_str::<Value>(line) else {
                skipped += 1;
                continue;
            };
            let (Some(LEASE_DB_VERSION), Some(Value::Array(entries))) = (
                top.get("version").and_then(Value::as_u64),
                top.remove("leases"),
            ) else {
                skipped += 1;
                continue;
            };
            let removed = match top.remove("removed") {
                Some(Value::Array(r)) => r,
                None => Vec::new(),
                Some(_) => {
                    skipped += 1;
                    continue;
                }
            };
            for mac in removed {
                match mac.as_str().and_then(|m| m.parse::<Mac>().ok()) {
                    Some(mac) => {
                        if let Some(i) = index.remove(&mac) {
                            slots[i] = None;
                        }
                    }
                    None => skipped += 1,
                }
            }
            for (i, v) in entries.into_iter().enumerate() {
                match entry_from_value(i, v) {
                    Ok(r) => match index.get(&r.mac) {
                        Some(&at) => slots[at] = Some(r),
                        None => {
                            index.insert(r.mac, slots.len());
                            slots.push(Some(r));
                        }
                    },
                    Err(_) => skipped += 1,
                }
            }
        }
        self.records = slots.into_iter().flatten().collect();
        skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn round_trip() {
        let db = LeaseDb::from_records(vec![
            LeaseRecord {
                mac: Mac([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01]),
                ip: Ipv4Addr::new(192, 168, 50, 100),
                hostname: Some("printer".into()),
                expires: t(1_700_003_600),
            },
            LeaseRecord {
                mac: Mac([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x02]),
                ip: Ipv4Addr::new(192, 168, 50, 101),
                hostname: None,
                expires: t(1_700_000_000),
            },
        ]);
        let text = db.to_json();
        assert!(text.starts_with(r#"{"version":1,"leases":[{"mac":"aa:bb:cc:dd:ee:01","ip":"192.168.50.100","hostname":"printer","expires_unix":1700003600}"#), "{text}");
        assert!(text.contains("\"mac\":\"aa:bb:cc:dd:ee:01\""));
        assert!(text.contains("\"expires_unix\":1700003600"));
        assert_eq!(LeaseDb::from_json(&text).unwrap(), db);
    }

    #[test]
    fn documented_example_parses() {
        let text = r#"{"version":1,"leases":[{"mac":"aa:bb:cc:dd:ee:ff","ip":"192.168.50.100","hostname":"printer","expires_unix":1700003600}]}"#;
        let db = LeaseDb::from_json(text).unwrap();
        assert_eq!(db.len(), 1);
        assert_eq!(db.records()[0].hostname.as_deref(), Some("printer"));
        assert_eq!(db.records()[0].expires, t(1_700_003_600));
    }

    #[test]
    fn rejects_unknown_version_and_garbage() {
        assert!(matches!(
            LeaseDb::from_json(r#"{"version":2,"leases":[]}"#),
            Err(PersistError::UnsupportedVersion { found: 2 })
        ));
        assert!(matches!(
            LeaseDb::from_json("{"),
            Err(PersistError::Json(_))
        ));
        assert!(matches!(
            LeaseDb::from_json("[]"),
            Err(PersistError::MissingVersion)
        ));
        assert!(matches!(
            LeaseDb::from_json(r#"{"version":"1"}"#),
            Err(PersistError::MissingVersion)
        ));
        assert!(matches!(
            LeaseDb::from_json(r#"{"version":1}"#),
            Err(PersistError::MissingLeases)
        ));
    }

    #[test]
    fn one_bad_entry_drops_that_entry_not_the_file() {
        // What the daemon reads at start (from_json_lossy): a hand-edited or
        // damaged entry in the middle loses only itself.
        let good = |n: u8| LeaseRecord {
            mac: Mac([0xaa, 0xbb, 0xcc, 0xdd, 0xee, n]),
            ip: Ipv4Addr::new(10, 77, 1, 100 + n),
            hostname: Some(format!("dev{n}")),
            expires: t(1_700_000_000 + u64::from(n)),
        };
        let text = LeaseDb::from_records(vec![good(1), good(2), good(3)]).to_json();
        let entry2 = r#"{"mac":"aa:bb:cc:dd:ee:02","ip":"10.77.1.102","hostname":"dev2","expires_unix":1700000002}"#;
        assert!(text.contains(entry2), "{text}");
        for bad in [
            r#"{"mac":"aa:bb:cc:dd:ee:zz","ip":"10.77.1.102","hostname":"dev2","expires_unix":1700000002}"#,
            r#"{"mac":"aa:bb:cc:dd:ee:02","ip":"10.77.1.1102","hostname":"dev2","expires_unix":1700000002}"#,
            r#"{"mac":"aa:bb:cc:dd:ee:02","ip":"10.77.1.102","hostname":"dev2","expires_unix":"soon"}"#,
            r#"{"mac":"aa:bb:cc:dd:ee:02","ip":"10.77.1.102","hostname":[1,2],"expires_unix":1700000002}"#,
            r#"{"mac":"aa:bb:cc:dd:ee:02","hostname":"dev2","expires_unix":1700000002}"#,
            r#""aa:bb:cc:dd:ee:02""#,
            "null",
        ] {
            let damaged = text.replacen(entry2, bad, 1);
            let (db, skipped) = LeaseDb::from_json_lossy(&damaged).unwrap();
            assert_eq!(db.records(), &[good(1), good(3)], "{damaged}");
            assert_eq!(skipped.len(), 1, "{damaged}");
            assert!(matches!(
                skipped[0],
                PersistError::BadEntry { index: 1, .. }
            ));
        }
    }

    #[test]
    fn bad_entries_fail_strict_and_are_skipped_lossy() {
        let text = r#"{"version":1,"leases":[
            {"mac":"aa:bb:cc:dd:ee:ff","ip":"192.168.50.100","hostname":null,"expires_unix":5},
            {"mac":"zz:bb:cc:dd:ee:ff","ip":"192.168.50.101","expires_unix":5},
            {"mac":"aa:bb:cc:dd:ee:fe","ip":"300.1.1.1","expires_unix":5},
            {"mac":"aa:bb:cc:dd:ee:fd","ip":"192.168.50.102","expires_unix":-1},
            {"mac":"aa:bb:cc:dd:ee:fc","ip":"192.168.50.103","expires_unix":18446744073709551615},
            7
        ]}"#;
        assert!(matches!(
            LeaseDb::from_json(text),
            Err(PersistError::BadEntry { index: 1, .. })
        ));
        let (db, skipped) = LeaseDb::from_json_lossy(text).unwrap();
        assert_eq!(db.len(), 1);
        // The u64::MAX expiry may or may not fit SystemTime on this platform.
        assert!(skipped.len() >= 4, "{skipped:?}");
        for e in &skipped {
            assert!(e.to_string().starts_with("lease entry #"));
        }
    }

    fn rec(n: u8, ip: u8, expires: u64) -> LeaseRecord {
        LeaseRecord {
            mac: Mac([0xaa, 0xbb, 0xcc, 0xdd, 0xee, n]),
            ip: Ipv4Addr::new(192, 168, 50, ip),
            hostname: n.is_multiple_of(2).then(|| format!("dev{n}")),
            expires: t(expires),
        }
    }

    #[test]
    fn a_journal_replays_changes_additions_and_removals_in_order() {
        let base = LeaseDb::from_records(vec![
            rec(1, 101, 1000),
            rec(2, 102, 1000),
            rec(3, 103, 1000),
        ]);
        let step1 = LeaseDb::from_records(vec![
            rec(1, 101, 2000),
            rec(2, 102, 1000),
            rec(4, 104, 1000),
        ]);
        let step2 = LeaseDb::from_records(vec![rec(1, 101, 2000), rec(4, 110, 3000)]);
        assert_eq!(base.journal_line(&base), None);
        let l1 = step1.journal_line(&base).unwrap();
        assert!(l1.contains(r#""removed":["aa:bb:cc:dd:ee:03"]"#), "{l1}");
        assert!(
            !l1.contains("ee:02"),
            "unchanged records are not written: {l1}"
        );
        let l2 = step2.journal_line(&step1).unwrap();
        let mut db = base.clone();
        assert_eq!(db.apply_journal(&format!("{l1}\n{l2}\n")), 0);
        let mut got = db.records().to_vec();
        got.sort_by_key(|r| r.mac);
        assert_eq!(got, step2.records());
        // Sub-second differences are not changes (the file keeps seconds).
        let mut finer = step2.clone();
        finer.records[0].expires += Duration::from_millis(300);
        assert_eq!(finer.journal_line(&step2), None);
    }

    #[test]
    fn a_torn_or_hostile_journal_line_is_skipped_not_fatal() {
        let base = LeaseDb::from_records(vec![rec(1, 101, 1000)]);
        let good = LeaseDb::from_records(vec![rec(1, 101, 1000), rec(2, 102, 1000)])
            .journal_line(&base)
            .unwrap();
        let torn = &good[..good.len() / 2];
        let text = format!(
            "{good}\n{torn}\n{{\"version\":2,\"leases\":[]}}\n{{\"version\":1,\"leases\":[{{\"mac\":\"zz\"}}],\"removed\":[7,\"aa:bb:cc:dd:ee:01\"]}}\n[]\n"
        );
        let mut db = base.clone();
        // The torn line, the wrong version, the bad entry, the bad MAC, the array.
        assert_eq!(db.apply_journal(&text), 5);
        assert_eq!(db.records(), &[rec(2, 102, 1000)]);
    }
}
