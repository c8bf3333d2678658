//! The sans-IO DHCP server: state machine, inputs, outputs and counters.

mod requests;

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::SystemTime;

use dhcproto::v4::Opcode;
use thiserror::Error;

use crate::config::{ConfigError, ServerConfig};
use crate::guard::{Guard, Reply};
use crate::lease::{Lease, LeaseState, LeaseTable};
use crate::limit::Limiter;
use crate::persist::{LeaseDb, LeaseRecord};
use crate::wire::{self, Packet, ReplyKind, BROADCAST_MAC, CLIENT_PORT, SERVER_PORT};
use crate::Mac;

/// Most transmits or events kept when the daemon does not drain them; the
/// oldest are dropped beyond this.
const MAX_QUEUED: usize = 1024;

/// One UDP datagram seen on the bridge with source or destination port 67
/// or 68.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Ethernet source address of the frame.
    pub src_mac: Mac,
    /// IPv4 source address.
    pub src_ip: Ipv4Addr,
    /// UDP source port.
    pub src_port: u16,
    /// UDP destination port.
    pub dst_port: u16,
    /// The UDP payload (the DHCP message).
    pub payload: &'a [u8],
}

/// A datagram the daemon must send on the bridge: it wraps `payload` into
/// UDP, IPv4 and Ethernet with exactly these addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Ethernet source.
    pub src_mac: Mac,
    /// Ethernet destination (ff:ff:ff:ff:ff:ff for broadcasts).
    pub dst_mac: Mac,
    /// IPv4 source (0.0.0.0 for probes).
    pub src_ip: Ipv4Addr,
    /// IPv4 destination (255.255.255.255 for broadcasts).
    pub dst_ip: Ipv4Addr,
    /// UDP source port.
    pub src_port: u16,
    /// UDP destination port.
    pub dst_port: u16,
    /// The encoded DHCP message.
    pub payload: Vec<u8>,
}

/// Something the daemon may want to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A client was acknowledged (new lease or renewal).
    Bound {
        /// Client MAC.
        mac: Mac,
        /// Leased address.
        ip: Ipv4Addr,
        /// Sanitised host name, if the client sent one (now or before).
        hostname: Option<String>,
        /// When the lease ends.
        expires: SystemTime,
    },
    /// A client released its address.
    Released {
        /// Client MAC.
        mac: Mac,
        /// Released address.
        ip: Ipv4Addr,
    },
    /// A client declined its address (someone else uses it); the address is
    /// quarantined for ten minutes.
    Declined {
        /// Client MAC.
        mac: Mac,
        /// Declined address.
        ip: Ipv4Addr,
    },
    /// A bound lease ran out without renewal (reported by
    /// [`Server::handle_timeout`] or the next input).
    Expired {
        /// Client MAC.
        mac: Mac,
        /// The address, still remembered for this MAC.
        ip: Ipv4Addr,
    },
    /// Another DHCP server answers on the segment (one MAC answered our
    /// probes, or kept replying over time, see the guard module): we stopped
    /// making new offers and answering INFORM; renewals of existing leases
    /// are still answered.
    ForeignServer {
        /// Its server identifier (option 54), or its source IP.
        server_ip: Ipv4Addr,
        /// Its Ethernet source address.
        server_mac: Mac,
    },
    /// No foreign server was seen for three probe intervals (or 15 minutes
    /// without probing): we serve again.
    ForeignServerGone,
    /// A device the server has never seen asked for an address while
    /// [`ServerConfig::hold_new`] is set: its DISCOVERs wait (unanswered)
    /// until it has a node lease or the hold ends. Said once per device.
    NewDevice {
        /// The device.
        mac: Mac,
        /// Its sanitised host name (option 12), if it sent one.
        hostname: Option<String>,
    },
    /// Lease state that must survive a crash changed: persist
    /// [`Server::snapshot`] now. Queued at most once until polled.
    LeasesChanged,
}

