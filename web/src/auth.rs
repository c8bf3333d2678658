//! Who may use the page: the admin password (argon2id), the one-time setup
//! code that guards the first password, sessions with their CSRF tokens,
//! per-address login rate limiting and API bearer tokens. No sockets here:
//! callers pass the time in, so all of it is unit-tested.

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use blake2::{Blake2b512, Digest};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// The admin password hash (PHC string), in the state dir.
pub const PASSWORD_FILE: &str = "web-password";
/// The one-time setup code, in the state dir until a password is set.
pub const SETUP_CODE_FILE: &str = "setup-code";
/// API tokens (hashes only), in the state dir.
pub const TOKENS_FILE: &str = "web-tokens.json";

/// Shortest accepted password.
pub const MIN_PASSWORD: usize = 8;
/// Failed logins from one address before it has to wait.
pub const MAX_FAILURES: usize = 5;
/// How long a failure counts against an address.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(300);
/// At most this many sessions (the oldest goes first).
const MAX_SESSIONS: usize = 64;
/// At most this many addresses tracked by the limiter.
const MAX_TRACKED: usize = 4096;

fn random(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

fn random_token(n: usize) -> String {
    URL_SAFE_NO_PAD.encode(random(n))
}

/// A new setup code like `K7QM-3XPA` (no 0/O/1/I to misread).
pub fn new_setup_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let raw = random(8);
    let s: String = raw
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    format!("{}-{}", &s[..4], &s[4..])
}

fn normalise_code(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

fn digest(s: &str) -> String {
    let d = Blake2b512::digest(s.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Check a new password's length; the message is for the form.
pub fn check_new_password(pw: &str) -> Result<(), String> {
    if pw.chars().count() < MIN_PASSWORD {
        return Err(format!("use at least {MIN_PASSWORD} characters"));
    }
    if pw.len() > 1024 {
        return Err("use at most 1024 bytes".into());
    }
    Ok(())
}

/// argon2id memory cost of new hashes, in KiB: 19 MiB (OWASP's minimum for
/// argon2id, and argon2's default), with `ARGON2_TIME` passes and one lane.
/// The server runs one hash at a time, so this is the most a login costs a
/// 512 MB board.
pub const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
/// argon2id passes of new hashes.
pub const ARGON2_TIME: u32 = 2;
/// The most memory a stored hash may ask for (KiB): a PHC string that wants
/// more is refused rather than verified (64 MiB).
pub const ARGON2_MAX_MEMORY_KIB: u32 = 64 * 1024;

fn argon2() -> Argon2<'static> {
    let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_TIME, 1, None)
        .expect("constant argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// argon2's working memory, allocated once and reused by the one thread
/// that hashes: the process keeps one 19 MiB block instead of a fresh one
/// (and a fresh malloc arena) per login.
#[derive(Default)]
pub struct HashMemory(Vec<Block>);

impl HashMemory {
    fn blocks(&mut self, n: usize) -> &mut [Block] {
        if self.0.len() < n {
            self.0.resize(n, Block::default());
        }
        &mut self.0[..n]
    }
}

/// argon2id hash (PHC string) of a password. Slow on purpose: call it off the event loop.
pub fn hash_password(pw: &str) -> String {
    hash_password_with(&mut HashMemory::default(), pw)
}

/// [`hash_password`] with reused memory.
pub fn hash_password_with(mem: &mut HashMemory, pw: &str) -> String {
    let salt = SaltString::encode_b64(&random(16)).expect("16 bytes is a valid salt");
    let mut raw = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut raw).expect("just encoded");
    let a = argon2();
    let mut out = [0u8; 32];
    a.hash_password_into_with_memory(
        pw.as_bytes(),
        salt_bytes,
        &mut out,
        mem.blocks(a.params().block_count()),
    )
    .expect("argon2 with constant parameters");
    PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(a.params()).expect("constant parameters"),
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).expect("32 bytes is a valid output")),
    }
    .to_string()
}

