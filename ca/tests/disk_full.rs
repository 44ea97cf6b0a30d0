//! A full disk under the journal: the CA refuses to issue (UNAVAILABLE, saying the journal could
//! not record the certificate) rather than hand out a certificate without a journal row, keeps
//! running, and issues again once there is room; the journal stays intact.
//!
//! The store lives on a 8 MiB tmpfs mounted for the test (root only: the README test command
//! runs as root), filled with a file until the kernel says ENOSPC.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use halyard_ca::testing::{TestServer, key_and_csr};
use halyard_proto::api::ca::svid_result::Result as ItemResult;
use halyard_proto::api::ca::svid_service_client::SvidServiceClient;
use halyard_proto::api::ca::{SignX509SvidsRequest, SvidRequest};
use tonic::Code;

const WEB: &str = "spiffe://cluster.local/ns/default/sa/web";
/// Enough requests to outgrow whatever room SQLite's write-ahead log already holds.
const MAX_REQUESTS_WHILE_FULL: usize = 2000;

/// A small tmpfs, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cannot mount a tmpfs (run as root, via the README test command): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a filler file until the disk is full.
    fn fill(&self) -> PathBuf {
        let filler = self.path().join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        loop {
            match file.write_all(&chunk) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        let _ = file.flush();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// One SVID request: the certificate's serial, or the refusal.
async fn request(server: &TestServer, node: &(String, String)) -> Result<String, tonic::Status> {
    let (_, csr) = key_and_csr(Some(WEB));
    let response = SvidServiceClient::new(server.channel(Some((&node.0, &node.1))).await)
        .sign_x509_svids(SignX509SvidsRequest {
            requests: vec![SvidRequest {
                spiffe_id: WEB.into(),
                csr,
                ttl_seconds: 0,
            }],
        })
        .await?
        .into_inner();
    match response.results.into_iter().next().and_then(|r| r.result) {
        Some(ItemResult::Svid(svid)) => {
            let leaf = &svid.cert_chain[0];
            let serial = halyard_proto::validate_leaf(leaf)
                .unwrap()
                .serial()
                .to_vec();
            Ok(serial.iter().map(|b| format!("{b:02x}")).collect())
        }
        Some(ItemResult::Error(e)) => Err(tonic::Status::new(Code::from(e.code), e.message)),
        None => panic!("an empty result"),
    }
}

#[tokio::test]
#[ignore = "needs root to mount a tmpfs: run via the README test command"]
async fn a_full_disk_stops_issuance_and_loses_nothing() {
    let disk = SmallDisk::mount("8m");
    let store_url = format!("sqlite://{}", disk.path().join("halyard.db").display());
    let server = TestServer::start(
        Path::new(env!("CARGO_BIN_EXE_halyard-ca")),
        // Up to MAX_REQUESTS_WHILE_FULL for one identity: more than its default burst.
        &[
            "--store-url",
            &store_url,
            "--identity-rate-limit",
            "4000000000",
        ],
    );
    server.entry("worker-1", WEB);
    let node = server.attest_node("worker-1").await;
    let mut handed_out = vec![request(&server, &node).await.unwrap()];

    let filler = disk.fill();
    let mut refused = None;
    for _ in 0..MAX_REQUESTS_WHILE_FULL {
        match request(&server, &node).await {
            Ok(serial) => handed_out.push(serial),
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    let refused = refused
        .unwrap_or_else(|| panic!("{MAX_REQUESTS_WHILE_FULL} certificates issued on a full disk"));
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("journal could not record"),
        "{refused:?}"
    );
    // Still refused, still running.
    let again = request(&server, &node).await.unwrap_err();
    assert_eq!(again.code(), Code::Unavailable, "{again:?}");
    server.cli(&["healthcheck"]).expect("the CA still answers");

    // Room again: issuance resumes.
    std::fs::remove_file(&filler).unwrap();
    let mut resumed = None;
    let mut last_refusal = None;
    for _ in 0..50 {
        match request(&server, &node).await {
            Ok(serial) => {
                resumed = Some(serial);
                break;
            }
            Err(status) => {
                last_refusal = Some(status);
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    handed_out.push(resumed.unwrap_or_else(|| {
        panic!(
            "issuance should resume once the disk has room; the last refusal: \
             {last_refusal:?}\nCA log:\n{}",
            server.log()
        )
    }));

    // Every certificate handed out has its journal row; the journal is intact.
    let audit = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_halyard-ca"))
            .arg("audit")
            .args(args)
            .args(["--store-url", &store_url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let journal = audit(&["list", "--limit", "100000"]);
    let journaled: std::collections::BTreeSet<String> = journal
        .lines()
        .filter_map(|line| line.split('\t').nth(2))
        .map(|s| s.trim_start_matches('0').to_owned())
        .collect();
    let missing: Vec<&String> = handed_out
        .iter()
        .filter(|s| !journaled.contains(s.trim_start_matches('0')))
        .collect();
    assert!(
        missing.is_empty(),
        "handed out without a journal row: {missing:?}"
    );
    let bundle = server.data_dir().join("bundle.pem");
    let verify = audit(&["verify", "--bundle", bundle.to_str().unwrap()]);
    assert!(verify.contains("journal intact"), "{verify}");
    eprintln!(
        "full disk: {} certificates issued before the first refusal ({}), issuance resumed once \
         the filler was removed; {} handed out, all journaled",
        handed_out.len() - 2,
        refused.message(),
        handed_out.len()
    );
}
