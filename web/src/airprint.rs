//! AirPrint profiles: a `.mobileconfig` (an Apple configuration profile,
//! a property list) with one `com.apple.airprint` payload, so an iPhone or
//! a Mac that cannot see the printer over mDNS (on the mesh through the
//! WireGuard app, say) gets it in its print dialog anyway. Served by
//! `GET /api/discovery/airprint.mobileconfig?service=<instance name>`.
//!
//! The printer's name and resource path come from the wire (a device's
//! mDNS, or another box): every string is XML-escaped, and characters XML
//! 1.0 cannot carry at all are dropped.

use crate::proto::ServiceInfo;

/// Escape text for an XML element.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Not allowed in XML 1.0 at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            '\u{fffe}' | '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

/// A stable UUID-shaped identifier from `seed` (FNV-1a, twice): the same
/// printer gives the same profile, so installing it again replaces it.
fn uuid_of(seed: &str) -> String {
    let fnv = |basis: u64| {
        seed.bytes().fold(basis, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    let (a, b) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4));
    let hex = format!("{a:016X}{b:016X}");
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// The profile for a printer, or `None` if the service is not an IPP
/// printer with an IPv4 address.
pub fn mobileconfig(s: &ServiceInfo) -> Option<String> {
    let tls = match s.kind.as_str() {
        "_ipp._tcp" => false,
        "_ipps._tcp" => true,
        _ => return None,
    };
    let addr: std::net::Ipv4Addr = s.addr.as_deref()?.parse().ok()?;
    let rp = s.resource_path.as_deref().unwrap_or("ipp/print");
    let rp = rp.trim_start_matches('/');
    let id = uuid_of(&format!("{}|{addr}|{}|{rp}", s.instance, s.port));
    let outer = uuid_of(&format!("profile|{id}"));
    let name = xml_escape(&s.instance);
    Some(format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>PayloadContent</key>
  <array>
    <dict>
      <key>AirPrint</key>
      <array>
        <dict>
          <key>IPAddress</key>
          <string>{addr}</string>
          <key>ResourcePath</key>
          <string>{rp}</string>
          <key>Port</key>
          <integer>{port}</integer>
          <key>ForceTLS</key>
          <{tls}/>
        </dict>
      </array>
      <key>PayloadDisplayName</key>
      <string>AirPrint: {name}</string>
      <key>PayloadIdentifier</key>
      <string>meshbridge.airprint.{id}</string>
      <key>PayloadType</key>
      <string>com.apple.airprint</string>
      <key>PayloadUUID</key>
      <string>{id}</string>
      <key>PayloadVersion</key>
      <integer>1</integer>
    </dict>
  </array>
  <key>PayloadDescription</key>
  <string>Adds the printer {name} at {addr}, reached through meshbridge.</string>
  <key>PayloadDisplayName</key>
  <string>Printer {name}</string>
  <key>PayloadIdentifier</key>
  <string>meshbridge.profile.{outer}</string>
  <key>PayloadType</key>
  <string>Configuration</string>
  <key>PayloadUUID</key>
  <string>{outer}</string>
  <key>PayloadVersion</key>
  <integer>1</integer>
</dict>
</plist>
"#,
        rp = xml_escape(rp),
        port = s.port,
        tls = if tls { "true" } else { "false" },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printer(name: &str, rp: Option<&str>) -> ServiceInfo {
        ServiceInfo {
            instance: name.into(),
            kind: "_ipp._tcp".into(),
            host: "printer.local".into(),
            port: 631,
            device: None,
            exposed: true,
            addr: Some("10.77.1.20".into()),
            resource_path: rp.map(str::to_string),
            uri: None,
            site: None,
        }
    }

    #[test]
    fn a_printer_gets_an_airprint_payload() {
        let p = mobileconfig(&printer("Office", Some("ipp/print"))).unwrap();
        assert!(p.contains("<string>com.apple.airprint</string>"));
        assert!(p.contains("<key>IPAddress</key>\n          <string>10.77.1.20</string>"));
        assert!(p.contains("<string>ipp/print</string>"));
        assert!(p.contains("<integer>631</integer>"));
        assert!(p.contains("<false/>"));
        // Stable identifiers: the same printer replaces its profile.
        assert_eq!(
            p,
            mobileconfig(&printer("Office", Some("ipp/print"))).unwrap()
        );
        assert_ne!(
            p,
            mobileconfig(&printer("Other", Some("ipp/print"))).unwrap()
        );
        // Not a printer, or no address: no profile.
        let mut cast = printer("TV", None);
        cast.kind = "_googlecast._tcp".into();
        assert!(mobileconfig(&cast).is_none());
        let mut far = printer("Office", None);
        far.addr = None;
        assert!(mobileconfig(&far).is_none());
    }

    #[test]
    fn hostile_names_and_paths_are_escaped() {
        let p = mobileconfig(&printer(
            "</string><key>x</key>&\u{1}\"'",
            Some("/ipp/<print>&"),
        ))
        .unwrap();
        assert!(!p.contains("</string><key>x"));
        assert!(p.contains("&lt;/string&gt;&lt;key&gt;x&lt;/key&gt;&amp;&quot;&apos;"));
        assert!(p.contains("<string>ipp/&lt;print&gt;&amp;</string>"));
        assert!(!p.contains('\u{1}'));
        // Still one well-formed plist: every element opened is closed.
        assert_eq!(
            p.matches("<string>").count(),
            p.matches("</string>").count()
        );
        assert_eq!(p.matches("<dict>").count(), p.matches("</dict>").count());
    }
}
