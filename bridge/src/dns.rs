//! The box's DNS server (hickory-server) on its bridge and mesh addresses:
//! answers for the box's own zone ([`meshbridge_mdns::Names`]: devices,
//! peers, reverse) and forwards every other question to the uplink's
//! resolvers. It answers only clients on the bridge or in the mesh — never
//! an open resolver toward the uplink.

use anyhow::{Context, Result};
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Header, Message, Metadata, ResponseCode};
use hickory_server::proto::rr::{Name, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use ipnet::IpNet;
use meshbridge_mdns::{Claim, Lookup, Names, Owner, Taken};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// How long to wait for an upstream resolver before trying the next.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// What the DNS server knows: the box's zone, the mDNS cache and the
/// discovery proxy over it.
pub struct Zone {
    /// Devices, peers, the box, reverse.
    pub names: Names,
    /// What bridged devices announce over mDNS.
    pub cache: meshbridge_mdns::Cache,
    /// The DNS-SD discovery proxy (None: discovery off).
    pub proxy: Option<meshbridge_mdns::Proxy>,
    /// The tailnet's MagicDNS names (empty without a tailnet).
    pub tailnet: crate::tailnet_dns::MagicDns,
}

impl Zone {
    /// Answer a tailnet name from MagicDNS; else from the zone, then from
    /// the discovery proxy; a name under the tailnet's suffix that neither
    /// knows is NXDOMAIN (never forwarded).
    pub fn lookup(
        &self,
        now: std::time::Instant,
        name: &Name,
        qtype: hickory_server::proto::rr::RecordType,
    ) -> Lookup {
        let magic = self.tailnet.lookup(name, qtype);
        if matches!(magic, Lookup::Records(_)) {
            return magic;
        }
        match self.lookup_own(now, name, qtype) {
            Lookup::NotOurs => magic,
            answer => answer,
        }
    }

    /// A tailnet map update: MagicDNS answers the tailnet's names, and
    /// their short names are claimed in the box's zone (the peers' above
    /// devices, the box's own as the box's), so a bridged device can never
    /// take them. Returns the claims that clashed, with their owner.
    pub fn set_tailnet(
        &mut self,
        magic: crate::tailnet_dns::MagicDns,
    ) -> Vec<(meshbridge_mdns::Claim, Owner, Vec<IpAddr>)> {
        let old: Vec<IpAddr> = self.tailnet.addresses().collect();
        for a in old {
            self.names.remove_addr(a);
        }
        let mut clashes = Vec::new();
        for (label, addrs, is_box) in magic.short_names() {
            let owner = if is_box { Owner::Box } else { Owner::Peer };
            let c = self.names.claim(label, addrs.to_vec(), owner);
            if matches!(c, Claim::Renamed { .. } | Claim::Refused(_)) {
                clashes.push((c, owner, addrs.to_vec()));
            }
        }
        self.tailnet = magic;
        clashes
    }

    fn lookup_own(
        &self,
        now: std::time::Instant,
        name: &Name,
        qtype: hickory_server::proto::rr::RecordType,
    ) -> Lookup {
        let answer = self.names.lookup(name, qtype);
        let Some(proxy) = &self.proxy else {
            return answer;
        };
        let soa = match &answer {
            Lookup::NxDomain(soa) | Lookup::NoData(soa) => soa.clone(),
            _ => return answer,
        };
        // Names the zone holds are not for mDNS to extend: the box, reserved
        // names and peers get nothing from the cache; a device's name only
        // what that device itself announces.
        let from_cache = match self.names.taken(name) {
            Taken::Free => proxy.answer(&self.cache, now, name, qtype),
            Taken::Reserved | Taken::By(Owner::Box | Owner::Peer, _) => return answer,
            Taken::By(Owner::Device | Owner::Admin, addrs) => {
                proxy.answer_from(&self.cache, now, name, qtype, addrs)
            }
        };
        match from_cache {
            Some(records) if !records.is_empty() => Lookup::Records(records),
            // A discovery name (`_ipp._tcp...`) with nothing to show right now: NOERROR, no data.
            Some(_) if name.iter().any(|l| l.first() == Some(&b'_')) => Lookup::NoData(soa),
            _ => answer,
        }
    }
}

/// The shared zone: the main loop writes, the DNS tasks read.
pub type SharedNames = Arc<RwLock<Zone>>;

/// Upstream resolvers from a resolv.conf text: `nameserver` lines, minus
/// loopback stubs (they would point back at the box itself) and `exclude`.
pub fn upstreams_from_resolv_conf(text: &str, exclude: &[IpAddr]) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().split('%').next()?.parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified() && !exclude.contains(ip))
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The system's resolvers (systemd-resolved's real upstreams if its stub is in use).
pub fn system_upstreams(exclude: &[IpAddr]) -> Vec<SocketAddr> {
    for path in [
        "/etc/resolv.conf",
        "/run/systemd/resolve/resolv.conf",
        "/tmp/resolv.conf.d/resolv.conf.auto",
    ] {
        if let Ok(text) = std::fs::read_to_string(path) {
            let found = upstreams_from_resolv_conf(&text, exclude);
            if !found.is_empty() {
                return found;
            }
        }
    }
    Vec::new()
}

