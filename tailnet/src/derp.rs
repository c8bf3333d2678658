//! DERP: the relay protocol tailnet nodes fall back to when no direct UDP
//! path works. A sans-IO client: bytes in, bytes out, events; the daemon
//! owns the TCP/TLS connection and the clock.
//!
//! Facts (tailscale.com `derp/derp.go`, `derp/derp_client.go`,
//! `derp/derphttp/derphttp_client.go`, `types/key/node.go`):
//!
//! * The client opens TLS to the node's `HostName` (port `DERPPort`, 443 by
//!   default) and sends `GET /derp HTTP/1.1` with `Upgrade: DERP` and
//!   `Connection: Upgrade`. The server answers `101 Switching Protocols`
//!   and the DERP frames start right after the header.
//! * A frame is a type byte, a 4-byte **big-endian** length, then that
//!   many bytes. A packet carries at most 64 KiB; informational frames up
//!   to 1 MiB.
//! * Login: the server sends ServerKey (0x01: the 8-byte magic `"DERP🔑"`,
//!   its 32-byte public key, maybe more); the client answers ClientInfo
//!   (0x02: its node public key, then a NaCl box — 24-byte nonce, then
//!   X25519/XSalsa20-Poly1305 — from its node key to the server's key of
//!   the JSON `{"version":2,"CanAckPings":true}`); the server answers
//!   ServerInfo (0x03: a NaCl box the other way of JSON with optional
//!   `TokenBucketBytesPerSecond`/`TokenBucketBytesBurst`).
//! * Steady state: SendPacket (0x04: destination node key + packet) goes
//!   to the server; RecvPacket (0x05: source node key + packet) comes back.
//!   NotePreferred (0x07, one byte 1/0) tells the server this is the
//!   client's home region. The server sends KeepAlive (0x06, empty) at
//!   least every 60 s, Ping (0x12, 8 bytes: answer Pong 0x13 with the same
//!   8 bytes), PeerGone (0x08: key + optional reason byte), PeerPresent
//!   (0x09), Health (0x14: a problem text; empty clears it) and Restarting
//!   (0x15: two big-endian u32 milliseconds: reconnect after, try for).
//!   Unknown frame types are skipped.
//!
//! The payload of a relayed packet is what would have gone over UDP: a
//! WireGuard message or a disco datagram (`"TS💬"` prefix).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crypto_box::aead::Aead;
use crypto_box::SalsaBox;
use serde::{Deserialize, Serialize};

use crate::keys::{NodePrivate, NodePublic};

/// The magic at the start of the ServerKey frame: `"DERP🔑"`.
pub const MAGIC: [u8; 8] = [0x44, 0x45, 0x52, 0x50, 0xf0, 0x9f, 0x94, 0x91];
/// The protocol version we speak (source keys in RecvPacket).
pub const PROTOCOL_VERSION: u32 = 2;
/// Largest packet the server relays.
pub const MAX_PACKET_SIZE: usize = 64 << 10;
/// Largest informational payload (ServerInfo JSON).
pub const MAX_INFO_LEN: usize = 1 << 20;
/// Frame header: type + u32 length.
pub const FRAME_HEADER_LEN: usize = 5;
/// The server sends something at least this often.
pub const KEEP_ALIVE: Duration = Duration::from_secs(60);
/// A connection silent this long is dead (twice the keep-alive).
pub const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest frame we accept: an info frame with its nonce, key and tag.
const MAX_FRAME_LEN: usize = MAX_INFO_LEN + 32 + 24 + 16;
/// Most bytes of HTTP response header we buffer.
const MAX_HTTP_HEADER: usize = 16 << 10;
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

/// Frame types.
#[allow(missing_docs)]
pub mod frame {
    pub const SERVER_KEY: u8 = 0x01;
    pub const CLIENT_INFO: u8 = 0x02;
    pub const SERVER_INFO: u8 = 0x03;
    pub const SEND_PACKET: u8 = 0x04;
    pub const RECV_PACKET: u8 = 0x05;
    pub const KEEP_ALIVE: u8 = 0x06;
    pub const NOTE_PREFERRED: u8 = 0x07;
    pub const PEER_GONE: u8 = 0x08;
    pub const PEER_PRESENT: u8 = 0x09;
    pub const PING: u8 = 0x12;
    pub const PONG: u8 = 0x13;
    pub const HEALTH: u8 = 0x14;
    pub const RESTARTING: u8 = 0x15;
}

