//! An async shell around the sans-IO core (feature `client`): tokio TCP,
//! the ts2021 upgrade, HTTP/2 (the `h2` crate) over the Noise records.
//!
//! The daemon's control task (`bridge/src/tailnet.rs`), the
//! `tailnet-probe` example and the tests use it.
//!
//! `http://` control URLs: plain TCP. `https://` control URLs: the same
//! requests (`GET /key`, the `/ts2021` upgrade) over TLS, verified with the
//! caller's [`crate::tls`] configuration, as Tailscale's `controlhttp`
//! does; never a fallback to plaintext. Tailscale only logs a certificate
//! problem on the upgrade (Noise authenticates the server anyway); here it
//! fails the connection, which is stricter and tells the user at once.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::keys::{MachinePrivate, MachinePublic, NodePublic};
use crate::mapstream::{decode_message, FrameDecoder, FrameError, MessageError};
use crate::noise::{ClientHandshake, HandshakeError, Transport, TransportError};
use crate::tailcfg::{
    MapRequest, MapResponse, RegisterRequest, RegisterResponse, CAPABILITY_VERSION, LB_HEADER,
};
use crate::ts2021::{self, ControlKeys, EarlyNoise, EarlyPayloadFilter, HttpError};

/// The largest non-streaming response body read.
const MAX_BODY: usize = 1 << 20;

