//! The delivery engine's Prometheus metrics.

use std::time::Duration;

use platform_core::telemetry::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    event: String,
    outcome: &'static str,
}

/// What one delivery attempt came to, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The receiver answered 2xx.
    Delivered,
    /// It failed and will be tried again.
    Retried,
    /// It failed for good.
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retried => "retried",
            Self::Failed => "failed",
        }
    }
}

/// Webhook metrics:
///
/// - `webhook_deliveries_total{event,outcome}`: attempts, `outcome` one of `delivered`,
///   `retried` (failed, to be tried again) or `failed` (given up on);
/// - `webhook_delivery_duration_seconds`: how long attempts took, connect to last byte read;
/// - `webhook_delivery_lag_seconds`: the age of the oldest delivery still waiting for its
///   first attempt (0 when none waits).
#[derive(Clone, Debug)]
pub(super) struct WebhookMetrics {
    deliveries: Family<OutcomeLabels, Counter>,
    duration: Histogram,
    lag: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl WebhookMetrics {
    pub(super) fn register(metrics: &Metrics) -> Self {
        let this = Self {
            deliveries: Family::default(),
            duration: Histogram::new(exponential_buckets(0.002, 2.0, 14)),
            lag: Gauge::default(),
        };
        // At 0 from the start, so that dashboards and alerts see them before the first push.
        for outcome in [Outcome::Delivered, Outcome::Retried, Outcome::Failed] {
            let _ = this.deliveries.get_or_create(&OutcomeLabels {
                event: "push".to_owned(),
                outcome: outcome.as_str(),
            });
        }
        metrics.register(
            "webhook_deliveries",
            "Webhook delivery attempts by event and outcome",
            this.deliveries.clone(),
        );
        metrics.register(
            "webhook_delivery_duration_seconds",
            "How long webhook delivery attempts took",
            this.duration.clone(),
        );
        metrics.register(
            "webhook_delivery_lag_seconds",
            "Age of the oldest webhook delivery waiting for its first attempt",
            this.lag.clone(),
        );
        this
    }

    pub(super) fn attempted(&self, event: &str, outcome: Outcome, took: Duration) {
        self.deliveries
            .get_or_create(&OutcomeLabels { event: event.to_owned(), outcome: outcome.as_str() })
            .inc();
        self.duration.observe(took.as_secs_f64());
    }

    pub(super) fn set_lag(&self, lag: Duration) {
        self.lag.set(lag.as_secs_f64());
    }
}
