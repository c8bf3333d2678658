//! Arbitrary UTF-8 as a stored lease database and as a lease journal:
//! reading must never panic, and whatever reads back must survive a
//! write/read round trip and a server restore.

#![no_main]

use std::net::Ipv4Addr;
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use meshbridge_dhcp::{LeaseDb, Mac, Server, ServerConfig};

fn config() -> ServerConfig {
    ServerConfig {
        server_ip: Ipv4Addr::new(192, 168, 50, 1),
        server_mac: Mac([0x02, 0x4d, 0x42, 0x00, 0x00, 0x01]),
        subnet_mask: Ipv4Addr::new(255, 255, 255, 0),
        range_start: Ipv4Addr::new(192, 168, 50, 100),
        range_end: Ipv4Addr::new(192, 168, 50, 200),
        router: None,
        dns: vec![],
        domain: None,
        mtu: None,
        lease_time: Duration::from_secs(3600),
        reservations: vec![],
        probe_interval: None,
        node_leases: Vec::new(),
        hold_new: None,
        no_node: Vec::new(),
        serve: true,
    }
}

fn sorted(db: &LeaseDb) -> Vec<meshbridge_dhcp::LeaseRecord> {
    let mut r = db.records().to_vec();
    r.sort_by_key(|r| r.mac);
    r
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // As a journal: replaying never panics, and what it gives, written as
    // one journal line, replays to the same records.
    let mut replayed = LeaseDb::empty();
    replayed.apply_journal(text);
    let mut again = LeaseDb::empty();
    if let Some(line) = replayed.journal_line(&LeaseDb::empty()) {
        assert_eq!(again.apply_journal(&line), 0, "own journal line must read back");
    }
    assert_eq!(sorted(&again), sorted(&replayed));
    let strict = LeaseDb::from_json(text);
    let Ok((db, skipped)) = LeaseDb::from_json_lossy(text) else {
        assert!(
            strict.is_err(),
            "strict read accepted what lossy read refused"
        );
        return;
    };
    match &strict {
        Ok(strict) => {
            assert!(skipped.is_empty());
            assert_eq!(strict, &db);
        }
        Err(_) => assert!(!skipped.is_empty()),
    }
    for e in &skipped {
        assert!(!e.to_string().is_empty());
    }

    // Our own output must read back; times are whole seconds, so a second
    // round trip is exact.
    let once = LeaseDb::from_json(&db.to_json()).expect("own output must read back");
    let twice = LeaseDb::from_json(&once.to_json()).expect("own output must read back");
    assert_eq!(once, twice);
    assert_eq!(once.len(), db.len());

    // Restoring anything readable must work and keep at most one lease per
    // MAC and per address.
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let server = Server::new(config(), db, now).expect("valid config");
    let mut macs = std::collections::BTreeSet::new();
    let mut ips = std::collections::BTreeSet::new();
    for l in server.leases() {
        assert!(
            macs.insert(l.mac) && ips.insert(l.ip),
            "duplicate after restore"
        );
    }
});
