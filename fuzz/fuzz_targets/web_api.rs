//! Arbitrary HTTP requests (method, path, headers, body) to the web page's
//! router, logged out, with a session cookie, or with an API token: every
//! request gets an answer, never a panic. The daemon side answers 503.
#![no_main]

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use meshbridge_web::proto::{Failure, Pending};
use meshbridge_web::server::{app, WebConfig};
use std::net::SocketAddr;
use std::sync::OnceLock;
use tower::ServiceExt;

struct World {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    cookie: String,
    csrf: String,
    token: String,
}

fn send(w_rt: &tokio::runtime::Runtime, router: &axum::Router, req: Request<Body>) -> (u16, Vec<(String, String)>, Vec<u8>) {
    w_rt.block_on(async {
        let r = router.clone().oneshot(req).await.expect("infallible");
        let status = r.status().as_u16();
        let headers = r
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap_or_default();
        (status, headers, body.to_vec())
    })
}

fn with_peer(mut req: Request<Body>) -> Request<Body> {
    let from: SocketAddr = "10.77.1.100:40000".parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(from));
    if !req.headers().contains_key("host") {
        req.headers_mut().insert("host", axum::http::HeaderValue::from_static("10.77.1.1"));
    }
    req
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = std::env::temp_dir().join(format!("mb-fuzz-web-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Pending>(16);
        let router = rt.block_on(async {
            tokio::spawn(async move {
                while let Some(p) = rx.recv().await {
                    let _ = p.reply.send(Err(Failure::new(503, "fuzzing")));
                }
            });
            app(
                &WebConfig {
                    listen: vec![],
                    idle_timeout: std::time::Duration::from_secs(3600),
                    state_dir: dir.clone(),
                    hosts: vec!["10.77.1.1".into()],
                },
                tx,
            )
            .unwrap()
        });
        let code = std::fs::read_to_string(dir.join("setup-code")).unwrap();
        let body = format!("{{\"setup_code\":\"{}\",\"password\":\"fuzzing password\"}}", code.trim());
        let req = Request::post("/api/setup")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let (status, headers, body) = send(&rt, &router, with_peer(req));
        assert_eq!(status, 200);
        let cookie = headers
            .iter()
            .find(|(k, _)| k == "set-cookie")
            .map(|(_, v)| v.split(';').next().unwrap().to_string())
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let csrf = v["csrf"].as_str().unwrap().to_string();
        let req = Request::post("/api/tokens")
            .header("cookie", &cookie)
            .header("x-csrf-token", &csrf)
            .body(Body::from("{\"name\":\"fuzz\"}"))
            .unwrap();
        let (status, _, body) = send(&rt, &router, with_peer(req));
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let token = v["token"].as_str().unwrap().to_string();
        World { rt, router, cookie, csrf, token }
    })
}

const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"];

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let w = world();
    let flags = data[0];
    let method = METHODS[usize::from(data[1]) % METHODS.len()];
    let text = String::from_utf8_lossy(&data[2..]);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let path = lines.next().unwrap_or("/");
    let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
    let mut b = Request::builder().method(method).uri(path.as_str());
    if b.uri_ref().is_none() {
        return;
    }
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            b = b.header(k.trim(), v.trim());
        }
    }
    if flags & 1 != 0 {
        b = b.header("cookie", w.cookie.as_str());
    }
    if flags & 2 != 0 {
        b = b.header("x-csrf-token", w.csrf.as_str());
    }
    if flags & 4 != 0 {
        b = b.header("authorization", format!("Bearer {}", w.token));
    }
    // Changing the password or logging out would end the fuzzer's session.
    if path.starts_with("/api/password") || path.starts_with("/api/logout") {
        return;
    }
    let Ok(req) = b.body(Body::from(body.as_bytes().to_vec())) else { return };
    let (status, _, _) = send(&w.rt, &w.router, with_peer(req));
    assert!((200..600).contains(&status));
});