/// What can go wrong on a DERP connection. Every error ends the connection
/// (the daemon reconnects).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DerpError {
    /// The HTTP answer to the upgrade was not `101`.
    #[error("the DERP server refused the upgrade (HTTP {0})")]
    UpgradeRefused(u16),
    /// The HTTP answer did not parse or was too long.
    #[error("the DERP server's HTTP answer is malformed")]
    BadHttp,
    /// A frame longer than any the protocol allows.
    #[error("DERP frame of {0} bytes is too long")]
    FrameTooLong(usize),
    /// The first frame was not a valid ServerKey.
    #[error("the DERP server's greeting is not a server key frame")]
    BadGreeting,
    /// The ServerInfo box did not open or its JSON did not parse.
    #[error("the DERP server's info frame does not open with our key")]
    BadServerInfo,
    /// A frame before the login finished that does not belong there.
    #[error("unexpected DERP frame 0x{0:02x} during login")]
    Unexpected(u8),
    /// A packet larger than [`MAX_PACKET_SIZE`].
    #[error("packet of {0} bytes is too large for DERP")]
    PacketTooLarge(usize),
    /// Nothing from the server for [`READ_TIMEOUT`].
    #[error("the DERP server was silent for {0:?}")]
    Silent(Duration),
}

/// The JSON the client sends in ClientInfo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// DERP protocol version.
    #[serde(rename = "version")]
    pub version: u32,
    /// Whether we answer pings.
    #[serde(rename = "CanAckPings")]
    pub can_ack_pings: bool,
}

/// The JSON in ServerInfo.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ServerInfo {
    /// The server's rate limit for this client (0: none).
    #[serde(rename = "TokenBucketBytesPerSecond", default)]
    pub token_bucket_bytes_per_second: u64,
    /// Burst of that limit.
    #[serde(rename = "TokenBucketBytesBurst", default)]
    pub token_bucket_bytes_burst: u64,
}

/// The HTTP/1.1 upgrade request for `host` (the node's host name, with the
/// port when it is not the default).
pub fn upgrade_request(host: &str) -> Vec<u8> {
    format!(
        "GET /derp HTTP/1.1\r\nHost: {host}\r\nUser-Agent: meshbridge\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n"
    )
    .into_bytes()
}

/// Parses the answer to [`upgrade_request`]: `Ok(None)` needs more bytes,
/// `Ok(Some(n))` is a `101` whose header is `n` bytes long (DERP frames
/// follow).
pub fn parse_upgrade_response(buf: &[u8]) -> Result<Option<usize>, DerpError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => match resp.code {
            Some(101) => Ok(Some(n)),
            Some(c) => Err(DerpError::UpgradeRefused(c)),
            None => Err(DerpError::BadHttp),
        },
        Ok(httparse::Status::Partial) if buf.len() > MAX_HTTP_HEADER => Err(DerpError::BadHttp),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(DerpError::BadHttp),
    }
}

/// One frame: type byte, big-endian length, payload.
pub fn encode_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    out.push(kind);
    // Payloads are bounded far below 4 GiB by every caller.
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Splits a byte stream into frames (any split of the input).
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if one is buffered. A length over the limit is
    /// an error before anything is buffered for it.
    pub fn next_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, DerpError> {
        if self.buf.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_FRAME_LEN {
            return Err(DerpError::FrameTooLong(len));
        }
        if self.buf.len() < FRAME_HEADER_LEN + len {
            return Ok(None);
        }
        let kind = self.buf[0];
        let payload = self.buf[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len].to_vec();
        self.buf.drain(..FRAME_HEADER_LEN + len);
        Ok(Some((kind, payload)))
    }
}

