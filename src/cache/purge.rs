//! Purges: exact cache keys are removed at once; a prefix (a directory, with every
//! query and `Vary` variant under it) is removed by one pass over the store on a
//! blocking thread. While that pass runs, the prefix is listed here and the proxy
//! treats what it covers as absent, so a purge takes effect the moment it is
//! accepted and the serving path never scans the store.
//!
//! A fill that left for the origin before a purge may bring back what the purge
//! removed: every purge counts an epoch, and a fill that sees the epoch moved while
//! it was out takes its entry back out of the store (serving it still to the
//! requests that waited for it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use super::proxy::Node;
use super::store::Entry;

/// Prefix purges in progress.
#[derive(Debug, Default)]
pub struct Purges {
    /// Read on every lookup; almost always empty.
    bans: ArcSwap<Vec<Ban>>,
    next_id: AtomicU64,
    /// Purges begun so far.
    epoch: AtomicU64,
}

/// A cache key prefix being purged.
#[derive(Debug, Clone)]
struct Ban {
    id: u64,
    prefix: String,
}

impl Purges {
    /// Purges begun so far; a fill reads it before leaving for the origin.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Whether a purge in progress covers `key`.
    pub fn hides(&self, key: &str) -> bool {
        let bans = self.bans.load();
        !bans.is_empty() && bans.iter().any(|ban| key.starts_with(&ban.prefix))
    }

    fn ban(&self, prefixes: &[String]) -> Vec<u64> {
        let added: Vec<Ban> = prefixes
            .iter()
            .map(|prefix| Ban {
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
                prefix: prefix.clone(),
            })
            .collect();
        self.bans.rcu(|bans| {
            let mut bans = Vec::clone(bans);
            bans.extend(added.iter().cloned());
            bans
        });
        added.iter().map(|ban| ban.id).collect()
    }

    fn lift(&self, ids: &[u64]) {
        self.bans.rcu(|bans| {
            let mut bans = Vec::clone(bans);
            bans.retain(|ban| !ids.contains(&ban.id));
            bans
        });
    }
}

/// Removes the entries under `keys` and every entry whose key starts with one of
/// `key_prefixes`; returns once they are gone. Runs to the end even if the caller
/// stops waiting.
pub async fn purge(node: Arc<Node>, keys: Vec<String>, key_prefixes: Vec<String>) {
    // Before removing: a fill that stores after this sees it (see `store_fill`).
    node.purges.epoch.fetch_add(1, Ordering::SeqCst);
    for key in &keys {
        node.store.remove(key);
    }
    if key_prefixes.is_empty() {
        return;
    }
    let task = tokio::spawn(async move {
        let ids = node.purges.ban(&key_prefixes);
        let scanning = node.clone();
        let prefixes = key_prefixes;
        // TODO-performance: each shard is locked while it is scanned; a store of
        // millions of objects would want a ban list checked against entry times.
        let _ = tokio::task::spawn_blocking(move || {
            scanning
                .store
                .retain(|key| !prefixes.iter().any(|p| key.starts_with(p.as_str())));
        })
        .await;
        node.purges.lift(&ids);
    });
    let _ = task.await;
}

/// Stores a fill that read `epoch` before leaving for the origin. If a purge began
/// since, the fill may hold what it removed, so it comes out again: either the
/// purge's removal comes after this insert, or this check sees the purge.
/// TODO-performance: any purge, even of other keys, costs such a fill its place.
pub fn store_fill(node: &Node, key: &str, entry: Arc<Entry>, epoch: u64) {
    node.store.insert(key.to_string(), entry);
    if node.purges.epoch() != epoch {
        node.store.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_hide_keys_until_lifted() {
        let purges = Purges::default();
        assert!(!purges.hides("www.example.com/static/a.css"));
        let first = purges.ban(&["www.example.com/static/".into()]);
        let second = purges.ban(&["www.example.com/img/".into()]);
        assert!(purges.hides("www.example.com/static/a.css?v=1"));
        assert!(purges.hides("www.example.com/img/a.jpg"));
        assert!(!purges.hides("www.example.com/index.html"));
        purges.lift(&first);
        assert!(!purges.hides("www.example.com/static/a.css?v=1"));
        assert!(purges.hides("www.example.com/img/a.jpg"));
        purges.lift(&second);
        assert!(!purges.hides("www.example.com/img/a.jpg"));
    }
}
