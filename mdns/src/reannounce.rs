//! Site-to-site discovery, the mDNS side: the services another box exposes
//! ([`crate::remote::RemoteService`], learned by browsing its discovery
//! proxy) announced by Multicast DNS on this box's link, so that a phone on
//! the bridge finds a Chromecast or a printer at the other site with no app.
//!
//! One `Reannouncer` per link (the bridge; the uplink when configured).
//! For every service it claims two unique names (RFC 6762 §8): the instance
//! (`Living Room TV._googlecast._tcp.local`, SRV and TXT) and the host
//! (`tv.local`, A = the remote device's mesh address). A name is probed
//! three times before it is announced, so a name already in use on the link
//! is never taken: on a conflict, while probing or later (§9), the instance
//! becomes `Living Room TV (2)` and the host `tv-2`. Announcements go out
//! twice; records carry the TTL the remote gave (honoured, so they run out
//! on phones when the remote stops answering); services that vanish get a
//! goodbye (TTL 0, §10.1). Questions (PTR browse, `_services._dns-sd._udp`,
//! SRV/TXT/A) are answered with known-answer suppression (§7.1).
//!
//! Sans-IO: [`Reannouncer::set_offers`] after every browse, every mDNS packet
//! seen on the link to [`Reannouncer::handle_packet`], timers through
//! [`Reannouncer::handle_timeout`]; send what [`Reannouncer::poll_transmit`]
//! returns to the group.

use crate::probing::{next_announcement, ANNOUNCE_INTERVAL, PROBES, PROBE_INTERVAL};
use crate::remote::RemoteService;
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::{A, PTR, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Answers per packet (keeps a packet well under the bridge MTU with
/// [`crate::remote::MAX_TXT`]-sized TXT records).
const ANSWERS_PER_PACKET: usize = 6;
/// After this many renames of one name, it is given up (a hostile link
/// answering every probe must not keep us probing forever).
pub const MAX_SUFFIX: u32 = 20;
/// Names claimed at most (instances plus hosts) per link.
pub const MAX_CLAIMS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Probing {
        sent: u8,
        next: Instant,
    },
    Announcing {
        sent: u8,
        next: Instant,
    },
    Ready,
    /// Renamed too often: not announced.
    GivenUp,
}

#[derive(Debug, Clone)]
struct Claim {
    suffix: u32,
    state: State,
}

impl Claim {
    fn live(&self) -> bool {
        matches!(self.state, State::Announcing { .. } | State::Ready)
    }
}

#[derive(Debug, Clone)]
struct InstanceClaim {
    remote: String,
    offer: RemoteService,
    claim: Claim,
}

#[derive(Debug, Clone)]
struct HostClaim {
    remote: String,
    label: Vec<u8>,
    addrs: Vec<Ipv4Addr>,
    ttl: u32,
    claim: Claim,
}

/// Counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReannounceStats {
    /// Conflicts seen (a name of ours in use on the link).
    pub conflicts: u64,
    /// Goodbyes sent (records).
    pub goodbyes: u64,
    /// Services not announced (too many names, or renamed too often).
    pub refused: u64,
    /// Queries answered.
    pub answered: u64,
}

/// What is announced on one link.
#[derive(Debug, Default)]
pub struct Reannouncer {
    reserved: Vec<Vec<u8>>,
    instances: Vec<InstanceClaim>,
    hosts: Vec<HostClaim>,
    out: VecDeque<Vec<u8>>,
    stats: ReannounceStats,
    /// When each answered record was last multicast (RFC 6762 §6: at most
    /// once a second), keyed by lowercase name, type and data.
    last_sent: std::collections::HashMap<(Name, RecordType, Vec<u8>), Instant>,
}

/// A record is multicast in answers at most this often (RFC 6762 §6).
const MIN_REPEAT: Duration = Duration::from_secs(1);

fn local() -> Name {
    Name::from_ascii("local.").expect("valid")
}

fn truncate_utf8(mut b: Vec<u8>, max: usize) -> Vec<u8> {
    if b.len() <= max {
        return b;
    }
    b.truncate(max);
    while !b.is_empty() && std::str::from_utf8(&b).is_err() {
        b.pop();
    }
    b
}

/// `Living Room TV`, `Living Room TV (2)`, ... within one DNS label.
fn instance_label(base: &[u8], suffix: u32) -> Vec<u8> {
    if suffix <= 1 {
        return truncate_utf8(base.to_vec(), 63);
    }
    let tail = format!(" ({suffix})");
    let mut l = truncate_utf8(base.to_vec(), 63 - tail.len());
    l.extend_from_slice(tail.as_bytes());
    l
}

/// `tv`, `tv-2`, ...
fn host_label(base: &[u8], suffix: u32) -> Vec<u8> {
    if suffix <= 1 {
        return base.to_vec();
    }
    let tail = format!("-{suffix}");
    let mut l = base[..base.len().min(63 - tail.len())].to_vec();
    l.extend_from_slice(tail.as_bytes());
    l
}

