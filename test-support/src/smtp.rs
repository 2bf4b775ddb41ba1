//! A capturing SMTP server (Python's aiosmtpd) run by one test.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;

use crate::{free_port, unique_name};

/// The AUTH user name a [`SmtpCapture`] accepts.
pub const SMTP_USER: &str = "mailer";

/// The AUTH password a [`SmtpCapture`] accepts.
pub const SMTP_PASSWORD: &str = "capture-secret-7Qx";

/// How a [`SmtpCapture`] secures its sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureTls {
    /// Plain SMTP; AUTH offered in clear.
    None,
    /// STARTTLS offered and required before AUTH and MAIL.
    StartTls,
    /// TLS from the first byte.
    Implicit,
}

impl CaptureTls {
    fn as_arg(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::StartTls => "starttls",
            Self::Implicit => "implicit",
        }
    }

    /// The value of `APP_SMTP_TLS` that matches.
    pub fn env_value(self) -> &'static str {
        self.as_arg()
    }
}

/// A message the server accepted.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct CapturedMail {
    /// The envelope sender.
    pub mail_from: String,
    /// The envelope recipients.
    pub rcpt_tos: Vec<String>,
    /// Whether the session was encrypted.
    pub tls: bool,
    /// The AUTH login of the session, if it authenticated.
    pub auth_login: Option<String>,
    /// The `Message-ID` header.
    pub message_id: Option<String>,
    /// The `Subject` header.
    pub subject: Option<String>,
    /// The top-level content type.
    pub content_type: String,
    /// The `text/plain` part.
    pub text: Option<String>,
    /// The `text/html` part.
    pub html: Option<String>,
}

/// An SMTP server on a free loopback port that writes each accepted message to a file, with a
/// certificate authority of its own for TLS, requiring AUTH as [`SMTP_USER`].
///
/// Recipients steer it by local part: `reject-…` gets 550, `defer-once-…` gets 451 once,
/// `slow-…` has its message captured and the reply to DATA delayed by 3 seconds.
#[derive(Debug)]
pub struct SmtpCapture {
    tls: CaptureTls,
    port: u16,
    dir: PathBuf,
    child: Option<std::process::Child>,
}

impl SmtpCapture {
    /// Starts a server securing sessions with `tls`.
    ///
    /// # Errors
    ///
    /// Fails when certificates cannot be made or the server does not listen within 15 seconds.
    pub fn start(tls: CaptureTls) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(unique_name("smtp"));
        std::fs::create_dir_all(dir.join("mail"))?;
        make_certificates(&dir)?;
        let mut capture = Self { tls, port: free_port(), dir, child: None };
        capture.restart()?;
        Ok(capture)
    }

    /// Returns the port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Returns the PEM file of the certificate authority that signed the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Returns the `APP_SMTP_*` variables (and `SSL_CERT_FILE`) that point a worker here.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("APP_SMTP_HOST", "127.0.0.1".to_owned()),
            ("APP_SMTP_PORT", self.port.to_string()),
            ("APP_SMTP_TLS", self.tls.env_value().to_owned()),
            ("APP_SMTP_USERNAME", SMTP_USER.to_owned()),
            ("APP_SMTP_PASSWORD", SMTP_PASSWORD.to_owned()),
            ("APP_SMTP_FROM", "noreply@forge.example.com".to_owned()),
            ("SSL_CERT_FILE", self.ca_file().to_string_lossy().into_owned()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }

    /// Starts the server (again) on the same port, keeping what it captured.
    ///
    /// # Errors
    ///
    /// Fails when it does not listen within 15 seconds.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("smtp_capture.py");
        let mut command = std::process::Command::new(python());
        command
            .arg(&script)
            .args(["--port", &self.port.to_string(), "--tls", self.tls.as_arg()])
            .arg("--dir")
            .arg(self.dir.join("mail"))
            .args(["--user", SMTP_USER, "--password", SMTP_PASSWORD])
            .arg("--cert")
            .arg(self.dir.join("cert.pem"))
            .arg("--key")
            .arg(self.dir.join("key.pem"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("server.log"))?);
        self.child = Some(command.spawn().context("cannot start the SMTP capture server")?);
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                anyhow::bail!("the SMTP capture server exited ({status}): {}", self.log());
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the SMTP capture server did not listen on {}: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Stops the server; connections are refused until [`SmtpCapture::restart`].
    ///
    /// # Errors
    ///
    /// Fails when it cannot be signalled.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Returns every message accepted so far, oldest first.
    ///
    /// # Errors
    ///
    /// Fails when a capture file cannot be read.
    pub fn messages(&self) -> anyhow::Result<Vec<CapturedMail>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.join("mail"))?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|path| {
                let bytes = std::fs::read(path)?;
                serde_json::from_slice(&bytes).with_context(|| format!("cannot parse {path:?}"))
            })
            .collect()
    }

    /// Returns the messages accepted for `address`.
    ///
    /// # Errors
    ///
    /// Fails when a capture file cannot be read.
    pub fn messages_to(&self, address: &str) -> anyhow::Result<Vec<CapturedMail>> {
        Ok(self
            .messages()?
            .into_iter()
            .filter(|m| m.rcpt_tos.iter().any(|r| r == address))
            .collect())
    }

    /// Returns how many times `RCPT TO` named `address`, accepted or not.
    pub fn rcpt_attempts(&self, address: &str) -> usize {
        std::fs::read_to_string(self.dir.join("mail").join("rcpt.log"))
            .unwrap_or_default()
            .lines()
            .filter(|line| line.split('\t').next() == Some(address))
            .count()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for SmtpCapture {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Debian's Python, where `python3-aiosmtpd` installs, when there is one.
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" }
}

/// A certificate authority and a server certificate for 127.0.0.1 and localhost, signed by it.
fn make_certificates(dir: &Path) -> anyhow::Result<()> {
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )?;
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let steps: [Vec<&str>; 3] = [
        [&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"]]
            .concat()
            .into_iter()
            .chain(["-subj", "/CN=platform test CA"])
            .collect(),
        [&["req"][..], &ec, &["-keyout", "key.pem", "-out", "leaf.csr", "-subj", "/CN=localhost"]]
            .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ],
    ];
    for args in steps {
        let output = std::process::Command::new("openssl")
            .args(&args)
            .current_dir(dir)
            .output()
            .context("cannot run openssl")?;
        anyhow::ensure!(
            output.status.success(),
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
