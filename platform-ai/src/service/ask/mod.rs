//! Ask-the-code routes: a question about one or several repositories, answered by the chat
//! model from chunks the code search retrieves, streamed as Server-Sent Events or answered as
//! JSON, with citations of the retrieved chunks only.
//!
//! | method | path | answer |
//! |---|---|---|
//! | `POST` | `/api/repos/{owner}/{name}/ask` | the answer about one repository |
//! | `POST` | `/api/ask` | the answer about several (`repositories`) |
//! | `GET` | `/api/ask/conversations/{id}` | one of the caller's conversations, with its turns |
//! | `DELETE` | `/api/ask/conversations/{id}` | 204; the conversation is forgotten |
//! | `GET` | `/api/user/ai-usage` | the caller's usage today and their daily budget |
//!
//! A question needs a signed-in caller who can read every repository named (404 otherwise,
//! as for the repositories themselves); a token needs `repo:read`. Each user may ask
//! `APP_AI_ASKS_PER_MINUTE` questions a minute and spend `APP_AI_DAILY_TOKENS` tokens a day
//! (429 with `Retry-After`). A chat model that is down, slow or answers with an error gives 503
//! naming the chat model (its message passed on without the key or address); search keeps
//! working.
//!
//! A stream (`"stream": true`, or `Accept: text/event-stream`) sends `start` (the
//! conversation, the model and the sources given to it), `token` events (`{"text"}`) as the
//! model writes, and `done` (the whole [`AskAnswer`]); a failure after `start` ends it with an
//! `error` event (`{"error": {"code", "message"}}`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::SignedCookieJar;
use axum_extra::extract::cookie::Key;
use futures_util::StreamExt as _;
use platform_core::accounts::rate_limit::{self, Limit};
use platform_core::accounts::{Accounts, Caller, Scope};
use platform_core::api::{ApiError, ApiJson, ApiPath, ErrorBody};
use platform_core::config::AskConfig;
use platform_core::redis::Redis;
use platform_core::telemetry::Metrics;
use platform_git::api::{RepoPath, repository_for, viewer};
use platform_git::permissions::Access;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use url::Url;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::status;
use crate::ask::{self, Budget, Source};
use crate::chat::{ChatClient, ChatError, ChatEvent, Usage};
use crate::search::{SearchError, Searcher};
use crate::store::{ChunkFilter, Ranking};

mod metrics;
mod store;

use metrics::{AskMetrics, Outcome};

/// Chunks retrieved for one question, before the budget keeps what fits.
const RETRIEVED: usize = 16;

/// Repositories one question may name.
pub const MAX_REPOSITORIES: usize = 10;

/// What the ask routes need.
#[derive(Clone, Debug)]
pub struct AskApi {
    accounts: Accounts,
    redis: Redis,
    namespace: String,
    searcher: Option<Arc<Searcher>>,
    unavailable: String,
    chat: ChatClient,
    config: AskConfig,
    public_url: Url,
    metrics: AskMetrics,
}

impl axum::extract::FromRef<AskApi> for Key {
    fn from_ref(api: &AskApi) -> Self {
        Key::from_ref(&api.accounts)
    }
}

/// The parts an [`AskApi`] is made of.
#[derive(Debug)]
pub struct AskParts {
    /// Callers and the database.
    pub accounts: Accounts,
    /// Where the per-minute limits are counted.
    pub redis: Redis,
    /// The searcher retrieving chunks; `None` when code search is off, with the reason.
    pub searcher: Result<Arc<Searcher>, String>,
    /// The chat model.
    pub chat: ChatClient,
    /// Budgets and limits.
    pub config: AskConfig,
    /// The public URL citations link under.
    pub public_url: Url,
}

impl AskApi {
    /// The routes' state; its metrics are registered in `metrics`.
    pub fn new(parts: AskParts, metrics: &Metrics) -> Self {
        let (searcher, unavailable) = match parts.searcher {
            Ok(searcher) => (Some(searcher), String::new()),
            Err(reason) => (None, reason),
        };
        Self {
            accounts: parts.accounts,
            redis: parts.redis,
            namespace: "platform".to_owned(),
            searcher,
            unavailable,
            chat: parts.chat,
            config: parts.config,
            public_url: parts.public_url,
            metrics: AskMetrics::register(metrics),
        }
    }

