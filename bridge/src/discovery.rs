//! Names and discovery in the daemon: starting the box's DNS server with
//! its zone, keeping the zone in step with leases, browsing the bridge over
//! mDNS for the discovery proxy, and the box's own `.local` name on the
//! bridge and the uplink. The protocols are the sans-IO cores of the
//! `meshbridge-mdns` crate; this module only wires them to the engine and
//! to sockets.

use crate::config::Config;
use crate::daemon::fmt_mac;
use crate::engine::Engine;
use crate::os;
use anyhow::{Context, Result};
use meshbridge_dhcp as dhcp;
use std::net::IpAddr;
use tokio::net::UdpSocket;

/// The box's own mDNS name on the bridge and (if configured) the uplink.
#[derive(Default)]
pub struct MdnsLinks {
    pub(crate) bridge: Option<meshbridge_mdns::Responder>,
    pub(crate) uplink: Option<(meshbridge_mdns::Responder, UdpSocket, ipnet::Ipv4Net)>,
}

impl MdnsLinks {
    pub(crate) async fn start(config: &Config, handle: &rtnetlink::Handle) -> MdnsLinks {
        if !config.discovery.enabled {
            return MdnsLinks::default();
        }
        let now = std::time::Instant::now();
        let name = &config.discovery.mdns_name;
        let bridge = Some(meshbridge_mdns::Responder::new(
            now,
            name,
            config.bridge_address.addr(),
        ));
        let mut uplink = None;
        if let Some(up) = &config.routing.uplink {
            match os::ipv4_of(handle, up).await {
                Ok(Some(net)) => match crate::mdns_link::uplink_socket(net.addr()) {
                    Ok(sock) => {
                        uplink = Some((
                            meshbridge_mdns::Responder::new(now, name, net.addr()),
                            sock,
                            net,
                        ))
                    }
                    Err(e) => tracing::warn!("mDNS on the uplink {up}: {e:#}"),
                },
                Ok(None) => tracing::warn!(
                    "mDNS on the uplink: {up} has no IPv4 address; not announcing there"
                ),
                Err(e) => tracing::warn!("mDNS on the uplink: {e:#}"),
            }
        }
        MdnsLinks { bridge, uplink }
    }

    pub(crate) fn poll_timeout(&self) -> Option<tokio::time::Instant> {
        let b = self.bridge.as_ref().and_then(|r| r.poll_timeout());
        let u = self.uplink.as_ref().and_then(|(r, _, _)| r.poll_timeout());
        [b, u]
            .into_iter()
            .flatten()
            .min()
            .map(tokio::time::Instant::from_std)
    }

    pub(crate) fn handle_timeout(&mut self) {
        let now = std::time::Instant::now();
        if let Some(r) = self.bridge.as_mut() {
            r.handle_timeout(now);
        }
        if let Some((r, _, _)) = self.uplink.as_mut() {
            r.handle_timeout(now);
        }
    }

    /// Send what the responders want sent; log what they have to say.
    pub(crate) fn pump(&mut self, engine: &mut Engine) {
        if let Some(r) = self.bridge.as_mut() {
            while let Some(p) = r.poll_transmit() {
                engine.send_mdns(&p);
            }
            while let Some(e) = r.poll_event() {
                log_responder("bridge", e);
            }
        }
        if let Some((r, sock, _)) = self.uplink.as_mut() {
            while let Some(p) = r.poll_transmit() {
                if let Err(e) = sock.try_send_to(&p, crate::mdns_link::group()) {
                    tracing::debug!("mDNS on the uplink: {e}");
                }
            }
            while let Some(e) = r.poll_event() {
                log_responder("uplink", e);
            }
        }
    }
}

fn log_responder(link: &str, e: meshbridge_mdns::ResponderEvent) {
    match e {
        meshbridge_mdns::ResponderEvent::NameClaimed(n) => {
            tracing::info!("mDNS: this box is {n}.local on the {link}")
        }
        meshbridge_mdns::ResponderEvent::Conflict { lost } => {
            tracing::warn!("mDNS: {lost}.local is taken on the {link}; trying the next name")
        }
        other => tracing::debug!("mDNS: {other:?}"),
    }
}

