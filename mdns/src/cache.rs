//! A cache of what bridged devices announce over Multicast DNS (RFC 6762):
//! PTR, SRV, TXT, A and AAAA records, each until its TTL runs out. Goodbye
//! packets (TTL 0) remove a record after one second (§10.1); a record with
//! the cache-flush bit replaces the other records of its name and type
//! (§10.2). Sans-IO: the daemon hands it every mDNS packet seen on the
//! bridge and asks it questions; time is an argument.

use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Records kept at most (a bridge has a handful of devices; this bounds a
/// flood of announcements).
pub const MAX_RECORDS: usize = 4096;

/// The mDNS group and port.
pub const MDNS_V4: std::net::Ipv4Addr = std::net::Ipv4Addr::new(224, 0, 0, 251);
/// The mDNS port.
pub const MDNS_PORT: u16 = 5353;

/// A packet that is not mDNS we can use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum MdnsError {
    /// Not a DNS message.
    #[error("not a DNS message")]
    Malformed,
}

/// One cached record.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The record, its name lowercased, TTL as announced.
    pub record: Record,
    /// When it runs out.
    pub expires: Instant,
    /// Who announced it.
    pub source: IpAddr,
}

/// Counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Packets handed in.
    pub packets: u64,
    /// Packets that did not parse.
    pub malformed: u64,
    /// Records dropped because the cache was full.
    pub overflow: u64,
}

/// The cache.
#[derive(Debug, Default)]
pub struct Cache {
    entries: Vec<Entry>,
    stats: CacheStats,
}

fn kept(t: RecordType) -> bool {
    matches!(
        t,
        RecordType::PTR | RecordType::SRV | RecordType::TXT | RecordType::A | RecordType::AAAA
    )
}

fn same_data(a: &Record, b: &Record) -> bool {
    a.name == b.name && a.record_type() == b.record_type() && a.data == b.data
}

impl Cache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counters.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// An mDNS packet from `source` (UDP payload). Queries are ignored: the
    /// box never answers for devices it only heard about.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        source: IpAddr,
        payload: &[u8],
    ) -> Result<(), MdnsError> {
        self.stats.packets += 1;
        let Ok(msg) = Message::from_vec(payload) else {
            self.stats.malformed += 1;
            return Err(MdnsError::Malformed);
        };
        if msg.metadata.message_type != MessageType::Response {
            return Ok(());
        }
        let records: Vec<Record> = msg
            .answers
            .into_iter()
            .chain(msg.additionals)
            .filter(|r| kept(r.record_type()))
            .map(|mut r| {
                r.name = r.name.to_lowercase();
                r
            })
            .collect();
        // Cache-flush: the packet's records of a name and type replace the
        // older ones (after a one-second grace, simplified to at once for
        // records not in this packet).
        for r in records.iter().filter(|r| r.mdns_cache_flush && r.ttl > 0) {
            self.entries.retain(|e| {
                !(e.record.name == r.name
                    && e.record.record_type() == r.record_type()
                    && !records.iter().any(|n| same_data(n, &e.record)))
            });
        }
        for r in records {
            let expires = if r.ttl == 0 {
                now + Duration::from_secs(1)
            } else {
                now + Duration::from_secs(u64::from(r.ttl))
            };
            if let Some(e) = self.entries.iter_mut().find(|e| same_data(&e.record, &r)) {
                e.expires = expires;
                e.record.ttl = r.ttl;
                e.source = source;
                continue;
            }
            if r.ttl == 0 {
                continue;
            }
            if self.entries.len() >= MAX_RECORDS {
                self.stats.overflow += 1;
                continue;
            }
            self.entries.push(Entry {
                record: r,
                expires,
                source,
            });
        }
        Ok(())
    }

    /// Drop what has run out.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.entries.retain(|e| e.expires > now);
    }

    /// When the next record runs out.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.entries.iter().map(|e| e.expires).min()
    }

    /// Live records of `name` (lowercase) and `rtype`, with their remaining TTL in seconds.
    pub fn lookup(&self, now: Instant, name: &Name, rtype: RecordType) -> Vec<(&Entry, u32)> {
        let name = name.to_lowercase();
        self.entries
            .iter()
            .filter(|e| e.expires > now && e.record.name == name && e.record.record_type() == rtype)
            .map(|e| {
                (
                    e,
                    e.expires
                        .saturating_duration_since(now)
                        .as_secs()
                        .min(u64::from(u32::MAX)) as u32,
                )
            })
            .collect()
    }

    /// Every live PTR record name (service types present on the bridge).
    pub fn ptr_names(&self, now: Instant) -> Vec<Name> {
        let mut names: Vec<Name> = self
            .entries
            .iter()
            .filter(|e| e.expires > now && e.record.record_type() == RecordType::PTR)
            .map(|e| e.record.name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Addresses (A/AAAA) of a `.local` host name.
    pub fn addresses(&self, now: Instant, host: &Name) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = Vec::new();
        for t in [RecordType::A, RecordType::AAAA] {
            for (e, _) in self.lookup(now, host, t) {
                match &e.record.data {
                    RData::A(a) => out.push(IpAddr::V4(a.0)),
                    RData::AAAA(a) => out.push(IpAddr::V6(a.0)),
                    _ => {}
                }
            }
        }
        out
    }
}

