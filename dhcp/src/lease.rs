//! The lease table: who holds or held which address, pending offers,
//! quarantined (declined) addresses and addresses ARP saw in use.
//!
//! The table keeps one record per MAC. A record outlives its lease: expired
//! and released records are the memory that gives a returning device its old
//! address. A record is only forgotten when another MAC is bound to its
//! address, when the client declines the address, or when the configuration
//! no longer allows it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use crate::config::ServerConfig;
use crate::{after, Mac};

/// How long an offered address stays reserved for the client it was offered
/// to.
pub const OFFER_HOLD: Duration = Duration::from_secs(60);
/// When the pool is otherwise exhausted, an offer at least this old may be
/// given to another client (a client answers an offer within a second or
/// two; an offer nobody took ties up an address for nothing).
pub const OFFER_MIN_HOLD: Duration = Duration::from_secs(5);
/// How long a declined address is kept out of the pool.
pub const DECLINE_QUARANTINE: Duration = Duration::from_secs(600);
/// How long an address ARP saw in use stays blocked for other MACs.
pub const IN_USE_HOLD: Duration = Duration::from_secs(600);
/// Most pending offers kept. When full, the offer made longest ago is
/// dropped (an offer is a tentative hold, not a lease), so a flood of
/// DISCOVERs from random MACs costs a fixed amount of memory.
pub const MAX_OFFERS: usize = 256;
/// A remembered (expired or released) record is kept for its MAC, and its
/// address is never given to another MAC, until `lease_time × REMEMBER_LEASES`
/// after the lease ended: a day with the default one-hour lease.
pub const REMEMBER_LEASES: u32 = 24;
/// Upper bound on remembered ARP sightings, so a flood of spoofed ARP
/// cannot grow memory without bound.
const MAX_IN_USE_NOTES: usize = 4096;

/// Where a lease record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LeaseState {
    /// Acknowledged; active until `expires`.
    Bound,
    /// The lease ran out (noticed by `handle_timeout`, or restored already
    /// expired). The address is remembered for this MAC.
    Expired,
    /// The client released the address. The address is remembered for this
    /// MAC.
    Released,
}

/// One lease record (one per MAC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Client hardware address (chaddr); the key of the record.
    pub mac: Mac,
    /// The address leased, or last leased, to `mac`.
    pub ip: Ipv4Addr,
    /// Host name the client sent (option 12), sanitised to letters, digits,
    /// `-`, `_` and `.`, at most 63 bytes.
    pub hostname: Option<String>,
    /// When the lease ends (or ended). For a released lease: the release
    /// time.
    pub expires: SystemTime,
    /// Where the record stands. Use [`Lease::is_active`] to ask whether the
    /// client may use the address now.
    pub state: LeaseState,
}

impl Lease {
    /// Bound and not yet expired at `now`.
    pub fn is_active(&self, now: SystemTime) -> bool {
        self.state == LeaseState::Bound && now < self.expires
    }
}

/// An address offered to a client and held for [`OFFER_HOLD`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Offer {
    pub(crate) ip: Ipv4Addr,
    pub(crate) until: SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InUse {
    mac: Mac,
    until: SystemTime,
}

/// The server's address bookkeeping. Pure data; every method takes `now`.
#[derive(Debug, Default, Clone)]
pub(crate) struct LeaseTable {
    leases: BTreeMap<Mac, Lease>,
    /// The records' addresses (at most one record per address): the index
    /// that keeps address lookups and the free-address search off a scan of
    /// every record.
    by_ip: BTreeMap<Ipv4Addr, Mac>,
    offers: BTreeMap<Mac, Offer>,
    quarantine: BTreeMap<Ipv4Addr, SystemTime>,
    in_use: BTreeMap<Ipv4Addr, InUse>,
}

/// Keeps only bytes that are safe in a host name, at most 63 of them.
pub(crate) fn sanitize_hostname(raw: &str) -> Option<String> {
    let clean: String = raw
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(63)
        .collect();
    let clean = clean.trim_matches('.').to_string();
    (!clean.is_empty()).then_some(clean)
}

impl LeaseTable {
    /// Adds or replaces `lease.mac`'s record; another MAC's record for the
    /// same address is dropped.
    fn put(&mut self, lease: Lease) {
        self.drop_record(&lease.mac);
        if let Some(other) = self.by_ip.get(&lease.ip).copied() {
            self.drop_record(&other);
        }
        self.by_ip.insert(lease.ip, lease.mac);
        self.leases.insert(lease.mac, lease);
    }

