//! Rogue-server guard: notices other DHCP servers on the segment and decides
//! when the box must stay quiet.
//!
//! The box must never fight the home router, but one forged BOOTREPLY from
//! a bridged device must not switch DHCP off either. So a reply only makes
//! its sender a *suspect*; we suspend (stop making new offers) only on
//! evidence over time from one MAC:
//!
//! * With probing enabled we send a DHCPDISCOVER from a probe MAC every
//!   interval. A suspect must answer [`PROBE_ANSWERS_TO_SUSPEND`] distinct
//!   probes (matching xid, to the probe MAC) before we suspend. Replies that
//!   answer no probe of ours are counted but never suspend us.
//! * With probing disabled, a suspect must send
//!   [`PASSIVE_REPLIES_TO_SUSPEND`] replies spread over at least
//!   [`PASSIVE_EVIDENCE_SPAN`].
//!
//! With probing, after three probe intervals without a reply from the
//! suspended server we serve again; without probing, suspension ends
//! [`PASSIVE_RESUME_AFTER`] after its last reply. At most [`MAX_SUSPECTS`]
//! suspects are remembered.

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use crate::{after, Mac};

/// With probing disabled: how long after the last foreign reply we resume.
pub const PASSIVE_RESUME_AFTER: Duration = Duration::from_secs(15 * 60);
/// Probe intervals without a foreign reply before we serve again.
pub const QUIET_PROBES_TO_RESUME: u32 = 3;
/// Distinct probes one MAC must answer before we suspend (probing enabled).
pub const PROBE_ANSWERS_TO_SUSPEND: u32 = 2;
/// Replies one MAC must send before we suspend (probing disabled)...
pub const PASSIVE_REPLIES_TO_SUSPEND: u32 = 3;
/// ...spread over at least this long.
pub const PASSIVE_EVIDENCE_SPAN: Duration = Duration::from_secs(60);
/// Most suspects remembered; the one heard from longest ago is dropped.
pub const MAX_SUSPECTS: usize = 16;
/// Probe xids an answer may match (a slow server answers a recent probe).
const RECENT_PROBES: usize = 4;

/// What a timer tick asks the server to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Tick {
    /// Send a probe with this xid.
    pub(crate) probe_xid: Option<u32>,
    /// Suspension ended: serve again.
    pub(crate) resumed: bool,
}

