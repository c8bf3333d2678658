//! The ts2021 base transport ("controlbase"): a Noise IK handshake and
//! length-prefixed encrypted records, sans-IO (bytes in, bytes out).
//!
//! Facts (tailscale.com `control/controlbase/handshake.go`, `messages.go`,
//! `conn.go`):
//!
//! * Noise pattern `Noise_IK_25519_ChaChaPoly_BLAKE2s`; the client knows the
//!   server's static key (the control key, from `GET /key`). The prologue is
//!   the ASCII text `Tailscale Control Protocol v<N>` where N is the protocol
//!   version (the client's capability version) in decimal.
//! * Initiation, client → server, 101 bytes: version (u16 BE), type 1,
//!   length 96 (u16 BE), ephemeral public key (32), encrypted machine public
//!   key (32 + 16 tag), tag over the empty payload (16).
//! * Response, server → client, 51 bytes: type 2, length 48 (u16 BE), server
//!   ephemeral (32), tag over the empty payload (16). Type 3 instead carries
//!   a plain-text error message (unauthenticated, a hint only).
//! * Records, both ways: type 4, length (u16 BE), ChaCha20-Poly1305
//!   ciphertext with empty associated data. A whole record is at most 4096
//!   bytes. The nonce is 4 zero bytes and a 64-bit **big-endian** counter
//!   (Noise itself says little-endian: this is why a stock Noise library's
//!   transport cannot be used here). The counter value 2^64-1 is never used.
//! * The client sends with the first key of Split, receives with the second.

use blake2::{Blake2s256, Digest};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use hmac::{Mac, SimpleHmac};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::keys::{MachinePrivate, MachinePublic};

/// The Noise protocol name mixed into the initial handshake hash.
pub const PROTOCOL_NAME: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// The prologue text before the decimal protocol version.
pub const PROLOGUE_PREFIX: &str = "Tailscale Control Protocol v";
/// The largest record on the wire, header included.
pub const MAX_MESSAGE_SIZE: usize = 4096;
/// The record header: type and length.
pub const HEADER_LEN: usize = 3;
const TAG_LEN: usize = 16;
/// The largest plaintext in one record.
pub const MAX_PLAINTEXT_SIZE: usize = MAX_MESSAGE_SIZE - HEADER_LEN - TAG_LEN;
/// The length of the client's initiation message.
pub const INITIATION_LEN: usize = 101;
/// The length of the server's response message.
pub const RESPONSE_LEN: usize = 51;

const MSG_INITIATION: u8 = 1;
const MSG_RESPONSE: u8 = 2;
const MSG_ERROR: u8 = 3;
const MSG_RECORD: u8 = 4;

/// The handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// A Diffie-Hellman result was all zeros (a low-order public key).
    #[error("the peer's public key is not usable (low-order point)")]
    LowOrderKey,
    /// The server sent an error message instead of a response (a hint only:
    /// it is not authenticated).
    #[error("control server refused the handshake: {0}")]
    ServerError(String),
    /// The server's message has an unexpected type byte.
    #[error("unexpected handshake message type {0}")]
    UnexpectedType(u8),
    /// The server's response has the wrong length field.
    #[error("handshake response has length {0}, want 48")]
    BadLength(u16),
    /// The response did not authenticate: wrong control key, or tampering.
    #[error("handshake response does not authenticate (wrong control key?)")]
    Decrypt,
    /// The initiation message is malformed (responder side).
    #[error("malformed handshake initiation")]
    BadInitiation,
    /// The handshake was already finished.
    #[error("handshake already finished")]
    Finished,
}

/// A record could not be sealed or opened. After any of these the transport
/// is unusable (like Tailscale's: a desynchronised stream cannot recover).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A record with a type other than 4.
    #[error("unexpected record type {0}")]
    UnexpectedType(u8),
    /// A record longer than 4096 bytes.
    #[error("record of {0} bytes exceeds the 4096-byte limit")]
    TooBig(usize),
    /// A record did not authenticate.
    #[error("record does not authenticate")]
    Decrypt,
    /// 2^64-1 records were sent or received on this key.
    #[error("nonce space exhausted")]
    NonceExhausted,
    /// An earlier error broke this transport.
    #[error("transport failed earlier")]
    Failed,
}

