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
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot};

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

/// What the handlers share.
pub struct Web {
    auth: Mutex<Auth>,
    daemon: mpsc::Sender<Pending>,
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
}

/// The page and the API as a router (what [`start`] serves; tests and the
/// fuzzer drive it directly). Makes the setup code on first use.
pub fn app(config: &WebConfig, daemon: mpsc::Sender<Pending>) -> std::io::Result<Router> {
    let (auth, made) = Auth::open(&config.state_dir, config.idle_timeout)?;
    if let Some(code) = made {
        tracing::warn!(
            "web: no admin password yet. Open the page and set one with the setup code {code} (also in {})",
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
    });
    Ok(router(state))
}

/// Start listening on every address in `config.listen`; requests that need
/// the daemon go to `daemon`. Addresses that cannot be bound are logged and skipped.
pub async fn start(config: &WebConfig, daemon: mpsc::Sender<Pending>) -> std::io::Result<usize> {
    let app = app(config, daemon)?;
    let mut bound = 0;
    for &addr in &config.listen {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                bound += 1;
                tracing::info!("web page on http://{addr}/");
                let app = app.clone();
                tokio::spawn(async move {
                    if let Err(e) =
                        axum::serve(l, app.into_make_service_with_connect_info::<SocketAddr>())
                            .await
                    {
                        tracing::error!("web server on {addr}: {e}");
                    }
                });
            }
            Err(e) => tracing::error!("web: cannot listen on {addr}: {e}"),
        }
    }
    Ok(bound)
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
        .route("/api/system", get(system))
        .route("/api/logs", get(logs))
        .route("/api/backup", get(backup))
        .route("/api/restore", post(restore))
        .route("/api/restart", post(restart))
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
        if let Err(wait) = a.login_allowed(ip, Instant::now()) {
            return limited(wait);
        }
        if !a.check_setup_code(&b.setup_code) {
            a.login_failed(ip, Instant::now());
            tracing::warn!("web: wrong setup code from {ip}");
            return fail(Failure {
                status: 401,
                error: "wrong setup code: it is in the log and in the box's state folder (on a Pi image: meshbridge-setup-code.txt on the SD card)".into(),
                field: Some("setup_code".into()),
            });
        }
        if let Err(e) = auth::check_new_password(&b.password) {
            return fail(Failure::invalid("password", e));
        }
    }
    let pw = b.password;
    let Ok(hash) = tokio::task::spawn_blocking(move || auth::hash_password(&pw)).await else {
        return error(500, "hashing failed");
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

async fn check_password(st: &Web, ip: std::net::IpAddr, pw: String) -> Result<(), Response> {
    let hash = {
        let Ok(mut a) = st.auth.lock() else {
            return Err(error(500, "internal error"));
        };
        a.refresh();
        if let Err(wait) = a.login_allowed(ip, Instant::now()) {
            return Err(limited(wait));
        }
        match a.password_hash() {
            Some(h) => h,
            None => return Err(error(401, "set the admin password first")),
        }
    };
    let ok = tokio::task::spawn_blocking(move || auth::verify_password(&hash, &pw))
        .await
        .unwrap_or(false);
    let Ok(mut a) = st.auth.lock() else {
        return Err(error(500, "internal error"));
    };
    if ok {
        a.login_succeeded(ip);
        Ok(())
    } else {
        a.login_failed(ip, Instant::now());
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
    let Ok(hash) = tokio::task::spawn_blocking(move || auth::hash_password(&pw)).await else {
        return error(500, "hashing failed");
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

async fn tokens(State(st): State<St>) -> Response {
    match st.auth.lock() {
        Ok(a) => Json(json!(a.tokens())).into_response(),
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
