//! The pure half of the Wi-Fi access point (`wifi.rs`): the hostapd
//! config meshbridge writes, what it reads back from `iw` and hostapd's
//! control interface, the OpenWrt `uci` commands, the restart backoff. No
//! I/O here, so all of it is unit tested.

use crate::config::{mhz_channel, Wifi, WifiSecurity};
use meshbridge_web::proto::WifiClient;
use std::fmt::Write as _;
use std::time::Duration;

/// hostapd's config for `w` on `channel`, adding the interface to `bridge`.
/// The SSID is written as hex (any byte is safe); the passphrase goes in as
/// is (validated: printable ASCII, which hostapd reads to the line's end).
pub fn hostapd_conf(w: &Wifi, bridge: &str, ctrl_dir: &str, channel: u16) -> String {
    let mut s = String::new();
    let hex: String = w.ssid.bytes().map(|b| format!("{b:02x}")).collect();
    let five = channel > 14;
    let _ = writeln!(
        s,
        "# Written by meshbridge from its [wifi] settings; changes here are overwritten."
    );
    let _ = writeln!(s, "interface={}", w.interface);
    let _ = writeln!(s, "bridge={bridge}");
    let _ = writeln!(s, "driver=nl80211");
    let _ = writeln!(s, "ctrl_interface={ctrl_dir}");
    let _ = writeln!(s, "ctrl_interface_group=0");
    let _ = writeln!(s, "ssid2={hex}");
    let _ = writeln!(s, "utf8_ssid=1");
    let _ = writeln!(s, "country_code={}", w.country);
    let _ = writeln!(s, "ieee80211d=1");
    let _ = writeln!(s, "hw_mode={}", if five { "a" } else { "g" });
    let _ = writeln!(s, "channel={channel}");
    let _ = writeln!(s, "ieee80211n=1");
    if five {
        let _ = writeln!(s, "ieee80211ac=1");
        let _ = writeln!(s, "ieee80211h=1");
    }
    let _ = writeln!(s, "wmm_enabled=1");
    let _ = writeln!(s, "auth_algs=1");
    let _ = writeln!(s, "wpa=2");
    let (mgmt, pmf) = match w.security {
        WifiSecurity::Wpa2 => ("WPA-PSK", 0),
        WifiSecurity::Wpa2Wpa3 => ("WPA-PSK SAE", 1),
        WifiSecurity::Wpa3 => ("SAE", 2),
    };
    let _ = writeln!(s, "wpa_key_mgmt={mgmt}");
    let _ = writeln!(s, "rsn_pairwise=CCMP");
    let _ = writeln!(s, "ieee80211w={pmf}");
    if w.security != WifiSecurity::Wpa2 {
        // SAE's hash-to-element and anti-clogging defaults are fine; the
        // passphrase serves both PSK and SAE.
        let _ = writeln!(s, "sae_require_mfp=1");
    }
    let _ = writeln!(s, "wpa_passphrase={}", w.passphrase.0);
    s
}

/// What `iw dev <if> info` says about an interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IwInfo {
    /// `managed` (a station), `AP`, ...
    pub iftype: String,
    /// The radio's index (`wiphy 0` is `phy0`).
    pub wiphy: Option<u32>,
    /// The channel it is on (a station: only while associated).
    pub channel: Option<u16>,
    /// Its MAC address.
    pub addr: Option<meshbridge_types::Mac>,
}

/// Parse `iw dev <if> info`.
pub fn parse_iw_info(text: &str) -> IwInfo {
    let mut info = IwInfo::default();
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("type") => info.iftype = words.collect::<Vec<_>>().join(" "),
            Some("wiphy") => info.wiphy = words.next().and_then(|w| w.parse().ok()),
            Some("addr") => info.addr = words.next().and_then(|w| w.parse().ok()),
            Some("channel") => {
                // "channel 6 (2437 MHz), width: 20 MHz, center1: 2437 MHz"
                let mhz = line
                    .split_once('(')
                    .and_then(|(_, r)| r.split_whitespace().next())
                    .and_then(|m| m.parse::<u32>().ok());
                info.channel = mhz.and_then(mhz_channel);
            }
            _ => {}
        }
    }
    info
}

