//! The conformance suite every vector store passes: upsert, delete by filter, rename, search
//! with filters in each ranking, content-key lookups, persistence across reopening, and (for
//! the embedded store) one owner at a time.

use std::path::Path;
use std::time::Duration;

use platform_ai::embed::EmbeddingModel;
use platform_ai::lexical::{document_vector, query_vector};
use platform_ai::store::{
    ChunkFilter, ChunkPayload, ChunkPoint, EdgeStore, QdrantStore, Ranking, StoreError, StoreQuery,
    VectorStore,
};

fn model() -> EmbeddingModel {
    EmbeddingModel { name: "conformance".to_owned(), dimensions: 4 }
}

fn unit(vector: [f32; 4]) -> Vec<f32> {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    vector.iter().map(|x| x / norm).collect()
}

fn point(repo_id: i64, path: &str, language: &str, text: &str, dense: [f32; 4]) -> ChunkPoint {
    ChunkPoint {
        id: uuid::Uuid::new_v4(),
        dense: unit(dense),
        sparse: document_vector(text),
        payload: ChunkPayload {
            repo_id,
            path: path.to_owned(),
            language: language.to_owned(),
            start_line: 1,
            end_line: text.lines().count() as u32,
            blob: format!("{:040x}", text.len()),
            content_key: format!("key-{text}"),
            text: text.to_owned(),
        },
    }
}

/// Three repositories' worth of chunks.
fn corpus() -> Vec<ChunkPoint> {
    vec![
        point(
            1,
            "src/session.rs",
            "rust",
            "fn expire_sessions(now: Instant) {}",
            [1.0, 0.0, 0.0, 0.0],
        ),
        point(
            1,
            "src/session.rs",
            "rust",
            "struct SessionStore { ttl: Duration }",
            [0.9, 0.1, 0.0, 0.0],
        ),
        point(
            1,
            "src/web/routes.rs",
            "rust",
            "fn login_route() -> Router {}",
            [0.0, 1.0, 0.0, 0.0],
        ),
        point(1, "docs/guide.md", "markdown", "Sessions expire after a day.", [0.8, 0.0, 0.2, 0.0]),
        point(
            2,
            "app/session.py",
            "python",
            "def expire_sessions(now): pass",
            [1.0, 0.0, 0.0, 0.1],
        ),
        point(3, "main.go", "go", "func parseConfig(path string) Config {}", [0.0, 0.0, 1.0, 0.0]),
    ]
}

fn query(ranking: Ranking, text: &str, dense: [f32; 4], filter: ChunkFilter) -> StoreQuery {
    StoreQuery {
        dense: Some(unit(dense)),
        sparse: Some(query_vector(text)),
        ranking,
        filter,
        limit: 10,
        candidates: 50,
    }
}

fn paths(hits: &[platform_ai::store::Hit]) -> Vec<String> {
    hits.iter().map(|hit| format!("{}:{}", hit.payload.repo_id, hit.payload.path)).collect()
}

