//! Semantic search over hosted code: files are split along their syntax, each piece is
//! embedded by a model and indexed with its BM25 terms, and a search fuses meaning and exact
//! terms.
//!
//! ```
//! use platform_ai::chunk::Chunker;
//! use platform_ai::embed::EmbeddingModel;
//! use platform_ai::lexical::{document_vector, query_vector};
//! use platform_ai::store::{
//!     ChunkFilter, ChunkPayload, ChunkPoint, EdgeStore, Ranking, StoreQuery, VectorStore,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let source = "/// Drops sessions older than `ttl`.\nfn expire_sessions(ttl: Duration) {}\n";
//! let file = Chunker::default().chunk("src/session.rs", source.as_bytes())?;
//! assert_eq!(file.language.name(), "rust");
//!
//! // An embedded store in a directory; a real index takes its vectors from an `Embedder`.
//! let root = tempfile::tempdir()?;
//! let model = EmbeddingModel { name: "example".to_owned(), dimensions: 3 };
//! let store = EdgeStore::open(root.path(), &model)?;
//! let chunk = &file.chunks[0];
//! store
//!     .upsert(vec![ChunkPoint {
//!         id: uuid::Uuid::new_v4(),
//!         dense: vec![1.0, 0.0, 0.0],
//!         sparse: document_vector(&chunk.text),
//!         payload: ChunkPayload {
//!             repo_id: 1,
//!             path: "src/session.rs".to_owned(),
//!             language: file.language.name().to_owned(),
//!             start_line: chunk.start_line,
//!             end_line: chunk.end_line,
//!             blob: "0".repeat(40),
//!             content_key: "example".to_owned(),
//!             text: chunk.text.clone(),
//!         },
//!     }])
//!     .await?;
//!
//! // `expireSessions` finds `expire_sessions`: identifiers are split into their words.
//! let hits = store
//!     .search(&StoreQuery {
//!         dense: None,
//!         sparse: Some(query_vector("expireSessions")),
//!         ranking: Ranking::Lexical,
//!         filter: ChunkFilter::repo(1),
//!         limit: 10,
//!         candidates: 50,
//!     })
//!     .await?;
//! assert_eq!(hits[0].payload.start_line, 1);
//! assert!(hits[0].payload.text.contains("fn expire_sessions"));
//! # Ok(())
//! # }
//! ```
//!
//! - [`embed`]: embedding models behind one trait: all-MiniLM-L6-v2 in this process (candle,
//!   from model files on disk, never downloaded) or any OpenAI-compatible embeddings API.
//! - [`chunk`]: files split along their syntax (tree-sitter grammars for Rust, Python,
//!   JavaScript, TypeScript, Go, Java, C and C++; windows of lines for other text), and the files
//!   that are not indexed, with the reason.
//! - [`lexical`]: code-aware terms (identifiers whole and split at camelCase and snake_case) and
//!   their BM25 weights as sparse vectors.
//! - [`index`]: a repository's commit brought into the store: only what changed is read, only
//!   content never embedded before is embedded, renames move chunks, a reconcile fixes the rest.
//! - [`search`]: a query's embedding and terms ranked by the store.
//! - [`chat`]: chat completions from an OpenAI-compatible API, streamed.
//! - [`ask`]: questions about code: the prompt of retrieved chunks within a token budget,
//!   quoted apart from the instructions, and the citations taken from the answer.
//! - [`store`]: chunks with their dense and sparse vectors, searched by either or both fused by
//!   reciprocal rank; embedded (`qdrant-edge`, one owning process) for one machine.

pub mod ask;
pub mod chat;
pub mod chunk;
pub mod embed;
pub mod index;
pub mod lexical;
pub mod search;
pub mod service;
pub mod store;
