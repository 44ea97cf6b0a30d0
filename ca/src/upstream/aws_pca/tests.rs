//! What the client decides without AWS: CSRs, validity, extra roots. Calls to AWS are tested
//! against the moto emulator in `ca/tests/aws_pca.rs`.

use std::time::{Duration, SystemTime};

use halyard_proto::TrustDomain;

use super::*;
use crate::authority::{KeyType, certs_to_pem, intermediate_csr};
use crate::testing::{CsrSpec, TestPki, self_signed_leaf};

const ARN: &str = "arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/11111111-2222-3333-4444-555555555555";
const DAY: Duration = Duration::from_secs(24 * 3600);

fn csr_for(td: &str) -> String {
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    intermediate_csr(&TrustDomain::new(td).unwrap(), &key, SystemTime::now()).unwrap()
}

#[test]
fn pem_and_der_csrs_get_the_same_token() {
    let pem = csr_for("example.org");
    let (parsed, as_pem, token) = parse_csr(pem.as_bytes()).unwrap();
    assert_eq!(as_pem, pem);
    let der = ::pem::parse(&pem).unwrap().into_contents();
    let (_, again_pem, again) = parse_csr(&der).unwrap();
    assert_eq!(again, token);
    assert_eq!(again_pem, pem);
    assert_eq!(
        intermediate_trust_domain(&parsed).unwrap(),
        TrustDomain::new("example.org").unwrap()
    );
    assert_ne!(
        parse_csr(csr_for("example.org").as_bytes()).unwrap().2,
        token
    );
}

#[test]
fn what_is_not_an_intermediate_csr_is_refused() {
    assert!(matches!(parse_csr(b"hello"), Err(UpstreamError::Csr(_))));
    for (spec, why) in [
        (
            CsrSpec::for_id("spiffe://example.org/ns/web"),
            "which has a path",
        ),
        (
            CsrSpec::for_id("spiffe://example.org").uris(&[]),
            "has 0 URI SANs",
        ),
        (
            CsrSpec::for_id("spiffe://example.org").uris(&["spiffe://a.org", "spiffe://b.org"]),
            "has 2 URI SANs",
        ),
        (CsrSpec::for_id("https://example.org"), "is not a SPIFFE ID"),
    ] {
        let (parsed, _, _) = parse_csr(spec.pem().as_bytes()).unwrap();
        let err = intermediate_trust_domain(&parsed).unwrap_err().to_string();
        assert!(
            err.contains(why) && err.contains("intermediate_csr"),
            "{err}"
        );
    }
}

fn description(mode: UsageMode, not_after: Option<SystemTime>) -> CaDescription {
    CaDescription {
        key_algorithm: CaKeyAlgorithm::EcP256,
        signing_algorithm: SigningAlgorithm::Sha256WithEcdsa,
        usage_mode: mode,
        not_after,
    }
}

#[test]
fn validity_ends_with_the_ca_at_the_latest() {
    let now = SystemTime::now();
    let ca = description(UsageMode::GeneralPurpose, Some(now + 30 * DAY));
    assert_eq!(validity(&ca, now + 7 * DAY, now).unwrap(), now + 7 * DAY);
    assert_eq!(validity(&ca, now + 90 * DAY, now).unwrap(), now + 30 * DAY);
    let unknown_end = description(UsageMode::GeneralPurpose, None);
    assert_eq!(
        validity(&unknown_end, now + 90 * DAY, now).unwrap(),
        now + 90 * DAY
    );
}

#[test]
fn validity_in_the_past_or_too_long_for_short_lived_mode_is_refused() {
    let now = SystemTime::now();
    let ca = description(UsageMode::GeneralPurpose, Some(now - DAY));
    let err = validity(&ca, now + 7 * DAY, now).unwrap_err().to_string();
    assert!(err.contains("not in the future"), "{err}");
    let ca = description(UsageMode::ShortLivedCertificate, None);
    validity(&ca, now + 7 * DAY, now).unwrap();
    let err = validity(&ca, now + 8 * DAY, now).unwrap_err().to_string();
    assert!(
        err.contains("short-lived certificate mode") && err.contains("intermediate_ttl"),
        "{err}"
    );
}

fn client(config: AwsPcaConfig) -> Result<AwsPca, UpstreamError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(AwsPca::with_credentials(
        config,
        Credentials::new("id", "secret", None, None, "test"),
    ))
}

#[test]
fn extra_roots_join_the_bundle_once() {
    let dir = tempfile::tempdir().unwrap();
    let pca_root = TestPki::new("example.org");
    let old = TestPki::new("example.org");
    let path = dir.path().join("old.pem");
    std::fs::write(&path, certs_to_pem([old.root_der(), pca_root.root_der()])).unwrap();
    let mut config = AwsPcaConfig::new(CaArn::new(ARN).unwrap());
    config.extra_roots = vec![path];
    let pca = client(config).unwrap();

    let issued = IssuedIntermediate {
        certificate_arn: format!("{ARN}/certificate/1"),
        token: IdempotencyToken::for_csr(b"csr"),
        chain: PcaChain {
            chain: pca_root.authority.chain().to_vec(),
            root: pca_root.root_der().to_vec(),
            not_before: SystemTime::now(),
            not_after: SystemTime::now(),
        },
    };
    assert_eq!(
        pca.bundle(&issued),
        vec![pca_root.root_der().to_vec(), old.root_der().to_vec()]
    );
}

#[test]
fn unusable_extra_roots_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let leaf = dir.path().join("leaf.pem");
    std::fs::write(
        &leaf,
        certs_to_pem([self_signed_leaf("spiffe://example.org/x").as_slice()]),
    )
    .unwrap();
    let pki = TestPki::new("example.org");
    let intermediate = dir.path().join("intermediate.pem");
    std::fs::write(
        &intermediate,
        certs_to_pem([pki.authority.chain()[0].as_slice()]),
    )
    .unwrap();
    for (path, why) in [
        (dir.path().join("missing.pem"), "cannot read"),
        (leaf, "is not a usable CA"),
        (intermediate, "is not a root"),
    ] {
        let mut config = AwsPcaConfig::new(CaArn::new(ARN).unwrap());
        config.extra_roots = vec![path.clone()];
        let err = client(config).unwrap_err().to_string();
        assert!(
            err.starts_with("aws_pca: extra root") && err.contains(why),
            "{}: {err}",
            path.display()
        );
    }
}

#[test]
fn a_bad_config_is_refused_before_any_call() {
    let mut config = AwsPcaConfig::new(CaArn::new(ARN).unwrap());
    config.region = Some("us-east-1".into());
    assert!(matches!(
        client(config),
        Err(UpstreamError::Config { key: "region", .. })
    ));
}
