//! The push reactions' Prometheus metrics.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use platform_core::telemetry::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    kind: &'static str,
    result: &'static str,
}

/// How one reaction job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Result {
    /// Done now.
    Done,
    /// Done before: a repeat, acknowledged without acting.
    Skipped,
    /// Failed (it is retried, or dead-lettered on its last attempt).
    Failed,
}

/// Reaction metrics:
///
/// - `push_reactions_total{kind,result}`: reaction jobs by kind, `result` one of `done`,
///   `skipped` (done before) or `failed`;
/// - `push_queue_lag_seconds`: how old the last push event taken from the queue was, from the
///   end of its push to its fan-out: the queue's lag.
#[derive(Clone, Debug)]
pub(super) struct ReactionMetrics {
    reactions: Family<ResultLabels, Counter>,
    lag: Gauge<f64, AtomicU64>,
}

impl ReactionMetrics {
    /// Registers the metrics, every kind's counters starting at 0 so that dashboards and
    /// alerts see them before the first push.
    pub(super) fn register(metrics: &Metrics, kinds: &[&'static str]) -> Self {
        let this = Self { reactions: Family::default(), lag: Gauge::default() };
        for &kind in kinds {
            for result in ["done", "skipped", "failed"] {
                let _ = this.reactions.get_or_create(&ResultLabels { kind, result });
            }
        }
        metrics.register(
            "push_reactions",
            "Push reaction jobs by kind and result",
            this.reactions.clone(),
        );
        metrics.register(
            "push_queue_lag_seconds",
            "Age of the last push event taken from the queue",
            this.lag.clone(),
        );
        this
    }

    pub(super) fn reacted(&self, kind: &'static str, result: Result) {
        let result = match result {
            Result::Done => "done",
            Result::Skipped => "skipped",
            Result::Failed => "failed",
        };
        self.reactions.get_or_create(&ResultLabels { kind, result }).inc();
    }

    pub(super) fn set_lag(&self, lag: Duration) {
        self.lag.set(lag.as_secs_f64());
    }
}
