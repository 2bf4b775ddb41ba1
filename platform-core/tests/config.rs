//! Configuration loading, with host keys made by the real `ssh-keygen`.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use platform_core::config::{
    AppConfig, EmailWorkerConfig, GitHookConfig, GitServerConfig, MetricsAggregatorConfig, SmtpTls,
    StaticServerConfig,
};

const SESSION_SECRET: &str = "session-secret-value-that-is-long-enough-0123456789";
const AI_KEY: &str = "sk-ai-key-value-0123456789";
const SMTP_PASSWORD: &str = "smtp-password-value-0123456789";
const DB_PASSWORD: &str = "db-password-value-0123456789";
const REDIS_PASSWORD: &str = "redis-password-value-0123456789";
const NATS_TOKEN: &str = "nats-token-value-0123456789";

/// Generates a key with `ssh-keygen` and returns (hex of the key file, `ssh-keygen -l` output).
fn keygen(kind: &str, extra: &[&str]) -> (String, String) {
    let dir = std::env::temp_dir().join(platform_test_support::unique_name("keys"));
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    let path = dir.join("ssh_host_key");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", "test", "-f"])
        .arg(&path)
        .args(extra)
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success());
    let pem = std::fs::read(&path).expect("key file written");
    let listed =
        Command::new("ssh-keygen").arg("-lf").arg(&path).output().expect("ssh-keygen -l runs");
    let _ = std::fs::remove_dir_all(&dir);
    (hex::encode(pem), String::from_utf8_lossy(&listed.stdout).into_owned())
}

fn full_env(ssh_key_hex: &str) -> HashMap<String, String> {
    [
        ("APP_REPOS_ROOT", "/data/repos"),
        ("APP_AVATAR_PATH", "/data/avatars"),
        ("STORAGE_PATH", "/data/files"),
        ("STATIC_ROOT", "/data"),
        ("APP_LOG_LEVEL", "info"),
        ("APP_COOKIE_SECURE", "false"),
        ("APP_DOMAIN_URL", "https://git.example.com"),
        ("APP_AI_BASIC_URL", "https://api.openai.com/v1"),
        ("APP_AI_API_KEY", AI_KEY),
        ("APP_SMTP_HOST", "smtp.example.com"),
        ("APP_SMTP_PASSWORD", SMTP_PASSWORD),
        ("APP_SESSION_SECRET", SESSION_SECRET),
        ("APP_SSH_SERVER_PRIVATE_KEY", ssh_key_hex),
        ("APP_SSH_PORT", "2222"),
        ("NATS_URL", "nats://nats:4222"),
        ("NATS_TOKEN", NATS_TOKEN),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .chain([
        ("APP_DATABASE_URL".to_owned(), format!("postgres://user:{DB_PASSWORD}@postgres:5432/app")),
        ("APP_REDIS_URL".to_owned(), format!("redis://:{REDIS_PASSWORD}@redis:6379")),
    ])
    .collect()
}

const SECRETS: [&str; 6] =
    [SESSION_SECRET, AI_KEY, SMTP_PASSWORD, DB_PASSWORD, REDIS_PASSWORD, NATS_TOKEN];

fn assert_no_secret(text: &str, ssh_key_hex: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "secret {secret:?} appears in:\n{text}");
    }
    assert!(!text.contains(&ssh_key_hex[..64]), "the host key appears in:\n{text}");
    assert!(!text.contains("OPENSSH PRIVATE KEY"), "the host key appears in:\n{text}");
}

#[test]
fn the_charts_configmap_loads_for_every_service() {
    let (key, listed) = keygen("ed25519", &[]);
    let env = full_env(&key);
    let app = AppConfig::from_env_map(&env).expect("app config loads");
    assert_eq!(
        (app.uploads.avatar_max_bytes, app.uploads.attachment_max_bytes),
        (5 << 20, 25 << 20)
    );
    assert_eq!(app.http.addr.port(), 3000);
    assert_eq!(app.embedding.model, "text-embedding-3-small");
    assert_eq!(app.embedding.base_url.as_str(), "https://api.openai.com/v1");
    assert!(!app.session.cookie_secure);

    let git = GitServerConfig::from_env_map(&env).expect("gitserver config loads");
    assert_eq!((git.http.addr.port(), git.ssh.addr.port()), (8021, 2222));
    // The fingerprint we compute is the one OpenSSH prints for the same key.
    assert!(listed.contains(git.ssh.host_key.fingerprint()), "{listed} vs {:?}", git.ssh.host_key);
    assert!(git.ssh.host_key.expose_pem().starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));

    let mail = EmailWorkerConfig::from_env_map(&env).expect("email_worker config loads");
    assert_eq!(mail.http.addr.port(), 8084);
    assert_eq!((mail.smtp.tls, mail.smtp.port), (SmtpTls::StartTls, 587));
    assert_eq!(mail.smtp.from, "noreply@git.example.com");
    assert_eq!((mail.smtp.connect_timeout.as_secs(), mail.smtp.send_timeout.as_secs()), (10, 60));

    assert_eq!(GitHookConfig::from_env_map(&env).expect("git_hook loads").http.addr.port(), 8083);
    let metrics = MetricsAggregatorConfig::from_env_map(&env).expect("metrics_aggregator loads");
    assert_eq!(metrics.http.addr.port(), 9090);
    assert_eq!(
        StaticServerConfig::from_env_map(&env).expect("static_server loads").http.addr.port(),
        8081
    );

    // Debug output of every loaded configuration is free of secrets.
    let debug = format!("{app:?}{git:?}{mail:?}");
    assert_no_secret(&debug, &key);
    assert!(debug.contains("postgres://user:***@postgres:5432/app"), "{debug}");
}

