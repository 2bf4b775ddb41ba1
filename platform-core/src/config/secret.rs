//! Values that must never be printed: URLs with credentials and the SSH host key.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey};
use url::Url;

/// A URL that may carry a password (`postgres://user:password@host/db`).
///
/// `Debug` and `Display` replace the password with `***`; [`SecretUrl::expose`] returns the
/// real URL for the one place that connects with it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(Url);

impl SecretUrl {
    /// Wraps `url`.
    pub fn new(url: Url) -> Self {
        Self(url)
    }

    /// Returns the URL including its credentials. Do not log the result.
    pub fn expose(&self) -> &Url {
        &self.0
    }

    /// Returns the URL with its password, if any, replaced by `***`.
    pub fn redacted(&self) -> Url {
        let mut url = self.0.clone();
        if url.password().is_some() {
            // Cannot fail: the URL already has a host, since it has a password.
            let _ = url.set_password(Some("***"));
        }
        url
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({:?})", self.redacted().as_str())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.redacted(), f)
    }
}

/// The SSH server's Ed25519 host key, decoded from `APP_SSH_SERVER_PRIVATE_KEY`.
///
/// The variable holds the hex encoding of the OpenSSH private key file, as produced by
/// `hexdump -v -e '/1 "%02x"' < ssh_host_key`. `Debug` shows only the public fingerprint.
#[derive(Clone)]
pub struct SshHostKey {
    pem: SecretString,
    fingerprint: String,
    public_openssh: String,
}

impl SshHostKey {
    /// Decodes the hex form of an unencrypted OpenSSH Ed25519 private key.
    ///
    /// # Errors
    ///
    /// Returns a message naming what is wrong (not hex, not an OpenSSH key, encrypted, not
    /// Ed25519). The message never contains the key.
    pub fn from_hex(hex_pem: &str) -> Result<Self, String> {
        let compact: String = hex_pem.split_whitespace().collect();
        if compact.starts_with("-----BEGIN") {
            return Err("not hex-encoded: this looks like the key file itself; encode it with \
                 hexdump -v -e '/1 \"%02x\"' < ssh_host_key"
                .to_owned());
        }
        let bytes = hex::decode(&compact).map_err(|e| match e {
            hex::FromHexError::OddLength => "not hex-encoded (odd length)".to_owned(),
            hex::FromHexError::InvalidHexCharacter { index, .. } => {
                format!("not hex-encoded (invalid character at position {index})")
            }
            hex::FromHexError::InvalidStringLength => "not hex-encoded".to_owned(),
        })?;
        let pem = String::from_utf8(bytes)
            .map_err(|_| "hex decodes to bytes that are not a PEM text file".to_owned())?;
        let key = PrivateKey::from_openssh(pem.trim()).map_err(|_| {
            "hex decodes to something that is not an OpenSSH private key \
             (expected -----BEGIN OPENSSH PRIVATE KEY-----, as written by ssh-keygen -t ed25519)"
                .to_owned()
        })?;
        if key.algorithm() != Algorithm::Ed25519 {
            return Err(format!(
                "must be an Ed25519 key (got {}); generate one with ssh-keygen -t ed25519",
                key.algorithm()
            ));
        }
        if key.is_encrypted() {
            return Err("the key is encrypted with a passphrase; use a key without one".to_owned());
        }
        let public = key.public_key();
        let public_openssh =
            public.to_openssh().map_err(|_| "cannot encode the public key".to_owned())?;
        // known_hosts lines carry no comment: keep the algorithm and the key only.
        let public_openssh =
            public_openssh.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        // Normalise to the canonical encoding so consumers need not care how it was wrapped.
        let pem = key
            .to_openssh(LineEnding::LF)
            .map_err(|_| "cannot re-encode the private key".to_owned())?;
        Ok(Self {
            pem: SecretString::from(pem.as_str()),
            fingerprint: public.fingerprint(HashAlg::Sha256).to_string(),
            public_openssh,
        })
    }

    /// Returns the private key in OpenSSH PEM form. Do not log the result.
    pub fn expose_pem(&self) -> &str {
        self.pem.expose_secret()
    }

    /// Returns the SHA256 fingerprint as OpenSSH prints it (`SHA256:...`).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Returns the public key as one `ssh-ed25519 AAAA...` line, as it appears in `known_hosts`.
    pub fn public_key_openssh(&self) -> &str {
        &self.public_openssh
    }
}

impl fmt::Debug for SshHostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshHostKey").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}