    /// Removes `mac`'s record (and its index entry).
    fn drop_record(&mut self, mac: &Mac) -> Option<Lease> {
        let old = self.leases.remove(mac)?;
        if self.by_ip.get(&old.ip) == Some(mac) {
            self.by_ip.remove(&old.ip);
        }
        Some(old)
    }

    /// The record naming `ip`, if any.
    fn record_for_ip(&self, ip: Ipv4Addr) -> Option<&Lease> {
        self.by_ip.get(&ip).and_then(|m| self.leases.get(m))
    }

    /// All lease records, ordered by MAC.
    pub(crate) fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases.values()
    }

    pub(crate) fn lease(&self, mac: &Mac) -> Option<&Lease> {
        self.leases.get(mac)
    }

    pub(crate) fn offer(&self, mac: &Mac) -> Option<Offer> {
        self.offers.get(mac).copied()
    }

    /// Restores a record. Among records for the same MAC or the same address
    /// the one that expires last wins. Returns whether it was kept.
    pub(crate) fn restore(&mut self, lease: Lease) -> bool {
        if let Some(old) = self.leases.get(&lease.mac) {
            if old.expires >= lease.expires {
                return false;
            }
        }
        let clash = self
            .record_for_ip(lease.ip)
            .filter(|l| l.mac != lease.mac)
            .map(|l| l.expires);
        if clash.is_some_and(|expires| expires >= lease.expires) {
            return false;
        }
        self.put(lease);
        true
    }

    /// The MAC that currently holds `ip` by an active lease or a live offer.
    pub(crate) fn holder(&self, ip: Ipv4Addr, now: SystemTime) -> Option<Mac> {
        self.active_mac_for(ip, now).or_else(|| {
            self.offers
                .iter()
                .find(|(_, o)| o.ip == ip && now < o.until)
                .map(|(m, _)| *m)
        })
    }

    /// The MAC with an active lease on `ip`.
    pub(crate) fn active_mac_for(&self, ip: Ipv4Addr, now: SystemTime) -> Option<Mac> {
        self.record_for_ip(ip)
            .filter(|l| l.is_active(now))
            .map(|l| l.mac)
    }

    /// Another MAC's record (active, or remembered within
    /// `lease_time × REMEMBER_LEASES`) names `ip`.
    pub(crate) fn remembered_for_other(
        &self,
        cfg: &ServerConfig,
        ip: Ipv4Addr,
        mac: &Mac,
        now: SystemTime,
    ) -> bool {
        self.record_for_ip(ip)
            .is_some_and(|l| l.mac != *mac && Self::recent(cfg, l, now))
    }

    /// `l` is active or ended less than `lease_time × REMEMBER_LEASES` ago.
    fn recent(cfg: &ServerConfig, l: &Lease, now: SystemTime) -> bool {
        after(l.expires, cfg.lease_time.saturating_mul(REMEMBER_LEASES)) > now
    }

    pub(crate) fn is_quarantined(&self, ip: Ipv4Addr, now: SystemTime) -> bool {
        self.quarantine.get(&ip).is_some_and(|until| now < *until)
    }

    /// ARP saw a MAC other than `mac` using `ip` recently.
    pub(crate) fn seen_in_use_by_other(&self, ip: Ipv4Addr, mac: &Mac, now: SystemTime) -> bool {
        self.in_use
            .get(&ip)
            .is_some_and(|u| u.mac != *mac && now < u.until)
    }

    /// Nobody else holds `ip`, it is not quarantined, and ARP has not seen
    /// another MAC on it. Says nothing about whether config allows it.
    pub(crate) fn is_free_for(&self, ip: Ipv4Addr, mac: &Mac, now: SystemTime) -> bool {
        self.holder(ip, now).is_none_or(|h| h == *mac)
            && !self.is_quarantined(ip, now)
            && !self.seen_in_use_by_other(ip, mac, now)
    }

    /// `mac` may be given `ip` now: config allows it and it is free.
    pub(crate) fn available_for(
        &self,
        cfg: &ServerConfig,
        mac: &Mac,
        ip: Ipv4Addr,
        now: SystemTime,
    ) -> bool {
        cfg.allowed_for(mac, ip)
            && self.is_free_for(ip, mac, now)
            && !self.remembered_for_other(cfg, ip, mac, now)
    }

    /// Chooses the address to offer `mac` (RFC 2131 §4.3.1): its reservation,
    /// its current or previous lease, its pending offer, the requested
    /// address, then a free pool address. `None` when the pool is exhausted.
    pub(crate) fn choose(
        &self,
        cfg: &ServerConfig,
        mac: &Mac,
        requested: Option<Ipv4Addr>,
        now: SystemTime,
    ) -> Option<Ipv4Addr> {
        let candidates = [
            cfg.reservation_for(mac),
            self.leases.get(mac).map(|l| l.ip),
            self.offers.get(mac).map(|o| o.ip),
            requested.filter(|ip| cfg.in_range(*ip)),
        ];
        candidates
            .into_iter()
            .flatten()
            .find(|ip| self.available_for(cfg, mac, *ip, now))
            .or_else(|| self.free_pool_address(cfg, mac, now))
    }

    /// A free pool address for a newcomer. Addresses nobody has ever held
    /// come first (lowest first), so that devices that are merely offline
    /// keep their address as long as the pool allows; then the remembered
    /// address whose owner has been gone longest, but only once it is older
    /// than `lease_time × REMEMBER_LEASES`; last, the address of the oldest
    /// pending offer to another MAC (offers are tentative). Active leases,
    /// reservations and recently remembered addresses are never taken.
    fn free_pool_address(
        &self,
        cfg: &ServerConfig,
        mac: &Mac,
        now: SystemTime,
    ) -> Option<Ipv4Addr> {
        let start = u64::from(u32::from(cfg.range_start));
        let end = u64::from(u32::from(cfg.range_end));
        // The lowest address nobody has ever held: walk the records'
        // addresses in order (the index) to the first gap, then skip what
        // else holds an address (the box, reservations, quarantine, ARP
        // sightings, pending offers: few). No allocation, one pass.
        let held_otherwise = |c: u64| {
            let Ok(ip) = u32::try_from(c).map(Ipv4Addr::from) else {
                return true;
            };
            ip == cfg.server_ip
                || cfg.reserved_by(ip).is_some()
                || self.is_quarantined(ip, now)
                || self.seen_in_use_by_other(ip, mac, now)
                || self.offers.values().any(|o| o.ip == ip && now < o.until)
        };
        let (Ok(lo), Ok(hi)) = (u32::try_from(start), u32::try_from(end)) else {
            return None;
        };
        let mut records = self
            .by_ip
            .range(Ipv4Addr::from(lo)..=Ipv4Addr::from(hi))
            .map(|(ip, _)| u64::from(u32::from(*ip)))
            .peekable();
        let mut candidate = start;
        while candidate <= end {
            while records.next_if(|&r| r < candidate).is_some() {}
            if records.peek() == Some(&candidate) || held_otherwise(candidate) {
                candidate += 1;
                continue;
            }
            return u32::try_from(candidate).ok().map(Ipv4Addr::from);
        }
        // Every address is held, remembered or offered: the slow path.
        let mut blocked: BTreeSet<u64> = BTreeSet::new();
        blocked.insert(u64::from(u32::from(cfg.server_ip)));
        blocked.extend(
            cfg.reservations
                .iter()
                .map(|(_, ip)| u64::from(u32::from(*ip))),
        );
        blocked.extend(
            self.leases
                .values()
                .filter(|l| l.mac != *mac && Self::recent(cfg, l, now))
                .map(|l| u64::from(u32::from(l.ip))),
        );
        blocked.extend(
            self.quarantine
                .iter()
                .filter(|(_, until)| now < **until)
                .map(|(ip, _)| u64::from(u32::from(*ip))),
        );
        blocked.extend(
            self.in_use
                .iter()
                .filter(|(_, u)| u.mac != *mac && now < u.until)
                .map(|(ip, _)| u64::from(u32::from(*ip))),
        );
        let offered = |ip: Ipv4Addr| {
            self.offers
                .iter()
                .any(|(m, o)| o.ip == ip && m != mac && now < o.until)
        };
        let usable =
            |ip: Ipv4Addr| cfg.in_range(ip) && !blocked.contains(&u64::from(u32::from(ip)));
        // Every address is held, remembered or offered: reuse the one whose
        // owner has been gone longest (beyond the memory horizon)...
        self.leases
            .values()
            .filter(|l| usable(l.ip) && !offered(l.ip))
            .min_by_key(|l| (l.expires, l.ip))
            .map(|l| l.ip)
            // ...else the oldest pending offer to someone else.
            .or_else(|| {
                self.offers
                    .iter()
                    .filter(|(m, o)| {
                        *m != mac
                            && now < o.until
                            && after(now, OFFER_HOLD.saturating_sub(OFFER_MIN_HOLD)) >= o.until
                            && usable(o.ip)
                    })
                    .min_by_key(|(_, o)| (o.until, o.ip))
                    .map(|(_, o)| o.ip)
            })
    }

    /// Holds `ip` for `mac` until `now + OFFER_HOLD`. Another MAC's offer of
    /// the same address ends; beyond [`MAX_OFFERS`] the oldest offer ends.
    pub(crate) fn hold_offer(&mut self, mac: Mac, ip: Ipv4Addr, now: SystemTime) {
        self.offers.retain(|m, o| *m == mac || o.ip != ip);
        if !self.offers.contains_key(&mac) && self.offers.len() >= MAX_OFFERS {
            self.offers.retain(|_, o| now < o.until);
            if self.offers.len() >= MAX_OFFERS {
                let oldest = self
                    .offers
                    .iter()
                    .min_by_key(|(_, o)| o.until)
                    .map(|(m, _)| *m);
                if let Some(m) = oldest {
                    self.offers.remove(&m);
                }
            }
        }
        self.offers.insert(
            mac,
            Offer {
                ip,
                until: after(now, OFFER_HOLD),
            },
        );
    }

    pub(crate) fn offer_count(&self) -> usize {
        self.offers.len()
    }

    pub(crate) fn forget_offer(&mut self, mac: &Mac) {
        self.offers.remove(mac);
    }

    /// Binds `ip` to `mac` until `expires`. Other MACs' inactive records for
    /// the same address are forgotten (the address now belongs to `mac`).
    /// A `None` hostname keeps the one already on record.
    pub(crate) fn bind(
        &mut self,
        mac: Mac,
        ip: Ipv4Addr,
        hostname: Option<String>,
        expires: SystemTime,
    ) -> Lease {
        self.offers.remove(&mac);
        self.offers.retain(|_, o| o.ip != ip);
        let hostname = hostname.or_else(|| self.leases.get(&mac).and_then(|l| l.hostname.clone()));
        let lease = Lease {
            mac,
            ip,
            hostname,
            expires,
            state: LeaseState::Bound,
        };
        self.put(lease.clone());
        lease
    }

    /// Ends `mac`'s active lease on `ip`, remembering the association.
    /// Returns whether anything changed.
    pub(crate) fn release(&mut self, mac: &Mac, ip: Ipv4Addr, now: SystemTime) -> bool {
        match self.leases.get_mut(mac) {
            Some(l) if l.ip == ip && l.is_active(now) => {
                l.state = LeaseState::Released;
                l.expires = now;
                true
            }
            _ => false,
        }
    }

    /// `mac` declined `ip`: quarantine the address and forget `mac`'s record
    /// and offer for it. Returns whether `mac` held the address.
    pub(crate) fn decline(&mut self, mac: &Mac, ip: Ipv4Addr, now: SystemTime) -> bool {
        let had_lease = self.leases.get(mac).is_some_and(|l| l.ip == ip);
        let had_offer = self.offers.get(mac).is_some_and(|o| o.ip == ip);
        if !had_lease && !had_offer {
            return false;
        }
        if had_lease {
            self.drop_record(mac);
        }
        if had_offer {
            self.offers.remove(mac);
        }
        self.quarantine.insert(ip, after(now, DECLINE_QUARANTINE));
        true
    }

    /// ARP saw `mac` using `ip`.
    pub(crate) fn note_in_use(&mut self, ip: Ipv4Addr, mac: Mac, now: SystemTime) {
        if self.in_use.len() >= MAX_IN_USE_NOTES && !self.in_use.contains_key(&ip) {
            self.in_use.retain(|_, u| now < u.until);
            if self.in_use.len() >= MAX_IN_USE_NOTES {
                return;
            }
        }
        self.in_use.insert(
            ip,
            InUse {
                mac,
                until: after(now, IN_USE_HOLD),
            },
        );
    }

    /// Drops stale offers, quarantines and sightings; marks bound leases
    /// whose time has come as expired and returns them.
    pub(crate) fn housekeeping(&mut self, now: SystemTime) -> Vec<(Mac, Ipv4Addr)> {
        self.offers.retain(|_, o| now < o.until);
        self.quarantine.retain(|_, until| now < *until);
        self.in_use.retain(|_, u| now < u.until);
        let mut expired = Vec::new();
        for l in self.leases.values_mut() {
            if l.state == LeaseState::Bound && now >= l.expires {
                l.state = LeaseState::Expired;
                expired.push((l.mac, l.ip));
            }
        }
        expired
    }

    /// Earliest expiry among bound leases (when `housekeeping` has news).
    pub(crate) fn next_expiry(&self) -> Option<SystemTime> {
        self.leases
            .values()
            .filter(|l| l.state == LeaseState::Bound)
            .map(|l| l.expires)
            .min()
    }

    /// Forgets everything about `mac`. Returns whether there was a lease.
    pub(crate) fn forget(&mut self, mac: &Mac) -> bool {
        self.offers.remove(mac);
        self.drop_record(mac).is_some()
    }

    /// After a config change while running: forgets records and offers the config no
    /// longer allows, except that a
    /// device whose active lease is now outside the pool keeps it until it
    /// renews (it is then NAKed and moves into the new pool), so a range
    /// change never cuts a device off mid-lease. Returns whether a record was dropped.
    pub(crate) fn retain_for_reconfig(&mut self, cfg: &ServerConfig, now: SystemTime) -> bool {
        self.offers.retain(|mac, o| cfg.allowed_for(mac, o.ip));
        let before = self.leases.len();
        self.leases.retain(|mac, l| {
            cfg.allowed_for(mac, l.ip)
                || (l.is_active(now)
                    && cfg.subnet().is_host(l.ip)
                    && l.ip != cfg.server_ip
                    && cfg.reserved_by(l.ip).is_none_or(|m| m == *mac))
        });
        let leases = &self.leases;
        self.by_ip.retain(|_, m| leases.contains_key(m));
        self.leases.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The address index says exactly what the records say, whatever the
    /// order of binds, releases, declines, restores and reconfigurations.
    #[test]
    fn the_address_index_follows_every_change() {
        let cfg = ServerConfig {
            server_ip: Ipv4Addr::new(10, 0, 0, 1),
            server_mac: Mac([2, 0, 0, 0, 0, 1]),
            subnet_mask: Ipv4Addr::new(255, 255, 255, 0),
            range_start: Ipv4Addr::new(10, 0, 0, 10),
            range_end: Ipv4Addr::new(10, 0, 0, 29),
            router: None,
            dns: vec![],
            domain: None,
            mtu: None,
            lease_time: Duration::from_secs(60),
            reservations: vec![],
            probe_interval: None,
            node_leases: Vec::new(),
            hold_new: None,
            no_node: Vec::new(),
            serve: true,
        };
        let mut t = LeaseTable::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for step in 0..20_000u64 {
            let now = t0 + Duration::from_secs(step / 10);
            let mac = Mac([2, 0, 0, 0, 1, next(40) as u8]);
            let ip = Ipv4Addr::new(10, 0, 0, 5 + next(30) as u8);
            match next(7) {
                0 | 1 => {
                    if let Some(ip) = t.choose(&cfg, &mac, None, now) {
                        t.bind(mac, ip, None, now + cfg.lease_time);
                    }
                }
                2 => {
                    t.bind(mac, ip, None, now + cfg.lease_time);
                }
                3 => {
                    t.release(&mac, ip, now);
                }
                4 => {
                    t.decline(&mac, ip, now);
                }
                5 => {
                    t.restore(Lease {
                        mac,
                        ip,
                        hostname: None,
                        expires: now + Duration::from_secs(next(200)),
                        state: LeaseState::Bound,
                    });
                }
                _ => {
                    if next(50) == 0 {
                        let mut narrower = cfg.clone();
                        narrower.range_end = Ipv4Addr::new(10, 0, 0, 20);
                        t.retain_for_reconfig(&narrower, now);
                    } else {
                        t.forget(&mac);
                    }
                }
            }
            let derived: BTreeMap<Ipv4Addr, Mac> =
                t.leases.values().map(|l| (l.ip, l.mac)).collect();
            assert_eq!(
                derived.len(),
                t.leases.len(),
                "two records for one address at step {step}"
            );
            assert_eq!(derived, t.by_ip, "index out of step at step {step}");
        }
    }

    #[test]
    fn hostname_sanitising() {
        assert_eq!(sanitize_hostname("printer-1\0"), Some("printer-1".into()));
        assert_eq!(sanitize_hostname("a b;c"), Some("abc".into()));
        assert_eq!(sanitize_hostname("\u{1F600}"), None);
        assert_eq!(sanitize_hostname("..."), None);
        assert_eq!(
            sanitize_hostname(&"x".repeat(300)).map(|s| s.len()),
            Some(63)
        );
    }
}
