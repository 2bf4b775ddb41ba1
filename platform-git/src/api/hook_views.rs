//! What the webhook routes take and answer (see `hooks.rs` for the routes).

use chrono::{DateTime, Utc};
use platform_core::api::ApiError;
use serde::{Deserialize, Serialize};

use crate::webhooks::deliveries::{Delivery, DeliveryDetail, DeliveryState};
use crate::webhooks::hooks::ContentType;

/// The owner, name and hook id in a hook route.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct HookPath {
    /// The owner's user name.
    pub owner: String,
    /// The repository's name.
    pub name: String,
    /// The hook's id.
    pub id: i64,
}

/// The owner, name, hook id and delivery id in a delivery route.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DeliveryPath {
    /// The owner's user name.
    pub owner: String,
    /// The repository's name.
    pub name: String,
    /// The hook's id.
    pub id: i64,
    /// The delivery's id (`X-GitHub-Delivery`).
    pub delivery_id: uuid::Uuid,
}

/// `insecure_ssl` as GitHub takes it: `"0"`/`"1"`, `0`/`1`, or a boolean.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum InsecureSsl {
    /// `"0"` or `"1"`.
    Text(String),
    /// `0` or `1`.
    Number(u8),
    /// `false` or `true`.
    Flag(bool),
}

impl InsecureSsl {
    pub(super) fn verify_tls(&self) -> Result<bool, ApiError> {
        match self {
            Self::Text(text) if text == "0" => Ok(true),
            Self::Text(text) if text == "1" => Ok(false),
            Self::Number(0) | Self::Flag(false) => Ok(true),
            Self::Number(1) | Self::Flag(true) => Ok(false),
            _ => {
                Err(ApiError::invalid("config.insecure_ssl", "insecure_ssl must be \"0\" or \"1\""))
            }
        }
    }
}

/// A hook's configuration, as written.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct HookConfigInput {
    /// The payload URL: `http` or `https`, no user or password in it.
    #[schema(max_length = 2048)]
    pub url: Option<String>,
    /// `json` (default) or `form`.
    pub content_type: Option<ContentType>,
    /// The HMAC key deliveries are signed with (never shown again); an empty string removes it.
    #[schema(max_length = 255)]
    pub secret: Option<String>,
    /// `"1"` turns certificate checks off for this hook (default `"0"`: on).
    pub insecure_ssl: Option<InsecureSsl>,
}

/// The body of `POST /api/repos/{owner}/{name}/hooks`.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateHook {
    /// Must be `web` when given, as on GitHub.
    pub name: Option<String>,
    /// Where and how to deliver.
    pub config: HookConfigInput,
    /// `push`, `create`, `delete`, `repository`, `ping`, or `*` for all (default `["push"]`).
    #[serde(default)]
    pub events: Vec<String>,
    /// Whether anything is sent (default true).
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

/// The body of `PATCH /api/repos/{owner}/{name}/hooks/{id}`: absent fields keep their value.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct UpdateHook {
    /// Configuration fields to change.
    pub config: Option<HookConfigInput>,
    /// The events, replacing the list.
    pub events: Option<Vec<String>>,
    /// Events to add to the list.
    pub add_events: Option<Vec<String>>,
    /// Events to take from the list.
    pub remove_events: Option<Vec<String>>,
    /// On or off. Switching a paused or switched-off hook on clears its failures.
    pub active: Option<bool>,
}

/// A hook's configuration, as shown: never the secret.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HookConfig {
    /// The payload URL.
    pub url: String,
    /// `json` or `form`.
    pub content_type: ContentType,
    /// `"0"` when certificates are checked, `"1"` when not.
    pub insecure_ssl: String,
    /// Whether deliveries are signed.
    pub has_secret: bool,
}

/// How the last attempt went, as GitHub shows it.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LastResponse {
    /// The status code, when an answer came.
    pub code: Option<i32>,
    /// `unused` before the first attempt, `active` after a success, `failed` after a failure.
    pub status: String,
    /// What happened.
    pub message: Option<String>,
}

/// A hook, as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HookView {
    /// Always `Repository`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its id.
    pub id: i64,
    /// Always `web`.
    pub name: String,
    /// Whether anything is sent.
    pub active: bool,
    /// What it listens to.
    pub events: Vec<String>,
    /// Where and how.
    pub config: HookConfig,
    /// While in the future, deliveries wait: the receiver kept failing.
    pub disabled_until: Option<DateTime<Utc>>,
    /// Why it was paused or switched off.
    pub disabled_reason: Option<String>,
    /// Failed attempts since the last success.
    pub failures: i32,
    /// How the last attempt went.
    pub last_response: LastResponse,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its settings last changed.
    pub updated_at: DateTime<Utc>,
    /// This hook in the API.
    pub url: String,
    /// Where to ask for a test push.
    pub test_url: String,
    /// Where to ask for a ping.
    pub ping_url: String,
    /// Its deliveries.
    pub deliveries_url: String,
}