    /// Counts the per-minute limit under keys starting with `namespace` (default `platform`),
    /// as [`Accounts::with_namespace`] does for its own.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }
}

/// A question about one repository.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AskRequest {
    /// The question.
    #[schema(min_length = 1, max_length = 4000)]
    pub question: String,
    /// A conversation to continue (its earlier turns are kept within the budget).
    pub conversation_id: Option<Uuid>,
    /// Stream the answer as Server-Sent Events (also chosen by `Accept: text/event-stream`).
    pub stream: Option<bool>,
}

/// A question about several repositories.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AskAcrossRequest {
    /// The question.
    #[schema(min_length = 1, max_length = 4000)]
    pub question: String,
    /// The repositories (`owner/name`), 1 to 10, each readable by the caller.
    #[schema(min_items = 1, max_items = 10)]
    pub repositories: Vec<String>,
    /// A conversation to continue; it must be about the same repositories.
    pub conversation_id: Option<Uuid>,
    /// Stream the answer as Server-Sent Events (also chosen by `Accept: text/event-stream`).
    pub stream: Option<bool>,
}

/// An answer.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AskAnswer {
    /// The conversation; pass it as `conversation_id` to ask a follow-up.
    pub conversation_id: Uuid,
    /// The chat model that answered.
    pub model: String,
    /// The answer, citing sources as `[n]`.
    pub answer: String,
    /// The sources the answer cites, in the order first cited: each one a chunk retrieved for
    /// this question.
    pub citations: Vec<Source>,
    /// Every source given to the model, numbered as the answer cites them.
    pub sources: Vec<Source>,
    /// Numbers the answer cites that name no source given; they were dropped.
    pub invented_citations: Vec<usize>,
    /// Earlier turns of the conversation left out of the prompt for its budget.
    pub turns_left_out: usize,
    /// Tokens spent (as the API counted them, else estimated).
    pub usage: Usage,
}

/// One Server-Sent Event of a streamed answer, as the OpenAPI document describes the stream.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AskEvent {
    /// `start` ([`AskStart`]), `token` (`{"text"}`), `done` ([`AskAnswer`]) or `error`
    /// (`{"error": {"code", "message"}}`).
    #[schema(pattern = "^(start|token|done|error)$")]
    pub event: String,
    /// The event's JSON.
    pub data: String,
}

/// The first event of a stream.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AskStart {
    /// The conversation.
    pub conversation_id: Uuid,
    /// The chat model answering.
    pub model: String,
    /// The sources given to the model.
    pub sources: Vec<Source>,
}

/// One turn of a stored conversation.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationTurn {
    /// The question.
    pub question: String,
    /// The answer.
    pub answer: String,
    /// What it cited.
    #[schema(value_type = Vec<Source>)]
    pub citations: serde_json::Value,
    /// Tokens spent.
    pub usage: Usage,
    /// When it was answered.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// A stored conversation.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationView {
    /// Its id.
    pub id: Uuid,
    /// The repositories it is about (`owner/name`).
    pub repositories: Vec<String>,
    /// When it is forgotten unless continued.
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// Its turns, oldest first.
    pub turns: Vec<ConversationTurn>,
}

/// The caller's usage today.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AiUsage {
    /// Questions answered today (UTC).
    pub requests: u32,
    /// Prompt tokens spent today.
    pub prompt_tokens: u64,
    /// Answer tokens spent today.
    pub completion_tokens: u64,
    /// The daily budget of prompt and answer tokens together.
    pub daily_tokens: u64,
    /// What is left of it.
    pub remaining_tokens: u64,
}

fn wants_stream(flag: Option<bool>, headers: &HeaderMap) -> bool {
    flag.unwrap_or_else(|| {
        headers
            .get(header::ACCEPT)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|accept| accept.contains("text/event-stream"))
    })
}