/// Keep the DNS zone in step with the leases.
pub(crate) fn update_names(names: &crate::dns::SharedNames, ev: &dhcp::Event) {
    let Ok(mut z) = names.write() else { return };
    match ev {
        dhcp::Event::Bound { ip, hostname, .. } => {
            z.names.remove_addr(IpAddr::V4(*ip));
            if let Some(h) = hostname {
                z.names.set(h, vec![IpAddr::V4(*ip)]);
            }
        }
        dhcp::Event::Released { ip, .. }
        | dhcp::Event::Declined { ip, .. }
        | dhcp::Event::Expired { ip, .. } => z.names.remove_addr(IpAddr::V4(*ip)),
        _ => {}
    }
}

/// Addresses of the devices that opted out of discovery (by MAC or hostname).
pub(crate) fn opt_out_addrs(config: &Config, engine: &Engine) -> Vec<IpAddr> {
    if config.discovery.opt_out.is_empty() {
        return Vec::new();
    }
    engine
        .dhcp()
        .leases()
        .filter(|l| {
            let mac = fmt_mac(&l.mac);
            let host = l.hostname.as_deref().map(|h| h.to_ascii_lowercase());
            config
                .discovery
                .opt_out
                .iter()
                .any(|o| *o == mac || Some(o) == host.as_ref())
        })
        .map(|l| IpAddr::V4(l.ip))
        .collect()
}

/// Ask the bridge which services are there (mDNS browse for the allow list).
pub(crate) fn browse(config: &Config, engine: &mut Engine) {
    if !config.discovery.enabled {
        return;
    }
    let types: Vec<hickory_server::proto::rr::Name> = config
        .discovery
        .services
        .iter()
        .filter_map(|s| hickory_server::proto::rr::Name::from_ascii(format!("{s}.local.")).ok())
        .collect();
    engine.send_mdns(&meshbridge_mdns::browse_query(&types));
}

/// Start the box's DNS server with the current leases and peers.
pub(crate) async fn start_dns(
    config: &Config,
    engine: &Engine,
) -> Result<Option<crate::dns::SharedNames>> {
    if !config.dns_server.enabled {
        return Ok(None);
    }
    let own = [
        IpAddr::V4(config.bridge_address.addr()),
        IpAddr::V4(config.mesh_address.addr()),
    ];
    let reverse = vec![
        ipnet::IpNet::V4(config.bridge_address.trunc()),
        ipnet::IpNet::V4(config.mesh_address.trunc()),
    ];
    let mut zone = meshbridge_mdns::Names::new(&config.domain, reverse).context("dhcp.domain")?;
    let proxy = config.discovery.enabled.then(|| {
        meshbridge_mdns::Proxy::new(
            zone.domain(),
            &config.discovery.services,
            opt_out_addrs(config, engine),
        )
    });
    zone.set("meshbridge", own.to_vec());
    let mut clients = vec![
        ipnet::IpNet::V4(config.bridge_address.trunc()),
        ipnet::IpNet::V4(config.mesh_address.trunc()),
    ];
    for p in &config.peers {
        let hosts: Vec<IpAddr> = p
            .allowed_ips
            .iter()
            .filter(|n| n.prefix_len() == n.max_prefix_len())
            .map(|n| n.addr())
            .collect();
        zone.set(&p.name, hosts);
        clients.extend(p.allowed_ips.iter().filter(|n| n.prefix_len() > 0).copied());
    }
    let now = std::time::SystemTime::now();
    for l in engine.dhcp().leases().filter(|l| l.is_active(now)) {
        if let Some(h) = &l.hostname {
            zone.set(h, vec![IpAddr::V4(l.ip)]);
        }
    }
    let upstream = config
        .dns_server
        .upstream
        .clone()
        .unwrap_or_else(|| crate::dns::system_upstreams(&own));
    if upstream.is_empty() {
        tracing::warn!(
            "DNS: no upstream resolver found (set dns.upstream): only the box's own names resolve"
        );
    }
    let names = std::sync::Arc::new(std::sync::RwLock::new(crate::dns::Zone {
        names: zone,
        cache: meshbridge_mdns::Cache::new(),
        proxy,
    }));
    crate::dns::start(names.clone(), &own, upstream.clone(), clients).await?;
    tracing::info!(
        "DNS on {} and {}: names under {}, forwarding to {}",
        own[0],
        own[1],
        config.domain,
        if upstream.is_empty() {
            "nobody".to_string()
        } else {
            upstream
                .iter()
                .map(|u| u.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    Ok(Some(names))
}
