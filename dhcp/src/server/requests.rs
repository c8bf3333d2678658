//! Handling of client messages (RFC 2131 §4.3).

use std::net::Ipv4Addr;
use std::time::SystemTime;

use dhcproto::v4::MessageType;

use super::{Event, Input, InputError, Server};
use crate::lease::sanitize_hostname;
use crate::wire::{self, Packet, ReplyKind};
use crate::{after, Mac};

impl Server {
    /// A BOOTREQUEST to port 67.
    pub(super) fn on_request(
        &mut self,
        now: SystemTime,
        input: &Input<'_>,
        msg: &Packet,
    ) -> Result<(), InputError> {
        let chaddr = wire::ethernet_chaddr(msg)?;
        if !self.config.serve {
            // `dhcp.enabled = false`: silent on the segment, leases kept.
            self.stats.ignored_while_disabled += 1;
            return Ok(());
        }
        if chaddr == self.probe_mac {
            // Our own probe, looped back by the bridge.
            self.stats.ignored += 1;
            return Ok(());
        }
        if chaddr != input.src_mac {
            // A device may only speak for itself: a message for another
            // MAC (a forged RELEASE, DECLINE or DISCOVER) is dropped.
            self.stats.chaddr_mismatch += 1;
            return Ok(());
        }
        // Known: a lease record, a reservation, or an offer still held for
        // it (the REQUEST that takes an offer was paid for by its DISCOVER).
        let known = self.table.lease(&chaddr).is_some()
            || self.config.reservation_for(&chaddr).is_some()
            || self.table.offer(&chaddr).is_some_and(|o| o.until > now);
        if !self.limiter.allow(chaddr, known, now) {
            self.stats.rate_limited += 1;
            return Ok(());
        }
        if !msg.giaddr.is_unspecified() {
            return Err(InputError::Relayed { giaddr: msg.giaddr });
        }
        let msg_type = msg.msg_type.ok_or(InputError::MissingMessageType)?;
        match msg_type {
            MessageType::Request if self.guard.is_suspended() => {
                // No new leases while another server is active, but a device
                // renewing its own active lease is always answered, so a
                // rogue server cannot take the box's devices off the air.
                let ip = msg.client_addr().or(msg.requested_ip);
                let ours = msg.server_id.is_none_or(|id| id == self.config.server_ip);
                match ip {
                    Some(ip)
                        if ours
                            && self.active_ip_for(&chaddr, now) == Some(ip)
                            && self.may_keep(&chaddr, ip, now) =>
                    {
                        self.stats.renewals_while_suspended += 1;
                        self.ack(now, msg, chaddr, input.src_ip, ip)
                    }
                    _ => {
                        self.stats.ignored_while_suspended += 1;
                        Ok(())
                    }
                }
            }
            MessageType::Discover | MessageType::Inform if self.guard.is_suspended() => {
                // Never fight the home router.
                self.stats.ignored_while_suspended += 1;
                Ok(())
            }
            MessageType::Discover => self.on_discover(now, msg, chaddr, input.src_ip),
            MessageType::Request => self.on_request_msg(now, msg, chaddr, input.src_ip),
            MessageType::Decline => self.on_decline(now, msg, chaddr),
            MessageType::Release => {
                self.on_release(now, msg, chaddr);
                Ok(())
            }
            MessageType::Inform => self.on_inform(msg, chaddr, input.src_ip),
            other => Err(InputError::UnexpectedMessageType {
                msg_type: other.into(),
            }),
        }
    }

    /// DHCPDISCOVER: choose an address, hold it, offer it (§4.3.1).
    fn on_discover(
        &mut self,
        now: SystemTime,
        msg: &Packet,
        chaddr: Mac,
        src_ip: Ipv4Addr,
    ) -> Result<(), InputError> {
        if self.holds(now, msg, chaddr) {
            self.stats.held += 1;
            return Ok(());
        }
        let requested = msg.requested_ip;
        let Some(ip) = self.table.choose(&self.config, &chaddr, requested, now) else {
            self.stats.pool_exhausted += 1;
            return Ok(());
        };
        self.table.hold_offer(chaddr, ip, now);
        self.reply(msg, chaddr, src_ip, ReplyKind::Offer, ip)
    }

