//! DNS-SD Discovery Proxy (RFC 8766) for the bridge link: questions in the
//! box's unicast domain are answered from the mDNS [`Cache`], with `.local`
//! names rewritten into the domain, so a peer in the mesh (which carries no
//! multicast) browses `_ipp._tcp.<domain>` and finds the printer.
//!
//! * Domain enumeration (RFC 6763 §11): `b`, `db`, `lb._dns-sd._udp.<domain>`
//!   point at the domain itself; `_services._dns-sd._udp.<domain>` lists the
//!   service types present.
//! * Only service types on the allow list are exposed; devices that opted
//!   out never appear; link-local addresses are never published.
//! * TTLs are capped (answers are a snapshot of a changing link).

use crate::cache::{Cache, Entry};
use hickory_proto::rr::rdata::{A, AAAA, PTR, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::net::IpAddr;
use std::time::Instant;

/// The largest TTL handed out for records learned over mDNS.
pub const TTL_CAP: u32 = 10;

/// The default allow list of service types.
pub const DEFAULT_SERVICES: &[&str] = &[
    "_ipp._tcp",
    "_ipps._tcp",
    "_printer._tcp",
    "_pdl-datastream._tcp",
    "_uscan._tcp",
    "_googlecast._tcp",
    "_airplay._tcp",
    "_raop._tcp",
    "_http._tcp",
];

/// The proxy's configuration.
#[derive(Debug, Clone)]
pub struct Proxy {
    domain: Name,
    local: Name,
    allow: Vec<Vec<Vec<u8>>>,
    opt_out: Vec<IpAddr>,
}

fn labels(n: &Name) -> Vec<Vec<u8>> {
    n.iter().map(|l| l.to_ascii_lowercase()).collect()
}

fn link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

impl Proxy {
    /// A proxy answering under `domain` for the service types in `allow`
    /// (like `_ipp._tcp`), hiding devices whose addresses are in `opt_out`.
    pub fn new(domain: &Name, allow: &[String], opt_out: Vec<IpAddr>) -> Self {
        let mut p = Proxy {
            domain: domain.to_lowercase(),
            local: Name::from_ascii("local.").expect("valid"),
            allow: Vec::new(),
            opt_out,
        };
        p.set_allow(allow);
        p
    }

    /// Replace the allow list of service types.
    pub fn set_allow(&mut self, allow: &[String]) {
        self.allow = allow
            .iter()
            .filter_map(|s| Name::from_ascii(s).ok())
            .map(|n| labels(&n))
            .filter(|l| l.len() == 2)
            .collect();
    }

    /// Is this service type (like `_ipp._tcp`) on the allow list?
    pub fn allows(&self, service: &str) -> bool {
        Name::from_ascii(service).is_ok_and(|n| self.allowed(&labels(&n)))
    }

    /// Replace the opted-out devices' addresses.
    pub fn set_opt_out(&mut self, opt_out: Vec<IpAddr>) {
        self.opt_out = opt_out;
    }

    fn allowed(&self, service: &[Vec<u8>]) -> bool {
        self.allow.iter().any(|a| a.as_slice() == service)
    }

    fn visible(&self, e: &Entry) -> bool {
        !self.opt_out.contains(&e.source)
    }

    /// `x.local.` -> `x.<domain>`; `None` for names not under `.local`.
    fn to_domain(&self, n: &Name) -> Option<Name> {
        // Keep the case of instance names: people read them.
        let raw: Vec<&[u8]> = n.iter().collect();
        if !raw.last().is_some_and(|s| s.eq_ignore_ascii_case(b"local")) {
            return None;
        }
        Name::from_labels(raw[..raw.len() - 1].iter().copied())
            .ok()?
            .append_domain(&self.domain)
            .ok()
    }

    fn to_local(&self, rel: &[Vec<u8>]) -> Option<Name> {
        Name::from_labels(rel.iter().map(|s| s.as_slice()))
            .ok()?
            .append_domain(&self.local)
            .ok()
    }

    /// Answer a question under the domain from the cache. `None` means
    /// "not a discovery name" (the caller's own zone answers); `Some(vec![])`
    /// means the name is a discovery name with nothing to show.
    pub fn answer(
        &self,
        cache: &Cache,
        now: Instant,
        qname: &Name,
        qtype: RecordType,
    ) -> Option<Vec<Record>> {
        self.answer_inner(cache, now, qname, qtype, None)
    }

    /// Like [`Proxy::answer`], but a host name (`<host>.<domain>`) gets only
    /// the addresses announced by a device at one of `sources`: for a name
    /// the zone already gives to a device, only that device may add to it.
    pub fn answer_from(
        &self,
        cache: &Cache,
        now: Instant,
        qname: &Name,
        qtype: RecordType,
        sources: &[IpAddr],
    ) -> Option<Vec<Record>> {
        self.answer_inner(cache, now, qname, qtype, Some(sources))
    }

    fn answer_inner(
        &self,
        cache: &Cache,
        now: Instant,
        qname: &Name,
        qtype: RecordType,
        only: Option<&[IpAddr]>,
    ) -> Option<Vec<Record>> {
        let mut q = qname.to_lowercase();
        q.set_fqdn(true);
        if !self.domain.zone_of(&q) || q == self.domain {
            return None;
        }
        let all = labels(&q);
        let rel = &all[..all.len() - labels(&self.domain).len()];
        let want = |t: RecordType| qtype == t || qtype == RecordType::ANY;
        let ptr = |target: Name| Record::from_rdata(q.clone(), TTL_CAP, RData::PTR(PTR(target)));

        // RFC 6763 §11 domain enumeration.
        if rel.len() == 3 && rel[1] == b"_dns-sd" && rel[2] == b"_udp" {
            return match rel[0].as_slice() {
                b"b" | b"db" | b"lb" => Some(if want(RecordType::PTR) {
                    vec![ptr(self.domain.clone())]
                } else {
                    vec![]
                }),
                b"_services" => {
                    let mut out = Vec::new();
                    for t in cache.ptr_names(now) {
                        let l = labels(&t);
                        if l.len() == 3
                            && l[2] == b"local"
                            && self.allowed(&l[..2])
                            && self.instances(cache, now, &l[..2]).next().is_some()
                        {
                            if let Some(n) = self.to_domain(&t) {
                                out.push(ptr(n));
                            }
                        }
                    }
                    Some(if want(RecordType::PTR) { out } else { vec![] })
                }
                _ => Some(vec![]),
            };
        }

        let is_service = |s: &[Vec<u8>]| {
            s.len() == 2 && s[0].first() == Some(&b'_') && (s[1] == b"_tcp" || s[1] == b"_udp")
        };
        // `_svc._proto` or `_sub._sub._svc._proto`: browse.
        let (browse, service) = match rel.len() {
            2 if is_service(rel) => (true, rel),
            4 if rel[1] == b"_sub" && is_service(&rel[2..]) => (true, &rel[2..]),
            n if n >= 3 && is_service(&rel[n - 2..]) => (false, &rel[n - 2..]),
            _ => (false, &rel[..0]),
        };
        if !service.is_empty() {
            if !self.allowed(service) {
                return Some(vec![]);
            }
            let local = self.to_local(rel)?;
            if browse {
                if !want(RecordType::PTR) {
                    return Some(vec![]);
                }
                let out = cache
                    .lookup(now, &local, RecordType::PTR)
                    .into_iter()
                    .filter(|(e, _)| {
                        self.visible(e) && self.instance_visible(cache, now, &e.record)
                    })
                    .filter_map(|(e, ttl)| match &e.record.data {
                        RData::PTR(p) => Some(Record::from_rdata(
                            q.clone(),
                            ttl.min(TTL_CAP),
                            RData::PTR(PTR(self.to_domain(&p.0)?)),
                        )),
                        _ => None,
                    })
                    .collect();
                return Some(out);
            }
            // An instance: SRV and TXT.
            let mut out = Vec::new();
            for t in [RecordType::SRV, RecordType::TXT] {
                if !want(t) {
                    continue;
                }
                for (e, ttl) in cache.lookup(now, &local, t) {
                    if !self.visible(e) {
                        continue;
                    }
                    let data = match &e.record.data {
                        RData::SRV(s) => match self.to_domain(&s.target) {
                            Some(target) if !self.host_opted_out(cache, now, &s.target) => {
                                RData::SRV(SRV::new(s.priority, s.weight, s.port, target))
                            }
                            _ => continue,
                        },
                        other => other.clone(),
                    };
                    out.push(Record::from_rdata(q.clone(), ttl.min(TTL_CAP), data));
                }
            }
            return Some(out);
        }

        // A host: `<host>.<domain>` from `<host>.local` A/AAAA.
        if rel.len() == 1 && rel[0].first() != Some(&b'_') {
            let local = self.to_local(rel)?;
            let mut out = Vec::new();
            for t in [RecordType::A, RecordType::AAAA] {
                if !want(t) {
                    continue;
                }
                for (e, ttl) in cache.lookup(now, &local, t) {
                    if !self.visible(e) || only.is_some_and(|o| !o.contains(&e.source)) {
                        continue;
                    }
                    match &e.record.data {
                        RData::A(a)
                            if !link_local(&IpAddr::V4(a.0))
                                && !self.opt_out.contains(&IpAddr::V4(a.0)) =>
                        {
                            out.push(Record::from_rdata(
                                q.clone(),
                                ttl.min(TTL_CAP),
                                RData::A(A(a.0)),
                            ))
                        }
                        RData::AAAA(a)
                            if !link_local(&IpAddr::V6(a.0))
                                && !self.opt_out.contains(&IpAddr::V6(a.0)) =>
                        {
                            out.push(Record::from_rdata(
                                q.clone(),
                                ttl.min(TTL_CAP),
                                RData::AAAA(AAAA(a.0)),
                            ))
                        }
                        _ => {}
                    }
                }
            }
            return if out.is_empty() { None } else { Some(out) };
        }
        None
    }

    fn instances<'a>(
        &'a self,
        cache: &'a Cache,
        now: Instant,
        service: &[Vec<u8>],
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        let local = self.to_local(service);
        local
            .map(|l| {
                cache
                    .lookup(now, &l, RecordType::PTR)
                    .into_iter()
                    .map(|(e, _)| e)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .into_iter()
            .filter(move |e| self.visible(e) && self.instance_visible(cache, now, &e.record))
    }

    /// A PTR's instance is shown unless its SRV target belongs to an opted-out device.
    fn instance_visible(&self, cache: &Cache, now: Instant, ptr: &Record) -> bool {
        let RData::PTR(p) = &ptr.data else {
            return false;
        };
        cache
            .lookup(now, &p.0, RecordType::SRV)
            .iter()
            .all(|(e, _)| match &e.record.data {
                RData::SRV(s) => !self.host_opted_out(cache, now, &s.target),
                _ => true,
            })
    }

    fn host_opted_out(&self, cache: &Cache, now: Instant, host: &Name) -> bool {
        cache
            .addresses(now, host)
            .iter()
            .any(|a| self.opt_out.contains(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, OpCode};
    use hickory_proto::rr::rdata::TXT;
    use std::net::Ipv4Addr;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[allow(clippy::too_many_arguments)] // a test fixture: one argument per announced field
    fn device(
        cache: &mut Cache,
        now: Instant,
        ip: [u8; 4],
        host: &str,
        inst: &str,
        svc: &str,
        port: u16,
        ttl: u32,
    ) {
        let mut m = Message::response(0, OpCode::Query);
        let svc_local = n(&format!("{svc}.local."));
        let inst_local = n(&format!("{inst}.{svc}.local."));
        let host_local = n(&format!("{host}.local."));
        m.add_answer(Record::from_rdata(
            svc_local.clone(),
            ttl,
            RData::PTR(PTR(inst_local.clone())),
        ));
        m.add_answer(Record::from_rdata(
            n(&format!("_universal._sub.{svc}.local.")),
            ttl,
            RData::PTR(PTR(inst_local.clone())),
        ));
        m.add_answer(Record::from_rdata(
            inst_local.clone(),
            ttl,
            RData::SRV(SRV::new(0, 0, port, host_local.clone())),
        ));
        m.add_answer(Record::from_rdata(
            inst_local,
            ttl,
            RData::TXT(TXT::new(vec!["rp=ipp/print".into()])),
        ));
        m.add_answer(Record::from_rdata(
            host_local.clone(),
            ttl,
            RData::A(A(Ipv4Addr::from(ip))),
        ));
        m.add_answer(Record::from_rdata(
            host_local,
            ttl,
            RData::A(A(Ipv4Addr::new(169, 254, 3, 4))),
        ));
        cache
            .handle_packet(now, IpAddr::V4(Ipv4Addr::from(ip)), &m.to_vec().unwrap())
            .unwrap();
    }

    fn setup() -> (Cache, Proxy, Instant) {
        let now = Instant::now();
        let mut c = Cache::new();
        device(
            &mut c,
            now,
            [10, 77, 1, 100],
            "printer",
            "Office",
            "_ipp._tcp",
            8631,
            4500,
        );
        device(
            &mut c,
            now,
            [10, 77, 1, 101],
            "nas",
            "Files",
            "_smb._tcp",
            445,
            4500,
        );
        let allow: Vec<String> = DEFAULT_SERVICES.iter().map(|s| s.to_string()).collect();
        (c, Proxy::new(&n("mesh.home.arpa."), &allow, vec![]), now)
    }

    fn names(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| match &r.data {
                RData::PTR(p) => p.0.to_ascii(),
                RData::SRV(s) => format!("{} {}", s.port, s.target.to_ascii()),
                RData::A(a) => a.0.to_string(),
                RData::TXT(_) => "txt".into(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn browse_resolve_and_address_in_the_unicast_domain() {
        let (c, p, now) = setup();
        let r = p
            .answer(&c, now, &n("_ipp._tcp.mesh.home.arpa."), RecordType::PTR)
            .unwrap();
        assert_eq!(names(&r), vec!["Office._ipp._tcp.mesh.home.arpa."]);
        assert!(r.iter().all(|r| r.ttl <= TTL_CAP));
        let r = p
            .answer(
                &c,
                now,
                &n("_universal._sub._ipp._tcp.mesh.home.arpa."),
                RecordType::PTR,
            )
            .unwrap();
        assert_eq!(names(&r), vec!["Office._ipp._tcp.mesh.home.arpa."]);
        let r = p
            .answer(
                &c,
                now,
                &n("office._ipp._tcp.mesh.home.arpa."),
                RecordType::SRV,
            )
            .unwrap();
        assert_eq!(names(&r), vec!["8631 printer.mesh.home.arpa."]);
        let r = p
            .answer(
                &c,
                now,
                &n("Office._ipp._tcp.mesh.home.arpa."),
                RecordType::TXT,
            )
            .unwrap();
        assert_eq!(names(&r), vec!["txt"]);
        // Link-local addresses are never published.
        let r = p
            .answer(&c, now, &n("printer.mesh.home.arpa."), RecordType::A)
            .unwrap();
        assert_eq!(names(&r), vec!["10.77.1.100"]);
    }

    #[test]
    fn domain_enumeration_and_service_list() {
        let (c, p, now) = setup();
        for b in ["b", "db", "lb"] {
            let r = p
                .answer(
                    &c,
                    now,
                    &n(&format!("{b}._dns-sd._udp.mesh.home.arpa.")),
                    RecordType::PTR,
                )
                .unwrap();
            assert_eq!(names(&r), vec!["mesh.home.arpa."]);
        }
        let r = p
            .answer(
                &c,
                now,
                &n("_services._dns-sd._udp.mesh.home.arpa."),
                RecordType::PTR,
            )
            .unwrap();
        assert_eq!(
            names(&r),
            vec!["_ipp._tcp.mesh.home.arpa."],
            "_smb is not on the allow list"
        );
    }

    #[test]
    fn types_off_the_allow_list_and_opted_out_devices_never_appear() {
        let (c, mut p, now) = setup();
        assert_eq!(
            p.answer(&c, now, &n("_smb._tcp.mesh.home.arpa."), RecordType::PTR),
            Some(vec![])
        );
        assert_eq!(
            p.answer(
                &c,
                now,
                &n("files._smb._tcp.mesh.home.arpa."),
                RecordType::SRV
            ),
            Some(vec![])
        );
        p.set_opt_out(vec![IpAddr::V4(Ipv4Addr::new(10, 77, 1, 100))]);
        assert_eq!(
            p.answer(&c, now, &n("_ipp._tcp.mesh.home.arpa."), RecordType::PTR),
            Some(vec![])
        );
        assert_eq!(
            p.answer(&c, now, &n("printer.mesh.home.arpa."), RecordType::A),
            None
        );
        // Outside the domain: not ours.
        assert_eq!(
            p.answer(&c, now, &n("_ipp._tcp.example.org."), RecordType::PTR),
            None
        );
    }

    #[test]
    fn ttl_is_capped_and_expired_records_vanish() {
        let now = Instant::now();
        let mut c = Cache::new();
        device(
            &mut c,
            now,
            [10, 77, 1, 100],
            "printer",
            "Office",
            "_ipp._tcp",
            8631,
            4,
        );
        let allow = vec!["_ipp._tcp".to_string()];
        let p = Proxy::new(&n("mesh.home.arpa."), &allow, vec![]);
        let r = p
            .answer(&c, now, &n("_ipp._tcp.mesh.home.arpa."), RecordType::PTR)
            .unwrap();
        assert!(r[0].ttl <= 4);
        let later = now + std::time::Duration::from_secs(5);
        assert_eq!(
            p.answer(&c, later, &n("_ipp._tcp.mesh.home.arpa."), RecordType::PTR),
            Some(vec![])
        );
    }

    #[test]
    fn answer_from_takes_host_addresses_only_from_the_named_sources() {
        let (c, p, now) = setup();
        let q = n("printer.mesh.home.arpa.");
        assert!(p.answer(&c, now, &q, RecordType::A).is_some());
        let own = [IpAddr::V4(Ipv4Addr::new(10, 77, 1, 100))];
        let other = [IpAddr::V4(Ipv4Addr::new(10, 77, 1, 101))];
        let r = p.answer_from(&c, now, &q, RecordType::A, &own).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(p.answer_from(&c, now, &q, RecordType::A, &other), None);
    }
}
