//! Hot reload: on SIGHUP, [`Server::reload`](crate::server::Server::reload), or a
//! change to the config file, a zone file or a geo database, build a complete new
//! snapshot off the answer path, and swap it in whole; a snapshot that does not
//! build is logged problem by problem (file, line, reason), counted, and the
//! running one keeps serving.
//!
//! Loading a full City database takes a while (60 MB) and building thousands of
//! POPs' tables hundreds of milliseconds, so building runs on a thread of its own at
//! the lowest priority (`background`): on a core shared with the UDP workers it
//! takes only what they leave. Geo databases whose paths, sizes and modification
//! times are unchanged are reused. Live health survives: the health keeper fills
//! the new snapshot's live view before it is published. The replaced snapshot is
//! freed on a low-priority thread too, once the answer path has let go of it, so
//! that no UDP worker pays for freeing it. Reloads run one at a time, so a slower
//! one can never overwrite a newer one.
//!
//! The watcher watches the directories of the running snapshot's files (not the
//! files: editors and `mv` replace a file, which ends a watch on it). After a quiet
//! spell it reloads if any file differs from what the last reload read: the content
//! of the config and zone files (file timestamps tick too coarsely to tell two quick
//! writes apart), the size and modification time of the geo databases (too large
//! to read for the question). Comparing what the paths read rather than which names
//! the events carry also catches a symlink swapped elsewhere in the directory, as
//! Kubernetes does for mounted config maps, and ignores a save that changed nothing.

use std::collections::{HashMap, HashSet};
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use notify::event::EventKind;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;

use crate::background;
use crate::config::{Config, ConfigError, Problem};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::snapshot::{Shared, Snapshot};

/// Quiet time after a file event before reloading: an editor's save or a deploy
/// tool's copy is several events in quick succession, and a half-written file
/// would be rejected.
pub const DEBOUNCE: Duration = Duration::from_millis(300);
/// Longest a stream of events can put a reload off.
pub const MAX_DELAY: Duration = Duration::from_secs(2);
/// How often a replaced snapshot's thread looks whether readers let go of it.
const RETIRE_POLL: Duration = Duration::from_millis(20);
/// Longest a replaced snapshot waits for its last readers; then it is let go
/// anyway and the last of them frees it, as it would without waiting.
const RETIRE_WAIT: Duration = Duration::from_secs(10);

/// Rebuilds and publishes the snapshot.
pub struct Reloader {
    shared: Shared,
    metrics: Metrics,
    health: Arc<Health>,
    /// Held for the whole of a reload: one at a time.
    state: Mutex<State>,
}

/// What the reloader knows of the files.
struct State {
    /// As read for the running snapshot: whether its geo databases can be reused.
    served: Sources,
    /// As read by the last reload, successful or not: whether anything changed since.
    seen: Sources,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

/// The files a snapshot is built from, as they were just before they were read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    files: HashMap<PathBuf, (Fingerprint, Option<Stamp>)>,
}

/// How a file is told apart from its earlier self.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fingerprint {
    /// By a hash of its content: config and zone files, small and read anyway.
    Content,
    /// By size and modification time: geo databases, replaced whole by updaters.
    Metadata,
}

/// What a file was, by its [`Fingerprint`]; None for a file that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    Content(u64),
    Metadata {
        len: u64,
        modified: Option<SystemTime>,
    },
}

impl Sources {
    /// Stamps every file `config` names. Called before they are read, so that a
    /// change while they are read shows as a change afterwards.
    pub fn of(config: &Config) -> Self {
        let text = std::iter::once(config.source.as_path())
            .chain(config.zones.iter().map(|z| z.file.as_path()))
            .map(|p| (p, Fingerprint::Content));
        let geo = [&config.geodata.city, &config.geodata.asn]
            .into_iter()
            .flatten()
            .map(|p| (p.as_path(), Fingerprint::Metadata));
        Self {
            files: text
                .chain(geo)
                .map(|(path, how)| (path.to_path_buf(), (how, stamp(path, how))))
                .collect(),
        }
    }

