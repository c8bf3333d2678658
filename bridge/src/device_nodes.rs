//! Every bridged device a tailnet node of its own (`[tailnet] devices =
//! "nodes"`, the default with `[tailnet]`).
//!
//! When a device the box has never seen asks for an address, the DHCP
//! server holds its DISCOVERs a few seconds ([`HOLD_NEW`]) and says so; the
//! box then registers a node for it: its own machine, node and disco keys
//! (kept per MAC in `state_dir/tailnet-devices/`, 0600), its own control
//! session and map poll, DERP connection and UDP socket, all in this
//! process — one task per device ([`run`]). Its name is the device's DHCP
//! host name (option 12), else one made from its MAC; its tags are
//! `device_tags`; the auth key is the box's (a reusable, tagged key).
//!
//! Once the node has its tailnet address, the DHCP server hands the device
//! that address ([`meshbridge_dhcp::NodeLease`]), with the tailnet's /10 as
//! its network and the box's own tailnet address as router and DNS server.
//! The engine hands the device's packets for the tailnet to its node
//! ([`meshbridge_engine::Transmit::Node`]), which routes them by its own
//! netmap and encrypts them with its own key; what the node's peers send
//! it, its packet filter allows and the engine writes to the device. The
//! device never learns it is on a VPN.
//!
//! A restart (or SIGKILL) starts every kept node again with its keys: the
//! control server knows them, so the same nodes come back with the same
//! addresses, which the device keeps renewing meanwhile (the last address
//! is kept in the device's file).

use crate::config::{AuthKey, Config, DeviceMode};
use crate::tailnet::{Settings, Tailnet, TailnetInput};
use anyhow::{Context, Result};
use meshbridge_dhcp::NodeLease;
use meshbridge_engine::filter::Firewall;
use meshbridge_mesh::{Mesh, Output, Path, PrivateKey};
use meshbridge_tailnet::control::NodeIdentity;
use meshbridge_tailnet::keys::NodeKeys;
use meshbridge_types::Mac;
use meshbridge_web::proto::TailnetState;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path as FsPath, PathBuf};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

/// The folder in `state_dir` with one file per device node.
pub const DEVICE_DIR: &str = "tailnet-devices";

/// The box's last tailnet address, in [`DEVICE_DIR`].
const BOX_FILE: &str = "box-address";

/// How long a new device's first DISCOVER waits for its node (many
/// devices at once register one after the other, [`STAGGER`] apart); after
/// that it gets a pool address for a short while
/// ([`meshbridge_dhcp::WAITING_LEASE_TIME`]).
pub const HOLD_NEW: Duration = Duration::from_secs(30);

/// Nodes start at least this far apart (many devices at once, or a restart
/// with many kept nodes): the control server is not hit all at once.
const STAGGER: Duration = Duration::from_millis(250);

/// Packets queued between the event loop and one node, each way.
const QUEUE: usize = 256;

/// The largest datagram a device node reads: a 9,000-byte jumbo frame's
/// packet in WireGuard, with room to spare.
const NODE_DATAGRAM: usize = 9216 + 64;

/// The mask handed with a node address: the tailnet's /10.
const NODE_MASK: Ipv4Addr = Ipv4Addr::new(255, 192, 0, 0);

/// What a node task tells the event loop.
#[derive(Debug)]
pub enum NodeMsg {
    /// A packet from the node's peers for its device.
    Packet(Mac, Vec<u8>),
    /// The node's tailnet address (new, changed or gone).
    Address(Mac, Option<Ipv4Addr>),
}

/// A device node as `meshbridge status` and the page show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeState {
    /// Login state of the node's control session.
    pub state: TailnetState,
    /// Its MagicDNS name.
    pub name: Option<String>,
    /// Its tailnet address.
    pub address: Option<Ipv4Addr>,
    /// Its peers, and how many are online.
    pub peers: usize,
    /// Peers online.
    pub online: usize,
    /// The last error of its control session.
    pub error: Option<String>,
}

/// One device's file in [`DEVICE_DIR`].
#[derive(Serialize, Deserialize)]
struct DeviceFile {
    /// The node's keys ([`NodeKeys::to_file`]).
    keys: String,
    /// The name it registered with.
    hostname: String,
    /// Its last tailnet address.
    address: Option<Ipv4Addr>,
}

