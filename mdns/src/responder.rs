//! The box's own Multicast DNS name (`meshbridge.local`) on one link:
//! probing and announcing (RFC 6762 §8), answering questions for it, and
//! resolving conflicts (§9): if another host already has the name, the box
//! becomes `meshbridge-2.local`, then `-3`, and so on. It answers only for
//! its own name, never on behalf of other devices. Sans-IO: packets and
//! time in, packets out.

use crate::probing::{next_announcement, PROBES, PROBE_INTERVAL};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::{A, PTR, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// TTL of the box's address record (RFC 6762 §10: 120 s for host records).
pub const HOST_TTL: u32 = 120;
/// TTL of the web page's PTR and TXT records (RFC 6762 §10: 75 minutes).
pub const SERVICE_TTL: u32 = 4500;
/// After this many conflicts in a row, slow down (RFC 6762 §8.1: 15 conflicts in 10 s → wait 5 s).
const MAX_FAST_CONFLICTS: u32 = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Probing { sent: u8, next: Instant },
    Announcing { sent: u8, next: Instant },
    Ready,
}

/// Something the responder wants known.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResponderEvent {
    /// The name is ours now (after probing).
    NameClaimed(String),
    /// Someone else has the name: trying another.
    Conflict {
        /// The name that was taken.
        lost: String,
    },
}

/// The box's name on one link.
#[derive(Debug)]
pub struct Responder {
    base: String,
    suffix: u32,
    addr: Ipv4Addr,
    state: State,
    conflicts: u32,
    out: VecDeque<Vec<u8>>,
    events: VecDeque<ResponderEvent>,
    /// The web page's port, announced as `_http._tcp` (DNS-SD, RFC 6763).
    http_port: Option<u16>,
}

impl Responder {
    /// Also announce the web page as `<host>._http._tcp.local` on `port`.
    pub fn with_http(mut self, port: u16) -> Self {
        self.http_port = Some(port);
        self
    }

    fn http_type() -> Name {
        Name::from_ascii("_http._tcp.local.").expect("valid")
    }

    fn http_instance(&self) -> Name {
        Name::from_ascii(format!("{}._http._tcp.local.", self.host()))
            .unwrap_or_else(|_| Name::from_ascii("meshbridge._http._tcp.local.").expect("valid"))
    }

    /// The web page's records: PTR (shared), SRV and TXT (ours alone).
    fn http_records(&self, flush: bool) -> Vec<Record> {
        let Some(port) = self.http_port else {
            return Vec::new();
        };
        let mut srv = Record::from_rdata(
            self.http_instance(),
            HOST_TTL,
            RData::SRV(SRV::new(0, 0, port, self.fqdn())),
        );
        srv.mdns_cache_flush = flush;
        let mut txt = Record::from_rdata(
            self.http_instance(),
            SERVICE_TTL,
            RData::TXT(TXT::new(vec!["path=/".to_string()])),
        );
        txt.mdns_cache_flush = flush;
        let ptr = Record::from_rdata(
            Self::http_type(),
            SERVICE_TTL,
            RData::PTR(PTR(self.http_instance())),
        );
        vec![ptr, srv, txt]
    }

    /// Claim `<base>.local` for `addr` on this link, starting now.
    pub fn new(now: Instant, base: &str, addr: Ipv4Addr) -> Self {
        Responder {
            base: base.to_string(),
            suffix: 1,
            addr,
            state: State::Probing { sent: 0, next: now },
            conflicts: 0,
            out: VecDeque::new(),
            events: VecDeque::new(),
            http_port: None,
        }
    }

    /// The host name being claimed or held, like `meshbridge-2`.
    pub fn host(&self) -> String {
        if self.suffix == 1 {
            self.base.clone()
        } else {
            format!("{}-{}", self.base, self.suffix)
        }
    }

    fn fqdn(&self) -> Name {
        Name::from_ascii(format!("{}.local.", self.host()))
            .unwrap_or_else(|_| Name::from_ascii("meshbridge.local.").expect("valid"))
    }

    /// Whether the name is claimed.
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    fn a_record(&self, flush: bool) -> Record {
        let mut r = Record::from_rdata(self.fqdn(), HOST_TTL, RData::A(A(self.addr)));
        r.mdns_cache_flush = flush;
        r
    }

