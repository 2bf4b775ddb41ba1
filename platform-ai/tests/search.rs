//! The searcher over a real index: the real model, the embedded store, hybrid ranking.

use std::path::Path;
use std::sync::Arc;

use platform_ai::chunk::Chunker;
use platform_ai::embed::{Embedder, LocalEmbedder};
use platform_ai::index::{IndexTarget, Indexer};
use platform_ai::search::Searcher;
use platform_ai::store::{ChunkFilter, EdgeStore, Ranking, VectorStore};
use platform_test_support::service_env;

/// Talks about resetting connections to peers at length; never says the error message.
const NET_RS: &str = "\
/// Resets the connection to a peer: the peer's connection is reset and the peer is told.
pub fn reset_connection(peer: &mut Peer) {
    // A reset connection to the peer: drop the peer's connection, then reset its state.
    peer.connection.reset();
    peer.reset_count += 1;
    peer.notify(Reset::ByPeer);
}
";

/// Holds the exact error message, among unrelated words.
const ERRORS_RS: &str = "\
pub fn classify(code: i32) -> Error {
    match code {
        104 => Error::new(\"connection reset by peer\"),
        110 => Error::new(\"timed out\"),
        _ => Error::new(\"unknown\"),
    }
}
";

fn git(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Search Test", "-c", "user.email=search@example.com"])
        .args(args)
        .output()
        .expect("git runs");
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test]
async fn hybrid_ranking_puts_the_exact_error_message_first() {
    let dir = tempfile::tempdir().expect("temp dir");
    let work = dir.path().join("work");
    std::fs::create_dir_all(work.join("src")).expect("mkdir");
    std::fs::write(work.join("src/net.rs"), NET_RS).expect("write");
    std::fs::write(work.join("src/errors.rs"), ERRORS_RS).expect("write");
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "two files"]);
    let head: gix::ObjectId = git(&work, &["rev-parse", "HEAD"]).parse().expect("commit id");

    let model = LocalEmbedder::open(Path::new(&service_env("PLATFORM_TEST_EMBED_MODEL_DIR")))
        .expect("model");
    let embedder: Arc<dyn Embedder> = Arc::new(model);
    let store: Arc<dyn VectorStore> =
        Arc::new(EdgeStore::open(&dir.path().join("index"), embedder.model()).expect("store"));
    let indexer =
        Indexer::new(embedder.clone(), store.clone(), Chunker::default()).expect("indexer");
    indexer
        .index(IndexTarget { path: &work, repo_id: 1, from: None, to: head })
        .await
        .expect("indexing");
    let searcher = Searcher::new(embedder, store);
    let top = |ranking| {
        let searcher = searcher.clone();
        async move {
            let hits = searcher
                .search("connection reset by peer", ranking, ChunkFilter::repo(1), 5)
                .await
                .expect("search");
            hits.first().map(|hit| hit.payload.path.clone()).unwrap_or_default()
        }
    };
    // Each ranking alone prefers the file that talks about it...
    assert_eq!(top(Ranking::Lexical).await, "src/net.rs");
    assert_eq!(top(Ranking::Dense).await, "src/net.rs");
    // ...and the fused ranking finds the message itself first, as grep would; quotes around
    // the query and other case change nothing.
    assert_eq!(top(Ranking::Hybrid).await, "src/errors.rs");
    let quoted = searcher
        .search("\"Connection  reset by peer\"", Ranking::Hybrid, ChunkFilter::repo(1), 5)
        .await
        .expect("search");
    assert_eq!(quoted.first().map(|hit| hit.payload.path.as_str()), Some("src/errors.rs"));
}
