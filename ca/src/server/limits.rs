//! Abuse limits: signatures in flight, and token-bucket rates per node and per identity.
//!
//! A bucket that has refilled to its burst is the same as no bucket at all, so full buckets are
//! dropped (swept once per refill period): the maps hold only callers charged within about the
//! last refill period or two, never every node or identity ever seen.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

/// A sustained rate and how many may be taken at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Rate {
    per_second: f64,
    burst: f64,
}

impl Rate {
    /// `per_second` sustained, up to `burst` at once.
    pub(super) fn new(per_second: f64, burst: u32) -> Rate {
        Rate {
            per_second,
            burst: f64::from(burst),
        }
    }

    /// How long an empty bucket takes to fill: after it, an untouched bucket is full.
    fn refill_period(&self) -> Duration {
        Duration::try_from_secs_f64(self.burst / self.per_second).unwrap_or(Duration::MAX)
    }
}

/// Which budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Spent {
    /// The node's.
    Node,
    /// The SPIFFE ID's.
    Identity,
}

/// The CA's limits.
pub(super) struct Limits {
    in_flight: Semaphore,
    /// Both maps under one lock, so a request charges both budgets or neither.
    buckets: Mutex<(Buckets, Buckets)>,
}

impl Limits {
    /// `max_in_flight` signatures at once; `node` and `identity` rates.
    pub(super) fn new(max_in_flight: usize, node: Rate, identity: Rate, now: Instant) -> Limits {
        Limits {
            in_flight: Semaphore::new(max_in_flight),
            buckets: Mutex::new((Buckets::new(node, now), Buckets::new(identity, now))),
        }
    }

    /// A slot for one signature, or `None` when `max_in_flight` are already running.
    pub(super) fn slot(&self) -> Option<SemaphorePermit<'_>> {
        self.in_flight.try_acquire().ok()
    }

    /// Takes one certificate from `node`'s budget (when given) and from `identity`'s (when
    /// given); when either is spent, neither is charged.
    pub(super) fn take(
        &self,
        node: Option<&str>,
        identity: Option<&str>,
        now: Instant,
    ) -> Result<(), Spent> {
        let mut guard = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (nodes, identities) = &mut *guard;
        if node.is_some_and(|node| !nodes.has(node, 1.0, now)) {
            return Err(Spent::Node);
        }
        if identity.is_some_and(|identity| !identities.has(identity, 1.0, now)) {
            return Err(Spent::Identity);
        }
        if let Some(node) = node {
            nodes.charge(node, 1.0, now);
        }
        if let Some(identity) = identity {
            identities.charge(identity, 1.0, now);
        }
        Ok(())
    }

    /// How many buckets are kept: (nodes, identities).
    #[cfg(test)]
    fn kept(&self) -> (usize, usize) {
        let guard = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        (guard.0.map.len(), guard.1.map.len())
    }
}

/// One bucket per key; a key without one has a full bucket.
struct Buckets {
    rate: Rate,
    map: HashMap<String, Bucket>,
    swept: Instant,
}

/// Tokens left at `at`.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Buckets {
    fn new(rate: Rate, now: Instant) -> Buckets {
        Buckets {
            rate,
            map: HashMap::new(),
            swept: now,
        }
    }

    /// Tokens `key` has at `now`.
    fn level(&self, key: &str, now: Instant) -> f64 {
        self.map.get(key).map_or(self.rate.burst, |bucket| {
            let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
            (bucket.tokens + elapsed * self.rate.per_second).min(self.rate.burst)
        })
    }

    fn has(&self, key: &str, n: f64, now: Instant) -> bool {
        self.level(key, now) >= n
    }

    /// Takes `n` tokens from `key` (which [`Self::has`] them), first dropping the buckets that
    /// have refilled when a refill period has passed since the last sweep.
    fn charge(&mut self, key: &str, n: f64, now: Instant) {
        if now.saturating_duration_since(self.swept) >= self.rate.refill_period() {
            let (rate, burst) = (self.rate.per_second, self.rate.burst);
            self.map.retain(|_, bucket| {
                let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
                bucket.tokens + elapsed * rate < burst
            });
            self.swept = now;
        }
        let tokens = self.level(key, now) - n;
        match self.map.get_mut(key) {
            Some(bucket) => *bucket = Bucket { tokens, at: now },
            None => {
                self.map.insert(key.to_owned(), Bucket { tokens, at: now });
            }
        }
    }
}

#[cfg(test)]
mod tests;
