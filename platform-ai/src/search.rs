//! Answering a query: the query's embedding and its BM25 terms, ranked by the store.

use std::sync::Arc;

use crate::embed::{EmbedError, Embedder};
use crate::lexical::query_vector;
use crate::store::{ChunkFilter, Hit, Ranking, StoreError, StoreQuery, VectorStore};

/// The most hits one search returns.
pub const MAX_LIMIT: usize = 100;

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The query has no searchable term and nothing to embed.
    #[error("the query is empty")]
    EmptyQuery,
    /// The embedding model is unavailable.
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// The store is unavailable.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Searches one store with one embedder (of the store's model).
#[derive(Clone, Debug)]
pub struct Searcher {
    embedder: Arc<dyn Embedder>,
    store: Arc<dyn VectorStore>,
}

impl Searcher {
    /// A searcher over `store`, embedding queries with `embedder`.
    pub fn new(embedder: Arc<dyn Embedder>, store: Arc<dyn VectorStore>) -> Self {
        Self { embedder, store }
    }

    /// The best chunks for `query` among those `filter` allows, at most `limit` (capped at
    /// [`MAX_LIMIT`]). Lexical ranking needs no embedding; a query without searchable terms
    /// falls back to dense ranking alone.
    pub async fn search(
        &self,
        query: &str,
        ranking: Ranking,
        filter: ChunkFilter,
        limit: usize,
    ) -> Result<Vec<Hit>, SearchError> {
        let query = query.trim();
        if query.is_empty() {
            return Err(SearchError::EmptyQuery);
        }
        let limit = limit.clamp(1, MAX_LIMIT);
        let sparse = query_vector(query);
        let ranking = match ranking {
            Ranking::Hybrid if sparse.is_empty() => Ranking::Dense,
            Ranking::Lexical if sparse.is_empty() => return Err(SearchError::EmptyQuery),
            other => other,
        };
        let dense = match ranking {
            Ranking::Lexical => None,
            Ranking::Dense | Ranking::Hybrid => {
                self.embedder.embed(&[query.to_owned()]).await?.into_iter().next()
            }
        };
        // Hybrid ranking asks for more than it returns, to bring exact matches forward.
        let fetched = if ranking == Ranking::Hybrid { limit.max(EXACT_WINDOW) } else { limit };
        let request = StoreQuery {
            dense,
            sparse: Some(sparse),
            ranking,
            filter,
            limit: fetched,
            candidates: (fetched * 5).max(50),
        };
        let mut hits = self.store.search(&request).await?;
        if ranking == Ranking::Hybrid {
            exact_matches_first(query, &mut hits);
        }
        hits.truncate(limit);
        Ok(hits)
    }
}

/// Fused hits hybrid ranking reorders: those holding the query's exact text go first.
const EXACT_WINDOW: usize = 50;

/// Moves hits whose text contains the query verbatim (ignoring case, runs of white space and
/// surrounding quotes) before the others, keeping the fused order within each group: an exact
/// identifier or error message is found first, as grep would find it, and a query that
/// appears nowhere verbatim keeps its fused ranking.
fn exact_matches_first(query: &str, hits: &mut [Hit]) {
    let needle = normalise(query.trim_matches(|c| c == '"' || c == '\'' || c == '`'));
    if needle.is_empty() {
        return;
    }
    // A stable sort: the fused order stays within both groups.
    hits.sort_by_key(|hit| !normalise(&hit.payload.text).contains(&needle));
}

fn normalise(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}