type HmacBlake2s = SimpleHmac<Blake2s256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // SimpleHmac takes keys of any length; this cannot fail.
    let mut mac =
        <HmacBlake2s as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// HKDF with HMAC-BLAKE2s, two outputs (Noise section 4.3; equal to RFC 5869
/// with the chaining key as salt and empty info).
fn hkdf2(chaining_key: &[u8; 32], input: &[u8]) -> ([u8; 32], [u8; 32]) {
    let prk = hmac(chaining_key, &[input]);
    let t1 = hmac(&prk, &[&[1u8]]);
    let t2 = hmac(&prk, &[&t1, &[2u8]]);
    (t1, t2)
}

/// The Noise symmetric state during a handshake.
pub(crate) struct SymmetricState {
    h: [u8; 32],
    ck: [u8; 32],
}

impl SymmetricState {
    pub(crate) fn new(version: u16) -> Self {
        // The protocol name is longer than 32 bytes, so it is hashed.
        let h: [u8; 32] = Blake2s256::digest(PROTOCOL_NAME.as_bytes()).into();
        let mut s = Self { h, ck: h };
        s.mix_hash(prologue(version).as_bytes());
        s
    }

    pub(crate) fn mix_hash(&mut self, data: &[u8]) {
        let mut d = Blake2s256::new();
        d.update(self.h);
        d.update(data);
        self.h = d.finalize().into();
    }

    /// MixKey(DH(secret, public)); returns the one-use cipher key.
    pub(crate) fn mix_dh(
        &mut self,
        secret: &StaticSecret,
        public: &[u8; 32],
    ) -> Result<[u8; 32], HandshakeError> {
        let shared = secret.diffie_hellman(&PublicKey::from(*public));
        if !shared.was_contributory() {
            return Err(HandshakeError::LowOrderKey);
        }
        let (ck, k) = hkdf2(&self.ck, shared.as_bytes());
        self.ck = ck;
        Ok(k)
    }

    /// Encrypts with nonce 0 and the handshake hash as associated data, then
    /// mixes the ciphertext into the hash.
    pub(crate) fn encrypt_and_hash(&mut self, key: &[u8; 32], plaintext: &[u8], out: &mut [u8]) {
        let (body, tag) = out.split_at_mut(plaintext.len());
        body.copy_from_slice(plaintext);
        let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
        // Cannot fail for inputs this small.
        let t = cipher
            .encrypt_in_place_detached(&Nonce::default(), &self.h, body)
            .expect("ChaCha20-Poly1305 seals short handshake payloads");
        tag.copy_from_slice(&t);
        self.mix_hash(out);
    }

