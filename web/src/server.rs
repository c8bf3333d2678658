//! The HTTP server: the page (embedded assets), login and sessions, and the
//! JSON API under `/api/` that forwards to the daemon's main loop.

// Handlers return a ready `Response` as their error, as axum does.
#![allow(clippy::result_large_err)]

use crate::auth::{self, Auth};
use crate::proto::{Failure, PeerAdded, Pending, Request};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot, Semaphore};

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");
const FAVICON: &str = include_str!("../assets/favicon.svg");

/// Paths that are the page (the script shows the right view).
const PAGES: &[&str] = &[
    "/",
    "/devices",
    "/peers",
    "/settings",
    "/discovery",
    "/system",
    "/login",
    "/setup",
];

const COOKIE: &str = "mb_session";

/// A client that has not sent a request's headers after this long is dropped
/// (slowloris); also how long an idle keep-alive connection stays open.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A request (body, daemon answer, password check) that takes longer gets 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Open connections at most, over all addresses; more are closed at once.
pub const MAX_CONNECTIONS: usize = 128;
/// Open connections at most from one client address.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 16;
/// How long a login waits for its turn at the password check.
const HASH_WAIT: Duration = Duration::from_secs(20);

/// What the handlers share.
pub struct Web {
    auth: Mutex<Auth>,
    daemon: mpsc::Sender<Pending>,
    /// Host names and addresses the page answers to (lowercase).
    hosts: Vec<String>,
    /// One argon2 computation at a time: a flood of logins queues here
    /// instead of taking every core and 19 MiB per attempt.
    hashing: Semaphore,
    /// The one thread that runs argon2 (one thread: one malloc arena, so
    /// the 19 MiB are reused instead of kept once per blocking thread).
    hasher: Mutex<std::sync::mpsc::Sender<HashJob>>,
}

type HashJob = Box<dyn FnOnce(&mut auth::HashMemory) + Send>;

fn start_hasher() -> std::sync::mpsc::Sender<HashJob> {
    let (tx, rx) = std::sync::mpsc::channel::<HashJob>();
    let spawned = std::thread::Builder::new()
        .name("mb-argon2".into())
        .spawn(move || {
            let mut mem = auth::HashMemory::default();
            while let Ok(job) = rx.recv() {
                job(&mut mem);
            }
        });
    if let Err(e) = spawned {
        tracing::error!("web: cannot start the password thread: {e}");
    }
    tx
}

/// Run `f` (argon2) on the password thread, holding the one hashing slot.
async fn on_hasher<T: Send + 'static>(
    st: &Web,
    f: impl FnOnce(&mut auth::HashMemory) -> T + Send + 'static,
) -> Result<T, Response> {
    let slot = hash_slot(st).await?;
    let (tx, rx) = oneshot::channel();
    let sent = st.hasher.lock().ok().and_then(|h| {
        h.send(Box::new(move |mem: &mut auth::HashMemory| {
            let _ = tx.send(f(mem));
        }))
        .ok()
    });
    if sent.is_none() {
        return Err(error(500, "the password thread is gone"));
    }
    let r = rx.await.map_err(|_| error(500, "hashing failed"));
    drop(slot);
    r
}

type St = Arc<Web>;

/// Web settings.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Addresses to listen on.
    pub listen: Vec<SocketAddr>,
    /// Sessions end after this long without a request.
    pub idle_timeout: Duration,
    /// Where the password, setup code and tokens live.
    pub state_dir: std::path::PathBuf,
    /// Names and addresses the page answers to in the `Host` header, besides
    /// the address the client connected to and `<name>-N.local` variants of
    /// a `<name>.local` listed here. Anything else gets 421 (DNS rebinding).
    pub hosts: Vec<String>,
}

