//! Netcheck: the latency to each DERP region, measured with STUN binding
//! requests from the WireGuard socket, and the choice of the home region
//! (the one peers relay to us through) with hysteresis.
//!
//! Facts (tailscale.com `net/netcheck/netcheck.go`,
//! `addReportHistoryAndSetPreferredDERP`): a report holds each region's
//! latency (the fastest of its nodes' STUN answers); reports are kept for a
//! while and each region's best recent latency ranks them; the region of
//! the current report with the lowest best-recent latency wins, but the old
//! home stays while it still answers and the winner is less than
//! [`ABSOLUTE_DIFF`] faster or not at least a third faster. Tailscale keeps
//! five minutes of reports; the box keeps [`HISTORY`] so that a region that
//! became slow is left within about a minute.
//!
//! The [`Netcheck`] state here starts a round every [`INTERVAL`] (and at
//! once when the targets change, i.e. a new DERP map), ends it when every
//! target answered or after [`ROUND_TIMEOUT`], and then updates the home.
//! Time and transaction ids are passed in; it opens no socket.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::stun;

/// How often the regions are measured again.
pub const INTERVAL: Duration = Duration::from_secs(20);
/// A round ends this long after it started, answered or not.
pub const ROUND_TIMEOUT: Duration = Duration::from_secs(3);
/// How long reports are kept for the best recent latency.
pub const HISTORY: Duration = Duration::from_secs(45);
/// A new home must be at least this much faster than the old one.
pub const ABSOLUTE_DIFF: Duration = Duration::from_millis(10);

/// One STUN server of a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The DERP region.
    pub region: u16,
    /// Its node's STUN address.
    pub addr: SocketAddr,
}

/// Latency per region.
pub type Report = BTreeMap<u16, Duration>;

#[derive(Debug)]
struct Round {
    started: Instant,
    pending: HashMap<[u8; 12], (Target, Instant)>,
    latency: Report,
}

/// The measurements and the home region.
#[derive(Debug, Default)]
pub struct Netcheck {
    targets: Vec<Target>,
    round: Option<Round>,
    history: VecDeque<(Instant, Report)>,
    last: Report,
    home: Option<u16>,
    next: Option<Instant>,
    out: VecDeque<(SocketAddr, Vec<u8>)>,
    rounds: u64,
}

/// The home region after a report (see the module docs): `prev` the old
/// home, `current` this report, `best_recent` each region's lowest latency
/// over the kept reports (this one included).
pub fn choose_home(prev: Option<u16>, current: &Report, best_recent: &Report) -> Option<u16> {
    let mut best: Option<(u16, Duration)> = None;
    for region in current.keys() {
        let d = best_recent
            .get(region)
            .copied()
            .unwrap_or_else(|| current[region]);
        if best.is_none_or(|(_, b)| d < b) {
            best = Some((*region, d));
        }
    }
    let (winner, best_any) = match best {
        Some(b) => b,
        // Nothing answered: keep what we had.
        None => return prev,
    };
    if let Some(old) = prev.filter(|p| *p != winner) {
        if let Some(old_now) = current.get(&old) {
            let old_now = *old_now;
            if old_now.saturating_sub(best_any) < ABSOLUTE_DIFF || best_any > old_now / 3 * 2 {
                return Some(old);
            }
        }
    }
    Some(winner)
}

impl Netcheck {
    /// Nothing measured yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The regions' STUN servers (from a new DERP map). A change starts a
    /// new round at once; regions that left are forgotten.
    pub fn set_targets(&mut self, now: Instant, targets: Vec<Target>) {
        if targets == self.targets {
            return;
        }
        let keep = |r: &u16| targets.iter().any(|t| t.region == *r);
        for (_, rep) in self.history.iter_mut() {
            rep.retain(|r, _| keep(r));
        }
        self.last.retain(|r, _| keep(r));
        if self.home.is_some_and(|h| !keep(&h)) {
            self.home = None;
        }
        self.targets = targets;
        self.round = None;
        self.next = Some(now);
    }

