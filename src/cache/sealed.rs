//! Large cached bodies kept in sealed memory files, so hits can leave by
//! `sendfile` instead of being copied into every socket.
//!
//! Writing a body from memory costs the kernel a copy of every byte into socket
//! buffers on each hit; for 100 KiB objects that copy was a third of the node's
//! time. `sendfile` from a file makes the socket reference the file's pages
//! instead, which is how nginx serves its cache. So a body of at least
//! [`SEAL_AT_LEAST`] bytes is copied once, when it is stored, into a memfd of its
//! own, sealed against any change and mapped read-only; the stored `Bytes` view
//! that mapping, and every other use of the body (ranges, revalidation, HEAD)
//! works on it as on any `Bytes`.
//!
//! The listener's streams (`conn`) recognise a write whose buffer lies in such a
//! mapping with [`find`] and send it from the file. Safety of that rests on the
//! seals: the socket may hold the pages until the peer has read (or, on a real
//! network, acknowledged) them, and since the file can never be written, grown
//! or shrunk, those pages always hold what the mapping shows; they are freed
//! only once the kernel lets go of them.
//!
//! Each sealed body holds a file descriptor and a mapping, so their number is
//! capped (a share of `RLIMIT_NOFILE`, and far below `vm.max_map_count`); past
//! the cap, or if any step fails, a body simply stays on the heap.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::io;
use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use axum::body::Bytes;
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};

/// Smallest body worth a file: below it, the copy on each hit is cheaper than a
/// separate system call for the body and a file descriptor per object.
pub const SEAL_AT_LEAST: usize = 32 * 1024;
/// Most sealed bodies at once, whatever the descriptor limit: each is also a
/// mapping, and Linux allows 65,530 per process by default.
const MAX_SEALED: usize = 32_768;
/// Share of the process's descriptor limit sealed bodies may take; the rest is
/// for connections.
const NOFILE_SHARE: u64 = 4;

/// A sealed body's file: what [`find`] hands to the sender.
#[derive(Debug, Clone)]
pub struct Region {
    pub file: Arc<OwnedFd>,
    /// Where the buffer asked about starts in the file.
    pub offset: u64,
}

/// The body in a sealed memfd when it is large enough and the cap allows;
/// otherwise (or if the kernel refuses any step) the body as it was.
pub fn seal(body: Bytes) -> Bytes {
    if body.len() < SEAL_AT_LEAST || !Budget::take() {
        return body;
    }
    match Mapping::of(&body) {
        Ok(mapping) => Bytes::from_owner(mapping),
        Err(e) => {
            Budget::give_back();
            tracing::debug!(error = %e, "body kept on the heap");
            body
        }
    }
}

/// The sealed file that `buf` is part of, if any.
pub fn find(buf: &[u8]) -> Option<Region> {
    if SEALED.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let start = buf.as_ptr() as usize;
    let regions = registry().read().unwrap_or_else(|p| p.into_inner());
    let (&base, entry) = regions.range(..=start).next_back()?;
    (start + buf.len() <= entry.end).then(|| Region {
        file: entry.file.clone(),
        offset: (start - base) as u64,
    })
}

/// How many bodies are sealed now.
static SEALED: AtomicUsize = AtomicUsize::new(0);

/// Counts sealed bodies against the cap.
struct Budget;

impl Budget {
    fn take() -> bool {
        static CAP: OnceLock<usize> = OnceLock::new();
        let cap = *CAP.get_or_init(|| {
            let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
                .current
                .unwrap_or(u64::MAX);
            usize::try_from(nofile / NOFILE_SHARE)
                .unwrap_or(usize::MAX)
                .min(MAX_SEALED)
        });
        SEALED
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok()
    }

    fn give_back() {
        SEALED.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A mapped region's end and its file, by start address.
struct Entry {
    end: usize,
    file: Arc<OwnedFd>,
}

fn registry() -> &'static RwLock<BTreeMap<usize, Entry>> {
    static REGISTRY: OnceLock<RwLock<BTreeMap<usize, Entry>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// A read-only shared mapping of a sealed memfd holding one body.
struct Mapping {
    ptr: NonNull<c_void>,
    len: usize,
}

// SAFETY: the mapping is read-only and its file sealed, so the memory never
// changes; reading it from any thread is as safe as reading a `&'static [u8]`.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Copies `body` (not empty) into a new memfd, seals it and maps it.
    fn of(body: &[u8]) -> io::Result<Self> {
        let file = rustix::fs::memfd_create(
            "meridian-cache-body",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        let mut written = 0;
        while written < body.len() {
            match rustix::io::write(&file, &body[written..])? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => written += n,
            }
        }
        rustix::fs::fcntl_add_seals(
            &file,
            SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE,
        )?;
        // SAFETY: a fresh mapping at an address the kernel picks aliases no Rust
        // object; it is read-only and the file cannot change (sealed above), so
        // the bytes seen through it are immutable for as long as it lives.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                body.len(),
                ProtFlags::READ,
                MapFlags::SHARED,
                &file,
                0,
            )?
        };
        let ptr = NonNull::new(ptr).ok_or_else(|| io::Error::other("mmap returned null"))?;
        let start = ptr.as_ptr() as usize;
        registry()
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                start,
                Entry {
                    end: start + body.len(),
                    file: Arc::new(file),
                },
            );
        Ok(Self {
            ptr,
            len: body.len(),
        })
    }
}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until `drop`, and they never
        // change (see `of`).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // Out of the registry first: no sender may find a region being unmapped.
        // None can be mid-send from it either, as a sender's buffer borrows the
        // `Bytes` that owns this mapping.
        registry()
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(self.ptr.as_ptr() as usize));
        // SAFETY: the mapping was made by `of` with this length, and this owner
        // was its only user: every `Bytes` viewing it is gone.
        if let Err(e) = unsafe { rustix::mm::munmap(self.ptr.as_ptr(), self.len) } {
            tracing::warn!(error = %e, "munmap of a cached body failed");
        }
        Budget::give_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(len: usize) -> Bytes {
        (0..len).map(|i| (i % 251) as u8).collect::<Vec<_>>().into()
    }

    #[test]
    fn large_bodies_are_sealed_and_found() {
        let original = body(SEAL_AT_LEAST * 3);
        let sealed = seal(original.clone());
        assert_eq!(sealed, original);
        let region = find(&sealed).expect("a sealed body is found");
        assert_eq!(region.offset, 0);
        let part = sealed.slice(100..SEAL_AT_LEAST);
        assert_eq!(find(&part).expect("a slice of it too").offset, 100);
        // The file holds the body and refuses to change.
        let mut read = vec![0; 10];
        rustix::io::pread(&*region.file, &mut read, 100).expect("pread");
        assert_eq!(read, original[100..110]);
        assert!(rustix::io::pwrite(&*region.file, b"x", 0).is_err());
        // Gone from the registry with its last view.
        let address = sealed.as_ptr() as usize;
        drop((sealed, part));
        let regions = registry().read().unwrap_or_else(|p| p.into_inner());
        assert!(!regions.contains_key(&address));
    }

    #[test]
    fn small_bodies_stay_on_the_heap() {
        let small = seal(body(SEAL_AT_LEAST - 1));
        assert!(find(&small).is_none());
        assert!(find(&body(SEAL_AT_LEAST)).is_none(), "never sealed");
    }
}
