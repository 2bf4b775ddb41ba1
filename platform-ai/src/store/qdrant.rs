//! A Qdrant server over gRPC (`qdrant-client`), shared by every replica.

use std::collections::HashMap;

use async_trait::async_trait;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder,
    DeletePointsBuilder, Distance, FieldType, Filter, Fusion, GetPointsBuilder, Modifier,
    NamedVectors, PointStruct, PrefetchQueryBuilder, Query, QueryPointsBuilder,
    ScrollPointsBuilder, SetPayloadPointsBuilder, SparseVectorParamsBuilder,
    SparseVectorsConfigBuilder, UpsertPointsBuilder, Vector, VectorInput, VectorParamsBuilder,
    VectorsConfigBuilder, point_id, vectors_output,
};
use qdrant_client::{Payload, Qdrant};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use url::Url;

use super::edge::{DENSE, SPARSE, content_id, directories, stored_payload};
use super::{
    ChunkFilter, ChunkPayload, ChunkPoint, Hit, Ranking, StoreError, StoreQuery, VectorStore,
    collection_name,
};
use crate::embed::EmbeddingModel;

/// Chunks in a collection of a Qdrant server named after the model ([`collection_name`] with
/// the prefix given), created with its payload indexes on first use. Writes wait until the
/// server has applied them, so a search right after sees them.
#[derive(Clone)]
pub struct QdrantStore {
    client: std::sync::Arc<Qdrant>,
    collection: String,
    /// Every vector ever stored, by content key (`<collection>_vectors`): outlives the chunks.
    vectors: String,
    location: String,
    model: EmbeddingModel,
    /// Set once both collections are known to exist.
    collections_ready: std::sync::Arc<tokio::sync::OnceCell<()>>,
}

impl std::fmt::Debug for QdrantStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QdrantStore")
            .field("server", &self.location)
            .field("collection", &self.collection)
            .field("model", &self.model)
            .finish()
    }
}

