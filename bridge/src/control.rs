//! Requests from the web page and the CLI, answered inside the daemon's
//! main loop (which owns the engine and the config). Every change is made to
//! the config file, validated as a whole, written atomically, and then
//! applied to the running daemon, or, for the few settings that need it,
//! applied at the next restart.

use crate::api::endpoint;
use crate::config::Config;
use crate::config_edit::{self, Edit, Effect};
use crate::host::proc::HostFacts;
use ipnet::Ipv4Net;
use meshbridge_engine::Engine;
use meshbridge_mesh::{PresharedKey, PrivateKey};
use meshbridge_types::Mac;
use meshbridge_web::peerconf::{self, ClientConfig};
use meshbridge_web::proto::{
    DiscoveryInfo, Failure, PeerAdded, PeerInfo, Reply, Request, SystemInfo,
};
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

/// What a request may touch.
pub struct Ctx<'a> {
    /// The running config (replaced when a change is applied live).
    pub config: &'a mut Config,
    /// The engine.
    pub engine: &'a mut Engine,
    /// The config's peers as the mesh's peer set (and their resolved endpoint names).
    pub peers: &'a mut crate::peers::StaticPeers,
    /// DNS names and discovery.
    pub discovery: &'a mut crate::discovery::Discovery,
    /// When the daemon started.
    pub started: Instant,
    /// The board, for the System page.
    pub board: &'a str,
    /// A saved change waits for a restart.
    pub restart_pending: &'a mut bool,
    /// Restart after answering.
    pub restart_now: &'a mut bool,
    /// Factory reset after answering.
    pub factory_reset: &'a mut bool,
    /// Host facts, cached off the event loop.
    pub host: &'a HostFacts,
    /// The tailnet (`[tailnet]`), for its status and logout.
    pub tailnet: Option<&'a crate::tailnet::Tailnet>,
    /// The bridged devices that are tailnet nodes of their own.
    pub nodes: Option<&'a mut crate::device_nodes::DeviceNodes>,
}

/// The box's DHCP server settings from the config (the server MAC is the engine's).
pub fn dhcp_config(config: &Config, server_mac: Mac) -> meshbridge_dhcp::ServerConfig {
    meshbridge_dhcp::ServerConfig {
        server_ip: config.bridge_address.addr(),
        server_mac,
        subnet_mask: config.bridge_address.netmask(),
        range_start: config.dhcp_range.0,
        range_end: config.dhcp_range.1,
        router: Some(config.bridge_address.addr()),
        dns: config.dns.clone(),
        domain: Some(config.domain.clone()),
        mtu: Some(config.mtu),
        lease_time: config.lease_time,
        reservations: config.reservations.clone(),
        probe_interval: config.probe_interval,
        serve: config.dhcp_enabled,
        // The device nodes' leases are the engine's (`set_node_leases`).
        node_leases: Vec::new(),
        hold_new: None,
        no_node: config
            .device_tailnet
            .iter()
            .map(|(m, _)| *m)
            .filter(|m| config.device_tailnet_of(m) != crate::config::DeviceTailnet::Node)
            .collect(),
    }
}

fn parse_mac(s: &str) -> Result<Mac, Failure> {
    s.parse::<Mac>()
        .map_err(|_| Failure::invalid("mac", format!("{s:?} is not a MAC like aa:bb:cc:dd:ee:ff")))
}