/// An mDNS query (QM, from port 5353) for the PTR records of these service
/// types, e.g. `_ipp._tcp.local.`: devices answer to the group, so the
/// answers reach the cache.
pub fn browse_query(types: &[Name]) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 0;
    for t in types {
        m.add_query(Query::query(t.clone(), RecordType::PTR));
    }
    m.to_vec().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, PTR, SRV, TXT};
    use std::net::Ipv4Addr;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn announce(records: Vec<Record>) -> Vec<u8> {
        let mut m = Message::response(0, hickory_proto::op::OpCode::Query);
        m.metadata.authoritative = true;
        for r in records {
            m.add_answer(r);
        }
        m.to_vec().unwrap()
    }

    fn printer(ttl: u32) -> Vec<Record> {
        vec![
            Record::from_rdata(
                n("_ipp._tcp.local."),
                ttl,
                RData::PTR(PTR(n("Office._ipp._tcp.local."))),
            ),
            Record::from_rdata(
                n("Office._ipp._tcp.local."),
                ttl,
                RData::SRV(SRV::new(0, 0, 8631, n("printer.local."))),
            ),
            Record::from_rdata(
                n("Office._ipp._tcp.local."),
                ttl,
                RData::TXT(TXT::new(vec!["rp=ipp/print".into()])),
            ),
            Record::from_rdata(
                n("printer.local."),
                ttl,
                RData::A(A(Ipv4Addr::new(10, 77, 1, 100))),
            ),
        ]
    }

    #[test]
    fn announcements_are_cached_until_their_ttl_and_goodbye_removes_them() {
        let t0 = Instant::now();
        let src = IpAddr::V4(Ipv4Addr::new(10, 77, 1, 100));
        let mut c = Cache::new();
        c.handle_packet(t0, src, &announce(printer(120))).unwrap();
        assert_eq!(c.len(), 4);
        assert_eq!(
            c.lookup(t0, &n("_IPP._tcp.local."), RecordType::PTR).len(),
            1
        );
        assert_eq!(c.addresses(t0, &n("printer.local.")), vec![src]);
        // TTL runs out.
        c.handle_timeout(t0 + Duration::from_secs(121));
        assert!(c.is_empty());
        // Goodbye: gone one second later.
        c.handle_packet(t0, src, &announce(printer(4500))).unwrap();
        c.handle_packet(t0, src, &announce(printer(0))).unwrap();
        assert_eq!(
            c.lookup(t0, &n("_ipp._tcp.local."), RecordType::PTR).len(),
            1
        );
        c.handle_timeout(t0 + Duration::from_millis(1100));
        assert!(c
            .lookup(
                t0 + Duration::from_millis(1100),
                &n("_ipp._tcp.local."),
                RecordType::PTR
            )
            .is_empty());
    }

    #[test]
    fn cache_flush_replaces_the_old_address() {
        let t0 = Instant::now();
        let src = IpAddr::V4(Ipv4Addr::new(10, 77, 1, 100));
        let mut c = Cache::new();
        c.handle_packet(t0, src, &announce(printer(120))).unwrap();
        let mut a = Record::from_rdata(
            n("printer.local."),
            120,
            RData::A(A(Ipv4Addr::new(10, 77, 1, 101))),
        );
        a.mdns_cache_flush = true;
        c.handle_packet(t0, src, &announce(vec![a])).unwrap();
        assert_eq!(
            c.addresses(t0, &n("printer.local.")),
            vec![IpAddr::V4(Ipv4Addr::new(10, 77, 1, 101))]
        );
    }

    #[test]
    fn queries_and_garbage_change_nothing() {
        let t0 = Instant::now();
        let mut c = Cache::new();
        let src = IpAddr::V4(Ipv4Addr::new(10, 77, 1, 100));
        c.handle_packet(t0, src, &browse_query(&[n("_ipp._tcp.local.")]))
            .unwrap();
        assert!(c.is_empty());
        assert_eq!(
            c.handle_packet(t0, src, b"\x00\x01garbage"),
            Err(MdnsError::Malformed)
        );
        assert_eq!(c.stats().malformed, 1);
    }
}
