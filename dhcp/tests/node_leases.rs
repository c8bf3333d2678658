//! Node leases: a bridged device that is a tailnet node of its own gets its
//! node's address (outside the bridge subnet) with that network's mask,
//! router and DNS; a device never seen before waits for it a little.

mod common;

use common::*;
use dhcproto::v4::{DhcpOption, MessageType, OptionCode};
use meshbridge_dhcp::{ConfigError, Event, NodeLease, Server};
use std::net::Ipv4Addr;
use std::time::Duration;

const NODE_IP: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 7);
const BOX_NODE: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);

fn node_lease(m: meshbridge_dhcp::Mac) -> NodeLease {
    NodeLease {
        mac: m,
        ip: NODE_IP,
        subnet_mask: Ipv4Addr::new(255, 192, 0, 0),
        router: BOX_NODE,
        dns: vec![BOX_NODE],
    }
}

fn with_node(server: &mut Server, lease: Option<NodeLease>) {
    let mut cfg = server.config().clone();
    cfg.node_leases = lease.into_iter().collect();
    server.set_config(cfg).expect("valid config");
}

fn opt_ip(m: &dhcproto::v4::Message, code: OptionCode) -> Option<Vec<Ipv4Addr>> {
    match m.opts().get(code) {
        Some(DhcpOption::SubnetMask(a)) => Some(vec![*a]),
        Some(DhcpOption::Router(a)) => Some(a.clone()),
        Some(DhcpOption::DomainNameServer(a)) => Some(a.clone()),
        _ => None,
    }
}

#[test]
fn a_device_with_a_node_lease_gets_its_node_address_mask_router_and_dns() {
    let mut s = server();
    let now = t0();
    with_node(&mut s, Some(node_lease(mac(1))));
    send(&mut s, now, &discover(mac(1))).unwrap();
    let (_, offer) = one_reply(&mut s);
    assert_eq!(offer.yiaddr(), NODE_IP);
    assert_eq!(
        opt_ip(&offer, OptionCode::SubnetMask),
        Some(vec![Ipv4Addr::new(255, 192, 0, 0)])
    );
    assert_eq!(opt_ip(&offer, OptionCode::Router), Some(vec![BOX_NODE]));
    assert_eq!(
        opt_ip(&offer, OptionCode::DomainNameServer),
        Some(vec![BOX_NODE])
    );
    send(&mut s, now, &request_selecting(mac(1), NODE_IP, SERVER_IP)).unwrap();
    let (_, ack) = one_reply(&mut s);
    assert_eq!(msg_type(&ack), Some(MessageType::Ack));
    assert_eq!(s.active_ip_for(&mac(1), now), Some(NODE_IP));
    // Renewing it (unicast, ciaddr outside the bridge subnet) is answered.
    let later = now + Duration::from_secs(1800);
    send(&mut s, later, &request_renew(mac(1), NODE_IP)).unwrap();
    let (_, ack) = one_reply(&mut s);
    assert_eq!(msg_type(&ack), Some(MessageType::Ack));
    // Another device never gets that address, even asking for it.
    send(&mut s, later, &request_init_reboot(mac(2), NODE_IP)).unwrap();
    no_reply(&mut s);
    assert_eq!(dora(&mut s, mac(2), later).octets()[..3], [192, 168, 50]);
    // The lease survives a restart with the same config.
    let mut s = restart(&s, later);
    assert_eq!(s.active_ip_for(&mac(1), later), Some(NODE_IP));
    send(&mut s, later, &request_renew(mac(1), NODE_IP)).unwrap();
    assert_eq!(msg_type(&one_reply(&mut s).1), Some(MessageType::Ack));
}

#[test]
fn a_device_on_a_pool_address_moves_to_its_node_address_at_renewal() {
    let mut s = server();
    let now = t0();
    let pool = dora(&mut s, mac(1), now);
    with_node(&mut s, Some(node_lease(mac(1))));
    let later = now + Duration::from_secs(1800);
    send(&mut s, later, &request_renew(mac(1), pool)).unwrap();
    assert_eq!(msg_type(&one_reply(&mut s).1), Some(MessageType::Nak));
    assert_eq!(dora(&mut s, mac(1), later), NODE_IP);
}

