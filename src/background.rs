//! Work that must not take CPU from the answer path: a thread of its own per job,
//! at the lowest scheduling priority and with the shortest time slice.
//!
//! A reload builds a whole snapshot (a few hundred milliseconds of CPU with
//! thousands of POPs) and frees the one it replaced. Where Meridian shares a core
//! with its UDP workers, a build at normal priority takes half of that core for its
//! duration and queries queue behind it. At nice 19 the scheduler gives the build
//! what the workers leave (about 1.5% of a core they keep busy, all of an idle
//! one), so a reload under load takes longer and answers do not wait for it.
//!
//! Priority alone bounds the build's share, not how long it holds the core once
//! picked: the kernel's default slice (0.75 to 3 ms, by core count) is one such
//! stall per pick, and a saturated worker's queue grows behind each. Linux 6.12
//! and later let a thread ask for a shorter slice (`sched_setattr` with a runtime
//! for a fair-class thread); 100 µs, the shortest it grants, keeps each stall
//! within the latency a query sees anyway. Older kernels ignore the request.
//!
//! Reloads are rare, so a thread per job costs nothing a pool would save, and the
//! async runtime's blocking pool (`spawn_blocking`) is left at normal priority for
//! the work that needs it.

use std::io;

use tokio::sync::oneshot;

/// Niceness of a background thread: the lowest priority `setpriority` allows.
#[cfg(target_os = "linux")]
const NICENESS: i32 = 19;

/// Time slice a background thread asks for: the shortest the kernel grants.
#[cfg(target_os = "linux")]
const SLICE_NS: u64 = 100_000;

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

/// Hands the heap memory freed so far back to the system. A snapshot build
/// allocates and frees tens of megabytes of temporaries (the geo tables are
/// compiled through intermediate arrays) and a retired snapshot frees its whole
/// size; glibc keeps such freed chunks mapped for reuse, so without this the
/// process stays that much larger for good (13 MB after loading GeoLite2-City and
/// ASN). Trimming walks the free lists of every arena, a few milliseconds: called
/// after a build or a retirement, never on the answer path.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns free memory to the system; it touches no
    // memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
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
    if let Err(error) = shorten_slice() {
        tracing::debug!(%error, "cannot shorten a background thread's time slice");
    }
}

/// Asks for [`SLICE_NS`] slices for the calling thread, keeping the normal policy
/// and [`NICENESS`] (`sched_setattr` sets all three at once).
#[cfg(target_os = "linux")]
fn shorten_slice() -> io::Result<()> {
    let attr = libc::sched_attr {
        size: size_of::<libc::sched_attr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_flags: 0,
        sched_nice: NICENESS,
        sched_priority: 0,
        sched_runtime: SLICE_NS,
        sched_deadline: 0,
        sched_period: 0,
    };
    // SAFETY: `sched_setattr(0, attr, 0)` reads `attr.size` bytes from a valid,
    // initialised `sched_attr` that outlives the call, and changes only the calling
    // thread's scheduling parameters.
    let result = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &raw const attr, 0) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
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

    /// The slice the kernel reports for the calling thread, where it reports one
    /// and honours a request for it (Linux 6.12 and later).
    #[cfg(target_os = "linux")]
    fn own_slice() -> Option<u64> {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
        let mut version = release.split(['.', '-']).map(|p| p.parse::<u32>().ok());
        let (major, minor) = (version.next()??, version.next()??);
        if (major, minor) < (6, 12) {
            return None;
        }
        let sched = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
        let line = sched.lines().find(|l| l.starts_with("se.slice"))?;
        line.rsplit(':').next()?.trim().parse().ok()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_thread_asks_for_the_shortest_slice_and_the_caller_keeps_its_own() {
        let before = own_slice();
        let inside = run("meridian-test", own_slice).await.expect("runs");
        if let Some(before) = before {
            assert_eq!(inside, Some(SLICE_NS));
            assert_ne!(before, SLICE_NS, "the test thread has the default slice");
            assert_eq!(own_slice(), Some(before));
        }
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
