//! The queue's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::BackendKind;
use crate::telemetry::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    stream: String,
    group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: String,
}

/// Counters and gauges of one process's queue traffic:
///
/// - `queue_published_total{stream}`, `queue_publish_failures_total{stream}`;
/// - `queue_acked_total`, `queue_retried_total`, `queue_dead_lettered_total` by stream and group;
/// - `queue_in_flight{stream,group}`: jobs being handled by this process;
/// - `queue_depth{stream,group}`: jobs the group has not acknowledged yet, refreshed by
///   consumers every few seconds;
/// - `queue_backend{backend}`: 1 for the backend this process publishes to.
#[derive(Clone, Debug)]
pub struct QueueMetrics {
    published: Family<StreamLabels, Counter>,
    publish_failures: Family<StreamLabels, Counter>,
    acked: Family<GroupLabels, Counter>,
    retried: Family<GroupLabels, Counter>,
    dead_lettered: Family<GroupLabels, Counter>,
    in_flight: Family<GroupLabels, Gauge>,
    depth: Family<GroupLabels, Gauge>,
    backend: Family<BackendLabels, Gauge>,
}

impl QueueMetrics {
    pub(super) fn register(metrics: &Metrics) -> Self {
        let this = Self {
            published: Family::default(),
            publish_failures: Family::default(),
            acked: Family::default(),
            retried: Family::default(),
            dead_lettered: Family::default(),
            in_flight: Family::default(),
            depth: Family::default(),
            backend: Family::default(),
        };
        metrics.register("queue_published", "Jobs accepted by the broker", this.published.clone());
        metrics.register(
            "queue_publish_failures",
            "Publishes the broker did not confirm",
            this.publish_failures.clone(),
        );
        metrics.register("queue_acked", "Jobs handled successfully", this.acked.clone());
        metrics.register(
            "queue_retried",
            "Jobs scheduled for another attempt",
            this.retried.clone(),
        );
        metrics.register(
            "queue_dead_lettered",
            "Jobs moved to the dead letters",
            this.dead_lettered.clone(),
        );
        metrics.register(
            "queue_in_flight",
            "Jobs being handled by this process",
            this.in_flight.clone(),
        );
        metrics.register(
            "queue_depth",
            "Jobs not yet acknowledged by the group",
            this.depth.clone(),
        );
        metrics.register(
            "queue_backend",
            "The broker this process publishes to",
            this.backend.clone(),
        );
        this
    }

    pub(super) fn set_backend(&self, backend: BackendKind) {
        self.backend.get_or_create(&BackendLabels { backend: backend.as_str().to_owned() }).set(1);
    }

    pub(super) fn published(&self, stream: &str) {
        self.published.get_or_create(&StreamLabels { stream: stream.to_owned() }).inc();
    }

    pub(super) fn publish_failed(&self, stream: &str) {
        self.publish_failures.get_or_create(&StreamLabels { stream: stream.to_owned() }).inc();
    }

    fn group(stream: &str, group: &str) -> GroupLabels {
        GroupLabels { stream: stream.to_owned(), group: group.to_owned() }
    }

    pub(super) fn acked(&self, stream: &str, group: &str) {
        self.acked.get_or_create(&Self::group(stream, group)).inc();
    }

    pub(super) fn retried(&self, stream: &str, group: &str) {
        self.retried.get_or_create(&Self::group(stream, group)).inc();
    }

    pub(super) fn dead_lettered(&self, stream: &str, group: &str) {
        self.dead_lettered.get_or_create(&Self::group(stream, group)).inc();
    }

    pub(super) fn in_flight(&self, stream: &str, group: &str) -> Gauge {
        self.in_flight.get_or_create(&Self::group(stream, group)).clone()
    }

    pub(super) fn set_depth(&self, stream: &str, group: &str, depth: u64) {
        let labels = Self::group(stream, group);
        self.depth.get_or_create(&labels).set(i64::try_from(depth).unwrap_or(i64::MAX));
        // A consumed stream's counters exist from its first depth reading, at 0 until something
        // happens, so that dashboards and alerts see them before the first job.
        let _ = self.acked.get_or_create(&labels);
        let _ = self.retried.get_or_create(&labels);
        let _ = self.dead_lettered.get_or_create(&labels);
        let _ = self.in_flight.get_or_create(&labels);
        let _ = self.published.get_or_create(&StreamLabels { stream: stream.to_owned() });
    }
}
