//! The cache's one background task: it owns every identity's state and is the only writer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use halyard_proto::{SpiffeId, validate_leaf};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};
use zeroize::Zeroizing;

use super::timing::{backoff, draw, refresh_at, retry_delay};
use super::{
    CacheOptions, Command, SignRequest, SignedChain, Svid, SvidSigner, SvidSlot, TrustState,
};

/// One identity's state.
struct Identity {
    tx: watch::Sender<SvidSlot>,
    /// When to (re)request a certificate.
    due: Instant,
    /// Consecutive failures.
    failures: u32,
    /// A CSR for it is at the CA.
    in_flight: bool,
    /// Since when nobody has watched it.
    idle_since: Option<Instant>,
}

/// The outcome of one identity's CSR.
struct Outcome {
    id: SpiffeId,
    key: Zeroizing<Vec<u8>>,
    result: Result<SignedChain, String>,
}

pub(super) struct Worker {
    signer: Arc<dyn SvidSigner>,
    options: CacheOptions,
    commands: mpsc::Receiver<Command>,
    trust: watch::Receiver<Arc<TrustState>>,
    shutdown: CancellationToken,
    identities: HashMap<SpiffeId, Identity>,
    in_flight: usize,
    outcomes_tx: mpsc::UnboundedSender<Vec<Outcome>>,
    outcomes: mpsc::UnboundedReceiver<Vec<Outcome>>,
}

impl Worker {
    pub(super) fn new(
        signer: Arc<dyn SvidSigner>,
        options: CacheOptions,
        commands: mpsc::Receiver<Command>,
        trust: watch::Receiver<Arc<TrustState>>,
        shutdown: CancellationToken,
    ) -> Worker {
        let (outcomes_tx, outcomes) = mpsc::unbounded_channel();
        Worker {
            signer,
            options,
            commands,
            trust,
            shutdown,
            identities: HashMap::new(),
            in_flight: 0,
            outcomes_tx,
            outcomes,
        }
    }