    /// DHCPREQUEST in its three forms (§4.3.2).
    fn on_request_msg(
        &mut self,
        now: SystemTime,
        msg: &Packet,
        chaddr: Mac,
        src_ip: Ipv4Addr,
    ) -> Result<(), InputError> {
        let requested = msg.requested_ip;
        let decision = if let Some(server_id) = msg.server_id {
            // SELECTING: the client picked an offer.
            if server_id != self.config.server_ip {
                self.table.forget_offer(&chaddr);
                self.stats.ignored += 1;
                return Ok(());
            }
            let ip = requested
                .or(msg.client_addr())
                .ok_or(InputError::MissingAddress {
                    what: "DHCPREQUEST (selecting)",
                })?;
            let offered = self.table.offer(&chaddr).is_some_and(|o| o.ip == ip);
            let bound = self.table.lease(&chaddr).is_some_and(|l| l.ip == ip);
            ((offered || bound) && self.table.available_for(&self.config, &chaddr, ip, now))
                .then_some(ip)
        } else if let Some(ip) = msg.client_addr() {
            // RENEWING or REBINDING: only the client's own lease. An address
            // outside our subnet belongs to another server on the segment:
            // stay silent, never NAK someone else's client (a box must not
            // break the network it sits in).
            if !self.config.serves(&chaddr, ip) {
                if self.retired.get(&chaddr) == Some(&ip) {
                    // Its node's address, taken back: ours to refuse.
                    return self.reply(msg, chaddr, src_ip, ReplyKind::Nak, Ipv4Addr::UNSPECIFIED);
                }
                self.stats.ignored += 1;
                return Ok(());
            }
            self.may_keep(&chaddr, ip, now).then_some(ip)
        } else if let Some(ip) = requested {
            // INIT-REBOOT: answer for our own subnet only; for any other
            // address stay silent (RFC 2131 §4.3.2 lets a server that is not
            // the client's remain silent) so another server's clients are
            // never NAKed.
            if !self.config.serves(&chaddr, ip) {
                if self.retired.get(&chaddr) == Some(&ip) {
                    // Its node's address, taken back: ours to refuse.
                    return self.reply(msg, chaddr, src_ip, ReplyKind::Nak, Ipv4Addr::UNSPECIFIED);
                }
                self.stats.ignored += 1;
                return Ok(());
            }
            let acceptable = self.may_keep(&chaddr, ip, now)
                || (self.table.available_for(&self.config, &chaddr, ip, now)
                    && !self.prefers_reservation(&chaddr, ip, now));
            acceptable.then_some(ip)
        } else {
            return Err(InputError::MissingAddress {
                what: "DHCPREQUEST",
            });
        };
        match decision {
            Some(ip) => self.ack(now, msg, chaddr, src_ip, ip),
            None => self.reply(msg, chaddr, src_ip, ReplyKind::Nak, Ipv4Addr::UNSPECIFIED),
        }
    }

    /// Whether a DISCOVER from `mac` waits for its node lease
    /// ([`crate::ServerConfig::hold_new`]): a device never seen before, for
    /// at most the hold time from its first DISCOVER.
    fn holds(&mut self, now: SystemTime, msg: &Packet, mac: Mac) -> bool {
        let Some(hold) = self.config.hold_new else {
            return false;
        };
        if self.table.lease(&mac).is_some()
            || self.table.offer(&mac).is_some()
            || self.config.reservation_for(&mac).is_some()
            || self.config.no_node.contains(&mac)
        {
            self.held.remove(&mac);
            return false;
        }
        if let Some(first) = self.held.get(&mac) {
            return now < crate::after(*first, hold);
        }
        if self.held.len() >= super::MAX_HELD {
            // Forget those whose hold ended; if still full, no waiting.
            self.held.retain(|_, t| now < crate::after(*t, hold));
            if self.held.len() >= super::MAX_HELD {
                return false;
            }
        }
        self.held.insert(mac, now);
        self.push_event(Event::NewDevice {
            mac,
            hostname: msg.hostname.as_deref().and_then(sanitize_hostname),
        });
        true
    }