    /// Timers: end a round, start the next.
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut impl RngCore) {
        if self
            .round
            .as_ref()
            .is_some_and(|r| now >= r.started + ROUND_TIMEOUT)
        {
            self.finish(now);
        }
        if self.round.is_some() || self.targets.is_empty() || self.next.is_some_and(|n| now < n) {
            return;
        }
        let mut pending = HashMap::new();
        for t in &self.targets {
            let mut tx = [0u8; 12];
            rng.fill_bytes(&mut tx);
            pending.insert(tx, (*t, now));
            self.out.push_back((t.addr, stun::request(tx)));
        }
        self.round = Some(Round {
            started: now,
            pending,
            latency: Report::new(),
        });
        self.next = Some(now + INTERVAL);
    }

    fn finish(&mut self, now: Instant) {
        let Some(round) = self.round.take() else {
            return;
        };
        self.rounds += 1;
        self.history.push_back((now, round.latency.clone()));
        while self
            .history
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > HISTORY)
        {
            self.history.pop_front();
        }
        let mut best = Report::new();
        for (_, rep) in &self.history {
            for (r, d) in rep {
                let e = best.entry(*r).or_insert(*d);
                *e = (*e).min(*d);
            }
        }
        self.home = choose_home(self.home, &round.latency, &best);
        self.last = round.latency;
    }

    /// When [`Netcheck::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.round {
            Some(r) => Some(r.started + ROUND_TIMEOUT),
            None if self.targets.is_empty() => None,
            None => self.next,
        }
    }

    /// The next STUN request to send from the WireGuard socket.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.out.pop_front()
    }

    /// Whether `p` answers one of this round's requests.
    pub fn is_response(&self, p: &[u8]) -> bool {
        self.round.as_ref().is_some_and(|r| {
            stun::is_stun(p)
                && p.get(8..20)
                    .and_then(|t| <[u8; 12]>::try_from(t).ok())
                    .is_some_and(|t| r.pending.contains_key(&t))
        })
    }

    /// A STUN answer: the region's latency; returns our address as that
    /// server saw it. The round ends when every target answered.
    pub fn handle_response(&mut self, now: Instant, p: &[u8]) -> Option<SocketAddr> {
        let (tx, mapped) = stun::parse_response(p).ok()?;
        let round = self.round.as_mut()?;
        let (target, sent) = round.pending.remove(&tx)?;
        let d = now.saturating_duration_since(sent);
        let e = round.latency.entry(target.region).or_insert(d);
        *e = (*e).min(d);
        if round.pending.is_empty() {
            self.finish(now);
        }
        Some(mapped)
    }

    /// The home region, once a round had an answer.
    pub fn home(&self) -> Option<u16> {
        self.home
    }

    /// The latest report (regions that answered).
    pub fn latencies(&self) -> &Report {
        &self.last
    }

    /// What is measured (from [`Netcheck::set_targets`]).
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// Rounds finished so far.
    pub fn rounds(&self) -> u64 {
        self.rounds
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn rep(v: &[(u16, u64)]) -> Report {
        v.iter().map(|(r, d)| (*r, ms(*d))).collect()
    }

    #[test]
    fn the_fastest_region_wins_without_a_previous_home() {
        let r = rep(&[(900, 80), (901, 5), (902, 30)]);
        assert_eq!(choose_home(None, &r, &r), Some(901));
        assert_eq!(choose_home(None, &Report::new(), &Report::new()), None);
        assert_eq!(
            choose_home(Some(900), &Report::new(), &Report::new()),
            Some(900),
            "nothing answered: keep the old home"
        );
    }

    #[test]
    fn hysteresis_keeps_the_old_home_unless_the_new_one_is_clearly_faster() {
        // 4 ms vs 9 ms: within the absolute difference.
        let r = rep(&[(900, 9), (901, 4)]);
        assert_eq!(choose_home(Some(900), &r, &r), Some(900));
        // 40 ms vs 30 ms: over 10 ms apart? No (10 is not < 10) — but not a
        // third faster either.
        let r = rep(&[(900, 40), (901, 30)]);
        assert_eq!(choose_home(Some(900), &r, &r), Some(900));
        // 90 ms vs 30 ms: clearly faster.
        let r = rep(&[(900, 90), (901, 30)]);
        assert_eq!(choose_home(Some(900), &r, &r), Some(901));
        // The old home did not answer this time: move.
        let r = rep(&[(901, 30)]);
        assert_eq!(choose_home(Some(900), &r, &r), Some(901));
        // The old home is the fastest: stays.
        let r = rep(&[(900, 5), (901, 30)]);
        assert_eq!(choose_home(Some(900), &r, &r), Some(900));
    }

    #[test]
    fn best_recent_latency_ranks_the_regions() {
        // 901 is slow now, but was fast in the kept history; 902 was never
        // faster than 20 ms.
        let cur = rep(&[(901, 50), (902, 20)]);
        let best = rep(&[(901, 3), (902, 20)]);
        assert_eq!(choose_home(None, &cur, &best), Some(901));
    }

    fn answer(req: &[u8], mapped: SocketAddr) -> Vec<u8> {
        let SocketAddr::V4(v4) = mapped else {
            panic!("v4 only")
        };
        let mut resp = vec![1, 1, 0, 12, 0x21, 0x12, 0xa4, 0x42];
        resp.extend_from_slice(&req[8..20]);
        resp.extend_from_slice(&[0, 0x20, 0, 8, 0, 1]);
        resp.extend_from_slice(&(v4.port() ^ 0x2112).to_be_bytes());
        resp.extend(
            v4.ip()
                .octets()
                .iter()
                .zip([0x21u8, 0x12, 0xa4, 0x42])
                .map(|(a, k)| a ^ k),
        );
        resp
    }

    /// Rounds on virtual time: region 900 at 80 ms and 901 at 5 ms make 901
    /// home; swapped, the box moves once the old fast answers age out of
    /// the history.
    #[test]
    fn rounds_measure_each_region_and_move_home_when_latencies_swap() {
        let mut rng = StdRng::seed_from_u64(1);
        let t0 = Instant::now();
        let a: SocketAddr = "192.0.2.1:3478".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:3479".parse().unwrap();
        let me: SocketAddr = "203.0.113.9:41641".parse().unwrap();
        let mut n = Netcheck::new();
        assert_eq!(n.poll_timeout(), None, "no targets, no rounds");
        n.set_targets(
            t0,
            vec![
                Target {
                    region: 900,
                    addr: a,
                },
                Target {
                    region: 901,
                    addr: b,
                },
            ],
        );
        assert_eq!(n.poll_timeout(), Some(t0));
        let mut now = t0;
        let mut round = |n: &mut Netcheck, now: Instant, da: u64, db: u64| {
            n.handle_timeout(now, &mut rng);
            let mut reqs = HashMap::new();
            while let Some((to, req)) = n.poll_transmit() {
                reqs.insert(to, req);
            }
            assert_eq!(reqs.len(), 2, "one request per region");
            let mut order = [(a, da), (b, db)];
            order.sort_by_key(|(_, d)| *d);
            for (to, d) in order {
                let resp = answer(&reqs[&to], me);
                assert!(n.is_response(&resp));
                assert_eq!(n.handle_response(now + ms(d), &resp), Some(me));
                assert!(!n.is_response(&resp), "answered once");
            }
            assert_eq!(n.poll_timeout(), Some(now + INTERVAL), "round over");
        };
        round(&mut n, now, 80, 5);
        assert_eq!(n.home(), Some(901));
        assert_eq!(n.latencies(), &rep(&[(900, 80), (901, 5)]));
        // Swapped: 900 fast now. While 901's 5 ms is in the history it
        // still ranks first; then 900 wins.
        let mut moved_after = None;
        for i in 1..=6 {
            now += INTERVAL;
            round(&mut n, now, 5, 80);
            if n.home() == Some(900) {
                moved_after = Some(i);
                break;
            }
        }
        let moved = moved_after.expect("home moves to the faster region");
        assert!(
            u32::try_from(moved).unwrap() * INTERVAL <= HISTORY + INTERVAL,
            "within the history window"
        );
        // Near-equal latencies do not flap.
        for _ in 0..5 {
            now += INTERVAL;
            round(&mut n, now, 12, 9);
            assert_eq!(n.home(), Some(900));
        }
        assert!(n.rounds() >= 7);
    }

    #[test]
    fn a_round_without_answers_ends_at_its_timeout_and_keeps_the_home() {
        let mut rng = StdRng::seed_from_u64(2);
        let t0 = Instant::now();
        let a: SocketAddr = "192.0.2.1:3478".parse().unwrap();
        let mut n = Netcheck::new();
        n.set_targets(
            t0,
            vec![Target {
                region: 900,
                addr: a,
            }],
        );
        n.handle_timeout(t0, &mut rng);
        let (_, req) = n.poll_transmit().unwrap();
        n.handle_response(t0 + ms(2), &answer(&req, "203.0.113.9:1".parse().unwrap()));
        assert_eq!(n.home(), Some(900));
        n.handle_timeout(t0 + INTERVAL, &mut rng);
        assert!(n.poll_transmit().is_some());
        assert_eq!(n.poll_timeout(), Some(t0 + INTERVAL + ROUND_TIMEOUT));
        n.handle_timeout(t0 + INTERVAL + ROUND_TIMEOUT, &mut rng);
        assert_eq!(n.home(), Some(900), "silence is no reason to move");
        assert!(n.latencies().is_empty());
        // Garbage is no answer.
        assert!(!n.is_response(&[0u8; 3]));
        assert_eq!(n.handle_response(t0, &[1, 1, 0, 0]), None);
        // A new map without region 900: forgotten, measured again at once.
        let b: SocketAddr = "192.0.2.2:3478".parse().unwrap();
        let t1 = t0 + INTERVAL * 2;
        n.set_targets(
            t1,
            vec![Target {
                region: 901,
                addr: b,
            }],
        );
        assert_eq!(n.home(), None);
        assert_eq!(n.poll_timeout(), Some(t1));
    }
}