/// The channel of `iw dev <sta> link` ("freq: 2437"); `None` when "Not connected.".
pub fn parse_iw_link(text: &str) -> Option<u16> {
    if !text.trim_start().starts_with("Connected to") {
        return None;
    }
    text.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("freq:"))
        .and_then(|f| f.split_whitespace().next())
        .and_then(|f| f.split('.').next())
        .and_then(|f| f.parse().ok())
        .and_then(mhz_channel)
}

/// One station from hostapd's `STA-FIRST`/`STA-NEXT` (or `all_sta`'s
/// blocks): its MAC on the first line, then `key=value` lines.
pub fn parse_sta(text: &str) -> Option<WifiClient> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mac = lines.next()?;
    let mac: meshbridge_types::Mac = mac.parse().ok()?;
    let mut c = WifiClient {
        mac: mac.to_string(),
        ..Default::default()
    };
    for l in lines {
        let Some((k, v)) = l.split_once('=') else {
            continue;
        };
        match k {
            "flags" => c.authorized = v.contains("[AUTHORIZED]"),
            "signal" => c.signal_dbm = v.parse().ok(),
            "connected_time" => c.connected_s = v.parse().ok(),
            _ => {}
        }
    }
    Some(c)
}

/// Parse `hostapd_cli all_sta`: blocks that each start with a MAC line.
pub fn parse_all_sta(text: &str) -> Vec<WifiClient> {
    let mut out = Vec::new();
    let mut block = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.parse::<meshbridge_types::Mac>().is_ok() && !block.is_empty() {
            out.extend(parse_sta(&block));
            block.clear();
        }
        block.push_str(t);
        block.push('\n');
    }
    out.extend(parse_sta(&block));
    out
}

/// Quote for a POSIX shell: `'...'`, with `'` as `'\''`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// On OpenWrt the router's own wireless config serves the AP: `uci`
/// commands that declare the box's bridge to netifd (a bridge device and an
/// interface `meshbridge` on it, no protocol: meshbridge keeps the address)
/// and a `wifi-iface` on radio `w.interface` in that network. Run with `sh`;
/// it holds the passphrase, so it is written 0600 and never logged.
pub fn openwrt_uci(w: &Wifi, bridge: &str) -> String {
    let radio = &w.interface;
    let enc = match w.security {
        WifiSecurity::Wpa2 => "psk2+ccmp",
        WifiSecurity::Wpa2Wpa3 => "sae-mixed",
        WifiSecurity::Wpa3 => "sae",
    };
    let mut s = String::new();
    let _ = writeln!(s, "# meshbridge [wifi] for OpenWrt: run with sh, as root.");
    let mut set = |k: &str, v: &str| {
        let _ = writeln!(s, "uci set {k}={}", sh_quote(v));
    };
    set("network.meshbridge_dev", "device");
    set("network.meshbridge_dev.type", "bridge");
    set("network.meshbridge_dev.name", bridge);
    set("network.meshbridge", "interface");
    set("network.meshbridge.proto", "none");
    set("network.meshbridge.device", bridge);
    set(&format!("wireless.{radio}.country"), &w.country);
    set(&format!("wireless.{radio}.channel"), &w.channel.to_string());
    set(&format!("wireless.{radio}.disabled"), "0");
    set("wireless.meshbridge", "wifi-iface");
    set("wireless.meshbridge.device", radio);
    set("wireless.meshbridge.mode", "ap");
    set("wireless.meshbridge.network", "meshbridge");
    set("wireless.meshbridge.ssid", &w.ssid);
    set("wireless.meshbridge.encryption", enc);
    set("wireless.meshbridge.key", &w.passphrase.0);
    set(
        "wireless.meshbridge.disabled",
        if w.enabled { "0" } else { "1" },
    );
    let _ = writeln!(s, "uci commit network");
    let _ = writeln!(s, "uci commit wireless");
    let _ = writeln!(s, "/etc/init.d/network reload");
    s
}

