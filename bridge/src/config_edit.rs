//! Changes from the web page and the CLI, made to the config file itself
//! (toml_edit keeps the user's comments and layout), validated as a whole
//! before anything is written, then written atomically.

use crate::config::paths::{read_limited, Fence};
use crate::config::Config;
use meshbridge_types::Mac;
use meshbridge_web::proto::Failure;
use serde_json::Value;
use std::path::{Path, PathBuf};
use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table};

/// How a validated change takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Effect {
    /// Applied to the running daemon at once.
    Live,
    /// Saved; takes effect when the daemon restarts.
    Restart,
}

/// The settings the page may change, and how each takes effect.
pub const SETTINGS: &[(&str, Effect)] = &[
    ("bridge.ports", Effect::Restart),
    ("dhcp.range", Effect::Live),
    ("dhcp.lease_time", Effect::Live),
    ("mesh.listen_port", Effect::Restart),
    ("mesh.endpoint", Effect::Live),
    ("web.listen", Effect::Restart),
    ("discovery.services", Effect::Live),
    ("discovery.opt_out", Effect::Live),
    ("routing.advertise_routes", Effect::Restart),
    ("routing.exit_node", Effect::Restart),
    ("wifi.enabled", Effect::Live),
    ("wifi.interface", Effect::Live),
    ("wifi.ssid", Effect::Live),
    ("wifi.passphrase", Effect::Live),
    ("wifi.security", Effect::Live),
    ("wifi.country", Effect::Live),
    ("wifi.channel", Effect::Live),
];

fn internal(e: impl std::fmt::Display) -> Failure {
    Failure::new(500, e.to_string())
}

/// A config file being edited.
pub struct Edit {
    path: PathBuf,
    doc: DocumentMut,
    fence: Fence,
}

fn from_config_error(e: crate::config::ConfigError) -> Failure {
    Failure::invalid(e.key, e.problem)
}

impl Edit {
    /// Open the file `config` was loaded from.
    pub fn open(config: &Config) -> Result<Edit, Failure> {
        let path = config
            .source
            .clone()
            .ok_or_else(|| Failure::new(409, "this daemon was not started from a config file"))?;
        let text = read_limited(&path)
            .map_err(|e| internal(format!("reading {}: {e}", path.display())))?;
        let doc: DocumentMut = text
            .parse()
            .map_err(|e| internal(format!("{} no longer parses: {e}", path.display())))?;
        let fence = Fence::new(&path, &config.state_dir, Some(&text));
        Ok(Edit { path, doc, fence })
    }

    fn table(&mut self, name: &str) -> Result<&mut Table, Failure> {
        let item = self
            .doc
            .entry(name)
            .or_insert_with(|| Item::Table(Table::new()));
        item.as_table_mut()
            .ok_or_else(|| Failure::new(409, format!("[{name}] in the config file is not a table")))
    }

    /// Set `section.key` (dotted, one level) to `v`; `None` removes it.
    fn set(&mut self, key: &str, v: Option<toml_edit::Value>) -> Result<(), Failure> {
        let (section, field) = key
            .split_once('.')
            .ok_or_else(|| Failure::invalid(key, "not a setting"))?;
        let t = self.table(section)?;
        match v {
            Some(v) => {
                t.insert(field, Item::Value(v));
            }
            None => {
                t.remove(field);
            }
        }
        Ok(())
    }

