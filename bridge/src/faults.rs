//! Faults the box recovers from by itself, and what the status page says
//! about them:
//!
//! * **Rollback.** After every successful start (and every change applied
//!   live) the config file's text is kept as `<state_dir>/last-good.toml`.
//!   When a start fails (a taken UDP port, a bridge that is not a bridge),
//!   the daemon puts that text back into the config file, keeps the failed
//!   file as `<state_dir>/failed.toml`, records what happened in
//!   `<state_dir>/rollback.json` and starts with the last good config. The
//!   health check `rollback` names the keys that differ and the error, until
//!   a different config has started.
//! * **Missing bridge ports.** A configured port that does not exist (a USB
//!   adapter not plugged in) is not fatal: the daemon starts without it, the
//!   health check `bridge_ports` names it, and the port is added to the bridge
//!   when it appears.
//! * **Factory reset.** The reset leaves a fresh config that keeps only where
//!   the box lives (state folder, bridge name and ports, board, API socket)
//!   with a new key, so the daemon restarts to its first-start page.

use crate::config::Config;
use crate::persist::write_private;
use anyhow::{Context, Result};
use meshbridge_web::proto::Health;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The config that last started, in the state folder.
pub const LAST_GOOD_FILE: &str = "last-good.toml";
/// The config that failed to start (kept for the admin), in the state folder.
pub const FAILED_FILE: &str = "failed.toml";
/// What the last rollback did, in the state folder.
pub const ROLLBACK_FILE: &str = "rollback.json";

/// A start that failed and was rolled back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rollback {
    /// Settings (dotted keys) that differ between the failed and the good config.
    pub keys: Vec<String>,
    /// Why the start failed.
    pub error: String,
    /// When (RFC 3339).
    pub when: String,
    /// FNV-1a hash of the config text rolled back to: the record is shown while that config runs.
    pub restored: u64,
}

/// Faults the status page shows (set by the daemon, read by [`checks`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// The last start was rolled back.
    pub rollback: Option<Rollback>,
    /// Configured bridge ports that are not in the bridge, with why.
    pub missing_ports: Vec<(String, String)>,
}

static FAULTS: Mutex<Faults> = Mutex::new(Faults {
    rollback: None,
    missing_ports: Vec::new(),
});

/// Change the faults the status shows.
pub fn update(f: impl FnOnce(&mut Faults)) {
    if let Ok(mut g) = FAULTS.lock() {
        f(&mut g);
    }
}

/// The faults now.
pub fn current() -> Faults {
    FAULTS.lock().map(|g| g.clone()).unwrap_or_default()
}

/// The health checks for `faults` (empty when there is nothing to say).
pub fn checks(faults: &Faults) -> Vec<Health> {
    let mut out = Vec::new();
    if let Some(r) = &faults.rollback {
        let keys = if r.keys.is_empty() {
            "the config file".to_string()
        } else {
            r.keys.join(", ")
        };
        out.push(Health {
            check: "rollback".into(),
            ok: false,
            message: format!(
                "A change to {keys} stopped meshbridge from starting ({}) at {}. It went back to the last settings that worked; the failed file is kept as {FAILED_FILE} in the state folder.",
                r.error, r.when
            ),
        });
    }
    if !faults.missing_ports.is_empty() {
        let list: Vec<String> = faults
            .missing_ports
            .iter()
            .map(|(p, why)| format!("{p} ({why})"))
            .collect();
        out.push(Health {
            check: "bridge_ports".into(),
            ok: false,
            message: format!(
                "Bridge port(s) not in the bridge: {}. Devices on them are not served; meshbridge adds a port as soon as it appears (plug the adapter in, or fix bridge.ports).",
                list.join(", ")
            ),
        });
    }
    out
}

/// FNV-1a: a stable fingerprint of a config text (not a security hash).
pub fn fingerprint(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Dotted keys whose values differ between two TOML texts (`mesh.listen_port`,
/// `mesh.peers`); a text that does not parse counts as empty.
pub fn changed_keys(a: &str, b: &str) -> Vec<String> {
    fn flat(prefix: &str, v: &toml::Value, out: &mut Vec<(String, String)>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flat(&key, v, out);
                }
            }
            other => out.push((prefix.to_string(), format!("{other:?}"))),
        }
    }
    let parse = |s: &str| {
        let mut out = Vec::new();
        if let Ok(v) = s.parse::<toml::Table>() {
            flat("", &toml::Value::Table(v), &mut out);
        }
        out
    };
    let (x, y) = (parse(a), parse(b));
    let mut keys = BTreeSet::new();
    for (k, v) in &x {
        if !y.iter().any(|(k2, v2)| k2 == k && v2 == v) {
            keys.insert(k.clone());
        }
    }
    for (k, _) in &y {
        if !x.iter().any(|(k2, _)| k2 == k) {
            keys.insert(k.clone());
        }
    }
    keys.into_iter().collect()
}

