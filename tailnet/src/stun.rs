//! STUN binding requests (RFC 5389) as tailnet nodes send them to the DERP
//! map's STUN port, to learn their public address (the NAT's mapping of
//! the WireGuard socket), and the parse of the answer.
//!
//! Facts (tailscale.com `net/stun/stun.go`; `derper` answers only
//! requests that pass its `ParseBindingRequest`):
//!
//! * Request: type `0x0001`, a big-endian length of what follows the
//!   20-byte header, the magic cookie `21 12 a4 42`, a 12-byte
//!   transaction id; then attribute SOFTWARE (`0x8022`) = `"tailnode"`
//!   (8 bytes, no padding) and FINGERPRINT (`0x8028`, 4 bytes) = CRC-32
//!   (IEEE) of everything before it, XOR `0x5354554e`. derper refuses a
//!   request without that software value or fingerprint.
//! * Success response: type `0x0101`, same cookie and transaction id;
//!   XOR-MAPPED-ADDRESS (`0x0020`, or `0x8020`): a reserved byte, family
//!   (1 IPv4, 2 IPv6), port XOR `0x2112`, address XOR the cookie (IPv4)
//!   or the cookie and the transaction id (IPv6); MAPPED-ADDRESS
//!   (`0x0001`) is the plain form, used only without the XOR form.
//!   Attributes are padded to 4 bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const HEADER_LEN: usize = 20;
const SOFTWARE: &[u8; 8] = b"tailnode";
const ATTR_SOFTWARE: u16 = 0x8022;
const ATTR_FINGERPRINT: u16 = 0x8028;
const ATTR_MAPPED: u16 = 0x0001;
const ATTR_XOR_MAPPED: u16 = 0x0020;
const ATTR_XOR_MAPPED_ALT: u16 = 0x8020;

/// Why a STUN answer was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StunError {
    /// Not STUN (no cookie, too short).
    #[error("not a STUN message")]
    NotStun,
    /// STUN, but not a binding success response.
    #[error("not a STUN binding success response")]
    NotSuccess,
    /// Attributes that run past the message or an address that does not
    /// parse, or no address at all.
    #[error("malformed STUN response")]
    Malformed,
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), bit by bit: a
/// request is 36 bytes, a table would be wasted.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A binding request with transaction id `tx`.
pub fn request(tx: [u8; 12]) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER_LEN + 12 + 8);
    b.extend_from_slice(&[0x00, 0x01]);
    b.extend_from_slice(&((4 + SOFTWARE.len() + 8) as u16).to_be_bytes());
    b.extend_from_slice(&COOKIE);
    b.extend_from_slice(&tx);
    b.extend_from_slice(&ATTR_SOFTWARE.to_be_bytes());
    b.extend_from_slice(&(SOFTWARE.len() as u16).to_be_bytes());
    b.extend_from_slice(SOFTWARE);
    let fp = crc32(&b) ^ 0x5354_554e;
    b.extend_from_slice(&ATTR_FINGERPRINT.to_be_bytes());
    b.extend_from_slice(&4u16.to_be_bytes());
    b.extend_from_slice(&fp.to_be_bytes());
    b
}

/// Whether `p` looks like STUN: long enough, the top two bits of the type
/// zero, and the magic cookie at bytes 4..8 (RFC 5389 §6). Disco starts
/// `"TS"` (top bits set); a WireGuard message would need the cookie in its
/// sender index, so the daemon tries disco and STUN only for datagrams the
/// mesh would not take (see the daemon's demux).
pub fn is_stun(p: &[u8]) -> bool {
    p.len() >= HEADER_LEN && p[0] & 0xc0 == 0 && p[4..8] == COOKIE
}

/// Parses a binding success response: its transaction id and the mapped
/// (public) address.
pub fn parse_response(p: &[u8]) -> Result<([u8; 12], SocketAddr), StunError> {
    if !is_stun(p) {
        return Err(StunError::NotStun);
    }
    if p[0..2] != [0x01, 0x01] {
        return Err(StunError::NotSuccess);
    }
    let tx: [u8; 12] = p[8..20].try_into().map_err(|_| StunError::NotStun)?;
    let len = usize::from(u16::from_be_bytes([p[2], p[3]]));
    let mut attrs = p
        .get(HEADER_LEN..HEADER_LEN + len)
        .ok_or(StunError::Malformed)?;
    let (mut xor, mut plain) = (None, None);
    while !attrs.is_empty() {
        if attrs.len() < 4 {
            return Err(StunError::Malformed);
        }
        let kind = u16::from_be_bytes([attrs[0], attrs[1]]);
        let alen = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let padded = (alen + 3) & !3;
        let body = attrs.get(4..4 + alen).ok_or(StunError::Malformed)?;
        match kind {
            ATTR_XOR_MAPPED | ATTR_XOR_MAPPED_ALT => xor = Some(address(body, Some(&tx))?),
            ATTR_MAPPED => plain = Some(address(body, None)?),
            _ => {}
        }
        attrs = attrs.get(4 + padded..).unwrap_or_default();
    }
    xor.or(plain).map(|a| (tx, a)).ok_or(StunError::Malformed)
}

