//! Registration entries: scopes, duplicates, the change feed.

use halyard_ca::store::{EntryScope, NewEntry, StoreError};

use super::support::TestDb;

fn entry(spiffe_id: &str, node: Option<&str>, selectors: &[&str]) -> NewEntry {
    NewEntry {
        spiffe_id: spiffe_id.into(),
        node: node.map(Into::into),
        selectors: selectors.iter().map(|s| (*s).into()).collect(),
        ttl_seconds: None,
        dns_names: Vec::new(),
    }
}

pub(super) async fn entries_are_listed_by_node_scope(db: TestDb) {
    let store = db.open().await;
    assert!(store.entries(EntryScope::All).await.unwrap().is_empty());

    let on_1 = store
        .create_entry(NewEntry {
            ttl_seconds: Some(600),
            dns_names: vec!["web.default.svc".into()],
            ..entry(
                "spiffe://td/a",
                Some("worker-1"),
                &["unix:uid:1000", "unix:gid:10", "unix:uid:1000"],
            )
        })
        .await
        .unwrap();
    assert_eq!(
        on_1.selectors,
        ["unix:gid:10", "unix:uid:1000"],
        "sorted, deduplicated"
    );
    assert_eq!(on_1.id.len(), 32);
    assert!(
        on_1.id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    let anywhere = store
        .create_entry(entry("spiffe://td/b", None, &["k8s:ns:default"]))
        .await
        .unwrap();
    let on_2 = store
        .create_entry(entry("spiffe://td/c", Some("worker-2"), &["unix:uid:0"]))
        .await
        .unwrap();
    assert_ne!(on_1.id, anywhere.id);

    assert_eq!(
        store
            .entries(EntryScope::ForNode("worker-1".into()))
            .await
            .unwrap(),
        [on_1.clone(), anywhere.clone()]
    );
    assert_eq!(
        store
            .entries(EntryScope::ForNode("worker-2".into()))
            .await
            .unwrap(),
        [anywhere.clone(), on_2.clone()]
    );
    assert_eq!(
        store
            .entries(EntryScope::ForNode("unknown".into()))
            .await
            .unwrap(),
        std::slice::from_ref(&anywhere),
        "a node without entries still gets the any-node ones"
    );
    assert_eq!(
        store.entries(EntryScope::All).await.unwrap(),
        [on_1.clone(), anywhere.clone(), on_2.clone()]
    );

    assert!(store.delete_entry(&on_1.id).await.unwrap());
    assert!(!store.delete_entry(&on_1.id).await.unwrap(), "already gone");
    assert!(!store.delete_entry("not-an-id").await.unwrap());
    assert_eq!(
        store
            .entries(EntryScope::ForNode("worker-1".into()))
            .await
            .unwrap(),
        [anywhere]
    );
}

pub(super) async fn a_duplicate_entry_is_refused(db: TestDb) {
    let store = db.open().await;
    let first = store
        .create_entry(entry(
            "spiffe://td/a",
            Some("worker-1"),
            &["unix:uid:1", "unix:gid:2"],
        ))
        .await
        .unwrap();
    // The same selector set, in another order and with a repeat, is the same entry.
    let again = store
        .create_entry(entry(
            "spiffe://td/a",
            Some("worker-1"),
            &["unix:gid:2", "unix:uid:1", "unix:gid:2"],
        ))
        .await;
    assert!(
        matches!(&again, Err(StoreError::EntryExists { id }) if *id == first.id),
        "{again:?}"
    );
    let anywhere = store
        .create_entry(entry("spiffe://td/a", None, &["unix:uid:1", "unix:gid:2"]))
        .await
        .unwrap();
    let again = store
        .create_entry(entry("spiffe://td/a", None, &["unix:uid:1", "unix:gid:2"]))
        .await;
    assert!(
        matches!(&again, Err(StoreError::EntryExists { id }) if *id == anywhere.id),
        "any-node duplicates are refused too: {again:?}"
    );
    // Any one difference makes a new entry.
    for different in [
        entry(
            "spiffe://td/b",
            Some("worker-1"),
            &["unix:uid:1", "unix:gid:2"],
        ),
        entry(
            "spiffe://td/a",
            Some("worker-2"),
            &["unix:uid:1", "unix:gid:2"],
        ),
        entry("spiffe://td/a", Some("worker-1"), &["unix:uid:1"]),
    ] {
        store.create_entry(different).await.unwrap();
    }
    assert_eq!(store.entries(EntryScope::All).await.unwrap().len(), 5);
}

pub(super) async fn invalid_entries_are_refused(db: TestDb) {
    let store = db.open().await;
    for (bad, field) in [
        (entry("", None, &["unix:uid:1"]), "spiffe_id"),
        (entry("spiffe://td/a", Some(""), &["unix:uid:1"]), "node"),
        (entry("spiffe://td/a", None, &[]), "selectors"),
        (entry("spiffe://td/a", None, &["uid"]), "selectors"),
        (entry("spiffe://td/a", None, &[":1000"]), "selectors"),
        (
            NewEntry {
                ttl_seconds: Some(u64::MAX),
                ..entry("spiffe://td/a", None, &["unix:uid:1"])
            },
            "ttl_seconds",
        ),
        (
            NewEntry {
                dns_names: vec![String::new()],
                ..entry("spiffe://td/a", None, &["unix:uid:1"])
            },
            "dns_names",
        ),
    ] {
        let refused = store.create_entry(bad).await;
        assert!(
            matches!(&refused, Err(StoreError::InvalidInput { field: f, .. }) if *f == field),
            "{refused:?}"
        );
    }
    assert!(store.entries(EntryScope::All).await.unwrap().is_empty());
}

pub(super) async fn the_change_feed_counts_committed_changes(db: TestDb) {
    let store = db.open().await;
    let mut feed = store.subscribe_entries();
    assert_eq!(*feed.borrow_and_update(), 0);

    let created = store
        .create_entry(entry("spiffe://td/a", None, &["unix:uid:1"]))
        .await
        .unwrap();
    assert!(feed.has_changed().unwrap());
    assert_eq!(*feed.borrow_and_update(), 1);

    // Refused or no-op changes commit nothing, so they bump nothing.
    let _ = store
        .create_entry(entry("spiffe://td/a", None, &["unix:uid:1"]))
        .await
        .unwrap_err();
    let _ = store
        .create_entry(entry("", None, &["unix:uid:1"]))
        .await
        .unwrap_err();
    assert!(!store.delete_entry("missing").await.unwrap());
    assert!(!feed.has_changed().unwrap());

    assert!(store.delete_entry(&created.id).await.unwrap());
    assert_eq!(*feed.borrow_and_update(), 2);
    // A subscriber that joins late sees the current generation, and later changes.
    let late = store.subscribe_entries();
    assert_eq!(*late.borrow(), 2);
    let waiter = tokio::spawn({
        let mut late = late.clone();
        async move { late.changed().await.map(|()| *late.borrow()) }
    });
    store
        .create_entry(entry("spiffe://td/b", None, &["unix:uid:1"]))
        .await
        .unwrap();
    assert_eq!(waiter.await.unwrap().unwrap(), 3);
}
