//! When to renew, and how long to back off: pure functions of times and a random draw, tested
//! on their own.

use std::time::{Duration, SystemTime};

/// When a certificate valid from `not_before` to `not_after` should be renewed: at half its
/// lifetime, moved by up to ±10 % of that half by `jitter` (a draw in `[-1, 1]`), so that
/// certificates issued together are not all renewed together.
pub fn refresh_at(not_before: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let lifetime = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    let half = lifetime.as_secs_f64() / 2.0;
    let offset = half * (1.0 + 0.1 * jitter.clamp(-1.0, 1.0));
    not_before + Duration::from_secs_f64(offset)
}

/// How long to wait after `failures` consecutive failures (1 for the first): doubling from
/// `base`, capped at `cap`, then spread over its upper half by `draw` (in `[0, 1]`) so that
/// identities that failed together do not retry together.
pub fn backoff(failures: u32, base: Duration, cap: Duration, draw: f64) -> Duration {
    let exponent = failures.saturating_sub(1).min(30);
    let full = base.saturating_mul(1 << exponent).min(cap);
    full.mul_f64(0.5 + 0.5 * draw.clamp(0.0, 1.0))
}

/// The retry delay after `failures` failures of renewing a certificate valid until `not_after`:
/// the backoff, but never so long that the certificate expires before the next tries — at most
/// a quarter of what is left of it (and at least a second).
pub fn retry_delay(backoff: Duration, not_after: Option<SystemTime>, now: SystemTime) -> Duration {
    match not_after.and_then(|end| end.duration_since(now).ok()) {
        Some(left) => backoff.min((left / 4).max(Duration::from_secs(1))),
        None => backoff,
    }
}

/// A uniform draw in `[0, 1)` from the operating system's CSPRNG (0.5 if it fails, which only
/// costs spread, not correctness).
pub fn draw() -> f64 {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; 8];
    if SystemRandom::new().fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_be_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn refresh_is_at_half_life_within_ten_percent() {
        let (nb, na) = (at(1000), at(1000 + 3600));
        assert_eq!(refresh_at(nb, na, 0.0), at(1000 + 1800));
        assert_eq!(refresh_at(nb, na, 1.0), at(1000 + 1980));
        assert_eq!(refresh_at(nb, na, -1.0), at(1000 + 1620));
        // Out-of-range draws are clamped, never beyond 55 % of the lifetime.
        assert_eq!(refresh_at(nb, na, 7.0), at(1000 + 1980));
    }

    #[test]
    fn refresh_of_a_broken_validity_is_immediate() {
        assert_eq!(refresh_at(at(500), at(100), 0.3), at(500));
    }

    #[test]
    fn a_thirty_second_certificate_is_renewed_before_sixty_percent_of_its_life() {
        // As the CA issues it: 30 s plus 3 s of backdating.
        let (nb, na) = (at(0), at(33));
        for draw in [-1.0, -0.5, 0.0, 0.5, 1.0] {
            let when = refresh_at(nb, na, draw);
            assert!(when < at(0) + Duration::from_secs_f64(33.0 * 0.6), "{draw}");
        }
    }

    #[test]
    fn backoff_doubles_caps_and_stays_in_its_upper_half() {
        let (base, cap) = (Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(backoff(1, base, cap, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(2, base, cap, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(4, base, cap, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(30, base, cap, 1.0), cap);
        assert_eq!(backoff(u32::MAX, base, cap, 1.0), cap);
        assert_eq!(backoff(3, base, cap, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(0, base, cap, 1.0), base);
    }

    #[test]
    fn retries_come_sooner_as_the_certificate_runs_out() {
        let now = at(1000);
        let backoff = Duration::from_secs(60);
        assert_eq!(retry_delay(backoff, None, now), backoff);
        assert_eq!(retry_delay(backoff, Some(at(1000 + 3600)), now), backoff);
        assert_eq!(
            retry_delay(backoff, Some(at(1000 + 40)), now),
            Duration::from_secs(10)
        );
        assert_eq!(
            retry_delay(backoff, Some(at(1002)), now),
            Duration::from_secs(1)
        );
        // Already expired: nothing to protect, the plain backoff.
        assert_eq!(retry_delay(backoff, Some(at(900)), now), backoff);
    }

    #[test]
    fn draws_are_in_range() {
        for _ in 0..1000 {
            let d = draw();
            assert!((0.0..1.0).contains(&d));
        }
    }
}
