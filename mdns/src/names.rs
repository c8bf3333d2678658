//! The box's own DNS zone: `<device>.<domain>` for bridged devices (their
//! DHCP hostnames), `<peer>.<domain>` for mesh peers, `meshbridge.<domain>`
//! for the box, and reverse (PTR) records for all of them. Sans-IO: the
//! daemon feeds it lease and peer changes and asks it questions.

use hickory_proto::rr::rdata::{A, AAAA, PTR, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Time to live of the box's own records: short, leases change.
pub const TTL: u32 = 60;

/// Well-known names no device or peer may take in the box's zone: the box
/// itself, and names clients look up on their own (WPAD proxy
/// auto-configuration, ISATAP, the loopback name).
pub const RESERVED: &[&str] = &["meshbridge", "wpad", "isatap", "localhost"];

/// How many suffixed names (`printer-2` .. `printer-99`) are tried for a clash.
pub const MAX_SUFFIX: u32 = 99;

/// Who a name in the zone belongs to. A claim of a higher rank takes a name
/// from a lower one (which moves to a suffixed name); never the other way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Owner {
    /// A bridged device's own DHCP hostname (option 12): untrusted.
    Device,
    /// A name the admin gave a device (`dhcp.reservations[].name`).
    Admin,
    /// A mesh peer's name from the config.
    Peer,
    /// The box itself (`meshbridge.<domain>`).
    Box,
}

/// What became of a claim on a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The name is served as asked.
    Granted(String),
    /// The name was taken (or reserved): served under a suffixed name.
    Renamed {
        /// The label asked for.
        wanted: String,
        /// The label served.
        got: String,
    },
    /// The name was taken (or reserved) and is not served at all.
    Refused(String),
    /// The claim had no addresses: the owner's name was removed.
    Removed,
    /// Nothing usable as a DNS label was left of the name.
    Invalid,
}

/// Whether a name in the zone is taken, and by whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken<'a> {
    /// Not a `<label>.<domain>` name held by anyone.
    Free,
    /// A well-known name ([`RESERVED`], the box's mDNS name) or the zone apex.
    Reserved,
    /// Held by this owner at these addresses.
    By(Owner, &'a [IpAddr]),
}