    /// Whether any file differs from its stamp now.
    fn changed(&self) -> bool {
        self.files
            .iter()
            .any(|(path, (how, then))| stamp(path, *how) != *then)
    }

    /// Whether the geo databases `config` names were the same files, unchanged,
    /// in `self` and `other`.
    fn same_geodata(&self, other: &Sources, config: &Config) -> bool {
        [&config.geodata.city, &config.geodata.asn]
            .into_iter()
            .flatten()
            .all(|path| {
                let ours = self.files.get(path.as_path());
                ours.is_some_and(|(_, stamp)| stamp.is_some())
                    && ours == other.files.get(path.as_path())
            })
    }
}

fn stamp(path: &Path, how: Fingerprint) -> Option<Stamp> {
    match how {
        Fingerprint::Content => {
            let bytes = std::fs::read(path).ok()?;
            // Not adversarial input: the default hasher is enough to see an edit.
            let mut hasher = std::hash::DefaultHasher::new();
            hasher.write(&bytes);
            Some(Stamp::Content(hasher.finish()))
        }
        Fingerprint::Metadata => {
            let metadata = std::fs::metadata(path).ok()?;
            Some(Stamp::Metadata {
                len: metadata.len(),
                modified: metadata.modified().ok(),
            })
        }
    }
}

impl Reloader {
    /// A reloader for the snapshot published through `shared`, which was built
    /// from `sources`.
    pub fn new(shared: Shared, metrics: Metrics, health: Arc<Health>, sources: Sources) -> Self {
        Self {
            shared,
            metrics,
            health,
            state: Mutex::new(State {
                served: sources.clone(),
                seen: sources,
            }),
        }
    }

    /// Reads the running config's file again (with the same command-line
    /// settings), builds a new snapshot and publishes it. On any problem the
    /// running snapshot keeps serving; each problem is logged and returned.
    pub async fn reload(&self) -> Result<(), ConfigError> {
        let mut state = self.state.lock().await;
        let current = self.shared.load_full();
        let served = state.served.clone();
        let path = current.config.source.clone();
        let metrics = self.metrics.clone();
        let built = background::run("meridian-reload", move || {
            let (result, attempted) = build(&current, &served);
            background::release_freed_memory();
            let result = result.map(|snapshot| {
                let snapshot = Arc::new(snapshot);
                // Made here rather than by the first UDP worker to serve it.
                metrics.prepare(&snapshot);
                snapshot
            });
            (result, attempted)
        })
        .await;
        let (result, attempted) = built.unwrap_or_else(|error| {
            let problem = Problem::file(&path, format!("reload failed: {error}"));
            (Err(ConfigError::one(problem)), Sources::default())
        });
        match result {
            Ok(snapshot) => {
                self.health.attach(&snapshot);
                let replaced = self.shared.swap(snapshot);
                retire(replaced);
                self.metrics.reload(true);
                state.served = attempted.clone();
                state.seen = attempted;
                tracing::info!(config = %path.display(), "config reloaded");
                Ok(())
            }
            Err(error) => {
                for problem in &error.problems {
                    tracing::error!(
                        file = %problem.file.display(),
                        line = problem.line,
                        reason = %problem.message,
                        "config reload rejected; the running config keeps serving"
                    );
                }
                self.metrics.reload(false);
                // What was read is remembered, so the watcher waits for the next
                // change rather than retrying the same broken file.
                state.seen.files.extend(attempted.files);
                Err(error)
            }
        }
    }

    /// Whether a file changed since it was last read.
    async fn changed(&self) -> bool {
        let seen = self.state.lock().await.seen.clone();
        tokio::task::spawn_blocking(move || seen.changed())
            .await
            .unwrap_or(true)
    }

