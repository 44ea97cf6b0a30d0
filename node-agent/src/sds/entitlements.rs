//! Which identities a caller may hold, answered name by name: the registration entries of one
//! trust snapshot indexed by SPIFFE ID and by first selector, built once per snapshot and shared
//! by every stream.
//!
//! Listing all of a caller's identities ([`Caller::identities`]) matches every entry; every
//! stream did that for every name on every change, so with 10,000 entries and 10,000 streams
//! a bundle push cost minutes of CPU. The index answers the same questions from the few entries
//! that can match.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use envoy_types::pb::google::protobuf::Any;
use halyard_proto::SpiffeId;

use super::secrets::{ROOTCA, validation_context};

use crate::attest::entitled;
use crate::cache::TrustState;
use crate::caller::Caller;

/// The entries of one snapshot, by position in `trust.entries`.
struct Index {
    trust: Arc<TrustState>,
    /// Entries by the SPIFFE ID they grant (as parsed, so spelled as [`SpiffeId::as_str`]).
    by_id: HashMap<String, Vec<usize>>,
    /// Entries by their first selector, `kind:key:value`: an entry can only match a caller that
    /// has it.
    by_first_selector: HashMap<String, Vec<usize>>,
    /// The `ROOTCA` secret, built by the first stream that sends it (a bundle push sends it on
    /// every stream).
    rootca: OnceLock<Any>,
}

impl Index {
    fn new(trust: Arc<TrustState>) -> Index {
        let mut by_id: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_first_selector: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, entry) in trust.entries.iter().enumerate() {
            if let Ok(id) = SpiffeId::new(&entry.spiffe_id) {
                by_id.entry(id.as_str().to_owned()).or_default().push(i);
            }
            if let Some(s) = entry.selectors.first() {
                let key = format!("{}:{}:{}", s.kind, s.key, s.value);
                by_first_selector.entry(key).or_default().push(i);
            }
        }
        Index {
            trust,
            by_id,
            by_first_selector,
            rootca: OnceLock::new(),
        }
    }

    /// Whether entry `i` grants its identity to `caller`.
    fn grants(&self, i: usize, caller: &Caller) -> Option<SpiffeId> {
        entitled(
            std::slice::from_ref(&self.trust.entries[i]),
            &caller.selectors,
        )
        .into_iter()
        .next()
    }
}

/// The index of the newest snapshot, shared by the streams of one service.
#[derive(Clone, Default)]
pub(super) struct Entitlements {
    last: Arc<Mutex<Option<Arc<Index>>>>,
}

/// What one caller may hold under one snapshot.
pub(super) struct CallerView {
    index: Arc<Index>,
}

impl Entitlements {
    /// The view of `trust`, indexing it if it is not the snapshot indexed last.
    pub(super) fn of(&self, trust: &Arc<TrustState>) -> CallerView {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let index = match last.as_ref() {
            Some(index) if Arc::ptr_eq(&index.trust, trust) => index.clone(),
            _ => {
                let index = Arc::new(Index::new(trust.clone()));
                *last = Some(index.clone());
                index
            }
        };
        CallerView { index }
    }
}

impl CallerView {
    /// The snapshot's `ROOTCA` secret.
    pub(super) fn rootca(&self) -> Any {
        let index = &self.index;
        index
            .rootca
            .get_or_init(|| validation_context(ROOTCA, &index.trust))
            .clone()
    }

    /// Whether `caller` may hold `id`, as [`Caller::identities`] would say.
    pub(super) fn may_hold(&self, caller: &Caller, id: &SpiffeId) -> bool {
        caller.implied.contains(id)
            || self.index.by_id.get(id.as_str()).is_some_and(|entries| {
                entries
                    .iter()
                    .any(|&i| self.index.grants(i, caller).is_some())
            })
    }

