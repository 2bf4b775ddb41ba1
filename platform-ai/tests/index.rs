//! Indexing real git history with the real model into the embedded store: changes only,
//! renames moved, deletions removed, force pushes reconciled, content embedded once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use platform_ai::chunk::{Chunker, Skip};
use platform_ai::embed::{EmbedError, Embedder, EmbeddingModel, LocalEmbedder};
use platform_ai::index::{IndexTarget, Indexer};
use platform_ai::lexical::query_vector;
use platform_ai::store::{ChunkFilter, EdgeStore, Ranking, StoreQuery, VectorStore};
use platform_test_support::service_env;

/// The real model, counting the texts it is given.
#[derive(Debug)]
struct Counting {
    model: LocalEmbedder,
    texts: AtomicUsize,
}

#[async_trait]
impl Embedder for Counting {
    fn model(&self) -> &EmbeddingModel {
        self.model.model()
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.texts.fetch_add(texts.len(), Ordering::SeqCst);
        self.model.embed(texts).await
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Index Test", "-c", "user.email=index@example.com"])
        .args(args)
        .output()
        .expect("git runs");
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn write(dir: &Path, path: &str, content: &str) {
    let path = dir.join(path);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, content).expect("write");
}

fn commit(dir: &Path, message: &str) -> gix::ObjectId {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "--allow-empty", "-m", message]);
    git(dir, &["rev-parse", "HEAD"]).parse().expect("commit id")
}

const SESSION_RS: &str = "/// Drops every session whose time to live has passed.\npub fn expire_sessions(store: &mut SessionStore, now: Instant) {\n    store.sessions.retain(|session| session.expires_at > now);\n}\n";
const UTIL_PY: &str = "def parse_config(path):\n    \"\"\"Read the configuration file at path.\"\"\"\n    with open(path) as handle:\n        return toml.load(handle)\n";
const README: &str = "# Example\n\nA small service that keeps user sessions.\n";

/// Fields drop in order: the store before the directory it writes to on the way out.
struct Setup {
    indexer: Indexer,
    store: Arc<EdgeStore>,
    counting: Arc<Counting>,
    work: PathBuf,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    git(&work, &["init", "-q", "-b", "main"]);
    let model = LocalEmbedder::open(Path::new(&service_env("PLATFORM_TEST_EMBED_MODEL_DIR")))
        .expect("model");
    let counting = Arc::new(Counting { model, texts: AtomicUsize::new(0) });
    let store =
        Arc::new(EdgeStore::open(&dir.path().join("index"), counting.model()).expect("store"));
    let indexer =
        Indexer::new(counting.clone(), store.clone(), Chunker::default()).expect("indexer");
    Setup { indexer, store, counting, work, _dir: dir }
}

async fn files_of(store: &EdgeStore, repo_id: i64) -> Vec<String> {
    let mut files: Vec<String> =
        store.indexed_files(repo_id).await.expect("files").into_keys().collect();
    files.sort();
    files
}

async fn top_path(setup: &Setup, repo_id: i64, query: &str) -> String {
    let dense = setup.counting.embed(&[query.to_owned()]).await.expect("query").remove(0);
    let hits = setup
        .store
        .search(&StoreQuery {
            dense: Some(dense),
            sparse: Some(query_vector(query)),
            ranking: Ranking::Hybrid,
            filter: ChunkFilter::repo(repo_id),
            limit: 5,
            candidates: 20,
        })
        .await
        .expect("search");
    hits.first().map(|hit| hit.payload.path.clone()).unwrap_or_default()
}

