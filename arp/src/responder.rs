//! The sans-IO ARP responder: decisions, timers and output queues.

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::table::{Learn, NeighbourTable};
use crate::wire::{ArpFrame, Operation, BROADCAST};
use crate::{ArpError, Mac};

/// How long a neighbour stays in the table after its last ARP packet, unless
/// [`Config::neighbour_ttl`] says otherwise.
pub const DEFAULT_NEIGHBOUR_TTL: Duration = Duration::from_secs(20 * 60);

/// Number of gratuitous ARP announcements sent by [`Responder::announce`]
/// (RFC 5227 §1.1 `ANNOUNCE_NUM`).
pub const ANNOUNCE_NUM: u8 = 2;

/// Time between two announcements (RFC 5227 §1.1 `ANNOUNCE_INTERVAL`).
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(2);

/// After defending the gateway address against a conflicting host, further
/// conflicts are only reported, not answered, for this long
/// (RFC 5227 §1.1 `DEFEND_INTERVAL`, §2.4 (c)).
pub const DEFEND_INTERVAL: Duration = Duration::from_secs(10);

/// Minimum time between two who-has requests for the same address sent by
/// [`Responder::request`].
pub const REQUEST_INTERVAL: Duration = Duration::from_secs(1);

/// At most this many distinct addresses are requested per
/// [`REQUEST_INTERVAL`]; further [`Responder::request`] calls are dropped, so
/// a runaway caller cannot flood the segment with broadcasts.
pub const MAX_REQUESTS_PER_INTERVAL: usize = 256;

/// Size limit of the neighbour table. When it is full, the neighbour seen
/// least recently is forgotten to make room (reported as
/// [`Event::Expired`]), so a host spraying ARP packets cannot exhaust the
/// box's memory.
pub const MAX_NEIGHBOURS: usize = 1024;

/// Size limit of each output queue (frames and events). Callers drain both
/// after every input, which keeps them far below this; if one does not,
/// further output is dropped and counted in [`Stats::queue_overflows`].
pub const QUEUE_LIMIT: usize = 64;

/// Configuration of a [`Responder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// MAC address of the box's TAP device: the source of every frame the
    /// responder emits, and the address it answers with.
    pub mac: Mac,
    /// The address the box serves as gateway on the bridge segment.
    pub gateway: Ipv4Addr,
    /// How long a neighbour is remembered after its last ARP packet
    /// (default [`DEFAULT_NEIGHBOUR_TTL`], 20 minutes).
    pub neighbour_ttl: Duration,
}

impl Config {
    /// A configuration with the default neighbour TTL.
    #[must_use]
    pub fn new(mac: Mac, gateway: Ipv4Addr) -> Self {
        Self {
            mac,
            gateway,
            neighbour_ttl: DEFAULT_NEIGHBOUR_TTL,
        }
    }
}

impl Default for Config {
    /// All-zero MAC and `0.0.0.0` gateway, which answer nothing: set both
    /// (`Config { mac, gateway, ..Default::default() }`).
    fn default() -> Self {
        Self::new(Mac([0; 6]), Ipv4Addr::UNSPECIFIED)
    }
}

/// Something the daemon should know about; drain with
/// [`Responder::poll_event`]. MACs and addresses of home devices are personal
/// data: log them at debug level only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Event {
    /// Another host claims our gateway address (its ARP packet has the
    /// gateway as sender address). Log it: two hosts on one segment are
    /// configured with the same address.
    Conflict {
        /// The gateway address.
        ip: Ipv4Addr,
        /// MAC of the conflicting host.
        mac: Mac,
    },
    /// A neighbour appeared or changed its MAC address.
    Learned {
        /// The neighbour's address.
        ip: Ipv4Addr,
        /// Its (new) MAC address.
        mac: Mac,
    },
    /// A neighbour was forgotten: nothing was heard from it for
    /// [`Config::neighbour_ttl`], or the table was full
    /// ([`MAX_NEIGHBOURS`]) and it was the least recently seen.
    Expired {
        /// The neighbour's address.
        ip: Ipv4Addr,
        /// The MAC address it had.
        mac: Mac,
    },
}

