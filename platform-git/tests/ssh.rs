//! Git over SSH with the OpenSSH client and the real `git`, against real PostgreSQL and Redis.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use platform_core::accounts::{Scope, password, ssh_keys};
use platform_core::db::Database;
use platform_core::queue::{ConsumerOptions, Job, JobError, Queue};
use platform_git::api::RepoApi;
use platform_git::events::{PUSH_STREAM, PushEvent, PushEvents};
use platform_git::ssh::{GitSsh, SshOptions};
use platform_git::store::RepoStore;
use platform_git::transport::{GitOptions, GitService};
use platform_test_support::{eventually, unique_name, verified_user};
use serde_json::json;

struct Member {
    name: String,
    token: String,
    /// The private key file `ssh -i` uses.
    key: PathBuf,
}

struct Server {
    api: String,
    ssh_port: u16,
    host_fingerprint: String,
    database: Database,
    queue: Queue,
    scratch: PathBuf,
    repos_root: PathBuf,
    password_hash: String,
    http: reqwest::Client,
}

fn ssh_keygen(path: &Path, kind: &[&str]) -> anyhow::Result<String> {
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-C", "test"])
        .args(kind)
        .arg("-f")
        .arg(path)
        .status()?;
    anyhow::ensure!(status.success(), "ssh-keygen failed");
    Ok(std::fs::read_to_string(path.with_extension("pub"))?)
}

impl Server {
    async fn start() -> anyhow::Result<Self> {
        Self::start_with(SshOptions::default()).await
    }

    async fn start_with(ssh_options: SshOptions) -> anyhow::Result<Self> {
        let common::Backing { database, accounts, queue } = common::backing(None).await?;
        let scratch = std::env::temp_dir().join(unique_name("git-ssh"));
        std::fs::create_dir_all(&scratch)?;
        let repos_root = scratch.join("repos");
        let store = RepoStore::new(&repos_root);
        let events = PushEvents::new(database.clone(), queue.clone());
        let service = GitService::new(
            accounts.clone(),
            store.clone(),
            events,
            GitOptions::default(),
            &scratch.join("state"),
        )?;
        let host_key = scratch.join("host_key");
        ssh_keygen(&host_key, &["-t", "ed25519"])?;
        let git_http = platform_git::http::router(service.clone());
        let ssh = GitSsh::new(service, &std::fs::read_to_string(&host_key)?, ssh_options)?;
        let host_fingerprint = ssh.fingerprint().to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let ssh_port = listener.local_addr()?.port();
        tokio::spawn(async move { ssh.serve(listener, std::future::pending()).await });

        let api = RepoApi::new(accounts, store, "http://git.example.com".parse()?);
        // Git over HTTP too, on the same service, to compare what each transport advertises.
        let router = platform_git::api::api(api).split_for_parts().0.merge(git_http);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let api = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .await
        });
        Ok(Self {
            api,
            ssh_port,
            host_fingerprint,
            database,
            queue,
            scratch,
            repos_root,
            password_hash: password::hash("correct horse battery")?,
            http: reqwest::Client::new(),
        })
    }

    /// A user with an SSH key (Ed25519 unless `kind` says otherwise) and an all-scope token.
    async fn member(&self, name: &str) -> anyhow::Result<Member> {
        let key = self.scratch.join(format!("{name}_key"));
        let public = ssh_keygen(&key, &["-t", "ed25519"])?;
        let (id, token) =
            verified_user(&self.database, name, &self.password_hash, &[Scope::Admin]).await?;
        let parsed = ssh_keys::parse(&public).map_err(anyhow::Error::msg)?;
        let mut conn = self.database.get().await?;
        ssh_keys::add(&mut conn, id, "laptop", &parsed).await?;
        Ok(Member { name: name.to_owned(), token, key })
    }

    async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
        as_: &Member,
    ) -> anyhow::Result<u16> {
        let response = self
            .http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(&as_.token)
            .json(&body)
            .send()
            .await?;
        Ok(response.status().as_u16())
    }

    async fn create_repo(&self, owner: &Member, name: &str, private: bool) -> anyhow::Result<()> {
        let status = self
            .api(
                reqwest::Method::POST,
                "/api/repos",
                json!({"name": name, "private": private}),
                owner,
            )
            .await?;
        anyhow::ensure!(status == 201, "creating {name}: {status}");
        Ok(())
    }

    fn known_hosts(&self) -> PathBuf {
        self.scratch.join("known_hosts")
    }

    /// The `ssh` command line git should use, as `member`.
    fn ssh_command(&self, member: &Member) -> String {
        format!(
            "ssh -p {} -i {} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=accept-new \
             -o UserKnownHostsFile={} -o LogLevel=ERROR",
            self.ssh_port,
            member.key.display(),
            self.known_hosts().display()
        )
    }

    fn url(&self, repo: &str) -> String {
        format!("ssh://git@127.0.0.1:{}/{repo}.git", self.ssh_port)
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.scratch.join(unique_name(name))
    }

    fn disk(&self, repo: &str) -> String {
        self.repos_root.join(format!("{repo}.git")).to_string_lossy().into_owned()
    }
}

