//! The bad-input table: every input the signing core, the ceremony and the command line must
//! refuse, each with its own precise message, and nothing written or damaged by the refusal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use halyard_ca::authority::{Csr, Grant, KeyPolicy, KeyType, MAX_CSR_BYTES, Policy, certs_to_pem};
use halyard_ca::ceremony::{self, CeremonyError, DataDir, RootDir};
use halyard_ca::testing::{CsrSpec, TestKey, self_signed_leaf, shifted, ttl};
use halyard_proto::{SpiffeId, TrustDomain};

const TD: &str = "example.org";
const ID: &str = "spiffe://example.org/ns/default/sa/web";

/// A root directory and a data directory with an imported intermediate, in a temp dir.
struct Fixture {
    dir: tempfile::TempDir,
    root: RootDir,
    data: DataDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::starting(SystemTime::now(), "1y")
    }

    fn starting(now: SystemTime, intermediate_ttl: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = RootDir::new(dir.path().join("root"));
        let data = DataDir::new(dir.path().join("data"));
        let td = TrustDomain::new(TD).unwrap();
        ceremony::root_init(&root, &td, KeyType::EcP256, ttl("10y"), now).unwrap();
        let csr = dir.path().join("int.csr");
        let crt = dir.path().join("int.crt");
        ceremony::intermediate_csr(&data, &td, KeyType::EcP256, &csr, now).unwrap();
        ceremony::root_sign_intermediate(&root, &csr, &crt, ttl(intermediate_ttl), now).unwrap();
        ceremony::intermediate_import(&data, &crt, &root.cert(), now).unwrap();
        Fixture { dir, root, data }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, contents).unwrap();
        path
    }

    /// Signs `csr` bytes for `ID` through the file-level signer; returns the error text.
    fn sign(&self, csr: impl AsRef<[u8]>) -> String {
        self.sign_as(csr, Grant::new(SpiffeId::new(ID).unwrap()))
    }

    fn sign_as(&self, csr: impl AsRef<[u8]>, grant: Grant) -> String {
        let csr = self.write("w.csr", csr);
        let out = self.path("w.pem");
        let err = ceremony::sign(&self.data, &csr, &grant, None, &out, SystemTime::now())
            .expect_err("must be refused")
            .to_string();
        assert!(!out.exists(), "a refused request wrote {}", out.display());
        err
    }

    /// Imports `cert` (PEM) against `root` (PEM) into a fresh data dir sharing this one's key.
    fn import(&self, cert: &[u8], root: &[u8], now: SystemTime) -> String {
        let data = DataDir::new(self.path("data2"));
        fs::create_dir_all(data.path()).unwrap();
        fs::copy(self.data.intermediate_key(), data.intermediate_key()).unwrap();
        let cert = self.write("import.crt", cert);
        let root = self.write("import-root.crt", root);
        let err = ceremony::intermediate_import(&data, &cert, &root, now)
            .expect_err("must be refused")
            .to_string();
        assert!(
            !data.intermediate_cert().exists(),
            "refused import wrote intermediate.crt"
        );
        assert!(!data.bundle().exists(), "refused import wrote bundle.pem");
        err
    }

    fn intermediate_pem(&self) -> Vec<u8> {
        fs::read(self.data.intermediate_cert()).unwrap()
    }

    fn root_pem(&self) -> Vec<u8> {
        fs::read(self.root.cert()).unwrap()
    }
}

fn cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_halyard-ca"))
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn pem_csr(spec: &CsrSpec) -> String {
    spec.pem()
}

fn flip_last_byte(mut der: Vec<u8>) -> Vec<u8> {
    let last = der.len() - 1;
    der[last] ^= 0x01;
    der
}

type Case = (&'static str, fn(&Fixture) -> String, &'static str);

