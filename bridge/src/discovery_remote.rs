//! Site-to-site discovery in the daemon: for every `[[discovery.remote]]`
//! box, browse its DNS-SD discovery proxy over unicast DNS (one UDP socket
//! on the box's mesh address) and announce what it has by mDNS on this box's
//! bridge (and the uplink with `announce_on_uplink`). The protocols are
//! [`meshbridge_mdns::RemoteBrowser`] and [`meshbridge_mdns::Reannouncer`];
//! this module only moves their packets.
//!
//! With `[tailnet]` and `[discovery] tailnet_boxes` (the default there), the
//! tailnet's peers that are meshbridge boxes with a DNS-SD proxy (they say
//! so in their `Hostinfo.Services`, see
//! [`meshbridge_tailnet::netmap::dns_sd_boxes`]) are browsed the same way,
//! from a second socket on the box's tailnet address (so the remote box's
//! tailnet packet filter sees our tailnet address); they come and go with
//! the netmap, and a box that left gets goodbyes for its services.

use crate::config::Config;
use meshbridge_engine::Engine;
use meshbridge_mdns::{Reannouncer, RemoteBrowser};
use meshbridge_tailnet::netmap::DnsSdBox;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;
use tokio::net::UdpSocket;

/// Where a remote box came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// `[[discovery.remote]]`.
    Config,
    /// A tailnet peer advertising its DNS-SD proxy.
    Tailnet,
}

struct Remote {
    name: String,
    server: SocketAddr,
    domain: String,
    source: Source,
    browser: RemoteBrowser,
}

/// Tailnet boxes browsed at most (the rest are left out, logged).
const MAX_TAILNET_BOXES: usize = 64;

fn udp_socket(bind: SocketAddr) -> std::io::Result<UdpSocket> {
    std::net::UdpSocket::bind(bind)
        .and_then(|s| s.set_nonblocking(true).map(|_| s))
        .and_then(UdpSocket::from_std)
}

/// The remote boxes and what is announced for them on each link.
pub struct Remotes {
    remotes: Vec<Remote>,
    sock: UdpSocket,
    /// On the bridge.
    pub(crate) bridge: Reannouncer,
    /// On the uplink (`announce_on_uplink`).
    pub(crate) uplink: Option<Reannouncer>,
    dirty: bool,
    buf: Vec<u8>,
    /// `[discovery] tailnet_boxes`.
    tailnet_boxes: bool,
    /// The box's tailnet IPv4 address, and a socket on it once it is up.
    tailnet_addr: Option<Ipv4Addr>,
    tailnet_sock: Option<UdpSocket>,
    tbuf: Vec<u8>,
    /// Tailnet boxes that left: their services get goodbyes.
    gone: Vec<String>,
    services: Vec<String>,
    seed: u32,
    added: u32,
}

