//! The rotation worker: one task that prepares the next intermediate at ½ of the active one's
//! life and activates it at ⅚ ([`super::timing`]), re-planning whenever the authorities change
//! (an operator's taint, another replica's preparation). A failure is retried with backoff while
//! the active intermediate keeps signing; the CA turns not-ready only once that one has expired.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use halyard_proto::validate_signing_cert;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use super::timing::{self, Lifetimes, Step, Successor};
use super::{PcaError, PcaUpstream, Prepared};
use crate::authority::rfc3339;
use crate::server::{AuthoritySet, Ca};
use crate::store::AuthorityState;
use crate::upstream::aws_pca::jitter;

/// The longest single sleep: the wall clock may jump (the plan is in wall-clock time, the
/// sleep is not), so look again at least this often.
const MAX_NAP: Duration = Duration::from_secs(300);

/// Starts the worker; it stops when `shutdown` is cancelled.
pub(in crate::server) fn spawn(
    ca: Arc<Ca>,
    upstream: Arc<PcaUpstream>,
    shutdown: CancellationToken,
) {
    let span = tracing::info_span!("pca_rotation", ca = %upstream.pca.config().ca_arn);
    tokio::spawn(run(ca, upstream, shutdown).instrument(span));
}

async fn run(ca: Arc<Ca>, upstream: Arc<PcaUpstream>, shutdown: CancellationToken) {
    let mut changes = ca.watch_trust();
    let mut failures = 0u32;
    loop {
        // Another replica holds the rotation lock: wait for its record (or a while).
        let mut busy = false;
        // Seen before planning: a change from here on wakes the wait below.
        changes.borrow_and_update();
        let lifetimes = lifetimes(&ca.authority_set());
        let step = timing::next_step(&lifetimes, SystemTime::now());
        let done = match step {
            Step::Wait(until) => {
                let nap = until
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
                    .min(MAX_NAP);
                debug!(until = %rfc3339(until), "next rotation step");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(nap) => {}
                    changed = changes.changed() => if changed.is_err() { return },
                }
                continue;
            }
            Step::Prepare => {
                info!(
                    active = ca.authority().id(),
                    expires = %rfc3339(lifetimes.end),
                    "preparing the next intermediate"
                );
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    prepared = upstream.prepare(&ca) => prepared.map(|prepared| match prepared {
                        Prepared::Recorded { id, not_after } => info!(
                            authority = %id,
                            not_after = %rfc3339(not_after),
                            activate_at = %rfc3339(timing::activate_at(lifetimes.start, lifetimes.end)),
                            "prepared the next intermediate"
                        ),
                        Prepared::Elsewhere(id) => info!(
                            authority = %id,
                            "another replica prepared the next intermediate"
                        ),
                        Prepared::Busy => busy = true,
                    }),
                }
            }
            Step::Activate(id) => {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    activated = activate(&ca, &id) => activated,
                }
            }
        };
        match done {
            Ok(()) if busy => {
                debug!("another replica is preparing the next intermediate");
                failures = 0;
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(timing::ELSEWHERE_RECHECK) => {}
                    changed = changes.changed() => if changed.is_err() { return },
                }
            }
            Ok(()) => {
                if failures > 0 {
                    info!(failures, "rotation recovered");
                }
                failures = 0;
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let retry_in = timing::failure_backoff(failures, jitter());
                let active = ca.authority();
                if failures == 1 {
                    warn!(
                        %error,
                        ?retry_in,
                        active = active.id(),
                        active_expires = %rfc3339(active.not_after()),
                        "intermediate rotation failed; the active intermediate keeps signing"
                    );
                } else {
                    debug!(%error, failures, ?retry_in, "intermediate rotation failed again");
                }
                // Another replica may have stepped in meanwhile.
                if let Err(e) = ca.reload_authorities().await {
                    debug!(error = %e, "cannot reload the authorities");
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(retry_in) => {}
                }
            }
        }
    }
}

/// Activates the prepared authority `id`; another replica having just done so is as good.
async fn activate(ca: &Ca, id: &str) -> Result<(), PcaError> {
    match ca.activate_authority(id).await {
        Ok(_) => {
            info!(authority = %id, "activated the next intermediate");
            Ok(())
        }
        Err(error) => {
            ca.reload_authorities().await?;
            if ca.authority().id() == id {
                info!(authority = %id, "another replica activated the next intermediate");
                Ok(())
            } else {
                Err(error.into())
            }
        }
    }
}

/// The active authority's life and its successor, from what this process holds.
fn lifetimes(set: &AuthoritySet) -> Lifetimes {
    let active = &set.active;
    let end = active.not_after();
    let not_before = active
        .chain()
        .first()
        .and_then(|der| validate_signing_cert(der).ok())
        .map(|info| info.not_before());
    let recorded = set
        .known
        .iter()
        .find(|k| k.record.id == active.id())
        .map(|k| k.record.created_at);
    // An upstream may backdate notBefore: the life counts from when it was recorded, if later.
    let start = not_before.into_iter().chain(recorded).max().unwrap_or(end);
    let successor = set
        .known
        .iter()
        .filter(|k| k.record.state == AuthorityState::Prepared && k.record.not_after > end)
        .max_by_key(|k| k.record.not_after)
        .map(|k| Successor {
            id: k.record.id.clone(),
            usable_here: k.authority.is_some(),
        });
    // The store's active authority is one this process has no key for: the replica that has
    // it rotates.
    let signs_elsewhere = set
        .known
        .iter()
        .any(|k| k.record.state == AuthorityState::Active && k.record.id != active.id());
    Lifetimes {
        start,
        end,
        successor,
        signs_elsewhere,
    }
}
