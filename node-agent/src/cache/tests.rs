//! The cache on a paused clock, against a real CA made in code.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use halyard_ca::authority::{Csr, Grant, KeyPolicy};
use halyard_ca::testing::TestPki;

use super::*;

const WEB: &str = "spiffe://example.org/ns/default/sa/web";

/// Signs with a CA in memory; can be told to fail, and counts calls and concurrency.
struct LocalSigner {
    pki: TestPki,
    failing: Mutex<bool>,
    calls: AtomicUsize,
    running: AtomicUsize,
    most_running: AtomicUsize,
    delay: Duration,
}

impl LocalSigner {
    fn new(delay: Duration) -> Arc<LocalSigner> {
        Arc::new(LocalSigner {
            pki: TestPki::new("example.org"),
            failing: Mutex::new(false),
            calls: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            most_running: AtomicUsize::new(0),
            delay,
        })
    }

    fn fail(&self, failing: bool) {
        *self.failing.lock().unwrap() = failing;
    }
}

#[tonic::async_trait]
impl SvidSigner for LocalSigner {
    async fn sign(
        &self,
        requests: Vec<SignRequest>,
    ) -> Result<Vec<Result<SignedChain, String>>, String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let running = self.running.fetch_add(requests.len(), Ordering::SeqCst) + requests.len();
        self.most_running.fetch_max(running, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.running.fetch_sub(requests.len(), Ordering::SeqCst);
        if *self.failing.lock().unwrap() {
            return Err("the CA is unreachable".into());
        }
        Ok(requests
            .into_iter()
            .map(|r| {
                let csr = Csr::parse(&r.csr, &KeyPolicy::default()).map_err(|e| e.to_string())?;
                let svid = self
                    .pki
                    .authority
                    .sign_svid(&csr, &Grant::new(r.spiffe_id), r.ttl, SystemTime::now())
                    .map_err(|e| e.to_string())?;
                Ok(SignedChain {
                    chain: svid.chain().map(<[u8]>::to_vec).collect(),
                })
            })
            .collect())
    }
}

fn options(ttl_secs: u64) -> CacheOptions {
    CacheOptions {
        ttl: Ttl::from_secs(ttl_secs),
        ..CacheOptions::default()
    }
}

fn cache(signer: Arc<LocalSigner>, options: CacheOptions) -> Cache {
    let (_tx, trust) = watch::channel(Arc::new(TrustState::default()));
    Cache::spawn(signer, trust, options, CancellationToken::new())
}