    /// Apply the page's settings (keys from [`SETTINGS`]); returns how they take effect.
    pub fn settings(
        &mut self,
        changes: &serde_json::Map<String, Value>,
    ) -> Result<Effect, Failure> {
        let mut effect = Effect::Live;
        for (key, value) in changes {
            let Some((_, e)) = SETTINGS.iter().find(|(k, _)| k == key) else {
                return Err(Failure::invalid(
                    key,
                    format!("{key} cannot be changed from the page"),
                ));
            };
            effect = effect.max(*e);
            let v: Option<toml_edit::Value> = match key.as_str() {
                "bridge.ports"
                | "web.listen"
                | "discovery.services"
                | "discovery.opt_out"
                | "routing.advertise_routes" => Some(strings(key, value)?.into()),
                "dhcp.range" | "dhcp.lease_time" => Some(string(key, value)?.into()),
                "mesh.endpoint" => {
                    let s = string(key, value)?;
                    (!s.trim().is_empty()).then(|| s.trim().to_string().into())
                }
                "mesh.listen_port" => {
                    let n = value
                        .as_u64()
                        .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
                        .filter(|n| (1..=65535).contains(n))
                        .ok_or_else(|| Failure::invalid(key, "a UDP port from 1 to 65535"))?;
                    Some((n as i64).into())
                }
                "wifi.interface" | "wifi.ssid" | "wifi.security" | "wifi.country" => {
                    Some(string(key, value)?.trim().to_string().into())
                }
                // Write-only: an empty field keeps the one in the file.
                "wifi.passphrase" => match string(key, value)? {
                    p if p.is_empty() => continue,
                    p => Some(p.into()),
                },
                "wifi.channel" => {
                    let n = value
                        .as_u64()
                        .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
                        .filter(|n| *n <= u64::from(u16::MAX))
                        .ok_or_else(|| Failure::invalid(key, "a Wi-Fi channel number"))?;
                    Some((n as i64).into())
                }
                "routing.exit_node" | "wifi.enabled" => Some(
                    value
                        .as_bool()
                        .ok_or_else(|| Failure::invalid(key, "true or false"))?
                        .into(),
                ),
                _ => unreachable!("every key in SETTINGS is handled"),
            };
            // web.listen [] would mean "nowhere": remove it to get the defaults back.
            let v = match (key.as_str(), v) {
                ("web.listen", Some(toml_edit::Value::Array(a))) if a.is_empty() => None,
                (_, v) => v,
            };
            self.set(key, v)?;
        }
        Ok(effect)
    }

    fn peers_mut(&mut self) -> Result<&mut ArrayOfTables, Failure> {
        array_of_tables(self.table("mesh")?, "mesh", "peers")
    }

    fn peer_index(&mut self, name: &str) -> Result<Option<usize>, Failure> {
        Ok(self
            .peers_mut()?
            .iter()
            .position(|t| t.get("name").and_then(|v| v.as_str()).map(str::trim) == Some(name)))
    }

    /// Append a peer.
    pub fn add_peer(
        &mut self,
        name: &str,
        public_key: &str,
        preshared_key: &str,
        allowed_ips: &[String],
    ) -> Result<(), Failure> {
        let mut t = Table::new();
        t.insert("name", toml_edit::value(name));
        t.insert("public_key", toml_edit::value(public_key));
        t.insert("preshared_key", toml_edit::value(preshared_key));
        let mut a = Array::new();
        for ip in allowed_ips {
            a.push(ip.as_str());
        }
        t.insert("allowed_ips", toml_edit::value(a));
        self.peers_mut()?.push(t);
        Ok(())
    }

