//! Attacks from bridged devices (issue #11, items 3 to 5): forged source,
//! forged RELEASE/DECLINE, rate limits, starvation floods.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use common::*;
use dhcproto::v4::{DhcpOption, Message, MessageType};
use meshbridge_dhcp::{
    Input, InputError, Mac, Server, MAX_OFFERS, NEWCOMER_BURST, NEWCOMER_RATE, OFFER_MIN_HOLD,
    PER_MAC_BURST,
};

const ATTACKER: Mac = Mac([0x02, 0xba, 0xd0, 0x00, 0x00, 0x01]);

/// Feeds a client message in a frame from `src_mac`.
fn send_from(s: &mut Server, now: SystemTime, src_mac: Mac, m: &Message) -> Result<(), InputError> {
    let bytes = encode(m);
    s.handle_input(
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

fn drain(s: &mut Server) -> Vec<Message> {
    std::iter::from_fn(|| s.poll_transmit())
        .map(|t| decode(&t))
        .collect()
}

fn random_mac(n: u32) -> Mac {
    let b = n.wrapping_mul(2_654_435_761).to_be_bytes();
    Mac([0x02, 0x66, b[0], b[1], b[2], b[3]])
}

#[test]
fn a_message_for_another_mac_is_dropped_and_counted() {
    let mut s = server();
    send_from(&mut s, t0(), ATTACKER, &discover(mac(1))).unwrap();
    no_reply(&mut s);
    assert_eq!(s.stats().chaddr_mismatch, 1);
    assert_eq!(s.stats().offers, 0);
}

#[test]
fn forged_release_and_decline_leave_the_victims_lease_alone() {
    let mut s = server();
    let a = dora(&mut s, mac(1), t0());
    events(&mut s);
    let mut rel = client_msg(mac(1), MessageType::Release, 9);
    rel.set_ciaddr(a);
    rel.opts_mut()
        .insert(DhcpOption::ServerIdentifier(SERVER_IP));
    let mut dec = client_msg(mac(1), MessageType::Decline, 10);
    dec.opts_mut().insert(DhcpOption::RequestedIpAddress(a));
    dec.opts_mut()
        .insert(DhcpOption::ServerIdentifier(SERVER_IP));
    send_from(&mut s, t0(), ATTACKER, &rel).unwrap();
    send_from(&mut s, t0(), ATTACKER, &dec).unwrap();
    // The attacker in its own name, naming the victim's address.
    let mut own_rel = client_msg(ATTACKER, MessageType::Release, 11);
    own_rel.set_ciaddr(a);
    let mut own_dec = client_msg(ATTACKER, MessageType::Decline, 12);
    own_dec.opts_mut().insert(DhcpOption::RequestedIpAddress(a));
    send_from(&mut s, t0(), ATTACKER, &own_rel).unwrap();
    send_from(&mut s, t0(), ATTACKER, &own_dec).unwrap();
    no_reply(&mut s);
    assert!(events(&mut s).is_empty());
    assert_eq!(s.active_ip_for(&mac(1), t0()), Some(a));
    assert_eq!(s.stats().chaddr_mismatch, 2);
    assert_eq!((s.stats().releases, s.stats().declines), (0, 0));
    // The victim renews as usual.
    send(&mut s, t0() + LEASE / 2, &request_renew(mac(1), a)).unwrap();
    assert_eq!(msg_type(&one_reply(&mut s).1), Some(MessageType::Ack));
}

#[test]
fn one_mac_is_rate_limited_others_are_not() {
    let mut s = server();
    for _ in 0..100 {
        send(&mut s, t0(), &discover(ATTACKER)).unwrap();
    }
    assert_eq!(drain(&mut s).len(), PER_MAC_BURST as usize);
    assert_eq!(s.stats().rate_limited, 100 - u64::from(PER_MAC_BURST));
    assert_eq!(dora(&mut s, mac(1), t0()), ip(101));
}

/// 10,000 DISCOVERs from random MACs, `per_sec` a second, from `start`.
/// With `request`, every offer is also requested (a full DORA flood).
/// Returns when it ended.
fn flood(s: &mut Server, start: SystemTime, per_sec: u32, request: bool) -> SystemTime {
    let mut now = start;
    for n in 0..10_000u32 {
        now = start + Duration::from_secs_f64(f64::from(n) / f64::from(per_sec));
        let m = random_mac(n);
        send(s, now, &discover(m)).unwrap();
        for offer in drain(s) {
            if request {
                send(s, now, &request_selecting(m, offer.yiaddr(), SERVER_IP)).unwrap();
                drain(s);
            }
        }
        assert!(s.pending_offers() <= MAX_OFFERS);
    }
    now
}

#[test]
fn starvation_flood_does_not_hurt_known_devices() {
    for request in [false, true] {
        let mut cfg = config();
        cfg.reservations = vec![(mac(9), ip(109))];
        let mut s = server_with(cfg);
        // A device with an active lease, one that released its lease and
        // went offline, one that expired while offline, and a reserved one
        // that never came yet.
        let holder = dora(&mut s, mac(1), t0());
        let released = dora(&mut s, mac(2), t0());
        let expired = dora(&mut s, mac(3), t0());
        let mut rel = client_msg(mac(2), MessageType::Release, 9);
        rel.set_ciaddr(released);
        send(&mut s, t0(), &rel).unwrap();
        let start = t0() + LEASE + Duration::from_secs(1);
        s.handle_timeout(start);
        send(&mut s, start, &request_renew(mac(1), holder)).unwrap();
        drain(&mut s);
        // 20,000/s for half a second: the newcomer budget lets its burst
        // and half a second's rate through, no more.
        let end = flood(&mut s, start, 20_000, request);
        let st = s.stats();
        let let_through = u64::from(NEWCOMER_BURST + NEWCOMER_RATE / 2) + 1;
        assert!(st.rate_limited >= 10_000 - let_through, "{st:?}");
        // The box still answers known devices, with their own addresses.
        assert_eq!(s.active_ip_for(&mac(1), end), Some(holder));
        assert_eq!(dora(&mut s, mac(2), end), released, "request={request}");
        assert_eq!(dora(&mut s, mac(3), end), expired, "request={request}");
        assert_eq!(dora(&mut s, mac(9), end), ip(109), "request={request}");
        // A new device gets an address once the flood is over (when the
        // pool is full of pending offers, the oldest is given up).
        let after = end + OFFER_MIN_HOLD;
        if request {
            // Every free address was taken by a flood MAC's lease: nothing
            // is left, but nothing known was taken either.
            send(&mut s, after, &discover(mac(7))).unwrap();
            assert!(drain(&mut s).is_empty());
        } else {
            let a = dora(&mut s, mac(7), after);
            assert!(![holder, released, expired, ip(109)].contains(&a));
        }
        assert!(s.leases().count() <= 10);
    }
}

#[test]
fn newcomers_share_a_budget() {
    let mut s = server();
    for n in 0..10_000 {
        send(&mut s, t0(), &discover(random_mac(n))).unwrap();
    }
    let offers = drain(&mut s).len() as u64;
    assert!(offers <= u64::from(NEWCOMER_BURST), "{offers}");
    // One second later the budget has refilled by NEWCOMER_RATE.
    let t1 = t0() + Duration::from_secs(1);
    let before = s.stats().rate_limited;
    for n in 10_000..20_000 {
        send(&mut s, t1, &discover(random_mac(n))).unwrap();
    }
    assert_eq!(
        s.stats().rate_limited - before,
        10_000 - u64::from(NEWCOMER_RATE)
    );
    let _ = Ipv4Addr::UNSPECIFIED;
}

#[test]
fn a_request_for_a_held_offer_is_not_charged_to_the_newcomers() {
    let mut s = server();
    send(&mut s, t0(), &discover(mac(1))).unwrap();
    let offered = one_reply(&mut s).1.yiaddr();
    // A flood of newcomers uses up the shared budget...
    for n in 0..10_000 {
        send(&mut s, t0(), &discover(random_mac(n))).unwrap();
    }
    drain(&mut s);
    let limited = s.stats().rate_limited;
    assert!(limited > 0);
    // ...but the device that already holds an offer completes its exchange.
    send(&mut s, t0(), &request_selecting(mac(1), offered, SERVER_IP)).unwrap();
    let (_, ack) = one_reply(&mut s);
    assert_eq!(msg_type(&ack), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), offered);
    assert_eq!(s.stats().rate_limited, limited);
}
