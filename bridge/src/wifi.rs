//! The Wi-Fi access point as a port of the box's bridge (`[wifi]`).
//!
//! A task supervises Debian's hostapd: it writes hostapd's config (0600,
//! `<state_dir>/wifi/hostapd.conf`, with `bridge=` the box's bridge, so
//! hostapd adds the interface to the bridge and Wi-Fi clients take their
//! lease from the box's DHCP), runs hostapd in the foreground, starts it
//! again with a growing delay when it stops, and stops it on shutdown.
//! Clients are read from hostapd's control socket (`STA-FIRST`/`STA-NEXT`).
//!
//! **One radio, AP and station** (a Pi whose Wi-Fi is also its uplink):
//! when `routing.uplink` is a Wi-Fi station on the AP's radio, the AP runs
//! on the station's channel (`iw dev <uplink> info`). A radio with one
//! channel cannot keep the AP on its channel while the station looks for
//! its network on another, so while the station is not connected the AP is
//! down; when it is connected again (on any channel) the AP comes back on
//! that channel. If the AP's interface does not exist, it is created on the
//! station's radio (`iw dev <uplink> interface add <ap> type __ap`) and
//! removed on shutdown.
//!
//! **OpenWrt** runs its own hostapd from `/etc/config/wireless`: the box
//! writes `uci` commands for a `wifi-iface` in its bridge
//! (`<state_dir>/wifi/openwrt-wireless.sh`, 0600) and does not run hostapd.
//!
//! The passphrase is only ever in those two files: never logged, never in
//! the status or the settings the API returns.

use crate::config::{Config, Wifi as WifiConfig};
use crate::wifi_conf::{
    ap_mac, hostapd_conf, openwrt_uci, parse_iw_info, parse_sta, Backoff, IwInfo,
};
use meshbridge_web::proto::{DeviceStatus, WifiClient, WifiStatus};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{oneshot, watch};

/// How often clients and the uplink's channel are read.
const TICK: Duration = Duration::from_secs(2);
/// How long hostapd gets to take the interface out of the bridge.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// What the task runs: the `[wifi]` settings and what they depend on.
#[derive(Debug, Clone, PartialEq)]
struct Job {
    wifi: WifiConfig,
    bridge: String,
    dir: PathBuf,
    uplink: Option<String>,
    openwrt: bool,
}

impl Job {
    fn of(config: &Config, openwrt: bool) -> Option<Job> {
        config.wifi.clone().map(|wifi| Job {
            wifi,
            bridge: config.bridge_name.clone(),
            dir: dir(&config.state_dir),
            uplink: config.routing.uplink.clone(),
            openwrt,
        })
    }
    fn conf(&self) -> PathBuf {
        self.dir.join("hostapd.conf")
    }
    fn ctrl(&self) -> PathBuf {
        self.dir.join("ctrl")
    }
}

/// Where the Wi-Fi files live.
fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("wifi")
}

static STATUS: Mutex<Option<WifiStatus>> = Mutex::new(None);
/// The settings channel: whether the board is OpenWrt, and the job.
type Settings = (bool, Option<Job>);
static SETTINGS: Mutex<Option<watch::Sender<Settings>>> = Mutex::new(None);

fn set_status(f: impl FnOnce(&mut WifiStatus)) {
    let mut s = STATUS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = s.as_mut() {
        f(s);
    }
}

/// The access point's status for `meshbridge status` and the page, with
/// each client's address and name from the box's leases (`devices`).
pub fn status(devices: &[DeviceStatus]) -> Option<WifiStatus> {
    let mut s = STATUS.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
    for c in &mut s.clients {
        if let Some(d) = devices.iter().find(|d| d.mac.to_string() == c.mac) {
            c.ip = Some(d.ip.clone());
            c.name = d.name.clone().or_else(|| d.hostname.clone());
        }
    }
    Some(s)
}

