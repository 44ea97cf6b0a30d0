//! Appending to the journal and reading it back.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use halyard_ca::store::{
    IssuedRecord, JournalQuery, JournalStats, Store, StoreError, StoreOptions,
};

use super::support::{TestDb, record};

pub(super) async fn open_refuses_bad_options(db: TestDb) {
    for options in [
        StoreOptions {
            max_batch: 0,
            ..StoreOptions::default()
        },
        StoreOptions {
            queue_depth: 0,
            ..StoreOptions::default()
        },
    ] {
        let refused = Store::open(&db.url, options).await.err();
        assert!(
            matches!(refused, Some(StoreError::InvalidOptions(_))),
            "{refused:?}"
        );
    }
    // Opening twice (as a second replica would) runs the migrations idempotently.
    let first = db.open().await;
    let second = db.open().await;
    first.record_issued(record(1)).await.unwrap();
    assert_eq!(
        second.journal(JournalQuery::default()).await.unwrap().len(),
        1
    );
}

pub(super) async fn append_and_read_back(db: TestDb) {
    let store = db.open().await;
    assert_eq!(store.journal_stats(), JournalStats::default());
    let before = SystemTime::now() - Duration::from_secs(1);

    let mut recorded = Vec::new();
    for n in 1..=3 {
        recorded.push(store.record_issued(record(n)).await.unwrap());
    }
    assert_eq!(
        recorded.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(recorded[0].prev_hash, [0; 32], "genesis");
    assert_eq!(recorded[1].prev_hash, recorded[0].row_hash);
    assert_eq!(recorded[2].prev_hash, recorded[1].row_hash);
    for (n, row) in (1..).zip(&recorded) {
        assert_eq!(row.record, record(n));
        assert_eq!(row.row_hash, row.computed_hash().unwrap());
        assert!(row.issued_at >= before && row.issued_at <= SystemTime::now());
    }
    assert_eq!(
        store.journal(JournalQuery::default()).await.unwrap(),
        recorded
    );

    let stats = store.journal_stats();
    assert_eq!((stats.batches_committed, stats.rows_committed), (3, 3));
    assert_eq!(stats.last_batch_size, 1);
    assert!(stats.last_commit_duration > Duration::ZERO);
}

pub(super) async fn query_filters_and_limits(db: TestDb) {
    let store = db.open().await;
    for n in 1..=9 {
        store.record_issued(record(n)).await.unwrap();
    }
    let seqs = |rows: Vec<halyard_ca::store::JournalRow>| -> Vec<i64> {
        rows.iter().map(|r| r.seq).collect()
    };
    let query = |q: JournalQuery| {
        let store = store.clone();
        async move { seqs(store.journal(q).await.unwrap()) }
    };
    let w1 = Some(record(1).spiffe_id);
    assert_eq!(
        query(JournalQuery {
            spiffe_id: w1.clone(),
            ..Default::default()
        })
        .await,
        [1, 4, 7]
    );
    assert_eq!(
        query(JournalQuery {
            serial: Some(record(5).serial),
            ..Default::default()
        })
        .await,
        [5]
    );
    assert_eq!(
        query(JournalQuery {
            caller: Some("node:worker-0".into()),
            ..Default::default()
        })
        .await,
        [2, 4, 6, 8]
    );
    assert_eq!(
        query(JournalQuery {
            spiffe_id: w1.clone(),
            caller: Some("node:worker-0".into()),
            ..Default::default()
        })
        .await,
        [4]
    );
    assert_eq!(
        query(JournalQuery {
            limit: Some(2),
            ..Default::default()
        })
        .await,
        [1, 2]
    );
    assert_eq!(
        query(JournalQuery {
            after_seq: Some(7),
            limit: Some(5),
            ..Default::default()
        })
        .await,
        [8, 9]
    );
    // Edges: nothing matches, a zero limit, a page past the end.
    let nothing = Vec::<i64>::new();
    assert_eq!(
        query(JournalQuery {
            spiffe_id: Some("spiffe://nope".into()),
            ..Default::default()
        })
        .await,
        nothing
    );
    assert_eq!(
        query(JournalQuery {
            limit: Some(0),
            ..Default::default()
        })
        .await,
        nothing
    );
    assert_eq!(
        query(JournalQuery {
            after_seq: Some(9),
            ..Default::default()
        })
        .await,
        nothing
    );
    assert_eq!(
        query(JournalQuery {
            serial: Some("'; DROP TABLE journal; --".into()),
            ..Default::default()
        })
        .await,
        nothing
    );
    assert_eq!(query(JournalQuery::default()).await.len(), 9);
}

pub(super) async fn concurrent_records_are_group_committed(db: TestDb) {
    let store = db.open().await;
    let tasks: Vec<_> = (1..=200)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move { store.record_issued(record(n)).await })
        })
        .collect();
    let mut rows = Vec::new();
    for task in tasks {
        rows.push(task.await.unwrap().unwrap());
    }
    let seqs: BTreeSet<i64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs,
        (1..=200).collect(),
        "every call committed, seqs contiguous"
    );
    let serials: BTreeSet<&str> = rows.iter().map(|r| r.record.serial.as_str()).collect();
    assert_eq!(serials.len(), 200);

    let stats = store.journal_stats();
    assert_eq!(stats.rows_committed, 200);
    assert!(
        stats.batches_committed < 200,
        "no batch held more than one row: {stats:?}"
    );
    let stored = store.journal(JournalQuery::default()).await.unwrap();
    rows.sort_by_key(|r| r.seq);
    assert_eq!(stored, rows, "each caller got the row as committed");
    let report = store.verify_journal().await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.rows_checked, 200);
}

