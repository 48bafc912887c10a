//! The edge cache node (`meridian cache`): the HTTP reverse-proxy cache a POP
//! runs, serving the traffic Meridian routes to it and pushing its load back.
//!
//! # Data flow
//!
//! A request comes in on [`CacheConfig::listen`]. `proxy` finds its domain by
//! Host (an unknown Host gets 421: the node is never an open proxy), builds the
//! cache key (host, path and the query as the domain's rules keep it) and asks
//! the `store` (a weighted `quick_cache` within the memory budget). A fresh entry
//! is served as a HIT; RFC 9111 decisions (freshness, `Age`, `Vary`,
//! revalidation, `no-store`/`private`) come from `http-cache-semantics`. Anything
//! else is fetched by `origin` (the domain's parent cache node first, then its
//! origins in order, HTTP or HTTPS, with failover and `Via`), and misses for one
//! key are coalesced: one request fetches, the others wait for it and are served
//! what it stored. The body streams (`growing`): the client and any waiter read
//! it as it arrives, and the store gets it once complete. A stale entry may be answered at once or when the upstreams
//! fail (`stale`, RFC 5861). Whatever is served, `conditional` and `range` shape
//! the answer (304, 206, 416) from the whole cached object. Requests other than
//! GET and HEAD pass through as BYPASS. `metrics` counts every response and is
//! served on `metrics-listen`.
//!
//! Before any of that, `access` checks the domain's client address, Referer and
//! signed-URL rules (403, `DENIED`), and the domain's dynamic rules send a request
//! straight to the origin as BYPASS.
//!
//! Control in: on a listener of its own, `admin` takes purges (`purge`: exact keys
//! at once, prefixes by a background pass while they count as absent) and
//! prefetches (`prefetch`: queued, then requested through the proxy a few at a
//! time).
//!
//! Health out: `report` pushes `{"pop", "seq", "healthy", "load"}` to every
//! Meridian in the config on a timer, in a task of its own, so an unreachable
//! Meridian never holds up serving.

pub mod access;
mod admin;
mod conditional;
pub mod config;
mod growing;
mod hit;
mod metrics;
mod origin;
mod prefetch;
mod proxy;
mod purge;
mod range;
mod report;
mod stale;
mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

pub use config::CacheConfig;

/// A running cache node.
#[derive(Debug)]
pub struct CacheNode {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    pushes: watch::Receiver<u64>,
    metrics_addr: Option<SocketAddr>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    admin: Option<admin::Admin>,
    prefetched: watch::Receiver<u64>,
}

impl CacheNode {
    /// The address actually bound (port 0 in the config picks one).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `/metrics` is served, when `metrics-listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// How many health reports some Meridian has accepted so far; tests wait on
    /// it rather than on time.
    pub fn accepted_reports(&self) -> watch::Receiver<u64> {
        self.pushes.clone()
    }

    /// The admin API's address, when it is enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|admin| admin.addr)
    }

    /// How many prefetches have finished (fetched or failed); tests wait on it.
    pub fn finished_prefetches(&self) -> watch::Receiver<u64> {
        self.prefetched.clone()
    }

    /// Stops serving and waits for the listeners to close.
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.stop.send(true);
        let admin = match self.admin {
            Some(admin) => admin.task.await.unwrap_or(Ok(())),
            None => Ok(()),
        };
        self.task.await.unwrap_or(Ok(())).and(admin)
    }

    /// Serves until SIGINT or SIGTERM.
    pub async fn run_until_signal(self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let (mut term, mut int) = (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        );
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down");
        self.stop().await
    }
}

/// Binds the listeners and starts serving and pushing health.
pub async fn start(config: CacheConfig) -> std::io::Result<CacheNode> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let (pushed, pushes) = watch::channel(0);
    let node = Arc::new(proxy::Node::new(config).map_err(std::io::Error::other)?);
    let metrics_addr = match node.config.metrics_listen {
        Some(at) => Some(serve_metrics(node.clone(), at, stopped.clone()).await?),
        None => None,
    };
    if let Some(push) = node.config.meridian.clone() {
        tokio::spawn(report::push_loop(
            node.clone(),
            push,
            pushed,
            stopped.clone(),
        ));
    }
    let (finished, prefetched) = watch::channel(0);
    let admin = match node.config.admin.clone() {
        Some(api) => Some(admin::start(node.clone(), &api, finished, stopped.clone()).await?),
        None => None,
    };
    let mut until = stopped;
    let shutdown = async move {
        let _ = until.wait_for(|stop| *stop).await;
    };
    // The peer address is what client address rules check.
    let app = proxy::router(node).into_make_service_with_connect_info::<SocketAddr>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    });
    tracing::info!(%addr, "cache node listening");
    Ok(CacheNode {
        addr,
        stop,
        pushes,
        metrics_addr,
        task,
        admin,
        prefetched,
    })
}

/// Serves `GET /metrics` on a listener of its own, until `stopped`.
async fn serve_metrics(
    node: Arc<proxy::Node>,
    at: SocketAddr,
    mut stopped: watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(at).await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || async move { node.metrics.render(&node.store) }),
    );
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "metrics listener failed");
        }
    });
    tracing::info!(%addr, "cache node metrics listening");
    Ok(addr)
}
