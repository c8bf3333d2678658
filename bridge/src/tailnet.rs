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
//! The node key *is* the mesh's WireGuard key (`mesh.private_key`): the
//! box has one WireGuard identity, for static peers and the tailnet alike.
//! The machine and disco keys live in `state_dir/tailnet-keys.json` (0600):
//! a restart is the same node.

use crate::config::{AuthKey, Config};
use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use meshbridge_mesh::{PeerConfig, PeerSet, PublicKey};
use meshbridge_tailnet::client::{fetch_control_key, ControlClient, ControlUrl};
use meshbridge_tailnet::control::{self, NodeIdentity, RegisterNext};
use meshbridge_tailnet::disco::{self, Disco, DiscoEvent, DiscoPeer};
use meshbridge_tailnet::keys::{MachinePrivate, NodeKeys, NodePrivate, NodePublic};
use meshbridge_tailnet::mapstream::MAP_WATCHDOG;
use meshbridge_tailnet::netmap::{Applied, Netmap, TailnetPeer};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The key file in `state_dir`.
pub const KEY_FILE: &str = "tailnet-keys.json";

/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What the control task tells the loop after each map update.
#[derive(Debug, Clone)]
pub struct Update {
    /// The box's own tailnet addresses.
    pub addresses: Vec<IpNet>,
    /// The peers.
    pub peers: Vec<TailnetPeer>,
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
/// subnet routes if `accept_routes` (never a default route: using a
/// tailnet exit node is not supported yet). The endpoint is the path disco
/// confirmed, if any.
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
    save_keys(state_dir, &keys)?;
    Ok(keys)
}

fn save_keys(state_dir: &Path, keys: &NodeKeys) -> Result<()> {
    crate::persist::write_private(&state_dir.join(KEY_FILE), keys.to_file().as_bytes())
}

/// What the control task needs.
#[derive(Debug, Clone)]
struct Settings {
    control_url: String,
    auth_key: Option<AuthKey>,
    identity: NodeIdentity,
    listen_port: u16,
    state_dir: PathBuf,
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

/// The box's tailnet state, owned by the event loop.
pub struct Tailnet {
    updates: mpsc::Receiver<Update>,
    accept_routes: bool,
    last: Option<Update>,
    paths: HashMap<NodePublic, SocketAddr>,
    disco: Disco<StdRng>,
    paths_changed: bool,
    task: tokio::task::JoinHandle<()>,
}

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
            state_dir: config.state_dir.clone(),
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
        let disco = Disco::new(
            keys.disco_key.clone(),
            keys.node_key.public(),
            StdRng::from_entropy(),
        );
        let (tx, updates) = mpsc::channel(4);
        let task = tokio::spawn(control_task(settings, keys, tx));
        Ok(Some(Tailnet {
            updates,
            accept_routes: t.accept_routes,
            last: None,
            paths: HashMap::new(),
            disco,
            paths_changed: false,
            task,
        }))
    }

    /// The next map update from the control task (cancel-safe).
    pub async fn next_update(&mut self) -> Option<Update> {
        self.updates.recv().await
    }

    /// Take a map update: new peers for disco.
    pub fn on_update(&mut self, now: Instant, update: Update) {
        let disco_peers: Vec<DiscoPeer> = update
            .peers
            .iter()
            .filter_map(|p| {
                Some(DiscoPeer {
                    node_key: p.node_key,
                    disco_key: p.disco_key?,
                    endpoints: p.endpoints.clone(),
                })
            })
            .collect();
        self.disco.set_peers(now, &disco_peers);
        self.paths
            .retain(|k, _| update.peers.iter().any(|p| p.node_key == *k));
        self.last = Some(update);
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
    pub fn peer_set(&self) -> PeerSet {
        match &self.last {
            Some(u) => peer_set(&u.peers, &self.paths, self.accept_routes),
            None => PeerSet::new(),
        }
    }

    /// A disco datagram from the UDP socket.
    pub fn handle_disco(&mut self, now: Instant, src: SocketAddr, data: &[u8]) {
        self.disco.handle_datagram(now, src, data);
        self.drain_events();
    }

    /// Disco's timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.disco.handle_timeout(now);
        self.drain_events();
    }

    /// When [`Tailnet::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.disco.poll_timeout()
    }

    /// The next disco datagram to send.
    pub fn poll_transmit(&mut self) -> Option<disco::Transmit> {
        self.disco.poll_transmit()
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
                    // The mesh keeps the last endpoint (WireGuard roams);
                    // disco keeps pinging all candidates.
                    tracing::info!(
                        "tailnet: direct path to {} stopped answering",
                        node_key.short()
                    );
                }
            }
        }
    }
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

