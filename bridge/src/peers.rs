//! The static peers of the config as a producer of the mesh's peer set,
//! with endpoint host names resolved off the event loop.
//!
//! The loop owns a [`StaticPeers`]: [`StaticPeers::apply`] turns the config
//! into a [`PeerSet`] (endpoint names filled in with their last resolved
//! address) and hands it to [`Mesh::apply`], which keeps the session of
//! every peer whose keys did not change. Host names are looked up by a
//! task ([`tokio::net::lookup_host`]), never on the loop: once when they
//! appear in the config, every [`REFRESH`] after that (dynamic DNS), every
//! [`RETRY`] while a name has no address yet. A new address comes back to
//! the loop over a channel ([`StaticPeers::next_resolved`]) and becomes a
//! new endpoint, in place.

use crate::config::{Config, Endpoint};
use ipnet::IpNet;
use meshbridge_mesh::{Mesh, PeerConfig, PeerSet};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// How often a resolved endpoint name is looked up again.
pub const REFRESH: Duration = Duration::from_secs(300);
/// How often a name without an address is tried again.
pub const RETRY: Duration = Duration::from_secs(10);
/// Longest wait for one lookup.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The config's peers as the mesh should run them. A name endpoint is the
/// address in `resolved`, or none until it has one (the peer can still
/// connect to us). The `routing.use_exit_node` peer also owns `0.0.0.0/0`:
/// replies from the internet come back from it with any source.
pub fn peer_set(config: &Config, resolved: &HashMap<String, SocketAddr>) -> PeerSet {
    config
        .peers
        .iter()
        .filter(|p| p.enabled)
        .map(|p| {
            let endpoint = match &p.endpoint {
                Some(Endpoint::Addr(a)) => Some(*a),
                Some(Endpoint::Name(n)) => resolved.get(n).copied(),
                None => None,
            };
            let mut allowed_ips = p.allowed_ips.clone();
            if config.routing.use_exit_node.as_deref() == Some(p.name.as_str()) {
                let any: IpNet = "0.0.0.0/0".parse().expect("valid prefix");
                if !allowed_ips.contains(&any) {
                    allowed_ips.push(any);
                }
            }
            PeerConfig {
                name: p.name.clone(),
                public_key: p.public_key,
                preshared_key: p.preshared_key.clone(),
                endpoint,
                allowed_ips,
                persistent_keepalive: p.persistent_keepalive,
            }
        })
        .collect()
}

/// Endpoint names of the enabled peers, sorted.
fn names(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = config
        .peers
        .iter()
        .filter(|p| p.enabled)
        .filter_map(|p| match &p.endpoint {
            Some(Endpoint::Name(n)) => Some(n.clone()),
            _ => None,
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The static-peer producer, owned by the event loop.
pub struct StaticPeers {
    resolved: HashMap<String, SocketAddr>,
    /// The tailnet's peers (`[tailnet]`), merged after the config's.
    tailnet: PeerSet,
    names: watch::Sender<Vec<String>>,
    results: mpsc::Receiver<(String, SocketAddr)>,
}

impl StaticPeers {
    /// Start resolving `config`'s endpoint names (in a task of the current
    /// runtime). Nothing is looked up here.
    pub fn start(config: &Config) -> Self {
        let (names_tx, names_rx) = watch::channel(names(config));
        let (tx, results) = mpsc::channel(16);
        tokio::spawn(resolve_task(names_rx, tx));
        StaticPeers {
            resolved: HashMap::new(),
            tailnet: PeerSet::new(),
            names: names_tx,
            results,
        }
    }

    /// Make `mesh` run `config`'s peers. Also tells the resolver which names
    /// to follow from now on.
    pub fn apply(&mut self, now: Instant, config: &Config, mesh: &mut Mesh) {
        let wanted = names(config);
        self.resolved.retain(|n, _| wanted.contains(n));
        self.names.send_if_modified(|names| {
            let changed = *names != wanted;
            *names = wanted;
            changed
        });
        let mut set = peer_set(config, &self.resolved);
        for key in set.merge(&self.tailnet) {
            tracing::warn!(
                "tailnet peer {key} is also a [[mesh.peers]] entry: the config's entry is used"
            );
        }
        let applied = mesh.apply(now, &set);
        if !applied.is_empty() {
            let name = |id| {
                mesh.peer_status()
                    .into_iter()
                    .find(|p| p.id == id)
                    .map_or_else(|| format!("#{}", id.0), |p| p.name)
            };
            let list = |ids: &[meshbridge_mesh::PeerId]| {
                ids.iter()
                    .map(|id| name(*id))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            tracing::info!(
                "peers: {} added [{}], {} updated in place [{}], {} with a new preshared key [{}], {} removed",
                applied.added.len(),
                list(&applied.added),
                applied.updated.len(),
                list(&applied.updated),
                applied.rekeyed.len(),
                list(&applied.rekeyed),
                applied.removed.len(),
            );
        }
    }

    /// The tailnet's current peer set (from the control server's map and
    /// disco's confirmed paths); applied with the next [`StaticPeers::apply`].
    pub fn set_tailnet(&mut self, set: PeerSet) {
        self.tailnet = set;
    }

    /// The next address the resolver found for an endpoint name (cancel-safe).
    pub async fn next_resolved(&mut self) -> Option<(String, SocketAddr)> {
        self.results.recv().await
    }

    /// Record a resolved address; `true` if it is new (then re-apply).
    pub fn learn(&mut self, name: String, addr: SocketAddr) -> bool {
        if !self.names.borrow().contains(&name) {
            return false;
        }
        self.resolved.insert(name, addr) != Some(addr)
    }
}

/// `host:port` to an address, IPv4 preferred (as before: the box's peers
/// are mostly reached over IPv4).
async fn lookup(name: &str) -> std::io::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> =
        tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host(name))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "lookup timed out"))??
            .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))
}

