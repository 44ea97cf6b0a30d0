//! Authorities: prepared → active → old, taint with a successor in one transaction.

use halyard_ca::store::{AuthorityState, Backend, StoreError};

use super::support::{T0, TestDb, at};

const CHAIN: &str = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n";

pub(super) async fn an_authority_goes_from_prepared_to_active_to_old(db: TestDb) {
    let store = db.open().await;
    assert!(store.authorities().await.unwrap().is_empty());
    let first = store
        .add_authority("a1", AuthorityState::Active, CHAIN, at(T0 + 86_400), at(T0))
        .await
        .unwrap();
    assert_eq!(first.state, AuthorityState::Active);
    assert_eq!(first.activated_at, Some(at(T0)));
    let next = store
        .add_authority(
            "b2",
            AuthorityState::Prepared,
            CHAIN,
            at(T0 + 86_400),
            at(T0 + 10),
        )
        .await
        .unwrap();
    assert_eq!(
        (next.state, next.activated_at),
        (AuthorityState::Prepared, None)
    );

    let active = store.activate_authority("b2", at(T0 + 20)).await.unwrap();
    assert_eq!(active.state, AuthorityState::Active);
    assert_eq!(active.activated_at, Some(at(T0 + 20)));
    let states: Vec<_> = store
        .authorities()
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.id, a.state))
        .collect();
    assert_eq!(
        states,
        [
            ("a1".to_owned(), AuthorityState::Old),
            ("b2".to_owned(), AuthorityState::Active)
        ],
        "oldest first; exactly one active"
    );

    // An old authority may be activated again (a roll-back).
    store.activate_authority("a1", at(T0 + 30)).await.unwrap();
    assert_eq!(
        store.authority("b2").await.unwrap().unwrap().state,
        AuthorityState::Old
    );
    assert_eq!(
        store.authority("a1").await.unwrap().unwrap().chain_pem,
        CHAIN
    );
}

pub(super) async fn refused_authority_changes_change_nothing(db: TestDb) {
    let store = db.open().await;
    store
        .add_authority("a1", AuthorityState::Active, CHAIN, at(T0 + 86_400), at(T0))
        .await
        .unwrap();
    let before = store.authorities().await.unwrap();

    let dup = store
        .add_authority(
            "a1",
            AuthorityState::Prepared,
            CHAIN,
            at(T0 + 86_400),
            at(T0),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&dup, StoreError::AuthorityExists { id, state: AuthorityState::Active } if id == "a1"),
        "{dup:?}"
    );
    let second_active = store
        .add_authority("c3", AuthorityState::Active, CHAIN, at(T0 + 86_400), at(T0))
        .await
        .unwrap_err();
    assert!(
        second_active.to_string().contains("already active"),
        "{second_active}"
    );
    for (id, state) in [("d4", AuthorityState::Old), ("e5", AuthorityState::Tainted)] {
        let refused = store
            .add_authority(id, state, CHAIN, at(T0 + 86_400), at(T0))
            .await
            .unwrap_err();
        assert!(
            matches!(refused, StoreError::AuthorityState { .. }),
            "{refused:?}"
        );
    }
    for (id, chain) in [("NOT-HEX", CHAIN), ("f6", "  ")] {
        let refused = store
            .add_authority(id, AuthorityState::Prepared, chain, at(T0 + 86_400), at(T0))
            .await
            .unwrap_err();
        assert!(
            matches!(refused, StoreError::InvalidInput { .. }),
            "{refused:?}"
        );
    }

    let unknown = store.activate_authority("99", at(T0)).await.unwrap_err();
    assert!(
        matches!(unknown, StoreError::AuthorityUnknown { .. }),
        "{unknown:?}"
    );
    assert!(unknown.to_string().contains("authority list"), "{unknown}");
    let again = store.activate_authority("a1", at(T0)).await.unwrap_err();
    assert!(again.to_string().contains("already active"), "{again}");

    // Tainting the only authority would leave the CA unable to issue.
    let alone = store.taint_authority("a1", at(T0)).await.unwrap_err();
    assert!(
        matches!(&alone, StoreError::NoSuccessor { id } if id == "a1"),
        "{alone:?}"
    );
    assert!(alone.to_string().contains("authority prepare"), "{alone}");

    // An expired prepared authority cannot take over either.
    store
        .add_authority("b2", AuthorityState::Prepared, CHAIN, at(T0 + 5), at(T0))
        .await
        .unwrap();
    let expired = store.taint_authority("a1", at(T0 + 10)).await.unwrap_err();
    assert!(
        matches!(expired, StoreError::NoSuccessor { .. }),
        "{expired:?}"
    );
    let late = store
        .activate_authority("b2", at(T0 + 10))
        .await
        .unwrap_err();
    assert!(late.to_string().contains("expired"), "{late}");

    let mut after = store.authorities().await.unwrap();
    after.retain(|a| a.id != "b2");
    assert_eq!(after, before, "nothing changed");
}

