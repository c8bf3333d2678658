//! Address assignment and lease lifecycle (RFC 2131 §4.3).

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::*;
use dhcproto::v4::{DhcpOption, MessageType, OptionCode};
use meshbridge_dhcp::{
    Event, LeaseDb, LeaseState, Mac, Server, DECLINE_QUARANTINE, IN_USE_HOLD, OFFER_HOLD,
    OFFER_MIN_HOLD, REMEMBER_LEASES,
};

#[test]
fn full_dora_binds_and_reports() {
    let mut s = server();
    let now = t0();
    let got = dora(&mut s, mac(1), now);
    assert_eq!(
        got, RANGE_START,
        "first client gets the lowest pool address"
    );
    assert_eq!(
        events(&mut s),
        vec![
            Event::Bound {
                mac: mac(1),
                ip: got,
                hostname: None,
                expires: now + LEASE,
            },
            Event::LeasesChanged,
        ]
    );
    assert_eq!(s.active_ip_for(&mac(1), now), Some(got));
    assert_eq!(s.active_mac_for(got, now), Some(mac(1)));
    let leases: Vec<_> = s.leases().collect();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].state, LeaseState::Bound);
    assert_eq!(leases[0].expires, now + LEASE);
    let st = s.stats();
    assert_eq!((st.received, st.offers, st.acks, st.naks), (2, 1, 1, 0));
}

#[test]
fn offer_carries_configured_options() {
    let mut s = server();
    let d = discover(mac(1));
    send(&mut s, t0(), &d).unwrap();
    let (t, offer) = one_reply(&mut s);
    assert!(t.payload.len() >= 300, "BOOTP minimum size");
    assert_eq!(offer.opcode(), dhcproto::v4::Opcode::BootReply);
    assert_eq!(offer.xid(), d.xid());
    assert_eq!(offer.chaddr(), &mac(1)[..]);
    assert_eq!(offer.yiaddr(), RANGE_START);
    assert_eq!(offer.ciaddr(), Ipv4Addr::UNSPECIFIED);
    let o = offer.opts();
    assert_eq!(
        o.get(OptionCode::MessageType),
        Some(&DhcpOption::MessageType(MessageType::Offer))
    );
    assert_eq!(
        o.get(OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
    );
    assert_eq!(
        o.get(OptionCode::Router),
        Some(&DhcpOption::Router(vec![SERVER_IP]))
    );
    assert_eq!(
        o.get(OptionCode::DomainNameServer),
        Some(&DhcpOption::DomainNameServer(vec![
            SERVER_IP,
            Ipv4Addr::new(9, 9, 9, 9)
        ]))
    );
    assert_eq!(
        o.get(OptionCode::DomainName),
        Some(&DhcpOption::DomainName("home.arpa".into()))
    );
    assert_eq!(
        o.get(OptionCode::InterfaceMtu),
        Some(&DhcpOption::InterfaceMtu(1420))
    );
    assert_eq!(
        o.get(OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(3600))
    );
    assert_eq!(
        o.get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER_IP))
    );
    assert_eq!(o.get(OptionCode::Renewal), Some(&DhcpOption::Renewal(1800)));
    assert_eq!(
        o.get(OptionCode::Rebinding),
        Some(&DhcpOption::Rebinding(3150))
    );
}

#[test]
fn unconfigured_options_are_omitted() {
    let mut cfg = config();
    cfg.router = None;
    cfg.dns.clear();
    cfg.domain = None;
    cfg.mtu = None;
    let mut s = server_with(cfg);
    send(&mut s, t0(), &discover(mac(1))).unwrap();
    let (_, offer) = one_reply(&mut s);
    for code in [
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::DomainName,
        OptionCode::InterfaceMtu,
    ] {
        assert!(
            offer.opts().get(code).is_none(),
            "{code:?} should be absent"
        );
    }
    assert!(offer.opts().get(OptionCode::SubnetMask).is_some());
}

