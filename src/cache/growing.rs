//! A body being filled from upstream while clients read it: the fill's task
//! appends chunks as they arrive, every reader (the client that caused the fill
//! and any coalesced waiter) follows from the first byte at its own pace, and
//! the completed buffer becomes the stored entry. An upstream failure mid-body
//! ends every reader with an error, so clients see an aborted response and
//! nothing half-received is ever stored.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::watch;

/// How long an upstream body may pause between chunks before it counts as failed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a growing body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    Growing,
    Complete,
    Failed,
}

/// The shared, growing buffer.
#[derive(Debug)]
pub struct GrowingBody {
    chunks: Mutex<Vec<Bytes>>,
    progress: watch::Sender<Progress>,
}

impl GrowingBody {
    /// Fills a new buffer from `upstream` in a task of its own (so the fill ends
    /// even if every reader goes away). When the whole body arrived and holds at
    /// most `keep_at_most` bytes, `complete` is called with it. A body past
    /// `buffer_at_most` bytes fails: that much is never held for one object.
    /// TODO-performance: a body of unknown length that outgrows `keep_at_most`
    /// is still buffered whole for its readers; it could switch to one reader
    /// and drop what has been sent.
    pub fn fill(
        upstream: Incoming,
        keep_at_most: u64,
        buffer_at_most: u64,
        complete: impl FnOnce(Bytes) + Send + 'static,
    ) -> Arc<Self> {
        let growing = Arc::new(Self {
            chunks: Mutex::new(Vec::new()),
            progress: watch::channel(Progress::Growing).0,
        });
        let filling = growing.clone();
        tokio::spawn(async move {
            match filling.pump(upstream, buffer_at_most).await {
                Ok(total) => {
                    // Stored before it is announced complete, so whoever waits for
                    // the end finds it in the store.
                    if total <= keep_at_most
                        && let Some(whole) = filling.whole()
                    {
                        complete(whole);
                    }
                    filling.progress.send_replace(Progress::Complete);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "upstream body failed; not stored");
                    filling.progress.send_replace(Progress::Failed);
                }
            }
        });
        growing
    }

    /// Appends every chunk of `upstream`; the total length on success.
    async fn pump(&self, mut upstream: Incoming, buffer_at_most: u64) -> io::Result<u64> {
        let mut total = 0u64;
        loop {
            let frame = tokio::time::timeout(IDLE_TIMEOUT, upstream.frame())
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "upstream body stalled"))?;
            let Some(frame) = frame else {
                return Ok(total);
            };
            let frame = frame.map_err(io::Error::other)?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            total += data.len() as u64;
            if total > buffer_at_most {
                return Err(io::Error::other(
                    "upstream body larger than the memory budget",
                ));
            }
            self.chunks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(data);
            self.progress.send_replace(Progress::Growing);
        }
    }

    /// Waits for the end; the whole body, or `None` if upstream failed.
    pub async fn complete(&self) -> Option<Bytes> {
        let mut progress = self.progress.subscribe();
        let end = *progress.wait_for(|p| *p != Progress::Growing).await.ok()?;
        match end {
            Progress::Complete => self.whole(),
            _ => None,
        }
    }

    /// The chunks so far, joined.
    fn whole(&self) -> Option<Bytes> {
        let chunks = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        match chunks.as_slice() {
            [] => Some(Bytes::new()),
            [one] => Some(one.clone()),
            many => Some(many.concat().into()),
        }
    }

    /// A response body that follows the buffer from its first byte.
    pub fn reader(self: &Arc<Self>) -> Body {
        let state = (self.clone(), self.progress.subscribe(), 0usize);
        let stream = futures_util::stream::unfold(state, |(body, mut progress, next)| async move {
            if next == usize::MAX {
                return None;
            }
            loop {
                // Seen before the chunks are counted, so a chunk pushed after the
                // count wakes the wait below.
                let now = *progress.borrow_and_update();
                let chunk = body
                    .chunks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(next)
                    .cloned();
                if let Some(chunk) = chunk {
                    return Some((Ok(chunk), (body, progress, next + 1)));
                }
                match now {
                    Progress::Complete => return None,
                    Progress::Failed => {
                        let error = io::Error::other("upstream failed mid-body");
                        // Ends the stream after the error.
                        return Some((Err(error), (body, progress, usize::MAX)));
                    }
                    Progress::Growing => {
                        if progress.changed().await.is_err() {
                            return None;
                        }
                    }
                }
            }
        });
        Body::from_stream(stream)
    }
}
