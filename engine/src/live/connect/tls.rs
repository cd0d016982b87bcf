//! TLS for Postgres connections: libpq's `sslmode` semantics on rustls.
//!
//! | sslmode | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | never | — |
//! | `allow`, `prefer` | when the server offers TLS | no |
//! | `require` | always | no; the chain, when a root certificate is configured (libpq's rule) |
//! | `verify-ca` | always | chain to `sslrootcert` |
//! | `verify-full` | always | chain to `sslrootcert`, and the host name |
//!
//! The crypto provider is always rustls' `ring` one, passed explicitly (no process-wide
//! default is installed or relied on).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server insists (read as `prefer`: tokio-postgres has no plaintext-first
    /// attempt; a server that offers TLS gets it).
    Allow,
    /// TLS when the server offers it, unverified (libpq's default).
    #[default]
    Prefer,
    /// Always TLS; the certificate is not checked unless a root certificate is configured.
    Require,
    /// Always TLS, and the server's certificate chains to a trusted CA.
    VerifyCa,
    /// Always TLS, the certificate chains to a trusted CA and names the host connected to.
    VerifyFull,
}

impl SslMode {
    /// The mode named `text`, as libpq spells it.
    pub fn parse(text: &str) -> Option<SslMode> {
        Some(match text {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    /// libpq's name for the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the connection fails rather than go without TLS.
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where trusted CA certificates come from (`sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// A PEM file of CA certificates.
    File(PathBuf),
    /// The operating system's trust store (`sslrootcert=system`, as in libpq 16+).
    System,
}

impl RootCerts {
    /// The value of `sslrootcert` for this.
    pub fn as_param(&self) -> String {
        match self {
            RootCerts::File(path) => path.display().to_string(),
            RootCerts::System => "system".to_owned(),
        }
    }
}

/// How a connection uses TLS: the mode and the files, already resolved (defaults under
/// `~/.postgresql/` included).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// `sslmode`.
    pub mode: SslMode,
    /// `sslrootcert`, or `~/.postgresql/root.crt` when it exists.
    pub root_cert: Option<RootCerts>,
    /// `sslcert`, or `~/.postgresql/postgresql.crt` when it exists: the client certificate.
    pub cert: Option<PathBuf>,
    /// `sslkey`, or `~/.postgresql/postgresql.key`: the client certificate's private key.
    pub key: Option<PathBuf>,
}

/// The crypto provider every Lockplane TLS connection uses.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The TLS connector for `settings`: reads the root and client certificate files and sets up
/// the verification `settings.mode` asks for. The error says which file or setting is wrong.
pub fn tls_connector(settings: &TlsSettings) -> Result<MakeRustlsConnect, String> {
    Ok(MakeRustlsConnect::new(client_config(settings)?))
}

/// A connector for cancel requests (see [`crate::connect::cancel_query`]): TLS when the
/// session used it, without checking the server's certificate.
pub(crate) fn cancel_connector() -> MakeRustlsConnect {
    static CONNECTOR: OnceLock<MakeRustlsConnect> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let config = client_config(&TlsSettings::default())
                .expect("an unverified TLS configuration reads no file and cannot fail");
            MakeRustlsConnect::new(config)
        })
        .clone()
}

fn client_config(settings: &TlsSettings) -> Result<ClientConfig, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = match settings.mode {
        SslMode::Disable | SslMode::Allow | SslMode::Prefer => Arc::new(Unchecked { provider }),
        SslMode::Require => match &settings.root_cert {
            // libpq: "if a root CA file exists, sslmode=require behaves as verify-ca".
            Some(roots) => Arc::new(ChainOnly {
                roots: Arc::new(load_roots(roots)?),
                provider,
            }),
            None => Arc::new(Unchecked { provider }),
        },
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let Some(roots) = &settings.root_cert else {
                return Err(format!(
                    "sslmode={} checks the server's certificate against a certificate \
                     authority, and none is given: set sslrootcert (or PGSSLROOTCERT) to the \
                     CA's certificate file, or sslrootcert=system for the system's trusted \
                     CAs (~/.postgresql/root.crt is used when it exists)",
                    settings.mode
                ));
            };
            let roots = Arc::new(load_roots(roots)?);
            if settings.mode == SslMode::VerifyCa {
                Arc::new(ChainOnly { roots, provider })
            } else {
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| format!("TLS set-up: {e}"))?
            }
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (settings.mode, &settings.cert) {
        (SslMode::Disable, _) | (_, None) => builder.with_no_client_auth(),
        (_, Some(cert)) => {
            let Some(key) = &settings.key else {
                return Err(format!(
                    "client certificate {} has no key: set sslkey (or PGSSLKEY)",
                    cert.display()
                ));
            };
            let certs = load_certs(cert, "client certificate (sslcert)")?;
            let key = load_key(key)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("client certificate {}: {e}", cert.display()))?
        }
    };
    // What libpq 17 sends; servers before 17 ignore it, 17 and later accept it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(config)
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
}

fn load_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the {what} {} is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "the {what} {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
}

fn load_roots(roots: &RootCerts) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match roots {
        RootCerts::File(path) => {
            let what = "root certificate file (sslrootcert)";
            for cert in load_certs(path, what)? {
                store
                    .add(cert)
                    .map_err(|e| format!("the {what} {}: {e}", path.display()))?;
            }
        }
        RootCerts::System => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(format!(
                    "sslrootcert=system: no trusted CA certificates found on this system{}",
                    found
                        .errors
                        .first()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                ));
            }
        }
    }
    Ok(store)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    check_key_permissions(path)?;
    let pem = read(path, "client key (sslkey)")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        format!(
            "the client key (sslkey) {} is not a PEM private key: {e}",
            path.display()
        )
    })
}

/// libpq refuses a private key others may read: 0600 or less when the file is the user's,
/// 0640 or less when root owns it.
fn check_key_permissions(path: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::metadata(path) else {
            // Reading it will say what is wrong.
            return Ok(());
        };
        let mode = meta.mode();
        let too_open = if meta.uid() == 0 {
            mode & 0o037 != 0
        } else {
            mode & 0o077 != 0
        };
        if too_open {
            return Err(format!(
                "the client key (sslkey) {} has group or world access (mode {:04o}): it must \
                 be u=rw (0600) or less when owned by the current user, u=rw,g=r (0640) or \
                 less when owned by root",
                path.display(),
                mode & 0o7777
            ));
        }
    }
    Ok(())
}

/// `prefer`/`require` without a root certificate: the session is encrypted, the server's
/// identity is not checked (libpq's behaviour). Handshake signatures are still verified.
#[derive(Debug)]
struct Unchecked {
    provider: Arc<CryptoProvider>,
}

/// `verify-ca`: the certificate must chain to a trusted root; the name is not checked.
#[derive(Debug)]
struct ChainOnly {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
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
        verify_tls12_signature(
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
        verify_tls13_signature(
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

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
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
        verify_tls13_signature(
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
    fn modes_read_as_libpq_spells_them() {
        for mode in [
            SslMode::Disable,
            SslMode::Allow,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ] {
            assert_eq!(SslMode::parse(mode.as_str()), Some(mode));
        }
        assert_eq!(SslMode::parse("verify_full"), None);
    }

    #[test]
    fn verifying_without_a_root_certificate_says_what_to_set() {
        let settings = TlsSettings {
            mode: SslMode::VerifyFull,
            ..TlsSettings::default()
        };
        let err = tls_connector(&settings).err().expect("refused");
        assert!(err.contains("sslrootcert"), "{err}");
        let settings = TlsSettings {
            mode: SslMode::VerifyCa,
            root_cert: Some(RootCerts::File("/nonexistent/ca.pem".into())),
            ..TlsSettings::default()
        };
        let err = tls_connector(&settings).err().expect("refused");
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