#[test]
fn same_mac_gets_same_ip_after_restart_even_long_expired() {
    let mut s = server();
    dora(&mut s, mac(1), t0());
    let second = dora(&mut s, mac(2), t0());
    assert_eq!(second, ip(101));
    // Much later (lease long expired), the box restarts.
    let later = t0() + Duration::from_secs(30 * 86_400);
    let mut s = restart(&s, later);
    assert_eq!(
        s.active_ip_for(&mac(2), later),
        None,
        "expired before restart"
    );
    // A newcomer does not take mac(2)'s old address...
    assert_eq!(dora(&mut s, mac(9), later), ip(102));
    // ...and mac(2) gets its old one back.
    assert_eq!(dora(&mut s, mac(2), later), ip(101));
}

#[test]
fn different_macs_get_different_ips() {
    let mut s = server();
    let mut seen = std::collections::BTreeSet::new();
    for n in 1..=10 {
        assert!(seen.insert(dora(&mut s, mac(n), t0())), "duplicate address");
    }
    assert_eq!(seen.len(), 10);
}

#[test]
fn discover_twice_offers_the_same_address() {
    let mut s = server();
    send(&mut s, t0(), &discover(mac(1))).unwrap();
    let (_, a) = one_reply(&mut s);
    send(&mut s, t0() + Duration::from_secs(2), &discover(mac(1))).unwrap();
    let (_, b) = one_reply(&mut s);
    assert_eq!(a.yiaddr(), b.yiaddr());
}

#[test]
fn requested_address_honoured_when_free() {
    let mut s = server();
    let mut d = discover(mac(1));
    d.opts_mut().insert(DhcpOption::RequestedIpAddress(ip(105)));
    send(&mut s, t0(), &d).unwrap();
    assert_eq!(one_reply(&mut s).1.yiaddr(), ip(105));
    // Outside the range: ignored, lowest free instead.
    let mut d = discover(mac(2));
    d.opts_mut().insert(DhcpOption::RequestedIpAddress(ip(50)));
    send(&mut s, t0(), &d).unwrap();
    assert_eq!(one_reply(&mut s).1.yiaddr(), ip(100));
    // Held for someone else: ignored.
    let mut d = discover(mac(3));
    d.opts_mut().insert(DhcpOption::RequestedIpAddress(ip(105)));
    send(&mut s, t0(), &d).unwrap();
    assert_eq!(one_reply(&mut s).1.yiaddr(), ip(101));
}

#[test]
fn offers_are_held_for_sixty_seconds() {
    let mut cfg = config();
    cfg.range_end = RANGE_START;
    let mut s = server_with(cfg);
    send(&mut s, t0(), &discover(mac(1))).unwrap();
    one_reply(&mut s);
    send(
        &mut s,
        t0() + OFFER_MIN_HOLD - Duration::from_secs(1),
        &discover(mac(2)),
    )
    .unwrap();
    no_reply(&mut s);
    // The offer nobody took is given up once the pool has nothing else.
    send(&mut s, t0() + OFFER_MIN_HOLD, &discover(mac(2))).unwrap();
    assert_eq!(one_reply(&mut s).1.yiaddr(), RANGE_START);
    send(
        &mut s,
        t0() + OFFER_MIN_HOLD,
        &request_selecting(mac(1), RANGE_START, SERVER_IP),
    )
    .unwrap();
    assert_eq!(msg_type(&one_reply(&mut s).1), Some(MessageType::Nak));
    send(&mut s, t0() + OFFER_HOLD, &discover(mac(3))).unwrap();
    assert_eq!(one_reply(&mut s).1.yiaddr(), RANGE_START);
}

