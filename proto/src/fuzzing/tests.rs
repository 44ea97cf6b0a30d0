use std::path::Path;

use super::spiffe_id_round_trip;

/// The checked-in seed corpus must exist and be replayed whole: a missing or gutted corpus is a
/// failure, not a skip.
#[test]
fn spiffe_id_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/spiffe_id");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => panic!("cannot read corpus {}: {e}", dir.display()),
    };
    let mut replayed = 0;
    for entry in entries {
        let path = match entry {
            Ok(entry) => entry.path(),
            Err(e) => panic!("cannot list corpus {}: {e}", dir.display()),
        };
        if !path.is_file() {
            continue;
        }
        let data = match std::fs::read(&path) {
            Ok(data) => data,
            Err(e) => panic!("cannot read {}: {e}", path.display()),
        };
        if std::panic::catch_unwind(|| spiffe_id_round_trip(&data)).is_err() {
            panic!("property violated by corpus file {}", path.display());
        }
        replayed += 1;
    }
    assert!(
        replayed >= 20,
        "only {replayed} files in {}; the seed corpus should have at least 20",
        dir.display()
    );
}

#[test]
fn rejects_non_utf8_quietly() {
    spiffe_id_round_trip(b"spiffe://example.org/\xff");
    spiffe_id_round_trip(&[0xc3]);
}

#[test]
fn accepts_valid_and_invalid_ids() {
    spiffe_id_round_trip(b"spiffe://example.org/ns/default/sa/web");
    spiffe_id_round_trip(b"spiffe://example.org");
    spiffe_id_round_trip(b"spiffe://example.org/");
    spiffe_id_round_trip(b"SPIFFE://example.org");
    spiffe_id_round_trip(b"");
}