/// Where forwarded queries go.
pub enum Upstreams {
    /// `dns.upstream` from the config.
    Fixed(Vec<SocketAddr>),
    /// The system's resolvers, read again every [`RESOLV_REFRESH`] (DHCP on
    /// the uplink may write them only after the daemon started).
    System {
        /// The box's own addresses (never an upstream).
        exclude: Vec<IpAddr>,
        /// When they were read, and what.
        cache: std::sync::Mutex<(std::time::Instant, Vec<SocketAddr>)>,
    },
}

/// `a:53, b:53`, or `nobody` for none (for the log).
pub fn fmt_upstreams(list: &[SocketAddr]) -> String {
    if list.is_empty() {
        "nobody".to_string()
    } else {
        list.iter()
            .map(|u| u.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// How often the system's resolvers are read again.
pub const RESOLV_REFRESH: Duration = Duration::from_secs(10);

impl Upstreams {
    /// The system's resolvers, as read now.
    pub fn system(exclude: Vec<IpAddr>) -> Self {
        let now = system_upstreams(&exclude);
        Upstreams::System {
            exclude,
            cache: std::sync::Mutex::new((std::time::Instant::now(), now)),
        }
    }

    /// The resolvers to use now.
    pub fn current(&self) -> Vec<SocketAddr> {
        match self {
            Upstreams::Fixed(v) => v.clone(),
            Upstreams::System { exclude, cache } => {
                let Ok(mut c) = cache.lock() else {
                    return Vec::new();
                };
                if c.0.elapsed() >= RESOLV_REFRESH {
                    let fresh = system_upstreams(exclude);
                    if fresh != c.1 {
                        tracing::info!(
                            "DNS: forwarding to {} (from the system's resolv.conf)",
                            fmt_upstreams(&fresh)
                        );
                    }
                    *c = (std::time::Instant::now(), fresh);
                }
                c.1.clone()
            }
        }
    }
}

/// The request handler.
#[derive(Clone)]
pub struct Handler {
    names: SharedNames,
    upstream: Arc<Upstreams>,
    clients: Arc<Vec<IpNet>>,
}

impl Handler {
    async fn forward_udp(&self, query: &[u8], to: SocketAddr) -> std::io::Result<Vec<u8>> {
        let bind: SocketAddr = if to.is_ipv4() {
            "0.0.0.0:0".parse().expect("addr")
        } else {
            "[::]:0".parse().expect("addr")
        };
        let sock = UdpSocket::bind(bind).await?;
        sock.connect(to).await?;
        sock.send(query).await?;
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(UPSTREAM_TIMEOUT, sock.recv(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "upstream timeout"))??;
        buf.truncate(n);
        Ok(buf)
    }

    async fn forward_tcp(&self, query: &[u8], to: SocketAddr) -> std::io::Result<Vec<u8>> {
        let io = async {
            let mut s = TcpStream::connect(to).await?;
            let len =
                u16::try_from(query.len()).map_err(|_| std::io::Error::other("query too long"))?;
            s.write_all(&len.to_be_bytes()).await?;
            s.write_all(query).await?;
            let mut l = [0u8; 2];
            s.read_exact(&mut l).await?;
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(l))];
            s.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        };
        tokio::time::timeout(UPSTREAM_TIMEOUT, io)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "upstream timeout"))?
    }

    /// Ask the upstreams in turn; a truncated UDP answer is retried over TCP.
    async fn forward(&self, request: &Request, upstream: &[SocketAddr]) -> Option<Message> {
        let query = request.as_slice();
        for up in upstream {
            let reply = match self.forward_udp(query, *up).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!("DNS upstream {up}: {e}");
                    continue;
                }
            };
            let Ok(mut msg) = Message::from_vec(&reply) else {
                continue;
            };
            if msg.metadata.id != request.metadata.id {
                continue;
            }
            if msg.metadata.truncation {
                if let Ok(r) = self.forward_tcp(query, *up).await {
                    if let Ok(m) = Message::from_vec(&r) {
                        msg = m;
                    }
                }
            }
            return Some(msg);
        }
        None
    }
}