#[test]
fn pool_exhaustion_means_silence_and_is_counted() {
    let mut cfg = config();
    cfg.range_end = ip(101);
    let mut s = server_with(cfg);
    dora(&mut s, mac(1), t0());
    dora(&mut s, mac(2), t0());
    send(&mut s, t0(), &discover(mac(3))).unwrap();
    no_reply(&mut s);
    assert_eq!(s.stats().pool_exhausted, 1);
    // Existing clients still get their own address.
    assert_eq!(dora(&mut s, mac(1), t0()), ip(100));
}

#[test]
fn full_pool_reuses_the_longest_expired_address() {
    let mut cfg = config();
    cfg.range_end = ip(101);
    let mut s = server_with(cfg);
    dora(&mut s, mac(1), t0());
    dora(&mut s, mac(2), t0() + Duration::from_secs(10));
    // Within lease_time × REMEMBER_LEASES the offline devices keep theirs.
    let within = t0() + LEASE * (1 + REMEMBER_LEASES) - Duration::from_secs(1);
    send(&mut s, within, &discover(mac(3))).unwrap();
    no_reply(&mut s);
    assert_eq!(s.stats().pool_exhausted, 1);
    let later = t0() + LEASE * (1 + REMEMBER_LEASES) + Duration::from_secs(60);
    assert_eq!(dora(&mut s, mac(3), later), ip(100), "mac(1) expired first");
    assert!(
        s.leases().all(|l| l.mac != mac(1)),
        "the old association is forgotten"
    );
}

#[test]
fn nak_for_wrong_address_when_selecting() {
    let mut s = server();
    send(&mut s, t0(), &discover(mac(1))).unwrap();
    let (_, offer) = one_reply(&mut s);
    send(&mut s, t0(), &request_selecting(mac(1), ip(108), SERVER_IP)).unwrap();
    let (t, nak) = one_reply(&mut s);
    assert_eq!(msg_type(&nak), Some(MessageType::Nak));
    assert_eq!(nak.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(
        nak.opts().get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER_IP))
    );
    assert!(nak.opts().get(OptionCode::AddressLeaseTime).is_none());
    assert_eq!((t.dst_ip, t.dst_mac), (Ipv4Addr::BROADCAST, Mac([0xff; 6])));
    assert_eq!(s.stats().naks, 1);
    assert_eq!(s.active_ip_for(&mac(1), t0()), None);
    // The right address still works.
    send(
        &mut s,
        t0(),
        &request_selecting(mac(1), offer.yiaddr(), SERVER_IP),
    )
    .unwrap();
    assert_eq!(msg_type(&one_reply(&mut s).1), Some(MessageType::Ack));
}

#[test]
fn request_for_other_server_is_silent_and_drops_our_offer() {
    let mut cfg = config();
    cfg.range_end = RANGE_START;
    let mut s = server_with(cfg);
    send(&mut s, t0(), &discover(mac(1))).unwrap();
    one_reply(&mut s);
    send(&mut s, t0(), &request_selecting(mac(1), ip(23), FOREIGN_IP)).unwrap();
    no_reply(&mut s);
    // The held address is free again at once.
    send(&mut s, t0(), &discover(mac(2))).unwrap();
    assert_eq!(one_reply(&mut s).1.yiaddr(), RANGE_START);
}

#[test]
fn init_reboot_silent_for_other_subnet_nak_for_other_owner() {
    let mut s = server();
    let a = dora(&mut s, mac(1), t0());
    events(&mut s);
    // Another network's address: another server's client. Never NAK it.
    send(
        &mut s,
        t0(),
        &request_init_reboot(mac(2), Ipv4Addr::new(10, 0, 0, 7)),
    )
    .unwrap();
    assert!(s.poll_transmit().is_none());
    send(&mut s, t0(), &request_init_reboot(mac(2), a)).unwrap();
    assert_eq!(msg_type(&one_reply(&mut s).1), Some(MessageType::Nak));
    // Inside the subnet but outside the pool, never leased: NAK.
    send(&mut s, t0(), &request_init_reboot(mac(2), ip(20))).unwrap();
    assert_eq!(msg_type(&one_reply(&mut s).1), Some(MessageType::Nak));
    assert_eq!(s.stats().naks, 2);
    assert!(events(&mut s).is_empty());
}