const CASES: &[Case] = &[
    // --- CSR bytes ---
    (
        "bad CSR signature",
        |f| f.sign(flip_last_byte(CsrSpec::for_id(ID).der())),
        "CSR signature does not verify with its own public key",
    ),
    (
        "garbage DER",
        |f| f.sign(b"\x30\x03\x02\x01\x05"),
        "CSR is not a DER PKCS#10 certification request",
    ),
    (
        "truncated DER",
        |f| {
            let d = CsrSpec::for_id(ID).der();
            f.sign(&d[..d.len() / 2])
        },
        "CSR is truncated: its DER header announces ",
    ),
    (
        "trailing bytes after DER",
        |f| {
            let mut d = CsrSpec::for_id(ID).der();
            d.push(0);
            f.sign(d)
        },
        "1 bytes follow the CSR",
    ),
    (
        "garbage PEM",
        |f| {
            f.sign("-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n")
        },
        "CSR PEM is malformed",
    ),
    (
        "truncated PEM",
        |f| {
            let p = pem_csr(&CsrSpec::for_id(ID));
            f.sign(&p[..p.len() / 2])
        },
        "CSR PEM is malformed: ",
    ),
    (
        "PEM of the wrong kind",
        |f| f.sign(f.root_pem()),
        "block is \"CERTIFICATE\", expected \"CERTIFICATE REQUEST\"",
    ),
    (
        "two PEM CSRs",
        |f| {
            let p = pem_csr(&CsrSpec::for_id(ID));
            f.sign(format!("{p}{p}"))
        },
        "2 PEM blocks found, expected one",
    ),
    ("empty CSR", |f| f.sign(b"\n"), "CSR is empty"),
    (
        "oversized CSR",
        |f| f.sign(vec![b'A'; MAX_CSR_BYTES + 1]),
        "CSR is 65537 bytes; the limit is 65536",
    ),
    // --- keys ---
    (
        "RSA-1024",
        |f| f.sign(CsrSpec::for_id(ID).key(TestKey::Rsa(1024)).der()),
        "CSR key RSA-1024 is not allowed: allowed keys are EC P-256, EC P-384, RSA 2048-8192 bits, Ed25519",
    ),
    (
        "unsupported curve",
        |f| f.sign(CsrSpec::for_id(ID).key(TestKey::EcP192).der()),
        "CSR key EC on curve 1.2.840.10045.3.1.1 is not allowed",
    ),
    // --- names ---
    (
        "no URI SAN",
        |f| f.sign(CsrSpec::for_id(ID).uris(&[]).der()),
        "CSR has no URI SAN: it must carry the SPIFFE ID spiffe://example.org/ns/default/sa/web",
    ),
    (
        "two URI SANs",
        |f| {
            f.sign(
                CsrSpec::for_id(ID)
                    .uris(&[ID, "spiffe://example.org/x"])
                    .der(),
            )
        },
        "CSR has 2 URI SANs; an X509-SVID carries exactly one SPIFFE ID",
    ),
    (
        "URI that is not a SPIFFE ID",
        |f| f.sign(CsrSpec::for_id("https://example.org/web").der()),
        "CSR URI SAN \"https://example.org/web\" is not a SPIFFE ID",
    ),
    (
        "SPIFFE ID with a trailing slash",
        |f| f.sign(CsrSpec::for_id("spiffe://example.org/web/").der()),
        "CSR URI SAN \"spiffe://example.org/web/\" is not a SPIFFE ID: ",
    ),
    (
        "wrong trust domain",
        |f| f.sign(CsrSpec::for_id("spiffe://other.org/ns/default/sa/web").der()),
        "SPIFFE ID spiffe://other.org/ns/default/sa/web is not in trust domain example.org",
    ),
    (
        "identity other than the authorized one",
        |f| f.sign(CsrSpec::for_id("spiffe://example.org/ns/default/sa/db").der()),
        "CSR asks for spiffe://example.org/ns/default/sa/db but the caller may hold only spiffe://example.org/ns/default/sa/web",
    ),
    (
        "grant outside the trust domain",
        |f| {
            f.sign_as(
                CsrSpec::for_id("spiffe://other.org/w").der(),
                Grant::new(SpiffeId::new("spiffe://other.org/w").unwrap()),
            )
        },
        "SPIFFE ID spiffe://other.org/w is not in trust domain example.org, which this CA serves",
    ),
    (
        "trust domain ID as a workload",
        |f| {
            f.sign_as(
                CsrSpec::for_id("spiffe://example.org").der(),
                Grant::new(SpiffeId::new("spiffe://example.org").unwrap()),
            )
        },
        "SPIFFE ID spiffe://example.org names a trust domain; a workload ID needs a path",
    ),
    (
        "DNS name outside the grant",
        |f| f.sign(CsrSpec::for_id(ID).dns(&["evil.example"]).der()),
        "DNS name \"evil.example\" is not allowed for spiffe://example.org/ns/default/sa/web",
    ),
    (
        "IP SAN",
        |f| f.sign(CsrSpec::for_id(ID).ip().der()),
        "CSR asks for 1 SANs that are neither URI nor DNS",
    ),
    (
        "CSR asking for CA:true",
        |f| f.sign(CsrSpec::for_id(ID).ca().der()),
        "CSR asks for a CA certificate (basic constraints cA=true)",
    ),
    // --- key and certificate files ---
    (
        "world-readable key file",
        |f| {
            fs::set_permissions(f.data.intermediate_key(), fs::Permissions::from_mode(0o644))
                .unwrap();
            f.sign(CsrSpec::for_id(ID).der())
        },
        "intermediate.key holds a private key but its mode is 0644: group and other must have no access",
    ),
    (
        "group-readable root key",
        |f| {
            fs::set_permissions(f.root.key(), fs::Permissions::from_mode(0o640)).unwrap();
            let csr = f.write("int2.csr", CsrSpec::for_id("spiffe://example.org").der());
            ceremony::root_sign_intermediate(
                &f.root,
                &csr,
                &f.path("int2.crt"),
                ttl("1y"),
                SystemTime::now(),
            )
            .unwrap_err()
            .to_string()
        },
        "root.key holds a private key but its mode is 0640",
    ),
    (
        "intermediate that does not match its key",
        |f| {
            let other = Fixture::new();
            f.import(
                &other.intermediate_pem(),
                &other.root_pem(),
                SystemTime::now(),
            )
        },
        "intermediate certificate does not match its key: their public keys differ",
    ),
    (
        "intermediate that does not chain to the root",
        |f| {
            let other = Fixture::new();
            f.import(&f.intermediate_pem(), &other.root_pem(), SystemTime::now())
        },
        "the chain does not lead to the root: no given root issued certificate 0",
    ),
    (
        "expired intermediate",
        |f| {
            let later = SystemTime::now() + Duration::from_secs(400 * 86_400);
            f.import(&f.intermediate_pem(), &f.root_pem(), later)
        },
        "certificate 0 of the chain is expired",
    ),
    (
        "intermediate not valid yet",
        |f| {
            let earlier = SystemTime::now() - Duration::from_secs(86_400);
            f.import(&f.intermediate_pem(), &f.root_pem(), earlier)
        },
        "certificate 0 of the chain is not yet valid",
    ),
    (
        "signing with an expired intermediate",
        |_| {
            let f = Fixture::starting(shifted(SystemTime::now(), -7200), "1h");
            let policy = Policy::default();
            let csr = Csr::parse(&CsrSpec::for_id(ID).der(), &KeyPolicy::default()).unwrap();
            // Load while it was valid, sign after it expired.
            let authority =
                ceremony::load_authority(&f.data, policy, shifted(SystemTime::now(), -5400))
                    .unwrap();
            authority
                .sign_svid(
                    &csr,
                    &Grant::new(SpiffeId::new(ID).unwrap()),
                    None,
                    SystemTime::now(),
                )
                .unwrap_err()
                .to_string()
        },
        "intermediate expired at ",
    ),
    (
        "a leaf imported as the intermediate",
        |f| {
            let leaf = certs_to_pem([self_signed_leaf(ID).as_slice()]);
            f.import(leaf.as_bytes(), &f.root_pem(), SystemTime::now())
        },
        "intermediate certificate is not a usable CA: ",
    ),
    (
        "root file that is no CA",
        |f| {
            let leaf = certs_to_pem([self_signed_leaf(ID).as_slice()]);
            f.import(&f.intermediate_pem(), leaf.as_bytes(), SystemTime::now())
        },
        "root certificate 0 cannot sign: ",
    ),
    (
        "certificate file without certificates",
        |f| f.import(b"hello", &f.root_pem(), SystemTime::now()),
        "import.crt: no CERTIFICATE block found",
    ),
    (
        "intermediate CSR for another trust domain",
        |f| {
            let csr = f.write("int2.csr", CsrSpec::for_id("spiffe://other.org").der());
            ceremony::root_sign_intermediate(
                &f.root,
                &csr,
                &f.path("int2.crt"),
                ttl("1y"),
                SystemTime::now(),
            )
            .unwrap_err()
            .to_string()
        },
        "intermediate CSR asks for spiffe://other.org; this root signs intermediates for spiffe://example.org only",
    ),
    (
        "intermediate CSR with an Ed25519 key",
        |f| {
            let csr = f.write(
                "int2.csr",
                CsrSpec::for_id("spiffe://example.org")
                    .key(TestKey::Ed25519)
                    .der(),
            );
            ceremony::root_sign_intermediate(
                &f.root,
                &csr,
                &f.path("int2.crt"),
                ttl("1y"),
                SystemTime::now(),
            )
            .unwrap_err()
            .to_string()
        },
        "CSR key Ed25519 is not allowed: allowed keys are EC P-256, EC P-384, RSA 2048-8192 bits",
    ),
    (
        "root init over an existing root",
        |f| {
            ceremony::root_init(
                &f.root,
                &TrustDomain::new(TD).unwrap(),
                KeyType::EcP256,
                ttl("1y"),
                SystemTime::now(),
            )
            .unwrap_err()
            .to_string()
        },
        "root.key already exists; refusing to replace it",
    ),
    (
        "import before a key exists",
        |f| {
            let data = DataDir::new(f.path("empty"));
            ceremony::intermediate_import(
                &data,
                &f.data.intermediate_cert(),
                &f.root.cert(),
                SystemTime::now(),
            )
            .unwrap_err()
            .to_string()
        },
        "intermediate.key does not exist: run `halyard-ca intermediate csr` and `intermediate import` first",
    ),
    // --- command line ---
    (
        "TTL zero",
        |f| {
            cli(&[
                "sign",
                "--data-dir",
                &s(f.data.path()),
                "--csr",
                "x",
                "--spiffe-id",
                ID,
                "--out",
                "y",
                "--ttl",
                "0s",
            ])
        },
        "invalid value '0s' for '--ttl <TTL>': TTL must be positive",
    ),
    (
        "TTL negative",
        |f| {
            cli(&[
                "sign",
                "--data-dir",
                &s(f.data.path()),
                "--csr",
                "x",
                "--spiffe-id",
                ID,
                "--out",
                "y",
                "--ttl=-1h",
            ])
        },
        "invalid value '-1h' for '--ttl <TTL>': TTL \"-1h\" is not a duration",
    ),
    (
        "SPIFFE ID flag with an uppercase trust domain",
        |f| {
            cli(&[
                "sign",
                "--data-dir",
                &s(f.data.path()),
                "--csr",
                "x",
                "--spiffe-id",
                "spiffe://Example.org/w",
                "--out",
                "y",
            ])
        },
        "invalid value 'spiffe://Example.org/w' for '--spiffe-id <SPIFFE_ID>'",
    ),
    (
        "unknown key type flag",
        |f| {
            cli(&[
                "root",
                "init",
                "--trust-domain",
                TD,
                "--dir",
                &s(&f.path("r2")),
                "--key-type",
                "dsa",
            ])
        },
        "invalid value 'dsa' for '--key-type <KEY_TYPE>'",
    ),
    (
        "CSR file that does not exist",
        |f| {
            cli(&[
                "sign",
                "--data-dir",
                &s(f.data.path()),
                "--csr",
                &s(&f.path("missing.csr")),
                "--spiffe-id",
                ID,
                "--out",
                &s(&f.path("y")),
            ])
        },
        "halyard-ca: error: cannot read ",
    ),
];

