//! PostgreSQL's section: where it is, how many connections, and how they are secured.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use super::env::{EnvReader, parse_absolute_path, parse_positive, secret_url_with_schemes};
use super::secret::SecretUrl;

/// PostgreSQL: `APP_DATABASE_URL`, `APP_DATABASE_MAX_CONNECTIONS` (default 10) and
/// `APP_DATABASE_CA_FILE`.
///
/// TLS follows the URL's `sslmode` as libpq reads it (`disable`, `prefer`, the default,
/// `require`, `verify-ca`, `verify-full`); the CA certificates (PEM) come from the URL's
/// `sslrootcert` or from `APP_DATABASE_CA_FILE`, else from the system.
#[derive(Clone, Debug)]
pub struct DatabaseConfig {
    /// The connection URL (`postgres://user:password@host:5432/db?sslmode=verify-full`).
    pub url: SecretUrl,
    /// The most connections the pool opens.
    pub max_connections: u32,
    /// How connections are secured.
    pub tls: DatabaseTls,
}

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, its certificate unchecked.
    Prefer,
    /// TLS always; the certificate is checked against the CA only when one is given.
    Require,
    /// TLS, the certificate signed by the CA.
    VerifyCa,
    /// TLS, the certificate signed by the CA and naming the host connected to.
    VerifyFull,
}

/// How connections to PostgreSQL are secured.
#[derive(Clone, Debug)]
pub struct DatabaseTls {
    /// The URL's `sslmode`.
    pub mode: SslMode,
    /// The CA certificates read from `sslrootcert` or `APP_DATABASE_CA_FILE`, if either is set.
    pub roots: Option<Arc<[CertificateDer<'static>]>>,
}

impl DatabaseTls {
    /// The URL the driver is given: `url` without libpq's TLS parameters (which the driver
    /// does not know), with the `sslmode` it understands.
    pub fn driver_url(&self, url: &url::Url) -> String {
        let mut driver = url.clone();
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(key, _)| !matches!(key.as_ref(), "sslmode" | "sslrootcert"))
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect();
        let mode = match self.mode {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "require",
        };
        driver.query_pairs_mut().clear().extend_pairs(&kept).append_pair("sslmode", mode);
        driver.into()
    }
}

impl DatabaseConfig {
    /// Reads the section, recording problems in `env`.
    pub fn read(env: &mut EnvReader<'_>) -> Option<Self> {
        let url =
            env.required("APP_DATABASE_URL", secret_url_with_schemes(&["postgres", "postgresql"]));
        let max_connections = env.or_default("APP_DATABASE_MAX_CONNECTIONS", 10, parse_positive);
        let ca_file = env.optional("APP_DATABASE_CA_FILE", |raw| {
            let path = parse_absolute_path(raw)?;
            read_certificates(&path).map(|roots| (path, roots))
        });
        let url = url?;
        let mode = match url.expose().query_pairs().find(|(key, _)| key == "sslmode") {
            None => Some(SslMode::Prefer),
            Some((_, mode)) => match mode.as_ref() {
                "disable" => Some(SslMode::Disable),
                "allow" | "prefer" => Some(SslMode::Prefer),
                "require" => Some(SslMode::Require),
                "verify-ca" => Some(SslMode::VerifyCa),
                "verify-full" => Some(SslMode::VerifyFull),
                other => {
                    env.problem(
                        "APP_DATABASE_URL",
                        format!(
                            "sslmode must be disable, prefer, require, verify-ca or verify-full \
                             (got {other:?})"
                        ),
                    );
                    None
                }
            },
        };
        for unsupported in ["sslcert", "sslkey"] {
            if url.expose().query_pairs().any(|(key, _)| key == unsupported) {
                env.problem(
                    "APP_DATABASE_URL",
                    format!("{unsupported}: client certificates are not supported"),
                );
            }
        }
        let url_roots = match url.expose().query_pairs().find(|(key, _)| key == "sslrootcert") {
            None => Some(None),
            Some((_, path)) => match read_certificates(Path::new(path.as_ref())) {
                Ok(roots) => Some(Some(roots)),
                Err(message) => {
                    env.problem("APP_DATABASE_URL", format!("sslrootcert: {message}"));
                    None
                }
            },
        };
        let roots = url_roots?.or(ca_file?.map(|(_, roots)| roots));
        Some(Self {
            url,
            max_connections: max_connections?,
            tls: DatabaseTls { mode: mode?, roots },
        })
    }
}

/// Reads the PEM certificates of `path`: at least one.
pub(super) fn read_certificates(path: &Path) -> Result<Arc<[CertificateDer<'static>]>, String> {
    let shown = PathBuf::from(path).display().to_string();
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{shown} is not PEM certificates: {e}"))?;
    if certificates.is_empty() {
        return Err(format!("{shown} holds no PEM certificate"));
    }
    Ok(certificates.into())
}