#[test]
fn init_reboot_ack_after_restart() {
    let mut s = server();
    let a = dora(&mut s, mac(1), t0());
    let later = t0() + Duration::from_secs(600);
    let mut s = restart(&s, later);
    send(&mut s, later, &request_init_reboot(mac(1), a)).unwrap();
    let (_, ack) = one_reply(&mut s);
    assert_eq!(msg_type(&ack), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), a);
    assert_eq!(s.active_ip_for(&mac(1), later), Some(a));
    assert!(events(&mut s).contains(&Event::LeasesChanged));
}

#[test]
fn init_reboot_ack_for_free_pool_address() {
    let mut s = server();
    send(&mut s, t0(), &request_init_reboot(mac(4), ip(107))).unwrap();
    let (_, ack) = one_reply(&mut s);
    assert_eq!(
        (msg_type(&ack), ack.yiaddr()),
        (Some(MessageType::Ack), ip(107))
    );
}

#[test]
fn renew_with_ciaddr_extends_the_lease() {
    let mut s = server();
    let a = dora(&mut s, mac(1), t0());
    events(&mut s);
    let renew_at = t0() + LEASE / 2;
    send(&mut s, renew_at, &request_renew(mac(1), a)).unwrap();
    let (t, ack) = one_reply(&mut s);
    assert_eq!(msg_type(&ack), Some(MessageType::Ack));
    assert_eq!((ack.ciaddr(), ack.yiaddr()), (a, a));
    assert_eq!((t.dst_ip, t.dst_mac), (a, mac(1)), "unicast to ciaddr");
    let ev = events(&mut s);
    assert!(matches!(ev[0], Event::Bound { expires, .. } if expires == renew_at + LEASE));
    assert_eq!(ev[1], Event::LeasesChanged);
    assert_eq!(
        s.active_ip_for(&mac(1), t0() + LEASE + Duration::from_secs(1)),
        Some(a)
    );
    // Renewing somebody else's address: NAK.
    send(&mut s, renew_at, &request_renew(mac(2), a)).unwrap();
    assert_eq!(msg_type(&one_reply(&mut s).1), Some(MessageType::Nak));
}

#[test]
fn release_then_rediscover_gets_the_same_ip() {
    let mut s = server();
    let a = dora(&mut s, mac(1), t0());
    dora(&mut s, mac(2), t0());
    events(&mut s);
    let mut rel = client_msg(mac(1), MessageType::Release, 9);
    rel.set_ciaddr(a);
    rel.opts_mut()
        .insert(DhcpOption::ServerIdentifier(SERVER_IP));
    let now = t0() + Duration::from_secs(5);
    send(&mut s, now, &rel).unwrap();
    no_reply(&mut s);
    assert_eq!(
        events(&mut s),
        vec![Event::Released { mac: mac(1), ip: a }, Event::LeasesChanged]
    );
    assert_eq!(s.active_ip_for(&mac(1), now), None);
    assert_eq!(s.stats().releases, 1);
    let l = s.leases().find(|l| l.mac == mac(1)).unwrap();
    assert_eq!((l.state, l.ip), (LeaseState::Released, a));
    // A newcomer does not get the released address; the owner does.
    assert_eq!(dora(&mut s, mac(3), now), ip(102));
    assert_eq!(dora(&mut s, mac(1), now), a);
}

#[test]
fn release_for_other_server_is_ignored() {
    let mut s = server();
    let a = dora(&mut s, mac(1), t0());
    let mut rel = client_msg(mac(1), MessageType::Release, 9);
    rel.set_ciaddr(a);
    rel.opts_mut()
        .insert(DhcpOption::ServerIdentifier(FOREIGN_IP));
    send(&mut s, t0(), &rel).unwrap();
    assert_eq!(s.active_ip_for(&mac(1), t0()), Some(a));
    assert_eq!(s.stats().releases, 0);
}

