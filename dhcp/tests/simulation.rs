//! Deterministic simulation: more clients than addresses, random actions on
//! virtual time, restarts from the persisted snapshot. Checks the
//! invariants the daemon relies on after every step.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use common::*;
use dhcproto::v4::{DhcpOption, MessageType};
use meshbridge_dhcp::{Event, Mac, Server};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // SplitMix64.
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn check_invariants(s: &Server, now: std::time::SystemTime) {
    let mut ips = BTreeSet::new();
    let mut macs = BTreeSet::new();
    for l in s.leases() {
        assert!(macs.insert(l.mac), "two records for one MAC");
        if l.is_active(now) {
            assert!(ips.insert(l.ip), "{} actively leased twice", l.ip);
            assert!((RANGE_START..=RANGE_END).contains(&l.ip));
            assert_eq!(s.active_ip_for(&l.mac, now), Some(l.ip));
            assert_eq!(s.active_mac_for(l.ip, now), Some(l.mac));
        }
    }
}

/// Runs DORA and returns the address, or `None` when refused (pool full).
fn try_dora(s: &mut Server, m: Mac, now: std::time::SystemTime) -> Option<Ipv4Addr> {
    send(s, now, &discover(m)).unwrap();
    let t = s.poll_transmit()?;
    let offer = decode(&t).yiaddr();
    send(s, now, &request_selecting(m, offer, SERVER_IP)).unwrap();
    let (_, ack) = one_reply(s);
    (msg_type(&ack) == Some(MessageType::Ack)).then_some(offer)
}

#[test]
fn many_clients_small_pool_random_actions() {
    for seed in 1..=5u64 {
        let mut rng = Rng(seed);
        let mut cfg = config();
        cfg.range_end = ip(105); // 6 addresses
        cfg.lease_time = Duration::from_secs(600);
        let mut s = server_with(cfg);
        let clients: Vec<Mac> = (1..=9).map(mac).collect();
        // What each client believes it holds.
        let mut holds: BTreeMap<Mac, Ipv4Addr> = BTreeMap::new();
        let mut now = t0();
        let mut acks = 0;
        for _ in 0..600 {
            now += Duration::from_secs(rng.below(120));
            let m = clients[rng.below(clients.len() as u64) as usize];
            match rng.below(6) {
                0 | 1 => {
                    // The address on record for this client, if nobody else
                    // is actively using it, must be the one it gets.
                    let sticky = s
                        .leases()
                        .find(|l| l.mac == m)
                        .map(|l| l.ip)
                        .filter(|a| s.active_mac_for(*a, now).is_none_or(|o| o == m));
                    let got = try_dora(&mut s, m, now);
                    if let Some(a) = sticky {
                        assert_eq!(got, Some(a), "seed {seed}: {m:?} lost its address");
                    }
                    if let Some(a) = got {
                        acks += 1;
                        holds.insert(m, a);
                    }
                }
                2 => {
                    if let Some(&a) = holds.get(&m) {
                        send(&mut s, now, &request_renew(m, a)).unwrap();
                        let (_, r) = one_reply(&mut s);
                        if msg_type(&r) == Some(MessageType::Ack) {
                            acks += 1;
                        } else {
                            holds.remove(&m);
                        }
                    }
                }
                3 => {
                    if let Some(a) = holds.remove(&m) {
                        let mut rel = client_msg(m, MessageType::Release, 1);
                        rel.set_ciaddr(a);
                        rel.opts_mut()
                            .insert(DhcpOption::ServerIdentifier(SERVER_IP));
                        send(&mut s, now, &rel).unwrap();
                    }
                }
                4 => {
                    s.handle_timeout(now);
                    while s.poll_transmit().is_some() {}
                }
                _ => {
                    // Restart from what the daemon would have persisted.
                    s = restart(&s, now);
                }
            }
            // A client whose lease ran out stops believing in it.
            holds.retain(|mac, a| s.active_ip_for(mac, now) == Some(*a));
            for e in events(&mut s) {
                if let Event::Bound { mac, ip, .. } = e {
                    assert_eq!(s.active_ip_for(&mac, now), Some(ip));
                }
            }
            no_reply(&mut s);
            check_invariants(&s, now);
        }
        assert!(
            acks > 100,
            "seed {seed}: only {acks} ACKs; the simulation did little"
        );
    }
}
