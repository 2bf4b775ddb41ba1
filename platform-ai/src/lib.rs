//! Semantic search over hosted code.
//!
//! `platform-ai` will own:
//!
//! - an OpenAI-compatible embedding and chat client (`APP_AI_BASIC_URL`, `APP_EMBED_MODEL_*`);
//! - code chunking, and incremental indexing of pushed changes into Qdrant (`APP_QDRANT_URL`);
//! - semantic search filtered by what the caller may read, and its API.
//!
//! It depends on `platform-git` (to read repositories and permissions) and `platform-core`.