fn salsa_box(ours: &NodePrivate, theirs: &NodePublic) -> SalsaBox {
    SalsaBox::new(
        &crypto_box::PublicKey::from(*theirs.as_bytes()),
        &crypto_box::SecretKey::from(ours.to_bytes()),
    )
}

/// A NaCl box as tailscale's `NodePrivate.SealTo` makes it: nonce, then
/// tag and ciphertext.
pub fn seal_to(ours: &NodePrivate, theirs: &NodePublic, nonce: [u8; 24], msg: &[u8]) -> Vec<u8> {
    let mut out = nonce.to_vec();
    // Encrypting with a valid key cannot fail; an empty box would simply
    // not open at the server.
    out.extend(
        salsa_box(ours, theirs)
            .encrypt(&crypto_box::Nonce::from(nonce), msg)
            .unwrap_or_default(),
    );
    out
}

/// Opens a box made by [`seal_to`] (from `theirs` to `ours`).
pub fn open_from(ours: &NodePrivate, theirs: &NodePublic, sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN + 16 {
        return None;
    }
    let nonce: [u8; NONCE_LEN] = sealed[..NONCE_LEN].try_into().ok()?;
    salsa_box(ours, theirs)
        .decrypt(&crypto_box::Nonce::from(nonce), &sealed[NONCE_LEN..])
        .ok()
}

/// The ClientInfo frame: our node key, then the boxed JSON.
pub fn client_info_frame(ours: &NodePrivate, server: &NodePublic, nonce: [u8; 24]) -> Vec<u8> {
    let json = serde_json::to_vec(&ClientInfo {
        version: PROTOCOL_VERSION,
        can_ack_pings: true,
    })
    .unwrap_or_default();
    let mut payload = ours.public().as_bytes().to_vec();
    payload.extend(seal_to(ours, server, nonce, &json));
    encode_frame(frame::CLIENT_INFO, &payload)
}

/// A SendPacket frame to `dst`.
pub fn send_packet_frame(dst: &NodePublic, packet: &[u8]) -> Result<Vec<u8>, DerpError> {
    if packet.len() > MAX_PACKET_SIZE {
        return Err(DerpError::PacketTooLarge(packet.len()));
    }
    let mut payload = Vec::with_capacity(KEY_LEN + packet.len());
    payload.extend_from_slice(dst.as_bytes());
    payload.extend_from_slice(packet);
    Ok(encode_frame(frame::SEND_PACKET, &payload))
}

/// A frame from the server, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame {
    /// The greeting: the server's public key.
    ServerKey(NodePublic),
    /// The boxed server info.
    ServerInfo(Vec<u8>),
    /// A packet from a peer.
    RecvPacket {
        /// The sender's node key.
        src: NodePublic,
        /// The packet (WireGuard or disco).
        data: Vec<u8>,
    },
    /// Keep-alive (no payload).
    KeepAlive,
    /// A peer we sent to is gone from this server.
    PeerGone {
        /// The peer.
        peer: NodePublic,
        /// 0 disconnected, 1 not here.
        reason: u8,
    },
    /// A peer connected (mesh watchers only).
    PeerPresent(NodePublic),
    /// Ping: answer with the same 8 bytes.
    Ping([u8; 8]),
    /// Pong to a ping of ours.
    Pong([u8; 8]),
    /// A problem with our connection; empty clears it.
    Health(String),
    /// The server restarts: reconnect after, keep trying for.
    Restarting {
        /// Wait this long before reconnecting.
        reconnect_in: Duration,
        /// Keep trying this long.
        try_for: Duration,
    },
    /// A frame type we don't know (skipped) or one too short to use.
    Ignored(u8),
}

fn key_at(p: &[u8]) -> Option<NodePublic> {
    let k: [u8; 32] = p.get(..KEY_LEN)?.try_into().ok()?;
    Some(NodePublic::from_bytes(k))
}

