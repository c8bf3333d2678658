//! The framing of the `/machine/map` response body.
//!
//! Facts (tailscale.com `control/controlclient/direct.go`
//! `sendMapRequest`; headscale `hscontrol/poll.go` `writeMap`): the body is
//! a sequence of messages, each a u32 **little-endian** length and that many
//! bytes of JSON `MapResponse` (zstd-compressed only if the request asked
//! for `"Compress":"zstd"`; this client never does, and Headscale honours
//! that). A streaming body stays open; Headscale sends a keep-alive message
//! (`{"KeepAlive":true}`) every 50–59 s, and Tailscale's client gives up
//! after 120 s without any message.

use crate::tailcfg::MapResponse;

/// The default limit for one message. Tailscale sets none; a large tailnet's
/// full map is a few MiB of JSON.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

/// How long a map stream may stay silent before the client should treat it
/// as dead (Tailscale's watchdog, 120 s).
pub const MAP_WATCHDOG: std::time::Duration = std::time::Duration::from_secs(120);

/// The map stream is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A length above the limit.
    #[error("map message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The announced length.
        len: u32,
        /// The limit.
        max: usize,
    },
    /// The stream ended inside a message.
    #[error("map stream ended inside a message ({0} bytes pending)")]
    Truncated(usize),
    /// An earlier error broke the stream.
    #[error("map stream failed earlier")]
    Failed,
}

/// A message did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// zstd-compressed (we never ask for it).
    #[error("map message is zstd-compressed, which was not requested")]
    Compressed,
    /// Not a valid MapResponse.
    #[error("map message is not a valid MapResponse: {0}")]
    Json(String),
}

/// Splits the map body into messages. Bytes in any split, messages out.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    max: usize,
    failed: bool,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl FrameDecoder {
    /// A decoder refusing messages above `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            max,
            failed: false,
        }
    }

    /// Adds received bytes. Checks each length as soon as it is complete, so
    /// an oversized message fails before its body is buffered.
    pub fn push(&mut self, input: &[u8]) -> Result<(), FrameError> {
        if self.failed {
            return Err(FrameError::Failed);
        }
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(input);
        self.check_next_len()
    }

    fn check_next_len(&mut self) -> Result<(), FrameError> {
        let rest = &self.buf[self.start..];
        if rest.len() >= 4 {
            let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
            if len as usize > self.max {
                self.failed = true;
                self.buf = Vec::new();
                self.start = 0;
                return Err(FrameError::TooLarge { len, max: self.max });
            }
        }
        Ok(())
    }

    /// The next complete message, if any.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if self.failed {
            return Err(FrameError::Failed);
        }
        let rest = &self.buf[self.start..];
        if rest.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if rest.len() < 4 + len {
            return Ok(None);
        }
        let frame = rest[4..4 + len].to_vec();
        self.start += 4 + len;
        if self.start == self.buf.len() {
            // Drained: the memory of a large map goes back.
            self.buf.clear();
            self.start = 0;
            crate::trim_buffer(&mut self.buf);
        }
        // Compact once the consumed part dominates.
        if self.start > 64 * 1024 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.check_next_len()?;
        Ok(Some(frame))
    }

    /// The stream ended: an error if a message was cut off.
    pub fn finish(&self) -> Result<(), FrameError> {
        let pending = self.buf.len() - self.start;
        if pending == 0 {
            Ok(())
        } else {
            Err(FrameError::Truncated(pending))
        }
    }
}

/// Decodes one message.
pub fn decode_message(frame: &[u8]) -> Result<MapResponse, MessageError> {
    if frame.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(MessageError::Compressed);
    }
    serde_json::from_slice(frame).map_err(|e| MessageError::Json(e.to_string()))
}

