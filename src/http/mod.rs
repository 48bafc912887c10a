//! The control plane: an HTTP listener apart from DNS, for operators and POPs.
//! Nothing here can block the answer path: handlers read the published snapshot
//! and write only to state the answer path reads through its own swap.
//!
//! The other two routing modes are HTTP too: DNS over HTTPS (`doh`, on the control
//! plane and on its own TLS listener, `tls`) and the 302 router (`redirect`, a
//! listener of its own); both find the client with `forwarded`.

mod admin;
pub mod doh;
mod explain;
pub mod forwarded;
mod health;
mod probe;
pub mod redirect;
pub mod tls;

pub use probe::{METRICS_CONTENT_TYPE, Readiness};
// Bearer tokens are read the same way on the cache node's admin listener.
pub(crate) use health::{bearer, unauthorized};

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::health::Health;
use crate::metrics::Metrics;
use crate::snapshot::Shared;

/// What every handler may reach.
#[derive(Clone)]
pub struct AppState {
    /// The published snapshot.
    pub shared: Shared,
    /// The instance's metrics.
    pub metrics: Metrics,
    /// Opens once the DNS listeners serve (`/ready`).
    pub ready: Readiness,
    /// The live health keeper (`/v1/health`, `/v1/pops`).
    pub health: Arc<Health>,
}

/// Builds the control-plane routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/explain", get(explain::handler))
        .route("/live", get(probe::live))
        .route("/ready", get(probe::ready))
        .route("/metrics", get(probe::metrics))
        .merge(health::routes())
        .merge(admin::routes())
        .merge(doh::routes())
        .with_state(state)
}

/// Serves the control plane until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_routes(listener, router(state), shutdown).await
}

/// Serves routes with each request's peer address at hand (DoH and the 302
/// router locate clients by it) until `shutdown` resolves.
async fn serve_routes(
    listener: tokio::net::TcpListener,
    routes: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        routes.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// The routing-mode listeners beside the control plane: DoH over TLS
/// (`listen.doh-tls`) and the 302 router (`listen.http-router`).
#[derive(Debug, Default)]
pub struct ModeListeners {
    /// The DoH-over-TLS address actually bound.
    pub doh_tls: Option<SocketAddr>,
    /// The 302 router's address actually bound.
    pub http_router: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl ModeListeners {
    /// Binds and starts the listeners the config names; they stop when `stopped`
    /// turns true. A certificate that cannot be read is a config problem at the
    /// `tls:` line.
    pub async fn start(
        state: AppState,
        stopped: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Self, crate::server::StartError> {
        use crate::server::StartError;
        let snapshot = state.shared.load_full();
        let listen = &snapshot.config.listen;
        let mut out = Self::default();
        let shutdown = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let (Some(addr), Some(files)) = (listen.doh_tls, &snapshot.config.tls) {
            let problem = |reason: String| {
                crate::config::ConfigError::one(crate::config::Problem::at(
                    &snapshot.config.source,
                    snapshot.config.lines.tls,
                    None,
                    format!("tls: {reason}"),
                ))
            };
            let store = Arc::new(tls::CertStore::load(&snapshot, files).map_err(problem)?);
            let config = tls::server_config(store.clone()).map_err(problem)?;
            let listener = bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })?;
            out.doh_tls = Some(
                listener
                    .local_addr()
                    .map_err(|source| StartError::Bind { addr, source })?,
            );
            out.tasks.push(tokio::spawn(tls::serve(
                listener,
                state.clone(),
                store,
                config,
                shutdown(stopped.clone()),
            )));
        }
        if let Some(addr) = listen.http_router {
            let listener = bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })?;
            out.http_router = Some(
                listener
                    .local_addr()
                    .map_err(|source| StartError::Bind { addr, source })?,
            );
            out.tasks.push(tokio::spawn(redirect::serve(
                listener,
                state,
                shutdown(stopped),
            )));
        }
        Ok(out)
    }

    /// Waits for the listeners to stop (after `stopped` turned true).
    pub async fn shutdown(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Binds the control-plane listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// A JSON error body that says why.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}
