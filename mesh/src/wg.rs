//! The WireGuard data plane for many peers over one UDP socket.
//!
//! [`Mesh`] wraps boringtun's sans-IO `noise::Tunn`, one per peer, and adds
//! what boringtun leaves to its caller: finding the peer a datagram belongs
//! to, cryptokey routing in both directions, endpoint roaming and a timer
//! schedule. It owns no socket. The daemon feeds it datagrams and packets and
//! drains [`Mesh::poll_output`]; it calls [`Mesh::handle_timeout`] when
//! [`Mesh::poll_timeout`] is due.
//!
//! Peers are normally managed as a whole with [`Mesh::apply`] (a
//! [`crate::PeerSet`]); [`Mesh::add_peer`] and [`Mesh::remove_peer`] are the
//! low-level steps it is made of.
//!
//! Time: `now` drives our own schedule (when to tick the noise timers,
//! persistent keepalives). boringtun reads its own clock for handshake
//! timing and session expiry; see the crate docs and [`crate::clock`].

use crate::allowed_ips::AllowedIps;
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::source_limit::SourceLimiter;
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519;
use ipnet::IpNet;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often boringtun's timers are ticked (its own device uses 250 ms).
pub const TIMER_TICK: Duration = Duration::from_millis(250);
/// Handshake messages (with a valid MAC1) accepted per second, box-wide,
/// before a valid MAC2 (a cookie) is demanded and each source address is
/// held to its own share ([`crate::source_limit`]).
pub const HANDSHAKE_RATE_LIMIT: u64 = 100;
/// The window [`HANDSHAKE_RATE_LIMIT`] counts in.
const LIMIT_WINDOW: Duration = Duration::from_secs(1);
/// Room for the largest packet plus WireGuard overhead.
pub(crate) const BUF_LEN: usize = 65535 + 64;
/// A cookie reply message (type 3): 4 + 4 + 24 + 32 bytes.
const COOKIE_REPLY_LEN: usize = 64;

/// A peer's index in the mesh (stable for the peer's lifetime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u32);

/// One peer as a producer wants it (an entry of a [`crate::PeerSet`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Human name ("laptop").
    pub name: String,
    /// The peer's public key.
    pub public_key: PublicKey,
    /// Optional preshared key.
    pub preshared_key: Option<PresharedKey>,
    /// Where to send until the peer roams.
    pub endpoint: Option<SocketAddr>,
    /// Networks this peer may send from and that are routed to it.
    pub allowed_ips: Vec<IpNet>,
    /// Keepalive interval in seconds.
    pub persistent_keepalive: Option<u16>,
}

/// How a datagram reaches a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    /// Directly, over the daemon's UDP socket, to this address.
    Udp(SocketAddr),
    /// Through a relay server: the tailnet's DERP, identified by its region
    /// id (the peer's "home" region), when no direct UDP path works. The
    /// mesh does not produce relay paths yet (static peers have UDP
    /// endpoints only); the daemon counts and drops them until it has a DERP
    /// client.
    Relay {
        /// DERP region id, as in the tailnet's DERP map.
        region: u16,
    },
}

/// What the mesh hands back to the daemon.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// Send this WireGuard datagram to the peer over `Path`.
    Datagram(Path, Vec<u8>),
    /// A decrypted IP packet from `peer`, whose source is inside the peer's allowed IPs.
    Packet(PeerId, Vec<u8>),
}

/// Why a datagram or packet was dropped. Counted in [`MeshStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeshDrop {
    /// Not a WireGuard message, or one that failed authentication.
    Invalid,
    /// A handshake from a key we don't know, or an index that is no peer of ours.
    UnknownPeer,
    /// A decrypted packet whose source is outside the peer's allowed IPs.
    SourceNotAllowed,
    /// A packet to a peer that has no endpoint yet.
    NoEndpoint,
    /// A handshake message whose MAC1 is not keyed with our public key.
    BadMac,
    /// A handshake message over the rate limit without a valid cookie
    /// (MAC2): answered with a cookie reply, not processed.
    RateLimited,
    /// A handshake message under load from a source that used up its own
    /// share ([`crate::source_limit`]), cookie or not.
    SourceLimited,
}

/// Counters for the status page and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MeshStats {
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams that were not valid WireGuard or failed authentication.
    pub invalid: u64,
    /// Datagrams for no known peer.
    pub unknown_peer: u64,
    /// Decrypted packets dropped by cryptokey routing.
    pub source_not_allowed: u64,
    /// Packets dropped because the peer has no endpoint.
    pub no_endpoint: u64,
    /// Handshake messages dropped for a wrong MAC1 (before any X25519).
    pub bad_mac: u64,
    /// Handshake messages dropped under load (over [`HANDSHAKE_RATE_LIMIT`]
    /// without a valid cookie); each was answered with a cookie reply.
    pub rate_limited: u64,
    /// Handshake messages dropped under load because their source address
    /// was over its own rate ([`crate::source_limit::PER_SOURCE_RATE`]).
    pub source_limited: u64,
}

