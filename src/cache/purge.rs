//! Purges: exact cache keys are removed at once; a prefix (a directory, with every
//! query and `Vary` variant under it) is removed by one pass over the store on a
//! blocking thread. While that pass runs, the prefix is listed here and the proxy
//! treats what it covers as absent, so a purge takes effect the moment it is
//! accepted and the serving path never scans the store.
//!
//! TODO-robustness: a fill that left for the origin before a purge and stores
//! after it is kept; closing that needs the fill's start time on the entry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use super::proxy::Node;

/// Prefix purges in progress.
#[derive(Debug, Default)]
pub struct Purges {
    /// Read on every lookup; almost always empty.
    bans: ArcSwap<Vec<Ban>>,
    next_id: AtomicU64,
}

/// A cache key prefix being purged.
#[derive(Debug, Clone)]
struct Ban {
    id: u64,
    prefix: String,
}

impl Purges {
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