/// The page and the API as a router (what [`start`] serves; tests and the
/// fuzzer drive it directly). Makes the setup code on first use.
pub fn app(config: &WebConfig, daemon: mpsc::Sender<Pending>) -> std::io::Result<Router> {
    let (auth, made) = Auth::open(&config.state_dir, config.idle_timeout)?;
    // The code itself never goes to the log (the system log is readable by
    // more people than the state folder): only where to find it.
    if made.is_some() {
        tracing::warn!(
            "web: no admin password yet. Open the page and set one with the setup code in {} (root only; on a Pi image also meshbridge-setup-code.txt on the SD card)",
            config.state_dir.join(auth::SETUP_CODE_FILE).display()
        );
    } else if auth.setup_required() {
        tracing::warn!(
            "web: no admin password yet; the setup code is in {}",
            config.state_dir.join(auth::SETUP_CODE_FILE).display()
        );
    }
    let state = Arc::new(Web {
        auth: Mutex::new(auth),
        daemon,
        hosts: config
            .hosts
            .iter()
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
            .collect(),
        hashing: Semaphore::new(1),
        hasher: Mutex::new(start_hasher()),
    });
    Ok(router(state))
}

/// Start listening on every address in `config.listen`; requests that need
/// the daemon go to `daemon`. Addresses that cannot be bound are logged and skipped.
pub async fn start(config: &WebConfig, daemon: mpsc::Sender<Pending>) -> std::io::Result<usize> {
    let app = app(config, daemon)?;
    let limits = Arc::new(ConnLimits::default());
    let mut bound = 0;
    for &addr in &config.listen {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                bound += 1;
                tracing::info!("web page on http://{addr}/");
                tokio::spawn(serve(l, app.clone(), limits.clone()));
            }
            Err(e) => tracing::error!("web: cannot listen on {addr}: {e}"),
        }
    }
    Ok(bound)
}

/// Open connections, in total and per client address.
#[derive(Default)]
struct ConnLimits {
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; gives its place back when dropped.
struct ConnPermit {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
}

impl ConnLimits {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnPermit> {
        let mut g = self.open.lock().ok()?;
        let (total, per) = &mut *g;
        let mine = per.get(&ip).copied().unwrap_or(0);
        if *total >= MAX_CONNECTIONS || mine >= MAX_CONNECTIONS_PER_ADDRESS {
            return None;
        }
        *total += 1;
        per.insert(ip, mine + 1);
        Some(ConnPermit {
            limits: self.clone(),
            ip,
        })
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        if let Ok(mut g) = self.limits.open.lock() {
            let (total, per) = &mut *g;
            *total = total.saturating_sub(1);
            if let Some(n) = per.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    per.remove(&self.ip);
                }
            }
        }
    }
}

/// The address a connection came in on (for the `Host` check).
#[derive(Clone, Copy)]
struct LocalAddr(SocketAddr);

/// Accept connections on `l` and serve `app` on each, HTTP/1.1 only, with the
/// header timeout, the connection caps and the request timeout.
async fn serve(l: tokio::net::TcpListener, app: Router, limits: Arc<ConnLimits>) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;
    let mut refused: u64 = 0;
    loop {
        let (stream, peer) = match l.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::debug!("web: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(permit) = limits.admit(peer.ip()) else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    "web: too many open connections (from {} or in total): {refused} refused so far",
                    peer.ip()
                );
            }
            drop(stream);
            continue;
        };
        let local = stream.local_addr().ok();
        let app = app.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    if let Some(l) = local {
                        req.extensions_mut().insert(LocalAddr(l));
                    }
                    let app = app.clone();
                    async move {
                        let req = req.map(axum::body::Body::new);
                        match tokio::time::timeout(REQUEST_TIMEOUT, app.oneshot(req)).await {
                            Ok(r) => r,
                            Err(_) => Ok(error(408, "the request took too long")),
                        }
                    }
                },
            );
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(64 * 1024);
            let _ = b.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// The host part of a `Host` header: no port, no brackets, no final dot, lowercase.
