//! Configuration in two layers: [`raw`] mirrors the TOML file (serde,
//! unknown keys rejected), [`Config`] is the validated form the daemon runs
//! on. Every error names the key and says what is wrong with it.

use ipnet::{IpNet, Ipv4Net};
use meshbridge_mesh::wgquick;
use meshbridge_mesh::{PresharedKey, PrivateKey, PublicKey};
use meshbridge_types::Mac;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default place for leases and other state.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/meshbridge";

/// A configuration problem: which key, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    /// The TOML key path, e.g. `mesh.peers[0].public_key`.
    pub key: String,
    /// What is wrong, and what to do about it.
    pub problem: String,
}

fn bad(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        problem: problem.into(),
    }
}

/// The file as written. Field names are the contract with users: add, never rename.
pub mod raw {
    use serde::Deserialize;

    /// The whole file.
    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct File {
        /// Where leases and other state live.
        pub state_dir: Option<String>,
        /// `[mesh]`.
        #[serde(default)]
        pub mesh: Mesh,
        /// `[bridge]`.
        #[serde(default)]
        pub bridge: Bridge,
        /// `[dhcp]`.
        #[serde(default)]
        pub dhcp: Dhcp,
        /// `[routing]`.
        #[serde(default)]
        pub routing: Routing,
        /// `[dns]`.
        #[serde(default)]
        pub dns: Dns,
        /// `[api]`.
        #[serde(default)]
        pub api: Api,
        /// `[discovery]`.
        #[serde(default)]
        pub discovery: Discovery,
        /// `[board]`.
        #[serde(default)]
        pub board: Board,
        /// `[web]`.
        #[serde(default)]
        pub web: Web,
    }

    /// `[web]`: the config page.
    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Web {
        pub enabled: Option<bool>,
        /// `addr:port` to serve the page on (default: the bridge and mesh addresses, port 80).
        pub listen: Option<Vec<String>>,
        /// Log out after this long without a request (default 30m).
        pub session_timeout: Option<String>,
    }

    /// `[board]`: status LED, hardware watchdog, reset button.
    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Board {
        /// "auto" (the board's status LED), "none", or a name under /sys/class/leds.
        pub status_led: Option<String>,
        /// Feed /dev/watchdog while the main loop is healthy.
        pub watchdog: Option<bool>,
        /// A reset button on the GPIO character device: "gpiochip0:17".
        pub reset_button: Option<String>,
        /// The button pulls the line low when pressed (default true).
        pub reset_active_low: Option<bool>,
        /// Filesystem root for board files (tests use a fake tree).
        pub root: Option<String>,
    }

    /// `[discovery]`: mDNS on the bridge and the DNS-SD discovery proxy.
    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Discovery {
        pub enabled: Option<bool>,
        /// Service types exposed to the mesh, like "_ipp._tcp".
        pub services: Option<Vec<String>>,
        /// Devices (MAC or DHCP hostname) never exposed.
        #[serde(default)]
        pub opt_out: Vec<String>,
        /// The box's own mDNS host name (default "meshbridge": meshbridge.local).
        pub mdns_name: Option<String>,
    }

    /// `[api]`: the local control socket.
    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Api {
        /// Unix socket path (default: `<state_dir>/meshbridge.sock`).
        pub socket: Option<String>,
    }

    /// `[dns]`: the box's DNS server.
    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Dns {
        pub enabled: Option<bool>,
        /// Resolvers for names that are not the box's (default: the system's).
        pub upstream: Option<Vec<String>>,
    }

    /// `[routing]`: subnet router and exit node.
    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Routing {
        pub uplink: Option<String>,
        #[serde(default)]
        pub advertise_routes: Vec<String>,
        pub snat_subnet_routes: Option<bool>,
        pub exit_node: Option<bool>,
        pub exit_node_allow_lan: Option<bool>,
        pub use_exit_node: Option<String>,
        /// Bridged devices reach the internet through the box's uplink (when no exit node is used).
        pub bridge_internet: Option<bool>,
        /// Bridged devices may reach the advertised home-LAN prefixes.
        pub bridge_allow_lan: Option<bool>,
    }

    /// `[mesh]`.
    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Mesh {
        pub private_key: Option<String>,
        pub private_key_file: Option<String>,
        pub wireguard_config: Option<String>,
        pub listen_port: Option<u16>,
        pub address: Option<String>,
        pub mtu: Option<u16>,
        /// Name of the host-side TUN device.
        pub tun: Option<String>,
        /// `host:port` clients reach the box at, for generated peer configs.
        pub endpoint: Option<String>,
        #[serde(default)]
        pub peers: Vec<Peer>,
    }

