//! The box's DERP relays: one TLS connection per region in use (the home
//! region always, a peer's home region on demand), each a task driving the
//! sans-IO [`DerpConn`], and the relay addresses the mesh uses for peers
//! without a direct path.
//!
//! * **Relay addresses.** The mesh only knows UDP endpoints, so a peer
//!   reached over DERP gets a stand-in endpoint `[100::N]:REGION` (N a small
//!   per-peer number, REGION its home DERP region). `100::/64` is the
//!   IPv6 discard prefix (RFC 6666): nothing is ever sent there; the event
//!   loop sends datagrams addressed to it over DERP instead, and feeds
//!   packets received over DERP to the mesh and disco as coming from it.
//!   WireGuard roaming then works unchanged: the mesh answers where the last
//!   authenticated packet came from, relay or direct.
//! * **TLS.** rustls with the ring provider (ring is already linked for
//!   boringtun). A node marked `InsecureForTests` in the DERP map is not
//!   verified (as tailscale's `derphttp` does); any other is verified
//!   against the system's CA bundle (`SSL_CERT_FILE`,
//!   `/etc/ssl/certs/ca-certificates.crt`, … — OpenWrt's `ca-bundle`
//!   package installs the same path). No CA compiled in: it would cost
//!   ~250 KB and age with the firmware.
//! * **Home region.** Chosen by latency ([`meshbridge_tailnet::netcheck`]:
//!   STUN to every region's nodes from the WireGuard socket, the fastest
//!   with hysteresis) among the regions with a DERP (not STUN-only) node,
//!   not marked `Avoid` or `NoMeasureNoHome`; until a measurement answered,
//!   the lowest-numbered such region ([`choose_home`]). The event loop sets
//!   it ([`Derp::set_home`]); the control task reports it as
//!   `Hostinfo.NetInfo.PreferredDERP`.

use meshbridge_tailnet::derp::{DerpConn, DerpEvent};
use meshbridge_tailnet::keys::{NodePrivate, NodePublic};
use meshbridge_tailnet::netcheck::Target;
use meshbridge_tailnet::tailcfg::{DerpNode, DerpRegion};
use rand::RngCore;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Longest wait between two connection attempts to a region.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// TCP + TLS + login must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Packets queued per region while its connection is busy or down.
const QUEUE: usize = 256;

/// The stand-in endpoint for peer number `n` relayed through `region`.
pub fn relay_addr(n: u32, region: u16) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V6(Ipv6Addr::new(
            0x100,
            0,
            0,
            0,
            0,
            0,
            (n >> 16) as u16,
            n as u16,
        )),
        region,
    )
}

/// Whether `a` is a relay stand-in (the discard prefix `100::/64`).
pub fn is_relay(a: &SocketAddr) -> bool {
    match a.ip() {
        IpAddr::V6(v6) => v6.segments()[..4] == [0x100, 0, 0, 0],
        IpAddr::V4(_) => false,
    }
}

/// Stable numbers for peers' relay addresses.
#[derive(Debug, Default)]
pub struct RelayAddrs {
    by_key: HashMap<NodePublic, u32>,
    keys: Vec<NodePublic>,
}

impl RelayAddrs {
    /// The relay address of `key` through `region`.
    pub fn addr_for(&mut self, key: NodePublic, region: u16) -> SocketAddr {
        let n = *self.by_key.entry(key).or_insert_with(|| {
            self.keys.push(key);
            self.keys.len() as u32
        });
        relay_addr(n, region)
    }

    /// The peer and region behind a relay address.
    pub fn peer_of(&self, a: &SocketAddr) -> Option<(NodePublic, u16)> {
        if !is_relay(a) {
            return None;
        }
        let IpAddr::V6(v6) = a.ip() else { return None };
        let s = v6.segments();
        let n = (u32::from(s[6]) << 16) | u32::from(s[7]);
        let key = self.keys.get((n as usize).checked_sub(1)?)?;
        Some((*key, a.port()))
    }
}