/// The running config's file text is known to start: keep it as the last good one.
pub fn mark_good(config: &Config) {
    let Some(path) = &config.source else { return };
    match std::fs::read_to_string(path) {
        Ok(text) => mark_good_text(&config.state_dir, &text),
        Err(e) => tracing::warn!(
            "reading {} to keep it as the last good config: {e}",
            path.display()
        ),
    }
}

/// Keep `text` as the last good config (written only when it changed).
pub fn mark_good_text(state_dir: &Path, text: &str) {
    let path = state_dir.join(LAST_GOOD_FILE);
    if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
        return;
    }
    if let Err(e) = write_private(&path, text.as_bytes()) {
        tracing::warn!("keeping the last good config: {e:#}");
    }
}

/// At start: show the last rollback while the config it restored runs;
/// forget it once another config has started.
pub fn load_rollback(config: &Config) {
    let path = config.state_dir.join(ROLLBACK_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        update(|f| f.rollback = None);
        return;
    };
    let running = config
        .source
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|t| fingerprint(&t));
    match serde_json::from_str::<Rollback>(&text) {
        Ok(r) if Some(r.restored) == running => update(|f| f.rollback = Some(r)),
        _ => {
            let _ = std::fs::remove_file(&path);
            update(|f| f.rollback = None);
        }
    }
}

/// A start with the config file `path` (whose state folder is `state_dir`)
/// failed with `error`: put the last good config back and return it, or
/// `None` when there is none or it is the one that failed.
pub fn roll_back(path: &Path, state_dir: &Path, error: &str) -> Result<Option<Config>> {
    let Ok(good) = std::fs::read_to_string(state_dir.join(LAST_GOOD_FILE)) else {
        return Ok(None);
    };
    let bad = std::fs::read_to_string(path).unwrap_or_default();
    if bad == good {
        return Ok(None);
    }
    let mut config = match Config::from_toml(&good, path.parent()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("the last good config no longer loads ({e}); not rolling back");
            return Ok(None);
        }
    };
    config.source = Some(path.to_path_buf());
    let record = Rollback {
        keys: changed_keys(&bad, &good),
        error: error.to_string(),
        when: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        restored: fingerprint(&good),
    };
    write_private(&state_dir.join(FAILED_FILE), bad.as_bytes())?;
    write_private(
        &state_dir.join(ROLLBACK_FILE),
        serde_json::to_string(&record)?.as_bytes(),
    )?;
    write_private(path, good.as_bytes())
        .with_context(|| format!("putting the last good config back into {}", path.display()))?;
    tracing::error!(
        "meshbridge could not start with the changed setting(s) {} ({error}): went back to the last config that started; the failed one is kept as {}",
        record.keys.join(", "),
        state_dir.join(FAILED_FILE).display()
    );
    Ok(Some(config))
}

