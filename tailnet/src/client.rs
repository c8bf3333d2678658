//! An async shell around the sans-IO core (feature `client`): tokio TCP,
//! the ts2021 upgrade, HTTP/2 (the `h2` crate) over the Noise records.
//!
//! The daemon's control task (`bridge/src/tailnet.rs`), the
//! `tailnet-probe` example and the tests use it. Plain `http://` control URLs only (Noise already
//! protects the traffic; `https://` needs TLS underneath, not done yet).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

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
    #[error("control URL {0:?} is not supported (want http://host[:port])")]
    Url(String),
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

/// A parsed `http://host[:port]` control URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlUrl {
    /// The URL as given, without a trailing slash (the key for "registered
    /// with").
    pub url: String,
    /// The Host header value (`host` or `host:port`).
    pub host: String,
    /// Where to connect (`host:port`).
    pub connect: String,
}

impl ControlUrl {
    /// Parses `http://host[:port][/]`.
    pub fn parse(url: &str) -> Result<Self, ClientError> {
        let trimmed = url.trim_end_matches('/');
        let rest = trimmed
            .strip_prefix("http://")
            .ok_or_else(|| ClientError::Url(url.to_string()))?;
        if rest.is_empty() || rest.contains('/') || rest.contains('@') {
            return Err(ClientError::Url(url.to_string()));
        }
        let has_port = match rest.rfind(':') {
            Some(i) => !rest[i..].contains(']') && rest[i + 1..].parse::<u16>().is_ok(),
            None => false,
        };
        let connect = if has_port {
            rest.to_string()
        } else {
            format!("{rest}:80")
        };
        Ok(Self {
            url: trimmed.to_string(),
            host: rest.to_string(),
            connect,
        })
    }
}

/// `GET /key`: the control server's Noise key.
pub async fn fetch_control_key(url: &ControlUrl) -> Result<ControlKeys, ClientError> {
    let mut tcp = TcpStream::connect(&url.connect).await?;
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

/// The Noise record layer as an async byte stream, for `h2`.
pub struct NoiseIo {
    tcp: TcpStream,
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
    /// Wraps a TCP stream whose Noise handshake is done. `leftover`: bytes
    /// already received after the handshake. `early_payload`: whether the
    /// peer may start with an early payload (true on the client side).
    pub fn from_parts(
        tcp: TcpStream,
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
            tcp,
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

/// TCP, upgrade, Noise handshake: the record layer, ready for HTTP/2.
pub async fn dial_noise(
    url: &ControlUrl,
    machine: &MachinePrivate,
    control: MachinePublic,
    ephemeral: MachinePrivate,
) -> Result<NoiseIo, ClientError> {
    let mut tcp = TcpStream::connect(&url.connect).await?;
    tcp.set_nodelay(true)?;
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
    pub async fn connect(
        url: &ControlUrl,
        machine: &MachinePrivate,
        control: MachinePublic,
        ephemeral: MachinePrivate,
    ) -> Result<Self, ClientError> {
        let io = dial_noise(url, machine, control, ephemeral).await?;
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
        let u = ControlUrl::parse("http://hs.example").unwrap();
        assert_eq!(u.connect, "hs.example:80");
        let u = ControlUrl::parse("http://[fd00::1]:8080").unwrap();
        assert_eq!(u.connect, "[fd00::1]:8080");
        let u = ControlUrl::parse("http://[fd00::1]").unwrap();
        assert_eq!(u.connect, "[fd00::1]:80");
        for bad in [
            "https://hs.example",
            "hs.example",
            "http://",
            "http://a/b",
            "http://u@h",
        ] {
            assert!(ControlUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
