//! Disco: the path discovery messages tailnet nodes exchange over UDP to
//! find and confirm a direct path, and the sans-IO state that pings peers
//! and answers their pings.
//!
//! Facts (tailscale.com `disco/disco.go`, `types/key/disco.go`,
//! `wgengine/magicsock/magicsock.go` `sendDiscoMessage`, `handlePingLocked`):
//!
//! * A disco datagram is `"TS💬"` (6 bytes `54 53 f0 9f 92 ac`), the
//!   sender's disco public key (32), a nonce (24), then a NaCl box
//!   (X25519 + XSalsa20-Poly1305: 16-byte tag, then the ciphertext) of the
//!   message, sealed with the sender's disco private key for the receiver's
//!   disco public key.
//! * A message is a type byte, a version byte (0), then the payload:
//!   Ping (1) = TxID (12) + the sender's node key (32, optional) + zero
//!   padding; Pong (2) = TxID (12) + the source address the ping came from
//!   (16-byte IPv6, IPv4 mapped) + port (2, big endian); CallMeMaybe (3) =
//!   endpoints of 18 bytes each. Longer messages are accepted (future
//!   fields).
//! * Tailscale's magicsock only handles disco from a sender whose disco key
//!   is in its netmap; it answers a UDP ping with a pong to the ping's
//!   source, and adds that source as a candidate path it pings in turn. It
//!   sends WireGuard directly only on a path a pong confirmed (else over
//!   DERP), and keeps re-pinging it while in use (a confirmed path is
//!   trusted for a few seconds after each pong).
//!
//! The [`Disco`] state machine here does the same for the box: it pings
//! every endpoint of every peer (from the netmap) until one answers, keeps
//! pinging the confirmed path as a heartbeat, answers pings with pongs, and
//! reports a confirmed path as [`DiscoEvent::PathConfirmed`]; the daemon
//! then sets that peer's WireGuard endpoint. When the daemon has traffic
//! for a peer without a confirmed path ([`Disco::note_traffic`]) it also
//! sends that peer a call-me-maybe with our endpoints over the relay, as
//! magicsock's `sendDiscoPingsLocked` does, so both sides ping at once
//! and stateful firewalls let the pings through. Time and randomness are
//! passed in; it opens no socket.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use crypto_box::aead::Aead;
use crypto_box::SalsaBox;
use rand::{CryptoRng, RngCore};

use crate::keys::{DiscoPrivate, DiscoPublic, NodePublic};

/// The first six bytes of every disco datagram.
pub const MAGIC: [u8; 6] = [0x54, 0x53, 0xf0, 0x9f, 0x92, 0xac];
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = MAGIC.len() + KEY_LEN + NONCE_LEN;
const TAG_LEN: usize = 16;
const EP_LEN: usize = 18;

/// How often an unconfirmed peer's endpoints are pinged.
pub const PING_INTERVAL: Duration = Duration::from_secs(5);
/// How often a confirmed path is pinged again (heartbeat).
pub const HEARTBEAT: Duration = Duration::from_secs(3);
/// A confirmed path without a pong for this long is no longer confirmed.
pub const PATH_TIMEOUT: Duration = Duration::from_secs(15);
/// A peer with traffic (or pinging us) within this long is active; disco
/// pings only active peers (as Tailscale's session-active timeout): many
/// idle nodes in one tailnet cost no pings. An idle peer keeps its
/// confirmed path, checked again when traffic resumes.
pub const ACTIVE_TIMEOUT: Duration = Duration::from_secs(45);
/// A ping without a pong after this long is forgotten.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `p` is a disco datagram (and not WireGuard): the magic prefix
/// and room for the header. WireGuard messages start with a type byte 1–4
/// and three zero bytes, so the two never collide.
pub fn looks_like_disco(p: &[u8]) -> bool {
    p.len() >= HEADER_LEN && p[..MAGIC.len()] == MAGIC
}

/// A disco message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Are you there on this path?
    Ping {
        /// Transaction ID, echoed in the pong.
        tx_id: [u8; 12],
        /// The sender's node key (old clients leave it out).
        node_key: Option<NodePublic>,
    },
    /// Yes; and this is where your ping came from.
    Pong {
        /// The ping's transaction ID.
        tx_id: [u8; 12],
        /// The ping's source as the answering node saw it.
        src: SocketAddr,
    },
    /// Try these endpoints of mine.
    CallMeMaybe {
        /// The sender's endpoints.
        endpoints: Vec<SocketAddr>,
    },
}

/// A disco datagram that could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoError {
    /// Not a disco datagram, or too short for its message.
    #[error("disco datagram too short")]
    Short,
    /// The box did not open (wrong keys or corrupted).
    #[error("disco box does not open")]
    Crypto,
    /// A message type this node does not handle.
    #[error("unknown disco message type {0:#04x}")]
    UnknownType(u8),
}

fn put_addr(out: &mut Vec<u8>, a: SocketAddr) {
    let ip = match a.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    out.extend_from_slice(&ip.octets());
    out.extend_from_slice(&a.port().to_be_bytes());
}

