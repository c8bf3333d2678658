//! TLS for the box's tailnet connections (feature `client`): the control
//! connection of an `https://` control URL and the DERP relays.
//!
//! rustls with the ring provider (ring is already linked for boringtun:
//! no cmake, no aws-lc), TLS 1.3 only (Go's `crypto/tls` servers —
//! Headscale, derper, Tailscale's service — speak it).
//!
//! Trusted roots, in this order:
//! * the file in `SSL_CERT_FILE`, as Go and OpenSSL honour it;
//! * else the system's CA bundle ([`CA_BUNDLES`]; OpenWrt's `ca-bundle`
//!   package installs the first path);
//! * plus, when given, a CA file of the caller's (`[tailnet] ca_file`: a
//!   self-hosted Headscale with a private CA).
//!
//! No CA is compiled in: it would cost ~250 KB and age with the firmware.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// CA bundles where Debian, Raspberry Pi OS, OpenWrt, Alpine and Fedora
/// keep them.
pub const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/ssl/cert.pem",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// The TLS setup failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The caller's CA file could not be read or held no certificate.
    #[error("CA file {path}: {why}")]
    CaFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// Nothing to verify a server against.
    #[error(
        "no CA certificates found (install ca-certificates / ca-bundle, or set SSL_CERT_FILE)"
    )]
    NoRoots,
    /// rustls refused the configuration.
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The trusted roots and where they came from (for the log).
#[derive(Debug, Clone)]
pub struct Roots {
    /// The certificates.
    pub store: RootCertStore,
    /// The files they were read from.
    pub sources: Vec<String>,
}

/// The first of `SSL_CERT_FILE` and [`CA_BUNDLES`] that holds a
/// certificate, plus every certificate in `ca_file` (its name and its PEM
/// text, read by the caller; it must hold at least one certificate).
pub fn roots(ca_file: Option<(&Path, &[u8])>) -> Result<Roots, TlsError> {
    let mut store = RootCertStore::empty();
    let mut sources = Vec::new();
    let env = std::env::var("SSL_CERT_FILE")
        .ok()
        .filter(|s| !s.is_empty());
    for path in env
        .iter()
        .map(String::as_str)
        .chain(CA_BUNDLES.iter().copied())
    {
        let Ok(iter) = CertificateDer::pem_file_iter(path) else {
            continue;
        };
        let (added, _) = store.add_parsable_certificates(iter.flatten());
        if added > 0 {
            sources.push(format!("{path} ({added})"));
            break;
        }
    }
    if let Some((f, pem)) = ca_file {
        let err = |why: String| TlsError::CaFile {
            path: f.display().to_string(),
            why,
        };
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(format!("not PEM: {e}")))?;
        let (added, _) = store.add_parsable_certificates(certs);
        if added == 0 {
            return Err(err("holds no usable PEM certificate".into()));
        }
        sources.push(format!("{} ({added})", f.display()));
    }
    if store.is_empty() {
        return Err(TlsError::NoRoots);
    }
    Ok(Roots { store, sources })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration that verifies servers against `roots`.
pub fn verified(roots: Roots) -> Result<Arc<ClientConfig>, TlsError> {
    let c = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots.store)
        .with_no_client_auth();
    Ok(Arc::new(c))
}

/// A client configuration that accepts any certificate: only for DERP
/// nodes the map marks `InsecureForTests` (as tailscale's `derphttp`
/// does). Never used for the control connection.
pub fn insecure_for_tests() -> Result<Arc<ClientConfig>, TlsError> {
    let p = provider();
    let c = ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(p)))
        .with_no_client_auth();
    Ok(Arc::new(c))
}

/// Whether a failed TLS handshake failed because the server's certificate
/// was not accepted (untrusted issuer, wrong name, expired, …).
pub fn is_certificate_error(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| {
            matches!(
                e,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            )
        })
}

/// Accepts any certificate (see [`insecure_for_tests`]).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_that_holds_no_certificate_is_an_error_naming_it() {
        let name = Path::new("/etc/meshbridge/hs-ca.pem");
        let e = roots(Some((name, b"not a certificate\n"))).unwrap_err();
        assert!(matches!(e, TlsError::CaFile { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("hs-ca.pem") && text.contains("no usable PEM certificate"),
            "{e}"
        );
        let broken = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let e = roots(Some((name, broken))).unwrap_err();
        assert!(matches!(e, TlsError::CaFile { .. }), "{e}");
    }

    #[test]
    fn certificate_errors_are_told_apart_from_other_failures() {
        let bad = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert!(is_certificate_error(&bad));
        let other = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(!is_certificate_error(&other));
    }
}
