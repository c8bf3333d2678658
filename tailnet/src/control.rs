//! Building the control requests and reading the registration answer:
//! the decisions of a login, without I/O.
//!
//! Facts (tailscale.com `control/controlclient/direct.go` `doLogin`,
//! `sendMapRequest`; headscale `hscontrol/auth.go` `handleRegister`,
//! `hscontrol/state/state.go` `HandleNodeFromPreAuthKey`):
//!
//! * Requests go over HTTP/2 inside the Noise stream: `POST
//!   /machine/register` and `POST /machine/map`, JSON bodies.
//! * A node registered before sends its node key without `Auth`; Headscale
//!   answers with the node's state if the machine key matches (a restart is
//!   the same node). An unknown node key without `Auth` gets an `AuthURL`
//!   (interactive login). With a pre-auth key, a machine key Headscale knows
//!   for that user updates the node in place (no duplicate).
//! * Logout is a registration with an `Expiry` in the past (Go sends Unix
//!   time 123).

use crate::keys::NodeKeys;
use crate::tailcfg::{
    Hostinfo, MapRequest, NetInfo, RegisterAuth, RegisterRequest, RegisterResponse,
    CAPABILITY_VERSION,
};

/// The expiry that asks the server to log the node out (Unix time 123, as
/// Tailscale's client sends it).
pub const LOGOUT_EXPIRY: &str = "1970-01-01T00:02:03Z";

/// Who this node says it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The host name (the tailnet names the node after it).
    pub hostname: String,
    /// Subnet routes to advertise.
    pub routes: Vec<ipnet::IpNet>,
    /// ACL tags to ask for.
    pub tags: Vec<String>,
    /// The home DERP region (0: none yet), reported as
    /// `Hostinfo.NetInfo.PreferredDERP`; peers see it as our relay.
    pub home_derp: u32,
}

impl NodeIdentity {
    /// The Hostinfo sent with registration and map requests.
    pub fn hostinfo(&self) -> Hostinfo {
        Hostinfo {
            ipn_version: concat!("meshbridge-", env!("CARGO_PKG_VERSION")).to_string(),
            os: "linux".to_string(),
            app: "meshbridge".to_string(),
            hostname: self.hostname.clone(),
            routable_ips: self.routes.clone(),
            request_tags: self.tags.clone(),
            net_info: (self.home_derp > 0).then(|| NetInfo {
                preferred_derp: i32::try_from(self.home_derp).unwrap_or(0),
            }),
            ..Default::default()
        }
    }
}

/// The first registration request: without `Auth` if these keys were
/// registered with this control URL before, else with the auth key (if any).
pub fn register_request(
    keys: &NodeKeys,
    control_url: &str,
    id: &NodeIdentity,
    auth_key: Option<&str>,
) -> RegisterRequest {
    let known = keys.registered_with.as_deref() == Some(control_url);
    RegisterRequest {
        version: CAPABILITY_VERSION,
        node_key: keys.node_key.public(),
        old_node_key: None,
        auth: match (known, auth_key) {
            (false, Some(k)) if !k.is_empty() => Some(RegisterAuth {
                auth_key: k.to_string(),
            }),
            _ => None,
        },
        expiry: None,
        followup: String::new(),
        hostinfo: Some(id.hostinfo()),
        ephemeral: false,
    }
}

/// After [`RegisterNext::Login`]: the same registration with the login URL
/// as `Followup`. The server holds the answer until the user has logged in
/// at that URL (or the login expired: then a new URL comes back).
///
/// An empty `Auth` (the interactive re-login of an expired node key, see
/// [`after_register`]) stays: without it Headscale would look the expired
/// key up again and answer `NodeKeyExpired` instead of waiting.
pub fn followup_request(sent: &RegisterRequest, login_url: &str) -> RegisterRequest {
    let mut r = sent.clone();
    if r.auth.as_ref().is_some_and(|a| !a.auth_key.is_empty()) {
        r.auth = None;
    }
    r.followup = login_url.to_string();
    r
}

