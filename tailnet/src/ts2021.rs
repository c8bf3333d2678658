//! The HTTP/1.1 steps around the Noise transport, sans-IO: fetching the
//! control key, the `/ts2021` upgrade, and the early payload.
//!
//! Facts (tailscale.com `control/controlclient/direct.go` `loadServerPubKeys`,
//! `control/controlhttp/client.go`, `controlhttpcommon`, `control/ts2021/conn.go`;
//! headscale `hscontrol/handlers.go` `KeyHandler`, `hscontrol/noise.go`):
//!
//! * `GET /key?v=<capver>` answers JSON `{"legacyPublicKey":"mkey:…",
//!   "publicKey":"mkey:…"}`; `publicKey` is the Noise static key.
//! * `POST /ts2021` with `Upgrade: tailscale-control-protocol`,
//!   `Connection: upgrade` and `X-Tailscale-Handshake: <base64 of the
//!   101-byte initiation>`; the answer is `101 Switching Protocols` with the
//!   same `Upgrade` value, and the server's handshake response follows the
//!   HTTP header on the same TCP stream (possibly in the same segment).
//! * After the handshake the server may first send, inside the encrypted
//!   stream, an early payload: `ff ff ff 'T' 'S'`, a u32 BE length, then JSON
//!   `{"nodeKeyChallenge":"chalpub:…"}`. Anything else is the start of the
//!   HTTP/2 stream (an HTTP/2 frame header is also 9 bytes; the magic is not
//!   a valid one). Headscale always sends it.

use base64::Engine;
use serde::Deserialize;

use crate::keys::{ChallengePublic, MachinePublic};
use crate::noise::INITIATION_LEN;

/// The path of the Noise upgrade.
pub const UPGRADE_PATH: &str = "/ts2021";
/// The `Upgrade` header value.
pub const UPGRADE_PROTOCOL: &str = "tailscale-control-protocol";
/// The header carrying the initiation message.
pub const HANDSHAKE_HEADER: &str = "X-Tailscale-Handshake";
/// The magic that starts an early payload.
pub const EARLY_PAYLOAD_MAGIC: &[u8; 5] = b"\xff\xff\xffTS";
/// The largest early payload accepted (it carries one key).
pub const MAX_EARLY_PAYLOAD: usize = 64 * 1024;
/// The largest HTTP/1.1 response header accepted.
pub const MAX_HTTP_HEADER: usize = 16 * 1024;
/// The largest `/key` response body accepted.
pub const MAX_KEY_BODY: usize = 64 * 1024;

/// An HTTP/1.1 step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The response is not valid HTTP/1.1.
    #[error("malformed HTTP response from the control server")]
    Malformed,
    /// The response header or body is larger than accepted.
    #[error("HTTP response from the control server is too large")]
    TooLarge,
    /// The status is not the one expected.
    #[error("control server answered HTTP {status} (want {want}): {body}")]
    Status {
        /// The status received.
        status: u16,
        /// The status wanted.
        want: u16,
        /// The start of the body, if any, as text.
        body: String,
    },
    /// The server switched to another protocol.
    #[error("control server switched to {0:?}, not tailscale-control-protocol")]
    WrongUpgrade(String),
    /// The `/key` body did not parse.
    #[error("control key response did not parse: {0}")]
    BadKey(String),
    /// The connection closed before the response was complete.
    #[error("control server closed the connection early")]
    Truncated,
}

/// The control server's keys, from `GET /key`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ControlKeys {
    /// The Noise (ts2021) static key.
    #[serde(rename = "publicKey")]
    pub public_key: MachinePublic,
    /// The key of the old (pre-Noise) protocol; unused.
    #[serde(rename = "legacyPublicKey", default)]
    pub legacy_public_key: Option<MachinePublic>,
}

