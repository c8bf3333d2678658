//! Read-only facts about the host (/proc, /sys): the default routes, IPv4
//! forwarding, the hostname, the network interfaces, the source address
//! towards the internet. [`HostFacts::read`] does the (blocking) reading
//! in one place; [`spawn_refresh`] runs it off the event loop every few
//! seconds and the loop only looks at the cached value. The parsers are
//! pure and tested here.

use std::net::Ipv4Addr;
use std::time::Duration;
use tokio::sync::watch;

/// What the status page, the health checks and the LED need to know about
/// the host. Plain data: tests build it by hand.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// Interfaces the IPv4 default route(s) leave by.
    pub default_route_v4: Vec<String>,
    /// Interfaces the IPv6 default route(s) leave by.
    pub default_route_v6: Vec<String>,
    /// `net.ipv4.ip_forward` is 1.
    pub ip_forward: bool,
    /// `/proc/sys/kernel/hostname`, trimmed ("" if unreadable).
    pub hostname: String,
    /// Network interfaces (`/sys/class/net`), sorted.
    pub interfaces: Vec<String>,
    /// The address the box would send to the internet from, if any.
    pub source_v4: Option<Ipv4Addr>,
}

impl HostFacts {
    /// Is there a default route (IPv4 or IPv6)?
    pub fn has_default_route(&self) -> bool {
        !self.default_route_v4.is_empty() || !self.default_route_v6.is_empty()
    }

    /// Does the IPv4 default route go out of `dev`?
    pub fn default_route_via(&self, dev: &str) -> bool {
        self.default_route_v4.iter().any(|d| d == dev)
    }

    /// Read everything now (blocking: call off the event loop).
    pub fn read() -> HostFacts {
        let text = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let mut interfaces: Vec<String> = std::fs::read_dir("/sys/class/net")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        interfaces.sort();
        HostFacts {
            default_route_v4: default_routes_v4(&text("/proc/net/route")),
            default_route_v6: default_routes_v6(&text("/proc/net/ipv6_route")),
            ip_forward: forwarding_on(),
            hostname: hostname(),
            interfaces,
            source_v4: source_v4(),
        }
    }
}

/// Keep a fresh [`HostFacts`]: read once now (off the loop), then every
/// `every` on a blocking thread. The receiver always holds the latest.
pub async fn spawn_refresh(every: Duration) -> watch::Receiver<HostFacts> {
    let first = tokio::task::spawn_blocking(HostFacts::read)
        .await
        .unwrap_or_default();
    let (tx, rx) = watch::channel(first);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Ok(facts) = tokio::task::spawn_blocking(HostFacts::read).await else {
                continue;
            };
            if tx.send(facts).is_err() {
                return; // the daemon stopped
            }
        }
    });
    rx
}

/// Interfaces of the IPv4 default routes in `/proc/net/route` text.
pub fn default_routes_v4(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 1 && f[1] == "00000000").then(|| f[0].to_string())
        })
        .collect()
}

/// Interfaces of the usable IPv6 default routes in `/proc/net/ipv6_route`
/// text: `::/0`, not a reject route (flag 0x0200), not via `lo`.
pub fn default_routes_v6(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 10
                && f[0].len() == 32
                && f[0].bytes().all(|b| b == b'0')
                && f[1] == "00"
                && u32::from_str_radix(f[8], 16).is_ok_and(|flags| flags & 0x0200 == 0)
                && f[9] != "lo")
                .then(|| f[9].to_string())
        })
        .collect()
}

/// Does `dev` have a global IPv6 address, per `/proc/net/if_inet6` text?
pub fn has_global_v6(if_inet6: &str, dev: &str) -> bool {
    if_inet6.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() == 6 && f[5] == dev && f[3] == "00"
    })
}

/// Whether `uplink` has a global IPv6 address and the box an IPv6 default
/// route; if not, why (for the log).
pub fn uplink_ipv6(uplink: &str) -> Result<(), String> {
    let addrs = std::fs::read_to_string("/proc/net/if_inet6")
        .map_err(|_| "IPv6 is disabled in this kernel".to_string())?;
    let routes = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    uplink_ipv6_from(&addrs, &routes, uplink)
}

/// [`uplink_ipv6`] over the file contents.
pub fn uplink_ipv6_from(if_inet6: &str, ipv6_route: &str, uplink: &str) -> Result<(), String> {
    if !has_global_v6(if_inet6, uplink) {
        return Err(format!("{uplink} has no global IPv6 address"));
    }
    if default_routes_v6(ipv6_route).is_empty() {
        return Err("there is no IPv6 default route".to_string());
    }
    Ok(())
}

/// Whether IPv4 forwarding is on.
pub fn forwarding_on() -> bool {
    std::fs::read_to_string(super::sysctl::IP_FORWARD).is_ok_and(|v| v.trim() == "1")
}

/// The host name ("" if unreadable).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The source address the kernel would use towards the internet.
fn source_v4() -> Option<Ipv4Addr> {
    // connect() on UDP sends nothing; it only picks the route and source.
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    match s.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(a) if !a.is_unspecified() => Some(a),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
eth0\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n";

    #[test]
    fn v4_default_route_is_found_by_interface() {
        assert_eq!(default_routes_v4(ROUTE), vec!["eth0".to_string()]);
        let no_default = ROUTE
            .lines()
            .take(1)
            .chain(ROUTE.lines().skip(2))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(default_routes_v4(&no_default).is_empty());
        // The header line never counts, even if it looked like a route.
        assert!(default_routes_v4("x 00000000\n").is_empty());
    }

    const V6_DEFAULT: &str = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth0\n";
    const V6_REJECT_LO: &str = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n";
    const V6_NET: &str = "20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n";

    #[test]
    fn v6_default_route_skips_reject_and_lo_and_prefixes() {
        assert_eq!(default_routes_v6(V6_DEFAULT), vec!["eth0".to_string()]);
        assert!(default_routes_v6(V6_REJECT_LO).is_empty());
        assert!(default_routes_v6(V6_NET).is_empty());
        // A reject route on a real interface is not a way out either.
        let reject_eth = V6_DEFAULT.replace("00000003", "00000203");
        assert!(default_routes_v6(&reject_eth).is_empty());
    }

    #[test]
    fn uplink_ipv6_needs_global_address_and_default_route() {
        let addrs = "20010db8000000000000000000000001 02 40 00 80     eth0\nfe800000000000000000000000000001 02 40 20 80     eth0\n";
        assert_eq!(uplink_ipv6_from(addrs, V6_DEFAULT, "eth0"), Ok(()));
        assert_eq!(
            uplink_ipv6_from(addrs, V6_REJECT_LO, "eth0"),
            Err("there is no IPv6 default route".to_string())
        );
        let link_local_only = "fe800000000000000000000000000001 02 40 20 80     eth0\n";
        assert_eq!(
            uplink_ipv6_from(link_local_only, V6_DEFAULT, "eth0"),
            Err("eth0 has no global IPv6 address".to_string())
        );
        assert!(uplink_ipv6_from(addrs, V6_DEFAULT, "wlan0").is_err());
    }

    #[test]
    fn facts_answer_route_questions() {
        let mut f = HostFacts::default();
        assert!(!f.has_default_route());
        f.default_route_v6 = vec!["eth0".into()];
        assert!(f.has_default_route());
        assert!(
            !f.default_route_via("eth0"),
            "only IPv4 routes count for the port list"
        );
        f.default_route_v4 = vec!["eth1".into()];
        assert!(f.default_route_via("eth1"));
    }
}
