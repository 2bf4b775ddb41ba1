//! What the platform-git suites share: a fresh database with the accounts around it, and users.

// Each suite uses its own part of this.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use platform_core::accounts::{Accounts, Scope, access_tokens, users};
use platform_core::config::{DatabaseConfig, EnvReader, RedisConfig, SessionConfig};
use platform_core::db::{CORE_MIGRATIONS, Database};
use platform_core::queue::{Queue, QueueOptions};
use platform_core::redis::Redis;
use platform_core::telemetry::Metrics;
use platform_git::GIT_MIGRATIONS;
use platform_test_support::{fresh_database, service_env, unique_name};

/// The password of every user the suites create.
pub(crate) const PASSWORD: &str = "correct horse battery";

/// A fresh database migrated for platform-git, the accounts (sessions on the shared Redis), and
/// a queue.
pub(crate) struct Backing {
    pub(crate) database: Database,
    pub(crate) accounts: Accounts,
    pub(crate) queue: Queue,
}

/// Prepares a [`Backing`] whose queue lives on `queue_redis_url` (the shared Redis when `None`).
pub(crate) async fn backing(queue_redis_url: Option<String>) -> anyhow::Result<Backing> {
    let shared_redis = service_env("PLATFORM_TEST_REDIS_URL");
    let vars = HashMap::from([
        ("APP_DATABASE_URL".to_owned(), fresh_database().await?),
        ("APP_REDIS_URL".to_owned(), shared_redis),
        ("APP_SESSION_SECRET".to_owned(), "a-session-secret-for-the-platform-git-tests".to_owned()),
        ("QUEUE_REDIS_URL".to_owned(), queue_redis_url.unwrap_or_default()),
    ]);
    let mut env = EnvReader::new(&vars);
    let read = (
        DatabaseConfig::read(&mut env),
        RedisConfig::read(&mut env),
        SessionConfig::read(&mut env),
    );
    let (database, redis, session) = env.finish(read)?;
    let queue_redis = match vars.get("QUEUE_REDIS_URL").filter(|url| !url.is_empty()) {
        Some(url) => {
            let vars = HashMap::from([("APP_REDIS_URL".to_owned(), url.clone())]);
            let mut env = EnvReader::new(&vars);
            let read = (RedisConfig::read(&mut env), Some(()));
            env.finish(read)?.0
        }
        None => redis.clone(),
    };
    let database = Database::connect(&database);
    database.migrate_all([CORE_MIGRATIONS, GIT_MIGRATIONS]).await?;
    let namespace = unique_name("git");
    let options = QueueOptions {
        namespace: namespace.clone(),
        publish_timeout: Duration::from_secs(2),
        ..QueueOptions::default()
    };
    let queue = Queue::redis(&queue_redis, options, &Metrics::new("test"))?;
    let accounts =
        Accounts::new(database.clone(), Redis::connect(&redis)?, queue.clone(), &session)?
            .with_namespace(namespace);
    Ok(Backing { database, accounts, queue })
}

/// Creates the user `name` (address `name@example.com`, verified; password [`PASSWORD`] already
/// hashed as `password_hash`) with a token of `scopes`; returns their id and the token.
pub(crate) async fn user(
    database: &Database,
    name: &str,
    password_hash: &str,
    scopes: &[Scope],
) -> anyhow::Result<(i64, String)> {
    let mut conn = database.get().await?;
    let user =
        users::create(&mut conn, name, &format!("{name}@example.com"), password_hash).await?;
    users::mark_email_verified(&mut conn, user.id).await?;
    let (token, _) = access_tokens::create(&mut conn, user.id, "tests", scopes, None).await?;
    Ok((user.id, token))
}

/// One ref update of a hand-built push: old id, new id, ref.
pub(crate) type Update<'a> = (&'a str, &'a str, &'a str);

/// The all-zero object id: a created ref's old id, a deleted ref's new id.
pub(crate) const ZERO: &str = "0000000000000000000000000000000000000000";