fn peer_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Answer one request.
pub fn handle(request: Request, ctx: &mut Ctx<'_>) -> Reply {
    match request {
        Request::Status => {
            let mut s = crate::api::status(
                ctx.config,
                ctx.engine,
                crate::api::StatusInput {
                    started: ctx.started,
                    board: ctx.board,
                    restart_pending: *ctx.restart_pending,
                    host: ctx.host,
                    now: std::time::SystemTime::now(),
                    mono: Instant::now(),
                },
            );
            s.wifi = crate::wifi::status(&s.devices);
            s.discovery_remotes = ctx.discovery.remotes_status();
            s.tailnet = ctx.tailnet.map(|t| {
                let mut st = t.status();
                st.filter_denied = ctx.engine.stats().tailnet_denied;
                st.filter_flows = ctx.engine.tailnet_flows().unwrap_or(0);
                st.devices = ctx.nodes.as_deref().map(|n| n.status()).unwrap_or_default();
                st
            });
            serde_json::to_value(s).map_err(|e| Failure::new(500, e.to_string()))
        }
        Request::TailnetLogout => {
            let t = ctx.tailnet.ok_or_else(|| {
                Failure::new(
                    409,
                    "the box is not in a tailnet (no [tailnet] section in its config)",
                )
            })?;
            t.logout().map_err(|e| Failure::new(409, e))?;
            Ok(
                json!({"ok": true, "message": "logging out of the tailnet; `meshbridge status` says when it is done"}),
            )
        }
        Request::TailnetLogin { auth_key } => {
            let t = ctx.tailnet.ok_or_else(|| {
                Failure::new(
                    409,
                    "the box is not in a tailnet (no [tailnet] section in its config)",
                )
            })?;
            let auth_key = match auth_key {
                Some(k) => Some(
                    meshbridge_web::proto::check_auth_key(&k.0)
                        .map_err(|e| Failure::invalid("auth_key", e))?
                        .to_string(),
                ),
                None => None,
            };
            t.login(auth_key).map_err(|e| Failure::new(409, e))?;
            Ok(
                json!({"ok": true, "message": "joining the tailnet; `meshbridge status` says when it is done"}),
            )
        }
        Request::System => Ok(json!(SystemInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            board: ctx.board.to_string(),
            hostname: ctx.host.hostname.clone(),
            uptime_s: ctx.started.elapsed().as_secs(),
            config_path: ctx
                .config
                .source
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        })),
        Request::Discovery => {
            let dns = ctx.config.mesh_address.addr().to_string();
            Ok(json!(DiscoveryInfo {
                enabled: ctx.config.discovery.enabled && ctx.config.dns_server.enabled,
                domain: ctx.config.domain.clone(),
                wg_line: format!("DNS = {dns}, {}", ctx.config.domain),
                dns_server: dns,
                services: ctx.discovery.services(ctx.config, ctx.engine),
            }))
        }
        Request::Settings => Ok(settings(ctx.config, ctx.host)),
        Request::SettingsSet { changes } => {
            if changes.is_empty() {
                return Ok(json!({"ok": true, "applied": "live", "message": "nothing changed"}));
            }
            let mut e = Edit::open(ctx.config)?;
            let effect = e.settings(&changes)?;
            let keys: Vec<&str> = changes.keys().map(String::as_str).collect();
            commit_and_apply(
                ctx,
                e,
                effect,
                &format!("settings changed: {}", keys.join(", ")),
            )
        }
        Request::PeerAdd {
            name,
            route_all,
            endpoint,
        } => peer_add(ctx, name.trim(), route_all, endpoint),
        Request::PeerRemove { name } => {
            if ctx.config.routing.use_exit_node.as_deref() == Some(name.as_str()) {
                return Err(Failure::new(409, format!("{name} is the exit node the bridged devices use (routing.use_exit_node): change that first")));
            }
            let mut e = Edit::open(ctx.config)?;
            if !e.remove_peer(&name)? {
                return Err(no_peer(ctx.config, &name));
            }
            commit_and_apply(ctx, e, Effect::Live, &format!("peer {name} removed"))
        }
        Request::PeerSet { name, enabled } => {
            if !enabled && ctx.config.routing.use_exit_node.as_deref() == Some(name.as_str()) {
                return Err(Failure::new(409, format!("{name} is the exit node the bridged devices use (routing.use_exit_node): change that first")));
            }
            let mut e = Edit::open(ctx.config)?;
            if !e.set_peer_enabled(&name, enabled)? {
                return Err(no_peer(ctx.config, &name));
            }
            let what = if enabled { "enabled" } else { "disabled" };
            commit_and_apply(ctx, e, Effect::Live, &format!("peer {name} {what}"))
        }
        Request::DeviceSet {
            mac,
            name,
            pin,
            tailnet,
            tags,
        } => {
            let m = parse_mac(&mac)?;
            let lease_ip = ctx
                .engine
                .dhcp()
                .leases()
                .find(|l| l.mac == m)
                .map(|l| l.ip);
            let known = lease_ip.is_some()
                || ctx.config.reservations.iter().any(|(x, _)| *x == m)
                || ctx.config.device_names.iter().any(|(x, _)| *x == m)
                || ctx.config.device_tailnet.iter().any(|(x, _)| *x == m);
            if !known {
                return Err(Failure::new(404, format!("no device {mac}")));
            }
            let name = name.map(|n| n.trim().to_string());
            let ip = match pin {
                Some(true) => {
                    let ip = ctx
                        .config
                        .reservations
                        .iter()
                        .find(|(x, _)| *x == m)
                        .map(|(_, a)| *a)
                        .or(lease_ip)
                        .ok_or_else(|| {
                            Failure::invalid("pin", "the device has no address to pin")
                        })?;
                    Some(Some(ip))
                }
                Some(false) => Some(None),
                None => None,
            };
            let tailnet = tailnet.map(|t| t.trim().to_string());
            if let Some(t) = tailnet.as_deref().filter(|t| !t.is_empty()) {
                if crate::config::DeviceTailnet::parse(t).is_none() {
                    return Err(Failure::invalid(
                        "tailnet",
                        format!("{t:?} is not \"node\", \"behind\" or \"off\""),
                    ));
                }
            }
            let mut e = Edit::open(ctx.config)?;
            e.set_device(
                &m,
                name.as_deref().map(|n| (!n.is_empty()).then_some(n)),
                ip,
            )?;
            e.set_device_tailnet(
                &m,
                tailnet.as_deref().map(|t| (!t.is_empty()).then_some(t)),
                tags.as_deref().map(|t| (!t.is_empty()).then_some(t)),
            )?;
            // Field names on the page: "name" and "pin".
            let applied = commit_and_apply(ctx, e, Effect::Live, &format!("device {mac} changed"));
            applied.map_err(|mut f| {
                if let Some(k) = &f.field {
                    if k.ends_with(".name") {
                        f.field = Some("name".into());
                    } else if k.ends_with(".tags") {
                        f.field = Some("tags".into());
                    } else if k.ends_with(".tailnet") {
                        f.field = Some("tailnet".into());
                    } else if k.starts_with("dhcp.reservations") {
                        f.field = Some("pin".into());
                    }
                }
                f
            })
        }
        Request::DeviceForget { mac } => {
            let m = parse_mac(&mac)?;
            let named = ctx.config.reservations.iter().any(|(x, _)| *x == m)
                || ctx.config.device_names.iter().any(|(x, _)| *x == m)
                || ctx.config.device_tailnet.iter().any(|(x, _)| *x == m)
                || ctx.config.device_node_tags.iter().any(|(x, _)| *x == m);
            let leased = ctx.engine.dhcp().leases().any(|l| l.mac == m);
            if !named && !leased {
                return Err(Failure::new(404, format!("no device {mac}")));
            }
            if named {
                let mut e = Edit::open(ctx.config)?;
                e.set_device(&m, Some(None), Some(None))?;
                e.set_device_tailnet(&m, Some(None), Some(None))?;
                commit_and_apply(ctx, e, Effect::Live, &format!("device {mac} forgotten"))?;
            }
            if let Some(ip) = ctx
                .engine
                .dhcp()
                .leases()
                .find(|l| l.mac == m)
                .map(|l| l.ip)
            {
                ctx.discovery.forget_addr(IpAddr::V4(ip));
            }
            ctx.engine.forget_device(&m);
            if let Some(n) = ctx.nodes.as_deref_mut() {
                if n.forget(&m) {
                    tracing::info!("device {mac}: its tailnet node is logged out and removed");
                    let leases = n.leases();
                    let hold = n.hold_new();
                    if let Err(e) = ctx.engine.set_node_leases(leases, hold) {
                        tracing::warn!("tailnet: device node addresses: {e}");
                    }
                }
            }
            tracing::info!("device {mac} forgotten");
            Ok(json!({"ok": true}))
        }
        Request::Backup => config_edit::backup(ctx.config).map(serde_json::Value::String),
        Request::Restore { config } => {
            let (_, text, key) = config_edit::restore(ctx.config, &config)?;
            let path = ctx
                .config
                .source
                .clone()
                .expect("restore checked the source");
            if let Some((kpath, k)) = key {
                crate::persist::write_atomic(&kpath, format!("{k}\n").as_bytes()).map_err(|e| {
                    Failure::new(500, format!("writing {}: {e:#}", kpath.display()))
                })?;
            }
            config_edit::commit(&path, &text)?;
            tracing::warn!("config restored from a backup: restarting");
            *ctx.restart_now = true;
            Ok(
                json!({"ok": true, "applied": "restart", "message": "restored; meshbridge restarts now"}),
            )
        }
        Request::FactoryReset => {
            tracing::warn!("factory reset requested (local API)");
            *ctx.factory_reset = true;
            Ok(
                json!({"ok": true, "message": "factory reset: meshbridge erases its config, keys and state and restarts unconfigured"}),
            )
        }
        Request::Restart => {
            tracing::warn!("restart requested");
            *ctx.restart_now = true;
            Ok(json!({"ok": true, "message": "meshbridge restarts now"}))
        }
    }
}

