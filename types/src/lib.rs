//! Small value types that several meshbridge crates share, so that one
//! thing has one name and one text form everywhere: today the Ethernet
//! address, [`Mac`]. No I/O and no dependencies (serde behind the `serde`
//! feature).
#![deny(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::str::FromStr;

/// An Ethernet (EUI-48) address. Its text form is lower-case
/// `aa:bb:cc:dd:ee:ff` ([`Display`](fmt::Display)); [`FromStr`] also accepts
/// upper case and `-` separators. With the `serde` feature it is
/// (de)serialized as that text.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    /// The six bytes.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Group (multicast or broadcast) address: the I/G bit is set.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// An address one host can own: neither a group address nor all zeros.
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast() && !matches!(self.0, [0, 0, 0, 0, 0, 0])
    }
}

impl From<[u8; 6]> for Mac {
    fn from(b: [u8; 6]) -> Mac {
        Mac(b)
    }
}

impl From<Mac> for [u8; 6] {
    fn from(m: Mac) -> [u8; 6] {
        m.0
    }
}

impl AsRef<[u8]> for Mac {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq<[u8; 6]> for Mac {
    fn eq(&self, other: &[u8; 6]) -> bool {
        &self.0 == other
    }
}

impl PartialEq<Mac> for [u8; 6] {
    fn eq(&self, other: &Mac) -> bool {
        self == &other.0
    }
}

/// The bytes, for wire code (`mac[0]`, `&mac[..]`).
impl std::ops::Deref for Mac {
    type Target = [u8; 6];
    fn deref(&self) -> &[u8; 6] {
        &self.0
    }
}

impl std::ops::DerefMut for Mac {
    fn deref_mut(&mut self) -> &mut [u8; 6] {
        &mut self.0
    }
}

impl TryFrom<&[u8]> for Mac {
    type Error = std::array::TryFromSliceError;
    fn try_from(b: &[u8]) -> Result<Mac, Self::Error> {
        <[u8; 6]>::try_from(b).map(Mac)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({self})")
    }
}

/// A string that is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseMacError;

impl fmt::Display for ParseMacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a MAC address (expected six hex bytes like aa:bb:cc:dd:ee:ff)")
    }
}

impl std::error::Error for ParseMacError {}

impl FromStr for Mac {
    type Err = ParseMacError;

    /// `aa:bb:cc:dd:ee:ff` or `AA-BB-CC-DD-EE-FF` (one separator throughout).
    fn from_str(s: &str) -> Result<Mac, ParseMacError> {
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut mac = [0u8; 6];
        let mut parts = s.split(sep);
        for byte in &mut mac {
            let part = parts.next().ok_or(ParseMacError)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ParseMacError);
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| ParseMacError)?;
        }
        match parts.next() {
            None => Ok(Mac(mac)),
            Some(_) => Err(ParseMacError),
        }
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_lower_case_colons() {
        let mac = Mac([0xaa, 0x0b, 0xcc, 0xdd, 0xee, 0xff]);
        assert_eq!(mac.to_string(), "aa:0b:cc:dd:ee:ff");
        assert_eq!("aa:0b:cc:dd:ee:ff".parse(), Ok(mac));
        assert_eq!("AA-0B-CC-DD-EE-FF".parse(), Ok(mac));
        assert_eq!(format!("{mac:?}"), "Mac(aa:0b:cc:dd:ee:ff)");
        for bad in [
            "",
            "aa:bb",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb:cc:dd:ee:f",
            "+a:bb:cc:dd:ee:ff",
            "aa:bb-cc:dd:ee:ff",
            "aabb.ccdd.eeff",
        ] {
            assert_eq!(bad.parse::<Mac>(), Err(ParseMacError), "{bad}");
        }
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_is_the_text_form() {
        let mac = Mac([0x02, 0x6d, 0x62, 0x01, 0x02, 0x03]);
        assert_eq!(
            serde_json::to_string(&mac).unwrap(),
            "\"02:6d:62:01:02:03\""
        );
        let back: Mac = serde_json::from_str("\"02-6D-62-01-02-03\"").unwrap();
        assert_eq!(back, mac);
        assert!(serde_json::from_str::<Mac>("\"02:6d\"").is_err());
        assert!(serde_json::from_str::<Mac>("[2,109,98,1,2,3]").is_err());
    }

    #[test]
    fn group_bit() {
        assert!(Mac::BROADCAST.is_multicast());
        assert!(Mac([0x01, 0, 0x5e, 0, 0, 0xfb]).is_multicast());
        assert!(!Mac([0x02, 0, 0, 0, 0, 1]).is_multicast());
        assert!(Mac([0x02, 0, 0, 0, 0, 1]).is_unicast());
        assert!(!Mac::BROADCAST.is_unicast());
        assert!(!Mac([0x01, 0, 0x5e, 0, 0, 0xfb]).is_unicast());
        assert!(!Mac([0; 6]).is_unicast());
    }
}
