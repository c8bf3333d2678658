//! Ethernet/IPv4 ARP frames: a checked parse into a plain representation and
//! its emission. The byte work is etherparse's (`Ethernet2Header`,
//! `ArpPacketSlice`, `ArpEthIpv4Packet`); this module only decides which
//! frames the responder accepts.

use std::net::Ipv4Addr;

use etherparse::{ArpEthIpv4Packet, ArpOperation, ArpPacketSlice, EtherType, Ethernet2Header};

use crate::{ArpError, Mac};

/// The Ethernet broadcast address.
pub(crate) const BROADCAST: Mac = Mac::BROADCAST;

/// Minimum Ethernet frame length without the FCS (IEEE 802.3 `ETH_ZLEN`).
/// Emitted frames are zero-padded to it so that no driver below the TAP has
/// to.
pub(crate) const MIN_FRAME_LEN: usize = 60;

/// The two ARP operations the responder handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Request,
    Reply,
}

/// An Ethernet II frame carrying an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArpFrame {
    pub eth_destination: Mac,
    pub eth_source: Mac,
    pub operation: Operation,
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_mac: Mac,
    pub target_ip: Ipv4Addr,
}

impl ArpFrame {
    /// Parses a whole Ethernet II frame. Trailing bytes after the ARP packet
    /// (Ethernet padding) are ignored.
    pub fn parse(frame: &[u8]) -> Result<Self, ArpError> {
        let (eth, payload) =
            Ethernet2Header::from_slice(frame).map_err(|e| ArpError::Truncated {
                len: frame.len(),
                required: e.required_len,
            })?;
        if eth.ether_type != EtherType::ARP {
            return Err(ArpError::NotArp {
                ether_type: eth.ether_type.0,
            });
        }
        let slice = ArpPacketSlice::from_slice(payload).map_err(|e| ArpError::Truncated {
            len: frame.len(),
            required: Ethernet2Header::LEN + e.required_len,
        })?;
        let arp = slice
            .to_packet()
            .try_eth_ipv4()
            .map_err(|_| ArpError::NotEthernetIpv4 {
                hardware_type: slice.hw_addr_type().0,
                protocol_type: slice.proto_addr_type().0,
                hardware_len: slice.hw_addr_size(),
                protocol_len: slice.proto_addr_size(),
            })?;
        let operation = match arp.operation {
            ArpOperation::REQUEST => Operation::Request,
            ArpOperation::REPLY => Operation::Reply,
            ArpOperation(other) => return Err(ArpError::UnknownOperation(other)),
        };
        if !Mac(arp.sender_mac).is_unicast() {
            return Err(ArpError::InvalidSenderMac);
        }
        Ok(Self {
            eth_destination: Mac(eth.destination),
            eth_source: Mac(eth.source),
            operation,
            sender_mac: Mac(arp.sender_mac),
            sender_ip: arp.sender_ipv4_addr(),
            target_mac: Mac(arp.target_mac),
            target_ip: arp.target_ipv4_addr(),
        })
    }

    /// Serialises the frame, zero-padded to [`MIN_FRAME_LEN`].
    pub fn emit(&self) -> Vec<u8> {
        let eth = Ethernet2Header {
            source: self.eth_source.0,
            destination: self.eth_destination.0,
            ether_type: EtherType::ARP,
        };
        let arp = ArpEthIpv4Packet {
            operation: match self.operation {
                Operation::Request => ArpOperation::REQUEST,
                Operation::Reply => ArpOperation::REPLY,
            },
            sender_mac: self.sender_mac.0,
            sender_ipv4: self.sender_ip.octets(),
            target_mac: self.target_mac.0,
            target_ipv4: self.target_ip.octets(),
        };
        let mut out = Vec::with_capacity(MIN_FRAME_LEN);
        out.extend_from_slice(&eth.to_bytes());
        out.extend_from_slice(&arp.to_bytes());
        out.resize(out.len().max(MIN_FRAME_LEN), 0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = Mac([0x02, 0, 0, 0, 0, 1]);
    const B: Mac = Mac([0x02, 0, 0, 0, 0, 2]);

    fn sample() -> ArpFrame {
        ArpFrame {
            eth_destination: B,
            eth_source: A,
            operation: Operation::Reply,
            sender_mac: A,
            sender_ip: Ipv4Addr::new(192, 168, 1, 1),
            target_mac: B,
            target_ip: Ipv4Addr::new(192, 168, 1, 20),
        }
    }

    #[test]
    fn emit_then_parse_round_trips_and_pads() {
        let bytes = sample().emit();
        assert_eq!(bytes.len(), MIN_FRAME_LEN);
        assert!(bytes[42..].iter().all(|&b| b == 0));
        assert_eq!(ArpFrame::parse(&bytes), Ok(sample()));
        // Without padding it parses too.
        assert_eq!(ArpFrame::parse(&bytes[..42]), Ok(sample()));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample().emit();
        for len in 0..42 {
            assert!(
                matches!(
                    ArpFrame::parse(&bytes[..len]),
                    Err(ArpError::Truncated { .. })
                ),
                "length {len}"
            );
        }
    }
}
