//! AWS Private CA as the upstream, against the moto emulator: a root (and a subordinate) CA made
//! in the emulator, Halyard's intermediate issued by it through `halyard_ca::upstream::AwsPca`,
//! the chain checked by `verify_chain` and `openssl verify -x509_strict`, and the number of
//! IssueCertificate calls counted at the emulator.
//!
//! Needs `$HALYARD_MOTO_SERVER` (`source tests/moto.sh`): moto with the test shim
//! `tests/moto_shim.py`, whose header says what it changes in the emulator and why. Each test
//! starts its own emulator on a free port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_acmpca::types::CertificateAuthorityType;
use halyard_ca::authority::{
    Authority, Csr, Grant, KeyType, Policy, PrivateKey, certs_from_pem, certs_to_pem,
    intermediate_csr, verify_chain,
};
use halyard_ca::testing::{
    CsrSpec, MOTO_VAR, Moto, check_intermediate_profile, create_ca, openssl_available,
    openssl_verify, root_ca, subordinate_ca,
};
use halyard_ca::upstream::{
    CaKeyAlgorithm, DirLedger, IssuedIntermediate, PcaChainError, SigningAlgorithm, UpstreamError,
    UsageMode,
};
use halyard_proto::{SpiffeId, TrustDomain};

const TD: &str = "example.org";
const ID: &str = "spiffe://example.org/ns/default/sa/web";
const DAY: Duration = Duration::from_secs(24 * 3600);

fn der(pem: &str) -> Vec<u8> {
    certs_from_pem(pem.as_bytes()).unwrap().swap_remove(0)
}

/// A fresh intermediate key and its CSR, as the server makes them.
fn key_and_csr() -> (PrivateKey, String) {
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let csr = intermediate_csr(&TrustDomain::new(TD).unwrap(), &key, SystemTime::now()).unwrap();
    (key, csr)
}

/// Checks the issued chain with `verify_chain`, then signs an X509-SVID with it and checks
/// intermediate and leaf with `openssl verify -x509_strict`.
fn check_with_openssl(issued: &IssuedIntermediate, key: PrivateKey, root_pem: &str) {
    let now = SystemTime::now();
    let root = der(root_pem);
    assert_eq!(issued.root(), root.as_slice());
    assert_eq!(
        verify_chain(&issued.chain.chain, std::slice::from_ref(&root), now),
        Ok(0)
    );

    assert!(
        openssl_available(),
        "openssl is needed to check the chain; the README test command installs it"
    );
    let authority: Authority = issued.authority(key, Policy::default()).unwrap();
    let csr = Csr::parse(
        CsrSpec::for_id(ID).pem().as_bytes(),
        &authority.policy().keys,
    )
    .unwrap();
    let svid = authority
        .sign_svid(&csr, &Grant::new(SpiffeId::new(ID).unwrap()), None, now)
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, certs: &[Vec<u8>]| {
        let path = dir.path().join(name);
        std::fs::write(&path, certs_to_pem(certs.iter().map(Vec::as_slice))).unwrap();
        path
    };
    let root_file = write("root.pem", std::slice::from_ref(&root));
    let intermediates = write("intermediates.pem", authority.chain());
    let leaf = write("leaf.pem", std::slice::from_ref(&svid.leaf));
    // The PCA intermediates above Halyard's (none under a root PCA CA: the root then stands in
    // for -untrusted, which must name a file).
    let upper = match &issued.chain.chain[1..] {
        [] => std::slice::from_ref(&root),
        upper => upper,
    };
    let upper = write("upper.pem", upper);
    let intermediate = write("intermediate.pem", &issued.chain.chain[..1]);
    openssl_verify("any", &root_file, &upper, &intermediate)
        .unwrap_or_else(|e| panic!("the PCA-issued intermediate: {e}"));
    for purpose in ["sslclient", "sslserver"] {
        openssl_verify(purpose, &root_file, &intermediates, &leaf).unwrap_or_else(|e| {
            panic!("an SVID under the PCA-issued intermediate ({purpose}): {e}")
        });
    }
}

