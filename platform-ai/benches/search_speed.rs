//! Code search speed: indexing against the raw embedder, and search latency over a large
//! embedded index, with the real all-MiniLM-L6-v2 model.
//!
//! Run with `scripts/bench.sh search-speed` (it installs the model), or with
//! `PLATFORM_TEST_EMBED_MODEL_DIR` set: `cargo bench -p platform-ai --bench search_speed`.
//!
//! The corpus is source code already on the machine: the crates in cargo's registry cache
//! (`$CARGO_HOME/registry/src`), files in sorted order, chunked by [`Chunker`].
//!
//! 1. Indexing throughput: a git repository of the first files making up at least
//!    `BENCH_SEARCH_INDEX_CHUNKS` (3,000) chunks is indexed from nothing into a fresh
//!    [`EdgeStore`] by the [`Indexer`] (reading, chunking, embedding, writing); "raw" embeds the
//!    same chunk texts with the same embedder and nothing else, in batches of 64. Chunks per
//!    second of each, alternated, median of `BENCH_SEARCH_RUNS` (3). Goal: at least 0.8x. The
//!    peak resident memory of this process after indexing is reported.
//! 2. Search latency: an index of `BENCH_SEARCH_CHUNKS` (100,000) chunks of the corpus, built
//!    once by the indexer and kept under `target/bench/` for later runs, is queried with 200
//!    queries (first sentences of doc comments of the corpus) per ranking, the query's
//!    embedding by the full model included; p50, p99 and max. Goal: p99 under 100 ms (hybrid).
//!    The stored vectors are the model's over the first `BENCH_SEARCH_BUILD_TOKENS` (32) tokens
//!    of each chunk, so that the index builds in under an hour on two cores (the full window
//!    runs at about 8 chunks/s there); how stored vectors were made does not change what a
//!    search over them costs. The chunks' lexical terms are those of their whole text.
//!
//! `BENCH_SEARCH_RUNS=0` skips the first part.

mod common;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use platform_ai::chunk::Chunker;
use platform_ai::embed::{Embedder, LocalEmbedder};
use platform_ai::index::{IndexTarget, Indexer};
use platform_ai::search::Searcher;
use platform_ai::store::{ChunkFilter, EdgeStore, Ranking, VectorStore};
use platform_test_support::ProcessUsage;

const EXTENSIONS: &[&str] = &["rs", "py", "js", "ts", "go", "java", "c", "h", "cpp", "hpp"];

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, files);
        } else if path
            .extension()
            .and_then(|ext| ext.to_str())
            .is_some_and(|ext| EXTENSIONS.contains(&ext))
        {
            files.push(path);
        }
    }
}

/// Files of the corpus, relative to `root`, until they hold at least `chunks` chunks; with the
/// chunk texts, and doc-comment sentences for queries.
struct Corpus {
    root: PathBuf,
    files: Vec<PathBuf>,
    texts: Vec<String>,
    queries: Vec<String>,
}

fn corpus(chunks: usize) -> Corpus {
    let root = common::registry_sources();
    let mut all = Vec::new();
    walk(&root, &mut all);
    let chunker = Chunker::default();
    let (mut files, mut texts, mut queries) = (Vec::new(), Vec::new(), Vec::new());
    for file in all {
        if texts.len() >= chunks {
            break;
        }
        let Ok(bytes) = std::fs::read(&file) else { continue };
        let relative = file.strip_prefix(&root).unwrap_or(&file).to_path_buf();
        let Ok(chunked) = chunker.chunk(&relative.to_string_lossy(), &bytes) else { continue };
        for chunk in chunked.chunks {
            if queries.len() < 200 {
                let sentence = chunk
                    .text
                    .lines()
                    .find_map(|line| line.trim().strip_prefix("/// "))
                    .map(|line| line.split(". ").next().unwrap_or(line).trim().to_owned())
                    .filter(|line| line.split_whitespace().count() >= 4);
                queries.extend(sentence);
            }
            texts.push(chunk.text);
        }
        files.push(relative);
    }
    assert!(texts.len() >= chunks, "the registry cache holds only {} chunks", texts.len());
    Corpus { root, files, texts, queries }
}