/// One delivery, as listed.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryView {
    /// Its id, the `X-GitHub-Delivery` header.
    pub id: uuid::Uuid,
    /// The same id, under GitHub's name for it.
    pub guid: uuid::Uuid,
    /// `pending`, `delivering`, `delivered` or `failed`.
    pub state: DeliveryState,
    /// The event.
    pub event: String,
    /// The event's action.
    pub action: Option<String>,
    /// Attempts made.
    pub attempts: i32,
    /// Whether it was asked to be sent again.
    pub redelivery: bool,
    /// `OK` once delivered, else what the last attempt came to.
    pub status: String,
    /// The last answer's status code (0 when none came, as on GitHub).
    pub status_code: i32,
    /// Seconds the last attempt took.
    pub duration: Option<f64>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When the receiver accepted it.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When the next attempt is due, while pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The repository's id.
    pub repository_id: i64,
}

/// A request or response, as recorded.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Exchange {
    /// Headers, by name (repeated names joined with `, `).
    pub headers: serde_json::Map<String, serde_json::Value>,
    /// The body: the payload as sent, or the first 64 KiB of the answer as text.
    pub payload: Option<String>,
}

/// One attempt of a delivery.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptView {
    /// When it began.
    pub started_at: DateTime<Utc>,
    /// Seconds it took.
    pub duration: f64,
    /// Where it went.
    pub url: String,
    /// The status code, 0 when no answer came.
    pub status_code: i32,
    /// What failed, if anything.
    pub error: Option<String>,
    /// Whether the receiver accepted it.
    pub delivered: bool,
    /// What was sent (headers; the payload is the delivery's).
    pub request: Exchange,
    /// What came back.
    pub response: Exchange,
}

/// One delivery with its request, its last response, and every attempt.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryDetailView {
    /// The delivery.
    #[serde(flatten)]
    pub delivery: DeliveryView,
    /// The last request: its headers and the payload.
    pub request: Exchange,
    /// The last response.
    pub response: Exchange,
    /// Every attempt, oldest first.
    pub attempts_made: Vec<AttemptView>,
}

pub(super) fn delivery_view(delivery: Delivery, repository_id: i64) -> DeliveryView {
    let status = match (delivery.state, &delivery.error) {
        (DeliveryState::Delivered, _) => "OK".to_owned(),
        (_, Some(error)) => error.clone(),
        (DeliveryState::Pending, None) => "pending".to_owned(),
        (DeliveryState::Delivering, None) => "delivering".to_owned(),
        (DeliveryState::Failed, None) => "failed".to_owned(),
    };
    DeliveryView {
        id: delivery.id,
        guid: delivery.id,
        state: delivery.state,
        event: delivery.event,
        action: delivery.action,
        attempts: delivery.attempts,
        redelivery: delivery.redelivery,
        status,
        status_code: delivery.status_code.unwrap_or(0),
        duration: delivery.duration_ms.map(|ms| f64::from(ms) / 1000.0),
        created_at: delivery.created_at,
        delivered_at: delivery.delivered_at,
        next_attempt_at: (delivery.state == DeliveryState::Pending)
            .then_some(delivery.next_attempt_at),
        repository_id,
    }
}

fn header_map(headers: &[(String, String)]) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    for (name, value) in headers {
        let joined = match map.get(name).and_then(serde_json::Value::as_str) {
            Some(before) => format!("{before}, {value}"),
            None => value.clone(),
        };
        map.insert(name.clone(), serde_json::Value::String(joined));
    }
    map
}

pub(super) fn detail_view(detail: DeliveryDetail, repository_id: i64) -> DeliveryDetailView {
    let attempts: Vec<AttemptView> = detail
        .attempts
        .into_iter()
        .map(|attempt| AttemptView {
            started_at: attempt.started_at,
            duration: f64::from(attempt.duration_ms) / 1000.0,
            url: attempt.url,
            status_code: attempt.status_code.unwrap_or(0),
            error: attempt.error,
            delivered: attempt.delivered,
            request: Exchange { headers: header_map(&attempt.request_headers), payload: None },
            response: Exchange {
                headers: header_map(&attempt.response_headers),
                payload: attempt
                    .status_code
                    .map(|_| String::from_utf8_lossy(&attempt.response_body).into_owned()),
            },
        })
        .collect();
    let last = attempts.last();
    let request = Exchange {
        headers: last.map(|attempt| attempt.request.headers.clone()).unwrap_or_default(),
        payload: Some(detail.payload),
    };
    let response = last
        .map(|attempt| attempt.response.clone())
        .unwrap_or(Exchange { headers: serde_json::Map::new(), payload: None });
    DeliveryDetailView {
        delivery: delivery_view(detail.delivery, repository_id),
        request,
        response,
        attempts_made: attempts,
    }
}
