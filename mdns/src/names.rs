//! The box's own DNS zone: `<device>.<domain>` for bridged devices (their
//! DHCP hostnames), `<peer>.<domain>` for mesh peers, `meshbridge.<domain>`
//! for the box, and reverse (PTR) records for all of them. Sans-IO: the
//! daemon feeds it lease and peer changes and asks it questions.

use hickory_proto::rr::rdata::{A, AAAA, PTR, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Time to live of the box's own records: short, leases change.
pub const TTL: u32 = 60;

/// A problem with the zone's configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NamesError {
    /// The domain is not a valid DNS name.
    #[error("{0:?} is not a valid domain name")]
    Domain(String),
}

/// The answer to a question.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// The name is ours and has records of this type.
    Records(Vec<Record>),
    /// The name is ours but has no record of this type (NOERROR, empty, with SOA).
    NoData(Record),
    /// The name is in our zone (or our reverse ranges) and does not exist (with SOA).
    NxDomain(Record),
    /// Not our zone: forward it.
    NotOurs,
}

/// Make a DNS label from a DHCP hostname or peer name: lowercase letters,
/// digits and '-', at most 63 characters; `None` if nothing usable is left.
pub fn to_label(s: &str) -> Option<String> {
    let first = s.split('.').next().unwrap_or("");
    let mut out = String::new();
    for c in first.chars() {
        match c {
            'a'..='z' | '0'..='9' => out.push(c),
            'A'..='Z' => out.push(c.to_ascii_lowercase()),
            ' ' | '_' | '-' => out.push('-'),
            _ => {}
        }
    }
    let out = out.trim_matches('-');
    let mut out: String = out.chars().take(63).collect();
    while out.ends_with('-') {
        out.pop();
    }
    (!out.is_empty()).then_some(out)
}

/// The zone.
#[derive(Debug, Clone)]
pub struct Names {
    domain: Name,
    /// Reverse ranges we answer for (the bridge and mesh subnets): unknown
    /// addresses there are NXDOMAIN, never asked upstream.
    reverse: Vec<IpNet>,
    /// label -> addresses, from the source that set them (device/peer/box).
    hosts: BTreeMap<String, Vec<IpAddr>>,
}

impl Names {
    /// A zone for `domain` that answers reverse lookups inside `reverse`.
    pub fn new(domain: &str, reverse: Vec<IpNet>) -> Result<Self, NamesError> {
        let mut domain =
            Name::from_ascii(domain).map_err(|_| NamesError::Domain(domain.to_string()))?;
        domain.set_fqdn(true);
        Ok(Names {
            domain: domain.to_lowercase(),
            reverse,
            hosts: BTreeMap::new(),
        })
    }

    /// The zone's domain.
    pub fn domain(&self) -> &Name {
        &self.domain
    }

    /// Point `name` (a hostname or peer name, made into a label) at `addrs`.
    /// Returns the label used, if any.
    pub fn set(&mut self, name: &str, addrs: Vec<IpAddr>) -> Option<String> {
        let label = to_label(name)?;
        if addrs.is_empty() {
            self.hosts.remove(&label);
        } else {
            self.hosts.insert(label.clone(), addrs);
        }
        Some(label)
    }

    /// Remove every name that points at `addr` (a lease ended).
    pub fn remove_addr(&mut self, addr: IpAddr) {
        self.hosts.retain(|_, a| {
            a.retain(|x| *x != addr);
            !a.is_empty()
        });
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether the zone has no names.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    fn soa(&self) -> Record {
        let mname = Name::from_ascii("meshbridge")
            .ok()
            .and_then(|n| n.append_domain(&self.domain).ok())
            .unwrap_or_else(|| self.domain.clone());
        let rname = Name::from_ascii("hostmaster")
            .ok()
            .and_then(|n| n.append_domain(&self.domain).ok())
            .unwrap_or_else(|| self.domain.clone());
        Record::from_rdata(
            self.domain.clone(),
            TTL,
            RData::SOA(SOA::new(mname, rname, 1, 3600, 600, 86400, TTL)),
        )
    }

    /// Answer `name`/`rtype`.
    pub fn lookup(&self, name: &Name, rtype: RecordType) -> Lookup {
        let lower = name.to_lowercase();
        let mut fq = lower.clone();
        fq.set_fqdn(true);
        if let Ok(net) = fq.parse_arpa_name() {
            return self.reverse_lookup(&fq, net, rtype);
        }
        if !self.domain.zone_of(&fq) {
            return Lookup::NotOurs;
        }
        if fq == self.domain {
            return match rtype {
                RecordType::SOA => Lookup::Records(vec![self.soa()]),
                _ => Lookup::NoData(self.soa()),
            };
        }
        // Only <label>.<domain>: deeper names do not exist.
        if fq.num_labels() != self.domain.num_labels() + 1 {
            return Lookup::NxDomain(self.soa());
        }
        let label = fq
            .iter()
            .next()
            .map(|l| String::from_utf8_lossy(l).to_string())
            .unwrap_or_default();
        let Some(addrs) = self.hosts.get(&label) else {
            return Lookup::NxDomain(self.soa());
        };
        let records: Vec<Record> = addrs
            .iter()
            .filter_map(|a| match (a, rtype) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => {
                    Some(Record::from_rdata(fq.clone(), TTL, RData::A(A(*v4))))
                }
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => {
                    Some(Record::from_rdata(fq.clone(), TTL, RData::AAAA(AAAA(*v6))))
                }
                _ => None,
            })
            .collect();
        if records.is_empty() {
            Lookup::NoData(self.soa())
        } else {
            Lookup::Records(records)
        }
    }

