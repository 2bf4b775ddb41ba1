//! Code search quality: lexical, dense and hybrid ranking on two tasks, in one run, with the
//! real all-MiniLM-L6-v2 model and the embedded store.
//!
//! Run with `scripts/bench.sh search` (it installs the model), or with
//! `PLATFORM_TEST_EMBED_MODEL_DIR` set: `cargo bench -p platform-ai --bench search_quality`.
//!
//! The corpus is the `src/` directories of the crates in [`CRATES`], at the versions this
//! workspace locks (so cargo has unpacked them in its registry cache), committed to a git
//! repository and indexed by the [`Indexer`] as a push would be. Indexes are kept under
//! `target/bench/search-quality/` and brought up to date on later runs (nothing is embedded
//! again when the corpus is unchanged).
//!
//! (a) Labelled queries: `benches/search_quality/queries.toml`, natural-language and identifier
//!     queries written by hand with the files that answer them. Hits are reduced to distinct
//!     files in rank order; a file is relevant when it is listed.
//! (b) Docstring to code, in the manner of CodeSearchNet: every documented function of the
//!     corpus whose doc comment's first sentence is unique and has at least four words; that
//!     sentence is the query, and the answer is the chunk holding the function's signature.
//!     Doc comments (`///`, `//!`) are removed from the indexed text, so the answer cannot be
//!     found by its own words. At most `BENCH_QUALITY_DOC_QUERIES` (400), evenly spaced.
//!
//! Reported for each ranking: nDCG@10 (binary gains), MRR@10 and recall@10, means over the
//! queries. Goal: hybrid beats both others on both tasks; recall@10 at least 0.8 on (a).

mod common;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use platform_ai::chunk::{ChunkLimits, Chunker};
use platform_ai::embed::{Embedder, LocalEmbedder};
use platform_ai::index::{IndexTarget, Indexer};
use platform_ai::search::Searcher;
use platform_ai::store::{ChunkFilter, EdgeStore, Hit, Ranking, VectorStore};

/// The corpus: crates of the lock file, by directory name in the registry cache.
const CRATES: &[&str] = &[
    "http-1.5.0",
    "httparse-1.10.1",
    "url-2.5.8",
    "percent-encoding-2.3.2",
    "form_urlencoded-1.2.2",
    "mime-0.3.18",
    "cookie-0.18.2",
    "hex-0.4.3",
    "tower-0.5.3",
    "backon-1.6.0",
    "walkdir-2.5.1",
    "semver-1.0.28",
    "ipnet-2.12.2",
    "bytes-1.12.2",
    "base64-0.22.1",
];

const CUTOFF: usize = 10;
const RANKINGS: [(&str, Ranking); 3] =
    [("lexical", Ranking::Lexical), ("dense", Ranking::Dense), ("hybrid", Ranking::Hybrid)];

#[derive(serde::Deserialize)]
struct LabelledSet {
    query: Vec<Labelled>,
}

#[derive(serde::Deserialize)]
struct Labelled {
    q: String,
    kind: String,
    relevant: Vec<String>,
}

/// A documented function: its doc comment's first sentence, and where its signature is in the
/// file without doc comments.
struct Documented {
    sentence: String,
    path: String,
    line: u32,
}

/// nDCG, MRR and recall at [`CUTOFF`] of one ranked list against its relevant items.
#[derive(Clone, Copy, Default)]
struct Scores {
    ndcg: f64,
    mrr: f64,
    recall: f64,
}

impl Scores {
    fn of(ranked: &[bool], relevant: usize) -> Self {
        let top = &ranked[..ranked.len().min(CUTOFF)];
        let gain = |rank: usize| 1.0 / (rank as f64 + 2.0).log2();
        let dcg: f64 = top.iter().enumerate().filter(|(_, hit)| **hit).map(|(i, _)| gain(i)).sum();
        let ideal: f64 = (0..relevant.min(CUTOFF)).map(gain).sum();
        let found = top.iter().filter(|hit| **hit).count();
        Self {
            ndcg: if ideal > 0.0 { dcg / ideal } else { 0.0 },
            mrr: top.iter().position(|hit| *hit).map_or(0.0, |rank| 1.0 / (rank as f64 + 1.0)),
            recall: if relevant > 0 { found as f64 / relevant as f64 } else { 0.0 },
        }
    }