/// Does `pw` match the PHC string `hash`? Slow on purpose. The hash's own
/// parameters are used (older hashes still verify), up to
/// [`ARGON2_MAX_MEMORY_KIB`].
pub fn verify_password(hash: &str, pw: &str) -> bool {
    verify_password_with(&mut HashMemory::default(), hash, pw)
}

/// [`verify_password`] with reused memory.
pub fn verify_password_with(mem: &mut HashMemory, hash: &str, pw: &str) -> bool {
    let Ok(h) = PasswordHash::new(hash) else {
        return false;
    };
    let params = match Params::try_from(&h) {
        Ok(p) if p.m_cost() <= ARGON2_MAX_MEMORY_KIB => p,
        _ => {
            tracing::error!(
                "the stored admin password hash asks for more than {ARGON2_MAX_MEMORY_KIB} KiB or is unreadable: set the password again with `meshbridge set-password`"
            );
            return false;
        }
    };
    let (Ok(alg), Some(salt), Some(expected)) = (Algorithm::try_from(h.algorithm), h.salt, h.hash)
    else {
        return false;
    };
    let version = match h.version.map(Version::try_from) {
        None => Version::V0x13,
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let mut raw = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut raw) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    let blocks = params.block_count();
    if Argon2::new(alg, version, params)
        .hash_password_into_with_memory(pw.as_bytes(), salt_bytes, &mut out, mem.blocks(blocks))
        .is_err()
    {
        return false;
    }
    // Output's comparison takes the same time wherever the bytes differ.
    Output::new(&out).is_ok_and(|o| o == expected)
}

/// Write `data` to `path` readable by root only, atomically (tmp, fsync, rename).
pub fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Set the admin password in `state_dir` (the console's `meshbridge set-password`).
/// A running daemon notices the new file and ends all sessions.
pub fn set_password_file(state_dir: &Path, pw: &str) -> io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    write_private(&state_dir.join(PASSWORD_FILE), hash_password(pw).as_bytes())?;
    match std::fs::remove_file(state_dir.join(SETUP_CODE_FILE)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The CSRF token state-changing requests must carry.
    pub csrf: String,
    last: Instant,
    created: Instant,
}

/// An API token as stored (its hash, never the token).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Token {
    /// Name given when it was made.
    pub name: String,
    /// When (RFC 3339).
    pub created: String,
    /// blake2b of the token.
    hash: String,
}

/// An API token as the API lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TokenInfo {
    /// Name given when it was made.
    pub name: String,
    /// When (RFC 3339).
    pub created: String,
}

#[derive(Debug, Default)]
struct Failures {
    times: Vec<Instant>,
}

