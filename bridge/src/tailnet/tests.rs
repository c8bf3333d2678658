//! Unit tests of the box's tailnet state (`super`): map updates, disco
//! paths, DERP relays, home regions and device nodes' following.

use super::*;
use meshbridge_tailnet::keys::DiscoPublic;

/// A `Tailnet` without a control task: the test feeds its updates.
fn fixture(
    updates: mpsc::Receiver<Update>,
    disco_key: meshbridge_tailnet::keys::DiscoPrivate,
    hostname: &str,
) -> Tailnet {
    Tailnet {
        updates,
        accept_routes: false,
        last: None,
        paths: HashMap::new(),
        disco: Disco::new(
            disco_key,
            NodePublic::from_bytes([2; 32]),
            StdRng::seed_from_u64(1),
        ),
        paths_changed: false,
        exit: None,
        task: tokio::spawn(async {}),
        state: watch::channel(ControlState::default()).1,
        commands: mpsc::channel(1).0,
        control_url: "http://hs".into(),
        hostname: hostname.into(),
        derp: Derp::new(NodePrivate::from_bytes([2; 32])),
        relay: RelayAddrs::default(),
        stun: StunProbe::default(),
        stun_out: VecDeque::new(),
        public_tx: watch::channel(None).0,
        netcheck: Netcheck::new(),
        home_tx: watch::channel(0).0,
        local_eps: watch::channel(Vec::new()).1,
        mesh_bytes: HashMap::new(),
        last_mesh_look: None,
        services_tx: watch::channel(Vec::new()).0,
        follow: None,
        last_traffic: None,
    }
}

/// A STUN success from `server` telling `mapped`, for request `req`.
fn stun_answer(req: &[u8], mapped: std::net::SocketAddrV4) -> Vec<u8> {
    let mut p = vec![0x01, 0x01, 0, 12];
    p.extend_from_slice(&req[4..20]);
    p.extend_from_slice(&[0x00, 0x20, 0, 8, 0, 1]);
    p.extend_from_slice(&(mapped.port() ^ 0x2112).to_be_bytes());
    let ip = u32::from(*mapped.ip()) ^ 0x2112_a442;
    p.extend_from_slice(&ip.to_be_bytes());
    p
}

