//! The local API over a unix socket (mode 0600, root only) that the CLI uses:
//! one JSON request line in ([`Request`]), one JSON line out (`{"ok": ...}`
//! or a [`Failure`]). The web page sends the same requests over a channel.

use crate::config::Config;
use crate::health;
use crate::host::proc::HostFacts;
use anyhow::{anyhow, bail, Context, Result};
use meshbridge_engine::Engine;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

pub use crate::config::default_socket;

pub use meshbridge_web::proto::{
    check_auth_key, BoxStatus, DeviceStatus, Failure, Health, PeerStatus, Pending, Reply, Request,
    SecretText, Status, TailnetState, TailnetStatus, WireReply,
};

/// `host:port` clients reach the box at: `mesh.endpoint`, else the address
/// the box would send to the internet from (unless that is a mesh address).
pub fn endpoint(config: &Config, host: &HostFacts) -> Option<String> {
    if let Some(e) = &config.endpoint {
        return Some(e.clone());
    }
    let a = host.source_v4?;
    (!config.mesh_address.contains(&a))
        .then(|| std::net::SocketAddr::new(a.into(), config.listen_port).to_string())
}

/// What the status is built from besides the config and the engine.
#[derive(Clone, Copy, Debug)]
pub struct StatusInput<'a> {
    /// When the daemon started.
    pub started: Instant,
    /// The board's name.
    pub board: &'a str,
    /// Saved settings wait for a restart.
    pub restart_pending: bool,
    /// Host facts, cached off the event loop.
    pub host: &'a HostFacts,
    /// Wall clock now.
    pub now: SystemTime,
    /// Monotonic clock now.
    pub mono: Instant,
}

/// The health checks' input from the running daemon.
pub fn health_facts<'a>(
    config: &'a Config,
    engine: &Engine,
    host: &'a HostFacts,
    now: SystemTime,
    restart_pending: bool,
) -> health::Facts<'a> {
    health::Facts {
        bridge_name: &config.bridge_name,
        dhcp_suspended: engine.dhcp().is_suspended(),
        dhcp_foreign_server: engine
            .dhcp()
            .foreign_server()
            .map(|(ip, mac)| format!("{ip} (MAC {mac})")),
        dhcp_enabled: config.dhcp_enabled,
        needs_forwarding: config.routing.needs_forwarding(),
        host,
        now,
        restart_pending,
    }
}

