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
use std::io::Write;
use std::process::{Command, Stdio};

/// The table's name.
pub const TABLE: &str = "meshbridge";

/// Ranges that are not "the internet" (mirrors `engine::forward::is_special`).
const SPECIAL4: &str = "0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16, 172.16.0.0/12, 192.168.0.0/16, 224.0.0.0/4, 240.0.0.0/4";

fn quote(name: &str) -> String {
    format!("\"{name}\"")
}

/// The whole transaction that installs our table for `routing`.
/// IPv6 ranges that are not "the internet" (mirrors `engine::forward::is_special6`).
const SPECIAL6: &str = "::/127, ::ffff:0:0/96, fc00::/7, fe80::/10, ff00::/8";

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
    t += &format!(
        "  set special4 {{ type ipv4_addr; flags interval; elements = {{ {SPECIAL4} }} }}\n"
    );
    if v6 {
        t += &format!(
            "  set special6 {{ type ipv6_addr; flags interval; elements = {{ {SPECIAL6} }} }}\n"
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

    #[test]
    fn ipv6_exit_rules_only_when_the_uplink_has_ipv6() {
        let r = ruleset(
            &routing(),
            "mb-host0",
            "10.77.1.1/24".parse().unwrap(),
            true,
        );
        assert!(r.contains("ip6 daddr @special6 drop"));
        assert!(r.contains("set special6 { type ipv6_addr; flags interval; elements = { ::/127"));
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
