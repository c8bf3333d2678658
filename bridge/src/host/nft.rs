//! The daemon's nftables rules for the subnet router and the exit node.
//!
//! Everything lives in one table of our own, `inet meshbridge`, replaced in
//! a single atomic `nft -f` transaction (create-if-missing, delete, create),
//! so applying twice is the same as applying once and an existing ruleset
//! (OpenWrt's fw4, a Debian nftables.conf) is never flushed or touched.
//! [`ruleset`] is pure and unit-tested; [`apply`] and [`remove`] run `nft`.

use crate::config::Routing;
use anyhow::{bail, Context, Result};
use ipnet::Ipv4Net;
use meshbridge_engine::rules::{SPECIAL4, SPECIAL6};
use std::io::Write;
use std::process::{Command, Stdio};

/// The table's name.
pub const TABLE: &str = "meshbridge";

/// `a, b, c`: a table of ranges as nftables set elements.
fn elements<T: std::fmt::Display>(nets: &[T]) -> String {
    nets.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn quote(name: &str) -> String {
    format!("\"{name}\"")
}

/// The whole transaction that installs our table for `routing`.
/// `v6`: the exit node also serves IPv6 (the uplink has it).
pub fn ruleset(routing: &Routing, tun: &str, bridge: Ipv4Net, v6: bool) -> String {
    let Some(uplink) = routing.uplink.as_deref() else {
        return String::new();
    };
    let (tun, up) = (quote(tun), quote(uplink));
    let adv: Vec<String> = routing
        .advertise_routes
        .iter()
        .map(|n| n.to_string())
        .collect();
    let mut t = String::new();
    // Create-if-missing then delete: makes the replace atomic and idempotent
    // with nft versions that lack `destroy`.
    t += &format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n");
    t += &format!("table inet {TABLE} {{\n");
    // Not "the internet": the engine's own table (`meshbridge_engine::rules`).
    let special4 = elements(&SPECIAL4);
    t += &format!(
        "  set special4 {{ type ipv4_addr; flags interval; elements = {{ {special4} }} }}\n"
    );
    if v6 {
        let special6 = elements(&SPECIAL6);
        t += &format!(
            "  set special6 {{ type ipv6_addr; flags interval; elements = {{ {special6} }} }}\n"
        );
    }
    if !adv.is_empty() {
        t += &format!(
            "  set advertised4 {{ type ipv4_addr; flags interval; elements = {{ {} }} }}\n",
            adv.join(", ")
        );
    }
    t += "  chain forward {\n    type filter hook forward priority filter; policy accept;\n";
    t += &format!("    iifname {tun} jump from_mesh\n  }}\n");
    t += "  chain from_mesh {\n";
    t += "    ct state established,related accept\n";
    if !adv.is_empty() {
        // Bridged devices reach the LAN only when allowed.
        if !routing.bridge_allow_lan {
            t += &format!(
                "    ip saddr {} ip daddr @advertised4 drop\n",
                bridge.trunc()
            );
        }
        t += &format!("    oifname {up} ip daddr @advertised4 accept\n");
    }
    if routing.exit_node || routing.bridge_internet {
        if !routing.exit_node_allow_lan {
            t += "    ip daddr @special4 drop\n";
        }
        if v6 && routing.exit_node {
            if !routing.exit_node_allow_lan {
                t += "    ip6 daddr @special6 drop\n";
            }
        } else {
            t += "    meta nfproto ipv6 drop\n";
        }
        t += &format!("    oifname {up} accept\n");
    }
    t += "    drop\n  }\n";
    t += "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n";
    if !adv.is_empty() && routing.snat_subnet_routes {
        t += &format!("    iifname {tun} oifname {up} ip daddr @advertised4 masquerade\n");
    }
    if routing.exit_node || routing.bridge_internet {
        if adv.is_empty() {
            t += &format!("    iifname {tun} oifname {up} masquerade\n");
        } else {
            t += &format!("    iifname {tun} oifname {up} ip daddr != @advertised4 masquerade\n");
            if v6 && routing.exit_node {
                t += &format!("    iifname {tun} oifname {up} meta nfproto ipv6 masquerade\n");
            }
        }
    }
    t += "  }\n}\n";
    t
}

/// What the uplink (any link but the bridge, the mesh TUN and loopback) may
/// not reach: the box's own bridge and mesh addresses and, through the box,
/// anything on the bridge or in the mesh. Installed always, with or without
/// `[routing]`: the box must not become a door from the home LAN into the
/// bridge just because the LAN has a route to it.
#[derive(Debug, Clone)]
pub struct Guard {
    /// The kernel bridge.
    pub bridge: String,
    /// The host-side mesh TUN.
    pub tun: String,
    /// The box's own addresses on the bridge and in the mesh.
    pub own: Vec<std::net::Ipv4Addr>,
    /// TCP ports `[web] listen` opens on every address (0.0.0.0 / [::]).
    pub open_ports: Vec<u16>,
}

/// The guard's chains, as a second block for our table (nft merges blocks of
/// one table in one transaction). Replies to connections the bridge or the
/// mesh opened (`ct state established,related`) still pass.
pub fn guard_rules(g: &Guard) -> String {
    let ours = format!("{{ \"lo\", {}, {} }}", quote(&g.bridge), quote(&g.tun));
    let mut t = format!("table inet {TABLE} {{\n");
    t += "  chain guard_input {\n    type filter hook input priority filter; policy accept;\n";
    t += &format!("    iifname {ours} accept\n");
    t += "    ct state established,related accept\n";
    if !g.open_ports.is_empty() {
        let ports: Vec<String> = g.open_ports.iter().map(|p| p.to_string()).collect();
        t += &format!("    tcp dport {{ {} }} accept\n", ports.join(", "));
    }
    if !g.own.is_empty() {
        let own: Vec<String> = g.own.iter().map(|a| a.to_string()).collect();
        t += &format!("    ip daddr {{ {} }} drop\n", own.join(", "));
    }
    t += "  }\n";
    t += "  chain guard_forward {\n    type filter hook forward priority filter; policy accept;\n";
    t += &format!("    iifname {ours} accept\n");
    t += "    ct state established,related accept\n";
    t += &format!(
        "    oifname {{ {}, {} }} drop\n",
        quote(&g.bridge),
        quote(&g.tun)
    );
    t += "  }\n}\n";
    t
}

/// The whole transaction: the routing rules (if any) plus the guard.
pub fn with_guard(routing_rules: String, g: &Guard) -> String {
    let mut t = if routing_rules.is_empty() {
        format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n")
    } else {
        routing_rules
    };
    t += &guard_rules(g);
    t
}

fn nft(input: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .arg("-f")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (install the nftables package)")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Install (or replace) our table.
pub fn apply(text: &str) -> Result<()> {
    if text.is_empty() {
        return remove();
    }
    nft(text).context("installing the meshbridge nftables table")
}

/// Remove our table if it exists. Nothing else is touched.
pub fn remove() -> Result<()> {
    nft(&format!(
        "table inet {TABLE} {{}}\ndelete table inet {TABLE}\n"
    ))
    .context("removing the meshbridge nftables table")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing() -> Routing {
        Routing {
            uplink: Some("eth0".into()),
            advertise_routes: vec!["192.168.1.0/24".parse().unwrap()],
            snat_subnet_routes: true,
            exit_node: true,
            exit_node_allow_lan: false,
            use_exit_node: None,
            bridge_internet: true,
            bridge_allow_lan: false,
        }
    }

    #[test]
    fn guest_exit_node_with_snat_subnet_routes() {
        let r = ruleset(
            &routing(),
            "mb-host0",
            "10.77.1.1/24".parse().unwrap(),
            false,
        );
        assert!(r.starts_with("table inet meshbridge {}\ndelete table inet meshbridge\n"));
        assert!(r.contains("elements = { 192.168.1.0/24 }"));
        // The engine's table of special ranges, rendered as before.
        assert!(r.contains("elements = { 0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16, 172.16.0.0/12, 192.168.0.0/16, 224.0.0.0/4, 240.0.0.0/4 }"));
        assert!(r.contains("ip saddr 10.77.1.0/24 ip daddr @advertised4 drop"));
        assert!(r.contains("oifname \"eth0\" ip daddr @advertised4 accept"));
        // Private ranges are dropped after the advertised LAN was accepted.
        let adv = r.find("@advertised4 accept").unwrap();
        let special = r.find("ip daddr @special4 drop").unwrap();
        assert!(adv < special);
        assert!(
            r.contains("iifname \"mb-host0\" oifname \"eth0\" ip daddr @advertised4 masquerade")
        );
        assert!(
            r.contains("iifname \"mb-host0\" oifname \"eth0\" ip daddr != @advertised4 masquerade")
        );
    }

    #[test]
    fn options_change_the_rules() {
        let mut r = routing();
        r.snat_subnet_routes = false;
        r.exit_node_allow_lan = true;
        r.bridge_allow_lan = true;
        let t = ruleset(&r, "mb-host0", "10.77.1.1/24".parse().unwrap(), false);
        assert!(!t.contains("ip daddr @advertised4 masquerade"));
        assert!(!t.contains("@special4 drop"));
        assert!(!t.contains("ip saddr 10.77.1.0/24"));
        r.exit_node = false;
        r.bridge_internet = false;
        let t = ruleset(&r, "mb-host0", "10.77.1.1/24".parse().unwrap(), false);
        assert!(!t.contains("masquerade"));
        assert!(t.contains("oifname \"eth0\" ip daddr @advertised4 accept"));
        r.uplink = None;
        assert_eq!(
            ruleset(&r, "mb-host0", "10.77.1.1/24".parse().unwrap(), false),
            ""
        );
    }

    fn guard() -> Guard {
        Guard {
            bridge: "br-mesh".into(),
            tun: "mb-host0".into(),
            own: vec!["10.77.1.1".parse().unwrap(), "10.77.0.1".parse().unwrap()],
            open_ports: vec![],
        }
    }

    #[test]
    fn the_guard_is_installed_without_routing_and_drops_the_uplink() {
        let t = with_guard(String::new(), &guard());
        assert!(t.starts_with("table inet meshbridge {}\ndelete table inet meshbridge\n"));
        assert!(t.contains("iifname { \"lo\", \"br-mesh\", \"mb-host0\" } accept"));
        assert!(t.contains("ip daddr { 10.77.1.1, 10.77.0.1 } drop"));
        assert!(t.contains("oifname { \"br-mesh\", \"mb-host0\" } drop"));
        assert!(!t.contains("tcp dport"));
        // Replies pass before the drops.
        let est = t.find("ct state established,related accept").unwrap();
        assert!(est < t.find("ip daddr {").unwrap());
        let mut g = guard();
        g.open_ports = vec![80, 8080];
        let t = with_guard(
            ruleset(
                &routing(),
                "mb-host0",
                "10.77.1.1/24".parse().unwrap(),
                false,
            ),
            &g,
        );
        // One delete, then the routing block, then the guard block.
        assert_eq!(t.matches("delete table").count(), 1);
        assert!(t.contains("chain from_mesh"));
        let open = t.find("tcp dport { 80, 8080 } accept").unwrap();
        assert!(open < t.find("ip daddr { 10.77.1.1").unwrap());
    }

    #[test]
    fn ipv6_exit_rules_only_when_the_uplink_has_ipv6() {
        let r = ruleset(
            &routing(),
            "mb-host0",
            "10.77.1.1/24".parse().unwrap(),
            true,
        );
        assert!(r.contains("ip6 daddr @special6 drop"));
        assert!(r.contains("set special6 { type ipv6_addr; flags interval; elements = { ::/127, ::ffff:0.0.0.0/96, fc00::/7, fe80::/10, ff00::/8 }"));
        assert!(r.contains("meta nfproto ipv6 masquerade"));
        assert!(!r.contains("meta nfproto ipv6 drop"));
        let r = ruleset(
            &routing(),
            "mb-host0",
            "10.77.1.1/24".parse().unwrap(),
            false,
        );
        assert!(r.contains("meta nfproto ipv6 drop"));
    }
}