fn s(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn every_bad_input_is_refused_with_its_own_message_and_nothing_is_damaged() {
    assert!(CASES.len() >= 25, "{} cases", CASES.len());
    let mut messages = Vec::new();
    for (name, run, expected) in CASES {
        let fixture = Fixture::new();
        let key_before = fs::read(fixture.data.intermediate_key()).unwrap();
        let root_key_before = fs::read(fixture.root.key()).unwrap();
        let crt_before = fixture.intermediate_pem();
        let message = run(&fixture);
        assert!(
            message.contains(expected),
            "{name}:\n  expected: {expected}\n  got:      {message}"
        );
        // Refusals leave every key and certificate as it was, and no temporary file behind.
        assert_eq!(
            fs::read(fixture.data.intermediate_key()).unwrap(),
            key_before,
            "{name}"
        );
        assert_eq!(
            fs::read(fixture.root.key()).unwrap(),
            root_key_before,
            "{name}"
        );
        assert_eq!(fixture.intermediate_pem(), crt_before, "{name}");
        for dir in [fixture.data.path(), fixture.root.path(), fixture.dir.path()] {
            for entry in fs::read_dir(dir).unwrap() {
                let name_of = entry.unwrap().file_name();
                assert!(
                    !name_of.to_string_lossy().starts_with(".halyard-"),
                    "{name}: stray {name_of:?}"
                );
            }
        }
        messages.push(message);
    }
    let mut unique = messages.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        messages.len(),
        "two cases gave the same message"
    );
}

