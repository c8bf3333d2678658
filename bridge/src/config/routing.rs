//! `[routing]`: the subnet router and the exit node.

use super::values::ifname;
use super::{bad, raw, ConfigError, Peer, Routing};
use ipnet::Ipv4Net;

/// Whether `v` can name a tailnet node: a host name, its MagicDNS name
/// (`laptop.tailnet.example`, a trailing dot allowed) or a tailnet address.
fn tailnet_node_name(v: &str) -> bool {
    if v.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let v = v.strip_suffix('.').unwrap_or(v);
    !v.is_empty()
        && v.len() <= 253
        && v.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Validate `[routing]`; `names` are the interfaces meshbridge already uses
/// (the uplink must be another one), `bridge` and `mesh` the two subnets.
/// `tailnet`: `[tailnet]` is set, so `use_exit_node` may also name a
/// tailnet node, found in the netmap while running.
pub(super) fn validate_routing(
    r: &raw::Routing,
    peers: &[Peer],
    names: &[(&str, String)],
    bridge: Ipv4Net,
    mesh: Ipv4Net,
    tailnet: bool,
) -> Result<Routing, ConfigError> {
    let uplink = r
        .uplink
        .as_deref()
        .map(|u| ifname("routing.uplink", u))
        .transpose()?;
    if let Some(u) = &uplink {
        if names.iter().any(|(_, n)| n == u) {
            return Err(bad("routing.uplink", format!("{u:?} is also used as a bridge port or meshbridge device; the uplink must be a separate interface")));
        }
    }
    let mut advertise_routes = Vec::new();
    for s in &r.advertise_routes {
        let n: Ipv4Net = s.parse().map_err(|_| {
            bad(
                "routing.advertise_routes",
                format!("{s:?} is not an IPv4 prefix like 192.168.1.0/24"),
            )
        })?;
        let n = n.trunc();
        if n.prefix_len() == 0 {
            return Err(bad(
                "routing.advertise_routes",
                "0.0.0.0/0 is not a subnet route: use exit_node = true",
            ));
        }
        if n.contains(&bridge.network())
            || bridge.contains(&n.network())
            || n.contains(&mesh.network())
            || mesh.contains(&n.network())
        {
            return Err(bad(
                "routing.advertise_routes",
                format!("{n} overlaps the mesh or bridge subnet"),
            ));
        }
        advertise_routes.push(n);
    }
    let exit_node = r.exit_node.unwrap_or(false);
    let use_exit_node = r.use_exit_node.clone();
    if let Some(name) = &use_exit_node {
        let static_peer = peers.iter().any(|p| &p.name == name);
        if !static_peer && tailnet && !tailnet_node_name(name) {
            return Err(bad(
                "routing.use_exit_node",
                format!("{name:?} is neither the name of a [[mesh.peers]] entry nor a tailnet node (a host name like \"laptop\", its MagicDNS name, or its tailnet address)"),
            ));
        }
        if !static_peer && !tailnet {
            return Err(bad(
                "routing.use_exit_node",
                format!("no peer is named {name:?}; use the name of a [[mesh.peers]] entry"),
            ));
        }
        if exit_node {
            return Err(bad(
                "routing.use_exit_node",
                "a box cannot be an exit node and use one at the same time",
            ));
        }
    }
    if uplink.is_none() && (exit_node || !advertise_routes.is_empty()) {
        return Err(bad("routing.uplink", "missing: advertise_routes and exit_node need the interface toward the home LAN, like \"eth0\""));
    }
    Ok(Routing {
        bridge_internet: r.bridge_internet.unwrap_or(uplink.is_some()) && uplink.is_some(),
        uplink,
        advertise_routes,
        snat_subnet_routes: r.snat_subnet_routes.unwrap_or(true),
        exit_node,
        exit_node_allow_lan: r.exit_node_allow_lan.unwrap_or(false),
        use_exit_node,
        bridge_allow_lan: r.bridge_allow_lan.unwrap_or(false),
    })
}