/// The corpus's files committed to a repository in `dir` (once).
fn repository(corpus: &Corpus, dir: &Path) -> (PathBuf, gix::ObjectId) {
    common::repository(
        dir,
        corpus.files.iter().map(|file| {
            let content = std::fs::read(corpus.root.join(file)).expect("a corpus file");
            (file.as_path(), Cow::Owned(content))
        }),
    )
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn peak_rss_mib() -> f64 {
    ProcessUsage::of(std::process::id()).map_or(0.0, |usage| usage.peak_resident_bytes as f64)
        / f64::from(1 << 20)
}

fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let model_dir = std::env::var("PLATFORM_TEST_EMBED_MODEL_DIR")
        .expect("PLATFORM_TEST_EMBED_MODEL_DIR is not set: run scripts/bench.sh search-speed");
    let embedder: Arc<dyn Embedder> =
        Arc::new(LocalEmbedder::open(Path::new(&model_dir)).expect("the model"));
    let model = embedder.model().clone();
    let bench_dir = common::bench_dir("search");

    // 1. Indexing against the raw embedder (BENCH_SEARCH_RUNS=0 skips it).
    let runs = common::env_number("BENCH_SEARCH_RUNS", 3);
    if runs > 0 {
        throughput(&embedder, &bench_dir, runs).await;
    }

    // 2. Latency over a large index, built once.
    let chunks = common::env_number("BENCH_SEARCH_CHUNKS", 100_000);
    let build_tokens = common::env_number("BENCH_SEARCH_BUILD_TOKENS", 32);
    let large = corpus(chunks);
    let large_dir = bench_dir.join(format!("latency-{chunks}-{build_tokens}"));
    let (large_repo, large_head) = repository(&large, &large_dir);
    let store_dir = large_dir.join("store");
    let built = large_dir.join("built");
    // Stored vectors are the model's over each chunk's first BENCH_SEARCH_BUILD_TOKENS tokens,
    // so that the index builds in well under an hour on two cores; what a search costs does
    // not depend on how the stored vectors were made. Queries are embedded by the full model.
    let builder: Arc<dyn Embedder> = Arc::new(
        LocalEmbedder::open_with_window(
            Path::new(&model_dir),
            &format!("{}-first-{build_tokens}-tokens", model.name),
            build_tokens,
        )
        .expect("the model"),
    );
    let store: Arc<dyn VectorStore> =
        Arc::new(EdgeStore::open(&store_dir, builder.model()).expect("a store"));
    if !built.exists() {
        eprintln!("building the index of {chunks} chunks once (kept in {})", large_dir.display());
        let indexer =
            Indexer::new(builder.clone(), store.clone(), Chunker::default()).expect("an indexer");
        let started = Instant::now();
        let report = indexer
            .index(IndexTarget { path: &large_repo, repo_id: 1, from: None, to: large_head })
            .await
            .expect("indexing");
        eprintln!(
            "built: {} chunks in {:.0} s",
            report.chunks_written,
            started.elapsed().as_secs_f64()
        );
        println!(
            "index of {} chunks built in {:.0} s ({:.1} chunks/s at {build_tokens} tokens)",
            report.chunks_written,
            started.elapsed().as_secs_f64(),
            report.chunks_written as f64 / started.elapsed().as_secs_f64()
        );
        println!(
            "peak resident memory of the process after building it: {:.0} MiB",
            peak_rss_mib()
        );
        std::fs::write(&built, "").expect("mark built");
    }
    let total = store.count(&ChunkFilter::default()).await.expect("count");
    let searcher = Searcher::new(embedder.clone(), store.clone());
    println!();
    println!(
        "| search over {total} chunks, {} queries | p50 ms | p99 ms | max ms |",
        large.queries.len()
    );
    println!("|---|---:|---:|---:|");
    for (name, ranking) in
        [("hybrid", Ranking::Hybrid), ("semantic", Ranking::Dense), ("lexical", Ranking::Lexical)]
    {
        let mut times = Vec::new();
        for query in &large.queries {
            let started = Instant::now();
            searcher.search(query, ranking, ChunkFilter::repo(1), 10).await.expect("a search");
            times.push(started.elapsed());
        }
        times.sort();
        let embedding = if ranking == Ranking::Lexical {
            "no query embedding"
        } else {
            "query embedding included"
        };
        println!(
            "| {name} ({embedding}) | {:.1} | {:.1} | {:.1} |",
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            percentile(&times, 1.0)
        );
    }
}

/// Indexing from nothing against embedding the same texts alone; prints the table.
async fn throughput(embedder: &Arc<dyn Embedder>, bench_dir: &Path, runs: usize) {
    let index_chunks = common::env_number("BENCH_SEARCH_INDEX_CHUNKS", 3_000);
    let small = corpus(index_chunks);
    let small_dir = bench_dir.join(format!("throughput-{index_chunks}"));
    let (small_repo, small_head) = repository(&small, &small_dir);
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    let mut indexed_chunks = 0;
    for run in 0..runs {
        let store_dir = small_dir.join(format!("store-{run}"));
        let _ = std::fs::remove_dir_all(&store_dir);
        let store: Arc<dyn VectorStore> =
            Arc::new(EdgeStore::open(&store_dir, embedder.model()).expect("a store"));
        let indexer =
            Indexer::new(embedder.clone(), store.clone(), Chunker::default()).expect("an indexer");
        let started = Instant::now();
        let report = indexer
            .index(IndexTarget { path: &small_repo, repo_id: 1, from: None, to: small_head })
            .await
            .expect("indexing");
        let seconds = started.elapsed().as_secs_f64();
        indexed_chunks = report.chunks_written;
        ours.push(report.chunks_written as f64 / seconds);
        drop(indexer);
        drop(store);
        let _ = std::fs::remove_dir_all(&store_dir);

        let started = Instant::now();
        for batch in small.texts.chunks(64) {
            embedder.embed(batch).await.expect("raw embedding");
        }
        raw.push(small.texts.len() as f64 / started.elapsed().as_secs_f64());
    }
    let rss = peak_rss_mib();
    let (ours, raw) = (median(ours), median(raw));
    println!(
        "| indexing ({indexed_chunks} chunks, {} files) | chunks/s | ratio |",
        small.files.len()
    );
    println!("|---|---:|---:|");
    println!("| raw embedder | {raw:.1} | 1.00 |");
    println!("| Indexer (read, chunk, embed, write) | {ours:.1} | {:.2} |", ours / raw);
    println!("peak resident memory of the indexing process: {rss:.0} MiB");
}
