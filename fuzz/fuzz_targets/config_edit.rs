//! Arbitrary settings from the page (JSON) and arbitrary backups applied to a
//! real config file: a clear error or a valid config, never a panic, and the
//! file itself is never written here.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshbridge::config::Config;
use meshbridge::config_edit::{restore, Edit};
use std::sync::OnceLock;

fn base() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("mb-fuzz-edit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("meshbridge.toml");
        std::fs::write(
            &path,
            r#"state_dir = "/nonexistent"
[mesh]
private_key = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
address = "10.77.0.1/24"
[[mesh.peers]]
name = "laptop"
public_key = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
allowed_ips = ["10.77.0.2/32"]
[bridge]
ports = ["eth0"]
[dhcp]
range = "10.77.1.100-10.77.1.200"
[[dhcp.reservations]]
mac = "02:00:00:00:00:01"
name = "printer"
"#,
        )
        .unwrap();
        Config::load(&path).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    if text.contains("wireguard_config") || text.contains("private_key_file") {
        return;
    }
    let c = base();
    match which % 3 {
        0 => {
            let Ok(serde_json::Value::Object(changes)) = serde_json::from_str(text) else { return };
            let mut e = Edit::open(c).unwrap();
            if e.settings(&changes).is_ok() {
                let _ = e.validate();
            }
        }
        1 => {
            let _ = restore(c, text);
        }
        _ => {
            // Peer and device edits with fuzzed names and addresses.
            let mut e = Edit::open(c).unwrap();
            let mut parts = text.splitn(3, '\n');
            let name = parts.next().unwrap_or("");
            let ip = parts.next().unwrap_or("");
            let _ = e.add_peer(name, "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=", "E3r8uqQfJz3jLNcCRvXEHcOJ1WGuYfN4yVZC2Ba5hl0=", &[ip.to_string()]);
            let _ = e.set_peer_enabled(name, false);
            let _ = e.set_device(&meshbridge_dhcp::Mac([2, 0, 0, 0, 0, 1]), Some(Some(name)), ip.parse().ok().map(Some));
            let _ = e.validate();
            let _ = e.remove_peer(name);
        }
    }
});
