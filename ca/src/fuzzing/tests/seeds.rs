//! The generated seed corpora, named for what each seed tests.

use halyard_proto::api::ca::{
    ActivateAuthorityRequest, AddRootRequest, AttestRequest, CreateEntryRequest,
    CreateJoinTokenRequest, DeleteEntryRequest, Entry, ListEntriesRequest, PrepareAuthorityRequest,
    RemoveRootRequest, RevokeRequest, Selector, SignX509SvidsRequest, SvidRequest,
    TaintAuthorityRequest, attest_request, revoke_request,
};
use halyard_proto::api::istio_auth::IstioCertificateRequest;
use prost::Message;

use crate::authority::certs_to_pem;
use crate::fuzzing::pki;
use crate::testing::{CsrSpec, TestKey};

const WEB: &str = "spiffe://example.org/ns/default/sa/web";

type Seeds = Vec<(&'static str, Vec<u8>)>;

pub(super) fn csr_policy() -> Seeds {
    let web = || CsrSpec::for_id(WEB);
    let valid = web().der();
    let mut trailing = valid.clone();
    trailing.push(0);
    let mut flipped = valid.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    let many_dns: Vec<String> = (0..33).map(|i| format!("web-{i}.example.org")).collect();
    let many_dns: Vec<&str> = many_dns.iter().map(String::as_str).collect();
    let two_pems = format!("{}{}", web().pem(), web().pem());
    vec![
        ("valid-ec-p256", valid.clone()),
        ("valid-ec-p384", web().key(TestKey::EcP384).der()),
        ("valid-ed25519", web().key(TestKey::Ed25519).der()),
        ("valid-rsa-2048", web().key(TestKey::Rsa(2048)).der()),
        (
            "valid-ec-p256-dns-names",
            web().dns(&["web.example.org", "web"]).der(),
        ),
        ("valid-pem", web().pem().into_bytes()),
        ("node-no-uri-san", web().uris(&[]).der()),
        ("bad-ca-request", web().ca().der()),
        (
            "bad-two-uri-sans",
            web().uris(&[WEB, "spiffe://example.org/db"]).der(),
        ),
        (
            "bad-uri-not-spiffe",
            web().uris(&["https://example.org/web"]).der(),
        ),
        (
            "bad-other-trust-domain",
            web().uris(&["spiffe://other.org/web"]).der(),
        ),
        (
            "bad-trust-domain-id",
            web().uris(&["spiffe://example.org"]).der(),
        ),
        ("bad-ip-san", web().ip().der()),
        ("bad-too-many-dns-names", web().dns(&many_dns).der()),
        ("dns-name-with-space", web().dns(&["web example"]).der()),
        ("bad-rsa-1024", web().key(TestKey::Rsa(1024)).der()),
        ("bad-ec-p192", web().key(TestKey::EcP192).der()),
        ("bad-truncated", valid[..valid.len() / 2].to_vec()),
        ("bad-trailing-byte", trailing),
        ("bad-signature-flipped", flipped),
        ("bad-garbage", b"\x30\x03\x02\x01\x00garbage".to_vec()),
        ("bad-empty", Vec::new()),
        ("bad-pem-two-blocks", two_pems.into_bytes()),
    ]
}

pub(super) fn grpc_requests() -> Seeds {
    let pki = pki();
    let csr = CsrSpec::for_id(WEB).der();
    let seed = |which: u8, message: &dyn Fn() -> Vec<u8>| {
        let mut bytes = vec![which];
        bytes.extend(message());
        bytes
    };
    let root_pem = certs_to_pem([pki.root.cert_der()]);
    let chain_pem = certs_to_pem(pki.authority.chain().iter().map(Vec::as_slice));
    let entry = |node: &str| Entry {
        spiffe_id: WEB.to_owned(),
        node: node.to_owned(),
        selectors: vec![Selector {
            kind: "unix".into(),
            key: "uid".into(),
            value: "1000".into(),
        }],
        ttl_seconds: 600,
        dns_names: vec!["web.example.org".into()],
        ..Entry::default()
    };
    let revoke = |target: revoke_request::Target, reason: &str| RevokeRequest {
        target: Some(target),
        reason: reason.to_owned(),
    };
    vec![
        (
            "sign-x509-svids-one-p256",
            seed(0, &|| {
                SignX509SvidsRequest {
                    requests: vec![SvidRequest {
                        spiffe_id: WEB.into(),
                        csr: csr.clone(),
                        ttl_seconds: 600,
                    }],
                }
                .encode_to_vec()
            }),
        ),
        (
            "sign-x509-svids-mixed-batch",
            seed(0, &|| {
                SignX509SvidsRequest {
                    requests: vec![
                        SvidRequest {
                            spiffe_id: WEB.into(),
                            csr: csr.clone(),
                            ttl_seconds: u64::MAX,
                        },
                        SvidRequest {
                            spiffe_id: "spiffe://example.org/db".into(),
                            csr: csr.clone(),
                            ttl_seconds: 0,
                        },
                        SvidRequest {
                            spiffe_id: "not an id".into(),
                            csr: b"garbage".to_vec(),
                            ttl_seconds: 1,
                        },
                    ],
                }
                .encode_to_vec()
            }),
        ),
        (
            "attest-join-token-no-uri-csr",
            seed(1, &|| {
                AttestRequest {
                    credential: Some(attest_request::Credential::JoinToken("hjt_x".into())),
                    csr: CsrSpec::for_id(WEB).uris(&[]).der(),
                }
                .encode_to_vec()
            }),
        ),
        (
            "attest-service-account-token",
            seed(1, &|| {
                AttestRequest {
                    credential: Some(attest_request::Credential::ServiceAccountToken(
                        "eyJ".into(),
                    )),
                    csr: csr.clone(),
                }
                .encode_to_vec()
            }),
        ),
        (
            "istio-create-certificate-one-year",
            seed(2, &|| {
                IstioCertificateRequest {
                    csr: CsrSpec::for_id("spiffe://example.org/ns/default/sa/fuzz").pem(),
                    validity_duration: 365 * 24 * 3600,
                    ..IstioCertificateRequest::default()
                }
                .encode_to_vec()
            }),
        ),
        (
            "istio-negative-validity",
            seed(2, &|| {
                IstioCertificateRequest {
                    csr: CsrSpec::for_id(WEB).pem(),
                    validity_duration: -5,
                    ..IstioCertificateRequest::default()
                }
                .encode_to_vec()
            }),
        ),
        (
            "create-entry-for-node",
            seed(3, &|| {
                CreateEntryRequest {
                    entry: Some(entry("node-1")),
                }
                .encode_to_vec()
            }),
        ),
        (
            "create-entry-node-name-with-slash",
            seed(3, &|| {
                CreateEntryRequest {
                    entry: Some(entry("a/b")),
                }
                .encode_to_vec()
            }),
        ),
        (
            "revoke-serial-with-colons-key-compromise",
            seed(4, &|| {
                revoke(
                    revoke_request::Target::Serial("00:0a:ff".into()),
                    "keyCompromise",
                )
                .encode_to_vec()
            }),
        ),
        (
            "revoke-serial-21-bytes",
            seed(4, &|| {
                revoke(revoke_request::Target::Serial("80".repeat(20)), "").encode_to_vec()
            }),
        ),
        (
            "revoke-spiffe-id-unknown-reason",
            seed(4, &|| {
                revoke(revoke_request::Target::SpiffeId(WEB.into()), "stolen").encode_to_vec()
            }),
        ),
        (
            "create-join-token-node",
            seed(5, &|| {
                CreateJoinTokenRequest {
                    node: "node-1".into(),
                    ttl_seconds: 3600,
                }
                .encode_to_vec()
            }),
        ),
        (
            "prepare-authority-intermediate-chain",
            seed(6, &|| {
                PrepareAuthorityRequest {
                    certificate_pem: chain_pem.clone().into_bytes(),
                    want_csr: false,
                }
                .encode_to_vec()
            }),
        ),
        (
            "prepare-authority-root-as-intermediate",
            seed(6, &|| {
                PrepareAuthorityRequest {
                    certificate_pem: root_pem.clone().into_bytes(),
                    want_csr: true,
                }
                .encode_to_vec()
            }),
        ),
        (
            "add-root-pem",
            seed(7, &|| {
                AddRootRequest {
                    certificate_pem: root_pem.clone().into_bytes(),
                }
                .encode_to_vec()
            }),
        ),
        (
            "remove-root-two-certificates",
            seed(8, &|| {
                RemoveRootRequest {
                    certificate_pem: format!("{root_pem}{chain_pem}").into_bytes(),
                }
                .encode_to_vec()
            }),
        ),
        (
            "list-entries-for-node",
            seed(9, &|| {
                ListEntriesRequest {
                    node: "node-1".into(),
                }
                .encode_to_vec()
            }),
        ),
        (
            "delete-entry",
            seed(10, &|| {
                DeleteEntryRequest { id: "e-1".into() }.encode_to_vec()
            }),
        ),
        (
            "activate-authority",
            seed(11, &|| {
                ActivateAuthorityRequest { id: "ab12".into() }.encode_to_vec()
            }),
        ),
        (
            "taint-authority",
            seed(12, &|| {
                TaintAuthorityRequest { id: "ab12".into() }.encode_to_vec()
            }),
        ),
    ]
}

/// A `crl` input: signing time, validity, then (serial, reason index, revocation time) entries.
fn crl_input(now: u64, validity: u32, entries: &[(&[u8], u8, i64)]) -> Vec<u8> {
    let mut bytes = now.to_be_bytes().to_vec();
    bytes.extend(validity.to_be_bytes());
    for (serial, reason, revoked_at) in entries {
        bytes.push(u8::try_from(serial.len()).unwrap());
        bytes.extend(*serial);
        bytes.push(*reason);
        bytes.extend(revoked_at.to_be_bytes());
    }
    bytes
}

pub(super) fn crl() -> Seeds {
    const NOW: u64 = 1_767_225_600; // 2026-01-01
    const T: i64 = 1_767_225_000;
    let all_reasons: Vec<(&[u8], u8, i64)> = (0..7u8)
        .map(|reason| (&[0x10, 0x20][..], reason, T - i64::from(reason)))
        .collect();
    vec![
        ("no-entries", crl_input(NOW, 600, &[])),
        (
            "one-key-compromise",
            crl_input(NOW, 600, &[(&[0x0a, 0x0b], 1, T)]),
        ),
        ("all-seven-reasons", crl_input(NOW, 600, &all_reasons)),
        (
            "serial-20-bytes-top-bit-clear",
            crl_input(NOW, 600, &[(&[0x7f; 20], 4, T)]),
        ),
        (
            "serial-19-bytes-top-bit-set",
            crl_input(NOW, 600, &[(&[0x80; 19], 4, T)]),
        ),
        (
            "serial-leading-zeros",
            crl_input(NOW, 600, &[(&[0, 0, 0x01], 0, T)]),
        ),
        (
            "serials-zero-and-21-bytes-skipped",
            crl_input(
                NOW,
                600,
                &[(&[0, 0], 1, T), (&[0x80; 20], 1, T), (&[1], 1, T)],
            ),
        ),
        (
            "revoked-1949-generalized-time",
            crl_input(NOW, 600, &[(&[1], 5, -631_152_001)]),
        ),
        (
            "revoked-2050-generalized-time",
            crl_input(NOW, 600, &[(&[1], 5, 2_524_608_000)]),
        ),
        (
            "revoked-last-second-of-9999",
            crl_input(NOW, 600, &[(&[1], 2, 253_402_300_799)]),
        ),
        (
            "revoked-first-second-of-year-0",
            crl_input(NOW, 600, &[(&[1], 2, -62_167_219_200)]),
        ),
        ("signed-at-the-epoch", crl_input(0, 600, &[(&[1], 3, 0)])),
        ("validity-zero", crl_input(NOW, 0, &[(&[1], 3, T)])),
        (
            "bad-revoked-in-year-10000",
            crl_input(NOW, 600, &[(&[1], 1, 253_402_300_800)]),
        ),
        (
            "bad-next-update-after-9999",
            crl_input(253_402_300_000, u32::MAX, &[]),
        ),
    ]
}