/// What every device node shares: the box's `[tailnet]`.
#[derive(Clone)]
struct Base {
    control_url: String,
    auth_key: Option<AuthKey>,
    tags: Vec<String>,
    ca_file: Option<PathBuf>,
    /// `[routing] use_exit_node`, when it names a tailnet node: each
    /// device's own node sends the device's internet there (its own ACL
    /// identity at the exit node), never out of the box's uplink.
    exit: Option<String>,
    /// The box's home DERP region (0: none yet), every node's home too.
    home: watch::Receiver<u32>,
}

struct Handle {
    hostname: String,
    packets: mpsc::Sender<Vec<u8>>,
    state: watch::Receiver<NodeState>,
    task: tokio::task::JoinHandle<()>,
    /// Ask the task to log the node out and stop.
    forget: mpsc::Sender<()>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The device nodes, owned by the event loop.
pub struct DeviceNodes {
    base: Option<Base>,
    dir: PathBuf,
    nodes: BTreeMap<Mac, Handle>,
    addresses: HashMap<Mac, Ipv4Addr>,
    tx: mpsc::Sender<NodeMsg>,
    rx: mpsc::Receiver<NodeMsg>,
    /// When the next node may start.
    next_start: Instant,
    /// The box's own tailnet address: the devices' router and DNS server
    /// (kept in [`BOX_FILE`] so that leases are renewed after a restart
    /// before the box's node is back).
    router: Option<Ipv4Addr>,
    /// Packets for a node that was not there or was busy.
    pub dropped: u64,
    /// Devices whose own switch says they are no node ("behind" the box or
    /// "off" the tailnet).
    not_nodes: HashSet<Mac>,
    /// Devices' own tags, instead of `[tailnet] device_tags`.
    tags: HashMap<Mac, Vec<String>>,
    /// The box's home DERP region, for the nodes ([`DeviceNodes::set_home`]),
    /// and its last value (checked at every turn of the event loop).
    home: watch::Sender<u32>,
    home_now: u32,
}

fn file_name(mac: &Mac) -> String {
    format!("{}.json", mac.to_string().replace(':', ""))
}

/// A name for a device that sent none: `device-` and its MAC's last three
/// bytes.
fn default_hostname(mac: &Mac) -> String {
    format!("device-{:02x}{:02x}{:02x}", mac.0[3], mac.0[4], mac.0[5])
}

/// The DHCP host name as a tailnet host name: DNS label characters only.
fn clean_hostname(h: &str) -> Option<String> {
    let h: String = h
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let h = h.trim_matches('-').to_string();
    (!h.is_empty()).then_some(h)
}

impl DeviceNodes {
    /// The device nodes of `config`: none unless `[tailnet]` is set with
    /// `devices = "nodes"` and an auth key (a device cannot log in
    /// interactively). Starts every node kept in `state_dir`.
    pub fn start(config: &Config) -> Result<DeviceNodes> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (home, home_rx) = watch::channel(0);
        let dir = config.state_dir.join(DEVICE_DIR);
        let base = config.tailnet.as_ref().and_then(|t| {
            if t.devices != DeviceMode::Nodes {
                return None;
            }
            if t.auth_key.is_none() {
                tracing::warn!(
                    "tailnet: devices = \"nodes\" needs an auth key (a reusable, tagged one): bridged devices stay behind the box"
                );
                return None;
            }
            Some(Base {
                control_url: t.control_url.clone(),
                auth_key: t.auth_key.clone(),
                tags: t.device_tags.clone(),
                ca_file: t.ca_file.clone(),
                exit: config
                    .routing
                    .use_exit_node
                    .clone()
                    .filter(|n| !config.peers.iter().any(|p| &p.name == n)),
                home: home_rx,
            })
        });
        let mut nodes = DeviceNodes {
            base,
            dir,
            nodes: BTreeMap::new(),
            addresses: HashMap::new(),
            tx,
            rx,
            next_start: Instant::now(),
            router: None,
            dropped: 0,
            not_nodes: HashSet::new(),
            tags: HashMap::new(),
            home,
            home_now: 0,
        };
        nodes.read_switches(config);
        if nodes.base.is_some() {
            std::fs::create_dir_all(&nodes.dir)
                .with_context(|| format!("creating {}", nodes.dir.display()))?;
            nodes.router = std::fs::read_to_string(nodes.dir.join(BOX_FILE))
                .ok()
                .and_then(|t| t.trim().parse().ok());
            nodes.start_kept()?;
            // A kept node whose device was switched away meanwhile (the
            // config edited while the box was off) leaves the tailnet.
            nodes.apply_switches(config);
        }
        Ok(nodes)
    }

