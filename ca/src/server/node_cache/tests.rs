#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::store::{NewEntry, StoreOptions};

async fn sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("halyard.db").display());
    (
        Store::open(&url, StoreOptions::default()).await.unwrap(),
        dir,
    )
}

fn node(name: &str, method: &str) -> NodeRecord {
    let now = UNIX_EPOCH
        + Duration::from_secs(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        );
    NodeRecord {
        name: name.to_owned(),
        spiffe_id: format!("spiffe://example.org/halyard/node/{name}"),
        serial: "01".to_owned(),
        not_after: now + Duration::from_secs(3600),
        attested_at: now,
        method: method.to_owned(),
        banned: false,
    }
}

fn entry(id: &str, node: &str) -> NewEntry {
    NewEntry {
        spiffe_id: id.to_owned(),
        node: Some(node.to_owned()),
        selectors: vec!["unix:uid:1000".to_owned()],
        ttl_seconds: None,
        dns_names: Vec::new(),
    }
}

async fn record(cache: &NodeCache, store: &Store) -> NodeRecord {
    cache.get(store, "n1").await.unwrap().record.unwrap()
}

async fn banned(cache: &NodeCache, store: &Store) -> bool {
    record(cache, store).await.banned
}

fn ids(value: &NodeAuthorization) -> Vec<&str> {
    value.entries.iter().map(|e| e.spiffe_id.as_str()).collect()
}

/// Every change a signing decision depends on is seen by the very next request: a new entry, a
/// deleted one, a ban, a node that attests again another way.
#[tokio::test]
async fn every_change_reaches_the_next_request() {
    let (store, _dir) = sqlite().await;
    let cache = NodeCache::new(&store);
    assert!(cache.get(&store, "n1").await.unwrap().record.is_none());

    store.record_node(node("n1", "join_token")).await.unwrap();
    let got = cache.get(&store, "n1").await.unwrap();
    assert_eq!(got.record.as_ref().unwrap().method, "join_token");
    assert!(got.entries.is_empty());

    let web = store
        .create_entry(entry("spiffe://example.org/web", "n1"))
        .await
        .unwrap();
    assert_eq!(
        ids(&cache.get(&store, "n1").await.unwrap()),
        ["spiffe://example.org/web"]
    );

    store.delete_entry(&web.id).await.unwrap();
    assert!(cache.get(&store, "n1").await.unwrap().entries.is_empty());

    store.record_node(node("n1", "k8s")).await.unwrap();
    assert_eq!(record(&cache, &store).await.method, "k8s");

    assert!(store.ban_node("n1").await.unwrap());
    assert!(banned(&cache, &store).await);
}

/// Unchanged, the answer comes from the cache: a ban written by another store on the same
/// database that announced nothing (SQLite has no notifications between processes) is seen
/// once the cached answer is max_age old, not before.
#[tokio::test]
async fn an_unannounced_change_is_seen_once_the_answer_is_max_age_old() {
    let (store, dir) = sqlite().await;
    let max_age = Duration::from_millis(300);
    let cache = NodeCache::with_max_age(&store, max_age);
    store.record_node(node("n1", "join_token")).await.unwrap();
    assert!(!banned(&cache, &store).await);

    let url = format!("sqlite://{}", dir.path().join("halyard.db").display());
    let other = Store::open(&url, StoreOptions::default()).await.unwrap();
    assert!(other.ban_node("n1").await.unwrap());
    assert!(store.node("n1").await.unwrap().unwrap().banned, "stored");
    assert!(!banned(&cache, &store).await, "served from the cache");
    tokio::time::sleep(max_age).await;
    assert!(banned(&cache, &store).await, "re-read once max_age old");
}