/// Frames one message (for tests and simulated servers).
pub fn encode_frame(json: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(json);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(msgs: &[&str]) -> Vec<u8> {
        let mut v = Vec::new();
        for m in msgs {
            encode_frame(m.as_bytes(), &mut v);
        }
        v
    }

    #[test]
    fn frames_in_any_split() {
        let msgs = [
            r#"{"KeepAlive":true}"#,
            "{}",
            r#"{"Domain":"tailnet.test"}"#,
        ];
        let wire = stream(&msgs);
        for split in 0..=wire.len() {
            let mut d = FrameDecoder::default();
            let mut got = Vec::new();
            for part in [&wire[..split], &wire[split..]] {
                d.push(part).unwrap();
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(String::from_utf8(f).unwrap());
                }
            }
            assert_eq!(got, msgs, "split {split}");
            d.finish().unwrap();
        }
    }

    #[test]
    fn length_is_little_endian() {
        let mut d = FrameDecoder::default();
        d.push(&[2, 0, 0, 0, b'{', b'}']).unwrap();
        assert_eq!(d.next_frame().unwrap().unwrap(), b"{}");
    }

    #[test]
    fn truncated_is_reported_at_the_end_only() {
        let wire = stream(&["{}"]);
        let mut d = FrameDecoder::default();
        d.push(&wire[..wire.len() - 1]).unwrap();
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.finish(), Err(FrameError::Truncated(wire.len() - 1)));
        let mut d = FrameDecoder::default();
        d.push(&[1, 0]).unwrap();
        assert_eq!(d.finish(), Err(FrameError::Truncated(2)));
    }

    #[test]
    fn oversized_fails_before_buffering_and_stays_failed() {
        let mut d = FrameDecoder::new(100);
        d.push(&stream(&["{}"])).unwrap();
        assert_eq!(d.next_frame().unwrap().unwrap(), b"{}");
        assert_eq!(
            d.push(&101u32.to_le_bytes()),
            Err(FrameError::TooLarge { len: 101, max: 100 })
        );
        assert_eq!(d.next_frame(), Err(FrameError::Failed));
        assert_eq!(d.push(b"x"), Err(FrameError::Failed));
        let mut d = FrameDecoder::new(100);
        assert_eq!(
            d.push(&u32::MAX.to_le_bytes()),
            Err(FrameError::TooLarge {
                len: u32::MAX,
                max: 100
            })
        );
        // a too-large length behind a good frame is caught when it becomes next
        let mut d = FrameDecoder::new(100);
        let mut wire = stream(&["{}"]);
        wire.extend_from_slice(&1000u32.to_le_bytes());
        assert!(d.push(&wire).is_ok());
        assert!(matches!(
            d.next_frame(),
            Err(FrameError::TooLarge { len: 1000, .. })
        ));
    }

    #[test]
    fn messages_decode_or_fail_cleanly() {
        assert!(decode_message(br#"{"KeepAlive":true}"#).unwrap().keep_alive);
        assert_eq!(
            decode_message(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Err(MessageError::Compressed)
        );
        assert!(matches!(
            decode_message(b"{\"Peers\":7}"),
            Err(MessageError::Json(_))
        ));
        assert!(matches!(decode_message(b""), Err(MessageError::Json(_))));
        assert!(matches!(
            decode_message(&[0xff; 3]),
            Err(MessageError::Json(_))
        ));
    }

    #[test]
    fn long_streams_do_not_grow_the_buffer() {
        let mut d = FrameDecoder::default();
        let one = stream(&[&format!("{{\"Domain\":\"{}\"}}", "a".repeat(1000))]);
        for _ in 0..1000 {
            d.push(&one).unwrap();
            assert!(d.next_frame().unwrap().is_some());
        }
        assert!(
            d.buf.capacity() < 200 * 1024,
            "capacity {}",
            d.buf.capacity()
        );
    }

    #[test]
    fn a_large_map_s_memory_goes_back_once_read() {
        let mut d = FrameDecoder::default();
        let big = stream(&[&format!("{{\"Domain\":\"{}\"}}", "a".repeat(100_000))]);
        for part in big.chunks(16 * 1024) {
            d.push(part).unwrap();
        }
        assert!(d.buf.capacity() > 100_000);
        assert_eq!(d.next_frame().unwrap().map(|f| f.len()), Some(100_000 + 13));
        assert!(
            d.buf.capacity() <= crate::BUFFER_KEEP,
            "capacity {}",
            d.buf.capacity()
        );
        // The next message still arrives whole.
        d.push(&stream(&["{}"])).unwrap();
        assert_eq!(d.next_frame().unwrap(), Some(b"{}".to_vec()));
    }
}
