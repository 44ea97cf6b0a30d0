//! Prometheus metrics, served on `/metrics`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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
    journal_commit_seconds: Histogram,
    journal_batch_size: Histogram,
    intermediate_expiry: Gauge<i64, std::sync::atomic::AtomicI64>,
    journal_batches_seen: Arc<AtomicU64>,
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
        let journal_commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "journal_commit_seconds",
            "Time of one journal transaction",
            journal_commit_seconds.clone(),
        );
        let journal_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "journal_batch_size",
            "Rows per journal transaction",
            journal_batch_size.clone(),
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
            journal_commit_seconds,
            journal_batch_size,
            intermediate_expiry,
            journal_batches_seen: Arc::new(AtomicU64::new(0)),
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

    /// Takes the store's journal statistics into the histograms (each batch once).
    pub fn observe_journal(&self, stats: &crate::store::JournalStats) {
        use std::sync::atomic::Ordering;
        let seen = self
            .journal_batches_seen
            .swap(stats.batches_committed, Ordering::Relaxed);
        if stats.batches_committed > seen {
            self.journal_batch_size
                .observe(stats.last_batch_size as f64);
            self.journal_commit_seconds
                .observe(stats.last_commit_duration.as_secs_f64());
        }
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
