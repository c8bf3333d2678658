//! Browsing another box's DNS-SD discovery proxy (RFC 8766) over unicast
//! DNS, for site-to-site discovery: box B asks box A's DNS server (at A's
//! mesh address) which services of the allowed types A's bridge has
//! (`PTR _ipp._tcp.<A's domain>`), then each instance's SRV and TXT and
//! each target host's A record. The result, [`RemoteService`]s with their
//! remaining TTLs, is what [`crate::reannounce::Reannouncer`] announces over
//! mDNS on B's own link.
//!
//! Sans-IO: [`RemoteBrowser::handle_timeout`] starts a round of queries
//! every [`BROWSE_INTERVAL`]; the daemon sends each [`RemoteBrowser::poll_transmit`]
//! datagram to the remote's port 53 and hands every reply to
//! [`RemoteBrowser::handle_response`]. A reply must carry the id and the
//! question of a query still outstanding, and only records that answer that
//! question are used; a remote box is a peer, not an authority over our
//! link, so everything it sends is bounded ([`MAX_INSTANCES`], [`MAX_HOSTS`],
//! [`MAX_TXT`]) and names that could not be announced as one `.local`
//! label are refused.

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// How often the remote proxy is browsed. The proxy caps its TTLs at
/// [`crate::TTL_CAP`] (10 s), so this keeps records fresh with one lost
/// round to spare.
pub const BROWSE_INTERVAL: Duration = Duration::from_secs(4);
/// A query without a reply after this long is forgotten.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// Service instances kept per remote box.
pub const MAX_INSTANCES: usize = 256;
/// Host names kept per remote box.
pub const MAX_HOSTS: usize = 256;
/// Addresses kept per host.
pub const MAX_ADDRS: usize = 4;
/// The largest TXT record (all strings, with their length bytes) kept: an
/// mDNS answer must fit one packet on the bridge.
pub const MAX_TXT: usize = 1300;
/// Queries outstanding at once.
const MAX_PENDING: usize = 1024;
/// The longest TTL believed (the remote's answers are snapshots).
const MAX_TTL: u32 = 4500;

/// One service of a remote box, complete (SRV, TXT and an address known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteService {
    /// The service type's two labels, lowercase, like `_ipp`, `_tcp`.
    pub service: [Vec<u8>; 2],
    /// The instance label as the remote shows it ("Living Room TV").
    pub instance: Vec<u8>,
    /// The target host's first label, lowercase ("printer").
    pub host: Vec<u8>,
    /// SRV priority, weight, port.
    pub priority: u16,
    /// SRV weight.
    pub weight: u16,
    /// SRV port.
    pub port: u16,
    /// TXT strings.
    pub txt: Vec<Vec<u8>>,
    /// The host's IPv4 addresses (the remote device's mesh address).
    pub addrs: Vec<Ipv4Addr>,
    /// Seconds the least fresh of these records still lives.
    pub ttl: u32,
}

/// Counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BrowserStats {
    /// Queries sent.
    pub queries: u64,
    /// Replies used.
    pub replies: u64,
    /// Replies dropped: malformed, unknown id, wrong question, error code.
    pub rejected: u64,
    /// Records dropped: out of bounds, not under the question, too big.
    pub dropped_records: u64,
    /// Queries that timed out.
    pub timeouts: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Asked {
    Ptr(usize),
    Srv(Name),
    Txt(Name),
    A(Name),
}

#[derive(Debug)]
struct Pending {
    asked: Asked,
    name: Name,
    qtype: RecordType,
    sent: Instant,
}

#[derive(Debug, Clone)]
struct Instance {
    service: usize,
    label: Vec<u8>,
    ptr_expires: Instant,
    srv: Option<(u16, u16, u16, Name, Instant)>,
    txt: Option<(Vec<Vec<u8>>, Instant)>,
}

#[derive(Debug, Clone)]
struct Host {
    addrs: Vec<Ipv4Addr>,
    expires: Instant,
}

/// The browser of one remote box's discovery proxy.
#[derive(Debug)]
pub struct RemoteBrowser {
    domain: Name,
    services: Vec<[Vec<u8>; 2]>,
    next_round: Instant,
    next_id: u16,
    pending: HashMap<u16, Pending>,
    out: VecDeque<Vec<u8>>,
    /// Keyed by the lowercased instance name under the remote domain.
    instances: BTreeMap<Name, Instance>,
    /// Keyed by the lowercased host name under the remote domain.
    hosts: BTreeMap<Name, Host>,
    stats: BrowserStats,
}

