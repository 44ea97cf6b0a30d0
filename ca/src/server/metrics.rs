//! Prometheus metrics, served on `/metrics`.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::JournalStats;

/// Labels of a request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    api: &'static str,
    result: String,
}

/// Every metric the CA exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    issued: Counter,
    issuance_seconds: Histogram,
    journal: JournalCounters,
    intermediate_expiry: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// The journal statistics last taken into [`Metrics::journal`].
    journal_seen: Arc<Mutex<JournalStats>>,
}

/// The journal's counters: exact totals, from which a scraper derives rows per transaction and
/// time per transaction (rate of one over rate of another).
#[derive(Clone, Default)]
struct JournalCounters {
    batches: Counter,
    rows: Counter,
    failed: Counter,
    commit_seconds: Counter<f64, AtomicU64>,
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("halyard");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "gRPC requests by API and result code",
            requests.clone(),
        );
        let issued = Counter::default();
        registry.register(
            "certificates_issued",
            "Certificates issued (journaled and handed out)",
            issued.clone(),
        );
        let issuance_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "issuance_seconds",
            "Time to sign and journal one certificate",
            issuance_seconds.clone(),
        );
        let journal = JournalCounters::default();
        registry.register(
            "journal_batches",
            "Journal transactions committed",
            journal.batches.clone(),
        );
        registry.register(
            "journal_rows",
            "Journal rows committed",
            journal.rows.clone(),
        );
        registry.register(
            "journal_batches_failed",
            "Journal transactions that failed (every caller in them got the error)",
            journal.failed.clone(),
        );
        registry.register(
            "journal_commit_seconds",
            "Time spent in committed journal transactions, BEGIN to COMMIT",
            journal.commit_seconds.clone(),
        );
        let intermediate_expiry = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        registry.register(
            "intermediate_expiry_timestamp_seconds",
            "notAfter of the active intermediate, Unix seconds",
            intermediate_expiry.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            requests,
            issued,
            issuance_seconds,
            journal,
            intermediate_expiry,
            journal_seen: Arc::default(),
        }
    }

    /// Counts one gRPC request of `api` that ended with `code`.
    pub fn request(&self, api: &'static str, code: tonic::Code) {
        self.requests
            .get_or_create(&RequestLabels {
                api,
                result: format!("{code:?}"),
            })
            .inc();
    }

    /// Counts one issued certificate that took `elapsed` from request to durable journal row.
    pub fn issued(&self, elapsed: Duration) {
        self.issued.inc();
        self.issuance_seconds.observe(elapsed.as_secs_f64());
    }

    /// Records the active intermediate's notAfter.
    pub fn set_intermediate_expiry(&self, not_after: SystemTime) {
        let secs = not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.intermediate_expiry.set(secs);
    }

    /// Brings the journal counters up to the store's statistics `stats`.
    pub fn observe_journal(&self, stats: &JournalStats) {
        let mut seen = self
            .journal_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let counters = &self.journal;
        counters.batches.inc_by(
            stats
                .batches_committed
                .saturating_sub(seen.batches_committed),
        );
        counters
            .rows
            .inc_by(stats.rows_committed.saturating_sub(seen.rows_committed));
        counters
            .failed
            .inc_by(stats.batches_failed.saturating_sub(seen.batches_failed));
        counters.commit_seconds.inc_by(
            stats
                .commit_time
                .saturating_sub(seen.commit_time)
                .as_secs_f64(),
        );
        *seen = *stats;
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_counters_are_exact_totals_whatever_the_observation_rate() {
        let metrics = Metrics::new();
        let mut stats = JournalStats {
            batches_committed: 3,
            rows_committed: 40,
            batches_failed: 1,
            last_batch_size: 16,
            last_commit_duration: Duration::from_millis(500),
            commit_time: Duration::from_millis(2000),
        };
        metrics.observe_journal(&stats);
        stats.batches_committed = 5;
        stats.rows_committed = 70;
        stats.commit_time = Duration::from_millis(3500);
        metrics.observe_journal(&stats);
        // Observing the same statistics again adds nothing.
        metrics.observe_journal(&stats);
        let text = metrics.encode();
        for line in [
            "halyard_journal_batches_total 5",
            "halyard_journal_rows_total 70",
            "halyard_journal_batches_failed_total 1",
            "halyard_journal_commit_seconds_total 3.5",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