/// What the region tasks report to the event loop.
#[derive(Debug)]
pub enum DerpInput {
    /// A packet from a peer, relayed by `region`.
    Packet {
        /// The region it came through.
        region: u16,
        /// The sender's node key.
        src: NodePublic,
        /// WireGuard or disco.
        data: Vec<u8>,
    },
}

struct RegionConn {
    out: mpsc::Sender<(NodePublic, Vec<u8>)>,
    task: tokio::task::JoinHandle<()>,
    node: DerpNode,
}

impl Drop for RegionConn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The DERP side of the box, owned by the event loop.
pub struct Derp {
    ours: NodePrivate,
    regions: BTreeMap<i32, DerpRegion>,
    home: Option<u16>,
    conns: HashMap<u16, RegionConn>,
    tx: mpsc::Sender<DerpInput>,
    rx: mpsc::Receiver<DerpInput>,
    /// Packets for regions not in the map (counted, dropped).
    pub dropped: u64,
}

/// Whether a region may be our home: a DERP (not STUN-only) node, not
/// marked `Avoid` or `NoMeasureNoHome`.
fn home_capable(r: &DerpRegion) -> bool {
    !r.avoid && !r.no_measure_no_home && derp_node(r).is_some()
}

/// The home region of a DERP map before any latency is known: the
/// lowest-numbered region that may be home (see the module docs).
pub fn choose_home(regions: &BTreeMap<i32, DerpRegion>) -> Option<u16> {
    regions
        .iter()
        .filter(|(_, r)| home_capable(r))
        .find_map(|(id, _)| u16::try_from(*id).ok().filter(|id| *id > 0))
}

/// What netcheck measures: the STUN address of every node of every region
/// that may be home.
pub fn netcheck_targets(regions: &BTreeMap<i32, DerpRegion>) -> Vec<Target> {
    let mut out = Vec::new();
    for (id, r) in regions {
        let Some(region) = u16::try_from(*id).ok().filter(|id| *id > 0) else {
            continue;
        };
        if !home_capable(r) {
            continue;
        }
        out.extend(
            r.nodes
                .iter()
                .filter_map(node_stun)
                .map(|addr| Target { region, addr }),
        );
    }
    out
}

fn derp_node(r: &DerpRegion) -> Option<&DerpNode> {
    r.nodes.iter().find(|n| !n.stun_only)
}

impl Derp {
    /// No map yet, no connection.
    pub fn new(ours: NodePrivate) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Derp {
            ours,
            regions: BTreeMap::new(),
            home: None,
            conns: HashMap::new(),
            tx,
            rx,
            dropped: 0,
        }
    }

    /// The home region, once there is a map.
    pub fn home(&self) -> Option<u16> {
        self.home
    }

    /// A new DERP map: drop connections to regions whose node changed or
    /// left, and the home if it left (the caller sets the next one).
    pub fn set_map(&mut self, regions: &BTreeMap<i32, DerpRegion>) {
        if *regions == self.regions {
            return;
        }
        self.regions = regions.clone();
        self.conns.retain(|id, c| {
            regions
                .get(&i32::from(*id))
                .and_then(derp_node)
                .is_some_and(|n| *n == c.node)
        });
        if let Some(h) = self.home {
            if self
                .regions
                .get(&i32::from(h))
                .is_none_or(|r| !home_capable(r))
            {
                self.home = None;
            } else {
                self.connect(h);
            }
        }
    }

    /// The home region (chosen by the caller): connect to it. A new home
    /// reconnects both the old and the new region, so that each server
    /// hears whether it is preferred (`NotePreferred` at login).
    pub fn set_home(&mut self, home: Option<u16>) {
        if home != self.home {
            if let Some(h) = home {
                tracing::info!("tailnet: home DERP region {h}");
            }
            if let Some(old) = self.home {
                self.conns.remove(&old);
            }
            if let Some(new) = home {
                self.conns.remove(&new);
            }
            self.home = home;
        }
        if let Some(h) = self.home {
            self.connect(h);
        }
    }

    fn connect(&mut self, region: u16) -> Option<&RegionConn> {
        if !self.conns.contains_key(&region) {
            let r = self.regions.get(&i32::from(region))?;
            let node = derp_node(r)?.clone();
            let (out, out_rx) = mpsc::channel(QUEUE);
            let task = tokio::spawn(region_task(
                region,
                node.clone(),
                self.ours.clone(),
                Some(region) == self.home,
                out_rx,
                self.tx.clone(),
            ));
            self.conns.insert(region, RegionConn { out, task, node });
        }
        self.conns.get(&region)
    }

    /// Send `data` to peer `dst` through `region` (connecting on demand).
    /// Dropped when the queue is full or the region unknown.
    pub fn send(&mut self, region: u16, dst: NodePublic, data: &[u8]) {
        let ok = match self.connect(region) {
            Some(c) => c.out.try_send((dst, data.to_vec())).is_ok(),
            None => false,
        };
        if !ok {
            self.dropped += 1;
        }
    }

    /// The next packet from any region (cancel-safe).
    pub async fn next(&mut self) -> Option<DerpInput> {
        self.rx.recv().await
    }
}

