//! Reading a standard wg-quick file (`[Interface]` / `[Peer]`), so a user can
//! reuse a WireGuard config they already have.

use crate::keys::{KeyError, PresharedKey, PrivateKey, PublicKey};
use ipnet::IpNet;

/// What a wg-quick file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgQuick {
    /// `[Interface] PrivateKey`.
    pub private_key: PrivateKey,
    /// `ListenPort`.
    pub listen_port: Option<u16>,
    /// `Address` (any number, comma separated or repeated).
    pub addresses: Vec<IpNet>,
    /// `DNS` entries as written (addresses or search domains).
    pub dns: Vec<String>,
    /// `MTU`.
    pub mtu: Option<u16>,
    /// The `[Peer]` sections in order.
    pub peers: Vec<WgQuickPeer>,
    /// Keys we understood but do not act on (e.g. `PostUp`): the daemon logs them.
    pub ignored: Vec<String>,
}

/// One `[Peer]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgQuickPeer {
    /// `PublicKey`.
    pub public_key: PublicKey,
    /// `PresharedKey`.
    pub preshared_key: Option<PresharedKey>,
    /// `AllowedIPs`.
    pub allowed_ips: Vec<IpNet>,
    /// `Endpoint`, as written (`host:port` or `[v6]:port`).
    pub endpoint: Option<String>,
    /// `PersistentKeepalive` in seconds (`off` and 0 mean none).
    pub persistent_keepalive: Option<u16>,
    /// The comment line right above `[Peer]`, or a `# Name = ...` line inside it,
    /// as wg-easy and others write them: used as the peer's name.
    pub name: Option<String>,
}

/// The file did not parse. `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct WgQuickError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong, in words.
    pub problem: String,
}

#[derive(PartialEq)]
enum Section {
    None,
    Interface,
    Peer,
}

#[derive(Default)]
struct PeerDraft {
    line: usize,
    public_key: Option<PublicKey>,
    preshared_key: Option<PresharedKey>,
    allowed_ips: Vec<IpNet>,
    endpoint: Option<String>,
    persistent_keepalive: Option<u16>,
    name: Option<String>,
}

fn err(line: usize, problem: impl Into<String>) -> WgQuickError {
    WgQuickError {
        line,
        problem: problem.into(),
    }
}

fn key_err(line: usize, key: &str, e: KeyError) -> WgQuickError {
    err(line, format!("{key}: {e}"))
}

fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn parse_nets(
    line: usize,
    key: &str,
    value: &str,
    into: &mut Vec<IpNet>,
) -> Result<(), WgQuickError> {
    for item in list(value) {
        let net = item
            .parse::<IpNet>()
            .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| {
                err(
                    line,
                    format!("{key}: {item:?} is not an address or CIDR prefix"),
                )
            })?;
        into.push(net);
    }
    Ok(())
}

fn parse_u16(line: usize, key: &str, value: &str) -> Result<u16, WgQuickError> {
    value.parse::<u16>().map_err(|_| {
        err(
            line,
            format!("{key}: {value:?} is not a number from 0 to 65535"),
        )
    })
}

