//! The embedders against real vectors: the in-process model against sentence-transformers'
//! own output, and the HTTP embedder against an OpenAI-compatible server running that model.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use platform_ai::embed::{
    EmbedError, Embedder, LocalEmbedder, OpenAiEmbedder, OpenAiEmbedderConfig,
};
use platform_test_support::{EmbeddingsServer, service_env};
use secrecy::SecretString;

fn model_dir() -> PathBuf {
    PathBuf::from(service_env("PLATFORM_TEST_EMBED_MODEL_DIR"))
}

struct Reference {
    texts: Vec<String>,
    vectors: Vec<Vec<f32>>,
}

fn reference() -> Reference {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/minilm-reference.json");
    let data: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("reference file"))
            .expect("reference JSON");
    let texts = data["texts"]
        .as_array()
        .expect("texts")
        .iter()
        .map(|text| text.as_str().expect("text").to_owned())
        .collect();
    let vectors = data["vectors"]
        .as_array()
        .expect("vectors")
        .iter()
        .map(|vector| {
            vector
                .as_array()
                .expect("vector")
                .iter()
                .map(|x| x.as_f64().expect("number") as f32)
                .collect()
        })
        .collect();
    Reference { texts, vectors }
}

fn assert_close(actual: &[Vec<f32>], expected: &[Vec<f32>], texts: &[String]) {
    assert_eq!(actual.len(), expected.len());
    for ((actual, expected), text) in actual.iter().zip(expected).zip(texts) {
        assert_eq!(actual.len(), 384);
        let worst = actual.iter().zip(expected).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "{text:?}: largest difference {worst}");
    }
}

#[tokio::test]
async fn the_local_model_gives_sentence_transformers_vectors() {
    let model = LocalEmbedder::open(&model_dir()).expect("model loads");
    assert_eq!(model.model().dimensions, 384);
    assert_eq!(model.model().name, "all-MiniLM-L6-v2");
    assert_eq!(model.max_tokens(), 256);
    let reference = reference();
    let vectors = model.embed(&reference.texts).await.expect("embedded");
    assert_close(&vectors, &reference.vectors, &reference.texts);
    // One at a time gives the same as in a batch (padding does not leak into the mean).
    for (text, expected) in reference.texts.iter().zip(&reference.vectors) {
        let single = model.embed(std::slice::from_ref(text)).await.expect("embedded");
        assert_close(&single, std::slice::from_ref(expected), std::slice::from_ref(text));
    }
}

#[tokio::test]
async fn a_missing_model_file_is_named() {
    let empty = tempfile::tempdir().expect("temp dir");
    let err = LocalEmbedder::open(empty.path()).expect_err("no model there");
    assert!(err.to_string().contains("config.json"), "{err}");
}

fn http_embedder(server: &EmbeddingsServer, dimensions: usize) -> OpenAiEmbedder {
    let mut config = OpenAiEmbedderConfig::new(
        server.url().parse().expect("url"),
        SecretString::from("sk-test-embeddings"),
        "all-MiniLM-L6-v2".to_owned(),
        dimensions,
    );
    config.max_batch = 3;
    OpenAiEmbedder::new(config)
}

#[tokio::test]
async fn the_http_embedder_batches_and_gets_the_same_vectors() {
    let server = EmbeddingsServer::start(&model_dir()).await.expect("server");
    server.require_key("sk-test-embeddings");
    let embedder = http_embedder(&server, 384);
    let reference = reference();
    let vectors = embedder.embed(&reference.texts).await.expect("embedded");
    assert_close(&vectors, &reference.vectors, &reference.texts);
    // Seven texts in batches of at most three.
    assert_eq!(server.requests(), 3);
    assert_eq!(server.inputs(), 7);
}

#[tokio::test]
async fn rate_limits_are_waited_out_as_retry_after_says() {
    let server = EmbeddingsServer::start(&model_dir()).await.expect("server");
    let embedder = http_embedder(&server, 384);
    server.fail_next(1, 429, Some(1));
    let started = Instant::now();
    let vectors = embedder.embed(&["retry me".to_owned()]).await.expect("embedded after retry");
    assert_eq!(vectors.len(), 1);
    assert!(started.elapsed() >= Duration::from_millis(950), "waited {:?}", started.elapsed());
    assert_eq!(server.requests(), 2);

    server.fail_next(2, 503, None);
    embedder.embed(&["retry again".to_owned()]).await.expect("embedded after two 503s");
    assert_eq!(server.requests(), 5);
}

#[tokio::test]
async fn a_server_that_stays_down_is_an_error_naming_the_model_without_the_key() {
    let server = EmbeddingsServer::start(&model_dir()).await.expect("server");
    let embedder = http_embedder(&server, 384);
    server.set_down(true);
    let err = embedder.embed(&["x".to_owned()]).await.expect_err("down");
    let message = err.to_string();
    assert!(matches!(err, EmbedError::Api { .. }), "{message}");
    assert!(message.contains("all-MiniLM-L6-v2"), "{message}");
    assert!(!message.contains("sk-test-embeddings"), "{message}");
    assert!(!message.contains("127.0.0.1"), "{message}");
    // Three retries after the first attempt.
    assert_eq!(server.requests(), 4);
}

#[tokio::test]
async fn vectors_of_another_length_than_configured_are_refused() {
    let server = EmbeddingsServer::start(&model_dir()).await.expect("server");
    let embedder = http_embedder(&server, 1536);
    let err = embedder.embed(&["x".to_owned()]).await.expect_err("wrong length");
    assert!(matches!(err, EmbedError::Dimensions { expected: 1536, actual: 384, .. }), "{err}");
    assert!(err.to_string().contains("APP_EMBED_MODEL_DIMENSIONS"), "{err}");
}
