//! The wg-quick config handed to a new peer, and its QR code (SVG for the
//! page, text blocks for the terminal) as the WireGuard mobile apps scan it.

use qrcode::{EcLevel, QrCode};

/// What goes into a client's config.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The client's private key (base64); never stored on the box.
    pub private_key: String,
    /// The client's address with prefix (`10.77.0.2/32`).
    pub address: String,
    /// The box's DNS server and the search domain.
    pub dns: Option<(String, String)>,
    /// The box's public key.
    pub server_public_key: String,
    /// Optional preshared key.
    pub preshared_key: Option<String>,
    /// `host:port` of the box.
    pub endpoint: String,
    /// What the client sends to the box.
    pub allowed_ips: Vec<String>,
    /// Keepalive (NAT on the client side).
    pub keepalive: u16,
    /// MTU of the tunnel.
    pub mtu: u16,
}

/// The wg-quick text.
pub fn render(c: &ClientConfig) -> String {
    let mut s = String::from("[Interface]\n");
    s += &format!("PrivateKey = {}\n", c.private_key);
    s += &format!("Address = {}\n", c.address);
    if let Some((server, domain)) = &c.dns {
        s += &format!("DNS = {server}, {domain}\n");
    }
    s += &format!("MTU = {}\n", c.mtu);
    s += "\n[Peer]\n";
    s += &format!("PublicKey = {}\n", c.server_public_key);
    if let Some(psk) = &c.preshared_key {
        s += &format!("PresharedKey = {psk}\n");
    }
    s += &format!("Endpoint = {}\n", c.endpoint);
    s += &format!("AllowedIPs = {}\n", c.allowed_ips.join(", "));
    s += &format!("PersistentKeepalive = {}\n", c.keepalive);
    s
}

fn code(text: &str) -> Result<QrCode, qrcode::types::QrError> {
    QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
}

/// The QR code as an SVG document (dark on white, with a quiet zone).
pub fn qr_svg(text: &str) -> Option<String> {
    let c = code(text).ok()?;
    Some(
        c.render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(280, 280)
            .quiet_zone(true)
            .build(),
    )
}

/// The QR code for a terminal: two rows per character, light on dark
/// inverted so it scans on both dark and light terminals.
pub fn qr_terminal(text: &str) -> Option<String> {
    let c = code(text).ok()?;
    Some(
        c.render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ClientConfig {
        ClientConfig {
            private_key: "cFe1e0CnLkxwFdzWp/VyJVD9fJK0Ah0ZUZ3t8SSL/mI=".into(),
            address: "10.77.0.2/32".into(),
            dns: Some(("10.77.0.1".into(), "mesh".into())),
            server_public_key: "Ct5s8lFmB9gHLNkzfPI7gQvS+lYXq/l6Mfp0m1e0Km8=".into(),
            preshared_key: None,
            endpoint: "192.0.2.10:51820".into(),
            allowed_ips: vec!["10.77.0.0/24".into(), "10.77.1.0/24".into()],
            keepalive: 25,
            mtu: 1420,
        }
    }

    #[test]
    fn config_has_dns_with_search_domain_and_routes() {
        let t = render(&sample());
        assert!(t.contains("DNS = 10.77.0.1, mesh\n"));
        assert!(t.contains("AllowedIPs = 10.77.0.0/24, 10.77.1.0/24\n"));
        assert!(t.starts_with("[Interface]\nPrivateKey = cFe1"));
        assert!(!t.contains("PresharedKey"));
    }

    #[test]
    fn qr_renders_for_a_full_config() {
        let mut c = sample();
        c.preshared_key = Some("E3r8uqQfJz3jLNcCRvXEHcOJ1WGuYfN4yVZC2Ba5hl0=".into());
        let svg = qr_svg(&render(&c)).unwrap();
        assert!(svg.starts_with("<?xml") && svg.contains("<svg"));
        let term = qr_terminal(&render(&c)).unwrap();
        assert!(term.lines().count() > 20);
    }
}
