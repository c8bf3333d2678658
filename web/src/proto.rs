//! What the web server and the CLI ask the daemon, and what it answers.
//! The daemon's main loop owns the engine and the config; requests reach it
//! over a channel ([`Pending`]) and it answers with a [`Reply`].

use meshbridge_types::Mac;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// A request to the daemon.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// Peers, devices, health ([`Status`]).
    Status,
    /// Services seen on the bridge ([`DiscoveryInfo`]).
    Discovery,
    /// Version, board, config path ([`SystemInfo`]).
    System,
    /// Generate a key pair for a new peer and add it ([`PeerAdded`]).
    PeerAdd {
        /// Peer name.
        name: String,
        /// Client sends all its traffic through the box (exit node).
        #[serde(default)]
        route_all: bool,
        /// `host:port` the client reaches the box at (default: `mesh.endpoint` or the uplink address).
        #[serde(default)]
        endpoint: Option<String>,
    },
    /// Remove a peer.
    PeerRemove {
        /// Peer name.
        name: String,
    },
    /// Enable or disable a peer.
    PeerSet {
        /// Peer name.
        name: String,
        /// Enabled?
        enabled: bool,
    },
    /// Rename a bridged device and/or pin its address.
    DeviceSet {
        /// MAC address as typed (in the URL): text, not [`Mac`], so that a bad
        /// one gets the daemon's 422 naming the field `mac` instead of a
        /// decode error. The daemon parses it with `Mac::from_str`.
        mac: String,
        /// New name ("" clears).
        #[serde(default)]
        name: Option<String>,
        /// Reserve (true) or release (false) its address.
        #[serde(default)]
        pin: Option<bool>,
        /// Its own tailnet switch: "node" (its own node), "behind" (behind
        /// the box), "off" (not in the tailnet); "" goes back to the
        /// default (`[tailnet] devices`).
        #[serde(default)]
        tailnet: Option<String>,
        /// The tags its own node asks for (empty: `[tailnet] device_tags`).
        #[serde(default)]
        tags: Option<Vec<String>>,
    },
    /// Forget a device: lease, reservation, name.
    DeviceForget {
        /// MAC address as typed (see [`Request::DeviceSet`]).
        mac: String,
    },
    /// The editable settings ([`serde_json::Value`] object keyed by config key).
    Settings,
    /// Change settings: all or nothing.
    SettingsSet {
        /// Config key → new value.
        changes: serde_json::Map<String, serde_json::Value>,
    },
    /// The config file, keys included.
    Backup,
    /// Replace the config file (validated first), then restart.
    Restore {
        /// TOML text.
        config: String,
    },
    /// Erase config, keys and state and restart unconfigured (like a long
    /// press of the reset button). Local API (root) only: the page does not send it.
    FactoryReset,
    /// Restart the daemon.
    Restart,
    /// Log the box's tailnet node out at the control server (`[tailnet]`):
    /// its tailnet peers leave the mesh; [`Request::TailnetLogin`] or the
    /// next start registers again.
    TailnetLogout,
    /// Join the tailnet again without a restart (after a logout, or while
    /// the box waits for a login or retries): with `auth_key`, register
    /// with that key (kept in memory only, never written); without, as at
    /// start (the configured auth key, else an interactive login URL).
    TailnetLogin {
        /// A pre-auth key pasted on the page or read by the CLI.
        #[serde(default)]
        auth_key: Option<SecretText>,
    },
}

/// Text that is never printed (`Debug` shows `<redacted>`): an auth key.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct SecretText(pub String);

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The longest auth key accepted (Tailscale's and Headscale's keys are
/// under 100 characters).
pub const MAX_AUTH_KEY: usize = 512;

/// An auth key as pasted: surrounding white space dropped; then 1 to
/// [`MAX_AUTH_KEY`] visible ASCII characters. The error never quotes the
/// key.
pub fn check_auth_key(key: &str) -> Result<&str, String> {
    let k = key.trim();
    if k.is_empty() {
        return Err("the auth key is empty: paste the key the control server made (headscale preauthkeys create, or Tailscale's admin console), or leave the field out for an interactive login".into());
    }
    if k.len() > MAX_AUTH_KEY {
        return Err(format!(
            "the auth key is longer than {MAX_AUTH_KEY} characters: paste only the key"
        ));
    }
    if !k.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the auth key has spaces or characters that are not printable ASCII: paste only the key".into());
    }
    Ok(k)
}