/// One region, forever: connect, run, back off, again.
async fn region_task(
    region: u16,
    node: DerpNode,
    ours: NodePrivate,
    preferred: bool,
    mut out: mpsc::Receiver<(NodePublic, Vec<u8>)>,
    tx: mpsc::Sender<DerpInput>,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = Instant::now();
        let e = run_once(region, &node, &ours, preferred, &mut out, &tx).await;
        if tx.is_closed() {
            return;
        }
        tracing::warn!(
            "tailnet: DERP region {region} ({}): {e:#}; again in {}s",
            node.host_name,
            backoff.as_secs()
        );
        // What was queued while down is stale.
        while out.try_recv().is_ok() {}
        tokio::time::sleep(backoff).await;
        backoff = if started.elapsed() > MAX_BACKOFF {
            Duration::from_secs(1)
        } else {
            (backoff * 2).min(MAX_BACKOFF)
        };
    }
}

async fn node_addr(node: &DerpNode) -> anyhow::Result<SocketAddr> {
    let port = u16::try_from(node.derp_port)
        .ok()
        .filter(|p| *p > 0)
        .unwrap_or(443);
    if let Ok(ip) = node.ipv4.parse::<std::net::Ipv4Addr>() {
        return Ok(SocketAddr::new(IpAddr::V4(ip), port));
    }
    if let Ok(ip) = node.ipv6.parse::<Ipv6Addr>() {
        return Ok(SocketAddr::new(IpAddr::V6(ip), port));
    }
    tokio::net::lookup_host((node.host_name.as_str(), port))
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{} has no address", node.host_name))
}