/// Talking to the control server failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The control URL is not usable.
    #[error("control URL {0:?} is not supported (want http://host[:port] or https://host[:port])")]
    Url(String),
    /// The TLS handshake of an `https://` control URL failed.
    #[error("TLS to {server}: {err}")]
    Tls {
        /// `host:port`.
        server: String,
        /// What failed.
        err: String,
    },
    /// The control server's certificate is not trusted: no connection.
    #[error("TLS to {server}: the server's certificate is not trusted ({err}); if the control server uses a private CA, point tailnet.ca_file or SSL_CERT_FILE to that CA's certificate")]
    Untrusted {
        /// `host:port`.
        server: String,
        /// rustls' reason.
        err: String,
    },
    /// Socket error.
    #[error("control connection: {0}")]
    Io(#[from] io::Error),
    /// HTTP/1.1 step.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// Noise handshake.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// HTTP/2.
    #[error("HTTP/2 over the control connection: {0}")]
    H2(#[from] h2::Error),
    /// A request got an error status.
    #[error("control server answered {path} with HTTP {status}: {body}")]
    Status {
        /// The request path.
        path: String,
        /// The status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// A JSON body did not parse.
    #[error("control server sent invalid JSON for {path}: {err}")]
    Json {
        /// The request path.
        path: String,
        /// The parse error.
        err: String,
    },
    /// The map stream's framing broke.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A map message did not decode.
    #[error(transparent)]
    Message(#[from] MessageError),
}

/// A parsed `http://host[:port]` or `https://host[:port]` control URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlUrl {
    /// The URL as given, without a trailing slash (the key for "registered
    /// with").
    pub url: String,
    /// The Host header value (`host` or `host:port`).
    pub host: String,
    /// Where to connect (`host:port`; port 80 or 443 when not given).
    pub connect: String,
    /// `https://`: TLS under the requests.
    pub tls: bool,
    /// The name the server's certificate must carry (the host without
    /// port and brackets: a DNS name or an IP address).
    pub server_name: String,
}

impl ControlUrl {
    /// Parses `http://host[:port][/]` and `https://host[:port][/]`.
    pub fn parse(url: &str) -> Result<Self, ClientError> {
        let bad = || ClientError::Url(url.to_string());
        let trimmed = url.trim_end_matches('/');
        let (rest, tls) = match trimmed.strip_prefix("http://") {
            Some(r) => (r, false),
            None => (trimmed.strip_prefix("https://").ok_or_else(bad)?, true),
        };
        if rest.is_empty() || rest.contains(['/', '@', '?', '#', ' ']) {
            return Err(bad());
        }
        let (name, port) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains(']') => {
                let port = rest[i + 1..].parse::<u16>().map_err(|_| bad())?;
                (&rest[..i], Some(port))
            }
            _ => (rest, None),
        };
        let server_name = match name.strip_prefix('[') {
            Some(v6) => v6.strip_suffix(']').ok_or_else(bad)?,
            None if name.contains([':', '[', ']']) => return Err(bad()),
            None => name,
        };
        if server_name.is_empty() || port == Some(0) {
            return Err(bad());
        }
        let default_port = if tls { 443 } else { 80 };
        Ok(Self {
            url: trimmed.to_string(),
            host: rest.to_string(),
            connect: format!("{name}:{}", port.unwrap_or(default_port)),
            tls,
            server_name: server_name.to_string(),
        })
    }
}

/// The byte stream under the requests: TCP, or TLS over TCP.
pub enum ControlStream {
    /// `http://`.
    Tcp(TcpStream),
    /// `https://`.
    Tls(Box<TlsStream<TcpStream>>),
}

impl From<TcpStream> for ControlStream {
    fn from(tcp: TcpStream) -> Self {
        ControlStream::Tcp(tcp)
    }
}

impl AsyncRead for ControlStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ControlStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            ControlStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ControlStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ControlStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            ControlStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ControlStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            ControlStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ControlStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            ControlStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Connects to the control server: TCP, then TLS for an `https://` URL
/// (`tls` must then be given: there is no plaintext fallback).
pub async fn dial(
    url: &ControlUrl,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<ControlStream, ClientError> {
    if url.tls && tls.is_none() {
        return Err(ClientError::Tls {
            server: url.connect.clone(),
            err: "no TLS configuration given for an https:// control URL".into(),
        });
    }
    let tcp = TcpStream::connect(&url.connect).await?;
    tcp.set_nodelay(true)?;
    let Some(config) = tls.filter(|_| url.tls) else {
        return Ok(ControlStream::Tcp(tcp));
    };
    let name = rustls::pki_types::ServerName::try_from(url.server_name.clone()).map_err(|e| {
        ClientError::Tls {
            server: url.connect.clone(),
            err: format!("{:?} is not a TLS server name: {e}", url.server_name),
        }
    })?;
    match tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
    {
        Ok(s) => Ok(ControlStream::Tls(Box::new(s))),
        Err(e) if crate::tls::is_certificate_error(&e) => Err(ClientError::Untrusted {
            server: url.connect.clone(),
            err: e.to_string(),
        }),
        Err(e) => Err(ClientError::Tls {
            server: url.connect.clone(),
            err: e.to_string(),
        }),
    }
}

/// `GET /key`: the control server's Noise key (over TLS for `https://`).
pub async fn fetch_control_key(
    url: &ControlUrl,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<ControlKeys, ClientError> {
    let mut tcp = dial(url, tls).await?;
    tcp.write_all(&ts2021::key_request(&url.host, CAPABILITY_VERSION))
        .await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tcp.read(&mut chunk).await?;
        buf.extend_from_slice(&chunk[..n]);
        if let Some(keys) = ts2021::parse_key_response(&buf, n == 0)? {
            return Ok(keys);
        }
    }
}

/// `HEAD url` over HTTP/1.1 (TLS for `https://`, verified with `tls`): the
/// answer's status code. For the control server's ping request
/// ([`crate::control::ping_answer`]); reads only the answer's header.
pub async fn head(url: &str, tls: Option<&Arc<rustls::ClientConfig>>) -> Result<u16, ClientError> {
    let bad = || ClientError::Url(url.to_string());
    let scheme_end = url.find("://").ok_or_else(bad)? + 3;
    let (origin, path) = match url[scheme_end..].find(['/', '?']) {
        Some(i) => url.split_at(scheme_end + i),
        None => (url, "/"),
    };
    let path = match path.strip_prefix('?') {
        Some(_) => format!("/{path}"),
        None => path.to_string(),
    };
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let target = ControlUrl::parse(origin)?;
    let mut s = dial(&target, tls).await?;
    let req = format!(
        "HEAD {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: meshbridge\r\nConnection: close\r\n\r\n",
        target.host
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        let n = s.read(&mut chunk).await?;
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => return Ok(resp.code.unwrap_or(0)),
            Ok(httparse::Status::Partial) if n > 0 && buf.len() < 16 * 1024 => {}
            Ok(httparse::Status::Partial) => return Err(HttpError::Truncated.into()),
            Err(_) => return Err(HttpError::Truncated.into()),
        }
    }
}

/// The Noise record layer as an async byte stream, for `h2`.
pub struct NoiseIo {
    tcp: ControlStream,
    transport: Transport,
    early: EarlyPayloadFilter,
    early_seen: Arc<Mutex<Option<EarlyNoise>>>,
    plain: Vec<u8>,
    plain_pos: usize,
    out: Vec<u8>,
    out_pos: usize,
    read_buf: Box<[u8]>,
    eof: bool,
}

fn io_err<E: std::error::Error + Send + Sync + 'static>(e: E) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl NoiseIo {
    /// Wraps a stream (TCP or TLS) whose Noise handshake is done.
    /// `leftover`: bytes already received after the handshake.
    /// `early_payload`: whether the peer may start with an early payload
    /// (true on the client side).
    pub fn from_parts(
        tcp: impl Into<ControlStream>,
        transport: Transport,
        leftover: &[u8],
        early_payload: bool,
    ) -> io::Result<Self> {
        let early = if early_payload {
            EarlyPayloadFilter::new()
        } else {
            EarlyPayloadFilter::passthrough()
        };
        let mut io = NoiseIo {
            tcp: tcp.into(),
            transport,
            early,
            early_seen: Arc::new(Mutex::new(None)),
            plain: Vec::new(),
            plain_pos: 0,
            out: Vec::new(),
            out_pos: 0,
            read_buf: vec![0u8; 16 * 1024].into_boxed_slice(),
            eof: false,
        };
        io.take_plaintext(leftover)?;
        Ok(io)
    }

    fn take_plaintext(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut dec = Vec::with_capacity(bytes.len());
        self.transport
            .decrypt(bytes, &mut dec)
            .map_err(io_err::<TransportError>)?;
        if let Some(e) = self.early.push(&dec, &mut self.plain).map_err(io_err)? {
            if let Ok(mut slot) = self.early_seen.lock() {
                *slot = Some(e);
            }
        }
        Ok(())
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.out[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.out.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for NoiseIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plain_pos < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.plain_pos);
                buf.put_slice(&this.plain[this.plain_pos..this.plain_pos + n]);
                this.plain_pos += n;
                if this.plain_pos == this.plain.len() {
                    this.plain.clear();
                    this.plain_pos = 0;
                    crate::trim_buffer(&mut this.plain);
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut tmp = ReadBuf::new(&mut this.read_buf);
            ready!(Pin::new(&mut this.tcp).poll_read(cx, &mut tmp))?;
            let n = tmp.filled().len();
            if n == 0 {
                this.eof = true;
                continue;
            }
            let got = this.read_buf[..n].to_vec();
            this.take_plaintext(&got)?;
        }
    }
}

