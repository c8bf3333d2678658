//! MagicDNS on the box: the tailnet's names from the netmap, answered by the
//! box's DNS server (`dns.rs`) so that bridged devices reach tailnet nodes by
//! name (`laptop.tailnet.test`).
//!
//! Facts (tailscale.com `tailcfg.Node.Name`, `tailcfg.DNSConfig`; headscale
//! `hscontrol/types/node.go`): each node's `Name` is its MagicDNS FQDN with a
//! trailing dot (`<given name>.<base_domain>.`), its `Addresses` are its
//! tailnet addresses, `DNSConfig.ExtraRecords` add name → address records.
//! The MagicDNS suffix is the part of the box's own name after its first
//! label (Headscale's `base_domain`); every name under it is the tailnet's:
//! unknown ones are NXDOMAIN, never forwarded upstream.
//!
//! The zone is built from scratch on every map update; it also says which
//! addresses are tailnet peers (DNS clients the box answers) and which
//! short names it claims in the box's own zone (so that a bridged device
//! can never take a tailnet node's name there).

use hickory_server::proto::rr::rdata::{A, AAAA, PTR, SOA};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use ipnet::IpNet;
use meshbridge_mdns::Lookup;
use meshbridge_tailnet::netmap::TailnetPeer;
use meshbridge_tailnet::tailcfg::DnsConfig;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Time to live of MagicDNS answers (Tailscale's resolver uses 600 s;
/// shorter here, the netmap changes them).
pub const TTL: u32 = 60;

/// The tailnet's names.
#[derive(Debug, Clone, Default)]
pub struct MagicDns {
    /// The MagicDNS suffixes (lowercase, fully qualified).
    suffixes: Vec<Name>,
    /// FQDN (lowercase) → addresses.
    hosts: BTreeMap<Name, Vec<IpAddr>>,
    /// The peers' own addresses (the DNS clients from the tailnet).
    clients: Vec<IpNet>,
    /// Short name → addresses, the box's first: claimed in the box's zone.
    short: Vec<(String, Vec<IpAddr>, bool)>,
    /// A node's address → its MagicDNS name (reverse lookups, `PTR`).
    reverse: BTreeMap<IpAddr, Name>,
}

fn fqdn(s: &str) -> Option<Name> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut n = Name::from_ascii(s).ok()?.to_lowercase();
    n.set_fqdn(true);
    (n.num_labels() >= 2).then_some(n)
}

fn first_label(n: &Name) -> Option<String> {
    n.iter()
        .next()
        .map(|l| String::from_utf8_lossy(l).to_string())
}

impl MagicDns {
    /// The zone from a map update: the box's own name and addresses, the
    /// peers, the DNS settings.
    pub fn new(
        self_name: &str,
        self_addrs: &[IpNet],
        peers: &[TailnetPeer],
        dns: Option<&DnsConfig>,
    ) -> Self {
        let mut z = MagicDns::default();
        let add = |z: &mut MagicDns, name: &str, addrs: Vec<IpAddr>, is_box: bool| {
            let Some(n) = fqdn(name) else { return };
            if addrs.is_empty() {
                return;
            }
            let suffix = n.base_name();
            if suffix.num_labels() >= 1 && !z.suffixes.contains(&suffix) {
                z.suffixes.push(suffix);
            }
            if let Some(label) = first_label(&n) {
                z.short.push((label, addrs.clone(), is_box));
            }
            for a in &addrs {
                z.reverse.entry(*a).or_insert_with(|| n.clone());
            }
            z.hosts.entry(n).or_default().extend(addrs);
        };
        let own: Vec<IpAddr> = self_addrs.iter().map(|a| a.addr()).collect();
        add(&mut z, self_name, own, true);
        for p in peers {
            let addrs: Vec<IpAddr> = p.addresses.iter().map(|a| a.addr()).collect();
            z.clients.extend(p.addresses.iter().copied());
            add(&mut z, &p.name, addrs, false);
        }
        for r in dns.map(|d| d.extra_records.as_slice()).unwrap_or_default() {
            let (Some(n), Ok(ip)) = (fqdn(&r.name), r.value.trim().parse::<IpAddr>()) else {
                continue;
            };
            z.hosts.entry(n).or_default().push(ip);
        }
        for v in z.hosts.values_mut() {
            v.sort();
            v.dedup();
        }
        z
    }

    /// Whether `ip` is a tailnet peer's address (a DNS client to answer).
    pub fn is_client(&self, ip: IpAddr) -> bool {
        self.clients.iter().any(|n| n.contains(&ip))
    }

