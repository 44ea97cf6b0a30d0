//! Properties the fuzz targets assert, shared with the tests that replay their corpus.
//!
//! Each function takes arbitrary bytes and panics if, and only if, a property is violated.
//!
//! Compiled for tests and with the `fuzzing` feature only (which turns on tokio's paused clock).

mod agent;

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::DataSource;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::secret::Type;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use halyard_proto::{SpiffeId, TrustDomain, validate_leaf};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

use crate::cache::TrustState;
use crate::sds::{MAX_RESOURCE_NAMES, ROOTCA, SECRET_TYPE_URL};

/// Most requests read from one input.
const MAX_REQUESTS: usize = 8;
/// The identities with a registration entry; the input says which the caller is entitled to.
const IDENTITIES: [&str; 3] = [
    "spiffe://example.org/ns/default/sa/web",
    "spiffe://example.org/ns/default/sa/db",
    "spiffe://example.org/ns/default/sa/cache",
];
/// Time (on the paused clock) between requests on a stream, and after the last one: enough for
/// every certificate asked for to be signed and pushed.
const STEP: Duration = Duration::from_secs(1);
const TAIL: Duration = Duration::from_secs(30);
/// How long a `FetchSecrets` may wait for a resource before it is deemed never to come.
const FETCH_PATIENCE: Duration = Duration::from_secs(120);

/// Asserts the SDS properties on arbitrary requests from Envoy.
///
/// The input is read as: a mode (byte 0: `FetchSecrets`, `StreamSecrets` or `DeltaSecrets`),
/// the trust state (byte 1: bits 0 to 2 entitle the caller to the web, db and cache identities,
/// bit 3 empties the bundle, bit 4 adds a CRL), then up to eight length-delimited
/// `DiscoveryRequest`s (`DeltaDiscoveryRequest`s in delta mode). They go to the agent's real SDS
/// service and SVID cache, in memory, one a second on a paused clock, and:
/// - nothing panics, in the request path or in any task it spawns;
/// - every secret served was requested, is `ROOTCA` holding exactly the bundle's roots (and CRLs),
///   or a certificate whose chain's leaf is an X509-SVID of the identity the name stands for
///   (`default`: the caller's first; a SPIFFE ID: itself, if the caller may hold it), chained to
///   the CA and served with its own private key;
/// - the CA is never asked for an identity the caller may not hold;
/// - a request is refused exactly when it names something the caller may not have, with
///   `PERMISSION_DENIED` for identities and `INVALID_ARGUMENT` for names that are none, or
///   breaks the protocol (`INVALID_ARGUMENT`: another type than secrets, more than
///   [`MAX_RESOURCE_NAMES`] names, a nonce on a stream's first request);
/// - what may be served is served: `FetchSecrets` answers every name in order (or waits, only for
///   `ROOTCA` of an empty bundle), a stream ends up serving every name it asked for;
/// - responses are numbered 1, 2, … and a delta removal names only what Envoy holds.
///
/// # Panics
///
/// When any of those properties fails; never otherwise.
pub fn sds_request(data: &[u8]) {
    let [mode, flags, rest @ ..] = data else {
        return;
    };
    let world = World::new(*flags);
    match mode % 3 {
        0 => fetch(&world, rest),
        1 => state_of_the_world(&world, rest),
        _ => delta(&world, rest),
    }
}

/// The trust state the agent is given, and what it entitles the caller to.
struct World {
    /// Identities the caller may hold, in entry order.
    entitled: Vec<SpiffeId>,
    /// Identities with an entry, entitled or not.
    all: Vec<SpiffeId>,
    roots: Vec<Vec<u8>>,
    crls: Vec<Vec<u8>>,
}

/// What a resource name stands for.
#[derive(Debug, PartialEq, Eq)]
enum Served {
    RootCa,
    Svid(SpiffeId),
}