/// The logout request for these keys.
pub fn logout_request(keys: &NodeKeys) -> RegisterRequest {
    RegisterRequest {
        version: CAPABILITY_VERSION,
        node_key: keys.node_key.public(),
        old_node_key: None,
        auth: None,
        expiry: Some(LOGOUT_EXPIRY.to_string()),
        followup: String::new(),
        hostinfo: None,
        ephemeral: false,
    }
}

/// What to do after a registration answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterNext {
    /// Registered and authorized: store the keys as registered, poll the map.
    Authorized,
    /// Send this request (the same node key, now with the auth key).
    Retry(Box<RegisterRequest>),
    /// Interactive login: show the URL, then register again with it as
    /// `Followup` (the server answers when the user has logged in).
    Login(String),
    /// The server refused; the text says why (e.g. an invalid auth key).
    Refused(String),
    /// The node key expired and there is no auth key: a new login is needed.
    Expired,
}

/// Decides the next step after `resp` answered `sent`.
pub fn after_register(
    sent: &RegisterRequest,
    resp: &RegisterResponse,
    auth_key: Option<&str>,
) -> RegisterNext {
    let retry_with_key = || {
        auth_key
            .filter(|k| !k.is_empty() && sent.auth.is_none())
            .map(|k| {
                let mut again = sent.clone();
                again.auth = Some(RegisterAuth {
                    auth_key: k.to_string(),
                });
                again.followup.clear();
                Box::new(again)
            })
    };
    if !resp.error.is_empty() {
        // A refresh without Auth may be refused (node gone, machine key
        // mismatch); the auth key may still work.
        return match retry_with_key() {
            Some(r) => RegisterNext::Retry(r),
            None => RegisterNext::Refused(resp.error.clone()),
        };
    }
    if resp.node_key_expired {
        return match retry_with_key() {
            Some(r) => RegisterNext::Retry(r),
            // No auth key: ask for an interactive login. Tailscale's client
            // would make a new node key here; ours is the mesh's WireGuard
            // key, so it asks again with the same key and an empty `Auth`,
            // which Headscale (`handleRegister`: a non-nil `Auth` skips the
            // expired-key lookup) answers with a login URL; the login then
            // renews the same node (same machine key and user).
            None if sent.auth.is_none() => {
                let mut again = sent.clone();
                again.auth = Some(RegisterAuth::default());
                again.followup.clear();
                again.expiry = None;
                RegisterNext::Retry(Box::new(again))
            }
            None => RegisterNext::Expired,
        };
    }
    if !resp.auth_url.is_empty() {
        return match retry_with_key() {
            Some(r) => RegisterNext::Retry(r),
            None => RegisterNext::Login(resp.auth_url.clone()),
        };
    }
    if resp.machine_authorized {
        RegisterNext::Authorized
    } else {
        RegisterNext::Refused("the control server did not authorize this node".to_string())
    }
}

/// The streaming map request: full map, then deltas and keep-alives, no
/// compression.
pub fn map_request(
    keys: &NodeKeys,
    id: &NodeIdentity,
    endpoints: &[std::net::SocketAddr],
) -> MapRequest {
    MapRequest {
        version: CAPABILITY_VERSION,
        compress: String::new(),
        keep_alive: true,
        node_key: keys.node_key.public(),
        disco_key: keys.disco_key.public(),
        stream: true,
        hostinfo: Some(id.hostinfo()),
        endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
        // 1: a local interface address (tailcfg.EndpointLocal).
        endpoint_types: endpoints.iter().map(|_| 1).collect(),
        omit_peers: false,
        read_only: false,
    }
}

/// An endpoint/hostinfo update without a map (not streaming, no peers):
/// what a client sends when its endpoints or home DERP change while its
/// stream stays open.
pub fn endpoint_update_request(
    keys: &NodeKeys,
    id: &NodeIdentity,
    endpoints: &[std::net::SocketAddr],
) -> MapRequest {
    MapRequest {
        stream: false,
        omit_peers: true,
        ..map_request(keys, id, endpoints)
    }
}

/// How to answer the control server's `PingRequest` (`tailcfg.PingRequest`
/// in a map message): a `HEAD` request to `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingAnswer {
    /// Where to send `HEAD`.
    pub url: String,
    /// Whether the server wants it logged (`Log`).
    pub log: bool,
}

