//! The I/O shell: opens the TAP, the TUN and the UDP socket, installs the
//! bridge, then drives the [`Engine`] from one task until a signal arrives,
//! and removes what it installed.

use crate::config::Config;
use crate::host::netlink::{self, Installed};
use crate::host::proc::HostFacts;
use crate::host::udp_offload::{segments, UdpOffload};
use crate::host::vnet;
use anyhow::{Context, Result};
use meshbridge_dhcp as dhcp;
use meshbridge_engine::{Engine, EngineConfig, Event, Now, Transmit};
use meshbridge_mesh::Mesh;
use meshbridge_types::Mac;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::signal::unix::{signal, SignalKind};
use tun_rs::{AsyncDevice, DeviceBuilder, Layer};

/// The MACs the box uses, derived from its public key so they are stable.
pub struct Macs {
    /// The box's address on the bridge (ARP, DHCP, forwarded frames).
    pub engine: Mac,
    /// The TAP interface's own address (must differ from `engine`).
    pub tap: Mac,
    /// The bridge's address, if we create it.
    pub bridge: Mac,
}

impl Macs {
    /// Locally administered unicast addresses from the public key.
    pub fn for_key(public: &[u8; 32]) -> Macs {
        let mk = |tag: u8| Mac([0x02, 0x6d, tag, public[0], public[1], public[2]]);
        Macs {
            engine: mk(0x62),
            tap: mk(0x74),
            bridge: mk(0x72),
        }
    }
}

/// Read both clocks, once per input: the engine itself never reads a clock.
pub fn read_now() -> Now {
    Now {
        mono: std::time::Instant::now(),
        wall: std::time::SystemTime::now(),
    }
}

/// Datagrams read from the WireGuard socket per wakeup of the loop.
const UDP_BATCH: usize = 64;
/// Frames (packets) read from the TAP (TUN) per wakeup of the loop.
const DEV_BATCH: usize = 32;

fn udp_socket(port: u16) -> Result<(UdpSocket, bool)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let dual = (|| -> std::io::Result<Socket> {
        let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_only_v6(false)?;
        s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
        Ok(s)
    })();
    let (sock, is_dual) = match dual {
        Ok(s) => (s, true),
        Err(_) => {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
                .context("creating the WireGuard UDP socket")?;
            s.bind(&SocketAddr::from(([0, 0, 0, 0], port)).into())
                .with_context(|| format!("binding UDP port {port} (mesh.listen_port); is another WireGuard using it?"))?;
            (s, false)
        }
    };
    let _ = sock.set_recv_buffer_size(4 << 20);
    let _ = sock.set_send_buffer_size(4 << 20);
    sock.set_nonblocking(true)?;
    Ok((UdpSocket::from_std(sock.into())?, is_dual))
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

fn for_socket(a: SocketAddr, dual: bool) -> SocketAddr {
    match (a.ip(), dual) {
        (IpAddr::V4(v4), true) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port()),
        _ => a,
    }
}

/// Everything that exists while the daemon runs.
struct Devices {
    tap: AsyncDevice,
    /// The TAP has offloads on (`IFF_VNET_HDR`, TSO, checksum): a
    /// `virtio_net_hdr` precedes every frame (`host::vnet`).
    tap_vnet: bool,
    tun: AsyncDevice,
    /// The TUN has offloads on (`IFF_VNET_HDR`, TSO, checksum): a
    /// `virtio_net_hdr` precedes every packet (`host::vnet`).
    tun_vnet: bool,
    /// The bridge's interface index (for adding ports that appear later).
    bridge_idx: u32,
}

/// A TAP or TUN with offloads (`IFF_VNET_HDR`, TSO, checksum) where the
/// kernel takes them, else without: the device, and whether it has them.
fn with_offloads(
    what: &str,
    unit: &str,
    build: impl Fn(bool) -> std::io::Result<AsyncDevice>,
) -> (std::io::Result<AsyncDevice>, bool) {
    let (dev, on) = match build(true) {
        Ok(d) => (Ok(d), true),
        Err(e) => {
            tracing::info!("{what} offloads not available ({e}); one {unit} per read");
            (build(false), false)
        }
    };
    tracing::debug!("{what} offloads (TSO, checksum): {on}");
    (dev, on)
}