impl World {
    fn new(flags: u8) -> World {
        let all: Vec<SpiffeId> = IDENTITIES.iter().map(|id| fixed_id(id)).collect();
        let entitled = all
            .iter()
            .enumerate()
            .filter(|(i, _)| flags & (1 << i) != 0)
            .map(|(_, id)| id.clone())
            .collect();
        World {
            entitled,
            all,
            roots: if flags & 0x08 == 0 {
                vec![agent::local_ca().cert.clone()]
            } else {
                Vec::new()
            },
            crls: if flags & 0x10 == 0 {
                Vec::new()
            } else {
                vec![b"a CRL, as opaque to the agent as any".to_vec()]
            },
        }
    }

    fn trust(&self) -> TrustState {
        let entries = self
            .all
            .iter()
            .map(|id| {
                let uid = if self.entitled.contains(id) {
                    agent::CALLER_SELECTOR.2
                } else {
                    "2000"
                };
                agent::entry(id, uid)
            })
            .collect();
        TrustState {
            version: 1,
            trust_domain: TrustDomain::new("example.org").ok(),
            roots: self.roots.clone(),
            crls: self.crls.clone(),
            entries,
            ..TrustState::default()
        }
    }

    /// What `name` must be served as, or the code it must be refused with.
    fn resolve(&self, name: &str) -> Result<Served, Code> {
        if name == ROOTCA {
            return Ok(Served::RootCa);
        }
        if name == "default" {
            return self
                .entitled
                .first()
                .cloned()
                .map(Served::Svid)
                .ok_or(Code::PermissionDenied);
        }
        match SpiffeId::new(name) {
            Ok(id) if self.entitled.contains(&id) => Ok(Served::Svid(id)),
            Ok(_) => Err(Code::PermissionDenied),
            Err(_) => Err(Code::InvalidArgument),
        }
    }

    /// The code a request for `names` must be refused with: that of its first refused name.
    fn refusal(&self, names: &[String]) -> Option<Code> {
        if names.len() > MAX_RESOURCE_NAMES {
            return Some(Code::InvalidArgument);
        }
        names.iter().find_map(|name| self.resolve(name).err())
    }

    /// The same for a request of `type_url`, which is checked first.
    fn request_refusal(&self, type_url: &str, names: &[String]) -> Option<Code> {
        if wrong_type(type_url) {
            return Some(Code::InvalidArgument);
        }
        self.refusal(names)
    }

    /// Whether `name` can never be served (the validation context of an empty bundle).
    fn never_ready(&self, name: &str) -> bool {
        name == ROOTCA && self.roots.is_empty()
    }

    /// The CA was asked only for identities the caller may hold.
    fn check_signed(&self, signed: &[SpiffeId]) {
        for id in signed {
            assert!(
                self.entitled.contains(id),
                "the agent asked the CA for {id}, which the caller may not hold"
            );
        }
    }
}

/// Whether a request asks for another type than secrets (an empty type means secrets).
fn wrong_type(type_url: &str) -> bool {
    !type_url.is_empty() && type_url != SECRET_TYPE_URL
}

fn fixed_id(text: &str) -> SpiffeId {
    match SpiffeId::new(text) {
        Ok(id) => id,
        Err(e) => panic!("fixed ID {text:?} does not parse: {e}"),
    }
}

/// Up to [`MAX_REQUESTS`] length-delimited messages, up to the first that does not decode.
fn requests<M: Message + Default>(mut bytes: &[u8]) -> Vec<M> {
    let mut out = Vec::new();
    while !bytes.is_empty() && out.len() < MAX_REQUESTS {
        match M::decode_length_delimited(&mut bytes) {
            Ok(message) => out.push(message),
            Err(_) => break,
        }
    }
    out
}