    /// `[[mesh.peers]]`.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Peer {
        pub name: String,
        pub public_key: String,
        pub preshared_key: Option<String>,
        pub endpoint: Option<String>,
        #[serde(default)]
        pub allowed_ips: Vec<String>,
        pub persistent_keepalive: Option<u16>,
        /// A disabled peer stays in the file but is not in the mesh.
        pub enabled: Option<bool>,
    }

    /// `[bridge]`.
    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Bridge {
        pub name: Option<String>,
        #[serde(default)]
        pub ports: Vec<String>,
        /// Name of the daemon's TAP device in the bridge.
        pub tap: Option<String>,
        /// The box's gateway address on the bridge, with prefix.
        pub address: Option<String>,
    }

    /// `[dhcp]`.
    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Dhcp {
        pub enabled: Option<bool>,
        pub range: Option<String>,
        pub lease_time: Option<String>,
        pub dns: Option<Vec<String>>,
        pub domain: Option<String>,
        /// How often to look for another DHCP server on the bridge ("0" turns it off).
        pub probe_interval: Option<String>,
        /// Write lease changes at most this often ("0" = at once; flash-saving on routers).
        pub persist_interval: Option<String>,
        #[serde(default)]
        pub reservations: Vec<Reservation>,
    }

    /// `[[dhcp.reservations]]`.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Reservation {
        pub mac: String,
        /// The reserved address (optional: an entry may only name the device).
        pub ip: Option<String>,
        /// The device's name (DNS name and on the page), instead of its DHCP hostname.
        pub name: Option<String>,
    }
}

/// A peer endpoint: an address, or a name the daemon resolves off its event
/// loop and follows (`peers.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Literal address.
    Addr(SocketAddr),
    /// `host:port` to resolve.
    Name(String),
}

impl Endpoint {
    /// Parse `host:port` or `ip:port`; `key` names the setting in errors.
    pub fn parse(key: &str, s: &str) -> Result<Self, ConfigError> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Endpoint::Addr(a));
        }
        match s.rsplit_once(':') {
            Some((host, port))
                if !host.is_empty()
                    && port.parse::<u16>().is_ok()
                    && !host.contains(['[', ']', ' ']) =>
            {
                Ok(Endpoint::Name(s.to_string()))
            }
            _ => Err(bad(
                key,
                format!(
                    "{s:?} is not host:port (e.g. 198.51.100.2:51820 or vpn.example.org:51820)"
                ),
            )),
        }
    }
}

/// A validated peer.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Name (unique).
    pub name: String,
    /// Public key.
    pub public_key: PublicKey,
    /// Optional preshared key.
    pub preshared_key: Option<PresharedKey>,
    /// Optional endpoint.
    pub endpoint: Option<Endpoint>,
    /// Allowed IPs.
    pub allowed_ips: Vec<IpNet>,
    /// Keepalive seconds.
    pub persistent_keepalive: Option<u16>,
    /// In the mesh (false: kept in the file only).
    pub enabled: bool,
}

/// `[web]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Web {
    /// Serve the page.
    pub enabled: bool,
    /// Addresses to listen on.
    pub listen: Vec<SocketAddr>,
    /// Idle session timeout.
    pub session_timeout: Duration,
}

/// `[dns]`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    /// Serve DNS on the bridge and mesh addresses.
    pub enabled: bool,
    /// Upstream resolvers; `None`: the system's (resolv.conf).
    pub upstream: Option<Vec<std::net::SocketAddr>>,
}

/// `[discovery]`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    /// Listen to mDNS on the bridge and answer DNS-SD in the box's domain.
    pub enabled: bool,
    /// Service types exposed (allow list).
    pub services: Vec<String>,
    /// Devices never exposed: MACs (lowercase) or hostnames.
    pub opt_out: Vec<String>,
    /// The box's mDNS host name (a DNS label).
    pub mdns_name: String,
}

/// `[board]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Board {
    /// `None`: no LED; `Some("auto")`: the board's own; else a LED name.
    pub status_led: Option<String>,
    /// Feed the hardware watchdog.
    pub watchdog: bool,
    /// Reset button: GPIO chip path and line.
    pub reset_button: Option<(PathBuf, u32)>,
    /// The button is active-low.
    pub reset_active_low: bool,
    /// Root of /sys, /dev, /proc for board files.
    pub root: PathBuf,
}

/// `[routing]`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routing {
    /// The interface toward the home LAN and the internet.
    pub uplink: Option<String>,
    /// Home-LAN prefixes served to the mesh.
    pub advertise_routes: Vec<Ipv4Net>,
    /// Masquerade mesh traffic to the advertised prefixes (LAN hosts see the box).
    pub snat_subnet_routes: bool,
    /// Serve the internet to peers.
    pub exit_node: bool,
    /// Exit traffic may reach private ranges.
    pub exit_node_allow_lan: bool,
    /// Peer name whose exit node bridged devices use.
    pub use_exit_node: Option<String>,
    /// Bridged devices use the box's own uplink for the internet (no exit node).
    pub bridge_internet: bool,
    /// Bridged devices may reach the advertised prefixes.
    pub bridge_allow_lan: bool,
}

