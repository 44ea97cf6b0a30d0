//! What a signing request needs to know about its node — its record (banned? how it attested)
//! and its registration entries — kept between requests, so that the hot path does not read the
//! store twice for every certificate.
//!
//! A cached answer is dropped as soon as:
//! - an entry is created or deleted, or a node banned, here or (PostgreSQL) on another replica:
//!   the store's entries feed, which `LISTEN`/`NOTIFY` carries between replicas;
//! - any node record is written here (an attestation or renewal changes how a node attested);
//! - it is [`MAX_AGE`] old, which bounds what a missed notification can leave behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::store::{Entry, EntryScope, NodeRecord, Store, StoreError};

/// The longest a cached answer is used.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(5);

/// Nodes remembered at most; past it the cache starts over (a bound, not a policy).
const MAX_NODES: usize = 65_536;

/// A node's record (`None`: it never attested) and its entries.
#[derive(Clone)]
pub(crate) struct NodeAuthorization {
    pub(crate) record: Option<NodeRecord>,
    pub(crate) entries: Arc<Vec<Entry>>,
}

struct Cached {
    /// The entries feed's and the local node writes' counts when it was read.
    versions: (u64, u64),
    at: Instant,
    value: NodeAuthorization,
}

pub(crate) struct NodeCache {
    entries_feed: watch::Receiver<u64>,
    nodes: Mutex<HashMap<String, Cached>>,
    max_age: Duration,
    /// One store read at a time: requests that miss together wait for the first one's answer
    /// instead of all reading the same rows (a node with 10,000 entries, under a storm).
    loading: tokio::sync::Mutex<()>,
}

impl NodeCache {
    pub(crate) fn new(store: &Store) -> NodeCache {
        NodeCache::with_max_age(store, MAX_AGE)
    }

    fn with_max_age(store: &Store, max_age: Duration) -> NodeCache {
        NodeCache {
            entries_feed: store.subscribe_entries(),
            nodes: Mutex::new(HashMap::new()),
            max_age,
            loading: tokio::sync::Mutex::new(()),
        }
    }

    /// `name`'s record and entries, from the cache when nothing has changed since they were read.
    pub(crate) async fn get(
        &self,
        store: &Store,
        name: &str,
    ) -> Result<NodeAuthorization, StoreError> {
        if let Some(value) = self.fresh(store, name) {
            return Ok(value);
        }
        let _loading = self.loading.lock().await;
        // Someone else may have read it while we waited.
        if let Some(value) = self.fresh(store, name) {
            return Ok(value);
        }
        // Read before the store: a change committed while we read makes this copy stale at once.
        let versions = (*self.entries_feed.borrow(), store.node_writes());
        let now = Instant::now();
        let record = store.node(name).await?;
        let entries = Arc::new(store.entries(EntryScope::ForNode(name.to_owned())).await?);
        let value = NodeAuthorization { record, entries };
        let mut nodes = self.lock();
        if nodes.len() >= MAX_NODES {
            nodes.clear();
        }
        nodes.insert(
            name.to_owned(),
            Cached {
                versions,
                at: now,
                value: value.clone(),
            },
        );
        Ok(value)
    }

    /// The cached answer for `name`, if nothing has changed since it was read and it is young.
    fn fresh(&self, store: &Store, name: &str) -> Option<NodeAuthorization> {
        let versions = (*self.entries_feed.borrow(), store.node_writes());
        let cached = self.lock();
        let cached = cached.get(name)?;
        (cached.versions == versions && cached.at.elapsed() < self.max_age)
            .then(|| cached.value.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        // The map holds only copies of stored rows: a panic elsewhere cannot leave it wrong.
        self.nodes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests;