/// `GET /key?v=<capver>` for `host` (the Host header: host or host:port).
/// Asks the server to close the connection after the answer.
pub fn key_request(host: &str, capver: u16) -> Vec<u8> {
    format!(
        "GET /key?v={capver} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: meshbridge\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// Parses the answer to [`key_request`]. Call with everything received;
/// `eof` once the server closed. `Ok(None)`: more bytes needed.
pub fn parse_key_response(buf: &[u8], eof: bool) -> Result<Option<ControlKeys>, HttpError> {
    let Some((status, header_len, headers)) = parse_head(buf)? else {
        return if eof {
            Err(HttpError::Truncated)
        } else {
            Ok(None)
        };
    };
    let Some(body) = body(&buf[header_len..], &headers, eof)? else {
        return Ok(None);
    };
    if status != 200 {
        return Err(status_error(status, 200, &body));
    }
    let keys: ControlKeys =
        serde_json::from_slice(&body).map_err(|e| HttpError::BadKey(e.to_string()))?;
    if keys.public_key.is_zero() {
        return Err(HttpError::BadKey(
            "the server has no Noise key (too old?)".into(),
        ));
    }
    Ok(Some(keys))
}

/// The upgrade request carrying the handshake initiation.
pub fn upgrade_request(host: &str, init: &[u8; INITIATION_LEN]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(init);
    format!(
        "POST {UPGRADE_PATH} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: meshbridge\r\nUpgrade: {UPGRADE_PROTOCOL}\r\nConnection: upgrade\r\n{HANDSHAKE_HEADER}: {b64}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Parses the answer to [`upgrade_request`]. `Ok(Some(n))`: switched; the
/// first `n` bytes were the HTTP header, the rest is the Noise stream.
/// On a refusal, waits for the body (up to `eof`) to report it.
pub fn parse_upgrade_response(buf: &[u8], eof: bool) -> Result<Option<usize>, HttpError> {
    let Some((status, header_len, headers)) = parse_head(buf)? else {
        return if eof {
            Err(HttpError::Truncated)
        } else {
            Ok(None)
        };
    };
    if status != 101 {
        return match body(&buf[header_len..], &headers, eof) {
            Ok(Some(b)) => Err(status_error(status, 101, &b)),
            Ok(None) => Ok(None),
            Err(HttpError::TooLarge) => Err(status_error(status, 101, &[])),
            Err(e) => Err(e),
        };
    }
    let upgrade = header(&headers, "upgrade").unwrap_or_default();
    if !upgrade.eq_ignore_ascii_case(UPGRADE_PROTOCOL) {
        return Err(HttpError::WrongUpgrade(upgrade));
    }
    Ok(Some(header_len))
}

type Headers = Vec<(String, String)>;

fn parse_head(buf: &[u8]) -> Result<Option<(u16, usize, Headers)>, HttpError> {
    let mut storage = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut storage);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            let status = resp.code.ok_or(HttpError::Malformed)?;
            let headers = resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            Ok(Some((status, n, headers)))
        }
        Ok(httparse::Status::Partial) if buf.len() > MAX_HTTP_HEADER => Err(HttpError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HttpError::TooLarge),
        Err(_) => Err(HttpError::Malformed),
    }
}

fn header(headers: &Headers, name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.trim().to_string())
}

/// The body: by Content-Length, chunked, or up to EOF.
fn body(rest: &[u8], headers: &Headers, eof: bool) -> Result<Option<Vec<u8>>, HttpError> {
    if let Some(len) = header(headers, "content-length") {
        let len: usize = len.parse().map_err(|_| HttpError::Malformed)?;
        if len > MAX_KEY_BODY {
            return Err(HttpError::TooLarge);
        }
        return if rest.len() >= len {
            Ok(Some(rest[..len].to_vec()))
        } else if eof {
            Err(HttpError::Truncated)
        } else {
            Ok(None)
        };
    }
    if header(headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return match dechunk(rest)? {
            Some(b) => Ok(Some(b)),
            None if eof => Err(HttpError::Truncated),
            None => Ok(None),
        };
    }
    if rest.len() > MAX_KEY_BODY {
        return Err(HttpError::TooLarge);
    }
    if eof {
        Ok(Some(rest.to_vec()))
    } else {
        Ok(None)
    }
}

fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, HttpError> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return if rest.len() > 32 {
                Err(HttpError::Malformed)
            } else {
                Ok(None)
            };
        };
        let line = std::str::from_utf8(&rest[..line_end]).map_err(|_| HttpError::Malformed)?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| HttpError::Malformed)?;
        if size > MAX_KEY_BODY || out.len() + size > MAX_KEY_BODY {
            return Err(HttpError::TooLarge);
        }
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(Some(out));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn status_error(status: u16, want: u16, body: &[u8]) -> HttpError {
    let body = String::from_utf8_lossy(&body[..body.len().min(200)])
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .to_string();
    HttpError::Status { status, want, body }
}

/// The early payload's JSON.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EarlyNoise {
    /// The challenge a node answers to prove it holds its node key.
    #[serde(rename = "nodeKeyChallenge")]
    pub node_key_challenge: Option<ChallengePublic>,
}

/// The early payload is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EarlyPayloadError {
    /// The length is above [`MAX_EARLY_PAYLOAD`].
    #[error("early payload of {0} bytes is too large")]
    TooLarge(u32),
    /// The JSON did not parse.
    #[error("early payload is not valid JSON: {0}")]
    BadJson(String),
}