async fn setup(
    config: &Config,
    macs: &Macs,
    rec: &mut Installed,
    handle: &crate::host::netlink::Handle,
    exit_v6: bool,
) -> Result<(Devices, u32)> {
    // Record the intent first, so a crash half-way is still cleaned up.
    rec.bridge = Some(config.bridge_name.clone());
    rec.links = vec![config.tap_name.clone(), config.tun_name.clone()];
    netlink::write_record(&config.state_dir, rec)?;

    let (bridge_idx, created) =
        netlink::ensure_bridge(handle, &config.bridge_name, macs.bridge).await?;
    rec.bridge_created |= created;
    rec.ports = config.bridge_ports.clone();
    netlink::write_record(&config.state_dir, rec)?;
    if created {
        tracing::info!("created bridge {}", config.bridge_name);
    }
    if rec.bridge_arp_ignore.is_none() {
        rec.bridge_arp_ignore = crate::host::sysctl::quiet_bridge_arp(&config.bridge_name);
        netlink::write_record(&config.state_dir, rec)?;
    } else {
        crate::host::sysctl::quiet_bridge_arp(&config.bridge_name);
    }

    // With offloads the kernel hands over a TCP stream's frames 64 KB at a
    // time (TSO) and the box segments them (host::vnet); without (a kernel
    // that refuses them) one frame per read.
    let tap_builder = |offload: bool| {
        DeviceBuilder::new()
            .name(config.tap_name.clone())
            .layer(Layer::L2)
            .mac_addr(macs.tap.0)
            .mtu(1500)
            .offload(offload)
            .build_async()
    };
    let (tap, tap_vnet) = with_offloads("TAP", "frame", tap_builder);
    let tap = tap.with_context(|| {
        format!(
            "creating TAP device {} (is /dev/net/tun available and are we root?)",
            config.tap_name
        )
    })?;
    crate::host::sysctl::disable_ipv6(&config.tap_name);
    netlink::enslave(handle, &config.tap_name, bridge_idx).await?;
    // A missing port (a USB adapter not plugged in) is not fatal: the box
    // starts without it, says so, and adds it when it appears.
    check_ports(config, handle, bridge_idx).await;

    // Likewise the TUN: what the kernel forwards to the mesh (the home LAN,
    // the internet through the exit node) arrives 64 KB at a time, and a
    // stream's packets from the mesh leave in one write.
    let tun_builder = |offload: bool| {
        DeviceBuilder::new()
            .name(config.tun_name.clone())
            .layer(Layer::L3)
            .mtu(config.mtu)
            .offload(offload)
            .build_async()
    };
    let (tun, tun_vnet) = with_offloads("TUN", "packet", tun_builder);
    let tun = tun.with_context(|| format!("creating TUN device {}", config.tun_name))?;
    if !exit_v6 {
        crate::host::sysctl::disable_ipv6(&config.tun_name);
    }
    let tun_idx = tun.if_index().context("reading the TUN's index")?;
    let (mesh, gw) = (config.mesh_address, config.bridge_address);
    netlink::add_address_v4(handle, tun_idx, mesh.addr(), mesh.prefix_len())
        .await
        .context("adding the mesh address to the TUN")?;
    netlink::add_address_v4(handle, tun_idx, gw.addr(), gw.prefix_len())
        .await
        .context("adding the bridge gateway address to the TUN")?;
    tun.enabled(true).context("bringing the TUN up")?;
    let nets: Vec<_> = config
        .peers
        .iter()
        .flat_map(|p| p.allowed_ips.iter().copied())
        .collect();
    netlink::add_peer_routes(
        handle,
        tun_idx,
        &nets,
        &[config.mesh_address, config.bridge_address],
    )
    .await?;
    setup_routing(config, rec, exit_v6)?;
    Ok((
        Devices {
            tap,
            tap_vnet,
            tun,
            tun_vnet,
            bridge_idx,
        },
        bridge_idx,
    ))
}

/// Put every configured bridge port that exists into the bridge; the
/// others are shown on the status page (health check `bridge_ports`).
/// Called at start and every few seconds, so a port that appears later (or
/// comes back after it was unplugged) is picked up.
async fn check_ports(config: &Config, handle: &crate::host::netlink::Handle, bridge_idx: u32) {
    let mut missing = Vec::new();
    for port in &config.bridge_ports {
        if netlink::port_of(handle, port, bridge_idx).await {
            continue;
        }
        match netlink::enslave(handle, port, bridge_idx).await {
            Ok(()) => tracing::info!("bridge port {port} added to {}", config.bridge_name),
            Err(e) => missing.push((port.clone(), format!("{e:#}"))),
        }
    }
    let before = crate::faults::current().missing_ports;
    if missing != before {
        for (port, why) in missing.iter().filter(|m| !before.contains(m)) {
            tracing::error!("bridge port {port} is not in the bridge: {why}; meshbridge adds it when it appears");
        }
        crate::faults::update(|f| f.missing_ports = missing);
    }
}

/// The names and addresses the web page answers to (its `Host` check).
#[cfg(feature = "web")]
fn web_hosts(config: &Config) -> Vec<String> {
    let mdns = &config.discovery.mdns_name;
    let mut hosts = vec![
        config.bridge_address.addr().to_string(),
        config.mesh_address.addr().to_string(),
        "meshbridge".to_string(),
        format!("meshbridge.{}", config.domain),
        mdns.clone(),
        format!("{mdns}.local"),
        format!("{mdns}.{}", config.domain),
    ];
    // The system's own host name (a Pi image's avahi, a router's DNS entry
    // for the box): set by root, so not a rebinding risk.
    let h = crate::host::proc::hostname().to_ascii_lowercase();
    if !h.is_empty() && h != "localhost" {
        hosts.push(format!("{h}.local"));
        hosts.push(h);
    }
    hosts.extend(
        config
            .web
            .listen
            .iter()
            .filter(|a| !a.ip().is_unspecified())
            .map(|a| a.ip().to_string()),
    );
    hosts.sort();
    hosts.dedup();
    hosts
}

/// Subnet router and exit node: forwarding and our nftables table.
fn setup_routing(config: &Config, rec: &mut Installed, exit_v6: bool) -> Result<()> {
    let r = &config.routing;
    // The uplink never reaches the bridge or the mesh unless [web] listen or
    // [routing] opens it: our table is installed with or without [routing].
    let guard = crate::host::nft::Guard {
        bridge: config.bridge_name.clone(),
        tun: config.tun_name.clone(),
        own: vec![config.bridge_address.addr(), config.mesh_address.addr()],
        open_ports: if config.web.enabled {
            config
                .web
                .listen
                .iter()
                .filter(|a| a.ip().is_unspecified())
                .map(|a| a.port())
                .collect()
        } else {
            Vec::new()
        },
    };
    rec.nft_table = true;
    netlink::write_record(&config.state_dir, rec)?;
    let routing = r.uplink.as_ref().filter(|_| r.needs_forwarding());
    let Some(uplink) = routing else {
        // Without routing the box still works without nft: say so, loudly.
        if let Err(e) =
            crate::host::nft::apply(&crate::host::nft::with_guard(String::new(), &guard))
        {
            tracing::error!(
                "{e:#}: the home LAN may reach the bridge and the mesh through this box"
            );
        }
        return Ok(());
    };
    if let Some(old) = crate::host::sysctl::enable_forwarding()? {
        rec.ip_forward_was.get_or_insert(old);
        netlink::write_record(&config.state_dir, rec)?;
        tracing::warn!("IPv4 forwarding was off: turned it on for the subnet router / exit node (restored on stop)");
    }
    if exit_v6 {
        let (old, old_ra) = crate::host::sysctl::enable_forwarding6(uplink)?;
        if let Some(old) = old {
            rec.ip6_forward_was.get_or_insert(old);
            tracing::warn!(
                "IPv6 forwarding was off: turned it on for the exit node (restored on stop)"
            );
        }
        if let Some(ra) = old_ra {
            rec.uplink_accept_ra_was.get_or_insert((uplink.clone(), ra));
        }
        netlink::write_record(&config.state_dir, rec)?;
    }
    let rules = crate::host::nft::ruleset(r, &config.tun_name, config.bridge_address, exit_v6);
    crate::host::nft::apply(&crate::host::nft::with_guard(rules, &guard))?;
    let routes: Vec<String> = r.advertise_routes.iter().map(|n| n.to_string()).collect();
    let exit = match (r.exit_node, r.exit_node_allow_lan) {
        (true, true) => ", exit node (LAN allowed)",
        (true, false) => ", exit node (internet only)",
        _ => "",
    };
    let using = match &r.use_exit_node {
        Some(p) => format!(", bridged devices use exit node {p}"),
        None if r.bridge_internet => {
            ", bridged devices use this uplink for the internet".to_string()
        }
        None => String::new(),
    };
    tracing::info!(
        "routing via {uplink}: subnet routes [{}]{}{exit}{using}",
        routes.join(", "),
        if r.snat_subnet_routes && !routes.is_empty() {
            " (SNAT)"
        } else {
            ""
        },
    );
    if exit_v6 {
        tracing::info!("the exit node serves IPv6 (::/0) too, masqueraded behind {uplink}");
    }
    Ok(())
}