fn git_as(
    server: &Server,
    member: &Member,
    args: &[&str],
    cwd: Option<&Path>,
) -> anyhow::Result<Output> {
    let mut command = std::process::Command::new("git");
    command
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args)
        .env("GIT_SSH_COMMAND", server.ssh_command(member))
        .env("GIT_TERMINAL_PROMPT", "0");
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    Ok(command.output()?)
}

fn ok(output: Output) -> anyhow::Result<String> {
    anyhow::ensure!(output.status.success(), "failed: {}", String::from_utf8_lossy(&output.stderr));
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn local_git(args: &[&str], cwd: &Path) -> anyhow::Result<String> {
    let output = std::process::Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args)
        .current_dir(cwd)
        .output()?;
    ok(output)
}

fn working_copy(dir: &Path, commits: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    local_git(&["init", "--quiet", "--initial-branch=main"], dir)?;
    for i in 0..commits {
        std::fs::write(dir.join(format!("file{i}.txt")), format!("content {i}\n"))?;
        local_git(&["add", "."], dir)?;
        local_git(&["commit", "--quiet", "-m", &format!("commit {i}")], dir)?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn clone_fetch_and_push_over_ssh() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let ada = server.member("ada").await?;
    server.create_repo(&ada, "engine", true).await?;
    let work = server.dir("work");
    working_copy(&work, 3)?;
    let url = server.url("ada/engine");
    ok(git_as(&server, &ada, &["push", "--quiet", &url, "main"], Some(&work))?)?;

    // The host key the client recorded is the configured one.
    let scan = std::process::Command::new("ssh-keygen")
        .arg("-l")
        .arg("-f")
        .arg(server.known_hosts())
        .output()?;
    let recorded = String::from_utf8(scan.stdout)?;
    assert!(
        recorded.contains(&server.host_fingerprint),
        "{recorded} vs {}",
        server.host_fingerprint
    );

    for (protocol, path) in [("2", "/ada/engine.git"), ("0", "ada/engine")] {
        let clone = server.dir("clone").to_string_lossy().into_owned();
        let url =
            format!("ssh://git@127.0.0.1:{}/{}", server.ssh_port, path.trim_start_matches('/'));
        let mut command = std::process::Command::new("git");
        command
            .args(["-c", &format!("protocol.version={protocol}"), "clone", "--quiet", &url, &clone])
            .env("GIT_SSH_COMMAND", server.ssh_command(&ada))
            .env("GIT_TRACE_PACKET", "1");
        let output = command.output()?;
        assert!(output.status.success(), "v{protocol}: {}", stderr(&output));
        if protocol == "2" {
            assert!(stderr(&output).contains("< version 2"), "{}", stderr(&output));
        }
        assert_eq!(
            local_git(&["rev-parse", "HEAD"], Path::new(&clone))?,
            local_git(&["rev-parse", "HEAD"], &work)?
        );
    }

    // Fetch, push a tag and a branch, delete the branch; git archive through upload-archive.
    let clone = server.dir("clone");
    ok(git_as(&server, &ada, &["clone", "--quiet", &url, &clone.to_string_lossy()], None)?)?;
    std::fs::write(work.join("more.txt"), "more\n")?;
    local_git(&["add", "."], &work)?;
    local_git(&["commit", "--quiet", "-m", "more"], &work)?;
    local_git(&["tag", "v1"], &work)?;
    ok(git_as(
        &server,
        &ada,
        &["push", "--quiet", &url, "main", "main:topic", "--tags"],
        Some(&work),
    )?)?;
    ok(git_as(
        &server,
        &ada,
        &["-c", "protocol.version=2", "fetch", "--quiet", "--tags", "origin"],
        Some(&clone),
    )?)?;
    assert_eq!(
        local_git(&["rev-parse", "origin/topic"], &clone)?,
        local_git(&["rev-parse", "HEAD"], &work)?
    );
    ok(git_as(&server, &ada, &["push", "--quiet", &url, "--delete", "topic"], Some(&work))?)?;
    let archive = git_as(
        &server,
        &ada,
        &["archive", "--remote", &url, "--format=tar", "main", "more.txt"],
        None,
    )?;
    assert!(archive.status.success(), "{}", stderr(&archive));
    assert!(archive.stdout.windows(4).any(|w| w == b"more"), "the archive holds the file");

    // What git says about server paths names the repository as the client knows it.
    let root = server.repos_root.canonicalize()?.to_string_lossy().into_owned();
    let outside = git_as(&server, &ada, &["archive", "--remote", &url, "main", "../x"], None)?;
    assert!(!outside.status.success());
    let message = stderr(&outside);
    assert!(message.contains("is outside repository at 'ada/engine.git"), "{message}");
    assert!(!message.contains(&root), "{message}");
    let lock = Path::new(&server.disk("ada/engine")).join("refs/heads/main.lock");
    std::fs::write(&lock, "")?;
    std::fs::write(work.join("locked.txt"), "locked\n")?;
    local_git(&["add", "."], &work)?;
    local_git(&["commit", "--quiet", "-m", "locked"], &work)?;
    let locked = git_as(&server, &ada, &["push", &url, "main"], Some(&work))?;
    std::fs::remove_file(&lock)?;
    let message = stderr(&locked);
    assert!(!locked.status.success(), "{message}");
    assert!(message.contains("'ada/engine.git/./refs/heads/main.lock'"), "{message}");
    assert!(!message.contains(&root), "{message}");
    local_git(
        &["--git-dir", &server.disk("ada/engine"), "fsck", "--strict", "--no-progress"],
        &work,
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn protected_branches_and_the_authorization_matrix_hold_over_ssh() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let owner = server.member("owner").await?;
    let stranger = server.member("stranger").await?;
    let reader = server.member("reader").await?;
    let writer = server.member("writer").await?;
    let work = server.dir("work");
    working_copy(&work, 2)?;
    for (name, private) in [("public", false), ("private", true)] {
        server.create_repo(&owner, name, private).await?;
        for (member, role) in [(&reader, "read"), (&writer, "write")] {
            let path = format!("/api/repos/owner/{name}/collaborators/{}", member.name);
            assert_eq!(
                server.api(reqwest::Method::PUT, &path, json!({"role": role}), &owner).await?,
                201
            );
        }
        ok(git_as(
            &server,
            &owner,
            &["push", "--quiet", &server.url(&format!("owner/{name}")), "main"],
            Some(&work),
        )?)?;
    }

    let mut failures = Vec::new();
    let mut branch = 0;
    for (who, member, may_read_private, may_write) in [
        ("stranger", &stranger, false, false),
        ("reader", &reader, true, false),
        ("writer", &writer, true, true),
        ("owner", &owner, true, true),
    ] {
        for (name, private) in [("public", false), ("private", true)] {
            let url = server.url(&format!("owner/{name}"));
            let clone = server.dir("clone").to_string_lossy().into_owned();
            let cloned = git_as(&server, member, &["clone", "--quiet", &url, &clone], None)?;
            let may_read = !private || may_read_private;
            if cloned.status.success() != may_read {
                failures.push(format!("{who} clone {name}: {}", stderr(&cloned)));
            }
            branch += 1;
            let pushed = git_as(
                &server,
                member,
                &["push", "--quiet", &url, &format!("main:refs/heads/b{branch}")],
                Some(&work),
            )?;
            if pushed.status.success() != may_write {
                failures.push(format!("{who} push {name}: {}", stderr(&pushed)));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // An unknown key gets nowhere.
    let outsider_key = server.scratch.join("outsider_key");
    ssh_keygen(&outsider_key, &["-t", "ed25519"])?;
    let outsider = Member { name: "outsider".to_owned(), token: String::new(), key: outsider_key };
    let refused = git_as(&server, &outsider, &["ls-remote", &server.url("owner/public")], None)?;
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("Permission denied (publickey)"), "{}", stderr(&refused));

    // Branch protection, with our message.
    let rules = "/api/repos/owner/public/protected-branches";
    assert_eq!(
        server.api(reqwest::Method::POST, rules, json!({"pattern": "main"}), &owner).await?,
        201
    );
    local_git(&["reset", "--quiet", "--hard", "HEAD~1"], &work)?;
    std::fs::write(work.join("rewrite.txt"), "rewrite\n")?;
    local_git(&["add", "."], &work)?;
    local_git(&["commit", "--quiet", "-m", "rewrite"], &work)?;
    let before =
        local_git(&["--git-dir", &server.disk("owner/public"), "rev-parse", "main"], &work)?;
    let forced = git_as(
        &server,
        &owner,
        &["push", "--force", &server.url("owner/public"), "main"],
        Some(&work),
    )?;
    assert!(!forced.status.success());
    assert!(
        stderr(&forced)
            .contains("remote: error: refs/heads/main is protected: force pushes are not allowed"),
        "{}",
        stderr(&forced)
    );
    let deleted = git_as(
        &server,
        &writer,
        &["push", &server.url("owner/public"), "--delete", "main"],
        Some(&work),
    )?;
    assert!(
        stderr(&deleted).contains("remote: error: main is protected: it cannot be deleted"),
        "{}",
        stderr(&deleted)
    );
    assert_eq!(
        local_git(&["--git-dir", &server.disk("owner/public"), "rev-parse", "main"], &work)?,
        before
    );
    Ok(())
}

/// Runs `git-receive-pack` for `repo` over SSH as `member`, with `request` as its whole input.
fn receive_pack_by_hand(
    server: &Server,
    member: &Member,
    repo: &str,
    request: &[u8],
) -> anyhow::Result<Output> {
    use std::io::Write as _;
    let mut command = std::process::Command::new("ssh");
    command
        .args(["-p", &server.ssh_port.to_string(), "-i"])
        .arg(&member.key)
        .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
        .args(["-o", "StrictHostKeyChecking=accept-new", "-o"])
        .arg(format!("UserKnownHostsFile={}", server.known_hosts().display()))
        .args(["git@127.0.0.1", &format!("git-receive-pack '{repo}.git'")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn()?;
    child.stdin.take().expect("piped").write_all(request)?;
    Ok(child.wait_with_output()?)
}

/// The capabilities in a ref advertisement: those after the first ref (protocol v0 and v1), or
/// the capability lines (v2), sorted.
fn capabilities(advertisement: &[u8]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut rest = advertisement;
    while rest.len() >= 4 {
        let length = usize::from_str_radix(std::str::from_utf8(&rest[..4]).unwrap_or("zzzz"), 16);
        let Ok(length) = length else { break };
        if length < 4 {
            lines.push(None);
            rest = &rest[4..];
            continue;
        }
        lines.push(Some(String::from_utf8_lossy(&rest[4..length]).trim_end().to_owned()));
        rest = &rest[length..];
    }
    let lines: Vec<Option<String>> = lines
        .into_iter()
        .filter(|l| !l.as_deref().is_some_and(|l| l.starts_with("# service=")))
        .collect();
    let mut found: Vec<String> = if lines.iter().flatten().any(|l| l == "version 2") {
        lines
            .iter()
            .skip_while(|l| l.as_deref() != Some("version 2"))
            .skip(1)
            .map_while(Clone::clone)
            .collect()
    } else {
        let first = lines.iter().flatten().find(|l| l.contains('\0')).cloned().unwrap_or_default();
        first
            .split_once('\0')
            .map(|(_, caps)| caps.split(' ').map(str::to_owned).collect())
            .unwrap_or_default()
    };
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn fetches_advertise_the_same_capabilities_over_http_and_ssh() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let ada = server.member("ada").await?;
    server.create_repo(&ada, "engine", false).await?;
    let work = server.dir("work");
    working_copy(&work, 1)?;
    ok(git_as(
        &server,
        &ada,
        &["push", "--quiet", &server.url("ada/engine"), "main"],
        Some(&work),
    )?)?;
    for version in ["0", "1", "2"] {
        let mut request = server
            .http
            .get(format!("{}/ada/engine.git/info/refs?service=git-upload-pack", server.api));
        if version != "0" {
            request = request.header("git-protocol", format!("version={version}"));
        }
        let mut over_http = capabilities(&request.send().await?.bytes().await?);
        // Stateless RPC's own capability, which git advertises only there (http-backend too).
        over_http.retain(|capability| capability != "no-done");
        let setenv = format!("SetEnv=GIT_PROTOCOL=version={version}");
        let mut extra = vec!["git@127.0.0.1", "git-upload-pack 'ada/engine.git'"];
        if version != "0" {
            extra.splice(0..0, ["-o", setenv.as_str()]);
        }
        let over_ssh = capabilities(&ssh_as(&server, &ada, &extra)?.stdout);
        assert!(!over_http.is_empty(), "v{version}: nothing advertised over HTTP");
        assert_eq!(over_http, over_ssh, "protocol v{version}");
        let wanted: &[&str] = if version == "2" {
            &["fetch=shallow wait-for-done filter"]
        } else {
            &["filter", "allow-reachable-sha1-in-want"]
        };
        for capability in wanted {
            assert!(
                over_http.iter().any(|c| c == capability),
                "v{version} lacks {capability}: {over_http:?}"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_address_offering_unknown_keys_is_limited_across_connections() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let ada = server.member("ada").await?;
    server.create_repo(&ada, "engine", false).await?;
    let stranger_key = server.scratch.join("stranger_key");
    ssh_keygen(&stranger_key, &["-t", "ed25519"])?;
    let stranger = Member { name: "stranger".to_owned(), token: String::new(), key: stranger_key };
    // Each connection that offers only unknown keys is one failed attempt of its address; the
    // address's limit (30) holds across connections.
    for n in 0..30 {
        let output =
            ssh_as(&server, &stranger, &["git@127.0.0.1", "git-upload-pack 'ada/engine.git'"])?;
        assert!(!output.status.success(), "attempt {n}");
        assert!(stderr(&output).contains("Permission denied"), "attempt {n}: {}", stderr(&output));
    }
    let refused = ssh_as(&server, &ada, &["git@127.0.0.1", "git-upload-pack 'ada/engine.git'"])?;
    assert!(!refused.status.success(), "a registered key got in from a limited address");
    assert!(stderr(&refused).contains("Permission denied"), "{}", stderr(&refused));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn updates_smuggled_in_a_push_certificate_are_refused_over_ssh() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let owner = server.member("owner").await?;
    let writer = server.member("writer").await?;
    server.create_repo(&owner, "engine", false).await?;
    let rules = "/api/repos/owner/engine/protected-branches";
    let admins_only = json!({"pattern": "release/*", "push_access": "admin"});
    for rule in [json!({"pattern": "main"}), admins_only] {
        assert_eq!(server.api(reqwest::Method::POST, rules, rule, &owner).await?, 201);
    }
    let collaborator = "/api/repos/owner/engine/collaborators/writer";
    let status =
        server.api(reqwest::Method::PUT, collaborator, json!({"role": "write"}), &owner).await?;
    assert_eq!(status, 201);
    let work = server.dir("work");
    working_copy(&work, 3)?;
    let url = server.url("owner/engine");
    ok(git_as(
        &server,
        &owner,
        &["push", "--quiet", &url, "main", "main:release/1.0"],
        Some(&work),
    )?)?;
    let commits = common::HandBuilt::new(&work)?;
    let disk = server.disk("owner/engine");
    let refs = || {
        local_git(&["--git-dir", &disk, "for-each-ref", "--format=%(refname) %(objectname)"], &work)
    };
    let before = refs()?;

    for (what, member, update, reason) in commits.refused(&owner, &writer) {
        for certificate in [true, false] {
            let request = common::receive_pack_request(&work, &[update], certificate)?;
            let output = receive_pack_by_hand(&server, member, "owner/engine", &request)?;
            let (out, err) = (String::from_utf8_lossy(&output.stdout), stderr(&output));
            if certificate {
                assert!(!output.status.success(), "{what} in a certificate: {out}");
                assert!(err.contains("fatal: signed pushes are not supported"), "{what}: {err}");
            } else {
                assert!(out.contains(reason), "{what}: {out} {err}");
                assert!(
                    out.contains(&format!("ng {} pre-receive hook declined", update.2)),
                    "{what}: {out}"
                );
            }
            assert_eq!(refs()?, before, "{what} (certificate: {certificate}) moved a ref");
        }
    }
    Ok(())
}

fn ssh_as(server: &Server, member: &Member, extra: &[&str]) -> anyhow::Result<Output> {
    let mut command = std::process::Command::new("ssh");
    command
        .args(["-p", &server.ssh_port.to_string(), "-i"])
        .arg(&member.key)
        .args([
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=accept-new",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", server.known_hosts().display()))
        .args(extra)
        .stdin(std::process::Stdio::null());
    Ok(command.output()?)
}

#[tokio::test(flavor = "multi_thread")]
async fn shells_ptys_forwarding_sftp_and_other_commands_are_refused() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let ada = server.member("ada").await?;
    let marker = server.scratch.join("marker");

    let shell = ssh_as(&server, &ada, &["git@127.0.0.1"])?;
    assert_eq!(shell.status.code(), Some(1), "{}", stderr(&shell));
    assert!(
        stderr(&shell).contains(
            "Hi ada! You've successfully authenticated, but shell access is not provided."
        ),
        "{}",
        stderr(&shell)
    );
    let pty = ssh_as(&server, &ada, &["-tt", "git@127.0.0.1"])?;
    assert_ne!(pty.status.code(), Some(0));
    assert!(stderr(&pty).contains("PTY allocation request failed"), "{}", stderr(&pty));

    let command = format!("touch {}", marker.display());
    for args in [
        vec!["git@127.0.0.1", "rm -rf /"],
        vec!["git@127.0.0.1", command.as_str()],
        vec!["git@127.0.0.1", "git-upload-pack '/ada/x.git'; touch /tmp/never"],
        vec!["-s", "git@127.0.0.1", "sftp"],
    ] {
        let output = ssh_as(&server, &ada, &args)?;
        assert!(!output.status.success(), "{args:?} succeeded");
    }
    assert!(!marker.exists(), "a refused command ran");

    // Port forwarding: the tunnel is refused and nothing listens.
    let forward_port = platform_test_support::free_port();
    let forward = ssh_as(
        &server,
        &ada,
        &[
            "-o",
            "ExitOnForwardFailure=yes",
            "-L",
            &format!("{forward_port}:127.0.0.1:22"),
            "git@127.0.0.1",
            "git-upload-pack 'ada/none'",
        ],
    )?;
    assert!(!forward.status.success());
    // A tunnel the client sets up locally: using it must get nowhere.
    let mut tunnel = std::process::Command::new("ssh")
        .args(["-p", &server.ssh_port.to_string(), "-i"])
        .arg(&ada.key)
        .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-N", "-L"])
        .arg(format!("{forward_port}:127.0.0.1:{}", server.ssh_port))
        .arg("git@127.0.0.1")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut through = None;
    for _ in 0..100 {
        if let Ok(socket) = tokio::net::TcpStream::connect(("127.0.0.1", forward_port)).await {
            through = Some(socket);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut through = through.ok_or_else(|| anyhow::anyhow!("the local end of the tunnel"))?;
    let mut banner = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), {
        use tokio::io::AsyncReadExt as _;
        through.read_to_end(&mut banner)
    })
    .await;
    tunnel.kill()?;
    let output = tunnel.wait_with_output()?;
    assert!(read.is_ok(), "the tunnel stayed open");
    assert!(banner.is_empty(), "the tunnel reached {:?}", String::from_utf8_lossy(&banner));
    assert!(stderr(&output).contains("administratively prohibited"), "{}", stderr(&output));
    let remote = ssh_as(
        &server,
        &ada,
        &["-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:22", "-N", "git@127.0.0.1"],
    )?;
    assert!(!remote.status.success(), "{}", stderr(&remote));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_clones_and_one_event_per_push() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let ada = server.member("ada").await?;
    server.create_repo(&ada, "engine", false).await?;
    let received = Arc::new(Mutex::new(Vec::<PushEvent>::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let consumer = {
        let (queue, sink, until) =
            (server.queue.clone(), received.clone(), stop.clone().cancelled_owned());
        tokio::spawn(async move {
            let handler = move |job: Job<PushEvent>| {
                let sink = sink.clone();
                async move {
                    sink.lock().expect("not poisoned").push(job.payload);
                    Ok::<(), JobError>(())
                }
            };
            queue.consume(PUSH_STREAM, "tests", ConsumerOptions::default(), handler, until).await
        })
    };
    let work = server.dir("work");
    working_copy(&work, 5)?;
    let url = server.url("ada/engine");
    ok(git_as(&server, &ada, &["push", "--quiet", &url, "main"], Some(&work))?)?;
    ok(git_as(&server, &ada, &["push", "--quiet", &url, "main:one", "main:two"], Some(&work))?)?;

    let ssh_command = server.ssh_command(&ada);
    let clones: Vec<_> = (0..20)
        .map(|_| {
            let (url, ssh_command) = (url.clone(), ssh_command.clone());
            let target = server.dir("clone");
            std::thread::spawn(move || {
                std::process::Command::new("git")
                    .args(["clone", "--quiet", &url])
                    .arg(&target)
                    .env("GIT_SSH_COMMAND", ssh_command)
                    .output()
            })
        })
        .collect();
    for clone in clones {
        let output = clone.join().expect("clone thread")?;
        assert!(output.status.success(), "{}", stderr(&output));
    }

    eventually("two push events", Duration::from_secs(20), || {
        received.lock().expect("not poisoned").len() >= 2
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    consumer.await??;
    let events = received.lock().expect("not poisoned").clone();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].pusher, "ada");
    assert_eq!(events[0].refs.len(), 1);
    let mut names: Vec<&str> = events[1].refs.iter().map(|r| r.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["refs/heads/one", "refs/heads/two"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_and_unauthenticated_connections_are_closed_and_channels_are_limited()
-> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let options = SshOptions {
        auth_timeout: Duration::from_secs(1),
        max_channels: 1,
        ..SshOptions::default()
    };
    let server = Server::start_with(options).await?;
    let ada = server.member("ada").await?;
    let closed_within = |mut socket: tokio::net::TcpStream| async move {
        let mut buffer = vec![0_u8; 4096];
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match socket.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    };
    // Says nothing at all.
    let silent = tokio::net::TcpStream::connect(("127.0.0.1", server.ssh_port)).await?;
    assert!(closed_within(silent).await, "a silent connection stayed open");
    // Says its version, then nothing.
    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", server.ssh_port)).await?;
    stalled.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await?;
    assert!(closed_within(stalled).await, "an unauthenticated connection stayed open");

    // One channel per connection here: a second session on a multiplexed connection is refused.
    let control = server.scratch.join("control");
    let master = std::process::Command::new("ssh")
        .args(["-p", &server.ssh_port.to_string(), "-i"])
        .arg(&ada.key)
        .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "ControlMaster=yes", "-o"])
        .arg(format!("ControlPath={}", control.display()))
        .args(["-N", "-f", "git@127.0.0.1"])
        .status()?;
    assert!(master.success());
    let session = || {
        std::process::Command::new("ssh")
            .arg("-o")
            .arg(format!("ControlPath={}", control.display()))
            .args(["-p", &server.ssh_port.to_string(), "git@127.0.0.1"])
            .stdin(std::process::Stdio::null())
            .output()
    };
    let first = session()?;
    let second = session()?;
    let _ = std::process::Command::new("ssh")
        .arg("-o")
        .arg(format!("ControlPath={}", control.display()))
        .args(["-O", "exit", "git@127.0.0.1"])
        .output();
    assert!(stderr(&first).contains("Hi ada!"), "{}", stderr(&first));
    let refused = stderr(&second);
    assert!(refused.contains("open refused") || refused.contains("open failed"), "{refused}");
    Ok(())
}