#[utoipa::path(
    post,
    path = "/api/repos/{owner}/{name}/ask",
    tag = "ask",
    params(RepoPath),
    request_body = AskRequest,
    responses(
        (status = 200, description = "The answer with its citations (JSON), or a stream of `start`, `token` and `done` events (`text/event-stream`)", content((AskAnswer = "application/json"), (AskEvent = "text/event-stream"))),
        (status = 400, description = "Malformed request body", body = ErrorBody),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "A missing CSRF token or repo:read scope", body = ErrorBody),
        (status = 404, description = "No such repository the caller can read, or no such conversation of theirs", body = ErrorBody),
        (status = 422, description = "An empty or too long question, or a conversation about other repositories", body = ErrorBody),
        (status = 429, description = "Too many questions this minute, or the daily token budget spent (`Retry-After`)", body = ErrorBody),
        (status = 503, description = "The chat model or code search is unavailable, or answered with an error (named)", body = ErrorBody)
    )
)]
pub(super) async fn ask_repository(
    State(api): State<AskApi>,
    ApiPath(path): ApiPath<RepoPath>,
    headers: HeaderMap,
    jar: SignedCookieJar,
    ApiJson(request): ApiJson<AskRequest>,
) -> Result<Response, ApiError> {
    let caller = api.accounts.authorize_write(&jar, &headers, Scope::RepoRead).await?;
    let question = api.check_question(&request.question)?;
    let mut conn = api.accounts.database().get().await.map_err(ApiError::internal)?;
    let (repo, _) = repository_for(&mut conn, &path, Some(viewer(&caller)), Access::Read).await?;
    drop(conn);
    let stream = wants_stream(request.stream, &headers);
    api.answer(&caller, vec![repo.id], question, request.conversation_id, stream).await
}

#[utoipa::path(
    post,
    path = "/api/ask",
    tag = "ask",
    request_body = AskAcrossRequest,
    responses(
        (status = 200, description = "The answer with its citations (JSON), or a stream of `start`, `token` and `done` events (`text/event-stream`)", content((AskAnswer = "application/json"), (AskEvent = "text/event-stream"))),
        (status = 400, description = "Malformed request body", body = ErrorBody),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "A missing CSRF token or repo:read scope", body = ErrorBody),
        (status = 404, description = "A repository the caller cannot read, or no such conversation of theirs", body = ErrorBody),
        (status = 422, description = "An empty or too long question, no or too many repositories, or a conversation about other repositories", body = ErrorBody),
        (status = 429, description = "Too many questions this minute, or the daily token budget spent (`Retry-After`)", body = ErrorBody),
        (status = 503, description = "The chat model or code search is unavailable, or answered with an error (named)", body = ErrorBody)
    )
)]
pub(super) async fn ask_across(
    State(api): State<AskApi>,
    headers: HeaderMap,
    jar: SignedCookieJar,
    ApiJson(request): ApiJson<AskAcrossRequest>,
) -> Result<Response, ApiError> {
    let caller = api.accounts.authorize_write(&jar, &headers, Scope::RepoRead).await?;
    let question = api.check_question(&request.question)?;
    if request.repositories.is_empty() || request.repositories.len() > MAX_REPOSITORIES {
        return Err(ApiError::invalid(
            "repositories",
            format!("name 1 to {MAX_REPOSITORIES} repositories as owner/name"),
        ));
    }
    let mut conn = api.accounts.database().get().await.map_err(ApiError::internal)?;
    let mut ids = Vec::with_capacity(request.repositories.len());
    for full in &request.repositories {
        let (owner, name) = full.split_once('/').ok_or_else(|| {
            ApiError::invalid("repositories", format!("{full:?} is not owner/name"))
        })?;
        let path = RepoPath { owner: owner.to_owned(), name: name.to_owned() };
        let (repo, _) =
            repository_for(&mut conn, &path, Some(viewer(&caller)), Access::Read).await?;
        ids.push(repo.id);
    }
    drop(conn);
    let stream = wants_stream(request.stream, &headers);
    api.answer(&caller, ids, question, request.conversation_id, stream).await
}

/// One step of an answer as it is produced.
enum Step {
    Token(String),
    Done(Box<AskAnswer>),
    Failed(ApiError),
}