fn host_only(h: &str) -> Option<String> {
    let h = h.trim();
    let host = if let Some(rest) = h.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        inside
    } else {
        match h.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return None,
            None => h,
        }
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// Is `host` (from [`host_only`]) one of the box's own? `local`: the address
/// the client connected to; `peer`: the client.
fn host_allowed(hosts: &[String], host: &str, local: Option<IpAddr>, peer: Option<IpAddr>) -> bool {
    if hosts.iter().any(|h| h == host) {
        return true;
    }
    let from_loopback = peer.is_some_and(|p| p.is_loopback());
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip) == local || (ip.is_loopback() && from_loopback);
    }
    if host == "localhost" {
        return from_loopback;
    }
    // The mDNS name after a conflict: meshbridge-2.local for meshbridge.local.
    if let Some(stem) = host.strip_suffix(".local") {
        if let Some((base, n)) = stem.rsplit_once('-') {
            if !n.is_empty() && n.len() <= 4 && n.bytes().all(|b| b.is_ascii_digit()) {
                let name = format!("{base}.local");
                return hosts.contains(&name);
            }
        }
    }
    false
}

/// DNS rebinding: a page on another name that resolves to the box must not
/// talk to it with the browser's help. 421 for any other `Host`.
async fn check_host(State(st): State<St>, req: axum::extract::Request, next: Next) -> Response {
    let raw = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let Some(host) = raw.as_deref().and_then(host_only) else {
        return error(400, "missing or malformed Host header");
    };
    let local = req.extensions().get::<LocalAddr>().map(|l| l.0.ip());
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if !host_allowed(&st.hosts, &host, local, peer) {
        tracing::debug!("web: refused Host {host:?}");
        return error(
            421,
            "this box answers only to its own names and addresses: open it by its address or meshbridge.local",
        );
    }
    next.run(req).await
}

/// JSON endpoints take only `application/json` bodies: a cross-site form or
/// `text/plain` fetch cannot post to them without a CORS preflight.
/// `/api/restore` takes the backup file as it is.
async fn check_content_type(req: axum::extract::Request, next: Next) -> Response {
    let writes = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH);
    let path = req.uri().path();
    if writes && path.starts_with("/api/") && path != "/api/restore" {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let has_body = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|n| n.trim() != "0")
            && (req.headers().contains_key(header::CONTENT_LENGTH)
                || req.headers().contains_key(header::TRANSFER_ENCODING));
        let json = ct.is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
        if (has_body || ct.is_some()) && !json {
            return error(415, "send the body as application/json");
        }
    }
    next.run(req).await
}

fn router(state: St) -> Router {
    let protected = Router::new()
        .route("/api/status", get(status))
        .route("/api/logout", post(logout))
        .route("/api/password", post(change_password))
        .route("/api/peers", post(peer_add))
        .route("/api/peers/{name}", put(peer_set).delete(peer_remove))
        .route("/api/devices/{mac}", put(device_set).delete(device_forget))
        .route("/api/settings", get(settings).put(settings_set))
        .route("/api/discovery", get(discovery))
        .route(
            "/api/discovery/airprint.mobileconfig",
            get(airprint_profile),
        )
        .route("/api/system", get(system))
        .route("/api/logs", get(logs))
        .route("/api/backup", get(backup))
        .route("/api/restore", post(restore))
        .route("/api/restart", post(restart))
        .route("/api/tailnet/logout", post(tailnet_logout))
        .route("/api/tailnet/login", post(tailnet_login))
        .route("/api/tokens", get(tokens).post(token_create))
        .route("/api/tokens/{name}", axum::routing::delete(token_delete))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_auth));
    Router::new()
        .route("/api/session", get(session))
        .route("/api/setup", post(setup))
        .route("/api/login", post(login))
        .merge(protected)
        .route(
            "/assets/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/assets/app.css",
            get(|| asset("text/css; charset=utf-8", APP_CSS)),
        )
        .route("/favicon.svg", get(|| asset("image/svg+xml", FAVICON)))
        .route("/api/{*rest}", axum::routing::any(api_not_found))
        .fallback(page)
        .layer(DefaultBodyLimit::max(256 * 1024))
        .layer(middleware::from_fn(check_content_type))
        .layer(middleware::from_fn_with_state(state.clone(), check_host))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

async fn security_headers(req: axum::extract::Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

async fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn error(status: u16, msg: impl Into<String>) -> Response {
    fail(Failure::new(status, msg))
}

fn fail(f: Failure) -> Response {
    let code = StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, Json(f)).into_response()
}