/// Counters since the server was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Inputs handed to [`Server::handle_input`].
    pub received: u64,
    /// DISCOVERs of new devices left waiting for their node lease.
    pub held: u64,
    /// Inputs that were not decodable DHCP, or lacked required fields.
    pub malformed: u64,
    /// Requests we do not support (non-Ethernet hardware, server-only
    /// message types).
    pub unsupported: u64,
    /// Requests that came through a relay agent (giaddr set); not supported.
    pub relayed: u64,
    /// Inputs deliberately ignored: not for us (another server was
    /// selected, our own probe, our own replies), releases of unknown
    /// leases, and the like.
    pub ignored: u64,
    /// DHCPOFFERs sent.
    pub offers: u64,
    /// DHCPACKs sent for REQUESTs.
    pub acks: u64,
    /// DHCPNAKs sent.
    pub naks: u64,
    /// DHCPDECLINEs honoured.
    pub declines: u64,
    /// DHCPRELEASEs honoured.
    pub releases: u64,
    /// DHCPINFORMs answered.
    pub informs: u64,
    /// DISCOVERs left unanswered because no address was free.
    pub pool_exhausted: u64,
    /// DISCOVER/REQUEST/INFORM left unanswered because a foreign server is
    /// active.
    pub ignored_while_suspended: u64,
    /// Client messages ignored because serving is off ([`ServerConfig::serve`]).
    pub ignored_while_disabled: u64,
    /// Replies from foreign DHCP servers seen.
    pub foreign_replies_seen: u64,
    /// Replies we failed to encode (a bug; should stay zero).
    pub internal_errors: u64,
    /// Client messages dropped because `chaddr` is not the Ethernet source
    /// of the frame (a device speaking for another).
    pub chaddr_mismatch: u64,
    /// Client messages dropped by the per-MAC or newcomer rate limit.
    pub rate_limited: u64,
    /// Renewals of existing leases answered while a foreign server keeps
    /// us from making new offers.
    pub renewals_while_suspended: u64,
}

/// Probe for foreign servers only while serving.
fn probe_interval(config: &ServerConfig) -> Option<std::time::Duration> {
    config.probe_interval.filter(|_| config.serve)
}

/// Why an input was dropped. Each error increments one [`Stats`] counter.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum InputError {
    /// Shorter than the fixed DHCP header.
    #[error("DHCP message of {len} bytes is shorter than the 240-byte fixed header")]
    TooShort {
        /// Payload length.
        len: usize,
    },
    /// No DHCP magic cookie: plain BOOTP or not DHCP at all.
    #[error("no DHCP magic cookie at offset 236: not a DHCP message")]
    BadMagic,
    /// `dhcproto` could not decode the message.
    #[error("undecodable DHCP message: {detail}")]
    Malformed {
        /// The decoder's complaint.
        detail: String,
    },
    /// Not Ethernet with 6-byte addresses.
    #[error("hardware type {htype} with address length {hlen} is not supported (only Ethernet with 6-byte addresses)")]
    UnsupportedHardware {
        /// `htype` field.
        htype: u8,
        /// `hlen` field.
        hlen: u8,
    },
    /// The client hardware address is a multicast, broadcast or all-zero
    /// MAC.
    #[error("client hardware address {mac} is not a unicast MAC")]
    InvalidClientMac {
        /// The address, formatted.
        mac: String,
    },
    /// Came through a relay agent.
    #[error("request relayed by {giaddr}; DHCP relay agents are not supported")]
    Relayed {
        /// `giaddr` field.
        giaddr: Ipv4Addr,
    },
    /// No option 53.
    #[error("request has no DHCP message type (option 53); plain BOOTP is not supported")]
    MissingMessageType,
    /// A message type clients do not send to servers.
    #[error("DHCP message type {msg_type} is not a client-to-server message")]
    UnexpectedMessageType {
        /// Option 53 value.
        msg_type: u8,
    },
    /// A REQUEST or DECLINE that names no address.
    #[error("{what} names no address (neither option 50 nor ciaddr)")]
    MissingAddress {
        /// Which message.
        what: &'static str,
    },
    /// Building our reply failed (a bug).
    #[error("could not encode DHCP reply: {detail}")]
    Encode {
        /// The encoder's complaint.
        detail: String,
    },
}

