//! Join tokens: single use, expiring, distinct failures.

use std::time::Duration;

use halyard_ca::store::StoreError;

use super::support::{T0, TestDb, at};

pub(super) async fn a_token_is_used_once_under_concurrency(db: TestDb) {
    let store = db.open().await;
    let token = [7u8; 32];
    store
        .create_join_token(token, "worker-1", at(T0 + 600))
        .await
        .unwrap();
    let consumers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.consume_join_token(token, at(T0)).await })
        })
        .collect();
    let mut won = Vec::new();
    for consumer in consumers {
        match consumer.await.unwrap() {
            Ok(node) => won.push(node),
            Err(StoreError::TokenUsed) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(won, ["worker-1"], "exactly one consumer wins");
    // Two at once, the simplest race.
    let other = [8u8; 32];
    store
        .create_join_token(other, "worker-2", at(T0 + 600))
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        store.consume_join_token(other, at(T0)),
        store.consume_join_token(other, at(T0))
    );
    assert_eq!(u8::from(a.is_ok()) + u8::from(b.is_ok()), 1, "{a:?} {b:?}");
}

pub(super) async fn unknown_used_and_expired_tokens_differ(db: TestDb) {
    let store = db.open().await;
    let expires = at(T0 + 600);
    store
        .create_join_token([1; 32], "worker-1", expires)
        .await
        .unwrap();
    store
        .create_join_token([2; 32], "worker-2", expires)
        .await
        .unwrap();

    assert!(matches!(
        store.consume_join_token([9; 32], at(T0)).await,
        Err(StoreError::TokenUnknown)
    ));
    // A token expires at its expiry time itself, and stays unused when refused.
    assert!(matches!(
        store.consume_join_token([1; 32], expires).await,
        Err(StoreError::TokenExpired)
    ));
    assert!(matches!(
        store
            .consume_join_token([1; 32], expires + Duration::from_secs(3600))
            .await,
        Err(StoreError::TokenExpired)
    ));
    assert_eq!(
        store
            .consume_join_token([2; 32], expires - Duration::from_secs(1))
            .await
            .unwrap(),
        "worker-2"
    );
    assert!(matches!(
        store.consume_join_token([2; 32], at(T0)).await,
        Err(StoreError::TokenUsed)
    ));
    // Only the hash is stored: a token is not found by its node name or an all-zero hash.
    assert!(matches!(
        store.consume_join_token([0; 32], at(T0)).await,
        Err(StoreError::TokenUnknown)
    ));
}

pub(super) async fn a_token_hash_is_stored_once(db: TestDb) {
    let store = db.open().await;
    store
        .create_join_token([3; 32], "worker-1", at(T0 + 60))
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_join_token([3; 32], "worker-9", at(T0 + 60))
            .await,
        Err(StoreError::TokenExists)
    ));
    assert!(matches!(
        store.create_join_token([4; 32], "", at(T0 + 60)).await,
        Err(StoreError::InvalidInput { field: "node", .. })
    ));
    // The first token still belongs to its node.
    assert_eq!(
        store.consume_join_token([3; 32], at(T0)).await.unwrap(),
        "worker-1"
    );
}