fn no_peer(config: &Config, name: &str) -> Failure {
    if config.peers.iter().any(|p| p.name == name) {
        Failure::new(
            409,
            format!(
                "peer {name} comes from the wg-quick file (mesh.wireguard_config): change it there"
            ),
        )
    } else {
        Failure::new(404, format!("no peer called {name:?}"))
    }
}

/// Interfaces the page offers as bridge ports: not ours, not the uplink.
fn port_candidates(c: &Config, host: &HostFacts) -> Vec<String> {
    host.interfaces
        .iter()
        .filter(|n| {
            *n != "lo"
                && **n != c.bridge_name
                && **n != c.tap_name
                && **n != c.tun_name
                // Never offer the uplink as a bridge port.
                && c.routing.uplink.as_deref() != Some(n.as_str())
                && !host.default_route_via(n)
        })
        .cloned()
        .collect()
}

fn settings(c: &Config, host: &HostFacts) -> serde_json::Value {
    let interfaces = port_candidates(c, host);
    json!({
        "bridge.ports": c.bridge_ports,
        "dhcp.range": format!("{}-{}", c.dhcp_range.0, c.dhcp_range.1),
        "dhcp.lease_time": humantime::format_duration(c.lease_time).to_string(),
        "mesh.listen_port": c.listen_port,
        "mesh.endpoint": c.endpoint.clone().unwrap_or_default(),
        "web.listen": c.web.listen.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "discovery.services": c.discovery.services,
        "discovery.opt_out": c.discovery.opt_out,
        "routing.advertise_routes": c.routing.advertise_routes.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        "routing.exit_node": c.routing.exit_node,
        "routing.uplink": c.routing.uplink,
        "interfaces": interfaces,
        "endpoint_default": endpoint(c, host),
        // The passphrase is write-only: only whether one is set.
        "wifi.configured": c.wifi.is_some(),
        "wifi.enabled": c.wifi.as_ref().is_some_and(|w| w.enabled),
        "wifi.interface": c.wifi.as_ref().map(|w| w.interface.clone()).unwrap_or_default(),
        "wifi.ssid": c.wifi.as_ref().map(|w| w.ssid.clone()).unwrap_or_default(),
        "wifi.passphrase_set": c.wifi.is_some(),
        "wifi.security": c.wifi.as_ref().map_or("wpa2-wpa3", |w| w.security.word()),
        "wifi.country": c.wifi.as_ref().map(|w| w.country.clone()).unwrap_or_default(),
        "wifi.channel": c.wifi.as_ref().map_or(6, |w| w.channel),
    })
}

