//! The keys of a tailnet node and their text forms.
//!
//! A node has three Curve25519 key pairs (facts: `types/key` in
//! tailscale.com, files `machine.go`, `node.go`, `disco.go`):
//!
//! * the **machine key** identifies the device to the control server; it is
//!   the Noise static key of the ts2021 transport (`mkey:<hex>` public);
//! * the **node key** is the WireGuard key the peers see (`nodekey:<hex>`);
//! * the **disco key** signs the disco (path discovery) messages
//!   (`discokey:<hex>`).
//!
//! Private machine and node keys are written `privkey:<hex>` by Tailscale.
//! Tailscale never stores a disco key (a fresh one per start); this crate
//! gives it a text form of its own, `discopriv:<hex>`, so the daemon can keep
//! it if it wants to. Hex is lowercase on output, either case on input.
//!
//! The private key types never print their bytes (`Debug` shows the public
//! half) and wipe them on drop.

use std::fmt;

use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use x25519_dalek::{PublicKey, StaticSecret};

/// A text form of a key did not parse. The message never echoes the input
/// (it may be a private key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyParseError {
    /// The text does not start with the prefix of this key type.
    #[error("key text does not start with {expected:?}")]
    WrongPrefix {
        /// The prefix this key type needs.
        expected: &'static str,
    },
    /// The part after the prefix is not 64 hex digits.
    #[error("key text after {prefix:?} must be 64 hex digits")]
    BadHex {
        /// The prefix that matched.
        prefix: &'static str,
    },
}

fn parse_hex(text: &str, prefix: &'static str) -> Result<[u8; 32], KeyParseError> {
    let rest = text
        .strip_prefix(prefix)
        .ok_or(KeyParseError::WrongPrefix { expected: prefix })?;
    let mut out = [0u8; 32];
    if rest.len() != 64 {
        return Err(KeyParseError::BadHex { prefix });
    }
    hex::decode_to_slice(rest, &mut out).map_err(|_| KeyParseError::BadHex { prefix })?;
    Ok(out)
}

