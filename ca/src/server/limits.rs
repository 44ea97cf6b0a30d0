//! Abuse limits: signatures in flight, and a per-node rate.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::{Semaphore, SemaphorePermit};

/// The CA's limits.
pub(super) struct Limits {
    in_flight: Semaphore,
    per_node: Mutex<HashMap<String, Bucket>>,
    rate: f64,
}

/// A token bucket: `rate` tokens a second, at most `2 × rate` banked.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Limits {
    pub(super) fn new(max_in_flight: usize, node_rate: u32) -> Limits {
        Limits {
            in_flight: Semaphore::new(max_in_flight),
            per_node: Mutex::new(HashMap::new()),
            rate: f64::from(node_rate),
        }
    }

    /// A slot for one signature, or `None` when `max_in_flight` are already running.
    pub(super) fn slot(&self) -> Option<SemaphorePermit<'_>> {
        self.in_flight.try_acquire().ok()
    }

    /// Takes `n` certificates from `node`'s budget; false when it is spent.
    pub(super) fn take(&self, node: &str, n: usize, now: Instant) -> bool {
        let mut buckets = self
            .per_node
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let burst = self.rate * 2.0;
        let bucket = buckets.entry(node.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(burst);
        bucket.at = now;
        let wanted = n as f64;
        if bucket.tokens >= wanted {
            bucket.tokens -= wanted;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_node_gets_its_burst_then_its_rate() {
        let limits = Limits::new(4, 10);
        let start = Instant::now();
        assert!(limits.take("a", 20, start));
        assert!(!limits.take("a", 1, start), "burst spent");
        assert!(
            limits.take("b", 20, start),
            "other nodes have their own budget"
        );
        assert!(limits.take("a", 5, start + Duration::from_millis(500)));
        assert!(!limits.take("a", 1, start + Duration::from_millis(500)));
    }

    #[test]
    fn in_flight_slots_run_out_and_come_back() {
        let limits = Limits::new(2, 10);
        let a = limits.slot();
        let b = limits.slot();
        assert!(a.is_some() && b.is_some());
        assert!(limits.slot().is_none());
        drop(a);
        assert!(limits.slot().is_some());
    }
}
