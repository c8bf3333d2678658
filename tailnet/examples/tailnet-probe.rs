//! tailnet-probe: registers with a tailnet control server and streams the
//! network map, printing it as JSON. A test tool for the control layer.
//!
//! ```text
//! cargo run -p meshbridge-tailnet --example tailnet-probe -- \
//!     --control http://10.99.0.1:8080 --auth-key KEY --state DIR \
//!     [--hostname NAME] [--wait-peers N | --expect-peers N,M,...] [--timeout SECS] [--logout]
//!     [--endpoint IP:PORT]... [--advertise-routes CIDR,...] [--home-derp REGION]
//! ```
//!
//! Without an auth key it prints the login URL (`probe: log in at URL`)
//! and waits for the login. Keys live in `DIR/tailnet-keys.json` (mode 0600): a second run with the
//! same directory is the same node. The probe exits 0 once the map has at
//! least `--wait-peers` peers (default 0: after the first map), or once
//! the peer count has taken the values of `--expect-peers` in that order
//! (a test of the stream's deltas), printing one JSON object on stdout; 1
//! on timeout (after printing what it has); 2 on errors. Progress goes to
//! stderr.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use meshbridge_tailnet::client::{fetch_control_key, ControlClient, ControlUrl};
use meshbridge_tailnet::control::{self, NodeIdentity, RegisterNext};
use meshbridge_tailnet::keys::{MachinePrivate, NodeKeys};
use meshbridge_tailnet::netmap::{Applied, Netmap};
use serde_json::json;

struct Args {
    control: String,
    auth_key: Option<String>,
    state: PathBuf,
    hostname: String,
    wait_peers: usize,
    expect_peers: Vec<usize>,
    timeout: Duration,
    logout: bool,
    endpoints: Vec<std::net::SocketAddr>,
    routes: Vec<ipnet::IpNet>,
    home_derp: u32,
}

fn usage() -> ! {
    eprintln!(
        "usage: tailnet-probe --control http://HOST[:PORT] [--auth-key KEY | --auth-key-file FILE] --state DIR \
         [--hostname NAME] [--wait-peers N | --expect-peers N,M,...] [--timeout SECS] [--logout] \
         [--endpoint IP:PORT]... [--advertise-routes CIDR,...] [--home-derp REGION]"
    );
    std::process::exit(2)
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        control: String::new(),
        auth_key: None,
        state: PathBuf::new(),
        hostname: String::new(),
        wait_peers: 0,
        expect_peers: Vec::new(),
        timeout: Duration::from_secs(30),
        logout: false,
        endpoints: Vec::new(),
        routes: Vec::new(),
        home_derp: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--control" => a.control = val(),
            "--auth-key" => a.auth_key = Some(val()),
            "--auth-key-file" => {
                let p = val();
                let k = std::fs::read_to_string(&p)
                    .with_context(|| format!("reading auth key file {p}"))?;
                a.auth_key = Some(k.trim().to_string());
            }
            "--state" => a.state = PathBuf::from(val()),
            "--hostname" => a.hostname = val(),
            "--wait-peers" => {
                a.wait_peers = val().parse().context("--wait-peers takes a number")?
            }
            "--expect-peers" => {
                a.expect_peers = val()
                    .split(',')
                    .map(|n| n.trim().parse())
                    .collect::<Result<_, _>>()
                    .context("--expect-peers takes numbers like 0,1,0")?
            }
            "--timeout" => {
                a.timeout = Duration::from_secs(val().parse().context("--timeout takes seconds")?)
            }
            "--logout" => a.logout = true,
            "--endpoint" => a
                .endpoints
                .push(val().parse().context("--endpoint takes IP:PORT")?),
            "--advertise-routes" => {
                for r in val().split(',').filter(|r| !r.is_empty()) {
                    a.routes
                        .push(r.trim().parse().context("--advertise-routes takes CIDRs")?);
                }
            }
            "--home-derp" => {
                a.home_derp = val().parse().context("--home-derp takes a region ID")?
            }
            "-h" | "--help" => usage(),
            other => bail!("unknown argument {other:?}"),
        }
    }
    if a.control.is_empty() || a.state.as_os_str().is_empty() {
        usage();
    }
    if a.hostname.is_empty() {
        a.hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "meshbridge".into());
    }
    Ok(a)
}