    fn mean(all: &[Scores]) -> Self {
        let n = all.len().max(1) as f64;
        Self {
            ndcg: all.iter().map(|s| s.ndcg).sum::<f64>() / n,
            mrr: all.iter().map(|s| s.mrr).sum::<f64>() / n,
            recall: all.iter().map(|s| s.recall).sum::<f64>() / n,
        }
    }
}

/// The registry directory holding every crate of [`CRATES`].
fn registry() -> PathBuf {
    let sources = common::registry_sources();
    std::fs::read_dir(&sources)
        .expect("cargo's registry cache")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .find(|dir| CRATES.iter().all(|name| dir.join(name).is_dir()))
        .unwrap_or_else(|| {
            panic!("{} lacks crates of {CRATES:?}: run `cargo fetch`", sources.display())
        })
}

/// Every `.rs` file under each crate's `src/`, relative to `root`, sorted.
fn corpus_files(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("a corpus directory")
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    for name in CRATES {
        walk(&root.join(name).join("src"), &mut files);
    }
    files.into_iter().map(|file| file.strip_prefix(root).expect("under root").into()).collect()
}

fn is_doc_line(line: &str) -> bool {
    let line = line.trim_start();
    line.starts_with("///") || line.starts_with("//!")
}

/// The first sentence of a doc comment, with Markdown's code and link marks removed.
fn first_sentence(doc: &[&str]) -> Option<String> {
    let mut words = Vec::new();
    for line in doc {
        let text = line.trim_start().trim_start_matches('/').trim();
        if text.is_empty() || text.starts_with('#') || text.starts_with("```") {
            break;
        }
        words.extend(text.split_whitespace().map(str::to_owned));
        if text.contains(". ") || text.ends_with('.') {
            break;
        }
    }
    let joined = words.join(" ");
    let sentence = match joined.find(". ") {
        Some(end) => &joined[..end],
        None => joined.trim_end_matches('.'),
    };
    let sentence: String =
        sentence.chars().filter(|c| !matches!(c, '`' | '[' | ']')).collect::<String>();
    (sentence.split_whitespace().count() >= 4).then_some(sentence)
}

/// A line that starts a function definition (after visibility and qualifiers).
fn is_fn_line(line: &str) -> bool {
    let mut rest = line.trim_start();
    if let Some(after) = rest.strip_prefix("pub") {
        rest = after.trim_start();
        if rest.starts_with('(') {
            rest = rest.split_once(')').map_or("", |(_, after)| after).trim_start();
        }
    }
    for qualifier in ["const ", "async ", "unsafe ", "extern \"C\" "] {
        rest = rest.strip_prefix(qualifier).unwrap_or(rest).trim_start();
    }
    rest.starts_with("fn ")
}

