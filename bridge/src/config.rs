//! Configuration in two layers: [`raw`] mirrors the TOML file (serde,
//! unknown keys rejected), [`Config`] is the validated form the daemon runs
//! on. Every error names the key and says what is wrong with it.

use ipnet::{IpNet, Ipv4Net};
use meshbridge_mesh::{PresharedKey, PrivateKey, PublicKey};
use meshbridge_types::Mac;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default place for leases and other state.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/meshbridge";

/// Where the local API socket lives unless `api.socket` says otherwise.
pub fn default_socket(state_dir: &Path) -> PathBuf {
    state_dir.join("meshbridge.sock")
}

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

pub mod raw;

mod lan;
mod mesh;
pub mod paths;
mod routing;
mod services;
mod tailnet;
mod values;
mod wifi;

pub use mesh::{Files, Loaded};
pub use tailnet::{AuthKey, DeviceMode, DeviceTailnet, Tailnet, DEFAULT_CONTROL_URL};
pub use wifi::{channel_mhz, mhz_channel, Passphrase, Wifi, WifiSecurity};

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
    /// The host is an IP address or a DNS name (letters, digits, '-', '_',
    /// '.'; at most 253): it lands in generated wg-quick files and QR codes,
    /// so nothing that could start a new line or a new key gets through.
    pub fn parse(key: &str, s: &str) -> Result<Self, ConfigError> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Endpoint::Addr(a));
        }
        match s.rsplit_once(':') {
            Some((host, port))
                if !host.is_empty()
                    && host.len() <= 253
                    && port.bytes().all(|b| b.is_ascii_digit())
                    && port.parse::<u16>().is_ok_and(|p| p > 0)
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) =>
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
    /// Re-announce remote boxes' services on the uplink too.
    pub announce_on_uplink: bool,
    /// Other boxes whose services are re-announced on this box's link.
    pub remotes: Vec<DiscoveryRemote>,
    /// With `[tailnet]`: also every meshbridge box among the tailnet's
    /// peers (found by their `Hostinfo`), added and removed as the map changes.
    pub tailnet_boxes: bool,
}

/// `[[discovery.remote]]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryRemote {
    /// A short name for logs and the page.
    pub name: String,
    /// The other box's DNS server (its mesh address, port 53 by default).
    pub server: std::net::SocketAddr,
    /// The other box's DNS domain, with a trailing dot removed.
    pub domain: String,
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
    /// `[bridge] snat_from_mesh`: mesh flows into the bridge come from the box.
    pub snat_from_mesh: bool,
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
    /// MAC → its own switch on the page (`[[dhcp.reservations]] tailnet`):
    /// own node, behind the box, or not in the tailnet.
    pub device_tailnet: Vec<(Mac, DeviceTailnet)>,
    /// MAC → the tags its own node asks for (`[[dhcp.reservations]] tags`).
    pub device_node_tags: Vec<(Mac, Vec<String>)>,
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
    /// `[tailnet]`: the box is a tailnet node (`None`: not).
    pub tailnet: Option<Tailnet>,
    /// `[wifi]`: the box's access point (`None`: none).
    pub wifi: Option<Wifi>,
}

impl Config {
    /// How the device with this MAC is in the tailnet: its own switch, else
    /// `[tailnet] devices` ("nodes": its own node; "routes" or no tailnet:
    /// behind the box). A device's "node" needs `devices = "nodes"`.
    pub fn device_tailnet_of(&self, mac: &Mac) -> DeviceTailnet {
        let nodes = self
            .tailnet
            .as_ref()
            .is_some_and(|t| t.devices == DeviceMode::Nodes);
        match self.device_tailnet.iter().find(|(m, _)| m == mac) {
            Some((_, DeviceTailnet::Off)) => DeviceTailnet::Off,
            Some((_, DeviceTailnet::Behind)) => DeviceTailnet::Behind,
            _ if nodes => DeviceTailnet::Node,
            _ => DeviceTailnet::Behind,
        }
    }

    /// The devices kept off the mesh and the tailnet (`tailnet = "off"`).
    pub fn devices_off_mesh(&self) -> Vec<Mac> {
        self.device_tailnet
            .iter()
            .filter(|(_, t)| *t == DeviceTailnet::Off)
            .map(|(m, _)| *m)
            .collect()
    }

    /// The tags the node of the device with this MAC asks for.
    pub fn device_tags_of(&self, mac: &Mac) -> Option<&[String]> {
        self.device_node_tags
            .iter()
            .find(|(m, _)| m == mac)
            .map(|(_, t)| t.as_slice())
    }