/// What is settled before the model is asked.
struct Asked {
    user_id: i64,
    conversation_id: Uuid,
    /// The repositories of a conversation this question starts.
    new_conversation: Option<Vec<i64>>,
    question: String,
    prompt: ask::Prompt,
    started: tokio::time::Instant,
}

impl AskApi {
    fn check_question(&self, raw: &str) -> Result<String, ApiError> {
        let question = raw.trim();
        if question.is_empty() {
            return Err(ApiError::invalid("question", "the question is empty"));
        }
        let max = self.config.question_max_chars as usize;
        if question.chars().count() > max {
            return Err(ApiError::invalid(
                "question",
                format!("the question is longer than {max} characters"),
            ));
        }
        Ok(question.to_owned())
    }

    async fn check_limits(&self, user_id: i64) -> Result<(), ApiError> {
        let key = format!("{}:ratelimit:ask:{user_id}", self.namespace);
        let limit = Limit { max: self.config.asks_per_minute, window: Duration::from_secs(60) };
        if let Some(retry_after) = rate_limit::count_attempt(&self.redis, &[(key.as_str(), limit)])
            .await
            .map_err(ApiError::internal)?
        {
            self.metrics.finished(Outcome::RateLimited);
            return Err(ApiError::RateLimited { retry_after });
        }
        let mut conn = self.accounts.database().get().await.map_err(ApiError::internal)?;
        let used = store::usage_today(&mut conn, user_id).await.map_err(ApiError::internal)?;
        if used.tokens() >= self.config.daily_tokens {
            self.metrics.finished(Outcome::BudgetSpent);
            let now = chrono::Utc::now();
            let midnight = (now.date_naive() + chrono::Days::new(1))
                .and_hms_opt(0, 0, 0)
                .map(|midnight| midnight.and_utc())
                .unwrap_or(now);
            let seconds = u64::try_from((midnight - now).num_seconds()).unwrap_or(1).max(1);
            return Err(ApiError::RateLimited { retry_after: Duration::from_secs(seconds) });
        }
        Ok(())
    }

