//! OS state the daemon installs — the kernel bridge, its ports, routes to
//! peers — applied idempotently over netlink, recorded in the state dir
//! before it is made, and removed by [`cleanup`] (on stop and by
//! `meshbridge --cleanup`), so a crash mid-change recovers by starting again.

use super::rtnl::{self, Link};
use anyhow::{anyhow, Context, Result};
use ipnet::{IpNet, Ipv4Net};
use meshbridge_types::Mac;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What the daemon has installed, written to `<state_dir>/installed.json`
/// before the change is made.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Installed {
    /// The kernel bridge we use.
    pub bridge: Option<String>,
    /// Whether we created it (then we delete it again).
    pub bridge_created: bool,
    /// Ports we enslaved to it.
    pub ports: Vec<String>,
    /// Our TAP and TUN devices (they vanish with the process; removed if left over).
    pub links: Vec<String>,
    /// The bridge's `arp_ignore` before we set it to 1, to restore it.
    #[serde(default)]
    pub bridge_arp_ignore: Option<String>,
    /// Whether our nftables table may exist.
    #[serde(default)]
    pub nft_table: bool,
    /// `net.ipv4.ip_forward` before we turned it on.
    #[serde(default)]
    pub ip_forward_was: Option<String>,
    /// `net.ipv6.conf.all.forwarding` before we turned it on.
    #[serde(default)]
    pub ip6_forward_was: Option<String>,
    /// The uplink and its `accept_ra` before we set it to 2.
    #[serde(default)]
    pub uplink_accept_ra_was: Option<(String, String)>,
}

/// Where the record lives.
pub fn record_path(state_dir: &Path) -> PathBuf {
    state_dir.join("installed.json")
}

