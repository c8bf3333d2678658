//! Built without the `dns` feature (small routers): no DNS server, no mDNS,
//! no discovery proxy. The daemon's loop calls the same methods; they do
//! nothing, and the start says so once if the config asked for them.

use crate::config::Config;
use meshbridge_engine::{Engine, Event};

/// Names and discovery, compiled out.
pub struct Discovery;

impl Discovery {
    /// Say that the features are not in this build.
    pub async fn start(
        config: &Config,
        _engine: &Engine,
        _handle: &crate::host::netlink::Handle,
    ) -> Discovery {
        if config.dns_server.enabled || config.discovery.enabled {
            tracing::warn!("this build has no DNS server and no discovery (built without the `dns` feature); bridged devices get dhcp.dns as their resolver");
        }
        Discovery
    }

    /// mDNS packets are consumed (dropped); nothing else is looked at.
    pub fn on_event(&mut self, _config: &Config, _engine: &Engine, ev: &Event) -> bool {
        matches!(ev, Event::Mdns { .. })
    }

    /// Nothing to send.
    pub fn after_events(&mut self, _config: &Config, _engine: &mut Engine) {}

    /// No timers.
    pub fn poll_timeout(&self) -> Option<tokio::time::Instant> {
        None
    }

    /// No timers.
    pub fn handle_timeout(&mut self) {}

    /// No uplink socket: never ready.
    pub async fn recv_uplink(&mut self) -> Option<(std::net::Ipv4Addr, usize)> {
        std::future::pending().await
    }

    /// Never called.
    pub fn on_uplink(&mut self, _from: std::net::Ipv4Addr, _n: usize) {}

    /// Nothing to refresh.
    pub fn tick(&mut self, _config: &Config, _engine: &mut Engine) {}

    /// No names to keep in step.
    pub fn reconfigure(&mut self, _old: &Config, _new: &Config, _engine: &mut Engine) {}

    /// No MagicDNS without a DNS server.
    pub fn set_tailnet(
        &mut self,
        _self_name: &str,
        _addresses: &[ipnet::IpNet],
        _peers: &[meshbridge_tailnet::netmap::TailnetPeer],
        _dns: Option<&meshbridge_tailnet::tailcfg::DnsConfig>,
    ) {
    }

    /// No site-to-site discovery.
    pub fn set_tailnet_boxes(
        &mut self,
        _addresses: &[ipnet::IpNet],
        _boxes: &[meshbridge_tailnet::netmap::DnsSdBox],
    ) {
    }

    /// No remote boxes.
    pub fn remotes_status(&self) -> Vec<meshbridge_web::proto::DiscoveryRemoteStatus> {
        Vec::new()
    }

    /// No DNS server to serve on more addresses.
    pub async fn serve_dns_on(&mut self, _ip: std::net::IpAddr) {}

    /// No names to forget.
    pub fn forget_addr(&mut self, _addr: std::net::IpAddr) {}

    /// Nothing is listened to.
    pub fn services(
        &self,
        _config: &Config,
        _engine: &Engine,
    ) -> Vec<meshbridge_web::proto::ServiceInfo> {
        Vec::new()
    }
}
