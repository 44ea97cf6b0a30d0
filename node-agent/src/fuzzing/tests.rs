//! The checked-in seed corpus replayed, and the generator that wrote it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;

use super::{IDENTITIES, sds_request};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/sds_request")
}

/// The checked-in seed corpus must exist and be replayed whole: a missing or gutted corpus is a
/// failure, not a skip.
#[test]
fn sds_request_corpus_replays() {
    let dir = corpus_dir();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => panic!("cannot read corpus {}: {e}", dir.display()),
    };
    let mut replayed = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| sds_request(&data)).is_err() {
            panic!("property violated by corpus file {}", path.display());
        }
        replayed += 1;
    }
    assert!(
        replayed >= 10,
        "only {replayed} files in {}; the seed corpus should have at least 10",
        dir.display()
    );
}

/// The seed corpus is all committed; `HALYARD_WRITE_SEEDS=1` writes it instead:
/// `HALYARD_WRITE_SEEDS=1 cargo test -p halyard-agent --lib fuzzing::tests::sds_request_seeds`
#[test]
fn sds_request_seeds_are_committed() {
    halyard_proto::fuzzing::write_or_check_seeds(&corpus_dir(), &seeds());
}

const FETCH: u8 = 0;
const SOTW: u8 = 1;
const DELTA: u8 = 2;
const WEB: u8 = 0b001;
const DB: u8 = 0b010;
const CACHE: u8 = 0b100;
const NO_ROOTS: u8 = 0b1000;
const CRL: u8 = 0b1_0000;

fn input(mode: u8, flags: u8, messages: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = vec![mode, flags];
    for message in messages {
        bytes.extend(message);
    }
    bytes
}

fn sotw(names: &[&str], nonce: &str) -> Vec<u8> {
    DiscoveryRequest {
        resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
        response_nonce: nonce.to_owned(),
        version_info: nonce.to_owned(),
        type_url: crate::sds::SECRET_TYPE_URL.to_owned(),
        ..DiscoveryRequest::default()
    }
    .encode_length_delimited_to_vec()
}