fn fetch(world: &World, bytes: &[u8]) {
    let Some(request) = requests::<DiscoveryRequest>(bytes).into_iter().next() else {
        return;
    };
    let names = request.resource_names.clone();
    let refusal = world.request_refusal(&request.type_url, &names);
    let (answer, signed) = agent::with_agent(world.trust(), |mut client| async move {
        tokio::time::timeout(FETCH_PATIENCE, client.fetch_secrets(request)).await
    });
    world.check_signed(&signed);
    let waits = names.iter().any(|name| world.never_ready(name));
    match answer {
        Err(_) => assert!(
            refusal.is_none() && waits,
            "FetchSecrets for {names:?} never answered"
        ),
        Ok(Err(status)) => assert_eq!(
            Some(status.code()),
            refusal,
            "FetchSecrets for {names:?} refused: {status:?}"
        ),
        Ok(Ok(response)) => {
            assert!(refusal.is_none(), "FetchSecrets for {names:?} answered");
            assert!(
                !waits,
                "FetchSecrets for {names:?} served ROOTCA without roots"
            );
            let response = response.into_inner();
            assert_eq!(response.type_url, SECRET_TYPE_URL);
            let served: Vec<String> = response
                .resources
                .iter()
                .map(|any| check_secret(world, any, &names))
                .collect();
            assert_eq!(served, names, "FetchSecrets answered other names");
        }
    }
}

/// Sends `requests` one [`STEP`] apart, then waits [`TAIL`] and closes the stream, while the
/// caller collects the responses and how the stream ended.
async fn exchange<Req, Resp, F, Fut>(requests: Vec<Req>, open: F) -> (Vec<Resp>, Option<Status>)
where
    Req: Send + 'static,
    F: FnOnce(ReceiverStream<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<tonic::Streaming<Resp>>, Status>>,
{
    let (tx, rx) = mpsc::channel(MAX_REQUESTS);
    tokio::spawn(async move {
        for request in requests {
            tokio::time::sleep(STEP).await;
            if tx.send(request).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(TAIL).await;
    });
    let mut stream = match open(ReceiverStream::new(rx)).await {
        Ok(response) => response.into_inner(),
        Err(status) => return (Vec::new(), Some(status)),
    };
    let mut responses = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(response)) => responses.push(response),
            Ok(None) => return (responses, None),
            Err(status) => return (responses, Some(status)),
        }
    }
}

fn state_of_the_world(world: &World, bytes: &[u8]) {
    let requests: Vec<DiscoveryRequest> = requests(bytes);
    if requests.is_empty() {
        return;
    }
    let sent = requests.clone();
    let ((responses, end), signed): ((Vec<DiscoveryResponse>, _), _) =
        agent::with_agent(world.trust(), |mut client| async move {
            exchange(sent, |stream| client.stream_secrets(stream)).await
        });
    world.check_signed(&signed);

    let asked: Vec<String> = requests
        .iter()
        .flat_map(|r| r.resource_names.iter().cloned())
        .collect();
    for (i, response) in responses.iter().enumerate() {
        assert_eq!(response.type_url, SECRET_TYPE_URL);
        assert_eq!(response.version_info, (i + 1).to_string(), "versions skip");
        assert_eq!(response.nonce, (i + 1).to_string(), "nonces skip");
        for any in &response.resources {
            check_secret(world, any, &asked);
        }
    }
    let protocol_error = requests
        .iter()
        .any(|r| wrong_type(&r.type_url) || r.resource_names.len() > MAX_RESOURCE_NAMES)
        || !requests[0].response_nonce.is_empty();
    check_end(world, &asked, end.as_ref(), protocol_error);

    // A request with an empty nonce is never stale, so with none stale every request counts: the
    // stream is refused at the first that names something the caller may not have, or ends up
    // serving all the last one names.
    if requests.iter().all(|r| r.response_nonce.is_empty()) {
        let expected = requests
            .iter()
            .find_map(|r| world.request_refusal(&r.type_url, &r.resource_names));
        assert_eq!(
            end.as_ref().map(Status::code),
            expected,
            "stream ended with {end:?}"
        );
        let last = requests
            .last()
            .map(|r| r.resource_names.clone())
            .unwrap_or_default();
        if expected.is_none() && !last.iter().any(|name| world.never_ready(name)) {
            let served: Vec<String> = responses
                .last()
                .map(|r| r.resources.iter().map(secret_name).collect())
                .unwrap_or_default();
            assert_eq!(
                served, last,
                "the stream does not end up serving what it asked for"
            );
        }
    }
}

