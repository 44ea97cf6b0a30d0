use std::time::{Duration, UNIX_EPOCH};

use super::chain::{ChainInput, row_hash};
use super::writer::Validated;
use super::*;
use crate::store::Backend;

fn input<'a>(der: &'a [u8; 32]) -> ChainInput<'a> {
    ChainInput {
        seq: 7,
        serial: "0a1b",
        spiffe_id: "spiffe://cluster.local/ns/default/sa/web",
        caller: "node:worker-1",
        authority: "abcd",
        not_before: 1_700_000_000,
        not_after: 1_700_003_600,
        der_sha256: der,
        issued_at: 1_700_000_005,
    }
}

/// Known answers computed independently (Python `hashlib` + `struct.pack('>q' / '>Q')`) from the
/// encoding documented in `chain.rs`.
#[test]
fn row_hash_matches_the_documented_encoding() {
    let der = [0x22; 32];
    assert_eq!(
        codec::hex(&row_hash(&[0x11; 32], &input(&der))),
        "c066407948841bd4bb210095e9fb5e49989da3e452987b831c1ef3aa9e2af5bb"
    );
    let genesis = ChainInput {
        seq: 1,
        serial: "01",
        spiffe_id: "spiffe://td/x",
        caller: "cli",
        authority: "aa",
        not_before: -5,
        not_after: 0,
        der_sha256: &[0; 32],
        issued_at: 0,
    };
    assert_eq!(
        codec::hex(&row_hash(&[0; 32], &genesis)),
        "70fe4b825f4c1521f9d9afce6f90a6bd79dd263f4d95e5088ed0bfd8435486c1"
    );
}

#[test]
fn length_prefixes_keep_field_boundaries() {
    let der = [0; 32];
    let one = input(&der);
    let shifted = ChainInput {
        serial: "0a1bnode:worker-1",
        caller: "",
        ..input(&der)
    };
    assert_ne!(row_hash(&[0; 32], &one), row_hash(&[0; 32], &shifted));
}

#[test]
fn every_field_and_the_previous_hash_change_the_hash() {
    let der = [0; 32];
    let other_der = [1; 32];
    let base = row_hash(&[0; 32], &input(&der));
    let variants = [
        ChainInput {
            seq: 8,
            ..input(&der)
        },
        ChainInput {
            serial: "0a1c",
            ..input(&der)
        },
        ChainInput {
            spiffe_id: "spiffe://cluster.local/x",
            ..input(&der)
        },
        ChainInput {
            caller: "cli",
            ..input(&der)
        },
        ChainInput {
            authority: "abce",
            ..input(&der)
        },
        ChainInput {
            not_before: 1,
            ..input(&der)
        },
        ChainInput {
            not_after: 1,
            ..input(&der)
        },
        ChainInput {
            der_sha256: &other_der,
            ..input(&der)
        },
        ChainInput {
            issued_at: 1,
            ..input(&der)
        },
    ];
    for variant in &variants {
        assert_ne!(row_hash(&[0; 32], variant), base);
    }
    assert_ne!(row_hash(&[1; 32], &input(&der)), base);
}

fn record() -> IssuedRecord {
    IssuedRecord {
        serial: "00ff".into(),
        spiffe_id: "spiffe://td/w".into(),
        caller: "cli".into(),
        authority: "aa".into(),
        not_before: UNIX_EPOCH + Duration::from_millis(1_000_500),
        not_after: UNIX_EPOCH + Duration::from_secs(4_000),
        der_sha256: [3; 32],
    }
}

#[test]
fn records_are_checked_before_they_are_queued() {
    assert!(Validated::new(record()).is_ok());
    let bad = [
        IssuedRecord {
            serial: "00FF".into(),
            ..record()
        },
        IssuedRecord {
            serial: String::new(),
            ..record()
        },
        IssuedRecord {
            spiffe_id: String::new(),
            ..record()
        },
        IssuedRecord {
            caller: String::new(),
            ..record()
        },
        IssuedRecord {
            authority: String::new(),
            ..record()
        },
        IssuedRecord {
            not_after: UNIX_EPOCH,
            ..record()
        },
    ];
    for record in bad {
        assert!(
            matches!(
                Validated::new(record.clone()),
                Err(StoreError::InvalidInput { .. })
            ),
            "{record:?} was accepted"
        );
    }
}

