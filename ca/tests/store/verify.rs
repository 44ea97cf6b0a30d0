//! Tampering behind the store's back, and what `verify_journal` makes of it.

use halyard_ca::store::{JournalProblem, JournalProblemKind, JournalQuery, JournalRow, Store};

use super::support::{TestDb, hex, record};

/// A store holding rows 1..=5.
async fn five_rows(db: &TestDb) -> (Store, Vec<JournalRow>) {
    let store = db.open().await;
    let mut rows = Vec::new();
    for n in 1..=5 {
        rows.push(store.record_issued(record(n)).await.unwrap());
    }
    assert!(store.verify_journal().await.unwrap().is_intact());
    (store, rows)
}

fn problem(seq: i64, kind: JournalProblemKind) -> Vec<JournalProblem> {
    vec![JournalProblem { seq, kind }]
}

pub(super) async fn an_empty_journal_is_intact(db: TestDb) {
    let store = db.open().await;
    let report = store.verify_journal().await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.rows_checked, 0);
}

pub(super) async fn a_changed_row_is_a_hash_mismatch(db: TestDb) {
    let (store, _) = five_rows(&db).await;
    db.tamper("UPDATE journal SET spiffe_id = 'spiffe://cluster.local/ns/evil/sa/x' WHERE seq = 3")
        .await;
    let report = store.verify_journal().await.unwrap();
    assert_eq!(
        report.problems,
        problem(3, JournalProblemKind::HashMismatch)
    );
    assert_eq!(report.rows_checked, 5);
    assert!(!report.is_intact());
}

/// Someone who rewrites a row and recomputes its hash is caught by the next row's link.
pub(super) async fn a_rewritten_row_breaks_the_next_link(db: TestDb) {
    let (store, rows) = five_rows(&db).await;
    let mut forged = rows[2].clone();
    forged.record.spiffe_id = "spiffe://cluster.local/ns/evil/sa/x".into();
    forged.row_hash = forged.computed_hash().unwrap();
    db.tamper(&format!(
        "UPDATE journal SET spiffe_id = '{}', row_hash = '{}' WHERE seq = 3",
        forged.record.spiffe_id,
        hex(&forged.row_hash)
    ))
    .await;
    let report = store.verify_journal().await.unwrap();
    assert_eq!(report.problems, problem(4, JournalProblemKind::BrokenLink));
}

pub(super) async fn a_deleted_row_is_a_gap(db: TestDb) {
    let (store, _) = five_rows(&db).await;
    db.tamper("DELETE FROM journal WHERE seq = 3").await;
    let report = store.verify_journal().await.unwrap();
    assert_eq!(
        report.problems,
        problem(4, JournalProblemKind::Gap { expected_seq: 3 })
    );
    assert_eq!(report.rows_checked, 4);
}

pub(super) async fn a_deleted_tail_is_truncation(db: TestDb) {
    let (store, _) = five_rows(&db).await;
    db.tamper("DELETE FROM journal WHERE seq >= 4").await;
    let report = store.verify_journal().await.unwrap();
    assert_eq!(
        report.problems,
        problem(4, JournalProblemKind::Truncated { head_seq: 5 })
    );
}

/// A row appended outside the store, correctly chained, still does not match the recorded head.
pub(super) async fn a_row_forged_after_the_head_is_a_head_mismatch(db: TestDb) {
    let (store, rows) = five_rows(&db).await;
    let mut forged = rows[4].clone();
    forged.seq = 6;
    forged.prev_hash = rows[4].row_hash;
    forged.record.serial = "0bad".into();
    forged.row_hash = forged.computed_hash().unwrap();
    let r = &forged.record;
    let secs =
        |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    db.tamper(&format!(
        "INSERT INTO journal (seq, serial, spiffe_id, caller, authority, not_before, not_after, \
         der_sha256, issued_at, prev_hash, row_hash) \
         VALUES (6, '{}', '{}', '{}', '{}', {}, {}, '{}', {}, '{}', '{}')",
        r.serial,
        r.spiffe_id,
        r.caller,
        r.authority,
        secs(r.not_before),
        secs(r.not_after),
        hex(&r.der_sha256),
        secs(forged.issued_at),
        hex(&forged.prev_hash),
        hex(&forged.row_hash),
    ))
    .await;
    assert_eq!(
        store.journal(JournalQuery::default()).await.unwrap().len(),
        6
    );
    let report = store.verify_journal().await.unwrap();
    assert_eq!(
        report.problems,
        problem(6, JournalProblemKind::HeadMismatch)
    );
    // The store appends after its own head, so it collides with the forged row instead of
    // building on it.
    let refused = store.record_issued(record(7)).await;
    assert!(refused.is_err(), "{refused:?}");
}
