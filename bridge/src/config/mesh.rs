//! `[mesh]`: the box's key, address, MTU, TUN and peers, from the TOML file
//! or a wg-quick file. Files are read by [`Files::read`] (the only I/O of
//! config validation); [`validate_mesh`] works on their contents.

use super::values::{display_name, ifname, net, resolve_path};
use super::{bad, raw, ConfigError, Endpoint, Peer};
use ipnet::{IpNet, Ipv4Net};
use meshbridge_mesh::wgquick;
use meshbridge_mesh::PrivateKey;
use std::path::{Path, PathBuf};

/// A file the config refers to, as read (or why it could not be).
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Where it is (relative paths resolved against the config's folder).
    pub path: PathBuf,
    /// Its text, or the read error.
    pub text: Result<String, String>,
}

impl Loaded {
    fn read(path: PathBuf) -> Loaded {
        let text = super::paths::read_limited(&path).map_err(|e| e.to_string());
        Loaded { path, text }
    }
}

/// The files named in the config (`mesh.wireguard_config`,
/// `mesh.private_key_file`), read at the edge so the rest of validation is
/// pure. Only the files validation would look at are read.
#[derive(Debug, Clone, Default)]
pub struct Files {
    /// `mesh.wireguard_config`.
    pub wireguard_config: Option<Loaded>,
    /// `mesh.private_key_file` (not read when a wg-quick file or an inline
    /// key is given).
    pub private_key_file: Option<Loaded>,
}

impl Files {
    /// Read the files `raw` names; `base` is the config file's folder.
    pub fn read(raw: &raw::File, base: Option<&Path>) -> Files {
        let m = &raw.mesh;
        Files {
            wireguard_config: m
                .wireguard_config
                .as_deref()
                .map(|p| Loaded::read(resolve_path(base, p))),
            private_key_file: match (&m.wireguard_config, &m.private_key, &m.private_key_file) {
                (None, None, Some(f)) => Some(Loaded::read(resolve_path(base, f))),
                _ => None,
            },
        }
    }
}

/// What is wrong with a wg-quick line, in words that quote nothing from
/// the file but a known key's name: the file may be anything (a restore
/// once pointed it at `/etc/shadow`).
fn safe_problem(problem: &str) -> String {
    const FIXED: &[&str] = &[
        "a second [Interface] section",
        "key outside a [Peer] section",
        "no [Interface] section",
        "[Interface] has no PrivateKey",
        "[Peer] has no PublicKey",
    ];
    const KEYS: &[&str] = &["PrivateKey", "PublicKey", "PresharedKey"];
    const OTHER: &[&str] = &[
        "ListenPort",
        "Address",
        "DNS",
        "MTU",
        "Table",
        "PreUp",
        "PostUp",
        "PreDown",
        "PostDown",
        "SaveConfig",
        "FwMark",
        "AllowedIPs",
        "Endpoint",
        "PersistentKeepalive",
    ];
    if FIXED.contains(&problem) {
        return problem.to_string();
    }
    let (key, rest) = problem.split_once(':').unwrap_or(("", ""));
    let key = key.trim();
    // Key errors describe the key's form, never its text.
    if let Some(k) = KEYS.iter().find(|k| k.eq_ignore_ascii_case(key)) {
        return format!("{k}:{rest}");
    }
    match OTHER.iter().find(|k| k.eq_ignore_ascii_case(key)) {
        Some(k) => format!("{k} has a value that is not valid"),
        None => "not valid wg-quick".to_string(),
    }
}

/// `[mesh]`, validated (but `mesh.endpoint`, which is checked later).
pub(super) struct Mesh {
    pub private_key: PrivateKey,
    pub listen_port: u16,
    pub mesh_address: Ipv4Net,
    pub mtu: u16,
    pub tun_name: String,
    pub peers: Vec<Peer>,
    pub ignored_wg_keys: Vec<String>,
}

fn unread(key: &str, f: &Loaded) -> ConfigError {
    let e = f
        .text
        .as_ref()
        .err()
        .map(String::as_str)
        .unwrap_or_default();
    bad(key, format!("cannot read {}: {e}", f.path.display()))
}