impl QdrantStore {
    /// A store on the server at `url` (gRPC, usually port 6334) in the collection
    /// `<prefix>_<model>_<dimensions>`. Nothing is sent yet: the collections are made sure of
    /// on first use, and again after a failure, so a server that is down when a service starts
    /// is used as soon as it is up.
    pub fn new(
        url: &Url,
        api_key: Option<&SecretString>,
        prefix: &str,
        model: &EmbeddingModel,
    ) -> Result<Self, StoreError> {
        // The URL without credentials, for messages.
        let location = format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or(6334)
        );
        let mut builder = Qdrant::from_url(url.as_str()).skip_compatibility_check();
        if let Some(key) = api_key {
            builder = builder.api_key(key.expose_secret().to_owned());
        }
        let client = builder.build().map_err(|err| StoreError::Open {
            location: location.clone(),
            reason: err.to_string(),
        })?;
        let collection = collection_name(prefix, model);
        Ok(Self {
            client: std::sync::Arc::new(client),
            vectors: format!("{collection}_vectors"),
            collection,
            location,
            model: model.clone(),
            collections_ready: std::sync::Arc::new(tokio::sync::OnceCell::new()),
        })
    }

    /// [`QdrantStore::new`], then makes sure the collections exist: fails when the server
    /// cannot be reached.
    pub async fn connect(
        url: &Url,
        api_key: Option<&SecretString>,
        prefix: &str,
        model: &EmbeddingModel,
    ) -> Result<Self, StoreError> {
        let store = Self::new(url, api_key, prefix, model)?;
        store.ready().await?;
        Ok(store)
    }

    /// Makes sure both collections exist (creating them if need be), once per store while it
    /// succeeds; every operation does this first.
    pub async fn ready(&self) -> Result<(), StoreError> {
        self.collections_ready.get_or_try_init(|| self.create_collections()).await.map(|_| ())
    }

    async fn create_collections(&self) -> Result<(), StoreError> {
        let open_error =
            |reason: String| StoreError::Open { location: self.location.clone(), reason };
        let (client, collection, model) = (&self.client, &self.collection, &self.model);
        let exists = client
            .collection_exists(collection)
            .await
            .map_err(|err| open_error(err.to_string()))?;
        if !exists {
            let mut vectors = VectorsConfigBuilder::default();
            vectors.add_named_vector_params(
                DENSE,
                VectorParamsBuilder::new(model.dimensions as u64, Distance::Cosine),
            );
            let mut sparse = SparseVectorsConfigBuilder::default();
            sparse.add_named_vector_params(
                SPARSE,
                SparseVectorParamsBuilder::default().modifier(Modifier::Idf as i32),
            );
            let created = client
                .create_collection(
                    CreateCollectionBuilder::new(collection)
                        .vectors_config(vectors)
                        .sparse_vectors_config(sparse),
                )
                .await;
            // Another replica may have created it meanwhile.
            if let Err(err) = created
                && !client.collection_exists(collection).await.unwrap_or(false)
            {
                return Err(open_error(err.to_string()));
            }
            for (field, kind) in [
                ("repo_id", FieldType::Integer),
                ("path", FieldType::Keyword),
                ("dirs", FieldType::Keyword),
                ("language", FieldType::Keyword),
                ("content_key", FieldType::Keyword),
            ] {
                client
                    .create_field_index(
                        CreateFieldIndexCollectionBuilder::new(collection, field, kind).wait(true),
                    )
                    .await
                    .map_err(|err| open_error(err.to_string()))?;
            }
        }
        let vectors = &self.vectors;
        let exists =
            client.collection_exists(vectors).await.map_err(|err| open_error(err.to_string()))?;
        if !exists {
            let mut config = VectorsConfigBuilder::default();
            config.add_named_vector_params(
                DENSE,
                VectorParamsBuilder::new(model.dimensions as u64, Distance::Cosine),
            );
            let created = client
                .create_collection(CreateCollectionBuilder::new(vectors).vectors_config(config))
                .await;
            if let Err(err) = created
                && !client.collection_exists(vectors).await.unwrap_or(false)
            {
                return Err(open_error(err.to_string()));
            }
        }
        Ok(())
    }

    /// The collection's name.
    pub fn collection(&self) -> &str {
        &self.collection
    }

    /// Deletes the collection and everything in it (after a change of model has been rebuilt
    /// elsewhere, or when a test is done).
    pub async fn drop_collection(&self) -> Result<(), StoreError> {
        for collection in [&self.collection, &self.vectors] {
            self.client
                .delete_collection(collection)
                .await
                .map_err(|err| self.unavailable("drop", err))?;
        }
        Ok(())
    }

    fn unavailable(&self, operation: &'static str, err: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable {
            location: self.location.clone(),
            operation,
            reason: err.to_string(),
        }
    }
}

fn to_filter(filter: &ChunkFilter) -> Option<Filter> {
    let mut must = Vec::new();
    if let Some(repos) = &filter.repo_ids {
        must.push(Condition::matches("repo_id", repos.clone()));
    }
    if let Some(paths) = &filter.paths {
        must.push(Condition::matches("path", paths.clone()));
    }
    if let Some(language) = &filter.language {
        must.push(Condition::matches("language", language.clone()));
    }
    if let Some(under) = &filter.under {
        let under = under.trim_matches('/').to_owned();
        must.push(
            Filter::should([
                Condition::matches("dirs", under.clone()),
                Condition::matches("path", under),
            ])
            .into(),
        );
    }
    (!must.is_empty()).then(|| Filter::must(must))
}

fn payload_of(payload: HashMap<String, qdrant_client::qdrant::Value>) -> Option<ChunkPayload> {
    let map: serde_json::Map<String, Value> =
        payload.into_iter().map(|(key, value)| (key, value.into_json())).collect();
    serde_json::from_value(Value::Object(map)).ok()
}

fn point_uuid(id: Option<qdrant_client::qdrant::PointId>) -> Option<uuid::Uuid> {
    match id?.point_id_options? {
        point_id::PointIdOptions::Uuid(text) => text.parse().ok(),
        point_id::PointIdOptions::Num(number) => Some(uuid::Uuid::from_u64_pair(0, number)),
    }
}