fn service_name(s: &[Vec<u8>; 2]) -> Option<Name> {
    Name::from_labels([s[0].as_slice(), s[1].as_slice()])
        .ok()?
        .append_domain(&local())
        .ok()
}

fn lower(n: &Name) -> Name {
    let mut n = n.to_lowercase();
    n.set_fqdn(true);
    n
}

fn record(name: Name, ttl: u32, data: RData, flush: bool) -> Record {
    let mut r = Record::from_rdata(name, ttl, data);
    r.mdns_cache_flush = flush;
    r
}

impl Reannouncer {
    /// A reannouncer that never claims the labels in `reserved` (the box's
    /// own mDNS name).
    pub fn new(reserved: &[String]) -> Self {
        Reannouncer {
            reserved: reserved
                .iter()
                .map(|r| r.to_ascii_lowercase().into_bytes())
                .collect(),
            ..Default::default()
        }
    }

    /// Counters.
    pub fn stats(&self) -> ReannounceStats {
        self.stats
    }

    fn is_reserved(&self, label: &[u8]) -> bool {
        let l = label.to_ascii_lowercase();
        self.reserved.contains(&l)
    }

    fn instance_fqdn(&self, i: &InstanceClaim) -> Option<Name> {
        let label = instance_label(&i.offer.instance, i.claim.suffix);
        Name::from_labels([label.as_slice()])
            .ok()?
            .append_domain(&service_name(&i.offer.service)?)
            .ok()
    }

    fn host_fqdn(h: &HostClaim) -> Option<Name> {
        Name::from_labels([host_label(&h.label, h.claim.suffix).as_slice()])
            .ok()?
            .append_domain(&local())
            .ok()
    }

    fn host_of(&self, i: &InstanceClaim) -> Option<&HostClaim> {
        self.hosts.iter().find(|h| {
            h.remote == i.remote
                && h.label == i.offer.host
                && !matches!(h.claim.state, State::GivenUp)
        })
    }

    /// Is `name` (lowercase) one of ours, other than claim `skip`?
    fn taken_by_us(&self, name: &Name, skip: (bool, usize)) -> bool {
        let name = lower(name);
        self.instances.iter().enumerate().any(|(k, i)| {
            (false, k) != skip
                && !matches!(i.claim.state, State::GivenUp)
                && self.instance_fqdn(i).is_some_and(|n| lower(&n) == name)
        }) || self.hosts.iter().enumerate().any(|(k, h)| {
            (true, k) != skip
                && !matches!(h.claim.state, State::GivenUp)
                && Self::host_fqdn(h).is_some_and(|n| lower(&n) == name)
        })
    }

    /// Pick the first suffix that no claim of ours and no reserved name has.
    fn settle_suffix(&mut self, host: bool, k: usize) {
        loop {
            let (name, reserved) = if host {
                let h = &self.hosts[k];
                (
                    Self::host_fqdn(h),
                    self.is_reserved(&host_label(&h.label, h.claim.suffix)),
                )
            } else {
                let i = &self.instances[k];
                (
                    self.instance_fqdn(i),
                    self.is_reserved(&instance_label(&i.offer.instance, i.claim.suffix)),
                )
            };
            let clash = reserved || name.as_ref().is_none_or(|n| self.taken_by_us(n, (host, k)));
            if !clash {
                return;
            }
            let c = if host {
                &mut self.hosts[k].claim
            } else {
                &mut self.instances[k].claim
            };
            c.suffix += 1;
            if c.suffix > MAX_SUFFIX {
                c.state = State::GivenUp;
                self.stats.refused += 1;
                return;
            }
        }
    }

