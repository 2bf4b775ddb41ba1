//! Qdrant's engine in this process (`qdrant-edge`), persisted in a directory that one process
//! owns.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use qdrant_edge::{
    Condition, CountRequest, CreateIndex, Distance, EdgeConfigBuilder, EdgeShard,
    EdgeSparseVectorParamsBuilder, EdgeVectorParamsBuilder, FieldCondition, FieldIndexOperations,
    Filter, Fusion, JsonPath, Match, Modifier, NamedQuery, Payload, PayloadFieldSchema, PayloadOps,
    PayloadSchemaType, PointId, PointInsertOperations, PointOperations, Prefetch, QueryEnum,
    QueryRequest, ScoringQuery, ScrollRequest, SetPayloadOp, UpdateOperation, VectorInternal,
    VectorStructInternal, WithPayloadInterface, WithVector,
};
use serde_json::{Value, json};

use super::{
    ChunkFilter, ChunkPayload, ChunkPoint, Hit, Ranking, StoreError, StoreQuery, VectorStore,
    collection_name,
};
use crate::embed::EmbeddingModel;
use crate::lexical::SparseVector;

pub(super) const DENSE: &str = "dense";
pub(super) const SPARSE: &str = "sparse";
const LOCK_FILE: &str = "platform.lock";
const MODEL_FILE: &str = "model.json";

/// The embedded store: two `qdrant-edge` shards under `root/<collection>` (`chunks`, and
/// `vectors`: every vector by content key, kept when chunks go), where the collection's name
/// comes from the model ([`collection_name`]), so another model gets a fresh index.
///
/// The directory is locked (`flock`) for as long as the store is open: a second opening, by this
/// or another process, fails with [`StoreError::Locked`] instead of corrupting it. The engine's
/// calls block, so each runs on tokio's blocking pool; every write is flushed before it returns.
#[derive(Clone)]
pub struct EdgeStore {
    inner: Arc<Inner>,
}

struct Inner {
    shard: EdgeShard,
    /// Every vector ever stored, by content key: outlives the chunks, so content that comes
    /// back (a file restored, a revert) is not embedded again.
    vectors: EdgeShard,
    dir: PathBuf,
    model: EmbeddingModel,
    /// Writes and flushes one at a time (the engine's flush must not meet a write).
    writing: Mutex<()>,
    _lock: File,
}

impl std::fmt::Debug for EdgeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeStore")
            .field("dir", &self.inner.dir)
            .field("model", &self.inner.model)
            .finish()
    }
}