/// The Wi-Fi section of `meshbridge status`.
pub fn render(w: &WifiStatus) -> String {
    let mut out = format!(
        "\n# Wi-Fi: {} {:?} on {}, channel {}, {}",
        w.state, w.ssid, w.interface, w.channel, w.security
    );
    if let Some(f) = &w.follows {
        out += &format!(", follows the uplink {f}");
    }
    out += &format!(", {} client(s)\n", w.clients.len());
    if let Some(e) = &w.error {
        out += &format!("# Last error: {e}\n");
    }
    for c in &w.clients {
        out += &format!(
            "#   {}  {}  {}  {}{}\n",
            c.mac,
            c.ip.as_deref().unwrap_or("-"),
            c.name.as_deref().unwrap_or("-"),
            c.signal_dbm.map_or("-".into(), |s| format!("{s} dBm")),
            if c.authorized {
                ""
            } else {
                "  (not authorized)"
            }
        );
    }
    out
}

/// Apply changed `[wifi]` settings (from the page) to the running task:
/// hostapd is started again with them.
pub fn reconfigure(config: &Config) {
    if let Some(tx) = SETTINGS.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        tx.send_if_modified(|(openwrt, j)| {
            let new = Job::of(config, *openwrt);
            if *j != new {
                *j = new;
                true
            } else {
                false
            }
        });
    }
}

/// The running supervisor.
pub struct Wifi {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Wifi {
    /// Start the supervisor (after the bridge exists). Without `[wifi]` it
    /// waits: settings from the page can add the access point later.
    pub fn start(config: &Config, board: &str) -> Wifi {
        let openwrt = board.starts_with("OpenWrt");
        remove_leftovers(&config.state_dir);
        let (tx, rx) = watch::channel((openwrt, Job::of(config, openwrt)));
        *SETTINGS.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(supervise(rx, stop_rx));
        Wifi {
            stop: Some(stop),
            task,
        }
    }