fn get_addr(b: &[u8]) -> Option<SocketAddr> {
    let ip: [u8; 16] = b.get(..16)?.try_into().ok()?;
    let port = u16::from_be_bytes(b.get(16..18)?.try_into().ok()?);
    Some(SocketAddr::new(
        IpAddr::V6(Ipv6Addr::from(ip)).to_canonical(),
        port,
    ))
}

impl Message {
    /// The cleartext form (type, version, payload).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        match self {
            Message::Ping { tx_id, node_key } => {
                out.extend_from_slice(&[1, 0]);
                out.extend_from_slice(tx_id);
                if let Some(k) = node_key {
                    out.extend_from_slice(k.as_bytes());
                }
            }
            Message::Pong { tx_id, src } => {
                out.extend_from_slice(&[2, 0]);
                out.extend_from_slice(tx_id);
                put_addr(&mut out, *src);
            }
            Message::CallMeMaybe { endpoints } => {
                out.extend_from_slice(&[3, 0]);
                for e in endpoints {
                    put_addr(&mut out, *e);
                }
            }
        }
        out
    }

    /// Parses the cleartext form.
    pub fn decode(p: &[u8]) -> Result<Self, DiscoError> {
        let (&t, rest) = p.split_first().ok_or(DiscoError::Short)?;
        let (&version, body) = rest.split_first().ok_or(DiscoError::Short)?;
        let tx = |b: &[u8]| -> Result<[u8; 12], DiscoError> {
            b.get(..12)
                .and_then(|s| s.try_into().ok())
                .ok_or(DiscoError::Short)
        };
        match t {
            1 => Ok(Message::Ping {
                tx_id: tx(body)?,
                node_key: body
                    .get(12..44)
                    .and_then(|k| <[u8; 32]>::try_from(k).ok())
                    .map(NodePublic::from_bytes),
            }),
            2 => Ok(Message::Pong {
                tx_id: tx(body)?,
                src: get_addr(body.get(12..).ok_or(DiscoError::Short)?).ok_or(DiscoError::Short)?,
            }),
            3 => {
                // As Go: a malformed list is an empty one.
                let endpoints = if version == 0 && !body.is_empty() && body.len() % EP_LEN == 0 {
                    body.chunks(EP_LEN).filter_map(get_addr).collect()
                } else {
                    Vec::new()
                };
                Ok(Message::CallMeMaybe { endpoints })
            }
            other => Err(DiscoError::UnknownType(other)),
        }
    }
}

fn salsa_box(ours: &DiscoPrivate, theirs: &DiscoPublic) -> SalsaBox {
    SalsaBox::new(
        &crypto_box::PublicKey::from(*theirs.as_bytes()),
        &crypto_box::SecretKey::from(ours.to_bytes()),
    )
}

/// Seals `msg` from `ours` to `theirs`: the whole datagram.
pub fn seal(
    ours: &DiscoPrivate,
    theirs: &DiscoPublic,
    nonce: [u8; NONCE_LEN],
    msg: &Message,
) -> Vec<u8> {
    seal_with(&salsa_box(ours, theirs), &ours.public(), nonce, msg)
}

/// [`seal`] with the pair's box (its X25519 shared key) and our public key
/// already computed: what [`Disco`] keeps per peer, so that a ping costs
/// no X25519 (a box with many device nodes pings many peers).
fn seal_with(
    shared: &SalsaBox,
    ours: &DiscoPublic,
    nonce: [u8; NONCE_LEN],
    msg: &Message,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + TAG_LEN + 64);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(ours.as_bytes());
    out.extend_from_slice(&nonce);
    let n = crypto_box::Nonce::from(nonce);
    // Encrypting a small Vec with a valid key cannot fail; an empty box
    // would simply not open at the peer.
    let sealed = shared
        .encrypt(&n, msg.encode().as_slice())
        .unwrap_or_default();
    out.extend_from_slice(&sealed);
    out
}

/// The sender's disco key of a datagram that [`looks_like_disco`].
pub fn sender(p: &[u8]) -> Option<DiscoPublic> {
    if !looks_like_disco(p) {
        return None;
    }
    let k: [u8; 32] = p[MAGIC.len()..MAGIC.len() + KEY_LEN].try_into().ok()?;
    Some(DiscoPublic::from_bytes(k))
}

/// Opens a datagram sent to `ours`: the sender and the message.
pub fn open(ours: &DiscoPrivate, p: &[u8]) -> Result<(DiscoPublic, Message), DiscoError> {
    let from = sender(p).ok_or(DiscoError::Short)?;
    Ok((from, open_with(&salsa_box(ours, &from), p)?))
}

/// [`open`] with the pair's box already computed (the sender is
/// [`sender`]'s).
fn open_with(shared: &SalsaBox, p: &[u8]) -> Result<Message, DiscoError> {
    if !looks_like_disco(p) {
        return Err(DiscoError::Short);
    }
    let nonce: [u8; NONCE_LEN] = p[MAGIC.len() + KEY_LEN..HEADER_LEN]
        .try_into()
        .map_err(|_| DiscoError::Short)?;
    let sealed = &p[HEADER_LEN..];
    if sealed.len() < TAG_LEN {
        return Err(DiscoError::Short);
    }
    let clear = shared
        .decrypt(&crypto_box::Nonce::from(nonce), sealed)
        .map_err(|_| DiscoError::Crypto)?;
    Message::decode(&clear)
}