    /// The files to watch: those of the running snapshot and of the last attempt.
    async fn files(&self) -> Vec<PathBuf> {
        let state = self.state.lock().await;
        let mut files: Vec<PathBuf> = state.served.files.keys().cloned().collect();
        files.extend(state.seen.files.keys().cloned());
        files
    }
}

/// Frees a replaced snapshot on a low-priority thread once it holds the last
/// reference. Readers (a UDP worker's batch, an HTTP request) hold it for
/// moments; the last to let go would free it, and a UDP worker freeing thousands
/// of POPs' tables makes the queries behind it wait.
fn retire<T: Send + Sync + 'static>(replaced: Arc<T>) {
    let spawned = background::spawn("meridian-retire", move || {
        let deadline = Instant::now() + RETIRE_WAIT;
        while Arc::strong_count(&replaced) > 1 && Instant::now() < deadline {
            std::thread::sleep(RETIRE_POLL);
        }
        drop(replaced);
        background::release_freed_memory();
    });
    if let Err(error) = spawned {
        // The snapshot was dropped with the closure: freed here, which is only slower.
        tracing::debug!(%error, "cannot free the replaced snapshot in the background");
    }
}

/// Builds the snapshot a reload would publish, and the stamps of what it read.
fn build(current: &Snapshot, served: &Sources) -> (Result<Snapshot, ConfigError>, Sources) {
    let path = &current.config.source;
    let config_stamp = (Fingerprint::Content, stamp(path, Fingerprint::Content));
    let config = match Config::load(path, &current.config.overlay) {
        Ok(config) => config,
        Err(error) => {
            let attempted = Sources {
                files: HashMap::from([(path.clone(), config_stamp)]),
            };
            return (Err(error), attempted);
        }
    };
    let mut attempted = Sources::of(&config);
    attempted.files.insert(path.clone(), config_stamp);
    warn_of_restart_settings(&current.config, &config);
    let snapshot =
        if config.geodata == current.config.geodata && attempted.same_geodata(served, &config) {
            Snapshot::with_geo_after(config, Arc::clone(&current.geo), current)
        } else {
            Snapshot::load(config)
        };
    (snapshot, attempted)
}

/// Settings a reload cannot apply: the sockets and threads are made once.
fn warn_of_restart_settings(running: &Config, new: &Config) {
    let listen = |c: &Config| {
        (
            c.listen.dns.clone(),
            c.listen.http,
            c.listen.doh_tls,
            c.listen.http_router,
        )
    };
    if listen(running) != listen(new) {
        tracing::warn!("listen addresses changed: they take effect on restart");
    }
    if running.dns.udp_threads != new.dns.udp_threads {
        tracing::warn!("dns.udp-threads changed: it takes effect on restart");
    }
}

/// Watches the running snapshot's files and reloads when one changes, until
/// `stop` turns true. The directories are watched when this returns, so a change
/// made afterwards is seen. Without a working file watcher (say, the inotify limit
/// is reached) it logs why and watches nothing; SIGHUP still reloads.
pub async fn watch(reloader: Arc<Reloader>, stop: watch::Receiver<bool>) -> JoinHandle<()> {
    let (sender, events) = mpsc::unbounded_channel();
    let watcher = notify::recommended_watcher(move |event| {
        // The receiver is gone only when the watcher task ended.
        let _ = sender.send(event);
    });
    let mut watched = match watcher {
        Ok(watcher) => Watched::new(watcher),
        Err(error) => {
            tracing::warn!(%error, "cannot watch the config files; SIGHUP reloads");
            return tokio::spawn(async {});
        }
    };
    watched.update(reloader.files().await);
    tokio::spawn(run_watcher(reloader, watched, events, stop))
}