/// The daemon failed before it was up (the error's context): the caller
/// may roll back to the last config that started (see [`crate::faults`]).
#[derive(Debug)]
pub struct StartFailed;

impl std::fmt::Display for StartFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("meshbridge could not start")
    }
}

/// Run the daemon until SIGTERM or SIGINT. `Ok(true)`: restart requested
/// (from the page or the CLI, or after a factory reset); everything
/// installed has been removed. An error before the daemon was up carries
/// [`StartFailed`] as its context.
pub async fn run(config: Config) -> Result<bool> {
    let mut up = false;
    let r = run_inner(config, &mut up).await;
    r.map_err(|e| if up { e } else { e.context(StartFailed) })
}

async fn run_inner(mut config: Config, up: &mut bool) -> Result<bool> {
    if meshbridge_mesh::clock::FAKE {
        anyhow::bail!("this meshbridge binary was built with the mesh's fake clock for tests (a `cargo test --workspace` build) and cannot run a real mesh: rebuild it with `cargo build -p meshbridge`");
    }
    // Catch SIGTERM/SIGINT from the start, so a stop during setup still cleans up.
    let signals = Signals {
        term: signal(SignalKind::terminate())?,
        int: signal(SignalKind::interrupt())?,
    };
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating state_dir {}", config.state_dir.display()))?;
    for key in &config.ignored_wg_keys {
        tracing::warn!("wg-quick key {key} is not used by meshbridge and was ignored");
    }
    let public = config.private_key.public_key();
    tracing::info!(
        "meshbridge {} starting; public key {public}",
        env!("CARGO_PKG_VERSION")
    );
    let macs = Macs::for_key(public.as_bytes());

    let now = read_now();
    let mut mesh = Mesh::new(&config.private_key);
    // Endpoint names are resolved by a task; their peers get the address when it comes.
    let mut static_peers = crate::peers::StaticPeers::start(&config);
    static_peers.apply(now.mono, &config, &mut mesh);
    // `[tailnet]`: the control client runs in a task; its peers join the set.
    let mut tailnet = crate::tailnet::Tailnet::start(&config)?;
    // `[tailnet] devices = "nodes"`: each bridged device a node of its own.
    let mut device_nodes = crate::device_nodes::DeviceNodes::start(&config)?;
    let mut dhcp_config = crate::control::dhcp_config(&config, macs.engine);
    dhcp_config.node_leases = device_nodes.leases();
    dhcp_config.hold_new = device_nodes.hold_new();
    // A tailnet node as the exit node is found in the map later
    // (`crate::tailnet::exit`); until then the devices' internet is dropped.
    let use_exit = match &config.routing.use_exit_node {
        Some(name) => match mesh.peer_by_name(name) {
            Some(id) => Some(id),
            None if tailnet.as_ref().is_some_and(|t| t.uses_exit_node()) => None,
            None => anyhow::bail!("routing.use_exit_node names no peer"),
        },
        None => None,
    };
    let exit_v6 = match (&config.routing.uplink, config.routing.exit_node) {
        (Some(uplink), true) => {
            match crate::host::proc::uplink_ipv6(uplink) {
                Ok(()) => true,
                Err(why) => {
                    tracing::warn!("the exit node serves IPv4 only: {why}, so IPv6 (::/0) is not offered to peers");
                    false
                }
            }
        }
        _ => false,
    };
    let policy = meshbridge_engine::forward::Policy {
        exit_v6,
        advertised: config.routing.advertise_routes.clone(),
        exit_node: config.routing.exit_node,
        exit_allow_lan: config.routing.exit_node_allow_lan,
        use_exit,
        bridge_internet: config.routing.bridge_internet && config.routing.use_exit_node.is_none(),
        bridge_allow_lan: config.routing.bridge_allow_lan,
        off_mesh: config.devices_off_mesh(),
    };
    let engine_config = EngineConfig {
        policy,
        mac: macs.engine,
        bridge_address: config.bridge_address,
        mesh_address: config.mesh_address,
        mtu: config.mtu,
        dhcp: dhcp_config,
    };
    let (mut lease_store, leases) = crate::lease_store::LeaseStore::open(&config.state_dir);
    let mut engine =
        Engine::new(engine_config, mesh, leases, now).context("starting the DHCP server")?;
    engine.set_snat_from_mesh(config.snat_from_mesh);
    let (udp, dual) = udp_socket(config.listen_port)?;

    let handle = netlink::connect().await?;
    let mut rec = netlink::read_record(&config.state_dir)?.unwrap_or_default();
    let devices = match setup(&config, &macs, &mut rec, &handle, exit_v6).await {
        Ok((d, _)) => d,
        Err(e) => {
            if let Err(c) = netlink::cleanup(&handle, &rec).await {
                tracing::error!("cleaning up after a failed start: {c:#}");
            }
            let _ = std::fs::remove_file(netlink::record_path(&config.state_dir));
            return Err(e);
        }
    };
    tracing::info!(
        "up: bridge {} (ports: {}), mesh {} on UDP {}, {} peer(s), DHCP {}-{}",
        config.bridge_name,
        if config.bridge_ports.is_empty() {
            "none".to_string()
        } else {
            config.bridge_ports.join(", ")
        },
        config.mesh_address,
        config.listen_port,
        config.peers.len(),
        config.dhcp_range.0,
        config.dhcp_range.1
    );
    *up = true;
    crate::faults::mark_good(&config);
    crate::faults::load_rollback(&config);
    if !config.dhcp_enabled {
        tracing::warn!("DHCP is off (dhcp.enabled = false): bridged devices get no address from the box; their leases are kept");
    }

    let mut hardware = crate::hw::Hardware::start(&config);
    // `[wifi]`: hostapd adds the AP's interface to the bridge, so after it exists.
    let wifi = crate::wifi::Wifi::start(&config, &hardware.board_name);
    let mut discovery = crate::discovery::Discovery::start(&config, &engine, &handle).await;
    engine.start(read_now());
    let (requests_tx, requests) = tokio::sync::mpsc::channel(16);
    if let Err(e) = crate::api::listen(&config.api_socket, requests_tx.clone()) {
        tracing::error!("local API not available: {e:#}");
    }
    if config.web.enabled {
        start_web(&config, requests_tx.clone()).await;
    }
    drop(requests_tx);
    let result = event_loop(
        &mut config,
        &mut engine,
        Io {
            dev: &devices,
            udp: &udp,
            dual,
            handle: &handle,
            leases: &mut lease_store,
        },
        ControlPlane {
            requests,
            static_peers: &mut static_peers,
            tailnet: tailnet.as_mut(),
            nodes: &mut device_nodes,
            netlink: handle.clone(),
        },
        &mut discovery,
        &mut hardware,
        signals,
    )
    .await;
    let _ = std::fs::remove_file(&config.api_socket);
    lease_store.close(engine.dhcp().snapshot());

    wifi.stop().await;
    drop(devices);
    let cleaned = netlink::cleanup(&handle, &rec).await;
    match &cleaned {
        Ok(()) => {
            let _ = std::fs::remove_file(netlink::record_path(&config.state_dir));
        }
        Err(e) => {
            tracing::error!("removing what meshbridge installed: {e:#}; run `meshbridge --cleanup`")
        }
    }
    hardware.stop();
    if let Ok(Stop::FactoryReset) = result {
        let old_text = config
            .source
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok());
        if !crate::hw::do_factory_reset(&config) {
            // Nothing (or not everything) was erased: keep serving as before.
            tracing::error!("factory reset not done: restarting with the current config");
            return Ok(true);
        }
        // Boot again, unconfigured: to the first-start page (setup code, no password).
        return match write_factory_config(&config, old_text.as_deref()) {
            Ok(()) => {
                tracing::warn!("factory reset done: restarting to the first-start page");
                Ok(true)
            }
            Err(e) => Err(e.context("writing the factory config after a factory reset")),
        };
    }
    tracing::info!("stopped");
    result.map(|s| matches!(s, Stop::Restart))
}

