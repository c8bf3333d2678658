//! Errors returned for frames that cannot be processed.

use thiserror::Error;

/// Why [`Responder::handle_frame`](crate::Responder::handle_frame) dropped a frame.
///
/// Every variant describes bad input from the wire: the frame has been
/// counted in [`Stats::malformed`](crate::Stats::malformed) and dropped, and
/// the responder is unaffected. Callers log it (at debug level: frames carry
/// addresses of home devices) and carry on; none of these is fatal.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ArpError {
    /// The frame ends before the Ethernet header or the ARP packet does.
    #[error("ARP frame of {len} bytes is truncated: {required} bytes are needed; frame dropped")]
    Truncated {
        /// Length of the frame that was handed in.
        len: usize,
        /// Length the headers announce (or the minimum header length).
        required: usize,
    },

    /// The Ethernet header carries another `EtherType` than ARP (0x0806).
    ///
    /// The caller should only hand ARP frames to the responder; VLAN-tagged
    /// frames are not accepted either.
    #[error("frame has EtherType {ether_type:#06x}, not ARP (0x0806); frame dropped")]
    NotArp {
        /// The `EtherType` found in the frame.
        ether_type: u16,
    },

    /// The ARP packet is not Ethernet/IPv4 ARP (hardware type 1 with 6-byte
    /// addresses, protocol type 0x0800 with 4-byte addresses).
    #[error(
        "ARP packet is not Ethernet/IPv4 (hardware type {hardware_type}, length {hardware_len}; \
         protocol type {protocol_type:#06x}, length {protocol_len}); frame dropped"
    )]
    NotEthernetIpv4 {
        /// Hardware address type field.
        hardware_type: u16,
        /// Protocol address type field.
        protocol_type: u16,
        /// Hardware address length field.
        hardware_len: u8,
        /// Protocol address length field.
        protocol_len: u8,
    },

    /// The operation is neither request (1) nor reply (2).
    #[error("ARP operation {0} is neither request (1) nor reply (2); frame dropped")]
    UnknownOperation(u16),

    /// The ARP sender hardware address is all zeros or a group (multicast or
    /// broadcast) address, which no host can own.
    #[error("ARP sender hardware address is not a unicast MAC address; frame dropped")]
    InvalidSenderMac,
}