    /// The services of remote box `remote` now (from
    /// [`crate::remote::RemoteBrowser::services`]). New ones are probed,
    /// changed ones announced again, vanished ones said goodbye to.
    pub fn set_offers(&mut self, now: Instant, remote: &str, offers: &[RemoteService]) {
        // Instances that vanished or changed.
        let mut k = 0;
        while k < self.instances.len() {
            let i = &self.instances[k];
            if i.remote != remote {
                k += 1;
                continue;
            }
            let now_offer = offers
                .iter()
                .find(|o| o.service == i.offer.service && o.instance == i.offer.instance);
            match now_offer {
                None => {
                    let gone = self.instances.remove(k);
                    if gone.claim.live() {
                        let recs = self.instance_records(&gone, 0);
                        self.goodbye(recs);
                    }
                    continue;
                }
                Some(o) => {
                    let changed = o.port != i.offer.port
                        || o.txt != i.offer.txt
                        || o.host != i.offer.host
                        || o.priority != i.offer.priority
                        || o.weight != i.offer.weight;
                    let live = i.claim.live();
                    self.instances[k].offer = o.clone();
                    if changed && live {
                        let recs = self.instance_records(&self.instances[k], o.ttl);
                        self.send_records(recs, Vec::new());
                    }
                }
            }
            k += 1;
        }
        // Hosts that vanished or changed.
        let mut k = 0;
        while k < self.hosts.len() {
            let h = &self.hosts[k];
            if h.remote != remote {
                k += 1;
                continue;
            }
            let users: Vec<&RemoteService> = offers.iter().filter(|o| o.host == h.label).collect();
            if users.is_empty() {
                let gone = self.hosts.remove(k);
                if gone.claim.live() {
                    let recs = Self::host_records(&gone, 0);
                    self.goodbye(recs);
                }
                continue;
            }
            let addrs = users[0].addrs.clone();
            let ttl = users.iter().map(|o| o.ttl).max().unwrap_or(0);
            let changed = addrs != h.addrs;
            self.hosts[k].addrs = addrs;
            self.hosts[k].ttl = ttl;
            if changed && self.hosts[k].claim.live() {
                let recs = Self::host_records(&self.hosts[k], ttl);
                self.send_records(recs, Vec::new());
            }
            k += 1;
        }
        // New hosts and instances.
        for o in offers {
            if !self
                .hosts
                .iter()
                .any(|h| h.remote == remote && h.label == o.host)
            {
                if self.hosts.len() + self.instances.len() >= MAX_CLAIMS {
                    self.stats.refused += 1;
                    continue;
                }
                self.hosts.push(HostClaim {
                    remote: remote.to_string(),
                    label: o.host.clone(),
                    addrs: o.addrs.clone(),
                    ttl: o.ttl,
                    claim: Claim {
                        suffix: 1,
                        state: State::Probing { sent: 0, next: now },
                    },
                });
                let k = self.hosts.len() - 1;
                self.settle_suffix(true, k);
            }
            if !self.instances.iter().any(|i| {
                i.remote == remote && i.offer.service == o.service && i.offer.instance == o.instance
            }) {
                if self.hosts.len() + self.instances.len() >= MAX_CLAIMS {
                    self.stats.refused += 1;
                    continue;
                }
                self.instances.push(InstanceClaim {
                    remote: remote.to_string(),
                    offer: o.clone(),
                    claim: Claim {
                        suffix: 1,
                        state: State::Probing { sent: 0, next: now },
                    },
                });
                let k = self.instances.len() - 1;
                self.settle_suffix(false, k);
            }
        }
    }

    /// PTR, SRV, TXT of an instance (with `ttl`).
    fn instance_records(&self, i: &InstanceClaim, ttl: u32) -> Vec<Record> {
        let (Some(name), Some(svc)) = (self.instance_fqdn(i), service_name(&i.offer.service))
        else {
            return Vec::new();
        };
        let mut out = vec![record(svc, ttl, RData::PTR(PTR(name.clone())), false)];
        if let Some(target) = self.host_of(i).and_then(Self::host_fqdn) {
            out.push(record(
                name.clone(),
                ttl,
                RData::SRV(SRV::new(
                    i.offer.priority,
                    i.offer.weight,
                    i.offer.port,
                    target,
                )),
                true,
            ));
        }
        let txt = if i.offer.txt.is_empty() {
            TXT::from_bytes(vec![&b""[..]])
        } else {
            TXT::from_bytes(i.offer.txt.iter().map(|s| s.as_slice()).collect())
        };
        out.push(record(name, ttl, RData::TXT(txt), true));
        out
    }

    fn host_records(h: &HostClaim, ttl: u32) -> Vec<Record> {
        let Some(name) = Self::host_fqdn(h) else {
            return Vec::new();
        };
        h.addrs
            .iter()
            .map(|a| record(name.clone(), ttl, RData::A(A(*a)), true))
            .collect()
    }

    fn goodbye(&mut self, mut recs: Vec<Record>) {
        for r in &mut recs {
            r.ttl = 0;
        }
        self.stats.goodbyes += recs.len() as u64;
        self.send_records(recs, Vec::new());
    }

    /// Responses of at most [`ANSWERS_PER_PACKET`] answers each.
    fn send_records(&mut self, answers: Vec<Record>, additionals: Vec<Record>) {
        if answers.is_empty() {
            return;
        }
        let chunks: Vec<&[Record]> = answers.chunks(ANSWERS_PER_PACKET).collect();
        let last = chunks.len() - 1;
        for (n, chunk) in chunks.into_iter().enumerate() {
            let mut m = Message::response(0, OpCode::Query);
            m.metadata.authoritative = true;
            for r in chunk {
                m.add_answer(r.clone());
            }
            if n == last && additionals.len() <= ANSWERS_PER_PACKET {
                for r in &additionals {
                    if !m.answers.contains(r) {
                        m.additionals.push(r.clone());
                    }
                }
            }
            if let Ok(b) = m.to_vec() {
                self.out.push_back(b);
            }
        }
    }