impl Routing {
    /// Whether the kernel must forward (and NAT) for us.
    pub fn needs_forwarding(&self) -> bool {
        self.uplink.is_some()
            && (!self.advertise_routes.is_empty() || self.exit_node || self.bridge_internet)
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// State directory.
    pub state_dir: PathBuf,
    /// Our private key.
    pub private_key: PrivateKey,
    /// UDP port for WireGuard.
    pub listen_port: u16,
    /// The box's own mesh address and the mesh prefix.
    pub mesh_address: Ipv4Net,
    /// Mesh MTU (inner packets).
    pub mtu: u16,
    /// Host-side TUN name.
    pub tun_name: String,
    /// Peers.
    pub peers: Vec<Peer>,
    /// Kernel bridge name.
    pub bridge_name: String,
    /// Ports to enslave.
    pub bridge_ports: Vec<String>,
    /// Our TAP name.
    pub tap_name: String,
    /// The box's gateway address on the bridge, and the bridge subnet.
    pub bridge_address: Ipv4Net,
    /// DHCP server on/off.
    pub dhcp_enabled: bool,
    /// Pool start (inclusive).
    pub dhcp_range: (Ipv4Addr, Ipv4Addr),
    /// Lease time.
    pub lease_time: Duration,
    /// DNS servers handed out.
    pub dns: Vec<Ipv4Addr>,
    /// Domain handed out.
    pub domain: String,
    /// Rogue DHCP server probe interval.
    pub probe_interval: Option<Duration>,
    /// Coalesce lease writes: at most one per this interval (zero: every change at once).
    pub persist_interval: Duration,
    /// MAC → address reservations.
    pub reservations: Vec<(Mac, Ipv4Addr)>,
    /// MAC → name given on the page.
    pub device_names: Vec<(Mac, String)>,
    /// `host:port` for generated peer configs.
    pub endpoint: Option<String>,
    /// The web page.
    pub web: Web,
    /// wg-quick keys we read but ignore (logged at start).
    pub ignored_wg_keys: Vec<String>,
    /// Subnet router and exit node.
    pub routing: Routing,
    /// The box's DNS server.
    pub dns_server: Dns,
    /// The local API's unix socket.
    pub api_socket: PathBuf,
    /// mDNS listening and the discovery proxy.
    pub discovery: Discovery,
    /// Status LED, watchdog, reset button.
    pub board: Board,
    /// The config file this came from (factory reset removes its folder's contents).
    pub source: Option<PathBuf>,
}

fn ifname(key: &str, name: &str) -> Result<String, ConfigError> {
    if name.is_empty()
        || name.len() > 15
        || name.contains(['/', ' ', '\0', ':'])
        || name == "."
        || name == ".."
    {
        return Err(bad(key, format!("{name:?} is not a valid interface name (1 to 15 characters, no '/', ':' or spaces)")));
    }
    Ok(name.to_string())
}

fn duration(key: &str, s: &str) -> Result<Duration, ConfigError> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| {
        bad(
            key,
            format!("{s:?} is not a duration like \"1h\", \"30m\" or \"3600s\" ({e})"),
        )
    })
}

fn ipv4(key: &str, s: &str) -> Result<Ipv4Addr, ConfigError> {
    s.trim()
        .parse()
        .map_err(|_| bad(key, format!("{s:?} is not an IPv4 address")))
}

fn net(key: &str, s: &str) -> Result<IpNet, ConfigError> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            bad(
                key,
                format!("{s:?} is not an address or prefix like 10.77.0.2/32"),
            )
        })
}

fn resolve_path(base: Option<&Path>, p: &str) -> PathBuf {
    let path = PathBuf::from(p);
    match base {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path,
    }
}