/// A failed request: HTTP-style status, message, the config key at fault.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Failure {
    /// 400, 404, 409, 422, 500...
    pub status: u16,
    /// Plain-language message.
    pub error: String,
    /// The config key or form field that is wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Failure {
    /// A failure with a status and message.
    pub fn new(status: u16, error: impl Into<String>) -> Self {
        Failure {
            status,
            error: error.into(),
            field: None,
        }
    }
    /// 422 for `field`.
    pub fn invalid(field: impl Into<String>, error: impl Into<String>) -> Self {
        Failure {
            status: 422,
            error: error.into(),
            field: Some(field.into()),
        }
    }
}

/// The daemon's answer.
pub type Reply = Result<serde_json::Value, Failure>;

/// The answer as sent over the unix socket: `{"ok": ...}` or a [`Failure`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum WireReply {
    /// Success.
    Ok {
        /// The value.
        ok: serde_json::Value,
    },
    /// Failure.
    Err(Failure),
}

impl From<Reply> for WireReply {
    fn from(r: Reply) -> Self {
        match r {
            Ok(ok) => WireReply::Ok { ok },
            Err(f) => WireReply::Err(f),
        }
    }
}

impl From<WireReply> for Reply {
    fn from(r: WireReply) -> Self {
        match r {
            WireReply::Ok { ok } => Ok(ok),
            WireReply::Err(f) => Err(f),
        }
    }
}

/// A request waiting for the main loop's answer.
pub struct Pending {
    /// What was asked.
    pub request: Request,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Reply>,
}

/// The box itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BoxStatus {
    /// meshbridge version.
    pub version: String,
    /// Public key.
    pub public_key: String,
    /// Mesh address with prefix.
    pub mesh_address: String,
    /// Gateway address on the bridge with prefix.
    pub bridge_address: String,
    /// Bridge name.
    pub bridge: String,
    /// WireGuard UDP port.
    pub listen_port: u16,
    /// Seconds since start.
    pub uptime_s: u64,
    /// Board model.
    #[serde(default)]
    pub board: String,
    /// Host name.
    #[serde(default)]
    pub hostname: String,
    /// DNS domain of bridged devices and peers.
    #[serde(default)]
    pub domain: String,
    /// `host:port` clients reach the box at (for generated peer configs).
    #[serde(default)]
    pub endpoint: Option<String>,
}

/// One peer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerStatus {
    /// Name.
    pub name: String,
    /// Public key.
    pub public_key: String,
    /// Current endpoint.
    pub endpoint: Option<String>,
    /// Allowed IPs.
    pub allowed_ips: Vec<String>,
    /// Seconds since the last handshake (none: never / expired).
    pub last_handshake_s: Option<u64>,
    /// A handshake within the last 3 minutes.
    pub online: bool,
    /// Bytes received from the peer.
    pub rx_bytes: u64,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
    /// Disabled peers are in the config but not in the mesh.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// One bridged device (a DHCP lease, current or remembered).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceStatus {
    /// MAC address (JSON: `"aa:bb:cc:dd:ee:ff"`).
    pub mac: Mac,
    /// Mesh address.
    pub ip: String,
    /// DHCP hostname.
    pub hostname: Option<String>,
    /// Name given on the page (a reservation's `name`).
    #[serde(default)]
    pub name: Option<String>,
    /// The address is reserved for this MAC.
    #[serde(default)]
    pub pinned: bool,
    /// Whether the lease is active now.
    pub active: bool,
    /// Seconds until the lease expires (negative: expired that long ago).
    pub expires_in_s: i64,
    /// Seconds since the box last saw a frame from it.
    #[serde(default)]
    pub last_seen_s: Option<u64>,
    /// Its tailnet switch: "node" (a tailnet node of its own), "behind"
    /// (behind the box), "off" (not in the tailnet or the mesh); `None`
    /// without a tailnet and no switch set.
    #[serde(default)]
    pub tailnet: Option<String>,
    /// The tags its own node asks for, when set for it alone.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// One health check, with a plain-language fix when it fails.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Health {
    /// Check name.
    pub check: String,
    /// Passing?
    pub ok: bool,
    /// What is wrong and what to do.
    pub message: String,
}