    /// Probes for every name whose probe is due, a few names per packet.
    fn probe(&mut self, now: Instant) {
        let due = |c: &Claim| matches!(c.state, State::Probing { sent, next } if next <= now && sent < PROBES);
        let mut names: Vec<(Name, Vec<Record>)> = Vec::new();
        for h in self.hosts.iter().filter(|h| due(&h.claim)) {
            if let Some(n) = Self::host_fqdn(h) {
                names.push((n, Self::host_records(h, h.ttl)));
            }
        }
        for i in self.instances.iter().filter(|i| due(&i.claim)) {
            if let Some(n) = self.instance_fqdn(i) {
                let recs = self
                    .instance_records(i, i.offer.ttl)
                    .into_iter()
                    .skip(1)
                    .collect();
                names.push((n, recs));
            }
        }
        for chunk in names.chunks(ANSWERS_PER_PACKET) {
            let mut m = Message::new(0, MessageType::Query, OpCode::Query);
            for (n, recs) in chunk {
                let mut q = Query::query(n.clone(), RecordType::ANY);
                q.set_mdns_unicast_response(true);
                m.add_query(q);
                m.authorities.extend(recs.iter().cloned());
            }
            if let Ok(b) = m.to_vec() {
                self.out.push_back(b);
            }
        }
    }