impl EdgeStore {
    /// Opens (or creates) the store for `model` under `root`. Blocks; call it off the async
    /// threads or at start-up.
    pub fn open(root: &Path, model: &EmbeddingModel) -> Result<Self, StoreError> {
        let dir = root.join(collection_name("code", model));
        let open_error =
            |reason: String| StoreError::Open { location: dir.display().to_string(), reason };
        std::fs::create_dir_all(&dir).map_err(|err| open_error(err.to_string()))?;
        let lock = lock(&dir)?;
        check_model(&dir, model)?;
        let chunks_dir = dir.join("chunks");
        let vectors_dir = dir.join("vectors");
        let dense_only = || {
            EdgeConfigBuilder::new()
                .vector(
                    DENSE,
                    EdgeVectorParamsBuilder::new(model.dimensions, Distance::Cosine).build(),
                )
                .build()
        };
        let vectors = if vectors_dir.join("edge_config.json").exists() {
            EdgeShard::load(&vectors_dir, None)
        } else {
            std::fs::create_dir_all(&vectors_dir).map_err(|err| open_error(err.to_string()))?;
            EdgeShard::new(&vectors_dir, dense_only())
        }
        .map_err(|err| open_error(err.to_string()))?;
        let shard = if chunks_dir.join("edge_config.json").exists() {
            EdgeShard::load(&chunks_dir, None).map_err(|err| open_error(err.to_string()))?
        } else {
            std::fs::create_dir_all(&chunks_dir).map_err(|err| open_error(err.to_string()))?;
            let config = EdgeConfigBuilder::new()
                .vector(
                    DENSE,
                    EdgeVectorParamsBuilder::new(model.dimensions, Distance::Cosine).build(),
                )
                .sparse_vector(
                    SPARSE,
                    EdgeSparseVectorParamsBuilder::new().modifier(Modifier::Idf).build(),
                )
                .build();
            let shard =
                EdgeShard::new(&chunks_dir, config).map_err(|err| open_error(err.to_string()))?;
            for (field, kind) in [
                ("repo_id", PayloadSchemaType::Integer),
                ("path", PayloadSchemaType::Keyword),
                ("dirs", PayloadSchemaType::Keyword),
                ("language", PayloadSchemaType::Keyword),
                ("content_key", PayloadSchemaType::Keyword),
            ] {
                shard
                    .update(UpdateOperation::FieldIndexOperation(
                        FieldIndexOperations::CreateIndex(CreateIndex {
                            field_name: json_path(field),
                            field_schema: Some(PayloadFieldSchema::FieldType(kind)),
                        }),
                    ))
                    .map_err(|err| open_error(err.to_string()))?;
            }
            shard.flush();
            let record = serde_json::to_vec(model).map_err(|err| open_error(err.to_string()))?;
            std::fs::write(dir.join(MODEL_FILE), record)
                .map_err(|err| open_error(err.to_string()))?;
            shard
        };
        Ok(Self {
            inner: Arc::new(Inner {
                shard,
                vectors,
                dir,
                model: model.clone(),
                writing: Mutex::new(()),
                _lock: lock,
            }),
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Compacts segments and builds the vector index after a bulk load (blocking).
    pub fn optimize(&self) -> Result<(), StoreError> {
        let _writing = self.inner.writing.lock().unwrap_or_else(PoisonError::into_inner);
        self.inner.shard.optimize().map_err(|err| self.inner.unavailable("optimize", err))?;
        self.inner.shard.flush();
        self.inner.vectors.optimize().map_err(|err| self.inner.unavailable("optimize", err))?;
        self.inner.vectors.flush();
        Ok(())
    }

    async fn run<T: Send + 'static>(
        &self,
        operation: &'static str,
        work: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .map_err(|err| self.inner.unavailable(operation, err))?
    }
}

impl Inner {
    fn unavailable(&self, operation: &'static str, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable {
            location: self.dir.display().to_string(),
            operation,
            reason: reason.to_string(),
        }
    }

    fn write(&self, operation: &'static str, update: UpdateOperation) -> Result<(), StoreError> {
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        self.shard.update(update).map_err(|err| self.unavailable(operation, err))?;
        self.shard.flush();
        Ok(())
    }

    fn remember(&self, update: UpdateOperation) -> Result<(), StoreError> {
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        self.vectors.update(update).map_err(|err| self.unavailable("upsert", err))?;
        self.vectors.flush();
        Ok(())
    }
}

/// Takes the directory's lock file, or says who has it.
fn lock(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file =
        File::options().create(true).truncate(false).write(true).open(&path).map_err(|err| {
            StoreError::Open { location: path.display().to_string(), reason: err.to_string() }
        })?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(StoreError::Locked { path: dir.to_path_buf() }),
        Err(err) => {
            Err(StoreError::Open { location: path.display().to_string(), reason: err.to_string() })
        }
    }
}

fn check_model(dir: &Path, model: &EmbeddingModel) -> Result<(), StoreError> {
    let path = dir.join(MODEL_FILE);
    let Ok(recorded) = std::fs::read(&path) else {
        return Ok(());
    };
    let found: EmbeddingModel = serde_json::from_slice(&recorded).map_err(|err| {
        StoreError::Open { location: path.display().to_string(), reason: err.to_string() }
    })?;
    if &found != model {
        return Err(StoreError::ModelMismatch {
            location: dir.display().to_string(),
            found,
            configured: model.clone(),
        });
    }
    Ok(())
}

/// The payload as stored: the chunk's fields and the directories above its file (for `under`).
pub(super) fn stored_payload(payload: &ChunkPayload) -> serde_json::Map<String, Value> {
    let mut map = match serde_json::to_value(payload) {
        Ok(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    map.insert("dirs".to_owned(), json!(directories(&payload.path)));
    map
}

/// `a/b/c.rs` → `a`, `a/b`.
pub(super) fn directories(path: &str) -> Vec<String> {
    path.match_indices('/').map(|(index, _)| path[..index].to_owned()).collect()
}

fn payload_of(map: serde_json::Map<String, Value>) -> Option<ChunkPayload> {
    serde_json::from_value(Value::Object(map)).ok()
}

/// The id of a content key's vector: the first 16 bytes of its SHA-256, the same in every store.
pub(super) fn content_id(key: &str) -> uuid::Uuid {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(key.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Uuid::from_bytes(bytes)
}

fn point_uuid(id: &PointId) -> uuid::Uuid {
    match id {
        PointId::Uuid(uuid) => *uuid,
        PointId::NumId(number) => uuid::Uuid::from_u64_pair(0, *number),
    }
}

/// A payload key of ours (constants, all valid paths).
fn json_path(key: &str) -> JsonPath {
    key.parse().expect("payload keys are plain names")
}

fn field(key: &str, value: Match) -> Condition {
    Condition::Field(FieldCondition::new_match(json_path(key), value))
}

fn keyword(key: &str, value: &str) -> Condition {
    field(key, Match::from(value.to_owned()))
}

fn to_filter(filter: &ChunkFilter) -> Option<Filter> {
    let mut must = Vec::new();
    if let Some(repos) = &filter.repo_ids {
        must.push(field("repo_id", Match::from(repos.clone())));
    }
    if let Some(paths) = &filter.paths {
        must.push(field("path", Match::from(paths.clone())));
    }
    if let Some(language) = &filter.language {
        must.push(keyword("language", language));
    }
    if let Some(under) = &filter.under {
        let under = under.trim_matches('/');
        must.push(Condition::Filter(Filter {
            should: Some(vec![keyword("dirs", under), keyword("path", under)]),
            ..Filter::default()
        }));
    }
    (!must.is_empty()).then(|| Filter { must: Some(must), ..Filter::default() })
}

fn dense_query(vector: &[f32]) -> ScoringQuery {
    ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery::new(
        VectorInternal::Dense(vector.to_vec()),
        DENSE,
    )))
}

fn sparse_query(vector: &SparseVector) -> Result<ScoringQuery, StoreError> {
    let sparse = qdrant_edge::SparseVector::new(vector.indices.clone(), vector.values.clone())
        .map_err(|err| StoreError::Unavailable {
            location: "query".to_owned(),
            operation: "search",
            reason: err.to_string(),
        })?;
    Ok(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery::new(
        VectorInternal::Sparse(sparse),
        SPARSE,
    ))))
}

