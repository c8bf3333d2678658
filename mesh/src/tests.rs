//! Scenarios for applying peer sets and for time, on two meshes wired
//! back to back. boringtun's clock is the fake one ([`crate::clock`]): it
//! moves only when the test moves `now`.

use crate::clock;
use crate::{
    Mesh, MeshDrop, Output, Path, PeerConfig, PeerId, PeerSet, PresharedKey, PrivateKey,
    REJECT_AFTER_TIME,
};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const INIT: u8 = 1;
const DATA: u8 = 4;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ipv4_packet(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 24, 0, 0, 0x40, 0, 64, 17, 0, 0];
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&[1, 2, 3, 4]);
    p
}

/// Box `a` and peer `b`, fixed keys, UDP between them; `b` may move.
struct Net {
    now: Instant,
    a: Mesh,
    b: Mesh,
    a_addr: SocketAddr,
    b_addr: SocketAddr,
    /// Datagrams `a` sent: (where, message type).
    sent_by_a: Vec<(Path, u8)>,
    at_a: Vec<Vec<u8>>,
    at_b: Vec<Vec<u8>>,
    /// Deliver what `a` sends (false: the peer is gone).
    link_up: bool,
}

fn key(n: u8) -> PrivateKey {
    PrivateKey::from_bytes([n; 32])
}

fn peer_b(endpoint: &str) -> PeerConfig {
    PeerConfig {
        name: "b".into(),
        public_key: key(2).public_key(),
        preshared_key: None,
        endpoint: Some(addr(endpoint)),
        allowed_ips: vec!["10.77.0.2/32".parse().unwrap()],
        persistent_keepalive: None,
    }
}

impl Net {
    fn new() -> Self {
        let now = Instant::now();
        let mut a = Mesh::new(&key(1));
        let mut b = Mesh::new(&key(2));
        let set: PeerSet = [peer_b("198.51.100.2:51820")].into_iter().collect();
        assert_eq!(a.apply(now, &set).added, vec![PeerId(0)]);
        let back: PeerSet = [PeerConfig {
            name: "a".into(),
            public_key: key(1).public_key(),
            preshared_key: None,
            endpoint: None,
            allowed_ips: vec!["10.77.0.1/32".parse().unwrap()],
            persistent_keepalive: None,
        }]
        .into_iter()
        .collect();
        b.apply(now, &back);
        Net {
            now,
            a,
            b,
            a_addr: addr("198.51.100.1:51820"),
            b_addr: addr("198.51.100.2:51820"),
            sent_by_a: Vec::new(),
            at_a: Vec::new(),
            at_b: Vec::new(),
            link_up: true,
        }
    }

    fn pump(&mut self) {
        for _ in 0..20 {
            let mut moved = false;
            while let Some(o) = self.a.poll_output() {
                moved = true;
                match o {
                    Output::Datagram(path, d) => {
                        self.sent_by_a.push((path, d[0]));
                        if self.link_up && path == Path::Udp(self.b_addr) {
                            let _ = self.b.handle_datagram(self.a_addr, &d);
                        }
                    }
                    Output::Packet(_, p) => self.at_a.push(p),
                }
            }
            while let Some(o) = self.b.poll_output() {
                moved = true;
                match o {
                    Output::Datagram(path, d) => {
                        if self.link_up && path == Path::Udp(self.a_addr) {
                            let _ = self.a.handle_datagram(self.b_addr, &d);
                        }
                    }
                    Output::Packet(_, p) => self.at_b.push(p),
                }
            }
            if !moved {
                return;
            }
        }
        panic!("did not settle");
    }

    /// Let `by` pass on both clocks, ticking the timers as the daemon does.
    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        while self.now < end {
            let step = crate::wg::TIMER_TICK.min(end - self.now);
            self.now += step;
            clock::advance(step);
            self.a.handle_timeout(self.now);
            self.b.handle_timeout(self.now);
            self.pump();
        }
    }

    fn inits_sent(&self) -> usize {
        self.sent_by_a.iter().filter(|(_, t)| *t == INIT).count()
    }

    /// a → b: a packet, until it arrives.
    fn ping(&mut self) {
        let before = self.at_b.len();
        self.a
            .send(PeerId(0), &ipv4_packet([10, 77, 0, 1], [10, 77, 0, 2]))
            .unwrap();
        self.pump();
        assert_eq!(self.at_b.len(), before + 1, "the packet arrived");
    }
}