    fn read_switches(&mut self, config: &Config) {
        self.not_nodes = config
            .device_tailnet
            .iter()
            .map(|(m, _)| *m)
            .filter(|m| config.device_tailnet_of(m) != crate::config::DeviceTailnet::Node)
            .collect();
        self.tags = config.device_node_tags.iter().cloned().collect();
    }

    /// The devices' own switches changed (the page): a device switched
    /// away from its own node is logged out and removed from the tailnet
    /// (as [`DeviceNodes::forget`]); one switched back gets a node at its
    /// next lease request. New tags count from a node's next
    /// registration. Returns whether a node went (the DHCP server's node
    /// leases changed).
    pub fn apply_switches(&mut self, config: &Config) -> bool {
        self.read_switches(config);
        if self.base.is_none() {
            return false;
        }
        let mut gone: Vec<Mac> = self.not_nodes.iter().copied().collect();
        gone.sort();
        let mut any = false;
        for mac in gone {
            if !self.nodes.contains_key(&mac) {
                // A node kept for a device that is away: it logs out too.
                match read_file(&self.dir.join(file_name(&mac))) {
                    Ok((keys, f)) => self.spawn(mac, f.hostname, keys),
                    Err(_) => {
                        any |= self.addresses.remove(&mac).is_some();
                        continue;
                    }
                }
            }
            if self.forget(&mac) {
                tracing::info!("tailnet: a device switched away from its own node: the node is logged out and removed");
                any = true;
            }
        }
        any
    }

    /// Whether devices become nodes at all.
    pub fn enabled(&self) -> bool {
        self.base.is_some()
    }

    /// How long a new device waits for its node (`None`: not at all).
    pub fn hold_new(&self) -> Option<Duration> {
        self.enabled().then_some(HOLD_NEW)
    }

    fn start_kept(&mut self) -> Result<()> {
        let entries = std::fs::read_dir(&self.dir)
            .with_context(|| format!("reading {}", self.dir.display()))?;
        for e in entries.flatten() {
            let path = e.path();
            let Some(mac) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(mac_of_stem)
            else {
                continue;
            };
            match read_file(&path) {
                Ok((keys, f)) => {
                    if let Some(a) = f.address {
                        self.addresses.insert(mac, a);
                    }
                    self.spawn(mac, f.hostname, keys);
                }
                // A damaged file is left alone (never overwritten with new
                // keys, which would make a second node for the device).
                Err(e) => tracing::warn!("tailnet: device node {}: {e:#}", path.display()),
            }
        }
        Ok(())
    }

    /// A device asked for an address: make it a node if it is none yet,
    /// or start its kept node again (a device that was away).
    pub fn ensure(&mut self, mac: Mac, hostname: Option<&str>) {
        if self.base.is_none() || self.nodes.contains_key(&mac) || self.not_nodes.contains(&mac) {
            return;
        }
        let path = self.dir.join(file_name(&mac));
        if path.exists() {
            match read_file(&path) {
                Ok((keys, f)) => {
                    tracing::info!("tailnet: {} is back: its node goes online", f.hostname);
                    self.spawn(mac, f.hostname, keys);
                }
                // Never replaced by new keys: that would be a second node.
                Err(e) => tracing::warn!("tailnet: device node {}: {e:#}", path.display()),
            }
            return;
        }
        let hostname = hostname
            .and_then(clean_hostname)
            .unwrap_or_else(|| default_hostname(&mac));
        let keys = NodeKeys::generate(&mut rand::rngs::OsRng);
        let file = DeviceFile {
            keys: keys.to_file(),
            hostname: hostname.clone(),
            address: None,
        };
        if let Err(e) = self.write(&mac, &file) {
            tracing::warn!("tailnet: keeping a node for a device: {e:#}");
            return;
        }
        tracing::info!("tailnet: registering a node for a bridged device as {hostname}");
        self.spawn(mac, hostname, keys);
    }

    /// A device is away (its lease ran out): its node goes offline (its
    /// control session ends) and keeps its keys and address for when the
    /// device is back.
    pub fn away(&mut self, mac: &Mac) {
        if let Some(h) = self.nodes.remove(mac) {
            tracing::info!("tailnet: {} is away: its node goes offline", h.hostname);
        }
    }