/// A foreign reply as the guard sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) mac: Mac,
    pub(crate) server_ip: Ipv4Addr,
    pub(crate) xid: u32,
    /// Addressed to our probe MAC.
    pub(crate) to_probe: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Suspect {
    server_ip: Ipv4Addr,
    first_seen: SystemTime,
    last_seen: SystemTime,
    replies: u32,
    probes_answered: u32,
    last_probe_xid: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Suspension {
    mac: Mac,
    server_ip: Ipv4Addr,
    last_seen: SystemTime,
    /// Probe ticks since the last reply from `mac`.
    quiet_ticks: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct Guard {
    interval: Option<Duration>,
    next_probe: Option<SystemTime>,
    probe_seq: u32,
    xid_base: u32,
    recent_probes: VecDeque<u32>,
    suspects: BTreeMap<Mac, Suspect>,
    suspension: Option<Suspension>,
}

impl Guard {
    /// A guard that probes first at `now` (if probing is enabled).
    pub(crate) fn new(interval: Option<Duration>, xid_base: u32, now: SystemTime) -> Self {
        Self {
            interval,
            next_probe: interval.map(|_| now),
            probe_seq: 0,
            xid_base,
            recent_probes: VecDeque::new(),
            suspects: BTreeMap::new(),
            suspension: None,
        }
    }

    pub(crate) fn is_suspended(&self) -> bool {
        self.suspension.is_some()
    }

    /// The server that suspends us: its server identifier and MAC.
    pub(crate) fn suspended_by(&self) -> Option<(Ipv4Addr, Mac)> {
        self.suspension.map(|s| (s.server_ip, s.mac))
    }

    /// Applies a new probe interval and xid base. A newly enabled or
    /// shortened interval probes no later than `now + interval`; enabling
    /// probing probes at `now`.
    pub(crate) fn reconfigure(
        &mut self,
        interval: Option<Duration>,
        xid_base: u32,
        now: SystemTime,
    ) {
        self.xid_base = xid_base;
        self.next_probe = match (self.interval, interval, self.next_probe) {
            (_, None, _) => None,
            (None, Some(_), _) | (_, Some(_), None) => Some(now),
            (Some(_), Some(new), Some(next)) => Some(next.min(after(now, new))),
        };
        self.interval = interval;
        if let Some(s) = &mut self.suspension {
            // Count afresh under the new schedule.
            s.quiet_ticks = 0;
        }
    }

    /// A foreign reply was seen. Returns `true` if this suspends us (the
    /// evidence against its sender is now sufficient and we were serving).
    pub(crate) fn on_foreign_reply(&mut self, now: SystemTime, reply: Reply) -> bool {
        let answers_probe = reply.to_probe && self.recent_probes.contains(&reply.xid);
        if let Some(s) = &mut self.suspension {
            if s.mac == reply.mac {
                s.last_seen = now;
                s.quiet_ticks = 0;
            }
            return false;
        }
        if !self.suspects.contains_key(&reply.mac) && self.suspects.len() >= MAX_SUSPECTS {
            let oldest = self
                .suspects
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(m, _)| *m);
            if let Some(m) = oldest {
                self.suspects.remove(&m);
            }
        }
        let suspect = self.suspects.entry(reply.mac).or_insert(Suspect {
            server_ip: reply.server_ip,
            first_seen: now,
            last_seen: now,
            replies: 0,
            probes_answered: 0,
            last_probe_xid: None,
        });
        suspect.server_ip = reply.server_ip;
        suspect.last_seen = suspect.last_seen.max(now);
        suspect.replies = suspect.replies.saturating_add(1);
        if answers_probe && suspect.last_probe_xid != Some(reply.xid) {
            suspect.probes_answered = suspect.probes_answered.saturating_add(1);
            suspect.last_probe_xid = Some(reply.xid);
        }
        let convicted = if self.interval.is_some() {
            suspect.probes_answered >= PROBE_ANSWERS_TO_SUSPEND
        } else {
            suspect.replies >= PASSIVE_REPLIES_TO_SUSPEND
                && now
                    .duration_since(suspect.first_seen)
                    .is_ok_and(|d| d >= PASSIVE_EVIDENCE_SPAN)
        };
        if !convicted {
            return false;
        }
        self.suspension = Some(Suspension {
            mac: reply.mac,
            server_ip: reply.server_ip,
            last_seen: now,
            quiet_ticks: 0,
        });
        self.suspects.clear();
        true
    }

    /// When `on_timeout` has work.
    pub(crate) fn poll_timeout(&self) -> Option<SystemTime> {
        match (self.next_probe, self.suspension) {
            (Some(next), _) => Some(next),
            (None, Some(s)) => Some(after(s.last_seen, PASSIVE_RESUME_AFTER)),
            (None, None) => None,
        }
    }

    pub(crate) fn on_timeout(&mut self, now: SystemTime) -> Tick {
        let mut tick = Tick::default();
        // Suspects not heard from for a while are acquitted.
        self.suspects.retain(|_, s| {
            s.last_seen > now
                || now.duration_since(s.last_seen).unwrap_or_default() < PASSIVE_RESUME_AFTER
        });
        // Wall clocks jump. A timer that lies more than one interval ahead
        // means the clock went backwards: pull it in rather than going quiet
        // for the size of the jump.
        if let (Some(interval), Some(next)) = (self.interval, self.next_probe) {
            if next > after(now, interval) {
                self.next_probe = Some(now);
            }
        }
        if let Some(s) = &mut self.suspension {
            if s.last_seen > now {
                s.last_seen = now;
            }
        }
        match (self.interval, self.next_probe) {
            (Some(interval), Some(next)) if now >= next => {
                if let Some(s) = &mut self.suspension {
                    s.quiet_ticks = s.quiet_ticks.saturating_add(1);
                    let quiet_for = now.duration_since(s.last_seen).unwrap_or_default();
                    if s.quiet_ticks >= QUIET_PROBES_TO_RESUME
                        && quiet_for >= interval.saturating_mul(QUIET_PROBES_TO_RESUME)
                    {
                        self.suspension = None;
                        tick.resumed = true;
                    }
                }
                let xid = self.xid_base ^ self.probe_seq;
                tick.probe_xid = Some(xid);
                if self.recent_probes.len() >= RECENT_PROBES {
                    self.recent_probes.pop_front();
                }
                self.recent_probes.push_back(xid);
                self.probe_seq = self.probe_seq.wrapping_add(1);
                self.next_probe = Some(after(now, interval));
            }
            (None, _) => {
                if let Some(s) = self.suspension {
                    if now >= after(s.last_seen, PASSIVE_RESUME_AFTER) {
                        self.suspension = None;
                        tick.resumed = true;
                    }
                }
            }
            _ => {}
        }
        tick
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const IV: Duration = Duration::from_secs(60);
    const ROGUE: Mac = Mac([0, 0x1a, 0x2b, 0x3c, 0x4d, 0x5e]);
    const FORGER: Mac = Mac([0, 0x1a, 0x2b, 0x3c, 0x4d, 0x99]);

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn answer(mac: Mac, xid: u32) -> Reply {
        Reply {
            mac,
            server_ip: Ipv4Addr::new(192, 168, 50, 254),
            xid,
            to_probe: true,
        }
    }

    /// A guard suspended by ROGUE answering two probes.
    fn suspended() -> Guard {
        let mut g = Guard::new(Some(IV), 0, t0());
        let x0 = g.on_timeout(t0()).probe_xid.unwrap();
        assert!(!g.on_foreign_reply(t0(), answer(ROGUE, x0)));
        let x1 = g.on_timeout(t0() + IV).probe_xid.unwrap();
        assert!(g.on_foreign_reply(t0() + IV, answer(ROGUE, x1)));
        g
    }

    #[test]
    fn probes_at_start_and_every_interval() {
        let mut g = Guard::new(Some(IV), 0x1000, t0());
        assert_eq!(g.poll_timeout(), Some(t0()));
        assert_eq!(g.on_timeout(t0()).probe_xid, Some(0x1000));
        assert_eq!(g.poll_timeout(), Some(t0() + IV));
        assert_eq!(g.on_timeout(t0() + IV / 2), Tick::default());
        assert_eq!(g.on_timeout(t0() + IV).probe_xid, Some(0x1001));
    }

    #[test]
    fn one_forged_reply_or_a_burst_of_them_does_not_suspend() {
        let mut g = Guard::new(Some(IV), 0, t0());
        let x0 = g.on_timeout(t0()).probe_xid.unwrap();
        // A burst answering the same probe, and unsolicited replies.
        for _ in 0..1000 {
            assert!(!g.on_foreign_reply(t0(), answer(FORGER, x0)));
            assert!(!g.on_foreign_reply(t0(), answer(FORGER, 0xdead)));
            let mut r = answer(FORGER, x0);
            r.to_probe = false;
            assert!(!g.on_foreign_reply(t0(), r));
        }
        assert!(!g.is_suspended());
    }

    #[test]
    fn answers_to_two_probes_from_one_mac_suspend_and_name_it() {
        let g = suspended();
        assert!(g.is_suspended());
        assert_eq!(
            g.suspended_by(),
            Some((Ipv4Addr::new(192, 168, 50, 254), ROGUE))
        );
    }

    #[test]
    fn answers_from_two_macs_are_not_added_up() {
        let mut g = Guard::new(Some(IV), 0, t0());
        let x0 = g.on_timeout(t0()).probe_xid.unwrap();
        assert!(!g.on_foreign_reply(t0(), answer(ROGUE, x0)));
        let x1 = g.on_timeout(t0() + IV).probe_xid.unwrap();
        assert!(!g.on_foreign_reply(t0() + IV, answer(FORGER, x1)));
        assert!(!g.is_suspended());
    }

    #[test]
    fn suspects_are_bounded() {
        let mut g = Guard::new(Some(IV), 0, t0());
        let x0 = g.on_timeout(t0()).probe_xid.unwrap();
        for n in 0..10_000u32 {
            let b = n.to_be_bytes();
            g.on_foreign_reply(t0(), answer(Mac([2, 0, b[0], b[1], b[2], b[3]]), x0));
        }
        assert!(g.suspects.len() <= MAX_SUSPECTS);
    }

    #[test]
    fn resumes_after_three_quiet_intervals() {
        let mut g = suspended();
        // Replies from another MAC do not keep us suspended.
        g.on_foreign_reply(t0() + IV, answer(FORGER, 0));
        let mut t = t0() + IV;
        for _ in 0..2 {
            t += IV;
            assert!(!g.on_timeout(t).resumed);
            assert!(g.is_suspended());
        }
        t += IV;
        assert!(g.on_timeout(t).resumed);
        assert!(!g.is_suspended());
    }

    #[test]
    fn passive_detection_needs_replies_over_time() {
        let mut g = Guard::new(None, 0, t0());
        let mut r = answer(ROGUE, 7);
        r.to_probe = false;
        for _ in 0..100 {
            assert!(!g.on_foreign_reply(t0(), r));
        }
        assert!(!g.on_foreign_reply(t0() + PASSIVE_EVIDENCE_SPAN / 2, r));
        assert!(g.on_foreign_reply(t0() + PASSIVE_EVIDENCE_SPAN, r));
        let t = t0() + PASSIVE_EVIDENCE_SPAN;
        assert_eq!(g.poll_timeout(), Some(t + PASSIVE_RESUME_AFTER));
        assert!(!g.on_timeout(t + PASSIVE_RESUME_AFTER / 2).resumed);
        assert!(g.on_timeout(t + PASSIVE_RESUME_AFTER).resumed);
    }

    #[test]
    fn clock_going_backwards_pulls_probe_in() {
        let mut g = Guard::new(Some(IV), 0, t0());
        g.on_timeout(t0());
        let earlier = t0() - Duration::from_secs(86_400);
        assert!(g.on_timeout(earlier).probe_xid.is_some());
        assert_eq!(g.poll_timeout(), Some(earlier + IV));
    }
}