#[test]
fn decline_quarantines_the_address() {
    let mut s = server();
    let a = dora(&mut s, mac(1), t0());
    events(&mut s);
    let mut dec = client_msg(mac(1), MessageType::Decline, 11);
    dec.opts_mut().insert(DhcpOption::RequestedIpAddress(a));
    dec.opts_mut()
        .insert(DhcpOption::ServerIdentifier(SERVER_IP));
    send(&mut s, t0(), &dec).unwrap();
    no_reply(&mut s);
    assert_eq!(
        events(&mut s),
        vec![Event::Declined { mac: mac(1), ip: a }, Event::LeasesChanged]
    );
    assert_eq!(s.stats().declines, 1);
    assert_eq!(s.active_ip_for(&mac(1), t0()), None);
    assert!(s.leases().next().is_none(), "binding dropped");
    // Nobody, not even the decliner, gets it during the quarantine.
    assert_eq!(dora(&mut s, mac(1), t0()), ip(101));
    send(&mut s, t0(), &request_init_reboot(mac(2), a)).unwrap();
    assert_eq!(msg_type(&one_reply(&mut s).1), Some(MessageType::Nak));
    // Afterwards it is free again.
    let later = t0() + DECLINE_QUARANTINE;
    assert_eq!(dora(&mut s, mac(2), later), a);
}

#[test]
fn inform_gets_options_without_a_lease() {
    let mut s = server();
    let mut inf = client_msg(mac(7), MessageType::Inform, 21);
    inf.set_ciaddr(ip(30));
    send(&mut s, t0(), &inf).unwrap();
    let (t, ack) = one_reply(&mut s);
    assert_eq!(msg_type(&ack), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(ack.ciaddr(), ip(30));
    for code in [
        OptionCode::AddressLeaseTime,
        OptionCode::Renewal,
        OptionCode::Rebinding,
    ] {
        assert!(
            ack.opts().get(code).is_none(),
            "{code:?} must not be in an INFORM reply"
        );
    }
    assert!(ack.opts().get(OptionCode::Router).is_some());
    assert!(ack.opts().get(OptionCode::ServerIdentifier).is_some());
    assert_eq!((t.dst_ip, t.dst_mac, t.dst_port), (ip(30), mac(7), 68));
    assert_eq!(s.stats().informs, 1);
    assert!(s.leases().next().is_none());
    // From another subnet: not answered.
    let mut inf = client_msg(mac(7), MessageType::Inform, 22);
    inf.set_ciaddr(Ipv4Addr::new(10, 1, 1, 1));
    send(&mut s, t0(), &inf).unwrap();
    no_reply(&mut s);
}

#[test]
fn hostname_is_recorded_and_persisted() {
    let mut s = server();
    send(&mut s, t0(), &discover(mac(1))).unwrap();
    let (_, offer) = one_reply(&mut s);
    let mut req = request_selecting(mac(1), offer.yiaddr(), SERVER_IP);
    req.opts_mut()
        .insert(DhcpOption::Hostname("Office Printer\0".into()));
    send(&mut s, t0(), &req).unwrap();
    one_reply(&mut s);
    let ev = events(&mut s);
    assert!(matches!(&ev[0], Event::Bound { hostname: Some(h), .. } if h == "OfficePrinter"));
    assert_eq!(
        s.leases().next().unwrap().hostname.as_deref(),
        Some("OfficePrinter")
    );
    // A renewal without option 12 keeps the name.
    send(&mut s, t0(), &request_renew(mac(1), offer.yiaddr())).unwrap();
    one_reply(&mut s);
    let s = restart(&s, t0());
    assert_eq!(
        s.leases().next().unwrap().hostname.as_deref(),
        Some("OfficePrinter")
    );
}

#[test]
fn note_in_use_prevents_offering() {
    let mut s = server();
    s.note_in_use(RANGE_START, mac(50), t0());
    send(&mut s, t0(), &discover(mac(1))).unwrap();
    assert_eq!(one_reply(&mut s).1.yiaddr(), ip(101));
    // The MAC seen on it may have it.
    send(&mut s, t0(), &discover(mac(50))).unwrap();
    assert_eq!(one_reply(&mut s).1.yiaddr(), RANGE_START);
    // Ten minutes after the last sighting it is free for others.
    let later = t0() + IN_USE_HOLD + OFFER_HOLD;
    send(&mut s, later, &discover(mac(2))).unwrap();
    assert_eq!(one_reply(&mut s).1.yiaddr(), RANGE_START);
}

#[test]
fn reservations_are_fixed_and_exclusive() {
    let mut cfg = config();
    cfg.reservations = vec![(mac(1), ip(20)), (mac(2), RANGE_START)];
    let mut s = server_with(cfg);
    assert_eq!(
        dora(&mut s, mac(1), t0()),
        ip(20),
        "reservation outside the range"
    );
    assert_eq!(
        dora(&mut s, mac(3), t0()),
        ip(101),
        "reserved pool address skipped"
    );
    let mut d = discover(mac(4));
    d.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(RANGE_START));
    send(&mut s, t0(), &d).unwrap();
    assert_eq!(one_reply(&mut s).1.yiaddr(), ip(102));
    assert_eq!(dora(&mut s, mac(2), t0()), RANGE_START);
}