    /// The first of [`Caller::identities`]: what `default` names.
    pub(super) fn first(&self, caller: &Caller) -> Option<SpiffeId> {
        if let Some(id) = caller.implied.first() {
            return Some(id.clone());
        }
        let mut candidates: Vec<usize> = caller
            .selectors
            .iter()
            .filter_map(|s| self.index.by_first_selector.get(s))
            .flatten()
            .copied()
            .collect();
        candidates.sort_unstable();
        candidates
            .into_iter()
            .find_map(|i| self.index.grants(i, caller))
    }
}

#[cfg(test)]
mod tests {
    use halyard_proto::api::ca::{Entry, Selector};

    use super::*;
    use crate::attest::Workload;

    fn entry(id: &str, selectors: &[&str]) -> Entry {
        Entry {
            spiffe_id: id.to_owned(),
            selectors: selectors
                .iter()
                .map(|s| {
                    let mut parts = s.splitn(3, ':');
                    let mut next = || parts.next().unwrap_or_default().to_owned();
                    Selector {
                        kind: next(),
                        key: next(),
                        value: next(),
                    }
                })
                .collect(),
            ..Entry::default()
        }
    }

    fn caller(selectors: &[&str], implied: &[&str]) -> Caller {
        Caller {
            workload: Workload {
                pid: None,
                uid: 0,
                gid: 0,
            },
            selectors: selectors.iter().map(|s| (*s).to_owned()).collect(),
            implied: implied.iter().map(|s| SpiffeId::new(s).unwrap()).collect(),
        }
    }

    fn id(s: &str) -> SpiffeId {
        SpiffeId::new(s).unwrap()
    }

    #[test]
    fn answers_as_the_full_list_does() {
        let trust = Arc::new(TrustState {
            entries: vec![
                entry("spiffe://td/a", &["unix:uid:1"]),
                entry("spiffe://td/b", &["unix:uid:2", "unix:gid:5"]),
                entry("spiffe://td/c", &["unix:uid:1"]),
                entry("spiffe://td/a", &["unix:gid:7"]),
                entry("spiffe://td/d", &[]),
                entry("not an id", &["unix:uid:3"]),
                entry("spiffe://td/e", &["unix:gid:5", "unix:uid:2"]),
            ],
            ..TrustState::default()
        });
        let names = ["a", "b", "c", "d", "e", "f"].map(|n| id(&format!("spiffe://td/{n}")));
        let callers = [
            caller(&["unix:uid:1"], &[]),
            caller(&["unix:uid:2"], &[]),
            caller(&["unix:uid:2", "unix:gid:5"], &[]),
            caller(&["unix:gid:5", "unix:uid:2", "unix:gid:7"], &[]),
            caller(&["unix:uid:3"], &[]),
            caller(&[], &[]),
            caller(&["unix:uid:9"], &["spiffe://td/f"]),
            caller(&["unix:uid:1"], &["spiffe://td/f", "spiffe://td/a"]),
        ];
        let view = Entitlements::default().of(&trust);
        for caller in &callers {
            let all = caller.identities(&trust);
            for name in &names {
                assert_eq!(
                    view.may_hold(caller, name),
                    all.contains(name),
                    "{caller:?} {name}"
                );
            }
            assert_eq!(view.first(caller), all.first().cloned(), "{caller:?}");
        }
    }

    #[test]
    fn a_new_snapshot_is_indexed_anew() {
        let entitlements = Entitlements::default();
        let caller = caller(&["unix:uid:1"], &[]);
        let first = Arc::new(TrustState {
            entries: vec![entry("spiffe://td/a", &["unix:uid:1"])],
            ..TrustState::default()
        });
        assert!(
            entitlements
                .of(&first)
                .may_hold(&caller, &id("spiffe://td/a"))
        );
        // Another snapshot: answered from its own entries.
        let second = Arc::new(TrustState {
            entries: vec![entry("spiffe://td/b", &["unix:uid:1"])],
            ..(*first).clone()
        });
        let view = entitlements.of(&second);
        assert!(!view.may_hold(&caller, &id("spiffe://td/a")));
        assert!(view.may_hold(&caller, &id("spiffe://td/b")));
        assert_eq!(view.first(&caller), Some(id("spiffe://td/b")));
    }
}
