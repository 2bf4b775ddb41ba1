//! Indexing a repository's commit: what changed since the indexed commit is chunked, embedded
//! (only content never embedded before) and written to the store.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use gix::ObjectId;
use platform_git::browse::{BrowseError, ChangeStatus, Limits, Repo};
use sha2::{Digest, Sha256};

use crate::chunk::{Chunker, Skip};
use crate::embed::{EmbedError, Embedder, EmbeddingModel};
use crate::lexical::document_vector;
use crate::store::{ChunkFilter, ChunkPayload, ChunkPoint, StoreError, VectorStore};

/// Texts embedded in one call: a whole push's worth is split so that memory stays bounded.
const EMBED_BATCH: usize = 256;

/// What one indexing run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct IndexReport {
    /// Files whose chunks were (re)written.
    pub files_indexed: u64,
    /// Files whose chunks were removed.
    pub files_removed: u64,
    /// Files whose chunks moved to a new path unchanged.
    pub files_renamed: u64,
    /// Files not indexed, by reason.
    pub files_skipped: BTreeMap<Skip, u64>,
    /// Chunks written.
    pub chunks_written: u64,
    /// Chunks whose vectors were computed now.
    pub chunks_embedded: u64,
    /// Chunks whose vectors were already stored (the same content elsewhere).
    pub chunks_reused: u64,
}

/// Why indexing failed; nothing is lost: a later run does the same work again.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The repository could not be read.
    #[error("reading the repository: {0}")]
    Git(#[from] BrowseError),
    /// The embedding model failed.
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// The vector store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store holds vectors of another model than the embedder makes.
    #[error("the store holds vectors of {store}, the embedder makes {embedder}")]
    ModelMismatch {
        /// The store's model.
        store: EmbeddingModel,
        /// The embedder's.
        embedder: EmbeddingModel,
    },
    /// A worker thread failed.
    #[error("an indexing task failed: {0}")]
    Task(String),
}

/// One indexing run's target.
#[derive(Clone, Copy, Debug)]
pub struct IndexTarget<'a> {
    /// The bare repository on disk.
    pub path: &'a Path,
    /// The repository's id, stored with every chunk.
    pub repo_id: i64,
    /// The commit indexed before, if any: only what changed since is read. `None` reconciles
    /// the whole tree against what the store holds (a first index, a force push, a rebuild).
    pub from: Option<ObjectId>,
    /// The commit to index.
    pub to: ObjectId,
}

/// Chunks, embeds and stores; shared by the tasks that index (`Arc<Indexer>`).
#[derive(Debug)]
pub struct Indexer {
    embedder: Arc<dyn Embedder>,
    store: Arc<dyn VectorStore>,
    chunker: Chunker,
}

/// A file to index, read from the repository.
struct FileToIndex {
    path: String,
    blob: ObjectId,
    content: Vec<u8>,
}

/// What the repository says changed.
#[derive(Default)]
struct Plan {
    index: Vec<FileToIndex>,
    remove: Vec<String>,
    /// (from, to): the same blob at a new path.
    rename: Vec<(String, String)>,
}

impl Indexer {
    /// An indexer writing `embedder`'s vectors into `store`; both must be of one model.
    pub fn new(
        embedder: Arc<dyn Embedder>,
        store: Arc<dyn VectorStore>,
        chunker: Chunker,
    ) -> Result<Self, IndexError> {
        if embedder.model() != store.model() {
            return Err(IndexError::ModelMismatch {
                store: store.model().clone(),
                embedder: embedder.model().clone(),
            });
        }
        Ok(Self { embedder, store, chunker })
    }

    /// The store written to.
    pub fn store(&self) -> &Arc<dyn VectorStore> {
        &self.store
    }

    /// The embedder used.
    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    /// Brings the store's chunks of the repository to the commit `target.to`.
    pub async fn index(&self, target: IndexTarget<'_>) -> Result<IndexReport, IndexError> {
        let indexed = match target.from {
            Some(_) => None,
            None => Some(self.store.indexed_files(target.repo_id).await?),
        };
        let path = target.path.to_path_buf();
        let (from, to) = (target.from, target.to);
        let plan = tokio::task::spawn_blocking(move || plan(&path, from, to, indexed))
            .await
            .map_err(|err| IndexError::Task(err.to_string()))??;

        let mut report = IndexReport::default();
        let repo_id = target.repo_id;
        // Chunk every file, then embed what is new in batches across files.
        let mut pending: Vec<(String, Vec<ChunkPoint>)> = Vec::new();
        for file in plan.index {
            match self.chunker.chunk(&file.path, &file.content) {
                Ok(chunks) => {
                    let language = chunks.language.name().to_owned();
                    let points = chunks
                        .chunks
                        .into_iter()
                        .map(|chunk| ChunkPoint {
                            id: uuid::Uuid::new_v4(),
                            dense: Vec::new(),
                            sparse: document_vector(&chunk.text),
                            payload: ChunkPayload {
                                repo_id,
                                path: file.path.clone(),
                                language: language.clone(),
                                start_line: chunk.start_line,
                                end_line: chunk.end_line,
                                blob: file.blob.to_string(),
                                content_key: content_key(self.embedder.model(), &chunk.text),
                                text: chunk.text,
                            },
                        })
                        .collect();
                    pending.push((file.path, points));
                }
                Err(skip) => {
                    *report.files_skipped.entry(skip).or_default() += 1;
                    // A file that became unindexable loses its old chunks.
                    self.store.delete(&ChunkFilter::file(repo_id, &file.path)).await?;
                }
            }
        }
        // Vectors are looked up before anything is removed: a file restored at another path,
        // or moved back, finds its content still stored.
        self.fill_vectors(&mut pending, &mut report).await?;
        for (from, to) in &plan.rename {
            let language = crate::chunk::Language::of_path(to).name();
            self.store.rename(repo_id, from, to, language).await?;
            report.files_renamed += 1;
        }
        for path in &plan.remove {
            self.store.delete(&ChunkFilter::file(repo_id, path)).await?;
            report.files_removed += 1;
        }

        for (path, points) in pending {
            // Old chunks of the file go first: ids are new, so nothing else would replace them.
            self.store.delete(&ChunkFilter::file(repo_id, &path)).await?;
            report.chunks_written += points.len() as u64;
            self.store.upsert(points).await?;
            report.files_indexed += 1;
        }
        Ok(report)
    }