    async fn answer(
        &self,
        caller: &Caller,
        mut repository_ids: Vec<i64>,
        question: String,
        conversation_id: Option<Uuid>,
        stream: bool,
    ) -> Result<Response, ApiError> {
        let started = tokio::time::Instant::now();
        let user_id = caller.user.id;
        repository_ids.sort_unstable();
        repository_ids.dedup();
        self.check_limits(user_id).await?;
        let mut conn = self.accounts.database().get().await.map_err(ApiError::internal)?;
        let conversation = match conversation_id {
            Some(id) => {
                let found = store::find(&mut conn, id, user_id)
                    .await
                    .map_err(ApiError::internal)?
                    .ok_or(ApiError::NotFound { what: "conversation" })?;
                if found.repository_ids != repository_ids {
                    return Err(ApiError::invalid(
                        "conversation_id",
                        "that conversation is about other repositories",
                    ));
                }
                Some(found)
            }
            None => None,
        };
        drop(conn);
        let Some(searcher) = &self.searcher else {
            self.metrics.finished(Outcome::Unavailable);
            return Err(ApiError::Unavailable {
                message: format!("ask needs code search: {}", self.unavailable),
            });
        };
        let history: Vec<ask::Exchange> = conversation
            .iter()
            .flat_map(|found| found.turns.iter().map(store::Turn::exchange))
            .collect();
        // A follow-up ("and where is it called?") is searched with the question before it.
        let query = match history.last() {
            Some(last) => format!("{}\n{question}", last.question),
            None => question.clone(),
        };
        let filter = ChunkFilter {
            repo_ids: Some(repository_ids.clone()),
            paths: None,
            language: None,
            under: None,
        };
        let hits =
            searcher.search(&query, Ranking::Hybrid, filter, RETRIEVED).await.map_err(|error| {
                self.metrics.finished(Outcome::Unavailable);
                search_unavailable(error)
            })?;
        let sources = self.sources(hits).await?;
        let budget = Budget {
            context_tokens: self.config.context_tokens as usize,
            answer_tokens: self.config.answer_tokens as usize,
        };
        let prompt = ask::build(&question, &history, sources, budget)
            .map_err(|error| ApiError::invalid("question", error.to_string()))?;
        let first_within = self.config.first_token_timeout.min(self.config.timeout);
        let answer = match self.chat.stream(&prompt.messages, first_within).await {
            Ok(answer) => answer,
            Err(error) => {
                self.metrics.finished(Outcome::for_chat(&error));
                tracing::warn!(error = %error, "ask: the chat model failed");
                return Err(chat_unavailable(&error));
            }
        };
        // A new conversation is stored with its first turn, off the way to the first token.
        let (conversation_id, new_conversation) = match &conversation {
            Some(found) => (found.id, None),
            None => (Uuid::new_v4(), Some(repository_ids)),
        };
        let asked = Asked { user_id, conversation_id, new_conversation, question, prompt, started };
        let start = AskStart {
            conversation_id,
            model: self.chat.model().to_owned(),
            sources: asked.prompt.sources.clone(),
        };
        let (steps, mut received) = mpsc::channel::<Step>(64);
        // The answer is driven apart from the request, so that what it cost is recorded
        // even when the client goes away; it stops early then.
        tokio::spawn(self.clone().drive(asked, answer, steps));
        if !stream {
            while let Some(step) = received.recv().await {
                match step {
                    Step::Token(_) => {}
                    Step::Done(answer) => return Ok(axum::Json(*answer).into_response()),
                    Step::Failed(error) => return Err(error),
                }
            }
            return Err(ApiError::Unavailable {
                message: "the answer stopped before it was complete".to_owned(),
            });
        }
        let first =
            Event::default().event("start").json_data(&start).map_err(ApiError::internal)?;
        let events = futures_util::stream::once(async move { Ok::<_, Infallible>(first) }).chain(
            futures_util::stream::unfold(received, |mut received| async move {
                let step = received.recv().await?;
                let event = match step {
                    Step::Token(text) => Event::default()
                        .event("token")
                        .json_data(serde_json::json!({ "text": text })),
                    Step::Done(answer) => Event::default().event("done").json_data(&*answer),
                    Step::Failed(error) => Event::default().event("error").json_data(
                        serde_json::json!({"error": {"code": error.code(), "message": error.to_string()}}),
                    ),
                };
                let event = event.unwrap_or_else(|_| Event::default().event("error"));
                Some((Ok::<_, Infallible>(event), received))
            }),
        );
        let mut response = Sse::new(events).keep_alive(KeepAlive::default()).into_response();
        // Proxies (nginx's Ingress) would otherwise hold the tokens back.
        response.headers_mut().insert("x-accel-buffering", header::HeaderValue::from_static("no"));
        Ok(response)
    }

