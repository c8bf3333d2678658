//! The file as written. Field names are the contract with users: add, never rename.

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
    /// `[tailnet]` (absent: the box is no tailnet node).
    pub tailnet: Option<Tailnet>,
    /// `[wifi]` (absent: no access point).
    pub wifi: Option<Wifi>,
}

/// `[wifi]`: the box's Wi-Fi access point, bridged with the wired port(s).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Wifi {
    /// Run the access point (default true).
    pub enabled: Option<bool>,
    /// The interface hostapd runs on ("wlan0"; on OpenWrt the radio, "radio0").
    pub interface: Option<String>,
    /// The network name.
    pub ssid: Option<String>,
    /// WPA2/WPA3 passphrase, 8 to 63 characters.
    pub passphrase: Option<String>,
    /// "wpa2", "wpa2-wpa3" (default) or "wpa3".
    pub security: Option<String>,
    /// Two-letter country code.
    pub country: Option<String>,
    /// Channel (default 6).
    pub channel: Option<u16>,
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
    /// Announce other boxes' services on the uplink too (default false).
    pub announce_on_uplink: Option<bool>,
    /// Browse every meshbridge box among the tailnet's peers (default true
    /// with `[tailnet]`).
    pub tailnet_boxes: Option<bool>,
    /// Other boxes whose discovery proxy is browsed and re-announced here.
    #[serde(default)]
    pub remote: Vec<DiscoveryRemote>,
}

/// `[[discovery.remote]]`: another meshbridge box.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryRemote {
    /// A short name for logs and the page ("home").
    pub name: String,
    /// The other box's mesh address (its DNS server), optionally with a port.
    pub server: String,
    /// The other box's DNS domain (default: this box's `dhcp.domain`).
    pub domain: Option<String>,
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
    /// Source-NAT traffic from the mesh into the bridge to the box's bridge
    /// address (default true), for devices that only accept their own subnet.
    pub snat_from_mesh: Option<bool>,
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
    /// How this device is in the tailnet: "node" (its own), "behind" (the
    /// box's subnet route) or "off" (not in the tailnet or the mesh).
    pub tailnet: Option<String>,
    /// The tags its own node asks for, instead of `[tailnet] device_tags`.
    pub tags: Option<Vec<String>>,
}

/// `[tailnet]`: join a Tailscale or Headscale tailnet.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Tailnet {
    /// The control server (default: Tailscale's service).
    pub control_url: Option<String>,
    /// A file holding the auth key (pre-auth key).
    pub auth_key_file: Option<String>,
    /// The auth key itself.
    pub auth_key: Option<String>,
    /// The node's name in the tailnet (default: the system host name).
    pub hostname: Option<String>,
    /// Advertise the bridge subnet as a route (default true).
    pub advertise_bridge: Option<bool>,
    /// Use other nodes' subnet routes (default false).
    pub accept_routes: Option<bool>,
    /// A PEM file of CA certificates trusted for an `https://` control URL,
    /// besides the system's (a self-hosted Headscale with a private CA).
    pub ca_file: Option<String>,
    /// Bridged devices: `"nodes"` (each its own tailnet node, the default)
    /// or `"routes"` (the bridge subnet behind the box).
    pub devices: Option<String>,
    /// Tags each device's node asks for (default `["tag:device"]`).
    pub device_tags: Option<Vec<String>>,
}
