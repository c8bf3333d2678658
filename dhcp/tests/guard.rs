//! Rogue-server guard: foreign server detection, suspension, probing.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::*;
use dhcproto::v4::{DhcpOption, MessageType, Opcode, OptionCode};
use meshbridge_dhcp::{
    probe_mac, Event, LeaseDb, Server, PASSIVE_EVIDENCE_SPAN, PASSIVE_RESUME_AFTER,
};

fn probing_server() -> Server {
    let mut cfg = config();
    cfg.probe_interval = Some(PROBE);
    Server::new(cfg, LeaseDb::empty(), t0()).unwrap()
}

#[test]
fn probe_is_due_at_start_and_has_the_right_fields() {
    let mut s = probing_server();
    assert_eq!(s.poll_timeout(), Some(t0()));
    s.handle_timeout(t0());
    let t = s.poll_transmit().expect("probe");
    assert!(s.poll_transmit().is_none());
    let pm = probe_mac(SERVER_MAC);
    assert_eq!(s.probe_mac(), pm);
    assert_eq!(pm[0] & 0x02, 0x02, "locally administered");
    assert_eq!(pm[0] & 0x01, 0, "unicast");
    assert_eq!(pm[5], SERVER_MAC[5] ^ 0x55);
    assert_eq!(t.src_mac, pm);
    assert_eq!(t.dst_mac, [0xff; 6]);
    assert_eq!(
        (t.src_ip, t.dst_ip),
        (Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST)
    );
    assert_eq!((t.src_port, t.dst_port), (68, 67));
    let m = decode(&t);
    assert_eq!(m.opcode(), Opcode::BootRequest);
    assert_eq!(msg_type(&m), Some(MessageType::Discover));
    assert!(m.flags().broadcast());
    assert_eq!(m.chaddr(), &pm[..]);
    assert!(m.opts().get(OptionCode::ServerIdentifier).is_none());
    // Next probe one interval later, with its own fixed xid.
    assert_eq!(s.poll_timeout(), Some(t0() + PROBE));
    s.handle_timeout(t0() + PROBE);
    let m2 = decode(&s.poll_transmit().expect("second probe"));
    assert_ne!(m2.xid(), m.xid());
    // Our own probe looped back by the bridge is ignored, not offered to.
    let before = s.stats();
    s.handle_input(
        t0() + PROBE,
        meshbridge_dhcp::Input {
            src_mac: pm,
            src_ip: Ipv4Addr::UNSPECIFIED,
            src_port: 68,
            dst_port: 67,
            payload: &t.payload,
        },
    )
    .unwrap();
    no_reply(&mut s);
    assert_eq!(s.stats().offers, before.offers);
    assert_eq!(s.stats().ignored, before.ignored + 1);
}

#[test]
fn no_probe_when_disabled() {
    let mut s = server();
    assert_eq!(s.poll_timeout(), None);
    s.handle_timeout(t0() + Duration::from_secs(3600));
    no_reply(&mut s);
}

/// The home router's answer to the probe just sent.
fn answer_probe(s: &mut Server, now: std::time::SystemTime) {
    let probe = decode(&s.poll_transmit().expect("probe"));
    let mut m = foreign_offer(probe_mac(SERVER_MAC));
    m.set_xid(probe.xid());
    send_reply(s, now, FOREIGN_MAC, FOREIGN_IP, &m);
}

/// A probing server that the home router has answered twice: suspended at
/// `t0() + PROBE`.
fn suspended_server() -> Server {
    let mut s = probing_server();
    s.handle_timeout(t0());
    answer_probe(&mut s, t0());
    assert!(!s.is_suspended(), "one answer is not enough");
    s.handle_timeout(t0() + PROBE);
    answer_probe(&mut s, t0() + PROBE);
    assert!(s.is_suspended());
    s
}

