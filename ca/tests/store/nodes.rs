//! Node records: upsert by name, bans.

use halyard_ca::store::{NodeRecord, StoreError};

use super::support::{T0, TestDb, at};

fn node(name: &str, serial: &str) -> NodeRecord {
    NodeRecord {
        name: name.into(),
        spiffe_id: format!("spiffe://cluster.local/halyard/node/{name}"),
        serial: serial.into(),
        not_after: at(T0 + 3600),
        attested_at: at(T0),
        method: "join_token".into(),
        banned: false,
    }
}

pub(super) async fn nodes_are_upserted_and_listed(db: TestDb) {
    let store = db.open().await;
    assert_eq!(store.node("worker-1").await.unwrap(), None);
    assert!(store.list_nodes().await.unwrap().is_empty());

    store.record_node(node("worker-2", "02")).await.unwrap();
    store.record_node(node("worker-1", "01")).await.unwrap();
    let renewed = NodeRecord {
        not_after: at(T0 + 7200),
        attested_at: at(T0 + 3000),
        method: "k8s".into(),
        ..node("worker-1", "0101")
    };
    store.record_node(renewed.clone()).await.unwrap();

    assert_eq!(store.node("worker-1").await.unwrap(), Some(renewed.clone()));
    assert_eq!(
        store.list_nodes().await.unwrap(),
        [renewed, node("worker-2", "02")],
        "one row per name, by name"
    );
}

pub(super) async fn a_ban_survives_reattestation(db: TestDb) {
    let store = db.open().await;
    store.record_node(node("worker-1", "01")).await.unwrap();
    assert!(store.ban_node("worker-1").await.unwrap());
    assert!(store.node("worker-1").await.unwrap().unwrap().banned);
    assert!(
        store.ban_node("worker-1").await.unwrap(),
        "banning twice is fine"
    );

    // Re-recording (say, a racing attestation) never lifts the ban.
    store.record_node(node("worker-1", "02")).await.unwrap();
    let stored = store.node("worker-1").await.unwrap().unwrap();
    assert!(stored.banned);
    assert_eq!(stored.serial, "02");

    // Edge: no such node.
    assert!(!store.ban_node("nobody").await.unwrap());
    assert_eq!(store.node("nobody").await.unwrap(), None);
    // Recording with banned: true bans.
    store
        .record_node(NodeRecord {
            banned: true,
            ..node("worker-2", "03")
        })
        .await
        .unwrap();
    assert!(store.node("worker-2").await.unwrap().unwrap().banned);
}

pub(super) async fn bad_node_records_are_refused(db: TestDb) {
    let store = db.open().await;
    for (bad, field) in [
        (node("", "01"), "name"),
        (
            NodeRecord {
                spiffe_id: String::new(),
                ..node("w", "01")
            },
            "spiffe_id",
        ),
        (
            NodeRecord {
                method: String::new(),
                ..node("w", "01")
            },
            "method",
        ),
        (node("w", "0X"), "serial"),
    ] {
        let refused = store.record_node(bad).await;
        assert!(
            matches!(&refused, Err(StoreError::InvalidInput { field: f, .. }) if *f == field),
            "{refused:?}"
        );
    }
    assert!(store.list_nodes().await.unwrap().is_empty());
}