    fn reverse_lookup(&self, fq: &Name, net: IpNet, rtype: RecordType) -> Lookup {
        let full = match net {
            IpNet::V4(n) => n.prefix_len() == 32,
            IpNet::V6(n) => n.prefix_len() == 128,
        };
        let ours = self.reverse.iter().any(|r| r.contains(&net.network()));
        if !ours {
            return Lookup::NotOurs;
        }
        if !full {
            return Lookup::NoData(self.soa());
        }
        let addr = net.addr();
        let names: Vec<Record> = self
            .hosts
            .iter()
            .filter(|(_, a)| a.contains(&addr))
            .filter_map(|(label, _)| {
                Name::from_ascii(label)
                    .ok()?
                    .append_domain(&self.domain)
                    .ok()
            })
            .map(|target| Record::from_rdata(fq.clone(), TTL, RData::PTR(PTR(target))))
            .collect();
        match (names.is_empty(), rtype) {
            (true, _) => Lookup::NxDomain(self.soa()),
            (false, RecordType::PTR | RecordType::ANY) => Lookup::Records(names),
            (false, _) => Lookup::NoData(self.soa()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn zone() -> Names {
        let mut z = Names::new(
            "mesh.home.arpa",
            vec![
                "10.77.0.0/24".parse().unwrap(),
                "10.77.1.0/24".parse().unwrap(),
            ],
        )
        .unwrap();
        z.set(
            "Office Printer.local",
            vec![IpAddr::V4(Ipv4Addr::new(10, 77, 1, 100))],
        );
        z.set(
            "laptop",
            vec![
                IpAddr::V4(Ipv4Addr::new(10, 77, 0, 2)),
                IpAddr::V6("fd77::2".parse::<Ipv6Addr>().unwrap()),
            ],
        );
        z
    }

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn labels_are_sanitised() {
        assert_eq!(
            to_label("Office Printer.local").as_deref(),
            Some("office-printer")
        );
        assert_eq!(to_label("--x_y--").as_deref(), Some("x-y"));
        assert_eq!(to_label("!!!"), None);
        assert_eq!(to_label(&"a".repeat(100)).map(|l| l.len()), Some(63));
    }

    #[test]
    fn forward_names_answer_a_and_aaaa_case_insensitively() {
        let z = zone();
        let Lookup::Records(r) = z.lookup(&n("OFFICE-printer.Mesh.Home.Arpa."), RecordType::A)
        else {
            panic!()
        };
        assert_eq!(&r[0].data, &RData::A(A(Ipv4Addr::new(10, 77, 1, 100))));
        let Lookup::Records(r) = z.lookup(&n("laptop.mesh.home.arpa."), RecordType::AAAA) else {
            panic!()
        };
        assert_eq!(r.len(), 1);
        assert!(matches!(
            z.lookup(&n("office-printer.mesh.home.arpa."), RecordType::AAAA),
            Lookup::NoData(_)
        ));
        assert!(matches!(
            z.lookup(&n("nobody.mesh.home.arpa."), RecordType::A),
            Lookup::NxDomain(_)
        ));
        assert!(matches!(
            z.lookup(&n("a.b.mesh.home.arpa."), RecordType::A),
            Lookup::NxDomain(_)
        ));
        assert!(matches!(
            z.lookup(&n("example.org."), RecordType::A),
            Lookup::NotOurs
        ));
        assert!(matches!(
            z.lookup(&n("mesh.home.arpa."), RecordType::SOA),
            Lookup::Records(_)
        ));
    }

    #[test]
    fn reverse_names_for_our_ranges_only() {
        let z = zone();
        let Lookup::Records(r) =
            z.lookup(&Name::from(Ipv4Addr::new(10, 77, 1, 100)), RecordType::PTR)
        else {
            panic!()
        };
        assert_eq!(
            &r[0].data,
            &RData::PTR(PTR(n("office-printer.mesh.home.arpa.")))
        );
        assert!(matches!(
            z.lookup(&Name::from(Ipv4Addr::new(10, 77, 1, 150)), RecordType::PTR),
            Lookup::NxDomain(_)
        ));
        assert!(matches!(
            z.lookup(&Name::from(Ipv4Addr::new(192, 0, 2, 1)), RecordType::PTR),
            Lookup::NotOurs
        ));
    }

    #[test]
    fn leases_ending_remove_names() {
        let mut z = zone();
        z.remove_addr(IpAddr::V4(Ipv4Addr::new(10, 77, 1, 100)));
        assert!(matches!(
            z.lookup(&n("office-printer.mesh.home.arpa."), RecordType::A),
            Lookup::NxDomain(_)
        ));
        assert_eq!(z.len(), 1);
    }
}
