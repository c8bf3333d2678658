//! Server configuration and its validation.
//!
//! [`ServerConfig`] is the validated shape the daemon builds from its own
//! config file; [`ServerConfig::validate`] checks every rule the server relies
//! on, so the rest of the crate may assume them.

use std::net::Ipv4Addr;
use std::time::Duration;

use thiserror::Error;

use crate::Mac;

/// Shortest lease we accept: anything shorter makes clients spend their time
/// renewing.
pub const MIN_LEASE_TIME: Duration = Duration::from_secs(60);
/// Longest finite lease the wire format can express (`0xffff_ffff` means
/// "infinite" in option 51, which we never hand out).
pub const MAX_LEASE_TIME: Duration = Duration::from_secs(0xffff_fffe);
/// Shortest rogue-server probe period we accept.
pub const MIN_PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// Smallest interface MTU a host must support (RFC 2132 §5.1).
pub const MIN_MTU: u16 = 68;
/// Most DNS servers we put into option 6.
pub const MAX_DNS_SERVERS: usize = 16;
/// Longest domain name (option 15) we accept, in bytes.
pub const MAX_DOMAIN_LEN: usize = 253;

/// Configuration of the DHCP server on the bridge.
///
/// Build it, then hand it to [`crate::Server::new`] or
/// [`crate::Server::set_config`], which both call [`ServerConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The box's own address on the bridge; also the server identifier
    /// (option 54) and the source address of every reply.
    pub server_ip: Ipv4Addr,
    /// The box's MAC on the bridge: source of every reply. Replies from any
    /// other MAC are treated as coming from a foreign server.
    pub server_mac: Mac,
    /// Subnet mask of the bridge network (option 1). Must be contiguous.
    pub subnet_mask: Ipv4Addr,
    /// First address of the dynamic pool (inclusive).
    pub range_start: Ipv4Addr,
    /// Last address of the dynamic pool (inclusive).
    pub range_end: Ipv4Addr,
    /// Default gateway handed to clients (option 3).
    pub router: Option<Ipv4Addr>,
    /// DNS servers handed to clients (option 6); omitted when empty.
    pub dns: Vec<Ipv4Addr>,
    /// Domain name handed to clients (option 15).
    pub domain: Option<String>,
    /// Interface MTU handed to clients (option 26).
    pub mtu: Option<u16>,
    /// Lease duration (option 51). T1 (option 58) is half of it, T2
    /// (option 59) seven eighths.
    pub lease_time: Duration,
    /// Fixed address per MAC. The address may lie outside the dynamic range
    /// but must be inside the subnet. Reserved addresses are never handed to
    /// any other MAC.
    pub reservations: Vec<(Mac, Ipv4Addr)>,
    /// Period of the rogue-server probe; `None` disables active probing
    /// (foreign servers are then only noticed passively).
    pub probe_interval: Option<Duration>,
    /// Answer clients at all. `false` (the daemon's `dhcp.enabled = false`):
    /// every client message is ignored and no probe is sent, but the leases
    /// are kept (and still expire) so turning it back on changes nothing.
    pub serve: bool,
    /// Addresses from outside the subnet, one per MAC: a bridged device
    /// that is a tailnet node of its own gets its node's address, with
    /// that network's mask, router and DNS. Like a reservation, the address
    /// is never handed to another MAC.
    pub node_leases: Vec<NodeLease>,
    /// Wait this long before offering a pool address to a device the
    /// server has never seen (no lease, no reservation, no node lease):
    /// time for its node to register. Its DISCOVERs go unanswered
    /// meanwhile and [`crate::Event::NewDevice`] says it is there. `None`:
    /// answer at once.
    pub hold_new: Option<Duration>,
    /// Devices that never become nodes (their own switch on the page says
    /// "behind the box" or "not in the tailnet"): never held, and their pool
    /// address gets the full lease time.
    pub no_node: Vec<Mac>,
}