/// The MAC for an AP interface added to a station's radio: the station's
/// with the locally administered bit set and the next bit flipped, so the
/// two never share an address (hostapd refuses to start if they do).
pub fn ap_mac(sta: meshbridge_types::Mac) -> meshbridge_types::Mac {
    let mut m = sta.0;
    m[0] = (m[0] | 0x02) ^ 0x04;
    meshbridge_types::Mac(m)
}

/// Restart delays after hostapd stops: 1 s, doubling to a minute; a run
/// that lasted a minute starts the count again.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// hostapd stopped after running for `ran`: how long to wait.
    pub fn next(&mut self, ran: Duration) -> Duration {
        if ran >= Duration::from_secs(60) {
            self.failures = 0;
        }
        let d = Duration::from_secs(1u64 << self.failures.min(6)).min(Duration::from_secs(60));
        self.failures = self.failures.saturating_add(1);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Passphrase;

    fn wifi() -> Wifi {
        Wifi {
            enabled: true,
            interface: "wlan0".into(),
            ssid: "Café 'mesh'".into(),
            passphrase: Passphrase("s3cret pass".into()),
            security: WifiSecurity::Wpa2Wpa3,
            country: "DE".into(),
            channel: 6,
        }
    }

    #[test]
    fn hostapd_conf_bridges_the_interface_and_picks_band_and_security() {
        let c = hostapd_conf(&wifi(), "br-mesh", "/var/lib/meshbridge/wifi/ctrl", 11);
        for line in [
            "interface=wlan0",
            "bridge=br-mesh",
            "driver=nl80211",
            "ctrl_interface=/var/lib/meshbridge/wifi/ctrl",
            "ssid2=436166c3a920276d65736827",
            "country_code=DE",
            "hw_mode=g",
            "channel=11",
            "wpa=2",
            "wpa_key_mgmt=WPA-PSK SAE",
            "rsn_pairwise=CCMP",
            "ieee80211w=1",
            "wpa_passphrase=s3cret pass",
        ] {
            assert!(c.lines().any(|l| l == line), "{line} missing in:\n{c}");
        }
        let mut w = wifi();
        w.security = WifiSecurity::Wpa2;
        let c = hostapd_conf(&w, "br0", "/run/x", 36);
        assert!(c.contains("\nhw_mode=a\n") && c.contains("\nchannel=36\n"));
        assert!(c.contains("\nwpa_key_mgmt=WPA-PSK\n") && c.contains("\nieee80211w=0\n"));
        assert!(!c.contains("SAE"));
        w.security = WifiSecurity::Wpa3;
        let c = hostapd_conf(&w, "br0", "/run/x", 1);
        assert!(c.contains("\nwpa_key_mgmt=SAE\n") && c.contains("\nieee80211w=2\n"));
    }

    #[test]
    fn iw_output_gives_radio_type_and_channel() {
        let sta = "Interface wlan0\n\tifindex 5\n\twdev 0x1\n\taddr 02:00:00:00:00:00\n\ttype managed\n\twiphy 0\n\tchannel 11 (2462 MHz), width: 20 MHz (no HT), center1: 2462 MHz\n\ttxpower 20.00 dBm\n";
        assert_eq!(
            parse_iw_info(sta),
            IwInfo {
                iftype: "managed".into(),
                wiphy: Some(0),
                channel: Some(11),
                addr: Some(meshbridge_types::Mac([2, 0, 0, 0, 0, 0])),
            }
        );
        let idle = "Interface wlan0\n\tifindex 5\n\ttype managed\n\twiphy 2\n";
        let i = parse_iw_info(idle);
        assert_eq!((i.wiphy, i.channel), (Some(2), None));
        let ap = "Interface uap0\n\ttype AP\n\twiphy 0\n\tchannel 36 (5180 MHz), width: 80 MHz, center1: 5210 MHz\n";
        assert_eq!(parse_iw_info(ap).channel, Some(36));
        assert_eq!(parse_iw_info("garbage\n\0\u{1}"), IwInfo::default());

        let link = "Connected to 02:00:00:00:02:00 (on wlan0)\n\tSSID: uplink\n\tfreq: 2412.0\n\tRX: 1 bytes\n";
        assert_eq!(parse_iw_link(link), Some(1));
        let link = "Connected to 02:00:00:00:02:00 (on wlan0)\n\tSSID: uplink\n\tfreq: 5745\n";
        assert_eq!(parse_iw_link(link), Some(149));
        assert_eq!(parse_iw_link("Not connected.\n"), None);
    }

    #[test]
    fn hostapd_station_lists_are_parsed() {
        let all = "02:00:00:00:01:00\nflags=[AUTH][ASSOC][AUTHORIZED][SHORT_PREAMBLE]\naid=1\nsignal=-30\nconnected_time=12\n02:00:00:00:01:01\nflags=[AUTH][ASSOC]\nsignal=-71\n";
        let c = parse_all_sta(all);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].mac, "02:00:00:00:01:00");
        assert!(c[0].authorized);
        assert_eq!(c[0].signal_dbm, Some(-30));
        assert_eq!(c[0].connected_s, Some(12));
        assert!(!c[1].authorized);
        assert_eq!(c[1].connected_s, None);
        assert!(parse_all_sta("").is_empty());
        assert!(parse_all_sta("FAIL\n").is_empty());
        assert!(parse_sta("Selected interface 'wlan0'\n").is_none());
    }

    #[test]
    fn openwrt_uci_puts_a_wifi_iface_into_the_box_bridge() {
        let u = openwrt_uci(
            &Wifi {
                interface: "radio1".into(),
                ..wifi()
            },
            "br-mesh",
        );
        let expected = "\
# meshbridge [wifi] for OpenWrt: run with sh, as root.
uci set network.meshbridge_dev='device'
uci set network.meshbridge_dev.type='bridge'
uci set network.meshbridge_dev.name='br-mesh'
uci set network.meshbridge='interface'
uci set network.meshbridge.proto='none'
uci set network.meshbridge.device='br-mesh'
uci set wireless.radio1.country='DE'
uci set wireless.radio1.channel='6'
uci set wireless.radio1.disabled='0'
uci set wireless.meshbridge='wifi-iface'
uci set wireless.meshbridge.device='radio1'
uci set wireless.meshbridge.mode='ap'
uci set wireless.meshbridge.network='meshbridge'
uci set wireless.meshbridge.ssid='Café '\\''mesh'\\'''
uci set wireless.meshbridge.encryption='sae-mixed'
uci set wireless.meshbridge.key='s3cret pass'
uci set wireless.meshbridge.disabled='0'
uci commit network
uci commit wireless
/etc/init.d/network reload
";
        assert_eq!(u, expected);
        // The quoted SSID comes back whole from a real shell.
        let line = u.lines().find(|l| l.contains(".ssid=")).unwrap();
        let quoted = line.split_once('=').unwrap().1;
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {quoted}"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "Café 'mesh'");
    }

    #[test]
    fn the_ap_beside_a_station_gets_its_own_local_mac() {
        use meshbridge_types::Mac;
        for sta in [
            [0xb8, 0x27, 0xeb, 1, 2, 3],
            [2, 0, 0, 0, 0, 0],
            [6, 0, 0, 0, 0, 0],
        ] {
            let ap = ap_mac(Mac(sta));
            assert_ne!(ap.0, sta);
            assert_eq!(ap.0[0] & 0x03, 0x02, "local, unicast");
            assert_eq!(ap.0[1..], sta[1..]);
        }
    }

    #[test]
    fn backoff_doubles_to_a_minute_and_resets_after_a_good_run() {
        let mut b = Backoff::default();
        let short = Duration::from_secs(2);
        let d: Vec<u64> = (0..9).map(|_| b.next(short).as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.next(Duration::from_secs(600)), Duration::from_secs(1));
    }
}