fn delta(subscribe: &[&str], unsubscribe: &[&str], initial: &[(&str, &str)]) -> Vec<u8> {
    DeltaDiscoveryRequest {
        resource_names_subscribe: subscribe.iter().map(|n| (*n).to_owned()).collect(),
        resource_names_unsubscribe: unsubscribe.iter().map(|n| (*n).to_owned()).collect(),
        initial_resource_versions: initial
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect::<HashMap<_, _>>(),
        type_url: crate::sds::SECRET_TYPE_URL.to_owned(),
        ..DeltaDiscoveryRequest::default()
    }
    .encode_length_delimited_to_vec()
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let [web, db, cache] = IDENTITIES;
    let nack = DiscoveryRequest {
        resource_names: vec!["default".into()],
        response_nonce: "1".into(),
        error_detail: Some(RpcStatus {
            code: 3,
            message: "bad certificate".into(),
            ..RpcStatus::default()
        }),
        ..DiscoveryRequest::default()
    }
    .encode_length_delimited_to_vec();
    vec![
        (
            "fetch-default",
            input(FETCH, WEB, &[sotw(&["default"], "")]),
        ),
        (
            "fetch-rootca-and-spiffe-id",
            input(FETCH, WEB | DB, &[sotw(&["ROOTCA", db], "")]),
        ),
        (
            "fetch-rootca-with-crl",
            input(FETCH, WEB | CRL, &[sotw(&["ROOTCA"], "")]),
        ),
        (
            "fetch-refused-identity-not-entitled",
            input(FETCH, WEB, &[sotw(&[web, db], "")]),
        ),
        (
            "fetch-refused-default-without-identity",
            input(FETCH, 0, &[sotw(&["default"], "")]),
        ),
        (
            "fetch-refused-name-not-a-spiffe-id",
            input(FETCH, WEB, &[sotw(&["../etc/passwd"], "")]),
        ),
        (
            "fetch-rootca-of-empty-bundle-waits",
            input(FETCH, WEB | NO_ROOTS, &[sotw(&["ROOTCA"], "")]),
        ),
        (
            "sotw-subscribe-ack-then-change",
            input(
                SOTW,
                WEB | DB | CACHE,
                &[
                    sotw(&["default", "ROOTCA"], ""),
                    sotw(&["default", "ROOTCA"], "1"),
                    sotw(&[db, cache, "ROOTCA"], "1"),
                ],
            ),
        ),
        (
            "sotw-nack-with-error-detail",
            input(SOTW, WEB, &[sotw(&["default"], ""), nack]),
        ),
        (
            "sotw-stale-nonce-ignored",
            input(SOTW, WEB, &[sotw(&["ROOTCA"], ""), sotw(&[cache], "99")]),
        ),
        (
            "sotw-refused-midstream",
            input(
                SOTW,
                WEB,
                &[sotw(&["ROOTCA"], ""), sotw(&["ROOTCA", cache], "")],
            ),
        ),
        (
            "sotw-duplicate-and-empty-names",
            input(
                SOTW,
                WEB | CRL,
                &[sotw(&["ROOTCA", "ROOTCA", web], ""), sotw(&[], "")],
            ),
        ),
        (
            "sotw-empty-bundle-then-identity",
            input(
                SOTW,
                DB | NO_ROOTS,
                &[sotw(&["ROOTCA"], ""), sotw(&["default"], "")],
            ),
        ),
        (
            "delta-subscribe-unsubscribe-resubscribe",
            input(
                DELTA,
                WEB | DB,
                &[
                    delta(&["default", "ROOTCA"], &[], &[]),
                    delta(&[], &["ROOTCA"], &[]),
                    delta(&[db, "ROOTCA"], &[], &[]),
                ],
            ),
        ),
        (
            "delta-reconnect-with-initial-versions",
            input(
                DELTA,
                WEB,
                &[delta(
                    &["default", "ROOTCA"],
                    &[],
                    &[("default", "0a0b"), ("ROOTCA", "0011223344556677")],
                )],
            ),
        ),
        (
            "delta-unentitled-subscribed-and-unsubscribed-at-once",
            input(DELTA, WEB, &[delta(&[cache], &[cache], &[])]),
        ),
        (
            "delta-refused-identity-not-entitled",
            input(
                DELTA,
                WEB,
                &[delta(&["default"], &[], &[]), delta(&[db], &[], &[])],
            ),
        ),
        (
            "bad-request-does-not-decode",
            input(SOTW, WEB, &[vec![0x05, 0x0a, 0xff, 0xff, 0xff, 0xff]]),
        ),
    ]
}

/// The harness really serves: a property that holds vacuously would hide every bug.
#[test]
fn the_in_memory_agent_serves_and_refuses() {
    use super::{World, agent};
    let world = World::new(WEB | CRL);
    let ask = |names: &[&str]| {
        let request = DiscoveryRequest {
            resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
            ..DiscoveryRequest::default()
        };
        agent::with_agent(world.trust(), |mut client| async move {
            client.fetch_secrets(request).await.map(|r| r.into_inner())
        })
    };
    let (answer, signed) = ask(&["default", "ROOTCA"]);
    let response = answer.unwrap();
    let names: Vec<String> = response.resources.iter().map(super::secret_name).collect();
    assert_eq!(names, ["default", "ROOTCA"]);
    assert_eq!(signed, [IDENTITIES[0].parse().unwrap()]);
    for any in &response.resources {
        super::check_secret(&world, any, &names);
    }
    let (answer, signed) = ask(&[IDENTITIES[1]]);
    assert_eq!(answer.unwrap_err().code(), tonic::Code::PermissionDenied);
    assert!(signed.is_empty());
}