async fn run_watcher(
    reloader: Arc<Reloader>,
    mut watched: Watched,
    mut events: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
    mut stop: watch::Receiver<bool>,
) {
    // A change between the first load and the watch went unseen: look once.
    let mut check = true;
    loop {
        if check && reloader.changed().await {
            // The outcome is logged and counted by `reload`.
            let _ = reloader.reload().await;
            watched.update(reloader.files().await);
        }
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => check = may_change_files(&event),
                None => return,
            },
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        if !check {
            continue;
        }
        // Wait for a quiet spell, at most MAX_DELAY.
        let deadline = tokio::time::Instant::now() + MAX_DELAY;
        loop {
            let quiet = tokio::time::sleep(
                DEBOUNCE.min(deadline.saturating_duration_since(tokio::time::Instant::now())),
            );
            tokio::select! {
                event = events.recv() => if event.is_none() {
                    return;
                },
                () = quiet => break,
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
        }
    }
}

/// An event that may have changed what a path reads: anything but a read. A
/// watcher error may have lost events, so it counts too.
fn may_change_files(event: &notify::Result<notify::Event>) -> bool {
    match event {
        Ok(event) => !matches!(event.kind, EventKind::Access(_)),
        Err(error) => {
            tracing::debug!(%error, "file watcher error");
            true
        }
    }
}

/// The directories watched.
struct Watched {
    watcher: RecommendedWatcher,
    /// Canonical paths, so that one directory named two ways is watched once.
    dirs: HashSet<PathBuf>,
}

impl Watched {
    fn new(watcher: RecommendedWatcher) -> Self {
        Self {
            watcher,
            dirs: HashSet::new(),
        }
    }

    /// Watches the directories of `files` and no others.
    fn update(&mut self, files: Vec<PathBuf>) {
        let mut dirs = HashSet::new();
        for file in files {
            let Some(dir) = file.parent() else {
                continue;
            };
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            // A directory that does not exist (yet) cannot be watched; the next
            // update tries again.
            let Ok(dir) = std::fs::canonicalize(dir) else {
                tracing::debug!(dir = %dir.display(), "cannot watch a missing directory");
                continue;
            };
            dirs.insert(dir);
        }
        for gone in self.dirs.difference(&dirs) {
            let _ = self.watcher.unwatch(gone);
        }
        let mut watching = HashSet::new();
        for dir in dirs {
            if self.dirs.contains(&dir) {
                watching.insert(dir);
                continue;
            }
            match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    watching.insert(dir);
                }
                Err(error) => {
                    tracing::warn!(%error, dir = %dir.display(), "cannot watch; SIGHUP reloads");
                }
            }
        }
        self.dirs = watching;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// Says which thread dropped it.
    struct DropWitness(mpsc::Sender<Option<String>>);

    impl Drop for DropWitness {
        fn drop(&mut self) {
            let thread = std::thread::current().name().map(str::to_owned);
            let _ = self.0.send(thread);
        }
    }

    #[test]
    fn a_replaced_snapshot_is_freed_by_the_retiring_thread_not_its_last_reader() {
        let (sender, dropped) = mpsc::channel();
        let replaced = Arc::new(DropWitness(sender));
        let reader = Arc::clone(&replaced);
        retire(replaced);
        drop(reader);
        let thread = dropped
            .recv_timeout(RETIRE_WAIT * 2)
            .expect("the replaced value is freed");
        assert_eq!(thread.as_deref(), Some("meridian-retire"));
    }

    #[test]
    fn stamps_see_a_rewrite_and_a_removal() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a.zone");
        std::fs::write(&path, "one").expect("write");
        let sources = |how| Sources {
            files: HashMap::from([(path.clone(), (how, stamp(&path, how)))]),
        };
        let (by_content, by_metadata) = (
            sources(Fingerprint::Content),
            sources(Fingerprint::Metadata),
        );
        assert!(!by_content.changed() && !by_metadata.changed());
        // Same length, likely the same timestamp tick: only the content tells.
        std::fs::write(&path, "two").expect("write");
        assert!(by_content.changed());
        std::fs::write(&path, "three").expect("write");
        assert!(by_metadata.changed());
        let by_content = sources(Fingerprint::Content);
        std::fs::remove_file(&path).expect("remove");
        assert!(by_content.changed());
    }
}
