//! The box as a tailnet node (`[tailnet]`): the control client task, the
//! tailnet's peers as a producer of the mesh's peer set, and disco on the
//! WireGuard UDP socket.
//!
//! * A task ([`control_task`]) talks to the control server with the
//!   `meshbridge-tailnet` client: registers (auth key), advertises the
//!   routes, streams the map, reconnects with backoff. Every netmap update
//!   goes to the event loop as an [`Update`] over a channel.
//! * The loop owns a [`Tailnet`]: it turns the latest update plus the paths
//!   disco confirmed into a [`PeerSet`] ([`peer_set`]), which
//!   `peers::StaticPeers` merges after the config's peers and applies.
//! * Disco datagrams (magic prefix) on the UDP socket go to
//!   [`Tailnet::handle_disco`], not to the mesh; disco's pings and pongs go
//!   out of the same socket. A pong confirms a path: it becomes that
//!   peer's WireGuard endpoint.
//!
//! * DERP ([`crate::tailnet_derp`]): a peer without a confirmed direct
//!   path gets a relay stand-in address as its endpoint; datagrams the
//!   mesh or disco send there go over DERP ([`Tailnet::send_relay`]), and
//!   what DERP delivers comes back through [`Tailnet::handle_relayed`].
//!
//! The node key *is* the mesh's WireGuard key (`mesh.private_key`): the
//! box has one WireGuard identity, for static peers and the tailnet alike.
//! The machine and disco keys live in `state_dir/tailnet-keys.json` (0600):
//! a restart is the same node.

use crate::config::{AuthKey, Config};
use crate::tailnet_derp::{self, Derp, DerpInput, RelayAddrs, StunProbe};
use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use meshbridge_mesh::{PeerConfig, PeerSet, PublicKey};
use meshbridge_tailnet::client::{fetch_control_key, ControlClient, ControlUrl};
use meshbridge_tailnet::control::{self, NodeIdentity, RegisterNext};
use meshbridge_tailnet::disco::{self, Disco, DiscoEvent, DiscoPeer};
use meshbridge_tailnet::keys::{MachinePrivate, NodeKeys, NodePrivate, NodePublic};
use meshbridge_tailnet::mapstream::MAP_WATCHDOG;
use meshbridge_tailnet::netcheck::Netcheck;
use meshbridge_tailnet::netmap::{Applied, Netmap, TailnetPeer};
use meshbridge_tailnet::tailcfg::{DerpRegion, Service};
use meshbridge_web::proto::{DerpRegionStatus, TailnetPeerStatus, TailnetState, TailnetStatus};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch};

pub mod exit;

/// The key file in `state_dir`.
pub const KEY_FILE: &str = "tailnet-keys.json";

/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How often the control task looks whether the box's local endpoints
/// changed (then it tells the control server, without a new stream).
const ENDPOINT_CHECK: Duration = Duration::from_secs(15);

/// What the control task says about its session, for `meshbridge status`
/// and the page (the peers come from the loop's [`Tailnet`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlState {
    /// Login state.
    pub state: TailnetState,
    /// The pending login URL (state `NeedsLogin`).
    pub login_url: Option<String>,
    /// The last error, while retrying.
    pub error: Option<String>,
    /// Our MagicDNS name, from the netmap.
    pub name: Option<String>,
}

/// What the loop asks the control task.
#[derive(Clone, PartialEq, Eq)]
pub enum Command {
    /// Log out at the control server and stay out until a [`Command::Login`]
    /// or the next start.
    Logout,
    /// Join again now: register with this auth key (memory only), or
    /// without one as at start (the configured key, else interactive).
    Login {
        /// A pasted pre-auth key.
        auth_key: Option<String>,
    },
}

impl std::fmt::Debug for Command {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Logout => f.write_str("Logout"),
            Command::Login { auth_key } => f
                .debug_struct("Login")
                .field("auth_key", &auth_key.as_ref().map(|_| "<redacted>"))
                .finish(),
        }
    }
}

/// What the control task tells the loop after each map update.
#[derive(Debug, Clone)]
pub struct Update {
    /// The box's own tailnet addresses.
    pub addresses: Vec<IpNet>,
    /// The peers.
    pub peers: Vec<TailnetPeer>,
    /// The DERP map's regions (empty until the map has one).
    pub derp_regions: BTreeMap<i32, DerpRegion>,
    /// The packet filter and what MagicDNS needs.
    pub rules: crate::tailnet_rules::NetmapRules,
}

/// The routes the box advertises: the bridge subnet (`advertise_bridge`),
/// `[routing] advertise_routes`, and the default routes for an exit node.
pub fn advertised_routes(config: &Config) -> Vec<IpNet> {
    let Some(t) = &config.tailnet else {
        return Vec::new();
    };
    let mut routes: Vec<IpNet> = Vec::new();
    if t.advertise_bridge {
        routes.push(IpNet::V4(config.bridge_address.trunc()));
    }
    routes.extend(
        config
            .routing
            .advertise_routes
            .iter()
            .map(|n| IpNet::V4(*n)),
    );
    if config.routing.exit_node {
        routes.push("0.0.0.0/0".parse().expect("valid prefix"));
        routes.push("::/0".parse().expect("valid prefix"));
    }
    routes
}

fn is_default_route(n: &IpNet) -> bool {
    n.prefix_len() == 0
}

/// The tailnet's peers as the mesh should run them: keyed by node key (the
/// WireGuard public key), allowed IPs the peer's addresses, plus its
/// subnet routes if `accept_routes` (never a default route: the exit node
/// the bridged devices use gets one in [`Tailnet::peer_set`]). The endpoint
/// is the path disco confirmed, if any.
pub fn peer_set(
    peers: &[TailnetPeer],
    paths: &HashMap<NodePublic, SocketAddr>,
    accept_routes: bool,
) -> PeerSet {
    peers
        .iter()
        .map(|p| {
            let mut allowed_ips = p.addresses.clone();
            if accept_routes {
                for r in &p.allowed_ips {
                    if !is_default_route(r) && !allowed_ips.contains(r) {
                        allowed_ips.push(*r);
                    }
                }
            }
            PeerConfig {
                name: p.name.split('.').next().unwrap_or_default().to_string(),
                public_key: PublicKey(*p.node_key.as_bytes()),
                preshared_key: None,
                endpoint: paths.get(&p.node_key).copied(),
                allowed_ips,
                persistent_keepalive: None,
            }
        })
        .collect()
}