/// Parses a frame's payload by type. Short frames of known types are
/// [`ServerFrame::Ignored`] (tailscale's client drops them too), except a
/// short greeting, which is an error.
pub fn parse_server_frame(kind: u8, p: &[u8]) -> Result<ServerFrame, DerpError> {
    let eight = |p: &[u8]| -> Option<[u8; 8]> { p.get(..8)?.try_into().ok() };
    Ok(match kind {
        frame::SERVER_KEY => {
            if p.len() < MAGIC.len() + KEY_LEN || p[..MAGIC.len()] != MAGIC {
                return Err(DerpError::BadGreeting);
            }
            ServerFrame::ServerKey(key_at(&p[MAGIC.len()..]).ok_or(DerpError::BadGreeting)?)
        }
        frame::SERVER_INFO => ServerFrame::ServerInfo(p.to_vec()),
        frame::RECV_PACKET => match key_at(p) {
            Some(src) => ServerFrame::RecvPacket {
                src,
                data: p[KEY_LEN..].to_vec(),
            },
            None => ServerFrame::Ignored(kind),
        },
        frame::KEEP_ALIVE => ServerFrame::KeepAlive,
        frame::PEER_GONE => match key_at(p) {
            Some(peer) => ServerFrame::PeerGone {
                peer,
                reason: p.get(KEY_LEN).copied().unwrap_or(0),
            },
            None => ServerFrame::Ignored(kind),
        },
        frame::PEER_PRESENT => {
            key_at(p).map_or(ServerFrame::Ignored(kind), ServerFrame::PeerPresent)
        }
        frame::PING => eight(p).map_or(ServerFrame::Ignored(kind), ServerFrame::Ping),
        frame::PONG => eight(p).map_or(ServerFrame::Ignored(kind), ServerFrame::Pong),
        frame::HEALTH => ServerFrame::Health(String::from_utf8_lossy(p).into_owned()),
        frame::RESTARTING => match eight(p) {
            Some(b) => ServerFrame::Restarting {
                reconnect_in: Duration::from_millis(u64::from(u32::from_be_bytes([
                    b[0], b[1], b[2], b[3],
                ]))),
                try_for: Duration::from_millis(u64::from(u32::from_be_bytes([
                    b[4], b[5], b[6], b[7],
                ]))),
            },
            None => ServerFrame::Ignored(kind),
        },
        _ => ServerFrame::Ignored(kind),
    })
}

/// What the connection reports to the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DerpEvent {
    /// Login finished: packets may be sent.
    Connected {
        /// The server's key.
        server: NodePublic,
        /// Its rate limit for us.
        info: ServerInfo,
    },
    /// A relayed packet from a peer.
    Packet {
        /// The sender's node key.
        src: NodePublic,
        /// WireGuard or disco.
        data: Vec<u8>,
    },
    /// A peer is not (or no longer) on this server.
    PeerGone(NodePublic),
    /// The server reports a problem (empty: cleared).
    Health(String),
    /// The server is restarting: reconnect after this.
    Restarting(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Http,
    ServerKey,
    ServerInfo(NodePublic),
    Up,
}

/// Counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DerpStats {
    /// Packets received.
    pub packets_in: u64,
    /// Packets queued to send.
    pub packets_out: u64,
    /// Frames skipped (unknown or short).
    pub ignored: u64,
    /// Packets refused before login or too large.
    pub send_refused: u64,
}

/// One DERP client connection, sans-IO. Feed it the bytes read with
/// [`DerpConn::handle_input`], write what [`DerpConn::poll_transmit`]
/// gives, react to [`DerpConn::poll_event`]. Randomness (the box nonce)
/// and time are passed in.
pub struct DerpConn {
    ours: NodePrivate,
    preferred: bool,
    nonce: [u8; 24],
    state: State,
    http: Vec<u8>,
    frames: FrameDecoder,
    out: VecDeque<Vec<u8>>,
    events: VecDeque<DerpEvent>,
    last_rx: Instant,
    stats: DerpStats,
}

impl DerpConn {
    /// A new connection for node key `ours`; `preferred` = this is our
    /// home region; `nonce` seals the ClientInfo box. The upgrade request
    /// for `host` is the first transmit.
    pub fn new(
        now: Instant,
        ours: NodePrivate,
        host: &str,
        preferred: bool,
        nonce: [u8; 24],
    ) -> Self {
        let mut out = VecDeque::new();
        out.push_back(upgrade_request(host));
        DerpConn {
            ours,
            preferred,
            nonce,
            state: State::Http,
            http: Vec::new(),
            frames: FrameDecoder::default(),
            out,
            events: VecDeque::new(),
            last_rx: now,
            stats: DerpStats::default(),
        }
    }

