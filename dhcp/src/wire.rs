//! Glue to `dhcproto`: decoding requests, building replies and probes, and
//! deciding where a reply goes (RFC 2131 §4.1).
//!
//! All DHCP encoding and decoding is done by `dhcproto`; this module only
//! checks what `dhcproto` leaves to its caller (the magic cookie, `hlen`
//! before `chaddr()` is read) and fills in message fields.

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode, MAGIC};
use dhcproto::{Decodable, Encodable};

use crate::config::ServerConfig;
use crate::server::InputError;
use crate::Mac;

/// UDP port DHCP servers listen on.
pub const SERVER_PORT: u16 = 67;
/// UDP port DHCP clients listen on.
pub const CLIENT_PORT: u16 = 68;
/// The Ethernet broadcast address.
pub const BROADCAST_MAC: Mac = [0xff; 6];

/// Fixed BOOTP header length up to and including the magic cookie.
const HEADER_LEN: usize = 240;
/// Offset of the magic cookie.
const MAGIC_OFFSET: usize = 236;
/// BOOTP minimum message size (RFC 1542 §2.1); some clients drop shorter
/// replies.
const MIN_REPLY_LEN: usize = 300;

/// Decodes a DHCP message, rejecting anything that is not DHCP.
pub(crate) fn decode(payload: &[u8]) -> Result<Message, InputError> {
    if payload.len() < HEADER_LEN {
        return Err(InputError::TooShort { len: payload.len() });
    }
    if payload.get(MAGIC_OFFSET..HEADER_LEN) != Some(&MAGIC[..]) {
        return Err(InputError::BadMagic);
    }
    Message::from_bytes(payload).map_err(|e| InputError::Malformed {
        detail: e.to_string(),
    })
}

/// The client hardware address of an Ethernet request, or why there is none.
pub(crate) fn ethernet_chaddr(msg: &Message) -> Result<Mac, InputError> {
    // Check `hlen` before calling `chaddr()`, which slices by it.
    if msg.htype() != HType::Eth || msg.hlen() != 6 {
        return Err(InputError::UnsupportedHardware {
            htype: msg.htype().into(),
            hlen: msg.hlen(),
        });
    }
    msg.chaddr()
        .try_into()
        .map_err(|_| InputError::UnsupportedHardware {
            htype: msg.htype().into(),
            hlen: msg.hlen(),
        })
}

/// Server identifier (option 54), if present.
pub(crate) fn server_id(msg: &Message) -> Option<Ipv4Addr> {
    match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    }
}

/// Requested IP address (option 50), if present.
pub(crate) fn requested_ip(msg: &Message) -> Option<Ipv4Addr> {
    match msg.opts().get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => None,
    }
}

/// Host name (option 12), raw.
pub(crate) fn hostname(msg: &Message) -> Option<&str> {
    match msg.opts().get(OptionCode::Hostname) {
        Some(DhcpOption::Hostname(h)) => Some(h.as_str()),
        _ => None,
    }
}

/// Message type (option 53), if present.
pub(crate) fn message_type(msg: &Message) -> Option<MessageType> {
    match msg.opts().get(OptionCode::MessageType) {
        Some(DhcpOption::MessageType(t)) => Some(*t),
        _ => None,
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
    req: &Message,
    chaddr: Mac,
    src_ip: Ipv4Addr,
    kind: ReplyKind,
    yiaddr: Ipv4Addr,
) -> Destination {
    let unicast = |ip: Ipv4Addr| Destination::Unicast { ip, mac: chaddr };
    match kind {
        ReplyKind::Nak => Destination::Broadcast,
        _ if !req.ciaddr().is_unspecified() => unicast(req.ciaddr()),
        ReplyKind::InformAck if !src_ip.is_unspecified() && !src_ip.is_broadcast() => unicast(src_ip),
        ReplyKind::InformAck => Destination::Broadcast,
        _ if req.flags().broadcast() => Destination::Broadcast,
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
    req: &Message,
    chaddr: Mac,
    kind: ReplyKind,
    yiaddr: Ipv4Addr,
) -> Message {
    let (msg_type, ciaddr, yiaddr) = match kind {
        ReplyKind::Offer => (MessageType::Offer, Ipv4Addr::UNSPECIFIED, yiaddr),
        ReplyKind::Ack => (MessageType::Ack, req.ciaddr(), yiaddr),
        ReplyKind::Nak => (MessageType::Nak, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED),
        ReplyKind::InformAck => (MessageType::Ack, req.ciaddr(), Ipv4Addr::UNSPECIFIED),
    };
    let mut msg = Message::new_with_id(
        req.xid(),
        ciaddr,
        yiaddr,
        Ipv4Addr::UNSPECIFIED,
        req.giaddr(),
        &chaddr,
    );
    msg.set_opcode(Opcode::BootReply)
        .set_htype(HType::Eth)
        .set_flags(req.flags());
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(msg_type));
    opts.insert(DhcpOption::ServerIdentifier(cfg.server_ip));
    if kind == ReplyKind::Nak {
        opts.insert(DhcpOption::Message("requested address not available".into()));
        return msg;
    }
    if kind != ReplyKind::InformAck {
        let (lease, t1, t2) = lease_times(cfg.lease_time);
        opts.insert(DhcpOption::AddressLeaseTime(lease));
        opts.insert(DhcpOption::Renewal(t1));
        opts.insert(DhcpOption::Rebinding(t2));
    }
    opts.insert(DhcpOption::SubnetMask(cfg.subnet_mask));
    if let Some(router) = cfg.router {
        opts.insert(DhcpOption::Router(vec![router]));
    }
    if !cfg.dns.is_empty() {
        opts.insert(DhcpOption::DomainNameServer(cfg.dns.clone()));
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
    let mut msg = Message::new_with_id(xid, unspecified, unspecified, unspecified, unspecified, &probe_mac);
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
        let server = [0x00, 0x11, 0x22, 0x33, 0x44, 0x55];
        let probe = probe_mac(server);
        assert_eq!(probe, [0x02, 0x11, 0x22, 0x33, 0x44, 0x00]);
        assert_ne!(probe, server);
        assert_eq!(probe_mac([0x03, 0, 0, 0, 0, 0])[0], 0x02);
    }

    #[test]
    fn lease_time_split() {
        assert_eq!(lease_times(Duration::from_secs(3600)), (3600, 1800, 3150));
        assert_eq!(lease_times(Duration::from_secs(61)), (61, 30, 53));
    }

    #[test]
    fn decode_rejects_short_and_cookieless() {
        assert!(matches!(decode(&[0u8; 10]), Err(InputError::TooShort { len: 10 })));
        assert!(matches!(decode(&[0u8; 300]), Err(InputError::BadMagic)));
    }
}
