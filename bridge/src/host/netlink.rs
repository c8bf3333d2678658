//! OS state the daemon installs — the kernel bridge, its ports, routes to
//! peers — applied idempotently over netlink, recorded in the state dir
//! before it is made, and removed by [`cleanup`] (on stop and by
//! `meshbridge --cleanup`), so a crash mid-change recovers by starting again.

use anyhow::{anyhow, Context, Result};
use futures_util::TryStreamExt;
use ipnet::{IpNet, Ipv4Net};
use meshbridge_types::Mac;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, RouteMessageBuilder};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

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

/// A netlink connection.
pub async fn connect() -> Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection().context("opening a netlink socket")?;
    tokio::spawn(conn);
    Ok(handle)
}

fn is_not_found(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc::ENODEV)
}

/// The link called `name`, if there is one.
pub async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(l) => Ok(l),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(anyhow!("looking up interface {name}: {e}")),
    }
}

fn has_kind(link: &LinkMessage, kind: &InfoKind) -> bool {
    link.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos
            .iter()
            .any(|i| matches!(i, LinkInfo::Kind(k) if k == kind)),
        _ => false,
    })
}

fn is_bridge(link: &LinkMessage) -> bool {
    has_kind(link, &InfoKind::Bridge)
}

fn is_tun(link: &LinkMessage) -> bool {
    has_kind(link, &InfoKind::Tun)
}

fn controller(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(i) => Some(*i),
        _ => None,
    })
}

/// Make sure bridge `name` exists and is up; create it (with `mac`) if missing.
/// Returns its index and whether we created it.
pub async fn ensure_bridge(handle: &Handle, name: &str, mac: Mac) -> Result<(u32, bool)> {
    if let Some(link) = link_by_name(handle, name).await? {
        if !is_bridge(&link) {
            return Err(anyhow!("interface {name} exists and is not a bridge; set bridge.name to a bridge or a free name"));
        }
        let idx = link.header.index;
        handle
            .link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .with_context(|| format!("bringing bridge {name} up"))?;
        return Ok((idx, false));
    }
    handle
        .link()
        .add(LinkBridge::new(name).address(mac.0.to_vec()).up().build())
        .execute()
        .await
        .with_context(|| format!("creating bridge {name}"))?;
    // The host itself has no address on the bridge: no IPv6 either.
    super::sysctl::disable_ipv6(name);
    let link = link_by_name(handle, name)
        .await?
        .ok_or_else(|| anyhow!("bridge {name} vanished after creation"))?;
    Ok((link.header.index, true))
}

/// Is `port` a port of bridge `bridge_idx` now? (False when it does not exist.)
pub async fn port_of(handle: &Handle, port: &str, bridge_idx: u32) -> bool {
    matches!(link_by_name(handle, port).await, Ok(Some(l)) if controller(&l) == Some(bridge_idx))
}

/// Put interface `port` into bridge `bridge_idx` and bring it up.
pub async fn enslave(handle: &Handle, port: &str, bridge_idx: u32) -> Result<()> {
    let link = link_by_name(handle, port)
        .await?
        .ok_or_else(|| anyhow!("bridge port {port} does not exist; check bridge.ports"))?;
    let idx = link.header.index;
    if let Some(c) = controller(&link) {
        if c != bridge_idx {
            return Err(anyhow!("interface {port} is already a port of another bridge or bond; remove it there first"));
        }
    }
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(idx)
                .controller(bridge_idx)
                .up()
                .build(),
        )
        .execute()
        .await
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
    handle
        .address()
        .add(idx, addr.into(), prefix_len)
        .replace()
        .execute()
        .await
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
        let route = match net.trunc() {
            IpNet::V4(v4) => {
                if v4.prefix_len() == 0 || own.iter().any(|o| o.trunc().contains(&v4)) {
                    continue;
                }
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(v4.network(), v4.prefix_len())
                    .output_interface(tun_idx)
                    .build()
            }
            IpNet::V6(v6) => {
                if v6.prefix_len() == 0 {
                    continue;
                }
                RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                    .destination_prefix(v6.network(), v6.prefix_len())
                    .output_interface(tun_idx)
                    .build()
            }
        };
        handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
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
            if let Err(e) = handle.link().del(l.header.index).execute().await {
                errors.push(format!("deleting {name}: {e}"));
            }
        }
    }
    if let Some(bridge) = &rec.bridge {
        let bridge_idx = link_by_name(handle, bridge).await?.map(|l| l.header.index);
        for port in &rec.ports {
            if let Some(l) = link_by_name(handle, port).await? {
                if bridge_idx.is_some() && controller(&l) == bridge_idx {
                    if let Err(e) = handle
                        .link()
                        .set(
                            LinkUnspec::new_with_index(l.header.index)
                                .nocontroller()
                                .build(),
                        )
                        .execute()
                        .await
                    {
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
                if let Err(e) = handle.link().del(idx).execute().await {
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
    use rtnetlink::packet_route::address::AddressAttribute;
    let Some(link) = link_by_name(handle, name).await? else {
        return Ok(None);
    };
    let mut addrs = handle
        .address()
        .get()
        .set_link_index_filter(link.header.index)
        .execute();
    while let Some(msg) = addrs
        .try_next()
        .await
        .map_err(|e| anyhow!("reading addresses of {name}: {e}"))?
    {
        for a in &msg.attributes {
            if let AddressAttribute::Local(std::net::IpAddr::V4(v4))
            | AddressAttribute::Address(std::net::IpAddr::V4(v4)) = a
            {
                if let Ok(net) = Ipv4Net::new(*v4, msg.header.prefix_len) {
                    return Ok(Some(net));
                }
            }
        }
    }
    Ok(None)
}
