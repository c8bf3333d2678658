//! Names and discovery in the daemon: starting the box's DNS server with
//! its zone, keeping the zone in step with leases, browsing the bridge over
//! mDNS for the discovery proxy, and the box's own `.local` name on the
//! bridge and the uplink. The protocols are the sans-IO cores of the
//! `meshbridge-mdns` crate; this module only wires them to the engine and
//! to sockets.

use crate::config::Config;
use crate::host::netlink;
use anyhow::{Context, Result};
use meshbridge_dhcp as dhcp;
use meshbridge_engine::Engine;
use meshbridge_mdns::{Claim, Owner};
use std::net::IpAddr;
use tokio::net::UdpSocket;

/// The box's own mDNS name on the bridge and (if configured) the uplink.
#[derive(Default)]
pub struct MdnsLinks {
    pub(crate) bridge: Option<meshbridge_mdns::Responder>,
    pub(crate) uplink: Option<(meshbridge_mdns::Responder, UdpSocket, ipnet::Ipv4Net)>,
}

impl MdnsLinks {
    pub(crate) async fn start(config: &Config, handle: &crate::host::netlink::Handle) -> MdnsLinks {
        if !config.discovery.enabled {
            return MdnsLinks::default();
        }
        let now = std::time::Instant::now();
        let name = &config.discovery.mdns_name;
        // The web page is announced (`_http._tcp`) on a link where it is served.
        let web_port = |addr: std::net::Ipv4Addr| {
            if !config.web.enabled {
                return None;
            }
            config
                .web
                .listen
                .iter()
                .find(|l| l.ip() == IpAddr::V4(addr) || l.ip().is_unspecified())
                .map(|l| l.port())
        };
        let with_web = |r: meshbridge_mdns::Responder, addr| match web_port(addr) {
            Some(p) => r.with_http(p),
            None => r,
        };
        let bridge = Some(with_web(
            meshbridge_mdns::Responder::new(now, name, config.bridge_address.addr()),
            config.bridge_address.addr(),
        ));
        let mut uplink = None;
        if let Some(up) = &config.routing.uplink {
            match netlink::ipv4_of(handle, up).await {
                Ok(Some(net)) => match crate::mdns_link::uplink_socket(net.addr()) {
                    Ok(sock) => {
                        uplink = Some((
                            with_web(
                                meshbridge_mdns::Responder::new(now, name, net.addr()),
                                net.addr(),
                            ),
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

/// Claim `name` for `addrs` in the zone; a clash is logged (the event at
/// info, the names and addresses, personal data, at debug).
pub(crate) fn claim(
    zone: &mut meshbridge_mdns::Names,
    name: &str,
    addrs: Vec<IpAddr>,
    owner: Owner,
) {
    let what = match owner {
        Owner::Device => "a device's DHCP hostname",
        Owner::Admin => "a device's name",
        Owner::Peer => "a peer's name",
        Owner::Box => "the box's name",
    };
    match zone.claim(name, addrs.clone(), owner) {
        Claim::Renamed { wanted, got } => {
            tracing::info!(
                "DNS: {what} clashed with a taken or reserved name: served with a suffix ({} clashes so far)",
                zone.clashes()
            );
            tracing::debug!(
                "DNS: {wanted:?} for {addrs:?} is taken or reserved: served as {got:?}"
            );
        }
        Claim::Refused(wanted) => {
            tracing::info!(
                "DNS: {what} clashed with a taken or reserved name: not served ({} clashes so far)",
                zone.clashes()
            );
            tracing::debug!("DNS: {wanted:?} for {addrs:?} is taken or reserved: not served");
        }
        _ => {}
    }
}

/// Put the active leases' names in the zone: the names the admin gave
/// first (they outrank what devices call themselves), then DHCP hostnames.
fn claim_devices(zone: &mut meshbridge_mdns::Names, config: &Config, engine: &Engine) {
    let now = std::time::SystemTime::now();
    for l in engine.dhcp().leases().filter(|l| l.is_active(now)) {
        if let Some((_, n)) = config.device_names.iter().find(|(m, _)| *m == l.mac) {
            claim(zone, n, vec![IpAddr::V4(l.ip)], Owner::Admin);
        }
    }
    for l in engine.dhcp().leases().filter(|l| l.is_active(now)) {
        if let Some(h) = &l.hostname {
            claim(zone, h, vec![IpAddr::V4(l.ip)], Owner::Device);
        }
    }
}

/// Keep the DNS zone in step with the leases.
pub(crate) fn update_names(names: &crate::dns::SharedNames, ev: &dhcp::Event) {
    let Ok(mut z) = names.write() else { return };
    match ev {
        dhcp::Event::Bound { ip, hostname, .. } => {
            z.names.remove_addr(IpAddr::V4(*ip));
            if let Some(h) = hostname {
                claim(&mut z.names, h, vec![IpAddr::V4(*ip)], Owner::Device);
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
            let mac = l.mac.to_string();
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
) -> Result<Option<(crate::dns::SharedNames, crate::dns::Handler)>> {
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
    claim(&mut zone, "meshbridge", own.to_vec(), Owner::Box);
    zone.reserve(&config.discovery.mdns_name);
    let mut clients = vec![
        ipnet::IpNet::V4(config.bridge_address.trunc()),
        ipnet::IpNet::V4(config.mesh_address.trunc()),
    ];
    for p in config.peers.iter().filter(|p| p.enabled) {
        let hosts: Vec<IpAddr> = p
            .allowed_ips
            .iter()
            .filter(|n| n.prefix_len() == n.max_prefix_len())
            .map(|n| n.addr())
            .collect();
        claim(&mut zone, &p.name, hosts, Owner::Peer);
        clients.extend(p.allowed_ips.iter().filter(|n| n.prefix_len() > 0).copied());
    }
    claim_devices(&mut zone, config, engine);
    let upstream = match config.dns_server.upstream.clone() {
        Some(list) => crate::dns::Upstreams::Fixed(list),
        None => crate::dns::Upstreams::system(own.to_vec()),
    };
    let now_up = upstream.current();
    if now_up.is_empty() {
        tracing::warn!(
            "DNS: no upstream resolver yet (none in resolv.conf; set dns.upstream to fix one): only the box's own names resolve until the system has one (read again every {} s)",
            crate::dns::RESOLV_REFRESH.as_secs()
        );
    }
    let names = std::sync::Arc::new(std::sync::RwLock::new(crate::dns::Zone {
        names: zone,
        cache: meshbridge_mdns::Cache::new(),
        proxy,
        tailnet: Default::default(),
    }));
    let server = crate::dns::start(names.clone(), &own, upstream, clients).await?;
    tracing::info!(
        "DNS on {} and {}: names under {}, forwarding to {}",
        own[0],
        own[1],
        config.domain,
        crate::dns::fmt_upstreams(&now_up)
    );
    Ok(Some((names, server)))
}

/// Everything about names and discovery the daemon's loop talks to.
pub struct Discovery {
    names: Option<crate::dns::SharedNames>,
    /// The DNS server, and the addresses added to it since the start.
    dns: Option<(crate::dns::Handler, Vec<IpAddr>)>,
    links: MdnsLinks,
    /// Site-to-site discovery: other boxes' services announced here.
    remotes: Option<crate::discovery_remote::Remotes>,
    buf: Vec<u8>,
    browse_soon: bool,
}

impl Discovery {
    /// Start the DNS server and the box's mDNS names (errors are logged: the
    /// box still bridges without them).
    pub async fn start(
        config: &Config,
        engine: &Engine,
        handle: &crate::host::netlink::Handle,
    ) -> Discovery {
        let (names, dns) = match start_dns(config, engine).await {
            Ok(Some((n, h))) => (Some(n), Some((h, Vec::new()))),
            Ok(None) => (None, None),
            Err(e) => {
                tracing::error!("DNS server not started: {e:#}");
                (None, None)
            }
        };
        let links = MdnsLinks::start(config, handle).await;
        let remotes = crate::discovery_remote::Remotes::start(config, links.uplink.is_some());
        Discovery {
            names,
            dns,
            links,
            remotes,
            buf: vec![0; 9000],
            browse_soon: false,
        }
    }

    /// Look at an engine event; returns true if it was an mDNS packet (consumed here).
    pub fn on_event(
        &mut self,
        config: &Config,
        engine: &Engine,
        ev: &meshbridge_engine::Event,
    ) -> bool {
        use meshbridge_engine::Event;
        match ev {
            Event::Dhcp(d) => {
                if let Some(names) = &self.names {
                    update_names(names, d);
                    if let dhcp::Event::Bound { mac, ip, .. } = d {
                        if let Some((_, n)) = config.device_names.iter().find(|(m, _)| m == mac) {
                            if let Ok(mut z) = names.write() {
                                claim(&mut z.names, n, vec![IpAddr::V4(*ip)], Owner::Admin);
                            }
                        }
                    }
                    if let dhcp::Event::Bound { .. } = d {
                        let opt_out = opt_out_addrs(config, engine);
                        if let Ok(mut z) = names.write() {
                            if let Some(p) = z.proxy.as_mut() {
                                p.set_opt_out(opt_out);
                            }
                        }
                        self.browse_soon = true;
                    }
                }
                false
            }
            Event::Mdns { src, payload } => {
                let now = std::time::Instant::now();
                if let Some(r) = self.links.bridge.as_mut() {
                    r.handle_packet(now, *src, payload);
                }
                if let Some(r) = self.remotes.as_mut() {
                    r.bridge.handle_packet(now, payload);
                }
                if let Some(names) = &self.names {
                    if let Ok(mut z) = names.write() {
                        if z.proxy.is_some() {
                            let _ = z.cache.handle_packet(now, IpAddr::V4(*src), payload);
                        }
                    }
                }
                true
            }
            _ => false,
        }
    }

    /// After a batch of events: browse if a device appeared, send what the responders want sent.
    pub fn after_events(&mut self, config: &Config, engine: &mut Engine) {
        if std::mem::take(&mut self.browse_soon) && self.names.is_some() {
            browse(config, engine);
        }
        self.links.pump(engine);
        if let Some(r) = self.remotes.as_mut() {
            r.pump(engine, self.links.uplink.as_ref().map(|(_, s, _)| s));
        }
    }

    /// When the responders' timers are due.
    pub fn poll_timeout(&self) -> Option<tokio::time::Instant> {
        let remote = self
            .remotes
            .as_ref()
            .and_then(|r| r.poll_timeout())
            .map(tokio::time::Instant::from_std);
        [self.links.poll_timeout(), remote]
            .into_iter()
            .flatten()
            .min()
    }

    /// Run due responder timers.
    pub fn handle_timeout(&mut self) {
        self.links.handle_timeout();
        if let Some(r) = self.remotes.as_mut() {
            r.handle_timeout();
        }
    }

    /// Wait for an mDNS packet on the uplink (forever if there is no uplink
    /// socket). Replies from remote boxes' DNS servers are handled here too
    /// (then `None`: nothing for [`Discovery::on_uplink`]).
    pub async fn recv_uplink(&mut self) -> Option<(std::net::Ipv4Addr, usize)> {
        let (remotes, links, buf) = (&mut self.remotes, &self.links, &mut self.buf);
        let remote = async {
            match remotes.as_mut() {
                Some(r) => r.recv().await,
                None => std::future::pending().await,
            }
        };
        let uplink = async {
            match links.uplink.as_ref() {
                Some((_, sock, _)) => match sock.recv_from(buf).await {
                    Ok((n, std::net::SocketAddr::V4(from))) => Some((*from.ip(), n)),
                    _ => None,
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = uplink => r,
            _ = remote => None,
        }
    }

    /// Hand a packet from [`Discovery::recv_uplink`] to the uplink responder.
    pub fn on_uplink(&mut self, from: std::net::Ipv4Addr, n: usize) {
        if let Some((resp, _, net)) = self.links.uplink.as_mut() {
            if crate::mdns_link::on_segment(*net, from) {
                let now = std::time::Instant::now();
                resp.handle_packet(now, from, &self.buf[..n]);
                if let Some(u) = self.remotes.as_mut().and_then(|r| r.uplink.as_mut()) {
                    u.handle_packet(now, &self.buf[..n]);
                }
            }
        }
    }

    /// The config changed while running: peer and device names, the allow
    /// list and the opted-out devices follow.
    pub fn reconfigure(&mut self, old: &Config, new: &Config, engine: &mut Engine) {
        let Some(names) = &self.names else { return };
        let opt_out = opt_out_addrs(new, engine);
        let Ok(mut z) = names.write() else { return };
        let hosts = |p: &crate::config::Peer| -> Vec<IpAddr> {
            p.allowed_ips
                .iter()
                .filter(|n| n.prefix_len() == n.max_prefix_len())
                .map(|n| n.addr())
                .collect()
        };
        for p in &old.peers {
            for a in hosts(p) {
                z.names.remove_addr(a);
            }
        }
        for l in engine.dhcp().leases() {
            z.names.remove_addr(IpAddr::V4(l.ip));
        }
        for p in new.peers.iter().filter(|p| p.enabled) {
            claim(&mut z.names, &p.name, hosts(p), Owner::Peer);
        }
        claim_devices(&mut z.names, new, engine);
        if let Some(p) = z.proxy.as_mut() {
            p.set_allow(&new.discovery.services);
            p.set_opt_out(opt_out);
        }
        drop(z);
        if new.discovery.services != old.discovery.services {
            browse(new, engine);
        }
    }

    /// Serve DNS on one more of the box's addresses (its tailnet address,
    /// so that tailnet peers reach the names the box serves); once per
    /// address, errors logged.
    pub async fn serve_dns_on(&mut self, ip: IpAddr) {
        // The tailnet address is up: tailnet boxes are browsed from it.
        if let Some(r) = self.remotes.as_mut() {
            r.open_tailnet_socket();
        }
        let Some((handler, added)) = self.dns.as_mut() else {
            return;
        };
        if added.contains(&ip) {
            return;
        }
        match handler.serve(&[ip]).await {
            Ok(()) => {
                added.push(ip);
                tracing::info!("DNS on {ip} too");
            }
            Err(e) => tracing::warn!("DNS on {ip}: {e:#}"),
        }
    }

    /// A tailnet map update for site-to-site discovery: the box's tailnet
    /// addresses and the peers that are meshbridge boxes with a DNS-SD proxy.
    pub fn set_tailnet_boxes(
        &mut self,
        addresses: &[ipnet::IpNet],
        boxes: &[meshbridge_tailnet::netmap::DnsSdBox],
    ) {
        if let Some(r) = self.remotes.as_mut() {
            r.set_tailnet(addresses, boxes);
        }
    }

    /// The remote boxes browsed, for `meshbridge status`.
    pub fn remotes_status(&self) -> Vec<meshbridge_web::proto::DiscoveryRemoteStatus> {
        self.remotes
            .as_ref()
            .map(|r| r.status())
            .unwrap_or_default()
    }

    /// A tailnet map update: MagicDNS answers the tailnet's names, and
    /// their short names are claimed in the box's zone (peers above
    /// devices, the box's own name as the box's), so a bridged device can
    /// never take them.
    pub fn set_tailnet(
        &mut self,
        self_name: &str,
        addresses: &[ipnet::IpNet],
        peers: &[meshbridge_tailnet::netmap::TailnetPeer],
        dns: Option<&meshbridge_tailnet::tailcfg::DnsConfig>,
    ) {
        let Some(names) = &self.names else { return };
        let magic = crate::tailnet_dns::MagicDns::new(self_name, addresses, peers, dns);
        let Ok(mut z) = names.write() else { return };
        for (c, owner, addrs) in z.set_tailnet(magic) {
            let what = if owner == Owner::Box {
                "the box's tailnet name"
            } else {
                "a tailnet peer's name"
            };
            tracing::info!(
                "DNS: {what} clashed with a taken or reserved name in the box's zone: not served there ({} clashes so far)",
                z.names.clashes()
            );
            tracing::debug!("DNS: {c:?} for {addrs:?}");
        }
    }

    /// A device was forgotten: its names go.
    pub fn forget_addr(&mut self, addr: IpAddr) {
        if let Some(names) = &self.names {
            if let Ok(mut z) = names.write() {
                z.names.remove_addr(addr);
            }
        }
    }

    /// Services seen on the bridge, for the discovery page.
    pub fn services(
        &self,
        config: &Config,
        engine: &Engine,
    ) -> Vec<meshbridge_web::proto::ServiceInfo> {
        use hickory_server::proto::rr::{RData, RecordType};
        let Some(names) = &self.names else {
            return Vec::new();
        };
        let Ok(z) = names.read() else {
            return Vec::new();
        };
        let now = std::time::Instant::now();
        let opt_out = opt_out_addrs(config, engine);
        let wall = std::time::SystemTime::now();
        let mut out = Vec::new();
        for owner in z.cache.ptr_names(now) {
            let labels: Vec<String> = owner
                .iter()
                .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
                .collect();
            // `_x._tcp.local` only (not subtypes, not the enumeration).
            if labels.len() != 3 || !labels[0].starts_with('_') || labels[0] == "_services" {
                continue;
            }
            let kind = format!("{}.{}", labels[0], labels[1]);
            for (e, _) in z.cache.lookup(now, &owner, RecordType::PTR) {
                let RData::PTR(instance) = &e.record.data else {
                    continue;
                };
                let instance = &instance.0;
                let label = instance
                    .iter()
                    .next()
                    .map(|l| String::from_utf8_lossy(l).into_owned())
                    .unwrap_or_default();
                let (host, port) = z
                    .cache
                    .lookup(now, instance, RecordType::SRV)
                    .into_iter()
                    .find_map(|(e, _)| match &e.record.data {
                        RData::SRV(srv) => Some((srv.target.to_utf8(), srv.port)),
                        _ => None,
                    })
                    .unwrap_or_default();
                let device = match e.source {
                    IpAddr::V4(ip) => engine
                        .dhcp()
                        .leases()
                        .find(|l| l.ip == ip && l.is_active(wall))
                        .and_then(|l| {
                            config
                                .device_names
                                .iter()
                                .find(|(m, _)| *m == l.mac)
                                .map(|(_, n)| n.clone())
                                .or_else(|| l.hostname.clone())
                        }),
                    _ => None,
                };
                let exposed = config.discovery.enabled
                    && z.proxy.as_ref().is_some_and(|p| p.allows(&kind))
                    && !opt_out.contains(&e.source);
                let addr = hickory_server::proto::rr::Name::from_ascii(&host)
                    .ok()
                    .and_then(|h| {
                        z.cache.addresses(now, &h).into_iter().find(|a| {
                            a.is_ipv4() && !matches!(a, IpAddr::V4(v) if v.is_link_local())
                        })
                    })
                    .or(Some(e.source).filter(|a| a.is_ipv4()))
                    .map(|a| a.to_string());
                let txt: Vec<Vec<u8>> = z
                    .cache
                    .lookup(now, instance, RecordType::TXT)
                    .into_iter()
                    .find_map(|(e, _)| match &e.record.data {
                        RData::TXT(t) => Some(t.txt_data.iter().map(|s| s.to_vec()).collect()),
                        _ => None,
                    })
                    .unwrap_or_default();
                let rp = crate::discovery_remote::rp_of(&txt);
                let uri = addr.as_deref().and_then(|a| {
                    meshbridge_web::proto::printer_uri(&kind, a, port, rp.as_deref().unwrap_or(""))
                });
                out.push(meshbridge_web::proto::ServiceInfo {
                    instance: label,
                    kind: kind.clone(),
                    host: host.trim_end_matches('.').to_string(),
                    port,
                    device,
                    exposed,
                    addr,
                    resource_path: rp,
                    uri,
                    site: None,
                });
            }
        }
        if let Some(r) = &self.remotes {
            out.extend(r.services());
        }
        out.sort_by(|a, b| (&a.kind, &a.instance).cmp(&(&b.kind, &b.instance)));
        out.dedup();
        out
    }

    /// Once a minute: forget what ran out, browse the bridge again.
    pub fn tick(&mut self, config: &Config, engine: &mut Engine) {
        if let Some(names) = &self.names {
            if let Ok(mut z) = names.write() {
                z.cache.handle_timeout(std::time::Instant::now());
            }
            browse(config, engine);
        }
    }
}