    pub(super) async fn run(mut self) {
        let mut trust_open = true;
        loop {
            self.drop_idle(Instant::now());
            let wake = self.next_wake();
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                command = self.commands.recv() => match command {
                    Some(Command::Subscribe(id, reply)) => {
                        let rx = self.subscribe(id);
                        let _ = reply.send(rx);
                    }
                    None => return,
                },
                Some(outcomes) = self.outcomes.recv() => self.apply(outcomes),
                changed = self.trust.changed(), if trust_open => match changed {
                    Ok(()) => self.replace_revoked_and_tainted(Instant::now()),
                    // Nobody publishes trust any more: keep serving what is cached.
                    Err(_) => trust_open = false,
                },
                () = tokio::time::sleep_until(wake) => self.dispatch(Instant::now()),
            }
        }
    }

    fn subscribe(&mut self, id: SpiffeId) -> watch::Receiver<SvidSlot> {
        let identity = self.identities.entry(id.clone()).or_insert_with(|| {
            debug!(%id, "new identity");
            Identity {
                tx: watch::Sender::new(SvidSlot::default()),
                due: Instant::now(),
                failures: 0,
                in_flight: false,
                idle_since: None,
            }
        });
        identity.idle_since = None;
        identity.tx.subscribe()
    }

    /// Makes every identity whose certificate the CA has revoked due at once, and every one
    /// whose certificate a tainted authority signed due at a random moment within the taint
    /// spread (only ever sooner than it already was).
    fn replace_revoked_and_tainted(&mut self, now: Instant) {
        let trust = self.trust.borrow_and_update().clone();
        if trust.revoked.is_empty() && trust.tainted.is_empty() {
            return;
        }
        for (id, identity) in &mut self.identities {
            if identity.in_flight {
                continue;
            }
            let held = identity
                .tx
                .borrow()
                .svid
                .as_ref()
                .map(|s| (s.serial.clone(), s.issuer.clone()));
            let Some((serial, issuer)) = held else {
                continue;
            };
            if trust.revoked.contains(&serial) {
                if identity.due > now {
                    info!(%id, %serial, "certificate revoked; replacing it now");
                    identity.due = now;
                    identity.failures = 0;
                }
            } else if trust.tainted.contains(&issuer) {
                let at = now + self.options.taint_spread.mul_f64(draw());
                if identity.due > at {
                    info!(%id, %serial, authority = %issuer, delay = ?at.duration_since(now), "certificate signed by a tainted authority; replacing it");
                    identity.due = at;
                    identity.failures = 0;
                }
            }
        }
    }

    /// The next time something is due: a renewal, or an idle identity's expiry.
    fn next_wake(&self) -> Instant {
        let far = Instant::now() + self.options.idle_timeout;
        let due = self
            .identities
            .values()
            .filter(|i| !i.in_flight)
            .map(|i| i.due)
            .min()
            .unwrap_or(far);
        let idle = self
            .identities
            .values()
            .filter_map(|i| i.idle_since.map(|since| since + self.options.idle_timeout))
            .min()
            .unwrap_or(far);
        // While the concurrency cap is reached, only an outcome can make progress.
        if self.in_flight >= self.options.max_in_flight {
            idle.min(far)
        } else {
            due.min(idle)
        }
    }

    /// Forgets identities nobody has watched for the idle timeout.
    fn drop_idle(&mut self, now: Instant) {
        let timeout = self.options.idle_timeout;
        self.identities.retain(|id, identity| {
            if identity.tx.receiver_count() > 0 {
                identity.idle_since = None;
                return true;
            }
            let since = *identity.idle_since.get_or_insert(now);
            let keep = identity.in_flight || now.duration_since(since) < timeout;
            if !keep {
                debug!(%id, "dropping an identity nobody asked for");
            }
            keep
        });
    }

    /// Sends CSRs for every due identity, within the concurrency cap, in batches.
    fn dispatch(&mut self, now: Instant) {
        let room = self.options.max_in_flight.saturating_sub(self.in_flight);
        let mut due: Vec<SpiffeId> = self
            .identities
            .iter()
            .filter(|(_, i)| !i.in_flight && i.due <= now)
            .map(|(id, _)| id.clone())
            .collect();
        due.sort();
        due.truncate(room);
        if due.is_empty() {
            return;
        }
        for chunk in due.chunks(self.options.batch_size.max(1)) {
            let mut requests = Vec::with_capacity(chunk.len());
            let mut keys = Vec::with_capacity(chunk.len());
            for id in chunk {
                match new_key_and_csr(id) {
                    Ok((key, csr)) => {
                        requests.push(SignRequest {
                            spiffe_id: id.clone(),
                            csr,
                            ttl: self.options.ttl,
                        });
                        keys.push(key);
                    }
                    Err(e) => warn!(%id, error = %e, "cannot make a key and CSR"),
                }
            }
            for request in &requests {
                if let Some(identity) = self.identities.get_mut(&request.spiffe_id) {
                    identity.in_flight = true;
                }
            }
            self.in_flight += requests.len();
            let signer = self.signer.clone();
            let tx = self.outcomes_tx.clone();
            let span = info_span!("csr_batch", size = requests.len());
            tokio::spawn(
                async move {
                    let ids: Vec<SpiffeId> = requests.iter().map(|r| r.spiffe_id.clone()).collect();
                    let results = match signer.sign(requests).await {
                        Ok(results) if results.len() == ids.len() => results,
                        Ok(results) => {
                            let e = format!(
                                "the CA answered {} results for {} CSRs",
                                results.len(),
                                ids.len()
                            );
                            vec![Err(e); ids.len()]
                        }
                        Err(e) => vec![Err(e); ids.len()],
                    };
                    let outcomes = ids
                        .into_iter()
                        .zip(keys)
                        .zip(results)
                        .map(|((id, key), result)| Outcome { id, key, result })
                        .collect();
                    let _ = tx.send(outcomes);
                }
                .instrument(span),
            );
        }
    }

    fn apply(&mut self, outcomes: Vec<Outcome>) {
        let now = Instant::now();
        for outcome in outcomes {
            self.in_flight = self.in_flight.saturating_sub(1);
            let Some(identity) = self.identities.get_mut(&outcome.id) else {
                continue;
            };
            identity.in_flight = false;
            match outcome
                .result
                .and_then(|signed| to_svid(&outcome.id, signed, outcome.key))
            {
                Ok(svid) => {
                    let renew = refresh_at(svid.not_before, svid.not_after, draw() * 2.0 - 1.0);
                    identity.due = at_instant(renew, now);
                    identity.failures = 0;
                    info!(id = %svid.spiffe_id, serial = %svid.serial, "certificate issued");
                    identity.tx.send_replace(SvidSlot {
                        svid: Some(Arc::new(svid)),
                        error: None,
                    });
                }
                Err(error) => {
                    identity.failures += 1;
                    let current_end = identity.tx.borrow().svid.as_ref().map(|s| s.not_after);
                    let wait = retry_delay(
                        backoff(
                            identity.failures,
                            self.options.backoff_base,
                            self.options.backoff_cap,
                            draw(),
                        ),
                        current_end,
                        SystemTime::now(),
                    );
                    identity.due = now + wait;
                    // The first failure is news; a streak of them is noise.
                    if identity.failures == 1 {
                        warn!(id = %outcome.id, %error, retry_in = ?wait, "cannot get a certificate; keeping the current one");
                    } else {
                        debug!(id = %outcome.id, %error, failures = identity.failures, retry_in = ?wait, "still cannot get a certificate");
                    }
                    identity.tx.send_modify(|slot| {
                        // Keep the last good certificate only while it is still valid.
                        if slot
                            .svid
                            .as_ref()
                            .is_some_and(|s| s.not_after <= SystemTime::now())
                        {
                            slot.svid = None;
                        }
                        slot.error = Some(error);
                    });
                }
            }
        }
    }
}