    fn write(&self, mac: &Mac, file: &DeviceFile) -> Result<()> {
        let text = serde_json::to_string_pretty(file)?;
        crate::persist::write_private(&self.dir.join(file_name(mac)), text.as_bytes())
    }

    fn spawn(&mut self, mac: Mac, hostname: String, keys: NodeKeys) {
        let Some(mut base) = self.base.clone() else {
            return;
        };
        if let Some(t) = self.tags.get(&mac) {
            base.tags = t.clone();
        }
        let now = Instant::now();
        let delay = self.next_start.saturating_duration_since(now);
        self.next_start = now.max(self.next_start) + STAGGER;
        let (packets, packets_rx) = mpsc::channel(QUEUE);
        let (state_tx, state) = watch::channel(NodeState::default());
        let (forget, forget_rx) = mpsc::channel(1);
        let task = tokio::spawn(run(Task {
            mac,
            hostname: hostname.clone(),
            base,
            keys,
            delay,
            key_file: self.dir.join(format!("{}.keys", file_name(&mac))),
            packets: packets_rx,
            out: self.tx.clone(),
            state: state_tx,
            forget: forget_rx,
        }));
        self.nodes.insert(
            mac,
            Handle {
                hostname,
                packets,
                state,
                task,
                forget,
            },
        );
    }

    /// The box's home DERP region (its netcheck's): the nodes connect
    /// there too, and measure nothing themselves.
    pub fn set_home(&mut self, region: Option<u16>) {
        let region = region.map(u32::from).unwrap_or(0);
        if region != self.home_now {
            self.home_now = region;
            self.home.send_replace(region);
        }
    }

    /// A packet from a device for its node.
    pub fn send(&mut self, mac: &Mac, packet: Vec<u8>) {
        match self.nodes.get(mac) {
            Some(h) if h.packets.try_send(packet).is_ok() => {}
            _ => self.dropped += 1,
        }
    }

    /// The next message from a node (cancel-safe).
    pub async fn recv(&mut self) -> Option<NodeMsg> {
        self.rx.recv().await
    }

    /// A node's address changed: kept in its file; returns whether the
    /// node leases changed.
    pub fn set_address(&mut self, mac: Mac, address: Option<Ipv4Addr>) -> bool {
        let changed = match address {
            Some(a) => self.addresses.insert(mac, a) != Some(a),
            None => self.addresses.remove(&mac).is_some(),
        };
        if changed && address.is_some() {
            let path = self.dir.join(file_name(&mac));
            match read_file(&path) {
                Ok((_, mut f)) => {
                    f.address = address;
                    if let Err(e) = self.write(&mac, &f) {
                        tracing::warn!("tailnet: keeping a device node's address: {e:#}");
                    }
                }
                Err(e) => tracing::warn!("tailnet: device node {}: {e:#}", path.display()),
            }
        }
        changed
    }

    /// The box's own tailnet address changed; returns whether it did.
    pub fn set_router(&mut self, router: Option<Ipv4Addr>) -> bool {
        if router.is_none() || router == self.router {
            return false;
        }
        self.router = router;
        if self.enabled() {
            if let Some(r) = router {
                let p = self.dir.join(BOX_FILE);
                if let Err(e) = crate::persist::write_private(&p, r.to_string().as_bytes()) {
                    tracing::warn!("tailnet: keeping the box's address: {e:#}");
                }
            }
        }
        true
    }

    /// The DHCP server's node leases, with the box's tailnet address as
    /// router and DNS server (none until the box has one).
    pub fn leases(&self) -> Vec<NodeLease> {
        let Some(router) = self.router else {
            return Vec::new();
        };
        let mut v: Vec<NodeLease> = self
            .addresses
            .iter()
            .filter(|(_, ip)| **ip != router)
            .map(|(mac, ip)| NodeLease {
                mac: *mac,
                ip: *ip,
                subnet_mask: NODE_MASK,
                router,
                dns: vec![router],
            })
            .collect();
        v.sort_by_key(|n| n.mac);
        v
    }

