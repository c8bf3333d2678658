//! The sysctls the daemon sets (and puts back): IPv4/IPv6 forwarding, the
//! uplink's `accept_ra`, the bridge's `arp_ignore`, `disable_ipv6` on links
//! we own. Reading the current forwarding state for health checks is in
//! [`super::proc`].

use anyhow::{Context, Result};

/// `net.ipv4.ip_forward`.
pub(crate) const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// `net.ipv6.conf.all.forwarding`.
const IP6_FORWARD: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// Best effort write (IPv6 may be compiled out).
fn set(path: &str, value: &str) {
    let _ = std::fs::write(path, value);
}

fn arp_ignore_path(bridge: &str) -> String {
    format!("/proc/sys/net/ipv4/conf/{bridge}/arp_ignore")
}

fn accept_ra_path(uplink: &str) -> String {
    format!("/proc/sys/net/ipv6/conf/{uplink}/accept_ra")
}

/// Disable IPv6 on a link we own (no link-local address, no router solicitations).
pub fn disable_ipv6(name: &str) {
    set(&format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
}

/// Stop the kernel from answering ARP on the bridge for addresses that are
/// not on the bridge itself (Linux answers for any local address by default,
/// which would shadow the box's own ARP responder). Returns the old value.
pub fn quiet_bridge_arp(bridge: &str) -> Option<String> {
    let path = arp_ignore_path(bridge);
    let old = std::fs::read_to_string(&path).ok()?.trim().to_string();
    if old != "1" {
        set(&path, "1");
    }
    Some(old)
}

/// Put the bridge's `arp_ignore` back.
pub fn restore_bridge_arp(bridge: &str, old: &str) {
    set(&arp_ignore_path(bridge), old);
}

/// Turn IPv4 forwarding on; returns the previous value if we changed it.
pub fn enable_forwarding() -> Result<Option<String>> {
    let old = std::fs::read_to_string(IP_FORWARD)
        .context("reading net.ipv4.ip_forward")?
        .trim()
        .to_string();
    if old == "1" {
        return Ok(None);
    }
    std::fs::write(IP_FORWARD, "1").context("turning on net.ipv4.ip_forward")?;
    Ok(Some(old))
}

/// Put IPv4 forwarding back the way it was.
pub fn restore_forwarding(old: &str) {
    set(IP_FORWARD, old);
}

/// Turn IPv6 forwarding on; returns the previous value if we changed it.
/// With forwarding on, Linux ignores router advertisements unless
/// `accept_ra` is 2: set that on the uplink (returned too) so the box keeps
/// its own SLAAC address and default route.
pub fn enable_forwarding6(uplink: &str) -> Result<(Option<String>, Option<String>)> {
    let old = std::fs::read_to_string(IP6_FORWARD)
        .context("reading net.ipv6.conf.all.forwarding")?
        .trim()
        .to_string();
    let ra_path = accept_ra_path(uplink);
    let mut old_ra = None;
    if let Ok(ra) = std::fs::read_to_string(&ra_path) {
        if ra.trim() == "1" {
            std::fs::write(&ra_path, "2").context("setting accept_ra=2 on the uplink")?;
            old_ra = Some("1".to_string());
        }
    }
    if old == "1" {
        return Ok((None, old_ra));
    }
    std::fs::write(IP6_FORWARD, "1").context("turning on net.ipv6.conf.all.forwarding")?;
    Ok((Some(old), old_ra))
}

/// Put IPv6 forwarding (and the uplink's accept_ra) back.
pub fn restore_forwarding6(old: Option<&str>, uplink_ra: Option<(&str, &str)>) {
    if let Some(old) = old {
        set(IP6_FORWARD, old);
    }
    if let Some((uplink, ra)) = uplink_ra {
        set(&accept_ra_path(uplink), ra);
    }
}