impl AsyncWrite for NoiseIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        let n = buf.len().min(64 * 1024);
        this.transport
            .encrypt(&buf[..n], &mut this.out)
            .map_err(io_err)?;
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

/// TCP (and TLS for `https://`), upgrade, Noise handshake: the record
/// layer, ready for HTTP/2.
pub async fn dial_noise(
    url: &ControlUrl,
    tls: Option<&Arc<rustls::ClientConfig>>,
    machine: &MachinePrivate,
    control: MachinePublic,
    ephemeral: MachinePrivate,
) -> Result<NoiseIo, ClientError> {
    let mut tcp = dial(url, tls).await?;
    let (mut hs, init) = ClientHandshake::new(machine, control, CAPABILITY_VERSION, ephemeral)?;
    tcp.write_all(&ts2021::upgrade_request(&url.host, &init))
        .await?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut header_len = None;
    loop {
        let n = tcp.read(&mut chunk).await?;
        buf.extend_from_slice(&chunk[..n]);
        if header_len.is_none() {
            header_len = ts2021::parse_upgrade_response(&buf, n == 0)?;
        }
        if let Some(h) = header_len {
            if let Some((transport, used)) = hs.read_response(&buf[h..])? {
                return Ok(NoiseIo::from_parts(tcp, transport, &buf[h + used..], true)?);
            }
        }
        if n == 0 {
            return Err(HttpError::Truncated.into());
        }
    }
}