    pub(crate) fn decrypt_and_hash(
        &mut self,
        key: &[u8; 32],
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<(), HandshakeError> {
        if ciphertext.len() != out.len() + TAG_LEN {
            return Err(HandshakeError::Decrypt);
        }
        let (body, tag) = ciphertext.split_at(out.len());
        out.copy_from_slice(body);
        let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
        cipher
            .decrypt_in_place_detached(&Nonce::default(), &self.h, out, Tag::from_slice(tag))
            .map_err(|_| HandshakeError::Decrypt)?;
        self.mix_hash(ciphertext);
        Ok(())
    }

    /// The two transport keys (initiator → responder, responder → initiator).
    pub(crate) fn split(&self) -> ([u8; 32], [u8; 32]) {
        hkdf2(&self.ck, &[])
    }

    pub(crate) fn hash(&self) -> [u8; 32] {
        self.h
    }
}

/// The prologue for a protocol version.
pub fn prologue(version: u16) -> String {
    format!("{PROLOGUE_PREFIX}{version}")
}

/// The client half of the handshake.
///
/// ```
/// # use meshbridge_tailnet::keys::MachinePrivate;
/// # use meshbridge_tailnet::noise::ClientHandshake;
/// # let mut rng = rand::thread_rng();
/// # let machine = MachinePrivate::generate(&mut rng);
/// # let control = MachinePrivate::generate(&mut rng).public();
/// let (mut hs, initiation) =
///     ClientHandshake::new(&machine, control, 119, MachinePrivate::generate(&mut rng)).unwrap();
/// // send `initiation` (in the X-Tailscale-Handshake header), then feed what
/// // the server sends to `hs.read_response(..)` until it returns a Transport.
/// # let _ = (hs, initiation);
/// ```
pub struct ClientHandshake {
    state: SymmetricState,
    machine: StaticSecret,
    ephemeral: StaticSecret,
    control: MachinePublic,
    version: u16,
    finished: bool,
}

impl ClientHandshake {
    /// Starts a handshake with `machine` as our static key, to a server whose
    /// static key is `control`, at protocol `version`. `ephemeral` must be a
    /// fresh random key (passed in so the core stays free of randomness).
    /// Returns the initiation message to send.
    pub fn new(
        machine: &MachinePrivate,
        control: MachinePublic,
        version: u16,
        ephemeral: MachinePrivate,
    ) -> Result<(Self, [u8; INITIATION_LEN]), HandshakeError> {
        let mut s = SymmetricState::new(version);
        // <- s (pre-message)
        s.mix_hash(control.as_bytes());
        let mut init = [0u8; INITIATION_LEN];
        init[..2].copy_from_slice(&version.to_be_bytes());
        init[2] = MSG_INITIATION;
        init[3..5].copy_from_slice(&((INITIATION_LEN - 5) as u16).to_be_bytes());
        // -> e, es, s, ss
        let e_pub = ephemeral.public();
        init[5..37].copy_from_slice(e_pub.as_bytes());
        s.mix_hash(e_pub.as_bytes());
        let k = s.mix_dh(ephemeral.secret(), control.as_bytes())?;
        s.encrypt_and_hash(&k, machine.public().as_bytes(), &mut init[37..85]);
        let k = s.mix_dh(machine.secret(), control.as_bytes())?;
        s.encrypt_and_hash(&k, &[], &mut init[85..101]);
        Ok((
            Self {
                state: s,
                machine: machine.secret().clone(),
                ephemeral: ephemeral.secret().clone(),
                control,
                version,
                finished: false,
            },
            init,
        ))
    }

    /// Feeds the bytes received so far (from the start of the server's
    /// Noise stream). `Ok(None)`: more bytes are needed. `Ok(Some((t, n)))`:
    /// the handshake is done, the first `n` bytes were the response, the
    /// rest belong to the transport.
    pub fn read_response(
        &mut self,
        buf: &[u8],
    ) -> Result<Option<(Transport, usize)>, HandshakeError> {
        if self.finished {
            return Err(HandshakeError::Finished);
        }
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u16::from_be_bytes([buf[1], buf[2]]);
        match buf[0] {
            MSG_RESPONSE => {}
            MSG_ERROR => {
                let end = HEADER_LEN + len as usize;
                if buf.len() < end {
                    return Ok(None);
                }
                self.finished = true;
                let text: String = String::from_utf8_lossy(&buf[HEADER_LEN..end])
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(200)
                    .collect();
                return Err(HandshakeError::ServerError(text));
            }
            other => {
                self.finished = true;
                return Err(HandshakeError::UnexpectedType(other));
            }
        }
        if len as usize != RESPONSE_LEN - HEADER_LEN {
            self.finished = true;
            return Err(HandshakeError::BadLength(len));
        }
        if buf.len() < RESPONSE_LEN {
            return Ok(None);
        }
        self.finished = true;
        let mut re = [0u8; 32];
        re.copy_from_slice(&buf[3..35]);
        // <- e, ee, se
        self.state.mix_hash(&re);
        self.state.mix_dh(&self.ephemeral, &re)?;
        let k = self.state.mix_dh(&self.machine, &re)?;
        self.state.decrypt_and_hash(&k, &buf[35..51], &mut [])?;
        let (k1, k2) = self.state.split();
        Ok(Some((
            Transport::new(k1, k2, self.state.hash(), self.version, self.control),
            RESPONSE_LEN,
        )))
    }
}

struct CipherState {
    cipher: ChaCha20Poly1305,
    nonce: u64,
}

impl CipherState {
    fn new(key: [u8; 32]) -> Self {
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
            nonce: 0,
        }
    }