#[test]
fn every_missing_variable_is_listed_at_once() {
    let error = AppConfig::from_env_map(&HashMap::new()).expect_err("nothing is set");
    let missing: Vec<&str> = error.problems().iter().map(|p| p.variable.as_str()).collect();
    assert_eq!(
        missing,
        [
            "APP_DATABASE_URL",
            "APP_REDIS_URL",
            "APP_DOMAIN_URL",
            "APP_SESSION_SECRET",
            "APP_REPOS_ROOT",
            "APP_AVATAR_PATH",
            "STORAGE_PATH",
            "APP_AI_BASIC_URL",
            "APP_AI_API_KEY",
        ]
    );
    assert!(error.problems().iter().all(|p| p.message == "missing"));

    let error = GitServerConfig::from_env_map(&HashMap::new()).expect_err("nothing is set");
    assert!(error.names("APP_SSH_SERVER_PRIVATE_KEY") && error.names("APP_REPOS_ROOT"));
    let error = EmailWorkerConfig::from_env_map(&HashMap::new()).expect_err("nothing is set");
    assert!(error.names("APP_SMTP_HOST") && error.names("APP_SMTP_PASSWORD"));
}

#[test]
fn a_short_session_secret_is_rejected_by_name() {
    let (key, _) = keygen("ed25519", &[]);
    let mut env = full_env(&key);
    env.insert("APP_SESSION_SECRET".into(), "short-secret".into());
    let error = AppConfig::from_env_map(&env).expect_err("12 bytes are too few");
    assert_eq!(error.problems().len(), 1);
    assert!(
        error.to_string().contains("APP_SESSION_SECRET: must be at least 32 bytes (got 12)"),
        "{error}"
    );
    assert!(!format!("{error}{error:?}").contains("short-secret"));
}

#[test]
fn a_host_key_that_is_not_hex_is_rejected_by_name() {
    let (key, _) = keygen("ed25519", &[]);
    for bad in ["zz-not-hex", "abc", &key[..key.len() - 1]] {
        let mut env = full_env(&key);
        env.insert("APP_SSH_SERVER_PRIVATE_KEY".into(), bad.into());
        let error = GitServerConfig::from_env_map(&env).expect_err("not hex");
        assert_eq!(error.problems().len(), 1, "{error}");
        assert!(
            error.to_string().contains("APP_SSH_SERVER_PRIVATE_KEY: not hex-encoded"),
            "{error}"
        );
        assert_no_secret(&format!("{error}{error:?}"), &key);
    }
    // The key file itself, pasted without hex encoding, gets a hint.
    let pem = String::from_utf8(hex::decode(&key).expect("hex")).expect("PEM is text");
    let mut env = full_env(&key);
    env.insert("APP_SSH_SERVER_PRIVATE_KEY".into(), pem);
    let error = GitServerConfig::from_env_map(&env).expect_err("PEM, not hex");
    assert!(error.to_string().contains("hexdump"), "{error}");
    assert_no_secret(&format!("{error}{error:?}"), &key);
}

#[test]
fn a_hex_encoded_rsa_key_is_rejected_by_name() {
    let (ed25519, _) = keygen("ed25519", &[]);
    let (rsa, _) = keygen("rsa", &["-b", "2048"]);
    let mut env = full_env(&ed25519);
    env.insert("APP_SSH_SERVER_PRIVATE_KEY".into(), rsa.clone());
    let error = GitServerConfig::from_env_map(&env).expect_err("RSA is not Ed25519");
    assert_eq!(error.problems().len(), 1);
    assert!(
        error
            .to_string()
            .contains("APP_SSH_SERVER_PRIVATE_KEY: must be an Ed25519 key (got ssh-rsa)"),
        "{error}"
    );
    assert_no_secret(&format!("{error}{error:?}"), &rsa);
}

