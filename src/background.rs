//! Work that must not take CPU from the answer path: a thread of its own per job,
//! at the lowest scheduling priority.
//!
//! A reload builds a whole snapshot (a few hundred milliseconds of CPU with
//! thousands of POPs) and frees the one it replaced. Where Meridian shares a core
//! with its UDP workers, a build at normal priority takes half of that core for its
//! duration and queries queue behind it. At nice 19 the scheduler gives the build
//! what the workers leave (about 1.5% of a core they keep busy, all of an idle
//! one), so a reload under load takes longer and answers do not wait for it.
//!
//! Reloads are rare, so a thread per job costs nothing a pool would save, and the
//! async runtime's blocking pool (`spawn_blocking`) is left at normal priority for
//! the work that needs it.

use std::io;

use tokio::sync::oneshot;

/// Niceness of a background thread: the lowest priority `setpriority` allows.
#[cfg(target_os = "linux")]
const NICENESS: i32 = 19;

/// Why background work gave no result.
#[derive(Debug, thiserror::Error)]
pub enum BackgroundError {
    /// The system refused another thread.
    #[error("cannot start a background thread: {0}")]
    Spawn(#[from] io::Error),
    /// The work panicked (the panic itself is reported by the panic hook).
    #[error("background work panicked")]
    Panicked,
}

/// Runs `work` on a new low-priority thread named `name` and waits for its result
/// without blocking the async runtime.
pub async fn run<T, F>(name: &str, work: F) -> Result<T, BackgroundError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (sender, receiver) = oneshot::channel();
    spawn(name, move || {
        // The receiver is gone only if the caller stopped waiting: nobody to tell.
        let _ = sender.send(work());
    })?;
    receiver.await.map_err(|_| BackgroundError::Panicked)
}

/// Starts `work` on a new low-priority thread named `name` and lets it run to the
/// end on its own.
pub fn spawn<F>(name: &str, work: F) -> io::Result<()>
where
    F: FnOnce() + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            lower_priority();
            work();
        })
        .map(drop)
}

/// Lowers the calling thread's scheduling priority, and only its own: on Linux a
/// thread id given to `setpriority` names that thread. Best effort: at normal
/// priority the work is merely less polite.
#[cfg(target_os = "linux")]
fn lower_priority() {
    let thread = rustix::thread::gettid();
    if let Err(error) = rustix::process::setpriority_process(Some(thread), NICENESS) {
        tracing::debug!(%error, "cannot lower a background thread's priority");
    }
}

/// Elsewhere `setpriority` applies to the whole process, so threads keep theirs.
#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_result_comes_back_and_a_panic_is_an_error() {
        let answer = run("meridian-test", || 6 * 7).await.expect("runs");
        assert_eq!(answer, 42);
        let panicked = run("meridian-test", || -> u8 { panic!("on purpose") }).await;
        assert!(matches!(panicked, Err(BackgroundError::Panicked)));
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_thread_runs_at_the_lowest_priority_and_the_caller_keeps_its_own() {
        let before = rustix::process::getpriority_process(None).expect("own priority");
        let inside = run("meridian-test", || {
            rustix::process::getpriority_process(Some(rustix::thread::gettid()))
                .expect("thread priority")
        })
        .await
        .expect("runs");
        assert_eq!(inside, NICENESS);
        let after = rustix::process::getpriority_process(Some(rustix::thread::gettid()))
            .expect("own priority");
        assert_eq!(after, before);
    }
}