/// Validate `[mesh]` with the contents of the files it names.
pub(super) fn validate_mesh(m: &raw::Mesh, files: &Files) -> Result<Mesh, ConfigError> {
    // The mesh part may come from a wg-quick file.
    let wg = match (&m.wireguard_config, &files.wireguard_config) {
        (Some(_), Some(f)) => {
            let text = f
                .text
                .as_ref()
                .map_err(|_| unread("mesh.wireguard_config", f))?;
            // The line itself is not shown: the file may not be a wg-quick
            // file at all, and its lines may be secrets.
            let parsed = wgquick::parse(text).map_err(|e| {
                bad(
                    "mesh.wireguard_config",
                    format!(
                        "{}: line {}: {} (the line itself is not shown)",
                        f.path.display(),
                        e.line,
                        safe_problem(&e.problem)
                    ),
                )
            })?;
            if m.private_key.is_some() || m.private_key_file.is_some() {
                return Err(bad(
                    "mesh.private_key",
                    "set either mesh.wireguard_config or a private key, not both",
                ));
            }
            Some(parsed)
        }
        (Some(p), None) => {
            return Err(bad(
                "mesh.wireguard_config",
                format!("cannot read {p}: not read"),
            ))
        }
        (None, _) => None,
    };

    let private_key = match (&wg, &m.private_key, &m.private_key_file) {
        (Some(wg), _, _) => wg.private_key.clone(),
        (None, Some(_), Some(_)) => {
            return Err(bad("mesh.private_key", "set either private_key or private_key_file, not both"))
        }
        (None, Some(k), None) => k.parse().map_err(|e| bad("mesh.private_key", format!("{e}")))?,
        (None, None, Some(f)) => {
            let Some(file) = &files.private_key_file else {
                return Err(bad("mesh.private_key_file", format!("cannot read {f}: not read")));
            };
            let text = file
                .text
                .as_ref()
                .map_err(|_| unread("mesh.private_key_file", file))?;
            text.trim().parse().map_err(|e| bad("mesh.private_key_file", format!("{}: {e}", file.path.display())))?
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
        (Some(a), _) => a.parse().map_err(|_| {
            bad(
                "mesh.address",
                format!("{a:?} is not an IPv4 address with prefix, like 10.77.0.1/24"),
            )
        })?,
        (None, Some(wg)) => wg
            .addresses
            .iter()
            .find_map(|n| match n {
                IpNet::V4(v) => Some(*v),
                _ => None,
            })
            .ok_or_else(|| {
                bad(
                    "mesh.address",
                    "missing: the wg-quick file has no IPv4 Address and mesh.address is not set",
                )
            })?,
        (None, None) => {
            return Err(bad(
                "mesh.address",
                "missing: the box's mesh address, like \"10.77.0.1/24\"",
            ))
        }
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
            return Err(bad(
                "mesh.peers",
                "peers come from mesh.wireguard_config; remove [[mesh.peers]] or the wg-quick file",
            ));
        }
        for (i, p) in wg.peers.iter().enumerate() {
            let key = format!("mesh.wireguard_config peer {}", i + 1);
            peers.push(Peer {
                // A name from a comment that is no good as a name: the default.
                name: p
                    .name
                    .as_deref()
                    .and_then(|n| display_name(&key, n).ok())
                    .unwrap_or_else(|| format!("peer{}", i + 1)),
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
        let name = display_name(&k("name"), &p.name)?;
        let allowed_ips = p
            .allowed_ips
            .iter()
            .map(|s| net(&k("allowed_ips"), s))
            .collect::<Result<Vec<_>, _>>()?;
        peers.push(Peer {
            name,
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

    Ok(Mesh {
        private_key,
        listen_port,
        mesh_address,
        mtu,
        tun_name,
        peers,
        ignored_wg_keys: wg.map(|w| w.ignored).unwrap_or_default(),
    })
}

/// `mesh.endpoint`: `host:port` for generated peer configs ("" = unset).
pub(super) fn validate_endpoint(m: &raw::Mesh) -> Result<Option<String>, ConfigError> {
    Ok(match &m.endpoint {
        Some(e) if e.trim().is_empty() => None,
        Some(e) => {
            Endpoint::parse("mesh.endpoint", e.trim())?;
            Some(e.trim().to_string())
        }
        None => None,
    })
}

#[cfg(test)]
mod tests {
    use super::safe_problem;

    #[test]
    fn wg_quick_problems_never_quote_the_file() {
        assert_eq!(
            safe_problem("AllowedIPs: \"10.0.0.1/33\" is not an address or CIDR prefix"),
            "AllowedIPs has a value that is not valid"
        );
        assert_eq!(
            safe_problem("[Peer] has no PublicKey"),
            "[Peer] has no PublicKey"
        );
        assert!(safe_problem("PrivateKey: not a base64 WireGuard key (expected 44 characters of base64, as `wg genkey` prints)").starts_with("PrivateKey: not a base64"));
        for leak in [
            "expected `Key = Value`, found \"root:$y$SECRET:19000::\"",
            "unknown section [SECRET]; expected [Interface] or [Peer]",
            "unknown key SECRET in [Peer]",
            "SECRET appears before any [Interface] or [Peer] section",
        ] {
            assert!(!safe_problem(leak).contains("SECRET"), "{leak}");
        }
    }
}