/// Parse the text of a wg-quick file.
pub fn parse(text: &str) -> Result<WgQuick, WgQuickError> {
    let mut section = Section::None;
    let mut private_key = None;
    let mut listen_port = None;
    let mut addresses = Vec::new();
    let mut dns = Vec::new();
    let mut mtu = None;
    let mut ignored = Vec::new();
    let mut peers: Vec<PeerDraft> = Vec::new();
    let mut last_comment: Option<String> = None;
    let mut saw_interface = false;

    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        let trimmed = raw.trim();
        if let Some(comment) = trimmed.strip_prefix('#') {
            let comment = comment.trim();
            // "# Name = laptop" inside a peer section names it (wg-easy style).
            if section == Section::Peer {
                if let Some((k, v)) = comment.split_once('=') {
                    if k.trim().eq_ignore_ascii_case("name") {
                        if let Some(p) = peers.last_mut() {
                            p.name = Some(v.trim().to_string());
                        }
                    }
                }
            }
            last_comment = (!comment.is_empty()).then(|| comment.to_string());
            continue;
        }
        // Strip a trailing comment.
        let content = trimmed.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        if content.starts_with('[') {
            match content.to_ascii_lowercase().as_str() {
                "[interface]" => {
                    if saw_interface {
                        return Err(err(line, "a second [Interface] section"));
                    }
                    saw_interface = true;
                    section = Section::Interface;
                }
                "[peer]" => {
                    section = Section::Peer;
                    peers.push(PeerDraft {
                        line,
                        name: last_comment.take().filter(|c| !c.contains('=')),
                        ..PeerDraft::default()
                    });
                }
                _ => {
                    return Err(err(
                        line,
                        format!("unknown section {content}; expected [Interface] or [Peer]"),
                    ))
                }
            }
            last_comment = None;
            continue;
        }
        last_comment = None;
        let Some((key, value)) = content.split_once('=') else {
            return Err(err(
                line,
                format!("expected `Key = Value`, found {content:?}"),
            ));
        };
        let key = key.trim();
        let value = value.trim();
        let lkey = key.to_ascii_lowercase();
        match section {
            Section::None => {
                return Err(err(
                    line,
                    format!("{key} appears before any [Interface] or [Peer] section"),
                ))
            }
            Section::Interface => match lkey.as_str() {
                "privatekey" => {
                    private_key = Some(
                        value
                            .parse::<PrivateKey>()
                            .map_err(|e| key_err(line, key, e))?,
                    )
                }
                "listenport" => listen_port = Some(parse_u16(line, key, value)?),
                "address" => parse_nets(line, key, value, &mut addresses)?,
                "dns" => dns.extend(list(value).map(str::to_string)),
                "mtu" => mtu = Some(parse_u16(line, key, value)?),
                "table" | "preup" | "postup" | "predown" | "postdown" | "saveconfig" | "fwmark" => {
                    ignored.push(key.to_string())
                }
                _ => return Err(err(line, format!("unknown key {key} in [Interface]"))),
            },
            Section::Peer => {
                let Some(p) = peers.last_mut() else {
                    return Err(err(line, "key outside a [Peer] section"));
                };
                match lkey.as_str() {
                    "publickey" => {
                        p.public_key = Some(value.parse().map_err(|e| key_err(line, key, e))?)
                    }
                    "presharedkey" => {
                        p.preshared_key = Some(value.parse().map_err(|e| key_err(line, key, e))?)
                    }
                    "allowedips" => parse_nets(line, key, value, &mut p.allowed_ips)?,
                    "endpoint" => {
                        if !value.contains(':') {
                            return Err(err(
                                line,
                                format!("Endpoint {value:?} needs a port, like host:51820"),
                            ));
                        }
                        p.endpoint = Some(value.to_string())
                    }
                    "persistentkeepalive" => {
                        p.persistent_keepalive = if value.eq_ignore_ascii_case("off") {
                            None
                        } else {
                            Some(parse_u16(line, key, value)?).filter(|&k| k > 0)
                        }
                    }
                    _ => return Err(err(line, format!("unknown key {key} in [Peer]"))),
                }
            }
        }
    }

    if !saw_interface {
        return Err(err(1, "no [Interface] section"));
    }
    let private_key = private_key.ok_or_else(|| err(1, "[Interface] has no PrivateKey"))?;
    let peers = peers
        .into_iter()
        .map(|p| {
            Ok(WgQuickPeer {
                public_key: p
                    .public_key
                    .ok_or_else(|| err(p.line, "[Peer] has no PublicKey"))?,
                preshared_key: p.preshared_key,
                allowed_ips: p.allowed_ips,
                endpoint: p.endpoint,
                persistent_keepalive: p.persistent_keepalive,
                name: p.name,
            })
        })
        .collect::<Result<Vec<_>, WgQuickError>>()?;
    Ok(WgQuick {
        private_key,
        listen_port,
        addresses,
        dns,
        mtu,
        peers,
        ignored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIV: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    const PUB: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

    #[test]
    fn parses_a_typical_wg_quick_file() {
        let text = format!(
            "[Interface]\nPrivateKey = {PRIV}\nAddress = 10.77.0.1/24, fd00::1/64\nListenPort = 51820\nDNS = 1.1.1.1, home.arpa\nPostUp = iptables -A FORWARD\n\n# laptop\n[Peer]\nPublicKey = {PUB}\nAllowedIPs = 10.77.0.2/32,10.9.0.0/16 # lan\nEndpoint = 198.51.100.2:51820\nPersistentKeepalive = 25\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.listen_port, Some(51820));
        assert_eq!(c.addresses.len(), 2);
        assert_eq!(c.dns, vec!["1.1.1.1", "home.arpa"]);
        assert_eq!(c.ignored, vec!["PostUp"]);
        assert_eq!(c.peers.len(), 1);
        let p = &c.peers[0];
        assert_eq!(p.public_key.to_string(), PUB);
        assert_eq!(p.allowed_ips.len(), 2);
        assert_eq!(p.endpoint.as_deref(), Some("198.51.100.2:51820"));
        assert_eq!(p.persistent_keepalive, Some(25));
        assert_eq!(p.name.as_deref(), Some("laptop"));
    }

    #[test]
    fn errors_name_the_line_and_key() {
        let e = parse(&format!(
            "[Interface]\nPrivateKey = {PRIV}\n[Peer]\nPublicKey = nope\n"
        ))
        .unwrap_err();
        assert_eq!(e.line, 4);
        assert!(e.problem.contains("PublicKey"), "{e}");
        let e = parse("[Interface]\nListenPort = 99999\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse(&format!("[Interface]\nPrivateKey = {PRIV}\nBogus = 1\n")).unwrap_err();
        assert!(e.problem.contains("unknown key Bogus"), "{e}");
        let e = parse(&format!(
            "[Interface]\nPrivateKey = {PRIV}\n[Peer]\nAllowedIPs = 10.0.0.0/8\n"
        ))
        .unwrap_err();
        assert!(e.problem.contains("no PublicKey"), "{e}");
        assert!(parse("").is_err());
        assert!(parse("[Wat]\n").is_err());
        assert!(parse(&format!(
            "[Interface]\nPrivateKey = {PRIV}\n[Peer]\nPublicKey = {PUB}\nEndpoint = host\n"
        ))
        .is_err());
    }
}