/// Strips the early payload from the start of the decrypted stream.
/// Feed it all plaintext; it passes the HTTP/2 bytes through to `out`.
#[derive(Debug, Default)]
pub struct EarlyPayloadFilter {
    state: EarlyState,
}

#[derive(Debug, Default)]
enum EarlyState {
    #[default]
    Start,
    Head(Vec<u8>),
    Body(usize, Vec<u8>),
    Passthrough,
}

impl EarlyPayloadFilter {
    /// A filter at the start of the stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// A filter that passes everything (a stream without early payload,
    /// such as the client → server direction).
    pub fn passthrough() -> Self {
        Self {
            state: EarlyState::Passthrough,
        }
    }

    /// Whether the early payload part is over (seen or absent).
    pub fn done(&self) -> bool {
        matches!(self.state, EarlyState::Passthrough)
    }

    /// Takes decrypted bytes; appends the stream after the early payload to
    /// `out`; returns the early payload once, when it is complete.
    pub fn push(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Option<EarlyNoise>, EarlyPayloadError> {
        loop {
            match &mut self.state {
                EarlyState::Passthrough => {
                    out.extend_from_slice(input);
                    return Ok(None);
                }
                EarlyState::Start => self.state = EarlyState::Head(Vec::with_capacity(9)),
                EarlyState::Head(head) => {
                    let take = (9 - head.len()).min(input.len());
                    head.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    // Decide as soon as a byte differs from the magic.
                    let n = head.len().min(EARLY_PAYLOAD_MAGIC.len());
                    if head[..n] != EARLY_PAYLOAD_MAGIC[..n] {
                        out.extend_from_slice(head);
                        self.state = EarlyState::Passthrough;
                        continue;
                    }
                    if head.len() < 9 {
                        return Ok(None);
                    }
                    let len = u32::from_be_bytes([head[5], head[6], head[7], head[8]]);
                    if len as usize > MAX_EARLY_PAYLOAD {
                        self.state = EarlyState::Passthrough;
                        return Err(EarlyPayloadError::TooLarge(len));
                    }
                    self.state = EarlyState::Body(len as usize, Vec::with_capacity(len as usize));
                }
                EarlyState::Body(len, body) => {
                    let take = (*len - body.len()).min(input.len());
                    body.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if body.len() < *len {
                        return Ok(None);
                    }
                    let parsed = serde_json::from_slice::<EarlyNoise>(body)
                        .map_err(|e| EarlyPayloadError::BadJson(e.to_string()));
                    self.state = EarlyState::Passthrough;
                    out.extend_from_slice(input);
                    return parsed.map(Some);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_response_by_length_chunked_and_eof() {
        let k = format!("mkey:{}", "11".repeat(32));
        let json = format!(
            "{{\"legacyPublicKey\":\"mkey:{}\",\"publicKey\":\"{k}\"}}\n",
            "00".repeat(32)
        );
        let by_len = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
            json.len()
        );
        let bytes = by_len.as_bytes();
        for n in 0..bytes.len() {
            assert_eq!(parse_key_response(&bytes[..n], false), Ok(None), "at {n}");
        }
        let keys = parse_key_response(bytes, false).unwrap().unwrap();
        assert_eq!(keys.public_key.to_string(), k);
        assert!(keys.legacy_public_key.unwrap().is_zero());

        let chunked = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
            10,
            &json[..10],
            json.len() - 10,
            &json[10..]
        );
        assert_eq!(
            parse_key_response(chunked.as_bytes(), false)
                .unwrap()
                .unwrap()
                .public_key,
            keys.public_key
        );
        let eof = format!("HTTP/1.1 200 OK\r\n\r\n{json}");
        assert_eq!(parse_key_response(eof.as_bytes(), false), Ok(None));
        assert!(parse_key_response(eof.as_bytes(), true).unwrap().is_some());
        assert_eq!(
            parse_key_response(b"HTTP/1.1 200 OK\r\n", true),
            Err(HttpError::Truncated)
        );
    }

    #[test]
    fn key_response_errors() {
        let r = parse_key_response(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found",
            false,
        );
        assert!(
            matches!(r, Err(HttpError::Status { status: 404, want: 200, ref body }) if body == "not found")
        );
        let r = parse_key_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", false);
        assert!(matches!(r, Err(HttpError::BadKey(_))));
        let zero = format!("{{\"publicKey\":\"mkey:{}\"}}", "00".repeat(32));
        let r = parse_key_response(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{zero}",
                zero.len()
            )
            .as_bytes(),
            false,
        );
        assert!(matches!(r, Err(HttpError::BadKey(_))));
        assert_eq!(
            parse_key_response(b"NOT HTTP\r\n\r\n", false),
            Err(HttpError::Malformed)
        );
        assert_eq!(
            parse_key_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n",
                false
            ),
            Err(HttpError::TooLarge)
        );
        let mut long = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        long.resize(MAX_HTTP_HEADER + 10, b'a');
        assert_eq!(parse_key_response(&long, false), Err(HttpError::TooLarge));
        assert_eq!(
            parse_key_response(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                false
            ),
            Err(HttpError::Malformed)
        );
    }

    #[test]
    fn upgrade_request_and_response() {
        let init = [7u8; INITIATION_LEN];
        let req = String::from_utf8(upgrade_request("10.99.0.1:8080", &init)).unwrap();
        assert!(req.starts_with("POST /ts2021 HTTP/1.1\r\nHost: 10.99.0.1:8080\r\n"));
        assert!(req.contains("\r\nUpgrade: tailscale-control-protocol\r\n"));
        assert!(req.contains("\r\nConnection: upgrade\r\n"));
        let b64 = base64::engine::general_purpose::STANDARD.encode(init);
        assert!(req.contains(&format!("\r\nX-Tailscale-Handshake: {b64}\r\n")));
        assert!(req.ends_with("\r\n\r\n"));

        let mut resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: tailscale-control-protocol\r\nConnection: upgrade\r\n\r\n".to_vec();
        let head = resp.len();
        assert_eq!(parse_upgrade_response(&resp[..head - 1], false), Ok(None));
        resp.extend_from_slice(&[2, 0, 48]);
        assert_eq!(parse_upgrade_response(&resp, false), Ok(Some(head)));
        assert_eq!(
            parse_upgrade_response(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
                false
            ),
            Err(HttpError::WrongUpgrade("websocket".into()))
        );
        let refused =
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 14\r\n\r\nInternal error";
        assert!(matches!(
            parse_upgrade_response(refused, false),
            Err(HttpError::Status {
                status: 500,
                want: 101,
                ..
            })
        ));
        assert_eq!(
            parse_upgrade_response(&refused[..refused.len() - 3], false),
            Ok(None)
        );
    }

    fn early(json: &str) -> Vec<u8> {
        let mut v = EARLY_PAYLOAD_MAGIC.to_vec();
        v.extend_from_slice(&(json.len() as u32).to_be_bytes());
        v.extend_from_slice(json.as_bytes());
        v
    }

    #[test]
    fn early_payload_is_stripped_in_any_split() {
        let json = format!("{{\"nodeKeyChallenge\":\"chalpub:{}\"}}", "ab".repeat(32));
        let mut stream = early(&json);
        stream.extend_from_slice(b"\x00\x00\x12\x04\x00\x00\x00\x00\x00h2 settings");
        for split in 0..stream.len() {
            let mut f = EarlyPayloadFilter::new();
            let mut out = Vec::new();
            let a = f.push(&stream[..split], &mut out).unwrap();
            let b = f.push(&stream[split..], &mut out).unwrap();
            let got = a.or(b).expect("early payload seen");
            assert_eq!(got.node_key_challenge.unwrap().as_bytes(), &[0xab; 32]);
            assert_eq!(
                out, b"\x00\x00\x12\x04\x00\x00\x00\x00\x00h2 settings",
                "split {split}"
            );
            assert!(f.done());
        }
    }

    #[test]
    fn no_early_payload_passes_everything() {
        let stream = b"\x00\x00\x12\x04\x00\x00\x00\x00\x00rest".to_vec();
        let mut f = EarlyPayloadFilter::new();
        let mut out = Vec::new();
        for b in &stream {
            assert_eq!(f.push(std::slice::from_ref(b), &mut out), Ok(None));
        }
        assert_eq!(out, stream);
        // A stream that shares the first magic bytes, then differs.
        let mut f = EarlyPayloadFilter::new();
        let mut out = Vec::new();
        f.push(b"\xff\xff", &mut out).unwrap();
        assert!(out.is_empty());
        f.push(b"\x00zz", &mut out).unwrap();
        assert_eq!(out, b"\xff\xff\x00zz");
    }

    #[test]
    fn bad_early_payloads_are_errors() {
        let mut f = EarlyPayloadFilter::new();
        let mut big = EARLY_PAYLOAD_MAGIC.to_vec();
        big.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            f.push(&big, &mut Vec::new()),
            Err(EarlyPayloadError::TooLarge(u32::MAX))
        );
        let mut f = EarlyPayloadFilter::new();
        assert!(matches!(
            f.push(&early("{nope"), &mut Vec::new()),
            Err(EarlyPayloadError::BadJson(_))
        ));
    }
}