/// A peer's live state, for status output.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    /// Id.
    pub id: PeerId,
    /// Name from config.
    pub name: String,
    /// Public key.
    pub public_key: PublicKey,
    /// Current endpoint (after roaming).
    pub endpoint: Option<SocketAddr>,
    /// Allowed IPs.
    pub allowed_ips: Vec<IpNet>,
    /// Time since the last completed handshake, if a session exists.
    pub last_handshake: Option<Duration>,
    /// Payload bytes sent.
    pub tx_bytes: u64,
    /// Payload bytes received.
    pub rx_bytes: u64,
}

/// What [`Mesh::apply`] changed (for logs and tests). All lists are in
/// the order of the set, removals in id order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// New peers.
    pub added: Vec<PeerId>,
    /// Peers whose endpoint, allowed IPs, keepalive or name changed, updated
    /// in place: their session and queued packets are kept.
    pub updated: Vec<PeerId>,
    /// Peers whose preshared key changed: same id, new session.
    pub rekeyed: Vec<PeerId>,
    /// Peers no longer in the set.
    pub removed: Vec<PeerId>,
}

impl Applied {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.updated.is_empty()
            && self.rekeyed.is_empty()
            && self.removed.is_empty()
    }
}

struct Peer {
    /// As last applied.
    config: PeerConfig,
    /// The WireGuard session state (11 KB in boringtun), made when the
    /// peer is first used: a packet to send, a handshake to start or
    /// answer, a keepalive due. A tailnet node has every node of the
    /// tailnet as a peer and talks to few of them; device nodes are many
    /// meshes in one process.
    tunn: Option<Box<Tunn>>,
    /// Where datagrams go now: the configured endpoint, or the address the
    /// peer last sent an authenticated datagram from (roaming).
    endpoint: Option<SocketAddr>,
    allowed: AllowedIps<()>,
    /// When the next persistent keepalive is due (the mesh sends them
    /// itself, on its own `now`, so that a keepalive change needs no new
    /// `Tunn`).
    next_keepalive: Option<Instant>,
}

impl Peer {
    fn path(&self) -> Option<Path> {
        self.endpoint.map(Path::Udp)
    }
}

fn keepalive_due(now: Instant, keepalive: Option<u16>) -> Option<Instant> {
    keepalive
        .filter(|k| *k > 0)
        .map(|k| now + Duration::from_secs(u64::from(k)))
}

/// All peers of the box and the routing between them.
pub struct Mesh {
    private: x25519::StaticSecret,
    public: x25519::PublicKey,
    /// Checks MAC1, counts handshakes and demands cookies, once per datagram,
    /// before the mesh looks at a handshake's contents (X25519).
    rate_limiter: Arc<RateLimiter>,
    /// Given to every `Tunn`, which checks each datagram again (boringtun
    /// offers no public way around that): MAC1 only, never under load, so a
    /// datagram is counted once, by `rate_limiter`.
    tunn_limiter: Arc<RateLimiter>,
    /// Under load, each source address's own share of handshakes.
    source_limiter: SourceLimiter,
    /// Handshake messages with a valid MAC1 in the current window, and when
    /// the window (one second, as boringtun's limiter expects) began.
    handshakes: u64,
    window: Option<Instant>,
    /// The latest `now` we were given (by `apply` or `handle_timeout`).
    clock: Option<Instant>,
    peers: Vec<Option<Peer>>,
    routes: AllowedIps<PeerId>,
    out: VecDeque<Output>,
    buf: Vec<u8>,
    next_tick: Option<Instant>,
    /// Something was sent or received since the last tick.
    busy: bool,
    /// Timers tick until then after the last traffic ([`IDLE_AFTER`]);
    /// an idle mesh (no traffic, no persistent keepalive) sleeps.
    active_until: Option<Instant>,
    stats: MeshStats,
}

/// How long the timers keep ticking after the last datagram in or out:
/// past every session's end (three times Reject-After-Time), so that
/// handshake retries, keepalives, rekeys and the zeroing of old keys all
/// happen; after that an idle mesh costs no wakeups (many meshes in one
/// process: a device node each).
pub const IDLE_AFTER: Duration = Duration::from_secs(3 * 180 + 30);