async fn conformance(store: &dyn VectorStore) {
    store.upsert(corpus()).await.expect("upsert");
    assert_eq!(store.count(&ChunkFilter::default()).await.expect("count"), 6);
    assert_eq!(store.count(&ChunkFilter::repo(1)).await.expect("count"), 4);

    // Dense: nearest first, filtered to the repositories given.
    let everywhere = ChunkFilter { repo_ids: Some(vec![1, 2, 3]), ..ChunkFilter::default() };
    let hits = store
        .search(&query(Ranking::Dense, "", [1.0, 0.0, 0.0, 0.0], everywhere.clone()))
        .await
        .expect("dense search");
    assert_eq!(hits.len(), 6);
    assert!(paths(&hits[..2]).contains(&"1:src/session.rs".to_owned()), "{:?}", paths(&hits));
    assert!(hits[0].score >= hits[1].score);
    let only_two = ChunkFilter { repo_ids: Some(vec![2]), ..ChunkFilter::default() };
    let hits = store
        .search(&query(Ranking::Dense, "", [1.0, 0.0, 0.0, 0.0], only_two))
        .await
        .expect("dense search");
    assert_eq!(paths(&hits), ["2:app/session.py"]);
    let nothing = ChunkFilter { repo_ids: Some(vec![]), ..ChunkFilter::default() };
    assert!(
        store
            .search(&query(Ranking::Hybrid, "x", [1.0, 0.0, 0.0, 0.0], nothing))
            .await
            .expect("search")
            .is_empty()
    );

    // Lexical: the exact identifier, wherever its vector points.
    let hits = store
        .search(&query(Ranking::Lexical, "parseConfig", [1.0, 0.0, 0.0, 0.0], everywhere.clone()))
        .await
        .expect("lexical search");
    assert_eq!(paths(&hits[..1]), ["3:main.go"]);
    // A split part of an identifier finds it too.
    let hits = store
        .search(&query(Ranking::Lexical, "config", [1.0, 0.0, 0.0, 0.0], everywhere.clone()))
        .await
        .expect("lexical search");
    assert_eq!(paths(&hits), ["3:main.go"]);

    // Hybrid: an identifier and a meaning both count; the chunk with both ranks first.
    let hits = store
        .search(&query(
            Ranking::Hybrid,
            "expire_sessions",
            [1.0, 0.0, 0.0, 0.0],
            everywhere.clone(),
        ))
        .await
        .expect("hybrid search");
    let top: Vec<&str> = hits[..2].iter().map(|hit| hit.payload.text.as_str()).collect();
    assert!(top.contains(&"fn expire_sessions(now: Instant) {}"), "{top:?}");
    assert!(top.contains(&"def expire_sessions(now): pass"), "{top:?}");

    // Filters by language and directory.
    let rust = ChunkFilter { language: Some("rust".to_owned()), ..everywhere.clone() };
    let hits =
        store.search(&query(Ranking::Dense, "", [0.0, 1.0, 0.0, 0.0], rust)).await.expect("search");
    assert!(hits.iter().all(|hit| hit.payload.language == "rust") && hits.len() == 3);
    let under = ChunkFilter { under: Some("src/web".to_owned()), ..everywhere.clone() };
    let hits = store
        .search(&query(Ranking::Dense, "", [1.0, 0.0, 0.0, 0.0], under))
        .await
        .expect("search");
    assert_eq!(paths(&hits), ["1:src/web/routes.rs"]);
    let file = ChunkFilter { under: Some("docs/guide.md".to_owned()), ..everywhere.clone() };
    let hits =
        store.search(&query(Ranking::Dense, "", [1.0, 0.0, 0.0, 0.0], file)).await.expect("search");
    assert_eq!(paths(&hits), ["1:docs/guide.md"]);

    // Content keys give back stored vectors, whichever repository holds them.
    let keys = vec!["key-def expire_sessions(now): pass".to_owned(), "key-unknown".to_owned()];
    let found = store.vectors_for(&keys).await.expect("lookup");
    assert_eq!(found.len(), 1);
    let vector = &found["key-def expire_sessions(now): pass"];
    assert!((vector[0] - unit([1.0, 0.0, 0.0, 0.1])[0]).abs() < 1e-4, "{vector:?}");

    // Rename: the chunks move, nothing else changes.
    store.rename(1, "src/session.rs", "src/auth/session.rs", "rust").await.expect("rename");
    assert_eq!(store.count(&ChunkFilter::file(1, "src/session.rs")).await.expect("count"), 0);
    assert_eq!(store.count(&ChunkFilter::file(1, "src/auth/session.rs")).await.expect("count"), 2);
    let under_auth = ChunkFilter { under: Some("src/auth".to_owned()), ..ChunkFilter::repo(1) };
    assert_eq!(store.count(&under_auth).await.expect("count"), 2);

    // Delete by filter: one file, then one repository.
    store.delete(&ChunkFilter::file(1, "docs/guide.md")).await.expect("delete");
    assert_eq!(store.count(&ChunkFilter::repo(1)).await.expect("count"), 3);
    store.delete(&ChunkFilter::repo(1)).await.expect("delete");
    assert_eq!(store.count(&ChunkFilter::repo(1)).await.expect("count"), 0);
    assert_eq!(store.count(&ChunkFilter::default()).await.expect("count"), 2);
    // A vector outlives its chunks: content that comes back is not embedded again.
    let gone = vec!["key-fn login_route() -> Router {}".to_owned()];
    let found = store.vectors_for(&gone).await.expect("lookup");
    assert!((found[&gone[0]][1] - 1.0).abs() < 1e-4, "{found:?}");
    // An empty list deletes nothing.
    store
        .delete(&ChunkFilter { repo_ids: Some(vec![]), ..ChunkFilter::default() })
        .await
        .expect("delete");
    assert_eq!(store.count(&ChunkFilter::default()).await.expect("count"), 2);

    // Vectors of another length are refused before anything is written.
    let mut wrong = point(9, "x.rs", "rust", "fn x() {}", [1.0, 0.0, 0.0, 0.0]);
    wrong.dense.push(0.0);
    let err = store.upsert(vec![wrong]).await.expect_err("5 dimensions in a 4-dimension store");
    assert!(matches!(err, StoreError::Dimensions { expected: 4, actual: 5 }), "{err}");
    assert_eq!(store.count(&ChunkFilter::repo(9)).await.expect("count"), 0);
}

#[tokio::test]
async fn the_embedded_store_conforms() {
    let root = tempfile::tempdir().expect("temp dir");
    let store = EdgeStore::open(root.path(), &model()).expect("open");
    conformance(&store).await;
}