    /// Reads the model's answer to its end (or the deadline), passing each piece on, then
    /// stores the turn and the usage.
    async fn drive(
        self,
        asked: Asked,
        mut answer: crate::chat::ChatStream,
        steps: mpsc::Sender<Step>,
    ) {
        let deadline = asked.started + self.config.timeout;
        let mut text = String::new();
        let mut reported = None;
        let mut first_token = None;
        let mut failure = None;
        loop {
            let next = match tokio::time::timeout_at(deadline, answer.next()).await {
                Ok(next) => next,
                Err(_) => {
                    failure = Some(ChatError::TimedOut { seconds: self.config.timeout.as_secs() });
                    break;
                }
            };
            match next {
                None => break,
                Some(Ok(ChatEvent::Text(piece))) => {
                    first_token.get_or_insert_with(|| asked.started.elapsed());
                    text.push_str(&piece);
                    if steps.send(Step::Token(piece)).await.is_err() {
                        // The client went away: stop asking the model for more.
                        break;
                    }
                }
                Some(Ok(ChatEvent::Usage(usage))) => reported = Some(usage),
                Some(Err(error)) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        drop(answer);
        let usage = reported.unwrap_or(Usage {
            prompt_tokens: u32::try_from(asked.prompt.estimated_tokens).unwrap_or(u32::MAX),
            completion_tokens: u32::try_from(ask::estimate_tokens(&text)).unwrap_or(u32::MAX),
        });
        self.metrics.spent(usage, first_token, asked.started.elapsed());
        let cited = ask::cite(&text, &asked.prompt.sources);
        let outcome = self.record(&asked, &text, &cited.sources, usage).await;
        if let Some(error) = failure {
            self.metrics.finished(Outcome::for_chat(&error));
            tracing::warn!(error = %error, "ask: the answer stopped");
            let _ = steps.send(Step::Failed(chat_unavailable(&error))).await;
            return;
        }
        if let Err(error) = outcome {
            self.metrics.finished(Outcome::Failed);
            let _ = steps.send(Step::Failed(error)).await;
            return;
        }
        self.metrics.finished(Outcome::Answered);
        let done = AskAnswer {
            conversation_id: asked.conversation_id,
            model: self.chat.model().to_owned(),
            answer: text,
            citations: cited.sources,
            sources: asked.prompt.sources.clone(),
            invented_citations: cited.invented,
            turns_left_out: asked.prompt.turns_left_out,
            usage,
        };
        let _ = steps.send(Step::Done(Box::new(done))).await;
    }

    async fn record(
        &self,
        asked: &Asked,
        answer: &str,
        citations: &[Source],
        usage: Usage,
    ) -> Result<(), ApiError> {
        let mut conn = self.accounts.database().get().await.map_err(ApiError::internal)?;
        store::record_usage(&mut conn, asked.user_id, usage).await.map_err(ApiError::internal)?;
        if let Some(repository_ids) = &asked.new_conversation {
            let ttl = self.config.conversation_ttl;
            store::create(&mut conn, asked.conversation_id, asked.user_id, repository_ids, ttl)
                .await
                .map_err(ApiError::internal)?;
        }
        let turn = store::Answered {
            question: &asked.question,
            answer,
            citations: serde_json::to_value(citations).map_err(ApiError::internal)?,
            usage,
        };
        store::append(&mut conn, asked.conversation_id, turn, self.config.conversation_ttl)
            .await
            .map_err(ApiError::internal)
    }

    /// The hits as numbered sources, with their repositories' names and indexed commits as
    /// they are now (a repository deleted a moment ago is left out).
    async fn sources(&self, hits: Vec<crate::store::Hit>) -> Result<Vec<Source>, ApiError> {
        let mut ids: Vec<i64> = hits.iter().map(|hit| hit.payload.repo_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut conn = self.accounts.database().get().await.map_err(ApiError::internal)?;
        let names = status::names(&mut conn, &ids).await.map_err(ApiError::internal)?;
        Ok(hits
            .into_iter()
            .filter_map(|hit| {
                let named = names.get(&hit.payload.repo_id)?;
                let payload = hit.payload;
                let url =
                    self.lines_url(named, &payload.path, payload.start_line, payload.end_line);
                Some(Source {
                    number: 0,
                    repository: format!("{}/{}", named.owner, named.name),
                    repository_id: payload.repo_id,
                    path: payload.path,
                    language: payload.language,
                    start_line: payload.start_line,
                    end_line: payload.end_line,
                    commit: named.indexed_commit.clone(),
                    url,
                    text: payload.text,
                })
            })
            .collect())
    }

    fn lines_url(&self, named: &status::Named, path: &str, start: u32, end: u32) -> String {
        let mut url = self.public_url.clone();
        let commit = named.indexed_commit.as_deref().unwrap_or("HEAD");
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend([
                named.owner.as_str(),
                named.name.as_str(),
                "blob",
                commit,
            ]);
            segments.extend(path.split('/'));
        }
        url.set_fragment(Some(&format!("L{start}-L{end}")));
        url.to_string()
    }
}

fn search_unavailable(error: SearchError) -> ApiError {
    tracing::warn!(error = %error, "ask: retrieval failed");
    let what = match error {
        SearchError::EmptyQuery => {
            return ApiError::invalid("question", "the question has no searchable term");
        }
        SearchError::Embed(_) => "the embedding model cannot be reached",
        SearchError::Store(_) => "the vector store cannot be reached",
    };
    ApiError::Unavailable { message: format!("ask is unavailable: {what}") }
}

fn chat_unavailable(error: &ChatError) -> ApiError {
    ApiError::Unavailable {
        message: format!("ask is unavailable: {error}; code search still works"),
    }
}

#[utoipa::path(
    get,
    path = "/api/ask/conversations/{id}",
    tag = "ask",
    params(("id" = Uuid, Path, description = "The conversation")),
    responses(
        (status = 200, description = "The conversation, with its turns", body = ConversationView),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 404, description = "No such conversation of the caller's (or it expired)", body = ErrorBody)
    )
)]
pub(super) async fn get_conversation(
    State(api): State<AskApi>,
    ApiPath(id): ApiPath<Uuid>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<axum::Json<ConversationView>, ApiError> {
    let caller = api.accounts.authorize_read(&jar, &headers, Scope::RepoRead).await?;
    let mut conn = api.accounts.database().get().await.map_err(ApiError::internal)?;
    let found = store::find(&mut conn, id, caller.user.id)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::NotFound { what: "conversation" })?;
    let names =
        status::names(&mut conn, &found.repository_ids).await.map_err(ApiError::internal)?;
    Ok(axum::Json(ConversationView {
        id: found.id,
        repositories: names
            .values()
            .map(|named| format!("{}/{}", named.owner, named.name))
            .collect(),
        expires_at: found.expires_at,
        turns: found
            .turns
            .into_iter()
            .map(|turn| ConversationTurn {
                usage: Usage {
                    prompt_tokens: u32::try_from(turn.prompt_tokens).unwrap_or(0),
                    completion_tokens: u32::try_from(turn.completion_tokens).unwrap_or(0),
                },
                question: turn.question,
                answer: turn.answer,
                citations: turn.citations,
                created_at: turn.created_at,
            })
            .collect(),
    }))
}