macro_rules! public_key {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 32]);

        impl $name {
            /// The text prefix of this key type.
            pub const PREFIX: &'static str = $prefix;

            /// The key from its 32 raw bytes.
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// The 32 raw bytes.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Whether this is the all-zero key (Go's "zero value": absent).
            pub fn is_zero(&self) -> bool {
                self.0 == [0u8; 32]
            }

            /// Parses the text form (prefix and 64 hex digits).
            pub fn parse(text: &str) -> Result<Self, KeyParseError> {
                parse_hex(text, $prefix).map(Self)
            }

            /// A short form for logs: the prefix and the first 8 hex digits.
            pub fn short(&self) -> String {
                format!("{}{}", $prefix, hex::encode(&self.0[..4]))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str($prefix)?;
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = KeyParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

public_key!(
    /// The public machine key (`mkey:`): the Noise static key of a client or
    /// of the control server.
    MachinePublic,
    "mkey:"
);
public_key!(
    /// The public node key (`nodekey:`): the node's WireGuard public key.
    NodePublic,
    "nodekey:"
);
public_key!(
    /// The public disco key (`discokey:`).
    DiscoPublic,
    "discokey:"
);
public_key!(
    /// The control server's node-key challenge (`chalpub:`), sent in the
    /// early payload of a ts2021 connection.
    ChallengePublic,
    "chalpub:"
);

macro_rules! private_key {
    ($(#[$doc:meta])* $name:ident, $public:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(StaticSecret);

        impl $name {
            /// The text prefix of this key type.
            pub const PREFIX: &'static str = $prefix;

            /// A new random key.
            pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
                let mut bytes = [0u8; 32];
                rng.fill_bytes(&mut bytes);
                let key = Self::from_bytes(bytes);
                zeroize::Zeroize::zeroize(&mut bytes);
                key
            }

            /// The key from 32 raw bytes (clamped by X25519 when used).
            pub fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(StaticSecret::from(bytes))
            }

            /// The 32 raw bytes. Handle with care: this is the secret.
            pub fn to_bytes(&self) -> [u8; 32] {
                self.0.to_bytes()
            }

            /// The public half.
            pub fn public(&self) -> $public {
                $public::from_bytes(PublicKey::from(&self.0).to_bytes())
            }

            /// Parses the text form.
            pub fn parse(text: &str) -> Result<Self, KeyParseError> {
                let mut bytes = parse_hex(text, $prefix)?;
                let key = Self::from_bytes(bytes);
                zeroize::Zeroize::zeroize(&mut bytes);
                Ok(key)
            }

            /// The text form (prefix and hex). This is the secret: never log it.
            pub fn to_text(&self) -> String {
                let mut bytes = self.0.to_bytes();
                let text = format!("{}{}", $prefix, hex::encode(bytes));
                zeroize::Zeroize::zeroize(&mut bytes);
                text
            }

            // Used for machine keys now; node and disco keys will use it
            // for WireGuard and disco.
            #[allow(dead_code)]
            pub(crate) fn secret(&self) -> &StaticSecret {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(public {})", stringify!($name), self.public())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_text())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

private_key!(
    /// The private machine key (`privkey:`).
    MachinePrivate,
    MachinePublic,
    "privkey:"
);
private_key!(
    /// The private node key (`privkey:`): the WireGuard private key.
    NodePrivate,
    NodePublic,
    "privkey:"
);
private_key!(
    /// The private disco key (`discopriv:`, this crate's own form).
    DiscoPrivate,
    DiscoPublic,
    "discopriv:"
);

/// The keys a node keeps across restarts, stored by the daemon as one file
/// (mode 0600) in its state directory. Same keys, same node: the control
/// server finds the node again by its machine key and node key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeKeys {
    /// The machine key.
    pub machine_key: MachinePrivate,
    /// The node key.
    pub node_key: NodePrivate,
    /// The disco key.
    pub disco_key: DiscoPrivate,
    /// The control URL these keys were registered with, once registration
    /// succeeded (`None`: never registered). A different URL means a new
    /// registration (with the auth key).
    #[serde(default)]
    pub registered_with: Option<String>,
}

/// The key file did not parse.
#[derive(Debug, thiserror::Error)]
#[error("tailnet key file is not valid: {0}")]
pub struct KeyFileError(#[from] serde_json::Error);

impl NodeKeys {
    /// Three new random keys, not registered anywhere.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self {
            machine_key: MachinePrivate::generate(rng),
            node_key: NodePrivate::generate(rng),
            disco_key: DiscoPrivate::generate(rng),
            registered_with: None,
        }
    }

    /// The file contents (JSON). Contains private keys.
    pub fn to_file(&self) -> String {
        // Serializing these plain strings cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// Parses the file contents.
    pub fn from_file(text: &str) -> Result<Self, KeyFileError> {
        Ok(serde_json::from_str(text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn public_text_forms_round_trip_and_check_prefix() {
        let k = NodePublic::from_bytes([0xab; 32]);
        let text = k.to_string();
        assert_eq!(text, format!("nodekey:{}", "ab".repeat(32)));
        assert_eq!(NodePublic::parse(&text).unwrap(), k);
        assert_eq!(
            NodePublic::parse(&text.to_uppercase().replace("NODEKEY:", "nodekey:")).unwrap(),
            k
        );
        assert_eq!(
            MachinePublic::parse(&text),
            Err(KeyParseError::WrongPrefix { expected: "mkey:" })
        );
        assert_eq!(
            NodePublic::parse("nodekey:abcd"),
            Err(KeyParseError::BadHex { prefix: "nodekey:" })
        );
        assert!(NodePublic::parse(&format!("nodekey:{}", "zz".repeat(32))).is_err());
        // multi-byte characters must not panic on the length check
        assert!(NodePublic::parse(&format!("nodekey:{}", "é".repeat(32))).is_err());
        let d: DiscoPublic =
            serde_json::from_str(&format!("\"discokey:{}\"", "01".repeat(32))).unwrap();
        assert_eq!(d.as_bytes(), &[1u8; 32]);
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            format!("\"discokey:{}\"", "01".repeat(32))
        );
    }

    #[test]
    fn private_keys_round_trip_and_do_not_leak_in_debug() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let keys = NodeKeys::generate(&mut rng);
        let text = keys.to_file();
        let back = NodeKeys::from_file(&text).unwrap();
        assert_eq!(back.machine_key.public(), keys.machine_key.public());
        assert_eq!(back.node_key.public(), keys.node_key.public());
        assert_eq!(back.disco_key.public(), keys.disco_key.public());
        assert!(text.contains("\"privkey:"));
        assert!(text.contains("\"discopriv:"));
        let debug = format!("{keys:?}");
        let secret_hex = hex::encode(keys.node_key.to_bytes());
        assert!(!debug.contains(&secret_hex), "Debug printed a private key");
        assert!(debug.contains(&keys.node_key.public().to_string()));
        assert!(NodeKeys::from_file("{\"machine_key\": 3}").is_err());
    }

    #[test]
    fn public_half_matches_x25519() {
        // RFC 7748 section 6.1: Alice's private and public key.
        let private =
            hex::decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .unwrap();
        let public = MachinePrivate::from_bytes(private.try_into().unwrap()).public();
        assert_eq!(
            hex::encode(public.as_bytes()),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
    }
}
