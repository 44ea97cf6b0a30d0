//! `csr_policy`: arbitrary bytes as a CSR, judged by the key policy and then by the signer.

use std::time::{Duration, SystemTime};

use halyard_proto::{SpiffeId, TrustDomain, Ttl, validate_leaf};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::pki;
use crate::authority::{Csr, Grant, KeyPolicy, MAX_CSR_BYTES, SignError};

/// The identity granted when a CSR names none of its own.
const FALLBACK_ID: &str = "spiffe://example.org/fuzz/workload";

/// The identity node attestation grants (its CSR may name no URI at all).
const NODE_ID: &str = "spiffe://example.org/halyard/node/fuzz";

/// Asserts the CSR policy on arbitrary input.
///
/// [`Csr::parse`] under [`KeyPolicy::default`] must never panic and accept nothing larger than
/// [`MAX_CSR_BYTES`] or with a key the policy refuses. What it accepts goes to
/// [`crate::authority::Authority::sign_svid`] twice: for a workload grant of the CSR's own SPIFFE
/// ID (and those of its DNS names an entry could hold), and for a node grant that does not
/// require the ID in the CSR. Each time, [`check_signing`] holds.
///
/// # Panics
///
/// When any of those properties fails; never otherwise.
pub fn csr_policy(data: &[u8]) {
    let keys = KeyPolicy::default();
    let csr = match Csr::parse(data, &keys) {
        Ok(csr) => csr,
        Err(e) => {
            assert!(!e.to_string().is_empty(), "a refusal without a message");
            return;
        }
    };
    assert!(data.len() <= MAX_CSR_BYTES, "accepted {} bytes", data.len());
    if let Err(e) = keys.check(csr.key()) {
        panic!("accepted a key the policy refuses: {e}");
    }

    let own = match csr.uris() {
        [one] => SpiffeId::new(one).ok(),
        _ => None,
    };
    let mut grant = Grant::new(own.unwrap_or_else(|| fixed_id(FALLBACK_ID)));
    grant.dns_names = csr
        .dns_names()
        .iter()
        .filter(|name| entry_may_hold(name))
        .cloned()
        .collect();
    check_signing(&csr, &grant, None);

    let node = Grant {
        id_in_csr: false,
        ..Grant::new(fixed_id(NODE_ID))
    };
    check_signing(&csr, &node, None);
}

/// A SPIFFE ID written in this module.
pub(super) fn fixed_id(text: &str) -> SpiffeId {
    match SpiffeId::new(text) {
        Ok(id) => id,
        Err(e) => panic!("fixed ID {text:?} does not parse: {e}"),
    }
}

/// Whether the admin API would let an entry carry this DNS name.
fn entry_may_hold(name: &str) -> bool {
    !name.is_empty() && name.is_ascii() && !name.contains(char::is_whitespace)
}

/// Which X509-SVID request rule a CSR and grant break, named by the refusal it should cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    CaRequested,
    NoUriSan,
    MultipleUriSans,
    NotSpiffeId,
    WrongTrustDomain,
    NoPath,
    NotAuthorized,
    OtherSans,
    DnsNameNotAllowed,
    TooManyDnsNames,
}

/// Every rule `csr` and `grant` break, worked out from the rules, not from the signer's code.
fn broken_rules(csr: &Csr, grant: &Grant, td: &TrustDomain, max_dns: usize) -> Vec<Rule> {
    let mut broken = Vec::new();
    if !grant.spiffe_id.is_member_of(td) {
        broken.push(Rule::WrongTrustDomain);
    }
    if grant.spiffe_id.is_trust_domain_id() {
        broken.push(Rule::NoPath);
    }
    if csr.requests_ca() {
        broken.push(Rule::CaRequested);
    }
    match csr.uris() {
        [] if grant.id_in_csr => broken.push(Rule::NoUriSan),
        [] => {}
        [one] => match SpiffeId::new(one) {
            Err(_) => broken.push(Rule::NotSpiffeId),
            Ok(id) if !id.is_member_of(td) => broken.push(Rule::WrongTrustDomain),
            Ok(id) if id != grant.spiffe_id => broken.push(Rule::NotAuthorized),
            Ok(_) => {}
        },
        _ => broken.push(Rule::MultipleUriSans),
    }
    if csr.other_names() > 0 {
        broken.push(Rule::OtherSans);
    }
    if csr
        .dns_names()
        .iter()
        .any(|name| !grant.dns_names.contains(name))
    {
        broken.push(Rule::DnsNameNotAllowed);
    }
    if grant.dns_names.len() > max_dns {
        broken.push(Rule::TooManyDnsNames);
    }
    broken
}