#[test]
fn computed_hash_covers_the_row_as_stored() {
    let row = JournalRow {
        seq: 7,
        record: IssuedRecord {
            serial: "0a1b".into(),
            spiffe_id: "spiffe://cluster.local/ns/default/sa/web".into(),
            caller: "node:worker-1".into(),
            authority: "abcd".into(),
            not_before: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            not_after: UNIX_EPOCH + Duration::from_secs(1_700_003_600),
            der_sha256: [0x22; 32],
        },
        issued_at: UNIX_EPOCH + Duration::from_secs(1_700_000_005),
        prev_hash: [0x11; 32],
        row_hash: [0; 32],
    };
    assert_eq!(
        codec::hex(&row.computed_hash().unwrap()),
        "c066407948841bd4bb210095e9fb5e49989da3e452987b831c1ef3aa9e2af5bb"
    );
}

/// The writer closes the pool and ends once every handle is gone (the last `Store` dropped).
#[tokio::test]
async fn the_writer_stops_when_the_last_handle_goes() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("halyard.db").display());
    let store = Store::open(&url, crate::store::StoreOptions::default())
        .await
        .unwrap();
    let pool = store.pool().clone();
    store.record_issued(record()).await.unwrap();
    assert!(!pool.is_closed());
    drop(store);
    tokio::time::timeout(Duration::from_secs(10), async {
        while !pool.is_closed() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the writer did not close the pool after the last Store was dropped");
}

#[test]
fn batches_split_into_full_chunks_then_powers_of_two() {
    let sizes = |rows| writer::chunk_sizes(rows, 32).collect::<Vec<_>>();
    assert_eq!(sizes(0), Vec::<usize>::new());
    assert_eq!(sizes(1), [1]);
    assert_eq!(sizes(23), [16, 4, 2, 1]);
    assert_eq!(sizes(32), [32]);
    assert_eq!(sizes(100), [32, 32, 32, 4]);
    for rows in 0..300 {
        let chunks = sizes(rows);
        assert_eq!(chunks.iter().sum::<usize>(), rows);
        assert!(
            chunks
                .iter()
                .all(|size| size.is_power_of_two() && *size <= 32)
        );
    }
}

#[test]
fn insert_placeholders_suit_each_engine() {
    let sqlite = writer::insert_sql(Backend::Sqlite, 2);
    assert!(sqlite.starts_with("INSERT OR ROLLBACK INTO journal ("));
    assert_eq!(sqlite.matches('?').count(), 22);
    assert!(!sqlite.contains('$'));
    let postgres = writer::insert_sql(Backend::Postgres, 2);
    assert!(postgres.starts_with("INSERT INTO journal ("));
    assert!(postgres.contains("($1, $2,") && postgres.ends_with("$21, $22)"));
    assert!(!postgres.contains('?'));
}

#[test]
fn a_small_sqlite_append_is_one_transaction_in_one_text() {
    let sql = writer::one_statement_sql(Backend::Sqlite, 3);
    let statements: Vec<&str> = sql.split("; ").collect();
    assert_eq!(statements.len(), 4, "{sql}");
    assert_eq!(statements[0], "BEGIN IMMEDIATE");
    assert!(statements[1].starts_with("INSERT OR ROLLBACK INTO journal ("));
    assert!(statements[2].starts_with("UPDATE journal_head SET head_seq = ?, head_hash = ?"));
    assert!(statements[2].ends_with("RETURNING head_seq"));
    assert_eq!(statements[3], "COMMIT");
    // The rows' parameters, then the new head's, bound in that order across the statements.
    assert_eq!(sql.matches('?').count(), 3 * 11 + 2);
}

#[test]
fn a_small_postgresql_append_is_one_statement_that_checks_the_head() {
    let sql = writer::one_statement_sql(Backend::Postgres, 2);
    assert!(!sql.contains(';') && !sql.contains('?'), "{sql}");
    assert!(sql.starts_with("WITH head AS (SELECT id FROM journal_head"));
    assert!(sql.contains("head_seq = $1 AND head_hash = $2 FOR UPDATE"));
    assert!(sql.contains("SET head_seq = $3, head_hash = $4"));
    // The rows' parameters follow the head's four.
    assert!(sql.contains("(VALUES ($5, $6,") && sql.contains("$25, $26))"));
    assert!(!sql.contains("$27"));
    assert!(sql.ends_with("RETURNING head_seq"));
}