/// The answer to `status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// The box.
    #[serde(rename = "box")]
    pub this: BoxStatus,
    /// Peers.
    pub peers: Vec<PeerStatus>,
    /// Bridged devices.
    pub devices: Vec<DeviceStatus>,
    /// Health checks.
    pub health: Vec<Health>,
    /// The tailnet (`[tailnet]` set), else absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tailnet: Option<TailnetStatus>,
    /// The Wi-Fi access point (`[wifi]` set), else absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wifi: Option<WifiStatus>,
    /// Site-to-site discovery: the remote boxes browsed (configured, and
    /// found in the tailnet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub discovery_remotes: Vec<DiscoveryRemoteStatus>,
}

/// A remote box whose services this box re-announces.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DiscoveryRemoteStatus {
    /// Its name (`[[discovery.remote]] name`, or its MagicDNS name).
    pub name: String,
    /// Its DNS server (`address:port`).
    pub server: String,
    /// The domain browsed there.
    pub domain: String,
    /// Where it came from: `config` or `tailnet`.
    pub source: String,
    /// Complete services it offers now.
    pub services: usize,
    /// DNS queries sent to it.
    pub queries: u64,
    /// Replies from it that were used.
    pub replies: u64,
}

/// The box's Wi-Fi access point. The passphrase is never part of it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WifiStatus {
    /// What the access point is doing: `starting`, `running`, `restarting`,
    /// `waiting-for-uplink`, `off`, `openwrt` (the router's own wireless
    /// config serves it), `failed`.
    pub state: String,
    /// The interface hostapd runs on.
    pub interface: String,
    /// The network name.
    pub ssid: String,
    /// The channel in use (or to be used).
    pub channel: u16,
    /// `wpa2`, `wpa2-wpa3` or `wpa3`.
    pub security: String,
    /// The uplink station whose channel the AP follows (one radio), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follows: Option<String>,
    /// What went wrong last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How often hostapd was started again after it stopped.
    #[serde(default)]
    pub restarts: u32,
    /// Associated clients.
    #[serde(default)]
    pub clients: Vec<WifiClient>,
}

/// A client associated with the access point.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WifiClient {
    /// Its MAC address.
    pub mac: String,
    /// Its address from the box's DHCP, once leased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Its name (the page's, else its DHCP host name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Signal in dBm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_dbm: Option<i32>,
    /// Seconds since it associated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_s: Option<u64>,
    /// Completed the WPA handshake.
    #[serde(default)]
    pub authorized: bool,
}

/// Where the box's tailnet login stands.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TailnetState {
    /// Connecting to the control server, registering.
    #[default]
    Starting,
    /// Waiting for an admin to approve the login URL.
    NeedsLogin,
    /// Registered; the map stream is open.
    LoggedIn,
    /// Logged out (`meshbridge tailnet logout`); a login
    /// (`meshbridge tailnet login`, the page) or a restart registers again.
    LoggedOut,
    /// The last attempt failed (see `error`); retrying.
    Error,
}

impl TailnetState {
    /// Plain words for the CLI and the page.
    pub fn words(self) -> &'static str {
        match self {
            TailnetState::Starting => "starting",
            TailnetState::NeedsLogin => "needs login",
            TailnetState::LoggedIn => "logged in",
            TailnetState::LoggedOut => "logged out",
            TailnetState::Error => "error",
        }
    }
}