// These tests move boringtun's clock: they need the fake one.
const _: () = assert!(clock::FAKE, "these tests need boringtun's fake clock");

#[test]
fn applying_the_same_set_twice_changes_and_sends_nothing() {
    let mut net = Net::new();
    net.ping();
    let set: PeerSet = [peer_b("198.51.100.2:51820")].into_iter().collect();
    let applied = net.a.apply(net.now, &set);
    assert!(applied.is_empty(), "{applied:?}");
    assert_eq!(net.a.poll_output(), None);
    assert_eq!(net.a.routes().count(), 1);
}

#[test]
fn an_edited_peer_keeps_its_session_no_new_handshake() {
    let mut net = Net::new();
    net.ping();
    assert_eq!(net.inits_sent(), 1);
    let age = net.a.last_handshake(PeerId(0)).unwrap();
    // The peer moved (dynamic DNS), got a subnet, a keepalive and a new name.
    net.advance(Duration::from_secs(3));
    net.b_addr = addr("203.0.113.9:4500");
    let mut edited = peer_b("203.0.113.9:4500");
    edited.name = "b-renamed".into();
    edited.allowed_ips.push("10.77.5.0/24".parse().unwrap());
    edited.persistent_keepalive = Some(25);
    let set: PeerSet = [edited].into_iter().collect();
    let applied = net.a.apply(net.now, &set);
    assert_eq!(applied.updated, vec![PeerId(0)]);
    assert!(applied.added.is_empty() && applied.removed.is_empty() && applied.rekeyed.is_empty());
    // Data flows at once to the new address, over the old session.
    net.a
        .send(PeerId(0), &ipv4_packet([10, 77, 0, 1], [10, 77, 5, 7]))
        .unwrap();
    assert!(matches!(
        net.a.poll_output(),
        Some(Output::Datagram(Path::Udp(to), ref d)) if to == net.b_addr && d[0] == DATA
    ));
    net.ping();
    assert_eq!(net.inits_sent(), 1, "no new handshake");
    assert!(net.a.last_handshake(PeerId(0)).unwrap() > age);
    assert_eq!(net.a.route("10.77.5.7".parse().unwrap()), Some(PeerId(0)));
    assert_eq!(net.a.peer_status()[0].name, "b-renamed");
}

#[test]
fn a_changed_preshared_key_means_a_new_session_with_the_same_id() {
    let mut net = Net::new();
    net.ping();
    let mut p = peer_b("198.51.100.2:51820");
    p.preshared_key = Some(PresharedKey([7; 32]));
    let applied = net.a.apply(net.now, &[p].into_iter().collect());
    assert_eq!(applied.rekeyed, vec![PeerId(0)]);
    assert_eq!(net.a.last_handshake(PeerId(0)), None, "old session gone");
    net.a
        .send(PeerId(0), &ipv4_packet([10, 77, 0, 1], [10, 77, 0, 2]))
        .unwrap();
    assert!(matches!(net.a.poll_output(), Some(Output::Datagram(_, ref d)) if d[0] == INIT));
}