impl Remotes {
    /// `None` without remotes and without tailnet boxes to look for (or
    /// when the socket cannot be opened: logged).
    pub fn start(config: &Config, with_uplink: bool) -> Option<Remotes> {
        if !config.discovery.enabled
            || (config.discovery.remotes.is_empty() && !config.discovery.tailnet_boxes)
        {
            return None;
        }
        let bind = SocketAddr::from((config.mesh_address.addr(), 0));
        let sock = match udp_socket(bind) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(
                    "site-to-site discovery off: cannot open a UDP socket on {bind}: {e}"
                );
                return None;
            }
        };
        let now = Instant::now();
        // Query ids start somewhere unpredictable (RFC 5452): a peer that
        // does not see our queries cannot guess them.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32).rotate_left(16))
            .unwrap_or(0);
        let remotes = config
            .discovery
            .remotes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let domain =
                    hickory_server::proto::rr::Name::from_ascii(format!("{}.", r.domain)).ok()?;
                let first = (seed as u16).wrapping_add((i as u16).wrapping_mul(4099));
                Some(Remote {
                    name: r.name.clone(),
                    server: r.server,
                    domain: r.domain.clone(),
                    source: Source::Config,
                    browser: RemoteBrowser::new(now, &domain, &config.discovery.services, first),
                })
            })
            .collect::<Vec<_>>();
        for r in &remotes {
            tracing::info!(
                "site-to-site discovery: browsing box {:?} at {} for {} service type(s)",
                r.name,
                r.server,
                config.discovery.services.len()
            );
        }
        let reserved = vec![config.discovery.mdns_name.clone()];
        Some(Remotes {
            remotes,
            sock,
            bridge: Reannouncer::new(&reserved),
            uplink: (with_uplink && config.discovery.announce_on_uplink)
                .then(|| Reannouncer::new(&reserved)),
            dirty: false,
            buf: vec![0; 65535],
            tailnet_boxes: config.discovery.tailnet_boxes,
            tailnet_addr: None,
            tailnet_sock: None,
            tbuf: vec![0; 65535],
            gone: Vec::new(),
            services: config.discovery.services.clone(),
            seed,
            added: config.discovery.remotes.len() as u32,
        })
    }

    /// A tailnet map update: the box's tailnet addresses and the peers that
    /// are meshbridge boxes with a DNS-SD proxy. New boxes are browsed, boxes
    /// that left are forgotten (goodbyes for their services). A box that is
    /// also a configured remote (same server or name) stays the configured one.
    pub fn set_tailnet(&mut self, own: &[ipnet::IpNet], boxes: &[DnsSdBox]) {
        if !self.tailnet_boxes {
            return;
        }
        let addr = own.iter().find_map(|a| match a.addr() {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        });
        if addr != self.tailnet_addr {
            self.tailnet_addr = addr;
            self.tailnet_sock = None;
            self.open_tailnet_socket();
        }
        let configured = |b: &DnsSdBox, rs: &[Remote]| {
            rs.iter()
                .any(|r| r.source == Source::Config && (r.server == b.server || r.name == b.name))
        };
        let wanted: Vec<&DnsSdBox> = boxes
            .iter()
            .filter(|b| !configured(b, &self.remotes))
            .filter(|b| Some(b.server.ip()) != addr.map(IpAddr::V4))
            .take(MAX_TAILNET_BOXES)
            .collect();
        if wanted.len() == MAX_TAILNET_BOXES {
            tracing::warn!(
                "site-to-site discovery: browsing the first {MAX_TAILNET_BOXES} tailnet boxes only"
            );
        }
        let mut k = 0;
        while k < self.remotes.len() {
            let r = &self.remotes[k];
            let keep = r.source == Source::Config
                || wanted
                    .iter()
                    .any(|b| b.name == r.name && b.server == r.server && b.domain == r.domain);
            if keep {
                k += 1;
                continue;
            }
            let r = self.remotes.remove(k);
            tracing::info!(
                "site-to-site discovery: tailnet box {:?} at {} left (or stopped offering DNS-SD)",
                r.name,
                r.server
            );
            self.gone.push(r.name);
            self.dirty = true;
        }
        let now = Instant::now();
        for b in wanted {
            if self.remotes.iter().any(|r| r.name == b.name) {
                continue;
            }
            let Ok(domain) = hickory_server::proto::rr::Name::from_ascii(format!("{}.", b.domain))
            else {
                continue;
            };
            let first = (self.seed as u16).wrapping_add((self.added as u16).wrapping_mul(4099));
            self.added = self.added.wrapping_add(1);
            tracing::info!(
                "site-to-site discovery: browsing tailnet box {:?} at {} (domain {}) for {} service type(s)",
                b.name,
                b.server,
                b.domain,
                self.services.len()
            );
            self.gone.retain(|g| g != &b.name);
            self.remotes.push(Remote {
                name: b.name.clone(),
                server: b.server,
                domain: b.domain.clone(),
                source: Source::Tailnet,
                browser: RemoteBrowser::new(now, &domain, &self.services, first),
            });
        }
    }

    /// Open the socket on the box's tailnet address, if there is one and it
    /// is not open yet (the address may not be on the TUN yet: then the
    /// next timer tries again).
    pub fn open_tailnet_socket(&mut self) {
        let Some(addr) = self.tailnet_addr.filter(|_| self.tailnet_sock.is_none()) else {
            return;
        };
        match udp_socket(SocketAddr::from((addr, 0))) {
            Ok(s) => {
                tracing::info!("site-to-site discovery: browsing tailnet boxes from {addr}");
                self.tailnet_sock = Some(s);
            }
            Err(e) => tracing::debug!("site-to-site discovery: no socket on {addr} yet: {e}"),
        }
    }

    /// The remote boxes, for `meshbridge status`.
    pub fn status(&self) -> Vec<meshbridge_web::proto::DiscoveryRemoteStatus> {
        let now = Instant::now();
        self.remotes
            .iter()
            .map(|r| {
                let st = r.browser.stats();
                meshbridge_web::proto::DiscoveryRemoteStatus {
                    name: r.name.clone(),
                    server: r.server.to_string(),
                    domain: r.domain.clone(),
                    source: match r.source {
                        Source::Config => "config",
                        Source::Tailnet => "tailnet",
                    }
                    .to_string(),
                    services: r.browser.services(now).len(),
                    queries: st.queries,
                    replies: st.replies,
                }
            })
            .collect()
    }

    /// When the browsers' or the reannouncers' timers are due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let b = self.remotes.iter().map(|r| r.browser.poll_timeout()).min();
        [
            b,
            self.bridge.poll_timeout(),
            self.uplink.as_ref().and_then(|u| u.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Run due timers.
    pub fn handle_timeout(&mut self) {
        let now = Instant::now();
        if self.remotes.iter().any(|r| r.source == Source::Tailnet) {
            self.open_tailnet_socket();
        }
        for r in &mut self.remotes {
            r.browser.handle_timeout(now);
        }
        self.bridge.handle_timeout(now);
        if let Some(u) = self.uplink.as_mut() {
            u.handle_timeout(now);
        }
        self.dirty = true;
    }

    /// Wait for a reply from a remote box and hand it to its browser.
    pub async fn recv(&mut self) {
        let (buf, tbuf) = (&mut self.buf, &mut self.tbuf);
        let (sock, tsock) = (&self.sock, self.tailnet_sock.as_ref());
        let tailnet = async {
            match tsock {
                Some(s) => s.recv_from(tbuf).await,
                None => std::future::pending().await,
            }
        };
        let (source, got) = tokio::select! {
            r = sock.recv_from(buf) => (Source::Config, r),
            r = tailnet => (Source::Tailnet, r),
        };
        let Ok((n, from)) = got else { return };
        let data = match source {
            Source::Config => &self.buf[..n],
            Source::Tailnet => &self.tbuf[..n],
        };
        let now = Instant::now();
        // Only the remote's DNS server may answer its browser, on the
        // socket its queries left from.
        if let Some(r) = self
            .remotes
            .iter_mut()
            .find(|r| r.server == from && r.source == source)
        {
            r.browser.handle_response(now, data);
            self.dirty = true;
        }
    }

    /// Send queries and announcements; update what is announced.
    pub fn pump(&mut self, engine: &mut Engine, uplink: Option<&UdpSocket>) {
        for r in &mut self.remotes {
            let sock = match r.source {
                Source::Config => Some(&self.sock),
                // Not up yet: the query times out and the next round asks again.
                Source::Tailnet => self.tailnet_sock.as_ref(),
            };
            while let Some(q) = r.browser.poll_transmit() {
                let sent = sock.map(|s| s.try_send_to(&q, r.server));
                if let Some(Err(e)) = sent {
                    tracing::debug!("site-to-site discovery: query to {}: {e}", r.server);
                }
            }
        }
        if std::mem::take(&mut self.dirty) {
            let now = Instant::now();
            for name in std::mem::take(&mut self.gone) {
                self.bridge.set_offers(now, &name, &[]);
                if let Some(u) = self.uplink.as_mut() {
                    u.set_offers(now, &name, &[]);
                }
            }
            for r in &self.remotes {
                let offers = r.browser.services(now);
                self.bridge.set_offers(now, &r.name, &offers);
                if let Some(u) = self.uplink.as_mut() {
                    u.set_offers(now, &r.name, &offers);
                }
            }
        }
        while let Some(p) = self.bridge.poll_transmit() {
            engine.send_mdns(&p);
        }
        if let Some(u) = self.uplink.as_mut() {
            while let Some(p) = u.poll_transmit() {
                if let Some(sock) = uplink {
                    if let Err(e) = sock.try_send_to(&p, crate::mdns_link::group()) {
                        tracing::debug!("mDNS on the uplink: {e}");
                    }
                }
            }
        }
    }

    /// Services announced for remote boxes on the bridge, for the page.
    pub fn services(&self) -> Vec<meshbridge_web::proto::ServiceInfo> {
        self.bridge
            .announced()
            .into_iter()
            .map(|a| {
                let addr = a.offer.addrs.first().map(|ip| ip.to_string());
                let rp = rp_of(&a.offer.txt);
                let uri = addr.as_deref().and_then(|ad| {
                    meshbridge_web::proto::printer_uri(
                        &a.service,
                        ad,
                        a.offer.port,
                        rp.as_deref().unwrap_or(""),
                    )
                });
                meshbridge_web::proto::ServiceInfo {
                    instance: a.instance,
                    kind: a.service,
                    host: format!("{}.local", a.host),
                    port: a.offer.port,
                    device: None,
                    exposed: true,
                    addr,
                    resource_path: rp,
                    uri,
                    site: Some(a.remote),
                }
            })
            .collect()
    }
}

/// The `rp` key of a printer's TXT record (RFC 6763 §6: key=value, the
/// first one counts), as text.
pub fn rp_of<S: AsRef<[u8]>>(txt: &[S]) -> Option<String> {
    txt.iter().find_map(|s| {
        let s = s.as_ref();
        let (k, v) = s.split_at(s.iter().position(|b| *b == b'=')?);
        k.eq_ignore_ascii_case(b"rp")
            .then(|| String::from_utf8_lossy(&v[1..]).into_owned())
    })
}