/// The box as a tailnet node.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TailnetStatus {
    /// Login state.
    pub state: TailnetState,
    /// The URL an admin opens (or registers on the control server) to let
    /// the box in; only while `needs-login`.
    #[serde(default)]
    pub login_url: Option<String>,
    /// What went wrong last (state `error`, or a retry in progress).
    #[serde(default)]
    pub error: Option<String>,
    /// The control server.
    pub control_url: String,
    /// The host name the box registers with.
    #[serde(default)]
    pub hostname: String,
    /// The box's MagicDNS name (`tbox.tailnet.example.`), once logged in.
    #[serde(default)]
    pub name: Option<String>,
    /// The box's tailnet addresses.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// The tailnet's peers.
    #[serde(default)]
    pub peers: Vec<TailnetPeerStatus>,
    /// The home DERP region (the relay peers send to the box through),
    /// once there is a DERP map.
    #[serde(default)]
    pub derp_home: Option<u16>,
    /// Every DERP region of the map with its latency from the last
    /// measurement (STUN from the WireGuard socket).
    #[serde(default)]
    pub derp_regions: Vec<DerpRegionStatus>,
    /// Packets from tailnet peers the tailnet's packet filter dropped since
    /// the start.
    #[serde(default)]
    pub filter_denied: u64,
    /// Flows in the filter's connection table (answers to them come in).
    #[serde(default)]
    pub filter_flows: usize,
    /// The bridged devices that are tailnet nodes of their own
    /// (`[tailnet] devices = "nodes"`).
    #[serde(default)]
    pub devices: Vec<TailnetDeviceStatus>,
}

/// A bridged device's own tailnet node.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TailnetDeviceStatus {
    /// The device's MAC.
    pub mac: String,
    /// The host name its node registered with.
    pub hostname: String,
    /// Its node's login state.
    pub state: TailnetState,
    /// Its MagicDNS name.
    #[serde(default)]
    pub name: Option<String>,
    /// Its tailnet address (the device's lease).
    #[serde(default)]
    pub address: Option<String>,
    /// Its node's peers.
    pub peers: usize,
    /// Of them, online.
    pub online: usize,
    /// The last error of its control session.
    #[serde(default)]
    pub error: Option<String>,
}

/// One DERP region as the box measured it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DerpRegionStatus {
    /// The region ID.
    pub id: u16,
    /// Its short code (`RegionCode`).
    #[serde(default)]
    pub code: String,
    /// Round trip of its STUN answer in milliseconds (absent: no answer
    /// in the last round, or not measured yet).
    #[serde(default)]
    pub latency_ms: Option<f64>,
}

/// One tailnet peer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TailnetPeerStatus {
    /// Its MagicDNS name.
    pub name: String,
    /// Its tailnet addresses.
    pub addresses: Vec<String>,
    /// Connected to the control server (absent: unknown).
    #[serde(default)]
    pub online: Option<bool>,
    /// The direct UDP path disco confirmed (absent: none, relayed or idle).
    #[serde(default)]
    pub direct: Option<String>,
}

/// A peer as configured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerInfo {
    /// Name.
    pub name: String,
    /// Public key.
    pub public_key: String,
    /// Allowed IPs on the box's side.
    pub allowed_ips: Vec<String>,
}

/// The answer to `peer-add`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerAdded {
    /// The new peer.
    pub peer: PeerInfo,
    /// The client's wg-quick config, private key included (never stored).
    pub config: String,
    /// Suggested file name.
    pub filename: String,
}

/// A service seen on the bridge.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceInfo {
    /// Instance name ("Office Printer").
    pub instance: String,
    /// Service type ("_ipp._tcp").
    #[serde(rename = "type")]
    pub kind: String,
    /// Target host (".local" name).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Bridged device it belongs to (DHCP hostname or name).
    pub device: Option<String>,
    /// Exposed to the mesh (allowed type, device not opted out).
    pub exposed: bool,
    /// The device's IPv4 address (its mesh address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// For printers (`_ipp._tcp`, `_ipps._tcp`): the IPP resource path from
    /// the TXT record's `rp` key ("ipp/print").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_path: Option<String>,
    /// For printers: the URI to add it by hand (`ipp://10.77.1.20:631/ipp/print`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Announced here for another box (`[[discovery.remote]]` name); `None`:
    /// seen on this box's bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

/// Characters kept as they are in an IPP URI's path; everything else is
/// percent-encoded (a TXT record is whatever the device, or a remote box,
/// says it is).
fn path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~/".contains(&b)
}