/// The lease time of a pool address for a device whose node is not there
/// yet (see [`ServerConfig::lease_time_for`]).
pub const WAITING_LEASE_TIME: Duration = Duration::from_secs(120);

/// A device's address from outside the bridge subnet (its tailnet node's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLease {
    /// The device.
    pub mac: Mac,
    /// Its address.
    pub ip: Ipv4Addr,
    /// The mask handed with it (option 1).
    pub subnet_mask: Ipv4Addr,
    /// The router handed with it (option 3).
    pub router: Ipv4Addr,
    /// The DNS servers handed with it (option 6).
    pub dns: Vec<Ipv4Addr>,
}

/// Why a [`ServerConfig`] was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A node lease that is inside the bridge subnet, not a host address
    /// of its own mask, or given twice.
    #[error("node lease {ip} for {mac} is not usable: it must be a host address outside the bridge subnet, one per device")]
    BadNodeLease {
        /// The device.
        mac: String,
        /// The address.
        ip: Ipv4Addr,
    },
    /// The subnet mask has holes (e.g. 255.0.255.0) or is /31 or /32.
    #[error("subnet mask {mask} is not usable for a DHCP pool: it must be a contiguous mask of /30 or shorter")]
    InvalidSubnetMask {
        /// The rejected mask.
        mask: Ipv4Addr,
    },
    /// The server address is the network or broadcast address of its subnet,
    /// or unspecified/multicast.
    #[error("server address {server_ip} is not a host address of subnet {network}/{prefix}; pick an address between the network and broadcast addresses")]
    ServerIpNotHost {
        /// The rejected server address.
        server_ip: Ipv4Addr,
        /// Network address of the subnet.
        network: Ipv4Addr,
        /// Prefix length of the subnet.
        prefix: u8,
    },
    /// The server MAC is all zeros or a multicast/broadcast MAC.
    #[error("server MAC {mac} is not a unicast Ethernet address")]
    InvalidServerMac {
        /// The rejected MAC, formatted.
        mac: String,
    },
    /// `range_start` is above `range_end`.
    #[error("DHCP range {start}-{end} is reversed: range_start must not be above range_end")]
    RangeReversed {
        /// Configured start.
        start: Ipv4Addr,
        /// Configured end.
        end: Ipv4Addr,
    },
    /// Part of the range lies outside the server's subnet.
    #[error("DHCP range {start}-{end} is not inside subnet {network}/{prefix} of the server address; move the range or fix the mask")]
    RangeOutsideSubnet {
        /// Configured start.
        start: Ipv4Addr,
        /// Configured end.
        end: Ipv4Addr,
        /// Network address of the subnet.
        network: Ipv4Addr,
        /// Prefix length of the subnet.
        prefix: u8,
    },
    /// The range contains the subnet's network or broadcast address.
    #[error("DHCP range {start}-{end} includes the network or broadcast address of the subnet; shrink it by one address at that end")]
    RangeIncludesNetworkOrBroadcast {
        /// Configured start.
        start: Ipv4Addr,
        /// Configured end.
        end: Ipv4Addr,
    },
    /// The server's own address lies inside the pool.
    #[error("server address {server_ip} lies inside the DHCP range {start}-{end}; the server must not lease its own address")]
    ServerIpInRange {
        /// The server address.
        server_ip: Ipv4Addr,
        /// Configured start.
        start: Ipv4Addr,
        /// Configured end.
        end: Ipv4Addr,
    },
    /// The lease time is below [`MIN_LEASE_TIME`].
    #[error("lease time of {secs} s is too short; use at least 60 s")]
    LeaseTimeTooShort {
        /// Configured lease time in seconds.
        secs: u64,
    },
    /// The lease time does not fit option 51.
    #[error("lease time of {secs} s is too long; use at most 4294967294 s")]
    LeaseTimeTooLong {
        /// Configured lease time in seconds.
        secs: u64,
    },
    /// A reservation's address is not a usable host address of the subnet.
    #[error("reservation {mac} -> {ip} is not a host address inside subnet {network}/{prefix}")]
    ReservationOutsideSubnet {
        /// The reserved MAC, formatted.
        mac: String,
        /// The reserved address.
        ip: Ipv4Addr,
        /// Network address of the subnet.
        network: Ipv4Addr,
        /// Prefix length of the subnet.
        prefix: u8,
    },
    /// A reservation names the server's own address.
    #[error("reservation {mac} -> {ip} uses the server's own address")]
    ReservationIsServerIp {
        /// The reserved MAC, formatted.
        mac: String,
        /// The reserved address.
        ip: Ipv4Addr,
    },
    /// A reservation names a multicast/broadcast/all-zero MAC.
    #[error("reservation for {mac} does not name a unicast Ethernet address")]
    ReservationInvalidMac {
        /// The reserved MAC, formatted.
        mac: String,
    },
    /// Two reservations for the same MAC.
    #[error("MAC {mac} has more than one reservation; keep one")]
    DuplicateReservationMac {
        /// The MAC, formatted.
        mac: String,
    },
    /// Two reservations for the same address.
    #[error("address {ip} is reserved for more than one MAC; keep one")]
    DuplicateReservationIp {
        /// The doubly reserved address.
        ip: Ipv4Addr,
    },
    /// The router is not a host of the subnet (clients could not reach it).
    #[error("router {router} is not a host address inside subnet {network}/{prefix}; clients could not reach it")]
    RouterOutsideSubnet {
        /// Configured router.
        router: Ipv4Addr,
        /// Network address of the subnet.
        network: Ipv4Addr,
        /// Prefix length of the subnet.
        prefix: u8,
    },
    /// A DNS server entry is unspecified, broadcast or multicast.
    #[error("DNS server {ip} is not a unicast address")]
    InvalidDnsServer {
        /// The rejected entry.
        ip: Ipv4Addr,
    },
    /// More than [`MAX_DNS_SERVERS`] DNS servers.
    #[error("{count} DNS servers configured; at most 16 are supported")]
    TooManyDnsServers {
        /// Number configured.
        count: usize,
    },
    /// The domain name is empty, too long or has characters outside
    /// letters, digits, `-`, `_` and `.`.
    #[error("domain name {domain:?} is invalid: use 1 to 253 letters, digits, '-', '_' or '.'")]
    InvalidDomain {
        /// The rejected domain.
        domain: String,
    },
    /// The MTU is below [`MIN_MTU`].
    #[error("MTU {mtu} is too small; use at least 68")]
    MtuTooSmall {
        /// The rejected MTU.
        mtu: u16,
    },
    /// The probe interval is below [`MIN_PROBE_INTERVAL`].
    #[error("probe interval of {millis} ms is too short; use at least 5 s or disable probing")]
    ProbeIntervalTooShort {
        /// The rejected interval in milliseconds.
        millis: u128,
    },
}

