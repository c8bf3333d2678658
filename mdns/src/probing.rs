//! Probing and announcing times shared by the box's own name
//! ([`crate::responder`]) and the names announced for other sites
//! ([`crate::reannounce`]) (RFC 6762 §8.1, §8.3).
use std::time::{Duration, Instant};

/// Time between two probes (RFC 6762 §8.1: 250 ms).
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// Probes sent before a name is taken (RFC 6762 §8.1: three).
pub(crate) const PROBES: u8 = 3;
/// Announcements of a name (RFC 6762 §8.3: at least two, one second apart).
pub(crate) const ANNOUNCEMENTS: u8 = 2;
/// Time between two announcements.
pub(crate) const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(1);

/// After announcement number `sent` (counting from 0) went out at `now`: the
/// number and time of the next one, or `None` when that was the last.
pub(crate) fn next_announcement(sent: u8, now: Instant) -> Option<(u8, Instant)> {
    let next = sent.saturating_add(1);
    (next < ANNOUNCEMENTS).then(|| (next, now + ANNOUNCE_INTERVAL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_announcements_one_second_apart() {
        let t0 = Instant::now();
        assert_eq!(
            next_announcement(0, t0),
            Some((1, t0 + Duration::from_secs(1)))
        );
        assert_eq!(next_announcement(1, t0), None, "the second was the last");
        assert_eq!(next_announcement(u8::MAX, t0), None, "no overflow");
    }
}
