//! Test harness: a virtual client that builds messages with dhcproto and a
//! few helpers to drive the server on virtual wall-clock time.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use meshbridge_dhcp::{Event, Input, LeaseDb, Mac, Server, ServerConfig, Transmit};

pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
pub const SERVER_MAC: Mac = Mac([0x02, 0x00, 0x5e, 0x10, 0x00, 0x01]);
pub const RANGE_START: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 100);
pub const RANGE_END: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 109);
pub const LEASE: Duration = Duration::from_secs(3600);
pub const PROBE: Duration = Duration::from_secs(60);

pub const FOREIGN_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 254);
pub const FOREIGN_MAC: Mac = Mac([0x00, 0x1a, 0x2b, 0x3c, 0x4d, 0x5e]);

pub fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

pub fn mac(n: u8) -> Mac {
    Mac([0x00, 0x11, 0x22, 0x33, 0x44, n])
}

pub fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 50, last)
}

/// A full config without probing.
pub fn config() -> ServerConfig {
    ServerConfig {
        server_ip: SERVER_IP,
        server_mac: SERVER_MAC,
        subnet_mask: Ipv4Addr::new(255, 255, 255, 0),
        range_start: RANGE_START,
        range_end: RANGE_END,
        router: Some(SERVER_IP),
        dns: vec![SERVER_IP, Ipv4Addr::new(9, 9, 9, 9)],
        domain: Some("home.arpa".into()),
        mtu: Some(1420),
        lease_time: LEASE,
        reservations: vec![],
        probe_interval: None,
        node_leases: Vec::new(),
        hold_new: None,
        no_node: Vec::new(),
        serve: true,
    }
}

pub fn server_with(cfg: ServerConfig) -> Server {
    Server::new(cfg, LeaseDb::empty(), t0()).expect("valid config")
}

pub fn server() -> Server {
    server_with(config())
}

/// A client message with the fields every test sets.
pub fn client_msg(mac: Mac, mt: MessageType, xid: u32) -> Message {
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(xid, z, z, z, z, &mac[..]);
    m.opts_mut().insert(DhcpOption::MessageType(mt));
    m
}

pub fn encode(m: &Message) -> Vec<u8> {
    m.to_vec().expect("encodable")
}

pub fn discover(mac: Mac) -> Message {
    client_msg(mac, MessageType::Discover, 0x1000 + u32::from(mac[5]))
}

pub fn request_selecting(mac: Mac, ip: Ipv4Addr, server_id: Ipv4Addr) -> Message {
    let mut m = client_msg(mac, MessageType::Request, 0x2000 + u32::from(mac[5]));
    m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
    m.opts_mut().insert(DhcpOption::ServerIdentifier(server_id));
    m
}

pub fn request_init_reboot(mac: Mac, ip: Ipv4Addr) -> Message {
    let mut m = client_msg(mac, MessageType::Request, 0x3000 + u32::from(mac[5]));
    m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
    m
}

pub fn request_renew(mac: Mac, ip: Ipv4Addr) -> Message {
    let mut m = client_msg(mac, MessageType::Request, 0x4000 + u32::from(mac[5]));
    m.set_ciaddr(ip);
    m
}

/// Feeds a client message (port 68 -> 67).
pub fn send(
    server: &mut Server,
    now: SystemTime,
    m: &Message,
) -> Result<(), meshbridge_dhcp::InputError> {
    let src_mac: Mac = m.chaddr().try_into().unwrap_or(Mac([0; 6]));
    let bytes = encode(m);
    server.handle_input(
        now,
        Input {
            src_mac,
            src_ip: m.ciaddr(),
            src_port: 68,
            dst_port: 67,
            payload: &bytes,
        },
    )
}

/// Feeds a server reply seen on the segment (port 67 -> 68).
pub fn send_reply(
    server: &mut Server,
    now: SystemTime,
    from_mac: Mac,
    from_ip: Ipv4Addr,
    m: &Message,
) {
    let bytes = encode(m);
    server
        .handle_input(
            now,
            Input {
                src_mac: from_mac,
                src_ip: from_ip,
                src_port: 67,
                dst_port: 68,
                payload: &bytes,
            },
        )
        .expect("reply accepted");
}

/// A DHCPOFFER from a foreign server, as the home router would send it.
pub fn foreign_offer(to: Mac) -> Message {
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(0x77, z, ip(23), z, z, &to[..]);
    m.set_opcode(Opcode::BootReply);
    m.set_flags(Flags::default().set_broadcast());
    m.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Offer));
    m.opts_mut()
        .insert(DhcpOption::ServerIdentifier(FOREIGN_IP));
    m
}

pub fn decode(t: &Transmit) -> Message {
    Message::from_bytes(&t.payload).expect("server output decodes")
}

pub fn msg_type(m: &Message) -> Option<MessageType> {
    match m.opts().get(OptionCode::MessageType) {
        Some(DhcpOption::MessageType(t)) => Some(*t),
        _ => None,
    }
}

/// The single transmit queued, decoded. Panics if there is not exactly one.
pub fn one_reply(server: &mut Server) -> (Transmit, Message) {
    let t = server.poll_transmit().expect("a reply");
    assert!(server.poll_transmit().is_none(), "exactly one reply");
    let m = decode(&t);
    (t, m)
}

pub fn no_reply(server: &mut Server) {
    assert!(server.poll_transmit().is_none(), "no reply expected");
}

pub fn events(server: &mut Server) -> Vec<Event> {
    std::iter::from_fn(|| server.poll_event()).collect()
}

/// DISCOVER -> OFFER -> REQUEST -> ACK; returns the bound address.
pub fn dora(server: &mut Server, mac: Mac, now: SystemTime) -> Ipv4Addr {
    send(server, now, &discover(mac)).expect("discover accepted");
    let (_, offer) = one_reply(server);
    assert_eq!(msg_type(&offer), Some(MessageType::Offer));
    let offered = offer.yiaddr();
    send(server, now, &request_selecting(mac, offered, SERVER_IP)).expect("request accepted");
    let (_, ack) = one_reply(server);
    assert_eq!(msg_type(&ack), Some(MessageType::Ack), "ACK for {offered}");
    assert_eq!(ack.yiaddr(), offered);
    offered
}

/// Restarts: snapshot -> JSON -> parse -> new server.
pub fn restart(server: &Server, now: SystemTime) -> Server {
    let text = server.snapshot().to_json();
    let db = LeaseDb::from_json(&text).expect("own output parses");
    Server::new(server.config().clone(), db, now).expect("valid config")
}