/// An IPv4 subnet as network address and mask, with the arithmetic the
/// server needs. Built only from a validated mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Subnet {
    network: u32,
    mask: u32,
}

impl Subnet {
    /// `None` unless `mask` is contiguous and at most /30.
    pub(crate) fn new(addr: Ipv4Addr, mask: Ipv4Addr) -> Option<Self> {
        let mask = u32::from(mask);
        // Contiguous: the inverted mask plus one is a power of two.
        let host_bits = !mask;
        if host_bits.wrapping_add(1) & host_bits != 0 || host_bits < 3 {
            return None;
        }
        Some(Self {
            network: u32::from(addr) & mask,
            mask,
        })
    }

    pub(crate) fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network)
    }

    pub(crate) fn prefix(&self) -> u8 {
        // At most 32, fits.
        self.mask.leading_ones() as u8
    }

    fn broadcast(&self) -> u32 {
        self.network | !self.mask
    }

    /// Inside the subnet, including network and broadcast address.
    pub(crate) fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask == self.network
    }

    /// Inside the subnet and neither network nor broadcast address.
    pub(crate) fn is_host(&self, ip: Ipv4Addr) -> bool {
        let v = u32::from(ip);
        self.contains(ip) && v != self.network && v != self.broadcast()
    }
}