/// The DHCPv4 server state machine. See the crate docs for the run loop.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    probe_mac: Mac,
    table: LeaseTable,
    guard: Guard,
    limiter: Limiter,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
    /// The latest `now` we were given; used where an API has no `now`.
    last_now: SystemTime,
    /// New devices waiting for a node lease ([`ServerConfig::hold_new`]):
    /// when each was first heard.
    held: std::collections::HashMap<Mac, SystemTime>,
    /// Node addresses taken back by a config change (the device's node is
    /// gone): a device still renewing one is NAKed, so that it moves to a
    /// pool address at once instead of when the lease runs out. At most
    /// [`MAX_HELD`] kept.
    retired: std::collections::HashMap<Mac, Ipv4Addr>,
}

/// At most this many new devices wait for a node lease at once; more are
/// answered from the pool at once.
pub const MAX_HELD: usize = 256;

fn xid_base(probe_mac: &Mac) -> u32 {
    u32::from_be_bytes([probe_mac[2], probe_mac[3], probe_mac[4], probe_mac[5]])
}

impl Server {
    /// Creates a server, restoring `restored` leases. Leases the config does
    /// not allow (outside the subnet or pool, or on an address now reserved
    /// for another MAC) are dropped, as are duplicates; if anything was
    /// dropped a [`Event::LeasesChanged`] is queued. With probing enabled
    /// the first probe is due at `now`.
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] from [`ServerConfig::validate`].
    pub fn new(
        config: ServerConfig,
        restored: LeaseDb,
        now: SystemTime,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let probe_mac = wire::probe_mac(config.server_mac);
        let mut server = Self {
            guard: Guard::new(probe_interval(&config), xid_base(&probe_mac), now),
            limiter: Limiter::new(now),
            config,
            probe_mac,
            table: LeaseTable::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            last_now: now,
            held: std::collections::HashMap::new(),
            retired: std::collections::HashMap::new(),
        };
        let mut dropped = false;
        for r in restored.records() {
            if !server.config.allowed_for(&r.mac, r.ip) {
                dropped = true;
                continue;
            }
            let state = if now < r.expires {
                LeaseState::Bound
            } else {
                LeaseState::Expired
            };
            let lease = Lease {
                mac: r.mac,
                ip: r.ip,
                hostname: r.hostname.clone(),
                expires: r.expires,
                state,
            };
            dropped |= !server.table.restore(lease);
        }
        if dropped {
            server.push_event(Event::LeasesChanged);
        }
        Ok(server)
    }

    /// Feeds one datagram seen on the bridge. Requests (to port 67) are
    /// answered through [`Server::poll_transmit`]; replies from other
    /// servers (from port 67) feed the rogue-server guard. Never panics;
    /// `Err` says why the datagram was dropped.
    ///
    /// # Errors
    ///
    /// An [`InputError`] when the datagram was unusable (not DHCP,
    /// malformed, relayed, unsupported hardware); each increments one
    /// [`Stats`] counter. Deliberate silence (suspended, request for another
    /// server, pool exhausted) is `Ok`.
    pub fn handle_input(&mut self, now: SystemTime, input: Input<'_>) -> Result<(), InputError> {
        self.last_now = now;
        self.housekeeping(now);
        self.stats.received += 1;
        let result = self.dispatch(now, &input);
        if let Err(e) = &result {
            let counter = match e {
                InputError::TooShort { .. }
                | InputError::BadMagic
                | InputError::Malformed { .. }
                | InputError::MissingMessageType
                | InputError::MissingAddress { .. }
                | InputError::InvalidClientMac { .. } => &mut self.stats.malformed,
                InputError::UnsupportedHardware { .. }
                | InputError::UnexpectedMessageType { .. } => &mut self.stats.unsupported,
                InputError::Relayed { .. } => &mut self.stats.relayed,
                InputError::Encode { .. } => &mut self.stats.internal_errors,
            };
            *counter += 1;
        }
        result
    }

    fn dispatch(&mut self, now: SystemTime, input: &Input<'_>) -> Result<(), InputError> {
        if input.src_port != SERVER_PORT && input.dst_port != SERVER_PORT {
            self.stats.ignored += 1;
            return Ok(());
        }
        let msg = wire::decode(input.payload)?;
        match msg.opcode {
            Opcode::BootReply if input.src_port == SERVER_PORT => {
                self.on_reply(now, input, &msg);
                Ok(())
            }
            Opcode::BootRequest if input.dst_port == SERVER_PORT => {
                self.on_request(now, input, &msg)
            }
            _ => {
                self.stats.ignored += 1;
                Ok(())
            }
        }
    }

    /// A BOOTREPLY seen on the segment: ours, or a foreign server's.
    fn on_reply(&mut self, now: SystemTime, input: &Input<'_>, msg: &Packet) {
        let server_ip = msg.server_id.unwrap_or(input.src_ip);
        if input.src_mac == self.config.server_mac || server_ip == self.config.server_ip {
            self.stats.ignored += 1;
            return;
        }
        self.stats.foreign_replies_seen += 1;
        let reply = Reply {
            mac: input.src_mac,
            server_ip,
            xid: msg.xid,
            to_probe: msg.chaddr == Some(self.probe_mac),
        };
        if self.guard.on_foreign_reply(now, reply) {
            self.push_event(Event::ForeignServer {
                server_ip,
                server_mac: input.src_mac,
            });
        }
    }

    /// Runs timers: rogue-server probes, end of suspension, lease expiry.
    /// Call it when [`Server::poll_timeout`] has passed (calling it early is
    /// harmless).
    pub fn handle_timeout(&mut self, now: SystemTime) {
        self.last_now = now;
        self.housekeeping(now);
        let tick = self.guard.on_timeout(now);
        if tick.resumed {
            self.push_event(Event::ForeignServerGone);
        }
        if let Some(xid) = tick.probe_xid {
            let probe = wire::build_probe(self.probe_mac, xid);
            match wire::encode(&probe) {
                Ok(payload) => self.push_transmit(Transmit {
                    src_mac: self.probe_mac,
                    dst_mac: BROADCAST_MAC,
                    src_ip: Ipv4Addr::UNSPECIFIED,
                    dst_ip: Ipv4Addr::BROADCAST,
                    src_port: CLIENT_PORT,
                    dst_port: SERVER_PORT,
                    payload,
                }),
                Err(_) => self.stats.internal_errors += 1,
            }
        }
    }

    /// When [`Server::handle_timeout`] should next be called: the next probe,
    /// the end of a passive suspension, or the next lease expiry. May lie in
    /// the past (call it at once).
    pub fn poll_timeout(&self) -> Option<SystemTime> {
        [self.guard.poll_timeout(), self.table.next_expiry()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next datagram to send. Drain it after every call into the server.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event. Drain it after every call into the server.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The address `mac` holds by an unexpired bound lease.
    pub fn active_ip_for(&self, mac: &Mac, now: SystemTime) -> Option<Ipv4Addr> {
        self.table
            .lease(mac)
            .filter(|l| l.is_active(now))
            .map(|l| l.ip)
    }

    /// The MAC that holds `ip` by an unexpired bound lease.
    pub fn active_mac_for(&self, ip: Ipv4Addr, now: SystemTime) -> Option<Mac> {
        self.table.active_mac_for(ip, now)
    }

    /// Every lease record (active, expired and released), ordered by MAC.
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.table.leases()
    }

    /// ARP saw `mac` using `ip`: for ten minutes the address is not offered
    /// to any other MAC. Addresses outside the subnet are ignored.
    pub fn note_in_use(&mut self, ip: Ipv4Addr, mac: Mac, now: SystemTime) {
        self.last_now = now;
        if self.config.subnet().is_host(ip) {
            self.table.note_in_use(ip, mac, now);
        }
    }

    /// Whether a foreign DHCP server keeps us from making new offers.
    pub fn is_suspended(&self) -> bool {
        self.guard.is_suspended()
    }

    /// The foreign server that keeps us quiet: its server identifier (or
    /// source IP) and its Ethernet source address.
    pub fn foreign_server(&self) -> Option<(Ipv4Addr, Mac)> {
        self.guard.suspended_by()
    }

    /// Pending offers held now (at most [`crate::MAX_OFFERS`]).
    pub fn pending_offers(&self) -> usize {
        self.table.offer_count()
    }

    /// Counters since creation.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The current configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The MAC our rogue-server probes come from (see [`crate::probe_mac`]).
    pub fn probe_mac(&self) -> Mac {
        self.probe_mac
    }

    /// All lease records, for persisting.
    pub fn snapshot(&self) -> LeaseDb {
        LeaseDb::from_records(
            self.table
                .leases()
                .map(|l| LeaseRecord {
                    mac: l.mac,
                    ip: l.ip,
                    hostname: l.hostname.clone(),
                    expires: l.expires,
                })
                .collect(),
        )
    }

    /// Forgets `mac`'s lease (the device gets a new one when it asks again);
    /// queues [`Event::LeasesChanged`]. Returns whether there was a lease.
    pub fn forget(&mut self, mac: &Mac) -> bool {
        let had = self.table.forget(mac);
        if had {
            self.push_event(Event::LeasesChanged);
        }
        had
    }

    /// Replaces the configuration, keeping leases the new config still
    /// allows, and active leases now outside the pool until they renew
    /// (queuing [`Event::LeasesChanged`] if any were dropped).
    /// Probe timing changes take effect from the last `now` the server saw.
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] from [`ServerConfig::validate`]; nothing changes.
    pub fn set_config(&mut self, config: ServerConfig) -> Result<(), ConfigError> {
        config.validate()?;
        for n in &self.config.node_leases {
            if config.node_lease_for(&n.mac).map(|m| m.ip) != Some(n.ip) {
                if self.retired.len() >= MAX_HELD {
                    self.retired.clear();
                }
                self.retired.insert(n.mac, n.ip);
            }
        }
        self.retired
            .retain(|mac, ip| config.node_lease_for(mac).map(|m| m.ip) != Some(*ip));
        let dropped = self.table.retain_for_reconfig(&config, self.last_now);
        self.probe_mac = wire::probe_mac(config.server_mac);
        self.guard.reconfigure(
            probe_interval(&config),
            xid_base(&self.probe_mac),
            self.last_now,
        );
        self.config = config;
        if dropped {
            self.push_event(Event::LeasesChanged);
        }
        Ok(())
    }

    fn housekeeping(&mut self, now: SystemTime) {
        for (mac, ip) in self.table.housekeeping(now) {
            self.push_event(Event::Expired { mac, ip });
        }
    }

    fn push_event(&mut self, event: Event) {
        if event == Event::LeasesChanged && self.events.contains(&Event::LeasesChanged) {
            // The daemon persists the snapshot as of when it polls, which
            // includes this change too.
            return;
        }
        if self.events.len() >= MAX_QUEUED {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    fn push_transmit(&mut self, transmit: Transmit) {
        if self.transmits.len() >= MAX_QUEUED {
            self.transmits.pop_front();
        }
        self.transmits.push_back(transmit);
    }

    /// Builds, addresses and queues a reply; counts it.
    fn reply(
        &mut self,
        req: &Packet,
        chaddr: Mac,
        src_ip: Ipv4Addr,
        kind: ReplyKind,
        yiaddr: Ipv4Addr,
    ) -> Result<(), InputError> {
        let msg = wire::build_reply(&self.config, req, chaddr, kind, yiaddr);
        let payload = wire::encode(&msg)?;
        let dst = wire::destination(req, chaddr, src_ip, kind, yiaddr);
        self.push_transmit(Transmit {
            src_mac: self.config.server_mac,
            dst_mac: dst.mac(),
            src_ip: self.config.server_ip,
            dst_ip: dst.ip(),
            src_port: SERVER_PORT,
            dst_port: CLIENT_PORT,
            payload,
        });
        let counter = match kind {
            ReplyKind::Offer => &mut self.stats.offers,
            ReplyKind::Ack => &mut self.stats.acks,
            ReplyKind::Nak => &mut self.stats.naks,
            ReplyKind::InformAck => &mut self.stats.informs,
        };
        *counter += 1;
        Ok(())
    }
}