/// Counters for the status page. They only grow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames handed to [`Responder::handle_frame`].
    pub received: u64,
    /// Frames dropped because they are not well-formed Ethernet/IPv4 ARP.
    pub malformed: u64,
    /// ARP replies queued.
    pub replies: u64,
    /// ARP probes (sender `0.0.0.0`) deliberately left unanswered.
    pub ignored_probes: u64,
    /// ARP requests left unanswered because the address is not ours to
    /// answer for.
    pub refused: u64,
    /// Gratuitous ARP announcements for the gateway queued (including
    /// defences against conflicting hosts).
    pub announcements: u64,
    /// Frames ignored because they came from our own MAC address.
    pub looped: u64,
    /// ARP packets from other hosts claiming the gateway address.
    pub conflicts: u64,
    /// Who-has requests queued by [`Responder::request`].
    pub requests: u64,
    /// Frames or events dropped because an output queue was full
    /// ([`QUEUE_LIMIT`]).
    pub queue_overflows: u64,
}

/// What to do with an ARP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Reply with our MAC.
    Answer,
    /// An RFC 5227 probe for an address that is not ours: stay silent.
    IgnoreProbe,
    /// Not ours to answer.
    Refuse,
}

/// Announcements still to send.
#[derive(Debug, Clone, Copy)]
struct Announcing {
    remaining: u8,
    next: Instant,
}

/// True for an address a single host can use on the segment: not
/// `0.0.0.0`, broadcast, multicast or loopback.
fn is_host_addr(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback())
}