fn is_valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= MAX_DOMAIN_LEN
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl ServerConfig {
    /// Checks every rule the server relies on: the range lies inside the
    /// subnet of `server_ip`/`subnet_mask` and excludes the server, network
    /// and broadcast addresses; `range_start <= range_end`; the lease time is
    /// between 60 s and what option 51 can carry; reservations are unique
    /// host addresses of the subnet; router, DNS, domain, MTU and probe
    /// interval are sane.
    ///
    /// # Errors
    ///
    /// The first rule broken, as a [`ConfigError`] whose message names the
    /// offending value and what to change.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let subnet = Subnet::new(self.server_ip, self.subnet_mask).ok_or(
            ConfigError::InvalidSubnetMask {
                mask: self.subnet_mask,
            },
        )?;
        let (network, prefix) = (subnet.network(), subnet.prefix());
        if !subnet.is_host(self.server_ip) {
            return Err(ConfigError::ServerIpNotHost {
                server_ip: self.server_ip,
                network,
                prefix,
            });
        }
        if !self.server_mac.is_unicast() {
            return Err(ConfigError::InvalidServerMac {
                mac: self.server_mac.to_string(),
            });
        }
        let (start, end) = (self.range_start, self.range_end);
        if start > end {
            return Err(ConfigError::RangeReversed { start, end });
        }
        if !subnet.contains(start) || !subnet.contains(end) {
            return Err(ConfigError::RangeOutsideSubnet {
                start,
                end,
                network,
                prefix,
            });
        }
        if !subnet.is_host(start) || !subnet.is_host(end) {
            return Err(ConfigError::RangeIncludesNetworkOrBroadcast { start, end });
        }
        if (start..=end).contains(&self.server_ip) {
            return Err(ConfigError::ServerIpInRange {
                server_ip: self.server_ip,
                start,
                end,
            });
        }
        if self.lease_time < MIN_LEASE_TIME {
            return Err(ConfigError::LeaseTimeTooShort {
                secs: self.lease_time.as_secs(),
            });
        }
        if self.lease_time > MAX_LEASE_TIME {
            return Err(ConfigError::LeaseTimeTooLong {
                secs: self.lease_time.as_secs(),
            });
        }
        self.validate_reservations(subnet)?;
        self.validate_node_leases(subnet)?;
        if let Some(router) = self.router {
            if !subnet.is_host(router) {
                return Err(ConfigError::RouterOutsideSubnet {
                    router,
                    network,
                    prefix,
                });
            }
        }
        if self.dns.len() > MAX_DNS_SERVERS {
            return Err(ConfigError::TooManyDnsServers {
                count: self.dns.len(),
            });
        }
        if let Some(&ip) = self
            .dns
            .iter()
            .find(|ip| ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast())
        {
            return Err(ConfigError::InvalidDnsServer { ip });
        }
        if let Some(domain) = &self.domain {
            if !is_valid_domain(domain) {
                return Err(ConfigError::InvalidDomain {
                    domain: domain.clone(),
                });
            }
        }
        if let Some(mtu) = self.mtu {
            if mtu < MIN_MTU {
                return Err(ConfigError::MtuTooSmall { mtu });
            }
        }
        if let Some(interval) = self.probe_interval {
            if interval < MIN_PROBE_INTERVAL {
                return Err(ConfigError::ProbeIntervalTooShort {
                    millis: interval.as_millis(),
                });
            }
        }
        Ok(())
    }

    fn validate_node_leases(&self, subnet: Subnet) -> Result<(), ConfigError> {
        for (i, n) in self.node_leases.iter().enumerate() {
            let mac = n.mac.to_string();
            let earlier = &self.node_leases[..i];
            let usable = Subnet::new(n.ip, n.subnet_mask).is_some_and(|s| s.is_host(n.ip))
                && !subnet.contains(n.ip)
                && n.mac.is_unicast()
                && n.router != n.ip
                && !earlier.iter().any(|e| e.mac == n.mac || e.ip == n.ip)
                && !self.reservations.iter().any(|(_, a)| *a == n.ip);
            if !usable {
                return Err(ConfigError::BadNodeLease { mac, ip: n.ip });
            }
        }
        Ok(())
    }

    fn validate_reservations(&self, subnet: Subnet) -> Result<(), ConfigError> {
        for (i, (mac, ip)) in self.reservations.iter().enumerate() {
            let mac_s = mac.to_string();
            if !mac.is_unicast() {
                return Err(ConfigError::ReservationInvalidMac { mac: mac_s });
            }
            if !subnet.is_host(*ip) {
                return Err(ConfigError::ReservationOutsideSubnet {
                    mac: mac_s,
                    ip: *ip,
                    network: subnet.network(),
                    prefix: subnet.prefix(),
                });
            }
            if *ip == self.server_ip {
                return Err(ConfigError::ReservationIsServerIp {
                    mac: mac_s,
                    ip: *ip,
                });
            }
            let earlier = &self.reservations[..i];
            if earlier.iter().any(|(m, _)| m == mac) {
                return Err(ConfigError::DuplicateReservationMac { mac: mac_s });
            }
            if earlier.iter().any(|(_, a)| a == ip) {
                return Err(ConfigError::DuplicateReservationIp { ip: *ip });
            }
        }
        Ok(())
    }

    /// The subnet of a validated config.
    pub(crate) fn subnet(&self) -> Subnet {
        // `validate` guarantees the mask is usable; fall back to a /30 around
        // the server rather than panicking if a caller skipped validation.
        Subnet::new(self.server_ip, self.subnet_mask).unwrap_or(Subnet {
            network: u32::from(self.server_ip) & !3,
            mask: !3,
        })
    }

    /// The address reserved for `mac`, if any: its node lease first.
    pub(crate) fn reservation_for(&self, mac: &Mac) -> Option<Ipv4Addr> {
        self.node_lease_for(mac).map(|n| n.ip).or_else(|| {
            self.reservations
                .iter()
                .find(|(m, _)| m == mac)
                .map(|(_, ip)| *ip)
        })
    }

    /// The MAC `ip` is reserved for (a reservation or a node lease), if any.
    pub(crate) fn reserved_by(&self, ip: Ipv4Addr) -> Option<Mac> {
        self.node_leases
            .iter()
            .find(|n| n.ip == ip)
            .map(|n| n.mac)
            .or_else(|| {
                self.reservations
                    .iter()
                    .find(|(_, a)| *a == ip)
                    .map(|(m, _)| *m)
            })
    }

    /// The lease time for `mac`: short ([`WAITING_LEASE_TIME`]) for a pool
    /// address while devices become nodes ([`ServerConfig::hold_new`]) and
    /// `mac` has no node lease yet, so that it moves to its node's address
    /// soon; else `lease_time`.
    pub fn lease_time_for(&self, mac: &Mac) -> Duration {
        if self.hold_new.is_some()
            && self.node_lease_for(mac).is_none()
            && !self.no_node.contains(mac)
        {
            self.lease_time.min(WAITING_LEASE_TIME)
        } else {
            self.lease_time
        }
    }

    /// `mac`'s node lease, if it has one.
    pub fn node_lease_for(&self, mac: &Mac) -> Option<&NodeLease> {
        self.node_leases.iter().find(|n| n.mac == *mac)
    }

    /// Whether `ip` is ours to answer for `mac`: inside the subnet, or its
    /// node lease.
    pub(crate) fn serves(&self, mac: &Mac, ip: Ipv4Addr) -> bool {
        self.subnet().contains(ip) || self.node_lease_for(mac).is_some_and(|n| n.ip == ip)
    }

    /// Whether `ip` is in the dynamic pool.
    pub(crate) fn in_range(&self, ip: Ipv4Addr) -> bool {
        (self.range_start..=self.range_end).contains(&ip)
    }

    /// Whether `mac` may ever hold `ip` under this config: its own
    /// reservation, or a pool address nobody else has reserved.
    pub(crate) fn allowed_for(&self, mac: &Mac, ip: Ipv4Addr) -> bool {
        if ip == self.server_ip {
            return false;
        }
        match self.reserved_by(ip) {
            Some(owner) => owner == *mac,
            None => self.in_range(ip),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ServerConfig {
        ServerConfig {
            server_ip: Ipv4Addr::new(192, 168, 50, 1),
            server_mac: Mac([0x02, 0, 0, 0, 0, 1]),
            subnet_mask: Ipv4Addr::new(255, 255, 255, 0),
            range_start: Ipv4Addr::new(192, 168, 50, 100),
            range_end: Ipv4Addr::new(192, 168, 50, 200),
            router: Some(Ipv4Addr::new(192, 168, 50, 1)),
            dns: vec![Ipv4Addr::new(192, 168, 50, 1)],
            domain: Some("lan".into()),
            mtu: Some(1420),
            lease_time: Duration::from_secs(3600),
            reservations: vec![(
                Mac([0x00, 0x11, 0x22, 0x33, 0x44, 0x55]),
                Ipv4Addr::new(192, 168, 50, 10),
            )],
            probe_interval: Some(Duration::from_secs(60)),
            node_leases: Vec::new(),
            hold_new: None,
            no_node: Vec::new(),
            serve: true,
        }
    }

    #[test]
    fn valid_config_passes() {
        assert_eq!(base().validate(), Ok(()));
    }

    type Mutation = Box<dyn Fn(&mut ServerConfig)>;
    type Check = fn(&ConfigError) -> bool;

    #[test]
    fn rejects_each_rule() {
        let cases: Vec<(Mutation, Check)> = vec![
            (
                Box::new(|c| c.subnet_mask = Ipv4Addr::new(255, 0, 255, 0)),
                |e| matches!(e, ConfigError::InvalidSubnetMask { .. }),
            ),
            (
                Box::new(|c| c.subnet_mask = Ipv4Addr::new(255, 255, 255, 254)),
                |e| matches!(e, ConfigError::InvalidSubnetMask { .. }),
            ),
            (
                Box::new(|c| c.server_ip = Ipv4Addr::new(192, 168, 50, 255)),
                |e| matches!(e, ConfigError::ServerIpNotHost { .. }),
            ),
            (Box::new(|c| c.server_mac = Mac([0xff; 6])), |e| {
                matches!(e, ConfigError::InvalidServerMac { .. })
            }),
            (
                Box::new(|c| c.range_start = Ipv4Addr::new(192, 168, 50, 250)),
                |e| matches!(e, ConfigError::RangeReversed { .. }),
            ),
            (
                Box::new(|c| c.range_end = Ipv4Addr::new(192, 168, 51, 5)),
                |e| matches!(e, ConfigError::RangeOutsideSubnet { .. }),
            ),
            (
                Box::new(|c| c.range_end = Ipv4Addr::new(192, 168, 50, 255)),
                |e| matches!(e, ConfigError::RangeIncludesNetworkOrBroadcast { .. }),
            ),
            (
                Box::new(|c| c.server_ip = Ipv4Addr::new(192, 168, 50, 150)),
                |e| matches!(e, ConfigError::ServerIpInRange { .. }),
            ),
            (Box::new(|c| c.lease_time = Duration::from_secs(59)), |e| {
                matches!(e, ConfigError::LeaseTimeTooShort { secs: 59 })
            }),
            (
                Box::new(|c| c.lease_time = Duration::from_secs(u64::from(u32::MAX))),
                |e| matches!(e, ConfigError::LeaseTimeTooLong { .. }),
            ),
            (
                Box::new(|c| {
                    c.reservations
                        .push((Mac([2, 0, 0, 0, 0, 9]), Ipv4Addr::new(10, 0, 0, 1)))
                }),
                |e| matches!(e, ConfigError::ReservationOutsideSubnet { .. }),
            ),
            (
                Box::new(|c| {
                    c.reservations
                        .push((Mac([2, 0, 0, 0, 0, 9]), Ipv4Addr::new(192, 168, 50, 1)))
                }),
                |e| matches!(e, ConfigError::ReservationIsServerIp { .. }),
            ),
            (
                Box::new(|c| {
                    c.reservations.push((
                        Mac([0x00, 0x11, 0x22, 0x33, 0x44, 0x55]),
                        Ipv4Addr::new(192, 168, 50, 11),
                    ))
                }),
                |e| matches!(e, ConfigError::DuplicateReservationMac { .. }),
            ),
            (
                Box::new(|c| {
                    c.reservations
                        .push((Mac([2, 0, 0, 0, 0, 9]), Ipv4Addr::new(192, 168, 50, 10)))
                }),
                |e| matches!(e, ConfigError::DuplicateReservationIp { .. }),
            ),
            (
                Box::new(|c| {
                    c.reservations
                        .push((Mac([1, 0, 0, 0, 0, 9]), Ipv4Addr::new(192, 168, 50, 11)))
                }),
                |e| matches!(e, ConfigError::ReservationInvalidMac { .. }),
            ),
            (
                Box::new(|c| c.router = Some(Ipv4Addr::new(10, 0, 0, 1))),
                |e| matches!(e, ConfigError::RouterOutsideSubnet { .. }),
            ),
            (Box::new(|c| c.dns = vec![Ipv4Addr::UNSPECIFIED]), |e| {
                matches!(e, ConfigError::InvalidDnsServer { .. })
            }),
            (
                Box::new(|c| c.dns = vec![Ipv4Addr::new(1, 1, 1, 1); 17]),
                |e| matches!(e, ConfigError::TooManyDnsServers { count: 17 }),
            ),
            (Box::new(|c| c.domain = Some("bad domain".into())), |e| {
                matches!(e, ConfigError::InvalidDomain { .. })
            }),
            (Box::new(|c| c.mtu = Some(67)), |e| {
                matches!(e, ConfigError::MtuTooSmall { mtu: 67 })
            }),
            (
                Box::new(|c| c.probe_interval = Some(Duration::from_secs(1))),
                |e| matches!(e, ConfigError::ProbeIntervalTooShort { .. }),
            ),
        ];
        for (i, (mutate, check)) in cases.iter().enumerate() {
            let mut c = base();
            mutate(&mut c);
            let err = c.validate().expect_err(&format!("case {i} should fail"));
            assert!(check(&err), "case {i}: unexpected {err:?}");
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn reservation_outside_range_but_inside_subnet_is_fine() {
        let mut c = base();
        c.reservations
            .push((Mac([2, 0, 0, 0, 0, 9]), Ipv4Addr::new(192, 168, 50, 20)));
        assert_eq!(c.validate(), Ok(()));
        assert!(c.allowed_for(&Mac([2, 0, 0, 0, 0, 9]), Ipv4Addr::new(192, 168, 50, 20)));
        assert!(!c.allowed_for(&Mac([2, 0, 0, 0, 0, 8]), Ipv4Addr::new(192, 168, 50, 20)));
    }

    #[test]
    fn subnet_math() {
        let s = Subnet::new(Ipv4Addr::new(10, 1, 2, 3), Ipv4Addr::new(255, 255, 0, 0)).unwrap();
        assert_eq!(s.network(), Ipv4Addr::new(10, 1, 0, 0));
        assert_eq!(s.prefix(), 16);
        assert!(s.is_host(Ipv4Addr::new(10, 1, 255, 254)));
        assert!(!s.is_host(Ipv4Addr::new(10, 1, 255, 255)));
        assert!(!s.contains(Ipv4Addr::new(10, 2, 0, 1)));
        assert!(Subnet::new(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(255, 255, 255, 252)
        )
        .is_some());
        assert!(Subnet::new(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(255, 255, 255, 255)
        )
        .is_none());
    }
}