fn cookie_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

fn bearer_of(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

fn set_cookie(id: &str) -> (header::HeaderName, String) {
    (
        header::SET_COOKIE,
        format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict"),
    )
}

fn clear_cookie() -> (header::HeaderName, String) {
    (
        header::SET_COOKIE,
        format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    )
}

/// Who is asking.
enum Caller {
    Session(String),
    Token,
}

fn caller(st: &Web, headers: &HeaderMap) -> Option<(Caller, Option<String>)> {
    let mut auth = st.auth.lock().ok()?;
    auth.refresh();
    if let Some(t) = bearer_of(headers) {
        return auth.check_token(&t).then_some((Caller::Token, None));
    }
    let id = cookie_of(headers)?;
    let csrf = auth.session(&id, Instant::now())?.csrf.clone();
    Some((Caller::Session(id), Some(csrf)))
}

async fn require_auth(
    State(st): State<St>,
    mut req: axum::extract::Request,
    next: Next,
) -> Response {
    let Some((who, csrf)) = caller(&st, req.headers()) else {
        let setup = st.auth.lock().map(|a| a.setup_required()).unwrap_or(false);
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({
                "error": if setup { "set the admin password first" } else { "log in first" },
                "setup_required": setup,
            })),
        )
            .into_response();
    };
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD);
    if changes {
        if let Some(expected) = csrf {
            let got = req
                .headers()
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok());
            if got != Some(expected.as_str()) {
                return error(403, "missing or wrong CSRF token: reload the page");
            }
        }
    }
    if let Caller::Session(id) = who {
        req.extensions_mut().insert(SessionId(id));
    }
    next.run(req).await
}

#[derive(Clone)]
struct SessionId(String);

async fn call(st: &Web, request: Request) -> Result<Value, Failure> {
    let (reply, answer) = oneshot::channel();
    st.daemon
        .send(Pending { request, reply })
        .await
        .map_err(|_| Failure::new(503, "meshbridge is stopping"))?;
    match tokio::time::timeout(Duration::from_secs(15), answer).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(Failure::new(503, "meshbridge is stopping")),
        Err(_) => Err(Failure::new(504, "meshbridge did not answer in time")),
    }
}

async fn forward(st: &Web, request: Request) -> Response {
    match call(st, request).await {
        Ok(v) => Json(v).into_response(),
        Err(f) => fail(f),
    }
}

fn page_response() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        INDEX,
    )
        .into_response()
}

fn see_other(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

async fn page(State(st): State<St>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    if !(method == Method::GET || method == Method::HEAD) {
        return error(405, "method not allowed");
    }
    if !PAGES.contains(&path) {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    let setup = match st.auth.lock() {
        Ok(mut a) => {
            a.refresh();
            a.setup_required()
        }
        Err(_) => return error(500, "internal error"),
    };
    if setup {
        return if path == "/setup" {
            page_response()
        } else {
            see_other("/setup")
        };
    }
    let logged_in = caller(&st, &headers).is_some();
    match (logged_in, path) {
        (true, "/login" | "/setup") => see_other("/"),
        (false, "/setup") => see_other("/login"),
        (false, "/login") => page_response(),
        (false, _) => see_other("/login"),
        (true, _) => page_response(),
    }
}

async fn api_not_found() -> Response {
    error(404, "no such API path")
}

async fn session(State(st): State<St>, headers: HeaderMap) -> Response {
    let (setup, idle) = match st.auth.lock() {
        Ok(mut a) => {
            a.refresh();
            (a.setup_required(), a_idle(&a))
        }
        Err(_) => return error(500, "internal error"),
    };
    let me = caller(&st, &headers);
    Json(json!({
        "setup_required": setup,
        "authenticated": me.is_some(),
        "csrf": me.and_then(|(_, c)| c),
        "idle_timeout_s": idle,
    }))
    .into_response()
}

fn a_idle(a: &Auth) -> u64 {
    a.idle_timeout().as_secs()
}

#[derive(Deserialize)]
struct SetupBody {
    #[serde(default)]
    setup_code: String,
    #[serde(default)]
    password: String,
}

fn limited(wait: Duration) -> Response {
    let secs = wait.as_secs().max(1);
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, secs.to_string())],
        Json(json!({"error": format!("too many wrong attempts from your address: wait {secs} s")})),
    )
        .into_response()
}