    fn next_nonce(&mut self) -> Result<Nonce, TransportError> {
        if self.nonce == u64::MAX {
            return Err(TransportError::NonceExhausted);
        }
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&self.nonce.to_be_bytes());
        self.nonce += 1;
        Ok(n.into())
    }
}

/// The encrypted record layer after the handshake. Feed received bytes to
/// [`Transport::decrypt`], pass plaintext to send to [`Transport::encrypt`].
pub struct Transport {
    tx: CipherState,
    rx: CipherState,
    rx_buf: Vec<u8>,
    failed: bool,
    handshake_hash: [u8; 32],
    version: u16,
    peer: MachinePublic,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("version", &self.version)
            .field("peer", &self.peer)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Transport {
    pub(crate) fn new(
        tx: [u8; 32],
        rx: [u8; 32],
        handshake_hash: [u8; 32],
        version: u16,
        peer: MachinePublic,
    ) -> Self {
        Self {
            tx: CipherState::new(tx),
            rx: CipherState::new(rx),
            rx_buf: Vec::new(),
            failed: false,
            handshake_hash,
            version,
            peer,
        }
    }

    /// The protocol version of the handshake.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The peer's static key (for a client: the control key).
    pub fn peer(&self) -> MachinePublic {
        self.peer
    }

    /// The final handshake hash (channel binding).
    pub fn handshake_hash(&self) -> [u8; 32] {
        self.handshake_hash
    }

    /// Seals `plaintext` into as many records as needed, appended to `out`.
    pub fn encrypt(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), TransportError> {
        if self.failed {
            return Err(TransportError::Failed);
        }
        for chunk in plaintext.chunks(MAX_PLAINTEXT_SIZE) {
            let nonce = match self.tx.next_nonce() {
                Ok(n) => n,
                Err(e) => {
                    self.failed = true;
                    return Err(e);
                }
            };
            let start = out.len();
            out.push(MSG_RECORD);
            out.extend_from_slice(&((chunk.len() + TAG_LEN) as u16).to_be_bytes());
            out.extend_from_slice(chunk);
            let body = &mut out[start + HEADER_LEN..];
            // Cannot fail for records this small.
            let tag = self
                .tx
                .cipher
                .encrypt_in_place_detached(&nonce, &[], body)
                .expect("ChaCha20-Poly1305 seals records up to 4 KiB");
            out.extend_from_slice(&tag);
        }
        Ok(())
    }

    /// Takes received bytes (any split), appends the plaintext of every
    /// complete record to `out`, keeps a partial record for the next call.
    pub fn decrypt(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), TransportError> {
        if self.failed {
            return Err(TransportError::Failed);
        }
        self.rx_buf.extend_from_slice(input);
        let result = self.decrypt_buffered(out);
        if result.is_err() {
            self.failed = true;
            self.rx_buf = Vec::new();
        }
        result
    }

    fn decrypt_buffered(&mut self, out: &mut Vec<u8>) -> Result<(), TransportError> {
        let mut pos = 0;
        loop {
            let rest = &mut self.rx_buf[pos..];
            if rest.len() < HEADER_LEN {
                break;
            }
            if rest[0] != MSG_RECORD {
                return Err(TransportError::UnexpectedType(rest[0]));
            }
            let total = HEADER_LEN + u16::from_be_bytes([rest[1], rest[2]]) as usize;
            if total > MAX_MESSAGE_SIZE {
                return Err(TransportError::TooBig(total));
            }
            if rest.len() < total {
                break;
            }
            if total < HEADER_LEN + TAG_LEN {
                return Err(TransportError::Decrypt);
            }
            let nonce = self.rx.next_nonce()?;
            let (body, tag) = rest[HEADER_LEN..total].split_at_mut(total - HEADER_LEN - TAG_LEN);
            let tag = Tag::clone_from_slice(tag);
            self.rx
                .cipher
                .decrypt_in_place_detached(&nonce, &[], body, &tag)
                .map_err(|_| TransportError::Decrypt)?;
            out.extend_from_slice(body);
            pos += total;
        }
        self.rx_buf.drain(..pos);
        crate::trim_buffer(&mut self.rx_buf);
        Ok(())
    }
}

/// The server half of the handshake, for tests and simulations of a
/// control server. Takes a whole initiation message, returns the response
/// to send, the transport and the client's machine key.
pub fn respond(
    control: &MachinePrivate,
    init: &[u8],
    ephemeral: MachinePrivate,
) -> Result<([u8; RESPONSE_LEN], Transport, MachinePublic), HandshakeError> {
    if init.len() != INITIATION_LEN || init[2] != MSG_INITIATION || init[3..5] != [0, 96] {
        return Err(HandshakeError::BadInitiation);
    }
    let version = u16::from_be_bytes([init[0], init[1]]);
    let mut s = SymmetricState::new(version);
    s.mix_hash(control.public().as_bytes());
    let mut ie = [0u8; 32];
    ie.copy_from_slice(&init[5..37]);
    s.mix_hash(&ie);
    let k = s.mix_dh(control.secret(), &ie)?;
    let mut machine = [0u8; 32];
    s.decrypt_and_hash(&k, &init[37..85], &mut machine)?;
    let k = s.mix_dh(control.secret(), &machine)?;
    s.decrypt_and_hash(&k, &init[85..101], &mut [])?;
    let mut resp = [0u8; RESPONSE_LEN];
    resp[0] = MSG_RESPONSE;
    resp[1..3].copy_from_slice(&((RESPONSE_LEN - HEADER_LEN) as u16).to_be_bytes());
    let re = ephemeral.public();
    resp[3..35].copy_from_slice(re.as_bytes());
    s.mix_hash(re.as_bytes());
    s.mix_dh(ephemeral.secret(), &ie)?;
    let k = s.mix_dh(ephemeral.secret(), &machine)?;
    s.encrypt_and_hash(&k, &[], &mut resp[35..51]);
    let (k1, k2) = s.split();
    let peer = MachinePublic::from_bytes(machine);
    Ok((resp, Transport::new(k2, k1, s.hash(), version, peer), peer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn keys(
        seed: u64,
    ) -> (
        MachinePrivate,
        MachinePrivate,
        MachinePrivate,
        MachinePrivate,
    ) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (
            MachinePrivate::generate(&mut rng),
            MachinePrivate::generate(&mut rng),
            MachinePrivate::generate(&mut rng),
            MachinePrivate::generate(&mut rng),
        )
    }

    fn pair() -> (Transport, Transport, MachinePublic) {
        let (machine, control, ce, se) = keys(1);
        let (mut hs, init) = ClientHandshake::new(&machine, control.public(), 119, ce).unwrap();
        assert_eq!(&init[..5], &[0, 119, 1, 0, 96]);
        let (resp, server, seen) = respond(&control, &init, se).unwrap();
        assert_eq!(seen, machine.public());
        // Byte by byte: needs more until the whole response is there.
        for n in 0..RESPONSE_LEN {
            assert!(
                hs.read_response(&resp[..n]).unwrap().is_none(),
                "complete at {n}"
            );
        }
        let mut wire = resp.to_vec();
        wire.extend_from_slice(b"rest");
        let (client, used) = hs.read_response(&wire).unwrap().unwrap();
        assert_eq!(used, RESPONSE_LEN);
        assert_eq!(client.handshake_hash(), server.handshake_hash());
        assert_eq!(client.peer(), control.public());
        assert!(matches!(
            hs.read_response(&wire),
            Err(HandshakeError::Finished)
        ));
        (client, server, machine.public())
    }

    #[test]
    fn handshake_then_records_both_ways() {
        let (mut client, mut server, _) = pair();
        let mut wire = Vec::new();
        client.encrypt(b"PRI * HTTP/2.0", &mut wire).unwrap();
        client.encrypt(b"", &mut wire).unwrap(); // no records for nothing
        let mut plain = Vec::new();
        server.decrypt(&wire, &mut plain).unwrap();
        assert_eq!(plain, b"PRI * HTTP/2.0");

        // server → client, large: split into several records, fed in odd pieces
        let big: Vec<u8> = (0..20_000u32).map(|i| (i * 7) as u8).collect();
        let mut wire = Vec::new();
        server.encrypt(&big, &mut wire).unwrap();
        assert_eq!(
            wire.len(),
            big.len() + big.len().div_ceil(MAX_PLAINTEXT_SIZE) * (HEADER_LEN + TAG_LEN)
        );
        let mut plain = Vec::new();
        for piece in wire.chunks(333) {
            client.decrypt(piece, &mut plain).unwrap();
        }
        assert_eq!(plain, big);
    }

    #[test]
    fn nonce_is_big_endian_counter() {
        let (mut client, _, _) = pair();
        let mut a = Vec::new();
        client.encrypt(b"x", &mut a).unwrap();
        // Record 2 is sealed with counter 1; reproduce it with an explicit
        // big-endian nonce and compare.
        let (machine, control, ce, se) = keys(1);
        let (mut hs, init) = ClientHandshake::new(&machine, control.public(), 119, ce).unwrap();
        let (resp, _, _) = respond(&control, &init, se).unwrap();
        let _ = hs.read_response(&resp).unwrap().unwrap();
        let (k1, _) = hs.state.split();
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&k1));
        let mut body = *b"y";
        let mut nonce = [0u8; 12];
        nonce[11] = 1;
        let tag = cipher
            .encrypt_in_place_detached(&nonce.into(), &[], &mut body)
            .unwrap();
        let mut b = Vec::new();
        client.encrypt(b"y", &mut b).unwrap();
        assert_eq!(&b[3..4], &body);
        assert_eq!(&b[4..], tag.as_slice());
    }