/// A datagram to send on the WireGuard socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub to: SocketAddr,
    /// The datagram.
    pub data: Vec<u8>,
}

/// Something the daemon acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoEvent {
    /// A pong confirmed this direct path to the peer with this node key (a
    /// new path, or a different one): send its WireGuard there.
    PathConfirmed {
        /// The peer's node key (its WireGuard public key).
        node_key: NodePublic,
        /// The confirmed address.
        addr: SocketAddr,
    },
    /// The confirmed path stopped answering.
    PathLost {
        /// The peer's node key.
        node_key: NodePublic,
    },
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiscoStats {
    /// Pings sent.
    pub pings_sent: u64,
    /// Pings answered.
    pub pongs_sent: u64,
    /// Pongs that matched a ping of ours.
    pub pongs_matched: u64,
    /// Datagrams from disco keys not in the netmap.
    pub unknown_sender: u64,
    /// Datagrams that did not open or parse.
    pub invalid: u64,
    /// Call-me-maybe messages sent.
    pub calls_sent: u64,
    /// Call-me-maybe messages received.
    pub calls_received: u64,
}

/// A peer as disco needs it: from the netmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoPeer {
    /// The node key (WireGuard public key).
    pub node_key: NodePublic,
    /// Its disco key.
    pub disco_key: DiscoPublic,
    /// Its endpoints from the netmap.
    pub endpoints: Vec<SocketAddr>,
    /// Where the daemon sends to it over DERP (its relay stand-in), for
    /// call-me-maybe; None: no relay.
    pub relay: Option<SocketAddr>,
}

struct PeerState {
    /// The box sealing to and opening from this peer (the X25519 shared
    /// key of our disco key and its), made once per disco key.
    shared: SalsaBox,
    node_key: NodePublic,
    /// Netmap endpoints, then candidates learnt from pings and call-me-maybe.
    candidates: Vec<SocketAddr>,
    sent: HashMap<[u8; 12], (SocketAddr, Instant)>,
    best: Option<SocketAddr>,
    last_pong: Option<Instant>,
    next_ping: Instant,
    relay: Option<SocketAddr>,
    last_call: Option<Instant>,
    /// Active until then ([`ACTIVE_TIMEOUT`]).
    active_until: Option<Instant>,
}

impl PeerState {
    /// Pinged now: traffic or a ping lately, or no relay to fall back on
    /// (then disco is the only way to a path).
    fn is_active(&self, now: Instant) -> bool {
        self.relay.is_none() || self.active_until.is_some_and(|t| now < t)
    }

    /// Traffic with the peer: active from now; back from idle, its
    /// endpoints are pinged at once and a kept path gets a fresh grace.
    fn activate(&mut self, now: Instant) {
        if !self.is_active(now) {
            self.next_ping = now;
            if self.best.is_some() {
                self.last_pong = Some(now);
            }
        }
        self.active_until = Some(now + ACTIVE_TIMEOUT);
    }
}

/// The disco state of the box: ping, pong, path confirmation.
pub struct Disco<R> {
    private: DiscoPrivate,
    public: DiscoPublic,
    node_key: NodePublic,
    rng: R,
    peers: HashMap<DiscoPublic, PeerState>,
    out: VecDeque<Transmit>,
    events: VecDeque<DiscoEvent>,
    stats: DiscoStats,
    /// Our endpoints, offered in call-me-maybe.
    own: Vec<SocketAddr>,
}

impl<R: RngCore + CryptoRng> Disco<R> {
    /// Disco with our disco key and node key; `rng` draws transaction IDs
    /// and nonces.
    pub fn new(private: DiscoPrivate, node_key: NodePublic, rng: R) -> Self {
        Self {
            public: private.public(),
            private,
            node_key,
            rng,
            peers: HashMap::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            stats: DiscoStats::default(),
            own: Vec::new(),
        }
    }

    /// Our disco public key.
    pub fn public(&self) -> DiscoPublic {
        self.public
    }

    /// The peers from the latest netmap. Known peers keep their state
    /// (confirmed path); new ones are pinged at once.
    pub fn set_peers(&mut self, now: Instant, peers: &[DiscoPeer]) {
        let mut next = HashMap::with_capacity(peers.len());
        for p in peers {
            let mut st = self
                .peers
                .remove(&p.disco_key)
                .unwrap_or_else(|| PeerState {
                    shared: salsa_box(&self.private, &p.disco_key),
                    node_key: p.node_key,
                    candidates: Vec::new(),
                    sent: HashMap::new(),
                    best: None,
                    last_pong: None,
                    next_ping: now,
                    relay: None,
                    last_call: None,
                    active_until: None,
                });
            st.relay = p.relay;
            if st.node_key != p.node_key {
                st.node_key = p.node_key;
                st.best = None;
                st.last_pong = None;
            }
            for e in &p.endpoints {
                if !st.candidates.contains(e) {
                    st.candidates.push(*e);
                    st.next_ping = now;
                }
            }
            next.insert(p.disco_key, st);
        }
        self.peers = next;
    }

    /// Our endpoints (local and STUN), offered to peers in call-me-maybe.
    pub fn set_own_endpoints(&mut self, endpoints: Vec<SocketAddr>) {
        self.own = endpoints;
    }