/// Validate, write, then apply live (or mark a restart as pending).
fn commit_and_apply(ctx: &mut Ctx<'_>, e: Edit, effect: Effect, what: &str) -> Reply {
    let (new, text) = e.validate()?;
    if effect == Effect::Live && !*ctx.restart_pending {
        // Check what the engine will be given before anything is written.
        let dhcp = dhcp_config(&new, ctx.engine.dhcp().config().server_mac);
        dhcp.validate()
            .map_err(|err| Failure::invalid("dhcp.range", err.to_string()))?;
    }
    config_edit::commit(e.path(), &text)?;
    tracing::info!("{what} (saved to {})", e.path().display());
    if effect == Effect::Restart || *ctx.restart_pending {
        // The running daemon keeps its settings; the file has the new ones.
        // Peers and devices still change at once.
        *ctx.restart_pending = true;
        apply_live(ctx, &new);
        return Ok(json!({
            "ok": true,
            "applied": "restart",
            "message": "saved; restart meshbridge to apply it",
        }));
    }
    apply_live(ctx, &new);
    // The running daemon now runs this file: it is the one to go back to.
    crate::faults::mark_good_text(&ctx.config.state_dir, &text);
    Ok(json!({"ok": true, "applied": "live", "message": "saved and applied"}))
}

/// Bring the running daemon in line with `new` for what can change live:
/// peers, DHCP pool and reservations, device names, discovery lists.
fn apply_live(ctx: &mut Ctx<'_>, new: &Config) {
    let old = ctx.config.clone();
    let now = Instant::now();
    // DHCP: pool, lease time, reservations.
    let dhcp = dhcp_config(new, ctx.engine.dhcp().config().server_mac);
    if dhcp != *ctx.engine.dhcp().config() {
        if let Err(e) = ctx.engine.set_dhcp_config(dhcp) {
            tracing::error!("new DHCP settings not applied: {e}");
        }
    }
    ctx.engine.set_snat_from_mesh(new.snat_from_mesh);
    ctx.engine.set_off_mesh(new.devices_off_mesh());
    // Devices switched away from their own tailnet node lose it.
    if let Some(n) = ctx.nodes.as_deref_mut() {
        if n.apply_switches(new) {
            let (leases, hold) = (n.leases(), n.hold_new());
            if let Err(e) = ctx.engine.set_node_leases(leases, hold) {
                tracing::warn!("tailnet: device node addresses: {e}");
            }
        }
    }
    crate::wifi::reconfigure(new);
    let mut applied = new.clone();
    if *ctx.restart_pending {
        // Keep showing what runs for the settings that wait for a restart.
        applied.listen_port = old.listen_port;
        applied.bridge_ports = old.bridge_ports.clone();
        applied.web = old.web.clone();
        applied.routing = old.routing.clone();
    }
    // Peers: the running config's set, applied by public key (the exit
    // node's default route follows the running routing settings). A peer
    // that stays keeps its session; an edited endpoint, allowed IPs or
    // keepalive change in place.
    ctx.peers.apply(now, &applied, ctx.engine.mesh_mut());
    *ctx.config = applied;
    ctx.discovery.reconfigure(&old, ctx.config, ctx.engine);
}

