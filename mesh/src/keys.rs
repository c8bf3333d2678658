//! Curve25519 keys in the base64 form used by `wg genkey` / `wg pubkey`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use boringtun::x25519;
use std::fmt;
use std::str::FromStr;

/// A key did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Not valid base64.
    #[error(
        "not a base64 WireGuard key (expected 44 characters of base64, as `wg genkey` prints)"
    )]
    Base64,
    /// Valid base64, but not 32 bytes.
    #[error("a WireGuard key is 32 bytes, this one decodes to {0} bytes")]
    Length(usize),
}

fn decode32(s: &str) -> Result<[u8; 32], KeyError> {
    let bytes = STANDARD.decode(s.trim()).map_err(|_| KeyError::Base64)?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| KeyError::Length(bytes.len()))
}

/// A private key. Its `Debug` output never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey([u8; 32]);

impl PrivateKey {
    /// A new random key, clamped the way `wg genkey` clamps it.
    pub fn generate() -> Self {
        let mut bytes: [u8; 32] = rand::random();
        bytes[0] &= 248;
        bytes[31] = (bytes[31] & 127) | 64;
        PrivateKey(bytes)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The public key that belongs to this private key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519::PublicKey::from(&self.secret()).to_bytes())
    }

    /// The key as an x25519 secret for the noise protocol.
    pub fn secret(&self) -> x25519::StaticSecret {
        x25519::StaticSecret::from(self.0)
    }

    /// Base64, as `wg genkey` prints it. Handle with care: this is the secret.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// A key from 32 raw bytes, clamped the way `wg genkey` clamps: fixed
    /// keys for simulations and fuzz targets, so a run reproduces.
    pub fn from_bytes(mut bytes: [u8; 32]) -> Self {
        bytes[0] &= 248;
        bytes[31] = (bytes[31] & 127) | 64;
        PrivateKey(bytes)
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

impl FromStr for PrivateKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode32(s).map(PrivateKey)
    }
}

/// A public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode32(s).map(PublicKey)
    }
}

/// A preshared key (`PresharedKey =` in wg-quick). `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct PresharedKey(pub [u8; 32]);

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

impl FromStr for PresharedKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode32(s).map(PresharedKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7748 §6.1 test vector (Alice), in base64.
    #[test]
    fn public_key_matches_rfc7748_vector() {
        let alice_priv = [
            0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1, 0x72, 0x51, 0xb2,
            0x66, 0x45, 0xdf, 0x4c, 0x2f, 0x87, 0xeb, 0xc0, 0x99, 0x2a, 0xb1, 0x77, 0xfb, 0xa5,
            0x1d, 0xb9, 0x2c, 0x2a,
        ];
        let alice_pub = [
            0x85, 0x20, 0xf0, 0x09, 0x89, 0x30, 0xa7, 0x54, 0x74, 0x8b, 0x7d, 0xdc, 0xb4, 0x3e,
            0xf7, 0x5a, 0x0d, 0xbf, 0x3a, 0x0d, 0x26, 0x38, 0x1a, 0xf4, 0xeb, 0xa4, 0xa9, 0x8e,
            0xaa, 0x9b, 0x4e, 0x6a,
        ];
        let k: PrivateKey = STANDARD.encode(alice_priv).parse().unwrap();
        assert_eq!(k.public_key().0, alice_pub);
    }

    #[test]
    fn generated_keys_are_clamped_and_round_trip() {
        let k = PrivateKey::generate();
        let b = k.as_bytes();
        assert_eq!(b[0] & 7, 0);
        assert_eq!(b[31] & 128, 0);
        assert_eq!(b[31] & 64, 64);
        let s = k.to_base64();
        assert_eq!(s.len(), 44);
        let back: PrivateKey = s.parse().unwrap();
        assert_eq!(back, k);
        assert!(!format!("{k:?}").contains(&s));
    }

    #[test]
    fn bad_keys_are_rejected_with_reason() {
        assert_eq!("not base64!".parse::<PublicKey>(), Err(KeyError::Base64));
        assert_eq!("AAAA".parse::<PublicKey>(), Err(KeyError::Length(3)));
    }
}