/// After a factory reset: a fresh config (and key) where the old one was.
fn write_factory_config(config: &Config, old_text: Option<&str>) -> Result<()> {
    let Some(path) = &config.source else {
        return Ok(());
    };
    let base = path.parent().unwrap_or(Path::new("/"));
    let key = meshbridge_mesh::PrivateKey::generate().to_base64();
    let wiped = [base, config.state_dir.as_path()];
    let (text, key_file) =
        crate::faults::factory_config(old_text.unwrap_or(""), base, &wiped, &key);
    if let Some(k) = &key_file {
        crate::persist::write_private(k, format!("{key}\n").as_bytes())?;
    }
    crate::persist::write_private(path, text.as_bytes())?;
    Ok(())
}

/// A TCP stream's frames to the TAP and packets to the TUN, held for one
/// TSO write each (`host::vnet`).
struct Runs {
    tap: vnet::Coalescer,
    tun: vnet::Coalescer,
}

impl Runs {
    fn new() -> Self {
        Self {
            tap: vnet::Coalescer::new(vnet::Link::Ethernet),
            tun: vnet::Coalescer::new(vnet::Link::Ip),
        }
    }
}

async fn flush(
    engine: &mut Engine,
    (dev, coal): (&Devices, &mut Runs),
    (udp, off): (&UdpSocket, &mut UdpOffload),
    dual: bool,
    mut tailnet: Option<&mut crate::tailnet::Tailnet>,
    nodes: &mut crate::device_nodes::DeviceNodes,
) {
    while let Some(t) = engine.poll_transmit() {
        let t = match t {
            Transmit::Node(mac, p) => {
                nodes.send(&mac, p);
                continue;
            }
            t => t,
        };
        // Datagrams to one peer wait to leave together (UDP GSO); anything
        // else sends them first, so the order of the engine's output holds.
        if let Transmit::Udp(to, d) = &t {
            if !crate::tailnet::Tailnet::is_relay(to) {
                if let Err(e) = off.queue(udp, for_socket(*to, dual), d).await {
                    tracing::debug!("write failed: {e}");
                }
                continue;
            }
        }
        if let Err(e) = off.flush(udp).await {
            tracing::debug!("write failed: {e}");
        }
        // Likewise a TCP stream's frames to the TAP or packets to the TUN
        // (one TSO write).
        match &t {
            Transmit::Tap(f) if dev.tap_vnet && coal.tap.push(f) => continue,
            Transmit::Tun(p) if dev.tun_vnet && coal.tun.push(p) => continue,
            _ => {}
        }
        runs_flush(dev, coal).await;
        let plain = |f| {
            [
                std::io::IoSlice::new(&vnet::PLAIN_HDR),
                std::io::IoSlice::new(f),
            ]
        };
        let r = match &t {
            Transmit::Tap(f) if dev.tap_vnet => dev.tap.send_vectored(&plain(f)).await.map(drop),
            Transmit::Tap(f) => dev.tap.send(f).await.map(drop),
            Transmit::Tun(p) if dev.tun_vnet => dev.tun.send_vectored(&plain(p)).await.map(drop),
            Transmit::Tun(p) => dev.tun.send(p).await.map(drop),
            // A peer reached over DERP (its relay stand-in address).
            Transmit::Udp(to, d) if crate::tailnet::Tailnet::is_relay(to) => {
                if let Some(t) = tailnet.as_deref_mut() {
                    t.send_relay(to, d);
                }
                Ok(())
            }
            Transmit::Udp(to, d) => udp.send_to(d, for_socket(*to, dual)).await.map(drop),
            Transmit::Node(..) => Ok(()),
        };
        if let Err(e) = r {
            tracing::debug!("write failed: {e}");
        }
    }
    if let Err(e) = off.flush(udp).await {
        tracing::debug!("write failed: {e}");
    }
    runs_flush(dev, coal).await;
}