/// Build the status from the running engine (no I/O: the host facts are
/// passed in).
pub fn status(config: &Config, engine: &Engine, input: StatusInput<'_>) -> Status {
    let StatusInput {
        started,
        board,
        restart_pending,
        host,
        now,
        mono,
    } = input;
    let mut peers: Vec<PeerStatus> = engine
        .mesh()
        .peer_status()
        .into_iter()
        .map(|p| PeerStatus {
            online: health::online(p.last_handshake),
            last_handshake_s: p.last_handshake.map(|d| d.as_secs()),
            name: p.name,
            public_key: p.public_key.to_string(),
            endpoint: p.endpoint.map(|e| e.to_string()),
            allowed_ips: p.allowed_ips.iter().map(|n| n.to_string()).collect(),
            rx_bytes: p.rx_bytes,
            tx_bytes: p.tx_bytes,
            enabled: true,
        })
        .collect();
    for p in config.peers.iter().filter(|p| !p.enabled) {
        peers.push(PeerStatus {
            name: p.name.clone(),
            public_key: p.public_key.to_string(),
            endpoint: None,
            allowed_ips: p.allowed_ips.iter().map(|n| n.to_string()).collect(),
            last_handshake_s: None,
            online: false,
            rx_bytes: 0,
            tx_bytes: 0,
            enabled: false,
        });
    }
    let name_of = |mac: &meshbridge_types::Mac| {
        config
            .device_names
            .iter()
            .find(|(m, _)| m == mac)
            .map(|(_, n)| n.clone())
    };
    let switch_of = |mac: &meshbridge_types::Mac| {
        (config.tailnet.is_some() || config.device_tailnet.iter().any(|(m, _)| m == mac))
            .then(|| config.device_tailnet_of(mac).as_str().to_string())
    };
    let tags_of = |mac: &meshbridge_types::Mac| {
        config
            .device_tags_of(mac)
            .map(<[String]>::to_vec)
            .unwrap_or_default()
    };
    let mut devices: Vec<DeviceStatus> = engine
        .dhcp()
        .leases()
        .map(|l| DeviceStatus {
            mac: l.mac,
            ip: l.ip.to_string(),
            hostname: l.hostname.clone(),
            name: name_of(&l.mac),
            pinned: config.reservations.iter().any(|(m, _)| *m == l.mac),
            active: l.is_active(now),
            expires_in_s: match l.expires.duration_since(now) {
                Ok(d) => d.as_secs() as i64,
                Err(e) => -(e.duration().as_secs() as i64),
            },
            last_seen_s: engine
                .last_seen(&l.mac)
                .map(|t| mono.saturating_duration_since(t).as_secs()),
            tailnet: switch_of(&l.mac),
            tags: tags_of(&l.mac),
        })
        .collect();
    // Pinned, named or switched devices without a lease (yet, or since a
    // switch took their node's address back).
    let mut listed: Vec<meshbridge_types::Mac> = Vec::new();
    let entries = config
        .reservations
        .iter()
        .map(|(m, _)| *m)
        .chain(config.device_names.iter().map(|(m, _)| *m))
        .chain(config.device_tailnet.iter().map(|(m, _)| *m));
    for mac in entries {
        if listed.contains(&mac) {
            continue;
        }
        listed.push(mac);
        if !engine.dhcp().leases().any(|l| l.mac == mac) {
            let reserved = config.reservations.iter().find(|(m, _)| *m == mac);
            let mac = &mac;
            devices.push(DeviceStatus {
                mac: *mac,
                ip: reserved.map(|(_, ip)| ip.to_string()).unwrap_or_default(),
                hostname: None,
                name: name_of(mac),
                pinned: reserved.is_some(),
                active: false,
                expires_in_s: 0,
                last_seen_s: None,
                tailnet: switch_of(mac),
                tags: tags_of(mac),
            });
        }
    }
    let mut health = health::checks(&health_facts(config, engine, host, now, restart_pending));
    health.extend(crate::faults::checks(&crate::faults::current()));
    Status {
        this: BoxStatus {
            version: env!("CARGO_PKG_VERSION").into(),
            public_key: config.private_key.public_key().to_string(),
            mesh_address: config.mesh_address.to_string(),
            bridge_address: config.bridge_address.to_string(),
            bridge: config.bridge_name.clone(),
            listen_port: config.listen_port,
            uptime_s: mono.saturating_duration_since(started).as_secs(),
            board: board.to_string(),
            hostname: host.hostname.clone(),
            domain: config.domain.clone(),
            endpoint: endpoint(config, host),
        },
        peers,
        devices,
        health,
        tailnet: None,
        wifi: None,
        discovery_remotes: Vec::new(),
    }
}

/// Listen on `path`; requests arrive on the returned channel (the main loop
/// owns the engine and answers them).
pub fn listen(path: &Path, tx: mpsc::Sender<Pending>) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing a stale {}", path.display())),
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding the API socket {}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), serve(stream, tx)).await;
            });
        }
    });
    Ok(())
}

async fn serve(stream: UnixStream, tx: mpsc::Sender<Pending>) -> Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    BufReader::new(r.take(64 * 1024))
        .read_line(&mut line)
        .await?;
    let response: WireReply = match serde_json::from_str::<Request>(&line) {
        Ok(request) => {
            let (reply, answer) = oneshot::channel();
            tx.send(Pending { request, reply })
                .await
                .map_err(|_| anyhow!("daemon stopping"))?;
            answer.await?.into()
        }
        Err(e) => WireReply::Err(Failure::new(400, format!("bad request: {e}"))),
    };
    let mut out = serde_json::to_string(&response)?;
    out.push('\n');
    w.write_all(out.as_bytes()).await?;
    Ok(())
}

/// Ask the daemon at `path`.
pub async fn ask(path: &Path, request: &Request) -> Result<Reply> {
    let stream = UnixStream::connect(path).await.with_context(|| {
        format!(
            "connecting to {} (is meshbridge running? are you root?)",
            path.display()
        )
    })?;
    let (r, mut w) = stream.into_split();
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    w.write_all(line.as_bytes()).await?;
    let mut answer = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(r).read_line(&mut answer),
    )
    .await
    .context("the daemon did not answer")??;
    if answer.is_empty() {
        bail!("the daemon closed the connection");
    }
    let wire: WireReply = serde_json::from_str(&answer).context("reading the daemon's answer")?;
    Ok(wire.into())
}

fn ago(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        _ => format!("{}h ago", s / 3600),
    }
}

fn bytes(b: u64) -> String {
    match b {
        0..=1023 => format!("{b} B"),
        1024..=1_048_575 => format!("{:.1} KiB", b as f64 / 1024.0),
        _ => format!("{:.1} MiB", b as f64 / 1_048_576.0),
    }
}

fn first_host(ips: &[String]) -> String {
    ips.iter()
        .find(|n| n.ends_with("/32") || n.ends_with("/128"))
        .or(ips.first())
        .map(|n| n.split('/').next().unwrap_or(n).to_string())
        .unwrap_or_else(|| "-".into())
}

