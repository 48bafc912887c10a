//! The admin API, for operators: every POP's live state, drains and forced states.
//!
//! - `GET /v1/pops` (read-only, no token): every POP's health, forced state,
//!   smoothed load, shed share, last report age, drain state and share of answers.
//! - `POST /v1/pops/{id}/drain` `{"over_seconds": 60}` (0: at once): the POP's shed
//!   share ramps to 1, so no new client gets it while a runner-up exists.
//! - `POST /v1/pops/{id}/undrain`: clients come back at `max-shift-per-second`.
//! - `POST /v1/pops/{id}/force` `{"state": "up" | "down" | "auto"}`.
//!
//! Changes need `Authorization: Bearer <admin token>` (401 without); an unknown POP
//! is 404, a malformed body 400. Each answers with the POP's new state.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::health::{bearer, unauthorized};
use super::{AppState, error};
use crate::health::{Forced, MAX_DRAIN, PopStatus, UnknownPop};

/// Largest admin request body: they are a few bytes.
const MAX_BODY: usize = 4 * 1024;

/// The admin routes.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/pops", get(list))
        .route("/v1/pops/{id}/drain", post(drain))
        .route("/v1/pops/{id}/undrain", post(undrain))
        .route("/v1/pops/{id}/force", post(force))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainBody {
    over_seconds: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForceBody {
    state: Forced,
}

/// Every POP, in config order.
async fn list(State(state): State<AppState>) -> Response {
    Json(json!({ "pops": state.health.pops(Instant::now()) })).into_response()
}

async fn drain(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let body: DrainBody = match read(&body) {
        Ok(body) => body,
        Err(reason) => return error(StatusCode::BAD_REQUEST, &reason),
    };
    let over = body.over_seconds;
    if !(over.is_finite() && (0.0..=MAX_DRAIN.as_secs_f64()).contains(&over)) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "over_seconds {over}: expected seconds from 0 to {}",
                MAX_DRAIN.as_secs()
            ),
        );
    }
    let over = Duration::try_from_secs_f64(over).unwrap_or(MAX_DRAIN);
    changed(state.health.drain(&id, over, Instant::now()))
}

async fn undrain(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    changed(state.health.undrain(&id, Instant::now()))
}

async fn force(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let body: ForceBody = match read(&body) {
        Ok(body) => body,
        Err(reason) => return error(StatusCode::BAD_REQUEST, &reason),
    };
    changed(state.health.force(&id, body.state, Instant::now()))
}

fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    bearer(headers).is_some_and(|token| state.health.authorize_admin(token).is_ok())
}

/// A JSON body, or why not.
fn read<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("body: {e}"))
}

fn changed(result: Result<PopStatus, UnknownPop>) -> Response {
    match result {
        Ok(status) => Json(status).into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, &e.to_string()),
    }
}