/// Writes the TCP frames and packets held for one TSO write each.
async fn runs_flush(dev: &Devices, coal: &mut Runs) {
    if let Some(w) = coal.tap.take() {
        if let Err(e) = dev.tap.send(w).await {
            tracing::debug!("write failed: {e}");
        }
    }
    if let Some(w) = coal.tun.take() {
        if let Err(e) = dev.tun.send(w).await {
            tracing::debug!("write failed: {e}");
        }
    }
}

/// One TAP read into the engine: a frame, or with offloads the frames of a
/// TSO segment (`host::vnet`).
fn tap_read(engine: &mut Engine, vnet_hdr: bool, read: &mut [u8], scratch: &mut Vec<u8>) {
    if !vnet_hdr {
        engine.handle_tap_frame(read_now(), read);
        return;
    }
    let now = read_now();
    if let Err(e) = vnet::split(read, vnet::Link::Ethernet, scratch, |f| {
        engine.handle_tap_frame(now, f)
    }) {
        tracing::debug!("TAP read dropped: {e:?}");
    }
}

/// One TUN read into the engine: a packet, or with offloads the packets of
/// a TSO segment (`host::vnet`).
fn tun_read(engine: &mut Engine, vnet_hdr: bool, read: &mut [u8], scratch: &mut Vec<u8>) {
    let now = read_now();
    if !vnet_hdr {
        engine.handle_tun_packet(now, read);
        return;
    }
    if let Err(e) = vnet::split(read, vnet::Link::Ip, scratch, |p| {
        engine.handle_tun_packet(now, p)
    }) {
        tracing::debug!("TUN read dropped: {e:?}");
    }
}

/// Send disco's datagrams; re-apply the peer set when disco confirmed a path.
/// One datagram from the WireGuard socket: disco (the tailnet's path
/// discovery, recognised by its magic prefix), the answer to our STUN
/// request, or WireGuard for the mesh.
fn dispatch_udp(
    engine: &mut Engine,
    tailnet: Option<&mut crate::tailnet::Tailnet>,
    from: SocketAddr,
    data: &[u8],
) {
    match tailnet {
        Some(t) if meshbridge_tailnet::disco::looks_like_disco(data) => {
            t.handle_disco(std::time::Instant::now(), from, data)
        }
        Some(t) if t.is_stun_response(data) => t.handle_stun(data),
        _ => engine.handle_datagram(read_now(), from, data),
    }
}

async fn flush_tailnet(
    t: &mut crate::tailnet::Tailnet,
    config: &Config,
    engine: &mut Engine,
    static_peers: &mut crate::peers::StaticPeers,
    udp: &UdpSocket,
    dual: bool,
) {
    while let Some(tx) = t.poll_transmit() {
        if crate::tailnet::Tailnet::is_relay(&tx.to) {
            t.send_relay(&tx.to, &tx.data);
            continue;
        }
        if let Err(e) = udp.send_to(&tx.data, for_socket(tx.to, dual)).await {
            tracing::debug!("disco send to {}: {e}", tx.to);
        }
    }
    if t.take_paths_changed() {
        static_peers.set_tailnet(t.peer_set());
        // Queued packets and handshakes go out on the engine's next timer.
        static_peers.apply(std::time::Instant::now(), config, engine.mesh_mut());
        if t.uses_exit_node() {
            crate::tailnet::exit::sync_engine(engine, t.exit_node());
        }
    }
}

/// A tailnet map update's rules and names: MagicDNS now; returns the
/// compiled packet filter and the config's enabled peer keys (a tailnet
/// peer with one of them stays a static, unfiltered peer).
fn tailnet_rules(
    config: &Config,
    engine: &Engine,
    discovery: &mut crate::discovery::Discovery,
    update: &crate::tailnet::Update,
) -> (
    meshbridge_engine::filter::Filter,
    Vec<meshbridge_mesh::PublicKey>,
) {
    let rules = &update.rules;
    discovery.set_tailnet(
        &rules.self_name,
        &update.addresses,
        &update.peers,
        rules.dns.as_ref(),
    );
    discovery.set_tailnet_boxes(&update.addresses, &rules.dns_sd_boxes);
    let (filter, bad) = crate::tailnet_rules::compile_filter(rules.filter.as_deref());
    if bad > 0 {
        tracing::warn!(
            "tailnet: {bad} address(es) in the packet filter did not parse and were left out"
        );
    }
    if let Some(flows) = engine.tailnet_flows() {
        tracing::debug!(
            "tailnet: {} filter rule(s), {flows} tracked flow(s), {} packet(s) denied so far",
            filter.rules().len(),
            engine.stats().tailnet_denied
        );
    }
    let static_keys = config
        .peers
        .iter()
        .filter(|p| p.enabled)
        .map(|p| p.public_key)
        .collect();
    (filter, static_keys)
}

/// Lease writes: at once (group commit: once per turn of the loop, before
/// the replies go out), or coalesced by `dhcp.persist_interval` to spare
/// flash.
struct LeaseWriter<'a> {
    store: &'a mut crate::lease_store::LeaseStore,
    last: Option<std::time::Instant>,
    pending: bool,
}

impl LeaseWriter<'_> {
    fn changed(&mut self, config: &Config, engine: &Engine) {
        self.pending = true;
        self.flush_if_due(config, engine);
    }

    fn flush_if_due(&mut self, config: &Config, engine: &Engine) {
        let due = self
            .last
            .is_none_or(|t| t.elapsed() >= config.persist_interval);
        if self.pending && due {
            self.store.save(engine.dhcp().snapshot());
            self.pending = false;
            self.last = Some(std::time::Instant::now());
        }
    }
}