    /// `mac` may go on using `ip`: it is (or was) its lease, the config still
    /// allows it, nobody else holds it, it is not quarantined, and no
    /// reservation should move the client elsewhere.
    fn may_keep(&self, mac: &Mac, ip: Ipv4Addr, now: SystemTime) -> bool {
        self.table.lease(mac).is_some_and(|l| l.ip == ip)
            && self.config.allowed_for(mac, ip)
            && self.table.holder(ip, now).is_none_or(|h| h == *mac)
            && !self.table.is_quarantined(ip, now)
            && !self.prefers_reservation(mac, ip, now)
    }

    /// `mac` has a usable reservation other than `ip`.
    fn prefers_reservation(&self, mac: &Mac, ip: Ipv4Addr, now: SystemTime) -> bool {
        self.config
            .reservation_for(mac)
            .is_some_and(|r| r != ip && self.table.available_for(&self.config, mac, r, now))
    }

    /// Binds and acknowledges.
    fn ack(
        &mut self,
        now: SystemTime,
        msg: &Packet,
        chaddr: Mac,
        src_ip: Ipv4Addr,
        ip: Ipv4Addr,
    ) -> Result<(), InputError> {
        let hostname = msg.hostname.as_deref().and_then(sanitize_hostname);
        let expires = after(now, self.config.lease_time_for(&chaddr));
        let lease = self.table.bind(chaddr, ip, hostname, expires);
        self.reply(msg, chaddr, src_ip, ReplyKind::Ack, ip)?;
        self.push_event(Event::Bound {
            mac: chaddr,
            ip,
            hostname: lease.hostname,
            expires,
        });
        self.push_event(Event::LeasesChanged);
        Ok(())
    }

    /// A DHCPDECLINE or DHCPRELEASE names a server identifier that is not
    /// ours (a missing one is tolerated).
    fn for_other_server(&self, msg: &Packet) -> bool {
        msg.server_id.is_some_and(|id| id != self.config.server_ip)
    }

    /// DHCPDECLINE: the client found the address in use (§4.3.3).
    fn on_decline(&mut self, now: SystemTime, msg: &Packet, chaddr: Mac) -> Result<(), InputError> {
        if self.for_other_server(msg) {
            self.stats.ignored += 1;
            return Ok(());
        }
        let ip = msg.requested_ip.ok_or(InputError::MissingAddress {
            what: "DHCPDECLINE",
        })?;
        if !self.table.decline(&chaddr, ip, now) {
            self.stats.ignored += 1;
            return Ok(());
        }
        self.stats.declines += 1;
        self.push_event(Event::Declined { mac: chaddr, ip });
        self.push_event(Event::LeasesChanged);
        Ok(())
    }

    /// DHCPRELEASE: the lease ends, the association stays (§4.3.4).
    fn on_release(&mut self, now: SystemTime, msg: &Packet, chaddr: Mac) {
        let released = !self.for_other_server(msg)
            && msg
                .client_addr()
                .is_some_and(|ip| self.table.release(&chaddr, ip, now));
        if !released {
            self.stats.ignored += 1;
            return;
        }
        self.stats.releases += 1;
        self.push_event(Event::Released {
            mac: chaddr,
            ip: msg.ciaddr,
        });
        self.push_event(Event::LeasesChanged);
    }

    /// DHCPINFORM: configuration for a client that already has an address
    /// (§4.3.5). Clients outside our subnet are not answered: our router and
    /// mask would be wrong for them.
    fn on_inform(&mut self, msg: &Packet, chaddr: Mac, src_ip: Ipv4Addr) -> Result<(), InputError> {
        let client = msg.client_addr().unwrap_or(src_ip);
        if !client.is_unspecified() && !self.config.subnet().contains(client) {
            self.stats.ignored += 1;
            return Ok(());
        }
        self.reply(
            msg,
            chaddr,
            src_ip,
            ReplyKind::InformAck,
            Ipv4Addr::UNSPECIFIED,
        )
    }
}