/// The human table, like `tailscale status`.
pub fn render(s: &Status) -> String {
    let mut rows: Vec<[String; 4]> = Vec::new();
    rows.push([
        s.this.mesh_address.split('/').next().unwrap_or("").into(),
        "meshbridge".into(),
        "this box".into(),
        format!(
            "bridge {} ({}), UDP {}, up {}",
            s.this.bridge,
            s.this.bridge_address,
            s.this.listen_port,
            ago(s.this.uptime_s).trim_end_matches(" ago")
        ),
    ]);
    for p in &s.peers {
        let state = match (p.online, p.last_handshake_s) {
            (true, Some(h)) => format!(
                "online, handshake {}, rx {}, tx {}",
                ago(h),
                bytes(p.rx_bytes),
                bytes(p.tx_bytes)
            ),
            (false, Some(h)) => format!("offline, last handshake {}", ago(h)),
            (_, None) => "offline, no handshake yet".into(),
        };
        rows.push([
            first_host(&p.allowed_ips),
            p.name.clone(),
            format!("peer {}", p.endpoint.as_deref().unwrap_or("(no endpoint)")),
            state,
        ]);
    }
    for r in &s.discovery_remotes {
        rows.push([
            r.server.clone(),
            r.name.clone(),
            format!("discovery remote ({}) {}", r.source, r.domain),
            format!(
                "{} service(s), {} of {} queries answered",
                r.services, r.replies, r.queries
            ),
        ]);
    }
    for d in s.devices.iter().filter(|d| d.active) {
        rows.push([
            d.ip.clone(),
            d.hostname.clone().unwrap_or_else(|| "-".into()),
            format!("device {}", d.mac),
            format!(
                "bridged, lease expires in {}",
                ago(d.expires_in_s.max(0) as u64).trim_end_matches(" ago")
            ),
        ]);
    }
    let widths: Vec<usize> = (0..3)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        out += &format!(
            "{:w0$}  {:w1$}  {:w2$}  {}\n",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    }
    if let Some(t) = &s.tailnet {
        out += &render_tailnet(t);
    }
    if let Some(w) = &s.wifi {
        out += &crate::wifi::render(w);
    }
    for h in s.health.iter().filter(|h| !h.ok) {
        out += &format!("\n# Health check {}: {}\n", h.check, h.message);
    }
    out
}