/// Resolve every name now, then again after [`REFRESH`] ([`RETRY`] while one
/// has no address), or at once when the list changes. Only changes are sent.
async fn resolve_task(
    mut names: watch::Receiver<Vec<String>>,
    tx: mpsc::Sender<(String, SocketAddr)>,
) {
    let mut known: HashMap<String, SocketAddr> = HashMap::new();
    let mut failing: HashSet<String> = HashSet::new();
    loop {
        let list = names.borrow_and_update().clone();
        known.retain(|n, _| list.contains(n));
        failing.retain(|n| list.contains(n));
        let mut unresolved = false;
        for name in &list {
            match lookup(name).await {
                Ok(addr) => {
                    failing.remove(name);
                    if known.get(name) != Some(&addr) {
                        tracing::debug!("endpoint {name} is at {addr}");
                        known.insert(name.clone(), addr);
                        if tx.send((name.clone(), addr)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    unresolved |= !known.contains_key(name);
                    if failing.insert(name.clone()) {
                        tracing::warn!(
                            "a peer endpoint name cannot be resolved ({e}); trying again, the peer can still connect to us"
                        );
                        tracing::debug!("endpoint {name}: {e}");
                    }
                }
            }
        }
        let wait = if unresolved { RETRY } else { REFRESH };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            r = names.changed() => if r.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            r#"
state_dir = "/tmp/mb"
[mesh]
private_key = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
address = "10.77.0.1/24"
{extra}
[bridge]
name = "br-mesh"
ports = ["eth1"]
[dhcp]
range = "10.77.1.100-10.77.1.200"
"#
        );
        Config::from_toml(&text, None).unwrap()
    }

    #[test]
    fn name_endpoints_wait_for_the_resolver_literals_do_not() {
        let c = config(
            r#"
[[mesh.peers]]
name = "a"
public_key = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
endpoint = "198.51.100.2:51820"
allowed_ips = ["10.77.0.2/32"]

[[mesh.peers]]
name = "b"
public_key = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="
endpoint = "home.example.org:51820"
allowed_ips = ["10.77.0.3/32"]
"#,
        );
        assert_eq!(names(&c), vec!["home.example.org:51820".to_string()]);
        let mut resolved = HashMap::new();
        let set = peer_set(&c, &resolved);
        let eps: Vec<_> = set.iter().map(|p| p.endpoint).collect();
        assert_eq!(eps, vec![Some("198.51.100.2:51820".parse().unwrap()), None]);
        resolved.insert(
            "home.example.org:51820".to_string(),
            "203.0.113.7:51820".parse().unwrap(),
        );
        let set = peer_set(&c, &resolved);
        assert_eq!(
            set.iter().nth(1).unwrap().endpoint,
            Some("203.0.113.7:51820".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn the_resolver_task_reports_an_address_and_follows_the_name_list() {
        let (names_tx, names_rx) = watch::channel(vec!["localhost:51820".to_string()]);
        let (tx, mut rx) = mpsc::channel(4);
        let task = tokio::spawn(resolve_task(names_rx, tx));
        let (name, addr) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an answer within 10 s")
            .expect("the task runs");
        assert_eq!(name, "localhost:51820");
        assert!(addr.ip().is_loopback() && addr.port() == 51820, "{addr}");
        // A new list is looked up at once, not after REFRESH.
        names_tx.send_replace(vec!["localhost:4500".to_string()]);
        let (name, addr) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an answer within 10 s")
            .expect("the task runs");
        assert_eq!((name.as_str(), addr.port()), ("localhost:4500", 4500));
        // The loop is gone: the task ends.
        drop(rx);
        drop(names_tx);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the task ends")
            .unwrap();
    }
}