/// Sans-IO ARP responder and neighbour table for the box's TAP device.
/// See the [crate documentation](crate) for the rules and the run loop.
#[derive(Debug, Clone)]
pub struct Responder {
    config: Config,
    table: NeighbourTable,
    announcing: Option<Announcing>,
    /// When we last defended the gateway address.
    last_defence: Option<Instant>,
    /// When each address was last requested, for rate limiting.
    last_request: BTreeMap<Ipv4Addr, Instant>,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl Responder {
    /// A responder with an empty neighbour table and nothing queued.
    #[must_use]
    pub fn new(config: Config) -> Self {
        Self {
            config,
            table: NeighbourTable::new(config.neighbour_ttl, MAX_NEIGHBOURS),
            announcing: None,
            last_defence: None,
            last_request: BTreeMap::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// The configuration this responder was built with.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Handles one Ethernet II frame (`EtherType` 0x0806) read from the TAP.
    ///
    /// `routes(ip)` tells whether the box routes `ip` (mesh destinations and
    /// the like); `local(ip)` tells whether `ip` belongs to the bridge
    /// segment's own device pool (DHCP range, leased addresses). Neither is
    /// called for the gateway address or for probes.
    ///
    /// Afterwards drain [`poll_transmit`](Self::poll_transmit) and
    /// [`poll_event`](Self::poll_event), and re-read
    /// [`poll_timeout`](Self::poll_timeout).
    ///
    /// # Errors
    ///
    /// A frame that is not well-formed Ethernet/IPv4 ARP is counted in
    /// [`Stats::malformed`] and dropped; the error says why. The responder's
    /// state is unchanged, so callers log it and carry on. Frames from our
    /// own MAC are ignored without error (counted in [`Stats::looped`]).
    pub fn handle_frame(
        &mut self,
        now: Instant,
        frame: &[u8],
        routes: &dyn Fn(Ipv4Addr) -> bool,
        local: &dyn Fn(Ipv4Addr) -> bool,
    ) -> Result<(), ArpError> {
        self.stats.received += 1;
        let frame = match ArpFrame::parse(frame) {
            Ok(frame) => frame,
            Err(e) => {
                self.stats.malformed += 1;
                return Err(e);
            }
        };
        if frame.eth_source == self.config.mac || frame.sender_mac == self.config.mac {
            self.stats.looped += 1;
            return Ok(());
        }

        if frame.sender_ip == self.config.gateway && is_host_addr(frame.sender_ip) {
            self.conflict(now, frame.sender_ip, frame.sender_mac);
            return Ok(());
        }
        if is_host_addr(frame.sender_ip) {
            // Learn before deciding, so that a host announcing an address
            // (sender = target) is never contradicted by us.
            self.learn(now, frame.sender_ip, frame.sender_mac);
        }
        if frame.operation != Operation::Request {
            return Ok(());
        }
        match self.decide(now, &frame, routes, local) {
            Verdict::Answer => self.reply(&frame),
            Verdict::IgnoreProbe => self.stats.ignored_probes += 1,
            Verdict::Refuse => self.stats.refused += 1,
        }
        Ok(())
    }

    /// Decides whether to answer a request. The order matters: the gateway
    /// is always ours; everything else must be positively routed by us and
    /// not in use on the segment.
    fn decide(
        &self,
        now: Instant,
        frame: &ArpFrame,
        routes: &dyn Fn(Ipv4Addr) -> bool,
        local: &dyn Fn(Ipv4Addr) -> bool,
    ) -> Verdict {
        let probe = frame.sender_ip.is_unspecified();
        let target = frame.target_ip;
        if !probe && !is_host_addr(frame.sender_ip) {
            // Not a host address (broadcast, multicast, loopback): no reply.
            return Verdict::Refuse;
        }
        if !is_host_addr(target) {
            return if probe {
                Verdict::IgnoreProbe
            } else {
                Verdict::Refuse
            };
        }
        if target == self.config.gateway {
            // Includes probes: a host probing the gateway address must learn
            // that it is taken (RFC 5227 §2.1.1). Answered whatever the
            // Ethernet destination, so that a host whose cache still points
            // at an old MAC for the gateway is corrected.
            return Verdict::Answer;
        }
        if probe {
            // A DHCP client probing the address it was offered declines the
            // lease if anybody answers (RFC 2131 §4.4.1, RFC 5227 §2.1).
            return Verdict::IgnoreProbe;
        }
        if frame.eth_destination != BROADCAST && frame.eth_destination != self.config.mac {
            // A unicast request for another host that the bridge flooded to
            // us: the requester believes `target` lives at that MAC.
            return Verdict::Refuse;
        }
        if local(target) || !routes(target) || self.table.in_use(target, now) {
            return Verdict::Refuse;
        }
        Verdict::Answer
    }

    fn reply(&mut self, request: &ArpFrame) {
        let reply = ArpFrame {
            eth_destination: request.sender_mac,
            eth_source: self.config.mac,
            operation: Operation::Reply,
            sender_mac: self.config.mac,
            sender_ip: request.target_ip,
            target_mac: request.sender_mac,
            target_ip: request.sender_ip,
        };
        if self.push_transmit(reply.emit()) {
            self.stats.replies += 1;
        }
    }

    fn learn(&mut self, now: Instant, ip: Ipv4Addr, mac: Mac) {
        match self.table.learn(now, ip, mac) {
            Learn::New { evicted } => {
                if let Some((ip, mac)) = evicted {
                    self.push_event(Event::Expired { ip, mac });
                }
                self.push_event(Event::Learned { ip, mac });
            }
            Learn::Changed => self.push_event(Event::Learned { ip, mac }),
            Learn::Refreshed => {}
        }
    }

    /// Another host claims the gateway address. We are the segment's router,
    /// so we defend it indefinitely as RFC 5227 §2.4 (c) describes: one
    /// announcement, then further conflicts within [`DEFEND_INTERVAL`] are
    /// only reported.
    fn conflict(&mut self, now: Instant, ip: Ipv4Addr, mac: Mac) {
        self.stats.conflicts += 1;
        self.push_event(Event::Conflict { ip, mac });
        let defend = self
            .last_defence
            .is_none_or(|t| now.saturating_duration_since(t) >= DEFEND_INTERVAL);
        if defend {
            self.last_defence = Some(now);
            self.send_announcement();
        }
    }

    /// Queues gratuitous ARP for the gateway: [`ANNOUNCE_NUM`] announcements
    /// [`ANNOUNCE_INTERVAL`] apart (RFC 5227 §2.3), the first due at `now`.
    /// They are sent by [`handle_timeout`](Self::handle_timeout); call it
    /// when [`poll_timeout`](Self::poll_timeout) says so. Calling `announce`
    /// again restarts the sequence. Does nothing if the gateway address is
    /// not a host address.
    pub fn announce(&mut self, now: Instant) {
        if !is_host_addr(self.config.gateway) {
            return;
        }
        self.announcing = Some(Announcing {
            remaining: ANNOUNCE_NUM,
            next: now,
        });
    }

    fn send_announcement(&mut self) {
        let frame = self.who_has(self.config.gateway);
        if self.push_transmit(frame.emit()) {
            self.stats.announcements += 1;
        }
    }

    /// A broadcast "who has `target_ip`" from the gateway (with
    /// `target_ip` = gateway it is a gratuitous ARP announcement).
    fn who_has(&self, target_ip: Ipv4Addr) -> ArpFrame {
        ArpFrame {
            eth_destination: BROADCAST,
            eth_source: self.config.mac,
            operation: Operation::Request,
            sender_mac: self.config.mac,
            sender_ip: self.config.gateway,
            target_mac: Mac([0; 6]),
            target_ip,
        }
    }

    /// Sends a due announcement and forgets neighbours whose TTL ran out
    /// (each reported as [`Event::Expired`]). Harmless to call early or
    /// often.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(a) = self.announcing {
            if now >= a.next {
                self.send_announcement();
                let remaining = a.remaining.saturating_sub(1);
                // Spaced from when it was actually sent, so a late timer
                // never bunches the two announcements together.
                self.announcing = match now.checked_add(ANNOUNCE_INTERVAL) {
                    Some(next) if remaining > 0 => Some(Announcing { remaining, next }),
                    _ => None,
                };
            }
        }

        let mut expired = Vec::new();
        self.table
            .expire(now, |ip, mac| expired.push(Event::Expired { ip, mac }));
        for event in expired {
            self.push_event(event);
        }

        self.prune_requests(now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) has work to do next:
    /// an announcement or a neighbour expiry. `None` when nothing is
    /// pending.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let announce = self.announcing.map(|a| a.next);
        match (announce, self.table.next_expiry()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next whole Ethernet frame to write to the TAP.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    /// The next event for the daemon.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The MAC a neighbour uses for `ip`. Entries stay until
    /// [`handle_timeout`](Self::handle_timeout) expires them.
    #[must_use]
    pub fn lookup(&self, ip: Ipv4Addr) -> Option<Mac> {
        self.table.get(ip).map(|e| e.mac)
    }

    /// All neighbours, in address order, with the time each was last heard.
    pub fn neighbours(&self) -> impl Iterator<Item = (Ipv4Addr, Mac, Instant)> + '_ {
        self.table.iter().map(|(ip, e)| (ip, e.mac, e.seen))
    }

    /// Counters since [`new`](Self::new).
    #[must_use]
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Queues a broadcast who-has for `ip`, asked by the gateway address,
    /// unless `ip` was requested less than [`REQUEST_INTERVAL`] ago. The
    /// answer arrives as a frame for [`handle_frame`](Self::handle_frame)
    /// and shows up in [`lookup`](Self::lookup) and as [`Event::Learned`].
    ///
    /// Ignored for the gateway itself, for non-host addresses, when the
    /// gateway is not a host address, and beyond
    /// [`MAX_REQUESTS_PER_INTERVAL`] distinct addresses per interval.
    pub fn request(&mut self, now: Instant, ip: Ipv4Addr) {
        let gateway = self.config.gateway;
        if !is_host_addr(ip) || !is_host_addr(gateway) || ip == gateway {
            return;
        }
        if let Some(last) = self.last_request.get(&ip) {
            if now.saturating_duration_since(*last) < REQUEST_INTERVAL {
                return;
            }
        } else if self.last_request.len() >= MAX_REQUESTS_PER_INTERVAL {
            self.prune_requests(now);
            if self.last_request.len() >= MAX_REQUESTS_PER_INTERVAL {
                return;
            }
        }
        let frame = self.who_has(ip);
        if self.push_transmit(frame.emit()) {
            self.last_request.insert(ip, now);
            self.stats.requests += 1;
        }
    }

    /// Forgets rate-limit records that no longer limit anything.
    fn prune_requests(&mut self, now: Instant) {
        self.last_request
            .retain(|_, last| now.saturating_duration_since(*last) < REQUEST_INTERVAL);
    }

    fn push_transmit(&mut self, frame: Vec<u8>) -> bool {
        if self.transmit.len() >= QUEUE_LIMIT {
            self.stats.queue_overflows += 1;
            return false;
        }
        self.transmit.push_back(frame);
        true
    }

    fn push_event(&mut self, event: Event) {
        if self.events.len() >= QUEUE_LIMIT {
            self.stats.queue_overflows += 1;
            return;
        }
        self.events.push_back(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_has_twenty_minute_ttl() {
        assert_eq!(Config::default().neighbour_ttl, Duration::from_secs(1200));
    }

    #[test]
    fn host_addresses() {
        assert!(is_host_addr(Ipv4Addr::new(192, 168, 1, 1)));
        assert!(is_host_addr(Ipv4Addr::new(169, 254, 3, 4)));
        assert!(!is_host_addr(Ipv4Addr::UNSPECIFIED));
        assert!(!is_host_addr(Ipv4Addr::BROADCAST));
        assert!(!is_host_addr(Ipv4Addr::new(224, 0, 0, 251)));
        assert!(!is_host_addr(Ipv4Addr::LOCALHOST));
    }
}