/// The tailnet section of the human status.
pub fn render_tailnet(t: &TailnetStatus) -> String {
    let mut out = format!("\n# Tailnet: {} ({})\n", t.state.words(), t.control_url);
    if let Some(u) = &t.login_url {
        out += &format!("# To log in, open: {u}\n");
    }
    if let Some(e) = &t.error {
        out += &format!("# Last error: {e}\n");
    }
    if t.state == TailnetState::LoggedOut {
        out += "# Join again: `meshbridge tailnet login [--auth-key-file PATH]` (or restart meshbridge).\n";
    }
    if !t.addresses.is_empty() || t.name.is_some() {
        out += &format!(
            "# This box: {} [{}]\n",
            t.name.as_deref().unwrap_or(&t.hostname),
            t.addresses.join(", ")
        );
    }
    out += &format!(
        "# Packet filter: {} packet(s) from peers denied, {} flow(s) tracked\n",
        t.filter_denied, t.filter_flows
    );
    if let Some(h) = t.derp_home {
        let code = t
            .derp_regions
            .iter()
            .find(|r| r.id == h)
            .map(|r| format!(" ({})", r.code))
            .filter(|c| c != " ()")
            .unwrap_or_default();
        out += &format!("# Home DERP region: {h}{code}\n");
    }
    if !t.derp_regions.is_empty() {
        let regions: Vec<String> = t
            .derp_regions
            .iter()
            .map(|r| match r.latency_ms {
                Some(ms) => format!("{} {ms:.1} ms", r.id),
                None => format!("{} -", r.id),
            })
            .collect();
        out += &format!("# DERP latency: {}\n", regions.join(", "));
    }
    let online = t.peers.iter().filter(|p| p.online == Some(true)).count();
    let direct = t.peers.iter().filter(|p| p.direct.is_some()).count();
    out += &format!(
        "# {} tailnet peer(s), {online} online, {direct} direct\n",
        t.peers.len()
    );
    for p in &t.peers {
        out += &format!(
            "{}  {}  {}  {}\n",
            first_host(&p.addresses),
            p.name,
            match p.online {
                Some(true) => "online",
                Some(false) => "offline",
                None => "-",
            },
            match &p.direct {
                Some(a) => format!("direct {a}"),
                None => "no direct path".to_string(),
            }
        );
    }
    if !t.devices.is_empty() {
        out += &format!("# {} bridged device(s) as tailnet nodes\n", t.devices.len());
        for d in &t.devices {
            out += &format!(
                "{}  {}  {}  {}  {} peer(s), {} online{}\n",
                d.address.as_deref().unwrap_or("-"),
                d.name.as_deref().unwrap_or(&d.hostname),
                d.mac,
                d.state.words(),
                d.peers,
                d.online,
                d.error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra_mesh: &str) -> Config {
        let text = format!(
            "[mesh]\nprivate_key = \"yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\"\naddress = \"10.77.0.1/24\"\nlisten_port = 51999\n{extra_mesh}\n[dhcp]\nrange = \"10.77.1.100-10.77.1.200\"\n"
        );
        Config::from_toml(&text, None).unwrap()
    }

    #[test]
    fn the_tailnet_section_shows_the_login_url_and_the_peers() {
        let mut t = TailnetStatus {
            state: TailnetState::NeedsLogin,
            login_url: Some("http://hs/register/abc".into()),
            control_url: "http://hs".into(),
            hostname: "tbox".into(),
            ..Default::default()
        };
        let text = render_tailnet(&t);
        assert!(text.contains("Tailnet: needs login (http://hs)"), "{text}");
        assert!(text.contains("open: http://hs/register/abc"), "{text}");
        t.state = TailnetState::LoggedIn;
        t.login_url = None;
        t.name = Some("tbox.tailnet.test".into());
        t.addresses = vec!["100.64.0.1/32".into()];
        t.peers = vec![
            meshbridge_web::proto::TailnetPeerStatus {
                name: "laptop.tailnet.test".into(),
                addresses: vec!["100.64.0.2/32".into()],
                online: Some(true),
                direct: Some("10.99.0.20:41641".into()),
            },
            meshbridge_web::proto::TailnetPeerStatus {
                name: "phone.tailnet.test".into(),
                addresses: vec!["100.64.0.3/32".into()],
                online: Some(false),
                direct: None,
            },
        ];
        let text = render_tailnet(&t);
        assert!(text.contains("logged in"), "{text}");
        assert!(!text.contains("register/abc"), "{text}");
        assert!(text.contains("tbox.tailnet.test [100.64.0.1/32]"), "{text}");
        assert!(
            text.contains("2 tailnet peer(s), 1 online, 1 direct"),
            "{text}"
        );
        assert!(
            text.contains("100.64.0.2  laptop.tailnet.test  online  direct 10.99.0.20:41641"),
            "{text}"
        );
        // The JSON names the states in kebab case, for the page and scripts.
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["state"], "logged-in");
        assert!(!text.contains("DERP"), "no map yet: {text}");
        // The home DERP region and each region's latency.
        t.derp_home = Some(901);
        t.derp_regions = vec![
            meshbridge_web::proto::DerpRegionStatus {
                id: 900,
                code: "ta".into(),
                latency_ms: Some(81.25),
            },
            meshbridge_web::proto::DerpRegionStatus {
                id: 901,
                code: "tb".into(),
                latency_ms: Some(0.5),
            },
            meshbridge_web::proto::DerpRegionStatus {
                id: 902,
                code: "tc".into(),
                latency_ms: None,
            },
        ];
        let text = render_tailnet(&t);
        assert!(text.contains("# Home DERP region: 901 (tb)"), "{text}");
        assert!(
            text.contains("# Packet filter: 0 packet(s) from peers denied, 0 flow(s) tracked"),
            "{text}"
        );
        assert!(
            text.contains("# DERP latency: 900 81.2 ms, 901 0.5 ms, 902 -"),
            "{text}"
        );
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["derp_home"], 901);
        assert_eq!(json["derp_regions"][0]["latency_ms"], 81.25);
        assert_eq!(json["derp_regions"][1]["code"], "tb");
    }

    #[test]
    fn endpoint_is_the_setting_else_the_uplink_source_address() {
        let host = HostFacts {
            source_v4: Some("192.168.1.2".parse().unwrap()),
            ..HostFacts::default()
        };
        assert_eq!(
            endpoint(&config(""), &host).as_deref(),
            Some("192.168.1.2:51999")
        );
        let set = config("endpoint = \"vpn.example.org:51820\"");
        assert_eq!(
            endpoint(&set, &host).as_deref(),
            Some("vpn.example.org:51820")
        );
        // No route out, or only through the mesh itself: nothing to offer.
        assert_eq!(endpoint(&config(""), &HostFacts::default()), None);
        let via_mesh = HostFacts {
            source_v4: Some("10.77.0.1".parse().unwrap()),
            ..HostFacts::default()
        };
        assert_eq!(endpoint(&config(""), &via_mesh), None);
    }
}