/// Read the record (none if absent).
pub fn read_record(state_dir: &Path) -> Result<Option<Installed>> {
    let path = record_path(state_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(
            serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Write the record atomically.
pub fn write_record(state_dir: &Path, rec: &Installed) -> Result<()> {
    let json = serde_json::to_string_pretty(rec)?;
    crate::persist::write_atomic(&record_path(state_dir), json.as_bytes())
}

/// A netlink connection (cheap to clone; one request at a time).
#[derive(Clone)]
pub struct Handle(Arc<Mutex<rtnl::Socket>>);

impl Handle {
    fn request(&self, msg: rtnl::Msg) -> std::io::Result<Vec<(u16, Vec<u8>)>> {
        let sock = self.0.lock().unwrap_or_else(|p| p.into_inner());
        sock.request(msg)
    }
}

/// A netlink connection.
pub async fn connect() -> Result<Handle> {
    let sock = rtnl::Socket::open().context("opening a netlink socket")?;
    Ok(Handle(Arc::new(Mutex::new(sock))))
}

/// The link called `name`, if there is one.
pub async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<Link>> {
    let mut ifname = name.as_bytes().to_vec();
    ifname.push(0);
    let msg = rtnl::Msg::link(rtnl::RTM_GETLINK, rtnl::NLM_F_ACK, 0, 0, 0)
        .attr(rtnl::IFLA_IFNAME, &ifname);
    match handle.request(msg) {
        Ok(replies) => Ok(replies
            .iter()
            .filter(|(kind, _)| *kind == rtnl::RTM_NEWLINK)
            .find_map(|(_, body)| rtnl::parse_link(body))),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(anyhow!("looking up interface {name}: {e}")),
    }
}

fn is_bridge(link: &Link) -> bool {
    link.kind.as_deref() == Some("bridge")
}

fn is_tun(link: &Link) -> bool {
    link.kind.as_deref() == Some("tun")
}

/// Sets `index` up, and its bridge (`Some(0)`: none) if given.
fn set_link(handle: &Handle, index: u32, master: Option<u32>, up: bool) -> std::io::Result<()> {
    let flags = if up { rtnl::IFF_UP } else { 0 };
    let mut msg = rtnl::Msg::link(rtnl::RTM_SETLINK, rtnl::NLM_F_ACK, index, flags, flags);
    if let Some(m) = master {
        msg = msg.attr(rtnl::IFLA_MASTER, &m.to_ne_bytes());
    }
    handle.request(msg).map(drop)
}

fn del_link(handle: &Handle, index: u32) -> std::io::Result<()> {
    let msg = rtnl::Msg::link(rtnl::RTM_DELLINK, rtnl::NLM_F_ACK, index, 0, 0);
    handle.request(msg).map(drop)
}

/// Make sure bridge `name` exists and is up; create it (with `mac`) if missing.
/// Returns its index and whether we created it.
pub async fn ensure_bridge(handle: &Handle, name: &str, mac: Mac) -> Result<(u32, bool)> {
    if let Some(link) = link_by_name(handle, name).await? {
        if !is_bridge(&link) {
            return Err(anyhow!("interface {name} exists and is not a bridge; set bridge.name to a bridge or a free name"));
        }
        set_link(handle, link.index, None, true)
            .with_context(|| format!("bringing bridge {name} up"))?;
        return Ok((link.index, false));
    }
    let mut ifname = name.as_bytes().to_vec();
    ifname.push(0);
    let msg = rtnl::Msg::link(
        rtnl::RTM_NEWLINK,
        rtnl::NLM_F_ACK | rtnl::NLM_F_CREATE | rtnl::NLM_F_EXCL,
        0,
        rtnl::IFF_UP,
        rtnl::IFF_UP,
    )
    .attr(rtnl::IFLA_IFNAME, &ifname)
    .attr(rtnl::IFLA_ADDRESS, &mac.0)
    .nested(rtnl::IFLA_LINKINFO, &[(rtnl::IFLA_INFO_KIND, b"bridge")]);
    handle
        .request(msg)
        .with_context(|| format!("creating bridge {name}"))?;
    // The host itself has no address on the bridge: no IPv6 either.
    super::sysctl::disable_ipv6(name);
    let link = link_by_name(handle, name)
        .await?
        .ok_or_else(|| anyhow!("bridge {name} vanished after creation"))?;
    Ok((link.index, true))
}

/// Is `port` a port of bridge `bridge_idx` now? (False when it does not exist.)
pub async fn port_of(handle: &Handle, port: &str, bridge_idx: u32) -> bool {
    matches!(link_by_name(handle, port).await, Ok(Some(l)) if l.master == Some(bridge_idx))
}

/// Put interface `port` into bridge `bridge_idx` and bring it up.
pub async fn enslave(handle: &Handle, port: &str, bridge_idx: u32) -> Result<()> {
    let link = link_by_name(handle, port)
        .await?
        .ok_or_else(|| anyhow!("bridge port {port} does not exist; check bridge.ports"))?;
    if let Some(c) = link.master {
        if c != bridge_idx {
            return Err(anyhow!("interface {port} is already a port of another bridge or bond; remove it there first"));
        }
    }
    set_link(handle, link.index, Some(bridge_idx), true)
        .with_context(|| format!("adding {port} to the bridge"))?;
    Ok(())
}

/// Add `addr/prefix_len` to interface `idx` (`ip addr replace`: adding one
/// that is there already is not an error).
pub async fn add_address_v4(
    handle: &Handle,
    idx: u32,
    addr: Ipv4Addr,
    prefix_len: u8,
) -> Result<()> {
    let mut fixed = [0u8; 8];
    fixed[0] = libc::AF_INET as u8;
    fixed[1] = prefix_len;
    fixed[4..8].copy_from_slice(&idx.to_ne_bytes());
    let msg = rtnl::Msg::new(
        rtnl::RTM_NEWADDR,
        rtnl::NLM_F_ACK | rtnl::NLM_F_CREATE | rtnl::NLM_F_REPLACE,
        &fixed,
    )
    .attr(rtnl::IFA_LOCAL, &addr.octets())
    .attr(rtnl::IFA_ADDRESS, &addr.octets());
    handle
        .request(msg)
        .map(drop)
        .with_context(|| format!("adding address {addr}/{prefix_len}"))
}

/// Route every allowed IPv4 network of the peers to the TUN, except those
/// the TUN's own subnets already cover and default routes (exit nodes are a
/// separate feature).
pub async fn add_peer_routes(
    handle: &Handle,
    tun_idx: u32,
    nets: &[IpNet],
    own: &[Ipv4Net],
) -> Result<()> {
    for net in nets {
        let (family, dst, len) = match net.trunc() {
            IpNet::V4(v4) => {
                if v4.prefix_len() == 0 || own.iter().any(|o| o.trunc().contains(&v4)) {
                    continue;
                }
                (
                    libc::AF_INET,
                    v4.network().octets().to_vec(),
                    v4.prefix_len(),
                )
            }
            IpNet::V6(v6) => {
                if v6.prefix_len() == 0 {
                    continue;
                }
                (
                    libc::AF_INET6,
                    v6.network().octets().to_vec(),
                    v6.prefix_len(),
                )
            }
        };
        // rtmsg: family, dst_len, src_len, tos, table main, protocol
        // static, scope universe, type unicast, flags.
        let fixed = [family as u8, len, 0, 0, 254, 4, 0, 1, 0, 0, 0, 0];
        let msg = rtnl::Msg::new(
            rtnl::RTM_NEWROUTE,
            rtnl::NLM_F_ACK | rtnl::NLM_F_CREATE | rtnl::NLM_F_REPLACE,
            &fixed,
        )
        .attr(rtnl::RTA_DST, &dst)
        .attr(rtnl::RTA_OIF, &tun_idx.to_ne_bytes());
        handle
            .request(msg)
            .with_context(|| format!("adding route {net} to the mesh"))?;
    }
    Ok(())
}

/// Remove everything the record lists. Safe to run twice and on a clean system.
pub async fn cleanup(handle: &Handle, rec: &Installed) -> Result<()> {
    let mut errors = Vec::new();
    if rec.nft_table {
        if let Err(e) = super::nft::remove() {
            errors.push(format!("{e:#}"));
        }
    }
    if let Some(old) = &rec.ip_forward_was {
        super::sysctl::restore_forwarding(old);
    }
    super::sysctl::restore_forwarding6(
        rec.ip6_forward_was.as_deref(),
        rec.uplink_accept_ra_was
            .as_ref()
            .map(|(u, v)| (u.as_str(), v.as_str())),
    );
    for name in &rec.links {
        // Only ever delete TUN/TAP devices: never a real interface that happens to share a name.
        if let Some(l) = link_by_name(handle, name).await?.filter(is_tun) {
            if let Err(e) = del_link(handle, l.index) {
                errors.push(format!("deleting {name}: {e}"));
            }
        }
    }
    if let Some(bridge) = &rec.bridge {
        let bridge_idx = link_by_name(handle, bridge).await?.map(|l| l.index);
        for port in &rec.ports {
            if let Some(l) = link_by_name(handle, port).await? {
                if bridge_idx.is_some() && l.master == bridge_idx {
                    if let Err(e) = set_link(handle, l.index, Some(0), false) {
                        errors.push(format!("removing {port} from {bridge}: {e}"));
                    }
                }
            }
        }
        if let (Some(old), false) = (&rec.bridge_arp_ignore, rec.bridge_created) {
            if bridge_idx.is_some() {
                super::sysctl::restore_bridge_arp(bridge, old);
            }
        }
        if rec.bridge_created {
            if let Some(idx) = bridge_idx {
                if let Err(e) = del_link(handle, idx) {
                    errors.push(format!("deleting bridge {bridge}: {e}"));
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(anyhow!(errors.join("; ")))
    }
}

/// The first IPv4 address (with prefix) of interface `name`.
pub async fn ipv4_of(handle: &Handle, name: &str) -> Result<Option<Ipv4Net>> {
    let Some(link) = link_by_name(handle, name).await? else {
        return Ok(None);
    };
    let fixed = [libc::AF_INET as u8, 0, 0, 0, 0, 0, 0, 0];
    let msg = rtnl::Msg::new(rtnl::RTM_GETADDR, rtnl::NLM_F_DUMP, &fixed);
    let replies = handle
        .request(msg)
        .map_err(|e| anyhow!("reading addresses of {name}: {e}"))?;
    Ok(replies
        .iter()
        .filter(|(kind, _)| *kind == rtnl::RTM_NEWADDR)
        .filter_map(|(_, body)| rtnl::parse_addr_v4(body, link.index))
        .find_map(|(a, len)| Ipv4Net::new(a, len).ok()))
}