    /// Read and validate a config file. Relative paths inside it are relative to its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = paths::read_limited(path)
            .map_err(|e| bad("config", format!("cannot read {}: {e}", path.display())))?;
        let mut c = Self::from_toml(&text, path.parent())?;
        c.source = Some(path.to_path_buf());
        Ok(c)
    }

    /// Parse and validate TOML text; `base` is the folder relative paths are taken from.
    pub fn from_toml(text: &str, base: Option<&Path>) -> Result<Config, ConfigError> {
        Self::validate(Self::parse_raw(text)?, base)
    }

    /// Like [`Config::from_toml`] for a config that arrives from the page,
    /// the API or a restore: every path it names must pass `fence` before
    /// any file is read.
    pub fn from_toml_fenced(
        text: &str,
        base: Option<&Path>,
        fence: &paths::Fence,
    ) -> Result<Config, ConfigError> {
        let raw = Self::parse_raw(text)?;
        fence.check(&raw, base)?;
        Self::validate(raw, base)
    }

    fn parse_raw(text: &str) -> Result<raw::File, ConfigError> {
        toml::from_str(text).map_err(|e| {
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
        })
    }

    /// Turn the raw file into a validated config, reading the files it
    /// names (wg-quick file, key file) relative to `base`.
    pub fn validate(raw: raw::File, base: Option<&Path>) -> Result<Config, ConfigError> {
        let files = Files::read(&raw, base);
        Self::from_raw(&raw, base, &files)
    }

    /// Validate the raw file with the contents of the files it names: no
    /// I/O. One function per section, in the order errors are reported.
    pub fn from_raw(
        raw: &raw::File,
        base: Option<&Path>,
        files: &Files,
    ) -> Result<Config, ConfigError> {
        let mesh = mesh::validate_mesh(&raw.mesh, files)?;
        let bridge = lan::validate_bridge(&raw.bridge, &mesh.tun_name)?;
        let dhcp = lan::validate_dhcp(&raw.dhcp, &raw.bridge, mesh.mesh_address)?;
        let routing = routing::validate_routing(
            &raw.routing,
            &mesh.peers,
            &bridge.names,
            dhcp.bridge_address.trunc(),
            mesh.mesh_address.trunc(),
            raw.tailnet.is_some(),
        )?;
        let endpoint = mesh::validate_endpoint(&raw.mesh)?;
        let web = services::validate_web(&raw.web, dhcp.bridge_address, mesh.mesh_address)?;
        let dns_server = services::validate_dns(&raw.dns)?;
        let (state_dir, api_socket) = services::validate_api(raw, base);
        let discovery =
            services::validate_discovery(&raw.discovery, &dhcp.domain, raw.tailnet.is_some())?;
        let board = services::validate_board(&raw.board)?;
        #[cfg(feature = "dns")]
        check_names(raw, &mesh.peers, &discovery.mdns_name)?;
        let tailnet = tailnet::validate_tailnet(raw.tailnet.as_ref(), base)?;
        let mut taken = bridge.names.clone();
        taken.extend(routing.uplink.iter().map(|u| ("routing.uplink", u.clone())));
        let wifi = wifi::validate_wifi(raw.wifi.as_ref(), &taken)?;
        Ok(Config {
            wifi,
            tailnet,
            source: None,
            board,
            discovery,
            api_socket,
            dns_server,
            routing,
            state_dir,
            private_key: mesh.private_key,
            listen_port: mesh.listen_port,
            mesh_address: mesh.mesh_address,
            mtu: mesh.mtu,
            tun_name: mesh.tun_name,
            peers: mesh.peers,
            bridge_name: bridge.bridge_name,
            bridge_ports: bridge.bridge_ports,
            tap_name: bridge.tap_name,
            bridge_address: dhcp.bridge_address,
            snat_from_mesh: raw.bridge.snat_from_mesh.unwrap_or(true),
            dhcp_enabled: dhcp.enabled,
            dhcp_range: dhcp.range,
            lease_time: dhcp.lease_time,
            dns: dhcp.dns,
            domain: dhcp.domain,
            probe_interval: dhcp.probe_interval,
            persist_interval: dhcp.persist_interval,
            reservations: dhcp.reservations,
            device_names: dhcp.device_names,
            device_tailnet: dhcp.device_tailnet,
            device_node_tags: dhcp.device_node_tags,
            endpoint,
            web,
            ignored_wg_keys: mesh.ignored_wg_keys,
        })
    }
}