/// Runs when a Qdrant server is named (`PLATFORM_TEST_QDRANT_URL`, its gRPC URL, and
/// `PLATFORM_TEST_QDRANT_API_KEY` if it needs one); none can be installed on every machine.
#[tokio::test]
async fn the_qdrant_server_store_conforms() {
    let Ok(url) = std::env::var("PLATFORM_TEST_QDRANT_URL") else {
        eprintln!("not run: PLATFORM_TEST_QDRANT_URL names no Qdrant server");
        return;
    };
    let url: url::Url = url.parse().expect("PLATFORM_TEST_QDRANT_URL is a URL");
    let key = std::env::var("PLATFORM_TEST_QDRANT_API_KEY").ok().map(secrecy::SecretString::from);
    let prefix = platform_test_support::unique_name("conformance");
    let store = QdrantStore::connect(&url, key.as_ref(), &prefix, &model()).await.expect("connect");
    conformance(&store).await;
    // A second store (another replica, made before the server was reached) sees the same
    // collection on first use.
    let again = QdrantStore::new(&url, key.as_ref(), &prefix, &model()).expect("a client");
    assert_eq!(again.count(&ChunkFilter::default()).await.expect("count"), 2);
    store.drop_collection().await.expect("drop");
}

#[tokio::test]
async fn the_embedded_store_keeps_its_chunks_across_reopening() {
    let root = tempfile::tempdir().expect("temp dir");
    {
        let store = EdgeStore::open(root.path(), &model()).expect("open");
        store.upsert(corpus()).await.expect("upsert");
        store.delete(&ChunkFilter::repo(3)).await.expect("delete");
    }
    let store = EdgeStore::open(root.path(), &model()).expect("reopen");
    assert_eq!(store.count(&ChunkFilter::default()).await.expect("count"), 5);
    let hits = store
        .search(&query(
            Ranking::Hybrid,
            "expire sessions",
            [1.0, 0.0, 0.0, 0.0],
            ChunkFilter { repo_ids: Some(vec![1, 2, 3]), ..ChunkFilter::default() },
        ))
        .await
        .expect("search after reopening");
    assert!(paths(&hits).contains(&"2:app/session.py".to_owned()));
    // Another model gets an index of its own, beside this one.
    let other = EmbeddingModel { name: "other".to_owned(), dimensions: 8 };
    let fresh = EdgeStore::open(root.path(), &other).expect("other model");
    assert_eq!(fresh.count(&ChunkFilter::default()).await.expect("count"), 0);
    assert_ne!(fresh.dir(), store.dir());
}

fn lock_is_free(dir: &Path) -> bool {
    std::process::Command::new("flock")
        .args(["--nonblock", "--exclusive"])
        .arg(dir.join("platform.lock"))
        .arg("true")
        .status()
        .expect("flock(1) runs")
        .success()
}

#[tokio::test]
async fn a_second_owner_of_the_embedded_store_is_refused() {
    let root = tempfile::tempdir().expect("temp dir");
    let store = EdgeStore::open(root.path(), &model()).expect("open");
    store.upsert(corpus()).await.expect("upsert");

    // In this process.
    let err = EdgeStore::open(root.path(), &model()).expect_err("already open");
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("APP_QDRANT_URL"), "{err}");
    // From another process: it cannot take the lock while the store is open.
    assert!(!lock_is_free(store.dir()));
    let dir = store.dir().to_path_buf();
    drop(store);
    assert!(lock_is_free(&dir));

    // Another process holding it keeps this one out, and the data stays whole.
    let mut holder = std::process::Command::new("flock")
        .args(["--exclusive", "--no-fork"])
        .arg(dir.join("platform.lock"))
        .args(["sleep", "30"])
        .spawn()
        .expect("flock(1) holds the lock");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let err = loop {
        match EdgeStore::open(root.path(), &model()) {
            Err(err) => break err,
            Ok(store) if std::time::Instant::now() < deadline => {
                drop(store);
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(_) => panic!("the other process never took the lock"),
        }
    };
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    holder.kill().expect("kill");
    holder.wait().expect("wait");
    let store = EdgeStore::open(root.path(), &model()).expect("open after the other process left");
    assert_eq!(store.count(&ChunkFilter::default()).await.expect("count"), 6);
}

#[tokio::test]
async fn an_unreachable_qdrant_server_is_named_without_its_key() {
    // Port 9 (discard) has no listener on loopback here.
    let url: url::Url = "http://127.0.0.1:9".parse().expect("url");
    let key = secrecy::SecretString::from("qdrant-secret-key-0123");
    let err = QdrantStore::connect(&url, Some(&key), "unreachable", &model())
        .await
        .expect_err("nothing listens there");
    let message = err.to_string();
    assert!(matches!(err, StoreError::Open { .. }), "{message}");
    assert!(message.contains("http://127.0.0.1:9"), "{message}");
    assert!(!message.contains("qdrant-secret-key"), "{message}");

    // Made without connecting (a service starting while the server is down), every use tries
    // the server again and fails on its own, naming it.
    let store = QdrantStore::new(&url, Some(&key), "unreachable", &model()).expect("no I/O yet");
    for _ in 0..2 {
        let err = store.count(&ChunkFilter::default()).await.expect_err("still down");
        let message = err.to_string();
        assert!(message.contains("http://127.0.0.1:9"), "{message}");
        assert!(!message.contains("qdrant-secret-key"), "{message}");
        let err = store
            .search(&query(Ranking::Lexical, "x", [1.0, 0.0, 0.0, 0.0], ChunkFilter::repo(1)))
            .await
            .expect_err("still down");
        assert!(err.to_string().contains("http://127.0.0.1:9"), "{err}");
    }
}