/// The device's name on the page, if it has one.
fn device_name<'a>(config: &'a Config, mac: &Mac) -> Option<&'a str> {
    config
        .device_names
        .iter()
        .find(|(m, _)| m == mac)
        .map(|(_, n)| n.as_str())
}

/// The device nodes' addresses to the DHCP server and the engine.
fn set_node_leases(engine: &mut Engine, nodes: &crate::device_nodes::DeviceNodes) {
    if let Err(e) = engine.set_node_leases(nodes.leases(), nodes.hold_new()) {
        tracing::warn!("tailnet: device node addresses: {e}");
    }
}

fn handle_events(
    config: &Config,
    engine: &mut Engine,
    discovery: &mut crate::discovery::Discovery,
    leases: &mut LeaseWriter,
    nodes: &mut crate::device_nodes::DeviceNodes,
) {
    let mut persist = false;
    while let Some(ev) = engine.poll_event() {
        if discovery.on_event(config, engine, &ev) {
            continue;
        }
        match ev {
            Event::Dhcp(dhcp::Event::LeasesChanged) => persist = true,
            Event::Dhcp(dhcp::Event::NewDevice { mac, hostname }) => {
                nodes.ensure(mac, device_name(config, &mac).or(hostname.as_deref()))
            }
            Event::Dhcp(dhcp::Event::Bound { mac, ip, hostname, .. }) => {
                // A device from before nodes were on gets one too (and moves
                // to its address when it renews).
                if engine.dhcp().config().node_lease_for(&mac).is_none_or(|n| n.ip != ip) {
                    nodes.ensure(mac, device_name(config, &mac).or(hostname.as_deref()));
                }
                tracing::info!("DHCP: {ip} leased");
                tracing::debug!("DHCP: {ip} leased to {} ({:?})", mac, hostname.as_deref().unwrap_or("no hostname"));
            }
            Event::Dhcp(dhcp::Event::Released { ip, .. }) => tracing::info!("DHCP: {ip} released"),
            Event::Dhcp(dhcp::Event::Expired { mac, .. }) => nodes.away(&mac),
            Event::Dhcp(dhcp::Event::Declined { ip, .. }) => {
                tracing::warn!("DHCP: a device declined {ip} (address in use?); it is quarantined for 10 minutes")
            }
            Event::Dhcp(dhcp::Event::ForeignServer { server_ip, server_mac }) => tracing::error!(
                "another DHCP server ({server_ip}) with MAC {server_mac} answers on bridge {}: meshbridge stops offering new addresses there so as not to break that network (existing leases are still renewed). Turn that server off or take its port out of the bridge; meshbridge resumes by itself once it is gone.",
                config.bridge_name
            ),
            Event::Dhcp(dhcp::Event::ForeignServerGone) => {
                tracing::warn!("the other DHCP server on bridge {} is gone: serving addresses again", config.bridge_name)
            }
            Event::Arp(meshbridge_arp::Event::Conflict { ip, mac }) => {
                tracing::error!("another device claims the box's address {ip} on the bridge");
                tracing::debug!("address conflict from {}", mac);
            }
            Event::Arp(meshbridge_arp::Event::Learned { ip, mac }) => {
                tracing::debug!("neighbour {ip} is at {}", mac)
            }
            other => tracing::debug!("event: {other:?}"),
        }
    }
    if persist {
        leases.changed(config, engine);
    }
    discovery.after_events(config, engine);
}

/// Start the web page (`[web] enabled`).
#[cfg(feature = "web")]
async fn start_web(config: &Config, requests: tokio::sync::mpsc::Sender<crate::api::Pending>) {
    let web = meshbridge_web::server::WebConfig {
        listen: config.web.listen.clone(),
        idle_timeout: config.web.session_timeout,
        state_dir: config.state_dir.clone(),
        hosts: web_hosts(config),
    };
    match meshbridge_web::server::start(&web, requests).await {
        Ok(0) => tracing::error!("web page: no listen address could be bound (web.listen)"),
        Ok(_) => {}
        Err(e) => tracing::error!("web page not started: {e}"),
    }
}

/// This build has no web page (built without the `web` feature).
#[cfg(not(feature = "web"))]
async fn start_web(_config: &Config, _requests: tokio::sync::mpsc::Sender<crate::api::Pending>) {
    tracing::warn!(
        "[web] enabled = true, but this build of meshbridge has no web page (built without the `web` feature): use the CLI (meshbridge status, peer add) or a build with the page"
    );
}

/// Health checks that can go wrong while running (logged with the fix).
fn check_health(config: &Config, engine: &Engine, host: &HostFacts) {
    let facts = crate::api::health_facts(config, engine, host, std::time::SystemTime::now(), false);
    for problem in crate::health::running_problems(&facts) {
        tracing::error!("{problem}");
    }
}

/// How often the host facts (/proc, /sys) are read again.
const HOST_FACTS_REFRESH: Duration = Duration::from_secs(3);

/// Why the loop ended.
enum Stop {
    /// SIGTERM / SIGINT.
    Signal,
    /// The reset button was held.
    FactoryReset,
    /// Asked to restart (new settings, restored backup).
    Restart,
}

/// What the status LED shows.
fn led_state(config: &Config, engine: &Engine, host: &HostFacts) -> meshbridge_board::LedState {
    let facts = crate::api::health_facts(config, engine, host, std::time::SystemTime::now(), false);
    let any_online = engine
        .mesh()
        .peer_status()
        .iter()
        .any(|p| crate::health::online(p.last_handshake));
    crate::health::led_state(&facts, any_online)
}

/// SIGTERM and SIGINT, registered when the daemon starts.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

/// The sockets and devices the loop reads and writes.
struct Io<'a> {
    dev: &'a Devices,
    udp: &'a UdpSocket,
    /// The UDP socket is dual-stack (IPv4 peers as mapped addresses).
    dual: bool,
    /// Netlink, for bridge ports that appear later.
    handle: &'a crate::host::netlink::Handle,
    /// The lease file.
    leases: &'a mut crate::lease_store::LeaseStore,
}

