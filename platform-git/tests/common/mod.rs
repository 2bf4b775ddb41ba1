//! What the platform-git suites share: a fresh database with the accounts around it, and users.

// Each suite uses its own part of this.
#![allow(dead_code)]

use platform_core::db::CORE_MIGRATIONS;
use platform_git::GIT_MIGRATIONS;
pub(crate) use platform_test_support::Backing;

/// The password of every user the suites create.
pub(crate) const PASSWORD: &str = "correct horse battery";

/// Prepares a [`Backing`] migrated for platform-git, whose queue lives on `queue_redis_url` (the
/// shared Redis when `None`).
pub(crate) async fn backing(queue_redis_url: Option<String>) -> anyhow::Result<Backing> {
    Backing::start("git", [CORE_MIGRATIONS, GIT_MIGRATIONS], queue_redis_url.as_deref()).await
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