fn lower_labels(n: &Name) -> Vec<Vec<u8>> {
    n.iter().map(|l| l.to_ascii_lowercase()).collect()
}

fn ttl(t: u32) -> Duration {
    Duration::from_secs(u64::from(t.min(MAX_TTL)))
}

impl RemoteBrowser {
    /// Browse the proxy serving `domain` (like `mesh.home.arpa`) for the
    /// service types `services` (like `_ipp._tcp`), starting now.
    pub fn new(now: Instant, domain: &Name, services: &[String], first_id: u16) -> Self {
        let mut domain = domain.to_lowercase();
        domain.set_fqdn(true);
        let services = services
            .iter()
            .filter_map(|s| Name::from_ascii(s).ok())
            .map(|n| lower_labels(&n))
            .filter(|l| l.len() == 2)
            .map(|l| [l[0].clone(), l[1].clone()])
            .collect();
        RemoteBrowser {
            domain,
            services,
            next_round: now,
            next_id: first_id,
            pending: HashMap::new(),
            out: VecDeque::new(),
            instances: BTreeMap::new(),
            hosts: BTreeMap::new(),
            stats: BrowserStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> BrowserStats {
        self.stats
    }

    fn service_name(&self, i: usize) -> Option<Name> {
        let s = self.services.get(i)?;
        Name::from_labels([s[0].as_slice(), s[1].as_slice()])
            .ok()?
            .append_domain(&self.domain)
            .ok()
    }

    fn ask(&mut self, now: Instant, asked: Asked, name: Name, qtype: RecordType) {
        if self.pending.len() >= MAX_PENDING
            || self
                .pending
                .values()
                .any(|p| p.asked == asked && p.qtype == qtype)
        {
            return;
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = false;
        m.add_query(Query::query(name.clone(), qtype));
        let Ok(bytes) = m.to_vec() else { return };
        self.pending.insert(
            id,
            Pending {
                asked,
                name,
                qtype,
                sent: now,
            },
        );
        self.stats.queries += 1;
        self.out.push_back(bytes);
    }

    /// Start a round when due; forget what ran out and queries that timed out.
    pub fn handle_timeout(&mut self, now: Instant) {
        let before = self.pending.len();
        self.pending
            .retain(|_, p| now.saturating_duration_since(p.sent) < QUERY_TIMEOUT);
        self.stats.timeouts += (before - self.pending.len()) as u64;
        self.expire(now);
        if now >= self.next_round {
            self.next_round = now + BROWSE_INTERVAL;
            for i in 0..self.services.len() {
                if let Some(n) = self.service_name(i) {
                    self.ask(now, Asked::Ptr(i), n, RecordType::PTR);
                }
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        self.instances.retain(|_, i| i.ptr_expires > now);
        for i in self.instances.values_mut() {
            if i.srv.as_ref().is_some_and(|s| s.4 <= now) {
                i.srv = None;
            }
            if i.txt.as_ref().is_some_and(|t| t.1 <= now) {
                i.txt = None;
            }
        }
        self.hosts.retain(|_, h| h.expires > now);
    }

    /// When [`RemoteBrowser::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.next_round;
        for p in self.pending.values() {
            t = t.min(p.sent + QUERY_TIMEOUT);
        }
        for i in self.instances.values() {
            t = t.min(i.ptr_expires);
        }
        for h in self.hosts.values() {
            t = t.min(h.expires);
        }
        t
    }

    /// The next query to send to the remote's DNS server.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// `<label>.<service>.<domain>` -> the label, if `n` has that shape.
    fn instance_label(&self, n: &Name, service: usize) -> Option<Vec<u8>> {
        let svc = self.service_name(service)?;
        if !svc.zone_of(n) || n.num_labels() != svc.num_labels() + 1 {
            return None;
        }
        // RFC 6763 §4.1.1: an instance name is Net-Unicode text, no control
        // characters. mDNS resolvers (avahi) drop a whole packet with a NUL in
        // a name: one such record would hide every other one sent with it.
        let label = n.iter().next()?;
        let text = std::str::from_utf8(label).ok()?;
        if text.is_empty() || text.chars().any(char::is_control) {
            return None;
        }
        Some(label.to_vec())
    }

    /// `<host>.<domain>`: one label under the remote's domain.
    fn is_host(&self, n: &Name) -> bool {
        self.domain.zone_of(n)
            && n.num_labels() == self.domain.num_labels() + 1
            && n.iter().next().is_some_and(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            })
    }

    /// A reply from the remote's DNS server (UDP payload).
    pub fn handle_response(&mut self, now: Instant, payload: &[u8]) {
        let Ok(msg) = Message::from_vec(payload) else {
            self.stats.rejected += 1;
            return;
        };
        let id = msg.metadata.id;
        let matches = self.pending.get(&id).is_some_and(|p| {
            msg.metadata.message_type == MessageType::Response
                && msg.queries.len() == 1
                && msg.queries[0].query_type() == p.qtype
                && msg.queries[0].name().to_lowercase() == p.name.to_lowercase()
        });
        if !matches {
            self.stats.rejected += 1;
            return;
        }
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        if msg.metadata.response_code != ResponseCode::NoError
            && msg.metadata.response_code != ResponseCode::NXDomain
        {
            self.stats.rejected += 1;
            return;
        }
        self.stats.replies += 1;
        let qname = p.name.to_lowercase();
        let answers: Vec<_> = msg
            .answers
            .iter()
            .filter(|r| r.name.to_lowercase() == qname && r.record_type() == p.qtype)
            .collect();
        self.stats.dropped_records += (msg.answers.len() - answers.len()) as u64;
        match p.asked {
            Asked::Ptr(service) => {
                let mut seen = Vec::new();
                for r in answers {
                    let RData::PTR(target) = &r.data else {
                        continue;
                    };
                    let Some(label) = self.instance_label(&target.0, service) else {
                        self.stats.dropped_records += 1;
                        continue;
                    };
                    let key = target.0.to_lowercase();
                    if !self.instances.contains_key(&key) && self.instances.len() >= MAX_INSTANCES {
                        self.stats.dropped_records += 1;
                        continue;
                    }
                    let e = self.instances.entry(key.clone()).or_insert(Instance {
                        service,
                        label: label.clone(),
                        ptr_expires: now,
                        srv: None,
                        txt: None,
                    });
                    e.label = label;
                    e.ptr_expires = now + ttl(r.ttl);
                    seen.push(key.clone());
                    self.ask(
                        now,
                        Asked::Srv(key.clone()),
                        target.0.clone(),
                        RecordType::SRV,
                    );
                    self.ask(
                        now,
                        Asked::Txt(key.clone()),
                        target.0.clone(),
                        RecordType::TXT,
                    );
                }
                // The proxy's answer is the whole list: the others are gone.
                self.instances
                    .retain(|k, i| i.service != service || seen.contains(k));
                self.expire(now);
            }
            Asked::Srv(key) => {
                let srv = answers.iter().find_map(|r| match &r.data {
                    RData::SRV(s) if self.is_host(&s.target) => Some((s.clone(), r.ttl)),
                    _ => None,
                });
                if srv.is_none() && !answers.is_empty() {
                    self.stats.dropped_records += answers.len() as u64;
                }
                let target = srv.as_ref().map(|(s, _)| s.target.to_lowercase());
                if let Some(i) = self.instances.get_mut(&key) {
                    i.srv = srv.map(|(s, t)| {
                        (
                            s.priority,
                            s.weight,
                            s.port,
                            s.target.to_lowercase(),
                            now + ttl(t),
                        )
                    });
                }
                if let Some(t) = target {
                    self.ask(now, Asked::A(t.clone()), t, RecordType::A);
                }
            }
            Asked::Txt(key) => {
                let txt = answers.iter().find_map(|r| match &r.data {
                    RData::TXT(t) => Some((
                        t.txt_data.iter().map(|s| s.to_vec()).collect::<Vec<_>>(),
                        r.ttl,
                    )),
                    _ => None,
                });
                let txt = match txt {
                    Some((t, _)) if t.iter().map(|s| s.len() + 1).sum::<usize>() > MAX_TXT => {
                        self.stats.dropped_records += 1;
                        None
                    }
                    other => other,
                };
                if let Some(i) = self.instances.get_mut(&key) {
                    i.txt = txt.map(|(t, l)| (t, now + ttl(l)));
                }
            }
            Asked::A(host) => {
                let mut addrs = Vec::new();
                let mut least = MAX_TTL;
                for r in answers {
                    if let RData::A(a) = &r.data {
                        let ip = a.0;
                        if ip.is_unspecified()
                            || ip.is_loopback()
                            || ip.is_multicast()
                            || ip.is_broadcast()
                            || ip.is_link_local()
                        {
                            self.stats.dropped_records += 1;
                            continue;
                        }
                        if addrs.len() < MAX_ADDRS && !addrs.contains(&ip) {
                            addrs.push(ip);
                            least = least.min(r.ttl);
                        }
                    }
                }
                if addrs.is_empty() {
                    self.hosts.remove(&host);
                } else if self.hosts.contains_key(&host) || self.hosts.len() < MAX_HOSTS {
                    self.hosts.insert(
                        host,
                        Host {
                            addrs,
                            expires: now + ttl(least),
                        },
                    );
                } else {
                    self.stats.dropped_records += 1;
                }
            }
        }
    }

    /// The complete services, with the seconds their records still live.
    pub fn services(&self, now: Instant) -> Vec<RemoteService> {
        let left = |t: Instant| {
            let d = t.saturating_duration_since(now);
            u32::try_from(d.as_secs() + u64::from(d.subsec_nanos() > 0)).unwrap_or(u32::MAX)
        };
        let mut out = Vec::new();
        for i in self.instances.values() {
            let (Some((prio, weight, port, target, srv_exp)), Some((txt, txt_exp))) =
                (&i.srv, &i.txt)
            else {
                continue;
            };
            let Some(h) = self.hosts.get(target) else {
                continue;
            };
            let Some(service) = self.services.get(i.service) else {
                continue;
            };
            let ttl = [i.ptr_expires, *srv_exp, *txt_exp, h.expires]
                .into_iter()
                .map(left)
                .min()
                .unwrap_or(0);
            if ttl == 0 {
                continue;
            }
            out.push(RemoteService {
                service: service.clone(),
                instance: i.label.clone(),
                host: target
                    .iter()
                    .next()
                    .map(|l| l.to_ascii_lowercase())
                    .unwrap_or_default(),
                priority: *prio,
                weight: *weight,
                port: *port,
                txt: txt.clone(),
                addrs: h.addrs.clone(),
                ttl,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, PTR, SRV, TXT};
    use hickory_proto::rr::Record;

    /// A name from dotted labels that may hold spaces.
    fn n(s: &str) -> Name {
        let mut n =
            Name::from_labels(s.trim_end_matches('.').split('.').map(str::as_bytes)).unwrap();
        n.set_fqdn(true);
        n
    }

    /// Answer every query like the remote proxy would.
    fn answer(q: &[u8], records: &[Record]) -> Vec<u8> {
        let q = Message::from_vec(q).unwrap();
        let mut m = Message::response(q.metadata.id, OpCode::Query);
        let question = q.queries[0].clone();
        for r in records {
            if r.name.to_lowercase() == question.name().to_lowercase()
                && r.record_type() == question.query_type()
            {
                m.add_answer(r.clone());
            }
        }
        m.add_query(question);
        m.to_vec().unwrap()
    }

    fn records() -> Vec<Record> {
        vec![
            Record::from_rdata(
                n("_googlecast._tcp.a.example."),
                10,
                RData::PTR(PTR(n("Living Room TV._googlecast._tcp.a.example."))),
            ),
            Record::from_rdata(
                n("Living Room TV._googlecast._tcp.a.example."),
                10,
                RData::SRV(SRV::new(0, 0, 8009, n("tv.a.example."))),
            ),
            Record::from_rdata(
                n("Living Room TV._googlecast._tcp.a.example."),
                10,
                RData::TXT(TXT::new(vec![
                    "fn=Living Room TV".into(),
                    "md=Chromecast".into(),
                ])),
            ),
            Record::from_rdata(
                n("tv.a.example."),
                8,
                RData::A(A(Ipv4Addr::new(10, 77, 1, 20))),
            ),
        ]
    }

    fn run(b: &mut RemoteBrowser, now: Instant, recs: &[Record]) -> usize {
        let mut sent = 0;
        b.handle_timeout(now);
        while let Some(q) = b.poll_transmit() {
            sent += 1;
            b.handle_response(now, &answer(&q, recs));
        }
        sent
    }

    #[test]
    fn browses_ptr_srv_txt_and_a_of_the_allowed_types_only() {
        let t0 = Instant::now();
        let mut b = RemoteBrowser::new(t0, &n("a.example."), &["_googlecast._tcp".into()], 1);
        let mut recs = records();
        recs.push(Record::from_rdata(
            n("_ipp._tcp.a.example."),
            10,
            RData::PTR(PTR(n("Printer._ipp._tcp.a.example."))),
        ));
        assert_eq!(run(&mut b, t0, &recs), 4, "PTR, SRV, TXT, A");
        let s = b.services(t0);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].instance, b"Living Room TV");
        assert_eq!(s[0].service, [b"_googlecast".to_vec(), b"_tcp".to_vec()]);
        assert_eq!(s[0].host, b"tv");
        assert_eq!(s[0].port, 8009);
        assert_eq!(s[0].addrs, vec![Ipv4Addr::new(10, 77, 1, 20)]);
        assert_eq!(s[0].txt[1], b"md=Chromecast");
        assert_eq!(s[0].ttl, 8, "the least fresh record's TTL");
    }

    #[test]
    fn records_run_out_by_their_ttl_and_vanish_when_the_list_drops_them() {
        let t0 = Instant::now();
        let mut b = RemoteBrowser::new(t0, &n("a.example."), &["_googlecast._tcp".into()], 1);
        run(&mut b, t0, &records());
        assert_eq!(b.services(t0 + Duration::from_secs(7)).len(), 1);
        // Nobody answers: the address runs out after 8 s.
        b.handle_timeout(t0 + Duration::from_secs(8));
        assert!(b.services(t0 + Duration::from_secs(8)).is_empty());
        // Answered again, then the PTR list is empty: gone at once.
        let t1 = t0 + Duration::from_secs(20);
        run(&mut b, t1, &records());
        assert_eq!(b.services(t1).len(), 1);
        let t2 = t1 + BROWSE_INTERVAL;
        run(&mut b, t2, &records()[1..]);
        assert!(b.services(t2).is_empty());
    }

    #[test]
    fn replies_that_do_not_answer_an_outstanding_question_are_dropped() {
        let t0 = Instant::now();
        let mut b = RemoteBrowser::new(t0, &n("a.example."), &["_googlecast._tcp".into()], 1);
        b.handle_timeout(t0);
        let q = b.poll_transmit().unwrap();
        // Wrong id.
        let mut reply = Message::from_vec(&answer(&q, &records())).unwrap();
        reply.metadata.id ^= 0x55;
        b.handle_response(t0, &reply.to_vec().unwrap());
        // Garbage.
        b.handle_response(t0, b"\x01\x02garbage");
        assert_eq!(b.stats().rejected, 2);
        // A PTR pointing outside the service, an SRV pointing outside the domain.
        let hostile = vec![
            Record::from_rdata(
                n("_googlecast._tcp.a.example."),
                10,
                RData::PTR(PTR(n("x.y._googlecast._tcp.a.example."))),
            ),
            Record::from_rdata(
                n("_googlecast._tcp.a.example."),
                10,
                RData::PTR(PTR(n("bad\0name._googlecast._tcp.a.example."))),
            ),
            Record::from_rdata(
                n("_googlecast._tcp.a.example."),
                10,
                RData::PTR(PTR(Name::from_labels([
                    &b"\xff\xfe"[..],
                    b"_googlecast",
                    b"_tcp",
                    b"a",
                    b"example",
                ])
                .unwrap())),
            ),
            Record::from_rdata(
                n("_googlecast._tcp.a.example."),
                10,
                RData::PTR(PTR(n("TV._googlecast._tcp.a.example."))),
            ),
            Record::from_rdata(
                n("TV._googlecast._tcp.a.example."),
                10,
                RData::SRV(SRV::new(0, 0, 8009, n("meshbridge.local."))),
            ),
            Record::from_rdata(
                n("TV._googlecast._tcp.a.example."),
                10,
                RData::TXT(TXT::from_bytes(vec![&[b'x'; 250][..]; 8])),
            ),
        ];
        b.handle_response(t0, &answer(&q, &hostile));
        while let Some(q) = b.poll_transmit() {
            b.handle_response(t0, &answer(&q, &hostile));
        }
        assert!(b.services(t0).is_empty());
        assert_eq!(
            b.instances.len(),
            1,
            "only TV: not the NUL or non-UTF-8 names"
        );
        assert!(b.stats().dropped_records >= 5, "{:?}", b.stats());
    }

    #[test]
    fn instance_count_is_bounded() {
        let t0 = Instant::now();
        let mut b = RemoteBrowser::new(t0, &n("a.example."), &["_ipp._tcp".into()], 1);
        let many: Vec<Record> = (0..MAX_INSTANCES + 50)
            .map(|i| {
                Record::from_rdata(
                    n("_ipp._tcp.a.example."),
                    10,
                    RData::PTR(PTR(n(&format!("p{i}._ipp._tcp.a.example.")))),
                )
            })
            .collect();
        b.handle_timeout(t0);
        let q = b.poll_transmit().unwrap();
        b.handle_response(t0, &answer(&q, &many));
        assert_eq!(b.instances.len(), MAX_INSTANCES);
        // Timeouts are counted and forgotten.
        b.handle_timeout(t0 + QUERY_TIMEOUT);
        assert!(b.pending.is_empty());
    }
}