#[tokio::test]
#[ignore = "needs moto: run via the README test command"]
async fn issues_an_intermediate_that_chains_to_the_pca_root() {
    let moto = Moto::start();
    let root = root_ca(&moto.client()).await;
    let pca = moto.upstream(&root.arn, |_| {}).await;

    let ca = pca.describe().await.unwrap();
    assert_eq!(ca.key_algorithm, CaKeyAlgorithm::EcP256);
    assert_eq!(ca.signing_algorithm, SigningAlgorithm::Sha256WithEcdsa);
    // moto reports every CA in short-lived certificate mode (at most 7 days).
    assert_eq!(ca.usage_mode, UsageMode::ShortLivedCertificate);

    let before = moto.counts();
    let (key, csr) = key_and_csr();
    let not_after = SystemTime::now() + DAY;
    let issued = pca
        .issue_intermediate(csr.as_bytes(), not_after)
        .await
        .unwrap();
    assert_eq!(
        moto.counts().calls - before.calls,
        1,
        "one IssueCertificate call"
    );
    assert!(issued.certificate_arn.starts_with(&root.arn));
    assert_eq!(
        issued.chain.chain.len(),
        1,
        "a root PCA CA: the chain is the intermediate"
    );
    let asked = not_after
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let got = issued
        .chain
        .not_after
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(got, asked, "Validity ABSOLUTE is what was asked");
    assert_eq!(pca.bundle(&issued), vec![der(&root.cert_pem)]);
    check_intermediate_profile(&issued.chain.chain[0], issued.root(), TD);
    check_with_openssl(&issued, key, &root.cert_pem);
}

#[tokio::test]
#[ignore = "needs moto: run via the README test command"]
async fn issues_under_a_subordinate_pca_ca_with_the_pca_intermediate_in_the_chain() {
    let moto = Moto::start();
    let client = moto.client();
    let root = root_ca(&client).await;
    let issuing = subordinate_ca(&client, &root).await;
    let pca = moto.upstream(&issuing.arn, |_| {}).await;

    let (key, csr) = key_and_csr();
    let issued = pca
        .issue_intermediate(csr.as_bytes(), SystemTime::now() + DAY)
        .await
        .unwrap();
    assert_eq!(issued.chain.chain.len(), 2);
    assert_eq!(issued.chain.chain[1], der(&issuing.cert_pem));
    check_with_openssl(&issued, key, &root.cert_pem);
}

#[tokio::test]
#[ignore = "needs moto: run via the README test command"]
async fn one_issue_call_per_intermediate_when_repeated_and_after_a_restart() {
    let moto = Moto::start();
    let root = root_ca(&moto.client()).await;
    let data = tempfile::tempdir().unwrap();
    let ledger = || Arc::new(DirLedger::new(&data.path().join("pca")).unwrap());
    let before = moto.counts();

    let (_key, csr) = key_and_csr();
    let not_after = SystemTime::now() + DAY;
    let first = moto.upstream(&root.arn, |_| {}).await.with_ledger(ledger());
    let issued = first
        .issue_intermediate(csr.as_bytes(), not_after)
        .await
        .unwrap();
    let again = first
        .issue_intermediate(csr.as_bytes(), not_after)
        .await
        .unwrap();
    assert_eq!(again, issued, "the same CSR again: the same certificate");
    drop(first);

    // A restart: a new client over the same data directory.
    let restarted = moto.upstream(&root.arn, |_| {}).await.with_ledger(ledger());
    let after_restart = restarted
        .issue_intermediate(csr.as_bytes(), not_after)
        .await
        .unwrap();
    assert_eq!(after_restart, issued);
    let counts = moto.counts();
    assert_eq!(
        counts.calls - before.calls,
        1,
        "one IssueCertificate call: {counts:?}"
    );
    assert_eq!(counts.issued - before.issued, 1);

    // Without the ledger, PCA's idempotency token (from the CSR) still yields no second
    // certificate, though the call is made.
    let forgetful = moto.upstream(&root.arn, |_| {}).await;
    let via_token = forgetful
        .issue_intermediate(csr.as_bytes(), not_after)
        .await
        .unwrap();
    assert_eq!(via_token.certificate_arn, issued.certificate_arn);
    let counts = moto.counts();
    assert_eq!(
        (counts.calls - before.calls, counts.issued - before.issued),
        (2, 1)
    );

    // The next intermediate is one more call.
    let (_key, next_csr) = key_and_csr();
    let next = restarted
        .issue_intermediate(next_csr.as_bytes(), not_after)
        .await
        .unwrap();
    assert_ne!(next.certificate_arn, issued.certificate_arn);
    let counts = moto.counts();
    assert_eq!(
        (counts.calls - before.calls, counts.issued - before.issued),
        (3, 2)
    );
}

