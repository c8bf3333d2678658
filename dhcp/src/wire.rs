//! Glue to `dhcproto`: decoding requests, building replies and probes, and
//! deciding where a reply goes (RFC 2131 §4.1).
//!
//! All DHCP encoding and decoding is done by `dhcproto`. Incoming messages
//! go through its zero-copy view (`dhcproto::v4::borrowed`) into a small
//! plain [`Packet`], and only the options the server acts on are decoded.
//! We do not use the owned `Message::decode` on wire input: in dhcproto 0.15
//! it decodes every option, and a few option decoders (e.g. rapid commit,
//! client network interface) `debug_assert!` their length, which a hostile
//! packet can trip in debug and fuzz builds. This module also checks what
//! the view leaves to its caller: the magic cookie, and `hlen` before the
//! hardware address is read.

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::borrowed;
use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode, MAGIC};
use dhcproto::Encodable;

use crate::config::ServerConfig;
use crate::server::InputError;
use crate::Mac;

/// UDP port DHCP servers listen on.
pub const SERVER_PORT: u16 = 67;
/// UDP port DHCP clients listen on.
pub const CLIENT_PORT: u16 = 68;
/// The Ethernet broadcast address.
pub const BROADCAST_MAC: Mac = Mac::BROADCAST;

/// Fixed BOOTP header length up to and including the magic cookie.
const HEADER_LEN: usize = 240;
/// Offset of the magic cookie.
const MAGIC_OFFSET: usize = 236;
/// BOOTP minimum message size (RFC 1542 §2.1); some clients drop shorter
/// replies.
const MIN_REPLY_LEN: usize = 300;

/// The parts of a received DHCP message the server uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Packet {
    pub(crate) opcode: Opcode,
    pub(crate) htype: HType,
    pub(crate) hlen: u8,
    pub(crate) xid: u32,
    pub(crate) flags: Flags,
    pub(crate) ciaddr: Ipv4Addr,
    pub(crate) giaddr: Ipv4Addr,
    /// The hardware address, when `hlen` is 6.
    pub(crate) chaddr: Option<Mac>,
    /// Option 53.
    pub(crate) msg_type: Option<MessageType>,
    /// Option 50.
    pub(crate) requested_ip: Option<Ipv4Addr>,
    /// Option 54.
    pub(crate) server_id: Option<Ipv4Addr>,
    /// Option 12, raw (not yet sanitised); invalid UTF-8 replaced.
    pub(crate) hostname: Option<String>,
}

impl Packet {
    /// Non-zero `ciaddr`, if any.
    pub(crate) fn client_addr(&self) -> Option<Ipv4Addr> {
        Some(self.ciaddr).filter(|ip| !ip.is_unspecified())
    }
}

fn bad_option(code: OptionCode, detail: impl std::fmt::Display) -> InputError {
    InputError::Malformed {
        detail: format!("option {}: {detail}", u8::from(code)),
    }
}

/// Decodes a DHCP message, rejecting anything that is not DHCP.
pub(crate) fn decode(payload: &[u8]) -> Result<Packet, InputError> {
    if payload.len() < HEADER_LEN {
        return Err(InputError::TooShort { len: payload.len() });
    }
    if payload.get(MAGIC_OFFSET..HEADER_LEN) != Some(&MAGIC[..]) {
        return Err(InputError::BadMagic);
    }
    let view = borrowed::Message::new(payload).map_err(|e| InputError::Malformed {
        detail: e.to_string(),
    })?;
    // `chaddr()` slices by `hlen`; only call it for the one length we use.
    let chaddr = match view.hlen() {
        6 => view.chaddr().try_into().ok(),
        _ => None,
    };
    let mut packet = Packet {
        opcode: view.opcode(),
        htype: view.htype(),
        hlen: view.hlen(),
        xid: view.xid(),
        flags: view.flags(),
        ciaddr: view.ciaddr(),
        giaddr: view.giaddr(),
        chaddr,
        msg_type: None,
        requested_ip: None,
        server_id: None,
        hostname: None,
    };
    for opt in view.opts() {
        let code = opt.code();
        match code {
            OptionCode::MessageType if packet.msg_type.is_none() => {
                match opt.into_option().map_err(|e| bad_option(code, e))? {
                    DhcpOption::MessageType(t) => packet.msg_type = Some(t),
                    other => return Err(bad_option(code, format!("decoded as {other:?}"))),
                }
            }
            OptionCode::RequestedIpAddress if packet.requested_ip.is_none() => {
                match opt.into_option().map_err(|e| bad_option(code, e))? {
                    DhcpOption::RequestedIpAddress(ip) => packet.requested_ip = Some(ip),
                    other => return Err(bad_option(code, format!("decoded as {other:?}"))),
                }
            }
            OptionCode::ServerIdentifier if packet.server_id.is_none() => {
                match opt.into_option().map_err(|e| bad_option(code, e))? {
                    DhcpOption::ServerIdentifier(ip) => packet.server_id = Some(ip),
                    other => return Err(bad_option(code, format!("decoded as {other:?}"))),
                }
            }
            OptionCode::Hostname if packet.hostname.is_none() => {
                // A host name that is not UTF-8 is no reason to refuse an
                // address: keep what can be read.
                let lossy = String::from_utf8_lossy(opt.data()).into_owned();
                packet.hostname = match opt.into_option() {
                    Ok(DhcpOption::Hostname(h)) => Some(h),
                    _ => Some(lossy),
                };
            }
            _ => {}
        }
    }
    Ok(packet)
}