#[test]
fn expiry_is_reported_by_timeout_and_keeps_the_association() {
    let mut s = server();
    let a = dora(&mut s, mac(1), t0());
    events(&mut s);
    assert_eq!(s.poll_timeout(), Some(t0() + LEASE));
    s.handle_timeout(t0() + LEASE);
    assert_eq!(events(&mut s), vec![Event::Expired { mac: mac(1), ip: a }]);
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.active_ip_for(&mac(1), t0() + LEASE), None);
    let l = s.leases().next().unwrap();
    assert_eq!((l.mac, l.ip, l.state), (mac(1), a, LeaseState::Expired));
}

#[test]
fn restore_drops_leases_outside_the_subnet() {
    let text = r#"{"version":1,"leases":[
        {"mac":"00:11:22:33:44:01","ip":"192.168.50.104","hostname":"a","expires_unix":1700003600},
        {"mac":"00:11:22:33:44:02","ip":"10.0.0.9","hostname":null,"expires_unix":1700003600}]}"#;
    let db = LeaseDb::from_json(text).unwrap();
    let mut s = Server::new(config(), db, t0()).unwrap();
    assert_eq!(s.active_ip_for(&mac(1), t0()), Some(ip(104)));
    assert_eq!(s.leases().count(), 1);
    assert_eq!(
        events(&mut s),
        vec![Event::LeasesChanged],
        "the dropped entry should be persisted away"
    );
}

#[test]
fn set_config_keeps_leases_and_drops_disallowed_ones() {
    let mut s = server();
    let a = dora(&mut s, mac(1), t0());
    let b = dora(&mut s, mac(2), t0());
    events(&mut s);
    let mut cfg = config();
    cfg.range_start = ip(101);
    cfg.lease_time = Duration::from_secs(7200);
    s.set_config(cfg).unwrap();
    assert_eq!(
        s.active_ip_for(&mac(1), t0()),
        Some(a),
        "{a} left the pool but the device keeps it until it renews"
    );
    assert_eq!(s.active_ip_for(&mac(2), t0()), Some(b));
    assert_eq!(events(&mut s), vec![]);
    send(&mut s, t0(), &request_renew(mac(1), a)).unwrap();
    assert_eq!(msg_type(&one_reply(&mut s).1), Some(MessageType::Nak));
    assert!(
        dora(&mut s, mac(1), t0()) >= ip(101),
        "it moves into the new pool"
    );
    // A lease that has run out is dropped by the next change.
    let later = t0() + Duration::from_secs(100_000);
    send(&mut s, later, &discover(mac(9))).unwrap();
    events(&mut s);
    let mut cfg = config();
    cfg.range_start = ip(102);
    cfg.lease_time = Duration::from_secs(7200);
    s.set_config(cfg).unwrap();
    assert!(
        s.leases().all(|l| l.ip >= ip(102) || l.mac == mac(9)),
        "expired records outside the pool are gone"
    );
    let mut bad = config();
    bad.lease_time = Duration::from_secs(1);
    assert!(s.set_config(bad).is_err());
    assert_eq!(
        s.config().lease_time,
        Duration::from_secs(7200),
        "failed set_config changes nothing"
    );
}

