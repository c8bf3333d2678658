//! Health checks, "online" and the status LED as plain functions over data:
//! the daemon gathers a [`Facts`] (engine state, config flags, the cached
//! [`HostFacts`], the wall clock) and these decide. No I/O here, so every
//! check is unit-tested both ways (fires / does not fire).

use crate::host::proc::HostFacts;
use meshbridge_board::LedState;
use meshbridge_mesh::REJECT_AFTER_TIME;
use meshbridge_web::proto::Health;
use std::time::{Duration, SystemTime};

/// Is a peer with this handshake age online? Its session can still carry
/// data: the same rule as the engine's exit-node kill switch
/// ([`REJECT_AFTER_TIME`]).
pub fn online(last_handshake: Option<Duration>) -> bool {
    last_handshake.is_some_and(|d| d < REJECT_AFTER_TIME)
}

/// Everything the checks look at.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    /// The bridge's name (for the message).
    pub bridge_name: &'a str,
    /// The DHCP server stepped back because another one answers.
    pub dhcp_suspended: bool,
    /// The other DHCP server, as "<server id> (MAC <mac>)", when known.
    pub dhcp_foreign_server: Option<String>,
    /// Serving DHCP on the bridge at all (`dhcp.enabled`).
    pub dhcp_enabled: bool,
    /// The subnet router or exit node is configured (needs IPv4 forwarding).
    pub needs_forwarding: bool,
    /// Read from the host, off the event loop.
    pub host: &'a HostFacts,
    /// Wall clock now.
    pub now: SystemTime,
    /// Saved settings wait for a restart.
    pub restart_pending: bool,
}

/// Before this (2020-09-13) the clock has not been set.
const CLOCK_SET_AFTER_S: u64 = 1_600_000_000;

/// Has the wall clock been set (NTP)?
pub fn clock_set(now: SystemTime) -> bool {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .is_ok_and(|d| d.as_secs() > CLOCK_SET_AFTER_S)
}

/// IPv4 forwarding is needed but off.
pub fn forwarding_broken(f: &Facts<'_>) -> bool {
    f.needs_forwarding && !f.host.ip_forward
}

fn check(check: &str, ok: bool, good: &str, bad: String) -> Health {
    Health {
        check: check.into(),
        ok,
        message: if ok { good.into() } else { bad },
    }
}

/// The health list of the status page, in its fixed order.
pub fn checks(f: &Facts<'_>) -> Vec<Health> {
    let mut health = Vec::new();
    if f.dhcp_enabled {
        health.push(check(
            "dhcp",
            !f.dhcp_suspended,
            "serving addresses on the bridge",
            format!(
                "Another DHCP server{} answers on bridge {}: meshbridge is not handing out new addresses (existing leases are still renewed). Turn that server off or take its port out of the bridge.",
                f.dhcp_foreign_server.as_deref().map(|s| format!(" ({s})")).unwrap_or_default(),
                f.bridge_name
            ),
        ));
    }
    health.push(check(
        "uplink",
        f.host.has_default_route(),
        "the box has a route to the internet",
        "No uplink: the box has no default route, so peers elsewhere cannot reach it. Check the uplink cable or Wi-Fi settings, and that the router gives the box an address.".into(),
    ));
    if f.needs_forwarding {
        health.push(check(
            "ip_forwarding",
            !forwarding_broken(f),
            "IPv4 forwarding is on",
            "IPv4 forwarding is off, so the subnet router and exit node do not work: run `sysctl -w net.ipv4.ip_forward=1` or restart meshbridge.".into(),
        ));
    }
    health.push(check(
        "clock",
        clock_set(f.now),
        "the clock is set",
        "The clock is not set (no NTP yet?): lease times are wrong until it is. Check the uplink and NTP.".into(),
    ));
    if f.restart_pending {
        health.push(check(
            "restart",
            false,
            "",
            "Saved settings wait for a restart: restart meshbridge (System page) to apply them."
                .into(),
        ));
    }
    health
}