/// A control connection: HTTP/2 over Noise.
pub struct ControlClient {
    send: h2::client::SendRequest<Bytes>,
    host: String,
    early: Arc<Mutex<Option<EarlyNoise>>>,
    conn_task: tokio::task::JoinHandle<()>,
}

impl Drop for ControlClient {
    fn drop(&mut self) {
        self.conn_task.abort();
    }
}

impl ControlClient {
    /// Dials the control server (key fetched beforehand) and starts HTTP/2.
    /// `tls`: the TLS configuration, needed for an `https://` URL.
    pub async fn connect(
        url: &ControlUrl,
        tls: Option<&Arc<rustls::ClientConfig>>,
        machine: &MachinePrivate,
        control: MachinePublic,
        ephemeral: MachinePrivate,
    ) -> Result<Self, ClientError> {
        let io = dial_noise(url, tls, machine, control, ephemeral).await?;
        let early = io.early_seen.clone();
        let (send, conn) = h2::client::Builder::new().handshake::<_, Bytes>(io).await?;
        let conn_task = tokio::spawn(async move {
            // Ends when the connection closes; errors surface on requests.
            let _ = conn.await;
        });
        Ok(Self {
            send,
            host: url.host.clone(),
            early,
            conn_task,
        })
    }

    /// The early payload, once it arrived.
    pub fn early_payload(&self) -> Option<EarlyNoise> {
        self.early.lock().ok().and_then(|g| g.clone())
    }

    async fn post(
        &mut self,
        path: &str,
        node_key: NodePublic,
        body: &impl Serialize,
    ) -> Result<h2::RecvStream, ClientError> {
        let json = serde_json::to_vec(body).map_err(|e| ClientError::Json {
            path: path.into(),
            err: e.to_string(),
        })?;
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("https://{}{}", self.host, path))
            .header("content-type", "application/json")
            .header(LB_HEADER, node_key.to_string())
            .body(())
            .map_err(|e| ClientError::Url(e.to_string()))?;
        let mut send = self.send.clone().ready().await?;
        let (resp, mut stream) = send.send_request(req, false)?;
        stream.send_data(Bytes::from(json), true)?;
        let resp = resp.await?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        if status != 200 {
            let text = read_body(&mut body, 512).await.unwrap_or_default();
            let text = String::from_utf8_lossy(&text)
                .trim()
                .chars()
                .take(200)
                .collect();
            return Err(ClientError::Status {
                path: path.into(),
                status,
                body: text,
            });
        }
        Ok(body)
    }

    /// `POST /machine/register`.
    pub async fn register(
        &mut self,
        req: &RegisterRequest,
    ) -> Result<RegisterResponse, ClientError> {
        let path = "/machine/register";
        let mut body = self.post(path, req.node_key, req).await?;
        let bytes = read_body(&mut body, MAX_BODY).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Json {
            path: path.into(),
            err: e.to_string(),
        })
    }

    /// `POST /machine/map` with streaming: the stream of map messages.
    pub async fn map_stream(&mut self, req: &MapRequest) -> Result<MapStream, ClientError> {
        let body = self.post("/machine/map", req.node_key, req).await?;
        Ok(MapStream {
            body,
            decoder: FrameDecoder::default(),
            done: false,
        })
    }
}