/// The client hardware address of an Ethernet request, or why there is none.
pub(crate) fn ethernet_chaddr(p: &Packet) -> Result<Mac, InputError> {
    match (p.htype, p.chaddr) {
        // A lease keyed by a group or all-zero address would make us unicast
        // replies to it.
        (HType::Eth, Some(mac)) if mac[0] & 0x01 != 0 || mac == [0; 6] => {
            Err(InputError::InvalidClientMac {
                mac: mac.to_string(),
            })
        }
        (HType::Eth, Some(mac)) => Ok(mac),
        _ => Err(InputError::UnsupportedHardware {
            htype: p.htype.into(),
            hlen: p.hlen,
        }),
    }
}

/// The kinds of reply the server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyKind {
    /// DHCPOFFER with a lease.
    Offer,
    /// DHCPACK with a lease.
    Ack,
    /// DHCPNAK.
    Nak,
    /// DHCPACK to a DHCPINFORM: configuration only, no lease.
    InformAck,
}

/// Where a reply goes at layers 2 and 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Destination {
    /// 255.255.255.255 at ff:ff:ff:ff:ff:ff.
    Broadcast,
    /// A single host.
    Unicast {
        /// Destination IP.
        ip: Ipv4Addr,
        /// Destination MAC.
        mac: Mac,
    },
}

impl Destination {
    pub(crate) fn ip(&self) -> Ipv4Addr {
        match self {
            Destination::Broadcast => Ipv4Addr::BROADCAST,
            Destination::Unicast { ip, .. } => *ip,
        }
    }

    pub(crate) fn mac(&self) -> Mac {
        match self {
            Destination::Broadcast => BROADCAST_MAC,
            Destination::Unicast { mac, .. } => *mac,
        }
    }
}

/// RFC 2131 §4.1 reply addressing, without relay support: NAKs are
/// broadcast; a client with an address (ciaddr) gets unicast there; a client
/// that asked for broadcast gets it; anyone else is unicast to the new
/// address at its hardware address. An INFORM without ciaddr is answered to
/// its source address, or broadcast.
pub(crate) fn destination(
    req: &Packet,
    chaddr: Mac,
    src_ip: Ipv4Addr,
    kind: ReplyKind,
    yiaddr: Ipv4Addr,
) -> Destination {
    let unicast = |ip: Ipv4Addr| Destination::Unicast { ip, mac: chaddr };
    match kind {
        ReplyKind::Nak => Destination::Broadcast,
        _ if !req.ciaddr.is_unspecified() => unicast(req.ciaddr),
        ReplyKind::InformAck if !src_ip.is_unspecified() && !src_ip.is_broadcast() => {
            unicast(src_ip)
        }
        ReplyKind::InformAck => Destination::Broadcast,
        _ if req.flags.broadcast() => Destination::Broadcast,
        _ if yiaddr.is_unspecified() => Destination::Broadcast,
        _ => unicast(yiaddr),
    }
}

/// Option 51/58/59 values for a lease of `lease` (T1 = 1/2, T2 = 7/8).
fn lease_times(lease: Duration) -> (u32, u32, u32) {
    let secs = lease.as_secs().min(u64::from(u32::MAX - 1));
    let t1 = secs / 2;
    let t2 = secs * 7 / 8;
    // All three are at most `secs`, which fits u32.
    let fit = |v: u64| u32::try_from(v).unwrap_or(u32::MAX - 1);
    (fit(secs), fit(t1), fit(t2))
}