/// A `git receive-pack` request built by hand, as a hostile client would send it: `updates`,
/// inside a push certificate when `certificate` (which git takes commands from, advertised or
/// not), then a pack of what the working copy `work` has beyond the old ids, unless every
/// update deletes.
pub(crate) fn receive_pack_request(
    work: &std::path::Path,
    updates: &[Update<'_>],
    certificate: bool,
) -> anyhow::Result<Vec<u8>> {
    use platform_git::pktline::write;
    let capabilities = "report-status side-band-64k agent=git/hand-built";
    let mut body = Vec::new();
    if certificate {
        // Git appends every packet up to `push-cert-end` to the certificate and takes the lines
        // after its first blank line as the commands: one packet can carry the whole body, and
        // every packet here starts with `push-cert`.
        write(&mut body, format!("push-cert\0{capabilities}\n").as_bytes());
        let mut certificate = String::from(
            "push-certificate version 0.1\n\
             pusher Mallory <mallory@example.com> 1700000000 +0000\n\
             pushee http://git.example.com/\n\
             nonce 1700000000-0123456789abcdef\n\n",
        );
        for (old, new, name) in updates {
            certificate.push_str(&format!("{old} {new} {name}\n"));
        }
        // Any signature will do: git checks it only to tell the hooks how it went, and a
        // certificate without one makes git stop before the hooks.
        certificate.push_str(
            "-----BEGIN PGP SIGNATURE-----\n\niQEzBAABCAAdFiEE\n-----END PGP SIGNATURE-----\n",
        );
        write(&mut body, certificate.as_bytes());
        write(&mut body, b"push-cert-end\n");
    } else {
        for (i, (old, new, name)) in updates.iter().enumerate() {
            let line = if i == 0 {
                format!("{old} {new} {name}\0{capabilities}")
            } else {
                format!("{old} {new} {name}\n")
            };
            write(&mut body, line.as_bytes());
        }
    }
    body.extend_from_slice(b"0000");
    if updates.iter().any(|(_, new, _)| *new != ZERO) {
        let mut revisions = String::new();
        for (old, new, _) in updates {
            if *new != ZERO {
                revisions.push_str(&format!("{new}\n"));
            }
            if *old != ZERO {
                revisions.push_str(&format!("^{old}\n"));
            }
        }
        let mut child = std::process::Command::new("git")
            .args(["pack-objects", "--stdout", "--revs", "--quiet"])
            .current_dir(work)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        use std::io::Write as _;
        child.stdin.take().expect("piped").write_all(revisions.as_bytes())?;
        let output = child.wait_with_output()?;
        anyhow::ensure!(output.status.success(), "git pack-objects failed");
        body.extend_from_slice(&output.stdout);
    }
    Ok(body)
}

/// Commits for hand-built pushes to a repository whose `main` is protected (no force pushes, no
/// deletion) and whose `release/*` is for administrators only, made in the working copy `work`
/// (where `main` has at least two commits and was pushed as `main` and `release/1.0`).
pub(crate) struct HandBuilt {
    /// `main`'s tip.
    pub(crate) main: String,
    /// A commit on `main~1` that is not a descendant of `main`.
    pub(crate) rewrite: String,
    /// A fast-forward of `main`.
    pub(crate) ahead: String,
}

impl HandBuilt {
    pub(crate) fn new(work: &std::path::Path) -> anyhow::Result<Self> {
        let git = |args: &[&str]| -> anyhow::Result<String> {
            let output = std::process::Command::new("git")
                .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
                .args(args)
                .current_dir(work)
                .output()?;
            anyhow::ensure!(output.status.success(), "git {args:?} failed");
            Ok(String::from_utf8(output.stdout)?.trim().to_owned())
        };
        let main = git(&["rev-parse", "main"])?;
        git(&["checkout", "--quiet", "-b", "rewrite", "main~1"])?;
        git(&["commit", "--quiet", "--allow-empty", "-m", "rewrite"])?;
        let rewrite = git(&["rev-parse", "HEAD"])?;
        git(&["checkout", "--quiet", "-b", "ahead", "main"])?;
        git(&["commit", "--quiet", "--allow-empty", "-m", "ahead"])?;
        let ahead = git(&["rev-parse", "HEAD"])?;
        Ok(Self { main, rewrite, ahead })
    }

    /// What branch protection must refuse, each as (what it is, who pushes, the update, the
    /// reason the client is told): a force push and a deletion of `main` by `owner`, and
    /// `writer`'s fast-forward of the admins-only `release/1.0`.
    pub(crate) fn refused<'a, M>(
        &'a self,
        owner: &'a M,
        writer: &'a M,
    ) -> [(&'static str, &'a M, Update<'a>, &'static str); 3] {
        let (main, rewrite, ahead) =
            (self.main.as_str(), self.rewrite.as_str(), self.ahead.as_str());
        [
            (
                "a force push",
                owner,
                (main, rewrite, "refs/heads/main"),
                "force pushes are not allowed",
            ),
            ("a deletion", owner, (main, ZERO, "refs/heads/main"), "it cannot be deleted"),
            (
                "a writer's push to an admins-only branch",
                writer,
                (main, ahead, "refs/heads/release/1.0"),
                "only administrators may push to it",
            ),
        ]
    }
}
