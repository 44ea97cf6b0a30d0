//! `grpc_requests`: arbitrary bytes as each request the CA serves, through the conversions the
//! API makes before it touches any state.

use std::str::FromStr;

use halyard_proto::api::ca::{
    ActivateAuthorityRequest, AddRootRequest, AttestRequest, CreateEntryRequest,
    CreateJoinTokenRequest, DeleteEntryRequest, ListEntriesRequest, PrepareAuthorityRequest,
    RemoveRootRequest, RevokeRequest, SignX509SvidsRequest, TaintAuthorityRequest,
    WatchTrustRequest, revoke_request,
};
use halyard_proto::api::istio_auth::IstioCertificateRequest;
use halyard_proto::{SpiffeId, TrustDomain, Ttl, validate_signing_cert};
use prost::Message;

use super::csr_policy::{check_signing, fixed_id};
use super::pki;
use crate::authority::{
    Authority, Csr, Grant, Policy, PrivateKey, RevocationReason, Serial, certs_from_pem,
};

/// The Istio caller's identity (the API takes it from the mTLS peer, not the request).
const ISTIO_CALLER: &str = "spiffe://example.org/ns/default/sa/fuzz";

/// Asserts that no request the CA serves can make it panic on the way in.
///
/// The first byte picks the request type, the rest is its protobuf encoding. A message that
/// decodes must re-encode stably, and then go through what the API does with it before any
/// store or network call: SPIFFE IDs, node names, TTLs, serials and revocation reasons parsed
/// (each checked to round-trip), CSRs parsed under the authority's key policy and signed for the
/// identity the API would grant ([`check_signing`] holds), and PEM certificate chains read and
/// judged as a root or an intermediate would be.
///
/// # Panics
///
/// When any of those properties fails; never otherwise.
pub fn grpc_requests(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 13 {
        0 => with::<SignX509SvidsRequest>(bytes, sign_x509_svids),
        1 => with::<AttestRequest>(bytes, attest),
        2 => with::<IstioCertificateRequest>(bytes, istio),
        3 => with::<CreateEntryRequest>(bytes, create_entry),
        4 => with::<RevokeRequest>(bytes, revoke),
        5 => with::<CreateJoinTokenRequest>(bytes, |r| node_name(&r.node)),
        6 => with::<PrepareAuthorityRequest>(bytes, |r| intermediate_chain(&r.certificate_pem)),
        7 => with::<AddRootRequest>(bytes, |r| one_root(&r.certificate_pem)),
        8 => with::<RemoveRootRequest>(bytes, |r| one_root(&r.certificate_pem)),
        9 => with::<ListEntriesRequest>(bytes, |r| node_name(&r.node)),
        10 => with::<DeleteEntryRequest>(bytes, |_| {}),
        11 => with::<ActivateAuthorityRequest>(bytes, |_| {}),
        _ => {
            with::<TaintAuthorityRequest>(bytes, |_| {});
            with::<WatchTrustRequest>(bytes, |_| {});
        }
    }
}

/// Decodes `bytes` as `M`; what decodes must re-encode to bytes that decode and re-encode the
/// same (bytes, not values: a `Struct` may hold NaN), and is then handed to `then`.
fn with<M: Message + Default>(bytes: &[u8], then: impl FnOnce(M)) {
    let Ok(message) = M::decode(bytes) else {
        return;
    };
    let encoded = message.encode_to_vec();
    match M::decode(encoded.as_slice()) {
        Ok(again) => assert_eq!(again.encode_to_vec(), encoded, "re-encoding is not stable"),
        Err(e) => panic!("a decoded message re-encodes to bytes that do not decode: {e}"),
    }
    then(message);
}

fn trust_domain() -> &'static TrustDomain {
    pki().authority.trust_domain()
}

/// `SignX509Svids`: each item's ID and TTL parsed, its CSR judged and signed as if an entry
/// granted that ID.
fn sign_x509_svids(request: SignX509SvidsRequest) {
    for item in request.requests {
        let id = spiffe_id(&item.spiffe_id);
        let ttl = ttl(item.ttl_seconds);
        let Ok(csr) = Csr::parse(&item.csr, &pki().authority.policy().keys) else {
            continue;
        };
        if let Some(id) = id {
            check_signing(&csr, &Grant::new(id), ttl);
        }
    }
}

/// `Attest`: the CSR judged first (a bad one must not burn the token), then signed for the node
/// without requiring the ID in the CSR, for the longest TTL.
fn attest(request: AttestRequest) {
    let Ok(csr) = Csr::parse(&request.csr, &pki().authority.policy().keys) else {
        return;
    };
    let grant = Grant {
        id_in_csr: false,
        ..Grant::new(fixed_id("spiffe://example.org/halyard/node/fuzz"))
    };
    check_signing(&csr, &grant, Some(pki().authority.policy().max_ttl));
}

/// `CreateCertificate`: a PEM CSR for the caller's own identity, for `validity_duration`.
fn istio(request: IstioCertificateRequest) {
    let ttl = u64::try_from(request.validity_duration)
        .ok()
        .and_then(Ttl::from_secs);
    if let Some(ttl) = ttl {
        assert!(request.validity_duration > 0);
        assert_eq!(
            i64::try_from(ttl.as_secs()).ok(),
            Some(request.validity_duration)
        );
    }
    let Ok(csr) = Csr::parse(request.csr.as_bytes(), &pki().authority.policy().keys) else {
        return;
    };
    check_signing(&csr, &Grant::new(fixed_id(ISTIO_CALLER)), ttl);
}

