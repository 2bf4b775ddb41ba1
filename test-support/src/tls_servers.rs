//! PostgreSQL and Redis serving TLS only, with certificates made for the test by `openssl`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};

/// A certificate authority and a server certificate it signed, in a temporary directory.
pub struct Certificates {
    dir: PathBuf,
    /// The CA's certificate (PEM): what clients trust.
    pub ca: PathBuf,
    /// The server's certificate (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
}

fn openssl(args: &[&str], dir: &Path) -> anyhow::Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("cannot run openssl")?;
    ensure!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

impl Certificates {
    /// A fresh CA, and a certificate it signs for the DNS names `names`.
    ///
    /// # Errors
    ///
    /// Fails when `openssl` does.
    pub fn make(names: &[&str]) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(crate::unique_name("certs"));
        std::fs::create_dir_all(&dir)?;
        let curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let mut ca = vec!["req", "-x509"];
        ca.extend(curve);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=platform test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&ca, &dir)?;
        let mut request = vec!["req"];
        request.extend(curve);
        request.extend(["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=server"]);
        openssl(&request, &dir)?;
        let names: Vec<String> = names.iter().map(|name| format!("DNS:{name}")).collect();
        std::fs::write(
            dir.join("server.ext"),
            format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=serverAuth\n",
                names.join(",")
            ),
        )?;
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                "server.pem",
                "-extfile",
                "server.ext",
            ],
            &dir,
        )?;
        Ok(Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            dir,
        })
    }

    /// Gives the directory and its files to the `postgres` system user when running as root,
    /// as PostgreSQL runs as that user and wants its key readable by itself alone.
    fn give_to_postgres(&self) -> anyhow::Result<()> {
        std::fs::set_permissions(&self.key, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        if !running_as_root() {
            return Ok(());
        }
        let status = Command::new("chown").args(["-R", "postgres:"]).arg(&self.dir).status()?;
        ensure!(status.success(), "chown postgres {:?} failed", self.dir);
        let mut parent = self.dir.parent();
        while let Some(dir) = parent {
            let _ = Command::new("chmod").arg("o+x").arg(dir).status();
            parent = dir.parent();
        }
        Ok(())
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// A PostgreSQL cluster of its own that accepts TLS connections only (`hostssl`, trust).
pub struct TlsPostgres {
    data: PathBuf,
    port: u16,
}

impl TlsPostgres {
    /// Initialises and starts a cluster serving `certificates`.
    ///
    /// # Errors
    ///
    /// Fails when `scripts/postgres.sh` does.
    pub fn start(certificates: &Certificates) -> anyhow::Result<Self> {
        certificates.give_to_postgres()?;
        let hba = certificates.dir.join("pg_hba.conf");
        std::fs::write(
            &hba,
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )?;
        if running_as_root() {
            let _ = Command::new("chown").arg("postgres:").arg(&hba).status();
        }
        let data = certificates.dir.join("data");
        let port = crate::free_port();
        let script = crate::workspace_root().join("scripts/postgres.sh");
        let output = Command::new(&script)
            .arg("start")
            .arg(&data)
            .arg(port.to_string())
            .args(["-c", "ssl=on"])
            .arg("-c")
            .arg(format!("ssl_cert_file={}", certificates.cert.display()))
            .arg("-c")
            .arg(format!("ssl_key_file={}", certificates.key.display()))
            .arg("-c")
            .arg(format!("hba_file={}", hba.display()))
            .output()
            .with_context(|| format!("cannot run {script:?}"))?;
        if !output.status.success() {
            let log = std::fs::read_to_string(data.join("server.log")).unwrap_or_default();
            bail!(
                "PostgreSQL with TLS did not start: {}\n{log}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(Self { data, port })
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = Command::new(crate::workspace_root().join("scripts/postgres.sh"))
            .arg("stop")
            .arg(&self.data)
            .output();
    }
}

/// A Redis server that speaks TLS only.
pub struct TlsRedis {
    child: std::process::Child,
    port: u16,
}

impl TlsRedis {
    /// Starts `redis-server` serving `certificates` on a free loopback port.
    ///
    /// # Errors
    ///
    /// Fails when it does not listen within 10 seconds.
    pub async fn start(certificates: &Certificates) -> anyhow::Result<Self> {
        let port = crate::free_port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--tls-port")
            .arg(port.to_string())
            .arg("--tls-cert-file")
            .arg(&certificates.cert)
            .arg("--tls-key-file")
            .arg(&certificates.key)
            .arg("--tls-ca-cert-file")
            .arg(&certificates.ca)
            .args(["--tls-auth-clients", "no", "--dir"])
            .arg(&certificates.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("cannot start redis-server (scripts/services.sh install)")?;
        let redis = Self { child, port };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            ensure!(tokio::time::Instant::now() < deadline, "redis-server with TLS did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(redis)
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