    fn probe(&self) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 0;
        let mut q = Query::query(self.fqdn(), RecordType::ANY);
        q.set_mdns_unicast_response(true);
        m.add_query(q);
        m.authorities.push(self.a_record(false));
        if self.http_port.is_some() {
            let mut q = Query::query(self.http_instance(), RecordType::ANY);
            q.set_mdns_unicast_response(true);
            m.add_query(q);
            m.authorities
                .extend(self.http_records(false).into_iter().skip(1));
        }
        m.to_vec().unwrap_or_default()
    }

    fn announcement(&self) -> Vec<u8> {
        let mut m = Message::response(0, OpCode::Query);
        m.metadata.authoritative = true;
        m.add_answer(self.a_record(true));
        for r in self.http_records(true) {
            m.add_answer(r);
        }
        m.to_vec().unwrap_or_default()
    }

    /// The answer to a browse for `_http._tcp` or for the instance.
    fn http_answer(&self) -> Vec<u8> {
        let mut m = Message::response(0, OpCode::Query);
        m.metadata.authoritative = true;
        for r in self.http_records(true) {
            m.add_answer(r);
        }
        m.additionals.push(self.a_record(true));
        m.to_vec().unwrap_or_default()
    }

    fn rename(&mut self, now: Instant) {
        let lost = self.host();
        self.suffix += 1;
        self.conflicts += 1;
        let wait = if self.conflicts > MAX_FAST_CONFLICTS {
            Duration::from_secs(5)
        } else {
            Duration::ZERO
        };
        self.state = State::Probing {
            sent: 0,
            next: now + wait,
        };
        self.events.push_back(ResponderEvent::Conflict { lost });
    }

    /// An mDNS packet received on this link (UDP payload). Returns whether
    /// it was answered. Malformed packets are ignored.
    pub fn handle_packet(&mut self, now: Instant, from: Ipv4Addr, payload: &[u8]) -> bool {
        if from == self.addr {
            return false; // our own multicast looped back
        }
        let Ok(msg) = Message::from_vec(payload) else {
            return false;
        };
        let me = self.fqdn().to_lowercase();
        let instance = self.http_instance().to_lowercase();
        let serves_http = self.http_port.is_some();
        let expected_srv = self.http_records(false).into_iter().nth(1).map(|r| r.data);
        let mine = |r: &Record| r.name.to_lowercase() == me;
        let my_instance = |r: &Record| serves_http && r.name.to_lowercase() == instance;
        match (msg.metadata.message_type, self.state) {
            // Someone answers for our name with other data: conflict (§9).
            (MessageType::Response, _) => {
                let clash = msg.answers.iter().chain(&msg.additionals).any(|r| {
                    (mine(r) && r.data != RData::A(A(self.addr)))
                        || (my_instance(r)
                            && r.record_type() == RecordType::SRV
                            && Some(&r.data) != expected_srv.as_ref())
                });
                if clash {
                    self.rename(now);
                }
                false
            }
            // Another host probing for the same name at the same time (§8.2):
            // the lexicographically later data wins; ours is compared as the address.
            (MessageType::Query, State::Probing { .. }) => {
                let theirs: Vec<Ipv4Addr> = msg
                    .authorities
                    .iter()
                    .filter(|r| mine(r))
                    .filter_map(|r| match &r.data {
                        RData::A(a) => Some(a.0),
                        _ => None,
                    })
                    .collect();
                if theirs.iter().any(|t| t.octets() > self.addr.octets()) {
                    self.rename(now);
                }
                false
            }
            (MessageType::Query, State::Ready | State::Announcing { .. }) => {
                let asked = msg.queries.iter().any(|q| {
                    q.name().to_lowercase() == me
                        && matches!(q.query_type(), RecordType::A | RecordType::ANY)
                        && q.query_class() != DNSClass::NONE
                });
                if asked {
                    self.out.push_back(self.announcement());
                    return true;
                }
                let http_type = Self::http_type();
                let browse = serves_http
                    && msg.queries.iter().any(|q| {
                        let n = q.name().to_lowercase();
                        (n == http_type
                            && matches!(q.query_type(), RecordType::PTR | RecordType::ANY))
                            || (n == instance
                                && matches!(
                                    q.query_type(),
                                    RecordType::SRV | RecordType::TXT | RecordType::ANY
                                ))
                    });
                if browse {
                    self.out.push_back(self.http_answer());
                }
                browse
            }
        }
    }

    /// Send probes and announcements that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Probing { sent, next } if now >= next => {
                if sent < PROBES {
                    self.out.push_back(self.probe());
                    self.state = State::Probing {
                        sent: sent + 1,
                        next: now + PROBE_INTERVAL,
                    };
                } else {
                    self.conflicts = 0;
                    self.events
                        .push_back(ResponderEvent::NameClaimed(self.host()));
                    self.state = State::Announcing { sent: 0, next: now };
                    self.handle_timeout(now);
                }
            }
            State::Announcing { sent, next } if now >= next => {
                self.out.push_back(self.announcement());
                self.state = match next_announcement(sent, now) {
                    Some((sent, next)) => State::Announcing { sent, next },
                    None => State::Ready,
                };
            }
            _ => {}
        }
    }

    /// When [`Responder::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Probing { next, .. } | State::Announcing { next, .. } => Some(next),
            State::Ready => None,
        }
    }

    /// The next packet to send to the group.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ResponderEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(r: &mut Responder, from: Instant, secs: u64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut t = from;
        while t <= from + Duration::from_secs(secs) {
            r.handle_timeout(t);
            while let Some(p) = r.poll_transmit() {
                out.push(p);
            }
            t += Duration::from_millis(50);
        }
        out
    }

    #[test]
    fn probes_three_times_then_announces_and_answers() {
        let t0 = Instant::now();
        let mut r = Responder::new(t0, "meshbridge", Ipv4Addr::new(10, 77, 1, 1));
        let sent = run(&mut r, t0, 3);
        let msgs: Vec<Message> = sent.iter().map(|p| Message::from_vec(p).unwrap()).collect();
        assert_eq!(
            msgs.iter()
                .filter(|m| m.metadata.message_type == MessageType::Query)
                .count(),
            3
        );
        assert_eq!(
            msgs.iter()
                .filter(|m| m.metadata.message_type == MessageType::Response)
                .count(),
            2
        );
        assert!(r.is_ready());
        assert_eq!(
            r.poll_event(),
            Some(ResponderEvent::NameClaimed("meshbridge".into()))
        );
        let mut q = Message::query();
        q.add_query(Query::query(
            Name::from_ascii("MeshBridge.local.").unwrap(),
            RecordType::A,
        ));
        assert!(r.handle_packet(t0, Ipv4Addr::new(10, 77, 1, 100), &q.to_vec().unwrap()));
        let answer = Message::from_vec(&r.poll_transmit().unwrap()).unwrap();
        assert_eq!(
            answer.answers[0].data,
            RData::A(A(Ipv4Addr::new(10, 77, 1, 1)))
        );
        // Other names are never answered.
        let mut q = Message::query();
        q.add_query(Query::query(
            Name::from_ascii("printer.local.").unwrap(),
            RecordType::A,
        ));
        assert!(!r.handle_packet(t0, Ipv4Addr::new(10, 77, 1, 100), &q.to_vec().unwrap()));
        assert!(r.poll_transmit().is_none());
    }

    #[test]
    fn a_taken_name_becomes_dash_two() {
        let t0 = Instant::now();
        let mut other = Responder::new(t0, "meshbridge", Ipv4Addr::new(192, 168, 1, 3));
        run(&mut other, t0, 3);
        assert!(other.is_ready());
        let mut r = Responder::new(t0, "meshbridge", Ipv4Addr::new(192, 168, 1, 2));
        r.handle_timeout(t0);
        let probe = r.poll_transmit().unwrap();
        // The owner answers our probe; we see the answer.
        assert!(other.handle_packet(t0, Ipv4Addr::new(192, 168, 1, 2), &probe));
        let answer = other.poll_transmit().unwrap();
        r.handle_packet(t0, Ipv4Addr::new(192, 168, 1, 3), &answer);
        assert_eq!(
            r.poll_event(),
            Some(ResponderEvent::Conflict {
                lost: "meshbridge".into()
            })
        );
        run(&mut r, t0, 3);
        assert_eq!(r.host(), "meshbridge-2");
        assert!(r.is_ready());
    }

    #[test]
    fn simultaneous_probes_are_broken_by_the_higher_address() {
        let t0 = Instant::now();
        let mut low = Responder::new(t0, "meshbridge", Ipv4Addr::new(192, 168, 1, 2));
        let mut high = Responder::new(t0, "meshbridge", Ipv4Addr::new(192, 168, 1, 3));
        low.handle_timeout(t0);
        high.handle_timeout(t0);
        let (pl, ph) = (low.poll_transmit().unwrap(), high.poll_transmit().unwrap());
        low.handle_packet(t0, Ipv4Addr::new(192, 168, 1, 3), &ph);
        high.handle_packet(t0, Ipv4Addr::new(192, 168, 1, 2), &pl);
        run(&mut low, t0, 3);
        run(&mut high, t0, 3);
        assert_eq!(high.host(), "meshbridge");
        assert_eq!(low.host(), "meshbridge-2");
    }

    #[test]
    fn garbage_is_ignored() {
        let t0 = Instant::now();
        let mut r = Responder::new(t0, "meshbridge", Ipv4Addr::new(10, 77, 1, 1));
        assert!(!r.handle_packet(t0, Ipv4Addr::new(10, 77, 1, 100), b"\x00\x00nonsense"));
    }
    #[test]
    fn announces_the_web_page_as_http_and_answers_browses() {
        let t0 = Instant::now();
        let mut r = Responder::new(t0, "meshbridge", Ipv4Addr::new(10, 77, 1, 1)).with_http(80);
        let sent = run(&mut r, t0, 3);
        let announce = sent
            .iter()
            .map(|p| Message::from_vec(p).unwrap())
            .find(|m| m.metadata.message_type == MessageType::Response)
            .unwrap();
        let srv = announce
            .answers
            .iter()
            .find_map(|a| match &a.data {
                RData::SRV(s) => Some(s.clone()),
                _ => None,
            })
            .expect("SRV announced");
        assert_eq!(srv.port, 80);
        assert_eq!(srv.target, Name::from_ascii("meshbridge.local.").unwrap());
        let mut q = Message::query();
        q.add_query(Query::query(
            Name::from_ascii("_http._tcp.local.").unwrap(),
            RecordType::PTR,
        ));
        assert!(r.handle_packet(t0, Ipv4Addr::new(10, 77, 1, 100), &q.to_vec().unwrap()));
        let answer = Message::from_vec(&r.poll_transmit().unwrap()).unwrap();
        assert!(answer.answers.iter().any(|a| matches!(&a.data,
            RData::PTR(p) if p.0 == Name::from_ascii("meshbridge._http._tcp.local.").unwrap())));
        assert!(answer
            .answers
            .iter()
            .any(|a| matches!(&a.data, RData::TXT(_))));
        assert!(answer
            .additionals
            .iter()
            .any(|a| matches!(&a.data, RData::A(_))));
        // Another host's web page under our instance name: a conflict, rename.
        let mut other = Message::response(0, OpCode::Query);
        other.add_answer(Record::from_rdata(
            Name::from_ascii("meshbridge._http._tcp.local.").unwrap(),
            120,
            RData::SRV(SRV::new(
                0,
                0,
                8080,
                Name::from_ascii("nas.local.").unwrap(),
            )),
        ));
        r.poll_event();
        r.handle_packet(t0, Ipv4Addr::new(10, 77, 1, 50), &other.to_vec().unwrap());
        assert_eq!(
            r.poll_event(),
            Some(ResponderEvent::Conflict {
                lost: "meshbridge".into()
            })
        );
        // Without with_http, browses are not answered.
        let mut plain = Responder::new(t0, "meshbridge", Ipv4Addr::new(10, 77, 1, 1));
        run(&mut plain, t0, 3);
        assert!(!plain.handle_packet(t0, Ipv4Addr::new(10, 77, 1, 100), &q.to_vec().unwrap()));
    }
}