    /// Gives every point its dense vector: stored ones by content key, the rest embedded.
    async fn fill_vectors(
        &self,
        files: &mut [(String, Vec<ChunkPoint>)],
        report: &mut IndexReport,
    ) -> Result<(), IndexError> {
        let mut keys: Vec<String> = files
            .iter()
            .flat_map(|(_, points)| points.iter().map(|point| point.payload.content_key.clone()))
            .collect();
        keys.sort();
        keys.dedup();
        let mut vectors: HashMap<String, Vec<f32>> = HashMap::new();
        for batch in keys.chunks(EMBED_BATCH) {
            vectors.extend(self.store.vectors_for(batch).await?);
        }
        let reused: usize = files
            .iter()
            .flat_map(|(_, points)| points.iter())
            .filter(|point| vectors.contains_key(&point.payload.content_key))
            .count();
        report.chunks_reused += reused as u64;

        // Distinct new texts, each embedded once even if it occurs many times.
        let mut missing: Vec<(String, String)> = Vec::new();
        let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for (_, points) in files.iter() {
            for point in points {
                let key = &point.payload.content_key;
                if !vectors.contains_key(key) && seen.insert(key) {
                    missing.push((key.clone(), point.payload.text.clone()));
                }
            }
        }
        for batch in missing.chunks(EMBED_BATCH) {
            let texts: Vec<String> = batch.iter().map(|(_, text)| text.clone()).collect();
            let embedded = self.embedder.embed(&texts).await?;
            for ((key, _), vector) in batch.iter().zip(embedded) {
                vectors.insert(key.clone(), vector);
            }
        }
        for (_, points) in files.iter_mut() {
            for point in points.iter_mut() {
                if let Some(vector) = vectors.get(&point.payload.content_key) {
                    point.dense = vector.clone();
                }
            }
        }
        report.chunks_embedded +=
            files.iter().flat_map(|(_, points)| points.iter()).count().saturating_sub(reused)
                as u64;
        Ok(())
    }
}

/// The key of a chunk's vector: the model and the exact text.
pub fn content_key(model: &EmbeddingModel, text: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(model.name.as_bytes());
    hasher.update([0]);
    hasher.update(model.dimensions.to_le_bytes());
    hasher.update([0]);
    hasher.update(text.as_bytes());
    hex::encode(hasher.finalize())
}

/// Regular files (not symlinks or submodules).
fn is_regular_file(mode: Option<u32>) -> bool {
    mode.is_some_and(|mode| mode & 0o170000 == 0o100000)
}

/// What to do, from the repository's trees and (when reconciling) what the store holds.
fn plan(
    path: &Path,
    from: Option<ObjectId>,
    to: ObjectId,
    indexed: Option<HashMap<String, String>>,
) -> Result<Plan, IndexError> {
    let repo = Repo::open(path, Limits::default())?;
    let new_tree = repo.commit_info(to)?.tree;
    let old_tree = match from {
        Some(from) => Some(repo.commit_info(from)?.tree),
        None => None,
    };
    let read = |blob: ObjectId| -> Result<Vec<u8>, IndexError> {
        let object = repo.gix().find_blob(blob).map_err(|err| {
            IndexError::Git(BrowseError::NotFound { what: "blob", name: format!("{blob}: {err}") })
        })?;
        Ok(object.data.clone())
    };
    let mut plan = Plan::default();
    let changes = repo.changed_files(old_tree, new_tree)?;
    match indexed {
        // Reconcile: every file of the tree against the store's (path, blob) pairs.
        Some(mut indexed) => {
            for change in changes {
                let path = platform_git::browse::display_path(change.path.as_ref());
                let Some(blob) = change.new_id.filter(|_| is_regular_file(change.new_mode)) else {
                    continue;
                };
                let stored = indexed.remove(&path);
                if stored.as_deref() != Some(blob.to_string().as_str()) {
                    plan.index.push(FileToIndex { path, blob, content: read(blob)? });
                }
            }
            plan.remove.extend(indexed.into_keys());
        }
        None => {
            for change in changes {
                let path = platform_git::browse::display_path(change.path.as_ref());
                let previous = change
                    .previous_path
                    .as_ref()
                    .map(|previous| platform_git::browse::display_path(previous.as_ref()));
                let new_file = change.new_id.filter(|_| is_regular_file(change.new_mode));
                match change.status {
                    ChangeStatus::Removed => plan.remove.push(path),
                    ChangeStatus::Renamed
                        if change.old_id == change.new_id && new_file.is_some() =>
                    {
                        plan.rename.push((previous.unwrap_or_default(), path));
                    }
                    _ => {
                        if let Some(previous) = previous {
                            plan.remove.push(previous);
                        }
                        match new_file {
                            Some(blob) => {
                                plan.index.push(FileToIndex { path, blob, content: read(blob)? })
                            }
                            // A file that became a symlink or submodule.
                            None => plan.remove.push(path),
                        }
                    }
                }
            }
        }
    }
    Ok(plan)
}