fn delta(world: &World, bytes: &[u8]) {
    let requests: Vec<DeltaDiscoveryRequest> = requests(bytes);
    if requests.is_empty() {
        return;
    }
    let sent = requests.clone();
    let ((responses, end), signed): ((Vec<DeltaDiscoveryResponse>, _), _) =
        agent::with_agent(world.trust(), |mut client| async move {
            exchange(sent, |stream| client.delta_secrets(stream)).await
        });
    world.check_signed(&signed);

    let asked: Vec<String> = requests
        .iter()
        .flat_map(|r| r.resource_names_subscribe.iter().cloned())
        .collect();
    let initial: HashMap<String, String> = requests
        .first()
        .map(|r| r.initial_resource_versions.clone())
        .unwrap_or_default();
    let mut ever_sent: Vec<String> = Vec::new();
    for (i, response) in responses.iter().enumerate() {
        assert_eq!(response.type_url, SECRET_TYPE_URL);
        assert_eq!(response.nonce, (i + 1).to_string(), "nonces skip");
        assert_eq!(response.system_version_info, response.nonce);
        let mut names = Vec::new();
        for resource in &response.resources {
            let Some(any) = &resource.resource else {
                panic!("resource {:?} sent without content", resource.name);
            };
            assert_eq!(check_secret(world, any, &asked), resource.name);
            assert!(
                !resource.version.is_empty(),
                "{} has no version",
                resource.name
            );
            names.push(resource.name.clone());
        }
        for removed in &response.removed_resources {
            assert!(
                ever_sent.contains(removed) || initial.contains_key(removed),
                "removed {removed:?}, which Envoy never held"
            );
            assert!(
                !names.contains(removed),
                "{removed:?} both sent and removed"
            );
        }
        ever_sent.extend(names);
    }
    let protocol_error =
        requests.iter().any(|r| wrong_type(&r.type_url)) || asked.len() > MAX_RESOURCE_NAMES;
    check_end(world, &asked, end.as_ref(), protocol_error);

    // Delta requests are never stale: the subscription is the running sum of subscribes and
    // unsubscribes, and it is refused when it changes to include a name the caller may not have.
    let mut subscribed: Vec<String> = Vec::new();
    let mut expected = None;
    for (i, request) in requests.iter().enumerate() {
        if wrong_type(&request.type_url) {
            expected = Some(Code::InvalidArgument);
            break;
        }
        let before = subscribed.clone();
        for name in &request.resource_names_subscribe {
            if !subscribed.contains(name) {
                subscribed.push(name.clone());
            }
        }
        subscribed.retain(|name| !request.resource_names_unsubscribe.contains(name));
        if i > 0 && subscribed == before {
            continue;
        }
        expected = world.refusal(&subscribed);
        if expected.is_some() {
            break;
        }
    }
    assert_eq!(
        end.as_ref().map(Status::code),
        expected,
        "stream ended with {end:?}"
    );
    if expected.is_none() {
        for name in subscribed.iter().filter(|name| !world.never_ready(name)) {
            assert!(
                ever_sent.contains(name) || initial.contains_key(name),
                "{name:?} was subscribed to but never sent"
            );
        }
    }
}

/// A stream may end in an error only to refuse a name that was asked for, or (with
/// `INVALID_ARGUMENT`) a request that breaks the protocol.
fn check_end(world: &World, asked: &[String], end: Option<&Status>, protocol_error: bool) {
    let Some(status) = end else {
        return;
    };
    let justified = (protocol_error && status.code() == Code::InvalidArgument)
        || asked
            .iter()
            .any(|name| world.resolve(name).err() == Some(status.code()));
    assert!(justified, "the stream for {asked:?} ended with {status:?}");
}