    /// The daemon has traffic for the peer with this node key. Without a
    /// confirmed direct path (so it goes over DERP) the box starts
    /// discovery as tailscale's `endpoint.send` does: it pings every
    /// candidate endpoint now and sends a call-me-maybe with our endpoints
    /// over the relay, so that the peer pings us at the same time and both
    /// firewalls let the other's pings in. At most once per
    /// [`PING_INTERVAL`] per peer.
    pub fn note_traffic(&mut self, now: Instant, node_key: &NodePublic) {
        let Some((disco, st)) = self.peers.iter_mut().find(|(_, p)| p.node_key == *node_key) else {
            return;
        };
        st.activate(now);
        if st.best.is_some()
            || st
                .last_call
                .is_some_and(|t| now.duration_since(t) < PING_INTERVAL)
        {
            return;
        }
        st.last_call = Some(now);
        let disco = *disco;
        let relay = st.relay;
        let candidates = st.candidates.clone();
        st.next_ping = now + PING_INTERVAL;
        for c in candidates {
            self.ping(now, disco, c);
        }
        if let Some(relay) = relay.filter(|_| !self.own.is_empty()) {
            let msg = Message::CallMeMaybe {
                endpoints: self.own.clone(),
            };
            self.stats.calls_sent += 1;
            self.send(relay, disco, &msg);
        }
    }

    /// Traffic with the peer with this node key (over any path): disco
    /// keeps its path checked while it lasts ([`ACTIVE_TIMEOUT`]).
    pub fn note_active(&mut self, now: Instant, node_key: &NodePublic) {
        if let Some(st) = self.peers.values_mut().find(|p| p.node_key == *node_key) {
            st.activate(now);
        }
    }

    /// The confirmed path to the peer with this node key.
    pub fn best_path(&self, node_key: &NodePublic) -> Option<SocketAddr> {
        self.peers
            .values()
            .find(|p| p.node_key == *node_key)
            .and_then(|p| p.best)
    }

    fn nonce(&mut self) -> [u8; NONCE_LEN] {
        let mut n = [0u8; NONCE_LEN];
        self.rng.fill_bytes(&mut n);
        n
    }

    /// Seals `msg` to a peer of the netmap (others get nothing).
    fn send(&mut self, to: SocketAddr, theirs: DiscoPublic, msg: &Message) {
        let nonce = self.nonce();
        let Some(st) = self.peers.get(&theirs) else {
            return;
        };
        let data = seal_with(&st.shared, &self.public, nonce, msg);
        self.out.push_back(Transmit { to, data });
    }

    fn ping(&mut self, now: Instant, disco: DiscoPublic, to: SocketAddr) {
        let mut tx_id = [0u8; 12];
        self.rng.fill_bytes(&mut tx_id);
        if let Some(st) = self.peers.get_mut(&disco) {
            st.sent.insert(tx_id, (to, now));
        }
        let msg = Message::Ping {
            tx_id,
            node_key: Some(self.node_key),
        };
        self.stats.pings_sent += 1;
        self.send(to, disco, &msg);
    }

    /// A disco datagram arrived from `src` (the caller checked
    /// [`looks_like_disco`]). Bad input is counted and dropped.
    pub fn handle_datagram(&mut self, now: Instant, src: SocketAddr, p: &[u8]) {
        self.handle(now, src, p, false);
    }

    /// A disco datagram that came over a relay (DERP); `via` is the
    /// address the daemon uses for that peer's relay path. Pings are
    /// answered (back over the relay) but `via` never becomes a candidate
    /// or a confirmed direct path; call-me-maybe endpoints become
    /// candidates.
    pub fn handle_relayed(&mut self, now: Instant, via: SocketAddr, p: &[u8]) {
        self.handle(now, via, p, true);
    }

    fn handle(&mut self, now: Instant, src: SocketAddr, p: &[u8], relayed: bool) {
        let src = SocketAddr::new(src.ip().to_canonical(), src.port());
        let Some(from) = sender(p) else {
            self.stats.invalid += 1;
            return;
        };
        let Some(st) = self.peers.get(&from) else {
            self.stats.unknown_sender += 1;
            return;
        };
        let msg = match open_with(&st.shared, p) {
            Ok(m) => m,
            Err(_) => {
                self.stats.invalid += 1;
                return;
            }
        };
        match msg {
            Message::Ping { tx_id, .. } => {
                // The peer wants to talk and we have no path to it yet: ping
                // back for a while (hole punching). With a path, its pings
                // do not keep ours going (else two peers' heartbeats would
                // keep each other active forever): only traffic does.
                if let Some(st) = self.peers.get_mut(&from) {
                    if st.best.is_none() {
                        st.activate(now);
                    }
                }
                self.stats.pongs_sent += 1;
                self.send(src, from, &Message::Pong { tx_id, src });
                if relayed {
                    return;
                }
                // The peer reaches us from there: try the way back too.
                let new = self
                    .peers
                    .get_mut(&from)
                    .map(|st| {
                        let new = !st.candidates.contains(&src);
                        if new {
                            st.candidates.push(src);
                        }
                        new || st.best.is_none()
                    })
                    .unwrap_or(false);
                let recently = self.peers.get(&from).is_some_and(|st| {
                    st.sent.values().any(|(to, at)| {
                        *to == src && now.duration_since(*at) < Duration::from_secs(1)
                    })
                });
                if new && !recently {
                    self.ping(now, from, src);
                }
            }
            Message::Pong { tx_id, .. } => {
                let Some(st) = self.peers.get_mut(&from) else {
                    return;
                };
                if relayed {
                    return;
                }
                let Some((to, _)) = st.sent.remove(&tx_id) else {
                    return;
                };
                if to != src {
                    // A pong must come back from the address pinged.
                    return;
                }
                self.stats.pongs_matched += 1;
                st.last_pong = Some(now);
                if st.best != Some(src) {
                    // The first path that answers wins; a later one only
                    // replaces it when it stopped answering (PATH_TIMEOUT).
                    st.best = Some(src);
                    st.next_ping = now + HEARTBEAT;
                    self.events.push_back(DiscoEvent::PathConfirmed {
                        node_key: st.node_key,
                        addr: src,
                    });
                }
            }
            Message::CallMeMaybe { endpoints } => {
                self.stats.calls_received += 1;
                if let Some(st) = self.peers.get_mut(&from) {
                    st.activate(now);
                    for e in endpoints {
                        if !st.candidates.contains(&e) {
                            st.candidates.push(e);
                        }
                    }
                    st.next_ping = now;
                }
            }
        }
    }

