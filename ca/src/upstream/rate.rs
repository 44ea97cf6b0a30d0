//! A local rate limit for calls to an upstream, kept below its quota.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Spaces calls at least `1 / rate` seconds apart, making callers wait (in arrival order) rather
/// than failing them. Nothing is banked while idle beyond the one call that may go at once, so a
/// burst never exceeds the rate (PCA's quotas are per second).
#[derive(Debug)]
pub(crate) struct RateLimiter {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// At most `per_second` calls a second.
    pub(crate) fn new(per_second: NonZeroU32) -> RateLimiter {
        RateLimiter {
            interval: Duration::from_secs(1) / per_second.get(),
            next: Mutex::new(None),
        }
    }

    /// Waits for this call's turn.
    pub(crate) async fn acquire(&self) {
        let slot = {
            // A poisoned lock only means another caller panicked between two plain assignments.
            let mut next = self
                .next
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            let slot = next.map_or(now, |at| at.max(now));
            *next = Some(slot + self.interval);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn spaces_calls_by_the_rate() {
        let limiter = RateLimiter::new(rate(5));
        let start = Instant::now();
        limiter.acquire().await;
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "the first call goes at once"
        );
        for _ in 0..4 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(800));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_banks_no_burst() {
        let limiter = RateLimiter::new(rate(2));
        limiter.acquire().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let start = Instant::now();
        limiter.acquire().await;
        limiter.acquire().await;
        limiter.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_queue() {
        let limiter = std::sync::Arc::new(RateLimiter::new(rate(10)));
        let start = Instant::now();
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    limiter.acquire().await;
                    start.elapsed()
                })
            })
            .collect();
        let mut times = Vec::new();
        for task in tasks {
            times.push(task.await.unwrap());
        }
        times.sort();
        let expected: Vec<_> = (0..10).map(|i| Duration::from_millis(100 * i)).collect();
        assert_eq!(times, expected);
    }
}
