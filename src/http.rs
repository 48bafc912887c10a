//! The control plane: an HTTP listener apart from DNS, for operators and POPs.
//! Today: `GET /v1/explain`, `/live` and `/ready`. Nothing here can block the
//! answer path: handlers only read the published snapshot.

use std::net::SocketAddr;

use axum::extract::{Query as QueryString, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::explain::{self, ExplainError, Query};
use crate::snapshot::Shared;

/// Builds the control-plane routes over the published snapshot.
pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/v1/explain", get(explain_handler))
        .route("/live", get(|| async { "live\n" }))
        .route("/ready", get(|| async { "ready\n" }))
        .with_state(shared)
}

/// Serves the control plane until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds the control-plane listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

#[derive(Debug, Deserialize)]
struct ExplainParams {
    client: Option<String>,
    name: Option<String>,
    qtype: Option<String>,
}

/// `GET /v1/explain?client=ADDR[/PREFIX]&name=NAME&qtype=A|AAAA`.
async fn explain_handler(
    State(shared): State<Shared>,
    QueryString(params): QueryString<ExplainParams>,
) -> Response {
    let Some(client) = params.client else {
        return error(StatusCode::BAD_REQUEST, "missing query parameter `client`");
    };
    let query = match Query::parse(
        &client,
        params.name.as_deref(),
        params.qtype.as_deref().unwrap_or("A"),
    ) {
        Ok(query) => query,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let snapshot = shared.load();
    match explain::explain(&snapshot, &query) {
        Ok(explanation) => Json(explanation).into_response(),
        Err(e @ ExplainError::NotAccelerated(_)) | Err(e @ ExplainError::NoDomains) => {
            error(StatusCode::NOT_FOUND, &e.to_string())
        }
        Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

/// A JSON error body that says why.
fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}