    #[test]
    fn wrong_control_key_fails_to_authenticate() {
        let (machine, control, ce, se) = keys(2);
        let (other, _, _, _) = keys(3);
        let (mut hs, init) = ClientHandshake::new(&machine, other.public(), 119, ce).unwrap();
        // The server cannot even read the initiation with its real key.
        assert_eq!(
            respond(&control, &init, se.clone()).err(),
            Some(HandshakeError::Decrypt)
        );
        // A response made for another client does not authenticate here.
        let (_, _, ce2, _) = keys(4);
        let (_, init2) = ClientHandshake::new(&machine, control.public(), 119, ce2).unwrap();
        let (resp, _, _) = respond(&control, &init2, se).unwrap();
        assert_eq!(hs.read_response(&resp).err(), Some(HandshakeError::Decrypt));
    }

    #[test]
    fn server_error_and_bad_responses() {
        let (machine, control, ce, _) = keys(5);
        let (mut hs, _) =
            ClientHandshake::new(&machine, control.public(), 119, ce.clone()).unwrap();
        let mut err = vec![3, 0, 5];
        assert!(hs.read_response(&err).unwrap().is_none());
        err.extend_from_slice(b"no\x07pe");
        assert_eq!(
            hs.read_response(&err).err(),
            Some(HandshakeError::ServerError("nope".into()))
        );
        let (mut hs, _) =
            ClientHandshake::new(&machine, control.public(), 119, ce.clone()).unwrap();
        assert_eq!(
            hs.read_response(&[9, 0, 48]).err(),
            Some(HandshakeError::UnexpectedType(9))
        );
        let (mut hs, _) = ClientHandshake::new(&machine, control.public(), 119, ce).unwrap();
        assert_eq!(
            hs.read_response(&[2, 0, 47]).err(),
            Some(HandshakeError::BadLength(47))
        );
        // a low-order control key (all zeros) is refused up front
        let (_, _, ce, _) = keys(6);
        assert!(matches!(
            ClientHandshake::new(&machine, MachinePublic::from_bytes([0; 32]), 119, ce),
            Err(HandshakeError::LowOrderKey)
        ));
        assert_eq!(
            respond(&control, &[0u8; 10], keys(7).0).err(),
            Some(HandshakeError::BadInitiation)
        );
    }