/// Problems that can appear while running, as log lines with the fix.
pub fn running_problems(f: &Facts<'_>) -> Vec<&'static str> {
    let mut out = Vec::new();
    if forwarding_broken(f) {
        out.push("IPv4 forwarding was turned off (net.ipv4.ip_forward = 0): the subnet router and exit node do not work. Fix: sysctl -w net.ipv4.ip_forward=1, or restart meshbridge");
    }
    out
}

/// What the status LED shows.
pub fn led_state(f: &Facts<'_>, any_peer_online: bool) -> LedState {
    if (f.dhcp_enabled && f.dhcp_suspended) || forwarding_broken(f) {
        LedState::Error
    } else if any_peer_online {
        LedState::Online
    } else {
        LedState::NoMesh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good_host() -> HostFacts {
        HostFacts {
            default_route_v4: vec!["eth0".into()],
            ip_forward: true,
            ..HostFacts::default()
        }
    }

    fn facts(host: &HostFacts) -> Facts<'_> {
        Facts {
            bridge_name: "br0",
            dhcp_suspended: false,
            dhcp_foreign_server: None,
            dhcp_enabled: true,
            needs_forwarding: true,
            host,
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            restart_pending: false,
        }
    }

    fn get<'h>(h: &'h [Health], name: &str) -> Option<&'h Health> {
        h.iter().find(|c| c.check == name)
    }

    #[test]
    fn all_good_reports_every_check_ok() {
        let host = good_host();
        let h = checks(&facts(&host));
        let names: Vec<&str> = h.iter().map(|c| c.check.as_str()).collect();
        assert_eq!(names, ["dhcp", "uplink", "ip_forwarding", "clock"]);
        assert!(h.iter().all(|c| c.ok), "{h:?}");
        assert!(running_problems(&facts(&host)).is_empty());
        assert_eq!(led_state(&facts(&host), false), LedState::NoMesh);
        assert_eq!(led_state(&facts(&host), true), LedState::Online);
    }

    #[test]
    fn foreign_dhcp_server_fires_and_names_the_bridge() {
        let host = good_host();
        let f = Facts {
            dhcp_suspended: true,
            dhcp_foreign_server: Some("192.168.50.1 (MAC 00:1a:2b:3c:4d:5e)".into()),
            ..facts(&host)
        };
        let c = get(&checks(&f), "dhcp").unwrap().clone();
        assert!(!c.ok);
        assert!(c.message.contains("bridge br0"), "{}", c.message);
        assert!(c.message.contains("MAC 00:1a:2b:3c:4d:5e"), "{}", c.message);
        assert_eq!(led_state(&f, true), LedState::Error);
    }

    #[test]
    fn dhcp_check_is_absent_when_dhcp_is_off() {
        let host = good_host();
        let f = Facts {
            dhcp_enabled: false,
            dhcp_suspended: true,
            ..facts(&host)
        };
        assert!(get(&checks(&f), "dhcp").is_none());
        assert_eq!(led_state(&f, true), LedState::Online);
    }

    #[test]
    fn no_default_route_fires_uplink() {
        let host = HostFacts {
            default_route_v4: vec![],
            ..good_host()
        };
        let h = checks(&facts(&host));
        assert!(!get(&h, "uplink").unwrap().ok);
        let v6_only = HostFacts {
            default_route_v6: vec!["eth0".into()],
            ..host
        };
        assert!(get(&checks(&facts(&v6_only)), "uplink").unwrap().ok);
    }

    #[test]
    fn forwarding_off_fires_only_when_routing_needs_it() {
        let host = HostFacts {
            ip_forward: false,
            ..good_host()
        };
        let f = facts(&host);
        assert!(!get(&checks(&f), "ip_forwarding").unwrap().ok);
        assert_eq!(running_problems(&f).len(), 1);
        assert_eq!(led_state(&f, true), LedState::Error);
        let no_routing = Facts {
            needs_forwarding: false,
            ..f
        };
        assert!(get(&checks(&no_routing), "ip_forwarding").is_none());
        assert!(running_problems(&no_routing).is_empty());
        assert_eq!(led_state(&no_routing, true), LedState::Online);
    }

    #[test]
    fn unset_clock_fires() {
        let host = good_host();
        let f = Facts {
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(86_400),
            ..facts(&host)
        };
        assert!(!get(&checks(&f), "clock").unwrap().ok);
    }

    #[test]
    fn pending_restart_is_listed_as_not_ok() {
        let host = good_host();
        assert!(get(&checks(&facts(&host)), "restart").is_none());
        let f = Facts {
            restart_pending: true,
            ..facts(&host)
        };
        assert!(!get(&checks(&f), "restart").unwrap().ok);
    }

    #[test]
    fn online_means_a_handshake_younger_than_three_minutes() {
        assert!(!online(None));
        assert!(online(Some(Duration::from_secs(0))));
        assert!(online(Some(Duration::from_secs(179))));
        assert!(!online(Some(Duration::from_secs(180))));
    }
}
