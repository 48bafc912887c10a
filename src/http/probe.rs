//! What orchestrators and Prometheus ask: `/live` (the process serves HTTP),
//! `/ready` (the first snapshot is loaded and the DNS listeners are up, so traffic
//! may be sent) and `/metrics` (the Prometheus text format).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::background;

/// The content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A latch that opens once, when the instance can answer DNS: a load balancer or
/// orchestrator sends no traffic to it before then.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// A closed latch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens the latch; it stays open.
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether the latch is open.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// `GET /live`: answering at all is the answer.
pub async fn live() -> &'static str {
    "live\n"
}

/// `GET /ready`: 200 once the DNS listeners serve, 503 before.
pub async fn ready(State(state): State<AppState>) -> Response {
    if state.ready.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// `GET /metrics`: every metric, after the UDP workers flushed what they counted.
/// The per-POP gauges are set and everything encoded on a background thread: with
/// thousands of POPs that is milliseconds of CPU, which on a runtime thread would
/// hold up UDP workers sharing its core.
pub async fn metrics(State(state): State<AppState>) -> Response {
    state.metrics.flush().await;
    let (health, metrics) = (Arc::clone(&state.health), state.metrics.clone());
    let rendered = background::run("meridian-metrics", move || {
        health.export_gauges(Instant::now());
        metrics.render()
    })
    .await;
    match rendered {
        Ok(text) => ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot render the metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response()
        }
    }
}