fn peer_add(ctx: &mut Ctx<'_>, name: &str, route_all: bool, endpoint_in: Option<String>) -> Reply {
    if !peer_name_ok(name) {
        return Err(Failure::invalid(
            "name",
            "1 to 32 letters, digits, '-', '_' or '.'",
        ));
    }
    if ctx
        .config
        .peers
        .iter()
        .any(|p| p.name.eq_ignore_ascii_case(name))
    {
        return Err(Failure {
            status: 409,
            error: format!("a peer called {name:?} exists already"),
            field: Some("name".into()),
        });
    }
    if route_all && !ctx.config.routing.exit_node {
        return Err(Failure::invalid(
            "route_all",
            "turn on the exit node (Settings) before sending a device's internet traffic through the box",
        ));
    }
    let endpoint = match endpoint_in.map(|e| e.trim().to_string()).filter(|e| !e.is_empty()) {
        Some(e) => {
            crate::config::Endpoint::parse("endpoint", &e).map_err(|err| Failure::invalid("endpoint", err.problem))?;
            e
        }
        None => endpoint(ctx.config, ctx.host).ok_or_else(|| {
            Failure::invalid("endpoint", "the box does not know the address devices reach it at: enter it (host:port), or set mesh.endpoint in Settings")
        })?,
    };
    // The next free address in the mesh subnet.
    let net: Ipv4Net = ctx.config.mesh_address.trunc();
    let used = |a: Ipv4Addr| {
        a == ctx.config.mesh_address.addr()
            || ctx
                .config
                .peers
                .iter()
                .any(|p| p.allowed_ips.iter().any(|n| n.contains(&IpAddr::V4(a))))
    };
    let address = net.hosts().find(|a| !used(*a)).ok_or_else(|| {
        Failure::new(
            409,
            format!("no free address left in the mesh subnet {net}"),
        )
    })?;
    let key = PrivateKey::generate();
    let public = key.public_key().to_string();
    let psk_bytes: [u8; 32] = rand::random();
    let psk = PresharedKey(psk_bytes);
    let psk_b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(psk.0)
    };
    let box_side = vec![format!("{address}/32")];
    let mut e = Edit::open(ctx.config)?;
    e.add_peer(name, &public, &psk_b64, &box_side)?;
    let reply = commit_and_apply(
        ctx,
        e,
        Effect::Live,
        &format!("peer {name} added ({address})"),
    )
    .map_err(|mut f| {
        if f.field.as_deref().is_some_and(|k| k.ends_with(".name")) {
            f.field = Some("name".into());
        }
        f
    })?;
    let _ = reply;
    let c = &*ctx.config;
    let mut allowed: Vec<String> = if route_all {
        vec!["0.0.0.0/0".into(), "::/0".into()]
    } else {
        let mut v = vec![net.to_string(), c.bridge_address.trunc().to_string()];
        v.extend(c.routing.advertise_routes.iter().map(|n| n.to_string()));
        v
    };
    allowed.dedup();
    let text = peerconf::render(&ClientConfig {
        private_key: key.to_base64(),
        address: format!("{address}/32"),
        dns: c
            .dns_server
            .enabled
            .then(|| (c.mesh_address.addr().to_string(), c.domain.clone())),
        server_public_key: c.private_key.public_key().to_string(),
        preshared_key: Some(psk_b64),
        endpoint,
        allowed_ips: allowed,
        keepalive: 25,
        mtu: c.mtu,
    });
    Ok(json!(PeerAdded {
        peer: PeerInfo {
            name: name.to_string(),
            public_key: public,
            allowed_ips: box_side,
        },
        config: text,
        filename: format!("{name}.conf"),
    }))
}