/// The name of a served secret (checked by [`check_secret`] before).
fn secret_name(any: &Any) -> String {
    Secret::decode(any.value.as_slice())
        .map(|s| s.name)
        .unwrap_or_default()
}

/// Checks one served secret against what its name stands for; returns the name.
fn check_secret(world: &World, any: &Any, asked: &[String]) -> String {
    assert_eq!(any.type_url, SECRET_TYPE_URL);
    let secret = match Secret::decode(any.value.as_slice()) {
        Ok(secret) => secret,
        Err(e) => panic!("a served secret does not decode: {e}"),
    };
    let name = secret.name;
    assert!(
        asked.contains(&name),
        "served {name:?}, which was not asked for"
    );
    let served = match world.resolve(&name) {
        Ok(served) => served,
        Err(code) => panic!("served {name:?}, which must be refused with {code:?}"),
    };
    match (served, secret.r#type) {
        (Served::RootCa, Some(Type::ValidationContext(context))) => {
            assert_eq!(
                pem_blocks(context.trusted_ca, "CERTIFICATE"),
                world.roots,
                "ROOTCA does not hold the bundle's roots"
            );
            if world.crls.is_empty() {
                assert!(context.crl.is_none() && !context.only_verify_leaf_cert_crl);
            } else {
                assert_eq!(pem_blocks(context.crl, "X509 CRL"), world.crls);
                assert!(context.only_verify_leaf_cert_crl);
            }
        }
        (Served::Svid(id), Some(Type::TlsCertificate(tls))) => {
            let chain = pem_blocks(tls.certificate_chain, "CERTIFICATE");
            let Some((leaf, above)) = chain.split_first() else {
                panic!("{name:?} served with an empty chain");
            };
            match validate_leaf(leaf) {
                Ok(svid) => assert_eq!(svid.spiffe_id(), &id, "{name:?} served for another ID"),
                Err(e) => panic!("{name:?} served with a leaf that is not an X509-SVID: {e}"),
            }
            assert_eq!(
                above,
                [agent::local_ca().cert.clone()],
                "chain does not lead to the CA"
            );
            let key = pem_blocks(tls.private_key, "PRIVATE KEY");
            let [key] = key.as_slice() else {
                panic!("{name:?} served with {} private keys", key.len());
            };
            let public = match rcgen::KeyPair::try_from(key.as_slice()) {
                Ok(pair) => pair.public_key_raw().to_vec(),
                Err(e) => panic!("{name:?} served with a key that does not read: {e}"),
            };
            let certified = x509_parser::parse_x509_certificate(leaf)
                .map(|(_, cert)| cert.public_key().subject_public_key.data.to_vec())
                .unwrap_or_default();
            assert_eq!(
                public, certified,
                "{name:?} served with another key than its leaf's"
            );
        }
        (served, other) => panic!("{name:?} ({served:?}) served as {other:?}"),
    }
    name
}

/// The contents of the PEM blocks, all with `tag`, in an inline data source.
fn pem_blocks(source: Option<DataSource>, tag: &str) -> Vec<Vec<u8>> {
    let bytes = match source.and_then(|s| s.specifier) {
        Some(Specifier::InlineBytes(bytes)) => bytes,
        Some(Specifier::InlineString(text)) => text.into_bytes(),
        other => panic!("a secret is not inline: {other:?}"),
    };
    let blocks = match pem::parse_many(&bytes) {
        Ok(blocks) => blocks,
        Err(e) => panic!("a secret is not PEM: {e}"),
    };
    blocks
        .into_iter()
        .map(|block| {
            assert_eq!(block.tag(), tag);
            block.into_contents()
        })
        .collect()
}

#[cfg(test)]
mod tests;