#[async_trait]
impl VectorStore for EdgeStore {
    fn model(&self) -> &EmbeddingModel {
        &self.inner.model
    }

    async fn upsert(&self, points: Vec<ChunkPoint>) -> Result<(), StoreError> {
        if points.is_empty() {
            return Ok(());
        }
        let dimensions = self.inner.model.dimensions;
        let mut persisted = Vec::with_capacity(points.len());
        let mut remembered: HashMap<uuid::Uuid, qdrant_edge::PointStructPersisted> = HashMap::new();
        for point in points {
            if point.dense.len() != dimensions {
                return Err(StoreError::Dimensions {
                    expected: dimensions,
                    actual: point.dense.len(),
                });
            }
            let sparse = qdrant_edge::SparseVector::new(point.sparse.indices, point.sparse.values)
                .map_err(|err| self.inner.unavailable("upsert", err))?;
            let key_id = content_id(&point.payload.content_key);
            remembered.entry(key_id).or_insert_with(|| qdrant_edge::PointStructPersisted {
                id: PointId::Uuid(key_id),
                vector: VectorStructInternal::Named(HashMap::from([(
                    DENSE.to_owned(),
                    VectorInternal::Dense(point.dense.clone()),
                )]))
                .into(),
                payload: Some(Payload(
                    [("content_key".to_owned(), json!(point.payload.content_key))]
                        .into_iter()
                        .collect(),
                )),
            });
            let vectors = VectorStructInternal::Named(HashMap::from([
                (DENSE.to_owned(), VectorInternal::Dense(point.dense)),
                (SPARSE.to_owned(), VectorInternal::Sparse(sparse)),
            ]));
            persisted.push(qdrant_edge::PointStructPersisted {
                id: PointId::Uuid(point.id),
                vector: vectors.into(),
                payload: Some(Payload(stored_payload(&point.payload))),
            });
        }
        let remembered: Vec<_> = remembered.into_values().collect();
        self.run("upsert", move |inner| {
            inner.remember(UpdateOperation::PointOperation(PointOperations::UpsertPoints(
                PointInsertOperations::PointsList(remembered),
            )))?;
            inner.write(
                "upsert",
                UpdateOperation::PointOperation(PointOperations::UpsertPoints(
                    PointInsertOperations::PointsList(persisted),
                )),
            )
        })
        .await
    }

    async fn delete(&self, filter: &ChunkFilter) -> Result<(), StoreError> {
        if filter.matches_nothing() {
            return Ok(());
        }
        let filter = to_filter(filter).unwrap_or_default();
        self.run("delete", move |inner| {
            inner.write(
                "delete",
                UpdateOperation::PointOperation(PointOperations::DeletePointsByFilter(filter)),
            )
        })
        .await
    }

    async fn rename(
        &self,
        repo_id: i64,
        from: &str,
        to: &str,
        language: &str,
    ) -> Result<(), StoreError> {
        let filter = to_filter(&ChunkFilter::file(repo_id, from));
        let mut payload = serde_json::Map::new();
        payload.insert("path".to_owned(), json!(to));
        payload.insert("dirs".to_owned(), json!(directories(to)));
        payload.insert("language".to_owned(), json!(language));
        self.run("rename", move |inner| {
            inner.write(
                "rename",
                UpdateOperation::PayloadOperation(PayloadOps::SetPayload(SetPayloadOp {
                    payload: Payload(payload),
                    points: None,
                    filter,
                    key: None,
                })),
            )
        })
        .await
    }

