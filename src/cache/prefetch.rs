//! Prefetch: URLs queued by the admin API are requested through the proxy itself,
//! as a client would, so they are filled (and coalesced with clients' own misses)
//! exactly as any request is (and count in the node's load like one). A bounded
//! queue takes them; a few at a time are fetched, so a long list never crowds out
//! clients at the origin.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{Method, Request, Uri};
use http_body_util::BodyExt;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::access::Internal;
use super::proxy::{self, Node};

/// URLs waiting to be prefetched, at most.
pub const QUEUE_CAPACITY: usize = 10_000;

/// Takes URLs to prefetch.
#[derive(Debug, Clone)]
pub struct Prefetcher {
    queue: mpsc::Sender<Uri>,
}

/// The queue cannot take the whole list now.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the prefetch queue is full ({QUEUE_CAPACITY} URLs); try again later")]
pub struct QueueFull;

impl Prefetcher {
    /// Starts the fetching task, `concurrency` fetches at a time, until `stopped`.
    /// `done` counts the prefetches finished (fetched or failed).
    pub fn start(
        node: Arc<Node>,
        concurrency: usize,
        done: watch::Sender<u64>,
        stopped: watch::Receiver<bool>,
    ) -> Self {
        let (queue, waiting) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(run(node, waiting, concurrency, done, stopped));
        Self { queue }
    }

    /// Queues every URL (absolute, for a served domain), or none of them.
    pub fn enqueue(&self, urls: Vec<Uri>) -> Result<(), QueueFull> {
        if urls.is_empty() {
            return Ok(());
        }
        let permits = self
            .queue
            .try_reserve_many(urls.len())
            .map_err(|_| QueueFull)?;
        for (permit, url) in permits.zip(urls) {
            permit.send(url);
        }
        Ok(())
    }
}

async fn run(
    node: Arc<Node>,
    mut waiting: mpsc::Receiver<Uri>,
    concurrency: usize,
    done: watch::Sender<u64>,
    mut stopped: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(concurrency));
    let done = Arc::new(done);
    // Dropped on stop, which aborts the fetches in progress.
    let mut running = JoinSet::new();
    loop {
        let next = async {
            let slot = slots.clone().acquire_owned().await.ok()?;
            Some((slot, waiting.recv().await?))
        };
        let (slot, url) = tokio::select! {
            next = next => match next {
                Some(next) => next,
                None => return,
            },
            _ = stopped.wait_for(|stop| *stop) => return,
        };
        let (node, done) = (node.clone(), done.clone());
        running.spawn(async move {
            warm(node, url).await;
            done.send_modify(|n| *n += 1);
            drop(slot);
        });
        while running.try_join_next().is_some() {}
    }
}

/// Requests `url` through the proxy and reads the answer to its end (a fill may
/// be stored only once read in full).
async fn warm(node: Arc<Node>, url: Uri) {
    let mut request = Request::new(Body::empty());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = url.clone();
    request.extensions_mut().insert(Internal);
    let response = proxy::handle(State(node), request).await;
    let status = response.status();
    let served = response
        .headers()
        .get(proxy::X_CACHE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    match response.into_body().collect().await {
        Ok(_) if status.is_success() => {
            tracing::debug!(%url, %status, x_cache = %served, "prefetched");
        }
        Ok(_) => tracing::warn!(%url, %status, "prefetch not cached: origin answered"),
        Err(e) => tracing::warn!(%url, error = %e, "prefetch failed"),
    }
}