    /// Timers: pings due, paths that stopped answering.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = Vec::new();
        for (disco, st) in self.peers.iter_mut() {
            st.sent
                .retain(|_, (_, at)| now.duration_since(*at) < PING_TIMEOUT);
            if !st.is_active(now) {
                // Idle: nothing due until traffic makes it active again.
                st.next_ping = st.next_ping.max(now);
                continue;
            }
            if st.best.is_some()
                && st
                    .last_pong
                    .is_none_or(|t| now.duration_since(t) >= PATH_TIMEOUT)
            {
                st.best = None;
                self.events.push_back(DiscoEvent::PathLost {
                    node_key: st.node_key,
                });
            }
            if now < st.next_ping {
                continue;
            }
            match st.best {
                Some(b) => {
                    due.push((*disco, b));
                    st.next_ping = now + HEARTBEAT;
                }
                None => {
                    due.extend(st.candidates.iter().map(|c| (*disco, *c)));
                    st.next_ping = now + PING_INTERVAL;
                }
            }
        }
        for (disco, to) in due {
            self.ping(now, disco, to);
        }
    }

    /// When [`Disco::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter(|st| st.best.is_some() || !st.candidates.is_empty())
            .map(|st| {
                let expiry = st.last_pong.map(|t| t + PATH_TIMEOUT);
                match expiry {
                    Some(e) if st.best.is_some() => st.next_ping.min(e),
                    _ => st.next_ping,
                }
            })
            .zip(
                self.peers
                    .values()
                    .filter(|st| st.best.is_some() || !st.candidates.is_empty()),
            )
            // A peer idle by then wakes nothing; traffic makes it active.
            .filter(|(due, st)| st.relay.is_none() || st.active_until.is_some_and(|t| t > *due))
            .map(|(due, _)| due)
            .min()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<DiscoEvent> {
        self.events.pop_front()
    }

    /// Counters.
    pub fn stats(&self) -> DiscoStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn key(seed: u64) -> DiscoPrivate {
        DiscoPrivate::generate(&mut StdRng::seed_from_u64(seed))
    }

    #[test]
    fn messages_round_trip_in_the_go_layout() {
        let ping = Message::Ping {
            tx_id: [7; 12],
            node_key: Some(NodePublic::from_bytes([9; 32])),
        };
        let b = ping.encode();
        assert_eq!(&b[..2], &[1, 0]);
        assert_eq!(b.len(), 2 + 12 + 32);
        assert_eq!(Message::decode(&b).unwrap(), ping);
        // Old clients: no node key; padding ignored.
        let mut old = vec![1, 0];
        old.extend_from_slice(&[7; 12]);
        assert_eq!(
            Message::decode(&old).unwrap(),
            Message::Ping {
                tx_id: [7; 12],
                node_key: None
            }
        );
        let pong = Message::Pong {
            tx_id: [1; 12],
            src: "192.0.2.7:41641".parse().unwrap(),
        };
        let b = pong.encode();
        assert_eq!(b.len(), 2 + 12 + 18);
        // IPv4 as a mapped IPv6 address, port big endian.
        assert_eq!(
            &b[14..30],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 7]
        );
        assert_eq!(&b[30..], &41641u16.to_be_bytes());
        assert_eq!(Message::decode(&b).unwrap(), pong);
        let cmm = Message::CallMeMaybe {
            endpoints: vec![
                "[2001:db8::1]:1".parse().unwrap(),
                "10.0.0.1:2".parse().unwrap(),
            ],
        };
        assert_eq!(Message::decode(&cmm.encode()).unwrap(), cmm);
        for bad in [&[][..], &[1], &[1, 0, 1, 2], &[2, 0, 1], &[9, 0]] {
            assert!(Message::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sealed_datagrams_open_only_for_the_receiver() {
        let (a, b, c) = (key(1), key(2), key(3));
        let msg = Message::Ping {
            tx_id: [3; 12],
            node_key: None,
        };
        let d = seal(&a, &b.public(), [5; 24], &msg);
        assert!(looks_like_disco(&d));
        assert_eq!(&d[..6], "TS💬".as_bytes());
        assert_eq!(&d[6..38], a.public().as_bytes());
        assert_eq!(&d[38..62], &[5; 24]);
        assert_eq!(open(&b, &d).unwrap(), (a.public(), msg));
        assert_eq!(open(&c, &d), Err(DiscoError::Crypto));
        let mut flipped = d.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(open(&b, &flipped), Err(DiscoError::Crypto));
        assert_eq!(open(&b, &d[..HEADER_LEN + 3]), Err(DiscoError::Short));
        // WireGuard never looks like disco.
        assert!(!looks_like_disco(&[1, 0, 0, 0, 0x54, 0x53]));
        assert!(!looks_like_disco(&[4u8; 148]));
    }

    /// The NaCl box layout (tag before ciphertext) against a known answer
    /// computed with Go's golang.org/x/crypto/nacl/box.
    #[test]
    fn nacl_box_known_answer() {
        let a = DiscoPrivate::from_bytes([1; 32]);
        let b = DiscoPrivate::from_bytes([2; 32]);
        let d = seal(
            &a,
            &b.public(),
            [0; 24],
            &Message::CallMeMaybe { endpoints: vec![] },
        );
        assert_eq!(
            hex::encode(&d[HEADER_LEN..]),
            GO_BOX_HEX,
            "box.Seal(nil, []byte{{3,0}}, &[24]byte{{}}, pub([2;32]), &[1;32]) in Go"
        );
    }
    const GO_BOX_HEX: &str = "b7ccac3f03c788fb4bcb01f5b38189e08c11";

    struct Node {
        disco: Disco<StdRng>,
        addr: SocketAddr,
        node_key: NodePublic,
    }

    fn node(seed: u64, addr: &str) -> Node {
        let nk = NodePublic::from_bytes([seed as u8; 32]);
        Node {
            disco: Disco::new(key(seed), nk, StdRng::seed_from_u64(seed + 100)),
            addr: addr.parse().unwrap(),
            node_key: nk,
        }
    }

    /// `n` as a peer: its keys, these endpoints and this DERP relay.
    fn peer_of(n: &Node, endpoints: Vec<SocketAddr>, relay: Option<SocketAddr>) -> DiscoPeer {
        DiscoPeer {
            node_key: n.node_key,
            disco_key: n.disco.public(),
            endpoints,
            relay,
        }
    }

    /// Deliver everything `from` wants to send to `to` (if addressed to it).
    fn deliver(now: Instant, from: &mut Node, to: &mut Node) -> usize {
        let mut n = 0;
        while let Some(t) = from.disco.poll_transmit() {
            if t.to == to.addr {
                to.disco.handle_datagram(now, from.addr, &t.data);
                n += 1;
            }
        }
        n
    }

    /// Disco pings a peer only while there is traffic with it: an idle
    /// peer keeps its path but wakes nothing (no timeout in the past, no
    /// pings); traffic makes it active again, and its path is checked.
    #[test]
    fn idle_peers_are_not_pinged_and_never_make_a_busy_loop() {
        let t0 = Instant::now();
        let relay: SocketAddr = "[100::1]:900".parse().unwrap();
        let mut a = node(1, "192.0.2.1:41641");
        let mut b = node(2, "192.0.2.2:41641");
        a.disco
            .set_peers(t0, &[peer_of(&b, vec![b.addr], Some(relay))]);
        b.disco
            .set_peers(t0, &[peer_of(&a, vec![a.addr], Some(relay))]);
        // Nothing to do while idle.
        a.disco.handle_timeout(t0);
        assert!(
            a.disco.poll_transmit().is_none(),
            "no pings without traffic"
        );
        assert_eq!(a.disco.poll_timeout(), None);
        // Traffic: pings, a path.
        a.disco.note_active(t0, &b.node_key);
        let mut now = t0;
        for _ in 0..20 {
            a.disco.handle_timeout(now);
            b.disco.handle_timeout(now);
            deliver(now, &mut a, &mut b);
            deliver(now, &mut b, &mut a);
            now += Duration::from_millis(500);
        }
        assert_eq!(a.disco.best_path(&b.node_key), Some(b.addr));
        // Idle again (no more traffic): the timers end; the path stays.
        // Both sides' timers run and their pings are delivered: the two
        // heartbeats must not keep each other going.
        let mut t = now;
        while t < now + ACTIVE_TIMEOUT * 3 {
            a.disco.handle_timeout(t);
            b.disco.handle_timeout(t);
            deliver(t, &mut a, &mut b);
            deliver(t, &mut b, &mut a);
            t += Duration::from_secs(1);
        }
        let (pings_a, pings_b) = (a.disco.stats().pings_sent, b.disco.stats().pings_sent);
        for i in 0..100 {
            let at = t + Duration::from_millis(i * 100);
            a.disco.handle_timeout(at);
            b.disco.handle_timeout(at);
            deliver(at, &mut a, &mut b);
            deliver(at, &mut b, &mut a);
            for d in [&a.disco, &b.disco] {
                if let Some(due) = d.poll_timeout() {
                    assert!(due > at, "a timeout in the past while idle: a busy loop");
                }
            }
        }
        assert_eq!(a.disco.stats().pings_sent, pings_a, "no pings while idle");
        assert_eq!(b.disco.stats().pings_sent, pings_b, "no pings while idle");
        assert_eq!(
            a.disco.best_path(&b.node_key),
            Some(b.addr),
            "the idle path is kept"
        );
        // Traffic again: pinged at once, the path checked and kept.
        a.disco.note_active(t, &b.node_key);
        assert_eq!(a.disco.poll_timeout(), Some(t));
        a.disco.handle_timeout(t);
        assert!(deliver(t, &mut a, &mut b) > 0);
        deliver(t, &mut b, &mut a);
        assert_eq!(a.disco.best_path(&b.node_key), Some(b.addr));
    }

    /// A ping over DERP gets a pong back over DERP, but the relay address
    /// never becomes a candidate or a confirmed path; call-me-maybe over
    /// DERP gives candidates that are pinged directly.
    #[test]
    fn relayed_pings_are_answered_without_making_the_relay_a_path() {
        let t0 = Instant::now();
        let mut a = node(1, "192.0.2.1:41641");
        let b = node(2, "192.0.2.2:41641");
        let via: SocketAddr = "[100::1]:900".parse().unwrap();
        a.disco.set_peers(t0, &[peer_of(&b, vec![], None)]);
        let bk = key(2);
        let ping = seal(
            &bk,
            &a.disco.public(),
            [1; 24],
            &Message::Ping {
                tx_id: [5; 12],
                node_key: Some(b.node_key),
            },
        );
        a.disco.handle_relayed(t0, via, &ping);
        let pong = a.disco.poll_transmit().expect("a pong");
        assert_eq!(pong.to, via, "back over the relay");
        let (_, m) = open(&bk, &pong.data).unwrap();
        assert!(matches!(m, Message::Pong { tx_id, .. } if tx_id == [5; 12]));
        assert!(
            a.disco.poll_transmit().is_none(),
            "the relay is not pinged as a path"
        );
        assert!(a.disco.poll_event().is_none());
        let cmm = seal(
            &bk,
            &a.disco.public(),
            [2; 24],
            &Message::CallMeMaybe {
                endpoints: vec![b.addr],
            },
        );
        a.disco.handle_relayed(t0, via, &cmm);
        a.disco.handle_timeout(t0);
        let p = a
            .disco
            .poll_transmit()
            .expect("a direct ping after call-me-maybe");
        assert_eq!(p.to, b.addr);
    }

    #[test]
    fn two_nodes_confirm_a_direct_path_and_lose_it_when_silent() {
        let t0 = Instant::now();
        let mut a = node(1, "192.0.2.1:41641");
        let mut b = node(2, "192.0.2.2:41641");
        // a knows b's endpoints (one dead); b knows none of a's.
        a.disco.set_peers(
            t0,
            &[peer_of(
                &b,
                vec!["198.51.100.9:1".parse().unwrap(), b.addr],
                None,
            )],
        );
        b.disco.set_peers(t0, &[peer_of(&a, vec![], None)]);
        assert_eq!(a.disco.poll_timeout(), Some(t0));
        assert_eq!(b.disco.poll_timeout(), None, "nothing to ping yet");
        a.disco.handle_timeout(t0);
        assert_eq!(a.disco.stats().pings_sent, 2);
        // b gets the ping, answers, and pings a back on the new path.
        assert_eq!(deliver(t0, &mut a, &mut b), 1);
        assert_eq!(b.disco.stats().pongs_sent, 1);
        assert_eq!(b.disco.stats().pings_sent, 1);
        assert_eq!(deliver(t0, &mut b, &mut a), 2);
        assert_eq!(
            a.disco.poll_event(),
            Some(DiscoEvent::PathConfirmed {
                node_key: b.node_key,
                addr: b.addr
            })
        );
        assert_eq!(a.disco.best_path(&b.node_key), Some(b.addr));
        deliver(t0, &mut a, &mut b);
        assert_eq!(
            b.disco.poll_event(),
            Some(DiscoEvent::PathConfirmed {
                node_key: a.node_key,
                addr: a.addr
            })
        );
        // A datagram from a stranger is counted and dropped.
        let stranger = key(9);
        let d = seal(
            &stranger,
            &a.disco.public(),
            [0; 24],
            &Message::CallMeMaybe { endpoints: vec![] },
        );
        a.disco.handle_datagram(t0, b.addr, &d);
        assert_eq!(a.disco.stats().unknown_sender, 1);
        // Heartbeats keep the path; silence loses it.
        let t1 = t0 + HEARTBEAT;
        a.disco.handle_timeout(t1);
        deliver(t1, &mut a, &mut b);
        deliver(t1, &mut b, &mut a);
        assert_eq!(a.disco.poll_event(), None);
        let t2 = t1 + PATH_TIMEOUT;
        a.disco.handle_timeout(t2);
        assert_eq!(
            a.disco.poll_event(),
            Some(DiscoEvent::PathLost {
                node_key: b.node_key
            })
        );
        // A pong from another address than the one pinged is ignored.
        while a.disco.poll_transmit().is_some() {}
        a.disco.handle_timeout(t2 + PING_INTERVAL);
        let pings: Vec<_> = std::iter::from_fn(|| a.disco.poll_transmit()).collect();
        assert_eq!(pings.len(), 2);
        for p in pings.iter().filter(|p| p.to == b.addr) {
            b.disco
                .handle_datagram(t2, "203.0.113.1:9".parse().unwrap(), &p.data);
        }
        let pong = b.disco.poll_transmit().unwrap();
        a.disco
            .handle_datagram(t2, "203.0.113.1:9".parse().unwrap(), &pong.data);
        assert_eq!(a.disco.poll_event(), None);
        assert_eq!(a.disco.best_path(&b.node_key), None);
    }

    /// Two nodes behind stateful firewalls (inbound UDP only from addresses
    /// they sent to): `a` has traffic for `b`, knows `b`'s endpoint; `b`
    /// knows none of `a`'s. Pinging alone never gets through `b`'s
    /// firewall; `a`'s call-me-maybe over the relay makes `b` ping back,
    /// and the path becomes direct on both sides.
    #[test]
    fn call_me_maybe_over_the_relay_punches_through_both_firewalls() {
        use std::collections::HashSet;
        let relay_of_b: SocketAddr = "[100::2]:900".parse().unwrap();
        let relay_of_a: SocketAddr = "[100::1]:900".parse().unwrap();
        let step = |now: Instant,
                    from: &mut Node,
                    to: &mut Node,
                    holes: &mut HashSet<(SocketAddr, SocketAddr)>| {
            while let Some(t) = from.disco.poll_transmit() {
                if t.to == relay_of_b || t.to == relay_of_a {
                    let via = if t.to == relay_of_b {
                        relay_of_a
                    } else {
                        relay_of_b
                    };
                    to.disco.handle_relayed(now, via, &t.data);
                    continue;
                }
                holes.insert((from.addr, t.to));
                if t.to == to.addr && holes.contains(&(to.addr, from.addr)) {
                    to.disco.handle_datagram(now, from.addr, &t.data);
                }
            }
        };
        let run = |call: bool| -> (bool, bool, u64) {
            let t0 = Instant::now();
            let mut a = node(1, "192.0.2.1:41641");
            let mut b = node(2, "198.51.100.2:41641");
            a.disco.set_own_endpoints(vec![a.addr]);
            b.disco.set_own_endpoints(vec![b.addr]);
            a.disco
                .set_peers(t0, &[peer_of(&b, vec![b.addr], Some(relay_of_b))]);
            b.disco
                .set_peers(t0, &[peer_of(&a, vec![], Some(relay_of_a))]);
            // Outbound-opened holes: (owner, remote).
            let mut holes: HashSet<(SocketAddr, SocketAddr)> = HashSet::new();
            let mut now = t0;
            for _ in 0..10 {
                if call {
                    a.disco.note_traffic(now, &b.node_key);
                }
                for _ in 0..4 {
                    a.disco.handle_timeout(now);
                    b.disco.handle_timeout(now);
                    step(now, &mut a, &mut b, &mut holes);
                    step(now, &mut b, &mut a, &mut holes);
                }
                now += PING_INTERVAL;
            }
            (
                a.disco.best_path(&b.node_key) == Some(b.addr),
                b.disco.best_path(&a.node_key) == Some(a.addr),
                a.disco.stats().calls_sent,
            )
        };
        assert_eq!(run(false), (false, false, 0), "pings alone are dropped");
        let (a_direct, b_direct, calls) = run(true);
        assert!(a_direct && b_direct, "direct on both sides");
        assert!(
            (1..=2).contains(&calls),
            "stops once the path is direct: {calls}"
        );
    }

    #[test]
    fn call_me_maybe_is_sent_once_per_interval_and_only_without_a_path() {
        let t0 = Instant::now();
        let mut a = node(1, "192.0.2.1:41641");
        let b = node(2, "192.0.2.2:41641");
        let relay: SocketAddr = "[100::2]:900".parse().unwrap();
        a.disco
            .set_peers(t0, &[peer_of(&b, vec![b.addr], Some(relay))]);
        a.disco.note_traffic(t0, &b.node_key);
        assert!(
            a.disco.poll_transmit().is_some_and(|t| t.to == b.addr),
            "a ping first"
        );
        assert!(
            a.disco.poll_transmit().is_none(),
            "no endpoints of ours: no call"
        );
        a.disco.set_own_endpoints(vec![a.addr]);
        a.disco
            .note_traffic(t0 + Duration::from_secs(1), &b.node_key);
        assert!(a.disco.poll_transmit().is_none(), "rate limited");
        a.disco.note_traffic(t0 + PING_INTERVAL, &b.node_key);
        let out: Vec<_> = std::iter::from_fn(|| a.disco.poll_transmit()).collect();
        assert_eq!(out.len(), 2);
        let call = out
            .iter()
            .find(|t| t.to == relay)
            .expect("a call over the relay");
        assert_eq!(
            open(&key(2), &call.data).unwrap().1,
            Message::CallMeMaybe {
                endpoints: vec![a.addr]
            }
        );
        // Unknown peers are ignored.
        a.disco
            .note_traffic(t0 + PING_INTERVAL * 3, &NodePublic::from_bytes([77; 32]));
        assert!(a.disco.poll_transmit().is_none());
    }
}
