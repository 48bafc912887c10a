//! `GET /v1/explain?client=ADDR[/PREFIX]&name=NAME&qtype=A|AAAA`: the same
//! explanation as `meridian explain`, as JSON.

use axum::Json;
use axum::extract::{Query as QueryString, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{AppState, error};
use crate::explain::{self, ExplainError, Query};

#[derive(Debug, Deserialize)]
pub(super) struct ExplainParams {
    client: Option<String>,
    name: Option<String>,
    qtype: Option<String>,
}

/// Explains one client's routing.
pub(super) async fn handler(
    State(state): State<AppState>,
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
    let snapshot = state.shared.load();
    match explain::explain(&snapshot, &query) {
        Ok(explanation) => Json(explanation).into_response(),
        Err(e @ ExplainError::NotAccelerated(_)) | Err(e @ ExplainError::NoDomains) => {
            error(StatusCode::NOT_FOUND, &e.to_string())
        }
        Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}
