//! A git server in about thirty lines: the bare repositories under `GIT_ROOT`
//! (`{owner}/{name}.git`) over smart HTTP and SSH, to the users, tokens and keys of the TOML
//! file `GIT_USERS` (see `platform_git::local`), with the SSH host key `GIT_HOST_KEY` (an
//! OpenSSH Ed25519 private key). Prints one line per push.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use platform_git::local::LocalUsers;
use platform_git::ssh::{GitSsh, SshOptions};
use platform_git::store::RepoStore;
use platform_git::transport::GitService;
use tokio::net::TcpListener;

fn var(name: &str, default: Option<&str>) -> anyhow::Result<String> {
    std::env::var(name).or_else(|_| default.map(str::to_owned).context(format!("set {name}")))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(var("GIT_ROOT", None)?);
    let users = LocalUsers::from_file(var("GIT_USERS", None)?)?;
    let host_key = std::fs::read_to_string(var("GIT_HOST_KEY", None)?).context("GIT_HOST_KEY")?;

    let git = GitService::builder(users.clone(), users, RepoStore::new(&root))
        .on_push(|push| {
            println!("{} pushed {} ref(s) to {}", push.pusher, push.refs.len(), push.repository)
        })
        .build(&root.join(".state"))?;

    let ssh = GitSsh::new(git.clone(), &host_key, SshOptions::default())?;
    let ssh_listener = TcpListener::bind(var("SSH_ADDR", Some("127.0.0.1:2222"))?).await?;
    tokio::spawn(async move { ssh.serve(ssh_listener, std::future::pending()).await });

    let http_listener = TcpListener::bind(var("HTTP_ADDR", Some("127.0.0.1:8080"))?).await?;
    let app = platform_git::http::router(git).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(http_listener, app).await?;
    Ok(())
}