    async fn search(&self, query: &StoreQuery) -> Result<Vec<Hit>, StoreError> {
        if query.filter.matches_nothing() || query.limit == 0 {
            return Ok(Vec::new());
        }
        let filter = to_filter(&query.filter);
        let candidates = query.candidates.max(query.limit);
        let (prefetches, scoring) = match query.ranking {
            Ranking::Dense => (
                Vec::new(),
                dense_query(query.dense.as_deref().ok_or_else(|| super::missing_vector("dense"))?),
            ),
            Ranking::Lexical => (
                Vec::new(),
                sparse_query(
                    query.sparse.as_ref().ok_or_else(|| super::missing_vector("sparse"))?,
                )?,
            ),
            Ranking::Hybrid => {
                let dense = dense_query(
                    query.dense.as_deref().ok_or_else(|| super::missing_vector("dense"))?,
                );
                let sparse = sparse_query(
                    query.sparse.as_ref().ok_or_else(|| super::missing_vector("sparse"))?,
                )?;
                let prefetch = |scoring| Prefetch {
                    prefetches: Vec::new(),
                    query: Some(scoring),
                    limit: candidates,
                    params: None,
                    filter: filter.clone(),
                    score_threshold: None,
                };
                (
                    vec![prefetch(dense), prefetch(sparse)],
                    ScoringQuery::Fusion(Fusion::Rrf { k: 60, weights: None }),
                )
            }
        };
        let request = QueryRequest {
            prefetches,
            query: Some(scoring),
            filter,
            score_threshold: None,
            limit: query.limit,
            offset: 0,
            params: None,
            with_vector: WithVector::Bool(false),
            with_payload: WithPayloadInterface::Bool(true),
        };
        let points = self
            .run("search", move |inner| {
                inner.shard.query(request).map_err(|err| inner.unavailable("search", err))
            })
            .await?;
        Ok(points
            .into_iter()
            .filter_map(|point| {
                let payload = payload_of(point.payload?.0)?;
                Some(Hit { id: point_uuid(&point.id), score: point.score, payload })
            })
            .collect())
    }

    async fn count(&self, filter: &ChunkFilter) -> Result<u64, StoreError> {
        if filter.matches_nothing() {
            return Ok(0);
        }
        let request = CountRequest { filter: to_filter(filter), exact: true };
        self.run("count", move |inner| {
            inner
                .shard
                .count(request)
                .map(|count| count as u64)
                .map_err(|err| inner.unavailable("count", err))
        })
        .await
    }

    async fn indexed_files(&self, repo_id: i64) -> Result<HashMap<String, String>, StoreError> {
        let filter = to_filter(&ChunkFilter::repo(repo_id));
        self.run("list", move |inner| {
            let mut files = HashMap::new();
            let mut offset = None;
            loop {
                let request = ScrollRequest {
                    offset,
                    limit: Some(1024),
                    filter: filter.clone(),
                    with_payload: Some(WithPayloadInterface::Fields(vec![
                        json_path("path"),
                        json_path("blob"),
                    ])),
                    with_vector: WithVector::Bool(false),
                    order_by: None,
                };
                let (records, next) =
                    inner.shard.scroll(request).map_err(|err| inner.unavailable("list", err))?;
                for record in records {
                    let Some(payload) = record.payload else { continue };
                    let text =
                        |key: &str| payload.0.get(key).and_then(Value::as_str).map(str::to_owned);
                    if let (Some(path), Some(blob)) = (text("path"), text("blob")) {
                        files.insert(path, blob);
                    }
                }
                match next {
                    Some(next) => offset = Some(next),
                    None => return Ok(files),
                }
            }
        })
        .await
    }

    async fn vectors_for(&self, keys: &[String]) -> Result<HashMap<String, Vec<f32>>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let ids: Vec<PointId> = keys.iter().map(|key| PointId::Uuid(content_id(key))).collect();
        self.run("lookup", move |inner| {
            let records = inner
                .vectors
                .retrieve(
                    &ids,
                    Some(WithPayloadInterface::Bool(true)),
                    Some(WithVector::Selector(vec![DENSE.to_owned()])),
                )
                .map_err(|err| inner.unavailable("lookup", err))?;
            let mut found = HashMap::new();
            for record in records {
                let key = record
                    .payload
                    .as_ref()
                    .and_then(|payload| payload.0.get("content_key"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let vector = match record.vector {
                    Some(VectorStructInternal::Named(mut named)) => named.remove(DENSE),
                    _ => None,
                };
                if let (Some(key), Some(VectorInternal::Dense(vector))) = (key, vector) {
                    found.insert(key, vector);
                }
            }
            Ok(found)
        })
        .await
    }
}