#[test]
fn a_removed_peer_is_gone_and_ids_of_the_others_stay() {
    let mut net = Net::new();
    net.ping();
    let c = PeerConfig {
        name: "c".into(),
        public_key: key(3).public_key(),
        allowed_ips: vec!["10.77.0.3/32".parse().unwrap()],
        ..peer_b("192.0.2.3:51820")
    };
    let d = PeerConfig {
        name: "d".into(),
        public_key: key(4).public_key(),
        allowed_ips: vec!["10.77.0.4/32".parse().unwrap()],
        ..peer_b("192.0.2.4:51820")
    };
    let all: PeerSet = [peer_b("198.51.100.2:51820"), c.clone(), d.clone()]
        .into_iter()
        .collect();
    assert_eq!(net.a.apply(net.now, &all).added, vec![PeerId(1), PeerId(2)]);
    // b goes: its id and route go, c and d keep theirs, b's datagrams are strangers.
    let applied = net
        .a
        .apply(net.now, &[c.clone(), d.clone()].into_iter().collect());
    assert_eq!(applied.removed, vec![PeerId(0)]);
    assert!(applied.added.is_empty() && applied.updated.is_empty());
    assert_eq!(net.a.route("10.77.0.2".parse().unwrap()), None);
    assert_eq!(net.a.route("10.77.0.4".parse().unwrap()), Some(PeerId(2)));
    assert_eq!(net.a.peer_by_key(&key(3).public_key()), Some(PeerId(1)));
    net.b
        .send(PeerId(0), &ipv4_packet([10, 77, 0, 2], [10, 77, 0, 1]))
        .unwrap();
    let Some(Output::Datagram(_, dgram)) = net.b.poll_output() else {
        panic!("b sends")
    };
    assert!(net.a.handle_datagram(net.b_addr, &dgram).is_err());
    assert_eq!(net.a.stats().unknown_peer, 1);
    // A new peer takes the free id.
    let e = PeerConfig {
        name: "e".into(),
        public_key: key(5).public_key(),
        ..c.clone()
    };
    let applied = net.a.apply(net.now, &[c, d, e].into_iter().collect());
    assert_eq!(applied.added, vec![PeerId(0)]);
    // c and e both list 10.77.0.3/32: the later one in the set owns it.
    assert_eq!(net.a.route("10.77.0.3".parse().unwrap()), Some(PeerId(0)));
}

#[test]
fn a_silent_peer_s_session_expires_after_reject_after_time() {
    let mut net = Net::new();
    net.ping();
    assert!(net.a.is_up(PeerId(0), REJECT_AFTER_TIME));
    // The peer goes away: nothing a sends arrives any more. Our constant is
    // boringtun's: up until just before it, expired just after.
    net.link_up = false;
    net.advance(REJECT_AFTER_TIME - Duration::from_secs(1));
    assert!(net.a.is_up(PeerId(0), REJECT_AFTER_TIME));
    assert!(
        !net.a.is_up(PeerId(0), Duration::from_secs(170)),
        "age follows the clock"
    );
    net.advance(Duration::from_secs(2));
    assert_eq!(net.a.last_handshake(PeerId(0)), None, "session expired");
    assert!(!net.a.is_up(PeerId(0), Duration::MAX));
}

#[test]
fn an_unanswered_handshake_is_retried_after_rekey_timeout() {
    let mut net = Net::new();
    net.link_up = false;
    net.a
        .send(PeerId(0), &ipv4_packet([10, 77, 0, 1], [10, 77, 0, 2]))
        .unwrap();
    net.pump();
    assert_eq!(net.inits_sent(), 1);
    net.advance(Duration::from_millis(4_750));
    assert_eq!(net.inits_sent(), 1, "not before REKEY_TIMEOUT (5 s)");
    net.advance(Duration::from_millis(500));
    assert_eq!(net.inits_sent(), 2, "retried after REKEY_TIMEOUT");
    // The retry completes the handshake and delivers the queued packet.
    net.link_up = true;
    net.advance(Duration::from_secs(5));
    assert_eq!(net.at_b.len(), 1);
    assert!(net.a.is_up(PeerId(0), Duration::from_secs(10)));
}

#[test]
fn persistent_keepalive_runs_on_the_mesh_clock_and_changes_in_place() {
    let mut net = Net::new();
    let mut p = peer_b("198.51.100.2:51820");
    p.persistent_keepalive = Some(25);
    net.a.apply(net.now, &[p.clone()].into_iter().collect());
    net.advance(crate::wg::TIMER_TICK);
    assert_eq!(net.inits_sent(), 1, "a keepalive turned on is sent at once");
    assert!(net.a.is_up(PeerId(0), Duration::from_secs(1)));
    let keepalives = |net: &Net| net.sent_by_a.iter().filter(|(_, t)| *t == DATA).count();
    let before = keepalives(&net);
    net.advance(Duration::from_secs(24));
    assert_eq!(keepalives(&net), before, "none before 25 s");
    net.advance(Duration::from_secs(2));
    assert_eq!(keepalives(&net), before + 1, "one keepalive at 25 s");
    // Turned off: none any more; same session.
    p.persistent_keepalive = None;
    assert_eq!(
        net.a.apply(net.now, &[p].into_iter().collect()).updated,
        vec![PeerId(0)]
    );
    let before = keepalives(&net);
    net.advance(Duration::from_secs(60));
    assert_eq!(keepalives(&net), before);
    assert_eq!(net.inits_sent(), 1);
}

