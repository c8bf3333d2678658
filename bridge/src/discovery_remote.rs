//! Site-to-site discovery in the daemon: for every `[[discovery.remote]]`
//! box, browse its DNS-SD discovery proxy over unicast DNS (one UDP socket
//! on the box's mesh address) and announce what it has by mDNS on this box's
//! bridge (and the uplink with `announce_on_uplink`). The protocols are
//! [`meshbridge_mdns::RemoteBrowser`] and [`meshbridge_mdns::Reannouncer`];
//! this module only moves their packets.

use crate::config::Config;
use meshbridge_engine::Engine;
use meshbridge_mdns::{Reannouncer, RemoteBrowser};
use std::net::SocketAddr;
use std::time::Instant;
use tokio::net::UdpSocket;

struct Remote {
    name: String,
    server: SocketAddr,
    browser: RemoteBrowser,
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
}

impl Remotes {
    /// `None` without remotes (or when the socket cannot be opened: logged).
    pub fn start(config: &Config, with_uplink: bool) -> Option<Remotes> {
        if !config.discovery.enabled || config.discovery.remotes.is_empty() {
            return None;
        }
        let bind = SocketAddr::from((config.mesh_address.addr(), 0));
        let sock = match std::net::UdpSocket::bind(bind)
            .and_then(|s| s.set_nonblocking(true).map(|_| s))
            .and_then(UdpSocket::from_std)
        {
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
        })
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
        let Ok((n, from)) = self.sock.recv_from(&mut self.buf).await else {
            return;
        };
        let now = Instant::now();
        // Only the remote's DNS server may answer its browser.
        if let Some(r) = self.remotes.iter_mut().find(|r| r.server == from) {
            r.browser.handle_response(now, &self.buf[..n]);
            self.dirty = true;
        }
    }

    /// Send queries and announcements; update what is announced.
    pub fn pump(&mut self, engine: &mut Engine, uplink: Option<&UdpSocket>) {
        for r in &mut self.remotes {
            while let Some(q) = r.browser.poll_transmit() {
                if let Err(e) = self.sock.try_send_to(&q, r.server) {
                    tracing::debug!("site-to-site discovery: query to {}: {e}", r.server);
                }
            }
        }
        if std::mem::take(&mut self.dirty) {
            let now = Instant::now();
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