    /// Short names (first labels) with their addresses, and whether the
    /// name is the box's own, for the box's zone.
    pub fn short_names(&self) -> impl Iterator<Item = (&str, &[IpAddr], bool)> {
        self.short
            .iter()
            .map(|(l, a, b)| (l.as_str(), a.as_slice(), *b))
    }

    /// Every address the zone names (to take out of the box's zone when the
    /// map changes).
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.short.iter().flat_map(|(_, a, _)| a.iter().copied())
    }

    /// The MagicDNS suffixes.
    pub fn suffixes(&self) -> &[Name] {
        &self.suffixes
    }

    fn soa(&self, suffix: &Name) -> Record {
        let ns = Name::from_ascii("ns")
            .ok()
            .and_then(|n| n.append_domain(suffix).ok())
            .unwrap_or_else(|| suffix.clone());
        Record::from_rdata(
            suffix.clone(),
            TTL,
            RData::SOA(SOA::new(ns.clone(), ns, 1, 3600, 600, 86400, TTL)),
        )
    }

    /// Answer `name`/`qtype`: `NotOurs` outside the tailnet's suffixes,
    /// except the reverse names (`in-addr.arpa`, `ip6.arpa`) of the nodes'
    /// addresses, which answer `PTR` with the node's MagicDNS name.
    pub fn lookup(&self, name: &Name, qtype: RecordType) -> Lookup {
        let mut fq = name.to_lowercase();
        fq.set_fqdn(true);
        if let Some(answer) = self.reverse_lookup(&fq, qtype) {
            return answer;
        }
        let Some(suffix) = self
            .suffixes
            .iter()
            .filter(|s| s.zone_of(&fq))
            .max_by_key(|s| s.num_labels())
        else {
            // Extra records outside any suffix are still ours.
            return match self.hosts.get(&fq) {
                Some(addrs) => self.records(&fq, addrs, qtype, None),
                None => Lookup::NotOurs,
            };
        };
        match self.hosts.get(&fq) {
            Some(addrs) => self.records(&fq, addrs, qtype, Some(suffix)),
            None if fq == *suffix && qtype == RecordType::SOA => {
                Lookup::Records(vec![self.soa(suffix)])
            }
            None if fq == *suffix => Lookup::NoData(self.soa(suffix)),
            None => Lookup::NxDomain(self.soa(suffix)),
        }
    }

    /// A reverse name of a node's address (a whole address, not a
    /// network): its `PTR`, or no data for other types.
    fn reverse_lookup(&self, fq: &Name, qtype: RecordType) -> Option<Lookup> {
        let net = fq.parse_arpa_name().ok()?;
        if net.prefix_len() != net.max_prefix_len() {
            return None;
        }
        let target = self.reverse.get(&net.addr())?;
        Some(match qtype {
            RecordType::PTR | RecordType::ANY => Lookup::Records(vec![Record::from_rdata(
                fq.clone(),
                TTL,
                RData::PTR(PTR(target.clone())),
            )]),
            _ => Lookup::NoData(self.soa(&target.base_name())),
        })
    }

    fn records(
        &self,
        fq: &Name,
        addrs: &[IpAddr],
        qtype: RecordType,
        suffix: Option<&Name>,
    ) -> Lookup {
        let records: Vec<Record> = addrs
            .iter()
            .filter_map(|a| match (a, qtype) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => {
                    Some(Record::from_rdata(fq.clone(), TTL, RData::A(A(*v4))))
                }
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => {
                    Some(Record::from_rdata(fq.clone(), TTL, RData::AAAA(AAAA(*v6))))
                }
                _ => None,
            })
            .collect();
        if !records.is_empty() {
            return Lookup::Records(records);
        }
        let apex = suffix.cloned().unwrap_or_else(|| fq.base_name());
        Lookup::NoData(self.soa(&apex))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshbridge_tailnet::keys::NodePublic;
    use meshbridge_tailnet::tailcfg::DnsRecord;

    fn peer(id: u8, name: &str, addrs: &[&str]) -> TailnetPeer {
        TailnetPeer {
            id: i64::from(id),
            name: name.to_string(),
            node_key: NodePublic::from_bytes([id; 32]),
            disco_key: None,
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            allowed_ips: vec![],
            endpoints: vec![],
            derp_region: None,
            online: Some(true),
        }
    }

    fn zone() -> MagicDns {
        let dns = DnsConfig {
            domains: vec!["tailnet.test".into()],
            proxied: true,
            extra_records: vec![DnsRecord {
                name: "printer.tailnet.test".into(),
                kind: String::new(),
                value: "100.64.0.9".into(),
            }],
            ..Default::default()
        };
        MagicDns::new(
            "box.tailnet.test.",
            &[
                "100.64.0.1/32".parse().unwrap(),
                "fd7a:115c:a1e0::1/128".parse().unwrap(),
            ],
            &[peer(
                2,
                "Laptop.tailnet.test",
                &["100.64.0.2/32", "fd7a:115c:a1e0::2/128"],
            )],
            Some(&dns),
        )
    }

    fn addrs(l: Lookup) -> Vec<String> {
        match l {
            Lookup::Records(r) => r.iter().map(|r| r.data.to_string()).collect(),
            other => panic!("{other:?}"),
        }
    }

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn node_addresses_resolve_back_to_their_names() {
        let z = zone();
        let ptr = |a: &str| z.lookup(&Name::from(a.parse::<IpAddr>().unwrap()), RecordType::PTR);
        assert_eq!(addrs(ptr("100.64.0.2")), vec!["laptop.tailnet.test."]);
        assert_eq!(
            addrs(ptr("fd7a:115c:a1e0::2")),
            vec!["laptop.tailnet.test."]
        );
        assert_eq!(addrs(ptr("100.64.0.1")), vec!["box.tailnet.test."]);
        // Not a node's address (an extra record's, another host's): not ours.
        assert!(matches!(ptr("100.64.0.9"), Lookup::NotOurs));
        assert!(matches!(ptr("192.0.2.1"), Lookup::NotOurs));
        // A network's reverse name, or another type: no PTR invented.
        assert!(matches!(
            z.lookup(&n("64.100.in-addr.arpa."), RecordType::PTR),
            Lookup::NotOurs
        ));
        assert!(matches!(
            z.lookup(&n("2.0.64.100.in-addr.arpa."), RecordType::A),
            Lookup::NoData(_)
        ));
    }

    #[test]
    fn peers_the_box_and_extra_records_resolve_by_fqdn() {
        let z = zone();
        assert_eq!(
            addrs(z.lookup(&n("laptop.tailnet.test."), RecordType::A)),
            vec!["100.64.0.2"]
        );
        assert_eq!(
            addrs(z.lookup(&n("LAPTOP.tailnet.test"), RecordType::AAAA)),
            vec!["fd7a:115c:a1e0::2"]
        );
        assert_eq!(
            addrs(z.lookup(&n("box.tailnet.test."), RecordType::A)),
            vec!["100.64.0.1"]
        );
        assert_eq!(
            addrs(z.lookup(&n("printer.tailnet.test."), RecordType::A)),
            vec!["100.64.0.9"]
        );
        assert!(matches!(
            z.lookup(&n("printer.tailnet.test."), RecordType::AAAA),
            Lookup::NoData(_)
        ));
        // Unknown names under the suffix are NXDOMAIN, others not ours.
        assert!(matches!(
            z.lookup(&n("nobody.tailnet.test."), RecordType::A),
            Lookup::NxDomain(_)
        ));
        assert!(matches!(
            z.lookup(&n("tailnet.test."), RecordType::A),
            Lookup::NoData(_)
        ));
        assert!(matches!(
            z.lookup(&n("example.com."), RecordType::A),
            Lookup::NotOurs
        ));
        assert_eq!(z.suffixes(), &[n("tailnet.test.")]);
    }

    #[test]
    fn clients_and_short_names_come_from_the_peers() {
        let z = zone();
        assert!(z.is_client("100.64.0.2".parse().unwrap()));
        assert!(z.is_client("fd7a:115c:a1e0::2".parse().unwrap()));
        assert!(!z.is_client("100.64.0.7".parse().unwrap()));
        assert!(
            !z.is_client("100.64.0.1".parse().unwrap()),
            "the box is no client"
        );
        let short: Vec<(String, bool)> = z
            .short_names()
            .map(|(l, _, b)| (l.to_string(), b))
            .collect();
        assert_eq!(
            short,
            vec![("box".to_string(), true), ("laptop".to_string(), false)]
        );
        // An empty netmap answers nothing.
        let empty = MagicDns::new("", &[], &[], None);
        assert!(matches!(
            empty.lookup(&n("laptop.tailnet.test."), RecordType::A),
            Lookup::NotOurs
        ));
    }
}