#[test]
fn invalid_values_are_named_and_secrets_never_repeated() {
    let (key, _) = keygen("ed25519", &[]);
    let mut env = full_env(&key);
    env.insert("APP_DATABASE_URL".into(), format!("mysql://user:{DB_PASSWORD}@db/app"));
    env.insert("APP_REDIS_URL".into(), format!("redis//:{REDIS_PASSWORD}@"));
    env.insert("APP_SSH_PORT".into(), "70000".into());
    env.insert("APP_COOKIE_SECURE".into(), "maybe".into());
    env.insert("APP_TRUSTED_PROXIES".into(), "10.0.0.0/8, ingress".into());
    env.insert("APP_GIT_MAX_PUSH_BYTES".into(), "0".into());
    env.insert("APP_LOG_LEVEL".into(), "info,[".into());
    env.insert("APP_REPOS_ROOT".into(), "relative/repos".into());
    env.insert("APP_SMTP_TLS".into(), "sometimes".into());
    env.insert("APP_SMTP_SEND_TIMEOUT_SECONDS".into(), "soon".into());
    env.insert("APP_ATTACHMENT_MAX_BYTES".into(), "-1".into());
    env.insert("APP_EMBED_MODEL_DIMENSIONS".into(), "-3".into());
    env.insert("NATS_URL".into(), format!("http://user:{NATS_TOKEN}@nats"));

    let app = AppConfig::from_env_map(&env).expect_err("invalid").to_string();
    let git = GitServerConfig::from_env_map(&env).expect_err("invalid").to_string();
    let mail = EmailWorkerConfig::from_env_map(&env).expect_err("invalid").to_string();
    for (text, expected) in [
        (&app, "APP_DATABASE_URL: URL scheme must be postgres or postgresql"),
        (&app, "APP_REDIS_URL: not a valid URL"),
        (&app, "APP_COOKIE_SECURE: must be true or false"),
        (&app, "APP_TRUSTED_PROXIES: \"ingress\" is not an IP address or CIDR block"),
        (&git, "APP_GIT_MAX_PUSH_BYTES: must be a positive whole number"),
        (&app, "APP_LOG_LEVEL: not a valid log filter"),
        (&app, "APP_REPOS_ROOT: must be an absolute path"),
        (&app, "APP_EMBED_MODEL_DIMENSIONS: must be a positive whole number"),
        (&app, "NATS_URL: URL scheme must be nats or tls or ws or wss"),
        (&git, "APP_SSH_PORT: must be a port number from 1 to 65535 (got \"70000\")"),
        (&mail, "APP_SMTP_TLS: must be implicit, starttls or none"),
        (&mail, "APP_SMTP_SEND_TIMEOUT_SECONDS: must be a positive whole number"),
        (&app, "APP_ATTACHMENT_MAX_BYTES: must be a positive whole number"),
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
    assert_no_secret(&format!("{app}{git}{mail}"), &key);
}

#[test]
fn the_example_in_the_chart_readme_generates_a_key_we_accept() {
    // The operator README's exact recipe: ssh-keygen, then hexdump.
    let dir = std::env::temp_dir().join(platform_test_support::unique_name("readme"));
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    let key_path = dir.join("ssh_host_key");
    let script = format!(
        "ssh-keygen -q -t ed25519 -f {0} -N \"\" && hexdump -v -e '/1 \"%02x\"' < {0}",
        key_path.display()
    );
    let output = Command::new("sh").arg("-c").arg(&script).output().expect("sh runs");
    if !output.status.success() && String::from_utf8_lossy(&output.stderr).contains("hexdump") {
        // hexdump ships in bsdextrautils; od is the POSIX fallback that prints the same bytes.
        let od = Command::new("sh")
            .arg("-c")
            .arg(format!("od -An -v -tx1 < {} | tr -d ' \\n'", key_path.display()))
            .output()
            .expect("od runs");
        assert!(od.status.success());
        check_readme_key(&String::from_utf8_lossy(&od.stdout), Path::new(&key_path));
    } else {
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        check_readme_key(&String::from_utf8_lossy(&output.stdout), Path::new(&key_path));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn check_readme_key(hex_key: &str, path: &Path) {
    let mut env = full_env("");
    env.insert("APP_SSH_SERVER_PRIVATE_KEY".into(), hex_key.to_owned());
    let config = GitServerConfig::from_env_map(&env).expect("the README's key loads");
    let public = std::fs::read_to_string(path.with_extension("pub")).expect("public key written");
    let public: Vec<&str> = public.split_whitespace().take(2).collect();
    assert_eq!(config.ssh.host_key.public_key_openssh(), public.join(" "));
}

#[test]
fn webhook_allowed_hosts_are_read_and_a_bad_entry_is_named() {
    let (ssh_key_hex, _) = keygen("ed25519", &[]);
    let mut env = full_env(&ssh_key_hex);
    env.insert(
        "APP_WEBHOOK_ALLOWED_HOSTS".into(),
        " ci.internal, 10.0.0.0/8 ,[fd00::5],Private".into(),
    );
    env.insert("APP_WEBHOOK_RETRY_SECONDS".into(), "5".into());
    let config = GitHookConfig::from_env_map(&env).expect("git_hook loads");
    assert_eq!(
        config.webhooks.allowed_hosts,
        ["ci.internal", "10.0.0.0/8", "[fd00::5]", "private"]
    );
    assert_eq!(config.webhooks.first_retry, std::time::Duration::from_secs(5));
    env.insert("APP_WEBHOOK_ALLOWED_HOSTS".into(), "ci.internal, not a host!".into());
    let error = GitHookConfig::from_env_map(&env).expect_err("a bad entry").to_string();
    assert!(
        error.contains("APP_WEBHOOK_ALLOWED_HOSTS") && error.contains("not a host!"),
        "{error}"
    );
}

#[test]
fn ask_settings_have_stated_defaults_and_bad_values_are_named() {
    let (key, _) = keygen("ed25519", &[]);
    let mut env = full_env(&key);
    let config = AppConfig::from_env_map(&env).expect("defaults load");
    assert_eq!(config.ask.chat_model, "gpt-4o-mini");
    assert_eq!((config.ask.context_tokens, config.ask.answer_tokens), (8000, 1024));
    assert_eq!(config.ask.first_token_timeout, std::time::Duration::from_secs(20));
    assert_eq!(config.ask.timeout, std::time::Duration::from_secs(60));
    assert_eq!((config.ask.asks_per_minute, config.ask.daily_tokens), (10, 200_000));
    assert_eq!(config.ask.question_max_chars, 4000);
    assert_eq!(config.ask.conversation_ttl, std::time::Duration::from_secs(24 * 3600));

    env.insert("APP_AI_CONTEXT_TOKENS".into(), "1000".into());
    env.insert("APP_AI_ANSWER_TOKENS".into(), "600".into());
    env.insert("APP_AI_DAILY_TOKENS".into(), "lots".into());
    let error = AppConfig::from_env_map(&env).expect_err("invalid").to_string();
    assert!(error.contains("APP_AI_ANSWER_TOKENS") && error.contains("at most half"), "{error}");
    assert!(error.contains("APP_AI_DAILY_TOKENS"), "{error}");
    assert_no_secret(&error, &key);
}

#[test]
fn ssh_clone_addresses_and_the_shutdown_grace_have_defaults_and_bad_values_are_named() {
    let (key, _) = keygen("ed25519", &[]);
    let mut env = full_env(&key);
    let app = AppConfig::from_env_map(&env).expect("app config loads");
    // By default users reach SSH where the web is, on the port the server listens on.
    assert_eq!(app.domain.ssh_base(), "ssh://git@git.example.com:2222");
    assert_eq!(app.http.shutdown_grace.as_secs(), 25);

    env.insert("APP_SSH_PUBLIC_HOST".into(), "ssh.example.com".into());
    env.insert("APP_SSH_PUBLIC_PORT".into(), "22".into());
    env.insert("APP_SHUTDOWN_GRACE_SECONDS".into(), "585".into());
    let hook = GitHookConfig::from_env_map(&env).expect("git_hook config loads");
    assert_eq!(hook.domain.ssh_base(), "ssh://git@ssh.example.com");
    assert_eq!(hook.http.shutdown_grace.as_secs(), 585);
    env.insert("APP_SSH_PUBLIC_HOST".into(), "[2001:db8::7]".into());
    env.insert("APP_SSH_PUBLIC_PORT".into(), "2022".into());
    let app = AppConfig::from_env_map(&env).expect("app config loads");
    assert_eq!(app.domain.ssh_base(), "ssh://git@[2001:db8::7]:2022");

    env.insert("APP_SSH_PUBLIC_HOST".into(), "git@example.com".into());
    env.insert("APP_SSH_PUBLIC_PORT".into(), "0".into());
    env.insert("APP_SHUTDOWN_GRACE_SECONDS".into(), "soon".into());
    env.insert("APP_SSH_PORT".into(), "70000".into());
    let git = GitServerConfig::from_env_map(&env).expect_err("invalid").to_string();
    for expected in [
        "APP_SSH_PUBLIC_HOST: must be a host name or an IP address",
        "APP_SSH_PUBLIC_PORT: must be a port number from 1 to 65535",
        "APP_SHUTDOWN_GRACE_SECONDS: must be a positive whole number",
    ] {
        assert!(git.contains(expected), "{expected:?} not in:\n{git}");
    }
    assert_eq!(git.matches("APP_SSH_PORT:").count(), 1, "reported once:\n{git}");
}