async fn send<R: ResponseHandler>(
    request: &Request,
    mut handle: R,
    meta: Metadata,
    answers: &[Record],
    authorities: &[Record],
    additionals: &[Record],
) -> ResponseInfo {
    let builder = MessageResponseBuilder::from_message_request(request);
    let response = builder.build(
        meta,
        answers.iter(),
        authorities.iter(),
        std::iter::empty(),
        additionals.iter(),
    );
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!("DNS: sending a response failed: {e}");
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            Header {
                metadata,
                counts: Default::default(),
            }
            .into()
        }
    }
}

async fn send_code<R: ResponseHandler>(
    request: &Request,
    handle: R,
    code: ResponseCode,
    ra: bool,
) -> ResponseInfo {
    let mut meta = Metadata::response_from_request(&request.metadata);
    meta.response_code = code;
    meta.recursion_available = ra;
    send(request, handle, meta, &[], &[], &[]).await
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        handle: R,
    ) -> ResponseInfo {
        let src = request.src().ip().to_canonical();
        let tailnet_client = || self.names.read().is_ok_and(|z| z.tailnet.is_client(src));
        if !self.clients.iter().any(|n| n.contains(&src)) && !tailnet_client() {
            return send_code(request, handle, ResponseCode::Refused, false).await;
        }
        let Ok(info) = request.request_info() else {
            return send_code(request, handle, ResponseCode::FormErr, true).await;
        };
        let name = Name::from(info.query.name().clone());
        let qtype = info.query.query_type();
        let answer = self
            .names
            .read()
            .map(|z| z.lookup(std::time::Instant::now(), &name, qtype))
            .unwrap_or(Lookup::NotOurs);
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.recursion_available = true;
        match answer {
            Lookup::Records(records) => {
                meta.authoritative = true;
                send(request, handle, meta, &records, &[], &[]).await
            }
            Lookup::NoData(soa) => {
                meta.authoritative = true;
                send(request, handle, meta, &[], &[soa], &[]).await
            }
            Lookup::NxDomain(soa) => {
                meta.authoritative = true;
                meta.response_code = ResponseCode::NXDomain;
                send(request, handle, meta, &[], &[soa], &[]).await
            }
            Lookup::NotOurs => {
                let upstream = self.upstream.current();
                if !request.metadata.recursion_desired || upstream.is_empty() {
                    let code = if upstream.is_empty() {
                        ResponseCode::ServFail
                    } else {
                        ResponseCode::Refused
                    };
                    return send_code(request, handle, code, !upstream.is_empty()).await;
                }
                match self.forward(request, &upstream).await {
                    Some(reply) => {
                        meta.response_code = reply.metadata.response_code;
                        meta.authentic_data = false;
                        meta.truncation = false;
                        send(
                            request,
                            handle,
                            meta,
                            &reply.answers,
                            &reply.authorities,
                            &[],
                        )
                        .await
                    }
                    None => send_code(request, handle, ResponseCode::ServFail, true).await,
                }
            }
        }
    }
}

impl Handler {
    /// Serve on more addresses (UDP and TCP port 53) with the same names,
    /// upstreams and clients: the box's tailnet address once it has one.
    pub async fn serve(&self, listen: &[IpAddr]) -> Result<()> {
        let mut server = Server::new(self.clone());
        for ip in listen {
            let addr = SocketAddr::new(*ip, 53);
            let udp = UdpSocket::bind(addr).await.with_context(|| {
                format!("binding DNS on {addr}/udp (is another DNS server using it?)")
            })?;
            server.register_socket(udp);
            let tcp = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding DNS on {addr}/tcp"))?;
            server.register_listener(tcp, Duration::from_secs(5), 65535);
        }
        tokio::spawn(async move {
            if let Err(e) = server.block_until_done().await {
                tracing::error!("DNS server stopped: {e}");
            }
        });
        Ok(())
    }
}

