//! `halyard-ca audit verify` and `audit export` on real stores written by a running CA: the hash
//! chain, every journaled certificate's authority chaining to the bundle, and every revoked
//! serial in its authority's current CRL (fetched from the CA or given as files), with each way
//! of failing named; OpenSSL's view of the CRLs the audit accepts and refuses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use halyard_ca::authority::{
    Authority, Policy, PrivateKey, RevocationReason, RevokedEntry, Serial, certs_from_pem,
};
use halyard_ca::testing::{TestServer, key_id, openssl_available};
use sqlx::{AnyConnection, AssertSqlSafe, Connection, Executor};

const WEB: &str = "spiffe://cluster.local/ns/default/sa/web";

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_halyard-ca"))
}

/// What one run of the command did.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// `halyard-ca audit ARGS`.
fn audit(args: &[&str]) -> Run {
    let out = Command::new(binary())
        .arg("audit")
        .args(args)
        .output()
        .unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `audit verify --data-dir DATA EXTRA`.
fn verify(server: &TestServer, extra: &[&str]) -> Run {
    let data = server.data_dir();
    let mut args = vec!["verify", "--data-dir", data.to_str().unwrap()];
    args.extend_from_slice(extra);
    audit(&args)
}

/// The server's CRL base URL for `--crl-url`.
fn crl_url(server: &TestServer) -> String {
    format!("http://{}/crl", server.http)
}

/// A node, an entry for WEB and `n` certificates for it; returns their serials (as the journal
/// writes them).
async fn issue(server: &TestServer, n: usize) -> Vec<String> {
    server.entry("worker-1", WEB);
    let node = server.attest_node("worker-1").await;
    let mut serials = Vec::new();
    for _ in 0..n {
        let (chain, _) = server.workload_svid((&node.0, &node.1), WEB).await;
        let leaf = certs_from_pem(chain.as_bytes()).unwrap().remove(0);
        let serial: String = halyard_proto::validate_leaf(&leaf)
            .unwrap()
            .serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        serials.push(serial);
    }
    serials
}

/// The id of the authority that signs now (the only one in these tests).
fn active_authority(server: &TestServer) -> String {
    let chain = std::fs::read(server.data_dir().join("intermediate.crt")).unwrap();
    key_id(&certs_from_pem(&chain).unwrap()[0], false)
}

/// The number in the summary line starting with `prefix`, e.g. "journal intact: 5 rows".
fn count_after(stdout: &str, prefix: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{stdout}"));
    line[prefix.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// Runs `sql` on the server's SQLite store, behind its back.
async fn tamper(server: &TestServer, sql: &str) {
    tamper_url(
        &format!(
            "sqlite://{}",
            server.data_dir().join("halyard.db").display()
        ),
        sql,
    )
    .await;
}

async fn tamper_url(url: &str, sql: &str) {
    sqlx::any::install_default_drivers();
    let mut conn = AnyConnection::connect(url).await.unwrap();
    conn.execute(AssertSqlSafe(sql.to_owned())).await.unwrap();
    conn.close().await.unwrap();
}

/// The data directory's first intermediate with its key, to sign CRLs the CA would not.
fn data_dir_authority(server: &TestServer) -> Authority {
    let key = std::fs::read(server.data_dir().join("intermediate.key")).unwrap();
    let chain = std::fs::read(server.data_dir().join("intermediate.crt")).unwrap();
    Authority::new(
        PrivateKey::from_pkcs8_pem(&key).unwrap(),
        certs_from_pem(&chain).unwrap(),
        Policy::default(),
    )
    .unwrap()
}

fn revoked_entry(serial: &str) -> RevokedEntry {
    RevokedEntry {
        serial: serial.parse::<Serial>().unwrap(),
        revoked_at: SystemTime::now(),
        reason: RevocationReason::KeyCompromise,
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[tokio::test]
async fn a_clean_ca_with_issued_and_revoked_certificates_verifies() {
    let server = TestServer::start(binary(), &[]);
    let serials = issue(&server, 4).await;
    for serial in &serials[..2] {
        server.cli(&["revoke", "--serial", serial]).unwrap();
    }
    let rows = server
        .cli(&["audit", "list", "--limit", "100000"])
        .unwrap()
        .lines()
        .count() as u64;
    assert!(rows >= 5, "the node SVID and four workload certificates");

    // Against the CRLs the running CA serves.
    let url = crl_url(&server);
    let run = verify(&server, &["--crl-url", &url]);
    assert!(run.ok, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        count_after(&run.stdout, "journal intact: "),
        rows,
        "{}",
        run.stdout
    );
    assert_eq!(
        count_after(&run.stdout, "chains ok: "),
        rows,
        "{}",
        run.stdout
    );
    assert_eq!(count_after(&run.stdout, "crls ok: "), 2, "{}", run.stdout);
    assert_eq!(
        run.stdout.lines().count(),
        3,
        "no problem lines: {}",
        run.stdout
    );

    // The same CRL saved to a file, PEM and DER.
    let dir = tempfile::tempdir().unwrap();
    let id = active_authority(&server);
    let (status, crl) = server.http_get(&format!("/crl/{id}.crl"));
    assert!(status.contains("200"), "{status}");
    let der = write(dir.path(), "now.crl", &crl);
    let pem = write(
        dir.path(),
        "now.pem",
        pem::encode(&pem::Pem::new("X509 CRL", crl.clone())).as_bytes(),
    );
    for file in [&der, &pem] {
        let run = verify(&server, &["--crl", file.to_str().unwrap()]);
        assert!(run.ok, "{}{}", run.stdout, run.stderr);
        assert_eq!(count_after(&run.stdout, "crls ok: "), 2, "{}", run.stdout);
    }

    // Without a CRL source the output says the membership was not checked.
    let run = verify(&server, &[]);
    assert!(run.ok, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("crls NOT CHECKED"), "{}", run.stdout);

    // The export carries each row's revocation.
    let export = server
        .cli(&["audit", "export", "--format", "jsonl"])
        .unwrap();
    let rows: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for row in &rows {
        let serial = row["serial"].as_str().unwrap();
        let revoked = serials[..2].iter().any(|s| s == serial);
        assert_eq!(row["revoked"], revoked, "{row}");
        assert_eq!(row["revoked_at"].is_string(), revoked, "{row}");
        assert_eq!(row["revocation_reason"].is_string(), revoked, "{row}");
    }
}

#[tokio::test]
async fn an_authority_missing_from_the_store_or_the_bundle_fails_naming_it() {
    let mut server = TestServer::start(binary(), &[]);
    let serials = issue(&server, 2).await;
    let id = active_authority(&server);
    server.kill();

    // A bundle holding only another root of the same trust domain.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-root");
    let out = Command::new(binary())
        .args(["root", "init", "--trust-domain", "cluster.local", "--dir"])
        .arg(&other)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let bundle = other.join("root.crt");
    let run = verify(&server, &["--bundle", bundle.to_str().unwrap()]);
    assert!(!run.ok);
    assert!(run.stdout.starts_with("journal intact"), "{}", run.stdout);
    for serial in &serials {
        let line = run
            .stdout
            .lines()
            .find(|l| l.contains(&format!("serial {serial}:")))
            .unwrap_or_else(|| panic!("no line for {serial}:\n{}", run.stdout));
        assert!(
            line.starts_with("chains: seq ")
                && line.contains(&format!(
                    "authority {id} does not chain to a root of the bundle"
                )),
            "{line}"
        );
    }
    assert!(run.stdout.contains("chains FAILED: "), "{}", run.stdout);
    assert!(
        run.stderr
            .contains("halyard-ca: error: audit verify failed: chains ("),
        "{}",
        run.stderr
    );
    // The data directory's own bundle still verifies.
    assert!(verify(&server, &[]).ok);

    // The authority's row deleted from the store.
    tamper(
        &server,
        &format!("DELETE FROM authorities WHERE id = '{id}'"),
    )
    .await;
    let run = verify(&server, &[]);
    assert!(!run.ok);
    let missing = format!("authority {id} is not in the store");
    for serial in &serials {
        assert!(
            run.stdout
                .lines()
                .any(|l| l.contains(&format!("serial {serial}: {missing}"))),
            "{}",
            run.stdout
        );
    }
}

#[tokio::test]
async fn a_revoked_serial_missing_from_an_older_crl_fails_naming_it() {
    let server = TestServer::start(binary(), &[]);
    let serials = issue(&server, 2).await;
    let id = active_authority(&server);
    let (_, before) = server.http_get(&format!("/crl/{id}.crl"));
    let dir = tempfile::tempdir().unwrap();
    let old = write(dir.path(), "before.crl", &before);
    // The CRL is numbered by the second: make sure the next one is newer.
    std::thread::sleep(Duration::from_millis(1100));
    server.cli(&["revoke", "--serial", &serials[0]]).unwrap();

    let run = verify(&server, &["--crl", old.to_str().unwrap()]);
    assert!(!run.ok, "{}", run.stdout);
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("crls: serial {} (revoked", serials[0])))
        .unwrap_or_else(|| panic!("{}", run.stdout));
    assert!(
        line.contains("missing from the CRL") && line.contains("signed before the revocation"),
        "{line}"
    );
    assert!(
        run.stdout.contains("crls FAILED: 1 problem(s)"),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("crls (1 problem(s))"), "{}", run.stderr);

    // Given both, the newer CRL counts; and the served one passes.
    let (_, after) = server.http_get(&format!("/crl/{id}.crl"));
    let new = write(dir.path(), "after.crl", &after);
    let run = verify(
        &server,
        &[
            "--crl",
            old.to_str().unwrap(),
            "--crl",
            new.to_str().unwrap(),
        ],
    );
    assert!(run.ok, "{}{}", run.stdout, run.stderr);
    assert!(verify(&server, &["--crl-url", &crl_url(&server)]).ok);
}

/// A CRL naming the CA's authority (its subject and key identifier) and listing `serial`, but
/// signed by a fresh key.
fn forged_crl(server: &TestServer, serial: &str) -> Vec<u8> {
    let chain = std::fs::read(server.data_dir().join("intermediate.crt")).unwrap();
    let cert = certs_from_pem(&chain).unwrap().remove(0);
    let issuer = rcgen::Issuer::from_ca_cert_der(
        &rustls_pki_types::CertificateDer::from(cert.as_slice()),
        rcgen::KeyPair::generate().unwrap(),
    )
    .unwrap();
    let id = key_id(&cert, false);
    let key_id_bytes = (0..id.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&id[i..i + 2], 16).unwrap())
        .collect();
    let now = time::OffsetDateTime::now_utc();
    rcgen::CertificateRevocationListParams {
        this_update: now,
        next_update: now + time::Duration::minutes(10),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![rcgen::RevokedCertParams {
            serial_number: rcgen::SerialNumber::from_slice(
                serial.parse::<Serial>().unwrap().as_bytes(),
            ),
            revocation_time: now,
            reason_code: Some(rcgen::RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: rcgen::KeyIdMethod::PreSpecified(key_id_bytes),
    }
    .signed_by(&issuer)
    .unwrap()
    .der()
    .to_vec()
}

#[tokio::test]
async fn a_crl_signed_by_another_key_or_expired_fails() {
    let server = TestServer::start(binary(), &[]);
    let serials = issue(&server, 1).await;
    server.cli(&["revoke", "--serial", &serials[0]]).unwrap();
    let id = active_authority(&server);
    let dir = tempfile::tempdir().unwrap();

    let forged = write(dir.path(), "forged.crl", &forged_crl(&server, &serials[0]));
    let run = verify(&server, &["--crl", forged.to_str().unwrap()]);
    assert!(!run.ok, "{}", run.stdout);
    assert!(
        run.stdout.lines().any(|l| l.starts_with(&format!(
            "crls: CRL {}: its signature does not verify under the key of authority {id}",
            forged.display()
        ))),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.lines().any(
            |l| l.starts_with(&format!("crls: serial {} (revoked", serials[0]))
                && l.ends_with("no valid CRL of its authority was given")
        ),
        "{}",
        run.stdout
    );

    // Signed by the authority's own key, listing the serial, but its nextUpdate has passed.
    let authority = data_dir_authority(&server);
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let expired = authority
        .sign_crl(
            &[revoked_entry(&serials[0])],
            an_hour_ago,
            Duration::from_secs(600),
        )
        .unwrap();
    let expired = write(dir.path(), "expired.crl", &expired);
    let run = verify(&server, &["--crl", expired.to_str().unwrap()]);
    assert!(!run.ok, "{}", run.stdout);
    let problems: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("crls: "))
        .collect();
    assert_eq!(problems.len(), 1, "{}", run.stdout);
    assert!(
        problems[0].contains(&format!("of authority {id}: expired at "))
            && problems[0].ends_with("not current"),
        "{}",
        problems[0]
    );

    // Not a CRL at all.
    let junk = write(dir.path(), "junk.crl", b"junk");
    let run = verify(&server, &["--crl", junk.to_str().unwrap()]);
    assert!(!run.ok);
    assert!(
        run.stdout.contains("junk.crl: does not parse as a CRL"),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn tampering_with_a_journal_row_still_fails() {
    let server = TestServer::start(binary(), &[]);
    issue(&server, 2).await;
    assert!(verify(&server, &[]).ok);
    tamper(
        &server,
        "UPDATE journal SET spiffe_id = 'spiffe://cluster.local/ns/default/sa/evil' WHERE seq = 2",
    )
    .await;
    let run = verify(&server, &[]);
    assert!(!run.ok);
    assert!(
        run.stdout.starts_with(
            "journal: seq 2: its stored hash is not the hash of its contents: the row was changed\n"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("journal TAMPERED: 1 problem(s)"),
        "{}",
        run.stdout
    );
    // The other checks still ran: the row's authority is sound.
    assert!(run.stdout.contains("chains ok: "), "{}", run.stdout);
    assert!(
        run.stderr
            .contains("audit verify failed: journal tampered (1 problem(s))"),
        "{}",
        run.stderr
    );

    // A row moved to an authority nobody knows fails both checks.
    tamper(
        &server,
        "UPDATE journal SET authority = 'abcd' WHERE seq = 3",
    )
    .await;
    let run = verify(&server, &[]);
    assert!(!run.ok);
    assert!(run.stdout.contains("journal: seq 3: "), "{}", run.stdout);
    assert!(
        run.stdout.lines().any(|l| l.starts_with("chains: seq 3 ")
            && l.ends_with("authority abcd is not in the store")),
        "{}",
        run.stdout
    );
}

#[test]
fn bad_flags_and_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let run = audit(&[
        "verify",
        "--data-dir",
        data,
        "--crl-url",
        "https://ca:9090/crl",
    ]);
    assert!(!run.ok);
    assert!(
        run.stderr.contains("--crl-url") && run.stderr.contains("not an http:// URL"),
        "{}",
        run.stderr
    );
    std::fs::write(dir.path().join("bundle.pem"), "no pem here").unwrap();
    let run = audit(&["verify", "--data-dir", data]);
    assert!(!run.ok);
    assert!(
        run.stderr.contains("bundle.pem") && run.stderr.contains("no CERTIFICATE block"),
        "{}",
        run.stderr
    );
    let run = audit(&[
        "verify",
        "--data-dir",
        data,
        "--bundle",
        "/nonexistent/b.pem",
    ]);
    assert!(
        run.stderr
            .contains("cannot read the bundle /nonexistent/b.pem"),
        "{}",
        run.stderr
    );
    let run = audit(&["verify", "--store-url", "sqlite:///nonexistent/x.db"]);
    assert!(
        !run.ok && run.stderr.contains("give --bundle FILE"),
        "{}",
        run.stderr
    );
    let run = audit(&[
        "verify",
        "--store-url",
        "sqlite:///nonexistent/x.db",
        "--bundle",
        "/nonexistent/b.pem",
        "--crl",
        "/nonexistent/c.crl",
    ]);
    assert!(
        !run.ok && run.stderr.contains("cannot read the bundle"),
        "{}",
        run.stderr
    );
    // Nothing was printed to stdout before the refusal.
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

#[tokio::test]
#[ignore = "needs openssl: run via the README test command"]
async fn openssl_agrees_on_the_crls_the_audit_accepts_and_refuses() {
    assert!(openssl_available(), "openssl is not installed");
    let server = TestServer::start(binary(), &[]);
    let serials = issue(&server, 1).await;
    server.cli(&["revoke", "--serial", &serials[0]]).unwrap();
    let id = active_authority(&server);
    let dir = tempfile::tempdir().unwrap();
    let (_, served) = server.http_get(&format!("/crl/{id}.crl"));
    let served = write(dir.path(), "served.crl", &served);
    let forged = write(dir.path(), "forged.crl", &forged_crl(&server, &serials[0]));
    // The CA file: the authority and the root (openssl wants the whole chain).
    let cafile = dir.path().join("ca.pem");
    std::fs::write(
        &cafile,
        format!(
            "{}{}",
            std::fs::read_to_string(server.data_dir().join("intermediate.crt")).unwrap(),
            server.bundle_pem()
        ),
    )
    .unwrap();
    let openssl = |crl: &Path| {
        let out = Command::new("openssl")
            .args(["crl", "-inform", "DER", "-noout", "-verify", "-CAfile"])
            .arg(&cafile)
            .arg("-in")
            .arg(crl)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success() && text.contains("verify OK"), text)
    };

    let run = verify(&server, &["--crl", served.to_str().unwrap()]);
    assert!(run.ok, "{}{}", run.stdout, run.stderr);
    let (ok, text) = openssl(&served);
    assert!(ok, "openssl refuses the CRL the audit accepts: {text}");

    let run = verify(&server, &["--crl", forged.to_str().unwrap()]);
    assert!(!run.ok, "{}", run.stdout);
    let (ok, text) = openssl(&forged);
    assert!(!ok, "openssl accepts the CRL the audit refuses: {text}");
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run via the README test command"]
async fn a_ca_on_postgresql_verifies_and_tampering_shows() {
    let url = halyard_ca::testing::fresh_postgres_database().await;
    let server = TestServer::start(binary(), &["--store-url", &url]);
    let serials = issue(&server, 2).await;
    server.cli(&["revoke", "--serial", &serials[0]]).unwrap();
    let bundle = server.data_dir().join("bundle.pem");
    let crls = crl_url(&server);
    let args = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["verify", "--store-url", url.as_str(), "--bundle"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        args.push(bundle.to_str().unwrap().to_owned());
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let run_with = |extra: &[&str]| {
        let args = args(extra);
        audit(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let run = run_with(&["--crl-url", &crls]);
    assert!(run.ok, "{}{}", run.stdout, run.stderr);
    assert!(
        count_after(&run.stdout, "journal intact: ") >= 3,
        "{}",
        run.stdout
    );
    assert_eq!(count_after(&run.stdout, "crls ok: "), 1, "{}", run.stdout);

    tamper_url(
        &url,
        "UPDATE journal SET spiffe_id = 'spiffe://cluster.local/ns/default/sa/evil' WHERE seq = 2",
    )
    .await;
    let run = run_with(&["--crl-url", &crls]);
    assert!(!run.ok);
    assert!(
        run.stdout.starts_with("journal: seq 2: its stored hash"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("crls ok: "), "{}", run.stdout);
}