    #[test]
    fn bad_records_fail_and_stay_failed() {
        let (mut client, mut server, _) = pair();
        let mut wire = Vec::new();
        server.encrypt(b"hello", &mut wire).unwrap();
        let mut tampered = wire.clone();
        tampered[5] ^= 1;
        let mut out = Vec::new();
        assert_eq!(
            client.decrypt(&tampered, &mut out),
            Err(TransportError::Decrypt)
        );
        assert_eq!(client.decrypt(&wire, &mut out), Err(TransportError::Failed));
        assert!(out.is_empty());

        let (mut client, _, _) = pair();
        assert_eq!(
            client.decrypt(&[4, 0x10, 0x00], &mut out),
            Err(TransportError::TooBig(4099))
        );
        let (mut client, _, _) = pair();
        assert_eq!(
            client.decrypt(&[7, 0, 1, 0], &mut out),
            Err(TransportError::UnexpectedType(7))
        );
        let (mut client, _, _) = pair();
        assert_eq!(
            client.decrypt(&[4, 0, 3, 1, 2, 3], &mut out),
            Err(TransportError::Decrypt)
        );
        // A truncated record is just "more needed".
        let (mut client, mut server, _) = pair();
        let mut wire = Vec::new();
        server.encrypt(b"hello", &mut wire).unwrap();
        client.decrypt(&wire[..wire.len() - 1], &mut out).unwrap();
        assert!(out.is_empty());
        client.decrypt(&wire[wire.len() - 1..], &mut out).unwrap();
        assert_eq!(out, b"hello");
    }