    /// A device forgotten on the page: its node is logged out (removed from
    /// the tailnet) and its keys deleted. Returns whether it had a node.
    pub fn forget(&mut self, mac: &Mac) -> bool {
        self.addresses.remove(mac);
        let Some(mut h) = self.nodes.remove(mac) else {
            return false;
        };
        // The task logs out and ends; it is not aborted on drop. Its files
        // go once it ended (the logout writes its keys one last time).
        let _ = h.forget.try_send(());
        let task = std::mem::replace(&mut h.task, tokio::spawn(async {}));
        drop(h);
        let files = [
            self.dir.join(file_name(mac)),
            self.dir.join(format!("{}.keys", file_name(mac))),
        ];
        tokio::spawn(async move {
            if tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .is_err()
            {
                tracing::warn!("tailnet: a forgotten device's node did not log out in time");
            }
            for p in files {
                if let Err(e) = std::fs::remove_file(&p) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!("removing {}: {e}", p.display());
                    }
                }
            }
        });
        true
    }

    /// Every device node, by MAC.
    pub fn states(&self) -> Vec<(Mac, String, NodeState)> {
        self.nodes
            .iter()
            .map(|(m, h)| (*m, h.hostname.clone(), h.state.borrow().clone()))
            .collect()
    }

    /// The device nodes for `meshbridge status` and the page.
    pub fn status(&self) -> Vec<meshbridge_web::proto::TailnetDeviceStatus> {
        self.states()
            .into_iter()
            .map(
                |(mac, hostname, s)| meshbridge_web::proto::TailnetDeviceStatus {
                    mac: mac.to_string(),
                    hostname,
                    state: s.state,
                    name: s.name.map(|n| n.trim_end_matches('.').to_string()),
                    address: s.address.map(|a| a.to_string()),
                    peers: s.peers,
                    online: s.online,
                    error: s.error,
                },
            )
            .collect()
    }

    /// One device's node, if it has one.
    pub fn state(&self, mac: &Mac) -> Option<NodeState> {
        self.nodes.get(mac).map(|h| h.state.borrow().clone())
    }
}

fn mac_of_stem(stem: &str) -> Option<Mac> {
    if stem.len() != 12 || !stem.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut b = [0u8; 6];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&stem[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(Mac(b))
}

fn read_file(path: &FsPath) -> Result<(NodeKeys, DeviceFile)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let f: DeviceFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a device node file", path.display()))?;
    // The control task keeps the node's keys up to date in `<file>.keys`.
    let newer = path.with_extension("json.keys");
    let text = match std::fs::read_to_string(&newer) {
        Ok(t) => t,
        Err(_) => f.keys.clone(),
    };
    let keys =
        NodeKeys::from_file(&text).with_context(|| format!("the keys of {}", path.display()))?;
    Ok((keys, f))
}

/// What a node task needs.
struct Task {
    mac: Mac,
    hostname: String,
    base: Base,
    keys: NodeKeys,
    delay: Duration,
    key_file: PathBuf,
    packets: mpsc::Receiver<Vec<u8>>,
    out: mpsc::Sender<NodeMsg>,
    state: watch::Sender<NodeState>,
    forget: mpsc::Receiver<()>,
}

