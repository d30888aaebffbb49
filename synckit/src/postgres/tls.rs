//! `sslmode` and `sslrootcert` with libpq's meaning.
//!
//! tokio-postgres knows `disable`, `prefer` and `require` only, and no
//! `sslrootcert`; synckit reads both from the connection string, hands
//! tokio-postgres a string it accepts, and builds the TLS connector
//! (rustls, feature `tls`) that gives each mode its libpq meaning:
//!
//! | `sslmode` | encryption | certificate checks |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | when the server offers it | none |
//! | `require` | always | none (with `sslrootcert`: as `verify-ca`) |
//! | `verify-ca` | always | chain to `sslrootcert` (else the WebPKI roots) |
//! | `verify-full` | always | chain and host name |

use std::path::PathBuf;

use super::conninfo;
use crate::model::error::{Error, Result};

/// The `sslmode` values of libpq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(Error::InvalidConnection {
                    reason: format!(
                        "unknown sslmode {other:?}: use disable, prefer, require, verify-ca or verify-full"
                    ),
                });
            }
        })
    }

    /// The mode tokio-postgres negotiates with.
    fn wire(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            _ => "require",
        }
    }
}

/// TLS settings read from a connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    pub(crate) mode: SslMode,
    pub(crate) root_cert: Option<PathBuf>,
}

/// Splits `sslmode` and `sslrootcert` out of a connection string, found
/// where the driver finds its parameters (see [`conninfo`]); returns the
/// string for tokio-postgres and the settings.
pub(crate) fn split(conn: &str) -> Result<(String, TlsSettings)> {
    let mut settings = TlsSettings {
        mode: SslMode::Prefer,
        root_cert: None,
    };
    let (params, separator) = match conninfo::url(conn) {
        Some(url) => (url.params, '&'),
        None => (conninfo::key_values(conn), ' '),
    };
    let mut out = conn.to_owned();
    for param in params.iter().rev() {
        let ours = match param.key.as_str() {
            "sslmode" => {
                settings.mode = SslMode::parse(&param.value)?;
                true
            }
            "sslrootcert" => {
                settings.root_cert = Some(PathBuf::from(&param.value));
                true
            }
            _ => false,
        };
        if ours {
            // The parameter and the separator before it (or after it, for
            // the first of a query).
            let mut range = param.whole.clone();
            if separator == '&' {
                if out[..range.start].ends_with('&') {
                    range.start -= 1;
                } else if out[range.end..].starts_with('&') {
                    range.end += 1;
                }
            }
            out.replace_range(range, "");
        }
    }
    let wire = format!("sslmode={}", settings.mode.wire());
    match conninfo::url(&out) {
        Some(url) => match url.query_start {
            Some(start) if start == out.len() => out.push_str(&wire),
            Some(_) => {
                out.push('&');
                out.push_str(&wire);
            }
            None => {
                out.push('?');
                out.push_str(&wire);
            }
        },
        None => {
            out.push(' ');
            out.push_str(&wire);
        }
    }
    Ok((out, settings))
}

#[cfg(feature = "tls")]
pub(crate) use with_rustls::connector;

#[cfg(feature = "tls")]
mod with_rustls {
    use std::sync::Arc;

    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{
        CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    };
    use tokio_postgres_rustls::MakeRustlsConnect;

    use super::{SslMode, TlsSettings};
    use crate::model::error::{Error, Result};

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn roots(settings: &TlsSettings) -> Result<RootCertStore> {
        let mut store = RootCertStore::empty();
        match &settings.root_cert {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| Error::InvalidConnection {
                        reason: format!("cannot read sslrootcert {}: {e}", path.display()),
                    })?;
                for cert in certs {
                    store.add(cert).map_err(|e| Error::InvalidConnection {
                        reason: format!("bad certificate in {}: {e}", path.display()),
                    })?;
                }
            }
            None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        Ok(store)
    }

    /// Checks signatures but not the certificate: libpq's `prefer` and
    /// `require` without a root certificate.
    #[derive(Debug)]
    struct Unverified(Arc<CryptoProvider>);

    /// Checks the chain but not the host name: libpq's `verify-ca`.
    #[derive(Debug)]
    struct ChainOnly(Arc<WebPkiServerVerifier>);

    impl ServerCertVerifier for Unverified {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> std::result::Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
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
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
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

    impl ServerCertVerifier for ChainOnly {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> std::result::Result<ServerCertVerified, rustls::Error> {
            match self
                .0
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }

    /// The rustls connector for these settings.
    pub(crate) fn connector(settings: &TlsSettings) -> Result<MakeRustlsConnect> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::InvalidConnection {
                reason: format!("TLS setup: {e}"),
            })?;
        let mode = match (settings.mode, &settings.root_cert) {
            // libpq: `require` with a root certificate verifies like verify-ca.
            (SslMode::Require, Some(_)) => SslMode::VerifyCa,
            (mode, _) => mode,
        };
        let config = match mode {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
                .with_no_client_auth(),
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let verifier = WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots(settings)?),
                    provider,
                )
                .build()
                .map_err(|e| Error::InvalidConnection {
                    reason: format!("TLS setup: {e}"),
                })?;
                if mode == SslMode::VerifyFull {
                    builder.with_webpki_verifier(verifier).with_no_client_auth()
                } else {
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(ChainOnly(verifier)))
                        .with_no_client_auth()
                }
            }
        };
        Ok(MakeRustlsConnect::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_url_and_key_value_forms() {
        let (rest, s) = split(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u@h/db?application_name=x&sslmode=require");
        assert_eq!(s.mode, SslMode::VerifyFull);
        assert_eq!(s.root_cert, Some(PathBuf::from("/etc/ca.pem")));

        let (rest, s) = split("host=h sslmode=verify-ca sslrootcert='/a b/ca.pem' user=u").unwrap();
        assert!(
            !rest.contains("verify-ca") && !rest.contains("ca.pem"),
            "{rest}"
        );
        assert!(rest.ends_with("sslmode=require"), "{rest}");
        assert!(rest.contains("host=h") && rest.contains("user=u"), "{rest}");
        assert_eq!(s.mode, SslMode::VerifyCa);
        assert_eq!(s.root_cert, Some(PathBuf::from("/a b/ca.pem")));

        let (_, s) = split("postgres://u@h/db").unwrap();
        assert_eq!(s.mode, SslMode::Prefer);
        assert!(split("host=h sslmode=sometimes").is_err());
    }
}