    /// Remove the peer called `name`; false if there is none.
    pub fn remove_peer(&mut self, name: &str) -> Result<bool, Failure> {
        match self.peer_index(name)? {
            Some(i) => {
                self.peers_mut()?.remove(i);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Enable or disable the peer called `name`; false if there is none.
    pub fn set_peer_enabled(&mut self, name: &str, enabled: bool) -> Result<bool, Failure> {
        let Some(i) = self.peer_index(name)? else {
            return Ok(false);
        };
        let t = self.peers_mut()?.get_mut(i).expect("index just found");
        if enabled {
            t.remove("enabled");
        } else {
            t.insert("enabled", toml_edit::value(false));
        }
        Ok(true)
    }

    fn reservations_mut(&mut self) -> Result<&mut ArrayOfTables, Failure> {
        array_of_tables(self.table("dhcp")?, "dhcp", "reservations")
    }

    /// The `[[dhcp.reservations]]` entry of `mac`, made if missing.
    fn device_entry(&mut self, mac: &Mac) -> Result<(usize, &mut ArrayOfTables), Failure> {
        let res = self.reservations_mut()?;
        let found = res.iter().position(|t| {
            t.get("mac")
                .and_then(|v| v.as_str())
                .and_then(|s| s.parse::<Mac>().ok())
                .as_ref()
                == Some(mac)
        });
        let i = match found {
            Some(i) => i,
            None => {
                let mut t = Table::new();
                t.insert("mac", toml_edit::value(mac.to_string()));
                res.push(t);
                res.len() - 1
            }
        };
        Ok((i, res))
    }

    /// Set a device's name and/or reserved address (`Some(None)` clears one);
    /// the entry goes when it has nothing left but its MAC.
    pub fn set_device(
        &mut self,
        mac: &Mac,
        name: Option<Option<&str>>,
        ip: Option<Option<std::net::Ipv4Addr>>,
    ) -> Result<(), Failure> {
        let (i, res) = self.device_entry(mac)?;
        let t = res.get_mut(i).expect("index exists");
        set_or_remove(t, "name", name.map(|n| n.map(toml_edit::value)));
        set_or_remove(
            t,
            "ip",
            ip.map(|a| a.map(|a| toml_edit::value(a.to_string()))),
        );
        drop_if_bare(res, i);
        Ok(())
    }

    /// Set a device's own tailnet switch (`"node"`, `"behind"`, `"off"`)
    /// and/or its node's tags (`Some(None)` clears one).
    pub fn set_device_tailnet(
        &mut self,
        mac: &Mac,
        tailnet: Option<Option<&str>>,
        tags: Option<Option<&[String]>>,
    ) -> Result<(), Failure> {
        let (i, res) = self.device_entry(mac)?;
        let t = res.get_mut(i).expect("index exists");
        set_or_remove(t, "tailnet", tailnet.map(|v| v.map(toml_edit::value)));
        set_or_remove(
            t,
            "tags",
            tags.map(|v| v.map(|tags| toml_edit::value(tags.iter().collect::<toml_edit::Array>()))),
        );
        drop_if_bare(res, i);
        Ok(())
    }

    /// The text as it would be written.
    pub fn text(&self) -> String {
        self.doc.to_string()
    }

    /// Validate the edited file as a whole; nothing is written.
    pub fn validate(&self) -> Result<(Config, String), Failure> {
        let text = self.text();
        let mut c = Config::from_toml_fenced(&text, self.path.parent(), &self.fence)
            .map_err(from_config_error)?;
        c.source = Some(self.path.clone());
        Ok((c, text))
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Write the new text of the config file atomically, readable by root only
/// (it holds preshared keys, maybe the private key).
pub fn commit(path: &Path, text: &str) -> Result<(), Failure> {
    crate::persist::write_private(path, text.as_bytes())
        .map_err(|e| internal(format!("writing {}: {e}", path.display())))
}

/// `[[section.key]]` entries, editable: created if missing; an inline array
/// (`key = [{...}, ...]`) is turned into `[[section.key]]` tables.
fn array_of_tables<'a>(
    t: &'a mut Table,
    section: &str,
    key: &str,
) -> Result<&'a mut ArrayOfTables, Failure> {
    let item = t
        .entry(key)
        .or_insert_with(|| Item::ArrayOfTables(ArrayOfTables::new()));
    if let Item::Value(toml_edit::Value::Array(a)) = item {
        let mut aot = ArrayOfTables::new();
        for v in a.iter() {
            if let Some(t) = v.as_inline_table() {
                aot.push(t.clone().into_table());
            }
        }
        *item = Item::ArrayOfTables(aot);
    }
    item.as_array_of_tables_mut().ok_or_else(|| {
        Failure::new(
            409,
            format!("{section}.{key} in the config file is not a list of tables"),
        )
    })
}

fn string(key: &str, v: &Value) -> Result<String, Failure> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| Failure::invalid(key, "must be text"))
}

fn strings(key: &str, v: &Value) -> Result<Array, Failure> {
    let items: Vec<String> = match v {
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map(|s| s.trim().to_string()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Failure::invalid(key, "must be a list of text"))?,
        // One per line or comma-separated, as typed into a text box.
        Value::String(s) => s.split(['\n', ',']).map(|x| x.trim().to_string()).collect(),
        _ => return Err(Failure::invalid(key, "must be a list of text")),
    };
    let mut a = Array::new();
    for s in items.into_iter().filter(|s| !s.is_empty()) {
        a.push(s);
    }
    Ok(a)
}

/// The backup: the config file with the private key written into it (so the
/// file alone restores the box).
pub fn backup(config: &Config) -> Result<String, Failure> {
    let mut e = Edit::open(config)?;
    let mesh = e.table("mesh")?;
    if mesh.contains_key("private_key_file") {
        mesh.remove("private_key_file");
        mesh.insert(
            "private_key",
            toml_edit::value(config.private_key.to_base64()),
        );
    }
    let mut text = format!(
        "# meshbridge backup, {}. It holds the box's private key: keep it safe.\n",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
    );
    text += &e.text();
    Ok(text)
}

/// What restoring a backup writes.
pub type Restored = (Config, String, Option<(PathBuf, String)>);

/// Check a backup and say what restoring it writes: the config text, and the
/// key file to write when the running config keeps its key in a file.
pub fn restore(current: &Config, text: &str) -> Result<Restored, Failure> {
    let path = current
        .source
        .clone()
        .ok_or_else(|| Failure::new(409, "this daemon was not started from a config file"))?;
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e| Failure::invalid("config", format!("not a TOML file: {e}")))?;
    // Keep the key in its file if that is how this box is set up.
    let cur = read_limited(&path).unwrap_or_default();
    // Paths in the backup stay inside the box's own folders (or are the
    // ones this box already uses); checked before any file it names is read.
    let fence = Fence::new(&path, &current.state_dir, Some(&cur));
    let key_file = cur.parse::<DocumentMut>().ok().and_then(|d| {
        d.get("mesh")?
            .get("private_key_file")?
            .as_str()
            .map(str::to_string)
    });
    let mut write_key = None;
    if let (Some(kf), Some(mesh)) = (key_file, doc.get_mut("mesh").and_then(Item::as_table_mut)) {
        if let Some(k) = mesh
            .get("private_key")
            .and_then(|v| v.as_str())
            .map(str::to_string)
        {
            mesh.remove("private_key");
            mesh.insert("private_key_file", toml_edit::value(kf.clone()));
            let base = path.parent().unwrap_or(Path::new("/"));
            let kpath = if Path::new(&kf).is_absolute() {
                PathBuf::from(&kf)
            } else {
                base.join(&kf)
            };
            write_key = Some((kpath, k));
        }
    }
    let out = doc.to_string();
    // Validate with the key inline (the key file is written only after).
    let mut check =
        Config::from_toml_fenced(text.trim_start_matches('\u{feff}'), path.parent(), &fence)
            .map_err(from_config_error)?;
    check.source = Some(path.clone());
    Ok((check, out, write_key))
}