async fn next_svid(rx: &mut watch::Receiver<SvidSlot>) -> Arc<Svid> {
    loop {
        rx.changed().await.unwrap();
        if let Some(svid) = rx.borrow_and_update().svid.clone() {
            return svid;
        }
    }
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::new(s).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_gets_a_certificate_with_its_key() {
    let signer = LocalSigner::new(Duration::ZERO);
    let cache = cache(signer.clone(), options(30));
    let mut rx = cache.subscribe(&id(WEB)).await.unwrap();
    let svid = next_svid(&mut rx).await;
    assert_eq!(svid.spiffe_id.as_str(), WEB);
    assert_eq!(svid.chain.len(), 2);
    // The key is the one the certificate was issued for.
    let key = rcgen::KeyPair::try_from(svid.key_pkcs8_der()).unwrap();
    let leaf = x509_parser::parse_x509_certificate(&svid.chain[0])
        .unwrap()
        .1;
    assert_eq!(
        leaf.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
    assert!(
        !format!("{svid:?}").contains("key"),
        "Debug must not print the key"
    );
}

#[tokio::test(start_paused = true)]
async fn renewal_comes_at_half_life_within_jitter() {
    let signer = LocalSigner::new(Duration::ZERO);
    let cache = cache(signer.clone(), options(30));
    let mut rx = cache.subscribe(&id(WEB)).await.unwrap();
    let first = next_svid(&mut rx).await;
    let started = tokio::time::Instant::now();
    let second = next_svid(&mut rx).await;
    let waited = started.elapsed();
    assert_ne!(first.serial, second.serial);
    // 30 s + 3 s backdating = 33 s; half of it ±10 % of that half, minus the 3 s already spent.
    let lifetime = first
        .not_after
        .duration_since(first.not_before)
        .unwrap()
        .as_secs_f64();
    let spent = 3.0;
    let earliest = lifetime * 0.45 - spent - 1.0;
    let latest = lifetime * 0.55 - spent + 1.0;
    assert!(
        (earliest..=latest).contains(&waited.as_secs_f64()),
        "renewed after {waited:?}, expected {earliest:.1}..{latest:.1} s"
    );
}

#[tokio::test(start_paused = true)]
async fn failures_keep_the_last_good_certificate_and_back_off() {
    let signer = LocalSigner::new(Duration::ZERO);
    let cache = cache(signer.clone(), options(30));
    let mut rx = cache.subscribe(&id(WEB)).await.unwrap();
    let good = next_svid(&mut rx).await;
    signer.fail(true);
    let calls_before = signer.calls.load(Ordering::SeqCst);
    // Past the renewal point: renewals fail, the certificate stays, the error is published.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let slot = rx.borrow().clone();
    assert_eq!(
        slot.svid.as_ref().map(|s| s.serial.clone()),
        Some(good.serial.clone())
    );
    assert_eq!(slot.error.as_deref(), Some("the CA is unreachable"));
    // Backing off: 1, 2, 4, 8… (upper halves) — a handful of tries in ~10 s, not hundreds.
    let tries = signer.calls.load(Ordering::SeqCst) - calls_before;
    assert!((2..=6).contains(&tries), "{tries} tries");
    // The CA is back: a new certificate arrives at the next retry.
    signer.fail(false);
    let next = loop {
        let svid = next_svid(&mut rx).await;
        if svid.serial != good.serial {
            break svid;
        }
    };
    assert!(rx.borrow().error.is_none());
    assert_eq!(next.spiffe_id, good.spiffe_id);
}

#[tokio::test(start_paused = true)]
async fn identities_nobody_watches_are_dropped() {
    let signer = LocalSigner::new(Duration::ZERO);
    let cache = cache(
        signer.clone(),
        CacheOptions {
            idle_timeout: Duration::from_secs(10),
            ..options(3600)
        },
    );
    let mut rx = cache.subscribe(&id(WEB)).await.unwrap();
    next_svid(&mut rx).await;
    drop(rx);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let calls = signer.calls.load(Ordering::SeqCst);
    // Dropped: a new subscriber makes the cache ask again.
    let mut rx = cache.subscribe(&id(WEB)).await.unwrap();
    next_svid(&mut rx).await;
    assert_eq!(signer.calls.load(Ordering::SeqCst), calls + 1);

    // Still watched: a second subscriber is served from the cache.
    let again = cache.subscribe(&id(WEB)).await.unwrap();
    assert!(again.borrow().svid.is_some());
    assert_eq!(signer.calls.load(Ordering::SeqCst), calls + 1);
}

#[tokio::test(start_paused = true)]
async fn outstanding_csrs_are_capped_and_batched() {
    let signer = LocalSigner::new(Duration::from_secs(1));
    let cache = cache(
        signer.clone(),
        CacheOptions {
            max_in_flight: 4,
            batch_size: 2,
            ..options(3600)
        },
    );
    let mut receivers = Vec::new();
    for n in 0..10 {
        receivers.push(
            cache
                .subscribe(&id(&format!("spiffe://example.org/w{n}")))
                .await
                .unwrap(),
        );
    }
    for rx in &mut receivers {
        next_svid(rx).await;
    }
    assert!(signer.most_running.load(Ordering::SeqCst) <= 4);
    // 10 CSRs in batches of at most 2.
    assert!(signer.calls.load(Ordering::SeqCst) >= 5);
}

/// Answers every CSR with a certificate over a different key.
struct SwappingSigner(Arc<LocalSigner>);

#[tonic::async_trait]
impl SvidSigner for SwappingSigner {
    async fn sign(
        &self,
        requests: Vec<SignRequest>,
    ) -> Result<Vec<Result<SignedChain, String>>, String> {
        let swapped = requests
            .into_iter()
            .map(|r| SignRequest {
                csr: halyard_ca::testing::key_and_csr(Some(r.spiffe_id.as_str())).1,
                ..r
            })
            .collect();
        self.0.sign(swapped).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_certificate_over_another_key_is_refused() {
    let (_tx, trust) = watch::channel(Arc::new(TrustState::default()));
    let cache = Cache::spawn(
        Arc::new(SwappingSigner(LocalSigner::new(Duration::ZERO))),
        trust,
        options(30),
        CancellationToken::new(),
    );
    let mut rx = cache.subscribe(&id(WEB)).await.unwrap();
    rx.changed().await.unwrap();
    let slot = rx.borrow().clone();
    assert!(slot.svid.is_none());
    assert_eq!(
        slot.error.as_deref(),
        Some(
            "the CA returned a certificate for spiffe://example.org/ns/default/sa/web over another key"
        )
    );
}

#[tokio::test(start_paused = true)]
async fn a_revoked_certificate_is_replaced_at_once() {
    let signer = LocalSigner::new(Duration::ZERO);
    let (trust_tx, trust) = watch::channel(Arc::new(TrustState::default()));
    let cache = Cache::spawn(signer, trust, options(3600), CancellationToken::new());
    let mut rx = cache.subscribe(&id(WEB)).await.unwrap();
    let first = next_svid(&mut rx).await;
    let started = tokio::time::Instant::now();
    trust_tx.send_replace(Arc::new(TrustState {
        version: 2,
        revoked: vec![first.serial.clone()],
        ..TrustState::default()
    }));
    let second = next_svid(&mut rx).await;
    assert_ne!(second.serial, first.serial);
    // Not at half-life (30 minutes away): at once.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // Revocations of other serials change nothing.
    trust_tx.send_replace(Arc::new(TrustState {
        version: 3,
        revoked: vec![first.serial.clone(), "0abc".into()],
        ..TrustState::default()
    }));
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(rx.borrow().svid.as_ref().unwrap().serial, second.serial);
}

#[tokio::test]
async fn the_issuer_id_is_the_leafs_authority_key_identifier() {
    let signer = LocalSigner::new(Duration::ZERO);
    let cache = cache(signer, options(30));
    let mut rx = cache.subscribe(&id(WEB)).await.unwrap();
    let svid = next_svid(&mut rx).await;
    // The intermediate's subject key identifier, read independently.
    let (_, intermediate) = x509_parser::parse_x509_certificate(&svid.chain[1]).unwrap();
    let ski = intermediate
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => {
                Some(k.0.iter().map(|b| format!("{b:02x}")).collect::<String>())
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(svid.issuer, ski);
    assert_eq!(super::authority_key_id(&svid.chain[0]), ski);
    // Not a certificate, or one without the extension: no id, never a panic.
    assert_eq!(super::authority_key_id(b"not a certificate"), "");
    assert_eq!(super::authority_key_id(&[]), "");
}