fn body_json<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| error(400, format!("bad JSON: {e}")))
}

async fn setup(
    State(st): State<St>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    let b: SetupBody = match body_json(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let ip = from.ip();
    {
        let Ok(mut a) = st.auth.lock() else {
            return error(500, "internal error");
        };
        a.refresh();
        if !a.setup_required() {
            return error(409, "the admin password is already set: log in");
        }
        if let Err(wait) = a.login_begin(ip, Instant::now()) {
            return limited(wait);
        }
        if !a.check_setup_code(&b.setup_code) {
            tracing::warn!("web: wrong setup code from {ip}");
            return fail(Failure {
                status: 401,
                error: "wrong setup code: it is in the box's state folder (the log says where) (on a Pi image: meshbridge-setup-code.txt on the SD card)".into(),
                field: Some("setup_code".into()),
            });
        }
        if let Err(e) = auth::check_new_password(&b.password) {
            return fail(Failure::invalid("password", e));
        }
    }
    let pw = b.password;
    let hash = match on_hasher(&st, move |m| auth::hash_password_with(m, &pw)).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let Ok(mut a) = st.auth.lock() else {
        return error(500, "internal error");
    };
    if !a.setup_required() {
        return error(409, "the admin password is already set: log in");
    }
    if let Err(e) = a.store_password(hash) {
        return error(500, format!("saving the password: {e}"));
    }
    a.login_succeeded(ip);
    let (id, csrf) = a.new_session(Instant::now());
    tracing::info!("web: admin password set from {ip}");
    ([set_cookie(&id)], Json(json!({"ok": true, "csrf": csrf}))).into_response()
}

#[derive(Deserialize)]
struct LoginBody {
    #[serde(default)]
    password: String,
}

/// Wait for the one argon2 slot (a flood of logins queues here).
async fn hash_slot(st: &Web) -> Result<tokio::sync::SemaphorePermit<'_>, Response> {
    match tokio::time::timeout(HASH_WAIT, st.hashing.acquire()).await {
        Ok(Ok(p)) => Ok(p),
        _ => Err(error(503, "the box is busy checking passwords: try again")),
    }
}

async fn check_password(st: &Web, ip: std::net::IpAddr, pw: String) -> Result<(), Response> {
    let hash = {
        let Ok(mut a) = st.auth.lock() else {
            return Err(error(500, "internal error"));
        };
        a.refresh();
        if a.password_hash().is_none() {
            return Err(error(401, "set the admin password first"));
        }
        // Checked and charged before hashing: parallel attempts cannot slip past.
        if let Err(wait) = a.login_begin(ip, Instant::now()) {
            return Err(limited(wait));
        }
        a.password_hash().unwrap_or_default()
    };
    let ok = on_hasher(st, move |m| auth::verify_password_with(m, &hash, &pw)).await?;
    let Ok(mut a) = st.auth.lock() else {
        return Err(error(500, "internal error"));
    };
    if ok {
        a.login_succeeded(ip);
        Ok(())
    } else {
        tracing::warn!("web: wrong password from {ip}");
        Err(error(401, "wrong password"))
    }
}