// Forged and replayed datagrams from the internet (issue #11, item 6).

const RESPONSE: u8 = 2;
const COOKIE: u8 = 3;

fn attacker() -> SocketAddr {
    addr("203.0.113.66:4444")
}

fn endpoint_of(m: &Mesh) -> Option<SocketAddr> {
    m.peer_status()[0].endpoint
}

impl Net {
    /// `b` may start handshakes too: it knows where `a` is.
    fn b_knows_a(&mut self) {
        let back: PeerSet = [PeerConfig {
            name: "a".into(),
            public_key: key(1).public_key(),
            preshared_key: None,
            endpoint: Some(self.a_addr),
            allowed_ips: vec!["10.77.0.1/32".parse().unwrap()],
            persistent_keepalive: None,
        }]
        .into_iter()
        .collect();
        self.b.apply(self.now, &back);
    }

    /// The handshake initiation `b` sends to `a` (not delivered).
    fn init_from_b(&mut self) -> Vec<u8> {
        self.b
            .send(PeerId(0), &ipv4_packet([10, 77, 0, 2], [10, 77, 0, 1]))
            .unwrap();
        match self.b.poll_output() {
            Some(Output::Datagram(_, d)) if d[0] == INIT => d,
            other => panic!("no initiation: {other:?}"),
        }
    }
}

/// A handshake initiation to `to` from a key `to` does not know: valid
/// MAC1 (anyone who knows `to`'s public key can compute it).
fn stranger_init(to: &PrivateKey) -> Vec<u8> {
    let mut s = Mesh::new(&key(9));
    let id = s.add_peer(
        Instant::now(),
        PeerConfig {
            name: "to".into(),
            public_key: to.public_key(),
            allowed_ips: vec![],
            ..peer_b("198.51.100.1:51820")
        },
    );
    s.send(id, &ipv4_packet([1, 1, 1, 1], [2, 2, 2, 2]))
        .unwrap();
    match s.poll_output() {
        Some(Output::Datagram(_, d)) if d[0] == INIT => d,
        other => panic!("no initiation: {other:?}"),
    }
}

#[test]
fn a_handshake_with_a_wrong_mac1_is_dropped_before_the_key_exchange() {
    let mut net = Net::new();
    let mut init = stranger_init(&key(1));
    let mac1 = init.len() - 32;
    init[mac1] ^= 1;
    assert_eq!(
        net.a.handle_datagram(attacker(), &init),
        Err(MeshDrop::BadMac)
    );
    // A response of the right length and type, random otherwise.
    let mut resp = vec![0x5a; 92];
    resp[..4].copy_from_slice(&[RESPONSE, 0, 0, 0]);
    assert_eq!(
        net.a.handle_datagram(attacker(), &resp),
        Err(MeshDrop::BadMac)
    );
    let s = net.a.stats();
    // Not `unknown_peer`: the initiator's key was never decrypted.
    assert_eq!((s.bad_mac, s.unknown_peer, s.invalid), (2, 0, 0));
    assert_eq!(net.a.poll_output(), None, "no answer");
}

