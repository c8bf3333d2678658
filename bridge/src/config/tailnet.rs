//! `[tailnet]`: the box as a node of a Tailscale or Headscale tailnet.

use super::values::resolve_path;
use super::{bad, raw, ConfigError};
use std::path::{Path, PathBuf};

/// Tailscale's own control server, used when `control_url` is not set.
pub const DEFAULT_CONTROL_URL: &str = "https://controlplane.tailscale.com";

/// Where the auth key comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum AuthKey {
    /// `auth_key`, inline.
    Inline(String),
    /// `auth_key_file`, read when the daemon registers.
    File(PathBuf),
}

impl std::fmt::Debug for AuthKey {
    /// Never prints the key itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthKey::Inline(_) => f.write_str("Inline(<redacted>)"),
            AuthKey::File(p) => f.debug_tuple("File").field(p).finish(),
        }
    }
}

/// `[tailnet]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tailnet {
    /// The control server, without a trailing slash.
    pub control_url: String,
    /// The auth key; `None`: interactive login.
    pub auth_key: Option<AuthKey>,
    /// The node's name; `None`: the system host name.
    pub hostname: Option<String>,
    /// Advertise the bridge subnet as a route.
    pub advertise_bridge: bool,
    /// Use other nodes' subnet routes.
    pub accept_routes: bool,
    /// `ca_file`: CA certificates trusted for an `https://` control URL,
    /// besides `SSL_CERT_FILE` or the system's bundle. Read at each
    /// connection attempt (a fixed file takes effect without a restart).
    pub ca_file: Option<PathBuf>,
    /// `devices`: how bridged devices join the tailnet.
    pub devices: DeviceMode,
    /// `device_tags`: the tags a device's node asks for.
    pub device_tags: Vec<String>,
}

/// `[tailnet] devices`: how the bridged devices are in the tailnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceMode {
    /// `"nodes"`: every bridged device is a node of its own, its lease the
    /// node's tailnet address (the default).
    #[default]
    Nodes,
    /// `"routes"`: the bridge subnet is a route behind the box's node.
    Routes,
}

impl DeviceMode {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceMode::Nodes => "nodes",
            DeviceMode::Routes => "routes",
        }
    }
}

/// A device's own switch on the page (`[[dhcp.reservations]] tailnet`):
/// how that one device is in the tailnet (or the mesh).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceTailnet {
    /// `"node"`: a tailnet node of its own (with `devices = "nodes"`).
    Node,
    /// `"behind"`: behind the box, an address of the bridge subnet that
    /// the box's node routes (no node of its own).
    Behind,
    /// `"off"`: not in the tailnet or the mesh at all: the bridge and the
    /// box's uplink only; the box drops its packets to and from the mesh.
    Off,
}

impl DeviceTailnet {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceTailnet::Node => "node",
            DeviceTailnet::Behind => "behind",
            DeviceTailnet::Off => "off",
        }
    }

    /// A config value: `None` for an unknown one.
    pub fn parse(s: &str) -> Option<DeviceTailnet> {
        match s.trim() {
            "node" => Some(DeviceTailnet::Node),
            "behind" => Some(DeviceTailnet::Behind),
            "off" => Some(DeviceTailnet::Off),
            _ => None,
        }
    }
}

/// The tags device nodes ask for when `device_tags` is not set.
pub const DEFAULT_DEVICE_TAG: &str = "tag:device";