/// `time` (wall clock) as a point on the runtime's clock, measured from `now`.
fn at_instant(time: SystemTime, now: Instant) -> Instant {
    match time.duration_since(SystemTime::now()) {
        Ok(ahead) => now + ahead,
        Err(_) => now,
    }
}

fn new_key_and_csr(id: &SpiffeId) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), rcgen::Error> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![rcgen::SanType::URI(id.as_str().try_into()?)];
    let csr = params.serialize_request(&key)?.der().to_vec();
    Ok((Zeroizing::new(key.serialize_der()), csr))
}

/// Checks what the CA returned: an X509-SVID for `id`, leaf first.
fn to_svid(id: &SpiffeId, signed: SignedChain, key: Zeroizing<Vec<u8>>) -> Result<Svid, String> {
    let leaf = signed
        .chain
        .first()
        .ok_or("the CA returned an empty chain")?;
    let parsed =
        validate_leaf(leaf).map_err(|e| format!("the CA returned a bad certificate: {e}"))?;
    if parsed.spiffe_id() != id {
        return Err(format!(
            "the CA returned a certificate for {} instead of {id}",
            parsed.spiffe_id()
        ));
    }
    // The certificate must be for the key this node made, or it is useless (or a swap).
    let ours = rcgen::KeyPair::try_from(key.as_slice()).map_err(|e| e.to_string())?;
    let certified = x509_parser::parse_x509_certificate(leaf)
        .map(|(_, cert)| cert.public_key().subject_public_key.data.to_vec())
        .map_err(|e| e.to_string())?;
    if certified != ours.public_key_raw() {
        return Err(format!(
            "the CA returned a certificate for {id} over another key"
        ));
    }
    Ok(Svid {
        issuer: super::authority_key_id(leaf),
        spiffe_id: id.clone(),
        serial: parsed.serial().iter().map(|b| format!("{b:02x}")).collect(),
        not_before: parsed.not_before(),
        not_after: parsed.not_after(),
        chain: signed.chain,
        key,
    })
}
