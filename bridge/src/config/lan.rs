//! `[bridge]` and `[dhcp]`: the bridged segment. The bridge's own address
//! defaults from the DHCP range, so `bridge.address` is checked with `[dhcp]`.

use super::values::{display_name, duration, ifname, ipv4};
use super::{bad, raw, ConfigError};
use ipnet::Ipv4Net;
use meshbridge_types::Mac;
use std::net::Ipv4Addr;
use std::time::Duration;

/// `[bridge]`'s interface names, validated.
pub(super) struct Bridge {
    pub bridge_name: String,
    pub bridge_ports: Vec<String>,
    pub tap_name: String,
    /// Every interface name meshbridge uses, with its key (no duplicates).
    pub names: Vec<(&'static str, String)>,
}

/// Validate `[bridge]`'s names; `tun_name` is `mesh.tun` (no name twice).
pub(super) fn validate_bridge(b: &raw::Bridge, tun_name: &str) -> Result<Bridge, ConfigError> {
    let bridge_name = ifname("bridge.name", b.name.as_deref().unwrap_or("br-mesh"))?;
    let bridge_ports = b
        .ports
        .iter()
        .map(|p| ifname("bridge.ports", p))
        .collect::<Result<Vec<_>, _>>()?;
    let tap_name = ifname("bridge.tap", b.tap.as_deref().unwrap_or("mb-tap0"))?;
    let mut names = vec![
        ("bridge.name", bridge_name.clone()),
        ("bridge.tap", tap_name.clone()),
        ("mesh.tun", tun_name.to_string()),
    ];
    names.extend(bridge_ports.iter().map(|p| ("bridge.ports", p.clone())));
    for (i, (k, n)) in names.iter().enumerate() {
        if names[..i].iter().any(|(_, m)| m == n) {
            return Err(bad(*k, format!("interface name {n:?} is used twice")));
        }
    }
    Ok(Bridge {
        bridge_name,
        bridge_ports,
        tap_name,
        names,
    })
}

/// `[dhcp]` (and `bridge.address`), validated.
pub(super) struct Dhcp {
    pub enabled: bool,
    pub bridge_address: Ipv4Net,
    pub range: (Ipv4Addr, Ipv4Addr),
    pub lease_time: Duration,
    pub dns: Vec<Ipv4Addr>,
    pub domain: String,
    pub persist_interval: Duration,
    pub probe_interval: Option<Duration>,
    pub reservations: Vec<(Mac, Ipv4Addr)>,
    pub device_names: Vec<(Mac, String)>,
    pub device_tailnet: Vec<(Mac, super::tailnet::DeviceTailnet)>,
    pub device_node_tags: Vec<(Mac, Vec<String>)>,
}

/// Validate `[dhcp]` and `bridge.address` (`b`); the bridge subnet must not
/// overlap the mesh (`mesh_address`).
pub(super) fn validate_dhcp(
    d: &raw::Dhcp,
    b: &raw::Bridge,
    mesh_address: Ipv4Net,
) -> Result<Dhcp, ConfigError> {
    let (start, end) =
        match &d.range {
            Some(r) => {
                let (a, z) = r.split_once('-').ok_or_else(|| {
                    bad(
                        "dhcp.range",
                        format!("{r:?} is not a range like \"10.77.1.100-10.77.1.200\""),
                    )
                })?;
                (ipv4("dhcp.range", a)?, ipv4("dhcp.range", z)?)
            }
            None => return Err(bad(
                "dhcp.range",
                "missing: the mesh addresses for bridged devices, like \"10.77.1.100-10.77.1.200\"",
            )),
        };
    if u32::from(start) > u32::from(end) {
        return Err(bad("dhcp.range", format!("{start} comes after {end}")));
    }
    let bridge_address: Ipv4Net = match &b.address {
        Some(a) => a.parse().map_err(|_| {
            bad(
                "bridge.address",
                format!("{a:?} is not an IPv4 address with prefix, like 10.77.1.1/24"),
            )
        })?,
        None => {
            // The /24 that holds the range, with its first host as the gateway.
            let net = Ipv4Net::new(start, 24)
                .map_err(|e| bad("dhcp.range", e.to_string()))?
                .trunc();
            let gw = net
                .hosts()
                .next()
                .ok_or_else(|| bad("bridge.address", "no room for a gateway address"))?;
            Ipv4Net::new(gw, 24).map_err(|e| bad("bridge.address", e.to_string()))?
        }
    };
    let subnet = bridge_address.trunc();
    if !subnet.contains(&start) || !subnet.contains(&end) {
        return Err(bad(
            "dhcp.range",
            format!("{start}-{end} is not inside the bridge subnet {subnet} (set bridge.address)"),
        ));
    }
    if (u32::from(start)..=u32::from(end)).contains(&u32::from(bridge_address.addr())) {
        return Err(bad(
            "dhcp.range",
            format!(
                "the range contains the box's own bridge address {}",
                bridge_address.addr()
            ),
        ));
    }
    if start == subnet.network() || end == subnet.broadcast() {
        return Err(bad(
            "dhcp.range",
            format!("the range must not include the network or broadcast address of {subnet}"),
        ));
    }
    let mesh_net = mesh_address.trunc();
    if mesh_net.contains(&subnet.network()) || subnet.contains(&mesh_net.network()) {
        return Err(bad(
            "bridge.address",
            format!("the bridge subnet {subnet} overlaps the mesh subnet {mesh_net}; give bridged devices their own prefix (e.g. 10.77.1.0/24 next to 10.77.0.0/24)"),
        ));
    }
    let lease_time = duration("dhcp.lease_time", d.lease_time.as_deref().unwrap_or("1h"))?;
    if lease_time < Duration::from_secs(60) || lease_time > Duration::from_secs(365 * 86400) {
        return Err(bad(
            "dhcp.lease_time",
            "must be between 1 minute and 1 year",
        ));
    }
    let dns = match &d.dns {
        Some(list) => list
            .iter()
            .map(|s| ipv4("dhcp.dns", s))
            .collect::<Result<Vec<_>, _>>()?,
        None => vec![bridge_address.addr()],
    };
    let domain = d
        .domain
        .clone()
        .unwrap_or_else(|| "mesh.home.arpa".to_string());
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if domain.len() > 253 || !domain.split('.').all(label_ok) {
        return Err(bad(
            "dhcp.domain",
            format!("{domain:?} is not a valid domain name"),
        ));
    }
    let persist_interval = duration(
        "dhcp.persist_interval",
        d.persist_interval.as_deref().unwrap_or("0"),
    )?;
    if persist_interval > Duration::from_secs(3600) {
        return Err(bad(
            "dhcp.persist_interval",
            "must be at most 1h (leases written later are lost in a power cut)",
        ));
    }
    let probe_interval = match duration(
        "dhcp.probe_interval",
        d.probe_interval.as_deref().unwrap_or("60s"),
    )? {
        z if z.is_zero() => None,
        p if p < Duration::from_secs(5) => {
            return Err(bad("dhcp.probe_interval", "must be 0 (off) or at least 5s"))
        }
        p => Some(p),
    };
    let mut reservations = Vec::new();
    let mut device_names: Vec<(Mac, String)> = Vec::new();
    let mut device_tailnet = Vec::new();
    let mut device_node_tags = Vec::new();
    for (i, r) in d.reservations.iter().enumerate() {
        let mac = r.mac.parse::<Mac>().map_err(|_| {
            bad(
                format!("dhcp.reservations[{i}].mac"),
                format!("{:?} is not a MAC like aa:bb:cc:dd:ee:ff", r.mac),
            )
        })?;
        let switches = r.tailnet.is_some() || r.tags.is_some();
        if switches
            && d.reservations[..i]
                .iter()
                .any(|o| o.mac.parse::<Mac>().ok() == Some(mac))
        {
            return Err(bad(
                format!("dhcp.reservations[{i}].mac"),
                "this MAC has an entry already: one entry per device",
            ));
        }
        if let Some(t) = &r.tailnet {
            let mode = super::tailnet::DeviceTailnet::parse(t).ok_or_else(|| {
                bad(
                    format!("dhcp.reservations[{i}].tailnet"),
                    format!("{t:?} is not \"node\" (its own tailnet node), \"behind\" (behind the box) or \"off\" (not in the tailnet)"),
                )
            })?;
            device_tailnet.push((mac, mode));
        }
        if let Some(tags) = &r.tags {
            if let Some(t) = tags.iter().find(|t| !super::tailnet::valid_tag(t)) {
                return Err(bad(
                    format!("dhcp.reservations[{i}].tags"),
                    format!("{t:?} is not a tag like \"tag:printer\""),
                ));
            }
            if tags.len() > 16 {
                return Err(bad(
                    format!("dhcp.reservations[{i}].tags"),
                    "at most 16 tags",
                ));
            }
            device_node_tags.push((mac, tags.clone()));
        }
        if let Some(n) = &r.name {
            // A display name ("Office printer"); its DNS name is made from it
            // ("office-printer"), so it needs a letter or digit.
            let n = display_name(&format!("dhcp.reservations[{i}].name"), n)?;
            let n = n.as_str();
            if device_names
                .iter()
                .any(|(m, x)| *m == mac || x.eq_ignore_ascii_case(n))
            {
                return Err(bad(
                    format!("dhcp.reservations[{i}].name"),
                    format!("{n:?} or this MAC is named twice"),
                ));
            }
            device_names.push((mac, n.to_string()));
        } else if r.ip.is_none() && !switches {
            return Err(bad(
                format!("dhcp.reservations[{i}]"),
                "give an ip, a name, or both",
            ));
        }
        let Some(ip) = &r.ip else { continue };
        let ip = ipv4(&format!("dhcp.reservations[{i}].ip"), ip)?;
        if !subnet.contains(&ip)
            || ip == bridge_address.addr()
            || ip == subnet.network()
            || ip == subnet.broadcast()
        {
            return Err(bad(
                format!("dhcp.reservations[{i}].ip"),
                format!("{ip} is not a free host address in {subnet}"),
            ));
        }
        if reservations.iter().any(|(m, a)| *m == mac || *a == ip) {
            return Err(bad(
                format!("dhcp.reservations[{i}]"),
                "MAC or address is reserved twice",
            ));
        }
        reservations.push((mac, ip));
    }

    Ok(Dhcp {
        enabled: d.enabled.unwrap_or(true),
        bridge_address,
        range: (start, end),
        lease_time,
        dns,
        domain,
        persist_interval,
        probe_interval,
        reservations,
        device_names,
        device_tailnet,
        device_node_tags,
    })
}
