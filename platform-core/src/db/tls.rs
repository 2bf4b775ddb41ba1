//! Connections to PostgreSQL over TLS, as libpq's `sslmode` describes them, with rustls.
//!
//! | `sslmode` | encrypted | certificate checked | host name checked |
//! |---|---|---|---|
//! | `disable` | no | - | - |
//! | `prefer` (the default) | when the server offers it | no | no |
//! | `require` | yes | only when a CA is given, as libpq does | no |
//! | `verify-ca` | yes | yes | no |
//! | `verify-full` | yes | yes | yes |
//!
//! The CA comes from the URL's `sslrootcert` or `APP_DATABASE_CA_FILE`; without one the
//! system's roots are used.

use std::sync::Arc;

use diesel::ConnectionResult;
use diesel_async::AsyncPgConnection;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{DatabaseTls, SslMode};

/// How connections are opened: with TLS or without, as configured.
#[derive(Clone)]
pub(crate) struct Connector {
    /// `Err` when TLS cannot be set up (no root certificate): every connection fails with it.
    tls: Result<Option<MakeRustlsConnect>, String>,
}

impl Connector {
    /// The connector for `tls`.
    pub(crate) fn new(tls: &DatabaseTls) -> Self {
        if tls.mode == SslMode::Disable {
            return Self { tls: Ok(None) };
        }
        let tls = client_config(tls).map(|config| Some(MakeRustlsConnect::new(config)));
        if let Err(error) = &tls {
            tracing::error!(%error, "PostgreSQL over TLS cannot be set up");
        }
        Self { tls }
    }

    /// Opens a connection to `url` (the driver's URL, [`DatabaseTls::driver_url`]).
    pub(crate) async fn connect(&self, url: &str) -> ConnectionResult<AsyncPgConnection> {
        let bad = |error: tokio_postgres::Error| {
            diesel::ConnectionError::BadConnection(crate::service::error_chain(&error))
        };
        let tls =
            self.tls.as_ref().map_err(|e| diesel::ConnectionError::BadConnection(e.clone()))?;
        match tls {
            None => {
                let (client, connection) =
                    tokio_postgres::connect(url, tokio_postgres::NoTls).await.map_err(bad)?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
            Some(tls) => {
                let (client, connection) =
                    tokio_postgres::connect(url, tls.clone()).await.map_err(bad)?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
        }
    }
}

fn client_config(tls: &DatabaseTls) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?;
    let checks_certificate = match tls.mode {
        SslMode::Disable | SslMode::Prefer => false,
        SslMode::Require => tls.roots.is_some(),
        SslMode::VerifyCa | SslMode::VerifyFull => true,
    };
    if !checks_certificate {
        let verifier = Arc::new(EncryptOnly { provider });
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth());
    }
    let roots = Arc::new(root_store(tls)?);
    if tls.mode == SslMode::VerifyFull {
        return Ok(builder.with_root_certificates(roots).with_no_client_auth());
    }
    let chain = WebPkiServerVerifier::builder_with_provider(roots, provider)
        .build()
        .map_err(|e| format!("root certificates: {e}"))?;
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ChainOnly { chain }))
        .with_no_client_auth())
}

fn root_store(tls: &DatabaseTls) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match &tls.roots {
        Some(roots) => {
            for root in roots.iter() {
                store.add(root.clone()).map_err(|e| format!("a root certificate: {e}"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("no CA certificate: the system has none; set APP_DATABASE_CA_FILE \
                            or the URL's sslrootcert"
                    .to_owned());
            }
        }
    }
    Ok(store)
}

/// `sslmode=prefer` and `require` without a CA: the link is encrypted, the server unchecked,
/// as with libpq. The handshake's signatures are still verified.
#[derive(Debug)]
struct EncryptOnly {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for EncryptOnly {
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
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca` (and `require` with a CA): the certificate must chain to the CA; the
/// host name it names is not compared.
#[derive(Debug)]
struct ChainOnly {
    chain: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.chain.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}