#[async_trait]
impl VectorStore for QdrantStore {
    fn model(&self) -> &EmbeddingModel {
        &self.model
    }

    async fn upsert(&self, points: Vec<ChunkPoint>) -> Result<(), StoreError> {
        if points.is_empty() {
            return Ok(());
        }
        self.ready().await?;
        let mut structs = Vec::with_capacity(points.len());
        let mut remembered: HashMap<uuid::Uuid, PointStruct> = HashMap::new();
        for point in points {
            if point.dense.len() != self.model.dimensions {
                return Err(StoreError::Dimensions {
                    expected: self.model.dimensions,
                    actual: point.dense.len(),
                });
            }
            let key_id = content_id(&point.payload.content_key);
            if let std::collections::hash_map::Entry::Vacant(entry) = remembered.entry(key_id) {
                let payload = Payload::try_from(json!({"content_key": point.payload.content_key}))
                    .map_err(|err| self.unavailable("upsert", err))?;
                let vector = NamedVectors::default()
                    .add_vector(DENSE, Vector::new_dense(point.dense.clone()));
                entry.insert(PointStruct::new(key_id.to_string(), vector, payload));
            }
            let vectors = NamedVectors::default()
                .add_vector(DENSE, Vector::new_dense(point.dense))
                .add_vector(SPARSE, Vector::new_sparse(point.sparse.indices, point.sparse.values));
            let payload = Payload::from(stored_payload(&point.payload));
            structs.push(PointStruct::new(point.id.to_string(), vectors, payload));
        }
        let remembered: Vec<PointStruct> = remembered.into_values().collect();
        self.client
            .upsert_points(UpsertPointsBuilder::new(&self.vectors, remembered).wait(true))
            .await
            .map_err(|err| self.unavailable("upsert", err))?;
        self.client
            .upsert_points(UpsertPointsBuilder::new(&self.collection, structs).wait(true))
            .await
            .map_err(|err| self.unavailable("upsert", err))?;
        Ok(())
    }

    async fn delete(&self, filter: &ChunkFilter) -> Result<(), StoreError> {
        if filter.matches_nothing() {
            return Ok(());
        }
        self.ready().await?;
        let filter = to_filter(filter).unwrap_or_default();
        self.client
            .delete_points(DeletePointsBuilder::new(&self.collection).points(filter).wait(true))
            .await
            .map_err(|err| self.unavailable("delete", err))?;
        Ok(())
    }

    async fn rename(
        &self,
        repo_id: i64,
        from: &str,
        to: &str,
        language: &str,
    ) -> Result<(), StoreError> {
        let filter = to_filter(&ChunkFilter::file(repo_id, from)).unwrap_or_default();
        self.ready().await?;
        let payload = Payload::try_from(json!({
            "path": to,
            "dirs": directories(to),
            "language": language,
        }))
        .map_err(|err| self.unavailable("rename", err))?;
        self.client
            .set_payload(
                SetPayloadPointsBuilder::new(&self.collection, payload)
                    .points_selector(filter)
                    .wait(true),
            )
            .await
            .map_err(|err| self.unavailable("rename", err))?;
        Ok(())
    }

