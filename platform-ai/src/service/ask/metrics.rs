//! Ask-the-code's Prometheus metrics.

use std::time::Duration;

use platform_core::telemetry::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::chat::{ChatError, Usage};

/// How a question ended, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Answered in full.
    Answered,
    /// Refused: the user's questions per minute.
    RateLimited,
    /// Refused: the user's daily tokens are spent.
    BudgetSpent,
    /// The chat model, or the search it needs, is down or slow.
    Unavailable,
    /// The chat model answered with an error.
    ModelError,
    /// Our side failed (storing the turn).
    Failed,
}

impl Outcome {
    pub(super) fn for_chat(error: &ChatError) -> Self {
        match error {
            ChatError::Model { .. } => Self::ModelError,
            ChatError::Unreachable { .. } | ChatError::TimedOut { .. } => Self::Unavailable,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::RateLimited => "rate_limited",
            Self::BudgetSpent => "budget_spent",
            Self::Unavailable => "unavailable",
            Self::ModelError => "model_error",
            Self::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// Ask metrics:
///
/// - `ask_requests_total{outcome}`: questions by how they ended (`answered`, `rate_limited`,
///   `budget_spent`, `unavailable`, `model_error`, `failed`);
/// - `ask_tokens_total{kind}`: tokens spent, `kind` `prompt` or `completion` (each user's own
///   are in `ai_usage` and `GET /api/user/ai-usage`);
/// - `ask_first_token_seconds`: from the request to the model's first token;
/// - `ask_duration_seconds`: from the request to the answer's end.
#[derive(Clone, Debug)]
pub(super) struct AskMetrics {
    requests: Family<OutcomeLabels, Counter>,
    tokens: Family<KindLabels, Counter>,
    first_token: Histogram,
    duration: Histogram,
}

impl AskMetrics {
    pub(super) fn register(metrics: &Metrics) -> Self {
        let this = Self {
            requests: Family::default(),
            tokens: Family::default(),
            first_token: Histogram::new(exponential_buckets(0.05, 2.0, 12)),
            duration: Histogram::new(exponential_buckets(0.1, 2.0, 12)),
        };
        metrics.register("ask_requests", "Questions asked, by outcome", this.requests.clone());
        metrics.register("ask_tokens", "Chat model tokens spent, by kind", this.tokens.clone());
        metrics.register(
            "ask_first_token_seconds",
            "Time from a question to the chat model's first token",
            this.first_token.clone(),
        );
        metrics.register(
            "ask_duration_seconds",
            "Time from a question to the end of its answer",
            this.duration.clone(),
        );
        this
    }

    pub(super) fn finished(&self, outcome: Outcome) {
        self.requests.get_or_create(&OutcomeLabels { outcome: outcome.as_str() }).inc();
    }

    pub(super) fn spent(&self, usage: Usage, first_token: Option<Duration>, took: Duration) {
        self.tokens
            .get_or_create(&KindLabels { kind: "prompt" })
            .inc_by(u64::from(usage.prompt_tokens));
        self.tokens
            .get_or_create(&KindLabels { kind: "completion" })
            .inc_by(u64::from(usage.completion_tokens));
        if let Some(first_token) = first_token {
            self.first_token.observe(first_token.as_secs_f64());
        }
        self.duration.observe(took.as_secs_f64());
    }
}