#[test]
fn invalid_config_is_rejected_by_new() {
    let mut cfg = config();
    cfg.range_end = Ipv4Addr::new(192, 168, 51, 10);
    let err = Server::new(cfg, LeaseDb::empty(), t0()).unwrap_err();
    assert!(err.to_string().contains("not inside subnet"), "{err}");
}

#[test]
fn renewal_of_another_networks_address_is_never_naked() {
    let mut s = server();
    // A client of the home router renewing its own lease, seen on our segment.
    send(
        &mut s,
        t0(),
        &request_renew(mac(9), Ipv4Addr::new(192, 168, 1, 50)),
    )
    .unwrap();
    assert!(s.poll_transmit().is_none());
    assert_eq!(s.stats().naks, 0);
}

#[test]
fn forgetting_a_device_drops_its_lease_and_its_address_can_go_to_another() {
    let mut s = server();
    let now = t0();
    let a = dora(&mut s, mac(1), now);
    events(&mut s);
    assert!(s.forget(&mac(1)));
    assert_eq!(events(&mut s), vec![Event::LeasesChanged]);
    assert_eq!(s.active_ip_for(&mac(1), now), None);
    assert_eq!(s.leases().count(), 0);
    assert!(!s.forget(&mac(1)), "nothing left to forget");
    // The freed address is the lowest again, so the next device gets it.
    assert_eq!(dora(&mut s, mac(2), now), a);
}

/// `dhcp.enabled = false`: the server says nothing on the segment (no
/// OFFER, ACK or NAK, no probe), but keeps the leases it has, and serves
/// them again unchanged when turned back on.
#[test]
fn disabled_server_is_silent_and_keeps_its_leases() {
    let mut s = server();
    let bound = dora(&mut s, mac(1), t0());
    let mut off = s.config().clone();
    off.serve = false;
    off.probe_interval = Some(PROBE);
    s.set_config(off.clone()).unwrap();
    let later = t0() + Duration::from_secs(10);
    send(&mut s, later, &discover(mac(2))).unwrap();
    no_reply(&mut s);
    send(&mut s, later, &request_renew(mac(1), bound)).unwrap();
    no_reply(&mut s);
    send(&mut s, later, &request_init_reboot(mac(1), ip(250))).unwrap();
    no_reply(&mut s);
    assert_eq!(s.stats().ignored_while_disabled, 3);
    // No probe either, even with a probe interval set.
    s.handle_timeout(later + PROBE * 2);
    no_reply(&mut s);
    assert_eq!(s.leases().count(), 1);
    // A restart with serving off keeps the lease too.
    let mut s = Server::new(off.clone(), s.snapshot(), later).unwrap();
    assert_eq!(s.active_ip_for(&mac(1), later), Some(bound));
    let mut on = off;
    on.serve = true;
    on.probe_interval = None;
    s.set_config(on).unwrap();
    send(&mut s, later, &request_renew(mac(1), bound)).unwrap();
    let (_, ack) = one_reply(&mut s);
    assert_eq!(msg_type(&ack), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), bound);
}