#[utoipa::path(
    delete,
    path = "/api/ask/conversations/{id}",
    tag = "ask",
    params(("id" = Uuid, Path, description = "The conversation")),
    responses(
        (status = 204, description = "The conversation is forgotten"),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "A missing CSRF token or repo:read scope", body = ErrorBody),
        (status = 404, description = "No such conversation of the caller's", body = ErrorBody)
    )
)]
pub(super) async fn delete_conversation(
    State(api): State<AskApi>,
    ApiPath(id): ApiPath<Uuid>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<StatusCode, ApiError> {
    let caller = api.accounts.authorize_write(&jar, &headers, Scope::RepoRead).await?;
    let mut conn = api.accounts.database().get().await.map_err(ApiError::internal)?;
    if store::delete(&mut conn, id, caller.user.id).await.map_err(ApiError::internal)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound { what: "conversation" })
    }
}

#[utoipa::path(
    get,
    path = "/api/user/ai-usage",
    tag = "ask",
    responses(
        (status = 200, description = "The caller's usage of the chat model today (UTC) and their daily budget", body = AiUsage),
        (status = 401, description = "No valid session or token", body = ErrorBody)
    )
)]
pub(super) async fn get_usage(
    State(api): State<AskApi>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<axum::Json<AiUsage>, ApiError> {
    let caller = api.accounts.authorize_read(&jar, &headers, Scope::RepoRead).await?;
    let mut conn = api.accounts.database().get().await.map_err(ApiError::internal)?;
    let used = store::usage_today(&mut conn, caller.user.id).await.map_err(ApiError::internal)?;
    Ok(axum::Json(AiUsage {
        requests: u32::try_from(used.requests).unwrap_or(0),
        prompt_tokens: u64::try_from(used.prompt_tokens).unwrap_or(0),
        completion_tokens: u64::try_from(used.completion_tokens).unwrap_or(0),
        daily_tokens: api.config.daily_tokens,
        remaining_tokens: api.config.daily_tokens.saturating_sub(used.tokens()),
    }))
}

/// The ask routes, documented, for [`platform_core::api::documented`].
pub fn api(state: AskApi) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(ask_repository))
        .routes(routes!(ask_across))
        .routes(routes!(get_conversation, delete_conversation))
        .routes(routes!(get_usage))
        .with_state(state)
}