fn load_or_create_keys(dir: &Path) -> anyhow::Result<NodeKeys> {
    let path = dir.join("tailnet-keys.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            NodeKeys::from_file(&text).with_context(|| format!("reading {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let keys = NodeKeys::generate(&mut rand::rngs::OsRng);
            save_keys(dir, &keys)?;
            eprintln!("probe: new keys in {}", path.display());
            Ok(keys)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn save_keys(dir: &Path, keys: &NodeKeys) -> anyhow::Result<()> {
    let path = dir.join("tailnet-keys.json");
    let tmp = dir.join("tailnet-keys.json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(keys.to_file().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

fn summary(nm: &Netmap, keys: &NodeKeys) -> serde_json::Value {
    let me = nm.self_node();
    json!({
        "self": {
            "id": me.map(|n| n.id),
            "name": me.map(|n| n.name.trim_end_matches('.').to_string()),
            "node_key": keys.node_key.public().to_string(),
            "machine_key": keys.machine_key.public().to_string(),
            "addresses": me.map(|n| n.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>()),
        },
        "peers": nm.peers().iter().map(|p| json!({
            "id": p.id,
            "name": p.name,
            "node_key": p.node_key.to_string(),
            "disco_key": p.disco_key.map(|k| k.to_string()),
            "addresses": p.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "allowed_ips": p.allowed_ips.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "endpoints": p.endpoints.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            "derp_region": p.derp_region,
            "online": p.online,
        })).collect::<Vec<_>>(),
        "derp_regions": nm.derp_regions().map(|r| r.keys().copied().collect::<Vec<_>>()),
        "domain": nm.domain(),
        "packet_filter_rules": nm.packet_filter().map(|f| f.len()),
        "magic_dns": nm.dns_config().map(|d| d.proxied),
        "dns_domains": nm.dns_config().map(|d| d.domains.clone()),
        "stats": { "messages": nm.stats().messages, "keep_alives": nm.stats().keep_alives },
    })
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let url = ControlUrl::parse(&args.control)?;
    let mut keys = load_or_create_keys(&args.state)?;
    let deadline = Instant::now() + args.timeout;
    // https:// control URLs: verified against SSL_CERT_FILE or the
    // system's CA bundle.
    let tls = match url.tls {
        true => Some(meshbridge_tailnet::tls::verified(
            meshbridge_tailnet::tls::roots(None)?,
        )?),
        false => None,
    };
    let control_keys = fetch_control_key(&url, tls.as_ref())
        .await
        .context("fetching the control key (GET /key)")?;
    eprintln!("probe: control key {}", control_keys.public_key);
    let mut client = ControlClient::connect(
        &url,
        tls.as_ref(),
        &keys.machine_key,
        control_keys.public_key,
        MachinePrivate::generate(&mut rand::rngs::OsRng),
    )
    .await
    .context("opening the ts2021 control connection")?;
    eprintln!("probe: noise connection up");

    if args.logout {
        let resp = client
            .register(&control::logout_request(&keys))
            .await
            .context("logout")?;
        eprintln!(
            "probe: logout answered (authorized={}, expired={})",
            resp.machine_authorized, resp.node_key_expired
        );
        keys.registered_with = None;
        save_keys(&args.state, &keys)?;
        return Ok(true);
    }

    let id = NodeIdentity {
        hostname: args.hostname.clone(),
        routes: args.routes.clone(),
        tags: Vec::new(),
        home_derp: args.home_derp,
    };
    let mut req = control::register_request(&keys, &url.url, &id, args.auth_key.as_deref());
    loop {
        eprintln!(
            "probe: register (with auth key: {}, followup: {})",
            req.auth.is_some(),
            !req.followup.is_empty()
        );
        let left = deadline.saturating_duration_since(Instant::now());
        let resp = tokio::time::timeout(left, client.register(&req))
            .await
            .context("timed out waiting for the registration")?
            .context("registering (POST /machine/register)")?;
        match control::after_register(&req, &resp, args.auth_key.as_deref()) {
            RegisterNext::Authorized => break,
            RegisterNext::Retry(r) => req = *r,
            RegisterNext::Login(u) => {
                eprintln!("probe: log in at {u}");
                req = control::followup_request(&req, &u);
            }
            RegisterNext::Refused(why) => bail!("registration refused: {why}"),
            RegisterNext::Expired => bail!("node key expired; run again with an auth key"),
        }
    }
    if keys.registered_with.as_deref() != Some(url.url.as_str()) {
        keys.registered_with = Some(url.url.clone());
        save_keys(&args.state, &keys)?;
    }
    eprintln!("probe: registered as {}", keys.node_key.public());
    if let Some(early) = client.early_payload() {
        eprintln!(
            "probe: early payload, challenge {}",
            early.node_key_challenge.is_some()
        );
    }

    let mut stream = client
        .map_stream(&control::map_request(&keys, &id, &args.endpoints))
        .await
        .context("opening the map stream")?;
    let mut nm = Netmap::new();
    let mut expected = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = match tokio::time::timeout(left, stream.next()).await {
            Err(_) => {
                println!("{}", summary(&nm, &keys));
                eprintln!("probe: timed out with {} peers", nm.peers().len());
                return Ok(false);
            }
            Ok(r) => r.context("reading the map stream")?,
        };
        let Some(msg) = msg else {
            bail!("the server ended the map stream")
        };
        if !msg.keep_alive {
            eprintln!(
                "probe: message: peers {} changed {} removed {} patched {} online {} self {} derp {} filter {} dns {}",
                msg.peers.len(),
                msg.peers_changed.len(),
                msg.peers_removed.len(),
                msg.peers_changed_patch.len(),
                msg.online_change.len(),
                msg.node.is_some(),
                msg.derp_map.is_some(),
                msg.packet_filter.is_some() || msg.packet_filters.is_some(),
                msg.dns_config.is_some(),
            );
        }
        match nm.apply(msg).context("applying a map message")? {
            Applied::KeepAlive => eprintln!("probe: keep-alive"),
            Applied::Updated => {
                let n = nm.peers().len();
                eprintln!("probe: map update, {n} peers");
                let done = if args.expect_peers.is_empty() {
                    n >= args.wait_peers
                } else {
                    if args.expect_peers.get(expected) == Some(&n) {
                        expected += 1;
                    }
                    expected == args.expect_peers.len()
                };
                if done {
                    println!("{}", summary(&nm, &keys));
                    return Ok(true);
                }
            }
        }
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tailnet-probe: {e:#}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(args)) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("tailnet-probe: {e:#}");
            std::process::exit(2);
        }
    }
}