/// Load the node's keys, or make new ones. The node key is always the mesh
/// key; a new file is written 0600.
pub fn load_keys(state_dir: &Path, mesh_key: &[u8; 32]) -> Result<NodeKeys> {
    let path = state_dir.join(KEY_FILE);
    let mut keys = match std::fs::read_to_string(&path) {
        Ok(text) => NodeKeys::from_file(&text).with_context(|| {
            format!(
                "{} is not a tailnet key file; move it away to register as a new node",
                path.display()
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            NodeKeys::generate(&mut rand::rngs::OsRng)
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let node = NodePrivate::from_bytes(*mesh_key);
    if keys.node_key.public() != node.public() {
        keys.node_key = node;
    }
    save_keys(&path, &keys)?;
    Ok(keys)
}

pub(crate) fn save_keys(path: &Path, keys: &NodeKeys) -> Result<()> {
    crate::persist::write_private(path, keys.to_file().as_bytes())
}

/// What the control task needs.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) control_url: String,
    pub(crate) auth_key: Option<AuthKey>,
    pub(crate) identity: NodeIdentity,
    pub(crate) listen_port: u16,
    /// Where the node's keys are kept.
    pub(crate) key_file: PathBuf,
    /// `[tailnet] ca_file`, for an `https://` control URL.
    pub(crate) ca_file: Option<PathBuf>,
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "meshbridge".to_string())
}

fn read_auth_key(k: &Option<AuthKey>) -> Result<Option<String>> {
    match k {
        None => Ok(None),
        Some(AuthKey::Inline(k)) => Ok(Some(k.clone())),
        Some(AuthKey::File(p)) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading tailnet.auth_key_file {}", p.display()))?;
            Ok(Some(text.trim().to_string()))
        }
    }
}

/// What the tailnet hands the event loop.
#[derive(Debug)]
pub enum TailnetInput {
    /// A map update from the control task.
    Update(Box<Update>),
    /// A packet relayed by DERP.
    Relayed(DerpInput),
}

/// The box's tailnet state, owned by the event loop.
pub struct Tailnet {
    updates: mpsc::Receiver<Update>,
    accept_routes: bool,
    last: Option<Update>,
    paths: HashMap<NodePublic, SocketAddr>,
    disco: Disco<StdRng>,
    paths_changed: bool,
    /// `[routing] use_exit_node`, when it names a tailnet node.
    exit: Option<exit::ExitNode>,
    task: tokio::task::JoinHandle<()>,
    /// The control task's state.
    state: watch::Receiver<ControlState>,
    /// Commands to the control task.
    commands: mpsc::Sender<Command>,
    control_url: String,
    hostname: String,
    derp: Derp,
    relay: RelayAddrs,
    stun: StunProbe,
    stun_out: VecDeque<disco::Transmit>,
    /// Our public endpoint (STUN), for the control task to report.
    public_tx: watch::Sender<Option<SocketAddr>>,
    /// Latency to each DERP region, and the home region by latency.
    netcheck: Netcheck,
    /// The home region, for the control task to report (0: none).
    home_tx: watch::Sender<u32>,
    /// The local endpoints the control task reports, for call-me-maybe.
    local_eps: watch::Receiver<Vec<SocketAddr>>,
    /// Payload bytes per peer at the last look ([`Tailnet::note_mesh`]).
    mesh_bytes: HashMap<PublicKey, (u64, u64)>,
    last_mesh_look: Option<Instant>,
    /// `Hostinfo.Services` for the control task to report.
    services_tx: watch::Sender<Vec<Service>>,
    /// A device node ([`Tailnet::follow_home`]): the box's home DERP
    /// region (0: none yet) instead of a netcheck of its own.
    follow: Option<watch::Receiver<u32>>,
    /// When the mesh's counters last moved ([`Tailnet::note_mesh`]).
    last_traffic: Option<Instant>,
}

/// How often the mesh's counters are read for traffic over direct paths
/// (disco keeps checking the paths of peers with traffic only).
const MESH_LOOK: Duration = Duration::from_secs(3);

impl Drop for Tailnet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Tailnet {
    /// Start the control task if `[tailnet]` is set.
    pub fn start(config: &Config) -> Result<Option<Tailnet>> {
        let Some(t) = &config.tailnet else {
            return Ok(None);
        };
        let keys = load_keys(&config.state_dir, config.private_key.as_bytes())?;
        let settings = Settings {
            control_url: t.control_url.clone(),
            auth_key: t.auth_key.clone(),
            identity: NodeIdentity {
                hostname: t.hostname.clone().unwrap_or_else(system_hostname),
                routes: advertised_routes(config),
                tags: Vec::new(),
                home_derp: 0,
            },
            listen_port: config.listen_port,
            key_file: config.state_dir.join(KEY_FILE),
            ca_file: t.ca_file.clone(),
        };
        tracing::info!(
            "tailnet: joining {} as {} (node key {}), advertising [{}]",
            settings.control_url,
            settings.identity.hostname,
            keys.node_key.public().short(),
            settings
                .identity
                .routes
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let exit = config
            .routing
            .use_exit_node
            .clone()
            .filter(|n| !config.peers.iter().any(|p| &p.name == n))
            .map(exit::ExitNode::new);
        let tailnet = Tailnet::spawn(settings, keys, t.accept_routes, exit);
        // The box's DNS-SD proxy, for other boxes' site-to-site discovery.
        if cfg!(feature = "dns") && config.dns_server.enabled && config.discovery.enabled {
            tailnet
                .services_tx
                .send_replace(vec![meshbridge_tailnet::netmap::dns_sd_service(
                    &config.domain,
                )]);
        }
        Ok(Some(tailnet))
    }

    /// Start a node's control task with these settings: the box's, or a
    /// bridged device's (the device nodes module).
    pub(crate) fn spawn(
        settings: Settings,
        keys: NodeKeys,
        accept_routes: bool,
        exit: Option<exit::ExitNode>,
    ) -> Tailnet {
        let disco = Disco::new(
            keys.disco_key.clone(),
            keys.node_key.public(),
            StdRng::from_entropy(),
        );
        let (tx, updates) = mpsc::channel(4);
        let (state_tx, state) = watch::channel(ControlState::default());
        let (commands, commands_rx) = mpsc::channel(4);
        let control_url = settings.control_url.clone();
        let hostname = settings.identity.hostname.clone();
        let derp = Derp::new(keys.node_key.clone());
        let (public_tx, public_rx) = watch::channel(None);
        let (home_tx, home_rx) = watch::channel(0);
        let (eps_tx, local_eps) = watch::channel(Vec::new());
        let (services_tx, services_rx) = watch::channel(Vec::new());
        let task = tokio::spawn(control_task(
            settings,
            keys,
            tx,
            state_tx,
            commands_rx,
            Reports {
                public: public_rx,
                home: home_rx,
                endpoints: eps_tx,
                services: services_rx,
            },
        ));
        Tailnet {
            updates,
            accept_routes,
            last: None,
            paths: HashMap::new(),
            disco,
            paths_changed: false,
            exit,
            task,
            state,
            commands,
            control_url,
            hostname,
            derp,
            relay: RelayAddrs::default(),
            stun: StunProbe::default(),
            stun_out: VecDeque::new(),
            public_tx,
            netcheck: Netcheck::new(),
            home_tx,
            local_eps,
            mesh_bytes: HashMap::new(),
            last_mesh_look: None,
            services_tx,
            follow: None,
            last_traffic: None,
        }
    }

    /// Make this a device node: its home DERP region is the box's (sent on
    /// `home`) and it runs no netcheck; it asks STUN for its public
    /// endpoint until it has one, then only while it has traffic, as
    /// Tailscale re-STUNs only for 45 s after the last packet. Fifty idle
    /// device nodes then cost no wakeups of their own.
    pub(crate) fn follow_home(&mut self, home: watch::Receiver<u32>) {
        self.follow = Some(home);
        self.update_home();
    }

    /// The home DERP region, once chosen.
    pub fn derp_home(&self) -> Option<u16> {
        self.derp.home()
    }

    /// Whether the node had traffic in the last [`disco::ACTIVE_TIMEOUT`]
    /// before `t`.
    fn active_at(&self, t: Instant) -> bool {
        self.last_traffic
            .is_some_and(|a| t <= a + disco::ACTIVE_TIMEOUT)
    }

    /// Whether a STUN request due at `due` should go out: always for the
    /// box; for a device node until it knows its public endpoint, then
    /// while it is active.
    fn stun_wanted(&self, due: Instant) -> bool {
        self.follow.is_none() || self.public_tx.borrow().is_none() || self.active_at(due)
    }

    /// Ask the control task to log out (answered at once; the state
    /// becomes `logged-out` when the control server took it).
    pub fn logout(&self) -> std::result::Result<(), String> {
        if self.state.borrow().state == TailnetState::LoggedOut {
            return Err("the box is logged out of the tailnet already".into());
        }
        self.commands
            .try_send(Command::Logout)
            .map_err(|e| format!("the tailnet control task is busy or stopped: {e}"))
    }

    /// Ask the control task to join again (answered at once; the state
    /// says how it goes: `starting`, `needs-login` with a new URL,
    /// `logged-in`, or `error`). Refused while logged in.
    pub fn login(&self, auth_key: Option<String>) -> std::result::Result<(), String> {
        if self.state.borrow().state == TailnetState::LoggedIn {
            return Err("the box is logged in to the tailnet already; log out first".into());
        }
        self.commands
            .try_send(Command::Login { auth_key })
            .map_err(|e| format!("the tailnet control task is busy or stopped: {e}"))
    }

    /// State, MagicDNS name, last error, peers and of them online: what a
    /// device node shows, without building [`Tailnet::status`]'s per-peer
    /// text (a device node publishes it at every wakeup).
    pub fn summary(&self) -> (TailnetState, Option<String>, Option<String>, usize, usize) {
        let st = self.state.borrow();
        let (peers, online) = self.last.as_ref().map_or((0, 0), |u| {
            (
                u.peers.len(),
                u.peers.iter().filter(|p| p.online == Some(true)).count(),
            )
        });
        (
            st.state,
            st.name
                .as_ref()
                .map(|n| n.trim_end_matches('.').to_string()),
            st.error.clone(),
            peers,
            online,
        )
    }

    /// The tailnet section of `meshbridge status`.
    pub fn status(&self) -> TailnetStatus {
        let st = self.state.borrow().clone();
        let (addresses, peers) = match &self.last {
            Some(u) => (
                u.addresses.iter().map(|a| a.to_string()).collect(),
                u.peers
                    .iter()
                    .map(|p| TailnetPeerStatus {
                        name: p.name.trim_end_matches('.').to_string(),
                        addresses: p.addresses.iter().map(|a| a.to_string()).collect(),
                        online: p.online,
                        direct: self.paths.get(&p.node_key).map(|a| a.to_string()),
                    })
                    .collect(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        TailnetStatus {
            state: st.state,
            login_url: st.login_url,
            error: st.error,
            control_url: self.control_url.clone(),
            hostname: self.hostname.clone(),
            name: st.name.map(|n| n.trim_end_matches('.').to_string()),
            addresses,
            peers,
            derp_home: self.derp.home(),
            derp_regions: self.derp_status(),
            // The engine's counters: filled in by the caller.
            filter_denied: 0,
            filter_flows: 0,
            devices: Vec::new(),
        }
    }

    fn derp_status(&self) -> Vec<DerpRegionStatus> {
        let Some(u) = &self.last else {
            return Vec::new();
        };
        let lat = self.netcheck.latencies();
        u.derp_regions
            .iter()
            .filter_map(|(id, r)| {
                let id = u16::try_from(*id).ok().filter(|id| *id > 0)?;
                Some(DerpRegionStatus {
                    id,
                    code: r.region_code.clone(),
                    latency_ms: lat.get(&id).map(|d| d.as_secs_f64() * 1000.0),
                })
            })
            .collect()
    }

    /// The next map update from the control task (cancel-safe).
    pub async fn next_update(&mut self) -> Option<Update> {
        self.updates.recv().await
    }

    /// Take a map update: new peers for disco, the DERP map for the relays
    /// and netcheck.
    pub fn on_update(&mut self, now: Instant, update: Update) {
        self.paths
            .retain(|k, _| update.peers.iter().any(|p| p.node_key == *k));
        if let Some(e) = &mut self.exit {
            e.update(&update.peers);
        }
        self.derp.set_map(&update.derp_regions);
        self.netcheck
            .set_targets(now, tailnet_derp::netcheck_targets(&update.derp_regions));
        self.last = Some(update);
        self.update_home();
        self.sync_disco_peers(now);
    }

    /// Disco's peers: the netmap's, each with its relay stand-in (for
    /// call-me-maybe).
    fn sync_disco_peers(&mut self, now: Instant) {
        let Some(u) = &self.last else { return };
        let home = self.derp.home();
        let disco_peers: Vec<DiscoPeer> = u
            .peers
            .iter()
            .filter_map(|p| {
                let region = peer_region(p).or(home);
                Some(DiscoPeer {
                    node_key: p.node_key,
                    disco_key: p.disco_key?,
                    endpoints: p.endpoints.clone(),
                    relay: region.map(|r| self.relay.addr_for(p.node_key, r)),
                })
            })
            .collect();
        self.disco.set_peers(now, &disco_peers);
    }

    /// The home region: netcheck's once a measurement answered, else
    /// (nothing to measure, or a first round without answers) the map's
    /// first. Until the first round ended there is none, so that the box
    /// does not connect and report a region only to move at once. A
    /// change connects it and goes to the control task.
    fn update_home(&mut self) {
        let measured = self.netcheck.targets().is_empty() || self.netcheck.rounds() > 0;
        let home = match &self.follow {
            // The box's region, when this node's map has it; else the map's
            // first (a region the box measured that the node's map lacks).
            Some(boxes) => u16::try_from(*boxes.borrow())
                .ok()
                .filter(|h| *h > 0)
                .and_then(|h| {
                    let regions = &self.last.as_ref()?.derp_regions;
                    if regions.contains_key(&i32::from(h)) {
                        Some(h)
                    } else {
                        tailnet_derp::choose_home(regions)
                    }
                }),
            None => self.netcheck.home().or_else(|| {
                self.last
                    .as_ref()
                    .filter(|_| measured)
                    .and_then(|u| tailnet_derp::choose_home(&u.derp_regions))
            }),
        };
        if home != self.derp.home() {
            self.derp.set_home(home);
            self.home_tx.send_replace(home.map(u32::from).unwrap_or(0));
            let lat = self.netcheck.latencies();
            tracing::info!(
                "tailnet: DERP latency [{}]",
                lat.iter()
                    .map(|(r, d)| format!("{r}: {:.1} ms", d.as_secs_f64() * 1000.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            self.sync_disco_peers(Instant::now());
        }
    }

    /// Our endpoints for call-me-maybe: the local ones the control task
    /// reports and the public one from STUN.
    fn sync_own_endpoints(&mut self) {
        let mut eps = self.local_eps.borrow().clone();
        if let Some(p) = *self.public_tx.borrow() {
            if !eps.contains(&p) {
                eps.push(p);
            }
        }
        self.disco.set_own_endpoints(eps);
    }

    /// The box's own tailnet IPv4 addresses (host addresses for the engine).
    pub fn own_ipv4(&self) -> Vec<Ipv4Addr> {
        self.last
            .iter()
            .flat_map(|u| u.addresses.iter())
            .filter_map(|a| match a.addr() {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            })
            .collect()
    }

    /// The tailnet's peers as the mesh should run them now.
    /// A peer without a confirmed direct path is reached over DERP: its
    /// endpoint is its relay stand-in (through its home region, else ours).
    pub fn peer_set(&mut self) -> PeerSet {
        let Some(u) = &self.last else {
            return PeerSet::new();
        };
        let mut endpoints = self.paths.clone();
        for p in &u.peers {
            if endpoints.contains_key(&p.node_key) {
                continue;
            }
            let region = peer_region(p).or(self.derp.home());
            if let Some(r) = region {
                endpoints.insert(p.node_key, self.relay.addr_for(p.node_key, r));
            }
        }
        let mut set = peer_set(&u.peers, &endpoints, self.accept_routes);
        if let Some(k) = self.exit_node() {
            exit::add_default_route(&mut set, &k);
        }
        set
    }

    /// The next map update or packet from a DERP region (cancel-safe).
    pub async fn next_input(&mut self) -> Option<TailnetInput> {
        loop {
            tokio::select! {
                u = self.updates.recv() => return u.map(|u| TailnetInput::Update(Box::new(u))),
                Some(r) = self.derp.next() => return Some(TailnetInput::Relayed(r)),
                // A device node follows the box's home region (cancel-safe).
                Ok(()) = async {
                    match &mut self.follow {
                        Some(home) => home.changed().await,
                        None => std::future::pending().await,
                    }
                } => self.update_home(),
            }
        }
    }

    /// A packet that came over DERP: disco goes to disco (never a direct
    /// path); WireGuard is returned with the peer's relay stand-in address
    /// for the mesh.
    pub fn handle_relayed(
        &mut self,
        now: Instant,
        input: DerpInput,
    ) -> Option<(SocketAddr, Vec<u8>)> {
        let DerpInput::Packet { region, src, data } = input;
        let home = self
            .last
            .as_ref()
            .and_then(|u| u.peers.iter().find(|p| p.node_key == src))
            .and_then(|p| p.derp_region)
            .and_then(|r| u16::try_from(r).ok())
            .filter(|r| *r > 0)
            .unwrap_or(region);
        let via = self.relay.addr_for(src, home);
        if disco::looks_like_disco(&data) {
            let calls = self.disco.stats().calls_received;
            self.disco.handle_relayed(now, via, &data);
            if self.disco.stats().calls_received > calls {
                tracing::debug!("tailnet: call-me-maybe from {} over DERP", src.short());
            }
            self.drain_events();
            None
        } else {
            Some((via, data))
        }
    }

    /// Whether `to` is a relay stand-in: then [`Tailnet::send_relay`] it.
    pub fn is_relay(to: &SocketAddr) -> bool {
        tailnet_derp::is_relay(to)
    }

    /// Send a datagram addressed to a relay stand-in over DERP. WireGuard
    /// (not disco) is traffic for a peer without a direct path: disco
    /// starts discovery with a call-me-maybe ([`Disco::note_traffic`]).
    pub fn send_relay(&mut self, to: &SocketAddr, data: &[u8]) {
        match self.relay.peer_of(to) {
            Some((key, region)) => {
                self.derp.send(region, key, data);
                if !disco::looks_like_disco(data) {
                    self.sync_own_endpoints();
                    let calls = self.disco.stats().calls_sent;
                    self.disco.note_traffic(Instant::now(), &key);
                    if self.disco.stats().calls_sent > calls {
                        tracing::debug!(
                            "tailnet: call-me-maybe to {} over DERP region {region}",
                            key.short()
                        );
                    }
                }
            }
            None => self.derp.dropped += 1,
        }
    }

    /// Whether `[routing] use_exit_node` names a tailnet node.
    pub fn uses_exit_node(&self) -> bool {
        self.exit.is_some()
    }

    /// That node, while the map has it offering an approved exit node.
    pub fn exit_node(&self) -> Option<NodePublic> {
        self.exit.as_ref().and_then(|e| e.node())
    }

    /// A disco datagram from the UDP socket.
    pub fn handle_disco(&mut self, now: Instant, src: SocketAddr, data: &[u8]) {
        self.disco.handle_datagram(now, src, data);
        self.drain_events();
    }

    /// Traffic with peers over any path, from the mesh's counters: disco
    /// keeps those peers' paths checked. Call before
    /// [`Tailnet::handle_timeout`].
    pub fn note_mesh(&mut self, now: Instant, mesh: &meshbridge_mesh::Mesh) {
        if self.last_mesh_look.is_some_and(|t| now < t + MESH_LOOK) {
            return;
        }
        self.last_mesh_look = Some(now);
        let mut seen = 0;
        for (key, tx, rx) in mesh.traffic() {
            seen += 1;
            let bytes = (tx, rx);
            match self.mesh_bytes.insert(key, bytes) {
                Some(b) if b != bytes => {
                    self.disco.note_active(now, &NodePublic::from_bytes(key.0));
                    self.last_traffic = Some(now);
                }
                _ => {}
            }
        }
        if seen < self.mesh_bytes.len() {
            // Peers gone from the mesh: forget their counters.
            let keys: std::collections::HashSet<_> = mesh.traffic().map(|(k, _, _)| k).collect();
            self.mesh_bytes.retain(|k, _| keys.contains(k));
        }
    }

    /// Disco's, STUN's and netcheck's timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.disco.handle_timeout(now);
        self.drain_events();
        let server = self.stun_server().filter(|_| self.stun_wanted(now));
        if let Some((to, data)) = self.stun.handle_timeout(now, server, rand::random()) {
            self.stun_out.push_back(disco::Transmit { to, data });
        }
        if self.follow.is_none() {
            self.netcheck.handle_timeout(now, &mut rand::thread_rng());
            while let Some((to, data)) = self.netcheck.poll_transmit() {
                self.stun_out.push_back(disco::Transmit { to, data });
            }
        }
        self.update_home();
    }

    /// When [`Tailnet::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let stun = self
            .stun
            .poll_timeout(self.stun_server().is_some())
            .filter(|t| self.stun_wanted(*t));
        // A device node's traffic wakes it through its mesh's timers: it
        // looks at the counters only while it is active.
        let look = self
            .last_mesh_look
            .filter(|_| !self.paths.is_empty())
            .map(|t| t + MESH_LOOK)
            .filter(|t| self.follow.is_none() || self.active_at(*t));
        let netcheck = self
            .netcheck
            .poll_timeout()
            .filter(|_| self.follow.is_none());
        [self.disco.poll_timeout(), stun, netcheck, look]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next disco or STUN datagram to send on the WireGuard socket.
    pub fn poll_transmit(&mut self) -> Option<disco::Transmit> {
        self.stun_out
            .pop_front()
            .or_else(|| self.disco.poll_transmit())
    }

    /// The home region's STUN server.
    fn stun_server(&self) -> Option<SocketAddr> {
        let home = i32::from(self.derp.home()?);
        tailnet_derp::stun_server(self.last.as_ref()?.derp_regions.get(&home)?)
    }

    /// Whether a datagram on the WireGuard socket answers our STUN request.
    pub fn is_stun_response(&self, data: &[u8]) -> bool {
        self.stun.is_response(data) || self.netcheck.is_response(data)
    }

    /// A STUN answer: a latency for netcheck, or (the home region's) a new
    /// public endpoint for the control task.
    pub fn handle_stun(&mut self, data: &[u8]) {
        if self.netcheck.is_response(data) {
            // Until the home region's STUN answers, netcheck's first answer
            // is our public endpoint: it then goes to the control server
            // with the home region, a Hostinfo change Headscale passes on
            // to the peers (an endpoint update that only adds a STUN
            // endpoint it keeps to itself).
            if let Some(addr) = self.netcheck.handle_response(Instant::now(), data) {
                if self.public_tx.borrow().is_none() {
                    self.set_public(addr);
                }
            }
            self.update_home();
            return;
        }
        if let Some(addr) = self.stun.handle_response(data) {
            if *self.public_tx.borrow() != Some(addr) {
                self.set_public(addr);
            }
        }
    }

    fn set_public(&mut self, addr: SocketAddr) {
        tracing::info!("tailnet: public endpoint {addr} (STUN)");
        self.public_tx.send_replace(Some(addr));
    }

    /// Whether a path changed since the last call (then re-apply the peer set).
    pub fn take_paths_changed(&mut self) -> bool {
        std::mem::take(&mut self.paths_changed)
    }

    fn drain_events(&mut self) {
        while let Some(ev) = self.disco.poll_event() {
            match ev {
                DiscoEvent::PathConfirmed { node_key, addr } => {
                    tracing::info!("tailnet: direct path to {} at {addr}", node_key.short());
                    if self.paths.insert(node_key, addr) != Some(addr) {
                        self.paths_changed = true;
                    }
                }
                DiscoEvent::PathLost { node_key } => {
                    // Back to DERP; disco keeps pinging all candidates.
                    tracing::info!(
                        "tailnet: direct path to {} stopped answering; relaying",
                        node_key.short()
                    );
                    if self.paths.remove(&node_key).is_some() {
                        self.paths_changed = true;
                    }
                }
            }
        }
    }
}

/// A peer's home DERP region from the netmap.
fn peer_region(p: &TailnetPeer) -> Option<u16> {
    p.derp_region
        .and_then(|r| u16::try_from(r).ok())
        .filter(|r| *r > 0)
}

/// What the event loop and the control task tell each other besides map
/// updates.
struct Reports {
    /// Our public endpoint (STUN), from the loop.
    public: watch::Receiver<Option<SocketAddr>>,
    /// The home DERP region (0: none), from the loop.
    home: watch::Receiver<u32>,
    /// Our local endpoints, to the loop (for call-me-maybe).
    endpoints: watch::Sender<Vec<SocketAddr>>,
    /// `Hostinfo.Services` (set once, before the first session).
    services: watch::Receiver<Vec<Service>>,
}

/// The addresses peers should try for the box: the local address toward
/// the control server, with the WireGuard port.
async fn local_endpoints(url: &ControlUrl, port: u16) -> Vec<SocketAddr> {
    let probe = async {
        let s = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
        s.connect(&url.connect).await?;
        s.local_addr()
    };
    match probe.await {
        Ok(a) if !a.ip().is_unspecified() => vec![SocketAddr::new(a.ip(), port)],
        _ => Vec::new(),
    }
}

/// The map request's endpoints: the local ones (type 1), then the STUN
/// one (type 2) if it is not one of them.
fn with_public(
    mut req: meshbridge_tailnet::tailcfg::MapRequest,
    public: Option<SocketAddr>,
) -> meshbridge_tailnet::tailcfg::MapRequest {
    if let Some(p) = public.map(|p| p.to_string()) {
        if !req.endpoints.contains(&p) {
            req.endpoints.push(p);
            // tailcfg.EndpointSTUN
            req.endpoint_types.push(2);
        }
    }
    req
}

/// The map request's `Hostinfo.Services`: a request's Hostinfo replaces
/// the whole stored one, so each carries them.
fn with_services(
    mut req: meshbridge_tailnet::tailcfg::MapRequest,
    services: &[Service],
) -> meshbridge_tailnet::tailcfg::MapRequest {
    if let Some(h) = req.hostinfo.as_mut() {
        h.services = services.to_vec();
    }
    req
}

/// How a session ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The loop is gone (daemon stopping).
    Closed,
    /// The netmap says our node key expired: register again at once.
    KeyExpired,
}

/// Whether the netmap's self node says its key expired at `now`.
pub fn self_expired(node: &meshbridge_tailnet::tailcfg::Node, now: SystemTime) -> bool {
    node.expired
        || node
            .key_expiry
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok())
            .is_some_and(|t| t <= now)
}

fn set_state(state: &watch::Sender<ControlState>, f: impl FnOnce(&mut ControlState)) {
    state.send_modify(f);
}

/// The TLS configuration for an `https://` control URL: `SSL_CERT_FILE` or
/// the system's CA bundle, plus `[tailnet] ca_file`. Built for each
/// connection attempt, so a fixed CA file works without a restart.
fn control_tls(ca_file: Option<&Path>) -> Result<std::sync::Arc<rustls::ClientConfig>> {
    use meshbridge_tailnet::tls;
    let pem = match ca_file {
        Some(p) => Some(
            crate::config::paths::read_limited(p)
                .with_context(|| format!("reading tailnet.ca_file {}", p.display()))?,
        ),
        None => None,
    };
    let roots = tls::roots(ca_file.zip(pem.as_deref().map(str::as_bytes)))?;
    tracing::debug!(
        "tailnet: control server verified with CA certificates from {}",
        roots.sources.join(", ")
    );
    Ok(tls::verified(roots)?)
}

/// The TLS configuration of an `https://` control URL.
type Tls = Option<std::sync::Arc<rustls::ClientConfig>>;

async fn connect(settings: &Settings, keys: &NodeKeys) -> Result<(ControlUrl, ControlClient, Tls)> {
    let url = ControlUrl::parse(&settings.control_url)?;
    let tls = match url.tls {
        true => Some(control_tls(settings.ca_file.as_deref())?),
        false => None,
    };
    let control_keys = fetch_control_key(&url, tls.as_ref())
        .await
        .context("fetching the control server's key (GET /key)")?;
    let client = ControlClient::connect(
        &url,
        tls.as_ref(),
        &keys.machine_key,
        control_keys.public_key,
        MachinePrivate::generate(&mut rand::rngs::OsRng),
    )
    .await
    .context("opening the control connection (ts2021)")?;
    Ok((url, client, tls))
}

/// Register (auth key, else interactive login: the URL goes to the log and
/// the state, and the follow-up request waits until an admin approved it),
/// then stream the map until it fails; every update goes to `tx`.
async fn session(
    settings: &Settings,
    keys: &mut NodeKeys,
    tx: &mpsc::Sender<Update>,
    state: &watch::Sender<ControlState>,
    reports: &mut Reports,
) -> Result<Ended> {
    let (url, mut client, tls) = connect(settings, keys).await?;
    let auth_key = read_auth_key(&settings.auth_key)?;
    let mut identity = settings.identity.clone();
    let mut req = control::register_request(keys, &url.url, &identity, auth_key.as_deref());
    loop {
        let resp = client
            .register(&req)
            .await
            .context("registering (POST /machine/register)")?;
        match control::after_register(&req, &resp, auth_key.as_deref()) {
            RegisterNext::Authorized => break,
            RegisterNext::Retry(r) => req = *r,
            RegisterNext::Login(u) => {
                tracing::warn!("tailnet: log in at {u}");
                set_state(state, |s| {
                    s.state = TailnetState::NeedsLogin;
                    s.login_url = Some(u.clone());
                    s.error = None;
                });
                req = control::followup_request(&req, &u);
            }
            // Headscale takes a pre-auth key's node's tags from the key
            // only and refuses any asked for: register again without.
            RegisterNext::Refused(why)
                if !identity.tags.is_empty() && why.contains("requested tags") =>
            {
                tracing::warn!(
                    "tailnet: the control server gives {} its tags from the auth key only (tags asked for: {}); registering without asking",
                    identity.hostname,
                    identity.tags.join(", ")
                );
                identity.tags.clear();
                req = control::register_request(keys, &url.url, &identity, auth_key.as_deref());
            }
            RegisterNext::Refused(why) => {
                bail!("the control server refused the registration: {why}")
            }
            RegisterNext::Expired => {
                bail!("the node key expired; set tailnet.auth_key or auth_key_file to log in again")
            }
        }
    }
    if keys.registered_with.as_deref() != Some(url.url.as_str()) {
        keys.registered_with = Some(url.url.clone());
        save_keys(&settings.key_file, keys)?;
    }
    set_state(state, |s| {
        s.state = TailnetState::LoggedIn;
        s.login_url = None;
        s.error = None;
    });
    let mut endpoints = local_endpoints(&url, settings.listen_port).await;
    reports.endpoints.send_replace(endpoints.clone());
    identity.home_derp = *reports.home.borrow_and_update();
    tracing::info!(
        "tailnet: registered; endpoints [{}]",
        endpoints
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let public = *reports.public.borrow_and_update();
    let services = reports.services.borrow().clone();
    let mut stream = client
        .map_stream(&with_services(
            with_public(control::map_request(keys, &identity, &endpoints), public),
            &services,
        ))
        .await
        .context("opening the map stream (POST /machine/map)")?;
    let mut nm = Netmap::new();
    let mut first = true;
    let mut check = tokio::time::interval(ENDPOINT_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    check.tick().await;
    let deadline = || tokio::time::Instant::now() + MAP_WATCHDOG;
    let mut silent_until = deadline();
    loop {
        let msg = tokio::select! {
            m = stream.next() => m.context("reading the map stream")?,
            _ = tokio::time::sleep_until(silent_until) => bail!("the map stream was silent too long"),
            _ = check.tick() => {
                let now_eps = local_endpoints(&url, settings.listen_port).await;
                if !now_eps.is_empty() && now_eps != endpoints {
                    let public = *reports.public.borrow();
                    send_endpoints(&mut client, keys, &identity, &now_eps, public, &reports.services).await?;
                    endpoints = now_eps;
                    reports.endpoints.send_replace(endpoints.clone());
                }
                continue;
            }
            Ok(()) = reports.public.changed() => {
                // A new public endpoint (STUN), and the home region if it
                // changed at the same time: one update.
                let public = *reports.public.borrow_and_update();
                if reports.home.has_changed().unwrap_or(false) {
                    identity.home_derp = *reports.home.borrow_and_update();
                    tracing::info!("tailnet: reporting home DERP region {}", identity.home_derp);
                }
                send_endpoints(&mut client, keys, &identity, &endpoints, public, &reports.services).await?;
                continue;
            }
            Ok(()) = reports.home.changed() => {
                // A new home DERP region (netcheck): our relay, for the
                // peers: Hostinfo.NetInfo.PreferredDERP.
                identity.home_derp = *reports.home.borrow_and_update();
                tracing::info!("tailnet: reporting home DERP region {}", identity.home_derp);
                let public = *reports.public.borrow_and_update();
                send_endpoints(&mut client, keys, &identity, &endpoints, public, &reports.services).await?;
                continue;
            }
        };
        silent_until = deadline();
        let Some(msg) = msg else {
            bail!("the control server ended the map stream");
        };
        if let Some(pr) = &msg.ping_request {
            answer_ping(pr, &tls);
        }
        if nm.apply(msg).context("applying a map message")? == Applied::KeepAlive {
            continue;
        }
        if let Some(me) = nm.self_node() {
            if self_expired(me, SystemTime::now()) {
                tracing::warn!(
                    "tailnet: the control server says our node key expired; registering again"
                );
                keys.registered_with = None;
                save_keys(&settings.key_file, keys)?;
                set_state(state, |s| {
                    s.state = TailnetState::Starting;
                    s.error = Some("the node key expired; registering again".into());
                });
                return Ok(Ended::KeyExpired);
            }
            let name = (!me.name.is_empty()).then(|| me.name.clone());
            if state.borrow().name != name {
                set_state(state, |s| s.name = name);
            }
        }
        let addresses = nm
            .self_node()
            .map(|n| n.addresses.clone())
            .unwrap_or_default();
        let peers = nm.peers();
        let derp_regions = nm.derp_regions().cloned().unwrap_or_default();
        if first {
            tracing::info!(
                "tailnet: up as [{}], {} peer(s)",
                addresses
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                peers.len()
            );
            first = false;
        }
        let rules = crate::tailnet_rules::NetmapRules::from_netmap(&nm);
        let update = Update {
            addresses,
            peers,
            derp_regions,
            rules,
        };
        if tx.send(update).await.is_err() {
            return Ok(Ended::Closed);
        }
    }
}

/// The control server's `PingRequest` (e.g. Headscale's debug ping): a
/// `HEAD` to its URL, in the background (15 s at most), as Tailscale's
/// `answerHeadPing` does. Other ping types are not answered.
fn answer_ping(req: &serde_json::Value, tls: &Tls) {
    let answer = match control::ping_answer(req) {
        Ok(a) => a,
        Err(why) => {
            tracing::debug!("tailnet: the control server's ping request is not answered: {why}");
            return;
        }
    };
    let tls = tls.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        let head = meshbridge_tailnet::client::head(&answer.url, tls.as_ref());
        let ms = || started.elapsed().as_millis();
        match tokio::time::timeout(Duration::from_secs(15), head).await {
            Ok(Ok(status)) if answer.log => tracing::info!(
                "tailnet: answered the control server's ping (HTTP {status} after {} ms)",
                ms()
            ),
            Ok(Ok(status)) => tracing::debug!(
                "tailnet: answered the control server's ping (HTTP {status} after {} ms)",
                ms()
            ),
            Ok(Err(e)) => tracing::warn!("tailnet: answering the control server's ping: {e}"),
            Err(_) => tracing::warn!(
                "tailnet: answering the control server's ping: no answer within 15 s"
            ),
        }
    });
}

/// Tell the control server new endpoints while the stream stays open: a
/// map request that neither streams nor wants peers (Tailscale's
/// `sendMapRequest` with `OmitPeers`); its answer is drained and dropped.
async fn send_endpoints(
    client: &mut ControlClient,
    keys: &NodeKeys,
    id: &NodeIdentity,
    endpoints: &[SocketAddr],
    public: Option<SocketAddr>,
    services: &watch::Receiver<Vec<Service>>,
) -> Result<()> {
    tracing::info!(
        "tailnet: endpoints changed to [{}]; telling the control server",
        endpoints
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let update = with_services(
        with_public(
            control::endpoint_update_request(keys, id, endpoints),
            public,
        ),
        &services.borrow(),
    );
    let mut answer = client
        .map_stream(&update)
        .await
        .context("sending an endpoint update (POST /machine/map)")?;
    let drain = async {
        while answer.next().await?.is_some() {}
        Ok::<_, meshbridge_tailnet::client::ClientError>(())
    };
    match tokio::time::timeout(Duration::from_secs(10), drain).await {
        Ok(r) => r.context("reading the endpoint update's answer")?,
        Err(_) => tracing::debug!("tailnet: the endpoint update's answer did not end; dropped"),
    }
    Ok(())
}

/// Log out at the control server (a registration with an expiry in the
/// past, on its own connection), then forget that the node key is
/// registered: the next start registers anew (the auth key, else a login
/// URL) as the same machine. The node key itself is the mesh's WireGuard
/// key and stays.
async fn logout(settings: &Settings, keys: &mut NodeKeys) -> Result<()> {
    let (_, mut client, _) = connect(settings, keys).await?;
    let resp = client
        .register(&control::logout_request(keys))
        .await
        .context("logging out (POST /machine/register)")?;
    if !resp.error.is_empty() {
        bail!("the control server refused the logout: {}", resp.error);
    }
    keys.registered_with = None;
    save_keys(&settings.key_file, keys)
}

/// What ended one turn of the control task.
enum Turn {
    Session(Result<Ended>),
    Command(Option<Command>),
    Slept,
}

/// The control client: sessions forever, with backoff between failures.
/// A logout ends the sessions until a login command (or the next start);
/// a login command while not logged in starts a new session at once.
async fn control_task(
    mut settings: Settings,
    mut keys: NodeKeys,
    tx: mpsc::Sender<Update>,
    state: watch::Sender<ControlState>,
    mut commands: mpsc::Receiver<Command>,
    mut reports: Reports,
) {
    let configured_key = settings.auth_key.clone();
    let mut backoff = Duration::from_secs(1);
    let mut logged_out = false;
    loop {
        if logged_out {
            // Stay out until asked to join again.
            match commands.recv().await {
                None => return,
                Some(Command::Logout) => continue,
                Some(Command::Login { auth_key }) => {
                    begin_login(&mut settings, &configured_key, auth_key, &state);
                    logged_out = false;
                    backoff = Duration::from_secs(1);
                }
            }
        }
        let started = Instant::now();
        let turn = tokio::select! {
            r = session(&settings, &mut keys, &tx, &state, &mut reports) => Turn::Session(r),
            c = commands.recv() => Turn::Command(c),
        };
        match turn {
            Turn::Session(Ok(Ended::Closed)) => return,
            Turn::Session(Ok(Ended::KeyExpired)) => continue,
            Turn::Session(Err(e)) => {
                tracing::warn!("tailnet: {e:#}; trying again in {}s", backoff.as_secs());
                set_state(&state, |s| {
                    s.state = TailnetState::Error;
                    s.login_url = None;
                    s.error = Some(format!("{e:#}"));
                });
            }
            Turn::Command(None) => return,
            Turn::Command(Some(Command::Logout)) => {
                do_logout(&settings, &mut keys, &tx, &state).await;
                logged_out = true;
                continue;
            }
            Turn::Command(Some(Command::Login { auth_key })) => {
                begin_login(&mut settings, &configured_key, auth_key, &state);
                backoff = Duration::from_secs(1);
                continue;
            }
            Turn::Slept => {}
        }
        if tx.is_closed() {
            return;
        }
        let turn = tokio::select! {
            _ = tokio::time::sleep(backoff) => Turn::Slept,
            c = commands.recv() => Turn::Command(c),
        };
        match turn {
            Turn::Command(None) => return,
            Turn::Command(Some(Command::Logout)) => {
                do_logout(&settings, &mut keys, &tx, &state).await;
                logged_out = true;
                continue;
            }
            Turn::Command(Some(Command::Login { auth_key })) => {
                begin_login(&mut settings, &configured_key, auth_key, &state);
                backoff = Duration::from_secs(1);
                continue;
            }
            _ => {}
        }
        backoff = if started.elapsed() > MAX_BACKOFF {
            Duration::from_secs(1)
        } else {
            (backoff * 2).min(MAX_BACKOFF)
        };
    }
}

/// A login command: the pasted key (memory only) or the configured one
/// for the next registrations; the state shows that a session starts.
fn begin_login(
    settings: &mut Settings,
    configured: &Option<AuthKey>,
    auth_key: Option<String>,
    state: &watch::Sender<ControlState>,
) {
    tracing::info!(
        "tailnet: joining {} again ({})",
        settings.control_url,
        match (&auth_key, configured) {
            (Some(_), _) => "with the auth key given",
            (None, Some(_)) => "with the configured auth key",
            (None, None) => "interactive login",
        }
    );
    settings.auth_key = auth_key.map(AuthKey::Inline).or_else(|| configured.clone());
    set_state(state, |s| {
        s.state = TailnetState::Starting;
        s.login_url = None;
        s.error = None;
    });
}

async fn do_logout(
    settings: &Settings,
    keys: &mut NodeKeys,
    tx: &mpsc::Sender<Update>,
    state: &watch::Sender<ControlState>,
) {
    tracing::warn!("tailnet: logging out of {}", settings.control_url);
    let error = match logout(settings, keys).await {
        Ok(()) => None,
        Err(e) => {
            // Not registered there (any more), or unreachable: forget the
            // registration anyway, so the next start registers anew.
            tracing::warn!("tailnet: logout at the control server failed: {e:#}");
            keys.registered_with = None;
            if let Err(e) = save_keys(&settings.key_file, keys) {
                tracing::error!("tailnet: {e:#}");
            }
            Some(format!(
                "the control server did not confirm the logout: {e:#}"
            ))
        }
    };
    tracing::info!("tailnet: logged out; the tailnet's peers leave the mesh");
    set_state(state, |s| {
        s.state = TailnetState::LoggedOut;
        s.login_url = None;
        s.name = None;
        s.error = error;
    });
    let _ = tx
        .send(Update {
            addresses: Vec::new(),
            peers: Vec::new(),
            derp_regions: Default::default(),
            rules: Default::default(),
        })
        .await;
}

#[cfg(test)]
mod tests;
