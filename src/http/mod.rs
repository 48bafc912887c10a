//! The control plane: an HTTP listener apart from DNS, for operators and POPs.
//! Nothing here can block the answer path: handlers read the published snapshot
//! and write only to state the answer path reads through its own swap.

mod admin;
mod explain;
mod health;
mod probe;

pub use probe::{METRICS_CONTENT_TYPE, Readiness};

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
        .with_state(state)
}

/// Serves the control plane until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds the control-plane listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// A JSON error body that says why.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}
