//! The example serves clone and push over HTTP and SSH to the real `git` and OpenSSH clients,
//! to the users of its file and to no one else.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use platform_git::local::LocalUsers;
use platform_test_support::free_port;

/// Runs `git` with `args` in `dir`, failing with what it said unless it succeeds.
fn git(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<String> {
    let output = git_output(dir, args, env)?;
    ensure!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn git_output(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<std::process::Output> {
    Ok(Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .envs(env.iter().copied())
        .output()?)
}

fn keygen(path: &Path) -> anyhow::Result<String> {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(path)
        .status()?;
    ensure!(status.success(), "ssh-keygen failed");
    Ok(std::fs::read_to_string(path.with_extension("pub"))?.trim().to_owned())
}

/// The example's process, killed when dropped, with what it printed.
struct Server {
    child: Child,
    printed: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_port(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[test]
fn clone_and_push_over_http_and_ssh_with_users_from_a_file() -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path();
    let root = dir.join("repos");
    std::fs::create_dir_all(root.join("ada"))?;
    git(&root.join("ada"), &["init", "-q", "--bare", "-b", "main", "engine.git"], &[])?;
    let bare = root.join("ada/engine.git");

    let ada_key = keygen(&dir.join("ada_key"))?;
    keygen(&dir.join("eve_key"))?;
    keygen(&dir.join("host_key"))?;
    let password = "correct horse battery";
    let users = format!(
        "[[users]]\nname = \"ada\"\npassword = \"{}\"\nkeys = [\"{ada_key}\"]\n\
         [[users]]\nname = \"bob\"\ntokens = [\"{}\"]\nread = [\"ada/*\"]\n",
        LocalUsers::hash_password(password).map_err(anyhow::Error::msg)?,
        LocalUsers::hash_token("bob-token"),
    );
    std::fs::write(dir.join("users.toml"), users)?;

    let (http_port, ssh_port) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_example-embed-git-server"))
        .env("GIT_ROOT", &root)
        .env("GIT_USERS", dir.join("users.toml"))
        .env("GIT_HOST_KEY", dir.join("host_key"))
        .env("HTTP_ADDR", format!("127.0.0.1:{http_port}"))
        .env("SSH_ADDR", format!("127.0.0.1:{ssh_port}"))
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the example")?;
    let printed = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().context("no stdout")?;
    let lines = Arc::clone(&printed);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            lines.lock().expect("not poisoned").push(line);
        }
    });
    let server = Server { child, printed };
    wait_for_port(http_port)?;
    wait_for_port(ssh_port)?;

    // Push a first commit over HTTP, as ada with her password.
    let work = dir.join("work");
    std::fs::create_dir_all(&work)?;
    git(&work, &["init", "-q", "-b", "main"], &[])?;
    std::fs::write(work.join("README"), "hello\n")?;
    let author = [
        ("GIT_AUTHOR_NAME", "Ada"),
        ("GIT_AUTHOR_EMAIL", "ada@example.com"),
        ("GIT_COMMITTER_NAME", "Ada"),
        ("GIT_COMMITTER_EMAIL", "ada@example.com"),
    ];
    git(&work, &["add", "README"], &[])?;
    git(&work, &["commit", "-q", "-m", "first"], &author)?;
    let first = git(&work, &["rev-parse", "HEAD"], &[])?;
    let http_url = |who: &str| format!("http://{who}@127.0.0.1:{http_port}/ada/engine.git");
    let ada_http = http_url(&format!("ada:{}", password.replace(' ', "%20")));
    git(&work, &["push", "-q", &ada_http, "main"], &[])?;
    assert_eq!(git(&bare, &["rev-parse", "refs/heads/main"], &[])?, first);

    // Bob's token reads but cannot push; nobody anonymous sees anything; a wrong password is
    // refused. The ref stays where ada put it.
    let bob_clone = dir.join("bob");
    git(
        dir,
        &["clone", "-q", &http_url("bob:bob-token"), bob_clone.to_str().context("utf-8")?],
        &[],
    )?;
    assert_eq!(git(&bob_clone, &["rev-parse", "HEAD"], &[])?, first);
    std::fs::write(bob_clone.join("README"), "bob was here\n")?;
    git(&bob_clone, &["commit", "-q", "-am", "bob"], &author)?;
    let refused = git_output(&bob_clone, &["push", &http_url("bob:bob-token"), "main"], &[])?;
    ensure!(!refused.status.success(), "bob pushed without write access");
    for url in [format!("http://127.0.0.1:{http_port}/ada/engine.git"), http_url("ada:wrong")] {
        let refused = git_output(dir, &["ls-remote", &url], &[])?;
        ensure!(!refused.status.success(), "{url} was served");
    }
    assert_eq!(git(&bare, &["rev-parse", "refs/heads/main"], &[])?, first);

    // Clone and push over SSH with ada's key; eve's key is refused.
    let ssh = |key: &str| {
        format!(
            "ssh -i {} -p {ssh_port} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no \
             -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
            dir.join(key).display()
        )
    };
    let ssh_url = "git@127.0.0.1:ada/engine.git";
    let ada_ssh = ssh("ada_key");
    let ssh_clone = dir.join("ssh");
    let env = [("GIT_SSH_COMMAND", ada_ssh.as_str())];
    git(dir, &["clone", "-q", ssh_url, ssh_clone.to_str().context("utf-8")?], &env)?;
    assert_eq!(git(&ssh_clone, &["rev-parse", "HEAD"], &[])?, first);
    std::fs::write(ssh_clone.join("README"), "hello over ssh\n")?;
    git(&ssh_clone, &["commit", "-q", "-am", "second"], &author)?;
    let second = git(&ssh_clone, &["rev-parse", "HEAD"], &[])?;
    git(&ssh_clone, &["push", "-q", "origin", "main"], &env)?;
    assert_eq!(git(&bare, &["rev-parse", "refs/heads/main"], &[])?, second);
    let eve_ssh = ssh("eve_key");
    let refused =
        git_output(dir, &["ls-remote", ssh_url], &[("GIT_SSH_COMMAND", eve_ssh.as_str())])?;
    ensure!(!refused.status.success(), "an unknown key was let in");

    // One line per push, from the callback.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let printed = server.printed.lock().expect("not poisoned").clone();
        let pushes =
            printed.iter().filter(|line| line.contains("pushed 1 ref(s) to ada/engine")).count();
        if pushes == 2 {
            assert!(printed.iter().all(|line| line.starts_with("ada ")), "{printed:?}");
            break;
        }
        ensure!(Instant::now() < deadline, "the pushes were not printed: {printed:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