/// Peers and named devices may not take the names the box keeps for itself
/// (`meshbridge`, `wpad`, `isatap`, `localhost`, its mDNS name), and a
/// device's name may not be a peer's: the page, the API, a restore and
/// `--check-config` refuse them alike (the running zone would serve them
/// suffixed or not at all).
#[cfg(feature = "dns")]
fn check_names(raw: &raw::File, peers: &[Peer], mdns_name: &str) -> Result<(), ConfigError> {
    use meshbridge_mdns::{to_label, RESERVED};
    let mdns = to_label(mdns_name);
    let reserved = |l: &str| RESERVED.contains(&l) || mdns.as_deref() == Some(l);
    let mut peer_labels = Vec::new();
    for (i, p) in peers.iter().enumerate() {
        let Some(l) = to_label(&p.name) else { continue };
        if reserved(&l) {
            return Err(bad(
                format!("mesh.peers[{i}].name"),
                format!(
                    "{:?} is reserved: {l}.<domain> is one of the box's own names",
                    p.name
                ),
            ));
        }
        peer_labels.push(l);
    }
    for (i, r) in raw.dhcp.reservations.iter().enumerate() {
        let Some(l) = r.name.as_deref().and_then(to_label) else {
            continue;
        };
        if reserved(&l) || peer_labels.contains(&l) {
            return Err(bad(
                format!("dhcp.reservations[{i}].name"),
                format!(
                    "{:?} is taken: {l}.<domain> is the box's own or a peer's name",
                    r.name.as_deref().unwrap_or_default().trim()
                ),
            ));
        }
    }
    Ok(())
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
    fn site_to_site_keys_and_snat_have_defaults_and_are_checked() {
        let c = Config::from_toml(&sample(), None).unwrap();
        assert!(c.snat_from_mesh, "on by default");
        assert!(!c.discovery.announce_on_uplink);
        assert!(c.discovery.remotes.is_empty());
        let text = sample().replace("ports = [\"eth1\"]", "ports = [\"eth1\"]\nsnat_from_mesh = false")
            + "[discovery]\nannounce_on_uplink = true\n[[discovery.remote]]\nname = \"home\"\nserver = \"10.78.0.1\"\n[[discovery.remote]]\nname = \"office\"\nserver = \"10.79.0.1:5353\"\ndomain = \"office.arpa.\"\n";
        let c = Config::from_toml(&text, None).unwrap();
        assert!(!c.snat_from_mesh);
        assert!(c.discovery.announce_on_uplink);
        assert_eq!(c.discovery.remotes.len(), 2);
        assert_eq!(
            c.discovery.remotes[0].server,
            "10.78.0.1:53".parse().unwrap()
        );
        assert_eq!(
            c.discovery.remotes[0].domain, "mesh.home.arpa",
            "this box's domain"
        );
        assert_eq!(c.discovery.remotes[1].domain, "office.arpa");
        let e = err_of(&text.replace("10.78.0.1", "box-a"));
        assert_eq!(e.key, "discovery.remote.server", "{e}");
        let e = err_of(&text.replace("\"office\"", "\"home\""));
        assert_eq!(e.key, "discovery.remote.name", "{e}");
        let e = err_of(&text.replace("\"home\"", "\"a b\""));
        assert_eq!(e.key, "discovery.remote.name", "{e}");
        let e = err_of(&text.replace("office.arpa.", "bad domain"));
        assert_eq!(e.key, "discovery.remote.domain", "{e}");
    }

    #[test]
    fn tailnet_boxes_default_on_with_a_tailnet_only() {
        let c = Config::from_toml(&sample(), None).unwrap();
        assert!(!c.discovery.tailnet_boxes, "no [tailnet]: nothing to find");
        let with =
            |extra: &str| Config::from_toml(&(sample() + extra + "[tailnet]\n"), None).unwrap();
        assert!(with("").discovery.tailnet_boxes);
        assert!(
            !with("[discovery]\ntailnet_boxes = false\n")
                .discovery
                .tailnet_boxes
        );
        let c =
            Config::from_toml(&(sample() + "[discovery]\ntailnet_boxes = true\n"), None).unwrap();
        assert!(!c.discovery.tailnet_boxes, "still off without [tailnet]");
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
    fn nothing_that_lands_in_a_generated_file_may_break_a_line() {
        let s = sample();
        for (from, to, key) in [
            (
                "[mesh]",
                "[mesh]\nendpoint = \"vpn.example.org\\nPostUp=id:51820\"",
                "mesh.endpoint",
            ),
            (
                "[mesh]",
                "[mesh]\nendpoint = \"x:1\\n[Peer]\\nPublicKey = abc:1\"",
                "mesh.endpoint",
            ),
            ("[mesh]", "[mesh]\nendpoint = \"a b:1\"", "mesh.endpoint"),
            ("[mesh]", "[mesh]\nendpoint = \"host:+1\"", "mesh.endpoint"),
            (
                "endpoint = \"198.51.100.2:51820\"",
                "endpoint = \"h\\tx:51820\"",
                "mesh.peers[0].endpoint",
            ),
            (
                "name = \"laptop\"",
                "name = \"lap\\ntop\"",
                "mesh.peers[0].name",
            ),
            (
                "name = \"laptop\"",
                "name = \"lap\\u2028top\"",
                "mesh.peers[0].name",
            ),
            (
                "name = \"laptop\"",
                "name = \"../laptop\"",
                "mesh.peers[0].name",
            ),
            ("\"eth1\"", "\"eth\\n1\"", "bridge.ports"),
        ] {
            let text = s.replacen(from, to, 1);
            assert_ne!(text, s);
            let e = err_of(&text);
            assert_eq!(e.key, key, "{to}: {e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        // Ordinary values still pass.
        let ok = s.replacen(
            "[mesh]",
            "[mesh]\nendpoint = \"vpn.example-1.org:51820\"",
            1,
        );
        assert!(Config::from_toml(&ok, None).is_ok());
        let ok = s.replace("name = \"laptop\"", "name = \"Alice's phone\"");
        assert!(Config::from_toml(&ok, None).is_ok());
    }

    #[cfg(feature = "dns")]
    #[test]
    fn peers_and_devices_cannot_take_the_box_names() {
        let s = sample();
        for n in ["meshbridge", "WPAD", "localhost", "isatap"] {
            let e = err_of(&s.replace("name = \"laptop\"", &format!("name = {n:?}")));
            assert_eq!(e.key, "mesh.peers[0].name", "{n}");
        }
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
mod pure_tests {
    use super::*;

    const PRIV: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";

    fn raw_of(text: &str) -> raw::File {
        toml::from_str(text).unwrap()
    }

    /// Validation needs no disk: the files a config names are handed in.
    #[test]
    fn files_are_handed_in_not_read() {
        let raw = raw_of("[mesh]\nwireguard_config = \"/nonexistent/wg0.conf\"\n[dhcp]\nrange = \"10.77.1.100-10.77.1.200\"\n");
        let files = Files {
            wireguard_config: Some(Loaded {
                path: "/nonexistent/wg0.conf".into(),
                text: Ok(format!(
                    "[Interface]\nPrivateKey = {PRIV}\nAddress = 10.77.0.1/24\n"
                )),
            }),
            private_key_file: None,
        };
        let c = Config::from_raw(&raw, None, &files).unwrap();
        assert_eq!(c.mesh_address.to_string(), "10.77.0.1/24");
        let unreadable = Files {
            wireguard_config: Some(Loaded {
                path: "/nonexistent/wg0.conf".into(),
                text: Err("No such file or directory (os error 2)".into()),
            }),
            private_key_file: None,
        };
        let e = Config::from_raw(&raw, None, &unreadable).unwrap_err();
        assert_eq!(e.key, "mesh.wireguard_config");
        assert_eq!(
            e.problem,
            "cannot read /nonexistent/wg0.conf: No such file or directory (os error 2)"
        );
        // The same message as reading it for real.
        assert_eq!(Config::validate(raw, None).unwrap_err().problem, e.problem);
    }

    #[test]
    fn key_file_is_read_only_when_it_is_the_key_source() {
        let with_inline = raw_of(&format!(
            "[mesh]\nprivate_key = \"{PRIV}\"\nprivate_key_file = \"k\"\n"
        ));
        assert!(Files::read(&with_inline, None).private_key_file.is_none());
        let file_only = raw_of("[mesh]\nprivate_key_file = \"/nonexistent/key\"\n");
        let f = Files::read(&file_only, Some(Path::new("/etc")));
        assert_eq!(
            f.private_key_file.unwrap().path,
            Path::new("/nonexistent/key")
        );
        let relative = raw_of("[mesh]\nprivate_key_file = \"key\"\n");
        let f = Files::read(&relative, Some(Path::new("/nonexistent")));
        let k = f.private_key_file.unwrap();
        assert_eq!(k.path, Path::new("/nonexistent/key"));
        assert!(k.text.is_err());
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
        // With [tailnet], a tailnet node's name or address, found while running.
        for name in ["nobody", "nobody.tailnet.example.", "100.64.0.7"] {
            let ok = with(&format!(
                "uplink = \"eth0\"\nuse_exit_node = \"{name}\"\n[tailnet]"
            ))
            .unwrap();
            assert_eq!(ok.routing.use_exit_node.as_deref(), Some(name));
        }
        let e = with("uplink = \"eth0\"\nuse_exit_node = \"no body\"\n[tailnet]").unwrap_err();
        assert_eq!(e.key, "routing.use_exit_node");
        assert!(e.problem.contains("tailnet node"), "{e}");
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