/// Connects, logs in and relays until the connection fails.
async fn run_once(
    region: u16,
    node: &DerpNode,
    ours: &NodePrivate,
    preferred: bool,
    out: &mut mpsc::Receiver<(NodePublic, Vec<u8>)>,
    tx: &mpsc::Sender<DerpInput>,
) -> anyhow::Error {
    use anyhow::Context;
    let connect = async {
        let addr = node_addr(node).await?;
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("TCP to {addr}"))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(node.host_name.clone())
            .with_context(|| format!("{:?} is not a TLS server name", node.host_name))?;
        let config = tls_config(node.insecure_for_tests)?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS to {} ({addr})", node.host_name))?;
        anyhow::Ok((addr, tls))
    };
    let (addr, mut tls) = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return e,
        Err(_) => return anyhow::anyhow!("connecting took over {CONNECT_TIMEOUT:?}"),
    };
    let host = match addr.port() {
        443 => node.host_name.clone(),
        p => format!("{}:{p}", node.host_name),
    };
    let mut nonce = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let mut conn = DerpConn::new(Instant::now(), ours.clone(), &host, preferred, nonce);
    let mut buf = vec![0u8; 64 << 10];
    let mut up = false;
    loop {
        while let Some(bytes) = conn.poll_transmit() {
            if let Err(e) = tls.write_all(&bytes).await {
                return anyhow::Error::new(e).context("writing");
            }
        }
        if let Err(e) = tls.flush().await {
            return anyhow::Error::new(e).context("writing");
        }
        while let Some(ev) = conn.poll_event() {
            match ev {
                DerpEvent::Connected { server, .. } => {
                    up = true;
                    tracing::info!(
                        "tailnet: DERP region {region} connected ({addr}, server key {})",
                        server.short()
                    );
                }
                DerpEvent::Packet { src, data } => {
                    if tx
                        .send(DerpInput::Packet { region, src, data })
                        .await
                        .is_err()
                    {
                        return anyhow::anyhow!("the daemon stopped");
                    }
                }
                DerpEvent::PeerGone(k) => {
                    tracing::debug!("tailnet: DERP region {region}: {} is gone", k.short())
                }
                DerpEvent::Health(h) if h.is_empty() => {}
                DerpEvent::Health(h) => tracing::warn!("tailnet: DERP region {region}: {h}"),
                DerpEvent::Restarting(_) => return anyhow::anyhow!("the server is restarting"),
            }
        }
        let deadline = tokio::time::Instant::from_std(conn.poll_timeout());
        tokio::select! {
            r = tls.read(&mut buf) => match r {
                Ok(0) => return anyhow::anyhow!("the server closed the connection"),
                Ok(n) => {
                    if let Err(e) = conn.handle_input(Instant::now(), &buf[..n]) {
                        return e.into();
                    }
                }
                Err(e) => return anyhow::Error::new(e).context("reading"),
            },
            Some((dst, data)) = out.recv(), if up => {
                if let Err(e) = conn.send(&dst, &data) {
                    tracing::debug!("tailnet: DERP send to {}: {e}", dst.short());
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                if let Err(e) = conn.handle_timeout(Instant::now()) {
                    return e.into();
                }
            }
        }
    }
}

/// The TLS configuration ([`meshbridge_tailnet::tls`]): verified against
/// the system's roots, or (for a node marked `InsecureForTests`) not
/// verified. Built once each.
fn tls_config(insecure: bool) -> anyhow::Result<Arc<ClientConfig>> {
    use meshbridge_tailnet::tls;
    static VERIFIED: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    static INSECURE: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    if insecure {
        if let Some(c) = INSECURE.get() {
            return Ok(c.clone());
        }
        let c = tls::insecure_for_tests()?;
        return Ok(INSECURE.get_or_init(|| c).clone());
    }
    if let Some(c) = VERIFIED.get() {
        return Ok(c.clone());
    }
    let roots = tls::roots(None)?;
    tracing::debug!(
        "tailnet: DERP CA certificates from {}",
        roots.sources.join(", ")
    );
    let c = tls::verified(roots)?;
    Ok(VERIFIED.get_or_init(|| c).clone())
}

/// How often the public endpoint is asked for again (tailscale re-STUNs
/// every 20–26 s while active).
pub const STUN_INTERVAL: Duration = Duration::from_secs(23);

/// Learning our public endpoint: a STUN binding request from the WireGuard
/// socket to the home region's STUN port every [`STUN_INTERVAL`]; the
/// answer's mapped address is our endpoint as the internet sees it. Time
/// and the transaction id are passed in.
#[derive(Debug, Default)]
pub struct StunProbe {
    pending: Option<[u8; 12]>,
    next: Option<Instant>,
    public: Option<SocketAddr>,
}

/// The STUN address of a region's first node that has one (`STUNPort` 0
/// means 3478, negative means none).
pub fn stun_server(r: &DerpRegion) -> Option<SocketAddr> {
    r.nodes.iter().find_map(node_stun)
}

