//! An agent in memory for the fuzz target: the real SDS service and SVID cache, a caller
//! attested with fixed selectors, a CA made in code, and a gRPC client wired straight to the
//! service (no socket, no HTTP/2), all on one thread with a paused clock.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use halyard_proto::SpiffeId;
use halyard_proto::api::ca::{Entry, Selector};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::CertificateSigningRequestDer;
use tokio::net::unix::UCred;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::codegen::http;
use tonic::transport::server::UdsConnectInfo;

use crate::attest::{AttestError, Attestor, Workload};
use crate::cache::{Cache, CacheOptions, SignRequest, SignedChain, SvidSigner, TrustState};
use crate::caller::AgentState;
use crate::sds::SdsServer;

/// The selector the caller is attested with; entries it is entitled to carry it.
pub(super) const CALLER_SELECTOR: (&str, &str, &str) = ("unix", "uid", "1000");

/// A client of the agent's SDS service, in memory.
pub(super) type SdsClient = SecretDiscoveryServiceClient<InProcess>;

/// Runs `body` against a fresh agent whose trust state is `trust`, on a new single-threaded
/// runtime with a paused clock (time jumps ahead whenever every task waits), and returns what
/// `body` returns with every identity the cache asked the CA for.
///
/// # Panics
///
/// When any task of the agent panicked (tokio would otherwise swallow it), or the runtime
/// cannot be built.
pub(super) fn with_agent<T, F, Fut>(trust: TrustState, body: F) -> (T, Vec<SpiffeId>)
where
    F: FnOnce(SdsClient) -> Fut,
    Fut: Future<Output = T>,
{
    watch_panics();
    PANICKED.with(|p| p.set(false));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => panic!("cannot build a runtime: {e}"),
    };
    let signed = Arc::new(Mutex::new(Vec::new()));
    let shutdown = CancellationToken::new();
    let out = runtime.block_on(async {
        let (_trust_tx, trust_rx) = watch::channel(Arc::new(trust));
        let signer = Arc::new(LocalSigner {
            signed: signed.clone(),
        });
        let cache = Cache::spawn(signer, trust_rx, CacheOptions::default(), shutdown.clone());
        let state = AgentState {
            cache,
            attestor: Arc::new(FixedAttestor),
        };
        let service = InProcess {
            server: SdsServer::new(state),
            cred: own_credentials().await,
        };
        let out = body(SecretDiscoveryServiceClient::new(service)).await;
        shutdown.cancel();
        out
    });
    drop(runtime);
    assert!(
        !PANICKED.with(Cell::get),
        "a task of the agent panicked (see the message above)"
    );
    let signed = signed.lock().map(|s| s.clone()).unwrap_or_default();
    (out, signed)
}

thread_local! {
    /// Whether a panic happened on this thread since [`with_agent`] started.
    static PANICKED: Cell<bool> = const { Cell::new(false) };
}

/// Records panics on this thread before the previous hook runs (which prints them, or under
/// libFuzzer aborts), so that a panic inside a spawned task is not lost.
fn watch_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.with(|p| p.set(true));
            previous(info);
        }));
    });
}

/// This process's own credentials, as the kernel reports them for a unix socket peer.
async fn own_credentials() -> UCred {
    let cred = tokio::net::UnixStream::pair().and_then(|(ours, _theirs)| ours.peer_cred());
    match cred {
        Ok(cred) => cred,
        Err(e) => panic!("cannot read peer credentials from a socket pair: {e}"),
    }
}

/// The SDS service as a client's transport: each request gets the caller's socket credentials,
/// as the agent's unix socket would give it, and goes straight to the service.
#[derive(Clone)]
pub(super) struct InProcess {
    server: SdsServer,
    cred: UCred,
}

type ServerFuture = <SdsServer as tower::Service<http::Request<tonic::body::Body>>>::Future;

impl tower::Service<http::Request<tonic::body::Body>> for InProcess {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = ServerFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        request.extensions_mut().insert(UdsConnectInfo {
            peer_addr: None,
            peer_cred: Some(self.cred),
        });
        tower::Service::call(&mut self.server, request)
    }
}

/// Attests every caller with [`CALLER_SELECTOR`].
struct FixedAttestor;

#[tonic::async_trait]
impl Attestor for FixedAttestor {
    async fn selectors(&self, _workload: &Workload) -> Result<Vec<String>, AttestError> {
        let (kind, key, value) = CALLER_SELECTOR;
        Ok(vec![format!("{kind}:{key}:{value}")])
    }
}

/// An entry for `id` whose one selector is `uid`'s.
pub(super) fn entry(id: &SpiffeId, uid: &str) -> Entry {
    Entry {
        spiffe_id: id.to_string(),
        any_node: true,
        selectors: vec![Selector {
            kind: CALLER_SELECTOR.0.to_owned(),
            key: CALLER_SELECTOR.1.to_owned(),
            value: uid.to_owned(),
        }],
        ..Entry::default()
    }
}

/// Signs every CSR with [`local_ca`] for an hour, recording which identities it was asked for.
struct LocalSigner {
    signed: Arc<Mutex<Vec<SpiffeId>>>,
}

#[tonic::async_trait]
impl SvidSigner for LocalSigner {
    async fn sign(
        &self,
        requests: Vec<SignRequest>,
    ) -> Result<Vec<Result<SignedChain, String>>, String> {
        if let Ok(mut signed) = self.signed.lock() {
            signed.extend(requests.iter().map(|r| r.spiffe_id.clone()));
        }
        Ok(requests.iter().map(|r| sign_leaf(&r.csr)).collect())
    }
}

fn sign_leaf(csr: &[u8]) -> Result<SignedChain, String> {
    let ca = local_ca();
    let mut csr =
        CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr))
            .map_err(|e| e.to_string())?;
    let now = SystemTime::now();
    csr.params.not_before = (now - Duration::from_secs(60)).into();
    csr.params.not_after = (now + Duration::from_secs(3600)).into();
    csr.params.is_ca = IsCa::ExplicitNoCa;
    csr.params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    csr.params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let leaf = csr.signed_by(&ca.issuer).map_err(|e| e.to_string())?;
    Ok(SignedChain {
        chain: vec![leaf.der().to_vec(), ca.cert.clone()],
    })
}

/// A CA for `spiffe://example.org`, made once per process.
pub(super) struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, DER: the agent's one root.
    pub(super) cert: Vec<u8>,
}

pub(super) fn local_ca() -> &'static LocalCa {
    static CA: OnceLock<LocalCa> = OnceLock::new();
    CA.get_or_init(|| match make_ca() {
        Ok(ca) => ca,
        Err(e) => panic!("cannot make the fuzzing CA: {e}"),
    })
}

fn make_ca() -> Result<LocalCa, rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "halyard fuzzing CA");
    params.subject_alt_names = vec![SanType::URI("spiffe://example.org".try_into()?)];
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key)?.der().to_vec();
    Ok(LocalCa {
        issuer: Issuer::new(params, key),
        cert,
    })
}