#[tokio::test]
#[ignore = "needs moto: run via the README test command"]
async fn a_throttled_issue_is_retried_with_backoff_and_succeeds() {
    let moto = Moto::start();
    let root = root_ca(&moto.client()).await;
    let pca = moto.upstream(&root.arn, |_| {}).await;
    let before = moto.counts();
    moto.throttle(3);

    let (key, csr) = key_and_csr();
    let start = Instant::now();
    let issued = pca
        .issue_intermediate(csr.as_bytes(), SystemTime::now() + DAY)
        .await
        .unwrap();
    let elapsed = start.elapsed();
    let counts = moto.counts();
    assert_eq!(counts.throttled - before.throttled, 3, "{counts:?}");
    assert_eq!(
        counts.calls - before.calls,
        4,
        "three throttled, then one that worked"
    );
    assert_eq!(counts.issued - before.issued, 1, "one certificate");
    // Backoff: at least half of 250 ms, 500 ms and 1 s.
    assert!(
        elapsed >= Duration::from_millis(875),
        "retried after {elapsed:?}"
    );
    check_with_openssl(&issued, key, &root.cert_pem);
}

#[tokio::test]
#[ignore = "needs moto: run via the README test command"]
async fn a_ca_that_is_not_active_is_refused_before_issuing() {
    let moto = Moto::start();
    let client = moto.client();
    // Created but never given its certificate: PENDING_CERTIFICATE.
    let arn = create_ca(&client, CertificateAuthorityType::Root, "Pending root").await;
    let pca = moto.upstream(&arn, |_| {}).await;
    let err = pca.describe().await.unwrap_err();
    assert!(
        matches!(&err, UpstreamError::CaNotActive { status, .. } if status == "PENDING_CERTIFICATE"),
        "{err:?}"
    );
    assert!(err.to_string().contains("not ACTIVE"), "{err}");

    let before = moto.counts();
    let (_key, csr) = key_and_csr();
    let err = pca
        .issue_intermediate(csr.as_bytes(), SystemTime::now() + DAY)
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::CaNotActive { .. }), "{err:?}");
    assert_eq!(moto.counts(), before, "no IssueCertificate call");
}

#[tokio::test]
#[ignore = "needs moto: run via the README test command"]
async fn a_returned_certificate_that_is_not_a_ca_is_refused() {
    let moto = Moto::start();
    let root = root_ca(&moto.client()).await;
    let pca = moto
        .upstream(&root.arn, |config| {
            config.template_arn = "arn:aws:acm-pca:::template/EndEntityCertificate/V1".into();
        })
        .await;
    let (_key, csr) = key_and_csr();
    let err = pca
        .issue_intermediate(csr.as_bytes(), SystemTime::now() + DAY)
        .await
        .unwrap_err();
    assert!(
        matches!(err, UpstreamError::Chain(PcaChainError::NotACa)),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("not a CA") && message.contains("SubordinateCACertificate_PathLen0"),
        "{message}"
    );
}

#[tokio::test]
#[ignore = "needs moto: run via the README test command"]
async fn aws_errors_carry_their_code_and_what_to_check() {
    let moto = Moto::start();
    let pca = moto
        .upstream(
            "arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/no-such-ca",
            |_| {},
        )
        .await;
    let err = pca.describe().await.unwrap_err();
    match &err {
        UpstreamError::Aws {
            operation,
            code,
            attempts,
            ..
        } => {
            assert_eq!(*operation, "DescribeCertificateAuthority");
            assert_eq!(code, "ResourceNotFoundException");
            assert_eq!(*attempts, 1, "not retried");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("check ca_arn and region"), "{err}");
}

/// The ignored tests fail, loudly, without the emulator: no silent skip.
#[test]
#[ignore = "needs moto: run via the README test command"]
fn the_emulator_is_configured() {
    let launcher = std::env::var(MOTO_VAR).unwrap_or_else(|_| {
        panic!("{MOTO_VAR} is not set: `source tests/moto.sh` (tests/run.sh does)")
    });
    assert!(
        Path::new(&launcher).exists(),
        "{MOTO_VAR}={launcher} does not exist"
    );
}