pub(super) async fn tainting_the_active_authority_activates_the_newest_prepared(db: TestDb) {
    let store = db.open().await;
    store
        .add_authority("a1", AuthorityState::Active, CHAIN, at(T0 + 86_400), at(T0))
        .await
        .unwrap();
    store
        .add_authority(
            "b2",
            AuthorityState::Prepared,
            CHAIN,
            at(T0 + 86_400),
            at(T0 + 1),
        )
        .await
        .unwrap();
    store
        .add_authority(
            "c3",
            AuthorityState::Prepared,
            CHAIN,
            at(T0 + 86_400),
            at(T0 + 2),
        )
        .await
        .unwrap();

    let taint = store.taint_authority("a1", at(T0 + 100)).await.unwrap();
    assert_eq!(taint.tainted.state, AuthorityState::Tainted);
    assert_eq!(taint.tainted.tainted_at, Some(at(T0 + 100)));
    let activated = taint.activated.unwrap();
    assert_eq!(
        (activated.id.as_str(), activated.state),
        ("c3", AuthorityState::Active)
    );

    // A tainted authority never signs again, and is tainted once.
    let reactivate = store
        .activate_authority("a1", at(T0 + 200))
        .await
        .unwrap_err();
    assert!(reactivate.to_string().contains("tainted"), "{reactivate}");
    let twice = store.taint_authority("a1", at(T0 + 200)).await.unwrap_err();
    assert!(twice.to_string().contains("already tainted"), "{twice}");

    // Tainting one that is not active changes nothing else.
    let other = store.taint_authority("b2", at(T0 + 300)).await.unwrap();
    assert_eq!(other.activated, None);
    assert_eq!(
        store.authority("c3").await.unwrap().unwrap().state,
        AuthorityState::Active
    );
}

/// Two replicas (two stores on one database): on PostgreSQL one holds the rotation lock and the
/// other is told so, until it is released or its holder goes away; SQLite (one process) always
/// grants it.
pub(super) async fn one_replica_at_a_time_holds_the_rotation_lock(db: TestDb) {
    let (a, b) = (db.open().await, db.open().await);
    let held = a.try_rotation_lock().await.unwrap().expect("a free lock");
    let other = b.try_rotation_lock().await.unwrap();
    if db.backend == Backend::Sqlite {
        assert!(other.is_some(), "SQLite serves one process: always granted");
        return;
    }
    assert!(other.is_none(), "held by the other replica");
    assert!(
        a.try_rotation_lock().await.unwrap().is_none(),
        "not re-entrant"
    );
    held.release().await.unwrap();
    let again = b.try_rotation_lock().await.unwrap().expect("released");
    // A holder that goes away (its store dropped, its connections closed) lets go too.
    drop(b);
    drop(again);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(lock) = a.try_rotation_lock().await.unwrap() {
            lock.release().await.unwrap();
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never released");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
