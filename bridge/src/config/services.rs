//! The services around the bridge: `[web]`, `[dns]`, `[api]` (and
//! `state_dir`), `[discovery]`, `[board]`. One validation function each.

use super::values::{duration, ifname, resolve_path};
use super::{
    bad, default_socket, raw, Board, ConfigError, Discovery, DiscoveryRemote, Dns, Web,
    DEFAULT_STATE_DIR,
};
use ipnet::Ipv4Net;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Validate `[web]`; it listens on the bridge and mesh addresses by default.
pub(super) fn validate_web(
    w: &raw::Web,
    bridge_address: Ipv4Net,
    mesh_address: Ipv4Net,
) -> Result<Web, ConfigError> {
    Ok(Web {
        enabled: w.enabled.unwrap_or(true),
        listen: match &w.listen {
            Some(list) => list
                .iter()
                .map(|s| {
                    s.parse::<SocketAddr>()
                        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 80)))
                        .map_err(|_| {
                            bad(
                                "web.listen",
                                format!("{s:?} is not an address like 10.77.1.1:80"),
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => vec![
                SocketAddr::new(IpAddr::V4(bridge_address.addr()), 80),
                SocketAddr::new(IpAddr::V4(mesh_address.addr()), 80),
            ],
        },
        session_timeout: {
            let t = duration(
                "web.session_timeout",
                w.session_timeout.as_deref().unwrap_or("30m"),
            )?;
            if t < Duration::from_secs(60) || t > Duration::from_secs(7 * 86400) {
                return Err(bad(
                    "web.session_timeout",
                    "must be between 1 minute and 7 days",
                ));
            }
            t
        },
    })
}

/// Validate `[dns]`.
pub(super) fn validate_dns(d: &raw::Dns) -> Result<Dns, ConfigError> {
    Ok(Dns {
    enabled: d.enabled.unwrap_or(true),
    upstream: d
        .upstream
        .as_ref()
        .map(|list| {
            list.iter()
                .map(|s| {
                    s.parse::<std::net::SocketAddr>()
                        .or_else(|_| s.parse::<IpAddr>().map(|ip| std::net::SocketAddr::new(ip, 53)))
                        .map_err(|_| bad("dns.upstream", format!("{s:?} is not an address like 192.168.1.1 or 192.168.1.1:53")))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?,
})
}

/// `state_dir` and `[api]`: where state lives and the local API socket.
pub(super) fn validate_api(raw: &raw::File, base: Option<&Path>) -> (PathBuf, PathBuf) {
    let state_dir = PathBuf::from(raw.state_dir.as_deref().unwrap_or(DEFAULT_STATE_DIR));
    let api_socket = match &raw.api.socket {
        Some(p) => resolve_path(base, p),
        None => default_socket(&state_dir),
    };
    (state_dir, api_socket)
}

/// The service types exposed to the mesh unless `discovery.services` says otherwise.
#[cfg(feature = "dns")]
fn default_services() -> Vec<String> {
    meshbridge_mdns::DEFAULT_SERVICES
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Built without the `dns` feature there is no discovery to expose anything.
#[cfg(not(feature = "dns"))]
fn default_services() -> Vec<String> {
    Vec::new()
}

/// Validate `[discovery]`.
pub(super) fn validate_discovery(
    d: &raw::Discovery,
    own_domain: &str,
    in_tailnet: bool,
) -> Result<Discovery, ConfigError> {
    let services = match &d.services {
        Some(list) => list.clone(),
        None => default_services(),
    };
    for s in &services {
        let parts: Vec<&str> = s.split('.').collect();
        let ok = parts.len() == 2
            && parts[0].starts_with('_')
            && parts[0].len() > 1
            && parts[0].len() <= 16
            && (parts[1] == "_tcp" || parts[1] == "_udp");
        if !ok {
            return Err(bad(
                "discovery.services",
                format!("{s:?} is not a service type like \"_ipp._tcp\""),
            ));
        }
    }
    for o in &d.opt_out {
        let o = o.trim();
        if o.is_empty()
            || o.len() > 253
            || o.chars()
                .any(|c| c.is_whitespace() || super::values::breaks_lines(c))
        {
            return Err(bad(
                "discovery.opt_out",
                format!("{o:?} is not a MAC or a host name"),
            ));
        }
    }
    let mut remotes: Vec<DiscoveryRemote> = Vec::new();
    for r in &d.remote {
        let name = r.name.trim();
        if name.is_empty()
            || name.len() > 32
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad(
                "discovery.remote.name",
                format!(
                    "{:?} is not a short name (letters, digits, '-', '_')",
                    r.name
                ),
            ));
        }
        if remotes.iter().any(|o| o.name == name) {
            return Err(bad(
                "discovery.remote.name",
                format!("{name:?} is used twice"),
            ));
        }
        let server = r
            .server
            .parse::<SocketAddr>()
            .or_else(|_| r.server.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
            .map_err(|_| {
                bad(
                    "discovery.remote.server",
                    format!(
                        "{:?} is not an address like 10.77.0.2 or 10.77.0.2:53",
                        r.server
                    ),
                )
            })?;
        let domain = r
            .domain
            .as_deref()
            .unwrap_or(own_domain)
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if domain.len() > 200 || !domain.split('.').all(label_ok) {
            return Err(bad(
                "discovery.remote.domain",
                format!("{domain:?} is not a domain name"),
            ));
        }
        remotes.push(DiscoveryRemote {
            name: name.to_string(),
            server,
            domain,
        });
    }
    Ok(Discovery {
        enabled: d.enabled.unwrap_or(true),
        announce_on_uplink: d.announce_on_uplink.unwrap_or(false),
        remotes,
        tailnet_boxes: in_tailnet && d.tailnet_boxes.unwrap_or(true),
        services,
        opt_out: d
            .opt_out
            .iter()
            .map(|s| s.trim().to_ascii_lowercase())
            .collect(),
        mdns_name: match &d.mdns_name {
            Some(n) => match n.to_ascii_lowercase() {
                l if !l.is_empty()
                    && l.len() <= 63
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-') =>
                {
                    l
                }
                _ => {
                    return Err(bad(
                        "discovery.mdns_name",
                        format!("{n:?} is not a host name (letters, digits and '-')"),
                    ))
                }
            },
            None => "meshbridge".to_string(),
        },
    })
}

/// Validate `[board]`.
pub(super) fn validate_board(b: &raw::Board) -> Result<Board, ConfigError> {
    let root = PathBuf::from(b.root.as_deref().unwrap_or("/"));
    let reset_button = match &b.reset_button {
        Some(spec) => {
            let (chip, line) = spec
                .rsplit_once(':')
                .and_then(|(c, l)| Some((c, l.parse::<u32>().ok()?)))
                .ok_or_else(|| {
                    bad(
                        "board.reset_button",
                        format!("{spec:?} is not chip:line like \"gpiochip0:17\""),
                    )
                })?;
            let chip = if chip.starts_with('/') {
                PathBuf::from(chip)
            } else {
                root.join("dev").join(chip)
            };
            Some((chip, line))
        }
        None => None,
    };
    Ok(Board {
        status_led: match b.status_led.as_deref() {
            None | Some("auto") => Some("auto".to_string()),
            Some("none") | Some("") => None,
            Some(name) => Some(
                ifname("board.status_led", name)
                    .map_err(|_| bad("board.status_led", format!("{name:?} is not a LED name")))?,
            ),
        },
        watchdog: b.watchdog.unwrap_or(false),
        reset_button,
        reset_active_low: b.reset_active_low.unwrap_or(true),
        root,
    })
}