    async fn search(&self, query: &StoreQuery) -> Result<Vec<Hit>, StoreError> {
        if query.filter.matches_nothing() || query.limit == 0 {
            return Ok(Vec::new());
        }
        self.ready().await?;
        let filter = to_filter(&query.filter);
        let candidates = query.candidates.max(query.limit) as u64;
        let dense = || {
            query
                .dense
                .as_ref()
                .map(|dense| VectorInput::new_dense(dense.clone()))
                .ok_or_else(|| super::missing_vector("dense"))
        };
        let sparse = || {
            query
                .sparse
                .as_ref()
                .map(|sparse| {
                    VectorInput::new_sparse(sparse.indices.clone(), sparse.values.clone())
                })
                .ok_or_else(|| super::missing_vector("sparse"))
        };
        let mut request =
            QueryPointsBuilder::new(&self.collection).limit(query.limit as u64).with_payload(true);
        if let Some(filter) = &filter {
            request = request.filter(filter.clone());
        }
        request = match query.ranking {
            Ranking::Dense => request.query(Query::new_nearest(dense()?)).using(DENSE),
            Ranking::Lexical => request.query(Query::new_nearest(sparse()?)).using(SPARSE),
            Ranking::Hybrid => {
                let prefetch = |input: VectorInput, using: &str| {
                    let mut prefetch = PrefetchQueryBuilder::default()
                        .query(Query::new_nearest(input))
                        .using(using)
                        .limit(candidates);
                    if let Some(filter) = &filter {
                        prefetch = prefetch.filter(filter.clone());
                    }
                    prefetch
                };
                request
                    .add_prefetch(prefetch(dense()?, DENSE))
                    .add_prefetch(prefetch(sparse()?, SPARSE))
                    .query(Query::new_fusion(Fusion::Rrf))
            }
        };
        let response =
            self.client.query(request).await.map_err(|err| self.unavailable("search", err))?;
        Ok(response
            .result
            .into_iter()
            .filter_map(|point| {
                Some(Hit {
                    id: point_uuid(point.id)?,
                    score: point.score,
                    payload: payload_of(point.payload)?,
                })
            })
            .collect())
    }

    async fn count(&self, filter: &ChunkFilter) -> Result<u64, StoreError> {
        if filter.matches_nothing() {
            return Ok(0);
        }
        self.ready().await?;
        let mut request = CountPointsBuilder::new(&self.collection).exact(true);
        if let Some(filter) = to_filter(filter) {
            request = request.filter(filter);
        }
        let response =
            self.client.count(request).await.map_err(|err| self.unavailable("count", err))?;
        Ok(response.result.map_or(0, |result| result.count))
    }

    async fn indexed_files(&self, repo_id: i64) -> Result<HashMap<String, String>, StoreError> {
        self.ready().await?;
        let mut files = HashMap::new();
        let filter = to_filter(&ChunkFilter::repo(repo_id)).unwrap_or_default();
        let mut offset = None;
        loop {
            let mut request = ScrollPointsBuilder::new(&self.collection)
                .filter(filter.clone())
                .limit(1024)
                .with_payload(true)
                .with_vectors(false);
            if let Some(offset) = offset.take() {
                request = request.offset(offset);
            }
            let response =
                self.client.scroll(request).await.map_err(|err| self.unavailable("list", err))?;
            for point in response.result {
                let text =
                    |key: &str| point.payload.get(key).and_then(|value| value.as_str().cloned());
                if let (Some(path), Some(blob)) = (text("path"), text("blob")) {
                    files.insert(path, blob);
                }
            }
            match response.next_page_offset {
                Some(next) => offset = Some(next),
                None => return Ok(files),
            }
        }
    }

    async fn vectors_for(&self, keys: &[String]) -> Result<HashMap<String, Vec<f32>>, StoreError> {
        let mut found = HashMap::new();
        if keys.is_empty() {
            return Ok(found);
        }
        self.ready().await?;
        let ids: Vec<qdrant_client::qdrant::PointId> =
            keys.iter().map(|key| content_id(key).to_string().into()).collect();
        let response = self
            .client
            .get_points(
                GetPointsBuilder::new(&self.vectors, ids).with_payload(true).with_vectors(true),
            )
            .await
            .map_err(|err| self.unavailable("lookup", err))?;
        for point in response.result {
            let key = point.payload.get("content_key").and_then(|value| value.as_str().cloned());
            let vector = point
                .vectors
                .and_then(|vectors| vectors.vectors_options)
                .and_then(|options| match options {
                    vectors_output::VectorsOptions::Vectors(named) => {
                        named.vectors.get(DENSE).cloned()
                    }
                    vectors_output::VectorsOptions::Vector(_) => None,
                })
                .and_then(|vector| match vector.into_vector() {
                    qdrant_client::qdrant::vector_output::Vector::Dense(dense) => Some(dense.data),
                    _ => None,
                });
            if let (Some(key), Some(vector)) = (key, vector) {
                found.insert(key, vector);
            }
        }
        Ok(found)
    }
}