/// Register and stream the map until it fails; every update goes to `tx`.
async fn session(
    settings: &Settings,
    keys: &mut NodeKeys,
    tx: &mpsc::Sender<Update>,
) -> Result<()> {
    if settings.control_url.starts_with("https://") {
        bail!("https control URLs are not supported yet (TLS under the Noise transport); use the control server's http:// URL");
    }
    let url = ControlUrl::parse(&settings.control_url)?;
    let control_keys = fetch_control_key(&url)
        .await
        .context("fetching the control server's key (GET /key)")?;
    let mut client = ControlClient::connect(
        &url,
        &keys.machine_key,
        control_keys.public_key,
        MachinePrivate::generate(&mut rand::rngs::OsRng),
    )
    .await
    .context("opening the control connection (ts2021)")?;
    let auth_key = read_auth_key(&settings.auth_key)?;
    let mut req =
        control::register_request(keys, &url.url, &settings.identity, auth_key.as_deref());
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
                req = control::followup_request(&req, &u);
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
        save_keys(&settings.state_dir, keys)?;
    }
    let endpoints = local_endpoints(&url, settings.listen_port).await;
    tracing::info!(
        "tailnet: registered; endpoints [{}]",
        endpoints
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut stream = client
        .map_stream(&control::map_request(keys, &settings.identity, &endpoints))
        .await
        .context("opening the map stream (POST /machine/map)")?;
    let mut nm = Netmap::new();
    let mut first = true;
    loop {
        let msg = tokio::time::timeout(MAP_WATCHDOG, stream.next())
            .await
            .context("the map stream was silent too long")?
            .context("reading the map stream")?;
        let Some(msg) = msg else {
            bail!("the control server ended the map stream");
        };
        if nm.apply(msg).context("applying a map message")? == Applied::KeepAlive {
            continue;
        }
        let addresses = nm
            .self_node()
            .map(|n| n.addresses.clone())
            .unwrap_or_default();
        let peers = nm.peers();
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
        if tx
            .send(Update {
                addresses,
                peers,
                rules,
            })
            .await
            .is_err()
        {
            return Ok(());
        }
    }
}