#[test]
fn an_absurd_ttl_is_clamped_to_the_maximum_not_refused() {
    let f = Fixture::new();
    let csr = f.write("w.csr", CsrSpec::for_id(ID).der());
    let out = f.path("w.pem");
    let now = SystemTime::now();
    let grant = Grant::new(SpiffeId::new(ID).unwrap());
    let svid = ceremony::sign(&f.data, &csr, &grant, Some(ttl("1000y")), &out, now).unwrap();
    let granted = svid.not_after.duration_since(now).unwrap();
    let max = Policy::default().max_ttl.as_duration();
    assert!(
        granted <= max && granted > max - Duration::from_secs(2),
        "{granted:?}"
    );
}

#[test]
fn a_ttl_past_the_intermediate_is_cut_at_the_intermediate() {
    let f = Fixture::starting(SystemTime::now(), "2h");
    let authority =
        ceremony::load_authority(&f.data, Policy::default(), SystemTime::now()).unwrap();
    let csr = Csr::parse(&CsrSpec::for_id(ID).der(), &KeyPolicy::default()).unwrap();
    let grant = Grant::new(SpiffeId::new(ID).unwrap());
    let svid = authority
        .sign_svid(&csr, &grant, Some(ttl("20h")), SystemTime::now())
        .unwrap();
    assert_eq!(svid.not_after, authority.not_after());
    let _: CeremonyError = ceremony::load_authority(
        &DataDir::new(f.path("none")),
        Policy::default(),
        SystemTime::now(),
    )
    .unwrap_err();
}
