//! The process-wide TLS crypto provider.

/// Installs aws-lc-rs as rustls' process-wide crypto provider, unless one is installed already.
///
/// rustls panics at the first TLS connection when the build contains two providers (ring and
/// aws-lc-rs, both pulled in by dependencies) and none was chosen. The service shell calls this;
/// programs that open TLS connections without a shell should call it once at start.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another thread installing a provider is fine: one is installed.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}