/// The longest ping URL answered.
const MAX_PING_URL: usize = 2048;

/// What to do with a map message's `PingRequest` (kept as JSON in
/// [`crate::tailcfg::MapResponse::ping_request`]): the plain `HEAD` ping
/// (`Types` empty) to an `http(s)://` URL, as Tailscale's `answerHeadPing`
/// does; `Err` says why not (other ping types, `URLIsNoise` — the request
/// over the Noise channel, which Headscale v0.29.2 never asks for — or a
/// malformed request).
pub fn ping_answer(req: &serde_json::Value) -> Result<PingAnswer, String> {
    let obj = req.as_object().ok_or("not a JSON object")?;
    let text = |k: &str| obj.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let flag = |k: &str| obj.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
    let url = text("URL");
    let types = text("Types");
    if !types.is_empty() {
        return Err(format!("ping type {types:?} is not supported"));
    }
    if flag("URLIsNoise") {
        return Err("a ping over the Noise channel (URLIsNoise) is not supported".into());
    }
    if url.len() > MAX_PING_URL || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the URL is too long or has spaces".into());
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err("the URL is not http:// or https://".into());
    }
    Ok(PingAnswer {
        url: url.to_string(),
        log: flag("Log"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_ping_is_answered_other_pings_are_not() {
        // What Headscale v0.29.2 sends (hscontrol/debug.go doPing).
        let hs = serde_json::json!({"URL": "http://10.99.0.1:8080/machine/ping-response?id=abc", "Log": true});
        assert_eq!(
            ping_answer(&hs),
            Ok(PingAnswer {
                url: "http://10.99.0.1:8080/machine/ping-response?id=abc".into(),
                log: true
            })
        );
        let https = serde_json::json!({"URL": "https://hs.example/p"});
        assert!(!ping_answer(&https).unwrap().log);
        for bad in [
            serde_json::json!(null),
            serde_json::json!("http://x/"),
            serde_json::json!({}),
            serde_json::json!({"URL": "file:///etc/shadow"}),
            serde_json::json!({"URL": "http://x/ y"}),
            serde_json::json!({"URL": format!("http://x/{}", "a".repeat(3000))}),
            serde_json::json!({"URL": "http://x/", "Types": "c2n"}),
            serde_json::json!({"URL": "http://x/", "Types": "disco,TSMP"}),
            serde_json::json!({"URL": "http://x/", "URLIsNoise": true}),
        ] {
            assert!(ping_answer(&bad).is_err(), "{bad}");
        }
    }
    use rand::SeedableRng;

    fn keys() -> NodeKeys {
        NodeKeys::generate(&mut rand::rngs::StdRng::seed_from_u64(3))
    }

    fn id() -> NodeIdentity {
        NodeIdentity {
            hostname: "box".into(),
            ..Default::default()
        }
    }

    #[test]
    fn first_registration_carries_the_key_a_known_node_does_not() {
        let mut k = keys();
        let r = register_request(&k, "http://hs", &id(), Some("K"));
        assert_eq!(r.auth.unwrap().auth_key, "K");
        assert_eq!(r.hostinfo.unwrap().hostname, "box");
        k.registered_with = Some("http://hs".into());
        assert_eq!(
            register_request(&k, "http://hs", &id(), Some("K")).auth,
            None
        );
        // another server: register anew
        assert!(register_request(&k, "http://other", &id(), Some("K"))
            .auth
            .is_some());
        assert_eq!(
            register_request(&keys(), "http://hs", &id(), None).auth,
            None
        );
    }

    #[test]
    fn answers_lead_to_the_right_step() {
        let mut k = keys();
        k.registered_with = Some("u".into());
        let refresh = register_request(&k, "u", &id(), Some("K"));
        let ok = RegisterResponse {
            machine_authorized: true,
            ..Default::default()
        };
        assert_eq!(
            after_register(&refresh, &ok, Some("K")),
            RegisterNext::Authorized
        );
        let login = RegisterResponse {
            auth_url: "http://hs/register/abc".into(),
            ..Default::default()
        };
        let RegisterNext::Retry(again) = after_register(&refresh, &login, Some("K")) else {
            panic!()
        };
        assert_eq!(again.auth.as_ref().unwrap().auth_key, "K");
        assert_eq!(again.node_key, refresh.node_key);
        assert_eq!(
            after_register(&refresh, &login, None),
            RegisterNext::Login("http://hs/register/abc".into())
        );
        // with the key already sent, a refusal is final
        let refused = RegisterResponse {
            error: "invalid pre auth key".into(),
            ..Default::default()
        };
        assert_eq!(
            after_register(&again, &refused, Some("K")),
            RegisterNext::Refused("invalid pre auth key".into())
        );
        let expired = RegisterResponse {
            node_key_expired: true,
            ..Default::default()
        };
        assert_eq!(
            after_register(&again, &expired, Some("K")),
            RegisterNext::Expired
        );
        assert!(matches!(
            after_register(&again, &RegisterResponse::default(), Some("K")),
            RegisterNext::Refused(_)
        ));
    }

    /// Logged out (or expired) without an auth key: the same node key asks
    /// for a login URL with an empty `Auth` (`"Auth":{}` on the wire), keeps
    /// it on the follow-up, and gives up only if that is refused as expired.
    #[test]
    fn an_expired_key_without_auth_key_goes_to_interactive_login() {
        let mut k = keys();
        k.registered_with = Some("u".into());
        let refresh = register_request(&k, "u", &id(), None);
        let expired = RegisterResponse {
            node_key_expired: true,
            ..Default::default()
        };
        let RegisterNext::Retry(again) = after_register(&refresh, &expired, None) else {
            panic!("an expired key without auth key must ask for a login")
        };
        assert_eq!(again.auth, Some(RegisterAuth::default()));
        assert_eq!(again.node_key, refresh.node_key);
        let wire = serde_json::to_value(&*again).unwrap();
        assert_eq!(wire["Auth"], serde_json::json!({}));
        let login = RegisterResponse {
            auth_url: "http://hs/register/xyz".into(),
            ..Default::default()
        };
        assert_eq!(
            after_register(&again, &login, None),
            RegisterNext::Login("http://hs/register/xyz".into())
        );
        let f = followup_request(&again, "http://hs/register/xyz");
        assert_eq!(f.auth, Some(RegisterAuth::default()));
        assert_eq!(after_register(&f, &expired, None), RegisterNext::Expired);
        // A real key never rides along on the follow-up.
        let mut with_key = register_request(&keys(), "u", &id(), Some("K"));
        assert!(with_key.auth.is_some());
        with_key = followup_request(&with_key, "http://hs/register/1");
        assert_eq!(with_key.auth, None);
    }

    #[test]
    fn map_request_streams_uncompressed_with_keepalives() {
        let k = keys();
        let m = map_request(&k, &id(), &["10.0.0.2:41641".parse().unwrap()]);
        assert!(m.stream && m.keep_alive && m.compress.is_empty() && !m.omit_peers);
        assert_eq!(m.disco_key, k.disco_key.public());
        assert_eq!(m.endpoints, vec!["10.0.0.2:41641"]);
        let u = endpoint_update_request(&k, &id(), &["10.0.0.2:41641".parse().unwrap()]);
        assert!(!u.stream && u.omit_peers && u.keep_alive);
        assert_eq!(u.endpoints, m.endpoints);
        let mut with_derp = id();
        with_derp.home_derp = 900;
        let h = serde_json::to_value(with_derp.hostinfo()).unwrap();
        assert_eq!(h["NetInfo"]["PreferredDERP"], 900);
        assert!(serde_json::to_value(id().hostinfo())
            .unwrap()
            .get("NetInfo")
            .is_none());
        let reg = register_request(&k, "u", &id(), None);
        let f = followup_request(&reg, "http://hs/register/abc");
        assert_eq!(
            (f.followup.as_str(), f.node_key, f.auth.is_none()),
            ("http://hs/register/abc", reg.node_key, true)
        );
        let l = logout_request(&k);
        assert_eq!(l.expiry.as_deref(), Some(LOGOUT_EXPIRY));
    }
}