    #[test]
    fn nonce_exhaustion_is_an_error_not_a_wrap() {
        let (mut client, _, _) = pair();
        client.tx.nonce = u64::MAX - 1;
        let mut out = Vec::new();
        client.encrypt(b"last", &mut out).unwrap();
        assert_eq!(
            client.encrypt(b"one more", &mut out),
            Err(TransportError::NonceExhausted)
        );
    }

    #[test]
    fn hkdf_matches_rfc5869_construction() {
        // HMAC-BLAKE2s with an empty input: check our two outputs against a
        // direct HMAC computation of T(1) and T(2).
        let ck = [9u8; 32];
        let (a, b) = hkdf2(&ck, b"ikm");
        let mut m = <HmacBlake2s as KeyInit>::new_from_slice(&ck).unwrap();
        m.update(b"ikm");
        let prk = m.finalize().into_bytes();
        let mut m = <HmacBlake2s as KeyInit>::new_from_slice(&prk).unwrap();
        m.update(&[1]);
        let t1 = m.finalize().into_bytes();
        let mut m = <HmacBlake2s as KeyInit>::new_from_slice(&prk).unwrap();
        m.update(&t1);
        m.update(&[2]);
        assert_eq!(a.as_slice(), t1.as_slice());
        assert_eq!(b.as_slice(), m.finalize().into_bytes().as_slice());
        assert_ne!(a, b);
    }
}