    /// Whether login finished.
    pub fn is_up(&self) -> bool {
        self.state == State::Up
    }

    /// Counters.
    pub fn stats(&self) -> DerpStats {
        self.stats
    }

    /// Bytes read from the connection. An error ends the connection.
    pub fn handle_input(&mut self, now: Instant, mut bytes: &[u8]) -> Result<(), DerpError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.last_rx = now;
        if self.state == State::Http {
            let before = self.http.len();
            self.http.extend_from_slice(bytes);
            match parse_upgrade_response(&self.http)? {
                None => return Ok(()),
                Some(n) => {
                    // `n` counts bytes of `self.http`; the rest are frames.
                    let used = n.saturating_sub(before);
                    bytes = &bytes[used.min(bytes.len())..];
                    self.http = Vec::new();
                    self.state = State::ServerKey;
                }
            }
        }
        self.frames.push(bytes);
        while let Some((kind, payload)) = self.frames.next_frame()? {
            self.on_frame(kind, &payload)?;
        }
        Ok(())
    }

    fn on_frame(&mut self, kind: u8, payload: &[u8]) -> Result<(), DerpError> {
        let f = parse_server_frame(kind, payload)?;
        match (self.state, f) {
            (State::ServerKey, ServerFrame::ServerKey(k)) => {
                self.out
                    .push_back(client_info_frame(&self.ours, &k, self.nonce));
                self.state = State::ServerInfo(k);
            }
            (State::ServerKey, _) => return Err(DerpError::BadGreeting),
            (State::ServerInfo(k), ServerFrame::ServerInfo(sealed)) => {
                let info = open_from(&self.ours, &k, &sealed)
                    .and_then(|j| serde_json::from_slice::<ServerInfo>(&j).ok())
                    .ok_or(DerpError::BadServerInfo)?;
                if self.preferred {
                    self.out
                        .push_back(encode_frame(frame::NOTE_PREFERRED, &[1]));
                }
                self.state = State::Up;
                self.events
                    .push_back(DerpEvent::Connected { server: k, info });
            }
            (State::ServerInfo(_), ServerFrame::KeepAlive | ServerFrame::Ignored(_)) => {}
            (State::ServerInfo(_), _) => return Err(DerpError::Unexpected(kind)),
            (State::Up, f) => self.on_up_frame(f),
            (State::Http, _) => return Err(DerpError::Unexpected(kind)),
        }
        Ok(())
    }

    fn on_up_frame(&mut self, f: ServerFrame) {
        match f {
            ServerFrame::RecvPacket { src, data } => {
                self.stats.packets_in += 1;
                self.events.push_back(DerpEvent::Packet { src, data });
            }
            ServerFrame::Ping(b) => self.out.push_back(encode_frame(frame::PONG, &b)),
            ServerFrame::PeerGone { peer, .. } => self.events.push_back(DerpEvent::PeerGone(peer)),
            ServerFrame::Health(h) => self.events.push_back(DerpEvent::Health(h)),
            ServerFrame::Restarting { reconnect_in, .. } => {
                self.events.push_back(DerpEvent::Restarting(reconnect_in))
            }
            ServerFrame::KeepAlive | ServerFrame::Pong(_) | ServerFrame::PeerPresent(_) => {}
            ServerFrame::ServerKey(_) | ServerFrame::ServerInfo(_) | ServerFrame::Ignored(_) => {
                self.stats.ignored += 1
            }
        }
    }

    /// Queue a packet to `dst`. Refused (and counted) before login or when
    /// too large.
    pub fn send(&mut self, dst: &NodePublic, packet: &[u8]) -> Result<(), DerpError> {
        if self.state != State::Up {
            self.stats.send_refused += 1;
            return Err(DerpError::Unexpected(frame::SEND_PACKET));
        }
        match send_packet_frame(dst, packet) {
            Ok(f) => {
                self.stats.packets_out += 1;
                self.out.push_back(f);
                Ok(())
            }
            Err(e) => {
                self.stats.send_refused += 1;
                Err(e)
            }
        }
    }

    /// Checks the read deadline.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), DerpError> {
        let silent = now.saturating_duration_since(self.last_rx);
        if silent >= READ_TIMEOUT {
            return Err(DerpError::Silent(silent));
        }
        Ok(())
    }

    /// When [`DerpConn::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Instant {
        self.last_rx + READ_TIMEOUT
    }

    /// The next bytes to write.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<DerpEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_key() -> NodePrivate {
        NodePrivate::from_bytes([9; 32])
    }

    fn greeting(k: &NodePublic) -> Vec<u8> {
        let mut p = MAGIC.to_vec();
        p.extend_from_slice(k.as_bytes());
        p.extend_from_slice(b"future");
        encode_frame(frame::SERVER_KEY, &p)
    }

    /// A simulated server: checks the client's info box, answers with its own.
    fn login(now: Instant, c: &mut DerpConn, client_pub: &NodePublic) {
        let req = c.poll_transmit().unwrap();
        let text = String::from_utf8(req).unwrap();
        assert!(text.starts_with("GET /derp HTTP/1.1\r\n"), "{text}");
        assert!(text.contains("\r\nUpgrade: DERP\r\n"));
        assert!(text.contains("\r\nHost: derp.example:8443\r\n"));
        let s = server_key();
        // The 101 and the greeting in one segment, split at an odd place.
        let mut bytes =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\nDerp-Version: 2\r\n\r\n".to_vec();
        bytes.extend(greeting(&s.public()));
        let (a, b) = bytes.split_at(50);
        c.handle_input(now, a).unwrap();
        assert!(c.poll_transmit().is_none());
        c.handle_input(now, b).unwrap();
        let ci = c.poll_transmit().expect("client info");
        let mut d = FrameDecoder::default();
        d.push(&ci);
        let (kind, p) = d.next_frame().unwrap().unwrap();
        assert_eq!(kind, frame::CLIENT_INFO);
        assert_eq!(&p[..32], client_pub.as_bytes());
        let json = open_from(&s, client_pub, &p[32..]).expect("box opens with the server key");
        let info: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(info["version"], 2);
        assert_eq!(info["CanAckPings"], true);
        assert!(!c.is_up());
        let sealed = seal_to(
            &s,
            client_pub,
            [4; 24],
            br#"{"TokenBucketBytesPerSecond":1000}"#,
        );
        c.handle_input(now, &encode_frame(frame::SERVER_INFO, &sealed))
            .unwrap();
        assert!(c.is_up());
        assert_eq!(
            c.poll_event(),
            Some(DerpEvent::Connected {
                server: s.public(),
                info: ServerInfo {
                    token_bucket_bytes_per_second: 1000,
                    token_bucket_bytes_burst: 0
                }
            })
        );
    }

    #[test]
    fn login_then_packets_both_ways_and_pings_answered() {
        let now = Instant::now();
        let ours = NodePrivate::from_bytes([1; 32]);
        let pubk = ours.public();
        let mut c = DerpConn::new(now, ours, "derp.example:8443", true, [7; 24]);
        let peer = NodePublic::from_bytes([5; 32]);
        assert!(c.send(&peer, b"early").is_err(), "no sending before login");
        login(now, &mut c, &pubk);
        assert_eq!(
            c.poll_transmit(),
            Some(encode_frame(frame::NOTE_PREFERRED, &[1]))
        );
        c.send(&peer, b"wg").unwrap();
        let mut want = peer.as_bytes().to_vec();
        want.extend_from_slice(b"wg");
        assert_eq!(
            c.poll_transmit(),
            Some(encode_frame(frame::SEND_PACKET, &want))
        );
        // A received packet, a ping, a keep-alive and peer gone in one read.
        let mut bytes = Vec::new();
        let mut rp = peer.as_bytes().to_vec();
        rp.extend_from_slice(b"hello");
        bytes.extend(encode_frame(frame::RECV_PACKET, &rp));
        bytes.extend(encode_frame(frame::PING, b"12345678"));
        bytes.extend(encode_frame(frame::KEEP_ALIVE, &[]));
        bytes.extend(encode_frame(
            frame::PEER_GONE,
            &[[5u8; 32].as_slice(), &[1]].concat(),
        ));
        bytes.extend(encode_frame(0x7f, b"future frame"));
        bytes.extend(encode_frame(frame::HEALTH, b"duplicate"));
        for chunk in bytes.chunks(3) {
            c.handle_input(now, chunk).unwrap();
        }
        assert_eq!(
            c.poll_event(),
            Some(DerpEvent::Packet {
                src: peer,
                data: b"hello".to_vec()
            })
        );
        assert_eq!(c.poll_event(), Some(DerpEvent::PeerGone(peer)));
        assert_eq!(c.poll_event(), Some(DerpEvent::Health("duplicate".into())));
        assert_eq!(c.poll_event(), None);
        assert_eq!(
            c.poll_transmit(),
            Some(encode_frame(frame::PONG, b"12345678"))
        );
        assert_eq!(c.stats().ignored, 1);
        assert!(c.send(&peer, &vec![0; MAX_PACKET_SIZE + 1]).is_err());
    }

    #[test]
    fn refused_upgrade_bad_greeting_and_bad_info_end_the_connection() {
        let now = Instant::now();
        let mk = || DerpConn::new(now, NodePrivate::from_bytes([1; 32]), "h", false, [0; 24]);
        let mut c = mk();
        assert_eq!(
            c.handle_input(now, b"HTTP/1.1 404 Not Found\r\n\r\n"),
            Err(DerpError::UpgradeRefused(404))
        );
        let mut c = mk();
        let mut b = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
        b.extend(encode_frame(
            frame::SERVER_KEY,
            b"NOTDERP!0123456789012345678901234567890123",
        ));
        assert_eq!(c.handle_input(now, &b), Err(DerpError::BadGreeting));
        // A server info sealed with another key.
        let mut c = mk();
        let mut b = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
        b.extend(greeting(&server_key().public()));
        let other = NodePrivate::from_bytes([3; 32]);
        b.extend(encode_frame(
            frame::SERVER_INFO,
            &seal_to(
                &other,
                &NodePrivate::from_bytes([1; 32]).public(),
                [0; 24],
                b"{}",
            ),
        ));
        assert_eq!(c.handle_input(now, &b), Err(DerpError::BadServerInfo));
        // A frame length over the limit is refused from the header alone.
        let mut c = mk();
        let mut b = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
        b.extend([frame::SERVER_KEY, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            c.handle_input(now, &b),
            Err(DerpError::FrameTooLong(_))
        ));
    }

    #[test]
    fn a_silent_server_is_dead_after_the_read_timeout() {
        let now = Instant::now();
        let mut c = DerpConn::new(now, NodePrivate::from_bytes([1; 32]), "h", false, [0; 24]);
        assert!(c
            .handle_timeout(now + READ_TIMEOUT - Duration::from_secs(1))
            .is_ok());
        assert_eq!(c.poll_timeout(), now + READ_TIMEOUT);
        assert!(c.handle_timeout(now + READ_TIMEOUT).is_err());
    }

    #[test]
    fn short_frames_are_ignored_and_restarting_parses() {
        assert_eq!(
            parse_server_frame(frame::RECV_PACKET, &[1; 31]),
            Ok(ServerFrame::Ignored(frame::RECV_PACKET))
        );
        assert_eq!(
            parse_server_frame(frame::PING, &[1; 7]),
            Ok(ServerFrame::Ignored(frame::PING))
        );
        assert_eq!(
            parse_server_frame(frame::RESTARTING, &[0, 0, 3, 232, 0, 0, 0, 10]),
            Ok(ServerFrame::Restarting {
                reconnect_in: Duration::from_millis(1000),
                try_for: Duration::from_millis(10)
            })
        );
    }
}
