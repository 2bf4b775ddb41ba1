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
//!    embedding included; p50, p99 and max. Goal: p99 under 100 ms (hybrid).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use platform_ai::chunk::Chunker;
use platform_ai::embed::{Embedder, LocalEmbedder};
use platform_ai::index::{IndexTarget, Indexer};
use platform_ai::search::Searcher;
use platform_ai::store::{ChunkFilter, EdgeStore, Ranking, VectorStore};

const EXTENSIONS: &[&str] = &["rs", "py", "js", "ts", "go", "java", "c", "h", "cpp", "hpp"];

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|raw| raw.parse().ok()).unwrap_or(default)
}

fn registry_sources() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .expect("CARGO_HOME or HOME");
    home.join("registry").join("src")
}

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
    let root = registry_sources();
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

fn git(cwd: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .args(args)
        .current_dir(cwd)
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .output()
        .expect("git");
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A repository with the corpus's files committed; returns its path and commit.
fn repository(corpus: &Corpus, dir: &Path) -> (PathBuf, gix::ObjectId) {
    let work = dir.join("repo");
    if !work.join(".git").exists() {
        for file in &corpus.files {
            let target = work.join(file);
            std::fs::create_dir_all(target.parent().expect("a parent")).expect("mkdir");
            std::fs::copy(corpus.root.join(file), &target).expect("copy");
        }
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["add", "-A", "."]);
        git(&work, &["commit", "-q", "-m", "corpus"]);
    }
    let head = git(&work, &["rev-parse", "HEAD"]);
    (work, gix::ObjectId::from_hex(head.as_bytes()).expect("an id"))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
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
    let bench_dir = platform_target_dir().join("bench").join("search");
    std::fs::create_dir_all(&bench_dir).expect("bench dir");

    // 1. Indexing against the raw embedder.
    let index_chunks = env_number("BENCH_SEARCH_INDEX_CHUNKS", 3_000);
    let runs = env_number("BENCH_SEARCH_RUNS", 3);
    let small = corpus(index_chunks);
    let small_dir = bench_dir.join(format!("throughput-{index_chunks}"));
    let (small_repo, small_head) = repository(&small, &small_dir);
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    let mut indexed_chunks = 0;
    for run in 0..runs {
        let store_dir = small_dir.join(format!("store-{run}"));
        let _ = std::fs::remove_dir_all(&store_dir);
        let store: Arc<dyn VectorStore> =
            Arc::new(EdgeStore::open(&store_dir, &model).expect("a store"));
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

    // 2. Latency over a large index, built once.
    let chunks = env_number("BENCH_SEARCH_CHUNKS", 100_000);
    let large = corpus(chunks);
    let large_dir = bench_dir.join(format!("latency-{chunks}"));
    let (large_repo, large_head) = repository(&large, &large_dir);
    let store_dir = large_dir.join("store");
    let built = large_dir.join("built");
    let store: Arc<dyn VectorStore> =
        Arc::new(EdgeStore::open(&store_dir, &model).expect("a store"));
    if !built.exists() {
        eprintln!("building the index of {chunks} chunks once (kept in {})", large_dir.display());
        let indexer =
            Indexer::new(embedder.clone(), store.clone(), Chunker::default()).expect("an indexer");
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

fn platform_target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").join("target")
    })
}