/// The config a factory reset leaves: where the box lives (state folder,
/// bridge name, ports and TAP, TUN name, API socket, board) from `old_text`,
/// defaults for the rest, and a new key (in the key file `old_text` names if
/// that lies in one of `wiped` folders, else inline). Returns the text and
/// the key file to write, if any.
pub fn factory_config(
    old_text: &str,
    base: &Path,
    wiped: &[&Path],
    new_key: &str,
) -> (String, Option<PathBuf>) {
    use toml_edit::{DocumentMut, Item, Table};
    let old: DocumentMut = old_text.parse().unwrap_or_default();
    let mut doc = DocumentMut::new();
    doc.decor_mut().set_prefix(
        "# meshbridge configuration, written by a factory reset. Set it up on the web page.\n",
    );
    if let Some(v) = old.get("state_dir").and_then(Item::as_value) {
        doc.insert("state_dir", Item::Value(v.clone()));
    }
    let keep = |section: &str, keys: &[&str]| -> Table {
        let mut t = Table::new();
        if let Some(o) = old.get(section).and_then(Item::as_table_like) {
            for k in keys {
                if let Some(v) = o.get(k).and_then(Item::as_value) {
                    t.insert(k, Item::Value(v.clone()));
                }
            }
        }
        t
    };
    let mut mesh = keep("mesh", &["tun"]);
    let key_file = old
        .get("mesh")
        .and_then(|m| m.get("private_key_file"))
        .and_then(Item::as_str)
        .map(|k| {
            let p = PathBuf::from(k);
            (
                k.to_string(),
                if p.is_absolute() { p } else { base.join(p) },
            )
        })
        .filter(|(_, p)| wiped.iter().any(|w| p.starts_with(w)));
    match &key_file {
        Some((k, _)) => mesh.insert("private_key_file", toml_edit::value(k.as_str())),
        None => mesh.insert("private_key", toml_edit::value(new_key)),
    };
    mesh.insert("listen_port", toml_edit::value(51820));
    mesh.insert("address", toml_edit::value("10.77.0.1/24"));
    doc.insert("mesh", Item::Table(mesh));
    doc.insert(
        "bridge",
        Item::Table(keep("bridge", &["name", "ports", "tap"])),
    );
    let mut dhcp = Table::new();
    dhcp.insert("range", toml_edit::value("10.77.1.100-10.77.1.200"));
    doc.insert("dhcp", Item::Table(dhcp));
    for section in ["api", "board"] {
        if let Some(t) = old.get(section).and_then(Item::as_table) {
            doc.insert(section, Item::Table(t.clone()));
        }
    }
    (doc.to_string(), key_file.map(|(_, p)| p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_name_the_setting() {
        let a = "[mesh]\nlisten_port = 51821\naddress = \"10.77.0.1/24\"\n[bridge]\nports = [\"eth1\"]\n";
        let b = "[mesh]\nlisten_port = 51820\naddress = \"10.77.0.1/24\"\n[bridge]\nports = [\"eth1\"]\n";
        assert_eq!(changed_keys(a, b), vec!["mesh.listen_port"]);
        assert_eq!(changed_keys(b, b), Vec::<String>::new());
        let c = "[mesh]\nlisten_port = 51820\naddress = \"10.77.0.1/24\"\n[bridge]\nports = [\"eth1\", \"usb0\"]\n";
        assert_eq!(changed_keys(c, b), vec!["bridge.ports"]);
        assert_eq!(
            changed_keys("[dhcp]\nrange = \"x\"\n", ""),
            vec!["dhcp.range"]
        );
    }

    #[test]
    fn checks_name_the_key_the_error_and_the_missing_port() {
        assert!(checks(&Faults::default()).is_empty());
        let f = Faults {
            rollback: Some(Rollback {
                keys: vec!["mesh.listen_port".into()],
                error: "binding UDP port 51821".into(),
                when: "2026-12-01T05:00:00Z".into(),
                restored: 1,
            }),
            missing_ports: vec![("usb0".into(), "does not exist".into())],
        };
        let h = checks(&f);
        assert_eq!(h.len(), 2);
        assert!(h.iter().all(|h| !h.ok));
        assert!(
            h[0].message.contains("mesh.listen_port")
                && h[0].message.contains("binding UDP port 51821")
        );
        assert_eq!(h[1].check, "bridge_ports");
        assert!(h[1].message.contains("usb0"));
    }

    #[test]
    fn roll_back_restores_the_last_good_file_and_records_why() {
        let dir = std::env::temp_dir().join(format!("mb-faults-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = "[mesh]\nprivate_key = \"yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\"\nlisten_port = 51820\naddress = \"10.77.0.1/24\"\n[bridge]\nports = [\"eth1\"]\n[dhcp]\nrange = \"10.77.1.100-10.77.1.200\"\n".to_string();
        let bad = good.replace("listen_port = 51820", "listen_port = 51821");
        assert_ne!(good, bad);
        let path = dir.join("box.toml");
        std::fs::write(&path, &bad).unwrap();
        // No last good config: nothing to roll back to.
        assert!(roll_back(&path, &dir, "x").unwrap().is_none());
        mark_good_text(&dir, &good);
        let c = roll_back(&path, &dir, "binding UDP port 51821")
            .unwrap()
            .unwrap();
        assert_eq!(c.listen_port, 51820);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), good);
        assert_eq!(std::fs::read_to_string(dir.join(FAILED_FILE)).unwrap(), bad);
        let r: Rollback =
            serde_json::from_str(&std::fs::read_to_string(dir.join(ROLLBACK_FILE)).unwrap())
                .unwrap();
        assert_eq!(r.keys, vec!["mesh.listen_port"]);
        assert_eq!(r.restored, fingerprint(&good));
        // The good config failing too: no loop.
        assert!(roll_back(&path, &dir, "again").unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn factory_config_keeps_where_the_box_lives_and_nothing_else() {
        let old = r#"state_dir = "/var/lib/meshbridge"
[mesh]
private_key_file = "private.key"
listen_port = 4000
address = "10.9.0.1/24"
[[mesh.peers]]
name = "laptop"
public_key = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
allowed_ips = ["10.9.0.2/32"]
[bridge]
name = "br0"
ports = ["eth1"]
[dhcp]
range = "10.9.1.100-10.9.1.200"
[board]
root = "/tmp/x"
"#;
        let key = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
        let base = Path::new("/etc/meshbridge");
        let (text, key_file) = factory_config(old, base, &[base], key);
        assert_eq!(
            key_file.as_deref(),
            Some(Path::new("/etc/meshbridge/private.key"))
        );
        assert!(
            !text.contains("laptop") && !text.contains("4000") && !text.contains("10.9."),
            "{text}"
        );
        assert!(
            text.contains("ports = [\"eth1\"]") && text.contains("root = \"/tmp/x\""),
            "{text}"
        );
        // A key file outside the wiped folders is not overwritten: the key goes inline.
        let (text, key_file) = factory_config(old, Path::new("/srv"), &[base], key);
        assert!(key_file.is_none() && text.contains(key));
        let c = Config::from_toml(&text, None).unwrap();
        assert_eq!(c.bridge_ports, vec!["eth1"]);
        assert!(c.peers.is_empty());
    }
}
