//! When the rotation worker acts: pure functions of the authorities and the time.
//!
//! An intermediate's life runs from its start (the later of its notBefore and when the store
//! recorded it, since an upstream may backdate notBefore) to its notAfter. The next intermediate
//! is prepared at ½ of the active one's life and activated at ⅚: agents trust it (and its root)
//! for a third of a life before it signs anything, and certificates the old one signed last still
//! have a sixth of its life to be renewed in.

use std::time::{Duration, SystemTime};

/// While another replica (one holding keys this one lacks) rotates, or prepares, look again
/// this often, unless the authorities change first.
pub(crate) const ELSEWHERE_RECHECK: Duration = Duration::from_secs(30);

/// The first retry after a failure waits about this long; each next one twice as long.
const FAILURE_BASE: Duration = Duration::from_secs(2);

/// No retry after a failure waits longer than this.
const FAILURE_CAP: Duration = Duration::from_secs(300);

/// The active authority and its successor, as far as timing goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Lifetimes {
    /// When the active intermediate's life started.
    pub(crate) start: SystemTime,
    /// Its notAfter.
    pub(crate) end: SystemTime,
    /// The prepared authority that outlives it, if any.
    pub(crate) successor: Option<Successor>,
    /// The store's active authority is another one, whose key this process does not hold.
    pub(crate) signs_elsewhere: bool,
}

/// A prepared authority that outlives the active one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Successor {
    /// Its id.
    pub(crate) id: String,
    /// Whether this process holds its key (it can activate it).
    pub(crate) usable_here: bool,
}

/// What the worker does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Have the upstream issue the next intermediate and record it as prepared.
    Prepare,
    /// Activate this prepared authority.
    Activate(String),
    /// Nothing to do before this time (or before the authorities change).
    Wait(SystemTime),
}

/// `numerator / denominator` of the way from `start` to `end`; `start` when `end` is
/// not after it.
fn point(start: SystemTime, end: SystemTime, numerator: u32, denominator: u32) -> SystemTime {
    let life = end.duration_since(start).unwrap_or(Duration::ZERO);
    let nanos = life.as_nanos() * u128::from(numerator) / u128::from(denominator.max(1));
    start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// When the next intermediate is prepared: at ½ of the active one's life.
pub(crate) fn prepare_at(start: SystemTime, end: SystemTime) -> SystemTime {
    point(start, end, 1, 2)
}

/// When the next intermediate is activated: at ⅚ of the active one's life.
pub(crate) fn activate_at(start: SystemTime, end: SystemTime) -> SystemTime {
    point(start, end, 5, 6)
}

/// The next step at `now`.
pub(crate) fn next_step(lifetimes: &Lifetimes, now: SystemTime) -> Step {
    let Lifetimes {
        start,
        end,
        successor,
        signs_elsewhere,
    } = lifetimes;
    if *signs_elsewhere {
        return Step::Wait(now + ELSEWHERE_RECHECK);
    }
    let activate = activate_at(*start, *end);
    match successor {
        None => {
            let prepare = prepare_at(*start, *end);
            if now >= prepare {
                Step::Prepare
            } else {
                Step::Wait(prepare)
            }
        }
        Some(_) if now < activate => Step::Wait(activate),
        Some(next) if next.usable_here => Step::Activate(next.id.clone()),
        // Prepared by a replica that holds its key: that one activates it.
        Some(_) => Step::Wait(now + ELSEWHERE_RECHECK),
    }
}

/// How long to wait after the `failures`-th failure in a row (1 for the first): half of
/// `min(cap, base · 2^(failures-1))` plus `jitter` (in [0, 1)) of the other half, so replicas
/// that failed together do not come back together.
pub(crate) fn failure_backoff(failures: u32, jitter: f64) -> Duration {
    let step = FAILURE_BASE
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
        .min(FAILURE_CAP);
    step / 2 + (step / 2).mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests;