#[test]
fn a_new_device_waits_for_its_node_then_the_pool_when_none_comes() {
    let mut s = server();
    let mut cfg = s.config().clone();
    cfg.hold_new = Some(Duration::from_secs(10));
    s.set_config(cfg).unwrap();
    let now = t0();
    send(&mut s, now, &discover(mac(1))).unwrap();
    no_reply(&mut s);
    let ev = events(&mut s);
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::NewDevice { mac: m, .. } if *m == mac(1))),
        "{ev:?}"
    );
    // Asked again within the hold: still silent, said once.
    send(&mut s, now + Duration::from_secs(4), &discover(mac(1))).unwrap();
    no_reply(&mut s);
    assert!(events(&mut s).is_empty());
    // Its node registered: the next DISCOVER gets the node address.
    with_node(&mut s, Some(node_lease(mac(1))));
    assert_eq!(dora(&mut s, mac(1), now + Duration::from_secs(5)), NODE_IP);
    // A device whose node never comes gets a pool address after the hold.
    send(&mut s, now, &discover(mac(2))).unwrap();
    no_reply(&mut s);
    let later = now + Duration::from_secs(11);
    let pool = dora(&mut s, mac(2), later);
    assert!(pool >= RANGE_START && pool <= RANGE_END);
    // ...for a short while: it renews soon and then moves to its node's
    // address once that is there.
    let lease = s.leases().find(|l| l.mac == mac(2)).unwrap().expires;
    assert_eq!(lease, later + meshbridge_dhcp::WAITING_LEASE_TIME);
    let mut node2 = node_lease(mac(2));
    node2.ip = Ipv4Addr::new(100, 64, 0, 8);
    let mut cfg = s.config().clone();
    cfg.node_leases = vec![node_lease(mac(1)), node2];
    s.set_config(cfg).unwrap();
    let renew = later + Duration::from_secs(60);
    send(&mut s, renew, &request_renew(mac(2), pool)).unwrap();
    assert_eq!(msg_type(&one_reply(&mut s).1), Some(MessageType::Nak));
    assert_eq!(dora(&mut s, mac(2), renew), Ipv4Addr::new(100, 64, 0, 8));
    let lease = s.leases().find(|l| l.mac == mac(2)).unwrap().expires;
    assert_eq!(
        lease,
        renew + LEASE,
        "a node address gets the full lease time"
    );
    assert_eq!(s.stats().held, 3, "two of mac 1, one of mac 2");
}

#[test]
fn node_leases_inside_the_subnet_or_twice_are_refused() {
    let s = server();
    let mut cfg = s.config().clone();
    let mut inside = node_lease(mac(1));
    inside.ip = ip(120);
    cfg.node_leases = vec![inside];
    assert!(matches!(
        cfg.validate(),
        Err(ConfigError::BadNodeLease { .. })
    ));
    cfg.node_leases = vec![node_lease(mac(1)), node_lease(mac(2))];
    assert!(matches!(
        cfg.validate(),
        Err(ConfigError::BadNodeLease { .. })
    ));
    let mut own_router = node_lease(mac(1));
    own_router.router = NODE_IP;
    cfg.node_leases = vec![own_router];
    assert!(cfg.validate().is_err());
}

/// A device switched "behind the box" or "not in the tailnet" never
/// becomes a node: it is not held and its pool address gets the full lease
/// time; a device that was a node and is switched so leaves its node's
/// address at its next renewal (NAK, then a pool address).
#[test]
fn a_device_that_never_becomes_a_node_is_answered_at_once() {
    let mut s = server();
    let mut cfg = s.config().clone();
    cfg.hold_new = Some(Duration::from_secs(10));
    cfg.no_node = vec![mac(3)];
    cfg.node_leases = vec![node_lease(mac(4))];
    s.set_config(cfg).unwrap();
    let now = t0();
    let pool = dora(&mut s, mac(3), now);
    assert!(pool >= RANGE_START && pool <= RANGE_END);
    assert!(events(&mut s)
        .iter()
        .all(|e| !matches!(e, Event::NewDevice { .. })));
    let lease = s.leases().find(|l| l.mac == mac(3)).unwrap().expires;
    assert_eq!(lease, now + LEASE);
    // mac 4 is a node, then switched: its node lease goes.
    assert_eq!(dora(&mut s, mac(4), now), NODE_IP);
    let mut cfg = s.config().clone();
    cfg.node_leases.clear();
    cfg.no_node.push(mac(4));
    s.set_config(cfg).unwrap();
    let renew = now + Duration::from_secs(60);
    send(&mut s, renew, &request_renew(mac(4), NODE_IP)).unwrap();
    assert_eq!(msg_type(&one_reply(&mut s).1), Some(MessageType::Nak));
    let back = dora(&mut s, mac(4), renew);
    assert!(back >= RANGE_START && back <= RANGE_END, "{back}");
}