/// Builds a reply to `req`. `yiaddr` is ignored for NAK and INFORM-ACK.
pub(crate) fn build_reply(
    cfg: &ServerConfig,
    req: &Packet,
    chaddr: Mac,
    kind: ReplyKind,
    yiaddr: Ipv4Addr,
) -> Message {
    let (msg_type, ciaddr, yiaddr) = match kind {
        ReplyKind::Offer => (MessageType::Offer, Ipv4Addr::UNSPECIFIED, yiaddr),
        ReplyKind::Ack => (MessageType::Ack, req.ciaddr, yiaddr),
        ReplyKind::Nak => (
            MessageType::Nak,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
        ),
        ReplyKind::InformAck => (MessageType::Ack, req.ciaddr, Ipv4Addr::UNSPECIFIED),
    };
    let mut msg = Message::new_with_id(
        req.xid,
        ciaddr,
        yiaddr,
        Ipv4Addr::UNSPECIFIED,
        req.giaddr,
        &chaddr[..],
    );
    msg.set_opcode(Opcode::BootReply)
        .set_htype(HType::Eth)
        .set_flags(req.flags);
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(msg_type));
    opts.insert(DhcpOption::ServerIdentifier(cfg.server_ip));
    if kind == ReplyKind::Nak {
        opts.insert(DhcpOption::Message(
            "requested address not available".into(),
        ));
        return msg;
    }
    if kind != ReplyKind::InformAck {
        let (lease, t1, t2) = lease_times(cfg.lease_time_for(&chaddr));
        opts.insert(DhcpOption::AddressLeaseTime(lease));
        opts.insert(DhcpOption::Renewal(t1));
        opts.insert(DhcpOption::Rebinding(t2));
    }
    match cfg.node_lease_for(&chaddr).filter(|n| n.ip == yiaddr) {
        // A device's node address: its network's mask, router and DNS.
        Some(n) => {
            opts.insert(DhcpOption::SubnetMask(n.subnet_mask));
            opts.insert(DhcpOption::Router(vec![n.router]));
            if !n.dns.is_empty() {
                opts.insert(DhcpOption::DomainNameServer(n.dns.clone()));
            }
        }
        None => {
            opts.insert(DhcpOption::SubnetMask(cfg.subnet_mask));
            if let Some(router) = cfg.router {
                opts.insert(DhcpOption::Router(vec![router]));
            }
            if !cfg.dns.is_empty() {
                opts.insert(DhcpOption::DomainNameServer(cfg.dns.clone()));
            }
        }
    }
    if let Some(domain) = &cfg.domain {
        opts.insert(DhcpOption::DomainName(domain.clone()));
    }
    if let Some(mtu) = cfg.mtu {
        opts.insert(DhcpOption::InterfaceMtu(mtu));
    }
    msg
}

/// The MAC the rogue-server probe uses: `server_mac` with the
/// locally-administered bit set (and the multicast bit clear) and the last
/// byte xor 0x55, so it never equals the server's own MAC.
pub fn probe_mac(server_mac: Mac) -> Mac {
    let mut mac = server_mac;
    mac[0] = (mac[0] | 0x02) & !0x01;
    mac[5] ^= 0x55;
    mac
}

/// A DHCPDISCOVER from the probe MAC asking for a broadcast reply.
pub(crate) fn build_probe(probe_mac: Mac, xid: u32) -> Message {
    let unspecified = Ipv4Addr::UNSPECIFIED;
    let mut msg = Message::new_with_id(
        xid,
        unspecified,
        unspecified,
        unspecified,
        unspecified,
        &probe_mac[..],
    );
    msg.set_opcode(Opcode::BootRequest)
        .set_htype(HType::Eth)
        .set_flags(Flags::default().set_broadcast());
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(MessageType::Discover));
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::ServerIdentifier,
    ]));
    msg
}

/// Encodes `msg`, padded to the BOOTP minimum size.
pub(crate) fn encode(msg: &Message) -> Result<Vec<u8>, InputError> {
    let mut bytes = msg.to_vec().map_err(|e| InputError::Encode {
        detail: e.to_string(),
    })?;
    if bytes.len() < MIN_REPLY_LEN {
        bytes.resize(MIN_REPLY_LEN, 0);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_mac_is_local_unicast_and_distinct() {
        let server = Mac([0x00, 0x11, 0x22, 0x33, 0x44, 0x55]);
        let probe = probe_mac(server);
        assert_eq!(probe, [0x02, 0x11, 0x22, 0x33, 0x44, 0x00]);
        assert_ne!(probe, server);
        assert_eq!(probe_mac(Mac([0x03, 0, 0, 0, 0, 0]))[0], 0x02);
    }

    #[test]
    fn lease_time_split() {
        assert_eq!(lease_times(Duration::from_secs(3600)), (3600, 1800, 3150));
        assert_eq!(lease_times(Duration::from_secs(61)), (61, 30, 53));
    }

    #[test]
    fn decode_rejects_short_and_cookieless() {
        assert!(matches!(
            decode(&[0u8; 10]),
            Err(InputError::TooShort { len: 10 })
        ));
        assert!(matches!(decode(&[0u8; 300]), Err(InputError::BadMagic)));
    }
}
