//! `[wifi]`: the box's Wi-Fi access point, a port of its bridge.

use super::values::{breaks_lines, ifname};
use super::{bad, raw, ConfigError};

/// How clients authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WifiSecurity {
    /// WPA2-PSK only (oldest clients).
    Wpa2,
    /// WPA2-PSK and WPA3-SAE on one network (transition mode).
    Wpa2Wpa3,
    /// WPA3-SAE only.
    Wpa3,
}

impl WifiSecurity {
    /// The word in the config file.
    pub fn word(self) -> &'static str {
        match self {
            WifiSecurity::Wpa2 => "wpa2",
            WifiSecurity::Wpa2Wpa3 => "wpa2-wpa3",
            WifiSecurity::Wpa3 => "wpa3",
        }
    }
}

/// The passphrase: `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Passphrase(pub String);

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `[wifi]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wifi {
    /// Run the access point (false: the section is kept, hostapd is not run).
    pub enabled: bool,
    /// The AP's interface (`wlan0`; on OpenWrt the radio, `radio0`).
    pub interface: String,
    /// The network name, 1 to 32 bytes.
    pub ssid: String,
    /// 8 to 63 printable ASCII characters.
    pub passphrase: Passphrase,
    /// WPA2, WPA3 or both.
    pub security: WifiSecurity,
    /// ISO 3166 country, upper case (the radio's rules: channels, power).
    pub country: String,
    /// The channel (followed from the uplink station when it shares the radio).
    pub channel: u16,
}

/// Channels an access point may use: 2.4 GHz 1 to 13, and the 20 MHz
/// channels of 5 GHz (52 to 144 need radar detection: hostapd waits a
/// minute before it sends beacons there).
pub fn channel_ok(c: u16) -> bool {
    (1..=13).contains(&c)
        || matches!(c, 36..=64 | 100..=144 if c.is_multiple_of(4))
        || matches!(c, 149..=177 if c % 4 == 1)
}

/// The band's frequency of a channel, in MHz.
pub fn channel_mhz(c: u16) -> u32 {
    match c {
        14 => 2484,
        1..=13 => 2407 + 5 * u32::from(c),
        _ => 5000 + 5 * u32::from(c),
    }
}

/// The channel of a frequency (from `iw`), if it is one an AP may use.
pub fn mhz_channel(mhz: u32) -> Option<u16> {
    let c = match mhz {
        2412..=2472 => (mhz - 2407) / 5,
        5180..=5885 => (mhz - 5000) / 5,
        _ => return None,
    };
    let c = u16::try_from(c).ok()?;
    (channel_ok(c) && channel_mhz(c) == mhz).then_some(c)
}

/// Validate `[wifi]`; `taken` are the names the bridge, its ports, the TAP,
/// the TUN and the uplink already use.
pub(super) fn validate_wifi(
    w: Option<&raw::Wifi>,
    taken: &[(&str, String)],
) -> Result<Option<Wifi>, ConfigError> {
    let Some(w) = w else { return Ok(None) };
    let interface = ifname(
        "wifi.interface",
        w.interface.as_deref().ok_or_else(|| {
            bad(
                "wifi.interface",
                "missing: name the Wi-Fi interface the access point runs on, like \"wlan0\"",
            )
        })?,
    )?;
    if let Some((k, _)) = taken.iter().find(|(_, n)| *n == interface) {
        return Err(bad(
            "wifi.interface",
            format!("{interface:?} is already {k}: the access point needs its own interface (hostapd adds it to the bridge; on a Pi whose Wi-Fi is the uplink, name a new one like \"uap0\" and meshbridge creates it on the same radio)"),
        ));
    }
    let ssid = w
        .ssid
        .as_deref()
        .ok_or_else(|| bad("wifi.ssid", "missing: the network name clients see"))?;
    if ssid.is_empty() || ssid.len() > 32 {
        return Err(bad(
            "wifi.ssid",
            format!(
                "the network name must be 1 to 32 bytes (this one is {})",
                ssid.len()
            ),
        ));
    }
    if ssid.chars().any(breaks_lines) {
        return Err(bad(
            "wifi.ssid",
            "the network name may not hold line breaks or control characters",
        ));
    }
    // Never quoted back: the message says what is wrong, not what was typed.
    let passphrase = w
        .passphrase
        .as_deref()
        .ok_or_else(|| bad("wifi.passphrase", "missing: 8 to 63 characters"))?;
    let n = passphrase.chars().count();
    if !(8..=63).contains(&n) {
        return Err(bad(
            "wifi.passphrase",
            format!("must be 8 to 63 characters (it has {n})"),
        ));
    }
    if !passphrase.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(bad(
            "wifi.passphrase",
            "must be printable ASCII (letters, digits, spaces and punctuation; no accents or emoji), as WPA requires",
        ));
    }
    let country = w
        .country
        .as_deref()
        .ok_or_else(|| bad("wifi.country", "missing: the two-letter country code the box is used in, like \"DE\" or \"US\" (it sets the allowed channels and power)"))?;
    if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(bad(
            "wifi.country",
            format!("{country:?} is not a two-letter country code like \"DE\" or \"US\""),
        ));
    }
    let channel = w.channel.unwrap_or(6);
    if !channel_ok(channel) {
        return Err(bad(
            "wifi.channel",
            format!("{channel} is not a Wi-Fi channel: 1 to 13 (2.4 GHz), or 36 to 64, 100 to 144 (in steps of 4), 149 to 177 (5 GHz)"),
        ));
    }
    let security = match w.security.as_deref().unwrap_or("wpa2-wpa3") {
        "wpa2" => WifiSecurity::Wpa2,
        "wpa2-wpa3" => WifiSecurity::Wpa2Wpa3,
        "wpa3" => WifiSecurity::Wpa3,
        s => {
            return Err(bad(
                "wifi.security",
                format!("{s:?} is not \"wpa2\", \"wpa2-wpa3\" or \"wpa3\""),
            ))
        }
    };
    Ok(Some(Wifi {
        enabled: w.enabled.unwrap_or(true),
        interface,
        ssid: ssid.to_string(),
        passphrase: Passphrase(passphrase.to_string()),
        security,
        country: country.to_ascii_uppercase(),
        channel,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample_text;
    use super::super::Config;
    use super::*;

    const WIFI: &str = "[wifi]\ninterface = \"wlan0\"\nssid = \"Home mesh\"\npassphrase = \"correct horse\"\ncountry = \"de\"\nchannel = 11\n";

    fn with(wifi: &str) -> Result<Config, ConfigError> {
        Config::from_toml(&format!("{}\n{wifi}", sample_text()), None)
    }

    #[test]
    fn wifi_section_is_validated() {
        let c = with(WIFI).unwrap();
        let w = c.wifi.unwrap();
        assert_eq!(w.country, "DE");
        assert_eq!(w.channel, 11);
        assert_eq!(w.security, WifiSecurity::Wpa2Wpa3);
        assert!(w.enabled);
        assert!(
            !format!("{w:?}").contains("correct horse"),
            "Debug hides it"
        );
        assert!(with("").unwrap().wifi.is_none());
        let default_channel = with(&WIFI.replace("channel = 11\n", "")).unwrap();
        assert_eq!(default_channel.wifi.unwrap().channel, 6);

        for (from, to, key) in [
            ("\"Home mesh\"", "\"\"", "wifi.ssid"),
            (
                "\"Home mesh\"",
                "\"123456789012345678901234567890123\"",
                "wifi.ssid",
            ),
            ("\"Home mesh\"", "\"a\\nb\"", "wifi.ssid"),
            ("\"correct horse\"", "\"short\"", "wifi.passphrase"),
            (
                "\"correct horse\"",
                &format!("{:?}", "x".repeat(64)),
                "wifi.passphrase",
            ),
            (
                "\"correct horse\"",
                "\"caf\u{e9} au lait\"",
                "wifi.passphrase",
            ),
            (
                "\"correct horse\"",
                "\"new\\nline pass\"",
                "wifi.passphrase",
            ),
            ("\"de\"", "\"DEU\"", "wifi.country"),
            ("\"de\"", "\"D1\"", "wifi.country"),
            ("channel = 11", "channel = 14", "wifi.channel"),
            ("channel = 11", "channel = 0", "wifi.channel"),
            ("channel = 11", "channel = 38", "wifi.channel"),
            ("channel = 11", "channel = 181", "wifi.channel"),
            ("\"wlan0\"", "\"eth1\"", "wifi.interface"),
            ("\"wlan0\"", "\"br-mesh\"", "wifi.interface"),
            ("\"wlan0\"", "\"wlan 0\"", "wifi.interface"),
            ("channel = 11", "security = \"wep\"", "wifi.security"),
            ("interface = \"wlan0\"\n", "", "wifi.interface"),
            ("country = \"de\"\n", "", "wifi.country"),
        ] {
            let text = WIFI.replace(from, to);
            assert_ne!(text, WIFI, "{from}");
            let e = with(&text).unwrap_err();
            assert_eq!(e.key, key, "{to}: {e}");
            assert!(!e.problem.contains("correct horse"), "{e}");
        }
        let e = with(&WIFI.replace("\"correct horse\"", "\"seven77\"")).unwrap_err();
        assert!(!e.to_string().contains("seven77"), "never quoted: {e}");
        // Every 2.4 and 5 GHz channel an AP may use, and the right band.
        for c in [1, 6, 13, 36, 48, 64, 100, 144, 149, 165, 177] {
            let w = with(&WIFI.replace("channel = 11", &format!("channel = {c}")));
            assert_eq!(w.unwrap().wifi.unwrap().channel, c);
            assert_eq!(mhz_channel(channel_mhz(c)), Some(c));
        }
        assert_eq!(channel_mhz(6), 2437);
        assert_eq!(channel_mhz(36), 5180);
        assert_eq!(mhz_channel(2484), None);
        // The uplink cannot be the AP's interface.
        let e = with(&format!("[routing]\nuplink = \"wlan0\"\n{WIFI}")).unwrap_err();
        assert_eq!(e.key, "wifi.interface", "{e}");
        let off = with(&format!("{WIFI}enabled = false\nsecurity = \"wpa2\"\n")).unwrap();
        let w = off.wifi.unwrap();
        assert!(!w.enabled);
        assert_eq!(w.security, WifiSecurity::Wpa2);
    }
}