impl Mesh {
    /// A mesh with our private key and no peers.
    pub fn new(private_key: &PrivateKey) -> Self {
        let private = private_key.secret();
        let public = x25519::PublicKey::from(&private);
        Mesh {
            rate_limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
            tunn_limiter: Arc::new(RateLimiter::new(&public, u64::MAX)),
            source_limiter: SourceLimiter::default(),
            handshakes: 0,
            window: None,
            clock: None,
            private,
            public,
            peers: Vec::new(),
            routes: AllowedIps::new(),
            out: VecDeque::new(),
            buf: Vec::new(),
            next_tick: None,
            busy: false,
            active_until: None,
            stats: MeshStats::default(),
        }
    }

    /// Our public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.public.to_bytes())
    }

    fn new_tunn(&self, config: &PeerConfig, id: PeerId) -> Box<Tunn> {
        Box::new(Tunn::new(
            self.private.clone(),
            x25519::PublicKey::from(config.public_key.0),
            config.preshared_key.as_ref().map(|k| k.0),
            // Persistent keepalives are sent by the mesh (see `Peer`).
            None,
            id.0,
            Some(self.tunn_limiter.clone()),
        ))
    }

    /// Gives peer `id` its session state if it has none yet (see
    /// [`Peer::tunn`]).
    fn use_peer(&mut self, id: PeerId) {
        let fresh = match self.peer(id) {
            Some(p) if p.tunn.is_none() => self.new_tunn(&p.config, id),
            _ => return,
        };
        if let Some(p) = self.peers.get_mut(id.0 as usize).and_then(Option::as_mut) {
            p.tunn = Some(fresh);
        }
        self.buf_ready();
    }

    /// The work buffer exists while the mesh is awake and has sessions
    /// (64 KB; an idle mesh gives it back).
    fn buf_ready(&mut self) {
        if self.buf.is_empty() {
            self.buf = vec![0; BUF_LEN];
        }
    }

    /// The work buffer's size (0 while asleep or without sessions).
    #[cfg(test)]
    pub(crate) fn work_buffer(&self) -> usize {
        self.buf.len()
    }

    /// Peers with session state.
    pub fn sessions(&self) -> usize {
        self.peers
            .iter()
            .flatten()
            .filter(|p| p.tunn.is_some())
            .count()
    }

    /// Add a peer. If it has an endpoint and a keepalive, the handshake
    /// starts right away, as with `wg set … persistent-keepalive`.
    ///
    /// Prefer [`Mesh::apply`]: `add_peer` does not check that the key is new.
    pub fn add_peer(&mut self, now: Instant, config: PeerConfig) -> PeerId {
        let slot = self
            .peers
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.peers.len());
        let id = PeerId(slot as u32);
        let mut allowed = AllowedIps::new();
        for net in &config.allowed_ips {
            allowed.insert(*net, ());
            self.routes.insert(*net, id);
        }
        let peer = Peer {
            endpoint: config.endpoint,
            next_keepalive: keepalive_due(now, config.persistent_keepalive),
            config,
            tunn: None,
            allowed,
        };
        if slot == self.peers.len() {
            self.peers.push(Some(peer));
        } else {
            self.peers[slot] = Some(peer);
        }
        self.next_tick.get_or_insert(now);
        let wants_handshake = self
            .peer(id)
            .is_some_and(|p| p.endpoint.is_some() && p.next_keepalive.is_some());
        if wants_handshake {
            self.initiate(id);
        }
        id
    }

    /// Make the running peers match `set`, idempotently:
    ///
    /// * a key not running yet is added (with a new id);
    /// * a running key not in the set is removed;
    /// * a key whose preshared key changed gets a new session (same id);
    /// * otherwise a changed name, endpoint, allowed IPs or keepalive is
    ///   updated **in place**: the session, its counters and queued packets
    ///   stay, no handshake is sent. A new configured endpoint replaces the
    ///   current one (also a roamed one); a configured endpoint that did not
    ///   change, or none, leaves the roamed endpoint alone.
    ///
    /// The routing table is rebuilt from the set (later peers win a network
    /// two peers list). Ids of peers that stay never change; applying the
    /// same set twice changes nothing and outputs nothing.
    pub fn apply(&mut self, now: Instant, set: &crate::PeerSet) -> Applied {
        self.clock = Some(now);
        let mut applied = Applied::default();
        for (i, slot) in self.peers.iter_mut().enumerate() {
            if slot
                .as_ref()
                .is_some_and(|p| set.get(&p.config.public_key).is_none())
            {
                *slot = None;
                applied.removed.push(PeerId(i as u32));
            }
        }
        for want in set.iter() {
            let Some(id) = self.peer_by_key(&want.public_key) else {
                applied.added.push(self.add_peer(now, want.clone()));
                continue;
            };
            // A new preshared key: a new session (made when next used).
            let rekey = self
                .peer(id)
                .is_some_and(|p| p.config.preshared_key != want.preshared_key);
            let Some(peer) = self.peers.get_mut(id.0 as usize).and_then(Option::as_mut) else {
                continue;
            };
            if peer.config == *want {
                continue;
            }
            let found_endpoint = peer.endpoint.is_none() && want.endpoint.is_some();
            if want.endpoint.is_some() && want.endpoint != peer.config.endpoint {
                peer.endpoint = want.endpoint;
            }
            if want.allowed_ips != peer.config.allowed_ips {
                peer.allowed = AllowedIps::new();
                for net in &want.allowed_ips {
                    peer.allowed.insert(*net, ());
                }
            }
            if want.persistent_keepalive != peer.config.persistent_keepalive {
                // As `wg set`: a keepalive turned on is sent at once.
                peer.next_keepalive = want.persistent_keepalive.filter(|k| *k > 0).map(|_| now);
            }
            peer.config = want.clone();
            let keepalive = peer.endpoint.is_some() && peer.next_keepalive.is_some();
            if rekey {
                peer.tunn = None;
                applied.rekeyed.push(id);
            } else {
                applied.updated.push(id);
            }
            // As `add_peer`: a keepalive peer handshakes as soon as it can
            // be reached (a new session, or an endpoint name just resolved).
            if keepalive && (applied.rekeyed.last() == Some(&id) || found_endpoint) {
                self.initiate(id);
            }
        }
        self.routes = AllowedIps::new();
        for want in set.iter() {
            if let Some(id) = self.peer_by_key(&want.public_key) {
                for net in &want.allowed_ips {
                    self.routes.insert(*net, id);
                }
            }
        }
        if self.peers.iter().any(Option::is_some) {
            self.next_tick.get_or_insert(now);
        }
        applied
    }

    /// The running peer with this public key.
    pub fn peer_by_key(&self, key: &PublicKey) -> Option<PeerId> {
        self.peers
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| p.config.public_key == *key))
            .map(|i| PeerId(i as u32))
    }

    /// The public key of a running peer.
    pub fn peer_public_key(&self, id: PeerId) -> Option<PublicKey> {
        self.peer(id).map(|p| p.config.public_key)
    }

    /// Remove a peer and its routes.
    pub fn remove_peer(&mut self, id: PeerId) {
        if let Some(slot) = self.peers.get_mut(id.0 as usize) {
            *slot = None;
        }
        self.routes.remove_value(id);
    }

    fn peer(&self, id: PeerId) -> Option<&Peer> {
        self.peers.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// The peer that `dst` is routed to (cryptokey routing, longest prefix).
    pub fn route(&self, dst: IpAddr) -> Option<PeerId> {
        self.routes.lookup(dst)
    }

    /// The peer with this name.
    pub fn peer_by_name(&self, name: &str) -> Option<PeerId> {
        self.peers
            .iter()
            .flatten()
            .zip(0u32..)
            .find(|(p, _)| p.config.name == name)
            .map(|(_, i)| PeerId(i))
    }

    /// The peer owning a specific network (not a default route) holding `dst`.
    /// A peer whose allowed IPs include `0.0.0.0/0` is an exit node: that is
    /// a separate decision (`use_exit_node`), not ordinary routing.
    pub fn route_specific(&self, dst: IpAddr) -> Option<PeerId> {
        self.routes.lookup_specific(dst)
    }

    /// Whether `peer` has a session whose last handshake is younger than `max_age`.
    pub fn is_up(&self, peer: PeerId, max_age: Duration) -> bool {
        self.last_handshake(peer).is_some_and(|d| d < max_age)
    }

    /// Start a handshake with `peer` unless one is under way.
    pub fn poke(&mut self, peer: PeerId) {
        self.initiate(peer);
    }

    /// The routing table: every allowed network and its peer.
    pub fn routes(&self) -> impl Iterator<Item = &(IpNet, PeerId)> {
        self.routes.iter()
    }

    /// Counters.
    pub fn stats(&self) -> MeshStats {
        self.stats
    }

    /// Every peer's public key and payload bytes sent and received, without
    /// [`Mesh::peer_status`]'s copies (read every few seconds per node).
    pub fn traffic(&self) -> impl Iterator<Item = (PublicKey, u64, u64)> + '_ {
        self.peers.iter().flatten().map(|p| {
            let (tx, rx) = p.tunn.as_ref().map_or((0, 0), |t| {
                let (_, tx, rx, _, _) = t.stats();
                (tx, rx)
            });
            (p.config.public_key, tx as u64, rx as u64)
        })
    }

    /// Status of every peer.
    pub fn peer_status(&self) -> Vec<PeerStatus> {
        self.peers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|p| (i, p)))
            .map(|(i, p)| {
                let (last_handshake, tx, rx) = p.tunn.as_ref().map_or((None, 0, 0), |t| {
                    let (last_handshake, tx, rx, _, _) = t.stats();
                    (last_handshake, tx, rx)
                });
                PeerStatus {
                    id: PeerId(i as u32),
                    name: p.config.name.clone(),
                    public_key: p.config.public_key,
                    endpoint: p.endpoint,
                    allowed_ips: p.config.allowed_ips.clone(),
                    last_handshake,
                    tx_bytes: tx as u64,
                    rx_bytes: rx as u64,
                }
            })
            .collect()
    }

    /// Time since the last handshake with `id`, if it has a session.
    pub fn last_handshake(&self, id: PeerId) -> Option<Duration> {
        self.peer(id)
            .and_then(|p| p.tunn.as_ref()?.time_since_last_handshake())
    }

    fn initiate(&mut self, id: PeerId) {
        // A handshake needs the timers for its retries (a poke of an idle mesh).
        self.wake();
        self.use_peer(id);
        let Some(peer) = self.peers.get_mut(id.0 as usize).and_then(Option::as_mut) else {
            return;
        };
        let Some(tunn) = peer.tunn.as_deref_mut() else {
            return;
        };
        if let TunnResult::WriteToNetwork(b) =
            tunn.format_handshake_initiation(&mut self.buf, false)
        {
            if let Some(path) = peer.path() {
                self.out.push_back(Output::Datagram(path, b.to_vec()));
            }
        }
    }

    /// Encrypt an IP packet for `peer`. Without a session the packet is queued
    /// inside boringtun and a handshake starts.
    pub fn send(&mut self, peer: PeerId, packet: &[u8]) -> Result<(), MeshDrop> {
        self.wake();
        let Some(p) = self.peer(peer) else {
            return Err(MeshDrop::UnknownPeer);
        };
        let Some(path) = p.path() else {
            self.stats.no_endpoint += 1;
            return Err(MeshDrop::NoEndpoint);
        };
        self.use_peer(peer);
        let Some(tunn) = self
            .peers
            .get_mut(peer.0 as usize)
            .and_then(Option::as_mut)
            .and_then(|p| p.tunn.as_deref_mut())
        else {
            return Err(MeshDrop::UnknownPeer);
        };
        match tunn.encapsulate(packet, &mut self.buf) {
            TunnResult::WriteToNetwork(b) => self.out.push_back(Output::Datagram(path, b.to_vec())),
            TunnResult::Err(_) => {
                self.stats.invalid += 1;
                return Err(MeshDrop::Invalid);
            }
            _ => {}
        }
        Ok(())
    }

    /// Which peer a datagram is for: by receiver index, or for a handshake
    /// initiation by the initiator's static key (one X25519: callers check
    /// MAC1 and the rate limit first, see [`Mesh::handle_datagram`]).
    fn classify(&self, packet: &Packet<'_>) -> Result<PeerId, MeshDrop> {
        let index = match packet {
            Packet::HandshakeInit(init) => {
                let half = parse_handshake_anon(&self.private, &self.public, init).map_err(
                    |e| match e {
                        WireGuardError::WrongKey => MeshDrop::UnknownPeer,
                        _ => MeshDrop::Invalid,
                    },
                )?;
                let key = PublicKey(half.peer_static_public);
                return self.peer_by_key(&key).ok_or(MeshDrop::UnknownPeer);
            }
            Packet::HandshakeResponse(r) => r.receiver_idx,
            Packet::PacketCookieReply(c) => c.receiver_idx,
            Packet::PacketData(d) => d.receiver_idx,
        };
        let id = PeerId(index >> 8);
        self.peer(id).map(|_| id).ok_or(MeshDrop::UnknownPeer)
    }

    fn count(&mut self, drop: MeshDrop) -> MeshDrop {
        match drop {
            MeshDrop::UnknownPeer => self.stats.unknown_peer += 1,
            MeshDrop::SourceNotAllowed => self.stats.source_not_allowed += 1,
            MeshDrop::NoEndpoint => self.stats.no_endpoint += 1,
            MeshDrop::BadMac => self.stats.bad_mac += 1,
            MeshDrop::RateLimited => self.stats.rate_limited += 1,
            MeshDrop::SourceLimited => self.stats.source_limited += 1,
            MeshDrop::Invalid => self.stats.invalid += 1,
        }
        drop
    }

    /// A datagram arrived on the UDP socket from `src`.
    ///
    /// Order of checks, cheapest first, so that a forged datagram costs a
    /// parse and a BLAKE2s at most: the message shape; for handshake
    /// initiations and responses MAC1 (keyed with our public key) and the
    /// rate limiter, which over [`HANDSHAKE_RATE_LIMIT`] per second answers
    /// with a cookie reply instead and goes no further. Only then does an
    /// initiation cost an X25519 (to find its peer).
    ///
    /// Roaming: the peer's endpoint moves to `src` only on proof that the
    /// peer sent the datagram *now*: an authenticated transport packet
    /// (data or keepalive; boringtun refuses a replayed counter) or a
    /// handshake response that completed our own initiation. A handshake
    /// initiation is answered at `src` but moves nothing (it may be a
    /// replay: its timestamp is only checked against the last one seen
    /// since start); a cookie reply never moves anything.
    pub fn handle_datagram(&mut self, src: SocketAddr, datagram: &[u8]) -> Result<(), MeshDrop> {
        self.stats.datagrams_in += 1;
        self.wake();
        let mut cookie = [0u8; COOKIE_REPLY_LEN];
        let packet = match self
            .rate_limiter
            .verify_packet(Some(src.ip()), datagram, &mut cookie)
        {
            Ok(packet) => packet,
            Err(TunnResult::WriteToNetwork(reply)) => {
                self.out
                    .push_back(Output::Datagram(Path::Udp(src), reply.to_vec()));
                return Err(self.count(MeshDrop::RateLimited));
            }
            Err(TunnResult::Err(WireGuardError::InvalidMac)) => {
                return Err(self.count(MeshDrop::BadMac));
            }
            Err(_) => return Err(self.count(MeshDrop::Invalid)),
        };
        if matches!(
            packet,
            Packet::HandshakeInit(_) | Packet::HandshakeResponse(_)
        ) {
            // Under load a cookie lets a message through boringtun's limiter;
            // its source's own bucket decides whether it costs an X25519.
            self.handshakes += 1;
            if self.handshakes > HANDSHAKE_RATE_LIMIT {
                if let Some(now) = self.clock {
                    if !self.source_limiter.allow(src.ip(), now) {
                        return Err(self.count(MeshDrop::SourceLimited));
                    }
                }
            }
        }
        let (roams, answers_only) = match packet {
            Packet::HandshakeInit(_) => (false, true),
            Packet::HandshakeResponse(_) | Packet::PacketData(_) => (true, false),
            Packet::PacketCookieReply(_) => (false, false),
        };
        let id = match self.classify(&packet) {
            Ok(id) => id,
            Err(e) => return Err(self.count(e)),
        };
        if answers_only {
            // An initiation from a known peer: its session starts here.
            self.use_peer(id);
        }
        let Some(peer) = self.peers.get_mut(id.0 as usize).and_then(Option::as_mut) else {
            return Err(self.count(MeshDrop::UnknownPeer));
        };
        // Anything else names a session we started: none, nothing to decrypt.
        let Some(tunn) = peer.tunn.as_deref_mut() else {
            return Err(self.count(MeshDrop::UnknownPeer));
        };
        let mut first = true;
        loop {
            let input: &[u8] = if first { datagram } else { &[] };
            let result = tunn.decapsulate(Some(src.ip()), input, &mut self.buf);
            match result {
                TunnResult::Done => {
                    if first && roams {
                        // A keepalive: authenticated, so roaming applies.
                        peer.endpoint = Some(src);
                    }
                    break;
                }
                TunnResult::Err(_) => {
                    if first {
                        self.stats.invalid += 1;
                        return Err(MeshDrop::Invalid);
                    }
                    break;
                }
                TunnResult::WriteToNetwork(b) => {
                    // A handshake response (to an initiation: answered where
                    // it came from), the keepalive that confirms a response,
                    // or queued packets.
                    if first && roams {
                        peer.endpoint = Some(src);
                    }
                    let path = if answers_only && first {
                        Path::Udp(src)
                    } else {
                        match peer.endpoint.map(Path::Udp) {
                            Some(path) => path,
                            None => Path::Udp(src),
                        }
                    };
                    self.out.push_back(Output::Datagram(path, b.to_vec()));
                    // Keep calling with an empty datagram to flush the queue.
                }
                TunnResult::WriteToTunnelV4(b, addr) => {
                    if first && roams {
                        peer.endpoint = Some(src);
                    }
                    if peer.allowed.lookup(IpAddr::V4(addr)).is_some() {
                        self.out.push_back(Output::Packet(id, b.to_vec()));
                    } else {
                        self.stats.source_not_allowed += 1;
                    }
                    break;
                }
                TunnResult::WriteToTunnelV6(b, addr) => {
                    if first && roams {
                        peer.endpoint = Some(src);
                    }
                    if peer.allowed.lookup(IpAddr::V6(addr)).is_some() {
                        self.out.push_back(Output::Packet(id, b.to_vec()));
                    } else {
                        self.stats.source_not_allowed += 1;
                    }
                    break;
                }
            }
            first = false;
        }
        Ok(())
    }

    /// When [`Mesh::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_tick
    }

    /// Tick every peer's timers: handshake retries, rekeys, keepalives.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.clock = Some(now);
        // boringtun's limiter keeps its own one-second window.
        self.rate_limiter.reset_count();
        if self
            .window
            .is_none_or(|w| now.saturating_duration_since(w) >= LIMIT_WINDOW)
        {
            self.window = Some(now);
            self.handshakes = 0;
            self.source_limiter.forget_quiet(now);
        }
        if self.next_tick.is_none_or(|t| t > now) {
            return;
        }
        let mut due = Vec::new();
        for (i, slot) in self.peers.iter().enumerate() {
            if slot
                .as_ref()
                .is_some_and(|p| p.tunn.is_none() && p.next_keepalive.is_some_and(|t| t <= now))
            {
                // A keepalive due to a peer never used yet: it needs a session.
                due.push(PeerId(i as u32));
            }
        }
        for id in due.drain(..) {
            self.use_peer(id);
        }
        if self.buf.is_empty() && self.sessions() > 0 {
            self.buf_ready();
        }
        for peer in self.peers.iter_mut().flatten() {
            let Some(tunn) = peer.tunn.as_deref_mut() else {
                continue;
            };
            match tunn.update_timers(&mut self.buf) {
                TunnResult::WriteToNetwork(b) => {
                    if let Some(path) = peer.endpoint.map(Path::Udp) {
                        self.out.push_back(Output::Datagram(path, b.to_vec()));
                    }
                }
                TunnResult::Err(WireGuardError::ConnectionExpired) => {}
                _ => {}
            }
            if peer.next_keepalive.is_some_and(|t| t <= now) {
                peer.next_keepalive = keepalive_due(now, peer.config.persistent_keepalive);
                // An empty packet: a keepalive on a session, else queued
                // while a handshake starts (as boringtun's own timer does).
                if let TunnResult::WriteToNetwork(b) = tunn.encapsulate(&[], &mut self.buf) {
                    if let Some(path) = peer.endpoint.map(Path::Udp) {
                        self.out.push_back(Output::Datagram(path, b.to_vec()));
                    }
                }
            }
        }
        if std::mem::take(&mut self.busy) {
            self.active_until = Some(now + IDLE_AFTER);
        }
        let active = self.active_until.is_some_and(|t| t > now);
        let keepalive = self
            .peers
            .iter()
            .flatten()
            .any(|p| p.next_keepalive.is_some());
        self.next_tick = (active || keepalive).then_some(now + TIMER_TICK);
        if self.next_tick.is_none() {
            self.buf = Vec::new();
        }
    }

    /// Traffic: the timers tick (again) from the next timeout on.
    fn wake(&mut self) {
        self.busy = true;
        // Only a sleeping mesh lacks its buffer: no walk over the peers per packet.
        if self.buf.is_empty() && self.sessions() > 0 {
            self.buf_ready();
        }
        if self.next_tick.is_none() && self.peers.iter().any(Option::is_some) {
            self.next_tick = Some(self.clock.unwrap_or_else(Instant::now));
        }
    }

    /// The next thing to send or deliver.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_packet(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        // A minimal valid IPv4 header with a 4-byte payload; boringtun only
        // reads the version, length and addresses.
        let mut p = vec![0x45, 0, 0, 24, 0, 0, 0x40, 0, 64, 17, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&[1, 2, 3, 4]);
        p
    }

    fn pair() -> (Mesh, Mesh, PeerId, PeerId, SocketAddr, SocketAddr) {
        let ka = PrivateKey::generate();
        let kb = PrivateKey::generate();
        let a_addr: SocketAddr = "198.51.100.1:51820".parse().unwrap();
        let b_addr: SocketAddr = "198.51.100.2:51820".parse().unwrap();
        let now = Instant::now();
        let mut a = Mesh::new(&ka);
        let mut b = Mesh::new(&kb);
        let pb = a.add_peer(
            now,
            PeerConfig {
                name: "b".into(),
                public_key: kb.public_key(),
                preshared_key: None,
                endpoint: Some(b_addr),
                allowed_ips: vec!["10.77.0.2/32".parse().unwrap()],
                persistent_keepalive: None,
            },
        );
        let pa = b.add_peer(
            now,
            PeerConfig {
                name: "a".into(),
                public_key: ka.public_key(),
                preshared_key: None,
                endpoint: None,
                allowed_ips: vec![
                    "10.77.0.1/32".parse().unwrap(),
                    "10.77.1.0/24".parse().unwrap(),
                ],
                persistent_keepalive: None,
            },
        );
        (a, b, pb, pa, a_addr, b_addr)
    }

    /// Deliver every datagram between the two until both are quiet; return delivered packets.
    fn pump(
        a: &mut Mesh,
        b: &mut Mesh,
        a_addr: SocketAddr,
        b_addr: SocketAddr,
    ) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let (mut at_a, mut at_b) = (Vec::new(), Vec::new());
        for _ in 0..20 {
            let mut moved = false;
            while let Some(o) = a.poll_output() {
                moved = true;
                match o {
                    Output::Datagram(to, d) => {
                        assert_eq!(to, Path::Udp(b_addr));
                        let _ = b.handle_datagram(a_addr, &d);
                    }
                    Output::Packet(_, p) => at_a.push(p),
                }
            }
            while let Some(o) = b.poll_output() {
                moved = true;
                match o {
                    Output::Datagram(to, d) => {
                        assert_eq!(to, Path::Udp(a_addr));
                        let _ = a.handle_datagram(b_addr, &d);
                    }
                    Output::Packet(_, p) => at_b.push(p),
                }
            }
            if !moved {
                break;
            }
        }
        (at_a, at_b)
    }

    #[test]
    fn handshake_then_data_both_ways_and_roaming_learns_endpoint() {
        let (mut a, mut b, pb, pa, a_addr, b_addr) = pair();
        let pkt = ipv4_packet([10, 77, 1, 100], [10, 77, 0, 2]);
        a.send(pb, &pkt).unwrap();
        let (_, at_b) = pump(&mut a, &mut b, a_addr, b_addr);
        assert_eq!(
            at_b,
            vec![pkt.clone()],
            "queued packet delivered after handshake"
        );
        // b had no endpoint for a; it learned it from the handshake.
        let back = ipv4_packet([10, 77, 0, 2], [10, 77, 1, 100]);
        b.send(pa, &back).unwrap();
        let (at_a, _) = pump(&mut a, &mut b, a_addr, b_addr);
        assert_eq!(at_a, vec![back]);
        assert!(a.last_handshake(pb).is_some());
        assert_eq!(a.route("10.77.0.2".parse().unwrap()), Some(pb));
        assert_eq!(b.route("10.77.1.7".parse().unwrap()), Some(pa));
    }

    #[test]
    fn source_outside_allowed_ips_is_dropped() {
        let (mut a, mut b, pb, _pa, a_addr, b_addr) = pair();
        // b only allows 10.77.0.1 and 10.77.1.0/24 from a.
        a.send(pb, &ipv4_packet([10, 99, 0, 1], [10, 77, 0, 2]))
            .unwrap();
        let (_, at_b) = pump(&mut a, &mut b, a_addr, b_addr);
        assert!(at_b.is_empty());
        assert_eq!(b.stats().source_not_allowed, 1);
    }

    #[test]
    fn unknown_key_and_garbage_are_counted() {
        let (mut a, _b, _pb, _pa, _a_addr, b_addr) = pair();
        let mut stranger = Mesh::new(&PrivateKey::generate());
        let sp = stranger.add_peer(
            Instant::now(),
            PeerConfig {
                name: "x".into(),
                public_key: a.public_key(),
                preshared_key: None,
                endpoint: Some("198.51.100.1:51820".parse().unwrap()),
                allowed_ips: vec![],
                persistent_keepalive: None,
            },
        );
        stranger
            .send(sp, &ipv4_packet([1, 1, 1, 1], [2, 2, 2, 2]))
            .unwrap();
        let Some(Output::Datagram(_, init)) = stranger.poll_output() else {
            panic!("no handshake")
        };
        assert_eq!(a.handle_datagram(b_addr, &init), Err(MeshDrop::UnknownPeer));
        assert_eq!(a.handle_datagram(b_addr, b"hello"), Err(MeshDrop::Invalid));
        assert_eq!(
            a.handle_datagram(b_addr, &[4, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]),
            Err(MeshDrop::Invalid)
        );
        assert_eq!(a.stats().unknown_peer, 1);
        assert_eq!(a.stats().invalid, 2);
    }
}