#[derive(Debug, Clone)]
struct Host {
    addrs: Vec<IpAddr>,
    owner: Owner,
}

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
    /// label -> addresses, and who holds it (device/admin/peer/box).
    hosts: BTreeMap<String, Host>,
    /// Labels only the box may hold.
    reserved: BTreeSet<String>,
    /// Claims that clashed with a taken or reserved name.
    clashes: u64,
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
            reserved: RESERVED.iter().map(|s| s.to_string()).collect(),
            clashes: 0,
        })
    }

    /// Reserve one more label (the box's mDNS name): only the box may hold it.
    pub fn reserve(&mut self, name: &str) {
        if let Some(l) = to_label(name) {
            self.reserved.insert(l);
        }
    }

    /// Whether `label` (already a label) is reserved.
    pub fn is_reserved(&self, label: &str) -> bool {
        self.reserved.contains(label)
    }

    /// How many claims clashed with a taken or reserved name so far.
    pub fn clashes(&self) -> u64 {
        self.clashes
    }

    /// The zone's domain.
    pub fn domain(&self) -> &Name {
        &self.domain
    }

    /// Point `name` (made into a label) at `addrs` as an admin-given name
    /// (see [`Names::claim`]). Returns the label served, if any.
    pub fn set(&mut self, name: &str, addrs: Vec<IpAddr>) -> Option<String> {
        match self.claim(name, addrs, Owner::Admin) {
            Claim::Granted(l) | Claim::Renamed { got: l, .. } => Some(l),
            _ => None,
        }
    }

    /// `owner` claims `name` (made into a label) for `addrs`. A name held by
    /// the same addresses is kept; a reserved name, or one held by another
    /// owner of the same or a higher rank, is never replaced: a device's or
    /// an admin-named device's claim gets the first free `name-N`, a peer's
    /// is refused. A claim of a higher rank takes the name, and its holder
    /// moves to a suffixed name. No addresses: the owner's name is removed.
    pub fn claim(&mut self, name: &str, addrs: Vec<IpAddr>, owner: Owner) -> Claim {
        let Some(label) = to_label(name) else {
            return Claim::Invalid;
        };
        if addrs.is_empty() {
            if self.hosts.get(&label).is_some_and(|h| h.owner == owner) {
                self.hosts.remove(&label);
            }
            return Claim::Removed;
        }
        let reserved = owner != Owner::Box && self.reserved.contains(&label);
        match self.hosts.get_mut(&label) {
            None if !reserved => {
                self.hosts.insert(label.clone(), Host { addrs, owner });
                return Claim::Granted(label);
            }
            Some(h) if !reserved && h.addrs == addrs => {
                h.owner = h.owner.max(owner);
                return Claim::Granted(label);
            }
            Some(h) if !reserved && owner > h.owner => {
                let old = std::mem::replace(h, Host { addrs, owner });
                self.clashes += 1;
                // The displaced holder keeps a name, suffixed.
                let _ = self.suffixed(&label, old);
                return Claim::Granted(label);
            }
            _ => {}
        }
        self.clashes += 1;
        match owner {
            Owner::Device | Owner::Admin => match self.suffixed(&label, Host { addrs, owner }) {
                Some(got) => Claim::Renamed { wanted: label, got },
                None => Claim::Refused(label),
            },
            Owner::Peer | Owner::Box => Claim::Refused(label),
        }
    }

    /// Put `host` under the first free (or its own) `label-N`.
    fn suffixed(&mut self, label: &str, host: Host) -> Option<String> {
        for n in 2..=MAX_SUFFIX {
            let suffix = format!("-{n}");
            let mut base: String = label.chars().take(63 - suffix.len()).collect();
            while base.ends_with('-') {
                base.pop();
            }
            let cand = format!("{base}{suffix}");
            if self.reserved.contains(&cand) {
                continue;
            }
            match self.hosts.get_mut(&cand) {
                None => {
                    self.hosts.insert(cand.clone(), host);
                    return Some(cand);
                }
                Some(h) if h.addrs == host.addrs => {
                    h.owner = h.owner.max(host.owner);
                    return Some(cand);
                }
                Some(_) => {}
            }
        }
        None
    }

    /// Whether `name` (`<label>.<domain>`) is held, reserved or free: what
    /// other sources (the mDNS cache) may add to it.
    pub fn taken(&self, name: &Name) -> Taken<'_> {
        let mut fq = name.to_lowercase();
        fq.set_fqdn(true);
        if fq == self.domain {
            return Taken::Reserved;
        }
        if !self.domain.zone_of(&fq) || fq.num_labels() != self.domain.num_labels() + 1 {
            return Taken::Free;
        }
        let label = fq
            .iter()
            .next()
            .map(|l| String::from_utf8_lossy(l).to_string())
            .unwrap_or_default();
        if self.reserved.contains(&label) {
            return Taken::Reserved;
        }
        match self.hosts.get(&label) {
            Some(h) => Taken::By(h.owner, &h.addrs),
            None => Taken::Free,
        }
    }

    /// Remove every name that points at `addr` (a lease ended).
    pub fn remove_addr(&mut self, addr: IpAddr) {
        self.hosts.retain(|_, h| {
            h.addrs.retain(|x| *x != addr);
            !h.addrs.is_empty()
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
        let Some(host) = self.hosts.get(&label) else {
            return Lookup::NxDomain(self.soa());
        };
        let records: Vec<Record> = host
            .addrs
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
            .filter(|(_, h)| h.addrs.contains(&addr))
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

    fn v4(d: u8) -> Vec<IpAddr> {
        vec![IpAddr::V4(Ipv4Addr::new(10, 77, 1, d))]
    }

    fn a_of(z: &Names, name: &str) -> Vec<IpAddr> {
        match z.lookup(&n(name), RecordType::A) {
            Lookup::Records(r) => r
                .iter()
                .filter_map(|r| match r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    _ => None,
                })
                .collect(),
            _ => vec![],
        }
    }

    #[test]
    fn a_device_cannot_take_the_box_or_well_known_names() {
        let mut z = zone();
        z.claim("meshbridge", v4(1), Owner::Box);
        assert_eq!(
            z.claim("MeshBridge", v4(100), Owner::Device),
            Claim::Renamed {
                wanted: "meshbridge".into(),
                got: "meshbridge-2".into()
            }
        );
        assert_eq!(a_of(&z, "meshbridge.mesh.home.arpa."), v4(1));
        assert_eq!(a_of(&z, "meshbridge-2.mesh.home.arpa."), v4(100));
        for w in ["wpad", "isatap", "localhost"] {
            assert!(matches!(
                z.claim(w, v4(101), Owner::Device),
                Claim::Renamed { .. }
            ));
            assert!(a_of(&z, &format!("{w}.mesh.home.arpa.")).is_empty(), "{w}");
            assert!(matches!(
                z.taken(&n(&format!("{w}.mesh.home.arpa."))),
                Taken::Reserved
            ));
        }
        z.reserve("Office-Box");
        assert!(matches!(
            z.claim("office-box", v4(102), Owner::Admin),
            Claim::Renamed { .. }
        ));
        assert!(a_of(&z, "office-box.mesh.home.arpa.").is_empty());
        // A peer asking for a reserved name is refused outright.
        assert_eq!(
            z.claim("wpad", v4(103), Owner::Peer),
            Claim::Refused("wpad".into())
        );
        assert!(z.clashes() >= 6);
    }

    #[test]
    fn the_first_device_keeps_its_name_the_second_gets_a_suffix() {
        let mut z = zone();
        assert_eq!(
            z.claim("printer", v4(120), Owner::Device),
            Claim::Granted("printer".into())
        );
        assert_eq!(
            z.claim("Printer", v4(121), Owner::Device),
            Claim::Renamed {
                wanted: "printer".into(),
                got: "printer-2".into()
            }
        );
        assert_eq!(
            z.claim("printer", v4(122), Owner::Device),
            Claim::Renamed {
                wanted: "printer".into(),
                got: "printer-3".into()
            }
        );
        // The same device asking again keeps what it has.
        assert_eq!(
            z.claim("printer", v4(120), Owner::Device),
            Claim::Granted("printer".into())
        );
        assert_eq!(a_of(&z, "printer.mesh.home.arpa."), v4(120));
        assert_eq!(a_of(&z, "printer-2.mesh.home.arpa."), v4(121));
        // The first one leaves: the name is free again for the next claim.
        z.remove_addr(v4(120)[0]);
        assert_eq!(
            z.claim("printer", v4(121), Owner::Device),
            Claim::Granted("printer".into())
        );
    }

    #[test]
    fn peers_and_admin_names_outrank_device_hostnames() {
        let mut z = zone();
        // A device cannot take a peer's name ("laptop" is a name in the zone).
        z.claim(
            "laptop",
            vec![IpAddr::V4(Ipv4Addr::new(10, 77, 0, 2))],
            Owner::Peer,
        );
        assert!(matches!(
            z.claim("laptop", v4(130), Owner::Device),
            Claim::Renamed { .. }
        ));
        assert_eq!(
            a_of(&z, "laptop.mesh.home.arpa."),
            vec![IpAddr::V4(Ipv4Addr::new(10, 77, 0, 2))]
        );
        assert!(matches!(
            z.claim("laptop", v4(130), Owner::Admin),
            Claim::Renamed { .. }
        ));
        // An admin-given name takes a name a device announced first; the device moves.
        z.claim("scanner", v4(131), Owner::Device);
        assert_eq!(
            z.claim("Scanner", v4(132), Owner::Admin),
            Claim::Granted("scanner".into())
        );
        assert_eq!(a_of(&z, "scanner.mesh.home.arpa."), v4(132));
        assert_eq!(a_of(&z, "scanner-2.mesh.home.arpa."), v4(131));
        // ...and a device cannot take it back.
        assert!(matches!(
            z.claim("scanner", v4(131), Owner::Device),
            Claim::Renamed { .. }
        ));
        assert_eq!(a_of(&z, "scanner.mesh.home.arpa."), v4(132));
        assert!(matches!(
            z.taken(&n("scanner.mesh.home.arpa.")),
            Taken::By(Owner::Admin, a) if a == v4(132).as_slice()
        ));
        assert!(matches!(z.taken(&n("nobody.mesh.home.arpa.")), Taken::Free));
        assert!(matches!(
            z.taken(&n("_ipp._tcp.mesh.home.arpa.")),
            Taken::Free
        ));
    }

    #[test]
    fn suffixes_run_out_and_are_refused() {
        let mut z = zone();
        let long = "x".repeat(63);
        for d in 0..MAX_SUFFIX as u8 {
            assert!(!matches!(
                z.claim(&long, v4(d), Owner::Device),
                Claim::Refused(_)
            ));
        }
        assert!(z.hosts.keys().all(|k| k.len() <= 63));
        assert_eq!(
            z.claim(&long, v4(200), Owner::Device),
            Claim::Refused(long.clone())
        );
    }
}
