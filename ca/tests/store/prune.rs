//! Pruning expired rows without breaking the chain.

use std::time::SystemTime;

use halyard_ca::store::{JournalQuery, Store};

use super::support::{T0, TestDb, at, record_expiring};

const EXPIRED: u64 = T0 - 10;
const LIVE: u64 = T0 + 10;

async fn seqs(store: &Store) -> Vec<i64> {
    let rows = store.journal(JournalQuery::default()).await.unwrap();
    rows.iter().map(|r| r.seq).collect()
}

async fn assert_intact(store: &Store, rows: u64) {
    let report = store.verify_journal().await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.rows_checked, rows);
}

pub(super) async fn pruning_keeps_the_chain_verifiable(db: TestDb) {
    let store = db.open().await;
    for (n, not_after) in (1..).zip([EXPIRED, EXPIRED, EXPIRED, LIVE, EXPIRED, LIVE]) {
        store
            .record_issued(record_expiring(n, not_after))
            .await
            .unwrap();
    }
    assert_eq!(store.prune_journal(at(T0)).await.unwrap(), 3);
    assert_eq!(seqs(&store).await, [4, 5, 6]);
    assert_intact(&store, 3).await;

    // The chain goes on from the anchor.
    let next = store.record_issued(record_expiring(7, LIVE)).await.unwrap();
    assert_eq!(next.seq, 7);
    assert_intact(&store, 4).await;

    // Tampering after a prune still shows.
    db.tamper("DELETE FROM journal WHERE seq = 4").await;
    let report = store.verify_journal().await.unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert_eq!(report.problems[0].seq, 5);
}

pub(super) async fn pruning_stops_at_the_first_unexpired_row(db: TestDb) {
    let store = db.open().await;
    // Edges: nothing to prune in an empty journal, nor when the first row is live.
    assert_eq!(store.prune_journal(SystemTime::now()).await.unwrap(), 0);
    for (n, not_after) in (1..).zip([LIVE, EXPIRED, EXPIRED]) {
        store
            .record_issued(record_expiring(n, not_after))
            .await
            .unwrap();
    }
    assert_eq!(store.prune_journal(at(T0)).await.unwrap(), 0);
    assert_eq!(seqs(&store).await, [1, 2, 3]);
    // A certificate expiring exactly at `before` is not expired before it.
    assert_eq!(store.prune_journal(at(LIVE)).await.unwrap(), 0);
    assert_intact(&store, 3).await;
}

pub(super) async fn pruning_everything_then_appending(db: TestDb) {
    let store = db.open().await;
    let mut last = None;
    for n in 1..=4 {
        last = Some(
            store
                .record_issued(record_expiring(n, EXPIRED))
                .await
                .unwrap(),
        );
    }
    assert_eq!(store.prune_journal(at(T0)).await.unwrap(), 4);
    assert!(seqs(&store).await.is_empty());
    assert_intact(&store, 0).await;
    assert_eq!(store.prune_journal(at(T0)).await.unwrap(), 0);

    let next = store.record_issued(record_expiring(5, LIVE)).await.unwrap();
    assert_eq!(next.seq, 5);
    assert_eq!(next.prev_hash, last.unwrap().row_hash);
    assert_intact(&store, 1).await;
}