/// The control client: sessions forever, with backoff between failures.
async fn control_task(settings: Settings, mut keys: NodeKeys, tx: mpsc::Sender<Update>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = Instant::now();
        match session(&settings, &mut keys, &tx).await {
            Ok(()) => return,
            Err(e) => tracing::warn!("tailnet: {e:#}; trying again in {}s", backoff.as_secs()),
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = if started.elapsed() > MAX_BACKOFF {
            Duration::from_secs(1)
        } else {
            (backoff * 2).min(MAX_BACKOFF)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshbridge_tailnet::keys::DiscoPublic;

    fn peer(n: u8, addrs: &[&str], allowed: &[&str]) -> TailnetPeer {
        TailnetPeer {
            id: i64::from(n),
            name: format!("laptop{n}.tailnet.example."),
            node_key: NodePublic::from_bytes([n; 32]),
            disco_key: Some(DiscoPublic::from_bytes([n + 100; 32])),
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            allowed_ips: allowed.iter().map(|a| a.parse().unwrap()).collect(),
            endpoints: vec![],
            derp_region: None,
            online: Some(true),
        }
    }

    #[test]
    fn peers_become_mesh_peers_keyed_by_node_key() {
        let peers = vec![
            peer(
                1,
                &["100.64.0.2/32"],
                &["100.64.0.2/32", "192.168.9.0/24", "0.0.0.0/0"],
            ),
            peer(2, &["100.64.0.3/32"], &["100.64.0.3/32"]),
        ];
        let mut paths = HashMap::new();
        paths.insert(
            NodePublic::from_bytes([2; 32]),
            "192.0.2.3:41641".parse().unwrap(),
        );
        let set = peer_set(&peers, &paths, false);
        let p1 = set.get(&PublicKey([1; 32])).unwrap();
        assert_eq!(p1.name, "laptop1");
        assert_eq!(
            p1.allowed_ips,
            vec!["100.64.0.2/32".parse::<IpNet>().unwrap()]
        );
        assert_eq!(p1.endpoint, None, "no path confirmed yet");
        let p2 = set.get(&PublicKey([2; 32])).unwrap();
        assert_eq!(p2.endpoint, Some("192.0.2.3:41641".parse().unwrap()));
        // accept_routes: subnet routes too, never the default route.
        let set = peer_set(&peers, &paths, true);
        let ips: Vec<String> = set
            .get(&PublicKey([1; 32]))
            .unwrap()
            .allowed_ips
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(ips, vec!["100.64.0.2/32", "192.168.9.0/24"]);
    }

    fn config(tailnet: &str, routing: &str) -> Config {
        Config::from_toml(
            &format!(
                "state_dir = \"/tmp/mb\"\n[mesh]\nprivate_key = \"yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\"\naddress = \"10.77.0.1/24\"\n[bridge]\nname = \"br-mesh\"\nports = [\"eth1\"]\n[dhcp]\nrange = \"10.77.1.100-10.77.1.200\"\n{routing}\n{tailnet}\n"
            ),
            None,
        )
        .unwrap()
    }

    #[test]
    fn the_bridge_subnet_and_routing_section_are_advertised() {
        let c = config("[tailnet]", "");
        let r: Vec<String> = advertised_routes(&c)
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(r, vec!["10.77.1.0/24"]);
        let c = config(
            "[tailnet]\nadvertise_bridge = false",
            "[routing]\nuplink = \"eth0\"\nadvertise_routes = [\"192.168.1.0/24\"]\nexit_node = true",
        );
        let r: Vec<String> = advertised_routes(&c)
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(r, vec!["192.168.1.0/24", "0.0.0.0/0", "::/0"]);
        assert!(advertised_routes(&config("", "")).is_empty());
    }

    /// A map update plus a disco exchange with a (simulated) laptop: the
    /// pong makes the laptop's address its WireGuard endpoint in the set.
    #[tokio::test]
    async fn a_confirmed_disco_path_becomes_the_peers_endpoint() {
        use meshbridge_tailnet::keys::DiscoPrivate;
        let box_disco = DiscoPrivate::from_bytes([11; 32]);
        let lap_disco = DiscoPrivate::from_bytes([12; 32]);
        let (_tx, updates) = mpsc::channel(1);
        let mut t = Tailnet {
            updates,
            accept_routes: false,
            last: None,
            paths: HashMap::new(),
            disco: Disco::new(
                box_disco.clone(),
                NodePublic::from_bytes([2; 32]),
                StdRng::seed_from_u64(1),
            ),
            paths_changed: false,
            task: tokio::spawn(async {}),
        };
        let lap_addr: SocketAddr = "10.99.0.20:41641".parse().unwrap();
        let mut lap = peer(1, &["100.64.0.1/32"], &["100.64.0.1/32"]);
        lap.disco_key = Some(lap_disco.public());
        lap.endpoints = vec![lap_addr];
        let now = Instant::now();
        t.on_update(
            now,
            Update {
                addresses: vec![
                    "100.64.0.2/32".parse().unwrap(),
                    "fd7a:115c:a1e0::2/128".parse().unwrap(),
                ],
                peers: vec![lap],
                rules: Default::default(),
            },
        );
        assert_eq!(t.own_ipv4(), vec![Ipv4Addr::new(100, 64, 0, 2)]);
        assert_eq!(
            t.peer_set().get(&PublicKey([1; 32])).unwrap().endpoint,
            None
        );
        t.handle_timeout(now);
        let ping = t.poll_transmit().expect("a ping to the laptop's endpoint");
        assert_eq!(ping.to, lap_addr);
        // The laptop answers with a pong from the address pinged.
        let (from, msg) = disco::open(&lap_disco, &ping.data).unwrap();
        assert_eq!(from, box_disco.public());
        let disco::Message::Ping { tx_id, node_key } = msg else {
            panic!("not a ping: {msg:?}")
        };
        assert_eq!(node_key, Some(NodePublic::from_bytes([2; 32])));
        let pong = disco::seal(
            &lap_disco,
            &box_disco.public(),
            [3; 24],
            &disco::Message::Pong {
                tx_id,
                src: "10.99.0.10:41641".parse().unwrap(),
            },
        );
        t.handle_disco(now, lap_addr, &pong);
        assert!(t.take_paths_changed());
        assert!(!t.take_paths_changed());
        assert_eq!(
            t.peer_set().get(&PublicKey([1; 32])).unwrap().endpoint,
            Some(lap_addr)
        );
    }

    #[test]
    fn keys_persist_0600_and_the_node_key_is_the_mesh_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("mb-tailnet-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mesh = [7u8; 32];
        let a = load_keys(&dir, &mesh).unwrap();
        assert_eq!(a.node_key.public(), NodePrivate::from_bytes(mesh).public());
        let mode = std::fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = load_keys(&dir, &mesh).unwrap();
        assert_eq!(
            a.machine_key.public(),
            b.machine_key.public(),
            "a restart is the same node"
        );
        assert_eq!(a.disco_key.public(), b.disco_key.public());
        // A new mesh key: same machine, new node key.
        let c = load_keys(&dir, &[8u8; 32]).unwrap();
        assert_eq!(a.machine_key.public(), c.machine_key.public());
        assert_ne!(a.node_key.public(), c.node_key.public());
        std::fs::write(dir.join(KEY_FILE), "garbage").unwrap();
        assert!(load_keys(&dir, &mesh).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