    /// Advance probes and announcements that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Probes: one packet for every name whose probe is due.
        self.probe(now);
        let mut announce = Vec::new();
        let step = |c: &mut Claim| -> bool {
            match c.state {
                State::Probing { sent, next } if next <= now => {
                    if sent < PROBES {
                        c.state = State::Probing {
                            sent: sent + 1,
                            next: now + PROBE_INTERVAL,
                        };
                        false
                    } else {
                        // The first announcement now, the second in a second.
                        c.state = State::Announcing {
                            sent: 1,
                            next: now + ANNOUNCE_INTERVAL,
                        };
                        true
                    }
                }
                State::Announcing { sent, next } if next <= now => {
                    c.state = match next_announcement(sent, now) {
                        Some((sent, next)) => State::Announcing { sent, next },
                        None => State::Ready,
                    };
                    true
                }
                _ => false,
            }
        };
        for k in 0..self.hosts.len() {
            if step(&mut self.hosts[k].claim) {
                announce.extend(Self::host_records(&self.hosts[k], self.hosts[k].ttl));
            }
        }
        for k in 0..self.instances.len() {
            if step(&mut self.instances[k].claim) {
                let i = &self.instances[k];
                match self.host_of(i).map(|h| h.claim.live()) {
                    Some(true) => announce.extend(self.instance_records(i, i.offer.ttl)),
                    // Wait for the host's name: announce the instance with it.
                    Some(false) => {
                        self.instances[k].claim.state = State::Announcing {
                            sent: 0,
                            next: now + PROBE_INTERVAL,
                        }
                    }
                    None => {
                        self.instances[k].claim.state = State::GivenUp;
                        self.stats.refused += 1;
                    }
                }
            }
        }
        self.send_records(announce, Vec::new());
    }

    /// When [`Reannouncer::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.hosts
            .iter()
            .map(|h| &h.claim)
            .chain(self.instances.iter().map(|i| &i.claim))
            .filter_map(|c| match c.state {
                State::Probing { next, .. } | State::Announcing { next, .. } => Some(next),
                _ => None,
            })
            .min()
    }

    /// The next packet to send to the group.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    fn rename(&mut self, now: Instant, host: bool, k: usize) {
        self.stats.conflicts += 1;
        let was_live;
        if host {
            was_live = self.hosts[k].claim.live();
            if was_live {
                let recs = Self::host_records(&self.hosts[k], 0);
                self.goodbye(recs);
            }
            let c = &mut self.hosts[k].claim;
            c.suffix += 1;
            c.state = State::Probing { sent: 0, next: now };
        } else {
            was_live = self.instances[k].claim.live();
            if was_live {
                let recs = self.instance_records(&self.instances[k], 0);
                self.goodbye(recs);
            }
            let c = &mut self.instances[k].claim;
            c.suffix += 1;
            c.state = State::Probing { sent: 0, next: now };
        }
        let c = if host {
            &self.hosts[k].claim
        } else {
            &self.instances[k].claim
        };
        if c.suffix > MAX_SUFFIX {
            if host {
                self.hosts[k].claim.state = State::GivenUp;
            } else {
                self.instances[k].claim.state = State::GivenUp;
            }
            self.stats.refused += 1;
            return;
        }
        self.settle_suffix(host, k);
        if host {
            // Instances on this host must not point at the old name: they
            // are probed again with the new target.
            let (remote, label) = (self.hosts[k].remote.clone(), self.hosts[k].label.clone());
            for j in 0..self.instances.len() {
                let i = &self.instances[j];
                if i.remote == remote && i.offer.host == label && i.claim.live() {
                    let recs = self.instance_records(i, 0);
                    self.goodbye(recs);
                    self.instances[j].claim.state = State::Probing { sent: 0, next: now };
                }
            }
        }
    }

    /// Which claim has this name: (is host, index).
    fn find(&self, name: &Name) -> Option<(bool, usize)> {
        let name = lower(name);
        if let Some(k) = self.hosts.iter().position(|h| {
            !matches!(h.claim.state, State::GivenUp)
                && Self::host_fqdn(h).is_some_and(|n| lower(&n) == name)
        }) {
            return Some((true, k));
        }
        self.instances
            .iter()
            .position(|i| {
                !matches!(i.claim.state, State::GivenUp)
                    && self.instance_fqdn(i).is_some_and(|n| lower(&n) == name)
            })
            .map(|k| (false, k))
    }

    fn our_records(&self, host: bool, k: usize) -> Vec<Record> {
        if host {
            Self::host_records(&self.hosts[k], self.hosts[k].ttl)
        } else {
            let i = &self.instances[k];
            self.instance_records(i, i.offer.ttl)
                .into_iter()
                .skip(1)
                .collect()
        }
    }

    /// An mDNS packet seen on the link, from anyone but us. Returns whether
    /// it was answered.
    pub fn handle_packet(&mut self, now: Instant, payload: &[u8]) -> bool {
        let Ok(msg) = Message::from_vec(payload) else {
            return false;
        };
        match msg.metadata.message_type {
            MessageType::Response => {
                // Someone else answers for one of our names with other data (§9).
                let mut clashes = Vec::new();
                for r in msg.answers.iter().chain(&msg.additionals) {
                    if r.ttl == 0 {
                        continue;
                    }
                    let Some((host, k)) = self.find(&r.name) else {
                        continue;
                    };
                    let ours = self.our_records(host, k);
                    let same_type = ours.iter().any(|o| o.record_type() == r.record_type());
                    let clash = if same_type {
                        !ours.iter().any(|o| o.data == r.data)
                    } else {
                        // Another host's records under our unique name.
                        matches!(
                            r.record_type(),
                            RecordType::A | RecordType::AAAA | RecordType::SRV | RecordType::TXT
                        )
                    };
                    if clash && !clashes.contains(&(host, k)) {
                        clashes.push((host, k));
                    }
                }
                for (host, k) in clashes {
                    self.rename(now, host, k);
                }
                false
            }
            MessageType::Query => {
                // A simultaneous probe for a name we are probing (§8.2):
                // the lexicographically later data wins.
                let mut lost = Vec::new();
                for r in &msg.authorities {
                    let Some((host, k)) = self.find(&r.name) else {
                        continue;
                    };
                    let probing = if host {
                        matches!(self.hosts[k].claim.state, State::Probing { .. })
                    } else {
                        matches!(self.instances[k].claim.state, State::Probing { .. })
                    };
                    if !probing {
                        continue;
                    }
                    let theirs = rdata_bytes(r);
                    let ours = self
                        .our_records(host, k)
                        .iter()
                        .filter(|o| o.record_type() == r.record_type())
                        .map(rdata_bytes)
                        .max();
                    if ours.is_none_or(|o| theirs > o) && !lost.contains(&(host, k)) {
                        lost.push((host, k));
                    }
                }
                for (host, k) in lost {
                    self.rename(now, host, k);
                }
                self.answer(now, &msg)
            }
        }
    }

    fn answer(&mut self, now: Instant, msg: &Message) -> bool {
        let known = |r: &Record| {
            msg.answers.iter().any(|k| {
                k.name.to_lowercase() == r.name.to_lowercase()
                    && k.data == r.data
                    && k.ttl.saturating_mul(2) >= r.ttl
            })
        };
        let mut answers: Vec<Record> = Vec::new();
        let mut additionals: Vec<Record> = Vec::new();
        let services_enum = Name::from_ascii("_services._dns-sd._udp.local.").expect("valid");
        for q in &msg.queries {
            if q.query_class() == DNSClass::NONE {
                continue;
            }
            let qn = lower(q.name());
            let want = |t: RecordType| q.query_type() == t || q.query_type() == RecordType::ANY;
            if qn == services_enum && want(RecordType::PTR) {
                let mut seen = Vec::new();
                for i in self.instances.iter().filter(|i| i.claim.live()) {
                    if let Some(svc) = service_name(&i.offer.service) {
                        if !seen.contains(&svc) {
                            seen.push(svc.clone());
                            answers.push(record(
                                services_enum.clone(),
                                i.offer.ttl,
                                RData::PTR(PTR(svc)),
                                false,
                            ));
                        }
                    }
                }
                continue;
            }
            for i in self.instances.iter().filter(|i| i.claim.live()) {
                let recs = self.instance_records(i, i.offer.ttl);
                let host = self
                    .host_of(i)
                    .filter(|h| h.claim.live())
                    .map(|h| Self::host_records(h, h.ttl))
                    .unwrap_or_default();
                let Some(ptr) = recs.first() else { continue };
                if lower(&ptr.name) == qn && want(RecordType::PTR) {
                    answers.push(ptr.clone());
                    additionals.extend(recs[1..].iter().cloned());
                    additionals.extend(host);
                } else if self.instance_fqdn(i).is_some_and(|n| lower(&n) == qn) {
                    for r in &recs[1..] {
                        if want(r.record_type()) {
                            answers.push(r.clone());
                        }
                    }
                    additionals.extend(host);
                }
            }
            for h in self.hosts.iter().filter(|h| h.claim.live()) {
                if Self::host_fqdn(h).is_some_and(|n| lower(&n) == qn) && want(RecordType::A) {
                    answers.extend(Self::host_records(h, h.ttl));
                }
            }
        }
        answers.retain(|r| !known(r));
        let mut dedup: Vec<Record> = Vec::new();
        for r in answers {
            if !dedup.contains(&r) {
                dedup.push(r);
            }
        }
        let mut extra: Vec<Record> = Vec::new();
        for r in additionals {
            if !dedup.contains(&r) && !extra.contains(&r) {
                extra.push(r);
            }
        }
        // Not the same record again within a second (RFC 6762 §6): a busy
        // link's queries (or a browser's known-answer list spread over
        // several packets) must not make us repeat hundreds of records.
        if self.last_sent.len() > 4 * MAX_CLAIMS {
            self.last_sent
                .retain(|_, t| now.saturating_duration_since(*t) < MIN_REPEAT);
        }
        dedup.retain(|r| {
            let key = (lower(&r.name), r.record_type(), rdata_bytes(r));
            match self.last_sent.get(&key) {
                Some(t) if now.saturating_duration_since(*t) < MIN_REPEAT => false,
                _ => {
                    self.last_sent.insert(key, now);
                    true
                }
            }
        });
        if dedup.is_empty() {
            return false;
        }
        self.stats.answered += 1;
        self.send_records(dedup, extra);
        true
    }

    /// The services announced now, for the web page and logs.
    pub fn announced(&self) -> Vec<Announced> {
        self.instances
            .iter()
            .filter(|i| i.claim.live())
            .filter_map(|i| {
                let h = self.host_of(i)?;
                let host =
                    String::from_utf8_lossy(&host_label(&h.label, h.claim.suffix)).into_owned();
                let service = format!(
                    "{}.{}",
                    String::from_utf8_lossy(&i.offer.service[0]),
                    String::from_utf8_lossy(&i.offer.service[1])
                );
                let label = instance_label(&i.offer.instance, i.claim.suffix);
                Some(Announced {
                    remote: i.remote.clone(),
                    instance: String::from_utf8_lossy(&label).into_owned(),
                    service,
                    host,
                    offer: i.offer.clone(),
                })
            })
            .collect()
    }
}