/// `Some(Some(v))` sets `key`, `Some(None)` removes it, `None` leaves it.
fn set_or_remove(t: &mut Table, key: &str, v: Option<Option<toml_edit::Item>>) {
    match v {
        Some(Some(v)) => {
            t.insert(key, v);
        }
        Some(None) => {
            t.remove(key);
        }
        None => {}
    }
}

/// A reservation entry with nothing but its MAC goes.
fn drop_if_bare(res: &mut ArrayOfTables, i: usize) {
    if res
        .get(i)
        .is_some_and(|t| t.iter().all(|(k, _)| k == "mac"))
    {
        res.remove(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"# my box
state_dir = "STATE"

[mesh]
private_key = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
address = "10.77.0.1/24"   # the box

[[mesh.peers]]
name = "laptop"
public_key = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
allowed_ips = ["10.77.0.2/32"]

[bridge]
ports = []

[dhcp]
range = "10.77.1.100-10.77.1.200"
"#;

    fn setup() -> (PathBuf, Config) {
        let dir = std::env::temp_dir().join(format!("mb-edit-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("meshbridge.toml");
        std::fs::write(&path, BASE.replace("STATE", &dir.display().to_string())).unwrap();
        let c = Config::load(&path).unwrap();
        (path, c)
    }

    #[test]
    fn settings_keep_comments_and_validate_as_a_whole() {
        let (path, c) = setup();
        let mut e = Edit::open(&c).unwrap();
        let mut ch = serde_json::Map::new();
        ch.insert("dhcp.range".into(), "10.77.1.50-10.77.1.60".into());
        ch.insert("dhcp.lease_time".into(), "2h".into());
        assert_eq!(e.settings(&ch).unwrap(), Effect::Live);
        let (n, text) = e.validate().unwrap();
        assert!(text.contains("# my box") && text.contains("# the box"));
        assert_eq!(n.dhcp_range.0.to_string(), "10.77.1.50");
        commit(&path, &text).unwrap();
        assert_eq!(Config::load(&path).unwrap().lease_time.as_secs(), 7200);

        let mut e = Edit::open(&c).unwrap();
        let mut ch = serde_json::Map::new();
        ch.insert("mesh.listen_port".into(), 51999.into());
        ch.insert("dhcp.range".into(), "10.77.1.200-10.77.1.100".into());
        assert_eq!(e.settings(&ch).unwrap(), Effect::Restart);
        let err = e.validate().unwrap_err();
        assert_eq!(
            (err.status, err.field.as_deref()),
            (422, Some("dhcp.range"))
        );

        let mut e = Edit::open(&c).unwrap();
        let mut ch = serde_json::Map::new();
        ch.insert("mesh.private_key".into(), "x".into());
        assert_eq!(
            e.settings(&ch).unwrap_err().field.as_deref(),
            Some("mesh.private_key")
        );
        let mut ch = serde_json::Map::new();
        ch.insert("routing.exit_node".into(), "yes".into());
        assert_eq!(e.settings(&ch).unwrap_err().status, 422);
    }

    #[test]
    fn peers_and_devices_round_trip() {
        let (_, c) = setup();
        let mut e = Edit::open(&c).unwrap();
        let k = meshbridge_mesh::PrivateKey::generate()
            .public_key()
            .to_string();
        e.add_peer(
            "phone",
            &k,
            "E3r8uqQfJz3jLNcCRvXEHcOJ1WGuYfN4yVZC2Ba5hl0=",
            &["10.77.0.3/32".into()],
        )
        .unwrap();
        assert!(e.set_peer_enabled("laptop", false).unwrap());
        assert!(!e.set_peer_enabled("nobody", false).unwrap());
        let mac = Mac([2, 0, 0, 0, 0, 9]);
        e.set_device(
            &mac,
            Some(Some("printer")),
            Some(Some("10.77.1.150".parse().unwrap())),
        )
        .unwrap();
        let (n, _) = e.validate().unwrap();
        assert_eq!(n.peers.len(), 2);
        assert!(!n.peers[0].enabled && n.peers[1].enabled);
        assert_eq!(n.device_names, vec![(mac, "printer".to_string())]);
        assert_eq!(n.reservations.len(), 1);
        e.set_device(&mac, Some(None), None).unwrap();
        assert!(e.validate().unwrap().0.device_names.is_empty());
        e.set_device(&mac, None, Some(None)).unwrap();
        assert!(
            !e.text().contains("02:00:00:00:00:09"),
            "empty entry removed"
        );
        // A device's tailnet switch and tags alone make an entry too.
        let tags = vec!["tag:printer".to_string()];
        e.set_device_tailnet(&mac, Some(Some("off")), Some(Some(&tags)))
            .unwrap();
        let (n, _) = e.validate().unwrap();
        assert_eq!(n.device_tailnet_of(&mac), crate::config::DeviceTailnet::Off);
        assert_eq!(n.devices_off_mesh(), vec![mac]);
        assert_eq!(n.device_tags_of(&mac), Some(&tags[..]));
        let other = Mac([2, 0, 0, 0, 0, 8]);
        assert_eq!(
            n.device_tailnet_of(&other),
            crate::config::DeviceTailnet::Behind,
            "no tailnet: behind the box"
        );
        e.set_device_tailnet(&mac, Some(Some("sideways")), None)
            .unwrap();
        let err = e.validate().unwrap_err();
        assert!(
            err.field
                .as_deref()
                .is_some_and(|f| f.ends_with(".tailnet")),
            "{err:?}"
        );
        e.set_device_tailnet(&mac, Some(None), Some(Some(&["printer".to_string()])))
            .unwrap();
        let err = e.validate().unwrap_err();
        assert!(
            err.field.as_deref().is_some_and(|f| f.ends_with(".tags")),
            "{err:?}"
        );
        e.set_device_tailnet(&mac, Some(None), Some(None)).unwrap();
        assert!(
            !e.text().contains("02:00:00:00:00:09"),
            "bare entry removed"
        );
        assert!(e.remove_peer("phone").unwrap());
        assert!(!e.remove_peer("phone").unwrap());
        // Same key twice is caught by validation.
        let dup = c.peers[0].public_key.to_string();
        e.add_peer(
            "again",
            &dup,
            "E3r8uqQfJz3jLNcCRvXEHcOJ1WGuYfN4yVZC2Ba5hl0=",
            &["10.77.0.4/32".into()],
        )
        .unwrap();
        assert_eq!(
            e.validate().unwrap_err().field.as_deref(),
            Some("mesh.peers[1].public_key")
        );
        // A display name is fine (its DNS name is made from it); a name with no
        // letters or digits is refused with its key.
        let mut e = Edit::open(&c).unwrap();
        e.set_device(&mac, Some(Some("Office printer")), None)
            .unwrap();
        assert_eq!(e.validate().unwrap().0.device_names[0].1, "Office printer");
        e.set_device(&mac, Some(Some("!!!")), None).unwrap();
        assert_eq!(
            e.validate().unwrap_err().field.as_deref(),
            Some("dhcp.reservations[0].name")
        );
    }

    #[test]
    fn backup_restores_the_same_box() {
        let (path, c) = setup();
        let b = backup(&c).unwrap();
        assert!(b.contains("private_key = \"yAnz5"));
        let (n, text, key) = restore(&c, &b).unwrap();
        assert!(key.is_none());
        assert_eq!(n.private_key.public_key(), c.private_key.public_key());
        commit(&path, &text).unwrap();
        assert_eq!(Config::load(&path).unwrap().peers.len(), 1);
        let err = restore(&c, "[mesh]\naddress = 1").unwrap_err();
        assert_eq!(err.status, 422);
        let err = restore(&c, "not toml [").unwrap_err();
        assert_eq!(err.field.as_deref(), Some("config"));
    }

    #[test]
    fn restore_cannot_point_files_outside_the_box_folders_nor_echo_them() {
        let (path, c) = setup();
        let before = std::fs::read_to_string(&path).unwrap();
        // A secret outside the config's folder and the state dir.
        let secret_dir = std::env::temp_dir().join(format!("mb-secret-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&secret_dir).unwrap();
        let secret = secret_dir.join("shadow");
        std::fs::write(&secret, "root:$y$SECRET-HASH-LINE:19000:0:99999:7:::\n").unwrap();
        for (key, line) in [
            (
                "mesh.wireguard_config",
                format!("wireguard_config = {:?}", secret.display().to_string()),
            ),
            (
                "mesh.private_key_file",
                format!("private_key_file = {:?}", secret.display().to_string()),
            ),
        ] {
            let text =
                format!("[mesh]\n{line}\naddress = \"10.77.0.1/24\"\n[bridge]\nports = []\n");
            let err = restore(&c, &text).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(key), "{}", err.error);
            assert!(!err.error.contains("SECRET"), "{}", err.error);
        }
        let err = restore(
            &c,
            &backup(&c)
                .unwrap()
                .replace("[mesh]", "[api]\nsocket = \"/tmp/elsewhere.sock\"\n[mesh]"),
        )
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("api.socket"));
        let err = restore(
            &c,
            &backup(&c)
                .unwrap()
                .replace("state_dir = ", "state_dir = \"/etc\"\n#"),
        )
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("state_dir"));
        // A file the box may name, holding something that is not wg-quick:
        // the error names the line, never its text.
        let inside = path.parent().unwrap().join("wg0.conf");
        std::fs::write(&inside, "root:$y$SECRET-HASH-LINE:19000:0:99999:7:::\n").unwrap();
        let text = "[mesh]\nwireguard_config = \"wg0.conf\"\n[bridge]\nports = []\n";
        let err = restore(&c, text).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("mesh.wireguard_config"));
        assert!(
            !err.error.contains("SECRET") && err.error.contains("line 1"),
            "{}",
            err.error
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
        std::fs::remove_dir_all(&secret_dir).unwrap();
    }

    #[test]
    fn edits_refuse_line_breaks_in_generated_values() {
        let (_path, c) = setup();
        let mut e = Edit::open(&c).unwrap();
        let mut ch = serde_json::Map::new();
        ch.insert(
            "mesh.endpoint".into(),
            "vpn.example.org\nPostUp=id:51820".into(),
        );
        e.settings(&ch).unwrap();
        assert_eq!(
            e.validate().unwrap_err().field.as_deref(),
            Some("mesh.endpoint")
        );
        let mut e = Edit::open(&c).unwrap();
        e.add_peer(
            "evil\n[Peer]",
            "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=",
            "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=",
            &["10.77.0.9/32".into()],
        )
        .unwrap();
        assert_eq!(
            e.validate().unwrap_err().field.as_deref(),
            Some("mesh.peers[1].name")
        );
        let mut e = Edit::open(&c).unwrap();
        let mac: Mac = "02:00:00:00:00:09".parse().unwrap();
        e.set_device(&mac, Some(Some("tv\r\nfake log line")), None)
            .unwrap();
        assert_eq!(
            e.validate().unwrap_err().field.as_deref(),
            Some("dhcp.reservations[0].name")
        );
        // A device may not be named after the box, a well-known name or a peer.
        for n in ["meshbridge", "WPAD", "laptop"] {
            let mut e = Edit::open(&c).unwrap();
            e.set_device(&mac, Some(Some(n)), None).unwrap();
            assert_eq!(
                e.validate().unwrap_err().field.as_deref(),
                Some("dhcp.reservations[0].name"),
                "{n}"
            );
        }
    }
}