async fn login(
    State(st): State<St>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    let b: LoginBody = match body_json(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(r) = check_password(&st, from.ip(), b.password).await {
        return r;
    }
    let Ok(mut a) = st.auth.lock() else {
        return error(500, "internal error");
    };
    let (id, csrf) = a.new_session(Instant::now());
    ([set_cookie(&id)], Json(json!({"ok": true, "csrf": csrf}))).into_response()
}

async fn logout(State(st): State<St>, req: axum::extract::Request) -> Response {
    if let Some(SessionId(id)) = req.extensions().get::<SessionId>() {
        if let Ok(mut a) = st.auth.lock() {
            a.end_session(id);
        }
    }
    ([clear_cookie()], Json(json!({"ok": true}))).into_response()
}

#[derive(Deserialize)]
struct PasswordBody {
    #[serde(default)]
    current: String,
    #[serde(default)]
    password: String,
}

async fn change_password(
    State(st): State<St>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    let b: PasswordBody = match body_json(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(e) = auth::check_new_password(&b.password) {
        return fail(Failure::invalid("password", e));
    }
    if let Err(r) = check_password(&st, from.ip(), b.current).await {
        if r.status() == StatusCode::UNAUTHORIZED {
            return fail(Failure {
                status: 422,
                error: "the current password is wrong".into(),
                field: Some("current".into()),
            });
        }
        return r;
    }
    let pw = b.password;
    let hash = match on_hasher(&st, move |m| auth::hash_password_with(m, &pw)).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let Ok(mut a) = st.auth.lock() else {
        return error(500, "internal error");
    };
    if let Err(e) = a.store_password(hash) {
        return error(500, format!("saving the password: {e}"));
    }
    let (id, csrf) = a.new_session(Instant::now());
    tracing::info!(
        "web: admin password changed from {}; other sessions ended",
        from.ip()
    );
    ([set_cookie(&id)], Json(json!({"ok": true, "csrf": csrf}))).into_response()
}

async fn status(State(st): State<St>) -> Response {
    forward(&st, Request::Status).await
}

async fn discovery(State(st): State<St>) -> Response {
    forward(&st, Request::Discovery).await
}

#[derive(Deserialize)]
struct AirPrintQuery {
    service: String,
}

/// An AirPrint profile for one printer the Discovery page lists.
async fn airprint_profile(State(st): State<St>, q: Query<AirPrintQuery>) -> Response {
    let info = match call(&st, Request::Discovery).await {
        Ok(v) => v,
        Err(f) => return fail(f),
    };
    let Ok(info) = serde_json::from_value::<crate::proto::DiscoveryInfo>(info) else {
        return error(500, "daemon answer is not discovery info");
    };
    let found = info
        .services
        .iter()
        .filter(|s| s.instance == q.service)
        .find_map(crate::airprint::mobileconfig);
    match found {
        Some(profile) => (
            [
                (header::CONTENT_TYPE, "application/x-apple-aspen-config"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"printer.mobileconfig\"",
                ),
                (header::CACHE_CONTROL, "no-store"),
            ],
            profile,
        )
            .into_response(),
        None => error(
            404,
            "no printer by that name with an IPv4 address (see GET /api/discovery)",
        ),
    }
}

async fn system(State(st): State<St>) -> Response {
    forward(&st, Request::System).await
}

async fn settings(State(st): State<St>) -> Response {
    forward(&st, Request::Settings).await
}

async fn settings_set(State(st): State<St>, body: Bytes) -> Response {
    let changes: serde_json::Map<String, Value> = match body_json(&body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    forward(&st, Request::SettingsSet { changes }).await
}

#[derive(Deserialize)]
struct PeerAddBody {
    #[serde(default)]
    name: String,
    #[serde(default)]
    route_all: bool,
    #[serde(default)]
    endpoint: Option<String>,
}

async fn peer_add(State(st): State<St>, body: Bytes) -> Response {
    let b: PeerAddBody = match body_json(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let endpoint = b.endpoint.filter(|e| !e.trim().is_empty());
    let v = match call(
        &st,
        Request::PeerAdd {
            name: b.name,
            route_all: b.route_all,
            endpoint,
        },
    )
    .await
    {
        Ok(v) => v,
        Err(f) => return fail(f),
    };
    let added: PeerAdded = match serde_json::from_value(v) {
        Ok(a) => a,
        Err(e) => return error(500, format!("daemon answer: {e}")),
    };
    let qr = crate::peerconf::qr_svg(&added.config);
    Json(json!({
        "peer": added.peer,
        "config": added.config,
        "filename": added.filename,
        "qr_svg": qr,
    }))
    .into_response()
}

#[derive(Deserialize)]
struct PeerSetBody {
    enabled: bool,
}

async fn peer_set(State(st): State<St>, Path(name): Path<String>, body: Bytes) -> Response {
    let b: PeerSetBody = match body_json(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    forward(
        &st,
        Request::PeerSet {
            name,
            enabled: b.enabled,
        },
    )
    .await
}

async fn peer_remove(State(st): State<St>, Path(name): Path<String>) -> Response {
    forward(&st, Request::PeerRemove { name }).await
}

#[derive(Deserialize)]
struct DeviceBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    pin: Option<bool>,
    #[serde(default)]
    tailnet: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
}

async fn device_set(State(st): State<St>, Path(mac): Path<String>, body: Bytes) -> Response {
    let b: DeviceBody = match body_json(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    forward(
        &st,
        Request::DeviceSet {
            mac,
            name: b.name,
            pin: b.pin,
            tailnet: b.tailnet,
            tags: b.tags,
        },
    )
    .await
}

async fn device_forget(State(st): State<St>, Path(mac): Path<String>) -> Response {
    forward(&st, Request::DeviceForget { mac }).await
}

#[derive(Deserialize)]
struct LogQuery {
    lines: Option<usize>,
    filter: Option<String>,
}

async fn logs(Query(q): Query<LogQuery>) -> Response {
    let n = q
        .lines
        .unwrap_or(crate::logbuf::KEEP)
        .min(crate::logbuf::KEEP);
    Json(json!({"lines": crate::logbuf::lines(n, q.filter.as_deref())})).into_response()
}

async fn backup(State(st): State<St>) -> Response {
    match call(&st, Request::Backup).await {
        Ok(Value::String(text)) => (
            [
                (header::CONTENT_TYPE, "application/toml; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"meshbridge-backup.toml\"",
                ),
                (header::CACHE_CONTROL, "no-store"),
            ],
            text,
        )
            .into_response(),
        Ok(_) => error(500, "daemon answer is not text"),
        Err(f) => fail(f),
    }
}

async fn restore(State(st): State<St>, body: Bytes) -> Response {
    let Ok(config) = String::from_utf8(body.to_vec()) else {
        return fail(Failure::invalid("config", "the backup is not UTF-8 text"));
    };
    forward(&st, Request::Restore { config }).await
}

async fn restart(State(st): State<St>) -> Response {
    forward(&st, Request::Restart).await
}

async fn tailnet_logout(State(st): State<St>) -> Response {
    forward(&st, Request::TailnetLogout).await
}

/// The largest body `POST /api/tailnet/login` reads.
const MAX_LOGIN_BODY: usize = 4096;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TailnetLoginBody {
    #[serde(default)]
    auth_key: Option<String>,
}

/// Join the tailnet again: `{"auth_key": "..."}`, or `{}` / no body for
/// the configured key or an interactive login. Checked here and again by
/// the daemon; a bad body changes nothing.
async fn tailnet_login(State(st): State<St>, body: Bytes) -> Response {
    if body.len() > MAX_LOGIN_BODY {
        return error(
            413,
            format!(
                "the body is larger than {MAX_LOGIN_BODY} bytes: send {{\"auth_key\": \"...\"}}"
            ),
        );
    }
    let b: TailnetLoginBody = if body.iter().all(u8::is_ascii_whitespace) {
        TailnetLoginBody::default()
    } else {
        match body_json(&body) {
            Ok(b) => b,
            Err(r) => return r,
        }
    };
    let auth_key = match b.auth_key.as_deref().map(crate::proto::check_auth_key) {
        None => None,
        Some(Ok(k)) => Some(crate::proto::SecretText(k.to_string())),
        Some(Err(e)) => return fail(Failure::invalid("auth_key", e)),
    };
    forward(&st, Request::TailnetLogin { auth_key }).await
}

async fn tokens(State(st): State<St>) -> Response {
    match st.auth.lock() {
        Ok(a) => Json(json!(a.token_list())).into_response(),
        Err(_) => error(500, "internal error"),
    }
}

#[derive(Deserialize)]
struct TokenBody {
    #[serde(default)]
    name: String,
}

async fn token_create(State(st): State<St>, body: Bytes) -> Response {
    let b: TokenBody = match body_json(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Ok(mut a) = st.auth.lock() else {
        return error(500, "internal error");
    };
    match a.create_token(&b.name, SystemTime::now()) {
        Ok(token) => Json(json!({"name": b.name.trim(), "token": token})).into_response(),
        Err(e) => fail(Failure::invalid("name", e)),
    }
}

async fn token_delete(State(st): State<St>, Path(name): Path<String>) -> Response {
    let Ok(mut a) = st.auth.lock() else {
        return error(500, "internal error");
    };
    match a.delete_token(&name) {
        Ok(true) => Json(json!({"ok": true})).into_response(),
        Ok(false) => error(404, format!("no token called {name:?}")),
        Err(e) => error(500, format!("saving: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt as _;

    fn hosts() -> Vec<String> {
        [
            "10.77.1.1",
            "10.77.0.1",
            "meshbridge",
            "meshbridge.local",
            "meshbridge.mesh.home.arpa",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn allowed(h: &str, local: Option<&str>, peer: &str) -> bool {
        let Some(host) = host_only(h) else {
            return false;
        };
        host_allowed(
            &hosts(),
            &host,
            local.map(|l| l.parse().unwrap()),
            Some(peer.parse().unwrap()),
        )
    }

    #[test]
    fn host_names_are_the_boxs_own_only() {
        let dev = "10.77.1.100";
        for good in [
            "10.77.1.1",
            "10.77.1.1:80",
            "meshbridge.local",
            "MESHBRIDGE.local.",
            "meshbridge-2.local",
            "meshbridge.mesh.home.arpa:8080",
            "meshbridge",
        ] {
            assert!(allowed(good, Some("10.77.1.1"), dev), "{good}");
        }
        for bad in [
            "rebind.example",
            "10.77.1.1.rebind.example",
            "meshbridge-x.local",
            "meshbridge-2.evil",
            "printer.local",
            "localhost",
            "127.0.0.1",
            "10.77.1.1:http",
            "10.77.1.7",
            "",
            "[::1]:80",
        ] {
            assert!(!allowed(bad, Some("10.77.1.1"), dev), "{bad}");
        }
        // The address the client connected to, and loopback from loopback.
        assert!(allowed("192.168.1.2", Some("192.168.1.2"), "192.168.1.50"));
        assert!(allowed("[fd77::1]:80", Some("fd77::1"), "fd77::2"));
        assert!(allowed("localhost:8080", Some("127.0.0.1"), "127.0.0.1"));
        assert!(allowed("[::1]", Some("::1"), "::1"));
    }

    fn test_app() -> Router {
        let dir = std::env::temp_dir().join(format!("mb-web-srv-{}", std::process::id()));
        let (tx, _rx) = mpsc::channel(1);
        app(
            &WebConfig {
                listen: vec![],
                idle_timeout: Duration::from_secs(60),
                state_dir: dir,
                hosts: hosts(),
            },
            tx,
        )
        .unwrap()
    }

    async fn status_of(r: axum::http::Request<Body>) -> u16 {
        let mut r = r;
        r.extensions_mut().insert(ConnectInfo(
            "10.77.1.100:40000".parse::<SocketAddr>().unwrap(),
        ));
        test_app().oneshot(r).await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn rebinding_hosts_and_simple_posts_are_refused() {
        let req = |host: &str, ct: &str| {
            axum::http::Request::post("/api/login")
                .header("host", host)
                .header("content-type", ct)
                .body(Body::from("{\"password\":\"x\"}"))
                .unwrap()
        };
        assert_eq!(
            status_of(req("rebind.example", "application/json")).await,
            421
        );
        assert_eq!(status_of(req("10.77.1.1", "text/plain")).await, 415);
        assert_eq!(
            status_of(req("10.77.1.1", "application/x-www-form-urlencoded")).await,
            415
        );
        // The right type gets as far as the password check (none is set: 401).
        assert_eq!(
            status_of(req("10.77.1.1", "application/json; charset=utf-8")).await,
            401
        );
        let get = axum::http::Request::get("/api/session")
            .body(Body::empty())
            .unwrap();
        assert_eq!(status_of(get).await, 400, "no Host at all");
    }
}
