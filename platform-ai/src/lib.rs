//! Semantic search over hosted code.
//!
//! - [`embed`]: embedding models behind one trait, an in-process sentence-transformers model
//!   (candle) or an OpenAI-compatible API.
//! - [`chunk`]: files split along their syntax (tree-sitter) into the pieces that are indexed,
//!   and the files that are not.
//! - [`lexical`]: code-aware terms and BM25 sparse vectors, the lexical half of hybrid search.
//! - [`store`]: chunks with their dense and sparse vectors, searched by either or both.
//!
//! It depends on `platform-git` (to read repositories and permissions) and `platform-core`.

pub mod chunk;
pub mod embed;
pub mod lexical;
pub mod store;
