//! The tailnet's rules and names from the netmap, for the engine and the
//! DNS server: the packet filter (`PacketFilter` / named `PacketFilters`,
//! already merged by [`Netmap`]) compiled into the engine's
//! [`meshbridge_engine::filter::Filter`], and what MagicDNS needs (the
//! box's own tailnet name, the DNS settings).

use meshbridge_engine::filter::{Filter, Rule};
use meshbridge_mesh::{PeerSet, PublicKey};
use meshbridge_tailnet::netmap::Netmap;
use meshbridge_tailnet::tailcfg::{DnsConfig, FilterRule};
use std::collections::HashSet;

/// What a map update says about rules and names (beside the peers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetmapRules {
    /// The packet filter rules in force (None: none received yet, which
    /// allows nothing).
    pub filter: Option<Vec<FilterRule>>,
    /// The box's own MagicDNS name (`box.tailnet.test.`).
    pub self_name: String,
    /// The DNS settings (MagicDNS, search domains, extra records).
    pub dns: Option<DnsConfig>,
    /// The peers that are meshbridge boxes with a DNS-SD proxy (site-to-site
    /// discovery browses them with `[discovery] tailnet_boxes`).
    pub dns_sd_boxes: Vec<meshbridge_tailnet::netmap::DnsSdBox>,
}

impl NetmapRules {
    /// Take them from the netmap.
    pub fn from_netmap(nm: &Netmap) -> Self {
        NetmapRules {
            filter: nm.packet_filter().map(<[FilterRule]>::to_vec),
            self_name: nm.self_node().map(|n| n.name.clone()).unwrap_or_default(),
            dns: nm.dns_config().cloned(),
            dns_sd_boxes: meshbridge_tailnet::netmap::dns_sd_boxes(nm),
        }
    }
}

/// Compile the netmap's rules; the second value counts the address specs
/// that did not parse (left out). No rules yet: allow nothing.
pub fn compile_filter(rules: Option<&[FilterRule]>) -> (Filter, usize) {
    let mut bad = 0;
    let compiled = rules
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let (rule, b) = Rule::parse(
                r.src_ips.iter().map(String::as_str),
                r.dst_ports
                    .iter()
                    .map(|d| (d.ip.as_str(), d.ports.first, d.ports.last)),
                &r.ip_proto,
            );
            bad += b;
            rule
        })
        .collect();
    (Filter::new(compiled), bad)
}

/// The peers the filter applies to: the tailnet's, minus keys the config
/// also lists (the config's entry wins the merge: a static peer).
pub fn filtered_peers(tailnet: &PeerSet, static_keys: &[PublicKey]) -> HashSet<PublicKey> {
    tailnet
        .iter()
        .map(|p| p.public_key)
        .filter(|k| !static_keys.contains(k))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshbridge_engine::filter::{Firewall, Verdict};
    use meshbridge_tailnet::mapstream::decode_message;

    /// A Headscale-shaped policy: alice's laptop may reach the bridge's web
    /// port; an app-capability grant (ignored) and a `cap:` source.
    const MAP: &str = r#"{
      "Node": {"ID": 1, "Name": "box.tailnet.test.", "Addresses": ["100.64.0.1/32"]},
      "PacketFilter": [
        {"SrcIPs": ["100.64.0.2", "fd7a:115c:a1e0::2", "cap:foo"],
         "DstPorts": [{"IP": "10.77.1.0/24", "Ports": {"First": 80, "Last": 80}}]},
        {"SrcIPs": ["*"], "CapGrant": [{"Dsts": ["100.64.0.1/32"], "Caps": ["x"]}]}
      ],
      "DNSConfig": {"Domains": ["tailnet.test"], "Proxied": true}
    }"#;

    #[test]
    fn the_netmaps_filter_compiles_and_judges_packets() {
        let mut nm = Netmap::new();
        nm.apply(decode_message(MAP.as_bytes()).unwrap()).unwrap();
        let rules = NetmapRules::from_netmap(&nm);
        assert_eq!(rules.self_name, "box.tailnet.test.");
        assert!(rules.dns.as_ref().unwrap().proxied);
        let (filter, bad) = compile_filter(rules.filter.as_deref());
        assert_eq!(bad, 0);
        assert_eq!(filter.rules().len(), 2);
        let fw = Firewall {
            filter,
            ..Default::default()
        };
        let syn = |src: [u8; 4], port: u16| {
            let mut p = Vec::new();
            etherparse::PacketBuilder::ipv4(src, [10, 77, 1, 100], 64)
                .tcp(5555, port, 1, 1000)
                .syn()
                .write(&mut p, &[])
                .unwrap();
            fw.check_inbound(std::time::Instant::now(), &p)
        };
        assert_eq!(syn([100, 64, 0, 2], 80), Verdict::Allowed);
        assert_eq!(syn([100, 64, 0, 2], 22), Verdict::Denied);
        assert_eq!(
            syn([100, 64, 0, 3], 80),
            Verdict::Denied,
            "the CapGrant rule has no DstPorts: it opens nothing"
        );
        // No filter received yet: nothing is allowed.
        assert!(compile_filter(None).0.rules().is_empty());
    }

    #[test]
    fn a_key_the_config_also_lists_is_a_static_peer() {
        let mut set = PeerSet::new();
        for b in [1u8, 2] {
            set.insert(meshbridge_mesh::PeerConfig {
                name: format!("p{b}"),
                public_key: PublicKey([b; 32]),
                preshared_key: None,
                endpoint: None,
                allowed_ips: vec![],
                persistent_keepalive: None,
            });
        }
        let keys = filtered_peers(&set, &[PublicKey([2; 32])]);
        assert_eq!(keys, [PublicKey([1; 32])].into_iter().collect());
    }
}