#[tokio::test]
async fn history_is_indexed_incrementally() {
    let setup = setup();
    let work = &setup.work;
    write(work, "src/session.rs", SESSION_RS);
    write(work, "app/util.py", UTIL_PY);
    write(work, "README.md", README);
    write(work, "Cargo.lock", "version = 3\n");
    write(work, "vendor/lib/x.go", "package x\n");
    let first = commit(work, "first");

    let report = setup
        .indexer
        .index(IndexTarget { path: work, repo_id: 1, from: None, to: first })
        .await
        .expect("first index");
    assert_eq!(report.files_indexed, 3, "{report:?}");
    assert_eq!(report.files_skipped.get(&Skip::Lock), Some(&1));
    assert_eq!(report.files_skipped.get(&Skip::Vendored), Some(&1));
    assert_eq!(report.chunks_embedded, report.chunks_written);
    assert_eq!(setup.counting.texts.load(Ordering::SeqCst) as u64, report.chunks_embedded);
    assert_eq!(files_of(&setup.store, 1).await, ["README.md", "app/util.py", "src/session.rs"]);
    assert_eq!(top_path(&setup, 1, "where are expired sessions removed?").await, "src/session.rs");
    assert_eq!(top_path(&setup, 1, "parse_config").await, "app/util.py");

    // A change, a rename and an addition: only the changed and added files are embedded.
    write(work, "app/util.py", &UTIL_PY.replace("toml.load", "tomllib.load"));
    std::fs::create_dir_all(work.join("docs")).expect("mkdir");
    git(work, &["mv", "README.md", "docs/README.md"]);
    write(work, "app/limits.py", "MAX_SESSIONS = 10_000\n");
    let second = commit(work, "second");
    let before = setup.counting.texts.load(Ordering::SeqCst);
    let report = setup
        .indexer
        .index(IndexTarget { path: work, repo_id: 1, from: Some(first), to: second })
        .await
        .expect("second index");
    assert_eq!(
        (report.files_indexed, report.files_renamed, report.files_removed),
        (2, 1, 0),
        "{report:?}"
    );
    assert_eq!(setup.counting.texts.load(Ordering::SeqCst) - before, 2, "{report:?}");
    assert_eq!(
        files_of(&setup.store, 1).await,
        ["app/limits.py", "app/util.py", "docs/README.md", "src/session.rs"]
    );
    let under_docs = ChunkFilter { under: Some("docs".to_owned()), ..ChunkFilter::repo(1) };
    assert_eq!(setup.store.count(&under_docs).await.expect("count"), 1);

    // A deletion.
    git(work, &["rm", "-q", "app/util.py"]);
    let third = commit(work, "third");
    let report = setup
        .indexer
        .index(IndexTarget { path: work, repo_id: 1, from: Some(second), to: third })
        .await
        .expect("third index");
    assert_eq!(report.files_removed, 1);
    assert_eq!(setup.store.count(&ChunkFilter::file(1, "app/util.py")).await.expect("count"), 0);

    // A force push back to the first commit: reconciled against the store. The restored files'
    // content is known (README.md's chunk at its new path, the first app/util.py's vector
    // after its chunks were gone), so nothing is embedded.
    git(work, &["reset", "-q", "--hard", &first.to_string()]);
    let before = setup.counting.texts.load(Ordering::SeqCst);
    let report = setup
        .indexer
        .index(IndexTarget { path: work, repo_id: 1, from: None, to: first })
        .await
        .expect("reconcile");
    assert_eq!(files_of(&setup.store, 1).await, ["README.md", "app/util.py", "src/session.rs"]);
    assert_eq!(setup.counting.texts.load(Ordering::SeqCst), before, "{report:?}");
    assert_eq!((report.chunks_reused, report.chunks_embedded), (2, 0), "{report:?}");
    assert_eq!(report.files_indexed, 2, "README.md and app/util.py: {report:?}");
    assert_eq!(report.files_removed, 2, "docs/README.md and app/limits.py: {report:?}");
    let before = setup.counting.texts.load(Ordering::SeqCst);

    // A fork: the same content in another repository is not embedded again.
    let report = setup
        .indexer
        .index(IndexTarget { path: work, repo_id: 2, from: None, to: first })
        .await
        .expect("fork");
    assert_eq!(report.chunks_embedded, 0, "{report:?}");
    assert_eq!(setup.counting.texts.load(Ordering::SeqCst), before);
    assert_eq!(files_of(&setup.store, 2).await, files_of(&setup.store, 1).await);
    // Each repository's search sees its own chunks only.
    assert_eq!(
        setup.store.count(&ChunkFilter::repo(2)).await.expect("count"),
        setup.store.count(&ChunkFilter::repo(1)).await.expect("count")
    );
}