/// One device's node: its control session ([`Tailnet`]), its WireGuard
/// peers ([`Mesh`], keyed with the node key), its packet filter and its UDP
/// socket.
async fn run(mut task: Task) {
    tokio::time::sleep(task.delay).await;
    let sock = match UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("tailnet: a device node's UDP socket: {e}");
            return;
        }
    };
    let port = sock.local_addr().map(|a| a.port()).unwrap_or(0);
    let mut mesh = Mesh::new(&PrivateKey::from_bytes(task.keys.node_key.to_bytes()));
    let settings = Settings {
        control_url: task.base.control_url.clone(),
        auth_key: task.base.auth_key.clone(),
        identity: NodeIdentity {
            hostname: task.hostname.clone(),
            routes: Vec::new(),
            tags: task.base.tags.clone(),
            home_derp: 0,
        },
        listen_port: port,
        key_file: task.key_file.clone(),
        ca_file: task.base.ca_file.clone(),
    };
    let exit = task
        .base
        .exit
        .clone()
        .map(crate::tailnet::exit::ExitNode::new);
    let mut t = Tailnet::spawn(settings, task.keys.clone(), false, exit);
    t.follow_home(task.base.home.clone());
    let mut fw = Firewall::default();
    let mut own: Option<Ipv4Addr> = None;
    // One datagram at a time (no GRO on a node's socket): WireGuard of a
    // packet up to a jumbo frame, disco or STUN. A larger one is cut short
    // and fails to decrypt (counted by the mesh).
    let mut buf = vec![0u8; NODE_DATAGRAM];
    let mut denied = 0u64;
    loop {
        let now = Instant::now();
        while let Some(o) = mesh.poll_output() {
            match o {
                Output::Datagram(Path::Udp(to), d) => send(&mut t, &sock, to, &d).await,
                Output::Datagram(Path::Relay { .. }, _) => {}
                Output::Packet(_, p) => {
                    if fw.check_inbound(now, &p).accepts() {
                        let _ = task.out.try_send(NodeMsg::Packet(task.mac, p));
                    } else {
                        denied += 1;
                    }
                }
            }
        }
        while let Some(tx) = t.poll_transmit() {
            send(&mut t, &sock, tx.to, &tx.data).await;
        }
        if t.take_paths_changed() {
            mesh.apply(now, &t.peer_set());
            continue;
        }
        let deadline = [mesh.poll_timeout(), t.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + Duration::from_secs(60));
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                if let Ok((n, from)) = r {
                    let d = &buf[..n];
                    let from = canonical(from);
                    if meshbridge_tailnet::disco::looks_like_disco(d) {
                        t.handle_disco(Instant::now(), from, d);
                    } else if t.is_stun_response(d) {
                        t.handle_stun(d);
                    } else {
                        let _ = mesh.handle_datagram(from, d);
                    }
                }
            }
            Some(p) = task.packets.recv() => {
                let dst = packet_dst(&p);
                match dst.and_then(|d| mesh.route(IpAddr::V4(d))) {
                    Some(peer) => {
                        fw.note_outbound(Instant::now(), &p);
                        let _ = mesh.send(peer, &p);
                    }
                    None => denied += 1,
                }
            }
            Some(input) = t.next_input() => match input {
                TailnetInput::Relayed(input) => {
                    if let Some((via, data)) = t.handle_relayed(Instant::now(), input) {
                        let _ = mesh.handle_datagram(via, &data);
                    }
                }
                TailnetInput::Update(update) => {
                    let (filter, bad) =
                        crate::tailnet_rules::compile_filter(update.rules.filter.as_deref());
                    if bad > 0 {
                        tracing::warn!("tailnet: {bad} address(es) in a device node's packet filter did not parse");
                    }
                    fw.filter = filter;
                    t.on_update(Instant::now(), *update);
                    mesh.apply(Instant::now(), &t.peer_set());
                    let addr = t.own_ipv4().first().copied();
                    if addr != own {
                        own = addr;
                        let _ = task.out.send(NodeMsg::Address(task.mac, addr)).await;
                    }
                    publish(&t, own, &task.state);
                }
            },
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                let now = Instant::now();
                mesh.handle_timeout(now);
                t.note_mesh(now, &mesh);
                t.handle_timeout(now);
                publish(&t, own, &task.state);
            }
            Some(()) = task.forget.recv() => {
                match t.logout() {
                    Ok(()) => {
                        // Wait (bounded) until the control server took it.
                        for _ in 0..50 {
                            if t.status().state == TailnetState::LoggedOut {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                    Err(e) => tracing::warn!("tailnet: logging a device node out: {e}"),
                }
                tracing::debug!("tailnet: device node stopped ({denied} packet(s) denied)");
                return;
            }
        }
    }
}

/// A datagram from a node: over DERP to a relay stand-in, else on its socket.
async fn send(t: &mut Tailnet, sock: &UdpSocket, to: SocketAddr, d: &[u8]) {
    if Tailnet::is_relay(&to) {
        t.send_relay(&to, d);
    } else if let Err(e) = sock.send_to(d, to).await {
        tracing::debug!("device node send to {to}: {e}");
    }
}

fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        a => a,
    }
}

fn packet_dst(p: &[u8]) -> Option<Ipv4Addr> {
    (p.len() >= 20 && p[0] >> 4 == 4).then(|| Ipv4Addr::new(p[16], p[17], p[18], p[19]))
}

fn publish(t: &Tailnet, own: Option<Ipv4Addr>, state: &watch::Sender<NodeState>) {
    let (state_now, name, error, peers, online) = t.summary();
    let next = NodeState {
        state: state_now,
        name,
        address: own,
        peers,
        online,
        error,
    };
    state.send_if_modified(|s| {
        let changed = *s != next;
        if changed {
            *s = next;
        }
        changed
    });
}
