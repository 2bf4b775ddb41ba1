//! Semantic code search over a local git repository, with no service at all: the commit at
//! `HEAD` is chunked, embedded by all-MiniLM-L6-v2 in this process and kept in an embedded
//! Qdrant store; a query is answered by meaning and exact terms together.
//!
//! ```text
//! search-local-repo --model DIR [--index DIR] [--ranking hybrid|dense|lexical] [--limit N] REPO QUERY...
//! ```
//!
//! `--model` (or `SEARCH_MODEL_DIR`) names the model's directory (`config.json`,
//! `tokenizer.json`, `model.safetensors`). Runs after the first embed only what changed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use platform_ai::chunk::Chunker;
use platform_ai::embed::{Embedder, LocalEmbedder};
use platform_ai::index::{IndexTarget, Indexer};
use platform_ai::search::Searcher;
use platform_ai::store::{ChunkFilter, EdgeStore, Ranking};
use sha2::Digest as _;

const USAGE: &str = "usage: search-local-repo --model DIR [--index DIR] \
                     [--ranking hybrid|dense|lexical] [--limit N] REPO QUERY...";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse(std::env::args().skip(1))?;
    let embedder: Arc<dyn Embedder> = Arc::new(LocalEmbedder::open(&options.model)?);
    let store = Arc::new(EdgeStore::open(&options.index, embedder.model())?);
    let head = platform_git::browse::Repo::open(&options.repo, Default::default())?
        .gix()
        .head_id()
        .with_context(|| format!("{} has no commit at HEAD", options.repo.display()))?
        .detach();

    let indexer = Indexer::new(embedder.clone(), store.clone(), Chunker::default())?;
    let target = IndexTarget { path: &options.repo, repo_id: 1, from: None, to: head };
    let report = indexer.index(target).await?;
    let skipped: u64 = report.files_skipped.values().sum();
    eprintln!(
        "indexed {head}: {} files written, {} removed, {} skipped; {} chunks embedded, {} reused",
        report.files_indexed,
        report.files_removed,
        skipped,
        report.chunks_embedded,
        report.chunks_reused
    );

    let hits = Searcher::new(embedder, store)
        .search(&options.query, options.ranking, ChunkFilter::repo(1), options.limit)
        .await?;
    for hit in hits {
        let chunk = hit.payload;
        println!("{}:{}-{}  ({:.4})", chunk.path, chunk.start_line, chunk.end_line, hit.score);
        for line in chunk.text.lines().take(3) {
            println!("    {line}");
        }
    }
    Ok(())
}

struct Options {
    model: PathBuf,
    index: PathBuf,
    ranking: Ranking,
    limit: usize,
    repo: PathBuf,
    query: String,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let mut model = std::env::var_os("SEARCH_MODEL_DIR").map(PathBuf::from);
        let (mut index, mut ranking, mut limit) = (None, Ranking::Hybrid, 10);
        let mut rest = Vec::new();
        while let Some(arg) = args.next() {
            let mut value =
                |name: &str| args.next().with_context(|| format!("{name} needs a value; {USAGE}"));
            match arg.as_str() {
                "--model" => model = Some(value("--model")?.into()),
                "--index" => index = Some(PathBuf::from(value("--index")?)),
                "--ranking" => {
                    ranking = match value("--ranking")?.as_str() {
                        "hybrid" => Ranking::Hybrid,
                        "dense" => Ranking::Dense,
                        "lexical" => Ranking::Lexical,
                        other => bail!("--ranking {other:?}: use hybrid, dense or lexical"),
                    }
                }
                "--limit" => {
                    let raw = value("--limit")?;
                    limit =
                        raw.parse().with_context(|| format!("--limit {raw:?} is not a number"))?;
                }
                "--help" | "-h" => bail!("{USAGE}"),
                _ => rest.push(arg),
            }
        }
        let model = model
            .with_context(|| format!("no model: give --model or SEARCH_MODEL_DIR; {USAGE}"))?;
        let mut rest = rest.into_iter();
        let repo = PathBuf::from(rest.next().with_context(|| format!("no repository; {USAGE}"))?);
        let query = rest.collect::<Vec<_>>().join(" ");
        if query.trim().is_empty() {
            bail!("no query; {USAGE}");
        }
        let index = match index {
            Some(index) => index,
            None => default_index(&repo)?,
        };
        Ok(Self { model, index, ranking, limit, repo, query })
    }
}

/// An index per repository under the system's temporary directory.
fn default_index(repo: &Path) -> anyhow::Result<PathBuf> {
    let canonical = repo.canonicalize().with_context(|| format!("{}", repo.display()))?;
    let digest = sha2::Sha256::digest(canonical.to_string_lossy().as_bytes());
    Ok(std::env::temp_dir().join("search-local-repo").join(hex::encode(&digest[..8])))
}