/// Two stores on one database, as two CA replicas (or a CA and an offline `sign`), appending at
/// once: one chain, no fork, no lost row. (Small batches: many transactions racing for the head.)
pub(super) async fn two_replicas_share_one_chain(db: TestDb) {
    let options = StoreOptions {
        max_batch: 2,
        ..StoreOptions::default()
    };
    let replicas = [db.open_with(options).await, db.open_with(options).await];
    let tasks: Vec<_> = (1..=200)
        .map(|n| {
            let store = replicas[usize::try_from(n % 2).unwrap()].clone();
            tokio::spawn(async move { store.record_issued(record(n)).await })
        })
        .collect();
    let mut seqs = BTreeSet::new();
    for task in tasks {
        seqs.insert(task.await.unwrap().unwrap().seq);
    }
    assert_eq!(seqs, (1..=200).collect());
    for store in &replicas {
        let report = store.verify_journal().await.unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.rows_checked, 200);
    }
}

/// A writer that remembers the head of its last commit finds it moved when another writer
/// appended in between, and appends after the other's row rather than failing or forking.
pub(super) async fn a_writer_appends_after_another_writers_rows(db: TestDb) {
    let first = db.open().await;
    let second = db.open().await;
    let one = first.record_issued(record(1)).await.unwrap();
    let two = second.record_issued(record(2)).await.unwrap();
    assert_eq!((one.seq, two.seq), (1, 2));
    // `first` last saw seq 1 as the head; the head is now seq 2.
    let three = first.record_issued(record(3)).await.unwrap();
    assert_eq!(three.seq, 3);
    assert_eq!(three.prev_hash, two.row_hash);
    let four = first.record_issued(record(4)).await.unwrap();
    assert_eq!((four.seq, four.prev_hash), (4, three.row_hash));
    assert_eq!(first.journal_stats().batches_failed, 0);
    let report = second.verify_journal().await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.rows_checked, 4);
}

/// Without the chain's head row, no append is handed out: neither by a writer that remembers
/// the head of its last commit nor by one that must read it.
pub(super) async fn a_missing_head_row_fails_every_append(db: TestDb) {
    let store = db.open().await;
    store.record_issued(record(1)).await.unwrap();
    db.tamper("DELETE FROM journal_head").await;
    for attempt in [2, 3] {
        let refused = store.record_issued(record(attempt)).await;
        assert!(
            matches!(&refused, Err(StoreError::Corrupt(why)) if why.contains("journal_head row is missing")),
            "{refused:?}"
        );
    }
    let reopened = db.open().await;
    let refused = reopened.record_issued(record(4)).await;
    assert!(
        matches!(refused, Err(StoreError::Corrupt(_))),
        "{refused:?}"
    );
}

pub(super) async fn a_tiny_queue_still_commits_everything(db: TestDb) {
    let store = db
        .open_with(StoreOptions {
            max_batch: 1,
            queue_depth: 1,
        })
        .await;
    let tasks: Vec<_> = (1..=20)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move { store.record_issued(record(n)).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let stats = store.journal_stats();
    assert_eq!((stats.batches_committed, stats.rows_committed), (20, 20));
    assert!(store.verify_journal().await.unwrap().is_intact());
}

pub(super) async fn invalid_records_are_refused_before_the_queue(db: TestDb) {
    let store = db.open().await;
    let bad = [
        IssuedRecord {
            serial: "ABC".into(),
            ..record(1)
        },
        IssuedRecord {
            serial: "0x1f".into(),
            ..record(1)
        },
        IssuedRecord {
            spiffe_id: String::new(),
            ..record(1)
        },
        IssuedRecord {
            not_after: UNIX_EPOCH,
            ..record(1)
        },
    ];
    for record in bad {
        let refused = store.record_issued(record).await;
        assert!(
            matches!(refused, Err(StoreError::InvalidInput { .. })),
            "{refused:?}"
        );
    }
    assert!(
        store
            .journal(JournalQuery::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.journal_stats(), JournalStats::default());
    // A good record after them starts the chain.
    assert_eq!(store.record_issued(record(1)).await.unwrap().seq, 1);
}

pub(super) async fn a_failed_batch_fails_every_caller_in_it(db: TestDb) {
    let store = db.open().await;
    db.tamper("ALTER TABLE journal RENAME TO journal_elsewhere")
        .await;
    let tasks: Vec<_> = (1..=10)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move { store.record_issued(record(n)).await })
        })
        .collect();
    for task in tasks {
        let failed = task.await.unwrap();
        assert!(matches!(failed, Err(StoreError::Database(_))), "{failed:?}");
    }
    let stats = store.journal_stats();
    assert!(stats.batches_failed >= 1);
    assert_eq!(stats.rows_committed, 0);

    // Nothing half-written: once the table is back, the chain starts at 1 and verifies.
    db.tamper("ALTER TABLE journal_elsewhere RENAME TO journal")
        .await;
    assert_eq!(store.record_issued(record(11)).await.unwrap().seq, 1);
    let report = store.verify_journal().await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.rows_checked, 1);
}

pub(super) async fn the_chain_continues_after_reopening(db: TestDb) {
    let store = db.open().await;
    let first = store.record_issued(record(1)).await.unwrap();
    drop(store);
    let store = db.open().await;
    let second = store.record_issued(record(2)).await.unwrap();
    assert_eq!(second.seq, 2);
    assert_eq!(second.prev_hash, first.row_hash);
    let report = store.verify_journal().await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.rows_checked, 2);
}