/// Login, setup code and session state for one box.
#[derive(Debug)]
pub struct Auth {
    dir: PathBuf,
    hash: Option<String>,
    hash_stamp: Option<(SystemTime, u64)>,
    setup_code: Option<String>,
    sessions: HashMap<String, Session>,
    idle: Duration,
    failures: HashMap<IpAddr, Failures>,
    tokens: Vec<Token>,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Auth {
    /// Load the password hash and tokens from `dir`; without a password, read
    /// the setup code or make one (written to `dir`, mode 600). Returns the
    /// code when it was made just now, for the log.
    pub fn open(dir: &Path, idle: Duration) -> io::Result<(Auth, Option<String>)> {
        std::fs::create_dir_all(dir)?;
        let mut auth = Auth {
            dir: dir.to_path_buf(),
            hash: None,
            hash_stamp: None,
            setup_code: None,
            sessions: HashMap::new(),
            idle,
            failures: HashMap::new(),
            tokens: Vec::new(),
        };
        auth.reload_password();
        match std::fs::read_to_string(dir.join(TOKENS_FILE)) {
            Ok(t) => match serde_json::from_str(&t) {
                Ok(v) => auth.tokens = v,
                Err(e) => tracing::error!(
                    "{}: unreadable ({e}); API tokens are disabled until it is fixed or removed",
                    dir.join(TOKENS_FILE).display()
                ),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut made = None;
        if auth.hash.is_none() {
            let path = dir.join(SETUP_CODE_FILE);
            let code = match std::fs::read_to_string(&path) {
                Ok(c) if !normalise_code(&c).is_empty() => c.trim().to_string(),
                _ => {
                    let c = new_setup_code();
                    write_private(&path, format!("{c}\n").as_bytes())?;
                    made = Some(c.clone());
                    c
                }
            };
            auth.setup_code = Some(code);
        }
        Ok((auth, made))
    }

    fn reload_password(&mut self) {
        let path = self.dir.join(PASSWORD_FILE);
        let now = stamp(&path);
        if now == self.hash_stamp && (now.is_some() || self.hash.is_none()) {
            return;
        }
        let had = self.hash.is_some();
        self.hash_stamp = now;
        self.hash = std::fs::read_to_string(&path)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| PasswordHash::new(s).is_ok());
        if had || self.hash.is_some() {
            // A new password (from the console) ends every session.
            self.sessions.clear();
        }
        if self.hash.is_some() {
            self.setup_code = None;
        }
    }

    /// Pick up a password set from the console since the last call.
    pub fn refresh(&mut self) {
        self.reload_password();
    }

    /// Sessions end after this long without a request.
    pub fn idle_timeout(&self) -> Duration {
        self.idle
    }

    /// No admin password yet: only the set-password page works.
    pub fn setup_required(&self) -> bool {
        self.hash.is_none()
    }

    /// The stored hash, for verifying off the event loop.
    pub fn password_hash(&self) -> Option<String> {
        self.hash.clone()
    }

    /// Is `code` the setup code (case, spaces and dashes do not matter)?
    pub fn check_setup_code(&self, code: &str) -> bool {
        match &self.setup_code {
            Some(c) => digest(&normalise_code(c)) == digest(&normalise_code(code)),
            None => false,
        }
    }

    /// Store a new password hash; ends all sessions and retires the setup code.
    pub fn store_password(&mut self, hash: String) -> io::Result<()> {
        write_private(&self.dir.join(PASSWORD_FILE), hash.as_bytes())?;
        match std::fs::remove_file(self.dir.join(SETUP_CODE_FILE)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        self.hash = Some(hash);
        self.hash_stamp = stamp(&self.dir.join(PASSWORD_FILE));
        self.setup_code = None;
        self.sessions.clear();
        Ok(())
    }

    /// Start a session; returns its id (the cookie) and CSRF token.
    pub fn new_session(&mut self, now: Instant) -> (String, String) {
        self.expire(now);
        if self.sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
            {
                self.sessions.remove(&oldest);
            }
        }
        let id = random_token(32);
        let csrf = random_token(24);
        self.sessions.insert(
            id.clone(),
            Session {
                csrf: csrf.clone(),
                last: now,
                created: now,
            },
        );
        (id, csrf)
    }

    fn expire(&mut self, now: Instant) {
        let idle = self.idle;
        self.sessions
            .retain(|_, s| now.saturating_duration_since(s.last) < idle);
    }

    /// The session with this id, if it has not been idle too long; marks it used.
    pub fn session(&mut self, id: &str, now: Instant) -> Option<&Session> {
        self.expire(now);
        let s = self.sessions.get_mut(id)?;
        s.last = now;
        Some(s)
    }

    /// Log out.
    pub fn end_session(&mut self, id: &str) {
        self.sessions.remove(id);
    }

    /// How many sessions are open.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// May `ip` try a password now? `Err(wait)` when it failed too often.
    pub fn login_allowed(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let Some(f) = self.failures.get_mut(&ip) else {
            return Ok(());
        };
        f.times
            .retain(|t| now.saturating_duration_since(*t) < FAILURE_WINDOW);
        if f.times.len() < MAX_FAILURES {
            return Ok(());
        }
        let oldest = f.times[f.times.len() - MAX_FAILURES];
        Err(FAILURE_WINDOW.saturating_sub(now.saturating_duration_since(oldest)))
    }

    /// Check and charge in one step, before any hashing: `Ok` means one
    /// attempt from `ip` is counted as failed already (a good password clears
    /// it with [`Auth::login_succeeded`]), so parallel requests can never get
    /// more than [`MAX_FAILURES`] attempts past the check.
    pub fn login_begin(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        self.login_allowed(ip, now)?;
        self.login_failed(ip, now);
        Ok(())
    }

    /// Count a failed attempt from `ip`.
    pub fn login_failed(&mut self, ip: IpAddr, now: Instant) {
        if self.failures.len() >= MAX_TRACKED && !self.failures.contains_key(&ip) {
            self.failures.retain(|_, f| {
                f.times
                    .iter()
                    .any(|t| now.saturating_duration_since(*t) < FAILURE_WINDOW)
            });
            if self.failures.len() >= MAX_TRACKED {
                return;
            }
        }
        let f = self.failures.entry(ip).or_default();
        f.times.push(now);
        if f.times.len() > MAX_FAILURES * 2 {
            f.times.remove(0);
        }
    }

    /// A good password from `ip` clears its failures.
    pub fn login_succeeded(&mut self, ip: IpAddr) {
        self.failures.remove(&ip);
    }

    /// API tokens as stored (with their hashes: not for the API).
    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// API tokens as the API shows them: name and date, never the hash.
    pub fn token_list(&self) -> Vec<TokenInfo> {
        self.tokens
            .iter()
            .map(|t| TokenInfo {
                name: t.name.clone(),
                created: t.created.clone(),
            })
            .collect()
    }

    /// Make an API token called `name`; returns the token (shown once).
    pub fn create_token(&mut self, name: &str, now: SystemTime) -> Result<String, String> {
        let name = name.trim();
        if name.is_empty()
            || name.len() > 32
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err("1 to 32 letters, digits, '-', '_' or '.'".into());
        }
        if self.tokens.iter().any(|t| t.name == name) {
            return Err(format!("a token called {name:?} exists already"));
        }
        let token = format!("mbt_{}", random_token(32));
        let mut next = self.tokens.clone();
        next.push(Token {
            name: name.to_string(),
            created: humantime::format_rfc3339_seconds(now).to_string(),
            hash: digest(&token),
        });
        self.save_tokens(next).map_err(|e| format!("saving: {e}"))?;
        Ok(token)
    }

    /// Delete a token; false if there is none by that name.
    pub fn delete_token(&mut self, name: &str) -> io::Result<bool> {
        let next: Vec<Token> = self
            .tokens
            .iter()
            .filter(|t| t.name != name)
            .cloned()
            .collect();
        if next.len() == self.tokens.len() {
            return Ok(false);
        }
        self.save_tokens(next)?;
        Ok(true)
    }

    fn save_tokens(&mut self, next: Vec<Token>) -> io::Result<()> {
        let text = serde_json::to_string_pretty(&next).map_err(io::Error::other)?;
        write_private(&self.dir.join(TOKENS_FILE), text.as_bytes())?;
        self.tokens = next;
        Ok(())
    }

    /// Is this a valid API token?
    pub fn check_token(&self, token: &str) -> bool {
        if !token.starts_with("mbt_") {
            return false;
        }
        let h = digest(token);
        self.tokens.iter().any(|t| t.hash == h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> PathBuf {
        let d = std::env::temp_dir().join(format!("mb-auth-{}", random_token(6)));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn first_start_makes_a_setup_code_and_keeps_it() {
        let d = tmp();
        let (a, made) = Auth::open(&d, Duration::from_secs(60)).unwrap();
        let code = made.expect("a new code");
        assert!(a.setup_required());
        assert!(a.check_setup_code(&code.to_lowercase().replace('-', " ")));
        assert!(!a.check_setup_code("AAAA-AAAA"));
        let on_disk = std::fs::read_to_string(d.join(SETUP_CODE_FILE)).unwrap();
        assert_eq!(on_disk.trim(), code);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join(SETUP_CODE_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A restart reads the same code and does not log a new one.
        let (b, made) = Auth::open(&d, Duration::from_secs(60)).unwrap();
        assert!(made.is_none());
        assert!(b.check_setup_code(&code));
    }

    #[test]
    fn a_code_written_by_the_image_is_used() {
        let d = tmp();
        std::fs::write(d.join(SETUP_CODE_FILE), "ab12-cd34\n").unwrap();
        let (a, made) = Auth::open(&d, Duration::from_secs(60)).unwrap();
        assert!(made.is_none());
        assert!(a.check_setup_code("AB12CD34"));
    }

    #[test]
    fn setting_the_password_retires_the_code_and_ends_sessions() {
        let d = tmp();
        let (mut a, _) = Auth::open(&d, Duration::from_secs(60)).unwrap();
        let now = Instant::now();
        let (id, _) = a.new_session(now);
        a.store_password(hash_password("correct horse")).unwrap();
        assert!(!a.setup_required());
        assert!(a.session(&id, now).is_none());
        assert!(!d.join(SETUP_CODE_FILE).exists());
        assert!(verify_password(
            &a.password_hash().unwrap(),
            "correct horse"
        ));
        assert!(!verify_password(&a.password_hash().unwrap(), "wrong horse"));
        assert!(a.password_hash().unwrap().starts_with("$argon2id$"));
        // Reopened: no setup any more.
        let (b, made) = Auth::open(&d, Duration::from_secs(60)).unwrap();
        assert!(made.is_none() && !b.setup_required());
    }

    #[test]
    fn console_password_change_is_noticed_and_ends_sessions() {
        let d = tmp();
        set_password_file(&d, "first password").unwrap();
        let (mut a, _) = Auth::open(&d, Duration::from_secs(60)).unwrap();
        let now = Instant::now();
        let (id, _) = a.new_session(now);
        assert!(a.session(&id, now).is_some());
        std::thread::sleep(Duration::from_millis(20));
        set_password_file(&d, "second password!").unwrap();
        a.refresh();
        assert!(a.session(&id, now).is_none());
        assert!(verify_password(
            &a.password_hash().unwrap(),
            "second password!"
        ));
    }

    #[test]
    fn sessions_expire_when_idle_and_use_keeps_them() {
        let d = tmp();
        let (mut a, _) = Auth::open(&d, Duration::from_secs(60)).unwrap();
        let t0 = Instant::now();
        let (id, csrf) = a.new_session(t0);
        assert_eq!(
            a.session(&id, t0 + Duration::from_secs(50)).unwrap().csrf,
            csrf
        );
        assert!(a.session(&id, t0 + Duration::from_secs(100)).is_some());
        assert!(a.session(&id, t0 + Duration::from_secs(161)).is_none());
        assert!(a.session("nope", t0).is_none());
        let (id2, _) = a.new_session(t0);
        a.end_session(&id2);
        assert!(a.session(&id2, t0).is_none());
    }

    #[test]
    fn logins_are_limited_per_address() {
        let d = tmp();
        let (mut a, _) = Auth::open(&d, Duration::from_secs(60)).unwrap();
        let ip: IpAddr = "10.77.1.100".parse().unwrap();
        let other: IpAddr = "10.77.1.101".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            assert!(a.login_allowed(ip, t0).is_ok(), "attempt {i}");
            a.login_failed(ip, t0 + Duration::from_secs(i as u64));
        }
        let wait = a
            .login_allowed(ip, t0 + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(wait, FAILURE_WINDOW - Duration::from_secs(10));
        assert!(a.login_allowed(other, t0).is_ok());
        assert!(a
            .login_allowed(ip, t0 + FAILURE_WINDOW + Duration::from_secs(1))
            .is_ok());
        a.login_succeeded(ip);
        assert!(a.login_allowed(ip, t0 + Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn tokens_are_stored_hashed_and_checked() {
        let d = tmp();
        let (mut a, _) = Auth::open(&d, Duration::from_secs(60)).unwrap();
        let t = a.create_token("ci", SystemTime::now()).unwrap();
        assert!(a.check_token(&t));
        assert!(!a.check_token("mbt_nope"));
        assert!(a.create_token("ci", SystemTime::now()).is_err());
        assert!(a.create_token("bad name!", SystemTime::now()).is_err());
        let stored = std::fs::read_to_string(d.join(TOKENS_FILE)).unwrap();
        assert!(!stored.contains(&t[4..]));
        let (b, _) = Auth::open(&d, Duration::from_secs(60)).unwrap();
        assert!(b.check_token(&t));
        assert!(a.delete_token("ci").unwrap());
        assert!(!a.check_token(&t));
        assert!(!a.delete_token("ci").unwrap());
    }

    #[test]
    fn parallel_logins_are_charged_before_hashing() {
        let d = tmp();
        let (mut a, _) = Auth::open(&d, Duration::from_secs(60)).unwrap();
        let ip: IpAddr = "10.77.1.100".parse().unwrap();
        let t0 = Instant::now();
        // 300 requests arrive before any hash is done: only 5 get through.
        let passed = (0..300).filter(|_| a.login_begin(ip, t0).is_ok()).count();
        assert_eq!(passed, MAX_FAILURES);
        a.login_succeeded(ip);
        assert!(a.login_begin(ip, t0).is_ok());
    }

    #[test]
    fn new_hashes_use_the_small_board_parameters_and_old_ones_verify() {
        let h = hash_password("correct horse");
        assert!(h.starts_with(&format!(
            "$argon2id$v=19$m={ARGON2_MEMORY_KIB},t={ARGON2_TIME},p=1$"
        )));
        // A hash made with other (cheaper) parameters still verifies.
        let salt = SaltString::encode_b64(&[7u8; 16]).unwrap();
        use argon2::PasswordHasher as _;
        let cheap = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(4096, 3, 1, None).unwrap(),
        )
        .hash_password(b"old password", &salt)
        .unwrap()
        .to_string();
        assert!(verify_password(&cheap, "old password"));
        assert!(!verify_password(&cheap, "other password"));
        // The crate's own verifier agrees with ours on our hashes, and memory is reused.
        use argon2::PasswordVerifier as _;
        let parsed = PasswordHash::new(&h).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());
        let mut mem = HashMemory::default();
        assert!(verify_password_with(&mut mem, &h, "correct horse"));
        assert!(verify_password_with(&mut mem, &cheap, "old password"));
        assert!(!verify_password_with(&mut mem, &h, "correct horsE"));
        assert_eq!(mem.0.len(), ARGON2_MEMORY_KIB as usize);
        // One that asks for too much memory is refused without hashing.
        let greedy = cheap.replace("m=4096", "m=1048576");
        assert!(!verify_password(&greedy, "old password"));
    }

    #[test]
    fn the_token_list_has_no_hashes() {
        let d = tmp();
        let (mut a, _) = Auth::open(&d, Duration::from_secs(60)).unwrap();
        a.create_token("ci", SystemTime::now()).unwrap();
        let shown = serde_json::to_string(&a.token_list()).unwrap();
        assert!(
            shown.contains("\"ci\"") && !shown.contains("hash"),
            "{shown}"
        );
        assert!(!shown.contains(&a.tokens()[0].hash));
    }

    #[test]
    fn passwords_need_eight_characters() {
        assert!(check_new_password("short").is_err());
        assert!(check_new_password("long enough").is_ok());
    }
}
