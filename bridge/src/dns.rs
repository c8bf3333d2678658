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
use meshbridge_mdns::{Lookup, Names, Owner, Taken};
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
pub struct Handler {
    names: SharedNames,
    upstream: Upstreams,
    clients: Vec<IpNet>,
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

/// Start serving on `listen` (UDP and TCP port 53). Runs until the runtime stops.
pub async fn start(
    names: SharedNames,
    listen: &[IpAddr],
    upstream: Upstreams,
    clients: Vec<IpNet>,
) -> Result<()> {
    let mut server = Server::new(Handler {
        names,
        upstream,
        clients,
    });
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

#[cfg(test)]
mod tests {
    use super::*;

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