#[test]
fn foreign_server_suspends_and_gone_resumes() {
    let mut s = suspended_server();
    assert_eq!(
        events(&mut s),
        vec![Event::ForeignServer {
            server_ip: FOREIGN_IP,
            server_mac: FOREIGN_MAC
        }]
    );
    assert_eq!(s.foreign_server(), Some((FOREIGN_IP, FOREIGN_MAC)));
    let t1 = t0() + PROBE;
    // Further replies do not repeat the event.
    send_reply(&mut s, t1, FOREIGN_MAC, FOREIGN_IP, &foreign_offer(mac(1)));
    assert!(events(&mut s).is_empty());
    assert_eq!(s.stats().foreign_replies_seen, 3);

    // While suspended: no OFFER, no ACK, no NAK, no INFORM reply.
    send(&mut s, t1, &discover(mac(1))).unwrap();
    send(&mut s, t1, &request_init_reboot(mac(1), ip(100))).unwrap();
    let mut inf = client_msg(mac(1), MessageType::Inform, 5);
    inf.set_ciaddr(ip(30));
    send(&mut s, t1, &inf).unwrap();
    no_reply(&mut s);
    assert_eq!(s.stats().ignored_while_suspended, 3);

    // Three quiet probe intervals later we serve again.
    for k in 2..=4u32 {
        let now = t0() + PROBE * k;
        assert_eq!(s.poll_timeout(), Some(now));
        s.handle_timeout(now);
        let probe = s.poll_transmit().expect("probes continue while suspended");
        assert_eq!(probe.src_mac, probe_mac(SERVER_MAC));
        if k < 4 {
            assert!(s.is_suspended(), "still suspended after {k} intervals");
            assert!(events(&mut s).is_empty());
        }
    }
    assert!(!s.is_suspended());
    assert_eq!(s.foreign_server(), None);
    assert_eq!(events(&mut s), vec![Event::ForeignServerGone]);
    let now = t0() + PROBE * 4;
    assert_eq!(dora(&mut s, mac(1), now), RANGE_START);
}

#[test]
fn a_forged_offer_burst_does_not_suspend() {
    let mut s = probing_server();
    s.handle_timeout(t0());
    let probe = decode(&s.poll_transmit().expect("probe"));
    // A bridged device answers our probe a thousand times and sends
    // unsolicited offers to everyone.
    for n in 0..1000u32 {
        let mut m = foreign_offer(probe_mac(SERVER_MAC));
        m.set_xid(probe.xid());
        send_reply(&mut s, t0(), FOREIGN_MAC, FOREIGN_IP, &m);
        send_reply(
            &mut s,
            t0(),
            FOREIGN_MAC,
            FOREIGN_IP,
            &foreign_offer(mac((n % 200) as u8)),
        );
    }
    assert!(!s.is_suspended());
    assert!(events(&mut s).is_empty());
    assert_eq!(dora(&mut s, mac(1), t0()), RANGE_START);
}

#[test]
fn renewals_are_answered_while_suspended() {
    let mut s = probing_server();
    let a = dora(&mut s, mac(1), t0());
    s.handle_timeout(t0());
    answer_probe(&mut s, t0());
    s.handle_timeout(t0() + PROBE);
    answer_probe(&mut s, t0() + PROBE);
    assert!(s.is_suspended());
    events(&mut s);
    let t = t0() + LEASE / 2;
    send(&mut s, t, &request_renew(mac(1), a)).unwrap();
    let (_, ack) = one_reply(&mut s);
    assert_eq!(msg_type(&ack), Some(MessageType::Ack));
    assert_eq!(
        s.active_ip_for(&mac(1), t + LEASE / 2 + Duration::from_secs(1)),
        Some(a)
    );
    // INIT-REBOOT of the own active lease too.
    send(&mut s, t, &request_init_reboot(mac(1), a)).unwrap();
    assert_eq!(msg_type(&one_reply(&mut s).1), Some(MessageType::Ack));
    assert_eq!(s.stats().renewals_while_suspended, 2);
    // Not someone else's address, and no NAK either.
    send(&mut s, t, &request_renew(mac(2), a)).unwrap();
    no_reply(&mut s);
}

#[test]
fn a_reply_during_suspension_restarts_the_quiet_count() {
    let mut s = suspended_server();
    s.poll_transmit();
    s.handle_timeout(t0() + PROBE * 2);
    s.handle_timeout(t0() + PROBE * 3);
    send_reply(
        &mut s,
        t0() + PROBE * 3,
        FOREIGN_MAC,
        FOREIGN_IP,
        &foreign_offer(mac(1)),
    );
    s.handle_timeout(t0() + PROBE * 4);
    s.handle_timeout(t0() + PROBE * 5);
    assert!(s.is_suspended());
    s.handle_timeout(t0() + PROBE * 6);
    assert!(!s.is_suspended());
}