/// A service announced on the link for a remote box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    /// The remote box's name.
    pub remote: String,
    /// The instance label as announced ("Living Room TV (2)").
    pub instance: String,
    /// The service type ("_googlecast._tcp").
    pub service: String,
    /// The host label as announced ("tv").
    pub host: String,
    /// What the remote box said.
    pub offer: RemoteService,
}

fn rdata_bytes(r: &Record) -> Vec<u8> {
    use hickory_proto::serialize::binary::BinEncodable;
    r.data.to_bytes().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name from dotted labels that may hold spaces.
    fn n(s: &str) -> Result<Name, hickory_proto::ProtoError> {
        let mut n = Name::from_labels(s.trim_end_matches('.').split('.').map(str::as_bytes))?;
        n.set_fqdn(true);
        Ok(n)
    }

    fn offer(instance: &str, host: &str, ttl: u32) -> RemoteService {
        RemoteService {
            service: [b"_googlecast".to_vec(), b"_tcp".to_vec()],
            instance: instance.as_bytes().to_vec(),
            host: host.as_bytes().to_vec(),
            priority: 0,
            weight: 0,
            port: 8009,
            txt: vec![b"md=Chromecast".to_vec(), b"fn=Living Room".to_vec()],
            addrs: vec![Ipv4Addr::new(10, 77, 1, 20)],
            ttl,
        }
    }

    fn drain(r: &mut Reannouncer) -> Vec<Message> {
        let mut v = Vec::new();
        while let Some(p) = r.poll_transmit() {
            v.push(Message::from_vec(&p).unwrap());
        }
        v
    }

    /// Run timers for `secs`, returning everything sent.
    fn run(r: &mut Reannouncer, from: Instant, secs: u64) -> Vec<Message> {
        let mut out = Vec::new();
        let mut t = from;
        while t <= from + Duration::from_secs(secs) {
            r.handle_timeout(t);
            out.extend(drain(r));
            t += Duration::from_millis(50);
        }
        out
    }

    fn browse(name: &str, t: RecordType) -> Vec<u8> {
        let mut q = Message::new(0, MessageType::Query, OpCode::Query);
        q.add_query(Query::query(n(name).unwrap(), t));
        q.to_vec().unwrap()
    }

    #[test]
    fn probes_three_times_then_announces_twice_and_answers_browses() {
        let t0 = Instant::now();
        let mut r = Reannouncer::new(&["meshbridge".into()]);
        r.set_offers(t0, "home", &[offer("Living Room TV", "tv", 10)]);
        let sent = run(&mut r, t0, 4);
        let probes: Vec<_> = sent
            .iter()
            .filter(|m| m.metadata.message_type == MessageType::Query)
            .collect();
        assert_eq!(probes.len(), 3);
        assert!(probes[0]
            .authorities
            .iter()
            .any(|a| matches!(a.data, RData::A(_))));
        let announcements: Vec<_> = sent
            .iter()
            .filter(|m| m.metadata.message_type == MessageType::Response)
            .collect();
        // Host and instance, each announced twice.
        let ptrs = announcements
            .iter()
            .flat_map(|m| &m.answers)
            .filter(|a| a.record_type() == RecordType::PTR)
            .count();
        assert_eq!(ptrs, 2);
        // A browse gets PTR, with SRV, TXT and A as additionals.
        assert!(r.handle_packet(t0, &browse("_googlecast._tcp.local.", RecordType::PTR)));
        let m = drain(&mut r).remove(0);
        assert_eq!(
            m.answers[0].data,
            RData::PTR(PTR(n("Living Room TV._googlecast._tcp.local.").unwrap()))
        );
        assert_eq!(m.answers[0].ttl, 10);
        assert!(
            m.additionals.iter().any(|a| matches!(&a.data,
            RData::SRV(s) if s.port == 8009 && s.target == Name::from_ascii("tv.local.").unwrap()))
        );
        assert!(m
            .additionals
            .iter()
            .any(|a| a.data == RData::A(A(Ipv4Addr::new(10, 77, 1, 20)))));
        // The same question again within a second: not repeated (RFC 6762 §6).
        assert!(!r.handle_packet(t0, &browse("_googlecast._tcp.local.", RecordType::PTR)));
        let t1 = t0 + MIN_REPEAT;
        assert!(r.handle_packet(t1, &browse("_googlecast._tcp.local.", RecordType::PTR)));
        drain(&mut r);
        // The host's address alone.
        assert!(r.handle_packet(t0, &browse("TV.local.", RecordType::A)));
        assert_eq!(drain(&mut r)[0].answers.len(), 1);
        // Other types are not ours.
        assert!(!r.handle_packet(t0, &browse("_ipp._tcp.local.", RecordType::PTR)));
        assert_eq!(r.announced().len(), 1);
    }

    #[test]
    fn known_answers_are_not_repeated() {
        let t0 = Instant::now();
        let mut r = Reannouncer::new(&[]);
        r.set_offers(t0, "home", &[offer("TV", "tv", 10)]);
        run(&mut r, t0, 4);
        let mut q = Message::new(0, MessageType::Query, OpCode::Query);
        q.add_query(Query::query(
            Name::from_ascii("_googlecast._tcp.local.").unwrap(),
            RecordType::PTR,
        ));
        q.add_answer(Record::from_rdata(
            Name::from_ascii("_googlecast._tcp.local.").unwrap(),
            9,
            RData::PTR(PTR(Name::from_ascii("TV._googlecast._tcp.local.").unwrap())),
        ));
        assert!(!r.handle_packet(t0, &q.to_vec().unwrap()));
    }

    #[test]
    fn a_service_that_vanishes_gets_a_goodbye() {
        let t0 = Instant::now();
        let mut r = Reannouncer::new(&[]);
        r.set_offers(t0, "home", &[offer("TV", "tv", 10)]);
        run(&mut r, t0, 4);
        r.set_offers(t0, "home", &[]);
        let bye = drain(&mut r);
        let recs: Vec<_> = bye.iter().flat_map(|m| &m.answers).collect();
        assert!(recs
            .iter()
            .any(|a| a.record_type() == RecordType::PTR && a.ttl == 0));
        assert!(recs
            .iter()
            .any(|a| a.record_type() == RecordType::A && a.ttl == 0));
        assert!(recs.iter().all(|a| a.ttl == 0));
        assert!(!r.handle_packet(t0, &browse("_googlecast._tcp.local.", RecordType::PTR)));
        // Another remote's services are left alone.
        r.set_offers(t0, "office", &[offer("TV", "tv", 10)]);
        r.set_offers(t0, "home", &[]);
        assert!(r.poll_timeout().is_some());
    }

    #[test]
    fn a_name_in_use_on_the_link_is_not_taken() {
        let t0 = Instant::now();
        let mut r = Reannouncer::new(&[]);
        r.set_offers(t0, "home", &[offer("TV", "tv", 10)]);
        r.handle_timeout(t0);
        let probe = drain(&mut r);
        assert_eq!(probe.len(), 1);
        // A device on our link already is tv.local: it answers the probe.
        let mut m = Message::response(0, OpCode::Query);
        m.add_answer(record(
            Name::from_ascii("tv.local.").unwrap(),
            120,
            RData::A(A(Ipv4Addr::new(10, 78, 1, 5))),
            true,
        ));
        // And a device has the instance name too.
        m.add_answer(record(
            Name::from_ascii("TV._googlecast._tcp.local.").unwrap(),
            120,
            RData::SRV(SRV::new(
                0,
                0,
                8009,
                Name::from_ascii("other.local.").unwrap(),
            )),
            true,
        ));
        r.handle_packet(t0, &m.to_vec().unwrap());
        assert_eq!(r.stats().conflicts, 2);
        run(&mut r, t0, 4);
        let a = r.announced();
        assert_eq!(a.len(), 1);
        assert_eq!(
            (
                a[0].instance.as_str(),
                a[0].service.as_str(),
                a[0].host.as_str()
            ),
            ("TV (2)", "_googlecast._tcp", "tv-2")
        );
        // Later, someone claims tv-2.local too: we move again, with a goodbye.
        let mut m = Message::response(0, OpCode::Query);
        m.add_answer(record(
            Name::from_ascii("tv-2.local.").unwrap(),
            120,
            RData::A(A(Ipv4Addr::new(10, 78, 1, 6))),
            true,
        ));
        r.handle_packet(t0, &m.to_vec().unwrap());
        let bye = drain(&mut r);
        assert!(bye.iter().flat_map(|m| &m.answers).any(|a| a.ttl == 0));
        run(&mut r, t0 + Duration::from_secs(5), 4);
        assert_eq!(r.announced()[0].host, "tv-3");
        // Our own records echoed back are no conflict.
        let mut echo = Message::response(0, OpCode::Query);
        echo.add_answer(record(
            Name::from_ascii("tv-3.local.").unwrap(),
            10,
            RData::A(A(Ipv4Addr::new(10, 77, 1, 20))),
            true,
        ));
        r.handle_packet(t0, &echo.to_vec().unwrap());
        assert_eq!(r.stats().conflicts, 3);
    }

    #[test]
    fn reserved_and_duplicate_names_get_suffixes() {
        let t0 = Instant::now();
        let mut r = Reannouncer::new(&["meshbridge".into()]);
        r.set_offers(t0, "home", &[offer("A", "meshbridge", 10)]);
        r.set_offers(
            t0,
            "office",
            &[offer("A", "tv", 10), offer("B", "meshbridge-3", 10)],
        );
        run(&mut r, t0, 4);
        let got = r.announced();
        assert_eq!(got.len(), 3);
        let hosts: Vec<&str> = got.iter().map(|a| a.host.as_str()).collect();
        assert!(!hosts.contains(&"meshbridge"), "{got:?}");
        assert!(hosts.contains(&"meshbridge-2") && hosts.contains(&"meshbridge-3"));
        let instances: Vec<&str> = got.iter().map(|a| a.instance.as_str()).collect();
        assert!(
            instances.contains(&"A") && instances.contains(&"A (2)"),
            "{got:?}"
        );
    }

    #[test]
    fn a_link_answering_every_probe_makes_us_give_up() {
        let t0 = Instant::now();
        let mut r = Reannouncer::new(&[]);
        r.set_offers(t0, "home", &[offer("TV", "tv", 10)]);
        for n in 0..(MAX_SUFFIX + 5) {
            let host = if n == 0 {
                "tv".to_string()
            } else {
                format!("tv-{}", n + 1)
            };
            let mut m = Message::response(0, OpCode::Query);
            m.add_answer(record(
                Name::from_ascii(format!("{host}.local.")).unwrap(),
                120,
                RData::A(A(Ipv4Addr::new(10, 78, 1, 5))),
                true,
            ));
            r.handle_packet(t0, &m.to_vec().unwrap());
        }
        run(&mut r, t0, 4);
        assert!(r.announced().is_empty());
        assert!(r.stats().refused >= 1);
    }

    #[test]
    fn long_and_hostile_instance_names_stay_one_label() {
        let long = "é".repeat(40); // 80 bytes
        assert!(instance_label(long.as_bytes(), 1).len() <= 63);
        let l = instance_label(long.as_bytes(), 12);
        assert!(l.len() <= 63 && std::str::from_utf8(&l).unwrap().ends_with(" (12)"));
        let t0 = Instant::now();
        let mut r = Reannouncer::new(&[]);
        r.set_offers(t0, "home", &[offer("a.b\0<c>", "tv", 10)]);
        run(&mut r, t0, 4);
        assert_eq!(r.announced().len(), 1);
        assert!(r.handle_packet(t0, &browse("_googlecast._tcp.local.", RecordType::PTR)));
    }
}