/// A (XOR-)MAPPED-ADDRESS body; `tx` given = XORed.
fn address(b: &[u8], tx: Option<&[u8; 12]>) -> Result<SocketAddr, StunError> {
    if b.len() < 4 {
        return Err(StunError::Malformed);
    }
    let mut port = u16::from_be_bytes([b[2], b[3]]);
    let mut key = [0u8; 16];
    if let Some(tx) = tx {
        port ^= 0x2112;
        key[..4].copy_from_slice(&COOKIE);
        key[4..].copy_from_slice(tx);
    }
    let ip = match (b[1], b.len()) {
        (1, 8) => {
            let mut a = [0u8; 4];
            for i in 0..4 {
                a[i] = b[4 + i] ^ key[i];
            }
            IpAddr::V4(Ipv4Addr::from(a))
        }
        (2, 20) => {
            let mut a = [0u8; 16];
            for i in 0..16 {
                a[i] = b[4 + i] ^ key[i];
            }
            IpAddr::V6(Ipv6Addr::from(a)).to_canonical()
        }
        _ => return Err(StunError::Malformed),
    };
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_known_answer() {
        // The standard check value of CRC-32/IEEE.
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    /// The layout of Go's `stun.Request` (header, SOFTWARE, FINGERPRINT
    /// last); the e2e test shows derper accepts it.
    #[test]
    fn request_matches_tailscales_layout() {
        let tx = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        let r = request(tx);
        assert_eq!(r.len(), 20 + 12 + 8);
        assert_eq!(&r[..8], &[0, 1, 0, 20, 0x21, 0x12, 0xa4, 0x42]);
        assert_eq!(&r[8..20], &tx);
        assert_eq!(&r[20..32], b"\x80\x22\x00\x08tailnode");
        assert_eq!(&r[32..36], &[0x80, 0x28, 0, 4]);
        let fp = crc32(&r[..32]) ^ 0x5354_554e;
        assert_eq!(&r[36..], &fp.to_be_bytes());
        assert!(is_stun(&r));
    }

    /// A response built as RFC 5389 §15.2 (and Go's `stun.Response`) does.
    fn response(tx: [u8; 12], a: SocketAddr) -> Vec<u8> {
        let (fam, ip): (u8, Vec<u8>) = match a.ip() {
            IpAddr::V4(v) => (1, v.octets().to_vec()),
            IpAddr::V6(v) => (2, v.octets().to_vec()),
        };
        let mut key = COOKIE.to_vec();
        key.extend_from_slice(&tx);
        let mut b = vec![0x01, 0x01];
        b.extend_from_slice(&((8 + ip.len()) as u16).to_be_bytes());
        b.extend_from_slice(&COOKIE);
        b.extend_from_slice(&tx);
        b.extend_from_slice(&ATTR_XOR_MAPPED.to_be_bytes());
        b.extend_from_slice(&((4 + ip.len()) as u16).to_be_bytes());
        b.extend_from_slice(&[0, fam]);
        b.extend_from_slice(&(a.port() ^ 0x2112).to_be_bytes());
        b.extend(ip.iter().zip(key.iter()).map(|(x, k)| x ^ k));
        b
    }

    #[test]
    fn xor_mapped_address_v4_and_v6() {
        let tx = [7; 12];
        for a in ["203.0.113.5:41641", "[2001:db8::5]:3478"] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(parse_response(&response(tx, a)), Ok((tx, a)));
        }
        // A known answer: 192.0.2.1:32853 with the RFC 5769 style cookie XOR.
        let r = response([0; 12], "192.0.2.1:32853".parse().unwrap());
        assert_eq!(&r[24..32], &[0, 1, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43]);
    }

    #[test]
    fn bad_responses_are_errors_not_panics() {
        let tx = [7; 12];
        let good = response(tx, "203.0.113.5:41641".parse().unwrap());
        assert_eq!(parse_response(&good[..19]), Err(StunError::NotStun));
        let mut req = request(tx);
        assert_eq!(parse_response(&req), Err(StunError::NotSuccess));
        req[4] = 0;
        assert_eq!(parse_response(&req), Err(StunError::NotStun));
        let mut long = good.clone();
        long[3] += 4; // length past the end
        assert_eq!(parse_response(&long), Err(StunError::Malformed));
        let mut fam = good.clone();
        fam[25] = 9;
        assert_eq!(parse_response(&fam), Err(StunError::Malformed));
        // WireGuard and disco are not STUN.
        assert!(!is_stun(&[
            1, 0, 0, 0, 9, 9, 9, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
        ]));
        assert!(!is_stun(b"TS\xf0\x9f\x92\xac0123456789012345678901234567"));
    }
}