/// The rule a refusal names; `None` for refusals no request should ever cause here (an
/// internal signing failure, an intermediate out of its validity).
fn rule_of(error: &SignError) -> Option<Rule> {
    Some(match error {
        SignError::CaRequested => Rule::CaRequested,
        SignError::NoUriSan(_) => Rule::NoUriSan,
        SignError::MultipleUriSans(_) => Rule::MultipleUriSans,
        SignError::NotSpiffeId { .. } => Rule::NotSpiffeId,
        SignError::WrongTrustDomain { .. } => Rule::WrongTrustDomain,
        SignError::NoPath(_) => Rule::NoPath,
        SignError::NotAuthorized { .. } => Rule::NotAuthorized,
        SignError::OtherSans(_) => Rule::OtherSans,
        SignError::DnsNameNotAllowed { .. } => Rule::DnsNameNotAllowed,
        SignError::TooManyDnsNames { .. } => Rule::TooManyDnsNames,
        _ => return None,
    })
}

/// Signs `csr` for `grant` with the fuzzing authority and asserts:
/// - it signs if and only if no X509-SVID request rule is broken, and a refusal names a rule
///   that is (never an internal signing failure);
/// - what it signs passes [`validate_leaf`], carries exactly the granted SPIFFE ID and DNS
///   names, certifies the CSR's key, is signed by the intermediate, and lives no longer than
///   the requested TTL, the policy's maximum and the intermediate.
///
/// # Panics
///
/// When any of those properties fails.
pub(super) fn check_signing(csr: &Csr, grant: &Grant, ttl: Option<Ttl>) {
    let authority = &pki().authority;
    let policy = authority.policy();
    let broken = broken_rules(csr, grant, authority.trust_domain(), policy.max_dns_names);
    let now = SystemTime::now();
    let svid = match authority.sign_svid(csr, grant, ttl, now) {
        Ok(svid) => svid,
        Err(e) => {
            let rule = rule_of(&e);
            assert!(
                rule.is_some_and(|rule| broken.contains(&rule)),
                "refused with {e:?} ({e}) although the broken rules are {broken:?}"
            );
            return;
        }
    };
    assert!(broken.is_empty(), "signed although it breaks {broken:?}");

    let leaf = match validate_leaf(&svid.leaf) {
        Ok(leaf) => leaf,
        Err(e) => panic!("signed a leaf that is not an X509-SVID: {e}"),
    };
    assert_eq!(leaf.spiffe_id(), &grant.spiffe_id, "wrong SPIFFE ID");
    assert_eq!(svid.spiffe_id, grant.spiffe_id);
    assert_eq!(
        leaf.dns_names(),
        grant.dns_names.as_slice(),
        "wrong DNS names"
    );
    assert_eq!(leaf.serial(), svid.serial.as_bytes(), "serial differs");
    assert_eq!(svid.intermediates, authority.chain(), "chain differs");

    let (_, cert) = match X509Certificate::from_der(&svid.leaf) {
        Ok(parsed) => parsed,
        Err(e) => panic!("the leaf does not parse: {e}"),
    };
    assert_eq!(
        cert.public_key().raw,
        csr.spki(),
        "the leaf certifies another key"
    );
    let intermediate_der = authority.chain().first().map_or(&[][..], Vec::as_slice);
    let (_, intermediate) = match X509Certificate::from_der(intermediate_der) {
        Ok(parsed) => parsed,
        Err(e) => panic!("the intermediate does not parse: {e}"),
    };
    assert_eq!(
        cert.issuer(),
        intermediate.subject(),
        "issuer is not the intermediate"
    );
    if let Err(e) = cert.verify_signature(Some(intermediate.public_key())) {
        panic!("the leaf's signature does not verify with the intermediate's key: {e}");
    }

    let lifetime = svid
        .not_after
        .duration_since(svid.not_before)
        .unwrap_or(Duration::ZERO);
    let granted = policy.grant_ttl(ttl).as_duration();
    assert!(
        lifetime <= granted + policy.backdate,
        "lives {lifetime:?}, more than {granted:?} and {:?} of backdating",
        policy.backdate
    );
    assert!(
        svid.not_after <= authority.not_after(),
        "outlives the intermediate"
    );
    assert!(
        svid.not_before <= now && now < svid.not_after,
        "not valid when issued"
    );
    assert!(
        svid.not_before >= authority.not_before(),
        "starts before the intermediate"
    );
    assert_eq!(leaf.not_after(), svid.not_after);
    assert_eq!(leaf.not_before(), svid.not_before);
}
