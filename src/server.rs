//! Starting and stopping a Meridian instance: DNS listeners, the control plane,
//! and reloads (`reload`: on SIGHUP, on a file change, or asked). Tests call
//! [`start`] with port 0 and read the bound addresses back.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigError};
use crate::dns::{self, DnsServer};
use crate::health::Health;
use crate::http::{AppState, Readiness};
use crate::metrics::Metrics;
use crate::reload::{self, Reloader, Sources};
use crate::snapshot::{Shared, Snapshot};

/// Why an instance did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config, a zone or a geo database is wrong.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A DNS listener could not be bound (the error does not say which).
    #[error("cannot listen for DNS on {addrs}: {source}")]
    DnsBind {
        addrs: String,
        source: std::io::Error,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running instance.
pub struct Server {
    shared: Shared,
    metrics: Metrics,
    health: Arc<Health>,
    dns: DnsServer,
    http_addr: Option<SocketAddr>,
    http_task: Option<JoinHandle<std::io::Result<()>>>,
    /// DoH over TLS and the 302 router.
    modes: crate::http::ModeListeners,
    reloader: Arc<Reloader>,
    watch_task: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

/// Loads everything the config names and starts serving it.
pub async fn start(config: Config) -> Result<Server, StartError> {
    let dns_addrs = if config.listen.dns.is_empty() {
        vec![
            crate::config::DEFAULT_DNS_LISTEN
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        ]
    } else {
        config.listen.dns.clone()
    };
    let http_listen = config.listen.http;
    // Stamped before reading, so that a reload can tell what changed since.
    let sources = Sources::of(&config);
    let watch_files = !config.overlay.no_watch;
    let snapshot = Snapshot::load(config)?;
    crate::background::release_freed_memory();
    let shared: Shared = Arc::new(ArcSwap::from_pointee(snapshot));
    let metrics = Metrics::new();
    let ready = Readiness::new();
    let health = Arc::new(Health::new(shared.clone(), metrics.clone()));
    health.attach(&shared.load());

    let (stop, stopped) = watch::channel(false);
    let (http_addr, http_task) = match http_listen {
        Some(addr) => {
            let listener = crate::http::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| StartError::Bind { addr, source })?;
            let mut stopped = stopped.clone();
            let state = AppState {
                shared: shared.clone(),
                metrics: metrics.clone(),
                ready: ready.clone(),
                health: health.clone(),
            };
            let task = tokio::spawn(crate::http::serve(listener, state, async move {
                let _ = stopped.wait_for(|s| *s).await;
            }));
            (Some(bound), Some(task))
        }
        None => (None, None),
    };
    let modes_state = AppState {
        shared: shared.clone(),
        metrics: metrics.clone(),
        ready: ready.clone(),
        health: health.clone(),
    };
    let modes = crate::http::ModeListeners::start(modes_state, stopped.clone()).await?;
    let dns = dns::start(&dns_addrs, shared.clone(), metrics.clone())
        .await
        .map_err(|source| StartError::DnsBind {
            addrs: dns_addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            source,
        })?;
    let mut ticker_stopped = stopped.clone();
    tokio::spawn(health.clone().run(async move {
        let _ = ticker_stopped.wait_for(|s| *s).await;
    }));
    let reloader = Arc::new(Reloader::new(
        shared.clone(),
        metrics.clone(),
        health.clone(),
        sources,
    ));
    let watch_task = if watch_files {
        reload::watch(reloader.clone(), stopped.clone()).await
    } else {
        tokio::spawn(async {})
    };
    ready.set_ready();
    Ok(Server {
        shared,
        metrics,
        health,
        dns,
        http_addr,
        http_task,
        modes,
        reloader,
        watch_task,
        stop,
    })
}

impl Server {
    /// DNS addresses actually bound (UDP and TCP share each).
    pub fn dns_addrs(&self) -> &[SocketAddr] {
        &self.dns.addrs
    }

    /// The control-plane address actually bound.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The DoH-over-TLS address actually bound (`listen.doh-tls`).
    pub fn doh_tls_addr(&self) -> Option<SocketAddr> {
        self.modes.doh_tls
    }

    /// The 302 router's address actually bound (`listen.http-router`).
    pub fn http_router_addr(&self) -> Option<SocketAddr> {
        self.modes.http_router
    }

    /// The published snapshot.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The instance's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The live health keeper (tests drive its clock with [`Health::tick`]).
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// Says where the instance listens.
    pub fn log_listening(&self) {
        for addr in self.dns_addrs() {
            tracing::info!(%addr, "DNS listening (UDP and TCP)");
        }
        if let Some(addr) = self.http_addr {
            tracing::info!(%addr, "control plane listening (HTTP, DoH at /dns-query)");
        }
        if let Some(addr) = self.modes.doh_tls {
            tracing::info!(%addr, "DoH listening (HTTPS: HTTP/2 and HTTP/1.1)");
        }
        if let Some(addr) = self.modes.http_router {
            tracing::info!(%addr, "302 router listening (HTTP)");
        }
    }

    /// Reads the config file again (with the command-line settings it was started
    /// with), builds a new snapshot off the answer path and swaps it in. On any
    /// problem the running snapshot keeps serving; the problems are logged, counted
    /// and returned.
    pub async fn reload(&self) -> Result<(), ConfigError> {
        self.reloader.reload().await
    }

    /// Serves until SIGINT or SIGTERM; SIGHUP reloads the config.
    pub async fn run_until_signal(self) {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::hangup()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; serving until killed");
            std::future::pending::<()>().await;
            return;
        };
        loop {
            tokio::select! {
                // Logged and counted by the reloader.
                _ = hup.recv() => {
                    let _ = self.reload().await;
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        tracing::info!("shutting down");
        self.shutdown().await;
    }

    /// Stops every listener and waits for them.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.http_task.take() {
            let _ = task.await;
        }
        std::mem::take(&mut self.modes).shutdown().await;
        let _ = self.watch_task.await;
        self.dns.shutdown().await;
    }
}