fn node_stun(n: &DerpNode) -> Option<SocketAddr> {
    let port = match n.stun_port {
        0 => 3478,
        p => u16::try_from(p).ok()?,
    };
    let ip: IpAddr = n.ipv4.parse::<std::net::Ipv4Addr>().ok()?.into();
    Some(SocketAddr::new(ip, port))
}

impl StunProbe {
    /// A request to send now to `server`, if one is due.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        server: Option<SocketAddr>,
        tx: [u8; 12],
    ) -> Option<(SocketAddr, Vec<u8>)> {
        let server = server?;
        if self.next.is_some_and(|n| now < n) {
            return None;
        }
        self.next = Some(now + STUN_INTERVAL);
        self.pending = Some(tx);
        Some((server, meshbridge_tailnet::stun::request(tx)))
    }

    /// When a request is due (None: none sent yet — due as soon as there
    /// is a server).
    pub fn poll_timeout(&self, has_server: bool) -> Option<Instant> {
        match (self.next, has_server) {
            (_, false) => None,
            (Some(n), true) => Some(n),
            (None, true) => Some(Instant::now()),
        }
    }

    /// Whether `p` is the answer to our outstanding request (then
    /// [`StunProbe::handle_response`] it, not the mesh). A STUN success
    /// starts `01 01`; WireGuard's second byte is always 0.
    pub fn is_response(&self, p: &[u8]) -> bool {
        self.pending.is_some()
            && meshbridge_tailnet::stun::is_stun(p)
            && p[..2] == [0x01, 0x01]
            && p[8..20] == self.pending.unwrap_or_default()
    }

    /// The answer: our public endpoint, returned when it changed.
    pub fn handle_response(&mut self, p: &[u8]) -> Option<SocketAddr> {
        let (tx, addr) = meshbridge_tailnet::stun::parse_response(p).ok()?;
        if Some(tx) != self.pending {
            return None;
        }
        self.pending = None;
        (self.public != Some(addr)).then(|| {
            self.public = Some(addr);
            addr
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(id: i32, stun_only: bool, avoid: bool) -> DerpRegion {
        DerpRegion {
            region_id: id,
            avoid,
            nodes: vec![DerpNode {
                name: format!("{id}a"),
                region_id: id,
                host_name: "derp.example".into(),
                stun_only,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn relay_addresses_map_back_to_their_peer_and_region() {
        let mut r = RelayAddrs::default();
        let a = NodePublic::from_bytes([1; 32]);
        let b = NodePublic::from_bytes([2; 32]);
        let aa = r.addr_for(a, 900);
        let ba = r.addr_for(b, 901);
        assert_ne!(aa, ba);
        assert_eq!(r.addr_for(a, 900), aa, "stable");
        assert!(is_relay(&aa) && is_relay(&ba));
        assert!(!is_relay(&"[fd7a:115c:a1e0::1]:41641".parse().unwrap()));
        assert!(!is_relay(&"10.0.0.1:900".parse().unwrap()));
        assert_eq!(r.peer_of(&aa), Some((a, 900)));
        assert_eq!(r.peer_of(&ba), Some((b, 901)));
        assert_eq!(r.peer_of(&relay_addr(77, 900)), None, "an unknown number");
        assert_eq!(r.peer_of(&relay_addr(0, 900)), None);
    }

    #[test]
    fn home_is_the_first_usable_region() {
        let mut m = BTreeMap::new();
        assert_eq!(choose_home(&m), None);
        m.insert(1, region(1, true, false));
        m.insert(2, region(2, false, true));
        assert_eq!(
            choose_home(&m),
            None,
            "STUN-only and avoided regions are no home"
        );
        m.insert(900, region(900, false, false));
        m.insert(901, region(901, false, false));
        assert_eq!(choose_home(&m), Some(900));
    }

    #[test]
    fn netcheck_measures_every_node_of_the_regions_that_may_be_home() {
        let mut m = BTreeMap::new();
        let mut a = region(900, false, false);
        a.nodes[0].ipv4 = "10.99.0.1".into();
        a.nodes[0].stun_port = 3478;
        let mut a2 = a.nodes[0].clone();
        a2.ipv4 = "10.99.0.3".into();
        a2.stun_port = 0;
        a.nodes.push(a2);
        let mut b = region(901, false, false);
        b.nodes[0].ipv4 = "10.99.0.2".into();
        b.nodes[0].stun_port = 3479;
        let mut avoided = region(902, false, true);
        avoided.nodes[0].ipv4 = "10.99.0.4".into();
        let mut no_stun = region(903, false, false);
        no_stun.nodes[0].ipv4 = "10.99.0.5".into();
        no_stun.nodes[0].stun_port = -1;
        for r in [a, b, avoided, no_stun] {
            m.insert(r.region_id, r);
        }
        let t = netcheck_targets(&m);
        let got: Vec<(u16, String)> = t.iter().map(|t| (t.region, t.addr.to_string())).collect();
        assert_eq!(
            got,
            vec![
                (900, "10.99.0.1:3478".to_string()),
                (900, "10.99.0.3:3478".to_string()),
                (901, "10.99.0.2:3479".to_string()),
            ]
        );
    }

    #[test]
    fn stun_probe_asks_the_home_region_and_learns_the_public_endpoint() {
        let t0 = Instant::now();
        let mut r = region(900, false, false);
        r.nodes[0].ipv4 = "10.99.0.1".into();
        r.nodes[0].stun_port = 3478;
        let server = stun_server(&r);
        assert_eq!(server, Some("10.99.0.1:3478".parse().unwrap()));
        r.nodes[0].stun_port = -1;
        assert_eq!(stun_server(&r), None, "STUN disabled");
        let mut p = StunProbe::default();
        assert_eq!(p.poll_timeout(false), None);
        let (to, req) = p.handle_timeout(t0, server, [9; 12]).unwrap();
        assert_eq!(to, server.unwrap());
        assert!(meshbridge_tailnet::stun::is_stun(&req));
        assert!(
            p.handle_timeout(t0 + Duration::from_secs(1), server, [8; 12])
                .is_none(),
            "not due"
        );
        assert_eq!(p.poll_timeout(true), Some(t0 + STUN_INTERVAL));
        // The answer (XOR-MAPPED-ADDRESS 203.0.113.5:41641).
        let mut resp = vec![1, 1, 0, 12, 0x21, 0x12, 0xa4, 0x42];
        resp.extend_from_slice(&[9; 12]);
        resp.extend_from_slice(&[0, 0x20, 0, 8, 0, 1]);
        resp.extend_from_slice(&(41641u16 ^ 0x2112).to_be_bytes());
        resp.extend(
            [203u8, 0, 113, 5]
                .iter()
                .zip([0x21u8, 0x12, 0xa4, 0x42])
                .map(|(a, k)| a ^ k),
        );
        let mut other = resp.clone();
        other[8] = 1;
        assert!(!p.is_response(&other), "another transaction");
        assert!(!p.is_response(&[
            1, 0, 0, 0, 0x21, 0x12, 0xa4, 0x42, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9
        ]));
        assert!(p.is_response(&resp));
        assert_eq!(
            p.handle_response(&resp),
            Some("203.0.113.5:41641".parse().unwrap())
        );
        assert!(!p.is_response(&resp), "answered");
        // The same address again is no change.
        p.handle_timeout(t0 + STUN_INTERVAL, server, [9; 12])
            .unwrap();
        assert_eq!(p.handle_response(&resp), None);
    }

    #[test]
    fn tls_configs_build_with_the_ring_provider() {
        assert!(tls_config(true).is_ok());
        // Verified: works wherever the test machine has a CA bundle.
        if meshbridge_tailnet::tls::roots(None).is_ok() {
            assert!(tls_config(false).is_ok());
        }
    }
}