async fn read_body(body: &mut h2::RecvStream, limit: usize) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if out.len() + chunk.len() > limit {
            out.extend_from_slice(&chunk[..limit - out.len()]);
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The open map stream.
pub struct MapStream {
    body: h2::RecvStream,
    decoder: FrameDecoder,
    done: bool,
}

impl MapStream {
    /// The next message; `None` when the server ended the stream. Waits as
    /// long as it takes: wrap it in a timeout of
    /// [`crate::mapstream::MAP_WATCHDOG`].
    pub async fn next(&mut self) -> Result<Option<MapResponse>, ClientError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(Some(decode_message(&frame)?));
            }
            if self.done {
                self.decoder.finish()?;
                return Ok(None);
            }
            match self.body.data().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    let _ = self.body.flow_control().release_capacity(chunk.len());
                    self.decoder.push(&chunk)?;
                }
                None => self.done = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_urls() {
        let u = ControlUrl::parse("http://10.99.0.1:8080/").unwrap();
        assert_eq!(
            (u.url.as_str(), u.host.as_str(), u.connect.as_str()),
            ("http://10.99.0.1:8080", "10.99.0.1:8080", "10.99.0.1:8080")
        );
        assert!(!u.tls);
        assert_eq!(u.server_name, "10.99.0.1");
        let u = ControlUrl::parse("http://hs.example").unwrap();
        assert_eq!(u.connect, "hs.example:80");
        let u = ControlUrl::parse("http://[fd00::1]:8080").unwrap();
        assert_eq!(u.connect, "[fd00::1]:8080");
        let u = ControlUrl::parse("http://[fd00::1]").unwrap();
        assert_eq!(u.connect, "[fd00::1]:80");
        for bad in [
            "hs.example",
            "ftp://hs.example",
            "http://",
            "https://",
            "http://a/b",
            "https://a/b",
            "http://u@h",
            "http://h:port",
            "http://h:0",
            "http://h:99999",
            "http://fd00::1",
            "http://[fd00::1",
            "https://[]:443",
            "https://h?x",
        ] {
            assert!(ControlUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn https_control_urls_default_to_port_443_and_verify_the_host_name() {
        let u = ControlUrl::parse("https://headscale.example.com/").unwrap();
        assert!(u.tls);
        assert_eq!(u.url, "https://headscale.example.com");
        assert_eq!(u.host, "headscale.example.com", "Host header without :443");
        assert_eq!(u.connect, "headscale.example.com:443");
        assert_eq!(u.server_name, "headscale.example.com");
        let u = ControlUrl::parse("https://10.99.0.1:8443").unwrap();
        assert_eq!(
            (u.host.as_str(), u.connect.as_str(), u.server_name.as_str()),
            ("10.99.0.1:8443", "10.99.0.1:8443", "10.99.0.1")
        );
        let u = ControlUrl::parse("https://[fd00::1]").unwrap();
        assert_eq!(
            (u.connect.as_str(), u.server_name.as_str()),
            ("[fd00::1]:443", "fd00::1")
        );
    }

    #[tokio::test]
    async fn head_sends_the_path_and_query_and_reads_the_status() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 512];
            while !got.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8(got).unwrap()
        });
        let status = head(&format!("http://{addr}/machine/ping-response?id=x1"), None)
            .await
            .unwrap();
        assert_eq!(status, 404);
        let req = server.await.unwrap();
        assert!(
            req.starts_with(&format!(
                "HEAD /machine/ping-response?id=x1 HTTP/1.1\r\nHost: {addr}\r\n"
            )),
            "{req}"
        );
        assert!(head("ftp://x/", None).await.is_err());
        assert!(head("http://x/a b", None).await.is_err());
    }

    #[tokio::test]
    async fn an_https_url_without_a_tls_configuration_never_goes_plaintext() {
        // A listener that would accept the plaintext request: it must not
        // even be dialled.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url =
            ControlUrl::parse(&format!("https://{}", listener.local_addr().unwrap())).unwrap();
        let e = fetch_control_key(&url, None).await.unwrap_err();
        assert!(matches!(e, ClientError::Tls { .. }), "{e}");
        let accepted =
            tokio::time::timeout(std::time::Duration::from_millis(100), listener.accept()).await;
        assert!(accepted.is_err(), "nothing connected");
    }

    #[tokio::test]
    async fn an_https_url_starts_with_a_tls_handshake_and_a_plaintext_answer_fails_it() {
        // A server that answers in plaintext HTTP: the client sent a TLS
        // ClientHello, fails as TLS and never reads the HTTP answer. (An
        // untrusted certificate is tested end to end against Headscale:
        // tests/e2e/test_tailnet_tls.py.)
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 5];
            let _ = s.read_exact(&mut buf).await;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
            buf
        });
        let url = ControlUrl::parse(&format!("https://{addr}")).unwrap();
        let roots = crate::tls::Roots {
            store: rustls::RootCertStore::empty(),
            sources: Vec::new(),
        };
        let config = crate::tls::verified(roots).unwrap();
        let e = fetch_control_key(&url, Some(&config)).await.unwrap_err();
        assert!(matches!(e, ClientError::Tls { .. }), "{e}");
        let first = server.await.unwrap();
        assert_eq!(
            first[0], 0x16,
            "the first bytes were a TLS handshake record"
        );
    }
}
