//! `chat-server --model DIR [--addr 127.0.0.1:11434]`: an OpenAI-compatible chat-completions
//! API on SmolLM2-135M-Instruct, for running ask-the-code on one machine with no API configured.
//! Its answers are weak; point `APP_AI_BASIC_URL` at a real API for useful ones.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use platform_test_support::ChatServer;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut model = None;
    let mut addr = SocketAddr::from(([127, 0, 0, 1], 11434));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--model" => model = args.next().map(PathBuf::from),
            "--addr" => {
                let raw = args.next().context("--addr needs an address")?;
                addr = raw.parse().with_context(|| format!("--addr: {raw:?} is no address"))?;
            }
            other => {
                bail!("unknown argument {other:?}; usage: chat-server --model DIR [--addr ADDR]")
            }
        }
    }
    let model = model.context("usage: chat-server --model DIR [--addr ADDR]")?;
    let server = ChatServer::start_on(&model, addr).await?;
    println!(
        "{}",
        serde_json::json!({"message": "listening", "addr": addr.to_string(), "url": server.url()})
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