#[test]
fn over_the_rate_limit_handshakes_get_a_cookie_reply_and_are_counted() {
    let mut net = Net::new();
    let init = stranger_init(&key(1));
    let limit = crate::wg::HANDSHAKE_RATE_LIMIT;
    for i in 0..limit + 50 {
        let r = net.a.handle_datagram(attacker(), &init);
        let want = if i < limit {
            MeshDrop::UnknownPeer
        } else {
            MeshDrop::RateLimited
        };
        assert_eq!(r, Err(want), "datagram {i}");
    }
    assert_eq!(net.a.stats().rate_limited, 50);
    assert_eq!(net.a.stats().unknown_peer, limit);
    let mut cookies = 0;
    while let Some(o) = net.a.poll_output() {
        match o {
            Output::Datagram(Path::Udp(to), d) => {
                assert_eq!((to, d[0], d.len()), (attacker(), COOKIE, 64));
                // Addressed to the initiator's sender index.
                assert_eq!(d[4..8], init[4..8]);
                cookies += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(cookies, 50);
    // A second later the limit is fresh: the real peer gets through.
    net.advance(Duration::from_millis(1100));
    net.ping();
}

#[test]
fn a_replayed_initiation_is_answered_but_moves_no_endpoint() {
    let mut net = Net::new();
    net.b_knows_a();
    let init = net.init_from_b();
    let before = endpoint_of(&net.a);
    assert_eq!(before, Some(net.b_addr));
    // The attacker replays a captured initiation from its own address (to a
    // box that restarted since, so its timestamp is still new).
    assert_eq!(net.a.handle_datagram(attacker(), &init), Ok(()));
    match net.a.poll_output() {
        Some(Output::Datagram(Path::Udp(to), d)) => assert_eq!((to, d[0]), (attacker(), RESPONSE)),
        other => panic!("{other:?}"),
    }
    assert_eq!(endpoint_of(&net.a), before, "endpoint not moved");
    // The same initiation again is a replay (old timestamp).
    assert_eq!(
        net.a.handle_datagram(attacker(), &init),
        Err(MeshDrop::Invalid)
    );
    assert_eq!(endpoint_of(&net.a), before);
    // The real peer still gets through, and roams only on proof.
    net.ping();
    assert_eq!(endpoint_of(&net.a), before);
}

#[test]
fn a_forged_initiation_under_load_and_a_cookie_reply_move_no_endpoint() {
    let mut net = Net::new();
    net.b_knows_a();
    // Load `b` up to its limit with strangers' initiations.
    let flood = stranger_init(&key(2));
    for _ in 0..crate::wg::HANDSHAKE_RATE_LIMIT {
        let _ = net.b.handle_datagram(attacker(), &flood);
    }
    // An initiation in `a`'s name (a replay of `a`'s own, correct MAC1)
    // from the attacker: under load, `b` answers with a cookie only.
    net.a
        .send(PeerId(0), &ipv4_packet([10, 77, 0, 1], [10, 77, 0, 2]))
        .unwrap();
    let init = match net.a.poll_output() {
        Some(Output::Datagram(_, d)) if d[0] == INIT => d,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        net.b.handle_datagram(attacker(), &init),
        Err(MeshDrop::RateLimited)
    );
    assert_eq!(endpoint_of(&net.b), Some(net.a_addr), "b's endpoint for a");
    let cookie = match net.b.poll_output() {
        Some(Output::Datagram(Path::Udp(to), d)) if d[0] == COOKIE => {
            assert_eq!(to, attacker());
            d
        }
        other => panic!("{other:?}"),
    };
    // The genuine cookie reply, delivered to `a` from elsewhere: `a` takes
    // the cookie (it is authenticated) but does not roam on it.
    assert_eq!(net.a.handle_datagram(attacker(), &cookie), Ok(()));
    assert_eq!(endpoint_of(&net.a), Some(net.b_addr), "a's endpoint for b");
    assert_eq!(net.b.stats().rate_limited, 1);
}

#[test]
fn a_replayed_transport_packet_from_elsewhere_moves_no_endpoint() {
    let mut net = Net::new();
    net.ping();
    net.b
        .send(PeerId(0), &ipv4_packet([10, 77, 0, 2], [10, 77, 0, 1]))
        .unwrap();
    let data = match net.b.poll_output() {
        Some(Output::Datagram(_, d)) if d[0] == DATA => d,
        other => panic!("{other:?}"),
    };
    assert_eq!(net.a.handle_datagram(net.b_addr, &data), Ok(()));
    assert_eq!(
        net.a.handle_datagram(attacker(), &data),
        Err(MeshDrop::Invalid)
    );
    assert_eq!(endpoint_of(&net.a), Some(net.b_addr));
    // Forged data with the peer's receiver index: nothing moves either.
    let mut forged = data.clone();
    forged[20] ^= 0xff;
    forged[8] = forged[8].wrapping_add(1);
    assert_eq!(
        net.a.handle_datagram(attacker(), &forged),
        Err(MeshDrop::Invalid)
    );
    assert_eq!(endpoint_of(&net.a), Some(net.b_addr));
}

/// An idle mesh sleeps: no timer wakeups without traffic (a device node
/// each in one process); traffic wakes the timers, which tick until every
/// session is over, then sleep again.
#[test]
fn an_idle_mesh_sleeps_and_traffic_wakes_its_timers() {
    let mut net = Net::new();
    net.a.handle_timeout(net.now);
    assert_eq!(net.a.poll_timeout(), None, "no traffic yet: no ticks");
    net.ping();
    let due = net.a.poll_timeout().expect("traffic wakes the timers");
    assert!(due <= net.now + crate::wg::TIMER_TICK);
    net.advance(Duration::from_secs(60));
    assert!(net.a.poll_timeout().is_some(), "a session is live: ticking");
    assert_eq!(net.a.work_buffer(), crate::wg::BUF_LEN, "awake: its buffer");
    net.advance(crate::wg::IDLE_AFTER);
    assert_eq!(net.a.poll_timeout(), None, "every session over: asleep");
    assert_eq!(net.a.work_buffer(), 0, "asleep: the buffer given back");
    // And awake again at the next packet, with a new handshake.
    let inits = net.inits_sent();
    net.ping();
    assert!(net.a.poll_timeout().is_some());
    assert!(net.inits_sent() > inits);
    assert_eq!(net.a.work_buffer(), crate::wg::BUF_LEN);
}

/// A poke (the daemon's "handshake now", e.g. a kill switch's probe) wakes
/// an idle, sleeping mesh: the handshake's retries run on its timers.
#[test]
fn a_poke_wakes_an_idle_mesh_and_its_handshake_is_retried() {
    let mut net = Net::new();
    net.a.handle_timeout(net.now);
    assert_eq!(net.a.poll_timeout(), None, "no traffic yet: asleep");
    net.link_up = false;
    net.a.poke(PeerId(0));
    net.pump();
    assert_eq!(net.inits_sent(), 1, "the poke sends an initiation");
    assert!(net.a.poll_timeout().is_some(), "and wakes the timers");
    // Unanswered: boringtun retries every 5 s (REKEY_TIMEOUT) on the timers.
    net.advance(Duration::from_secs(12));
    assert!(net.inits_sent() >= 3, "retried: {}", net.inits_sent());
}

#[test]
fn a_peer_gets_its_session_state_only_when_used() {
    let mut net = Net::new();
    // Many peers that never talk (a tailnet node's netmap): no session state.
    let mut set: PeerSet = [peer_b("198.51.100.2:51820")].into_iter().collect();
    for n in 10..60u8 {
        set.insert(PeerConfig {
            name: format!("idle{n}"),
            public_key: key(n).public_key(),
            preshared_key: None,
            endpoint: Some(addr(&format!("198.51.100.{n}:41641"))),
            allowed_ips: vec![format!("100.64.0.{n}/32").parse().unwrap()],
            persistent_keepalive: None,
        });
    }
    net.a.apply(net.now, &set);
    net.advance(Duration::from_secs(30));
    assert_eq!((net.a.sessions(), net.b.sessions()), (0, 0));
    assert!(net
        .a
        .peer_status()
        .iter()
        .all(|p| p.last_handshake.is_none()));
    // Data for a session nobody started is dropped, not decrypted.
    let before = net.b.stats().unknown_peer;
    // A data message (type 4) to receiver index 1: b's peer 0, "a".
    let mut forged = vec![0u8; 48];
    forged[0] = 4;
    forged[4] = 1;
    assert_eq!(
        net.b.handle_datagram(net.a_addr, &forged),
        Err(MeshDrop::UnknownPeer)
    );
    assert_eq!(net.b.stats().unknown_peer, before + 1);
    // A packet makes the sender's; the initiation makes the responder's.
    net.ping();
    assert_eq!((net.a.sessions(), net.b.sessions()), (1, 1));
    assert!(net.a.last_handshake(PeerId(0)).is_some());
    // The answer flows back over the responder's session.
    net.b
        .send(PeerId(0), &ipv4_packet([10, 77, 0, 2], [10, 77, 0, 1]))
        .unwrap();
    net.pump();
    assert_eq!(net.at_a.len(), 1);
    // A persistent keepalive needs one too: turned on for an idle peer, it is sent.
    let mut keep = set.clone();
    let mut p = keep.get(&key(10).public_key()).unwrap().clone();
    p.persistent_keepalive = Some(25);
    keep.insert(p);
    net.a.apply(net.now, &keep);
    net.advance(Duration::from_secs(1));
    assert_eq!(net.a.sessions(), 2);
    assert!(net
        .sent_by_a
        .iter()
        .any(|(path, t)| *path == Path::Udp(addr("198.51.100.10:41641")) && *t == INIT));
}
