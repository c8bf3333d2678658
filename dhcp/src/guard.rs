//! Rogue-server guard: notices other DHCP servers on the segment and decides
//! when the box must stay quiet.
//!
//! The box must never fight the home router. Any DHCP reply from another
//! server suspends us. With probing enabled we send a DHCPDISCOVER from a
//! probe MAC every interval so that a foreign server reveals itself even when
//! no client is asking; after three probe intervals without a foreign reply
//! we serve again. With probing disabled, suspension ends
//! [`PASSIVE_RESUME_AFTER`] after the last foreign reply.

use std::time::{Duration, SystemTime};

use crate::after;

/// With probing disabled: how long after the last foreign reply we resume.
pub const PASSIVE_RESUME_AFTER: Duration = Duration::from_secs(15 * 60);
/// Probe intervals without a foreign reply before we serve again.
pub const QUIET_PROBES_TO_RESUME: u32 = 3;

/// What a timer tick asks the server to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Tick {
    /// Send a probe with this xid.
    pub(crate) probe_xid: Option<u32>,
    /// Suspension ended: serve again.
    pub(crate) resumed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Suspension {
    last_seen: SystemTime,
    /// Probe ticks since the last foreign reply.
    quiet_ticks: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct Guard {
    interval: Option<Duration>,
    next_probe: Option<SystemTime>,
    probe_seq: u32,
    xid_base: u32,
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
            suspension: None,
        }
    }

    pub(crate) fn is_suspended(&self) -> bool {
        self.suspension.is_some()
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

    /// A foreign reply was seen. Returns `true` if this suspends us (it was
    /// not suspended before).
    pub(crate) fn on_foreign_reply(&mut self, now: SystemTime) -> bool {
        let was = self.suspension.is_some();
        self.suspension = Some(Suspension {
            last_seen: now,
            quiet_ticks: 0,
        });
        !was
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
                tick.probe_xid = Some(self.xid_base ^ self.probe_seq);
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

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
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
    fn resumes_after_three_quiet_intervals() {
        let mut g = Guard::new(Some(IV), 0, t0());
        g.on_timeout(t0());
        assert!(g.on_foreign_reply(t0() + Duration::from_secs(1)));
        assert!(!g.on_foreign_reply(t0() + Duration::from_secs(2)));
        let mut t = t0();
        for _ in 0..3 {
            t += IV;
            assert!(!g.on_timeout(t).resumed);
            assert!(g.is_suspended());
        }
        t += IV;
        assert!(g.on_timeout(t).resumed);
        assert!(!g.is_suspended());
    }

    #[test]
    fn passive_suspension_expires() {
        let mut g = Guard::new(None, 0, t0());
        assert_eq!(g.poll_timeout(), None);
        g.on_foreign_reply(t0());
        assert_eq!(g.poll_timeout(), Some(t0() + PASSIVE_RESUME_AFTER));
        assert!(!g.on_timeout(t0() + PASSIVE_RESUME_AFTER / 2).resumed);
        assert!(g.on_timeout(t0() + PASSIVE_RESUME_AFTER).resumed);
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