#[test]
fn passive_detection_without_probing() {
    let mut s = server();
    for _ in 0..10 {
        send_reply(
            &mut s,
            t0(),
            FOREIGN_MAC,
            FOREIGN_IP,
            &foreign_offer(mac(1)),
        );
    }
    assert!(!s.is_suspended(), "a burst at one moment is not enough");
    let t = t0() + PASSIVE_EVIDENCE_SPAN;
    send_reply(&mut s, t, FOREIGN_MAC, FOREIGN_IP, &foreign_offer(mac(1)));
    assert!(s.is_suspended());
    assert_eq!(s.poll_timeout(), Some(t + PASSIVE_RESUME_AFTER));
    s.handle_timeout(t + PASSIVE_RESUME_AFTER);
    assert!(!s.is_suspended());
    assert!(events(&mut s).contains(&Event::ForeignServerGone));
    no_reply(&mut s);
}

#[test]
fn foreign_server_without_option_54_is_identified_by_source_ip() {
    let mut s = server();
    let mut offer = foreign_offer(mac(1));
    offer.opts_mut().remove(OptionCode::ServerIdentifier);
    send_reply(&mut s, t0(), FOREIGN_MAC, FOREIGN_IP, &offer);
    send_reply(
        &mut s,
        t0() + PASSIVE_EVIDENCE_SPAN,
        FOREIGN_MAC,
        FOREIGN_IP,
        &offer,
    );
    send_reply(
        &mut s,
        t0() + PASSIVE_EVIDENCE_SPAN,
        FOREIGN_MAC,
        FOREIGN_IP,
        &offer,
    );
    assert_eq!(
        events(&mut s),
        vec![Event::ForeignServer {
            server_ip: FOREIGN_IP,
            server_mac: FOREIGN_MAC
        }]
    );
}

#[test]
fn our_own_replies_are_not_foreign() {
    let mut s = server();
    send(&mut s, t0(), &discover(mac(1))).unwrap();
    let (t, _) = one_reply(&mut s);
    // The bridge shows us our own OFFER.
    s.handle_input(
        t0(),
        meshbridge_dhcp::Input {
            src_mac: t.src_mac,
            src_ip: t.src_ip,
            src_port: t.src_port,
            dst_port: t.dst_port,
            payload: &t.payload,
        },
    )
    .unwrap();
    // Also a reply naming us as server from another MAC (e.g. a bonded port).
    let mut m = foreign_offer(mac(1));
    m.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER_IP));
    send_reply(&mut s, t0(), FOREIGN_MAC, SERVER_IP, &m);
    assert!(!s.is_suspended());
    assert_eq!(s.stats().foreign_replies_seen, 0);
    assert!(events(&mut s).is_empty());
}

#[test]
fn releases_and_declines_are_still_handled_while_suspended() {
    let mut s = probing_server();
    let a = dora(&mut s, mac(1), t0());
    s.handle_timeout(t0());
    answer_probe(&mut s, t0());
    s.handle_timeout(t0() + PROBE);
    answer_probe(&mut s, t0() + PROBE);
    assert!(s.is_suspended());
    events(&mut s);
    let mut rel = client_msg(mac(1), MessageType::Release, 9);
    rel.set_ciaddr(a);
    rel.opts_mut()
        .insert(DhcpOption::ServerIdentifier(SERVER_IP));
    send(&mut s, t0() + PROBE, &rel).unwrap();
    assert_eq!(
        events(&mut s),
        vec![Event::Released { mac: mac(1), ip: a }, Event::LeasesChanged]
    );
}

#[test]
fn enabling_probing_via_set_config_probes_promptly() {
    let mut s = server();
    s.handle_timeout(t0() + Duration::from_secs(10));
    let mut cfg = config();
    cfg.probe_interval = Some(PROBE);
    s.set_config(cfg).unwrap();
    assert_eq!(s.poll_timeout(), Some(t0() + Duration::from_secs(10)));
    let mut cfg = config();
    cfg.probe_interval = None;
    s.set_config(cfg).unwrap();
    assert_eq!(s.poll_timeout(), None);
}