/// A device node measures nothing: its home region is the box's (and
/// follows it), it asks STUN for its public endpoint once, then only
/// while it has traffic; idle, it has no timer at all.
/// A DERP region on loopback: the region task's connection attempt
/// (refused on the discard port) never leaves the host.
fn loopback_region(id: i32, stun_port: i32) -> DerpRegion {
    DerpRegion {
        region_id: id,
        nodes: vec![meshbridge_tailnet::tailcfg::DerpNode {
            host_name: "127.0.0.1".into(),
            ipv4: "127.0.0.1".into(),
            stun_port,
            derp_port: 9,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Lets `t` take what its inputs bring that is no input for the caller
/// (the box's home region), failing on anything else.
async fn settle(t: &mut Tailnet) {
    tokio::time::timeout(Duration::from_secs(1), async {
        tokio::select! {
            _ = t.next_input() => panic!("no input expected"),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_device_node_follows_the_box_home_and_stuns_only_while_active() {
    let (_tx, updates) = mpsc::channel(1);
    let mut t = fixture(
        updates,
        meshbridge_tailnet::keys::DiscoPrivate::from_bytes([11; 32]),
        "dev",
    );
    let (home_tx, home_rx) = watch::channel(0u32);
    t.follow_home(home_rx);
    let regions: BTreeMap<_, _> = [(900, 3478), (901, 3479)]
        .into_iter()
        .map(|(id, stun)| (id, loopback_region(id, stun)))
        .collect();
    let t0 = Instant::now();
    t.on_update(
        t0,
        Update {
            addresses: vec!["100.64.0.9/32".parse().unwrap()],
            peers: vec![],
            derp_regions: regions,
            rules: Default::default(),
        },
    );
    assert_eq!(t.derp_home(), None, "none until the box has one");
    home_tx.send_replace(901);
    settle(&mut t).await;
    assert_eq!(t.derp_home(), Some(901), "the box's region");
    // One STUN request, to the home region's port; no netcheck probes.
    t.handle_timeout(t0);
    let sent: Vec<_> = std::iter::from_fn(|| t.poll_transmit()).collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to, "127.0.0.1:3479".parse().unwrap());
    let answer = stun_answer(&sent[0].data, "198.51.100.7:40001".parse().unwrap());
    assert!(t.is_stun_response(&answer));
    t.handle_stun(&answer);
    assert_eq!(
        *t.public_tx.borrow(),
        Some("198.51.100.7:40001".parse().unwrap())
    );
    // Idle: nothing is due, however late it gets.
    assert_eq!(t.poll_timeout(), None);
    t.handle_timeout(t0 + Duration::from_secs(600));
    assert!(t.poll_transmit().is_none());
    // Traffic: STUN is due again (the interval since the last one).
    let later = t0 + Duration::from_secs(600);
    t.last_traffic = Some(later);
    let due = t.poll_timeout().expect("STUN due while active");
    assert!(due <= later, "overdue, sent at once");
    t.handle_timeout(later);
    assert_eq!(
        t.poll_transmit().map(|x| x.to),
        Some("127.0.0.1:3479".parse().unwrap())
    );
    // The box moved: so does the node.
    home_tx.send_replace(900);
    settle(&mut t).await;
    assert_eq!(t.derp_home(), Some(900));
}

#[test]
fn map_requests_carry_the_dns_sd_service_in_hostinfo() {
    let keys = NodeKeys::generate(&mut StdRng::seed_from_u64(7));
    let id = NodeIdentity {
        hostname: "box".into(),
        ..Default::default()
    };
    let svc = vec![meshbridge_tailnet::netmap::dns_sd_service("mesh.home.arpa")];
    let req = with_services(control::map_request(&keys, &id, &[]), &svc);
    let v = serde_json::to_value(&req).unwrap();
    assert_eq!(v["Hostinfo"]["App"], "meshbridge");
    assert_eq!(
        v["Hostinfo"]["Services"],
        serde_json::json!([{"Proto": "udp", "Port": 53, "Description": "meshbridge-dns-sd mesh.home.arpa"}])
    );
    let plain =
        serde_json::to_value(with_services(control::map_request(&keys, &id, &[]), &[])).unwrap();
    assert!(plain["Hostinfo"].get("Services").is_none(), "{plain}");
}

fn peer(n: u8, addrs: &[&str], allowed: &[&str]) -> TailnetPeer {
    TailnetPeer {
        id: i64::from(n),
        name: format!("laptop{n}.tailnet.example."),
        node_key: NodePublic::from_bytes([n; 32]),
        disco_key: Some(DiscoPublic::from_bytes([n + 100; 32])),
        addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        allowed_ips: allowed.iter().map(|a| a.parse().unwrap()).collect(),
        endpoints: vec![],
        derp_region: None,
        online: Some(true),
    }
}

#[test]
fn peers_become_mesh_peers_keyed_by_node_key() {
    let peers = vec![
        peer(
            1,
            &["100.64.0.2/32"],
            &["100.64.0.2/32", "192.168.9.0/24", "0.0.0.0/0"],
        ),
        peer(2, &["100.64.0.3/32"], &["100.64.0.3/32"]),
    ];
    let mut paths = HashMap::new();
    paths.insert(
        NodePublic::from_bytes([2; 32]),
        "192.0.2.3:41641".parse().unwrap(),
    );
    let set = peer_set(&peers, &paths, false);
    let p1 = set.get(&PublicKey([1; 32])).unwrap();
    assert_eq!(p1.name, "laptop1");
    assert_eq!(
        p1.allowed_ips,
        vec!["100.64.0.2/32".parse::<IpNet>().unwrap()]
    );
    assert_eq!(p1.endpoint, None, "no path confirmed yet");
    let p2 = set.get(&PublicKey([2; 32])).unwrap();
    assert_eq!(p2.endpoint, Some("192.0.2.3:41641".parse().unwrap()));
    // accept_routes: subnet routes too, never the default route.
    let set = peer_set(&peers, &paths, true);
    let ips: Vec<String> = set
        .get(&PublicKey([1; 32]))
        .unwrap()
        .allowed_ips
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(ips, vec!["100.64.0.2/32", "192.168.9.0/24"]);
}

fn config(tailnet: &str, routing: &str) -> Config {
    Config::from_toml(
        &format!(
            "state_dir = \"/tmp/mb\"\n[mesh]\nprivate_key = \"yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\"\naddress = \"10.77.0.1/24\"\n[bridge]\nname = \"br-mesh\"\nports = [\"eth1\"]\n[dhcp]\nrange = \"10.77.1.100-10.77.1.200\"\n{routing}\n{tailnet}\n"
        ),
        None,
    )
    .unwrap()
}

#[test]
fn the_bridge_subnet_and_routing_section_are_advertised() {
    let c = config("[tailnet]", "");
    let r: Vec<String> = advertised_routes(&c)
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(r, vec!["10.77.1.0/24"]);
    let c = config(
        "[tailnet]\nadvertise_bridge = false",
        "[routing]\nuplink = \"eth0\"\nadvertise_routes = [\"192.168.1.0/24\"]\nexit_node = true",
    );
    let r: Vec<String> = advertised_routes(&c)
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(r, vec!["192.168.1.0/24", "0.0.0.0/0", "::/0"]);
    assert!(advertised_routes(&config("", "")).is_empty());
}

/// The box (no control task) and a laptop peer with a disco key and one
/// endpoint: (box, box's disco key, laptop's disco key, its endpoint, its peer).
fn box_and_laptop() -> (
    Tailnet,
    meshbridge_tailnet::keys::DiscoPrivate,
    meshbridge_tailnet::keys::DiscoPrivate,
    SocketAddr,
    TailnetPeer,
) {
    use meshbridge_tailnet::keys::DiscoPrivate;
    let box_disco = DiscoPrivate::from_bytes([11; 32]);
    let lap_disco = DiscoPrivate::from_bytes([12; 32]);
    let (_tx, updates) = mpsc::channel(1);
    let t = fixture(updates, box_disco.clone(), "box");
    let lap_addr: SocketAddr = "10.99.0.20:41641".parse().unwrap();
    let mut lap = peer(1, &["100.64.0.1/32"], &["100.64.0.1/32"]);
    lap.disco_key = Some(lap_disco.public());
    lap.endpoints = vec![lap_addr];
    (t, box_disco, lap_disco, lap_addr, lap)
}

/// A map update plus a disco exchange with a (simulated) laptop: the
/// pong makes the laptop's address its WireGuard endpoint in the set.
#[tokio::test]
async fn a_confirmed_disco_path_becomes_the_peers_endpoint() {
    let (mut t, box_disco, lap_disco, lap_addr, lap) = box_and_laptop();
    let now = Instant::now();
    t.on_update(
        now,
        Update {
            addresses: vec![
                "100.64.0.2/32".parse().unwrap(),
                "fd7a:115c:a1e0::2/128".parse().unwrap(),
            ],
            peers: vec![lap],
            derp_regions: BTreeMap::new(),
            rules: Default::default(),
        },
    );
    assert_eq!(t.own_ipv4(), vec![Ipv4Addr::new(100, 64, 0, 2)]);
    assert_eq!(
        t.peer_set().get(&PublicKey([1; 32])).unwrap().endpoint,
        None
    );
    t.handle_timeout(now);
    let ping = t.poll_transmit().expect("a ping to the laptop's endpoint");
    assert_eq!(ping.to, lap_addr);
    // The laptop answers with a pong from the address pinged.
    let (from, msg) = disco::open(&lap_disco, &ping.data).unwrap();
    assert_eq!(from, box_disco.public());
    let disco::Message::Ping { tx_id, node_key } = msg else {
        panic!("not a ping: {msg:?}")
    };
    assert_eq!(node_key, Some(NodePublic::from_bytes([2; 32])));
    let pong = disco::seal(
        &lap_disco,
        &box_disco.public(),
        [3; 24],
        &disco::Message::Pong {
            tx_id,
            src: "10.99.0.10:41641".parse().unwrap(),
        },
    );
    t.handle_disco(now, lap_addr, &pong);
    assert!(t.take_paths_changed());
    assert!(!t.take_paths_changed());
    assert_eq!(
        t.peer_set().get(&PublicKey([1; 32])).unwrap().endpoint,
        Some(lap_addr)
    );
}

/// Without a confirmed path a peer is reached over DERP (its relay
/// stand-in endpoint, through its home region); what DERP delivers is
/// WireGuard for the mesh from that stand-in, or disco answered back
/// over DERP; a confirmed path replaces the relay, a lost one falls back.
#[tokio::test]
async fn peers_without_a_direct_path_are_relayed_and_fall_back_to_derp() {
    let (mut t, box_disco, lap_disco, lap_addr, mut lap) = box_and_laptop();
    lap.derp_region = Some(901);
    let mut regions = BTreeMap::new();
    regions.insert(900, loopback_region(900, 3478));
    let t0 = Instant::now();
    t.on_update(
        t0,
        Update {
            addresses: vec!["100.64.0.2/32".parse().unwrap()],
            peers: vec![lap],
            derp_regions: regions,
            rules: Default::default(),
        },
    );
    assert_eq!(t.derp.home(), None, "none before the first measurement");
    // Netcheck's first round (STUN to the region) goes unanswered: the
    // map's first region is home.
    t.handle_timeout(t0);
    assert!(
        std::iter::from_fn(|| t.poll_transmit())
            .any(|tx| tx.to == "127.0.0.1:3478".parse().unwrap()),
        "a netcheck probe to region 900's STUN port"
    );
    let now = t0 + meshbridge_tailnet::netcheck::ROUND_TIMEOUT;
    t.handle_timeout(now);
    assert_eq!(t.derp.home(), Some(900));
    while t.poll_transmit().is_some() {}
    let relay = t
        .peer_set()
        .get(&PublicKey([1; 32]))
        .unwrap()
        .endpoint
        .unwrap();
    assert!(Tailnet::is_relay(&relay));
    assert_eq!(relay.port(), 901, "through the peer's home region");
    // WireGuard over DERP: for the mesh, from the stand-in.
    let wg = DerpInput::Packet {
        region: 900,
        src: NodePublic::from_bytes([1; 32]),
        data: vec![4, 0, 0, 0, 1, 2, 3],
    };
    assert_eq!(
        t.handle_relayed(now, wg),
        Some((relay, vec![4, 0, 0, 0, 1, 2, 3]))
    );
    // A disco ping over DERP: the pong goes back to the stand-in.
    let ping = disco::seal(
        &lap_disco,
        &box_disco.public(),
        [1; 24],
        &disco::Message::Ping {
            tx_id: [6; 12],
            node_key: Some(NodePublic::from_bytes([1; 32])),
        },
    );
    let input = DerpInput::Packet {
        region: 900,
        src: NodePublic::from_bytes([1; 32]),
        data: ping,
    };
    assert_eq!(t.handle_relayed(now, input), None);
    // STUN to the home region's node comes first, then the pong.
    t.handle_timeout(now);
    let stun = t.poll_transmit().unwrap();
    assert_eq!(stun.to, "127.0.0.1:3478".parse().unwrap());
    let mut pong_to = None;
    while let Some(tx) = t.poll_transmit() {
        if let Ok((_, disco::Message::Pong { .. })) = disco::open(&lap_disco, &tx.data) {
            pong_to = Some(tx.to);
        }
    }
    assert_eq!(pong_to, Some(relay));
    // A confirmed direct path replaces the relay ...
    let ping = {
        t.handle_timeout(now + disco::PING_INTERVAL);
        std::iter::from_fn(|| t.poll_transmit())
            .find(|tx| tx.to == lap_addr)
            .expect("a direct ping")
    };
    let Ok((_, disco::Message::Ping { tx_id, .. })) = disco::open(&lap_disco, &ping.data) else {
        panic!("not a ping")
    };
    let pong = disco::seal(
        &lap_disco,
        &box_disco.public(),
        [3; 24],
        &disco::Message::Pong {
            tx_id,
            src: "10.99.0.10:41641".parse().unwrap(),
        },
    );
    t.handle_disco(now + disco::PING_INTERVAL, lap_addr, &pong);
    assert!(t.take_paths_changed());
    assert_eq!(
        t.peer_set().get(&PublicKey([1; 32])).unwrap().endpoint,
        Some(lap_addr)
    );
    // ... and when it stops answering, DERP takes over again.
    t.handle_timeout(now + disco::PING_INTERVAL + disco::PATH_TIMEOUT + Duration::from_secs(1));
    assert!(t.take_paths_changed());
    assert_eq!(
        t.peer_set().get(&PublicKey([1; 32])).unwrap().endpoint,
        Some(relay)
    );
}

#[test]
fn an_expired_self_node_is_seen_by_flag_or_key_expiry() {
    use meshbridge_tailnet::tailcfg::Node;
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut n = Node::default();
    assert!(!self_expired(&n, now), "no expiry: never");
    n.key_expiry = Some("2030-01-01T00:00:00Z".into());
    assert!(!self_expired(&n, now));
    n.key_expiry = Some("2026-12-01T08:00:00.123456789Z".into());
    assert!(self_expired(&n, now), "an expiry in the past");
    n.key_expiry = Some("0001-01-01T00:00:00Z".into());
    assert!(!self_expired(&n, now), "Go's zero time is no expiry");
    n.key_expiry = None;
    n.expired = true;
    assert!(self_expired(&n, now));
}

/// The status the loop reports: the control task's state plus the
/// peers of the last update (online, and direct where disco confirmed a
/// path); a logout reaches the control task, once.
#[tokio::test]
async fn status_has_the_login_state_and_the_peers() {
    let (_tx, updates) = mpsc::channel(1);
    let (state_tx, state) = watch::channel(ControlState::default());
    let (commands, mut commands_rx) = mpsc::channel(1);
    let mut t = fixture(
        updates,
        meshbridge_tailnet::keys::DiscoPrivate::from_bytes([11; 32]),
        "tbox",
    );
    t.state = state;
    t.commands = commands;
    let s = t.status();
    assert_eq!((s.state, s.peers.len()), (TailnetState::Starting, 0));
    state_tx.send_modify(|s| {
        s.state = TailnetState::NeedsLogin;
        s.login_url = Some("http://hs/register/x".into());
    });
    let s = t.status();
    assert_eq!(s.state, TailnetState::NeedsLogin);
    assert_eq!(s.login_url.as_deref(), Some("http://hs/register/x"));
    state_tx.send_modify(|s| {
        s.state = TailnetState::LoggedIn;
        s.login_url = None;
        s.name = Some("tbox.tailnet.test.".into());
    });
    let mut off = peer(3, &["100.64.0.3/32"], &[]);
    off.online = Some(false);
    t.on_update(
        Instant::now(),
        Update {
            addresses: vec!["100.64.0.1/32".parse().unwrap()],
            peers: vec![peer(1, &["100.64.0.2/32"], &[]), off],
            derp_regions: BTreeMap::new(),
            rules: Default::default(),
        },
    );
    t.paths.insert(
        NodePublic::from_bytes([1; 32]),
        "10.99.0.20:41641".parse().unwrap(),
    );
    let s = t.status();
    assert_eq!(s.name.as_deref(), Some("tbox.tailnet.test"));
    assert_eq!(s.addresses, vec!["100.64.0.1/32"]);
    assert_eq!(s.peers[0].name, "laptop1.tailnet.example");
    assert_eq!(
        (s.peers[0].online, s.peers[0].direct.as_deref()),
        (Some(true), Some("10.99.0.20:41641"))
    );
    assert_eq!(
        (s.peers[1].online, s.peers[1].direct.as_deref()),
        (Some(false), None)
    );
    t.logout().unwrap();
    assert_eq!(commands_rx.recv().await, Some(Command::Logout));
    state_tx.send_modify(|s| s.state = TailnetState::LoggedOut);
    assert!(t.logout().is_err(), "logged out already");
}

#[test]
fn keys_persist_0600_and_the_node_key_is_the_mesh_key() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("mb-tailnet-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mesh = [7u8; 32];
    let a = load_keys(&dir, &mesh).unwrap();
    assert_eq!(a.node_key.public(), NodePrivate::from_bytes(mesh).public());
    let mode = std::fs::metadata(dir.join(KEY_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let b = load_keys(&dir, &mesh).unwrap();
    assert_eq!(
        a.machine_key.public(),
        b.machine_key.public(),
        "a restart is the same node"
    );
    assert_eq!(a.disco_key.public(), b.disco_key.public());
    // A new mesh key: same machine, new node key.
    let c = load_keys(&dir, &[8u8; 32]).unwrap();
    assert_eq!(a.machine_key.public(), c.machine_key.public());
    assert_ne!(a.node_key.public(), c.node_key.public());
    std::fs::write(dir.join(KEY_FILE), "garbage").unwrap();
    assert!(load_keys(&dir, &mesh).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