    /// Stop hostapd and remove what was set up for it.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
        *SETTINGS.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *STATUS.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Why hostapd was stopped.
enum Outcome {
    Died(String),
    Reconfigure,
    UplinkLost,
    Channel(u16),
    Stop,
}

async fn iw_info(dev: &str) -> Option<IwInfo> {
    let out = tokio::process::Command::new("iw")
        .args(["dev", dev, "info"])
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| parse_iw_info(&String::from_utf8_lossy(&out.stdout)))
}

/// The uplink station the AP shares a radio with, creating the AP's
/// interface on that radio if it does not exist. `Err`: the interface is
/// missing and cannot be made.
async fn prepare(job: &Job) -> Result<Option<String>, String> {
    let sta = match &job.uplink {
        Some(u) => iw_info(u).await.filter(|i| i.iftype == "managed"),
        None => None,
    };
    let ap = iw_info(&job.wifi.interface).await;
    match (ap, sta) {
        (Some(ap), Some(sta)) if ap.wiphy.is_some() && ap.wiphy == sta.wiphy => {
            Ok(job.uplink.clone())
        }
        (Some(_), _) => Ok(None),
        (None, Some(sta)) => {
            let uplink = job.uplink.as_deref().unwrap_or_default();
            let mut args = vec![
                "dev",
                uplink,
                "interface",
                "add",
                &job.wifi.interface,
                "type",
                "__ap",
            ];
            let addr = sta.addr.map(|a| ap_mac(a).to_string());
            if let Some(a) = &addr {
                args.extend(["addr", a.as_str()]);
            }
            let out = tokio::process::Command::new("iw")
                .args(&args)
                .output()
                .await
                .map_err(|e| format!("running iw: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "{} does not exist and cannot be added to {uplink}'s radio: {}",
                    job.wifi.interface,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            let _ = crate::persist::write_atomic(
                &job.dir.join("created-interface"),
                job.wifi.interface.as_bytes(),
            );
            tracing::info!(
                "wifi: created {} on the radio of the uplink {uplink}",
                job.wifi.interface
            );
            Ok(job.uplink.clone())
        }
        (None, None) => Err(format!(
            "Wi-Fi interface {} not found (`iw dev` lists the radios' interfaces)",
            job.wifi.interface
        )),
    }
}

/// Wait for the next settings, or the stop. `true`: stop.
async fn idle(
    rx: &mut watch::Receiver<Settings>,
    stop: &mut oneshot::Receiver<()>,
    limit: Option<Duration>,
) -> bool {
    let sleep = async {
        match limit {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = rx.changed() => r.is_err(),
        _ = stop => true,
        _ = sleep => false,
    }
}

async fn supervise(mut rx: watch::Receiver<Settings>, mut stop: oneshot::Receiver<()>) {
    let mut backoff = Backoff::default();
    let mut restarts = 0u32;
    let mut last_job: Option<Job> = None;
    loop {
        let job = rx.borrow_and_update().1.clone();
        let Some(job) = job else {
            *STATUS.lock().unwrap_or_else(|e| e.into_inner()) = None;
            if idle(&mut rx, &mut stop, None).await {
                break;
            }
            continue;
        };
        STATUS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(|| WifiStatus {
                state: "starting".into(),
                ..Default::default()
            });
        if last_job.as_ref() != Some(&job) {
            backoff = Backoff::default();
            last_job = Some(job.clone());
        }
        set_status(|s| {
            s.interface = job.wifi.interface.clone();
            s.ssid = job.wifi.ssid.clone();
            s.security = job.wifi.security.word().into();
            s.channel = job.wifi.channel;
            s.clients.clear();
        });
        if !job.wifi.enabled {
            set_status(|s| s.state = "off".into());
            if idle(&mut rx, &mut stop, None).await {
                break;
            }
            continue;
        }
        if job.openwrt {
            let path = job.dir.join("openwrt-wireless.sh");
            let r = crate::persist::write_private(
                &path,
                openwrt_uci(&job.wifi, &job.bridge).as_bytes(),
            );
            match r {
                Ok(()) => {
                    tracing::info!("wifi: OpenWrt serves the access point from /etc/config/wireless; to add it in the bridge {}, run `sh {}` once (docs/wifi.md)", job.bridge, path.display());
                    set_status(|s| {
                        s.state = "openwrt".into();
                        s.error = None;
                    });
                }
                Err(e) => set_status(|s| {
                    s.state = "failed".into();
                    s.error = Some(format!("{e:#}"));
                }),
            }
            if idle(&mut rx, &mut stop, None).await {
                break;
            }
            continue;
        }
        let follows = match prepare(&job).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("wifi: {e}; trying again");
                set_status(|s| {
                    s.state = "failed".into();
                    s.error = Some(e);
                });
                if idle(&mut rx, &mut stop, Some(Duration::from_secs(10))).await {
                    break;
                }
                continue;
            }
        };
        set_status(|s| s.follows = follows.clone());
        let channel = match &follows {
            Some(sta) => match iw_info(sta).await.and_then(|i| i.channel) {
                Some(c) => c,
                None => {
                    set_status(|s| {
                        s.state = "waiting-for-uplink".into();
                        s.error = None;
                    });
                    if idle(&mut rx, &mut stop, Some(TICK)).await {
                        break;
                    }
                    continue;
                }
            },
            None => job.wifi.channel,
        };
        let started = Instant::now();
        let outcome = run_once(&job, channel, follows.as_deref(), &mut rx, &mut stop).await;
        match outcome {
            Outcome::Stop => break,
            Outcome::Reconfigure => {
                tracing::info!("wifi: settings changed; starting the access point again");
            }
            Outcome::UplinkLost => {
                tracing::info!("wifi: the uplink station lost its network; the access point waits for it (one radio, one channel)");
                set_status(|s| s.state = "waiting-for-uplink".into());
            }
            Outcome::Channel(c) => {
                tracing::info!("wifi: the uplink moved to channel {c}; the access point follows");
            }
            Outcome::Died(why) => {
                restarts += 1;
                let wait = backoff.next(started.elapsed());
                tracing::warn!("wifi: hostapd stopped ({why}); starting it again in {wait:?}");
                set_status(|s| {
                    s.state = "restarting".into();
                    s.error = Some(format!("hostapd stopped: {why}"));
                    s.restarts = restarts;
                    s.clients.clear();
                });
                if idle(&mut rx, &mut stop, Some(wait)).await {
                    break;
                }
            }
        }
    }
    if let Some(job) = last_job {
        remove_files(&job.dir);
        remove_created_interface(&job.dir);
    }
}

/// Run hostapd once on `channel`, until it stops or must be restarted.
async fn run_once(
    job: &Job,
    channel: u16,
    follows: Option<&str>,
    rx: &mut watch::Receiver<Settings>,
    stop: &mut oneshot::Receiver<()>,
) -> Outcome {
    let ctrl = job.ctrl();
    let text = hostapd_conf(&job.wifi, &job.bridge, &ctrl.display().to_string(), channel);
    if let Err(e) = crate::persist::write_private(&job.conf(), text.as_bytes()) {
        return Outcome::Died(format!("writing its config: {e:#}"));
    }
    let mut child = match tokio::process::Command::new("hostapd")
        .arg(job.conf())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Outcome::Died(format!("cannot run hostapd (is it installed?): {e}")),
    };
    if let Some(pid) = child.id() {
        let _ =
            crate::persist::write_atomic(&job.dir.join("hostapd.pid"), pid.to_string().as_bytes());
    }
    tracing::info!(
        "wifi: starting hostapd on {} (channel {channel}, in bridge {})",
        job.wifi.interface,
        job.bridge
    );
    set_status(|s| {
        s.state = "starting".into();
        s.channel = channel;
        s.error = None;
    });
    let mut out = child
        .stdout
        .take()
        .map(|o| tokio::io::BufReader::new(o).lines());
    let mut err = child
        .stderr
        .take()
        .map(|o| tokio::io::BufReader::new(o).lines());
    let mut last_line = String::new();
    // Every half second until hostapd is up, then every TICK.
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut was_up = false;
    let outcome = loop {
        tokio::select! {
            r = child.wait() => {
                // What it said last explains why (a bad channel for the country, a busy interface).
                while let Some(Ok(Some(l))) = match out.as_mut() { Some(o) => tokio::time::timeout(Duration::from_millis(100), o.next_line()).await.ok(), None => None } {
                    tracing::debug!("hostapd: {l}");
                    last_line = l;
                }
                let code = r.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                break Outcome::Died(if last_line.is_empty() { code } else { format!("{code}: {last_line}") });
            }
            Some(Ok(Some(l))) = async { match out.as_mut() { Some(o) => Some(o.next_line().await), None => std::future::pending().await } } => {
                tracing::debug!("hostapd: {l}");
                last_line = l;
            }
            Some(Ok(Some(l))) = async { match err.as_mut() { Some(o) => Some(o.next_line().await), None => std::future::pending().await } } => {
                tracing::debug!("hostapd: {l}");
                last_line = l;
            }
            _ = tick.tick() => {
                if let Some(sta) = follows {
                    match iw_info(sta).await.and_then(|i| i.channel) {
                        None => break Outcome::UplinkLost,
                        Some(c) if c != channel => break Outcome::Channel(c),
                        Some(_) => {}
                    }
                }
                let sock = ctrl.join(&job.wifi.interface);
                let polled = tokio::task::spawn_blocking(move || poll_hostapd(&sock)).await.ok().flatten();
                if let Some((up, clients)) = polled {
                    if up && !was_up {
                        tracing::info!("wifi: access point {:?} up on {} channel {channel}", job.wifi.ssid, job.wifi.interface);
                        tick = tokio::time::interval(TICK);
                    }
                    was_up = up;
                    set_status(|s| {
                        s.state = if up { "running" } else { "starting" }.into();
                        s.clients = clients;
                    });
                }
            }
            r = rx.changed() => break if r.is_err() { Outcome::Stop } else { Outcome::Reconfigure },
            _ = &mut *stop => break Outcome::Stop,
        }
    };
    if !matches!(outcome, Outcome::Died(_)) {
        terminate(&mut child).await;
    }
    let _ = std::fs::remove_file(job.dir.join("hostapd.pid"));
    outcome
}

/// SIGTERM (hostapd takes the interface out of the bridge and stops
/// beaconing), then SIGKILL after a grace period.
async fn terminate(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

/// hostapd's state (`STATUS`: `state=ENABLED`) and its stations, over its
/// control socket. `None`: it does not answer (yet).
fn poll_hostapd(sock: &Path) -> Option<(bool, Vec<WifiClient>)> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("meshbridge-wifi-{}-{n}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).ok()?;
    let s = UnixDatagram::bind_addr(&addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.connect(sock).ok()?;
    let mut buf = vec![0u8; 4096];
    let mut ask = |cmd: &str| -> Option<String> {
        s.send(cmd.as_bytes()).ok()?;
        let n = s.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    let st = ask("STATUS")?;
    let up = st.lines().any(|l| l.trim() == "state=ENABLED");
    let mut clients = Vec::new();
    let mut reply = ask("STA-FIRST");
    while let Some(c) = reply.as_deref().and_then(parse_sta) {
        let next = format!("STA-NEXT {}", c.mac);
        clients.push(c);
        if clients.len() >= 256 {
            break;
        }
        reply = ask(&next);
    }
    Some((up, clients))
}

fn remove_files(dir: &Path) {
    let _ = std::fs::remove_file(dir.join("hostapd.conf"));
    let _ = std::fs::remove_file(dir.join("hostapd.pid"));
    let _ = std::fs::remove_dir_all(dir.join("ctrl"));
}

fn remove_created_interface(dir: &Path) {
    let marker = dir.join("created-interface");
    if let Ok(name) = std::fs::read_to_string(&marker) {
        let name = name.trim();
        let ok = std::process::Command::new("iw")
            .args(["dev", name, "del"])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            tracing::info!("wifi: removed {name}");
        }
        let _ = std::fs::remove_file(&marker);
    }
}

/// What a run that did not stop cleanly (a crash, SIGKILL) left: its
/// hostapd (only if that pid still runs hostapd with our config), its
/// files, the AP interface it created. At start and in `--cleanup`.
pub fn remove_leftovers(state_dir: &Path) {
    let dir = dir(state_dir);
    if let Some(pid) = std::fs::read_to_string(dir.join("hostapd.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
    {
        let conf = dir.join("hostapd.conf");
        let ours = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
            let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
            args.first().is_some_and(|a| a.ends_with(b"hostapd"))
                && args
                    .iter()
                    .any(|a| *a == conf.as_os_str().as_encoded_bytes())
        });
        if ours {
            tracing::info!("wifi: stopping the hostapd a previous run left (pid {pid})");
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            let until = Instant::now() + STOP_GRACE;
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(100));
            }
            if Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
    remove_files(&dir);
    remove_created_interface(&dir);
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshbridge_types::Mac;

    #[test]
    fn status_joins_clients_with_their_leases_and_renders_them() {
        *STATUS.lock().unwrap() = Some(WifiStatus {
            state: "running".into(),
            interface: "wlan0".into(),
            ssid: "Home".into(),
            channel: 6,
            security: "wpa2-wpa3".into(),
            clients: vec![
                WifiClient {
                    mac: "02:00:00:00:01:00".into(),
                    signal_dbm: Some(-40),
                    authorized: true,
                    ..Default::default()
                },
                WifiClient {
                    mac: "02:00:00:00:01:01".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        let devices = vec![DeviceStatus {
            mac: Mac([2, 0, 0, 0, 1, 0]),
            ip: "10.77.1.100".into(),
            hostname: Some("chromecast".into()),
            name: None,
            pinned: false,
            active: true,
            expires_in_s: 100,
            last_seen_s: None,
            tailnet: None,
            tags: Vec::new(),
        }];
        let s = status(&devices).unwrap();
        *STATUS.lock().unwrap() = None;
        assert_eq!(s.clients[0].ip.as_deref(), Some("10.77.1.100"));
        assert_eq!(s.clients[0].name.as_deref(), Some("chromecast"));
        assert_eq!(s.clients[1].ip, None, "no lease yet");
        let text = render(&s);
        assert!(
            text.contains("# Wi-Fi: running \"Home\" on wlan0, channel 6, wpa2-wpa3, 2 client(s)"),
            "{text}"
        );
        assert!(
            text.contains("02:00:00:00:01:00  10.77.1.100  chromecast  -40 dBm\n"),
            "{text}"
        );
        assert!(
            text.contains("02:00:00:00:01:01  -  -  -  (not authorized)"),
            "{text}"
        );
        assert!(status(&devices).is_none(), "no [wifi]: no section");
    }
}