fn validate_routing(
    r: &raw::Routing,
    peers: &[Peer],
    names: &[(&str, &String)],
    bridge: Ipv4Net,
    mesh: Ipv4Net,
) -> Result<Routing, ConfigError> {
    let uplink = r
        .uplink
        .as_deref()
        .map(|u| ifname("routing.uplink", u))
        .transpose()?;
    if let Some(u) = &uplink {
        if names.iter().any(|(_, n)| *n == u) {
            return Err(bad("routing.uplink", format!("{u:?} is also used as a bridge port or meshbridge device; the uplink must be a separate interface")));
        }
    }
    let mut advertise_routes = Vec::new();
    for s in &r.advertise_routes {
        let n: Ipv4Net = s.parse().map_err(|_| {
            bad(
                "routing.advertise_routes",
                format!("{s:?} is not an IPv4 prefix like 192.168.1.0/24"),
            )
        })?;
        let n = n.trunc();
        if n.prefix_len() == 0 {
            return Err(bad(
                "routing.advertise_routes",
                "0.0.0.0/0 is not a subnet route: use exit_node = true",
            ));
        }
        if n.contains(&bridge.network())
            || bridge.contains(&n.network())
            || n.contains(&mesh.network())
            || mesh.contains(&n.network())
        {
            return Err(bad(
                "routing.advertise_routes",
                format!("{n} overlaps the mesh or bridge subnet"),
            ));
        }
        advertise_routes.push(n);
    }
    let exit_node = r.exit_node.unwrap_or(false);
    let use_exit_node = r.use_exit_node.clone();
    if let Some(name) = &use_exit_node {
        if !peers.iter().any(|p| &p.name == name) {
            return Err(bad(
                "routing.use_exit_node",
                format!("no peer is named {name:?}; use the name of a [[mesh.peers]] entry"),
            ));
        }
        if exit_node {
            return Err(bad(
                "routing.use_exit_node",
                "a box cannot be an exit node and use one at the same time",
            ));
        }
    }
    if uplink.is_none() && (exit_node || !advertise_routes.is_empty()) {
        return Err(bad("routing.uplink", "missing: advertise_routes and exit_node need the interface toward the home LAN, like \"eth0\""));
    }
    Ok(Routing {
        bridge_internet: r.bridge_internet.unwrap_or(uplink.is_some()) && uplink.is_some(),
        uplink,
        advertise_routes,
        snat_subnet_routes: r.snat_subnet_routes.unwrap_or(true),
        exit_node,
        exit_node_allow_lan: r.exit_node_allow_lan.unwrap_or(false),
        use_exit_node,
        bridge_allow_lan: r.bridge_allow_lan.unwrap_or(false),
    })
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

impl Config {
    /// Read and validate a config file. Relative paths inside it are relative to its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad("config", format!("cannot read {}: {e}", path.display())))?;
        let mut c = Self::from_toml(&text, path.parent())?;
        c.source = Some(path.to_path_buf());
        Ok(c)
    }

    /// Parse and validate TOML text; `base` is the folder relative paths are taken from.
    pub fn from_toml(text: &str, base: Option<&Path>) -> Result<Config, ConfigError> {
        let raw: raw::File = toml::from_str(text).map_err(|e| {
            let msg = e.message().to_string();
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            bad(
                "config",
                match line {
                    Some(l) => format!("line {l}: {msg}"),
                    None => msg,
                },
            )
        })?;
        Self::validate(raw, base)
    }

    /// Turn the raw file into a validated config.
    pub fn validate(raw: raw::File, base: Option<&Path>) -> Result<Config, ConfigError> {
        let m = raw.mesh;
        // The mesh part may come from a wg-quick file.
        let wg = match &m.wireguard_config {
            Some(p) => {
                let path = resolve_path(base, p);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    bad(
                        "mesh.wireguard_config",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let parsed = wgquick::parse(&text).map_err(|e| {
                    bad("mesh.wireguard_config", format!("{}: {e}", path.display()))
                })?;
                if m.private_key.is_some() || m.private_key_file.is_some() {
                    return Err(bad(
                        "mesh.private_key",
                        "set either mesh.wireguard_config or a private key, not both",
                    ));
                }
                Some(parsed)
            }
            None => None,
        };

        let private_key = match (&wg, &m.private_key, &m.private_key_file) {
            (Some(wg), _, _) => wg.private_key.clone(),
            (None, Some(_), Some(_)) => {
                return Err(bad("mesh.private_key", "set either private_key or private_key_file, not both"))
            }
            (None, Some(k), None) => k.parse().map_err(|e| bad("mesh.private_key", format!("{e}")))?,
            (None, None, Some(f)) => {
                let path = resolve_path(base, f);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| bad("mesh.private_key_file", format!("cannot read {}: {e}", path.display())))?;
                text.trim().parse().map_err(|e| bad("mesh.private_key_file", format!("{}: {e}", path.display())))?
            }
            (None, None, None) => {
                return Err(bad(
                    "mesh.private_key",
                    "missing: set mesh.private_key (from `meshbridge genkey`), mesh.private_key_file or mesh.wireguard_config",
                ))
            }
        };

        let listen_port = m
            .listen_port
            .or(wg.as_ref().and_then(|w| w.listen_port))
            .unwrap_or(51820);

        let mesh_address: Ipv4Net = match (&m.address, &wg) {
            (Some(a), _) => a
                .parse()
                .map_err(|_| bad("mesh.address", format!("{a:?} is not an IPv4 address with prefix, like 10.77.0.1/24")))?,
            (None, Some(wg)) => wg
                .addresses
                .iter()
                .find_map(|n| match n {
                    IpNet::V4(v) => Some(*v),
                    _ => None,
                })
                .ok_or_else(|| bad("mesh.address", "missing: the wg-quick file has no IPv4 Address and mesh.address is not set"))?,
            (None, None) => return Err(bad("mesh.address", "missing: the box's mesh address, like \"10.77.0.1/24\"")),
        };
        if mesh_address.addr() == mesh_address.network() && mesh_address.prefix_len() < 31 {
            return Err(bad(
                "mesh.address",
                format!(
                    "{mesh_address} is a network address; use a host address like {}/{}",
                    mesh_address.hosts().next().unwrap_or(mesh_address.addr()),
                    mesh_address.prefix_len()
                ),
            ));
        }

        let mtu = m.mtu.or(wg.as_ref().and_then(|w| w.mtu)).unwrap_or(1420);
        if !(576..=9000).contains(&mtu) {
            return Err(bad(
                "mesh.mtu",
                format!("{mtu} is outside 576..=9000 (WireGuard's usual value is 1420)"),
            ));
        }
        let tun_name = ifname("mesh.tun", m.tun.as_deref().unwrap_or("mb-host0"))?;

        let mut peers = Vec::new();
        if let Some(wg) = &wg {
            if !m.peers.is_empty() {
                return Err(bad("mesh.peers", "peers come from mesh.wireguard_config; remove [[mesh.peers]] or the wg-quick file"));
            }
            for (i, p) in wg.peers.iter().enumerate() {
                let key = format!("mesh.wireguard_config peer {}", i + 1);
                peers.push(Peer {
                    name: p.name.clone().unwrap_or_else(|| format!("peer{}", i + 1)),
                    public_key: p.public_key,
                    preshared_key: p.preshared_key.clone(),
                    endpoint: p
                        .endpoint
                        .as_deref()
                        .map(|e| Endpoint::parse(&key, e))
                        .transpose()?,
                    allowed_ips: p.allowed_ips.clone(),
                    persistent_keepalive: p.persistent_keepalive,
                    enabled: true,
                });
            }
        }
        for (i, p) in m.peers.iter().enumerate() {
            let k = |f: &str| format!("mesh.peers[{i}].{f}");
            if p.name.trim().is_empty() {
                return Err(bad(k("name"), "must not be empty"));
            }
            let allowed_ips = p
                .allowed_ips
                .iter()
                .map(|s| net(&k("allowed_ips"), s))
                .collect::<Result<Vec<_>, _>>()?;
            peers.push(Peer {
                name: p.name.trim().to_string(),
                public_key: p
                    .public_key
                    .parse()
                    .map_err(|e| bad(k("public_key"), format!("{e}")))?,
                preshared_key: p
                    .preshared_key
                    .as_deref()
                    .map(|s| {
                        s.parse()
                            .map_err(|e| bad(k("preshared_key"), format!("{e}")))
                    })
                    .transpose()?,
                endpoint: p
                    .endpoint
                    .as_deref()
                    .map(|e| Endpoint::parse(&k("endpoint"), e))
                    .transpose()?,
                allowed_ips,
                persistent_keepalive: p.persistent_keepalive.filter(|&k| k > 0),
                enabled: p.enabled.unwrap_or(true),
            });
        }
        let own_public = private_key.public_key();
        for (i, p) in peers.iter().enumerate() {
            if peers[..i].iter().any(|q| q.name == p.name) {
                return Err(bad(
                    format!("mesh.peers[{i}].name"),
                    format!("{:?} is used by another peer", p.name),
                ));
            }
            if peers[..i].iter().any(|q| q.public_key == p.public_key) {
                return Err(bad(
                    format!("mesh.peers[{i}].public_key"),
                    "the same key is listed for two peers",
                ));
            }
            if p.public_key == own_public {
                return Err(bad(
                    format!("mesh.peers[{i}].public_key"),
                    "this is the box's own public key",
                ));
            }
        }

        let b = raw.bridge;
        let bridge_name = ifname("bridge.name", b.name.as_deref().unwrap_or("br-mesh"))?;
        let bridge_ports = b
            .ports
            .iter()
            .map(|p| ifname("bridge.ports", p))
            .collect::<Result<Vec<_>, _>>()?;
        let tap_name = ifname("bridge.tap", b.tap.as_deref().unwrap_or("mb-tap0"))?;
        let mut names = vec![
            ("bridge.name", &bridge_name),
            ("bridge.tap", &tap_name),
            ("mesh.tun", &tun_name),
        ];
        names.extend(bridge_ports.iter().map(|p| ("bridge.ports", p)));
        for (i, (k, n)) in names.iter().enumerate() {
            if names[..i].iter().any(|(_, m)| m == n) {
                return Err(bad(*k, format!("interface name {n:?} is used twice")));
            }
        }

        let d = raw.dhcp;
        let (start, end) = match &d.range {
            Some(r) => {
                let (a, z) = r.split_once('-').ok_or_else(|| {
                    bad(
                        "dhcp.range",
                        format!("{r:?} is not a range like \"10.77.1.100-10.77.1.200\""),
                    )
                })?;
                (ipv4("dhcp.range", a)?, ipv4("dhcp.range", z)?)
            }
            None => return Err(bad(
                "dhcp.range",
                "missing: the mesh addresses for bridged devices, like \"10.77.1.100-10.77.1.200\"",
            )),
        };
        if u32::from(start) > u32::from(end) {
            return Err(bad("dhcp.range", format!("{start} comes after {end}")));
        }
        let bridge_address: Ipv4Net = match &b.address {
            Some(a) => a.parse().map_err(|_| {
                bad(
                    "bridge.address",
                    format!("{a:?} is not an IPv4 address with prefix, like 10.77.1.1/24"),
                )
            })?,
            None => {
                // The /24 that holds the range, with its first host as the gateway.
                let net = Ipv4Net::new(start, 24)
                    .map_err(|e| bad("dhcp.range", e.to_string()))?
                    .trunc();
                let gw = net
                    .hosts()
                    .next()
                    .ok_or_else(|| bad("bridge.address", "no room for a gateway address"))?;
                Ipv4Net::new(gw, 24).map_err(|e| bad("bridge.address", e.to_string()))?
            }
        };
        let subnet = bridge_address.trunc();
        if !subnet.contains(&start) || !subnet.contains(&end) {
            return Err(bad(
                "dhcp.range",
                format!(
                    "{start}-{end} is not inside the bridge subnet {subnet} (set bridge.address)"
                ),
            ));
        }
        if (u32::from(start)..=u32::from(end)).contains(&u32::from(bridge_address.addr())) {
            return Err(bad(
                "dhcp.range",
                format!(
                    "the range contains the box's own bridge address {}",
                    bridge_address.addr()
                ),
            ));
        }
        if start == subnet.network() || end == subnet.broadcast() {
            return Err(bad(
                "dhcp.range",
                format!("the range must not include the network or broadcast address of {subnet}"),
            ));
        }
        let mesh_net = mesh_address.trunc();
        if mesh_net.contains(&subnet.network()) || subnet.contains(&mesh_net.network()) {
            return Err(bad(
                "bridge.address",
                format!("the bridge subnet {subnet} overlaps the mesh subnet {mesh_net}; give bridged devices their own prefix (e.g. 10.77.1.0/24 next to 10.77.0.0/24)"),
            ));
        }
        let lease_time = duration("dhcp.lease_time", d.lease_time.as_deref().unwrap_or("1h"))?;
        if lease_time < Duration::from_secs(60) || lease_time > Duration::from_secs(365 * 86400) {
            return Err(bad(
                "dhcp.lease_time",
                "must be between 1 minute and 1 year",
            ));
        }
        let dns = match &d.dns {
            Some(list) => list
                .iter()
                .map(|s| ipv4("dhcp.dns", s))
                .collect::<Result<Vec<_>, _>>()?,
            None => vec![bridge_address.addr()],
        };
        let domain = d
            .domain
            .clone()
            .unwrap_or_else(|| "mesh.home.arpa".to_string());
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if domain.len() > 253 || !domain.split('.').all(label_ok) {
            return Err(bad(
                "dhcp.domain",
                format!("{domain:?} is not a valid domain name"),
            ));
        }
        let persist_interval = duration(
            "dhcp.persist_interval",
            d.persist_interval.as_deref().unwrap_or("0"),
        )?;
        if persist_interval > Duration::from_secs(3600) {
            return Err(bad(
                "dhcp.persist_interval",
                "must be at most 1h (leases written later are lost in a power cut)",
            ));
        }
        let probe_interval = match duration(
            "dhcp.probe_interval",
            d.probe_interval.as_deref().unwrap_or("60s"),
        )? {
            z if z.is_zero() => None,
            p if p < Duration::from_secs(5) => {
                return Err(bad("dhcp.probe_interval", "must be 0 (off) or at least 5s"))
            }
            p => Some(p),
        };
        let mut reservations = Vec::new();
        let mut device_names: Vec<(Mac, String)> = Vec::new();
        for (i, r) in d.reservations.iter().enumerate() {
            let mac = r.mac.parse::<Mac>().map_err(|_| {
                bad(
                    format!("dhcp.reservations[{i}].mac"),
                    format!("{:?} is not a MAC like aa:bb:cc:dd:ee:ff", r.mac),
                )
            })?;
            if let Some(n) = &r.name {
                // A display name ("Office printer"); its DNS name is made from it
                // ("office-printer"), so it needs a letter or digit.
                let n = n.trim();
                if n.chars().count() > 64
                    || n.chars().any(char::is_control)
                    || !n.chars().any(|c| c.is_ascii_alphanumeric())
                {
                    return Err(bad(
                        format!("dhcp.reservations[{i}].name"),
                        format!("{n:?} is not a device name: up to 64 characters, with letters or digits (it also becomes its DNS name)"),
                    ));
                }
                if device_names
                    .iter()
                    .any(|(m, x)| *m == mac || x.eq_ignore_ascii_case(n))
                {
                    return Err(bad(
                        format!("dhcp.reservations[{i}].name"),
                        format!("{n:?} or this MAC is named twice"),
                    ));
                }
                device_names.push((mac, n.to_string()));
            } else if r.ip.is_none() {
                return Err(bad(
                    format!("dhcp.reservations[{i}]"),
                    "give an ip, a name, or both",
                ));
            }
            let Some(ip) = &r.ip else { continue };
            let ip = ipv4(&format!("dhcp.reservations[{i}].ip"), ip)?;
            if !subnet.contains(&ip)
                || ip == bridge_address.addr()
                || ip == subnet.network()
                || ip == subnet.broadcast()
            {
                return Err(bad(
                    format!("dhcp.reservations[{i}].ip"),
                    format!("{ip} is not a free host address in {subnet}"),
                ));
            }
            if reservations.iter().any(|(m, a)| *m == mac || *a == ip) {
                return Err(bad(
                    format!("dhcp.reservations[{i}]"),
                    "MAC or address is reserved twice",
                ));
            }
            reservations.push((mac, ip));
        }

        let routing = validate_routing(&raw.routing, &peers, &names, subnet, mesh_net)?;

        let endpoint = match &m.endpoint {
            Some(e) if e.trim().is_empty() => None,
            Some(e) => {
                Endpoint::parse("mesh.endpoint", e.trim())?;
                Some(e.trim().to_string())
            }
            None => None,
        };
        let web = Web {
            enabled: raw.web.enabled.unwrap_or(true),
            listen: match &raw.web.listen {
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
                    raw.web.session_timeout.as_deref().unwrap_or("30m"),
                )?;
                if t < Duration::from_secs(60) || t > Duration::from_secs(7 * 86400) {
                    return Err(bad(
                        "web.session_timeout",
                        "must be between 1 minute and 7 days",
                    ));
                }
                t
            },
        };

        let dns_server = Dns {
            enabled: raw.dns.enabled.unwrap_or(true),
            upstream: raw
                .dns
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
        };

        let state_dir = PathBuf::from(raw.state_dir.as_deref().unwrap_or(DEFAULT_STATE_DIR));
        let api_socket = match &raw.api.socket {
            Some(p) => resolve_path(base, p),
            None => crate::api::default_socket(&state_dir),
        };

        let services = match &raw.discovery.services {
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
        let discovery = Discovery {
            enabled: raw.discovery.enabled.unwrap_or(true),
            services,
            opt_out: raw
                .discovery
                .opt_out
                .iter()
                .map(|s| s.trim().to_ascii_lowercase())
                .collect(),
            mdns_name: match &raw.discovery.mdns_name {
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
        };

        let b = &raw.board;
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
        let board =
            Board {
                status_led: match b.status_led.as_deref() {
                    None | Some("auto") => Some("auto".to_string()),
                    Some("none") | Some("") => None,
                    Some(name) => Some(ifname("board.status_led", name).map_err(|_| {
                        bad("board.status_led", format!("{name:?} is not a LED name"))
                    })?),
                },
                watchdog: b.watchdog.unwrap_or(false),
                reset_button,
                reset_active_low: b.reset_active_low.unwrap_or(true),
                root,
            };

        Ok(Config {
            source: None,
            board,
            discovery,
            api_socket,
            dns_server,
            routing,
            state_dir: PathBuf::from(raw.state_dir.as_deref().unwrap_or(DEFAULT_STATE_DIR)),
            private_key,
            listen_port,
            mesh_address,
            mtu,
            tun_name,
            peers,
            bridge_name,
            bridge_ports,
            tap_name,
            bridge_address,
            dhcp_enabled: d.enabled.unwrap_or(true),
            dhcp_range: (start, end),
            lease_time,
            dns,
            domain,
            probe_interval,
            persist_interval,
            reservations,
            device_names,
            endpoint,
            web,
            ignored_wg_keys: wg.map(|w| w.ignored).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIV: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    const PUB: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

    fn sample() -> String {
        sample_text()
    }

    pub(super) fn sample_text() -> String {
        format!(
            r#"
state_dir = "/tmp/mb"
[mesh]
private_key = "{PRIV}"
listen_port = 51820
address = "10.77.0.1/24"
[[mesh.peers]]
name = "laptop"
public_key = "{PUB}"
endpoint = "198.51.100.2:51820"
allowed_ips = ["10.77.0.2/32"]
persistent_keepalive = 25
[bridge]
name = "br-mesh"
ports = ["eth1"]
[dhcp]
range = "10.77.1.100-10.77.1.200"
lease_time = "1h"
"#
        )
    }

    #[test]
    fn issue_sample_config_is_accepted() {
        let c = Config::from_toml(&sample(), None).unwrap();
        assert_eq!(c.listen_port, 51820);
        assert_eq!(c.bridge_address.to_string(), "10.77.1.1/24");
        assert_eq!(c.dns, vec![Ipv4Addr::new(10, 77, 1, 1)]);
        assert_eq!(c.lease_time, Duration::from_secs(3600));
        assert_eq!(c.peers[0].persistent_keepalive, Some(25));
        assert_eq!(
            c.peers[0].endpoint,
            Some(Endpoint::Addr("198.51.100.2:51820".parse().unwrap()))
        );
    }

    fn err_of(text: &str) -> ConfigError {
        Config::from_toml(text, None).unwrap_err()
    }

    #[test]
    fn errors_name_the_key() {
        let s = sample();
        let e = err_of(&s.replace(PUB, "bogus"));
        assert_eq!(e.key, "mesh.peers[0].public_key", "{e}");
        let e = err_of(&s.replace("10.77.1.100-10.77.1.200", "10.77.1.200-10.77.1.100"));
        assert_eq!(e.key, "dhcp.range");
        let e = err_of(&s.replace("10.77.1.100-10.77.1.200", "10.77.0.100-10.77.0.200"));
        assert_eq!(e.key, "bridge.address", "{e}");
        let e = err_of(&s.replace("lease_time = \"1h\"", "lease_time = \"soon\""));
        assert_eq!(e.key, "dhcp.lease_time");
        let e = err_of(&s.replace("[bridge]", "[bridge]\nbogus = 1"));
        assert!(e.problem.contains("bogus"), "{e}");
        let e = err_of(&s.replace("\"eth1\"", "\"this-name-is-far-too-long\""));
        assert_eq!(e.key, "bridge.ports");
        let e = err_of(&s.replace("endpoint = \"198.51.100.2:51820\"", "endpoint = \"nohost\""));
        assert_eq!(e.key, "mesh.peers[0].endpoint");
        let e = err_of(&s.replace(&format!("private_key = \"{PRIV}\""), ""));
        assert_eq!(e.key, "mesh.private_key");
    }

    #[test]
    fn wg_quick_file_supplies_the_mesh() {
        let dir = std::env::temp_dir().join(format!("mb-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("wg0.conf"),
            format!("[Interface]\nPrivateKey = {PRIV}\nAddress = 10.77.0.1/24\nListenPort = 51999\n\n[Peer]\n# Name = phone\nPublicKey = {PUB}\nAllowedIPs = 10.77.0.3/32\n"),
        )
        .unwrap();
        let text = "[mesh]\nwireguard_config = \"wg0.conf\"\n[dhcp]\nrange = \"10.77.1.100-10.77.1.200\"\n";
        let c = Config::from_toml(text, Some(&dir)).unwrap();
        assert_eq!(c.listen_port, 51999);
        assert_eq!(c.mesh_address.to_string(), "10.77.0.1/24");
        assert_eq!(c.peers[0].name, "phone");
        std::fs::write(dir.join("wg0.conf"), "[Interface]\nPrivateKey = nope\n").unwrap();
        let e = Config::from_toml(text, Some(&dir)).unwrap_err();
        assert_eq!(e.key, "mesh.wireguard_config");
        assert!(e.problem.contains("line 2"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod sample_tests {
    use super::tests::sample_text;
    use super::*;

    /// Every sample config in the repository parses.
    #[test]
    fn sample_configs_in_examples_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 2);
    }

    #[test]
    fn routing_section_is_validated() {
        let base = sample_text();
        let with = |r: &str| Config::from_toml(&format!("{base}\n[routing]\n{r}\n"), None);
        let ok =
            with("uplink = \"eth0\"\nadvertise_routes = [\"192.168.1.0/24\"]\nexit_node = true")
                .unwrap();
        assert_eq!(ok.routing.advertise_routes.len(), 1);
        assert!(
            ok.routing.snat_subnet_routes
                && ok.routing.exit_node
                && !ok.routing.exit_node_allow_lan
        );
        assert!(ok.routing.bridge_internet && ok.routing.needs_forwarding());
        let e = with("advertise_routes = [\"192.168.1.0/24\"]").unwrap_err();
        assert_eq!(e.key, "routing.uplink");
        let e = with("uplink = \"eth0\"\nadvertise_routes = [\"192.168.1.0/33\"]").unwrap_err();
        assert_eq!(e.key, "routing.advertise_routes");
        let e = with("uplink = \"eth0\"\nadvertise_routes = [\"10.77.0.0/16\"]").unwrap_err();
        assert!(e.problem.contains("overlaps"), "{e}");
        let e = with("uplink = \"eth0\"\nuse_exit_node = \"nobody\"").unwrap_err();
        assert_eq!(e.key, "routing.use_exit_node");
        let e =
            with("uplink = \"eth0\"\nuse_exit_node = \"laptop\"\nexit_node = true").unwrap_err();
        assert_eq!(e.key, "routing.use_exit_node");
        let e = with("uplink = \"eth1\"").unwrap_err();
        assert_eq!(
            e.key, "routing.uplink",
            "the uplink cannot be a bridge port"
        );
        let e = with("uplink = \"eth0\"\nexit_nod = true").unwrap_err();
        assert!(e.problem.contains("exit_nod"), "{e}");
        // No [routing]: nothing to forward.
        assert!(!Config::from_toml(&base, None)
            .unwrap()
            .routing
            .needs_forwarding());
    }
}

#[cfg(test)]
mod web_keys_tests {
    use super::tests::sample_text;
    use super::*;

    #[test]
    fn web_section_defaults_to_bridge_and_mesh_addresses() {
        let c = Config::from_toml(&sample_text(), None).unwrap();
        assert!(c.web.enabled);
        let listen: Vec<String> = c.web.listen.iter().map(|a| a.to_string()).collect();
        assert_eq!(listen, vec!["10.77.1.1:80", "10.77.0.1:80"]);
        assert_eq!(c.web.session_timeout, Duration::from_secs(1800));
        let with = |w: &str| Config::from_toml(&format!("{}\n[web]\n{w}\n", sample_text()), None);
        let c =
            with("listen = [\"0.0.0.0:8080\", \"10.77.0.1\"]\nsession_timeout = \"2h\"").unwrap();
        assert_eq!(c.web.listen[1].to_string(), "10.77.0.1:80");
        assert_eq!(
            with("listen = [\"nowhere\"]").unwrap_err().key,
            "web.listen"
        );
        assert_eq!(
            with("session_timeout = \"1s\"").unwrap_err().key,
            "web.session_timeout"
        );
        assert_eq!(with("colour = \"red\"").unwrap_err().key, "config");
    }

    #[test]
    fn endpoint_disabled_peers_and_named_devices() {
        let base = sample_text();
        let text = format!(
            "{}\n[[dhcp.reservations]]\nmac = \"02:00:00:00:00:01\"\nname = \"Office printer\"\n[[dhcp.reservations]]\nmac = \"02:00:00:00:00:02\"\nip = \"10.77.1.50\"\n",
            base.replace("[mesh]", "[mesh]\nendpoint = \"box.example.net:51820\"")
        );
        let c = Config::from_toml(&text, None).unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("box.example.net:51820"));
        assert_eq!(
            c.device_names,
            vec![(Mac([2, 0, 0, 0, 0, 1]), "Office printer".to_string())]
        );
        assert_eq!(c.reservations.len(), 1);
        let bad = format!("{base}\n[[dhcp.reservations]]\nmac = \"02:00:00:00:00:01\"\n");
        assert_eq!(
            Config::from_toml(&bad, None).unwrap_err().key,
            "dhcp.reservations[0]"
        );
        let bad = base.replace("[mesh]", "[mesh]\nendpoint = \"no port\"");
        assert_eq!(
            Config::from_toml(&bad, None).unwrap_err().key,
            "mesh.endpoint"
        );
    }
}
