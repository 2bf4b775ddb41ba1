//! The email worker's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use platform_core::telemetry::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    kind: String,
    reason: String,
}

/// Counters of one email worker, by mail kind:
///
/// - `mail_sent_total{kind}`: messages the relay accepted;
/// - `mail_failed_total{kind,reason}`: failed attempts, `reason` one of `relay_unavailable`
///   (connecting, TLS or AUTH failed), `transient` (a 4xx reply), `rejected` (a 5xx reply) or
///   `invalid` (the job cannot become a message);
/// - `mail_retried_total{kind}`: jobs given back to the queue for a later attempt;
/// - `mail_dead_lettered_total{kind}`: jobs given up on, kept with the reason;
/// - `mail_duplicates_skipped_total`: deliveries of jobs already sent, acknowledged unsent;
/// - `mail_leader`: 1 while this worker is the active sender, 0 while it stands by.
#[derive(Clone, Debug)]
pub struct MailMetrics {
    sent: Family<KindLabels, Counter>,
    failed: Family<FailureLabels, Counter>,
    retried: Family<KindLabels, Counter>,
    dead_lettered: Family<KindLabels, Counter>,
    duplicates_skipped: Counter,
    leader: Gauge,
}

impl MailMetrics {
    /// Registers the metrics in `metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self {
            sent: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            dead_lettered: Family::default(),
            duplicates_skipped: Counter::default(),
            leader: Gauge::default(),
        };
        // At 0 from the start, so that dashboards and alerts see them before the first message.
        for kind in ["verify_email", "reset_password", "account_exists", "push_notification"] {
            let _ = this.sent.get_or_create(&Self::kind(kind));
            for reason in ["relay_unavailable", "transient"] {
                let _ = this.failed.get_or_create(&FailureLabels {
                    kind: kind.to_owned(),
                    reason: reason.to_owned(),
                });
            }
        }
        metrics.register("mail_sent", "Messages the SMTP relay accepted", this.sent.clone());
        metrics.register("mail_failed", "Failed delivery attempts", this.failed.clone());
        metrics.register(
            "mail_retried",
            "Mail jobs given back to the queue for another attempt",
            this.retried.clone(),
        );
        metrics.register(
            "mail_dead_lettered",
            "Mail jobs given up on and dead-lettered",
            this.dead_lettered.clone(),
        );
        metrics.register(
            "mail_duplicates_skipped",
            "Deliveries of jobs whose message was already sent",
            this.duplicates_skipped.clone(),
        );
        metrics.register(
            "mail_leader",
            "1 while this worker is the active sender, 0 on standby",
            this.leader.clone(),
        );
        this
    }

    fn kind(kind: &str) -> KindLabels {
        KindLabels { kind: kind.to_owned() }
    }

    pub(crate) fn sent(&self, kind: &str) {
        self.sent.get_or_create(&Self::kind(kind)).inc();
    }

    pub(crate) fn failed(&self, kind: &str, reason: &str) {
        let labels = FailureLabels { kind: kind.to_owned(), reason: reason.to_owned() };
        self.failed.get_or_create(&labels).inc();
    }

    pub(crate) fn retried(&self, kind: &str) {
        self.retried.get_or_create(&Self::kind(kind)).inc();
    }

    pub(crate) fn dead_lettered(&self, kind: &str) {
        self.dead_lettered.get_or_create(&Self::kind(kind)).inc();
    }

    pub(crate) fn duplicate_skipped(&self) {
        self.duplicates_skipped.inc();
    }

    pub(crate) fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }
}
