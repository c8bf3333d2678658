//! Parsers for single values (interface names, durations, addresses,
//! paths), each turning a bad value into a [`ConfigError`] that names
//! the key.

use super::{bad, ConfigError};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A character that would break a line or a field of a generated file (a
/// wg-quick file, a QR code, a log line): control characters (`\n`, `\r`,
/// `\t`, NUL, DEL, C1) and the Unicode line and paragraph separators.
pub(crate) fn breaks_lines(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// A name people read (a peer's or a device's): 1 to 64 characters, at
/// least one letter or digit (its DNS name is made from it), none that
/// breaks a line, and no `"`, `\` or `/` (it names files and appears quoted).
pub(crate) fn display_name(key: &str, n: &str) -> Result<String, ConfigError> {
    let n = n.trim();
    if n.chars().count() > 64
        || n.chars()
            .any(|c| breaks_lines(c) || matches!(c, '"' | '\\' | '/'))
        || !n.chars().any(|c| c.is_ascii_alphanumeric())
    {
        return Err(bad(
            key,
            format!("{n:?} is not a name: up to 64 characters, with letters or digits, no line breaks, control characters, '\"', '\\' or '/' (it also becomes a DNS name)"),
        ));
    }
    Ok(n.to_string())
}

pub(super) fn ifname(key: &str, name: &str) -> Result<String, ConfigError> {
    if name.is_empty()
        || name.len() > 15
        || name.contains(['/', ' ', '\0', ':'])
        || name.chars().any(|c| c.is_whitespace() || breaks_lines(c))
        || name == "."
        || name == ".."
    {
        return Err(bad(key, format!("{name:?} is not a valid interface name (1 to 15 characters, no '/', ':' or spaces)")));
    }
    Ok(name.to_string())
}

pub(super) fn duration(key: &str, s: &str) -> Result<Duration, ConfigError> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| {
        bad(
            key,
            format!("{s:?} is not a duration like \"1h\", \"30m\" or \"3600s\" ({e})"),
        )
    })
}

pub(super) fn ipv4(key: &str, s: &str) -> Result<Ipv4Addr, ConfigError> {
    s.trim()
        .parse()
        .map_err(|_| bad(key, format!("{s:?} is not an IPv4 address")))
}

pub(super) fn net(key: &str, s: &str) -> Result<IpNet, ConfigError> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            bad(
                key,
                format!("{s:?} is not an address or prefix like 10.77.0.2/32"),
            )
        })
}

pub(super) fn resolve_path(base: Option<&Path>, p: &str) -> PathBuf {
    let path = PathBuf::from(p);
    match base {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path,
    }
}