/// What feeds the loop's control plane: requests from the page and the
/// CLI, and the producers of the mesh's peer set.
struct ControlPlane<'a> {
    requests: tokio::sync::mpsc::Receiver<crate::api::Pending>,
    /// The config's peers, with endpoint names resolved by a task.
    static_peers: &'a mut crate::peers::StaticPeers,
    /// The tailnet (`[tailnet]`): its map updates and disco.
    tailnet: Option<&'a mut crate::tailnet::Tailnet>,
    /// The bridged devices that are tailnet nodes of their own.
    nodes: &'a mut crate::device_nodes::DeviceNodes,
    /// For routes to the tailnet's peers on the TUN.
    netlink: crate::host::netlink::Handle,
}

async fn event_loop(
    config: &mut Config,
    engine: &mut Engine,
    io: Io<'_>,
    control: ControlPlane<'_>,
    discovery: &mut crate::discovery::Discovery,
    hardware: &mut crate::hw::Hardware,
    signals: Signals,
) -> Result<Stop> {
    let Io {
        dev,
        udp,
        dual,
        handle,
        leases: lease_store,
    } = io;
    let ControlPlane {
        mut requests,
        static_peers,
        mut tailnet,
        nodes,
        netlink: nl_handle,
    } = control;
    let mut tailnet_host_addrs: Vec<std::net::Ipv4Addr> = Vec::new();
    let mut tailnet_routes: Vec<ipnet::IpNet> = Vec::new();
    let started = std::time::Instant::now();
    let Signals {
        term: mut sigterm,
        int: mut sigint,
    } = signals;
    // A TSO segment: up to 64 KB of IP, its Ethernet header, the vnet header.
    let mut tap_buf = vec![0u8; 65536 + 64];
    let mut scratch = Vec::with_capacity(2048);
    let mut runs = Runs::new();
    // A TSO segment: up to 64 KB of IP and the vnet header.
    let mut tun_buf = vec![0u8; 65536 + 64];
    let mut udp_buf = vec![0u8; 65536];
    let mut udp_off = UdpOffload::new(udp);
    let mut stats_log = tokio::time::interval(Duration::from_secs(300));
    let mut health = tokio::time::interval(Duration::from_secs(60));
    let mut hw_tick = tokio::time::interval(Duration::from_secs(2));
    let mut leases = LeaseWriter {
        store: lease_store,
        last: None,
        pending: false,
    };
    let mut restart_pending = false;
    let board = hardware.board_name.clone();
    // /proc and /sys are read on a blocking thread; the loop reads the cache.
    let host = crate::host::proc::spawn_refresh(HOST_FACTS_REFRESH).await;
    loop {
        // Events first: a lease the server just gave is on flash before its
        // DHCPACK goes out (one sync for the whole batch).
        handle_events(config, engine, discovery, &mut leases, nodes);
        flush(
            engine,
            (dev, &mut runs),
            (udp, &mut udp_off),
            dual,
            tailnet.as_deref_mut(),
            nodes,
        )
        .await;
        if let Some(t) = tailnet.as_deref_mut() {
            flush_tailnet(t, config, engine, static_peers, udp, dual).await;
        }
        let mdns_deadline = discovery.poll_timeout();
        if let Some(t) = tailnet.as_deref() {
            nodes.set_home(t.derp_home());
        }
        let disco_deadline = tailnet
            .as_deref()
            .and_then(|t| t.poll_timeout())
            .map(tokio::time::Instant::from_std);
        let deadline = engine
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            r = dev.tap.recv(&mut tap_buf) => match r {
                Ok(n) => {
                    tap_read(engine, dev.tap_vnet, &mut tap_buf[..n], &mut scratch);
                    // What else is queued, before the loop's other work: one
                    // wakeup per frame would cost more than the frame.
                    for _ in 1..DEV_BATCH {
                        let Ok(n) = dev.tap.try_recv(&mut tap_buf) else { break };
                        tap_read(engine, dev.tap_vnet, &mut tap_buf[..n], &mut scratch);
                    }
                }
                Err(e) => tracing::warn!("reading the TAP: {e}"),
            },
            r = dev.tun.recv(&mut tun_buf) => match r {
                Ok(n) => {
                    tun_read(engine, dev.tun_vnet, &mut tun_buf[..n], &mut scratch);
                    for _ in 1..DEV_BATCH {
                        let Ok(n) = dev.tun.try_recv(&mut tun_buf) else { break };
                        tun_read(engine, dev.tun_vnet, &mut tun_buf[..n], &mut scratch);
                    }
                }
                Err(e) => tracing::warn!("reading the TUN: {e}"),
            },
            r = udp_off.recv(udp, &mut udp_buf) => match r {
                Ok((n, from, seg)) => {
                    // With UDP GRO one read may hold a run of datagrams.
                    for d in segments(&udp_buf[..n], seg) {
                        dispatch_udp(engine, tailnet.as_deref_mut(), canonical(from), d);
                    }
                    // Drain what else is queued before the loop's other
                    // work: under a flood of forged handshakes the loop's
                    // own cost per wakeup would otherwise decide how many
                    // datagrams (real ones among them) the socket drops.
                    for _ in 1..UDP_BATCH {
                        let Ok((n, from, seg)) = udp_off.try_recv(udp, &mut udp_buf) else { break };
                        for d in segments(&udp_buf[..n], seg) {
                            dispatch_udp(engine, tailnet.as_deref_mut(), canonical(from), d);
                        }
                    }
                }
                Err(e) => tracing::debug!("UDP receive: {e}"),
            },
            _ = tokio::time::sleep_until(deadline) => engine.handle_timeout(read_now()),
            _ = async { match mdns_deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                discovery.handle_timeout();
            }
            r = discovery.recv_uplink() => {
                if let Some((from, n)) = r {
                    discovery.on_uplink(from, n);
                }
            }
            _ = async { match disco_deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                if let Some(t) = tailnet.as_deref_mut() {
                    let now = std::time::Instant::now();
                    t.note_mesh(now, engine.mesh());
                    t.handle_timeout(now);
                }
            }
            Some(input) = async { match tailnet.as_deref_mut() { Some(t) => t.next_input().await, None => std::future::pending().await } } => match input {
            crate::tailnet::TailnetInput::Relayed(input) => {
                if let Some(t) = tailnet.as_deref_mut() {
                    if let Some((via, data)) = t.handle_relayed(std::time::Instant::now(), input) {
                        engine.handle_datagram(read_now(), via, &data);
                    }
                }
            }
            crate::tailnet::TailnetInput::Update(update) => {
                if let Some(t) = tailnet.as_deref_mut() {
                    let now = std::time::Instant::now();
                    let (filter, static_keys) = tailnet_rules(config, engine, discovery, &update);
                    t.on_update(now, *update);
                    let own = t.own_ipv4();
                    for ip in own.iter().filter(|ip| !tailnet_host_addrs.contains(ip)) {
                        let added = match dev.tun.if_index() {
                            Ok(idx) => netlink::add_address_v4(handle, idx, *ip, 32).await,
                            Err(e) => Err(e.into()),
                        };
                        if let Err(e) = added {
                            tracing::warn!("adding the tailnet address {ip} to {}: {e:#}", config.tun_name);
                        } else {
                            discovery.serve_dns_on(std::net::IpAddr::V4(*ip)).await;
                        }
                    }
                    tailnet_host_addrs = own.clone();
                    if nodes.set_router(own.first().copied()) {
                        set_node_leases(engine, nodes);
                    }
                    engine.set_host_addresses(own);
                    let set = t.peer_set();
                    // The host reaches the tailnet's peers through the TUN
                    // (replies from the box's tailnet address, and from the
                    // uplink to the peers using the box as exit node); IPv6
                    // only when the exit node serves it (else the TUN has
                    // none), new routes only, off the loop.
                    let v6 = engine.policy().exit_v6;
                    let nets: Vec<ipnet::IpNet> = set
                        .iter()
                        .flat_map(|p| p.allowed_ips.iter().copied())
                        .filter(|n| (v6 || matches!(n, ipnet::IpNet::V4(_))) && !tailnet_routes.contains(n))
                        .collect();
                    tailnet_routes.extend(nets.iter().copied());
                    if let (false, Ok(idx)) = (nets.is_empty(), dev.tun.if_index()) {
                        let (h, own) = (nl_handle.clone(), [config.mesh_address, config.bridge_address]);
                        tokio::spawn(async move {
                            if let Err(e) = netlink::add_peer_routes(&h, idx, &nets, &own).await {
                                tracing::warn!("routes to the tailnet's peers: {e:#}");
                            }
                        });
                    }
                    engine.set_tailnet_filter(crate::tailnet_rules::filtered_peers(&set, &static_keys), filter);
                    static_peers.set_tailnet(set);
                    static_peers.apply(now, config, engine.mesh_mut());
                    if t.uses_exit_node() {
                        crate::tailnet::exit::sync_engine(engine, t.exit_node());
                    }
                }
            }
            },
            Some(msg) = nodes.recv() => match msg {
                crate::device_nodes::NodeMsg::Packet(mac, p) => engine.handle_node_packet(read_now(), mac, &p),
                crate::device_nodes::NodeMsg::Address(mac, a) => {
                    if nodes.set_address(mac, a) {
                        set_node_leases(engine, nodes);
                    }
                }
            },
            Some((name, addr)) = static_peers.next_resolved() => {
                if static_peers.learn(name, addr) {
                    static_peers.apply(std::time::Instant::now(), config, engine.mesh_mut());
                }
            }
            _ = stats_log.tick() => tracing::debug!("stats: {:?} mesh: {:?}", engine.stats(), engine.mesh().stats()),
            _ = health.tick() => {
                check_health(config, engine, &host.borrow());
                discovery.tick(config, engine);
            }
            Some(p) = requests.recv() => {
                let mut restart_now = false;
                let mut factory_reset = false;
                let reply = crate::control::handle(p.request, &mut crate::control::Ctx {
                    config: &mut *config,
                    engine: &mut *engine,
                    peers: &mut *static_peers,
                    discovery: &mut *discovery,
                    started,
                    board: &board,
                    restart_pending: &mut restart_pending,
                    restart_now: &mut restart_now,
                    factory_reset: &mut factory_reset,
                    host: &host.borrow().clone(),
                    tailnet: tailnet.as_deref(),
                    nodes: Some(&mut *nodes),
                });
                let _ = p.reply.send(reply);
                if factory_reset {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    return Ok(Stop::FactoryReset);
                }
                if restart_now {
                    // Let the answer reach the page before the sockets close.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    flush(engine, (dev, &mut runs), (udp, &mut udp_off), dual, tailnet.as_deref_mut(), nodes).await;
                    return Ok(Stop::Restart);
                }
            }
            _ = hw_tick.tick() => {
                check_ports(config, handle, dev.bridge_idx).await;
                let led = led_state(config, engine, &host.borrow());
                hardware.report(led);
                leases.flush_if_due(config, engine);
                leases.store.tick();
            }
            _ = hardware.reset_requested() => {
                tracing::warn!("reset button held: factory reset");
                return Ok(Stop::FactoryReset);
            }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping"); return Ok(Stop::Signal); }
            _ = sigint.recv() => { tracing::info!("SIGINT: stopping"); return Ok(Stop::Signal); }
        }
    }
}

/// `meshbridge --cleanup`: remove everything a previous run installed.
/// `routing` says the config may have installed our nftables table.
pub async fn cleanup(state_dir: &Path, extra_links: &[String], routing: bool) -> Result<()> {
    crate::wifi::remove_leftovers(state_dir);
    let handle = netlink::connect().await?;
    let mut rec = netlink::read_record(state_dir)?.unwrap_or_default();
    rec.nft_table |= routing;
    for l in extra_links {
        if !rec.links.contains(l) {
            rec.links.push(l.clone());
        }
    }
    netlink::cleanup(&handle, &rec).await?;
    match std::fs::remove_file(netlink::record_path(state_dir)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context("removing the install record"),
    }
    Ok(())
}