/// `CreateEntry`: the entry's ID, node name and TTL.
fn create_entry(request: CreateEntryRequest) {
    let Some(entry) = request.entry else {
        return;
    };
    spiffe_id(&entry.spiffe_id);
    if !entry.node.is_empty() {
        node_name(&entry.node);
    }
    ttl(entry.ttl_seconds);
}

/// `Revoke`: the reason by its RFC 5280 name, the target as a serial or a SPIFFE ID.
fn revoke(request: RevokeRequest) {
    if !request.reason.is_empty() {
        reason(&request.reason);
    }
    match &request.target {
        Some(revoke_request::Target::Serial(text)) => serial(text),
        Some(revoke_request::Target::SpiffeId(id)) => {
            spiffe_id(id);
        }
        None => {}
    }
}

/// A SPIFFE ID from the wire; what parses displays as given and parses again equal.
fn spiffe_id(text: &str) -> Option<SpiffeId> {
    let id = SpiffeId::new(text).ok()?;
    assert_eq!(id.as_str(), text, "a SPIFFE ID does not display as given");
    assert_eq!(SpiffeId::new(id.as_str()).as_ref(), Ok(&id));
    Some(id)
}

/// A TTL in seconds from the wire: none for zero, else exactly that many seconds.
fn ttl(secs: u64) -> Option<Ttl> {
    let ttl = Ttl::from_secs(secs);
    assert_eq!(ttl.map(Ttl::as_secs), (secs > 0).then_some(secs));
    ttl
}

/// A node name becomes `spiffe://<td>/halyard/node/<name>` or is refused, and the CA reads the
/// name back out of that ID.
fn node_name(name: &str) {
    let Ok(id) = SpiffeId::from_segments(trust_domain(), &["halyard", "node", name]) else {
        return;
    };
    assert_eq!(id.path(), format!("/halyard/node/{name}"));
    assert!(id.is_member_of(trust_domain()));
    assert_eq!(id.path().strip_prefix("/halyard/node/"), Some(name));
    assert!(
        !name.contains('/'),
        "node name {name:?} spans several segments"
    );
}

/// A revocation reason: what parses is one of RFC 5280's names and displays as given.
fn reason(text: &str) {
    match RevocationReason::from_str(text) {
        Ok(reason) => assert_eq!(reason.to_string(), text),
        Err(message) => assert!(message.contains(&format!("{text:?}")), "{message}"),
    }
}

/// A serial in hex (colons allowed): it parses exactly when it is a positive integer of at most
/// 20 DER bytes, and then displays as its lowercase hex without leading zeros.
fn serial(text: &str) {
    let digits: String = text.chars().filter(|c| *c != ':').collect();
    let hex = !digits.is_empty() && digits.chars().all(|c| c.is_ascii_hexdigit());
    let significant = digits.trim_start_matches('0').to_ascii_lowercase();
    let bytes = significant.len().div_ceil(2);
    let top_bit = significant.len().is_multiple_of(2)
        && significant
            .chars()
            .next()
            .is_some_and(|c| c.to_digit(16).is_some_and(|d| d >= 8));
    let fits = bytes + usize::from(top_bit) <= 20;
    let parsed = Serial::from_str(text);
    assert_eq!(
        parsed.is_ok(),
        hex && !significant.is_empty() && fits,
        "serial {text:?}: {parsed:?}"
    );
    if let Ok(serial) = parsed {
        let shown = serial.to_string();
        assert_eq!(shown.trim_start_matches('0'), significant);
        assert_eq!(Serial::from_str(&shown).as_ref(), Ok(&serial));
        assert_eq!(
            Serial::from_be_bytes(serial.as_bytes()).as_ref(),
            Ok(&serial)
        );
    }
}

/// `AddRoot` and `RemoveRoot`: one PEM certificate, judged as an X509-SVID signing certificate
/// that is self-issued.
fn one_root(pem: &[u8]) {
    let Ok(certs) = certs_from_pem(pem) else {
        return;
    };
    assert!(!certs.is_empty(), "a PEM read as no certificate at all");
    if let [root] = certs.as_slice() {
        let _ = validate_signing_cert(root);
    }
}

/// `PrepareAuthority`: a PEM chain for the pending key, judged as the intermediate would be.
/// Here the key is the fuzzing intermediate's own, so that a chain leading with that
/// intermediate builds a usable authority, which must then serve the trust domain its
/// certificate names.
fn intermediate_chain(pem: &[u8]) {
    let Ok(chain) = certs_from_pem(pem) else {
        return;
    };
    let key = match PrivateKey::from_pkcs8_pem(pki().intermediate_key_pem.as_bytes()) {
        Ok(key) => key,
        Err(e) => panic!("the fuzzing intermediate's key does not read back: {e}"),
    };
    let first = chain.first().cloned().unwrap_or_default();
    let Ok(authority) = Authority::new(key, chain, Policy::default()) else {
        return;
    };
    match validate_signing_cert(&first) {
        Ok(cert) => assert_eq!(
            cert.trust_domain(),
            Some(authority.trust_domain()),
            "the authority serves another trust domain than its certificate names"
        ),
        Err(e) => panic!("an authority was built on a certificate that cannot sign: {e}"),
    }
}