/// `ipp://addr:port/rp` (or `ipps://`) for a printer service type, with the
/// resource path percent-encoded; `None` for other types.
pub fn printer_uri(kind: &str, addr: &str, port: u16, rp: &str) -> Option<String> {
    let scheme = match kind {
        "_ipp._tcp" => "ipp",
        "_ipps._tcp" => "ipps",
        _ => return None,
    };
    let mut path = String::new();
    for b in rp.trim_start_matches('/').bytes() {
        if path_char(b) {
            path.push(char::from(b));
        } else {
            path.push_str(&format!("%{b:02X}"));
        }
    }
    Some(format!("{scheme}://{addr}:{port}/{path}"))
}

/// The answer to `discovery`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DiscoveryInfo {
    /// Discovery on?
    pub enabled: bool,
    /// The box's domain.
    pub domain: String,
    /// The box's DNS server address for peers.
    pub dns_server: String,
    /// The line for a client's WireGuard config.
    pub wg_line: String,
    /// Services seen.
    pub services: Vec<ServiceInfo>,
}

/// The answer to `system`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SystemInfo {
    /// Version.
    pub version: String,
    /// Board model.
    pub board: String,
    /// Host name.
    pub hostname: String,
    /// Seconds since start.
    pub uptime_s: u64,
    /// Config file.
    pub config_path: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_keys_are_trimmed_checked_and_never_printed() {
        assert_eq!(
            check_auth_key("  hskey-auth-abc_DEF-123\n"),
            Ok("hskey-auth-abc_DEF-123")
        );
        for bad in ["", "   \n", "two words", "tab\tkey", "k\u{e9}y", "ctl\u{7}"] {
            let e = check_auth_key(bad).unwrap_err();
            assert!(!bad.trim().is_empty() || e.contains("empty"), "{e}");
        }
        assert!(check_auth_key(&"k".repeat(MAX_AUTH_KEY)).is_ok());
        let long = "k".repeat(MAX_AUTH_KEY + 1);
        assert!(check_auth_key(&long).unwrap_err().contains("longer"));
        let r = Request::TailnetLogin {
            auth_key: Some(SecretText("tskey-auth-secret".into())),
        };
        assert!(!format!("{r:?}").contains("secret"), "{r:?}");
        // On the wire (CLI socket, page → daemon): the key as plain JSON text.
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cmd": "tailnet-login", "auth_key": "tskey-auth-secret"})
        );
        let none: Request =
            serde_json::from_value(serde_json::json!({"cmd": "tailnet-login"})).unwrap();
        assert_eq!(none, Request::TailnetLogin { auth_key: None });
    }

    #[test]
    fn printer_uris_are_ipp_with_an_encoded_path() {
        assert_eq!(
            printer_uri("_ipp._tcp", "10.77.1.20", 631, "ipp/print").as_deref(),
            Some("ipp://10.77.1.20:631/ipp/print")
        );
        assert_eq!(
            printer_uri("_ipps._tcp", "10.77.1.20", 443, "/a b\"><x>").as_deref(),
            Some("ipps://10.77.1.20:443/a%20b%22%3E%3Cx%3E")
        );
        assert_eq!(
            printer_uri("_googlecast._tcp", "10.77.1.20", 8009, ""),
            None
        );
    }

    /// The MAC is a [`Mac`] in Rust and the same lower-case text in the
    /// JSON the page reads (web/API.md).
    #[test]
    fn device_mac_is_lower_case_text_in_json() {
        let d = DeviceStatus {
            mac: Mac([0x02, 0xab, 0, 0, 0, 0x01]),
            ip: "10.77.1.100".into(),
            hostname: None,
            name: None,
            pinned: false,
            active: true,
            expires_in_s: 60,
            last_seen_s: None,
            tailnet: None,
            tags: Vec::new(),
        };
        let json = serde_json::to_string(&d).unwrap();
        assert!(
            json.starts_with(r#"{"mac":"02:ab:00:00:00:01","ip":"10.77.1.100""#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<DeviceStatus>(&json).unwrap(), d);
    }
}