/// `text` without doc comment lines, and the documented functions in it.
fn strip_docs(path: &str, text: &str) -> (String, Vec<Documented>) {
    let mut kept = String::with_capacity(text.len());
    let mut found = Vec::new();
    let mut doc: Vec<&str> = Vec::new();
    let mut line_number = 0u32;
    for line in text.lines() {
        if is_doc_line(line) {
            doc.push(line);
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
        line_number += 1;
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[") || trimmed.is_empty() && doc.is_empty() {
            continue;
        }
        if !doc.is_empty()
            && is_fn_line(line)
            && let Some(sentence) = first_sentence(&doc)
        {
            found.push(Documented { sentence, path: path.to_owned(), line: line_number });
        }
        doc.clear();
    }
    (kept, found)
}

/// Indexes `files` as one repository in `dir`, reusing what an earlier run stored; a searcher
/// over it and its number of chunks.
async fn index(
    dir: &Path,
    embedder: &Arc<dyn Embedder>,
    files: &[(PathBuf, Vec<u8>)],
) -> (Searcher, u64) {
    let (repo, head) = common::repository(
        dir,
        files.iter().map(|(path, content)| (path.as_path(), Cow::Borrowed(content.as_slice()))),
    );
    let store: Arc<dyn VectorStore> =
        Arc::new(EdgeStore::open(&dir.join("store"), embedder.model()).expect("a store"));
    let indexer = Indexer::new(embedder.clone(), store.clone(), Chunker::new(chunk_limits()))
        .expect("an indexer");
    let started = std::time::Instant::now();
    let report = indexer
        .index(IndexTarget { path: &repo, repo_id: 1, from: None, to: head })
        .await
        .expect("indexing");
    eprintln!(
        "{}: {} chunks embedded, {} reused, in {:.0} s",
        dir.display(),
        report.chunks_embedded,
        report.chunks_reused,
        started.elapsed().as_secs_f64()
    );
    let chunks = store.count(&ChunkFilter::default()).await.expect("count");
    (Searcher::new(embedder.clone(), store), chunks)
}

fn print_table(title: &str, rows: &[(&str, Scores)]) {
    println!("| {title} | nDCG@10 | MRR@10 | recall@10 |");
    println!("|---|---:|---:|---:|");
    for (name, scores) in rows {
        println!("| {name} | {:.3} | {:.3} | {:.3} |", scores.ndcg, scores.mrr, scores.recall);
    }
    println!();
}

fn goal(rows: &[(&str, Scores)]) -> bool {
    let of = |name: &str| rows.iter().find(|(row, _)| *row == name).expect("a ranking").1;
    let (lexical, dense, hybrid) = (of("lexical"), of("dense"), of("hybrid"));
    hybrid.ndcg > lexical.ndcg && hybrid.ndcg > dense.ndcg
}

#[tokio::main]
async fn main() {
    let model_dir = std::env::var("PLATFORM_TEST_EMBED_MODEL_DIR")
        .expect("PLATFORM_TEST_EMBED_MODEL_DIR is not set: run scripts/bench.sh search");
    let embedder: Arc<dyn Embedder> =
        Arc::new(LocalEmbedder::open(Path::new(&model_dir)).expect("the model"));
    let root = registry();
    let files = corpus_files(&root);
    let contents: Vec<(PathBuf, Vec<u8>)> = files
        .iter()
        .map(|path| (path.clone(), std::fs::read(root.join(path)).expect("a corpus file")))
        .collect();
    let limits = chunk_limits();
    let bench = common::bench_dir(&format!("search-quality/chunks-{}", limits.max_chars));
    window_report(Path::new(&model_dir), &contents, limits);

    // (a) Labelled queries over the files as they are.
    let labelled_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/search_quality/queries.toml");
    let labelled: LabelledSet =
        toml::from_str(&std::fs::read_to_string(&labelled_path).expect("the labelled queries"))
            .expect("queries.toml parses");
    for query in &labelled.query {
        for path in &query.relevant {
            assert!(
                files.iter().any(|file| file == Path::new(path)),
                "{path} is not in the corpus"
            );
        }
    }
    let (searcher, chunks) = index(&bench.join("labelled"), &embedder, &contents).await;
    let kinds: Vec<&str> = {
        let mut kinds: Vec<&str> = labelled.query.iter().map(|q| q.kind.as_str()).collect();
        kinds.sort();
        kinds.dedup();
        kinds
    };
    let mut rows = Vec::new();
    let mut by_kind: Vec<(String, Scores)> = Vec::new();
    for (name, ranking) in RANKINGS {
        let mut scores = Vec::new();
        let mut kind_scores: HashMap<&str, Vec<Scores>> = HashMap::new();
        for query in &labelled.query {
            let hits = searcher
                .search(&query.q, ranking, ChunkFilter::repo(1), 100)
                .await
                .expect("a search");
            let ranked = distinct_files(&hits);
            let marks: Vec<bool> =
                ranked.iter().map(|path| query.relevant.iter().any(|r| r == path)).collect();
            let score = Scores::of(&marks, query.relevant.len());
            scores.push(score);
            kind_scores.entry(query.kind.as_str()).or_default().push(score);
        }
        rows.push((name, Scores::mean(&scores)));
        for kind in &kinds {
            by_kind.push((format!("{name}, {kind}"), Scores::mean(&kind_scores[kind])));
        }
    }
    print_table(
        &format!(
            "(a) {} labelled queries, {} files, {chunks} chunks (files)",
            labelled.query.len(),
            files.len()
        ),
        &rows,
    );
    let by_kind_rows: Vec<(&str, Scores)> =
        by_kind.iter().map(|(name, scores)| (name.as_str(), *scores)).collect();
    print_table("(a) by kind of query", &by_kind_rows);
    let labelled_goal = goal(&rows) && rows[2].1.recall >= 0.8;

    // (b) Docstring to code, over the files without doc comments.
    let mut stripped = Vec::new();
    let mut documented = Vec::new();
    for (path, content) in &contents {
        let text = String::from_utf8_lossy(content);
        let (kept, found) = strip_docs(&path.to_string_lossy(), &text);
        stripped.push((path.clone(), kept.into_bytes()));
        documented.extend(found);
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for doc in &documented {
        *counts.entry(doc.sentence.as_str()).or_default() += 1;
    }
    let unique: Vec<&Documented> =
        documented.iter().filter(|doc| counts[doc.sentence.as_str()] == 1).collect();
    let wanted = common::env_number("BENCH_QUALITY_DOC_QUERIES", 400).clamp(1, unique.len().max(1));
    let step = unique.len() as f64 / wanted as f64;
    let queries: Vec<&Documented> =
        (0..wanted).map(|i| unique[(i as f64 * step) as usize]).collect();
    let (searcher, chunks) = index(&bench.join("docstrings"), &embedder, &stripped).await;
    let mut doc_rows = Vec::new();
    for (name, ranking) in RANKINGS {
        let mut scores = Vec::new();
        for query in &queries {
            let hits = searcher
                .search(&query.sentence, ranking, ChunkFilter::repo(1), CUTOFF)
                .await
                .expect("a search");
            let marks: Vec<bool> = hits
                .iter()
                .map(|hit| {
                    hit.payload.path == query.path
                        && (hit.payload.start_line..=hit.payload.end_line).contains(&query.line)
                })
                .collect();
            scores.push(Scores::of(&marks, 1));
        }
        doc_rows.push((name, Scores::mean(&scores)));
    }
    print_table(
        &format!(
            "(b) docstring to code: {} of {} documented functions, {chunks} chunks",
            queries.len(),
            documented.len()
        ),
        &doc_rows,
    );
    println!(
        "goal (hybrid's nDCG@10 above both others; recall@10 >= 0.8 on (a)): (a) {}, (b) {}",
        if labelled_goal { "met" } else { "NOT met" },
        if goal(&doc_rows) { "met" } else { "NOT met" }
    );
}

/// The chunker's limits: the default, or `BENCH_QUALITY_MAX_CHARS` characters at most.
fn chunk_limits() -> ChunkLimits {
    let mut limits = ChunkLimits::default();
    if let Some(max) =
        std::env::var("BENCH_QUALITY_MAX_CHARS").ok().and_then(|raw| raw.parse().ok())
    {
        limits.max_chars = max;
        limits.min_chars = limits.min_chars.min(max / 4);
    }
    limits
}

/// How much of the chunks the model's window sees: their lengths in tokens.
fn window_report(model_dir: &Path, contents: &[(PathBuf, Vec<u8>)], limits: ChunkLimits) {
    let mut tokenizer =
        tokenizers::Tokenizer::from_file(model_dir.join("tokenizer.json")).expect("the tokenizer");
    tokenizer.with_truncation(None).expect("no truncation");
    let chunker = Chunker::new(limits);
    let mut lengths = Vec::new();
    for (path, content) in contents {
        let Ok(chunks) = chunker.chunk(&path.to_string_lossy(), content) else { continue };
        for chunk in chunks.chunks {
            let tokens = tokenizer.encode(chunk.text.as_str(), true).expect("tokenizing").len();
            lengths.push(tokens);
        }
    }
    lengths.sort_unstable();
    let window = 256;
    let over = lengths.iter().filter(|&&tokens| tokens > window).count();
    let total: usize = lengths.iter().sum();
    let unseen: usize = lengths.iter().map(|&tokens| tokens.saturating_sub(window)).sum();
    println!(
        "chunks of at most {} characters: {} chunks, tokens median {} / p90 {}; {:.0}% longer \
         than the model's {window}-token window, {:.0}% of all tokens beyond it",
        limits.max_chars,
        lengths.len(),
        lengths[lengths.len() / 2],
        lengths[lengths.len() * 9 / 10],
        100.0 * over as f64 / lengths.len() as f64,
        100.0 * unseen as f64 / total.max(1) as f64
    );
    println!();
}

/// The hits' files, each once, in the order of its best chunk.
fn distinct_files(hits: &[Hit]) -> Vec<String> {
    let mut seen = HashSet::new();
    hits.iter()
        .filter(|hit| seen.insert(hit.payload.path.as_str()))
        .map(|hit| hit.payload.path.clone())
        .collect()
}