/// Start serving on `listen` (UDP and TCP port 53). Runs until the runtime
/// stops; the handler returned serves more addresses later.
pub async fn start(
    names: SharedNames,
    listen: &[IpAddr],
    upstream: Upstreams,
    clients: Vec<IpNet>,
) -> Result<Handler> {
    let handler = Handler {
        names,
        upstream: Arc::new(upstream),
        clients: Arc::new(clients),
    };
    handler.serve(listen).await?;
    Ok(handler)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tailnet_dns::MagicDns;
    use hickory_server::proto::rr::RecordType;
    use meshbridge_tailnet::netmap::TailnetPeer;

    fn zone(domain: &str) -> Zone {
        Zone {
            names: Names::new(domain, vec!["10.77.1.0/24".parse().unwrap()]).unwrap(),
            cache: meshbridge_mdns::Cache::new(),
            proxy: None,
            tailnet: MagicDns::default(),
        }
    }

    fn magic(peers: &[(&str, &str)]) -> MagicDns {
        let peers: Vec<TailnetPeer> = peers
            .iter()
            .zip(2u8..)
            .map(|((name, ip), i)| TailnetPeer {
                id: i64::from(i),
                name: name.to_string(),
                node_key: meshbridge_tailnet::keys::NodePublic::from_bytes([i; 32]),
                disco_key: None,
                addresses: vec![format!("{ip}/32").parse().unwrap()],
                allowed_ips: vec![],
                endpoints: vec![],
                derp_region: None,
                online: None,
            })
            .collect();
        MagicDns::new(
            "tbox.tailnet.test.",
            &["100.64.0.1/32".parse().unwrap()],
            &peers,
            None,
        )
    }

    fn a(z: &Zone, name: &str) -> Vec<String> {
        match z.lookup(
            std::time::Instant::now(),
            &Name::from_ascii(name).unwrap(),
            RecordType::A,
        ) {
            Lookup::Records(r) => r.iter().map(|r| r.data.to_string()).collect(),
            _ => vec![],
        }
    }

    #[test]
    fn a_bridged_device_never_takes_a_tailnet_name() {
        let mut z = zone("mesh.home.arpa");
        let dev = vec![IpAddr::from([10, 77, 1, 100])];
        // A device called itself like the laptop before the map came.
        z.names.claim("tlaptop", dev.clone(), Owner::Device);
        assert_eq!(a(&z, "tlaptop.mesh.home.arpa."), vec!["10.77.1.100"]);
        let clashes = z.set_tailnet(magic(&[("tlaptop.tailnet.test", "100.64.0.2")]));
        assert!(
            clashes.is_empty(),
            "the peer outranks the device: {clashes:?}"
        );
        assert_eq!(a(&z, "tlaptop.tailnet.test."), vec!["100.64.0.2"]);
        assert_eq!(a(&z, "tlaptop.mesh.home.arpa."), vec!["100.64.0.2"]);
        assert_eq!(a(&z, "tlaptop-2.mesh.home.arpa."), vec!["10.77.1.100"]);
        assert_eq!(a(&z, "tbox.tailnet.test."), vec!["100.64.0.1"]);
        // Claiming it again (a DHCP renewal) does not win it back.
        assert!(matches!(
            z.names.claim("tlaptop", dev.clone(), Owner::Device),
            Claim::Renamed { .. }
        ));
        assert_eq!(a(&z, "tlaptop.mesh.home.arpa."), vec!["100.64.0.2"]);
        // The laptop leaves the tailnet: its names go.
        z.set_tailnet(magic(&[]));
        assert!(a(&z, "tlaptop.tailnet.test.").is_empty());
        assert!(a(&z, "tlaptop.mesh.home.arpa.").is_empty());
        assert!(matches!(
            z.lookup(
                std::time::Instant::now(),
                &Name::from_ascii("tlaptop.tailnet.test.").unwrap(),
                RecordType::A
            ),
            Lookup::NxDomain(_)
        ));
    }

    #[test]
    fn with_the_tailnets_domain_as_the_boxs_the_devices_still_resolve() {
        let mut z = zone("tailnet.test");
        z.names.claim(
            "printer",
            vec![IpAddr::from([10, 77, 1, 100])],
            Owner::Device,
        );
        z.set_tailnet(magic(&[("tlaptop.tailnet.test", "100.64.0.2")]));
        assert_eq!(a(&z, "printer.tailnet.test."), vec!["10.77.1.100"]);
        assert_eq!(a(&z, "tlaptop.tailnet.test."), vec!["100.64.0.2"]);
        // A device claiming the laptop's name is renamed, MagicDNS wins.
        z.names.claim(
            "tlaptop",
            vec![IpAddr::from([10, 77, 1, 101])],
            Owner::Device,
        );
        assert_eq!(a(&z, "tlaptop.tailnet.test."), vec!["100.64.0.2"]);
    }

    #[test]
    fn upstreams_skip_loopback_stubs_and_own_addresses() {
        let conf = "# generated\nnameserver 127.0.0.53\nnameserver 192.168.1.1\nnameserver fe80::1%eth0\nnameserver 10.77.1.1\noptions edns0\n";
        let own = ["10.77.1.1".parse().unwrap()];
        let ups = upstreams_from_resolv_conf(conf, &own);
        assert_eq!(
            ups,
            vec![
                "192.168.1.1:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }
}