/// A tag as Tailscale writes them: `tag:` and a name of letters, digits
/// and '-'.
pub(crate) fn valid_tag(t: &str) -> bool {
    t.strip_prefix("tag:").is_some_and(|n| {
        !n.is_empty() && n.len() <= 63 && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

/// A host name the control server accepts: DNS label characters, 1 to 63.
fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 63
        && !h.starts_with('-')
        && !h.ends_with('-')
        && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Validate `[tailnet]`; `None` when the section is absent. `base`: the
/// folder a relative `auth_key_file` is taken from.
pub(super) fn validate_tailnet(
    t: Option<&raw::Tailnet>,
    base: Option<&Path>,
) -> Result<Option<Tailnet>, ConfigError> {
    let Some(t) = t else {
        return Ok(None);
    };
    let control_url = t
        .control_url
        .as_deref()
        .unwrap_or(DEFAULT_CONTROL_URL)
        .trim()
        .trim_end_matches('/')
        .to_string();
    let rest = control_url
        .strip_prefix("http://")
        .or_else(|| control_url.strip_prefix("https://"));
    match rest {
        Some(r) if !r.is_empty() && !r.contains(['/', '@', ' ']) => {}
        _ => {
            return Err(bad(
                "tailnet.control_url",
                format!("{control_url:?} is not a control server URL like https://headscale.example.com or http://10.0.0.5:8080 (no path)"),
            ))
        }
    }
    let auth_key = match (&t.auth_key, &t.auth_key_file) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "tailnet.auth_key",
                "set auth_key or auth_key_file, not both",
            ))
        }
        (Some(k), None) => {
            let k = k.trim();
            if k.is_empty() || k.contains(char::is_whitespace) {
                return Err(bad(
                    "tailnet.auth_key",
                    "empty or contains spaces: paste the key as the control server shows it, or remove the key for an interactive login",
                ));
            }
            Some(AuthKey::Inline(k.to_string()))
        }
        (None, Some(f)) if f.trim().is_empty() => {
            return Err(bad("tailnet.auth_key_file", "empty path"))
        }
        (None, Some(f)) => Some(AuthKey::File(resolve_path(base, f.trim()))),
        (None, None) => None,
    };
    let hostname = match &t.hostname {
        Some(h) if !valid_hostname(h) => {
            return Err(bad(
                "tailnet.hostname",
                format!("{h:?} is not a host name (letters, digits and '-', at most 63)"),
            ))
        }
        h => h.clone(),
    };
    let ca_file = match &t.ca_file {
        Some(f) if f.trim().is_empty() => return Err(bad("tailnet.ca_file", "empty path")),
        Some(f) => Some(resolve_path(base, f.trim())),
        None => None,
    };
    let devices = match t.devices.as_deref().map(str::trim) {
        None | Some("nodes") => DeviceMode::Nodes,
        Some("routes") => DeviceMode::Routes,
        Some(other) => {
            return Err(bad(
                "tailnet.devices",
                format!("{other:?} is not \"nodes\" (each device its own node) or \"routes\" (the bridge subnet behind the box)"),
            ))
        }
    };
    let device_tags = match &t.device_tags {
        None => vec![DEFAULT_DEVICE_TAG.to_string()],
        Some(tags) => {
            if let Some(t) = tags.iter().find(|t| !valid_tag(t)) {
                return Err(bad(
                    "tailnet.device_tags",
                    format!("{t:?} is not a tag like \"tag:printer\""),
                ));
            }
            tags.clone()
        }
    };
    Ok(Some(Tailnet {
        control_url,
        auth_key,
        hostname,
        advertise_bridge: t.advertise_bridge.unwrap_or(true),
        accept_routes: t.accept_routes.unwrap_or(false),
        ca_file,
        devices,
        device_tags,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample_text;
    use super::super::Config;
    use super::*;

    fn with(section: &str) -> Result<Config, ConfigError> {
        Config::from_toml(
            &format!("{}\n[tailnet]\n{section}\n", sample_text()),
            Some(Path::new("/etc/meshbridge")),
        )
    }

    #[test]
    fn absent_section_is_no_tailnet_and_defaults_apply() {
        assert_eq!(
            Config::from_toml(&sample_text(), None).unwrap().tailnet,
            None
        );
        let t = with("").unwrap().tailnet.unwrap();
        assert_eq!(t.control_url, DEFAULT_CONTROL_URL);
        assert_eq!(t.auth_key, None);
        assert_eq!(t.hostname, None);
        assert_eq!(t.ca_file, None);
        assert!(t.advertise_bridge && !t.accept_routes);
    }

    #[test]
    fn devices_are_nodes_by_default_and_tags_are_checked() {
        let t = with("").unwrap().tailnet.unwrap();
        assert_eq!(t.devices, DeviceMode::Nodes);
        assert_eq!(t.device_tags, vec!["tag:device".to_string()]);
        let t = with("devices = \"routes\"\ndevice_tags = [\"tag:printer\", \"tag:lan-2\"]")
            .unwrap()
            .tailnet
            .unwrap();
        assert_eq!(t.devices, DeviceMode::Routes);
        assert_eq!(t.device_tags, vec!["tag:printer", "tag:lan-2"]);
        assert_eq!(
            with("devices = \"all\"").unwrap_err().key,
            "tailnet.devices"
        );
        for bad in ["printer", "tag:", "tag:a b", "tag:x/y"] {
            let e = with(&format!("device_tags = [{bad:?}]")).unwrap_err();
            assert_eq!(e.key, "tailnet.device_tags", "{bad}");
        }
    }

    #[test]
    fn an_https_control_url_with_a_private_ca_file() {
        let t = with("control_url = \"https://hs.example.com:8443\"\nca_file = \"hs-ca.pem\"")
            .unwrap()
            .tailnet
            .unwrap();
        assert_eq!(t.control_url, "https://hs.example.com:8443");
        assert_eq!(t.ca_file, Some("/etc/meshbridge/hs-ca.pem".into()));
        assert_eq!(with("ca_file = \" \"").unwrap_err().key, "tailnet.ca_file");
    }

    #[test]
    fn keys_of_the_issue_are_read() {
        let t = with(
            "control_url = \"http://10.99.0.1:8080/\"\nauth_key_file = \"tailnet-authkey\"\nhostname = \"office-box\"\nadvertise_bridge = false\naccept_routes = true",
        )
        .unwrap()
        .tailnet
        .unwrap();
        assert_eq!(t.control_url, "http://10.99.0.1:8080");
        assert_eq!(
            t.auth_key,
            Some(AuthKey::File("/etc/meshbridge/tailnet-authkey".into()))
        );
        assert_eq!(t.hostname.as_deref(), Some("office-box"));
        assert!(!t.advertise_bridge && t.accept_routes);
        let t = with("auth_key = \"tskey-auth-abc\"")
            .unwrap()
            .tailnet
            .unwrap();
        assert_eq!(t.auth_key, Some(AuthKey::Inline("tskey-auth-abc".into())));
        assert!(
            !format!("{t:?}").contains("tskey"),
            "the key is never printed"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let key = |s: &str| with(s).unwrap_err().key;
        assert_eq!(key("control_url = \"ftp://x\""), "tailnet.control_url");
        assert_eq!(
            key("control_url = \"http://x/path\""),
            "tailnet.control_url"
        );
        assert_eq!(key("control_url = \"https://\""), "tailnet.control_url");
        assert_eq!(
            key("auth_key = \"a\"\nauth_key_file = \"b\""),
            "tailnet.auth_key"
        );
        assert_eq!(key("auth_key = \" \""), "tailnet.auth_key");
        assert_eq!(key("auth_key_file = \"\""), "tailnet.auth_key_file");
        assert_eq!(key("hostname = \"office box\""), "tailnet.hostname");
        assert_eq!(key("hostname = \"-box\""), "tailnet.hostname");
        let e = with("advertise_bridges = true").unwrap_err();
        assert!(e.problem.contains("advertise_bridges"), "{e}");
    }
}
