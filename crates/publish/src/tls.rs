//! TLS for the publish server and certificate pinning for its clients.
//!
//! A publish serves TLS by default with a certificate made for it: self-signed, so the
//! client cannot check it against a CA and must pin it instead. Two pins are printed:
//! the certificate's SHA-256 fingerprint (what `openssl x509 -fingerprint -sha256`
//! prints, and what `snapport fetch --fingerprint` takes) and the SHA-256 of its public
//! key in curl's `--pinnedpubkey sha256//BASE64` form. curl checks that pin even with
//! `-k`, so the printed curl command is as safe as a CA-checked one.

use crate::error::{Error, Result};
use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

/// A certificate chain or a key is a few KiB of PEM; more is not one.
const MAX_PEM_BYTES: u64 = 1 << 20;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's certificate and key, and the pins that identify them.
pub struct Identity {
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the certificate (DER), `AB:CD:...` as openssl prints it.
    pub fingerprint: String,
    /// curl's `--pinnedpubkey` value: `sha256//` and the base64 SHA-256 of the public key.
    pub pinned_pubkey: String,
}

impl Identity {
    /// A fresh ECDSA P-256 key and a self-signed certificate naming `names` (host names or
    /// IP addresses; clients pin it, so the names are for people reading it).
    pub fn self_signed(names: &[String]) -> Result<Identity> {
        let key = rcgen::KeyPair::generate().map_err(|e| Error::with("generating a TLS key", e))?;
        let params = rcgen::CertificateParams::new(names.to_vec())
            .map_err(|e| Error::with("making a TLS certificate", e))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| Error::with("signing a TLS certificate", e))?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Identity::build(vec![cert.der().clone()], der, &key.public_key_der())
    }

    /// The certificate chain and private key of PEM files (`--tls-cert`, `--tls-key`).
    /// Each is read whole as a regular file under `MAX_PEM_BYTES` (1 MiB).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Identity> {
        let read = |p: &Path| {
            snapport_core::io::read_regular_file(p, MAX_PEM_BYTES)
                .map_err(|e| Error::io(format!("reading {}", p.display()), e))
        };
        let chain = CertificateDer::pem_slice_iter(&read(cert)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::with(format!("reading certificates from {}", cert.display()), e))?;
        if chain.is_empty() {
            return Err(Error::new(format!(
                "{} holds no PEM certificate",
                cert.display()
            )));
        }
        let key_pem = String::from_utf8(read(key)?)
            .map_err(|_| Error::new(format!("{} is not a PEM file (not text)", key.display())))?;
        let der = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| Error::with(format!("reading a private key from {}", key.display()), e))?;
        let public = rcgen::KeyPair::from_pem(&key_pem)
            .map_err(|e| {
                Error::with(
                    format!(
                        "{}: only PKCS#8 ECDSA, Ed25519 and RSA keys are supported",
                        key.display()
                    ),
                    e,
                )
            })?
            .public_key_der();
        Identity::build(chain, der, &public)
    }

    fn build(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        public_key_der: &[u8],
    ) -> Result<Identity> {
        let fingerprint = fingerprint_text(&Sha256::digest(&chain[0]).into());
        let pinned_pubkey = format!(
            "sha256//{}",
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(public_key_der))
        );
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::with("setting up TLS", e))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| Error::with("the TLS certificate and key do not go together", e))?;
        // HTTP/1.1 and 1.0 both, as the server speaks both: a client that offers only
        // `http/1.0` (curl -0) is otherwise refused in the handshake. A client that offers
        // no ALPN gets none.
        config.alpn_protocols = vec![b"http/1.1".to_vec(), b"http/1.0".to_vec()];
        Ok(Identity {
            config: Arc::new(config),
            fingerprint,
            pinned_pubkey,
        })
    }
}

/// `AB:CD:...`: 32 bytes as openssl prints a fingerprint.
pub fn fingerprint_text(hash: &[u8; 32]) -> String {
    hash.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Reads a SHA-256 fingerprint as people paste it: hex with or without colons, any case,
/// optionally after `sha256:` or `SHA256 Fingerprint=`.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32]> {
    let t = text.trim();
    let t = t.rsplit(['=', ' ']).next().unwrap_or(t);
    let t = t
        .strip_prefix("sha256:")
        .or_else(|| t.strip_prefix("SHA256:"))
        .unwrap_or(t);
    let hex_digits: String = t.chars().filter(|c| *c != ':').collect();
    let mut out = [0u8; 32];
    hex::decode_to_slice(&hex_digits, &mut out).map_err(|_| {
        Error::new(format!(
            "{text:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)"
        ))
    })?;
    Ok(out)
}

/// A rustls client configuration that accepts exactly the certificate whose SHA-256 is
/// `fingerprint` (and checks the handshake's signatures with it), whatever its names or
/// issuer: how a client trusts a self-signed publish certificate.
pub fn pinned_client_config(fingerprint: [u8; 32]) -> rustls::ClientConfig {
    let provider = provider();
    let verifier = Arc::new(PinnedCertificate {
        fingerprint,
        provider: Arc::clone(&provider),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

#[derive(Debug)]
struct PinnedCertificate {
    fingerprint: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity).into();
        if crate::same_secret(&got, &self.fingerprint) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate has fingerprint {}, not the pinned {}",
                fingerprint_text(&got),
                fingerprint_text(&self.fingerprint)
            )))
        }
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_as_pasted() {
        let h = [0xabu8; 32];
        let text = fingerprint_text(&h);
        assert_eq!(parse_fingerprint(&text).unwrap(), h);
        assert_eq!(parse_fingerprint(&text.to_lowercase()).unwrap(), h);
        assert_eq!(
            parse_fingerprint(&format!("sha256 Fingerprint={text}")).unwrap(),
            h
        );
        assert_eq!(parse_fingerprint(&hex::encode(h)).unwrap(), h);
        assert!(parse_fingerprint("AB:CD").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }
}
